//! Hand-written zbus proxy for `org.freedesktop.systemd1.Manager`: only the methods and
//! signals rein uses.
//!
//! Unit, service and timer properties are not read through per-interface proxies: one
//! `org.freedesktop.DBus.Properties.GetAll("")` call returns the properties of every
//! interface of a unit object (an sd-bus extension that systemd has always had), so a health
//! check is one round trip per unit. See `Manager::service_state`.

use zbus::proxy;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, Value};

/// The bus name of the systemd manager.
pub(crate) const SYSTEMD_SERVICE: &str = "org.freedesktop.systemd1";
/// The object path of the manager itself.
pub(crate) const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
/// The interface of the manager object.
pub(crate) const MANAGER_INTERFACE: &str = "org.freedesktop.systemd1.Manager";

/// One row of `ListUnitsByPatterns`, signature `(ssssssouso)`: name, description, load
/// state, active state, sub state, followed unit, object path, job id, job type, job path.
pub(crate) type UnitRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

/// `(property name, value)` as `StartTransientUnit` takes it: `a(sv)`.
pub(crate) type PropertyArg<'a> = (&'a str, Value<'a>);

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub(crate) trait Manager {
    /// Ask the manager to send its signals to this client (it sends them to the bus only
    /// while at least one client is subscribed).
    fn subscribe(&self) -> zbus::Result<()>;

    /// `StartTransientUnit(s name, s mode, a(sv) properties, a(sa(sv)) aux) -> o job`.
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[PropertyArg<'_>],
        aux: &[(&str, Vec<PropertyArg<'_>>)],
    ) -> zbus::Result<OwnedObjectPath>;

    /// `StopUnit(s name, s mode) -> o job`.
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// `RestartUnit(s name, s mode) -> o job`.
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// `KillUnit(s name, s whom, i signal)`; `whom` is "main", "control" or "all".
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;

    /// `ResetFailedUnit(s name)`.
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;

    /// `Reload()`: re-read unit files.
    fn reload(&self) -> zbus::Result<()>;

    /// `EnableUnitFiles(as files, b runtime, b force) -> (b carries_install_info, a(sss) changes)`.
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<(String, String, String)>)>;

    /// `DisableUnitFiles(as files, b runtime) -> a(sss) changes`.
    fn disable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;

    /// `GetUnitByPID(u pid) -> o`: the unit whose cgroup holds the process.
    #[zbus(name = "GetUnitByPID")]
    fn get_unit_by_pid(&self, pid: u32) -> zbus::Result<OwnedObjectPath>;

    /// `GetUnit(s name) -> o`; fails with `NoSuchUnit` when the unit is not loaded.
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    /// `ListUnitsByPatterns(as states, as patterns) -> a(ssssssouso)`.
    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<UnitRow>>;

    /// A job finished; `result` is "done", "canceled", "timeout", "failed", "dependency"
    /// or "skipped".
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;

    /// A unit was unloaded (garbage-collected).
    #[zbus(signal)]
    fn unit_removed(&self, id: &str, unit: ObjectPath<'_>) -> zbus::Result<()>;
}
