//! The engine every bridge runs: deliver asks and notes once per route, post resolutions,
//! and turn what people send into answers — from allowlisted identities only.
//!
//! It wakes on inotify events in `asks/`, `answers/` and `notes/` (a blocking watcher thread
//! gathers the names that changed and wakes it), on inbound messages from the channel, and
//! when a retry falls due; then it reconciles the mailbox with the [`Ledger`]: for the asks
//! an event names ([`Engine::sync_changes`]) or whose retry is due ([`Engine::sync_due`]), or
//! all of it ([`Engine::sync`]) at start, after lost events or a failed look, and when the
//! link comes back. Both are level-triggered
//! and so safe to run at any time, any number of times. Sends are rate-limited per channel
//! and retried with exponential backoff, honouring the channel's Retry-After.
//!
//! A channel with a [`Link`] (a connection it can lose and rebuild) wakes the engine when the
//! link changes: STATUS says `reconnecting: …` while it is down, and when it is up again the
//! engine retries at once what waits for a retry and re-posts pending asks whose posts the
//! channel says went away ([`Channel::still_posted`], also asked at start).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::bridge::config::{self, BridgeSettings};
use crate::bridge::ledger::{Entry, Kind, Ledger, RefusedLedger, SeenLedger, Stage};
use crate::bridge::secrets::{self, Secrets};
use crate::bridge::{Backoff, Channel, Inbound, Link, PostRef, SendError, Target};

use crate::mailbox::{AnswerOutcome, Ask, ListingCache, Mailbox, Resolution};
use crate::notes::Note;
use crate::paths::Paths;
use crate::store::{self, DataDir};
use crate::{journal, Error as ReinError};

/// What changed in the mailbox since the engine last looked, from the watcher's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Asks whose ask or answer file was written, moved or removed.
    pub asks: std::collections::BTreeSet<String>,
    /// Something in `notes/` changed.
    pub notes: bool,
    /// Events may have been lost: look at everything.
    pub everything: bool,
}

impl Changes {
    /// Adds what a watcher of `data`'s `asks/`, `answers/` and `notes/` saw.
    pub fn add(&mut self, data: &DataDir, changed: store::watch::Changed) {
        self.everything |= changed.everything;
        for (dir, name) in changed.names {
            if dir == data.notes() {
                self.notes = true;
                continue;
            }
            if dir != data.asks() && dir != data.answers() {
                self.everything = true;
                continue;
            }
            // Another name there is no ask's: a full look says what it is.
            match name.to_str().and_then(|n| n.strip_suffix(".json")) {
                Some(id) if store::validate_id("ask id", id).is_ok() => {
                    self.asks.insert(id.to_owned());
                }
                _ => self.everything = true,
            }
        }
    }
}

/// What a bridge's `build` function gets to construct its channel.
pub struct BridgeContext {
    pub settings: BridgeSettings,
    pub secrets: Secrets,
    /// Where the channel sends what people write.
    pub inbound: mpsc::Sender<Inbound>,
    pub data: DataDir,
    /// Inbound message ids already handled (for channels that re-read, like SMS polling).
    pub seen: SeenLedger,
}

/// How STATUS begins while the channel's [`Link`] is down (`rein bridge ls` reads it).
pub const RECONNECTING: &str = "reconnecting";

/// The longest wait between retries of one send.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What a stranger (not on the allowlist) is told, at most once a day.
const REFUSAL: &str =
    "Sorry, you are not on this fleet's list of people who may answer asks; nothing was answered.";

/// Waits between retries of one send: 1 s, doubling, up to [`MAX_BACKOFF`].
const RETRY: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: MAX_BACKOFF,
};

fn backoff(attempts: u32) -> Duration {
    RETRY.delay(attempts.saturating_sub(1))
}

/// At most `per_minute` sends in any 60 s window.
struct RateLimit {
    per_minute: usize,
    sent: VecDeque<tokio::time::Instant>,
}

impl RateLimit {
    /// Takes a send now if the window has room; never waits (for sends that may be dropped).
    fn try_acquire(&mut self) -> bool {
        let window = Duration::from_secs(60);
        let now = tokio::time::Instant::now();
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            self.sent.pop_front();
        }
        if self.sent.len() < self.per_minute {
            self.sent.push_back(now);
            return true;
        }
        false
    }

    async fn acquire(&mut self) {
        let window = Duration::from_secs(60);
        loop {
            let now = tokio::time::Instant::now();
            while self
                .sent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= window)
            {
                self.sent.pop_front();
            }
            if self.sent.len() < self.per_minute {
                self.sent.push_back(now);
                return;
            }
            let oldest = *self.sent.front().unwrap_or(&now);
            tracing::info!(
                "rate limit of {} per minute reached; holding sends",
                self.per_minute
            );
            tokio::time::sleep_until(oldest + window).await;
        }
    }
}

