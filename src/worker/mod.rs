//! Workers: agents running as supervised systemd user units, each inside a PTY host.
//!
//! [`pty`] is the host and the attach client; [`host`] is what `rein worker host` runs inside
//! a worker unit: the PTY host with the transcript going to journald, tagged with the
//! worker's fields.

pub mod host;
pub mod pty;
pub mod pty_protocol;
