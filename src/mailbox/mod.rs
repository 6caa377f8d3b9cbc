//! The mailbox: asks, answers, withdrawals and the archive — the human-in-the-loop contract.
//!
//! Protocol (format version 1, see `rein-files(5)`):
//! - `asks/<id>.json` is an [`Ask`], written once with an exclusive create while holding
//!   `locks/asks.lock`, which also makes "same worker, same question" find the existing ask instead
//!   of filing a duplicate, and hands out the monotonic `seq` that wait tokens compare.
//! - `answers/<id>.json` is a [`Resolution`] (answered or withdrawn), published with an
//!   exclusive create: the first resolution wins across every process, and a loser reads back
//!   who won.
//! - Delivery to the asker archives the ask: it moves to `archive/asks/<id>.json`. The
//!   resolution never moves, so its name stays taken and no late answer can win a second
//!   time. Nothing is deleted.
//! - Waiting for an ask's resolution is [`crate::store::watch::wait_for_targets`] on its own
//!   `answers/<id>.json` alone (where its resolution appears): inotify only, and nothing else
//!   in the data dir, not even another ask's answer, wakes the asker.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::{self, DataDir};

pub const FORMAT_VERSION: u32 = 1;

/// The longest prompt an ask may have, in bytes.
pub const MAX_PROMPT: usize = 64 * 1024;
/// The longest `--ref`, in bytes.
pub const MAX_REFERENCE: usize = 1024;
/// The most options an ask may offer, and the longest option, in bytes.
pub const MAX_OPTIONS: usize = 32;
pub const MAX_OPTION: usize = 200;
/// The longest answer, in bytes.
pub const MAX_ANSWER: usize = 64 * 1024;

/// Refuses text longer than `limit` bytes, naming what it is (exit 2, nothing written).
pub fn check_size(what: &str, text: &str, limit: usize) -> Result<()> {
    if text.len() > limit {
        return Err(Error::invalid(format!(
            "the {what} is {} bytes; the limit is {limit} bytes",
            text.len()
        )));
    }
    Ok(())
}

/// Characters of ask ids: short enough to type in a text message, no look-alikes (0/o,
/// 1/l/i).
pub const ID_ALPHABET: &str = "23456789abcdefghjkmnpqrstuvwxyz";
/// How many characters an ask id has.
pub const ID_LEN: usize = 6;

/// Who answers when nobody says: the `cli:` identity of the user running the command.
pub fn default_identity() -> String {
    format!("cli:{}", current_user())
}

