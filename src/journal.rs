//! The journal: one line per move in `journal.md`, and the same event in journald.
//!
//! A line is `- <RFC 3339 time> <event>: <message>`, appended in one write and fsynced, so a
//! crash leaves whole lines (a torn last line, if any, is dropped when reading). A message is
//! cut to [`MAX_MESSAGE`] bytes, so one huge prompt or answer cannot push every other line
//! out of what `rein journal` and `rein state` read.
//!
//! The journal records what happened; it is not the thing that happened. Where the operation
//! itself succeeded, a journal line that cannot be written is a warning
//! ([`record_or_warn`]), never a failure of the operation.

use chrono::{SecondsFormat, Utc};

use crate::error::Result;
use crate::store::{self, DataDir};

/// The longest message a journal line keeps, in bytes; the rest is cut with an ellipsis.
pub const MAX_MESSAGE: usize = 2000;

/// Appends an event to `journal.md` and emits it to the log (journald when available).
pub fn record(dir: &DataDir, event: &str, message: &str) -> Result<()> {
    tracing::info!(REIN_EVENT = event, "{}", capped(message));
    append(dir, event, message)
}

/// [`record`] after an operation that already happened: a journal line that cannot be
/// written is said on stderr as a warning, and the caller reports its success.
pub fn record_or_warn(dir: &DataDir, event: &str, message: &str) {
    if let Err(error) = record(dir, event, message) {
        eprintln!("rein: warning: the journal line was not written: {error}");
    }
}

/// `message` as one inert line, cut to [`MAX_MESSAGE`] bytes at a character boundary: line
/// breaks become spaces and other controls are made visible (prompts and answers in journal
/// lines come from agents and strangers).
fn capped(message: &str) -> String {
    let line = crate::text::inert_line(&message.replace(['\n', '\r'], " ")).into_owned();
    if line.len() <= MAX_MESSAGE {
        return line;
    }
    let mut end = MAX_MESSAGE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &line[..end], line.len())
}

/// Appends an event to `journal.md` only (the caller logs it with its own fields).
pub fn append(dir: &DataDir, event: &str, message: &str) -> Result<()> {
    let line = format!(
        "- {} {event}: {}",
        Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        capped(message)
    );
    store::ensure_dir(dir.root())?;
    store::append_line(&dir.journal(), &line)
}

/// How much of the end of `journal.md` a tail reads: the journal grows by a line per move,
/// and a tail must not cost more as it does.
const TAIL_WINDOW: u64 = 256 * 1024;

/// The last `count` complete lines of the journal (within the last 256 KiB).
pub fn tail(dir: &DataDir, count: usize) -> Result<Vec<String>> {
    let Some(text) = store::read_tail(&dir.journal(), TAIL_WINDOW)? else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8_lossy(&text);
    // A last line without its newline was torn by a crash mid-append: not a record.
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    let lines: Vec<&str> = complete.lines().filter(|l| !l.is_empty()).collect();
    let start = lines.len().saturating_sub(count);
    Ok(lines[start..].iter().map(|l| l.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = DataDir::new(dir.path());
        record(&data, "beat", "one").expect("record");
        record(&data, "beat", "two\nlines").expect("record");
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.journal())
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"- torn"))
            .expect("append");
        let lines = tail(&data, 10).expect("tail");
        assert_eq!(lines.len(), 2);
        assert!(lines[1].ends_with("beat: two lines"), "{lines:?}");
        assert_eq!(tail(&data, 1).expect("tail").len(), 1);
    }

    #[test]
    fn long_messages_are_cut() {
        assert_eq!(capped("a\nb"), "a b");
        let long = "é".repeat(MAX_MESSAGE);
        let cut = capped(&long);
        assert!(cut.len() < MAX_MESSAGE + 40, "{}", cut.len());
        assert!(cut.ends_with(&format!("… ({} bytes)", long.len())), "{cut}");
    }

    #[test]
    fn controls_in_messages_are_recorded_visibly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = DataDir::new(dir.path());
        record(&data, "ask", "w1 asked x: Drop?\r\u{1b}[KFix?\u{9b}2J").expect("record");
        let lines = tail(&data, 1).expect("tail");
        assert!(
            lines[0].ends_with("ask: w1 asked x: Drop? \\e[KFix?\\u{9b}2J"),
            "{lines:?}"
        );
    }
}
