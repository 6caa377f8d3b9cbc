//! A bridge's delivery ledger: what it posted where, so every ask and note reaches each route
//! once, across the bridge's own crashes and restarts.
//!
//! One file per (item, route) in `bridges/NAME/ledger/`, rewritten atomically at each stage:
//! `sending` is written *before* the channel is called and `sent` (with the channel's
//! [`PostRef`]) after. A bridge that finds `sending` at start-up cannot know whether the
//! person got the message, so it sends again marked as a repeat: at most one duplicate, and
//! recognisable as such. `retrying` means the channel said the send did not happen.
//! `closed` means the resolution was posted too.
//!
//! `bridges/NAME/seen/` holds the ids of inbound messages already handled, so a redelivered
//! reply (a Slack retry, a re-polled SMS) answers nothing twice.
//!
//! The ledger's cost does not grow with history: an ask's entries are pruned once it is
//! closed (its resolution posted), notes' entries once every note up to them is settled (the
//! `notes-done` cursor names the last such note, so older notes are not even read again), and
//! `posts/` indexes each post by its channel id, so a reply finds its ask without a scan.
//! `pruned` counts what went, for `rein bridge ls`. The running bridge holds
//! `locks/bridge.NAME.lock` in the data dir.
//!
//! Nor does a bridge's work per event grow with the ledger's size: the running bridge is the
//! ledger's only writer (it holds its lock), so its [`Ledger`] reads the entry files once, at
//! the first look, and from then on keeps that copy current with its own writes, each made on
//! disk first. The disk stays the truth at start-up. A `Ledger` sees no entry another one
//! writes after its first look: a reader of the running bridge's ledger (`rein bridge ls`)
//! opens a new one for each look.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bridge::PostRef;
use crate::error::Result;
use crate::store::{self, DataDir};

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Ask,
    Note,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The channel is being called: the person may or may not have it.
    Sending,
    /// The channel said the send did not happen; try again at `retry_at`.
    Retrying,
    Sent,
    /// Sent, and the resolution was posted too.
    Closed,
    /// The channel refused for good (see `error`).
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub version: u32,
    pub kind: Kind,
    /// The ask or note id.
    #[serde(deserialize_with = "store::valid_id")]
    pub item: String,
    pub route: String,
    pub stage: Stage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post: Option<PostRef>,
    pub attempts: u32,
    #[serde(default)]
    pub resent: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failed attempts to post the resolution of a sent ask (retried at `retry_at`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resolve_attempts: u32,
    pub updated: DateTime<Utc>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Entry {
    pub fn new(kind: Kind, item: &str, route: &str) -> Entry {
        Entry {
            version: FORMAT_VERSION,
            kind,
            item: item.to_owned(),
            route: route.to_owned(),
            stage: Stage::Sending,
            post: None,
            attempts: 0,
            resent: false,
            retry_at: None,
            error: None,
            resolve_attempts: 0,
            updated: Utc::now(),
        }
    }
}

fn short_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))[..16].to_owned()
}

/// Where an entry sits in the ledger: one file per (kind, item, route).
type Key = (Kind, String, String);

fn key_of(entry: &Entry) -> Key {
    (entry.kind, entry.item.clone(), entry.route.clone())
}

type Entries = BTreeMap<Key, Entry>;

#[derive(Debug)]
pub struct Ledger {
    /// `bridges/NAME/`.
    root: PathBuf,
    dir: PathBuf,
    /// The entries as they are on disk: None until the first look, and again after a write
    /// that failed (it may have half happened), so the next look reads the disk afresh.
    known: Mutex<Option<Entries>>,
}

impl Ledger {
    pub fn open(data: &DataDir, bridge: &str) -> Result<Ledger> {
        let root = data.bridge(bridge)?;
        let dir = root.join("ledger");
        store::ensure_dir(&dir)?;
        store::ensure_dir(&root.join("posts"))?;
        Ok(Ledger {
            root,
            dir,
            known: Mutex::new(None),
        })
    }

    fn known(&self) -> MutexGuard<'_, Option<Entries>> {
        // The map is only changed by whole inserts and removes: one a panic interrupted is
        // still a map of entries written.
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `look` on the entries, read from disk if this is the first look.
    fn look<T>(&self, look: impl FnOnce(&Entries) -> T) -> Result<T> {
        let mut known = self.known();
        let entries = match &mut *known {
            Some(entries) => entries,
            unread => unread.insert(
                self.read_entries()?
                    .into_iter()
                    .map(|entry| (key_of(&entry), entry))
                    .collect(),
            ),
        };
        Ok(look(entries))
    }