pub struct Engine<C: Channel> {
    channel: C,
    settings: BridgeSettings,
    data: DataDir,
    mailbox: Mailbox,
    ledger: Ledger,
    seen: SeenLedger,
    /// When each stranger was last told they may not answer.
    refused: RefusedLedger,
    rate: RateLimit,
    /// Notes older than the bridge's first start are history, not news.
    since: DateTime<Utc>,
    pub delivered: u64,
    pub last_delivery: Option<DateTime<Utc>>,
    /// Sends not yet done (sending or retrying), as of the last sync: only a sync changes
    /// the ledger, so the status line need not read it again.
    pending: usize,
    /// The channel's link, for channels that have one.
    link: Option<Link>,
    /// At the next sync, ask the channel whether pending asks are still posted.
    recheck_posts: bool,
    /// At the next sync, retry at once what waits for a retry.
    retry_now: bool,
    /// The ask and answer files read so far: a sync re-reads only what changed.
    asks_read: ListingCache,
    /// Set while a look is under way and left set when it fails part-way: what it was to
    /// look at may not have been seen, so the next look is at everything.
    look_again: bool,
}

impl<C: Channel> Engine<C> {
    pub fn new(
        channel: C,
        settings: BridgeSettings,
        data: DataDir,
    ) -> crate::error::Result<Engine<C>> {
        data.create_dirs()?;
        let ledger = Ledger::open(&data, &settings.name)?;
        let seen = SeenLedger::open(&data, &settings.name)?;
        let refused = RefusedLedger::open(&data, &settings.name)?;
        let since_path = data.bridge_since(&settings.name)?;
        store::seed_file(
            &since_path,
            Utc::now().to_rfc3339().as_bytes(),
            store::FILE_MODE,
        )?;
        let since = store::read_text(&since_path)?
            .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(Utc::now);
        Ok(Engine {
            channel,
            rate: RateLimit {
                per_minute: settings.rate_per_minute as usize,
                sent: VecDeque::new(),
            },
            mailbox: Mailbox::new(data.clone()),
            settings,
            data,
            ledger,
            seen,
            refused,
            since,
            delivered: 0,
            pending: 0,
            last_delivery: None,
            link: None,
            recheck_posts: true,
            retry_now: false,
            asks_read: ListingCache::default(),
            look_again: false,
        })
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Where this entry stands before a send; None when there is nothing to send now.
    fn next_attempt(
        &self,
        kind: Kind,
        item: &str,
        route: &str,
    ) -> crate::error::Result<Option<Entry>> {
        // Asked for every pending ask at every sync: an entry is copied only to be sent.
        self.ledger.with_entry(kind, item, route, |entry| {
            let Some(entry) = entry else {
                return Some(Entry::new(kind, item, route));
            };
            match entry.stage {
                Stage::Sent | Stage::Closed | Stage::Failed => None,
                Stage::Retrying if entry.retry_at.is_some_and(|at| at > Utc::now()) => None,
                Stage::Retrying => Some(entry.clone()),
                // We died between calling the channel and recording the outcome.
                Stage::Sending => Some(Entry {
                    resent: true,
                    ..entry.clone()
                }),
            }
        })
    }

    async fn begin(&mut self, entry: &mut Entry) -> crate::error::Result<()> {
        self.rate.acquire().await;
        entry.stage = Stage::Sending;
        entry.attempts += 1;
        self.ledger.put(entry)
    }

    fn record(
        &mut self,
        mut entry: Entry,
        outcome: Result<PostRef, SendError>,
    ) -> crate::error::Result<()> {
        match outcome {
            Ok(post) => {
                entry.stage = Stage::Sent;
                entry.post = Some(post);
                entry.error = None;
                entry.retry_at = None;
                self.delivered += 1;
                self.last_delivery = Some(Utc::now());
                tracing::info!(
                    REIN_EVENT = "bridge-sent",
                    "{} delivered {:?} {} to {}",
                    self.settings.name,
                    entry.kind,
                    entry.item,
                    entry.route
                );
            }
            Err(SendError::Retry { after, reason }) => {
                let wait = after
                    .unwrap_or_else(|| backoff(entry.attempts))
                    .min(MAX_BACKOFF);
                entry.stage = Stage::Retrying;
                entry.retry_at =
                    Some(Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default());
                tracing::warn!(
                    "{} could not deliver {} to {} ({reason}); retrying in {wait:?}",
                    self.settings.name,
                    entry.item,
                    entry.route
                );
                entry.error = Some(reason);
            }
            Err(SendError::Fatal(reason)) => {
                entry.stage = Stage::Failed;
                journal::record_or_warn(
                    &self.data,
                    "bridge-failed",
                    &format!(
                        "{} could not deliver {} to {}: {reason}",
                        self.settings.name, entry.item, entry.route
                    ),
                );
                entry.error = Some(reason);
            }
        }
        self.ledger.put(&entry)
    }

    async fn deliver_ask(&mut self, ask: &Ask, route: &str) -> crate::error::Result<()> {
        let Some(mut entry) = self.next_attempt(Kind::Ask, &ask.id, route)? else {
            return Ok(());
        };
        self.begin(&mut entry).await?;
        let outcome = self.channel.post_ask(ask, route, entry.resent).await;
        self.record(entry, outcome)
    }

    async fn deliver_note(&mut self, note: &Note, route: &str) -> crate::error::Result<()> {
        let Some(mut entry) = self.next_attempt(Kind::Note, &note.id, route)? else {
            return Ok(());
        };
        self.begin(&mut entry).await?;
        let outcome = self.channel.post_note(note, route, entry.resent).await;
        self.record(entry, outcome)
    }

    /// The channel's link changed: on [`Link::Up`], retry what waits and check what was posted.
    pub fn link_changed(&mut self, link: Link) {
        match &link {
            Link::Up => {
                if matches!(self.link, Some(Link::Down(_))) {
                    tracing::info!("{} is connected again", self.settings.name);
                }
                self.retry_now = true;
                self.recheck_posts = true;
            }
            Link::Down(why) => tracing::warn!("{}: {why}", self.settings.name),
        }
        self.link = Some(link);
    }

    /// Asks the channel whether each pending ask it posted is still shown; one that is not
    /// is posted again by the sync.
    async fn recheck_posts(&mut self) -> anyhow::Result<()> {
        for mut entry in self.ledger.entries()? {
            let Some(post) = entry.post.clone() else {
                continue;
            };
            if entry.kind != Kind::Ask
                || entry.stage != Stage::Sent
                || self.mailbox.resolution(&entry.item)?.is_some()
            {
                continue;
            }
            let Ok(record) = self.mailbox.get(&entry.item) else {
                continue;
            };
            match self.channel.still_posted(&record.ask, &post).await {
                Ok(true) | Err(SendError::Fatal(_)) => {}
                Ok(false) => {
                    tracing::info!(
                        "{}: ask {} is no longer shown at {} ({}); posting it again",
                        self.settings.name,
                        entry.item,
                        entry.route,
                        post.id
                    );
                    entry.stage = Stage::Retrying;
                    entry.retry_at = None;
                    entry.attempts = 0;
                    self.ledger.put(&entry)?;
                }
                Err(SendError::Retry { reason, .. }) => {
                    tracing::warn!(
                        "{} cannot tell whether ask {} is still shown ({reason}); asking again later",
                        self.settings.name,
                        entry.item
                    );
                    self.recheck_posts = true;
                }
            }
        }
        Ok(())
    }

    /// Brings the channel up to date with the mailbox. Returns when the next retry is due.
    pub async fn sync(&mut self) -> anyhow::Result<Option<DateTime<Utc>>> {
        self.look_again = true;
        if std::mem::take(&mut self.retry_now) {
            for mut entry in self.ledger.entries()? {
                if matches!(entry.stage, Stage::Retrying | Stage::Sent) && entry.retry_at.is_some()
                {
                    entry.retry_at = None;
                    self.ledger.put(&entry)?;
                }
            }
        }
        if std::mem::take(&mut self.recheck_posts) {
            self.recheck_posts().await?;
        }
        let listing = self.mailbox.list_cached(&mut self.asks_read)?;
        for problem in &listing.problems {
            tracing::warn!("{problem}");
        }
        for record in listing.records.iter().filter(|r| r.is_pending()) {
            for route in self.settings.routes_for(&record.ask.worker).to_vec() {
                self.deliver_ask(&record.ask, &route).await?;
            }
        }
        // Each listed ask's resolution, None while it is pending. An ask still pending has
        // nothing to settle, and those are most of a big ledger: only the rest is looked at.
        let listed: HashMap<&str, Option<&Resolution>> = listing
            .records
            .iter()
            .map(|record| (record.ask.id.as_str(), record.resolution.as_ref()))
            .collect();
        let unsettled = self.ledger.entries_where(|entry| {
            entry.kind == Kind::Ask && !matches!(listed.get(entry.item.as_str()), Some(None))
        })?;
        let mut settled = Vec::new();
        for entry in unsettled {
            if entry.stage == Stage::Closed {
                settled.push(entry);
                continue;
            }
            let resolution = resolution_of(&self.mailbox, &listed, &entry.item)?;
            if resolution.is_none()
                && !listed.contains_key(entry.item.as_str())
                && matches!(self.mailbox.get(&entry.item), Err(ReinError::NotFound(_)))
            {
                // Gone from asks/ and the archive: nothing left to send or post.
                tracing::warn!(
                    "{}: ask {} no longer exists; its ledger entry is dropped",
                    self.settings.name,
                    entry.item
                );
                settled.push(entry);
                continue;
            }
            if let Some(entry) = self.settle(entry, resolution).await? {
                settled.push(entry);
            }
        }
        self.ledger.prune(&settled)?;
        if self.settings.notes {
            self.sync_notes().await?;
        }
        let next = self.next_retry()?;
        self.look_again = false;
        Ok(next)
    }

    /// What an ask's entry needs now that the ask is `resolution` (None: still pending, or
    /// gone): the resolution posted where the ask was, once. Returns the entry when it is
    /// done with and may leave the ledger.
    async fn settle(
        &mut self,
        mut entry: Entry,
        resolution: Option<Resolution>,
    ) -> anyhow::Result<Option<Entry>> {
        match entry.stage {
            // Done with: a closed ask, or one that failed and is resolved by now.
            Stage::Closed => return Ok(Some(entry)),
            Stage::Failed => return Ok(resolution.is_some().then_some(entry)),
            // Resolved before it was sent: there is nothing left to send, and a retry kept
            // due would wake the engine at once, again and again.
            Stage::Sending | Stage::Retrying => return Ok(resolution.is_some().then_some(entry)),
            Stage::Sent => {}
        }
        if entry.retry_at.is_some_and(|at| at > Utc::now()) {
            return Ok(None);
        }
        let (Some(resolution), Some(post)) = (resolution, entry.post.clone()) else {
            return Ok(None);
        };
        let ask = self.mailbox.get(&entry.item)?.ask;
        self.rate.acquire().await;
        match self.channel.resolved(&ask, &resolution, &post).await {
            Ok(()) => {
                entry.stage = Stage::Closed;
                entry.retry_at = None;
            }
            Err(SendError::Retry { after, reason }) => {
                // Kept in the ledger and tried again when due: never forgotten.
                entry.resolve_attempts += 1;
                let wait = after
                    .unwrap_or_else(|| backoff(entry.resolve_attempts))
                    .min(MAX_BACKOFF);
                entry.retry_at =
                    Some(Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default());
                tracing::warn!(
                    "{} could not post the resolution of {} ({reason}); retrying in {wait:?}",
                    self.settings.name,
                    entry.item
                );
                entry.error = Some(reason);
            }
            Err(SendError::Fatal(reason)) => {
                entry.stage = Stage::Closed;
                entry.retry_at = None;
                entry.error = Some(reason);
            }
        }
        self.ledger.put(&entry)?;
        Ok((entry.stage == Stage::Closed).then_some(entry))
    }

    /// Sends still to do, and when the next retry is due.
    fn next_retry(&mut self) -> anyhow::Result<Option<DateTime<Utc>>> {
        let waiting = self.ledger.entries_where(|e| {
            matches!(e.stage, Stage::Retrying | Stage::Sending) || e.retry_at.is_some()
        })?;
        self.pending = waiting
            .iter()
            .filter(|e| matches!(e.stage, Stage::Retrying | Stage::Sending))
            .count();
        Ok(waiting
            .into_iter()
            .filter(|e| matches!(e.stage, Stage::Retrying | Stage::Sent))
            .filter_map(|e| e.retry_at)
            .min())
    }

    /// [`Engine::sync`] for what the watcher saw change: only the asks named are looked at
    /// (their ask and answer files, their ledger entries), and the notes when they changed,
    /// so an event costs the same however many asks are pending and however big the ledger
    /// is. Everything is looked at when events may have been lost, when the last look failed
    /// part-way, and when the link came back or a retry is asked for.
    pub async fn sync_changes(
        &mut self,
        changes: Changes,
    ) -> anyhow::Result<Option<DateTime<Utc>>> {
        if changes.everything || self.retry_now || self.recheck_posts || self.look_again {
            return self.sync().await;
        }
        self.look_again = true;
        for id in &changes.asks {
            self.sync_ask(id).await?;
        }
        if changes.notes && self.settings.notes {
            self.sync_notes().await?;
        }
        let next = self.next_retry()?;
        self.look_again = false;
        Ok(next)
    }

    /// [`Engine::sync_changes`] for the items whose retry fell due: a send to try again, or a
    /// resolution to post again. Only those are looked at, not the whole mailbox.
    pub async fn sync_due(&mut self) -> anyhow::Result<Option<DateTime<Utc>>> {
        let now = Utc::now();
        let due = self.ledger.entries_where(|e| match e.retry_at {
            Some(at) => at <= now,
            None => e.stage == Stage::Retrying,
        })?;
        let mut changes = Changes::default();
        for entry in due {
            match entry.kind {
                Kind::Ask => {
                    changes.asks.insert(entry.item);
                }
                Kind::Note => changes.notes = true,
            }
        }
        self.sync_changes(changes).await
    }

    /// One ask, as a full sync would treat it: delivered while pending, its entries settled
    /// once it is resolved.
    async fn sync_ask(&mut self, id: &str) -> anyhow::Result<()> {
        let record = match self.mailbox.get(id) {
            Ok(record) => Some(record),
            Err(ReinError::NotFound(_)) => None,
            Err(error) => {
                tracing::warn!("{error}");
                return Ok(());
            }
        };
        if let Some(record) = record.as_ref().filter(|r| r.is_pending() && !r.archived) {
            for route in self.settings.routes_for(&record.ask.worker).to_vec() {
                self.deliver_ask(&record.ask, &route).await?;
            }
            return Ok(());
        }
        let entries = self.ledger.entries_of(Kind::Ask, id)?;
        let Some(record) = record else {
            // Neither in asks/ nor in the archive: there is nothing left to send or to post
            // a resolution of, and a retry kept due would wake the engine again and again.
            if !entries.is_empty() {
                tracing::warn!(
                    "{}: ask {id} no longer exists; its ledger entries are dropped",
                    self.settings.name
                );
            }
            self.ledger.prune(&entries)?;
            return Ok(());
        };
        let mut settled = Vec::new();
        for entry in entries {
            if let Some(entry) = self.settle(entry, record.resolution.clone()).await? {
                settled.push(entry);
            }
        }
        self.ledger.prune(&settled)?;
        Ok(())
    }

    /// Delivers the notes after the `notes-done` cursor, then moves the cursor past every
    /// note all of whose routes are settled and prunes their entries.
    async fn sync_notes(&mut self) -> anyhow::Result<()> {
        let done = self.ledger.notes_done()?;
        let mut cursor_can_move = true;
        let mut cursor = None;
        let mut settled = Vec::new();
        for (id, path) in store::list(&self.data.notes(), ".json")? {
            if done.as_deref().is_some_and(|done| id.as_str() <= done) {
                continue;
            }
            let note = match store::read_json::<Note>(&path) {
                Ok(Some(note)) => note,
                Ok(None) => continue,
                Err(problem) => {
                    tracing::warn!("{problem}");
                    cursor_can_move = false;
                    continue;
                }
            };
            let routes = self.settings.routes_for(&note.worker).to_vec();
            if note.at >= self.since {
                for route in &routes {
                    self.deliver_note(&note, route).await?;
                }
            }
            if !cursor_can_move {
                continue;
            }
            let mut entries = Vec::new();
            for route in &routes {
                match self.ledger.get(Kind::Note, &note.id, route)? {
                    Some(entry) if matches!(entry.stage, Stage::Sent | Stage::Failed) => {
                        entries.push(entry)
                    }
                    None if note.at < self.since => {}
                    _ => cursor_can_move = false,
                }
            }
            if cursor_can_move {
                cursor = Some(id);
                settled.extend(entries);
            }
        }
        if let Some(cursor) = cursor {
            self.ledger.set_notes_done(&cursor)?;
            self.ledger.prune(&settled)?;
        }
        Ok(())
    }

    async fn reply(&mut self, to: &Inbound, text: &str) {
        // Every send counts against the channel's rate, replies too.
        self.rate.acquire().await;
        // Replies quote prompts, options and what the person sent: shown inert.
        let text = crate::text::inert(text);
        if let Err(error) = self.channel.reply(to, &text).await {
            tracing::warn!(
                "{} could not reply to {}: {error}",
                self.settings.name,
                to.identity
            );
        }
    }

    /// Tells a stranger once a day, within the channel's rate limit and never waiting for it,
    /// that they may not answer: a refusal must not cost a message per stranger's message
    /// (on SMS every one is paid for).
    async fn refuse(&mut self, inbound: &Inbound) -> anyhow::Result<()> {
        let today = Utc::now().date_naive().to_string();
        if self.refused.last(&inbound.identity)?.as_deref() == Some(today.as_str()) {
            tracing::info!(
                "{} refused {} again today; not telling them again",
                self.settings.name,
                inbound.identity
            );
            return Ok(());
        }
        if !self.rate.try_acquire() {
            tracing::warn!(
                "{}: the rate limit is reached; the refusal to {} is not sent",
                self.settings.name,
                inbound.identity
            );
            return Ok(());
        }
        self.refused.mark(&inbound.identity, &today)?;
        if let Err(error) = self.channel.refuse(inbound, REFUSAL).await {
            tracing::warn!(
                "{} could not tell {} they may not answer: {error}",
                self.settings.name,
                inbound.identity
            );
        }
        Ok(())
    }

    /// Which ask an inbound message answers; None after telling the person why not.
    async fn target(&mut self, inbound: &Inbound) -> anyhow::Result<Option<String>> {
        match &inbound.target {
            Target::Ask(id) if store::validate_id("ask id", id).is_err() => {
                self.reply(inbound, &format!("There is no ask [{id}]."))
                    .await;
                Ok(None)
            }
            Target::Ask(id) => Ok(Some(id.clone())),
            Target::Post(post) => match self.ledger.ask_for_post(post)? {
                Some(id) => Ok(Some(id)),
                None => {
                    self.reply(inbound, "That message is not an ask I know; reply to an ask, or start your reply with its code.").await;
                    Ok(None)
                }
            },
            Target::Unspecified => {
                let route = inbound.reply_to.route.clone();
                let mine: Vec<Ask> = self
                    .mailbox
                    .pending()?
                    .records
                    .into_iter()
                    .map(|r| r.ask)
                    .filter(|ask| self.settings.routes_for(&ask.worker).contains(&route))
                    .collect();
                match mine.as_slice() {
                    [only] => Ok(Some(only.id.clone())),
                    [] => {
                        self.reply(inbound, "There is no pending ask for you right now.")
                            .await;
                        Ok(None)
                    }
                    several => {
                        let list: Vec<String> = several
                            .iter()
                            .map(|a| {
                                format!("[{}] {}", a.id, a.prompt.lines().next().unwrap_or(""))
                            })
                            .collect();
                        let text = format!(
                            "Several asks are pending; start your reply with the code:\n{}",
                            list.join("\n")
                        );
                        self.reply(inbound, &text).await;
                        Ok(None)
                    }
                }
            }
        }
    }

    /// Turns a person's message into an answer, if they may give one.
    pub async fn handle(&mut self, mut inbound: Inbound) -> anyhow::Result<()> {
        // Escape sequences and control characters a stranger sent never become an answer.
        inbound.text = crate::text::strip_controls(&inbound.text);
        if self.seen.seen(&inbound.message_id) {
            tracing::info!(
                "{} ignored message {} it has already handled",
                self.settings.name,
                inbound.message_id
            );
            return Ok(());
        }
        if !self.settings.allows(&inbound.identity) {
            journal::record_or_warn(
                &self.data,
                "bridge-refused",
                &format!(
                    "{} refused an answer from {} (not in the allowlist)",
                    self.settings.name, inbound.identity
                ),
            );
            self.refuse(&inbound).await?;
            self.seen.mark(&inbound.message_id)?;
            return Ok(());
        }
        if let Some(id) = self.target(&inbound).await? {
            if inbound.text.trim().is_empty() {
                let text = format!("Put your answer after the code, like: {id} yes");
                self.reply(&inbound, &text).await;
                self.seen.mark(&inbound.message_id)?;
                return Ok(());
            }
            let text = match self.mailbox.answer(&id, &inbound.text, &inbound.identity) {
                Ok(AnswerOutcome::Accepted(resolution)) => {
                    journal::record_or_warn(
                        &self.data,
                        "answer",
                        &format!(
                            "ask {id} {} (via {})",
                            resolution.describe(),
                            self.settings.name
                        ),
                    );
                    format!(
                        "Got it: [{id}] answered {}.",
                        resolution.text.unwrap_or_default()
                    )
                }
                Ok(AnswerOutcome::AlreadyResolved(resolution)) => {
                    format!(
                        "[{id}] was already {}; your answer was not recorded.",
                        resolution.describe()
                    )
                }
                Ok(AnswerOutcome::NotAnOption(options)) => {
                    format!(
                        "That is not an option for [{id}]; reply one of: {}.",
                        options.join(", ")
                    )
                }
                Err(ReinError::NotFound(_)) => format!("There is no ask [{id}]."),
                Err(ReinError::Invalid(why)) => format!("[{id}]: {why}; nothing was answered."),
                Err(other) => return Err(other.into()),
            };
            self.reply(&inbound, &text).await;
        }
        self.seen.mark(&inbound.message_id)?;
        Ok(())
    }

    /// The STATUS= line systemd shows.
    pub fn status(&self) -> String {
        let pending = self.pending;
        let last = self
            .last_delivery
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| "none yet".into());
        let counts = format!(
            "delivered {} since start, last delivery {last}, {pending} pending",
            self.delivered
        );
        match &self.link {
            None => counts,
            Some(Link::Up) => format!("connected; {counts}"),
            Some(Link::Down(why)) => format!("{RECONNECTING}: {why}; {counts}"),
        }
    }
}

