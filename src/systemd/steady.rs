//! What `worker ls`, `tick` and `state` keep between runs about services that are running:
//! the properties that cannot change during one run (invocation) of a unit — its main pid,
//! restart count, result, start time and cgroup. A listing of a steady fleet then needs no
//! call per unit: the listing says a unit is running, the manager's invocation link in the
//! runtime dir (`systemd/units/invocation:UNIT`, the link journald reads) says it is still
//! the same run, and the memory figure is read from the unit's cgroup as systemd reads it.
//! Anything that does not match — a restart, a missing link, a cgroup file that cannot be
//! read — falls back to asking the manager.
//!
//! The kept runs live in the user's runtime dir (`rein/PROFILE.units.json`), which agents
//! see read-only; a damaged file is ignored.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One run of a running service, as read from the manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteadyRun {
    /// The run's invocation id (32 hex digits).
    pub invocation: String,
    pub result: String,
    pub n_restarts: u32,
    pub main_pid: u32,
    pub active_enter_timestamp_usec: u64,
    /// The unit's cgroup path, as systemd names it (`/app.slice/UNIT`).
    pub control_group: String,
}

/// Kept runs by unit name.
pub type SteadyRuns = HashMap<String, SteadyRun>;

/// The user manager's runtime dir: `XDG_RUNTIME_DIR`, else `/run/user/UID`.
pub fn runtime_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(format!("/run/user/{}", rustix::process::getuid().as_raw()))
        })
}

/// Where every profile's kept runs are: `$XDG_RUNTIME_DIR/rein`, hidden from workers.
pub fn dir() -> PathBuf {
    runtime_dir().join("rein")
}

/// Where a profile's kept runs are.
pub fn file(profile: &str) -> PathBuf {
    dir().join(format!("{profile}.units.json"))
}

/// Makes [`dir`] (private to the user), so that a worker started before any listing finds it
/// there to be hidden.
pub fn ensure_dir() {
    private_dir(&dir());
}

/// Makes the directory of `path` (private to the user).
fn make_dir(path: &Path) {
    if let Some(parent) = path.parent() {
        private_dir(parent);
    }
}

fn private_dir(dir: &Path) {
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
}

/// Forgets a profile's kept runs, with the lock beside them (nothing runs any more).
pub fn forget(profile: &str) {
    let path = file(profile);
    let _ = std::fs::remove_file(path.with_extension("lock"));
    let _ = std::fs::remove_file(path);
}

/// The kept runs; none when the file is missing or damaged.
pub fn load(path: &Path) -> SteadyRuns {
    crate::store::read_json(path)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Keeps `runs` (best effort: a listing does not fail for its cache).
pub fn save(path: &Path, runs: &SteadyRuns) {
    make_dir(path);
    if let Err(error) = crate::store::write_json(path, runs) {
        tracing::debug!(%error, "cannot keep the units' runs");
    }
}

/// Adds the run of `unit` to the kept runs, for a caller that has just read it (a worker's
/// start). Under a lock beside the file, so concurrent starts keep each other's runs (best
/// effort, like [`save`]).
pub fn keep(path: &Path, unit: &str, run: SteadyRun) {
    make_dir(path);
    let _lock = match crate::store::lock(&path.with_extension("lock")) {
        Ok(lock) => lock,
        Err(error) => {
            tracing::debug!(%error, "cannot keep the unit's run");
            return;
        }
    };
    let mut runs = load(path);
    if runs.get(unit) != Some(&run) {
        runs.insert(unit.to_owned(), run);
        save(path, &runs);
    }
}

/// The invocation id of the unit's current run, from the manager's link in the runtime dir.
pub fn current_invocation(unit: &str) -> Option<String> {
    let link = runtime_dir()
        .join("systemd/units")
        .join(format!("invocation:{unit}"));
    let target = std::fs::read_link(link).ok()?;
    let id = target.to_str()?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

/// The memory a cgroup uses, read where systemd reads it for `MemoryCurrent`: `memory.current`
/// on the unified hierarchy, else the memory controller's `memory.usage_in_bytes`.
pub fn cgroup_memory(control_group: &str) -> Option<u64> {
    if !control_group.starts_with('/') || control_group.split('/').any(|part| part == "..") {
        return None;
    }
    let root = Path::new("/sys/fs/cgroup");
    let unified = root.join(control_group.trim_start_matches('/'));
    let legacy = root
        .join("memory")
        .join(control_group.trim_start_matches('/'));
    [
        unified.join("memory.current"),
        legacy.join("memory.usage_in_bytes"),
    ]
    .iter()
    .find_map(|file| std::fs::read_to_string(file).ok()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_or_missing_file_keeps_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.units.json");
        assert!(load(&path).is_empty());
        std::fs::write(&path, "{ not json").expect("write");
        assert!(load(&path).is_empty());
        let mut runs = SteadyRuns::new();
        runs.insert(
            "rein.p.worker-a.service".into(),
            SteadyRun {
                invocation: "0123456789abcdef0123456789abcdef".into(),
                result: "success".into(),
                n_restarts: 2,
                main_pid: 42,
                active_enter_timestamp_usec: 7,
                control_group: "/app.slice/rein.p.worker-a.service".into(),
            },
        );
        save(&path, &runs);
        assert_eq!(load(&path), runs);
    }

    #[test]
    fn keeping_a_run_adds_it_to_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("runtime/rein/p.units.json");
        let run = |pid: u32| SteadyRun {
            invocation: format!("{pid:032x}"),
            result: "success".into(),
            n_restarts: 0,
            main_pid: pid,
            active_enter_timestamp_usec: 1,
            control_group: format!("/app.slice/w{pid}.service"),
        };
        keep(&path, "w1.service", run(1));
        keep(&path, "w2.service", run(2));
        let kept = load(&path);
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept["w1.service"], run(1));
        assert_eq!(kept["w2.service"], run(2));
        // A new run of a unit replaces its old one; a damaged file starts afresh.
        keep(&path, "w1.service", run(3));
        assert_eq!(load(&path)["w1.service"], run(3));
        std::fs::write(&path, "{ damaged").expect("damage");
        keep(&path, "w2.service", run(2));
        assert_eq!(load(&path).len(), 1);
        assert!(path.with_extension("lock").exists());
    }

    #[test]
    fn cgroup_paths_stay_under_the_cgroup_root() {
        assert_eq!(cgroup_memory("/../../etc"), None);
        assert_eq!(cgroup_memory("relative"), None);
    }
}