    /// Makes a change on disk and then, if the entries were read, the same change to them.
    fn change<T>(
        &self,
        on_disk: impl FnOnce() -> Result<T>,
        in_memory: impl FnOnce(&mut Entries),
    ) -> Result<T> {
        let mut known = self.known();
        match on_disk() {
            Ok(done) => {
                if let Some(entries) = known.as_mut() {
                    in_memory(entries);
                }
                Ok(done)
            }
            Err(error) => {
                *known = None;
                Err(error)
            }
        }
    }

    /// Every entry file, read from disk.
    fn read_entries(&self) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for (_, path) in store::list(&self.dir, ".json")? {
            if let Some(entry) = store::read_json(&path)? {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    fn path(&self, kind: Kind, item: &str, route: &str) -> PathBuf {
        let kind = match kind {
            Kind::Ask => "ask",
            Kind::Note => "note",
        };
        self.dir
            .join(format!("{kind}.{item}.{}.json", short_hash(route)))
    }

    fn post_path(&self, post: &PostRef) -> PathBuf {
        self.root
            .join("posts")
            .join(short_hash(&format!("{}\0{}", post.route, post.id)))
    }

    pub fn get(&self, kind: Kind, item: &str, route: &str) -> Result<Option<Entry>> {
        self.with_entry(kind, item, route, |entry| entry.cloned())
    }

    /// Runs `look` on one entry without copying it (for a look that mostly finds nothing to
    /// do, once per pending ask).
    pub fn with_entry<T>(
        &self,
        kind: Kind,
        item: &str,
        route: &str,
        look: impl FnOnce(Option<&Entry>) -> T,
    ) -> Result<T> {
        let key = (kind, item.to_owned(), route.to_owned());
        self.look(|entries| look(entries.get(&key)))
    }

    /// Writes an entry (atomically, the post index first).
    pub fn put(&self, entry: &Entry) -> Result<()> {
        let mut entry = entry.clone();
        entry.updated = Utc::now();
        let on_disk = || {
            if let (Kind::Ask, Some(post)) = (entry.kind, &entry.post) {
                let index = self.post_path(post);
                if !index.exists() {
                    store::write_atomic(&index, entry.item.as_bytes())?;
                }
            }
            store::write_json(&self.path(entry.kind, &entry.item, &entry.route), &entry)
        };
        self.change(on_disk, |entries| {
            entries.insert(key_of(&entry), entry.clone());
        })
    }

    pub fn entries(&self) -> Result<Vec<Entry>> {
        self.entries_where(|_| true)
    }

    /// The entries `wanted` picks. Only those are copied, so a look for the few that need
    /// something costs little however many are kept.
    pub fn entries_where(&self, wanted: impl Fn(&Entry) -> bool) -> Result<Vec<Entry>> {
        self.look(|entries| {
            entries
                .values()
                .filter(|entry| wanted(entry))
                .cloned()
                .collect()
        })
    }

    /// The entries of one item, on every route: a look at one part of the ordered entries,
    /// whatever their number.
    pub fn entries_of(&self, kind: Kind, item: &str) -> Result<Vec<Entry>> {
        self.look(|entries| {
            entries
                .range((kind, item.to_owned(), String::new())..)
                .take_while(|((k, i, _), _)| *k == kind && i == item)
                .map(|(_, entry)| entry.clone())
                .collect()
        })
    }

    /// The ask a posted message belongs to, from the post index (built from the entries once
    /// for a ledger older than the index).
    pub fn ask_for_post(&self, post: &PostRef) -> Result<Option<String>> {
        let complete = self.root.join("posts/.complete");
        if !complete.exists() {
            // Once, and perhaps by a reader beside the running bridge: straight from disk.
            for entry in self.read_entries()? {
                if let (Kind::Ask, Some(post)) = (entry.kind, &entry.post) {
                    store::write_atomic(&self.post_path(post), entry.item.as_bytes())?;
                }
            }
            store::write_atomic(&complete, b"1\n")?;
        }
        Ok(store::read_text(&self.post_path(post))?.map(|item| item.trim().to_owned()))
    }

    /// Removes settled entries (their posts stay indexed); returns how many went.
    pub fn prune(&self, entries: &[Entry]) -> Result<u64> {
        if entries.is_empty() {
            return Ok(0);
        }
        let on_disk = || {
            let mut removed = 0;
            for entry in entries {
                if store::remove_file(&self.path(entry.kind, &entry.item, &entry.route))? {
                    removed += 1;
                }
            }
            let total = self.pruned()? + removed;
            store::write_atomic(&self.root.join("pruned"), format!("{total}\n").as_bytes())?;
            Ok(removed)
        };
        self.change(on_disk, |known| {
            for entry in entries {
                known.remove(&key_of(entry));
            }
        })
    }

    /// How many delivered entries were pruned so far.
    pub fn pruned(&self) -> Result<u64> {
        Ok(store::read_text(&self.root.join("pruned"))?
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0))
    }

    /// The last note every route has settled; notes up to it are done.
    pub fn notes_done(&self) -> Result<Option<String>> {
        Ok(store::read_text(&self.root.join("notes-done"))?.map(|id| id.trim().to_owned()))
    }

    pub fn set_notes_done(&self, note: &str) -> Result<()> {
        store::write_atomic(
            &self.root.join("notes-done"),
            format!("{note}\n").as_bytes(),
        )
    }

    /// The directories the ledger writes into (for sweeping stale temp files).
    pub fn dirs(&self) -> Vec<PathBuf> {
        vec![self.root.clone(), self.dir.clone(), self.root.join("posts")]
    }
}

/// Inbound message ids already handled.
#[derive(Debug, Clone)]
pub struct SeenLedger {
    dir: PathBuf,
}

impl SeenLedger {
    pub fn open(data: &DataDir, bridge: &str) -> Result<SeenLedger> {
        let dir = data.bridge(bridge)?.join("seen");
        store::ensure_dir(&dir)?;
        Ok(SeenLedger { dir })
    }

