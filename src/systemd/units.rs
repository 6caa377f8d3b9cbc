//! Typed descriptions of transient units and their translation into the `(name, variant)`
//! properties that `StartTransientUnit` takes.
//!
//! The property names and D-Bus signatures are the ones systemd 252 accepts for transient
//! units (checked against a real user manager): `ExecStart` is `a(sasb)` (path, argv,
//! ignore-failure), `Environment` is `as` of `KEY=VALUE`, `LogExtraFields` is `aay` of
//! `KEY=VALUE` byte strings, time spans are `t` microseconds under their `…USec`/`…Sec`
//! names, `OnCalendar` is one `s` property per expression.
//!
//! Everything is validated here, before anything reaches systemd, so a bad name or field
//! is refused with a message that names the unit and the field.

use std::path::PathBuf;
use std::time::Duration;

use zbus::zvariant::Value;

use super::SystemdError;

/// The longest unit name systemd accepts.
const UNIT_NAME_MAX: usize = 255;
/// The longest journal field name journald accepts.
const JOURNAL_FIELD_MAX: usize = 64;

/// How systemd decides that a service has started (`Type=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceType {
    /// Started once the binary was executed: a missing binary fails the start job.
    #[default]
    Exec,
    /// Started once the process has exited successfully; for one-shot jobs.
    Oneshot,
    /// Started once the process sends `READY=1` over sd_notify.
    Notify,
    /// Started as soon as the process is forked: a missing binary does not fail the job.
    Simple,
}

impl ServiceType {
    fn as_systemd(self) -> &'static str {
        match self {
            ServiceType::Exec => "exec",
            ServiceType::Oneshot => "oneshot",
            ServiceType::Notify => "notify",
            ServiceType::Simple => "simple",
        }
    }
}

/// When systemd restarts a service whose process exited (`Restart=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    OnFailure,
    Always,
}

impl RestartPolicy {
    fn as_systemd(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

/// Which processes a stop signals (`KillMode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMode {
    /// Every process of the unit's cgroup (systemd's default).
    ControlGroup,
    /// SIGTERM to the main process, SIGKILL to the rest of the cgroup afterwards.
    Mixed,
    /// Only the main process.
    Process,
}

impl KillMode {
    fn as_systemd(self) -> &'static str {
        match self {
            KillMode::ControlGroup => "control-group",
            KillMode::Mixed => "mixed",
            KillMode::Process => "process",
        }
    }
}

/// A transient service. `Default` gives an empty `Type=exec` service; set at least `name`
/// and `exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Unit name, ending in `.service`.
    pub name: String,
    pub description: String,
    /// argv, executed directly (no shell). `exec[0]` is an absolute path or a bare command
    /// name that systemd looks up in its own search path.
    pub exec: Vec<String>,
    pub service_type: ServiceType,
    pub environment: Vec<(String, String)>,
    /// Absolute path.
    pub working_directory: Option<PathBuf>,
    pub restart: Option<RestartPolicy>,
    pub restart_sec: Option<Duration>,
    pub start_limit_burst: Option<u32>,
    pub start_limit_interval: Option<Duration>,
    /// `MemoryMax=` in bytes.
    pub memory_max: Option<u64>,
    /// `CPUQuota=` in percent of one CPU (200 = two CPUs).
    pub cpu_quota_percent: Option<u32>,
    /// `CPUAccounting=yes`, so `CPUUsageNSec` says how much CPU the unit used.
    pub cpu_accounting: bool,
    /// `LogExtraFields=KEY=VALUE`. Note: systemd 252 attaches these only to the output of
    /// *system* services; a user manager records the setting but journald never sees it
    /// (systemd issue #29956). Use `syslog_identifier`, or log natively with fields, to find
    /// a user unit's output.
    pub log_extra_fields: Vec<(String, String)>,
    /// `SyslogIdentifier=`: the `SYSLOG_IDENTIFIER` journal field of everything the unit
    /// prints (works for user units: `journalctl -t IDENTIFIER`).
    pub syslog_identifier: Option<String>,
    /// `CollectMode=inactive-or-failed`: unload the unit even when it failed, so the name can
    /// be reused at once. Read the final state from signals before it goes.
    pub collect_inactive_or_failed: bool,
    /// `WatchdogSec=`.
    pub watchdog: Option<Duration>,
    /// `NotifyAccess=all`: accept sd_notify messages from any process of the unit, not only
    /// the main one.
    pub notify_access_all: bool,
    pub kill_mode: Option<KillMode>,
    /// `TimeoutStartSec=`: how long starting may take; for `Type=oneshot` the bound on the
    /// whole run (systemd disables it for oneshot services by default).
    pub timeout_start: Option<Duration>,
    /// `RemainAfterExit=yes`: the unit stays loaded (active, exited) after its process ends,
    /// so its exit status can be read before it is removed.
    pub remain_after_exit: bool,
    /// `TimeoutStopSec=`: how long a stop waits after SIGTERM before SIGKILL.
    pub timeout_stop: Option<Duration>,
    /// `RestartPreventExitStatus=`: exit codes after which `Restart=` does not restart.
    pub restart_prevent_exit_status: Vec<i32>,
    /// `LoadCredential=ID:SOURCE` pairs: the unit's processes read them from
    /// `$CREDENTIALS_DIRECTORY/ID`; only the source (a path or a credential name) is a
    /// property, never the value.
    pub load_credentials: Vec<(String, String)>,
    /// systemd's own sandboxing, enforced by the kernel.
    pub sandbox: Option<Sandbox>,
    /// `StandardOutputFileDescriptor=` / `StandardErrorFileDescriptor=`: descriptors of the
    /// caller (pipe ends) the service writes to; sent along with the call, so the caller
    /// keeps them open until `StartTransientUnit` returns.
    pub stdout_fd: Option<std::os::fd::RawFd>,
    pub stderr_fd: Option<std::os::fd::RawFd>,
}

