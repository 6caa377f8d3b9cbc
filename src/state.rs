//! The combined view of a profile (`rein state`) and the wait token (`rein wait`).
//!
//! A token records what its holder has seen: the highest ask `seq` in the mailbox, the world
//! hash, and a time mark with the events of the second before it. Something is new when a
//! pending ask has a higher `seq`, the world hash differs, or an event happened that the
//! holder has not seen: an ask answered or withdrawn, a note left, a worker found failed or
//! exited by a beat. Events carry their own times (a resolution's `at`, a note's `at`, a
//! worker record's `failure_reported` / `exit_reported`); an event is new when it is later
//! than the mark less [`EVENT_WINDOW`] and not among the events the token lists as seen, so one
//! published a moment after the token was made (its time taken before it was visible) still
//! wakes. Seen events never wake again, so a judge loop never spins on one of them.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::mailbox::{AskRecord, ListingCache, Mailbox, Resolution, ResolutionKind};
use crate::store::{self, watch::Target, DataDir};
use crate::{claims, journal, world};

/// How far back from a token's mark events are looked at again, for those that became
/// visible only after their time was taken.
pub const EVENT_WINDOW: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub seq: u64,
    pub world: String,
    /// When the holder looked, in microseconds since the epoch.
    pub mark: i64,
    /// Short hashes of the events within [`EVENT_WINDOW`] before the mark that the holder saw.
    pub recent: BTreeSet<String>,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v2.{}.{}.{}.", self.seq, self.world, self.mark)?;
        let recent: Vec<&str> = self.recent.iter().map(String::as_str).collect();
        f.write_str(&recent.join("-"))
    }
}

impl std::str::FromStr for Token {
    type Err = Error;
    fn from_str(text: &str) -> Result<Token> {
        let invalid = || {
            Error::invalid(format!(
                "invalid token {text:?}: pass the `token` field printed by a previous `rein wait` or `rein state`"
            ))
        };
        let mut parts = text.split('.');
        let version = parts.next();
        if version != Some("v1") && version != Some("v2") {
            return Err(invalid());
        }
        let seq = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(invalid)?;
        let world = parts.next().filter(|w| !w.is_empty()).ok_or_else(invalid)?;
        if !world.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid());
        }
        let (mark, recent) = if version == Some("v1") {
            // A token from before events were tracked: only events from now on are new (the
            // mark is put a window ahead, so the window before it lies in the past).
            (
                (Utc::now() + EVENT_WINDOW).timestamp_micros(),
                BTreeSet::new(),
            )
        } else {
            let mark = parts
                .next()
                .and_then(|m| m.parse().ok())
                .ok_or_else(invalid)?;
            let recent: BTreeSet<String> = match parts.next() {
                Some("") => BTreeSet::new(),
                Some(list) => list.split('-').map(str::to_owned).collect(),
                None => return Err(invalid()),
            };
            if recent
                .iter()
                .any(|h| h.len() != 8 || !h.chars().all(|c| c.is_ascii_hexdigit()))
            {
                return Err(invalid());
            }
            (mark, recent)
        };
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(Token {
            seq,
            world: world.to_owned(),
            mark,
            recent,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GoalSummary {
    pub id: String,
    pub title: String,
}

/// Everything a judge needs to decide one move.
#[derive(Debug, Clone, Serialize)]
pub struct State {
    pub profile: String,
    pub data_dir: String,
    pub world: String,
    pub world_changed: Option<chrono::DateTime<chrono::Utc>>,
    pub snapshots: serde_json::Value,
    pub asks: Vec<serde_json::Value>,
    pub goals: Vec<GoalSummary>,
    pub claims: Vec<claims::Claim>,
    pub journal: Vec<String>,
    /// Workers and their health, filled in by the systemd layer when it is reachable.
    pub workers: Vec<serde_json::Value>,
    /// Files that could not be read, by name.
    pub problems: Vec<String>,
    /// Why `rein wait` returned: the new asks' ids and whether the world changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub woke: Option<Woke>,
    pub token: String,
    #[serde(skip)]
    pub token_value: Token,
}

/// Why `rein wait` returned: every reason, each listed.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Woke {
    /// Pending asks filed since the token.
    pub new_asks: Vec<String>,
    pub world_changed: bool,
    /// Asks answered since the token.
    pub answered: Vec<String>,
    /// Asks withdrawn since the token.
    pub withdrawn: Vec<String>,
    /// Workers a beat found failed or exited since the token.
    pub workers: Vec<WorkerEvent>,
    /// Notes left since the token.
    pub notes: Vec<String>,
}

impl Woke {
    fn is_empty(&self) -> bool {
        self == &Woke::default()
    }
}

/// A worker that ended, as a beat found it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct WorkerEvent {
    pub id: String,
    /// `failed` or `exited`.
    pub health: String,
    pub at: DateTime<Utc>,
}

