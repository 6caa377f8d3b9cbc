//! Unit state as rein reads it from systemd, and the mapping from service state to the
//! health rein reports.
//!
//! The same `apply` code reads a `GetAll` answer and a `PropertiesChanged` signal, so a state
//! kept up to date from signals is exactly what a fresh read would give.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use zbus::zvariant::{OwnedValue, Value};

/// A unit's `ActiveState`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ActiveState {
    Active,
    Reloading,
    #[default]
    Inactive,
    Failed,
    Activating,
    Deactivating,
    /// A state this version of rein does not know (e.g. `maintenance`).
    Other(String),
}

impl ActiveState {
    pub fn parse(text: &str) -> ActiveState {
        match text {
            "active" => ActiveState::Active,
            "reloading" => ActiveState::Reloading,
            "inactive" => ActiveState::Inactive,
            "failed" => ActiveState::Failed,
            "activating" => ActiveState::Activating,
            "deactivating" => ActiveState::Deactivating,
            other => ActiveState::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ActiveState::Active => "active",
            ActiveState::Reloading => "reloading",
            ActiveState::Inactive => "inactive",
            ActiveState::Failed => "failed",
            ActiveState::Activating => "activating",
            ActiveState::Deactivating => "deactivating",
            ActiveState::Other(other) => other,
        }
    }
}