/// systemd's sandboxing of a service (systemd.exec(5)): what its processes may see, write
/// and call. Paths that may be missing are passed with systemd's `-` prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// `ProtectSystem=strict`: every path is read-only unless listed in `read_write_paths`.
    /// (A user manager keeps the user's home and runtime dir writable under it: list them
    /// in `read_only_paths`. `ProtectHome=` is not used: in a user manager it hides the
    /// runtime dir, and with it the notify and journal sockets.)
    pub read_only_root: bool,
    pub read_write_paths: Vec<PathBuf>,
    /// Read-only even inside a read-write path (the more specific path wins).
    pub read_only_paths: Vec<PathBuf>,
    pub inaccessible_paths: Vec<PathBuf>,
    /// `TemporaryFileSystem=PATH:ro`: an empty read-only tmpfs hides what is at PATH; paths
    /// in `bind_paths` inside it are mounted back.
    pub empty_paths: Vec<PathBuf>,
    /// `BindPaths=PATH`: the real PATH mounted (writable) at the same place, e.g. back into
    /// an `empty_paths` tmpfs.
    pub bind_paths: Vec<PathBuf>,
    /// `PrivateTmp=yes`: a /tmp and /var/tmp of the unit's own.
    pub private_tmp: bool,
    /// `NoNewPrivileges=yes`.
    pub no_new_privileges: bool,
    /// `SystemCallFilter=~…` (groups such as `@mount`), failing with EPERM.
    pub denied_system_calls: Vec<String>,
    /// `CapabilityBoundingSet=` empty: no capability, even for root.
    pub drop_capabilities: bool,
    /// `ProtectKernelModules=`. (Not `ProtectKernelTunables=` or `ProtectControlGroups=`:
    /// under a user manager of systemd 252 they hide the runtime dir, and with it the
    /// notify socket a `Type=notify` service needs.)
    pub protect_kernel_modules: bool,
}

/// A transient socket unit that activates the service of the same stem with its one
/// listening socket (`Accept=no`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketSpec {
    /// Unit name, ending in `.socket`.
    pub name: String,
    pub description: String,
    /// `ListenStream=`: an absolute path of a Unix stream socket.
    pub listen_stream: PathBuf,
    /// `SocketMode=`.
    pub socket_mode: u32,
}

/// A transient timer that activates the service of the same stem (`X.timer` → `X.service`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerSpec {
    /// Unit name, ending in `.timer`.
    pub name: String,
    pub description: String,
    /// `OnActiveSec=`: relative to the timer's own start; zero fires at once.
    pub on_active_sec: Option<Duration>,
    /// `OnUnitActiveSec=`: relative to the last activation of the service.
    pub on_unit_active_sec: Option<Duration>,
    /// `OnCalendar=` expressions, e.g. `Mon *-*-* 08:00:00 America/Los_Angeles`.
    pub on_calendar: Vec<String>,
    /// `AccuracySec=` (systemd's default is one minute).
    pub accuracy: Option<Duration>,
    /// `Persistent=`: catch up on a calendar elapse missed while the manager was down.
    pub persistent: bool,
}

/// One executable line of `ExecStart=`: `(path, argv, ignore_failure)`, D-Bus `(sasb)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    pub path: String,
    pub argv: Vec<String>,
    pub ignore_failure: bool,
}

