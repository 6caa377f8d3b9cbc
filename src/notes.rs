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

/// How long a note stays in `notes/`. Older ones go to `archive/notes/` in the beat's
/// housekeeping ([`archive_old`]), so what looks at `notes/` on every change (the bridges,
/// `rein tui`, `rein wait`, `rein state`) lists the last day's notes, not every note ever
/// left.
pub const KEPT: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// The most notes one call of [`archive_old`] moves, so one beat's housekeeping stays short
/// however many notes have piled up; the next one goes on.
pub const ARCHIVED_AT_ONCE: usize = 10_000;

/// The time a note's name starts with: `%Y%m%dt%H%M%S%3f`.
const STAMP: &str = "%Y%m%dt%H%M%S%3f";

/// Moves the notes older than [`KEPT`] before `now` to `archive/notes/`, by the time their
/// name starts with (a name that does not start with one is left where it is); returns how
/// many were moved. Nothing is deleted.
pub fn archive_old(dir: &DataDir, now: DateTime<Utc>) -> Result<usize> {
    let cutoff = (now - KEPT).format(STAMP).to_string();
    let old: Vec<_> = store::list(&dir.notes(), ".json")?
        .into_iter()
        .filter(|(name, _)| {
            name.get(..cutoff.len())
                .is_some_and(|stamp| is_stamp(stamp) && stamp < cutoff.as_str())
        })
        .take(ARCHIVED_AT_ONCE)
        .map(|(_, path)| path)
        .collect();
    if old.is_empty() {
        return Ok(0);
    }
    store::move_files_into(&old, &dir.archived_notes())
}

/// `YYYYMMDDtHHMMSSmmm`.
fn is_stamp(text: &str) -> bool {
    text.len() == 18
        && text.bytes().enumerate().all(|(at, byte)| match at {
            8 => byte == b't',
            _ => byte.is_ascii_digit(),
        })
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
        at.format(STAMP),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_older_than_a_day_are_archived_and_nothing_else_moves() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(temp.path());
        dir.create_dirs().expect("dirs");
        let now: DateTime<Utc> = "2026-11-30T12:00:00Z".parse().expect("time");
        let names = [
            "20261128t120000000-aaaaaa",
            "20261129t115959999-bbbbbb",
            "20261129t120000001-cccccc",
            "20261130t115900000-dddddd",
            "n1",
        ];
        for name in names {
            std::fs::write(dir.note(name), "{}").expect("note");
        }
        assert_eq!(archive_old(&dir, now).expect("archive"), 2);
        let names_in = |path: &std::path::Path| -> Vec<String> {
            store::list(path, ".json")
                .expect("list")
                .into_iter()
                .map(|(name, _)| name)
                .collect()
        };
        assert_eq!(
            names_in(&dir.notes()),
            [
                "20261129t120000001-cccccc",
                "20261130t115900000-dddddd",
                "n1"
            ]
        );
        assert_eq!(
            names_in(&dir.archived_notes()),
            ["20261128t120000000-aaaaaa", "20261129t115959999-bbbbbb"]
        );
        assert_eq!(archive_old(&dir, now).expect("again"), 0, "nothing twice");
    }
}