/// An ask's resolution: as listed, for an ask in `asks/`; else (archived) read from disk.
fn resolution_of(
    mailbox: &Mailbox,
    listed: &HashMap<&str, Option<&Resolution>>,
    id: &str,
) -> crate::error::Result<Option<Resolution>> {
    match listed.get(id) {
        Some(resolution) => Ok(resolution.cloned()),
        None => mailbox.resolution(id),
    }
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(false, state);
}

/// Runs the engine until `shutdown` completes.
pub async fn run<C: Channel>(
    mut engine: Engine<C>,
    mut inbound: mpsc::Receiver<Inbound>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
    let dirs = vec![
        engine.data.asks(),
        engine.data.answers(),
        engine.data.notes(),
    ];
    let mut watcher = store::watch::Watcher::new(&dirs)?;
    watcher.record_names();
    // What changed, gathered until the engine takes it: an event wakes the engine for the
    // asks it names, not for the whole mailbox.
    let changes = std::sync::Arc::new(std::sync::Mutex::new(Changes::default()));
    let seen = changes.clone();
    let data = engine.data.clone();
    std::thread::spawn(move || loop {
        match watcher.wait(None) {
            Ok(_) => {
                if wake_tx.is_closed() {
                    return;
                }
                let changed = watcher.take_changed();
                seen.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .add(&data, changed);
                let _ = wake_tx.try_send(());
            }
            Err(error) => {
                tracing::error!("watching the mailbox failed: {error}");
                return;
            }
        }
    });
    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
    let mut watchdog_tick =
        tokio::time::interval(Duration::from_micros(watchdog_usec.max(2_000_000) / 2));
    let mut link = engine.channel.link();
    if let Some(link) = &mut link {
        engine.link = Some(link.borrow_and_update().clone());
    }
    let mut next_retry = sync_logged(&mut engine).await;
    let mut status = engine.status();
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    tokio::pin!(shutdown);
    loop {
        let retry_in = next_retry
            .map(|at| (at - Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(86_400 * 365));
        tokio::select! {
            () = &mut shutdown => break,
            Some(()) = wake_rx.recv() => {
                let changed = std::mem::take(
                    &mut *changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
                );
                let synced = engine.sync_changes(changed).await;
                next_retry = logged(&engine.settings.name, synced);
            }
            Some(message) = inbound.recv() => {
                if let Err(error) = engine.handle(message).await {
                    tracing::error!("handling an inbound message failed: {error:#}");
                }
            }
            () = tokio::time::sleep(retry_in), if next_retry.is_some() => {
                let synced = engine.sync_due().await;
                next_retry = logged(&engine.settings.name, synced);
            }
            changed = link_changed(&mut link) => {
                let up = changed == Link::Up;
                engine.link_changed(changed);
                if up {
                    next_retry = sync_logged(&mut engine).await;
                }
            }
            _ = watchdog_tick.tick(), if watchdog => notify(&[sd_notify::NotifyState::Watchdog]),
        }
        // Only a changed status is sent, so a busy loop does not chatter at systemd.
        let now = engine.status();
        if now != status {
            notify(&[sd_notify::NotifyState::Status(&now)]);
            status = now;
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    Ok(())
}

/// The next value of the channel's link; never, for a channel without one (or once its
/// sender is gone).
async fn link_changed(link: &mut Option<tokio::sync::watch::Receiver<Link>>) -> Link {
    if let Some(receiver) = link {
        if receiver.changed().await.is_ok() {
            return receiver.borrow_and_update().clone();
        }
        *link = None;
    }
    std::future::pending().await
}

async fn sync_logged<C: Channel>(engine: &mut Engine<C>) -> Option<DateTime<Utc>> {
    let synced = engine.sync().await;
    logged(&engine.settings.name, synced)
}

/// When to look again after a sync: when its next retry is due, or (it failed, and what it
/// was to look at may be lost) in five seconds, at everything ([`Engine::sync_changes`]).
fn logged(bridge: &str, synced: anyhow::Result<Option<DateTime<Utc>>>) -> Option<DateTime<Utc>> {
    match synced {
        Ok(next) => next,
        Err(error) => {
            tracing::error!("{bridge}: bringing the channel up to date failed: {error:#}");
            Some(Utc::now() + chrono::Duration::seconds(5))
        }
    }
}

/// The service this process runs in (from its cgroup), to name it to a second instance.
fn own_unit() -> Option<String> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroups.lines().find_map(|line| {
        line.rsplit('/')
            .next()
            .filter(|unit| unit.ends_with(".service"))
            .map(str::to_owned)
    })
}

/// A bridge binary's command line (the same for every bridge).
#[derive(Debug, clap::Parser)]
#[command(version)]
struct BridgeArgs {
    /// Send a test message to every route, say what happened, and exit (1 if any failed).
    #[arg(long)]
    test: bool,
}

/// The whole `main` of a bridge binary. `--test` sends a test message to every route and
/// reports; otherwise the engine runs until SIGTERM or SIGINT. Arguments are parsed with
/// clap (`--help`, `--version`; anything unknown is a usage error, exit 2); every error's
/// exit code comes from [`crate::error::exit_code_of`].
pub async fn serve<C, F, B>(name: &str, build: B) -> ExitCode
where
    C: Channel,
    F: Future<Output = anyhow::Result<C>>,
    B: FnOnce(BridgeContext) -> F,
{
    use clap::{CommandFactory, FromArgMatches};
    let command = BridgeArgs::command()
        .name(format!("rein-bridge-{name}"))
        .about(format!(
            "rein's {name} bridge: relays asks and notes to people and their answers back. Runs as a user unit (`rein bridge start {name}`); see rein-bridge-{name}(1)."
        ));
    let args = match command
        .try_get_matches()
        .and_then(|matches| BridgeArgs::from_arg_matches(&matches))
    {
        Ok(args) => args,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(error.exit_code() as u8);
        }
    };
    match serve_inner(name, args.test, build).await {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("rein-bridge-{name}: {}", crate::error::describe(&error));
            ExitCode::from(crate::error::exit_code_of(&error) as u8)
        }
    }
}

