//! rein: a control loop for fleets of AI coding agents that lives inside systemd and keeps a
//! human in the loop.
//!
//! A map of the crate:
//! - [`store`]: the only code that touches data-dir files: atomic writes, exclusive creates,
//!   locks, id validation, and the inotify waiter every blocking verb uses.
//! - [`mailbox`]: asks, answers, withdrawals and the archive: the human-in-the-loop contract.
//! - [`world`]: sensors, snapshots and the world hash.
//! - [`state`]: the combined view (`rein state`) and the wait token (`rein wait`).
//! - [`config`] and [`paths`]: where things live and what the user configured.
//! - [`judge`]: the `llm` judgment mode: one typed move per changed world.
//! - [`journal`], [`claims`], [`notes`], [`seed`]: the remaining data-dir records.
//! - [`capture`]: running a command (a sensor, the judge's tick) within a timeout and output
//!   caps, stopping everything it started.
//! - [`systemd`]: the user manager over D-Bus; [`fleet`]: the pulse and workers as
//!   transient units; [`worker`]: the PTY host inside a worker unit.
//! - [`agents`]: the agent CLIs' presets: the settings each needs to run in a worker.
//! - [`gate`]: how sandboxed workers file asks, claims, notes and reports as themselves.
//! - [`bridge`]: what every bridge shares: the delivery engine, ledger, allowlist, secrets.
//! - [`tui`]: `rein tui`, the fleet on one screen, live from inotify and D-Bus signals.
//! - [`text`]: agent-supplied text made inert before a person sees it.
//! - [`cli`]: the clap definition (the single source of `--help`, man pages and completions)
//!   and one file per verb group.

pub mod agents;
pub mod bridge;
pub mod capture;
pub mod claims;
pub mod cli;
pub mod config;
pub mod duration;
pub mod error;
pub mod fleet;
pub mod gate;
pub mod journal;
pub mod judge;
pub mod logging;
pub mod mailbox;
pub mod notes;
pub mod paths;
pub mod schedule;
pub mod seed;
pub mod state;
pub mod store;
pub mod systemd;
pub mod text;
pub mod tui;
pub mod worker;
pub mod world;

pub use error::Error;