/// A property value of one of the D-Bus types transient units use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyValue {
    Bool(bool),
    U32(u32),
    U64(u64),
    Str(String),
    /// `as`
    StrList(Vec<String>),
    /// `a(sasb)`
    Exec(Vec<ExecCommand>),
    /// `aay`
    ByteStrings(Vec<Vec<u8>>),
    /// `i`
    I32(i32),
    /// `(bas)`: a list and whether it allows (true) or denies (false).
    FlaggedList(bool, Vec<String>),
    /// `a(ss)`
    StrPairs(Vec<(String, String)>),
    /// `(aiai)`: exit statuses and signals.
    StatusSet(Vec<i32>, Vec<i32>),
    /// `a(ssbt)`: bind mounts (source, destination, ignore if missing, mount flags).
    Binds(Vec<(String, String, bool, u64)>),
    /// `h`: a file descriptor of this process, duplicated into the message.
    Fd(std::os::fd::RawFd),
}

impl PropertyValue {
    /// The variant to send.
    pub(crate) fn to_value(&self) -> Value<'static> {
        match self {
            PropertyValue::Bool(value) => Value::from(*value),
            PropertyValue::U32(value) => Value::from(*value),
            PropertyValue::U64(value) => Value::from(*value),
            PropertyValue::Str(value) => Value::from(value.clone()),
            PropertyValue::StrList(values) => Value::from(values.clone()),
            PropertyValue::Exec(commands) => Value::from(
                commands
                    .iter()
                    .map(|command| {
                        (
                            command.path.clone(),
                            command.argv.clone(),
                            command.ignore_failure,
                        )
                    })
                    .collect::<Vec<_>>(),
            ),
            PropertyValue::ByteStrings(values) => Value::from(values.clone()),
            PropertyValue::I32(value) => Value::from(*value),
            PropertyValue::FlaggedList(flag, values) => Value::from((*flag, values.clone())),
            PropertyValue::StrPairs(pairs) => Value::from(pairs.clone()),
            PropertyValue::StatusSet(statuses, signals) => {
                Value::from((statuses.clone(), signals.clone()))
            }
            PropertyValue::Binds(binds) => Value::from(binds.clone()),
            PropertyValue::Fd(fd) => {
                // SAFETY: the caller keeps `fd` open while the call is made (see ServiceSpec).
                let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
                match borrowed.try_clone_to_owned() {
                    Ok(owned) => Value::Fd(zbus::zvariant::Fd::Owned(owned)),
                    // systemd then refuses the property, which names the problem.
                    Err(_) => Value::from(-1i32),
                }
            }
        }
    }
}

/// One `(name, value)` property of a transient unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub name: &'static str,
    pub value: PropertyValue,
}

fn property(name: &'static str, value: PropertyValue) -> Property {
    Property { name, value }
}

/// What `StartTransientUnit` is called with: a main unit and its properties, plus auxiliary
/// units created in the same call (a timer's service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransientUnit {
    name: String,
    properties: Vec<Property>,
    aux: Vec<(String, Vec<Property>)>,
}

impl TransientUnit {
    /// A service on its own.
    pub fn service(spec: &ServiceSpec) -> Result<TransientUnit, SystemdError> {
        Ok(TransientUnit {
            name: spec.name.clone(),
            properties: service_properties(spec)?,
            aux: Vec::new(),
        })
    }

    /// A timer as the main unit, with its service passed alongside. A transient timer
    /// cannot set `Unit=`, so the pair must be named `X.timer` / `X.service`.
    pub fn timer(timer: &TimerSpec, service: &ServiceSpec) -> Result<TransientUnit, SystemdError> {
        let timer_stem = unit_stem(&timer.name, ".timer")?;
        let service_stem = unit_stem(&service.name, ".service")?;
        if timer_stem != service_stem {
            return Err(invalid(
                &timer.name,
                format!(
                    "a transient timer activates the service of the same name: name the service {timer_stem}.service, not {}",
                    service.name
                ),
            ));
        }
        Ok(TransientUnit {
            name: timer.name.clone(),
            properties: timer_properties(timer)?,
            aux: vec![(service.name.clone(), service_properties(service)?)],
        })
    }

