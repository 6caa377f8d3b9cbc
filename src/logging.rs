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

/// The logging of a process that lives beside every agent (`rein-host`): journald only (the
/// unit's stderr goes there anyway), at `REIN_LOG_JOURNAL`'s level (default `info`), with
/// the same fields as [`init`]'s, and without a span registry or filter engine, which would
/// stay in memory for as long as the agent runs. Without journald, warnings and errors go to
/// stderr.
pub fn init_lean(profile: &str, worker: Option<&str>) {
    let level = match std::env::var("REIN_LOG_JOURNAL").ok().as_deref() {
        Some("error") => tracing::Level::ERROR,
        Some("warn") => tracing::Level::WARN,
        Some("debug") => tracing::Level::DEBUG,
        Some("trace") => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    let socket = if Path::new(JOURNAL_SOCKET).exists() {
        std::os::unix::net::UnixDatagram::unbound()
            .and_then(|socket| socket.connect(JOURNAL_SOCKET).map(|()| socket))
            .ok()
    } else {
        None
    };
    let mut fixed = Vec::new();
    journal_field(&mut fixed, "SYSLOG_IDENTIFIER", b"rein");
    journal_field(&mut fixed, "REIN_PROFILE", profile.as_bytes());
    if let Some(worker) = worker {
        journal_field(&mut fixed, "REIN_WORKER", worker.as_bytes());
    }
    let subscriber = JournalOnly {
        level: match socket {
            Some(_) => level,
            None => tracing::Level::WARN,
        },
        socket,
        fixed,
    };
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Appends one field in journald's native format: `NAME=value\n`, or, for a value with a
/// newline, `NAME\n`, its length as 64-bit little-endian, the value and `\n`.
fn journal_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A field name as journald accepts it: upper-case letters, digits and `_`, not starting
/// with `_` (those are journald's own) or a digit.
fn journal_name(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| match c.to_ascii_uppercase() {
            c @ ('A'..='Z' | '0'..='9') => c,
            _ => '_',
        })
        .collect();
    let name = name.trim_start_matches(|c: char| c == '_' || c.is_ascii_digit());
    if name.is_empty() {
        "FIELD".to_owned()
    } else {
        name.to_owned()
    }
}

/// [`init_lean`]'s subscriber: each event is one datagram to journald (or, when too big for
/// one, a sealed memfd passed over the socket, as journald's protocol has it). Spans are not
/// kept.
struct JournalOnly {
    level: tracing::Level,
    socket: Option<std::os::unix::net::UnixDatagram>,
    /// SYSLOG_IDENTIFIER, REIN_PROFILE and REIN_WORKER, already encoded.
    fixed: Vec<u8>,
}

struct EventFields {
    message: String,
    encoded: Vec<u8>,
}

impl tracing::field::Visit for EventFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            journal_field(
                &mut self.encoded,
                &journal_name(field.name()),
                value.as_bytes(),
            );
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let text = format!("{value:?}");
            journal_field(
                &mut self.encoded,
                &journal_name(field.name()),
                text.as_bytes(),
            );
        }
    }
}

impl JournalOnly {
    fn send(&self, socket: &std::os::unix::net::UnixDatagram, datagram: &[u8]) {
        match socket.send(datagram) {
            Ok(_) => {}
            Err(error) if error.raw_os_error() == Some(libc::EMSGSIZE) => {
                let _ = Self::send_as_memfd(socket, datagram);
            }
            Err(_) => {}
        }
    }

    fn send_as_memfd(
        socket: &std::os::unix::net::UnixDatagram,
        datagram: &[u8],
    ) -> std::io::Result<()> {
        use rustix::fs::{MemfdFlags, SealFlags};
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let memfd = rustix::fs::memfd_create(
            "rein-journal",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        let mut file = std::fs::File::from(memfd);
        std::io::Write::write_all(&mut file, datagram)?;
        rustix::fs::fcntl_add_seals(&file, SealFlags::all())?;
        let fds = [std::os::fd::AsFd::as_fd(&file)];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(&fds));
        rustix::net::sendmsg(socket, &[], &mut control, SendFlags::empty())?;
        Ok(())
    }
}

impl tracing::Subscriber for JournalOnly {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= self.level
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::from_level(self.level))
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let metadata = event.metadata();
        let mut fields = EventFields {
            message: String::new(),
            encoded: Vec::new(),
        };
        event.record(&mut fields);
        let Some(socket) = &self.socket else {
            eprintln!(
                "rein-host: {}: {}",
                metadata.level().as_str().to_ascii_lowercase(),
                fields.message
            );
            return;
        };
        // The priorities tracing-journald gives, so both kinds of process read alike.
        let priority: &[u8] = match *metadata.level() {
            tracing::Level::ERROR => b"3",
            tracing::Level::WARN => b"4",
            tracing::Level::INFO => b"5",
            tracing::Level::DEBUG => b"6",
            tracing::Level::TRACE => b"7",
        };
        let mut datagram =
            Vec::with_capacity(self.fixed.len() + fields.encoded.len() + fields.message.len() + 64);
        journal_field(&mut datagram, "PRIORITY", priority);
        datagram.extend_from_slice(&self.fixed);
        journal_field(&mut datagram, "TARGET", metadata.target().as_bytes());
        datagram.extend_from_slice(&fields.encoded);
        journal_field(&mut datagram, "MESSAGE", fields.message.as_bytes());
        self.send(socket, &datagram);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}
