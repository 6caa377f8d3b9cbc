//! Notifications: `rein notify MESSAGE` leaves a note for the human that bridges relay.
//!
//! A note is `notes/<time>-<id>.json`, written atomically; the name sorts by time.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{self, DataDir};

pub const FORMAT_VERSION: u32 = 1;

/// The longest note, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Note {
    pub version: u32,
    #[serde(deserialize_with = "store::valid_id")]
    pub id: String,
    pub message: String,
    #[serde(deserialize_with = "store::valid_id")]
    pub worker: String,
    pub at: DateTime<Utc>,
}

pub fn notify(dir: &DataDir, worker: &str, message: &str) -> Result<Note> {
    store::validate_id("worker id", worker)?;
    if message.trim().is_empty() {
        return Err(Error::invalid(
            "the message is empty; say what the human should know",
        ));
    }
    crate::mailbox::check_size("message", message, MAX_MESSAGE)?;
    dir.create_dirs()?;
    let at = Utc::now();
    let id = format!(
        "{}-{}",
        at.format("%Y%m%dt%H%M%S%3f"),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let note = Note {
        version: FORMAT_VERSION,
        id: id.clone(),
        message: message.to_owned(),
        worker: worker.to_owned(),
        at,
    };
    store::write_json(&dir.note(&id), &note)?;
    crate::journal::record_or_warn(dir, "notify", &format!("{worker}: {message}"));
    Ok(note)
}