/// One event a token can have seen.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Resolved(Resolution),
    Note { id: String, at: DateTime<Utc> },
    Worker(WorkerEvent),
}

impl Event {
    fn at(&self) -> DateTime<Utc> {
        match self {
            Event::Resolved(resolution) => resolution.at,
            Event::Note { at, .. } => *at,
            Event::Worker(worker) => worker.at,
        }
    }

    /// A short, stable name of the event for a token's list of seen ones.
    fn hash(&self) -> String {
        let name = match self {
            Event::Resolved(resolution) => format!("answer:{}", resolution.ask),
            Event::Note { id, .. } => format!("note:{id}"),
            Event::Worker(worker) => {
                format!("worker:{}:{}:{}", worker.id, worker.health, worker.at)
            }
        };
        hex::encode(Sha256::digest(name.as_bytes()))[..8].to_owned()
    }
}

/// What a beat records about a worker that ended (the fields of `workers/ID.json` that
/// matter here).
#[derive(Debug, Deserialize)]
struct WorkerEnding {
    id: String,
    #[serde(default)]
    failure_reported: Option<DateTime<Utc>>,
    #[serde(default)]
    exit_reported: Option<DateTime<Utc>>,
}

/// Every event later than `since`: resolutions (found by their file's age first, so the
/// growing `answers/` costs a listing, not a read of each), notes and worker endings.
fn events_since(dir: &DataDir, since: DateTime<Utc>) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    // The index of recent resolutions names what was resolved lately; only a moment it does
    // not cover needs a look at every answer ever given.
    match Mailbox::new(dir.clone()).resolved_since(since)? {
        Some(resolved) => events.extend(resolved.into_iter().map(Event::Resolved)),
        None => {
            let cutoff = std::time::SystemTime::from(since - chrono::TimeDelta::seconds(1));
            for (_, path) in store::list(&dir.answers(), ".json")? {
                let recent = std::fs::symlink_metadata(&path)
                    .and_then(|meta| meta.modified())
                    .is_ok_and(|modified| modified >= cutoff);
                if !recent {
                    continue;
                }
                if let Ok(Some(resolution)) = store::read_json::<Resolution>(&path) {
                    if resolution.at > since {
                        events.push(Event::Resolved(resolution));
                    }
                }
            }
        }
    }
    // Note names start with their time, so only the recent ones are read.
    let first_name = since.format("%Y%m%dt%H%M%S").to_string();
    for (name, path) in store::list(&dir.notes(), ".json")? {
        if name.as_str() < first_name.as_str() {
            continue;
        }
        if let Ok(Some(note)) = store::read_json::<crate::notes::Note>(&path) {
            if note.at > since {
                events.push(Event::Note {
                    id: note.id,
                    at: note.at,
                });
            }
        }
    }
    for (_, path) in store::list(&dir.workers(), ".json")? {
        let Ok(Some(record)) = store::read_json::<WorkerEnding>(&path) else {
            continue;
        };
        for (health, at) in [
            ("failed", record.failure_reported),
            ("exited", record.exit_reported),
        ] {
            if let Some(at) = at.filter(|at| *at > since) {
                events.push(Event::Worker(WorkerEvent {
                    id: record.id.clone(),
                    health: health.to_owned(),
                    at,
                }));
            }
        }
    }
    Ok(events)
}

pub fn goals(dir: &DataDir) -> Result<Vec<GoalSummary>> {
    let mut goals = Vec::new();
    for (id, path) in store::list(&dir.goals(), ".md")? {
        let text = store::read_text(&path)?.unwrap_or_default();
        let title = text
            .lines()
            .map(|l| l.trim_start_matches('#').trim())
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_owned();
        goals.push(GoalSummary { id, title });
    }
    Ok(goals)
}

/// The view a token is computed from: the asks in the mailbox, the world hash and the events
/// of the window before the mark.
struct Observed {
    records: Vec<AskRecord>,
    problems: Vec<Error>,
    token: Token,
    /// Events later than the holder's mark less the window (all of the window without one).
    events: Vec<Event>,
}

fn observe(mailbox: &Mailbox, since: Option<&Token>, read: &mut ListingCache) -> Result<Observed> {
    let now = Utc::now();
    let listing = mailbox.list_cached(read)?;
    let seq = listing.records.iter().map(|r| r.ask.seq).max().unwrap_or(0);
    let world = world::current_hash(mailbox.data_dir())?;
    let from = match since {
        Some(token) => mark_time(token.mark).min(now) - EVENT_WINDOW,
        None => now - EVENT_WINDOW,
    };
    let events = events_since(mailbox.data_dir(), from)?;
    let recent = events
        .iter()
        .filter(|event| event.at() > now - EVENT_WINDOW)
        .map(Event::hash)
        .collect();
    Ok(Observed {
        records: listing.records,
        problems: listing.problems,
        token: Token {
            seq,
            world,
            mark: now.timestamp_micros(),
            recent,
        },
        events,
    })
}

