//! The connection to the systemd user manager and every call rein makes on it.
//!
//! Signals are received through match rules of our own rather than proxy signal streams, so
//! the same code works on a bus (where the rule names systemd's unique name as sender) and on
//! the manager's private peer-to-peer socket (where messages carry no sender). A stream is
//! always created before the call whose outcome it reports. zbus applies back-pressure when
//! a stream's queue is full, so every stream gets a large queue and is drained while waiting.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;
use zbus::fdo::PropertiesChanged;
use zbus::message::{Sequence, Type as MessageType};
use zbus::names::{BusName, OwnedUniqueName};
use zbus::proxy::CacheProperties;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::{Connection, MatchRule, Message, MessageStream};

use super::proxies::{
    JobRemoved, ManagerProxy, PropertyArg, UnitRemoved, MANAGER_INTERFACE, MANAGER_PATH,
    SYSTEMD_SERVICE,
};
use super::state::{ServiceState, TimerState, UnitListEntry};
use super::steady::{self, SteadyRun};
use super::units::{Property, TransientUnit};
use super::SystemdError;

const PROPERTIES_INTERFACE: &str = "org.freedesktop.DBus.Properties";
const UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit/";
/// How long one endpoint may take to connect and answer `Subscribe()`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages a signal stream may hold before zbus stops reading the socket.
const SIGNAL_QUEUE: usize = 4096;
/// `si_code` of a main process that exited (as opposed to being killed).
const CLD_EXITED: i32 = 1;
/// How long past its grace [`Manager::remove`] waits for a stop before it SIGKILLs.
const STOP_MARGIN: Duration = Duration::from_secs(5);
/// How long [`Manager::remove`] waits for a stopped unit to be unloaded.
const UNLOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The grace of units that are not agents (the pulse, the gate, bridges).
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// Where a systemd user manager may answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A D-Bus bus address, e.g. `unix:path=/run/user/1000/bus`.
    Bus(String),
    /// The manager's own peer-to-peer socket, `$XDG_RUNTIME_DIR/systemd/private`.
    PrivateSocket(PathBuf),
}

impl Endpoint {
    /// The endpoints to try, in order: `DBUS_SESSION_BUS_ADDRESS`, the bus in the runtime
    /// dir, the private socket in the runtime dir. The runtime dir is `XDG_RUNTIME_DIR`, else
    /// `/run/user/UID`.
    pub fn from_environment() -> Vec<Endpoint> {
        let mut endpoints = Vec::new();
        if let Some(address) = std::env::var("DBUS_SESSION_BUS_ADDRESS")
            .ok()
            .filter(|a| !a.is_empty())
        {
            endpoints.push(Endpoint::Bus(address));
        }
        let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                // SAFETY: getuid has no preconditions and cannot fail.
                let uid = unsafe { libc::getuid() };
                PathBuf::from(format!("/run/user/{uid}"))
            });
        let bus = Endpoint::Bus(format!("unix:path={}", runtime_dir.join("bus").display()));
        if !endpoints.contains(&bus) {
            endpoints.push(bus);
        }
        endpoints.push(Endpoint::PrivateSocket(runtime_dir.join("systemd/private")));
        endpoints
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Bus(address) => write!(f, "bus {address}"),
            Endpoint::PrivateSocket(path) => write!(f, "private socket {}", path.display()),
        }
    }
}

/// Which processes of a unit `Manager::kill` signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillTarget {
    /// The main process only.
    Main,
    /// Every process of the unit.
    All,
}

impl KillTarget {
    fn as_systemd(self) -> &'static str {
        match self {
            KillTarget::Main => "main",
            KillTarget::All => "all",
        }
    }
}

/// A connection to the systemd user manager. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Manager {
    connection: Connection,
    proxy: ManagerProxy<'static>,
    /// systemd's unique name on a bus; `None` on the peer-to-peer socket.
    systemd_sender: Option<OwnedUniqueName>,
    endpoint: Endpoint,
    /// Set once `Subscribe` was called: only a caller that waits for signals makes systemd
    /// send them (and track this client until it leaves), not every short-lived call.
    subscribed: std::sync::Arc<tokio::sync::OnceCell<()>>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// A byte array property (`ay`) as lowercase hex; empty for anything else.
fn hex_bytes(value: &Value<'_>) -> String {
    let Value::Array(items) = value else {
        return String::new();
    };
    items
        .iter()
        .map(|item| match item {
            Value::U8(byte) => format!("{byte:02x}"),
            _ => String::new(),
        })
        .collect()
}

