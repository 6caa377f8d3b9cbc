//! `rein worker host ID -- CMD...`: the main process of a worker unit.
//!
//! Runs the agent in the PTY host; every transcript line goes to journald as an event with
//! `REIN_WORKER`, `REIN_PROFILE` and `REIN_STREAM=transcript` (the logging layer adds the
//! first two), because a user manager of systemd 252 does not apply `LogExtraFields=` to a
//! unit's output. Without journald the lines go to stdout.

use std::io::Write;
use std::path::PathBuf;

use crate::worker::pty::{run_host, HostOptions};

/// Sends whole lines to the log; a partial line waits for its end (or the host's flush).
struct TranscriptLog {
    pending: Vec<u8>,
    to_journal: bool,
}

impl TranscriptLog {
    fn emit(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        if self.to_journal {
            tracing::info!(target: "transcript", REIN_STREAM = "transcript", "{text}");
        } else {
            println!("{text}");
        }
    }
}

impl Write for TranscriptLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
        Ok(())
    }
}

impl Drop for TranscriptLog {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Runs the agent; returns its exit code for the process to exit with.
pub fn run(socket: PathBuf, command: Vec<String>) -> anyhow::Result<i32> {
    let to_journal = std::path::Path::new("/run/systemd/journal/socket").exists();
    tracing::info!(
        REIN_EVENT = "worker-host",
        "starting agent: {}",
        shell_words::join(&command)
    );
    let code = run_host(HostOptions {
        command,
        socket,
        env: Vec::new(),
        cols: 120,
        rows: 40,
        transcript: Box::new(TranscriptLog {
            pending: Vec::new(),
            to_journal,
        }),
    })?;
    tracing::info!(REIN_EVENT = "worker-exit", "agent exited with {code}");
    Ok(code)
}