/// The login name: `$USER`, else the password database entry of the real uid.
pub fn current_user() -> String {
    if let Some(user) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        return user;
    }
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy the name out
    // before any other call could overwrite it.
    unsafe {
        let entry = libc::getpwuid(libc::getuid());
        if !entry.is_null() && !(*entry).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*entry).pw_name)
                .to_string_lossy()
                .into_owned();
        }
        format!("uid{}", libc::getuid())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ask {
    pub version: u32,
    #[serde(deserialize_with = "store::valid_id")]
    pub id: String,
    /// Increases with every ask filed in this data dir; wait tokens compare it.
    pub seq: u64,
    #[serde(deserialize_with = "store::valid_id")]
    pub worker: String,
    pub prompt: String,
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Allowed answers; empty means free text.
    #[serde(default)]
    pub options: Vec<String>,
    pub created: DateTime<Utc>,
    /// Identifies "the same question from the same worker" for de-duplication.
    pub key: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResolutionKind {
    Answered,
    Withdrawn,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Resolution {
    pub version: u32,
    #[serde(deserialize_with = "store::valid_id")]
    pub ask: String,
    pub kind: ResolutionKind,
    /// The answer text; absent for a withdrawal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Who resolved it: `cli:USER`, `slack:U…`, `sms:+1…`, `email:addr`, `konsole:USER`,
    /// or `rein` for a withdrawal rein made itself (a killed worker's asks).
    pub by: String,
    pub at: DateTime<Utc>,
    /// Why it was withdrawn, when rein says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Resolution {
    /// "yes — by cli:ana at 2026-…" for messages to the losers of a race.
    pub fn describe(&self) -> String {
        match self.kind {
            ResolutionKind::Answered => format!(
                "answered {:?} by {} at {}",
                self.text.as_deref().unwrap_or_default(),
                self.by,
                self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            ResolutionKind::Withdrawn => format!(
                "withdrawn by {} at {}{}",
                self.by,
                self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                self.reason
                    .as_deref()
                    .map(|reason| format!(" ({reason})"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// An ask with what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct AskRecord {
    pub ask: Ask,
    pub resolution: Option<Resolution>,
    pub archived: bool,
}

impl AskRecord {
    pub fn is_pending(&self) -> bool {
        self.resolution.is_none()
    }

    /// The flat JSON shape of `rein asks --json` and `rein state`.
    pub fn to_json(&self) -> serde_json::Value {
        let state = match &self.resolution {
            None => "pending",
            Some(r) if r.kind == ResolutionKind::Answered => "answered",
            Some(_) => "withdrawn",
        };
        let mut value = serde_json::json!({
            "id": self.ask.id,
            "seq": self.ask.seq,
            "worker": self.ask.worker,
            "prompt": self.ask.prompt,
            "ref": self.ask.reference,
            "options": self.ask.options,
            "created": self.ask.created,
            "state": state,
            "archived": self.archived,
        });
        if let Some(resolution) = &self.resolution {
            value["answer"] = serde_json::json!(resolution.text);
            value["answered_by"] = serde_json::json!(resolution.by);
            value["answered_at"] = serde_json::json!(resolution.at);
        }
        value
    }
}

/// What `rein ask` files.
#[derive(Debug, Clone)]
pub struct NewAsk {
    pub worker: String,
    pub prompt: String,
    pub reference: Option<String>,
    pub options: Vec<String>,
}

/// How [`Mailbox::file_with`] treats earlier asks of the same question.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileOptions {
    /// Withdrawals of the same question since then are final (a worker's start time).
    pub final_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filing {
    /// A new ask was written.
    New,
    /// The same worker already asked the same question; this is that ask.
    Existing,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AnswerOutcome {
    Accepted(Resolution),
    /// Someone resolved it first; this is their resolution.
    AlreadyResolved(Resolution),
    /// The text is not one of the ask's options.
    NotAnOption(Vec<String>),
}

/// Records that were read, and files that could not be (named, never skipped silently).
#[derive(Debug, Default)]
pub struct Listing {
    pub records: Vec<AskRecord>,
    pub problems: Vec<Error>,
}

pub struct Mailbox {
    dir: DataDir,
}

/// The ask and answer files a reader has read, by name and inode (see
/// [`Mailbox::list_cached`]).
#[derive(Debug, Default)]
pub struct ListingCache {
    asks: HashMap<String, (u64, Ask)>,
    answers: HashMap<String, (u64, Resolution)>,
    /// `answers/` as it was (inode, modification time) when every kept ask's answer was last
    /// looked up: while it is unchanged, no answer came, and none is looked up again.
    answers_dir: Option<DirStamp>,
}

/// A directory's inode and modification time: any entry added or removed changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirStamp {
    inode: u64,
    seconds: i64,
    nanos: i64,
}

impl DirStamp {
    fn of(dir: &std::path::Path) -> Result<Option<DirStamp>> {
        match std::fs::symlink_metadata(dir) {
            Ok(meta) => Ok(Some(DirStamp {
                inode: meta.ino(),
                seconds: meta.mtime(),
                nanos: meta.mtime_nsec(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("inspecting", dir, e)),
        }
    }

    /// Whether a change made from now on is sure to move the stamp: file times come from a
    /// clock that advances in ticks of a few milliseconds, so a stamp of this very moment
    /// could be given again to the next change.
    fn settled(&self) -> bool {
        let at = std::time::UNIX_EPOCH
            + std::time::Duration::new(self.seconds.max(0) as u64, self.nanos.max(0) as u32);
        std::time::SystemTime::now()
            .duration_since(at)
            .is_ok_and(|age| age >= std::time::Duration::from_millis(100))
    }
}

/// Makes `kept` hold exactly the files `listed`, reading those whose inode it does not have.
/// A file that cannot be read is a problem and is not kept (so it is tried again next time);
/// one gone meanwhile is left out. Returns the names of the unreadable ones.
fn refresh<T: serde::de::DeserializeOwned>(
    kept: &mut HashMap<String, (u64, T)>,
    listed: Vec<(String, PathBuf, u64)>,
    problems: &mut Vec<Error>,
) -> HashSet<String> {
    let mut unreadable = HashSet::new();
    let names: HashSet<&str> = listed.iter().map(|(id, _, _)| id.as_str()).collect();
    kept.retain(|id, _| names.contains(id.as_str()));
    for (id, path, inode) in &listed {
        if kept
            .get(id)
            .is_some_and(|(kept_inode, _)| kept_inode == inode)
        {
            continue;
        }
        match store::read_json::<T>(path) {
            Ok(Some(value)) => {
                kept.insert(id.clone(), (*inode, value));
            }
            Ok(None) => {
                kept.remove(id);
            }
            Err(problem) => {
                kept.remove(id);
                problems.push(problem);
                unreadable.insert(id.clone());
            }
        }
    }
    unreadable
}

fn question_key(ask: &NewAsk) -> String {
    let mut hasher = Sha256::new();
    for part in [
        ask.worker.as_str(),
        ask.prompt.as_str(),
        ask.reference.as_deref().unwrap_or(""),
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    for option in &ask.options {
        hasher.update(option.as_bytes());
        hasher.update([0x1fu8]);
    }
    hex::encode(hasher.finalize())[..32].to_owned()
}

fn new_id() -> String {
    let random = uuid::Uuid::new_v4();
    random.as_bytes()[..ID_LEN]
        .iter()
        .map(|b| ID_ALPHABET.as_bytes()[*b as usize % ID_ALPHABET.len()] as char)
        .collect()
}

/// Parses and checks the `--options a,b` list.
pub fn parse_options(text: &str) -> Result<Vec<String>> {
    let options: Vec<String> = text.split(',').map(|o| o.trim().to_owned()).collect();
    check_options(&options)?;
    if options.iter().any(String::is_empty) {
        return Err(Error::invalid(format!(
            "invalid --options {text:?}: an option is empty; write them like yes,no"
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(duplicate) = options.iter().find(|o| !seen.insert(o.to_lowercase())) {
        return Err(Error::invalid(format!(
            "invalid --options {text:?}: {duplicate:?} is listed twice"
        )));
    }
    Ok(options)
}

/// Refuses more than [`MAX_OPTIONS`] options or an option longer than [`MAX_OPTION`] bytes.
fn check_options(options: &[String]) -> Result<()> {
    if options.len() > MAX_OPTIONS {
        return Err(Error::invalid(format!(
            "the ask offers {} options; the limit is {MAX_OPTIONS}",
            options.len()
        )));
    }
    for option in options {
        check_size("option", option, MAX_OPTION)?;
    }
    Ok(())
}

impl Mailbox {
    pub fn new(dir: DataDir) -> Self {
        Mailbox { dir }
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.dir
    }

    /// Files an ask, or finds the same worker's identical ask that is still in the mailbox
    /// (pending, or resolved but not yet delivered).
    pub fn file(&self, new: &NewAsk) -> Result<(Ask, Filing)> {
        self.file_with(new, FileOptions::default())
    }

    /// [`Mailbox::file`], where a withdrawal of the same question since
    /// `options.final_since` is final: that withdrawn ask is returned instead of a new one,
    /// so its asker learns at once that the answer is no.
    ///
    /// Cost: constant in the number of pending and archived asks. `asks/.keys/KEY` names the
    /// latest ask of each question; it is written before the ask is published, so a crash in
    /// between leaves an entry that names nothing (ignored), never an ask the index misses.
    pub fn file_with(&self, new: &NewAsk, options: FileOptions) -> Result<(Ask, Filing)> {
        store::validate_id("worker id", &new.worker)?;
        if new.prompt.trim().is_empty() {
            return Err(Error::invalid(
                "the ask's prompt is empty; pass --prompt TEXT or --prompt - to read it from stdin",
            ));
        }
        check_size("prompt", &new.prompt, MAX_PROMPT)?;
        if let Some(reference) = &new.reference {
            check_size("reference (--ref)", reference, MAX_REFERENCE)?;
        }
        check_options(&new.options)?;
        self.dir.create_dirs()?;
        let key = question_key(new);
        let _lock = store::lock(&self.dir.asks_lock())?;
        // Killed askers may have left temp files here; the lock makes this the one sweeper.
        // A temp is taken for stale only after STALE_TEMP, so a look every STALE_TEMP/2
        // finds each one soon enough, and a filing costs a stat instead of a listing of
        // every pending ask and question.
        if store::older_than(&self.dir.asks_swept(), store::STALE_TEMP / 2)? {
            for dir in [self.dir.asks(), self.dir.ask_keys()] {
                store::sweep_temps(&dir, store::STALE_TEMP)?;
            }
            store::touch(&self.dir.asks_swept())?;
        }
        self.ensure_key_index()?;
        if let Some(id) = store::read_text(&self.dir.ask_key(&key))? {
            let id = id.trim();
            if store::validate_id("ask id", id).is_ok() {
                // A corrupt ask must not stop a worker from asking; `rein asks` reports it.
                if let Ok(Some(existing)) = store::read_json::<Ask>(&self.dir.ask(id)) {
                    if existing.key == key {
                        return Ok((existing, Filing::Existing));
                    }
                }
                if let Some(since) = options.final_since {
                    if let Ok(Some(archived)) = store::read_json::<Ask>(&self.dir.archived_ask(id))
                    {
                        let withdrawn = self
                            .resolution(id)
                            .ok()
                            .flatten()
                            .is_some_and(|r| r.kind == ResolutionKind::Withdrawn);
                        if archived.key == key && withdrawn && archived.created >= since {
                            return Ok((archived, Filing::Existing));
                        }
                    }
                }
            }
        }
        let seq = self.next_seq()?;
        loop {
            let ask = Ask {
                version: FORMAT_VERSION,
                id: new_id(),
                seq,
                worker: new.worker.clone(),
                prompt: new.prompt.clone(),
                reference: new.reference.clone(),
                options: new.options.clone(),
                created: Utc::now(),
                key: key.clone(),
            };
            let taken =
                self.dir.archived_ask(&ask.id).exists() || self.dir.answer(&ask.id).exists();
            if taken {
                continue;
            }
            store::write_atomic(&self.dir.ask_key(&key), format!("{}\n", ask.id).as_bytes())?;
            if store::create_exclusive(&self.dir.ask(&ask.id), &store::to_json_bytes(&ask))? {
                return Ok((ask, Filing::New));
            }
        }
    }

    /// Builds `asks/.keys/` from the asks once (a data dir from before the index); the
    /// caller holds the asks lock.
    fn ensure_key_index(&self) -> Result<()> {
        let complete = self.dir.ask_keys_complete();
        if complete.exists() {
            return Ok(());
        }
        store::ensure_dir(&self.dir.ask_keys())?;
        let mut latest: std::collections::BTreeMap<String, (u64, String)> = Default::default();
        for dir in [self.dir.archived_asks(), self.dir.asks()] {
            for (_, path) in store::list(&dir, ".json")? {
                if let Ok(Some(ask)) = store::read_json::<Ask>(&path) {
                    let entry = latest.entry(ask.key.clone()).or_insert((0, String::new()));
                    if ask.seq >= entry.0 {
                        *entry = (ask.seq, ask.id);
                    }
                }
            }
        }
        // Each entry is renamed into place without its own fsync (tens of thousands of them in
        // an old data dir would take minutes); one syncfs makes them all durable before the
        // index is marked complete. A crash before that leaves it incomplete: built again.
        for (key, (_, id)) in latest {
            store::replace_unsynced(&self.dir.ask_key(&key), format!("{id}\n").as_bytes())?;
        }
        let keys = std::fs::File::open(self.dir.ask_keys())
            .map_err(|e| Error::io("opening", self.dir.ask_keys(), e))?;
        // SAFETY: syncfs on a descriptor this function owns for the call's duration.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&keys)) } != 0 {
            return Err(Error::io(
                "syncing",
                self.dir.ask_keys(),
                std::io::Error::last_os_error(),
            ));
        }
        store::write_atomic(&complete, b"1\n")
    }

    /// Reads and bumps `asks/.sequence`; the caller holds the asks lock.
    fn next_seq(&self) -> Result<u64> {
        let path = self.dir.ask_sequence();
        let current = match store::read_text(&path)? {
            None => 0,
            Some(text) => text.trim().parse::<u64>().map_err(|_| Error::Corrupt {
                path: path.clone(),
                detail: format!("expected a number, found {:?}", text.trim()),
            })?,
        };
        let next = current + 1;
        store::write_atomic(&path, format!("{next}\n").as_bytes())?;
        Ok(next)
    }

    /// The highest seq handed out so far (0 before the first ask).
    pub fn last_seq(&self) -> Result<u64> {
        Ok(store::read_text(&self.dir.ask_sequence())?
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0))
    }

    fn find_ask(&self, id: &str) -> Result<Option<(Ask, bool)>> {
        if let Some(ask) = store::read_json::<Ask>(&self.dir.ask(id))? {
            return Ok(Some((ask, false)));
        }
        Ok(store::read_json::<Ask>(&self.dir.archived_ask(id))?.map(|ask| (ask, true)))
    }

    /// The resolution of an ask, if it has one.
    pub fn resolution(&self, id: &str) -> Result<Option<Resolution>> {
        store::read_json(&self.dir.answer(id))
    }

    pub fn get(&self, id: &str) -> Result<AskRecord> {
        store::validate_id("ask id", id)?;
        let (ask, archived) = self.find_ask(id)?.ok_or_else(|| {
            Error::NotFound(format!(
                "no ask {id:?} in {}; `rein asks --all` lists them",
                self.dir.root().display()
            ))
        })?;
        let resolution = self.resolution(id)?;
        Ok(AskRecord {
            ask,
            resolution,
            archived,
        })
    }

    /// Answers an ask. The first resolution wins across processes.
    pub fn answer(&self, id: &str, text: &str, by: &str) -> Result<AnswerOutcome> {
        let record = self.get(id)?;
        // Line ends typed or pasted as CRLF are line ends, not carriage returns.
        let text = text.replace("\r\n", "\n");
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            return Err(Error::invalid(format!(
                "the answer to {id} is empty; give the answer text"
            )));
        }
        check_size("answer", text, MAX_ANSWER)?;
        if let Some(control) = text
            .chars()
            .find(|&c| crate::text::is_control(c) && !matches!(c, '\n' | '\t'))
        {
            return Err(Error::invalid(format!(
                "the answer to {id} contains the control character {control:?}; answer in plain text"
            )));
        }
        if let Some(resolution) = record.resolution {
            return Ok(AnswerOutcome::AlreadyResolved(resolution));
        }
        let text = if record.ask.options.is_empty() {
            text.to_owned()
        } else {
            match record
                .ask
                .options
                .iter()
                .find(|o| o.eq_ignore_ascii_case(text.trim()))
            {
                Some(option) => option.clone(),
                None => return Ok(AnswerOutcome::NotAnOption(record.ask.options)),
            }
        };
        self.resolve(id, ResolutionKind::Answered, Some(text), by, None)
    }

    /// Withdraws a pending ask; the waiting worker's `rein ask` exits 4.
    pub fn withdraw(&self, id: &str, by: &str) -> Result<AnswerOutcome> {
        let record = self.get(id)?;
        if let Some(resolution) = record.resolution {
            return Ok(AnswerOutcome::AlreadyResolved(resolution));
        }
        self.resolve(id, ResolutionKind::Withdrawn, None, by, None)
    }

    /// Withdraws a pending ask and records why (shown to the asker and on every channel).
    pub fn withdraw_because(&self, id: &str, by: &str, reason: &str) -> Result<AnswerOutcome> {
        let record = self.get(id)?;
        if let Some(resolution) = record.resolution {
            return Ok(AnswerOutcome::AlreadyResolved(resolution));
        }
        self.resolve(
            id,
            ResolutionKind::Withdrawn,
            None,
            by,
            Some(reason.to_owned()),
        )
    }

    fn resolve(
        &self,
        id: &str,
        kind: ResolutionKind,
        text: Option<String>,
        by: &str,
        reason: Option<String>,
    ) -> Result<AnswerOutcome> {
        if by.trim().is_empty() || by.contains(['\n', '\r']) {
            return Err(Error::invalid(format!(
                "invalid identity {by:?}: write it like cli:ana or slack:U123"
            )));
        }
        // A resolution written through a symlinked answers/ would land wherever it points.
        store::ensure_real_dir(&self.dir.answers())?;
        let resolution = Resolution {
            version: FORMAT_VERSION,
            ask: id.to_owned(),
            kind,
            text,
            by: by.to_owned(),
            at: Utc::now(),
            reason,
        };
        // Listed in the index before it exists: an index entry whose answer never came (a
        // lost race, a crash) points at nothing new and is passed over.
        self.index_resolution(id, resolution.at)?;
        if store::create_exclusive(&self.dir.answer(id), &store::to_json_bytes(&resolution))? {
            return Ok(AnswerOutcome::Accepted(resolution));
        }
        let winner = self.resolution(id)?.ok_or_else(|| Error::Corrupt {
            path: self.dir.answer(id),
            detail: "the answer vanished while it was being read".into(),
        })?;
        Ok(AnswerOutcome::AlreadyResolved(winner))
    }

    /// Adds a resolution of `id` at `at` to `answers/.recent/`, the index that lets a reader
    /// find what was resolved since a moment without a look at every answer ever given;
    /// entries older than [`RECENT_PRUNED_AFTER`] go, at most every ten minutes.
    fn index_resolution(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        let index = self.dir.recent_answers();
        // Something planted in its place (a symlink) is not written through; the readers do
        // not trust it either, and look at every answer instead.
        if let Err(problem) = store::ensure_real_dir(&index) {
            tracing::warn!("not indexing the resolution of {id}: {problem}");
            return Ok(());
        }
        // What the index covers begins when it was made.
        let start = index.join(".start");
        if !start.exists() {
            store::create_exclusive(&start, format!("{}\n", Utc::now().to_rfc3339()).as_bytes())?;
        }
        store::touch(&index.join(format!("{:020}-{id}", at.timestamp_micros().max(0))))?;
        let pruned = index.join(".pruned");
        if store::older_than(&pruned, std::time::Duration::from_secs(600))? {
            let horizon = (Utc::now() - RECENT_PRUNED_AFTER).timestamp_micros();
            for (micros, _, path) in recent_entries(&index)? {
                if micros < horizon {
                    store::remove_file(&path)?;
                }
            }
            store::touch(&pruned)?;
        }
        Ok(())
    }

    /// The resolutions given after `since`, found through `answers/.recent/` when it covers
    /// that moment (it began before it, `since` is within [`RECENT_TRUSTED`], and since the
    /// machine's last boot, since an index entry is not flushed to disk); `None` when only a
    /// look at every answer can tell.
    pub fn resolved_since(&self, since: DateTime<Utc>) -> Result<Option<Vec<Resolution>>> {
        let index = self.dir.recent_answers();
        if !std::fs::symlink_metadata(&index).is_ok_and(|meta| meta.is_dir()) {
            return Ok(None);
        }
        let start = store::read_text(&index.join(".start"))?
            .and_then(|text| DateTime::parse_from_rfc3339(text.trim()).ok())
            .map(|at| at.with_timezone(&Utc));
        let covered = start.is_some_and(|start| start <= since)
            && since >= Utc::now() - RECENT_TRUSTED
            && boot_time().is_some_and(|boot| boot <= since);
        if !covered {
            return Ok(None);
        }
        // Entries are named by the resolution's own time: one a second older is still read,
        // in case a clock step put it just before.
        let from = (since - chrono::TimeDelta::seconds(1)).timestamp_micros();
        let mut seen = HashSet::new();
        let mut resolved = Vec::new();
        for (micros, id, _) in recent_entries(&index)? {
            if micros < from || !seen.insert(id.clone()) {
                continue;
            }
            if let Some(resolution) = self.resolution(&id)?.filter(|r| r.at > since) {
                resolved.push(resolution);
            }
        }
        Ok(Some(resolved))
    }

    /// Blocks until the ask is resolved or the deadline passes. Only the ask's own answer file
    /// is watched (answers are published whole, by a link): answers to other asks do not wake
    /// it, and watching costs the same however many answers `answers/` holds (a watch for
    /// writes inside a directory makes the kernel mark every cached entry of it).
    pub fn wait(&self, id: &str, deadline: Option<Instant>) -> Result<Option<Resolution>> {
        store::watch::wait_for_targets(&[self.answer_target(id)], deadline, || self.resolution(id))
    }

    /// What announces the resolution of `id`: its answer file appearing.
    pub fn answer_target(&self, id: &str) -> store::watch::Target {
        store::watch::Target::File(self.dir.answer(id))
    }

    /// Archives a resolved ask once its asker has the resolution. Idempotent.
    pub fn deliver(&self, id: &str) -> Result<()> {
        store::move_file(&self.dir.ask(id), &self.dir.archived_ask(id))?;
        Ok(())
    }

    /// Asks in the mailbox (pending, and resolved but undelivered); with `all`, the archive too.
    pub fn list(&self, all: bool) -> Result<Listing> {
        if !all {
            return self.list_cached(&mut ListingCache::default());
        }
        let mut listing = Listing::default();
        for (dir, archived) in [(self.dir.asks(), false), (self.dir.archived_asks(), true)] {
            for (id, path) in store::list(&dir, ".json")? {
                let read = store::read_json::<Ask>(&path).and_then(|ask| {
                    let resolution = self.resolution(&id)?;
                    Ok((ask, resolution))
                });
                match read {
                    Ok((Some(ask), resolution)) => listing.records.push(AskRecord {
                        ask,
                        resolution,
                        archived,
                    }),
                    Ok((None, _)) => {} // moved to the archive while we listed
                    Err(problem) => listing.problems.push(problem),
                }
            }
        }
        listing.records.sort_by_key(|r| r.ask.seq);
        Ok(listing)
    }

    /// The mailbox's asks (not the archive), reading only the ask and answer files that are
    /// new since `cache` was last used: for a reader that lists again on every change (a
    /// waiting `rein wait`, the screen, a bridge), the cost of a change is two directory
    /// listings and the files that changed, not every pending ask.
    pub fn list_cached(&self, cache: &mut ListingCache) -> Result<Listing> {
        let mut listing = Listing::default();
        // answers/ before asks/: an answer is made after its ask, so every answer there at
        // this moment belongs to an ask the listing below finds (or one archived meanwhile).
        let answers_dir = DirStamp::of(&self.dir.answers())?;
        // Asks first, then their answers: an answer written meanwhile is seen with its ask.
        let asks = store::list_with_inodes(&self.dir.asks(), ".json")?;
        refresh(&mut cache.asks, asks, &mut listing.problems);
        let unreadable = if answers_dir.is_some() && answers_dir == cache.answers_dir {
            // No answer came since every kept ask's answer was looked up, and an ask new
            // since then has none: what is kept is what a look would find.
            cache.answers.retain(|id, _| cache.asks.contains_key(id));
            HashSet::new()
        } else {
            // answers/ keeps every resolution ever made; only those of the asks here matter,
            // and each is looked up by name (a stat), not the whole directory listed.
            let mut answers = Vec::new();
            for id in cache.asks.keys() {
                let path = self.dir.answer(id);
                match std::fs::symlink_metadata(&path) {
                    Ok(meta) => answers.push((id.clone(), path, meta.ino())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => listing.problems.push(Error::io("inspecting", &path, e)),
                }
            }
            // An ask whose answer cannot be read is a problem, not a pending ask.
            let unreadable = refresh(&mut cache.answers, answers, &mut listing.problems);
            // Kept only when nothing is left to look at again and a later change is sure to
            // move the stamp.
            cache.answers_dir =
                answers_dir.filter(|stamp| stamp.settled() && listing.problems.is_empty());
            unreadable
        };
        for (id, (_, ask)) in &cache.asks {
            if unreadable.contains(id) {
                continue;
            }
            listing.records.push(AskRecord {
                ask: ask.clone(),
                resolution: cache.answers.get(id).map(|(_, r)| r.clone()),
                archived: false,
            });
        }
        listing.records.sort_by_key(|r| r.ask.seq);
        Ok(listing)
    }

    /// [`Mailbox::pending`] through a [`ListingCache`].
    pub fn pending_cached(&self, cache: &mut ListingCache) -> Result<Listing> {
        let mut listing = self.list_cached(cache)?;
        listing.records.retain(AskRecord::is_pending);
        Ok(listing)
    }

    /// Pending asks only, oldest first.
    pub fn pending(&self) -> Result<Listing> {
        let mut listing = self.list(false)?;
        listing.records.retain(AskRecord::is_pending);
        Ok(listing)
    }
}

/// How far back `answers/.recent/` is trusted to list every resolution.
pub const RECENT_TRUSTED: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// How old an entry of `answers/.recent/` gets before it is pruned.
pub const RECENT_PRUNED_AFTER: chrono::TimeDelta = chrono::TimeDelta::hours(2);

/// The entries of `answers/.recent/`: (time in microseconds, ask id, path), oldest first.
fn recent_entries(index: &std::path::Path) -> Result<Vec<(i64, String, PathBuf)>> {
    let entries = match std::fs::read_dir(index) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("listing", index, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", index, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((micros, id)) = name.split_once('-') else {
            continue;
        };
        let (Ok(micros), Ok(())) = (micros.parse::<i64>(), store::validate_id("ask id", id)) else {
            continue;
        };
        found.push((micros, id.to_owned(), entry.path()));
    }
    found.sort();
    Ok(found)
}

/// When the machine last booted (`btime` in /proc/stat).
fn boot_time() -> Option<DateTime<Utc>> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let seconds = stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse::<i64>()
        .ok()?;
    DateTime::from_timestamp(seconds, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox() -> (tempfile::TempDir, Mailbox) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mailbox = Mailbox::new(DataDir::new(dir.path()));
        (dir, mailbox)
    }

    /// Sets a file's or directory's modification time.
    fn set_modified(path: &std::path::Path, at: std::time::SystemTime) {
        std::fs::File::open(path)
            .and_then(|file| file.set_modified(at))
            .unwrap_or_else(|error| panic!("cannot set the time of {}: {error}", path.display()));
    }

    fn ago(seconds: u64) -> std::time::SystemTime {
        std::time::SystemTime::now() - std::time::Duration::from_secs(seconds)
    }

    fn new_ask(prompt: &str, options: &[&str]) -> NewAsk {
        NewAsk {
            worker: "w1".into(),
            prompt: prompt.into(),
            reference: None,
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn resolutions_since_a_moment_come_from_the_index_of_recent_ones() {
        let (_dir, mailbox) = mailbox();
        let (early, _) = mailbox.file(&new_ask("early?", &[])).expect("file");
        let (late, _) = mailbox.file(&new_ask("late?", &[])).expect("file");
        let (gone, _) = mailbox.file(&new_ask("gone?", &[])).expect("file");
        let (never, _) = mailbox.file(&new_ask("never?", &[])).expect("file");
        let before_any = Utc::now();
        assert!(
            mailbox.resolved_since(before_any).expect("look").is_none(),
            "no index yet: only a look at every answer can tell"
        );
        mailbox.answer(&early.id, "yes", "cli:ana").expect("answer");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let between = Utc::now();
        mailbox.answer(&late.id, "no", "cli:ana").expect("answer");
        mailbox.withdraw(&gone.id, "cli:ana").expect("withdraw");
        // A second answer loses, and its index entry points at the first.
        mailbox
            .answer(&late.id, "again", "cli:bob")
            .expect("answer");
        let ids = |since| -> Vec<(String, Option<String>)> {
            let mut found: Vec<_> = mailbox
                .resolved_since(since)
                .expect("look")
                .expect("covered by the index")
                .into_iter()
                .map(|r| (r.ask, r.text))
                .collect();
            found.sort();
            found
        };
        let mut expected = vec![
            (late.id.clone(), Some("no".to_owned())),
            (gone.id.clone(), None),
        ];
        expected.sort();
        assert_eq!(ids(between), expected);
        assert!(ids(Utc::now()).is_empty());
        assert!(!ids(between).iter().any(|(id, _)| *id == never.id));
        // A moment before the index began, or past what it keeps, needs the full look.
        let start = mailbox.data_dir().recent_answers().join(".start");
        std::fs::write(&start, format!("{}\n", Utc::now().to_rfc3339())).expect("start");
        assert!(mailbox.resolved_since(between).expect("look").is_none());
        std::fs::write(&start, "2000-01-01T00:00:00Z\n").expect("start");
        let long_ago = Utc::now() - RECENT_TRUSTED - chrono::TimeDelta::minutes(1);
        assert!(mailbox.resolved_since(long_ago).expect("look").is_none());
        // An index replaced by a symlink is neither trusted nor written through; answering
        // still works.
        let index = mailbox.data_dir().recent_answers();
        let elsewhere = mailbox.data_dir().root().join("elsewhere");
        std::fs::rename(&index, &elsewhere).expect("move the index");
        std::os::unix::fs::symlink(&elsewhere, &index).expect("plant");
        assert!(mailbox.resolved_since(between).expect("look").is_none());
        let before = std::fs::read_dir(&elsewhere).expect("list").count();
        mailbox.answer(&never.id, "yes", "cli:ana").expect("answer");
        assert_eq!(std::fs::read_dir(&elsewhere).expect("list").count(), before);
    }

    #[test]
    fn old_entries_of_the_index_of_recent_resolutions_are_pruned() {
        let (_dir, mailbox) = mailbox();
        let (first, _) = mailbox.file(&new_ask("one?", &[])).expect("file");
        let (second, _) = mailbox.file(&new_ask("two?", &[])).expect("file");
        let (third, _) = mailbox.file(&new_ask("three?", &[])).expect("file");
        mailbox.answer(&first.id, "yes", "cli:ana").expect("answer");
        let index = mailbox.data_dir().recent_answers();
        let old =
            (Utc::now() - RECENT_PRUNED_AFTER - chrono::TimeDelta::minutes(1)).timestamp_micros();
        let planted = index.join(format!("{old:020}-{}", first.id));
        std::fs::write(&planted, "").expect("plant");
        // Pruned at most every ten minutes: not at the next answer, then once that passed.
        mailbox
            .answer(&second.id, "yes", "cli:ana")
            .expect("answer");
        assert!(planted.exists());
        set_modified(&index.join(".pruned"), ago(601));
        mailbox.withdraw(&third.id, "cli:ana").expect("withdraw");
        assert!(!planted.exists(), "an entry past two hours is pruned");
        assert_eq!(recent_entries(&index).expect("entries").len(), 3);
    }

    #[test]
    fn a_cached_listing_reads_only_files_that_changed() {
        let (dir, mailbox) = mailbox();
        let (first, _) = mailbox.file(&new_ask("one?", &[])).expect("file");
        let (second, _) = mailbox.file(&new_ask("two?", &[])).expect("file");
        let mut cache = ListingCache::default();
        let ids = |listing: &Listing| -> Vec<(String, bool)> {
            listing
                .records
                .iter()
                .map(|r| (r.ask.id.clone(), r.is_pending()))
                .collect()
        };
        let cached = mailbox.list_cached(&mut cache).expect("list");
        assert_eq!(ids(&cached), ids(&mailbox.list(false).expect("list")));
        assert_eq!(cached.records.len(), 2);

        // Rewritten in place (same inode; rein never does this): not read again.
        let path = dir.path().join("asks").join(format!("{}.json", first.id));
        let original = std::fs::read(&path).expect("read");
        std::fs::write(&path, b"not json").expect("overwrite in place");
        let again = mailbox.list_cached(&mut cache).expect("list");
        assert_eq!(again.records.len(), 2, "the kept copy is used");
        assert!(again.problems.is_empty());
        // Replaced by a rename, as every rein write is: read again.
        let temp = dir.path().join("asks").join(".tmp-replace");
        std::fs::write(&temp, &original).expect("write");
        std::fs::rename(&temp, &path).expect("rename over");

        mailbox
            .answer(&second.id, "yes", "cli:test")
            .expect("answer");
        let answered = mailbox.list_cached(&mut cache).expect("list");
        assert_eq!(
            ids(&answered),
            vec![(first.id.clone(), true), (second.id.clone(), false)]
        );
        mailbox.deliver(&second.id).expect("deliver");
        let delivered = mailbox.list_cached(&mut cache).expect("list");
        assert_eq!(ids(&delivered), vec![(first.id.clone(), true)]);

        // While answers/ is unchanged, no answer is looked up again: one slipped in with the
        // directory's time put back is not seen (which only this test can do) ...
        let answers = dir.path().join("answers");
        let (third, _) = mailbox.file(&new_ask("three?", &[])).expect("file");
        set_modified(&answers, ago(5));
        mailbox.list_cached(&mut cache).expect("a full look");
        let stamp = std::fs::metadata(&answers)
            .expect("answers/")
            .modified()
            .expect("mtime");
        mailbox
            .answer(&third.id, "yes", "cli:test")
            .expect("answer");
        set_modified(&answers, stamp);
        let shortcut = mailbox.list_cached(&mut cache).expect("list");
        assert!(
            ids(&shortcut).contains(&(third.id.clone(), true)),
            "the unchanged directory was trusted"
        );
        // ... while any answer made moves the directory's time, and is seen at once.
        set_modified(&answers, ago(5));
        mailbox.list_cached(&mut cache).expect("a full look");
        let (fourth, _) = mailbox.file(&new_ask("four?", &[])).expect("file");
        mailbox
            .answer(&fourth.id, "no", "cli:test")
            .expect("answer");
        let seen = mailbox.list_cached(&mut cache).expect("list");
        assert!(ids(&seen).contains(&(fourth.id.clone(), false)));
        mailbox.deliver(&third.id).expect("deliver");
        mailbox.deliver(&fourth.id).expect("deliver");

        // A corrupt answer (written as rein writes: a new file) hides its ask, as uncached.
        let answer = dir
            .path()
            .join("answers")
            .join(format!("{}.json", first.id));
        std::fs::write(&answer, b"{").expect("plant");
        let corrupt = mailbox.list_cached(&mut cache).expect("list");
        let uncached = mailbox.list(false).expect("list");
        assert!(corrupt.records.is_empty() && uncached.records.is_empty());
        assert_eq!(corrupt.problems.len(), 1);
        assert_eq!(uncached.problems.len(), 1);
    }

    #[test]
    fn same_question_is_filed_once() {
        let (_dir, mailbox) = mailbox();
        let (first, filing) = mailbox
            .file(&new_ask("merge?", &["yes", "no"]))
            .expect("file");
        assert_eq!(filing, Filing::New);
        let (again, filing) = mailbox
            .file(&new_ask("merge?", &["yes", "no"]))
            .expect("file");
        assert_eq!(
            (again.id.as_str(), filing),
            (first.id.as_str(), Filing::Existing)
        );
        let (other, filing) = mailbox.file(&new_ask("deploy?", &[])).expect("file");
        assert_eq!(filing, Filing::New);
        assert!(other.seq > first.seq);
    }

    #[test]
    fn a_data_dir_from_before_the_key_index_gets_one() {
        let (dir, mailbox) = mailbox();
        let (first, _) = mailbox
            .file(&new_ask("merge?", &["yes", "no"]))
            .expect("file");
        let (second, _) = mailbox.file(&new_ask("deploy?", &[])).expect("file");
        std::fs::remove_dir_all(dir.path().join("asks/.keys")).expect("drop the index");
        let (again, filing) = mailbox
            .file(&new_ask("merge?", &["yes", "no"]))
            .expect("file");
        assert_eq!((again.id, filing), (first.id, Filing::Existing));
        let (again, filing) = mailbox.file(&new_ask("deploy?", &[])).expect("file");
        assert_eq!((again.id, filing), (second.id, Filing::Existing));
        assert!(dir.path().join("asks/.keys/.complete").exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("asks/.keys"))
            .expect("keys")
            .flatten()
            .filter(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.ends_with(".tmp") || name.starts_with(".tmp")
            })
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn answers_respect_options_and_first_wins() {
        let (_dir, mailbox) = mailbox();
        let (ask, _) = mailbox
            .file(&new_ask("merge?", &["yes", "no"]))
            .expect("file");
        assert_eq!(
            mailbox.answer(&ask.id, "maybe", "cli:a").expect("answer"),
            AnswerOutcome::NotAnOption(vec!["yes".into(), "no".into()])
        );
        let AnswerOutcome::Accepted(won) = mailbox.answer(&ask.id, "YES", "cli:a").expect("answer")
        else {
            panic!("first answer must be accepted");
        };
        assert_eq!(won.text.as_deref(), Some("yes"));
        assert_eq!(
            mailbox.answer(&ask.id, "no", "cli:b").expect("answer"),
            AnswerOutcome::AlreadyResolved(won.clone())
        );
        mailbox.deliver(&ask.id).expect("deliver");
        assert_eq!(
            mailbox.withdraw(&ask.id, "cli:b").expect("withdraw"),
            AnswerOutcome::AlreadyResolved(won)
        );
        assert!(mailbox.list(false).expect("list").records.is_empty());
        assert_eq!(mailbox.list(true).expect("list").records.len(), 1);
    }

    #[test]
    fn answers_with_control_characters_are_refused() {
        let (_dir, mailbox) = mailbox();
        let (ask, _) = mailbox.file(&new_ask("merge?", &[])).expect("file");
        let hostile = "\u{1b}]2;owned\u{7}\u{1b}[2J yes";
        let error = mailbox
            .answer(&ask.id, hostile, "email:a@b")
            .expect_err("refused");
        assert_eq!(error.exit_code(), crate::error::EXIT_USAGE);
        assert_eq!(mailbox.resolution(&ask.id).expect("read"), None);
        let accepted = mailbox.answer(&ask.id, "two\r\nlines\tand a tab\r\n", "cli:a");
        let Ok(AnswerOutcome::Accepted(resolution)) = accepted else {
            panic!("a plain multi-line answer is accepted: {accepted:?}");
        };
        assert_eq!(resolution.text.as_deref(), Some("two\nlines\tand a tab"));
    }

    #[test]
    fn records_with_invalid_ids_do_not_load() {
        let (dir, mailbox) = mailbox();
        let data = DataDir::new(dir.path());
        data.create_dirs().expect("dirs");
        let at = "2026-01-01T00:00:00Z";
        // Found by fuzzing: an answer file naming the ask "" loaded.
        std::fs::write(
            data.answer("abc234"),
            format!(r#"{{"version":1,"ask":"","kind":"answered","text":"yes","by":"cli:a","at":"{at}"}}"#),
        )
        .expect("write");
        assert!(mailbox.resolution("abc234").is_err());
        for (id, worker) in [("..", "w1"), ("abc234", "W1"), ("a/b", "w1")] {
            let ask = format!(
                r#"{{"version":1,"id":"{id}","seq":1,"worker":"{worker}","prompt":"p","created":"{at}","key":"k"}}"#
            );
            assert!(serde_json::from_str::<Ask>(&ask).is_err(), "{ask}");
        }
    }

    #[test]
    fn options_are_checked() {
        assert_eq!(parse_options("yes, no").expect("ok"), ["yes", "no"]);
        assert!(parse_options("yes,,no").is_err());
        assert!(parse_options("yes,YES").is_err());
    }
}