/// The run of a service to keep between listings: only a running one with a main process and
/// a whole invocation id. `property` gives the values read of `InvocationID` and
/// `ControlGroup` besides those in `state`.
fn steady_run<'a>(
    state: &ServiceState,
    property: impl Fn(&str) -> Option<&'a Value<'a>>,
) -> Option<SteadyRun> {
    let invocation = property("InvocationID").map(hex_bytes).unwrap_or_default();
    let control_group = match property("ControlGroup") {
        Some(Value::Str(text)) => text.as_str().to_owned(),
        _ => String::new(),
    };
    let running = state.active_state == super::ActiveState::Active && state.sub_state == "running";
    (running && invocation.len() == 32 && state.main_pid != 0).then(|| SteadyRun {
        invocation,
        result: state.result.clone(),
        n_restarts: state.n_restarts,
        main_pid: state.main_pid,
        active_enter_timestamp_usec: state.active_enter_timestamp_usec,
        control_group,
    })
}

/// What a listing reads of each service besides the listing's own columns.
const LISTED: [(&str, &str); 5] = [
    ("org.freedesktop.systemd1.Service", "Result"),
    ("org.freedesktop.systemd1.Service", "NRestarts"),
    ("org.freedesktop.systemd1.Service", "MainPID"),
    ("org.freedesktop.systemd1.Service", "MemoryCurrent"),
    ("org.freedesktop.systemd1.Unit", "ActiveEnterTimestamp"),
];

impl Manager {
    /// Connect to the user manager found through the environment (see
    /// [`Endpoint::from_environment`]).
    pub async fn connect() -> Result<Manager, SystemdError> {
        Manager::connect_to(&Endpoint::from_environment()).await
    }