    /// A socket as the main unit, with the service it activates passed alongside (named
    /// `X.socket` / `X.service`).
    pub fn socket(
        socket: &SocketSpec,
        service: &ServiceSpec,
    ) -> Result<TransientUnit, SystemdError> {
        let socket_stem = unit_stem(&socket.name, ".socket")?;
        let service_stem = unit_stem(&service.name, ".service")?;
        if socket_stem != service_stem {
            return Err(invalid(
                &socket.name,
                format!(
                    "a transient socket activates the service of the same name: name the service {socket_stem}.service, not {}",
                    service.name
                ),
            ));
        }
        let Some(path) = socket
            .listen_stream
            .to_str()
            .filter(|_| socket.listen_stream.is_absolute())
        else {
            return Err(invalid(
                &socket.name,
                format!(
                    "the socket path {} must be an absolute UTF-8 path",
                    socket.listen_stream.display()
                ),
            ));
        };
        let properties = vec![
            property(
                "Description",
                PropertyValue::Str(socket.description.clone()),
            ),
            property(
                "Listen",
                PropertyValue::StrPairs(vec![("Stream".to_owned(), path.to_owned())]),
            ),
            property("Accept", PropertyValue::Bool(false)),
            property("SocketMode", PropertyValue::U32(socket.socket_mode)),
            property("RemoveOnStop", PropertyValue::Bool(true)),
        ];
        Ok(TransientUnit {
            name: socket.name.clone(),
            properties,
            aux: vec![(service.name.clone(), service_properties(service)?)],
        })
    }

    /// The main unit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The main unit's properties.
    pub fn properties(&self) -> &[Property] {
        &self.properties
    }

    /// Units created in the same call, with their properties.
    pub fn aux_units(&self) -> &[(String, Vec<Property>)] {
        &self.aux
    }
}

fn invalid(unit: &str, reason: impl Into<String>) -> SystemdError {
    SystemdError::InvalidUnit {
        unit: unit.to_owned(),
        reason: reason.into(),
    }
}

