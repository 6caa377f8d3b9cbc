//! What several targets check: text shown to people is inert, ids are valid, and asks built
//! from fuzz input.
#![allow(dead_code)]

use chrono::{TimeZone, Utc};
use rein::mailbox::{Ask, Resolution, ResolutionKind};
use rein::notes::Note;
use serde::Deserialize;

/// No control character at all: a line shown to a person.
pub fn assert_inert_line(what: &str, text: &str) {
    if let Some(c) = text.chars().find(|&c| rein::text::is_control(c)) {
        panic!("{what} shows the control {c:?}: {text:?}");
    }
}

/// No control character but line breaks and tabs: a block of text shown to a person.
pub fn assert_inert(what: &str, text: &str) {
    if let Some(c) = text
        .chars()
        .find(|&c| rein::text::is_control(c) && !matches!(c, '\n' | '\t'))
    {
        panic!("{what} shows the control {c:?}: {text:?}");
    }
}

pub fn assert_valid_id(what: &str, id: &str) {
    if let Err(error) = rein::store::validate_id(what, id) {
        panic!("{what} {id:?} was accepted: {error}");
    }
}

/// An ask, a resolution and a note as a hand-written file could hold them (JSON, every field
/// optional), so seeds stay readable.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Input {
    pub id: String,
    pub worker: String,
    pub prompt: String,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub options: Vec<String>,
    pub resent: bool,
    pub answer: Option<String>,
    /// Why a withdrawal happened (no answer).
    pub reason: Option<String>,
    pub by: String,
    pub message: String,
    pub max_segments: usize,
}

impl Input {
    pub fn parse(data: &[u8]) -> Option<Input> {
        serde_json::from_slice(data).ok()
    }

    /// The ask; an id that is not valid is replaced, since no such ask loads from a file.
    pub fn ask(&self) -> Ask {
        let id = if rein::store::validate_id("ask id", &self.id).is_ok() {
            self.id.clone()
        } else {
            "ab3x9k".to_owned()
        };
        Ask {
            version: 1,
            id,
            seq: 1,
            worker: self.worker.clone(),
            prompt: self.prompt.clone(),
            reference: self.reference.clone(),
            options: self.options.clone(),
            created: Utc.timestamp_opt(1_767_225_600, 0).unwrap(),
            key: "k".into(),
        }
    }

    pub fn resolution(&self) -> Resolution {
        Resolution {
            version: 1,
            ask: self.ask().id,
            kind: if self.answer.is_some() {
                ResolutionKind::Answered
            } else {
                ResolutionKind::Withdrawn
            },
            text: self.answer.clone(),
            by: self.by.clone(),
            at: Utc.timestamp_opt(1_767_225_600, 0).unwrap(),
            reason: self.reason.clone(),
        }
    }

    pub fn note(&self) -> Note {
        Note {
            version: 1,
            id: "20260101t000000000-abc123".into(),
            message: self.message.clone(),
            worker: self.worker.clone(),
            at: Utc.timestamp_opt(1_767_225_600, 0).unwrap(),
        }
    }
}
