//! Logging: tracing to journald when its socket exists, and to stderr.
//!
//! journald gets every event at `REIN_LOG_JOURNAL` (default `info`) with rein's own fields
//! (`REIN_PROFILE`, `REIN_WORKER` and per-event ones such as `REIN_EVENT`, `REIN_BEAT`), so
//! `journalctl REIN_PROFILE=…` finds rein's lines on a desktop and in a container alike.
//! stderr gets `REIN_LOG` (default `warn`) so terminals stay quiet.

use std::path::Path;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

pub fn init(profile: &str, worker: Option<&str>) {
    let stderr_filter =
        EnvFilter::try_from_env("REIN_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    // Colour only for a person at a terminal: a unit's stderr goes to the journal, where
    // escape sequences are noise.
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_filter(stderr_filter);
    let journald = if Path::new(JOURNAL_SOCKET).exists() {
        tracing_journald::layer().ok().map(|layer| {
            let mut fields = vec![("REIN_PROFILE".to_owned(), profile.to_owned())];
            if let Some(worker) = worker {
                fields.push(("REIN_WORKER".to_owned(), worker.to_owned()));
            }
            let filter = EnvFilter::try_from_env("REIN_LOG_JOURNAL")
                .unwrap_or_else(|_| EnvFilter::new("info"));
            layer
                .with_field_prefix(None)
                .with_syslog_identifier("rein".to_owned())
                .with_custom_fields(fields)
                .with_filter(filter)
        })
    } else {
        None
    };
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(journald)
        .try_init();
}

/// Whether stdout is a stream to journald (`$JOURNAL_STREAM` names its device and inode), as
/// it is for a process systemd started with the journal as its output.
pub fn stdout_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(std::io::stdout()) else {
        return false;
    };
    device.parse::<u64>().ok() == Some(stat.st_dev)
        && inode.parse::<u64>().ok() == Some(stat.st_ino)
}
