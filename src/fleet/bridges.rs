//! Bridges as units: `rein bridge start|stop|ls|test NAME`.
//!
//! A bridge runs as `rein-bridge-NAME.service` (profile-aware like every rein unit), Type=notify
//! with a watchdog, restarted on failure. Its binary is `rein-bridge-NAME` beside this rein
//! binary, else on PATH.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::bridge::ledger::{Ledger, Stage};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fleet::{unit_environment, UnitNames};
use crate::paths::Paths;
use crate::systemd::{
    health, Health, Manager, RestartPolicy, ServiceSpec, ServiceType, TransientUnit,
};

/// The bridges rein knows how to run.
pub const KNOWN: &[&str] = &["slack", "sms", "email", "konsole"];

pub fn unit_name(paths: &Paths, name: &str) -> String {
    UnitNames::new(paths).bridge(name)
}

/// Finds `rein-bridge-NAME`: beside this binary, else on PATH.
pub fn binary(name: &str) -> Result<PathBuf> {
    let file = format!("rein-bridge-{name}");
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(&file)))
        .filter(|path| path.exists());
    if let Some(path) = beside {
        return Ok(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(&file))
                .find(|p| p.exists())
        })
        .unwrap_or(None);
    on_path.ok_or_else(|| {
        Error::NotFound(format!(
            "cannot find {file} beside rein or on PATH; build it with `cargo build --release -p {file}`"
        ))
    })
}

/// Checks the name and the bridge's config section before anything starts.
pub fn check(config: &Config, name: &str) -> Result<()> {
    if !KNOWN.contains(&name) {
        return Err(Error::invalid(format!(
            "unknown bridge {name:?}; rein has: {}",
            KNOWN.join(", ")
        )));
    }
    crate::bridge::config::load(config, name).map(|_| ())
}

pub async fn start(
    manager: &Manager,
    paths: &Paths,
    config: &Config,
    name: &str,
) -> anyhow::Result<String> {
    check(config, name)?;
    let bin = binary(name)?;
    let unit = unit_name(paths, name);
    if let Some(state) = manager.service_state(&unit).await? {
        if matches!(
            health(&state),
            Health::Running | Health::Starting | Health::Restarting
        ) {
            return Err(Error::Conflict(format!(
                "bridge {name} is already running ({unit}); `rein bridge stop {name}` first"
            ))
            .into());
        }
    }
    manager
        .remove(&unit, crate::systemd::DEFAULT_STOP_GRACE)
        .await?;
    // systemd enters the working directory before the bridge runs: it must exist.
    paths.data().create_dirs()?;
    let mut environment = unit_environment(paths);
    if let Ok(bin) = crate::fleet::rein_bin() {
        environment.push(("REIN_BIN".to_owned(), bin));
    }
    let spec = ServiceSpec {
        name: unit.clone(),
        description: format!("rein {name} bridge of profile {}", paths.profile),
        exec: vec![bin.display().to_string()],
        service_type: ServiceType::Notify,
        environment,
        working_directory: Some(paths.data_dir.clone()),
        restart: Some(RestartPolicy::OnFailure),
        restart_sec: Some(Duration::from_secs(2)),
        watchdog: Some(Duration::from_secs(60)),
        syslog_identifier: Some(format!("rein-bridge-{name}")),
        ..ServiceSpec::default()
    };
    manager
        .start_transient(&TransientUnit::service(&spec)?)
        .await?;
    crate::journal::record_or_warn(
        &paths.data(),
        "bridge",
        &format!("started the {name} bridge ({unit})"),
    );
    Ok(unit)
}

pub async fn stop(manager: &Manager, paths: &Paths, name: &str) -> anyhow::Result<bool> {
    if !KNOWN.contains(&name) {
        return Err(Error::invalid(format!(
            "unknown bridge {name:?}; rein has: {}",
            KNOWN.join(", ")
        ))
        .into());
    }
    let unit = unit_name(paths, name);
    let loaded = !manager.list(&[&unit]).await?.is_empty();
    manager
        .remove(&unit, crate::systemd::DEFAULT_STOP_GRACE)
        .await?;
    if loaded {
        crate::journal::record_or_warn(
            &paths.data(),
            "bridge",
            &format!("stopped the {name} bridge"),
        );
    }
    Ok(loaded)
}

#[derive(Debug, Clone, Serialize)]
pub struct BridgeView {
    pub name: String,
    pub unit: String,
    pub configured: bool,
    pub health: String,
    /// The bridge's own word on how it stands (its STATUS=).
    pub status: String,
    pub sent: usize,
    pub pending: usize,
    pub failed: usize,
}

pub async fn list(
    manager: &Manager,
    paths: &Paths,
    config: &Config,
) -> anyhow::Result<Vec<BridgeView>> {
    let mut views = Vec::new();
    for name in KNOWN {
        let unit = unit_name(paths, name);
        let configured = config.bridges.contains_key(*name);
        let state = manager.service_state(&unit).await?;
        let health = match &state {
            None => "stopped".to_owned(),
            // Running, but its channel lost its connection (see the engine's STATUS).
            Some(state)
                if health(state) == Health::Running
                    && state
                        .status_text
                        .starts_with(crate::bridge::engine::RECONNECTING) =>
            {
                crate::bridge::engine::RECONNECTING.to_owned()
            }
            Some(state) => format!("{:?}", health(state)).to_lowercase(),
        };
        if !configured && state.is_none() {
            continue;
        }
        let ledger = Ledger::open(&paths.data(), name)?;
        let entries = ledger.entries()?;
        // Delivered entries are pruned once settled; the ledger counts them.
        let pruned = usize::try_from(ledger.pruned()?).unwrap_or(usize::MAX);
        let count = |stages: &[Stage]| entries.iter().filter(|e| stages.contains(&e.stage)).count();
        views.push(BridgeView {
            name: name.to_string(),
            unit,
            configured,
            health,
            status: state.map(|state| state.status_text).unwrap_or_default(),
            sent: count(&[Stage::Sent, Stage::Closed]).saturating_add(pruned),
            pending: count(&[Stage::Sending, Stage::Retrying]),
            failed: count(&[Stage::Failed]),
        });
    }
    Ok(views)
}
