//! How an agent rein starts is fenced in: systemd's own sandboxing on its unit, so the human
//! gate is enforced by the kernel and not by the agent's good manners.
//!
//! A worker (and the judge's tick) sees the whole file system read-only (`ProtectSystem=strict`,
//! plus the home and runtime dirs) except what it must write: its working directory (a
//! `--dir`, or its git worktree and that repository's object store), and its own `agents/ID/`
//! (HOME, default workspace, PTY socket) — the only one of `agents/` it sees at all, so no
//! agent can type into or attach to another. The data dir itself stays read-only, so answers,
//! withdrawals, goals, the playbook and sensors cannot be written; asks, claims, notes and
//! reports go through the gate ([`crate::gate`]), which names the caller from its unit. The
//! user's bus and the manager's private socket are inaccessible (no `systemd-run` around the
//! fence), every secret file rein knows of is inaccessible, ptrace and mount are denied, and
//! a root worker has no capabilities.

use std::path::{Path, PathBuf};

use crate::config::{Config, SecretSource};
use crate::paths::Paths;
use crate::systemd::units::Sandbox;

/// System call groups a worker never needs: debugging other processes (ptrace,
/// process_vm_writev), mounting, kernel modules, raw I/O, reboot, swap, obsolete calls.
const DENIED_SYSTEM_CALLS: &[&str] = &[
    "@debug",
    "@mount",
    "@module",
    "@raw-io",
    "@reboot",
    "@swap",
    "@cpu-emulation",
    "@obsolete",
];

/// What one agent unit needs beyond reading: the paths it writes and the paths inside those
/// that must stay read-only.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// Its own directory among its peers' (`agents/ID`): every other worker's directory (its
    /// HOME, its PTY socket) is hidden, so no agent can type into or attach to another.
    pub own: Option<PathBuf>,
    pub writable: Vec<PathBuf>,
    pub read_only: Vec<PathBuf>,
    /// Paths the unit must see at all (its program, its directories): none may hide under
    /// a private /tmp.
    pub visible: Vec<PathBuf>,
}

fn under_temp(path: &Path) -> bool {
    path.starts_with("/tmp") || path.starts_with("/var/tmp")
}

/// The secret files rein knows of: the runner's and every worker's secrets, and the bridges'
/// `secret_file`s. A worker sees none of them (its own secrets reach it as credentials).
pub fn secret_files(config: &Config) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut add = |source: &SecretSource| {
        if let SecretSource::File(path) = source {
            files.push(path.clone());
        }
    };
    config.runner.secrets.values().for_each(&mut add);
    for worker in config.workers.overrides.values() {
        worker.secrets.values().for_each(&mut add);
    }
    for table in config.bridges.values() {
        if let Some(toml::Value::String(path)) = table.get("secret_file") {
            files.push(crate::bridge::config::expand_home(path));
        }
    }
    files.sort();
    files.dedup();
    files
}

/// The sockets through which a process of the user could reach the user manager.
fn manager_sockets() -> Vec<PathBuf> {
    let mut sockets = Vec::new();
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        let runtime = PathBuf::from(runtime);
        sockets.push(runtime.join("bus"));
        sockets.push(runtime.join("systemd/private"));
    }
    if let Ok(address) = std::env::var("DBUS_SESSION_BUS_ADDRESS") {
        for part in address.split(';') {
            if let Some(path) = part
                .strip_prefix("unix:path=")
                .map(|p| p.split(',').next().unwrap_or(p))
            {
                sockets.push(PathBuf::from(path));
            }
        }
    }
    sockets.sort();
    sockets.dedup();
    sockets
}

