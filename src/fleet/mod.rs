//! The fleet of one profile inside systemd: the pulse timer, the workers, the gate, bridges
//! as units, the unit names that keep profiles apart, and the one user manager a profile
//! runs under ([`owner`]).
//!
//! Names: the default profile uses `rein-pulse.timer` / `rein-pulse.service` and
//! `rein-worker-ID.service` (a loop: `rein-loop-NAME.timer` / `.service` and its session
//! `rein-worker-NAME.service`); any other profile P uses `rein.P.pulse.timer`,
//! `rein.P.worker-ID.service` and `rein.P.loop-NAME.timer`. Profile names have no dots, so the two schemes never collide
//! and a profile's units match one glob.

pub mod bridges;
pub mod enable;
pub mod gate_unit;
pub mod loop_import;
pub mod loops;
pub mod owner;
pub mod pulse;
pub mod sandbox;
pub mod workers;
pub mod worktree;

use std::future::Future;

use crate::paths::Paths;

/// Runs async systemd work from the synchronous CLI.
pub fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(future))
}

/// The unit names of one profile.
#[derive(Debug, Clone)]
pub struct UnitNames {
    prefix: String,
}

impl UnitNames {
    pub fn new(paths: &Paths) -> UnitNames {
        UnitNames::for_profile(&paths.profile, paths.is_default_profile())
    }

    pub fn for_profile(profile: &str, is_default: bool) -> UnitNames {
        let prefix = if is_default {
            "rein-".to_owned()
        } else {
            format!("rein.{profile}.")
        };
        UnitNames { prefix }
    }

    pub fn pulse_timer(&self) -> String {
        format!("{}pulse.timer", self.prefix)
    }
    pub fn pulse_service(&self) -> String {
        format!("{}pulse.service", self.prefix)
    }
    pub fn worker(&self, id: &str) -> String {
        format!("{}worker-{id}.service", self.prefix)
    }
    /// The glob matching every worker unit of the profile.
    pub fn worker_pattern(&self) -> String {
        format!("{}worker-*.service", self.prefix)
    }
    /// The worker id of a unit name of this profile.
    pub fn worker_id<'a>(&self, unit: &'a str) -> Option<&'a str> {
        unit.strip_prefix(&self.prefix)?
            .strip_prefix("worker-")?
            .strip_suffix(".service")
    }
    /// A loop's timer; its dispatch service has the same stem.
    pub fn loop_timer(&self, name: &str) -> String {
        format!("{}loop-{name}.timer", self.prefix)
    }
    /// The oneshot service that dispatches one fire of a loop.
    pub fn loop_dispatch(&self, name: &str) -> String {
        format!("{}loop-{name}.service", self.prefix)
    }
    /// The glob matching every loop timer and dispatch service of the profile.
    pub fn loop_pattern(&self) -> String {
        format!("{}loop-*", self.prefix)
    }
    /// The Konsole window that shows the loops of a virtual desktop (Konsole bridge).
    pub fn konsole_window(&self, desktop: u32) -> String {
        format!("{}konsole-desktop-{desktop}.service", self.prefix)
    }
    /// The gate's socket unit; its service has the same stem.
    pub fn gate_socket(&self) -> String {
        format!("{}gate.socket", self.prefix)
    }
    pub fn gate_service(&self) -> String {
        format!("{}gate.service", self.prefix)
    }
    /// The unit the `llm` judge's tick command runs in.
    pub fn judge(&self) -> String {
        format!("{}judge.service", self.prefix)
    }
    pub fn bridge(&self, name: &str) -> String {
        format!("{}bridge-{name}.service", self.prefix)
    }
    /// The static unit `rein enable` installs.
    pub fn fleet_unit(&self) -> String {
        format!("{}fleet.service", self.prefix)
    }
}

/// The environment every rein unit of a profile gets, so the rein inside finds the same
/// data dir, config and profile, and the agent finds its tools.
pub fn unit_environment(paths: &Paths) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "REIN_DATA_DIR".to_owned(),
            paths.data_dir.display().to_string(),
        ),
        ("REIN_CONFIG".to_owned(), paths.config.display().to_string()),
        ("REIN_PROFILE".to_owned(), paths.profile.clone()),
    ];
    for key in ["PATH", "HOME", "USER", "LANG"] {
        if let Ok(value) = std::env::var(key) {
            env.push((key.to_owned(), value));
        }
    }
    env
}

/// The rein binary the units run: this very executable.
pub fn rein_bin() -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    Ok(exe.display().to_string())
}

/// The name of the worker units' host program, installed beside `rein`.
pub const HOST_PROGRAM: &str = "rein-host";

/// Where `rein-host` belongs: beside rein's binary `bin`.
pub fn host_path(bin: &str) -> std::path::PathBuf {
    std::path::Path::new(bin).with_file_name(HOST_PROGRAM)
}

/// The start of a worker unit's command line: `rein-host` beside rein's binary `bin`, or,
/// when it is missing (rein copied on its own), rein's own `worker host`, which does the same
/// with the whole CLI loaded and so costs each agent's unit more memory (said once here).
pub fn host_exec(bin: &str) -> Vec<String> {
    let host = host_path(bin);
    if host.is_file() {
        return vec![host.display().to_string()];
    }
    tracing::warn!(
        "{} is missing; workers run in `rein worker host` instead, which takes more memory \
         per agent: install {HOST_PROGRAM} beside rein (cargo install --path . installs both)",
        host.display()
    );
    vec![bin.to_owned(), "worker".to_owned(), "host".to_owned()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_profiles_apart() {
        let default = UnitNames::for_profile("default", true);
        let other = UnitNames::for_profile("work", false);
        assert_eq!(default.pulse_timer(), "rein-pulse.timer");
        assert_eq!(default.worker("w1"), "rein-worker-w1.service");
        assert_eq!(other.pulse_timer(), "rein.work.pulse.timer");
        assert_eq!(other.worker("w1"), "rein.work.worker-w1.service");
        assert_eq!(other.worker_id("rein.work.worker-a.b.service"), Some("a.b"));
        assert_eq!(other.worker_id("rein-worker-a.service"), None);
        assert_eq!(default.worker_id("rein.work.worker-a.service"), None);
    }
}
