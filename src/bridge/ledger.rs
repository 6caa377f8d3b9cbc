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
//! `pruned` counts what went, for `rein bridge ls`. `lock` is held by the running bridge.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bridge::PostRef;
use crate::error::Result;
use crate::store::{self, DataDir};

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone)]
pub struct Ledger {
    /// `bridges/NAME/`.
    root: PathBuf,
    dir: PathBuf,
}

impl Ledger {
    pub fn open(data: &DataDir, bridge: &str) -> Result<Ledger> {
        let root = data.bridge(bridge)?;
        let dir = root.join("ledger");
        store::ensure_dir(&dir)?;
        store::ensure_dir(&root.join("posts"))?;
        Ok(Ledger { root, dir })
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
        store::read_json(&self.path(kind, item, route))
    }

    pub fn put(&self, entry: &Entry) -> Result<()> {
        let mut entry = entry.clone();
        entry.updated = Utc::now();
        if let (Kind::Ask, Some(post)) = (entry.kind, &entry.post) {
            let index = self.post_path(post);
            if !index.exists() {
                store::write_atomic(&index, entry.item.as_bytes())?;
            }
        }
        store::write_json(&self.path(entry.kind, &entry.item, &entry.route), &entry)
    }

    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for (_, path) in store::list(&self.dir, ".json")? {
            if let Some(entry) = store::read_json(&path)? {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// The ask a posted message belongs to, from the post index (built from the entries once
    /// for a ledger older than the index).
    pub fn ask_for_post(&self, post: &PostRef) -> Result<Option<String>> {
        let complete = self.root.join("posts/.complete");
        if !complete.exists() {
            for entry in self.entries()? {
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
        let mut removed = 0;
        for entry in entries {
            if store::remove_file(&self.path(entry.kind, &entry.item, &entry.route))? {
                removed += 1;
            }
        }
        let total = self.pruned()? + removed;
        store::write_atomic(&self.root.join("pruned"), format!("{total}\n").as_bytes())?;
        Ok(removed)
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

    /// Where the running bridge holds its lock.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
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