/// The sandbox of an agent unit of this profile.
pub fn agent_sandbox(paths: &Paths, config: &Config, needs: &Needs) -> Sandbox {
    let mut writable = needs.writable.clone();
    let mut read_only = vec![paths.data_dir.clone(), paths.config.clone()];
    // A user manager leaves the home and runtime dirs writable under ProtectSystem=strict;
    // an agent writing there could plant a unit file or a login script that runs unfenced.
    if let Some(home) = directories::BaseDirs::new().map(|b| b.home_dir().to_owned()) {
        read_only.push(home);
    }
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        read_only.push(PathBuf::from(runtime));
    }
    read_only.extend(needs.read_only.iter().cloned());
    // A private /tmp hides whatever lives under the real one, so when the unit must see
    // something there (a data dir in /tmp, say), /tmp stays shared and writable instead; the
    // read-only paths above still win inside it.
    let host_tmp = needs
        .visible
        .iter()
        .chain(&needs.writable)
        .chain(&needs.own)
        .chain(std::iter::once(&paths.data_dir))
        .any(|p| under_temp(p));
    if host_tmp {
        writable.push(PathBuf::from("/tmp"));
        writable.push(PathBuf::from("/var/tmp"));
    }
    let (empty_paths, bind_paths) = match &needs.own {
        Some(own) => (
            own.parent().map(Path::to_path_buf).into_iter().collect(),
            vec![own.clone()],
        ),
        None => (Vec::new(), Vec::new()),
    };
    let mut inaccessible = manager_sockets();
    inaccessible.extend(secret_files(config));
    // flock(2) needs only a file open for reading: an agent that could open a lock rein waits
    // on could hold it and stall every filing, claim, start or bridge. Both exist before any
    // worker starts (a missing path would not be hidden).
    inaccessible.push(paths.data().locks());
    inaccessible.push(crate::systemd::steady::dir());
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    Sandbox {
        read_only_root: true,
        read_write_paths: writable,
        read_only_paths: read_only,
        inaccessible_paths: inaccessible,
        empty_paths,
        bind_paths,
        private_tmp: !host_tmp,
        no_new_privileges: true,
        denied_system_calls: DENIED_SYSTEM_CALLS.iter().map(|s| s.to_string()).collect(),
        // An unprivileged manager cannot change the bounding set (and has no capability to
        // drop); as root it must, or the agent could remount what is read-only.
        drop_capabilities: root,
        protect_kernel_modules: true,
    }
}

/// Whether a unit name is one of the agent units rein starts (a worker of any profile, or
/// the judge's tick).
pub fn is_agent_unit(unit: &str) -> bool {
    let Some(stem) = unit.strip_suffix(".service") else {
        return false;
    };
    if stem.starts_with("rein-worker-") || stem == "rein-judge" {
        return true;
    }
    // rein.PROFILE.worker-ID / rein.PROFILE.judge (profiles have no dots).
    stem.strip_prefix("rein.")
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(_, rest)| rest.starts_with("worker-") || rest == "judge")
}

/// The agent unit this process runs in, if any, from its own cgroup (which an agent cannot
/// change from inside its sandbox).
pub fn current_agent_unit() -> Option<String> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroups.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.split('/')
            .find(|part| is_agent_unit(part))
            .map(str::to_owned)
    })
}

/// What a look at a running agent's mount table found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enforcement {
    /// The data dir is mounted read-only in the agent's namespace.
    Enforced,
    /// The data dir is writable for the agent: the gate is not enforced.
    NotEnforced(String),
    /// The mount table could not be read.
    Unknown(String),
    /// The process is gone (it exited at once): nothing of it runs to check.
    Gone,
}

/// Checks, from its mount table, that the process `pid` sees `data_dir` read-only.
pub fn check(pid: u32, data_dir: &Path) -> Enforcement {
    let table = match std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) {
        Ok(table) => table,
        // An exited process (a zombie has no mount table) leaves nothing to check.
        Err(_) if !alive(pid) => return Enforcement::Gone,
        Err(error) => {
            return Enforcement::Unknown(format!("reading /proc/{pid}/mountinfo: {error}"))
        }
    };
    match mount_is_read_only(&table, data_dir) {
        Some(true) => Enforcement::Enforced,
        Some(false) => Enforcement::NotEnforced(format!(
            "{} is writable inside the unit",
            data_dir.display()
        )),
        None => Enforcement::Unknown(format!("no mount covers {}", data_dir.display())),
    }
}