/// Check a unit name and return it without its suffix.
fn unit_stem<'a>(name: &'a str, suffix: &str) -> Result<&'a str, SystemdError> {
    let Some(stem) = name.strip_suffix(suffix) else {
        return Err(invalid(name, format!("the unit name must end in {suffix}")));
    };
    if stem.is_empty() || name.len() > UNIT_NAME_MAX {
        return Err(invalid(
            name,
            format!("the unit name must have 1 to {UNIT_NAME_MAX} characters before {suffix}"),
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || ":-_.\\".contains(c);
    if let Some(bad) = stem.chars().find(|c| !allowed(*c)) {
        return Err(invalid(
            name,
            format!("{bad:?} is not allowed in a unit name (use letters, digits, ':', '-', '_', '.', '\\')"),
        ));
    }
    Ok(stem)
}

fn usec(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn is_environment_name(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// journald's rule: upper-case letters, digits and `_`, not starting with a digit or `_`
/// (leading `_` is reserved for trusted fields).
fn is_journal_field_name(key: &str) -> bool {
    let mut chars = key.chars();
    key.len() <= JOURNAL_FIELD_MAX
        && matches!(chars.next(), Some(c) if c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn service_properties(spec: &ServiceSpec) -> Result<Vec<Property>, SystemdError> {
    let name = spec.name.as_str();
    unit_stem(name, ".service")?;

    let Some(program) = spec.exec.first() else {
        return Err(invalid(name, "the command line (exec) is empty"));
    };
    if program.is_empty() || (program.contains('/') && !program.starts_with('/')) {
        return Err(invalid(
            name,
            format!("{program:?} must be an absolute path or a bare command name"),
        ));
    }
    if spec.exec.iter().any(|arg| arg.contains('\0')) {
        return Err(invalid(name, "a command-line argument contains a NUL byte"));
    }

    let mut properties = vec![
        property("Description", PropertyValue::Str(spec.description.clone())),
        property(
            "Type",
            PropertyValue::Str(spec.service_type.as_systemd().to_owned()),
        ),
        property(
            "ExecStart",
            PropertyValue::Exec(vec![ExecCommand {
                path: program.clone(),
                argv: spec.exec.clone(),
                ignore_failure: false,
            }]),
        ),
    ];

    if !spec.environment.is_empty() {
        let mut assignments = Vec::with_capacity(spec.environment.len());
        for (key, value) in &spec.environment {
            if !is_environment_name(key) {
                return Err(invalid(
                    name,
                    format!("{key:?} is not a valid environment variable name"),
                ));
            }
            if value.contains('\0') {
                return Err(invalid(
                    name,
                    format!("environment variable {key} contains a NUL byte"),
                ));
            }
            assignments.push(format!("{key}={value}"));
        }
        properties.push(property("Environment", PropertyValue::StrList(assignments)));
    }
    if let Some(directory) = &spec.working_directory {
        let Some(directory_text) = directory.to_str().filter(|_| directory.is_absolute()) else {
            return Err(invalid(
                name,
                format!(
                    "working directory {} must be an absolute UTF-8 path",
                    directory.display()
                ),
            ));
        };
        properties.push(property(
            "WorkingDirectory",
            PropertyValue::Str(directory_text.to_owned()),
        ));
    }
    if let Some(restart) = spec.restart {
        properties.push(property(
            "Restart",
            PropertyValue::Str(restart.as_systemd().to_owned()),
        ));
    }
    if let Some(restart_sec) = spec.restart_sec {
        properties.push(property(
            "RestartUSec",
            PropertyValue::U64(usec(restart_sec)),
        ));
    }
    if let Some(burst) = spec.start_limit_burst {
        properties.push(property("StartLimitBurst", PropertyValue::U32(burst)));
    }
    if let Some(interval) = spec.start_limit_interval {
        properties.push(property(
            "StartLimitIntervalUSec",
            PropertyValue::U64(usec(interval)),
        ));
    }
    if let Some(bytes) = spec.memory_max {
        properties.push(property("MemoryMax", PropertyValue::U64(bytes)));
    }
    if spec.cpu_accounting {
        properties.push(property("CPUAccounting", PropertyValue::Bool(true)));
    }
    if let Some(percent) = spec.cpu_quota_percent {
        if percent == 0 {
            return Err(invalid(
                name,
                "a CPU quota of 0% would never let the service run",
            ));
        }
        // CPUQuota=P% is P/100 seconds of CPU time per second of wall time.
        properties.push(property(
            "CPUQuotaPerSecUSec",
            PropertyValue::U64(u64::from(percent) * 10_000),
        ));
    }
    if !spec.log_extra_fields.is_empty() {
        let mut fields = Vec::with_capacity(spec.log_extra_fields.len());
        for (key, value) in &spec.log_extra_fields {
            if !is_journal_field_name(key) {
                return Err(invalid(
                    name,
                    format!(
                        "{key:?} is not a valid journal field name (upper-case letters, digits and '_', not starting with a digit or '_', at most {JOURNAL_FIELD_MAX} characters)"
                    ),
                ));
            }
            fields.push(format!("{key}={value}").into_bytes());
        }
        properties.push(property(
            "LogExtraFields",
            PropertyValue::ByteStrings(fields),
        ));
    }
    if let Some(identifier) = &spec.syslog_identifier {
        if identifier.is_empty() || identifier.contains(char::is_whitespace) {
            return Err(invalid(
                name,
                format!("syslog identifier {identifier:?} must be one non-empty word"),
            ));
        }
        properties.push(property(
            "SyslogIdentifier",
            PropertyValue::Str(identifier.clone()),
        ));
    }
    if spec.collect_inactive_or_failed {
        properties.push(property(
            "CollectMode",
            PropertyValue::Str("inactive-or-failed".to_owned()),
        ));
    }
    if let Some(watchdog) = spec.watchdog {
        properties.push(property("WatchdogUSec", PropertyValue::U64(usec(watchdog))));
    }
    if spec.notify_access_all {
        properties.push(property(
            "NotifyAccess",
            PropertyValue::Str("all".to_owned()),
        ));
    }
    if let Some(kill_mode) = spec.kill_mode {
        properties.push(property(
            "KillMode",
            PropertyValue::Str(kill_mode.as_systemd().to_owned()),
        ));
    }
    if let Some(timeout) = spec.timeout_start {
        properties.push(property(
            "TimeoutStartUSec",
            PropertyValue::U64(usec(timeout)),
        ));
    }
    if spec.remain_after_exit {
        properties.push(property("RemainAfterExit", PropertyValue::Bool(true)));
    }
    if let Some(timeout) = spec.timeout_stop {
        properties.push(property(
            "TimeoutStopUSec",
            PropertyValue::U64(usec(timeout)),
        ));
    }
    if !spec.restart_prevent_exit_status.is_empty() {
        properties.push(property(
            "RestartPreventExitStatus",
            PropertyValue::StatusSet(spec.restart_prevent_exit_status.clone(), Vec::new()),
        ));
    }
    if !spec.load_credentials.is_empty() {
        for (id, source) in &spec.load_credentials {
            let id_ok = !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !id_ok || source.is_empty() || source.contains(['\0', '\n']) {
                return Err(invalid(
                    name,
                    format!("credential {id:?} from {source:?} is not a valid LoadCredential="),
                ));
            }
        }
        properties.push(property(
            "LoadCredential",
            PropertyValue::StrPairs(spec.load_credentials.clone()),
        ));
    }
    if let Some(sandbox) = &spec.sandbox {
        sandbox_properties(name, sandbox, &mut properties)?;
    }
    for (property_name, fd) in [
        ("StandardOutputFileDescriptor", spec.stdout_fd),
        ("StandardErrorFileDescriptor", spec.stderr_fd),
    ] {
        if let Some(fd) = fd {
            properties.push(property(property_name, PropertyValue::Fd(fd)));
        }
    }
    Ok(properties)
}

fn path_list(unit: &str, paths: &[PathBuf]) -> Result<Vec<String>, SystemdError> {
    paths
        .iter()
        .map(|path| match path.to_str() {
            // `-`: a path that does not exist is ignored instead of failing the unit.
            Some(text) if path.is_absolute() && !text.contains(' ') => Ok(format!("-{text}")),
            _ => Err(invalid(
                unit,
                format!(
                    "sandbox path {} must be an absolute UTF-8 path without spaces",
                    path.display()
                ),
            )),
        })
        .collect()
}

fn sandbox_properties(
    unit: &str,
    sandbox: &Sandbox,
    properties: &mut Vec<Property>,
) -> Result<(), SystemdError> {
    if sandbox.read_only_root {
        properties.push(property(
            "ProtectSystem",
            PropertyValue::Str("strict".to_owned()),
        ));
    }
    for (name, paths) in [
        ("ReadWritePaths", &sandbox.read_write_paths),
        ("ReadOnlyPaths", &sandbox.read_only_paths),
        ("InaccessiblePaths", &sandbox.inaccessible_paths),
    ] {
        if !paths.is_empty() {
            properties.push(property(
                name,
                PropertyValue::StrList(path_list(unit, paths)?),
            ));
        }
    }
    if !sandbox.empty_paths.is_empty() {
        let paths = path_list(unit, &sandbox.empty_paths)?;
        properties.push(property(
            "TemporaryFileSystem",
            PropertyValue::StrPairs(
                paths
                    .into_iter()
                    .map(|path| (path.trim_start_matches('-').to_owned(), "ro".to_owned()))
                    .collect(),
            ),
        ));
    }
    if !sandbox.bind_paths.is_empty() {
        let paths = path_list(unit, &sandbox.bind_paths)?;
        properties.push(property(
            "BindPaths",
            PropertyValue::Binds(
                paths
                    .into_iter()
                    .map(|path| {
                        let path = path.trim_start_matches('-').to_owned();
                        (path.clone(), path, false, libc::MS_REC)
                    })
                    .collect(),
            ),
        ));
    }
    for (name, on) in [
        ("PrivateTmp", sandbox.private_tmp),
        ("NoNewPrivileges", sandbox.no_new_privileges),
        ("ProtectKernelModules", sandbox.protect_kernel_modules),
    ] {
        if on {
            properties.push(property(name, PropertyValue::Bool(true)));
        }
    }
    if !sandbox.denied_system_calls.is_empty() {
        properties.push(property(
            "SystemCallFilter",
            PropertyValue::FlaggedList(false, sandbox.denied_system_calls.clone()),
        ));
        properties.push(property(
            "SystemCallErrorNumber",
            PropertyValue::I32(libc::EPERM),
        ));
    }
    if sandbox.drop_capabilities {
        properties.push(property("CapabilityBoundingSet", PropertyValue::U64(0)));
    }
    Ok(())
}

fn timer_properties(spec: &TimerSpec) -> Result<Vec<Property>, SystemdError> {
    let name = spec.name.as_str();
    unit_stem(name, ".timer")?;
    if spec.on_active_sec.is_none()
        && spec.on_unit_active_sec.is_none()
        && spec.on_calendar.is_empty()
    {
        return Err(invalid(
            name,
            "a timer needs at least one of on_active_sec, on_unit_active_sec, on_calendar",
        ));
    }

    let mut properties = vec![property(
        "Description",
        PropertyValue::Str(spec.description.clone()),
    )];
    if let Some(after) = spec.on_active_sec {
        properties.push(property("OnActiveSec", PropertyValue::U64(usec(after))));
    }
    if let Some(every) = spec.on_unit_active_sec {
        properties.push(property("OnUnitActiveSec", PropertyValue::U64(usec(every))));
    }
    for expression in &spec.on_calendar {
        if expression.trim().is_empty() {
            return Err(invalid(name, "an OnCalendar expression is empty"));
        }
        properties.push(property(
            "OnCalendar",
            PropertyValue::Str(expression.clone()),
        ));
    }
    if let Some(accuracy) = spec.accuracy {
        properties.push(property("AccuracyUSec", PropertyValue::U64(usec(accuracy))));
    }
    if spec.persistent {
        properties.push(property("Persistent", PropertyValue::Bool(true)));
    }
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper() -> ServiceSpec {
        ServiceSpec {
            name: "rein-worker-w1.service".to_owned(),
            exec: vec!["/bin/sleep".to_owned(), "300".to_owned()],
            ..ServiceSpec::default()
        }
    }

    fn find<'a>(properties: &'a [Property], name: &str) -> Option<&'a PropertyValue> {
        properties.iter().find(|p| p.name == name).map(|p| &p.value)
    }

    #[test]
    fn service_properties_carry_every_setting() {
        let spec = ServiceSpec {
            description: "worker w1".to_owned(),
            environment: vec![("REIN_WORKER".to_owned(), "w1".to_owned())],
            working_directory: Some(PathBuf::from("/tmp")),
            restart: Some(RestartPolicy::OnFailure),
            restart_sec: Some(Duration::from_millis(1500)),
            start_limit_burst: Some(3),
            start_limit_interval: Some(Duration::from_secs(60)),
            memory_max: Some(1 << 30),
            cpu_quota_percent: Some(150),
            log_extra_fields: vec![("REIN_WORKER".to_owned(), "w1".to_owned())],
            syslog_identifier: Some("rein-w1".to_owned()),
            collect_inactive_or_failed: true,
            watchdog: Some(Duration::from_secs(30)),
            notify_access_all: true,
            kill_mode: Some(KillMode::Mixed),
            timeout_start: Some(Duration::from_secs(90)),
            service_type: ServiceType::Notify,
            ..sleeper()
        };
        let unit = TransientUnit::service(&spec).expect("valid spec");
        let properties = unit.properties();
        let expected = [
            ("Description", PropertyValue::Str("worker w1".to_owned())),
            ("Type", PropertyValue::Str("notify".to_owned())),
            (
                "ExecStart",
                PropertyValue::Exec(vec![ExecCommand {
                    path: "/bin/sleep".to_owned(),
                    argv: vec!["/bin/sleep".to_owned(), "300".to_owned()],
                    ignore_failure: false,
                }]),
            ),
            (
                "Environment",
                PropertyValue::StrList(vec!["REIN_WORKER=w1".to_owned()]),
            ),
            ("WorkingDirectory", PropertyValue::Str("/tmp".to_owned())),
            ("Restart", PropertyValue::Str("on-failure".to_owned())),
            ("RestartUSec", PropertyValue::U64(1_500_000)),
            ("StartLimitBurst", PropertyValue::U32(3)),
            ("StartLimitIntervalUSec", PropertyValue::U64(60_000_000)),
            ("MemoryMax", PropertyValue::U64(1 << 30)),
            ("CPUQuotaPerSecUSec", PropertyValue::U64(1_500_000)),
            (
                "LogExtraFields",
                PropertyValue::ByteStrings(vec![b"REIN_WORKER=w1".to_vec()]),
            ),
            ("SyslogIdentifier", PropertyValue::Str("rein-w1".to_owned())),
            (
                "CollectMode",
                PropertyValue::Str("inactive-or-failed".to_owned()),
            ),
            ("WatchdogUSec", PropertyValue::U64(30_000_000)),
            ("NotifyAccess", PropertyValue::Str("all".to_owned())),
            ("KillMode", PropertyValue::Str("mixed".to_owned())),
            ("TimeoutStartUSec", PropertyValue::U64(90_000_000)),
        ];
        for (name, value) in expected {
            assert_eq!(find(properties, name), Some(&value), "property {name}");
        }
        assert_eq!(properties.len(), 18);
        assert_eq!(unit.name(), "rein-worker-w1.service");
        assert!(unit.aux_units().is_empty());
    }

    #[test]
    fn minimal_service_sets_only_what_was_asked() {
        let unit = TransientUnit::service(&sleeper()).expect("valid spec");
        let names: Vec<&str> = unit.properties().iter().map(|p| p.name).collect();
        assert_eq!(names, ["Description", "Type", "ExecStart"]);
        assert_eq!(
            find(unit.properties(), "Type"),
            Some(&PropertyValue::Str("exec".to_owned()))
        );
    }

    #[test]
    fn timer_pairs_with_the_service_of_the_same_stem() {
        let timer = TimerSpec {
            name: "rein-pulse.timer".to_owned(),
            on_active_sec: Some(Duration::ZERO),
            on_unit_active_sec: Some(Duration::from_secs(600)),
            on_calendar: vec!["Mon *-*-* 08:00:00 America/Los_Angeles".to_owned()],
            accuracy: Some(Duration::from_secs(1)),
            persistent: true,
            ..TimerSpec::default()
        };
        let service = ServiceSpec {
            name: "rein-pulse.service".to_owned(),
            service_type: ServiceType::Oneshot,
            ..sleeper()
        };
        let unit = TransientUnit::timer(&timer, &service).expect("valid pair");
        assert_eq!(unit.name(), "rein-pulse.timer");
        let properties = unit.properties();
        assert_eq!(
            find(properties, "OnActiveSec"),
            Some(&PropertyValue::U64(0))
        );
        assert_eq!(
            find(properties, "OnUnitActiveSec"),
            Some(&PropertyValue::U64(600_000_000))
        );
        assert_eq!(
            find(properties, "AccuracyUSec"),
            Some(&PropertyValue::U64(1_000_000))
        );
        assert_eq!(
            find(properties, "Persistent"),
            Some(&PropertyValue::Bool(true))
        );
        assert_eq!(
            find(properties, "OnCalendar"),
            Some(&PropertyValue::Str(
                "Mon *-*-* 08:00:00 America/Los_Angeles".to_owned()
            ))
        );
        let [(aux_name, aux_properties)] = unit.aux_units() else {
            panic!("expected exactly one aux unit: {:?}", unit.aux_units());
        };
        assert_eq!(aux_name, "rein-pulse.service");
        assert_eq!(
            find(aux_properties, "Type"),
            Some(&PropertyValue::Str("oneshot".to_owned()))
        );
    }

    #[test]
    fn invalid_specs_are_refused_with_the_reason() {
        let service = sleeper();
        let cases: Vec<(&str, ServiceSpec, &str)> = vec![
            (
                "wrong suffix",
                ServiceSpec {
                    name: "w1.timer".into(),
                    ..service.clone()
                },
                "must end in .service",
            ),
            (
                "empty stem",
                ServiceSpec {
                    name: ".service".into(),
                    ..service.clone()
                },
                "1 to 255",
            ),
            (
                "slash in name",
                ServiceSpec {
                    name: "a/b.service".into(),
                    ..service.clone()
                },
                "not allowed",
            ),
            (
                "empty exec",
                ServiceSpec {
                    exec: vec![],
                    ..service.clone()
                },
                "empty",
            ),
            (
                "relative path",
                ServiceSpec {
                    exec: vec!["bin/x".into()],
                    ..service.clone()
                },
                "absolute path",
            ),
            (
                "bad env name",
                ServiceSpec {
                    environment: vec![("1X".into(), "v".into())],
                    ..service.clone()
                },
                "environment variable name",
            ),
            (
                "lower-case journal field",
                ServiceSpec {
                    log_extra_fields: vec![("rein".into(), "v".into())],
                    ..service.clone()
                },
                "journal field name",
            ),
            (
                "trusted journal field",
                ServiceSpec {
                    log_extra_fields: vec![("_PID".into(), "1".into())],
                    ..service.clone()
                },
                "journal field name",
            ),
            (
                "zero cpu",
                ServiceSpec {
                    cpu_quota_percent: Some(0),
                    ..service.clone()
                },
                "0%",
            ),
            (
                "relative working dir",
                ServiceSpec {
                    working_directory: Some("rel".into()),
                    ..service.clone()
                },
                "absolute",
            ),
        ];
        for (label, spec, needle) in cases {
            let error = TransientUnit::service(&spec).expect_err(label);
            let message = error.to_string();
            assert!(message.contains(needle), "{label}: {message}");
            assert!(matches!(error, SystemdError::InvalidUnit { .. }), "{label}");
        }
    }

    #[test]
    fn timer_without_trigger_or_with_mismatched_service_is_refused() {
        let service = ServiceSpec {
            name: "a.service".into(),
            ..sleeper()
        };
        let no_trigger = TimerSpec {
            name: "a.timer".into(),
            ..TimerSpec::default()
        };
        let message = TransientUnit::timer(&no_trigger, &service)
            .expect_err("no trigger")
            .to_string();
        assert!(message.contains("at least one"), "{message}");

        let other = TimerSpec {
            name: "b.timer".into(),
            on_active_sec: Some(Duration::ZERO),
            ..TimerSpec::default()
        };
        let message = TransientUnit::timer(&other, &service)
            .expect_err("mismatch")
            .to_string();
        assert!(message.contains("b.service"), "{message}");
    }

    #[test]
    fn values_have_the_dbus_signatures_systemd_expects() {
        use zbus::zvariant::DynamicType;
        let cases = [
            (PropertyValue::Bool(true), "b"),
            (PropertyValue::U32(1), "u"),
            (PropertyValue::U64(1), "t"),
            (PropertyValue::Str("x".into()), "s"),
            (PropertyValue::StrList(vec!["A=B".into()]), "as"),
            (
                PropertyValue::Exec(vec![ExecCommand {
                    path: "/bin/true".into(),
                    argv: vec!["/bin/true".into()],
                    ignore_failure: false,
                }]),
                "a(sasb)",
            ),
            (PropertyValue::ByteStrings(vec![b"A=B".to_vec()]), "aay"),
        ];
        for (value, signature) in cases {
            let variant = value.to_value();
            assert_eq!(
                variant.value_signature().to_string(),
                signature,
                "{value:?}"
            );
            // The variant itself always travels as `v`.
            assert_eq!(variant.signature().to_string(), "v");
        }
    }
}
