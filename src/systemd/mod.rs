//! Talking to the systemd user manager over D-Bus (zbus, async on tokio): transient units for
//! the pulse and the workers, their state, and the health rein derives from it.
//!
//! rein never shells out to `systemctl` or `systemd-run`; everything goes through
//! [`Manager`]:
//!
//! - [`Manager::connect`] finds the user manager: the bus in `DBUS_SESSION_BUS_ADDRESS`, else
//!   `unix:path=$XDG_RUNTIME_DIR/bus`, else the manager's private peer-to-peer socket
//!   `$XDG_RUNTIME_DIR/systemd/private`. It calls `Subscribe()` so systemd sends signals.
//!   Nothing reachable is [`SystemdError::Unreachable`], whose message says how to fix it.
//! - [`Manager::start_transient`] / [`Manager::stop`] wait for their job through the
//!   `JobRemoved` signal, subscribed to *before* the call so the signal cannot be missed;
//!   [`Manager::wait_unloaded`] waits for `UnitRemoved`, after which a name can be reused;
//!   [`Manager::remove`] stops a unit within a grace (then SIGKILL), resets and unloads it,
//!   on a fresh connection if the bus breaks meanwhile.
//! - [`Manager::kill`], [`Manager::restart`] and [`Manager::reset_failed`] are single calls.
//! - [`Manager::service_state`] / [`Manager::timer_state`] read a unit in one
//!   `Properties.GetAll` call; [`Manager::list`] is one `ListUnitsByPatterns` call.
//! - [`Manager::unit_signals`] follows every unit's changes, births and removals in the
//!   order systemd sent them, for screens that stay live without polling.
//! - [`Manager::wait_for_state`] subscribes to `PropertiesChanged`, reads once, then takes
//!   values from the signals (never from follow-up reads) until a predicate holds or a
//!   deadline passes.
//! - [`units`] builds the `StartTransientUnit` properties from typed specs; [`health`] maps
//!   a [`ServiceState`] to a [`Health`].
//!
//! Facts of systemd 252 this module relies on: a still-loaded transient name makes
//! `StartTransientUnit` fail with `UnitExists`; `CollectMode=inactive-or-failed` unloads
//! failed units (so their final state must come from signals); `Type=exec` makes a failed
//! exec fail the start job; during an automatic restart `ActiveState` may briefly be
//! `failed` while `SubState` is `auto-restart`.

mod manager;
pub mod private_socket;
mod proxies;
mod state;
pub mod steady;
pub mod units;

use std::time::Duration;

pub use manager::{
    unit_name_from_object_path, unit_object_path, Endpoint, KillTarget, Manager, UnitChange,
    UnitSignal, UnitSignals, DEFAULT_STOP_GRACE,
};
pub use state::{health, ActiveState, Health, ServiceState, TimerState, UnitListEntry};
pub use units::{
    KillMode, RestartPolicy, Sandbox, ServiceSpec, ServiceType, SocketSpec, TimerSpec,
    TransientUnit,
};

/// Exit status systemd gives a service whose command could not be executed (EXIT_EXEC).
const EXIT_EXEC: i32 = 203;
/// Exit status of a service whose mount namespace (sandbox) could not be set up.
const EXIT_NAMESPACE: i32 = 226;

/// What can go wrong talking to the systemd user manager.
#[derive(thiserror::Error, Debug)]
pub enum SystemdError {
    /// No user manager answered on any endpoint.
    #[error(
        "no systemd user manager is reachable ({detail}). To fix it: log in to a systemd \
         session, or run `loginctl enable-linger $USER` so your user manager runs without a \
         login; in a container or CI run `eval \"$(contrib/user-session.sh start)\"` first"
    )]
    Unreachable { detail: String },

    /// A unit of that name is still loaded (running, or failed and not yet reset).
    #[error(
        "unit {0} already exists: stop it first, or run `systemctl --user reset-failed {0}` \
         if it failed"
    )]
    UnitExists(String),

    /// The unit is not loaded.
    #[error("unit {0} is not loaded")]
    NoSuchUnit(String),

    /// A start or stop job ended with a result other than `done`.
    #[error("{}", job_failed_message(.operation, .unit, .result, .service_result.as_deref(), *.exit_status))]
    JobFailed {
        unit: String,
        /// `start` or `stop`.
        operation: &'static str,
        /// The job result: `failed`, `canceled`, `timeout`, `dependency`, …
        result: String,
        /// The service's `Result` as last signalled (`exit-code`, `signal`, …), if known.
        service_result: Option<String>,
        /// The main process's exit status as last signalled, if known.
        exit_status: Option<i32>,
    },

    /// The spec was refused before anything was sent.
    #[error("invalid unit {unit}: {reason}")]
    InvalidUnit { unit: String, reason: String },

    /// systemd refused a property or argument (e.g. an `OnCalendar` it cannot parse).
    #[error("systemd refused unit {unit}: {message}")]
    Rejected { unit: String, message: String },

    /// The unit did not reach the awaited state in time.
    #[error("unit {unit} did not reach the awaited state within {waited:?} (last seen: {})", .last.summary())]
    Timeout {
        unit: String,
        waited: Duration,
        last: Box<ServiceState>,
    },

    /// The unit was unloaded before it reached the awaited state.
    #[error("unit {unit} was unloaded before it reached the awaited state (last seen: {})", .last.summary())]
    Gone {
        unit: String,
        last: Box<ServiceState>,
    },

    /// The connection to the manager closed while waiting.
    #[error("the connection to the systemd user manager was closed")]
    Disconnected,

    /// Any other D-Bus failure.
    #[error("D-Bus error talking to the systemd user manager: {0}")]
    Dbus(#[from] zbus::Error),
}

fn job_failed_message(
    operation: &str,
    unit: &str,
    result: &str,
    service_result: Option<&str>,
    exit_status: Option<i32>,
) -> String {
    let mut message = format!("{operation} job for unit {unit} ended with result '{result}'");
    if let Some(service_result) = service_result.filter(|r| !r.is_empty()) {
        message.push_str(&format!(", service result '{service_result}'"));
    }
    if let Some(status) = exit_status {
        message.push_str(&format!(", exit status {status}"));
        if status == EXIT_EXEC {
            message.push_str(" (the command could not be executed: missing or not executable?)");
        }
        if status == EXIT_NAMESPACE {
            message.push_str(" (systemd could not set up the unit's sandbox: mount namespaces)");
        }
    }
    message.push_str(&format!(
        "; see `systemctl --user status {unit}` and `journalctl --user -u {unit}`"
    ));
    message
}

impl SystemdError {
    /// Whether the connection itself failed (the peer closed it, or a read or write broke),
    /// as opposed to systemd answering with an error: a fresh connection may succeed.
    pub fn is_disconnect(&self) -> bool {
        matches!(
            self,
            SystemdError::Disconnected | SystemdError::Dbus(zbus::Error::InputOutput(_))
        )
    }
}

impl ServiceState {
    /// A one-line summary for messages: `failed/failed result=exit-code restarts=2`.
    pub fn summary(&self) -> String {
        if self.load_state.is_empty() {
            return "not read".to_owned();
        }
        format!(
            "{}/{} result={} restarts={} main_pid={}",
            self.active_state, self.sub_state, self.result, self.n_restarts, self.main_pid
        )
    }
}