    /// Connect through the first of `endpoints` where systemd answers.
    pub async fn connect_to(endpoints: &[Endpoint]) -> Result<Manager, SystemdError> {
        let mut failures = Vec::new();
        for endpoint in endpoints {
            match tokio::time::timeout(CONNECT_TIMEOUT, Manager::connect_one(endpoint)).await {
                Ok(Ok(manager)) => return Ok(manager),
                Ok(Err(error)) => failures.push(format!("{endpoint}: {error}")),
                Err(_) => failures.push(format!(
                    "{endpoint}: no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )),
            }
        }
        let detail = if failures.is_empty() {
            "no endpoint to try".to_owned()
        } else {
            failures.join("; ")
        };
        Err(SystemdError::Unreachable { detail })
    }

    async fn connect_one(endpoint: &Endpoint) -> Result<Manager, zbus::Error> {
        let connection = match endpoint {
            Endpoint::Bus(address) => {
                zbus::connection::Builder::address(address.as_str())?
                    .build()
                    .await?
            }
            Endpoint::PrivateSocket(path) => super::private_socket::connect(path).await?,
        };
        let proxy = ManagerProxy::builder(&connection)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        // On a bus, systemd's owning its name proves it answers there; the private socket is
        // systemd's own. Signals are subscribed to when first wanted ([`Manager::signals`]).
        let systemd_sender = match endpoint {
            Endpoint::Bus(_) => Some(
                zbus::fdo::DBusProxy::new(&connection)
                    .await?
                    .get_name_owner(BusName::try_from(SYSTEMD_SERVICE)?)
                    .await?,
            ),
            Endpoint::PrivateSocket(_) => None,
        };
        Ok(Manager {
            connection,
            proxy,
            systemd_sender,
            endpoint: endpoint.clone(),
            subscribed: Default::default(),
        })
    }

    /// Where this connection goes.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The name of the unit a process belongs to (by its cgroup), as the manager sees it.
    pub async fn unit_of_pid(&self, pid: u32) -> Result<Option<String>, SystemdError> {
        match self.proxy.get_unit_by_pid(pid).await {
            Ok(path) => Ok(unit_name_from_object_path(path.as_str())),
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str().ends_with("NoUnitForPID") =>
            {
                Ok(None)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Create the unit (and its aux units) and wait for the start job to finish. `Ok` means
    /// the job ended `done`; any other result is [`SystemdError::JobFailed`] with the
    /// service's last signalled result and exit status. A name that is still loaded is
    /// [`SystemdError::UnitExists`]. The wait is bounded by the unit's own start timeout.
    pub async fn start_transient(&self, unit: &TransientUnit) -> Result<(), SystemdError> {
        let name = unit.name();
        let mut jobs = self
            .signals(MANAGER_PATH, MANAGER_INTERFACE, "JobRemoved", None)
            .await?;
        let unit_path = unit_object_path(name);
        let mut changes = self
            .signals(&unit_path, PROPERTIES_INTERFACE, "PropertiesChanged", None)
            .await?;

        let properties = property_args(unit.properties());
        let aux: Vec<(&str, Vec<PropertyArg<'_>>)> = unit
            .aux_units()
            .iter()
            .map(|(aux_name, aux_properties)| (aux_name.as_str(), property_args(aux_properties)))
            .collect();
        let job = self
            .proxy
            .start_transient_unit(name, "fail", &properties, &aux)
            .await
            .map_err(|error| method_error(error, name))?;

        let mut last = ServiceState::new(name);
        let result = loop {
            tokio::select! {
                message = next_message(&mut jobs) => {
                    if let Some(result) = job_result(&message?, &job) {
                        break result;
                    }
                }
                message = next_message(&mut changes) => {
                    apply_changes(&mut last, &message?);
                }
            }
        };
        // Changes signalled before the job ended may still be queued.
        while let Some(Some(Ok(message))) = changes.next().now_or_never() {
            apply_changes(&mut last, &message);
        }

        if result == "done" {
            return Ok(());
        }
        let exited = last.exec_main_code == CLD_EXITED;
        Err(SystemdError::JobFailed {
            unit: name.to_owned(),
            operation: "start",
            result,
            service_result: Some(last.result).filter(|r| !r.is_empty()),
            exit_status: exited.then_some(last.exec_main_status),
        })
    }

    /// Stops a unit and makes sure it is unloaded (reset if it failed), so no unit is left
    /// behind and its name can be used again. A unit that is not loaded is `Ok`.
    ///
    /// The stop is bounded: a unit still stopping `grace` (plus a margin) after the stop began
    /// — one that ignores SIGTERM and carries a longer `TimeoutStopSec=` than `grace` — gets
    /// SIGKILL for all its processes. A connection that breaks meanwhile (the bus's daemon
    /// went away) is replaced by a fresh one and the removal carried on, so a stop that
    /// happened is never reported as a D-Bus failure.
    pub async fn remove(&self, unit_name: &str, grace: Duration) -> Result<(), SystemdError> {
        match self.remove_once(unit_name, grace).await {
            Err(error) if error.is_disconnect() => {
                tracing::warn!(
                    "the connection to the user manager broke while removing {unit_name} ({error}); reconnecting"
                );
                let fresh = Manager::connect().await?;
                fresh.remove_once(unit_name, grace).await
            }
            other => other,
        }
    }

    async fn remove_once(&self, unit_name: &str, grace: Duration) -> Result<(), SystemdError> {
        match tokio::time::timeout(grace + STOP_MARGIN, self.stop(unit_name)).await {
            Ok(Ok(()) | Err(SystemdError::JobFailed { .. })) => {}
            Ok(Err(other)) => return Err(other),
            Err(_) => {
                tracing::warn!(
                    "{unit_name} did not stop within {grace:?} of SIGTERM; sending SIGKILL to all its processes"
                );
                match self.kill(unit_name, KillTarget::All, libc::SIGKILL).await {
                    Ok(()) | Err(SystemdError::NoSuchUnit(_) | SystemdError::Rejected { .. }) => {}
                    Err(other) => return Err(other),
                }
                // The pending stop job ends once its processes are gone.
                match tokio::time::timeout(UNLOAD_TIMEOUT, self.stop(unit_name)).await {
                    Ok(Ok(()) | Err(SystemdError::JobFailed { .. })) | Err(_) => {}
                    Ok(Err(other)) => return Err(other),
                }
            }
        }
        if self.list(&[unit_name]).await?.is_empty() {
            return Ok(());
        }
        self.reset_failed(unit_name).await?;
        self.wait_unloaded(unit_name, UNLOAD_TIMEOUT).await
    }

    /// Stop a unit and wait for the stop job. A unit that is not loaded is `Ok`.
    pub async fn stop(&self, unit_name: &str) -> Result<(), SystemdError> {
        let mut jobs = self
            .signals(MANAGER_PATH, MANAGER_INTERFACE, "JobRemoved", None)
            .await?;
        let job = match self.proxy.stop_unit(unit_name, "replace").await {
            Ok(job) => job,
            Err(error) => {
                return match method_error(error, unit_name) {
                    SystemdError::NoSuchUnit(_) => Ok(()),
                    other => Err(other),
                }
            }
        };
        let result = loop {
            if let Some(result) = job_result(&next_message(&mut jobs).await?, &job) {
                break result;
            }
        };
        if result == "done" {
            Ok(())
        } else {
            Err(SystemdError::JobFailed {
                unit: unit_name.to_owned(),
                operation: "stop",
                result,
                service_result: None,
                exit_status: None,
            })
        }
    }

    /// Wait until the unit is unloaded (garbage-collected), so its name can be used again.
    /// `Ok` at once when it is not loaded.
    pub async fn wait_unloaded(
        &self,
        unit_name: &str,
        timeout: Duration,
    ) -> Result<(), SystemdError> {
        let mut removed = self
            .signals(
                MANAGER_PATH,
                MANAGER_INTERFACE,
                "UnitRemoved",
                Some(unit_name),
            )
            .await?;
        match self.proxy.get_unit(unit_name).await {
            Ok(_) => {}
            Err(error) => {
                return match method_error(error, unit_name) {
                    SystemdError::NoSuchUnit(_) => Ok(()),
                    other => Err(other),
                }
            }
        }
        loop {
            match tokio::time::timeout(timeout, next_message(&mut removed)).await {
                Ok(message) => {
                    if UnitRemoved::from_message(message?).is_some() {
                        return Ok(());
                    }
                }
                Err(_) => {
                    let last = self
                        .service_state(unit_name)
                        .await?
                        .unwrap_or_else(|| ServiceState::new(unit_name));
                    return Err(SystemdError::Timeout {
                        unit: unit_name.to_owned(),
                        waited: timeout,
                        last: Box::new(last),
                    });
                }
            }
        }
    }

    /// Forget a failed unit's failure (and unload it if nothing else keeps it). A unit that
    /// is not loaded is `Ok`.
    pub async fn reset_failed(&self, unit_name: &str) -> Result<(), SystemdError> {
        match self.proxy.reset_failed_unit(unit_name).await {
            Ok(()) => Ok(()),
            Err(error) => match method_error(error, unit_name) {
                SystemdError::NoSuchUnit(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Re-read unit files (`Reload`), e.g. after installing one.
    pub async fn reload(&self) -> Result<(), SystemdError> {
        Ok(self.proxy.reload().await?)
    }

    /// Enable installed unit files by name (`EnableUnitFiles`, persistent, replacing links).
    pub async fn enable_unit_files(&self, names: &[&str]) -> Result<(), SystemdError> {
        self.proxy
            .enable_unit_files(names, false, true)
            .await
            .map_err(|error| method_error(error, names.first().copied().unwrap_or_default()))?;
        Ok(())
    }

    /// Disable unit files by name (`DisableUnitFiles`).
    pub async fn disable_unit_files(&self, names: &[&str]) -> Result<(), SystemdError> {
        self.proxy
            .disable_unit_files(names, false)
            .await
            .map_err(|error| method_error(error, names.first().copied().unwrap_or_default()))?;
        Ok(())
    }

    /// Send `signal` (e.g. `libc::SIGTERM`) to the unit's main process or all its processes.
    /// A unit that is not loaded is [`SystemdError::NoSuchUnit`]; `KillTarget::Main` on a
    /// unit without a main process is [`SystemdError::Rejected`].
    pub async fn kill(
        &self,
        unit_name: &str,
        target: KillTarget,
        signal: i32,
    ) -> Result<(), SystemdError> {
        self.proxy
            .kill_unit(unit_name, target.as_systemd(), signal)
            .await
            .map_err(|error| method_error(error, unit_name))
    }

    /// Loaded units whose names match any of the glob `patterns`, in every state: one
    /// `ListUnitsByPatterns` call. Names systemd merely looked up and found nothing for
    /// (`LoadState=not-found`, e.g. after a state query of a unit that is gone) are left out.
    pub async fn list(&self, patterns: &[&str]) -> Result<Vec<UnitListEntry>, SystemdError> {
        let rows = self.proxy.list_units_by_patterns(&[], patterns).await?;
        Ok(rows
            .into_iter()
            .filter(|row| is_loaded(&row.2))
            .map(
                |(name, description, load_state, active_state, sub_state, _, path, ..)| {
                    UnitListEntry {
                        name,
                        description,
                        load_state,
                        active_state: super::ActiveState::parse(&active_state),
                        sub_state,
                        object_path: path.as_str().to_owned(),
                    }
                },
            )
            .collect())
    }

    /// A service's state in one `GetAll` call, or `None` when no such unit is loaded.
    pub async fn service_state(
        &self,
        unit_name: &str,
    ) -> Result<Option<ServiceState>, SystemdError> {
        Ok(self
            .service_state_and_run(unit_name)
            .await?
            .map(|(state, _)| state))
    }

    /// A service's state in one `GetAll` call with its run to keep (see [`super::steady`]) when
    /// it is running, for a caller that has just started it: the first listing after starting
    /// a fleet then asks nothing per unit. `None` when no such unit is loaded.
    pub async fn service_state_and_run(
        &self,
        unit_name: &str,
    ) -> Result<Option<(ServiceState, Option<SteadyRun>)>, SystemdError> {
        let Some((properties, _)) = self.read_unit(unit_name).await? else {
            return Ok(None);
        };
        let state = ServiceState::from_properties(unit_name, &properties);
        if !is_loaded(&state.load_state) {
            return Ok(None);
        }
        let run = steady_run(&state, |name| properties.get(name).map(|value| &**value));
        Ok(Some((state, run)))
    }

    /// The state of a listed service, as `worker ls` shows it: the listing's load, active and
    /// sub state plus a handful of properties read one by one (`Get`, all sent at once).
    /// Asking systemd for every property (`GetAll`) costs it about a millisecond of CPU per
    /// unit — the cgroup statistics, the command lines — which a fleet of a thousand workers
    /// pays on every listing. For a listing that keeps running services' steady properties
    /// between runs (see [`super::steady`]): a unit still in the run `kept`
    /// describes costs no call (its memory is read from its cgroup, or asked for when that
    /// cannot be read); any other is read, and returned with its run to keep when running.
    pub async fn listed_service_state_kept(
        &self,
        entry: &UnitListEntry,
        kept: Option<&SteadyRun>,
    ) -> Result<Option<(ServiceState, Option<SteadyRun>)>, SystemdError> {
        let running =
            entry.active_state == super::ActiveState::Active && entry.sub_state == "running";
        let mut state = ServiceState::new(&entry.name);
        state.load_state = entry.load_state.clone();
        state.active_state = entry.active_state.clone();
        state.sub_state = entry.sub_state.clone();
        if let Some(kept) = kept.filter(|kept| {
            running && steady::current_invocation(&entry.name).as_deref() == Some(&kept.invocation)
        }) {
            state.result = kept.result.clone();
            state.n_restarts = kept.n_restarts;
            state.main_pid = kept.main_pid;
            state.active_enter_timestamp_usec = kept.active_enter_timestamp_usec;
            state.memory_current = match steady::cgroup_memory(&kept.control_group) {
                Some(bytes) => Some(bytes),
                None => {
                    const MEMORY: [(&str, &str); 1] =
                        [("org.freedesktop.systemd1.Service", "MemoryCurrent")];
                    let Some((values, _)) = self.get_each(entry, &MEMORY).await? else {
                        return Ok(None);
                    };
                    values.first().and_then(|value| {
                        let mut read = ServiceState::default();
                        read.apply("MemoryCurrent", value);
                        read.memory_current
                    })
                }
            };
            return Ok(Some((state, Some(kept.clone()))));
        }
        const RUN: [(&str, &str); 2] = [
            ("org.freedesktop.systemd1.Unit", "InvocationID"),
            ("org.freedesktop.systemd1.Service", "ControlGroup"),
        ];
        let wanted: Vec<(&str, &str)> = LISTED.iter().chain(&RUN).copied().collect();
        let Some((values, _)) = self.get_each(entry, &wanted).await? else {
            return Ok(None);
        };
        // `apply` passes over the two run properties, which only the kept run holds.
        for ((_, name), value) in wanted.iter().zip(&values) {
            state.apply(name, value);
        }
        let run = steady_run(&state, |name| {
            wanted
                .iter()
                .zip(&values)
                .find(|((_, wanted), _)| *wanted == name)
                .map(|(_, value)| &**value)
        });
        Ok(Some((state, run)))
    }

    /// A listed service's state, always read, with the active and sub state read too (not
    /// taken from the listing, which is older), and where the read sits among received
    /// messages: every signal received before it is reflected in it. For a screen that reads
    /// a whole fleet once and then follows the signals.
    pub async fn listed_service_state_at(
        &self,
        entry: &UnitListEntry,
    ) -> Result<Option<(ServiceState, Sequence)>, SystemdError> {
        // The screen shows CPU time as well.
        const STATES: [(&str, &str); 3] = [
            ("org.freedesktop.systemd1.Unit", "ActiveState"),
            ("org.freedesktop.systemd1.Unit", "SubState"),
            ("org.freedesktop.systemd1.Service", "CPUUsageNSec"),
        ];
        let wanted: Vec<(&str, &str)> = STATES.iter().chain(&LISTED).copied().collect();
        let Some((values, read_at)) = self.get_each(entry, &wanted).await? else {
            return Ok(None);
        };
        let mut state = ServiceState::new(&entry.name);
        state.load_state = entry.load_state.clone();
        for ((_, name), value) in wanted.iter().zip(&values) {
            state.apply(name, value);
        }
        Ok(Some((state, read_at)))
    }

    /// The properties `wanted` of a listed unit, one `Get` each (all sent at once), and the
    /// position of the earliest reply; `None` when the unit went away meanwhile.
    async fn get_each(
        &self,
        entry: &UnitListEntry,
        wanted: &[(&str, &str)],
    ) -> Result<Option<(Vec<OwnedValue>, Sequence)>, SystemdError> {
        let reads = wanted.iter().map(|&(interface, name)| async move {
            self.connection
                .call_method(
                    Some(SYSTEMD_SERVICE),
                    entry.object_path.as_str(),
                    Some(PROPERTIES_INTERFACE),
                    "Get",
                    &(interface, name),
                )
                .await
        });
        let mut values = Vec::with_capacity(wanted.len());
        let mut earliest: Option<Sequence> = None;
        for reply in futures_util::future::join_all(reads).await {
            let reply = match reply {
                Ok(reply) => reply,
                Err(error) => {
                    return match method_error(error, &entry.name) {
                        SystemdError::NoSuchUnit(_) => Ok(None),
                        other => Err(other),
                    }
                }
            };
            let position = reply.recv_position();
            earliest = Some(earliest.map_or(position, |at| at.min(position)));
            values.push(reply.body().deserialize()?);
        }
        Ok(earliest.map(|at| (values, at)))
    }

    /// A timer's state in one `GetAll` call, or `None` when no such unit is loaded.
    pub async fn timer_state(&self, unit_name: &str) -> Result<Option<TimerState>, SystemdError> {
        let Some((properties, _)) = self.read_unit(unit_name).await? else {
            return Ok(None);
        };
        let state = TimerState::from_properties(unit_name, &properties);
        Ok(is_loaded(&state.load_state).then_some(state))
    }

    /// Wait until the service's state satisfies `predicate`, and return that state. Subscribes
    /// to the unit's `PropertiesChanged` first, reads the state once, then follows the
    /// signals. A unit that is not loaded is [`SystemdError::NoSuchUnit`]; one unloaded
    /// while waiting is [`SystemdError::Gone`]; past `timeout`, [`SystemdError::Timeout`].
    pub async fn wait_for_state(
        &self,
        unit_name: &str,
        predicate: impl Fn(&ServiceState) -> bool,
        timeout: Duration,
    ) -> Result<ServiceState, SystemdError> {
        let deadline = Instant::now() + timeout;
        let unit_path = unit_object_path(unit_name);
        let mut changes = self
            .signals(&unit_path, PROPERTIES_INTERFACE, "PropertiesChanged", None)
            .await?;
        let mut removed = self
            .signals(
                MANAGER_PATH,
                MANAGER_INTERFACE,
                "UnitRemoved",
                Some(unit_name),
            )
            .await?;

        let (mut state, mut read_at) = self.read_service(unit_name).await?;
        if predicate(&state) {
            return Ok(state);
        }
        let sleep = tokio::time::sleep_until(deadline);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                message = next_message(&mut changes) => {
                    let message = message?;
                    // Signals sent before our read are already reflected in it.
                    if message.recv_position() <= read_at {
                        continue;
                    }
                    if apply_changes(&mut state, &message) == Applied::NeedsRead {
                        (state, read_at) = self.read_service(unit_name).await?;
                    }
                    if predicate(&state) {
                        return Ok(state);
                    }
                }
                message = next_message(&mut removed) => {
                    let removed_at = message?.recv_position();
                    // The last changes may still be queued behind the removal.
                    while let Some(Some(Ok(message))) = changes.next().now_or_never() {
                        if message.recv_position() > read_at && message.recv_position() < removed_at {
                            apply_changes(&mut state, &message);
                            if predicate(&state) {
                                return Ok(state);
                            }
                        }
                    }
                    return Err(SystemdError::Gone { unit: unit_name.to_owned(), last: Box::new(state) });
                }
                () = &mut sleep => {
                    return Err(SystemdError::Timeout {
                        unit: unit_name.to_owned(),
                        waited: timeout,
                        last: Box::new(state),
                    });
                }
            }
        }
    }

    /// The service's state and where its read sits among received messages.
    async fn read_service(
        &self,
        unit_name: &str,
    ) -> Result<(ServiceState, Sequence), SystemdError> {
        let Some((properties, read_at)) = self.read_unit(unit_name).await? else {
            return Err(SystemdError::NoSuchUnit(unit_name.to_owned()));
        };
        let state = ServiceState::from_properties(unit_name, &properties);
        if !is_loaded(&state.load_state) {
            return Err(SystemdError::NoSuchUnit(unit_name.to_owned()));
        }
        Ok((state, read_at))
    }

    /// All properties of every interface of a unit object, in one call. Addressing a unit
    /// by path makes systemd load it if it can; a name with no unit behind it comes back
    /// with `LoadState=not-found`.
    async fn read_unit(
        &self,
        unit_name: &str,
    ) -> Result<Option<(HashMap<String, OwnedValue>, Sequence)>, SystemdError> {
        let reply = self
            .connection
            .call_method(
                Some(SYSTEMD_SERVICE),
                unit_object_path(unit_name).as_str(),
                Some(PROPERTIES_INTERFACE),
                "GetAll",
                // The empty interface name asks sd-bus for the properties of all interfaces.
                &"",
            )
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                return match method_error(error, unit_name) {
                    SystemdError::NoSuchUnit(_) => Ok(None),
                    other => Err(other),
                }
            }
        };
        let properties: HashMap<String, OwnedValue> = reply.body().deserialize()?;
        Ok(Some((properties, reply.recv_position())))
    }

    /// Makes systemd send this connection signals about units and jobs (`Subscribe`), once.
    async fn subscribe(&self) -> Result<(), SystemdError> {
        self.subscribed
            .get_or_try_init(|| self.proxy.subscribe())
            .await?;
        Ok(())
    }

    /// A stream of one signal from systemd, subscribed before this returns.
    async fn signals(
        &self,
        path: &str,
        interface: &str,
        member: &str,
        arg0: Option<&str>,
    ) -> Result<MessageStream, SystemdError> {
        self.subscribe().await?;
        let mut rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .path(path)?
            .interface(interface)?
            .member(member)?;
        if let Some(sender) = &self.systemd_sender {
            rule = rule.sender(sender.as_str())?;
        }
        if let Some(arg0) = arg0 {
            rule = rule.arg(0, arg0)?;
        }
        Ok(
            MessageStream::for_match_rule(rule.build(), &self.connection, Some(SIGNAL_QUEUE))
                .await?,
        )
    }
}

/// The bus name whose owner changes when the user manager leaves or joins a bus.
const DBUS_SERVICE: &str = "org.freedesktop.DBus";

/// One signal from the user manager about its units.
#[derive(Debug)]
pub enum UnitSignal {
    /// A unit was loaded (`UnitNew`).
    New(String),
    /// A unit was unloaded (`UnitRemoved`).
    Removed(String),
    /// Properties of a unit changed (`PropertiesChanged` on its object).
    Changed(UnitChange),
}

/// A `PropertiesChanged` signal of one unit, to apply to a kept state.
#[derive(Debug)]
pub struct UnitChange {
    pub unit: String,
    message: Message,
}

impl UnitChange {
    /// Where the signal sits among received messages: a state read at or after this
    /// position already reflects it (see [`Manager::service_state_at`]).
    pub fn position(&self) -> Sequence {
        self.message.recv_position()
    }

    /// Applies the changed values to `state` with the same code as a read. Returns `true`
    /// when a tracked property was invalidated without its value: read the state again.
    pub fn apply_to(&self, state: &mut ServiceState) -> bool {
        apply_changes(state, &self.message) == Applied::NeedsRead
    }
}

/// Every unit signal of the user manager, in the order it sent them; see
/// [`Manager::unit_signals`].
pub struct UnitSignals {
    signals: MessageStream,
    /// `NameOwnerChanged` of systemd's bus name; `None` on the private socket, where a
    /// closed connection says the same.
    owner: Option<MessageStream>,
}

impl UnitSignals {
    /// The next signal about a unit. [`SystemdError::Disconnected`] when the connection
    /// closed or the manager left the bus: connect again once it is back.
    pub async fn next(&mut self) -> Result<UnitSignal, SystemdError> {
        loop {
            let message = match &mut self.owner {
                Some(owner) => tokio::select! {
                    message = next_message(&mut self.signals) => message?,
                    owner_message = next_message(owner) => {
                        let owner_message = owner_message?;
                        let gone = owner_message
                            .body()
                            .deserialize::<(String, String, String)>()
                            .is_ok_and(|(_, _, new_owner)| new_owner.is_empty());
                        if gone {
                            return Err(SystemdError::Disconnected);
                        }
                        continue;
                    }
                },
                None => next_message(&mut self.signals).await?,
            };
            if let Some(signal) = unit_signal(message) {
                return Ok(signal);
            }
        }
    }
}

fn unit_signal(message: Message) -> Option<UnitSignal> {
    let header = message.header();
    let member = header.member()?.as_str().to_owned();
    let path = header.path()?.as_str().to_owned();
    match member.as_str() {
        "UnitNew" | "UnitRemoved" if path == MANAGER_PATH => {
            let (name, _): (String, OwnedObjectPath) = message.body().deserialize().ok()?;
            Some(if member == "UnitNew" {
                UnitSignal::New(name)
            } else {
                UnitSignal::Removed(name)
            })
        }
        "PropertiesChanged" => {
            let unit = unit_name_from_object_path(&path)?;
            Some(UnitSignal::Changed(UnitChange { unit, message }))
        }
        _ => None,
    }
}

impl Manager {
    /// Ask systemd to restart a unit (`RestartUnit`, mode `replace`) and return once the job
    /// is queued; its progress shows in the unit's signals.
    pub async fn restart(&self, unit_name: &str) -> Result<(), SystemdError> {
        self.proxy
            .restart_unit(unit_name, "replace")
            .await
            .map(|_job| ())
            .map_err(|error| method_error(error, unit_name))
    }

    /// A service's state in one `GetAll` call with where the read sits among received
    /// messages, so signals already reflected in it can be skipped; `None` when no such unit
    /// is loaded.
    pub async fn service_state_at(
        &self,
        unit_name: &str,
    ) -> Result<Option<(ServiceState, Sequence)>, SystemdError> {
        let Some((properties, read_at)) = self.read_unit(unit_name).await? else {
            return Ok(None);
        };
        let state = ServiceState::from_properties(unit_name, &properties);
        Ok(is_loaded(&state.load_state).then_some((state, read_at)))
    }

    /// Subscribes to every signal the manager sends about units (`UnitNew`, `UnitRemoved`,
    /// `PropertiesChanged`), in one ordered stream, and on a bus to the manager leaving it.
    /// Subscribed before this returns, so a read made afterwards misses nothing.
    pub async fn unit_signals(&self) -> Result<UnitSignals, SystemdError> {
        self.subscribe().await?;
        let mut rule = MatchRule::builder().msg_type(MessageType::Signal);
        if let Some(sender) = &self.systemd_sender {
            rule = rule.sender(sender.as_str())?;
        }
        let signals =
            MessageStream::for_match_rule(rule.build(), &self.connection, Some(SIGNAL_QUEUE))
                .await?;
        let owner = match self.systemd_sender {
            Some(_) => {
                let rule = MatchRule::builder()
                    .msg_type(MessageType::Signal)
                    .sender(DBUS_SERVICE)?
                    .interface(DBUS_SERVICE)?
                    .member("NameOwnerChanged")?
                    .arg(0, SYSTEMD_SERVICE)?
                    .build();
                Some(MessageStream::for_match_rule(rule, &self.connection, Some(16)).await?)
            }
            None => None,
        };
        Ok(UnitSignals { signals, owner })
    }
}

/// The unit name an object path of [`unit_object_path`] stands for; `None` for any other
/// path.
pub fn unit_name_from_object_path(path: &str) -> Option<String> {
    let escaped = path.strip_prefix(UNIT_PATH_PREFIX)?;
    let bytes = escaped.as_bytes();
    let mut name = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'_' {
            let hex = escaped.get(index + 1..index + 3)?;
            name.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            name.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(name).ok()
}

/// The D-Bus object path of a unit: its name with every byte that is not an ASCII letter or
/// digit (and a leading digit) written as `_xx` in hex, as systemd does.
pub fn unit_object_path(unit_name: &str) -> String {
    let mut path = String::with_capacity(UNIT_PATH_PREFIX.len() + unit_name.len() * 3);
    path.push_str(UNIT_PATH_PREFIX);
    if unit_name.is_empty() {
        path.push('_');
    }
    for (index, byte) in unit_name.bytes().enumerate() {
        if byte.is_ascii_alphabetic() || (byte.is_ascii_digit() && index > 0) {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("_{byte:02x}"));
        }
    }
    path
}

fn is_loaded(load_state: &str) -> bool {
    !load_state.is_empty() && load_state != "not-found"
}

fn property_args(properties: &[Property]) -> Vec<PropertyArg<'static>> {
    properties
        .iter()
        .map(|property| (property.name, property.value.to_value()))
        .collect()
}

/// The result of `job` if `message` is its `JobRemoved` signal.
fn job_result(message: &Message, job: &OwnedObjectPath) -> Option<String> {
    let signal = JobRemoved::from_message(message.clone())?;
    let args = signal.args().ok()?;
    (args.job().as_str() == job.as_str()).then(|| args.result().to_string())
}

#[derive(Debug, PartialEq, Eq)]
enum Applied {
    Done,
    /// A tracked property was invalidated without its value: read the state again.
    NeedsRead,
}

fn apply_changes(state: &mut ServiceState, message: &Message) -> Applied {
    let Some(signal) = PropertiesChanged::from_message(message.clone()) else {
        return Applied::Done;
    };
    let Ok(args) = signal.args() else {
        return Applied::Done;
    };
    for (name, value) in args.changed_properties() {
        let value: &Value<'_> = value;
        state.apply(name, value);
    }
    if args
        .invalidated_properties()
        .iter()
        .any(|name| ServiceState::tracks(name))
    {
        Applied::NeedsRead
    } else {
        Applied::Done
    }
}

async fn next_message(stream: &mut MessageStream) -> Result<Message, SystemdError> {
    match stream.next().await {
        Some(Ok(message)) => Ok(message),
        Some(Err(error)) => Err(error.into()),
        None => Err(SystemdError::Disconnected),
    }
}

/// Turn systemd's D-Bus errors about `unit` into typed errors.
fn method_error(error: zbus::Error, unit: &str) -> SystemdError {
    if let zbus::Error::MethodError(name, message, _) = &error {
        let message = message.clone().unwrap_or_default();
        match name.as_str() {
            "org.freedesktop.systemd1.UnitExists" => {
                return SystemdError::UnitExists(unit.to_owned())
            }
            "org.freedesktop.systemd1.NoSuchUnit" | "org.freedesktop.DBus.Error.UnknownObject" => {
                return SystemdError::NoSuchUnit(unit.to_owned())
            }
            "org.freedesktop.DBus.Error.InvalidArgs"
            | "org.freedesktop.DBus.Error.PropertyReadOnly"
            | "org.freedesktop.systemd1.UnitMasked"
            | "org.freedesktop.systemd1.NoSuchProcess" => {
                return SystemdError::Rejected {
                    unit: unit.to_owned(),
                    message,
                }
            }
            _ => {}
        }
    }
    SystemdError::Dbus(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_paths_are_escaped_like_systemd_does() {
        let cases = [
            ("probe-svc.service", "probe_2dsvc_2eservice"),
            ("rein_w1.timer", "rein_5fw1_2etimer"),
            ("1abc.service", "_31abc_2eservice"),
            ("a1.service", "a1_2eservice"),
            ("", "_"),
        ];
        for (name, escaped) in cases {
            assert_eq!(
                unit_object_path(name),
                format!("{UNIT_PATH_PREFIX}{escaped}"),
                "{name}"
            );
        }
    }

    #[test]
    fn endpoints_come_from_the_environment_in_order() {
        // Only reads the environment of this test process; nothing is changed.
        let endpoints = Endpoint::from_environment();
        assert!(
            matches!(endpoints.last(), Some(Endpoint::PrivateSocket(p)) if p.ends_with("systemd/private"))
        );
        assert!(endpoints
            .iter()
            .any(|e| matches!(e, Endpoint::Bus(a) if a.ends_with("/bus"))));
    }
}