    pub fn seen(&self, message_id: &str) -> bool {
        self.dir.join(short_hash(message_id)).exists()
    }

    /// Records a message id; returns false if it was already recorded (by anyone).
    pub fn mark(&self, message_id: &str) -> Result<bool> {
        store::create_exclusive(
            &self.dir.join(short_hash(message_id)),
            message_id.as_bytes(),
        )
    }
}

/// When each stranger (an identity not on the allowlist) was last refused: `refused/HASH`
/// holds the UTC date, so a bridge restart does not reset the once-a-day refusal.
#[derive(Debug, Clone)]
pub struct RefusedLedger {
    dir: PathBuf,
}

impl RefusedLedger {
    pub fn open(data: &DataDir, bridge: &str) -> Result<RefusedLedger> {
        let dir = data.bridge(bridge)?.join("refused");
        store::ensure_dir(&dir)?;
        Ok(RefusedLedger { dir })
    }

    /// The date `identity` was last refused on.
    pub fn last(&self, identity: &str) -> Result<Option<String>> {
        Ok(store::read_text(&self.dir.join(short_hash(identity)))?
            .map(|text| text.trim().to_owned()))
    }

    pub fn mark(&self, identity: &str, date: &str) -> Result<()> {
        store::write_atomic(&self.dir.join(short_hash(identity)), date.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(kind: Kind, item: &str, route: &str) -> Entry {
        let mut entry = Entry::new(kind, item, route);
        entry.stage = Stage::Sent;
        entry.attempts = 1;
        entry.post = Some(PostRef {
            route: route.to_owned(),
            id: format!("post-{item}"),
        });
        entry
    }

    /// What the disk holds, read by a ledger that has not looked before.
    fn on_disk(data: &DataDir) -> Vec<Entry> {
        Ledger::open(data, "slack")
            .expect("ledger")
            .entries()
            .expect("entries from disk")
    }

    #[test]
    fn the_entries_in_memory_stay_those_on_disk_through_puts_and_prunes() {
        let temp = tempfile::tempdir().expect("tempdir");
        let data = DataDir::new(temp.path());
        let ledger = Ledger::open(&data, "slack").expect("ledger");
        // Written before the first look: read from disk at that look.
        ledger
            .put(&Entry::new(Kind::Ask, "aaaaaa", "C1"))
            .expect("put");
        ledger.put(&sent(Kind::Ask, "aaaaaa", "C2")).expect("put");
        assert_eq!(ledger.entries().expect("entries").len(), 2);
        enum Change {
            Put(Entry),
            /// An entry pruned, and how many files that removes.
            Prune(Entry, u64),
        }
        let changes = [
            ("a new entry", Change::Put(sent(Kind::Note, "nnnnnn", "C1"))),
            (
                "an entry moved on",
                Change::Put(sent(Kind::Ask, "aaaaaa", "C1")),
            ),
            (
                "an entry pruned",
                Change::Prune(sent(Kind::Ask, "aaaaaa", "C2"), 1),
            ),
            (
                "an entry pruned that was gone",
                Change::Prune(sent(Kind::Ask, "bbbbbb", "C1"), 0),
            ),
        ];
        for (step, change) in changes {
            match change {
                Change::Put(entry) => ledger.put(&entry).expect("put"),
                Change::Prune(entry, removed) => {
                    assert_eq!(ledger.prune(&[entry]).expect("prune"), removed, "{step}")
                }
            }
            let known = ledger.entries().expect("entries");
            assert_eq!(known, on_disk(&data), "after {step}");
            for entry in &known {
                assert_eq!(
                    ledger
                        .get(entry.kind, &entry.item, &entry.route)
                        .expect("get"),
                    Some(entry.clone()),
                    "after {step}"
                );
            }
        }
        let kept: Vec<_> = on_disk(&data)
            .into_iter()
            .map(|entry| (entry.kind, entry.item, entry.route, entry.stage))
            .collect();
        assert_eq!(
            kept,
            [
                (Kind::Ask, "aaaaaa".into(), "C1".into(), Stage::Sent),
                (Kind::Note, "nnnnnn".into(), "C1".into(), Stage::Sent),
            ]
        );
        assert_eq!(ledger.get(Kind::Ask, "aaaaaa", "C2").expect("get"), None);
        assert_eq!(ledger.pruned().expect("pruned"), 1);
    }

    /// The running bridge reads its entries once: however many it keeps, an event costs it
    /// no reading of them.
    #[test]
    fn once_looked_at_the_entry_files_are_not_read_again() {
        let temp = tempfile::tempdir().expect("tempdir");
        let data = DataDir::new(temp.path());
        let ledger = Ledger::open(&data, "slack").expect("ledger");
        for item in ["aaaaaa", "bbbbbb", "cccccc"] {
            ledger.put(&sent(Kind::Ask, item, "C1")).expect("put");
        }
        let known = ledger.entries().expect("entries");
        let dir = data.bridge("slack").expect("bridge dir").join("ledger");
        for (_, path) in store::list(&dir, ".json").expect("list") {
            std::fs::write(&path, "not an entry").expect("overwrite");
        }
        assert!(
            Ledger::open(&data, "slack")
                .expect("ledger")
                .entries()
                .is_err(),
            "the files on disk are unreadable now"
        );
        assert_eq!(ledger.entries().expect("entries"), known);
        assert_eq!(
            ledger.get(Kind::Ask, "bbbbbb", "C1").expect("get"),
            Some(known[1].clone())
        );
        let waiting = ledger
            .entries_where(|entry| entry.item == "cccccc")
            .expect("entries");
        assert_eq!(waiting, [known[2].clone()]);
    }

    #[test]
    fn the_entries_of_one_item_are_those_of_its_every_route_and_no_other() {
        let temp = tempfile::tempdir().expect("tempdir");
        let data = DataDir::new(temp.path());
        let ledger = Ledger::open(&data, "slack").expect("ledger");
        for (kind, item, route) in [
            (Kind::Ask, "aaaaaa", "C1"),
            (Kind::Ask, "bbbbbb", "C1"),
            (Kind::Ask, "bbbbbb", "C2"),
            (Kind::Ask, "bbbbbc", "C1"),
            (Kind::Note, "bbbbbb", "C1"),
        ] {
            ledger.put(&sent(kind, item, route)).expect("put");
        }
        let found: Vec<(Kind, String, String)> = ledger
            .entries_of(Kind::Ask, "bbbbbb")
            .expect("entries")
            .into_iter()
            .map(|e| (e.kind, e.item, e.route))
            .collect();
        assert_eq!(
            found,
            [
                (Kind::Ask, "bbbbbb".to_owned(), "C1".to_owned()),
                (Kind::Ask, "bbbbbb".to_owned(), "C2".to_owned()),
            ]
        );
        assert!(ledger
            .entries_of(Kind::Ask, "cccccc")
            .expect("entries")
            .is_empty());
    }

    #[test]
    fn entries_round_trip_and_invalid_items_do_not_load() {
        let entry = Entry::new(Kind::Ask, "ab3x9k", "C123");
        let bytes = store::to_json_bytes(&entry);
        let read: Entry = serde_json::from_slice(&bytes).expect("round trip");
        assert_eq!(read, entry);
        for item in ["", "..", "%:2", "A"] {
            let mut value = serde_json::to_value(&entry).expect("json");
            value["item"] = item.into();
            assert!(
                serde_json::from_value::<Entry>(value).is_err(),
                "item {item:?} loaded"
            );
        }
    }
}
