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
    pub updated: DateTime<Utc>,
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
            updated: Utc::now(),
        }
    }
}

fn short_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))[..16].to_owned()
}

#[derive(Debug, Clone)]
pub struct Ledger {
    dir: PathBuf,
}

impl Ledger {
    pub fn open(data: &DataDir, bridge: &str) -> Result<Ledger> {
        let dir = data.bridge(bridge)?.join("ledger");
        store::ensure_dir(&dir)?;
        Ok(Ledger { dir })
    }

    fn path(&self, kind: Kind, item: &str, route: &str) -> PathBuf {
        let kind = match kind {
            Kind::Ask => "ask",
            Kind::Note => "note",
        };
        self.dir
            .join(format!("{kind}.{item}.{}.json", short_hash(route)))
    }

    pub fn get(&self, kind: Kind, item: &str, route: &str) -> Result<Option<Entry>> {
        store::read_json(&self.path(kind, item, route))
    }

    pub fn put(&self, entry: &Entry) -> Result<()> {
        let mut entry = entry.clone();
        entry.updated = Utc::now();
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

    /// The ask a posted message belongs to.
    pub fn ask_for_post(&self, post: &PostRef) -> Result<Option<String>> {
        Ok(self
            .entries()?
            .into_iter()
            .find(|e| e.kind == Kind::Ask && e.post.as_ref() == Some(post))
            .map(|e| e.item))
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