fn mark_time(mark: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(mark).unwrap_or_default()
}

fn build(dir: &DataDir, profile: &str, observed: Observed, woke: Option<Woke>) -> Result<State> {
    let world = world::read_world(dir)?;
    let snapshots = world::snapshots(dir)?;
    Ok(State {
        profile: profile.to_owned(),
        data_dir: dir.root().display().to_string(),
        world: observed.token.world.clone(),
        world_changed: world.map(|w| w.changed),
        snapshots: serde_json::to_value(snapshots).unwrap_or_default(),
        asks: observed.records.iter().map(AskRecord::to_json).collect(),
        goals: goals(dir)?,
        claims: claims::list(dir)?,
        journal: journal::tail(dir, 20)?,
        workers: Vec::new(),
        problems: observed.problems.iter().map(|p| p.to_string()).collect(),
        woke,
        token: observed.token.to_string(),
        token_value: observed.token,
    })
}

pub fn state(dir: &DataDir, profile: &str) -> Result<State> {
    let observed = observe(
        &Mailbox::new(dir.clone()),
        None,
        &mut ListingCache::default(),
    )?;
    build(dir, profile, observed, None)
}

/// What is new in `observed` for the holder of `since`.
fn news(since: &Token, observed: &Observed, only_asks: bool) -> Option<Woke> {
    let mut woke = Woke {
        new_asks: observed
            .records
            .iter()
            .filter(|r| r.is_pending() && r.ask.seq > since.seq)
            .map(|r| r.ask.id.clone())
            .collect(),
        ..Woke::default()
    };
    if !only_asks {
        woke.world_changed = observed.token.world != since.world;
        let from = mark_time(since.mark) - EVENT_WINDOW;
        for event in &observed.events {
            if event.at() <= from || since.recent.contains(&event.hash()) {
                continue;
            }
            match event {
                Event::Resolved(resolution) => match resolution.kind {
                    ResolutionKind::Answered => woke.answered.push(resolution.ask.clone()),
                    ResolutionKind::Withdrawn => woke.withdrawn.push(resolution.ask.clone()),
                },
                Event::Note { id, .. } => woke.notes.push(id.clone()),
                Event::Worker(worker) => woke.workers.push(worker.clone()),
            }
        }
        woke.answered.sort();
        woke.withdrawn.sort();
        woke.notes.sort();
        woke.workers.sort();
    }
    (!woke.is_empty()).then_some(woke)
}

/// Blocks until something is new since `since` (without a token: returns the state at once).
/// `Ok(None)` when the deadline passes first. With `only_asks`, only new asks count.
pub fn wait(
    dir: &DataDir,
    profile: &str,
    since: Option<&Token>,
    only_asks: bool,
    deadline: Option<Instant>,
) -> Result<Option<State>> {
    dir.create_dirs()?;
    let mailbox = Mailbox::new(dir.clone());
    let Some(since) = since else {
        return state(dir, profile).map(Some);
    };
    // Only what can wake this waiter is watched: not the journal every move appends to.
    let mut watched = vec![Target::Dir(dir.asks())];
    if !only_asks {
        watched.extend([
            Target::Dir(dir.answers()),
            Target::Dir(dir.notes()),
            Target::Dir(dir.workers()),
            Target::File(dir.world()),
        ]);
    }
    // Each look after a change reads only the ask and answer files that changed.
    let mut read = ListingCache::default();
    let found = store::watch::wait_for_targets(&watched, deadline, || {
        let observed = observe(&mailbox, Some(since), &mut read)?;
        Ok(news(since, &observed, only_asks).map(|woke| (observed, woke)))
    })?;
    match found {
        None => Ok(None),
        Some((observed, woke)) => build(dir, profile, observed, Some(woke)).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let token = Token {
            seq: 42,
            world: "ab12".into(),
            mark: 1_700_000_000_123_456,
            recent: ["0123abcd".to_owned(), "ffff0000".to_owned()].into(),
        };
        assert_eq!(token.to_string().parse::<Token>().expect("parses"), token);
        let quiet = Token {
            recent: BTreeSet::new(),
            ..token
        };
        assert_eq!(quiet.to_string().parse::<Token>().expect("parses"), quiet);
        let old: Token = "v1.7.ab12".parse().expect("a v1 token still parses");
        assert_eq!((old.seq, old.world.as_str()), (7, "ab12"));
        for bad in [
            "",
            "v1",
            "v1.x.ab",
            "v3.1.ab.1.",
            "v2.1.ab",
            "v2.1.ab.x.",
            "v2.1.ab.1.zz",
            "v2.1.ab.1.-.x",
            "v1.1.",
            "v1.1.a/b",
            "garbage",
        ] {
            let error = bad.parse::<Token>().expect_err(bad);
            assert_eq!(error.exit_code(), 2);
        }
    }
}