/// Whether `pid` is a live process (not gone, not a zombie, not on its way out).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| alive_by_stat(&stat))
}

/// [`alive`] from a `/proc/PID/stat` line. A process that is exiting has `PF_EXITING` in its
/// flags before it becomes a zombie, and its mount table is already gone then (reading it
/// fails with EINVAL): that is an exit, not a sandbox that cannot be checked.
fn alive_by_stat(stat: &str) -> bool {
    const PF_EXITING: u64 = 0x4;
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().and_then(|s| s.chars().next());
    let flags = fields.get(6).and_then(|f| f.parse::<u64>().ok());
    matches!(state, Some(s) if s != 'Z' && s != 'X')
        && flags.is_some_and(|flags| flags & PF_EXITING == 0)
}

/// Whether the mount that covers `path` (the longest mount point that contains it, the last
/// one mounted when several share it) is read-only, from a `mountinfo` table.
pub fn mount_is_read_only(table: &str, path: &Path) -> Option<bool> {
    let mut best: Option<(usize, bool)> = None;
    for line in table.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(point), Some(options)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        let point = point.replace("\\040", " ");
        if !path.starts_with(&point) {
            continue;
        }
        let depth = Path::new(&point).components().count();
        let read_only = options.split(',').any(|o| o == "ro");
        if best.is_none_or(|(best_depth, _)| depth >= best_depth) {
            best = Some((depth, read_only));
        }
    }
    best.map(|(_, read_only)| read_only)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exiting_process_counts_as_gone() {
        // Found by CI: a worker whose command exits at once was caught after its mount table
        // went away but before it became a zombie, and its start was refused.
        let running = "7806 (sh) S 1 7806 7806 0 -1 4194560 120 0 0 0";
        let exiting = "7806 (sh) R 1 7806 7806 0 -1 4194564 120 0 0 0";
        let zombie = "7806 (sh) Z 1 7806 7806 0 -1 4194820 120 0 0 0";
        assert!(alive_by_stat(running));
        assert!(!alive_by_stat(exiting), "PF_EXITING set");
        assert!(!alive_by_stat(zombie));
        assert!(!alive_by_stat("garbage"));
        assert!(alive_by_stat(
            &std::fs::read_to_string("/proc/self/stat").expect("stat")
        ));
    }

    #[test]
    fn agent_units_are_recognised_in_every_profile() {
        for unit in [
            "rein-worker-w1.service",
            "rein.work.worker-a.b.service",
            "rein-judge.service",
            "rein.t1.judge.service",
        ] {
            assert!(is_agent_unit(unit), "{unit}");
        }
        for unit in [
            "rein-pulse.service",
            "rein.work.pulse.service",
            "rein-gate.service",
            "rein-worker-w1.scope",
            "worker-w1.service",
            "rein.work.gate.service",
        ] {
            assert!(!is_agent_unit(unit), "{unit}");
        }
    }

    #[test]
    fn the_covering_mount_decides() {
        let table = "\
63 43 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 63 254:0 /srv/data /srv/data ro,relatime shared:1 - ext4 /dev/vda rw
91 90 254:0 /srv/data/agents/w1 /srv/data/agents/w1 rw,relatime shared:1 - ext4 /dev/vda rw
92 63 254:0 /srv/my\\040dir /srv/my\\040dir ro,relatime - ext4 /dev/vda rw
";
        assert_eq!(
            mount_is_read_only(table, Path::new("/srv/data")),
            Some(true)
        );
        assert_eq!(
            mount_is_read_only(table, Path::new("/srv/data/answers/x.json")),
            Some(true)
        );
        assert_eq!(
            mount_is_read_only(table, Path::new("/srv/data/agents/w1/home")),
            Some(false)
        );
        assert_eq!(
            mount_is_read_only(table, Path::new("/srv/database")),
            Some(false)
        );
        assert_eq!(
            mount_is_read_only(table, Path::new("/srv/my dir/x")),
            Some(true)
        );
        assert_eq!(mount_is_read_only("", Path::new("/x")), None);
    }
}