impl std::fmt::Display for ActiveState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `Manager::list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitListEntry {
    pub name: String,
    pub description: String,
    /// `loaded`, `not-found`, `error`, `masked`, …
    pub load_state: String,
    pub active_state: ActiveState,
    pub sub_state: String,
    pub object_path: String,
}

/// What rein needs to judge a service's health.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceState {
    pub unit: String,
    pub load_state: String,
    pub active_state: ActiveState,
    /// `running`, `exited`, `dead`, `failed`, `auto-restart`, `start`, `stop-sigterm`, …
    pub sub_state: String,
    /// `success`, `exit-code`, `signal`, `core-dump`, `timeout`, `watchdog`,
    /// `start-limit-hit`, …
    pub result: String,
    /// How often systemd restarted the service automatically since it was started.
    pub n_restarts: u32,
    /// 0 when no main process runs.
    pub main_pid: u32,
    /// Realtime microseconds since the epoch of the last entering of the active state; 0 if
    /// never.
    pub active_enter_timestamp_usec: u64,
    /// Realtime microseconds of the last leaving of the inactive state (a start, including a
    /// oneshot run, which never becomes active); 0 if never.
    pub inactive_exit_timestamp_usec: u64,
    /// Bytes; `None` when systemd does not know (no memory accounting).
    pub memory_current: Option<u64>,
    /// CPU time used so far, in nanoseconds; `None` without CPU accounting. systemd sends
    /// no change signal for it (nor for `MemoryCurrent`): it is as fresh as the last read.
    pub cpu_usage_nsec: Option<u64>,
    /// Exit status (or signal number, see `exec_main_code`) of the last main process.
    pub exec_main_status: i32,
    /// `si_code` of the last main process: 1 exited, 2 killed, 3 dumped core; 0 none yet.
    pub exec_main_code: i32,
    /// What the service last said with sd_notify `STATUS=`.
    pub status_text: String,
}

impl ServiceState {
    pub(crate) fn new(unit: &str) -> ServiceState {
        ServiceState {
            unit: unit.to_owned(),
            ..ServiceState::default()
        }
    }

    /// When the service last became active.
    pub fn active_since(&self) -> Option<SystemTime> {
        realtime(self.active_enter_timestamp_usec)
    }

    /// When the service last started (left the inactive state).
    pub fn started_at(&self) -> Option<SystemTime> {
        realtime(self.inactive_exit_timestamp_usec)
    }

    /// Take the properties rein tracks from a `GetAll` answer or a `PropertiesChanged`
    /// signal; others are ignored.
    pub(crate) fn apply(&mut self, name: &str, value: &Value<'_>) {
        match name {
            "LoadState" => set_string(&mut self.load_state, value),
            "ActiveState" => {
                if let Value::Str(text) = value {
                    self.active_state = ActiveState::parse(text.as_str());
                }
            }
            "SubState" => set_string(&mut self.sub_state, value),
            "Result" => set_string(&mut self.result, value),
            "NRestarts" => set_u32(&mut self.n_restarts, value),
            "MainPID" => set_u32(&mut self.main_pid, value),
            "ActiveEnterTimestamp" => set_u64(&mut self.active_enter_timestamp_usec, value),
            "InactiveExitTimestamp" => set_u64(&mut self.inactive_exit_timestamp_usec, value),
            "MemoryCurrent" => {
                if let Value::U64(bytes) = value {
                    self.memory_current = (*bytes != u64::MAX).then_some(*bytes);
                }
            }
            "CPUUsageNSec" => {
                if let Value::U64(nanoseconds) = value {
                    self.cpu_usage_nsec = (*nanoseconds != u64::MAX).then_some(*nanoseconds);
                }
            }
            "ExecMainStatus" => set_i32(&mut self.exec_main_status, value),
            "ExecMainCode" => set_i32(&mut self.exec_main_code, value),
            "StatusText" => set_string(&mut self.status_text, value),
            _ => {}
        }
    }

    /// Whether a property invalidated by a signal (sent without its value) is one rein
    /// tracks, so that the state has to be read again.
    pub(crate) fn tracks(name: &str) -> bool {
        matches!(
            name,
            "LoadState"
                | "ActiveState"
                | "SubState"
                | "Result"
                | "NRestarts"
                | "MainPID"
                | "ActiveEnterTimestamp"
                | "InactiveExitTimestamp"
                | "MemoryCurrent"
                | "CPUUsageNSec"
                | "ExecMainStatus"
                | "ExecMainCode"
                | "StatusText"
        )
    }

    pub(crate) fn from_properties(
        unit: &str,
        properties: &HashMap<String, OwnedValue>,
    ) -> ServiceState {
        let mut state = ServiceState::new(unit);
        for (name, value) in properties {
            state.apply(name, value);
        }
        state
    }
}

/// What rein needs to know about a timer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TimerState {
    pub unit: String,
    pub load_state: String,
    pub active_state: ActiveState,
    /// `waiting`, `running`, `elapsed`, `dead`, …
    pub sub_state: String,
    pub result: String,
    /// Realtime microseconds of the last trigger; `None` if it never fired.
    pub last_trigger_usec: Option<u64>,
    /// Realtime microseconds of the next calendar elapse; `None` without calendar timers.
    pub next_elapse_realtime_usec: Option<u64>,
    /// Monotonic microseconds (CLOCK_MONOTONIC) of the next relative elapse; `None` without
    /// relative timers.
    pub next_elapse_monotonic_usec: Option<u64>,
    /// The `OnUnitActiveSec=` of the timer (from `TimersMonotonic`), if it has one.
    pub on_unit_active: Option<Duration>,
    /// `AccuracySec=`: how late systemd may fire it.
    pub accuracy: Option<Duration>,
}

impl TimerState {
    pub(crate) fn from_properties(
        unit: &str,
        properties: &HashMap<String, OwnedValue>,
    ) -> TimerState {
        let mut state = TimerState {
            unit: unit.to_owned(),
            ..TimerState::default()
        };
        let nonzero = |value: &Value<'_>| match value {
            Value::U64(usec) if *usec != 0 && *usec != u64::MAX => Some(*usec),
            _ => None,
        };
        for (name, value) in properties {
            let value: &Value<'_> = value;
            match name.as_str() {
                "LoadState" => set_string(&mut state.load_state, value),
                "ActiveState" => {
                    if let Value::Str(text) = value {
                        state.active_state = ActiveState::parse(text.as_str());
                    }
                }
                "SubState" => set_string(&mut state.sub_state, value),
                "Result" => set_string(&mut state.result, value),
                "LastTriggerUSec" => state.last_trigger_usec = nonzero(value),
                "NextElapseUSecRealtime" => state.next_elapse_realtime_usec = nonzero(value),
                "NextElapseUSecMonotonic" => state.next_elapse_monotonic_usec = nonzero(value),
                "TimersMonotonic" => state.on_unit_active = on_unit_active(value),
                "AccuracyUSec" => state.accuracy = nonzero(value).map(Duration::from_micros),
                _ => {}
            }
        }
        state
    }

    /// When the timer last fired.
    pub fn last_trigger(&self) -> Option<SystemTime> {
        self.last_trigger_usec.and_then(realtime)
    }

    /// The next calendar elapse as wall-clock time.
    pub fn next_elapse_realtime(&self) -> Option<SystemTime> {
        self.next_elapse_realtime_usec.and_then(realtime)
    }

    /// Whether the timer will fire again (by calendar or relative timers).
    pub fn has_next_elapse(&self) -> bool {
        self.next_elapse_realtime_usec.is_some() || self.next_elapse_monotonic_usec.is_some()
    }
}

/// The `OnUnitActiveUSec` entry of a `TimersMonotonic` value: `a(stt)` of (base, value,
/// next elapse).
fn on_unit_active(value: &Value<'_>) -> Option<Duration> {
    let Value::Array(timers) = value else {
        return None;
    };
    timers.iter().find_map(|timer| {
        let Value::Structure(fields) = timer else {
            return None;
        };
        match fields.fields() {
            [Value::Str(base), Value::U64(usec), ..] if base.as_str() == "OnUnitActiveUSec" => {
                Some(Duration::from_micros(*usec))
            }
            _ => None,
        }
    })
}

fn realtime(usec: u64) -> Option<SystemTime> {
    (usec != 0 && usec != u64::MAX).then(|| SystemTime::UNIX_EPOCH + Duration::from_micros(usec))
}

fn set_string(field: &mut String, value: &Value<'_>) {
    if let Value::Str(text) = value {
        *field = text.as_str().to_owned();
    }
}

fn set_u32(field: &mut u32, value: &Value<'_>) {
    if let Value::U32(number) = value {
        *field = *number;
    }
}

fn set_u64(field: &mut u64, value: &Value<'_>) {
    if let Value::U64(number) = value {
        *field = *number;
    }
}

fn set_i32(field: &mut i32, value: &Value<'_>) {
    if let Value::I32(number) = value {
        *field = *number;
    }
}

/// A service's health as rein reports it. Whether a worker waits on an ask is decided
/// elsewhere, from the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Active and running (or reloading).
    Running,
    /// Between an exit and the automatic restart (`SubState=auto-restart`), whatever
    /// `ActiveState` shows meanwhile.
    Restarting,
    Failed,
    /// The process finished successfully (inactive after running, or a oneshot with
    /// `RemainAfterExit=` still active).
    Exited,
    Starting,
    Stopping,
    /// Not running and never ran, or stopped cleanly before running anything.
    Inactive,
}

/// Map a service's state to its health.
pub fn health(state: &ServiceState) -> Health {
    // During an automatic restart systemd may briefly show ActiveState=failed (or
    // activating); the sub state is the reliable signal.
    if state.sub_state == "auto-restart" {
        return Health::Restarting;
    }
    match &state.active_state {
        ActiveState::Active if state.sub_state == "exited" => Health::Exited,
        ActiveState::Active | ActiveState::Reloading => Health::Running,
        ActiveState::Activating => Health::Starting,
        ActiveState::Deactivating => Health::Stopping,
        ActiveState::Failed => Health::Failed,
        ActiveState::Inactive if !state.result.is_empty() && state.result != "success" => {
            Health::Failed
        }
        ActiveState::Inactive if state.active_enter_timestamp_usec != 0 => Health::Exited,
        ActiveState::Inactive | ActiveState::Other(_) => Health::Inactive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(active: &str, sub: &str, result: &str, entered: u64) -> ServiceState {
        ServiceState {
            unit: "w.service".into(),
            load_state: "loaded".into(),
            active_state: ActiveState::parse(active),
            sub_state: sub.into(),
            result: result.into(),
            active_enter_timestamp_usec: entered,
            ..ServiceState::default()
        }
    }

    #[test]
    fn health_follows_the_unit_state() {
        let cases = [
            ("active", "running", "success", 1, Health::Running),
            ("reloading", "reload", "success", 1, Health::Running),
            ("active", "exited", "success", 1, Health::Exited),
            ("activating", "start", "success", 0, Health::Starting),
            (
                "activating",
                "auto-restart",
                "exit-code",
                1,
                Health::Restarting,
            ),
            ("failed", "auto-restart", "signal", 1, Health::Restarting),
            (
                "deactivating",
                "stop-sigterm",
                "success",
                1,
                Health::Stopping,
            ),
            ("failed", "failed", "exit-code", 1, Health::Failed),
            ("inactive", "dead", "exit-code", 1, Health::Failed),
            ("inactive", "dead", "success", 1, Health::Exited),
            ("inactive", "dead", "success", 0, Health::Inactive),
            ("maintenance", "cleaning", "success", 0, Health::Inactive),
        ];
        for (active, sub, result, entered, expected) in cases {
            assert_eq!(
                health(&state(active, sub, result, entered)),
                expected,
                "{active}/{sub}/{result}/{entered}"
            );
        }
    }

    #[test]
    fn properties_are_read_by_name_and_type() {
        let mut state = ServiceState::new("w.service");
        state.apply("ActiveState", &Value::from("failed"));
        state.apply("SubState", &Value::from("auto-restart"));
        state.apply("NRestarts", &Value::from(3u32));
        state.apply("MainPID", &Value::from(42u32));
        state.apply("ExecMainStatus", &Value::from(9i32));
        state.apply("MemoryCurrent", &Value::from(u64::MAX));
        // A wrongly typed value is ignored rather than misread.
        state.apply("NRestarts", &Value::from("four"));
        assert_eq!(state.active_state, ActiveState::Failed);
        assert_eq!(state.sub_state, "auto-restart");
        assert_eq!(state.n_restarts, 3);
        assert_eq!(state.main_pid, 42);
        assert_eq!(state.exec_main_status, 9);
        assert_eq!(state.memory_current, None);
        state.apply("MemoryCurrent", &Value::from(4096u64));
        assert_eq!(state.memory_current, Some(4096));
        state.apply("CPUUsageNSec", &Value::from(u64::MAX));
        assert_eq!(state.cpu_usage_nsec, None);
        state.apply("CPUUsageNSec", &Value::from(1_500_000u64));
        assert_eq!(state.cpu_usage_nsec, Some(1_500_000));
    }

    #[test]
    fn the_interval_comes_from_timers_monotonic() {
        let timers = Value::from(vec![
            ("OnActiveUSec".to_owned(), 1_000_000u64, 0u64),
            ("OnUnitActiveUSec".to_owned(), 60_000_000u64, 123u64),
        ]);
        assert_eq!(on_unit_active(&timers), Some(Duration::from_secs(60)));
        assert_eq!(on_unit_active(&Value::from(7u64)), None);
    }

    #[test]
    fn active_state_round_trips() {
        for text in [
            "active",
            "reloading",
            "inactive",
            "failed",
            "activating",
            "deactivating",
            "maintenance",
        ] {
            assert_eq!(ActiveState::parse(text).as_str(), text);
        }
    }
}