async fn serve_inner<C, F, B>(name: &str, testing: bool, build: B) -> anyhow::Result<u8>
where
    C: Channel,
    F: Future<Output = anyhow::Result<C>>,
    B: FnOnce(BridgeContext) -> F,
{
    let paths = Paths::from_env()?;
    crate::logging::init(&paths.profile, None);
    let config = crate::config::Config::load(&paths.config)?;
    let settings = config::load(&config, name)?;
    let secrets = secrets::load(&settings)?;
    let data = paths.data();
    data.create_dirs()?;
    // One running bridge per ledger: a second would send everything twice.
    let _lock = if testing {
        None
    } else {
        let holder = format!(
            "pid {}{}",
            std::process::id(),
            own_unit()
                .map(|unit| format!(", unit {unit}"))
                .unwrap_or_default()
        );
        match store::try_lock(&data.bridge_lock(name)?, &holder)? {
            Ok(lock) => Some(lock),
            Err(first) => {
                return Err(ReinError::Conflict(format!(
                    "the {name} bridge of profile {} already runs ({first}) on {}; stop it first (`rein bridge stop {name}`, or the unit named)",
                    paths.profile,
                    data.root().display()
                ))
                .into())
            }
        }
    };
    if let Ok(ledger) = Ledger::open(&data, name) {
        for dir in ledger.dirs() {
            let _ = store::sweep_temps(&dir, store::STALE_TEMP);
        }
    }
    let seen = SeenLedger::open(&data, name)?;
    let (sender, receiver) = mpsc::channel(256);
    let context = BridgeContext {
        settings: settings.clone(),
        secrets,
        inbound: sender,
        data: data.clone(),
        seen,
    };
    let mut channel = build(context).await?;
    if testing {
        let mut failed = false;
        for route in settings.all_routes() {
            match channel.test(&route).await {
                Ok(what) => println!("{route}: sent: {what}"),
                Err(error) => {
                    println!("{route}: failed: {error}");
                    failed = true;
                }
            }
        }
        return Ok(u8::from(failed));
    }
    let engine = Engine::new(channel, settings, data)?;
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
    };
    run(engine, receiver, shutdown).await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_names_become_asks_notes_or_a_full_look() {
        use crate::store::watch::Changed;
        let data = DataDir::new("/data");
        let mut changes = Changes::default();
        changes.add(
            &data,
            Changed {
                names: vec![
                    (data.asks(), "ab3x9k.json".into()),
                    (data.answers(), "cd4y2m.json".into()),
                    (data.answers(), "ab3x9k.json".into()),
                    (data.notes(), "20261130-xyz.json".into()),
                ],
                everything: false,
            },
        );
        assert_eq!(
            changes,
            Changes {
                asks: ["ab3x9k".to_owned(), "cd4y2m".to_owned()].into(),
                notes: true,
                everything: false,
            }
        );
        for odd in [
            Changed {
                names: vec![(data.asks(), "not-an-ask".into())],
                everything: false,
            },
            Changed {
                names: vec![(data.asks(), "UPPER.json".into())],
                everything: false,
            },
            Changed {
                names: vec![(data.root().join("elsewhere"), "ab3x9k.json".into())],
                everything: false,
            },
            Changed {
                names: Vec::new(),
                everything: true,
            },
        ] {
            let mut changes = Changes::default();
            changes.add(&data, odd.clone());
            assert!(changes.everything, "{odd:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_holds_sends_past_it_for_the_rest_of_the_minute() {
        let mut rate = RateLimit {
            per_minute: 2,
            sent: VecDeque::new(),
        };
        let start = tokio::time::Instant::now();
        rate.acquire().await;
        rate.acquire().await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "sends within the limit go at once"
        );
        rate.acquire().await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(60),
            "the third waits for the window"
        );
        rate.acquire().await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(60),
            "the window then holds two again"
        );
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }
}
