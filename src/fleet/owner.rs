//! Which systemd user manager runs a profile: one at a time.
//!
//! Two user managers (a desktop session and a lingering one, or two containers sharing a home)
//! can both reach one data dir. Had each its own pulse, gate and workers, they would beat
//! twice, start every recorded worker twice, and the second gate would take over `run/gate.sock`
//! so the first manager's workers could no longer file anything. So the manager that brings a
//! profile up records itself in `run/manager.json` (its runtime dir); another manager is
//! refused while that one is reachable and still runs a unit of the profile, and may take over
//! once it does not (after `rein down` there, a reboot, or a manager that is gone).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fleet::UnitNames;
use crate::paths::Paths;
use crate::store;
use crate::systemd::{Endpoint, Manager};

pub const FORMAT_VERSION: u32 = 1;

/// How long reaching the recording manager may take before it counts as gone.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// `run/manager.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    pub version: u32,
    /// Where the manager answers, as rein reached it.
    pub endpoint: String,
    /// The manager's runtime dir (its bus and private socket live there), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_dir: Option<PathBuf>,
    pub since: DateTime<Utc>,
}

/// The runtime dir behind an endpoint: `DIR` of `unix:path=DIR/bus` or `DIR/systemd/private`.
fn runtime_dir_of(endpoint: &Endpoint) -> Option<PathBuf> {
    match endpoint {
        Endpoint::Bus(address) => address
            .strip_prefix("unix:path=")
            .map(|path| path.split(',').next().unwrap_or(path))
            .map(Path::new)
            .filter(|path| path.ends_with("bus"))
            .and_then(Path::parent)
            .map(Path::to_path_buf),
        Endpoint::PrivateSocket(path) => {
            path.parent().and_then(Path::parent).map(Path::to_path_buf)
        }
    }
}

fn owner_of(manager: &Manager) -> Owner {
    Owner {
        version: FORMAT_VERSION,
        endpoint: manager.endpoint().to_string(),
        runtime_dir: runtime_dir_of(manager.endpoint()),
        since: Utc::now(),
    }
}

fn same_manager(a: &Owner, b: &Owner) -> bool {
    match (&a.runtime_dir, &b.runtime_dir) {
        (Some(a), Some(b)) => a == b,
        _ => a.endpoint == b.endpoint,
    }
}

/// Records `manager` as the one that runs the profile, or refuses (conflict) while another
/// manager that is reachable still runs any unit of it.
pub async fn claim(manager: &Manager, paths: &Paths) -> anyhow::Result<()> {
    let dir = paths.data();
    let path = dir.manager_record();
    let ours = owner_of(manager);
    let recorded = store::read_json::<Owner>(&path).ok().flatten();
    if let Some(recorded) = recorded {
        if same_manager(&recorded, &ours) {
            return Ok(());
        }
        if let Some(units) = units_under(&recorded, paths).await {
            if !units.is_empty() {
                let at = recorded
                    .runtime_dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|| recorded.endpoint.clone());
                return Err(Error::Conflict(format!(
                    "profile {} already runs under another systemd user manager ({}: {}); run `rein down` there first (XDG_RUNTIME_DIR={at}), or give this manager its own data dir (REIN_DATA_DIR)",
                    paths.profile,
                    recorded.endpoint,
                    units.join(", ")
                ))
                .into());
            }
        }
        tracing::info!(
            "profile {} moves from the user manager at {} (not running it) to {}",
            paths.profile,
            recorded.endpoint,
            ours.endpoint
        );
    }
    dir.create_dirs()?;
    store::write_json(&path, &ours)?;
    Ok(())
}

/// Forgets the record when `manager` is the one it names (after `rein down`).
pub fn release(manager: &Manager, paths: &Paths) -> Result<()> {
    let path = paths.data().manager_record();
    match store::read_json::<Owner>(&path) {
        Ok(Some(recorded)) if same_manager(&recorded, &owner_of(manager)) => {
            store::remove_file(&path)?;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The profile's units loaded under the recorded manager, or `None` when it cannot be reached.
async fn units_under(recorded: &Owner, paths: &Paths) -> Option<Vec<String>> {
    let mut endpoints = Vec::new();
    if let Some(dir) = &recorded.runtime_dir {
        endpoints.push(Endpoint::Bus(format!(
            "unix:path={}",
            dir.join("bus").display()
        )));
        endpoints.push(Endpoint::PrivateSocket(dir.join("systemd/private")));
    } else if let Some(address) = recorded.endpoint.strip_prefix("bus ") {
        endpoints.push(Endpoint::Bus(address.to_owned()));
    }
    let other = tokio::time::timeout(PROBE_TIMEOUT, Manager::connect_to(&endpoints))
        .await
        .ok()?
        .ok()?;
    let names = UnitNames::new(paths);
    let patterns = [
        names.pulse_timer(),
        names.worker_pattern(),
        names.gate_socket(),
    ];
    let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
    let listed = other.list(&patterns).await.ok()?;
    Some(listed.into_iter().map(|unit| unit.name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_dirs_come_from_either_endpoint() {
        assert_eq!(
            runtime_dir_of(&Endpoint::Bus("unix:path=/run/user/1000/bus".into())),
            Some(PathBuf::from("/run/user/1000"))
        );
        assert_eq!(
            runtime_dir_of(&Endpoint::PrivateSocket(
                "/run/user/1000/systemd/private".into()
            )),
            Some(PathBuf::from("/run/user/1000"))
        );
        assert_eq!(
            runtime_dir_of(&Endpoint::Bus("unix:abstract=/tmp/dbus-x".into())),
            None
        );
    }
}
