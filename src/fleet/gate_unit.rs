//! The gate's units: `rein-gate.socket` (systemd listens on `run/gate.sock`) and
//! `rein-gate.service` (`rein gate`, started on the first connection, gone when idle), so
//! nothing of rein runs while no worker calls.

use crate::fleet::{rein_bin, unit_environment, UnitNames};
use crate::paths::Paths;
use crate::systemd::{
    Manager, ServiceSpec, ServiceType, SocketSpec, TransientUnit, DEFAULT_STOP_GRACE,
};

fn units(paths: &Paths) -> anyhow::Result<TransientUnit> {
    let names = UnitNames::new(paths);
    let description = format!("rein gate of profile {}", paths.profile);
    let socket = SocketSpec {
        name: names.gate_socket(),
        description: description.clone(),
        listen_stream: paths.data().gate_socket(),
        socket_mode: 0o600,
    };
    let service = ServiceSpec {
        name: names.gate_service(),
        description,
        exec: vec![rein_bin()?, "gate".to_owned()],
        service_type: ServiceType::Simple,
        environment: unit_environment(paths),
        working_directory: Some(paths.data_dir.clone()),
        syslog_identifier: Some("rein-gate".to_owned()),
        log_extra_fields: vec![("REIN_PROFILE".to_owned(), paths.profile.clone())],
        ..ServiceSpec::default()
    };
    Ok(TransientUnit::socket(&socket, &service)?)
}

/// Makes sure the gate listens (idempotent): creates the socket unit when it is not active.
pub async fn ensure(manager: &Manager, paths: &Paths) -> anyhow::Result<()> {
    // The gate's socket is a path in the data dir: one manager's gate only.
    crate::fleet::owner::claim(manager, paths).await?;
    let names = UnitNames::new(paths);
    paths.data().create_dirs()?;
    let _lock = crate::store::lock(&paths.data().gate_lock())?;
    let listed = manager.list(&[&names.gate_socket()]).await?;
    if listed
        .first()
        .is_some_and(|unit| unit.active_state.as_str() == "active")
    {
        return Ok(());
    }
    remove(manager, paths).await?;
    manager.start_transient(&units(paths)?).await?;
    Ok(())
}

/// Stops the gate's socket and service and unloads them.
pub async fn remove(manager: &Manager, paths: &Paths) -> anyhow::Result<()> {
    let names = UnitNames::new(paths);
    manager
        .remove(&names.gate_socket(), DEFAULT_STOP_GRACE)
        .await?;
    manager
        .remove(&names.gate_service(), DEFAULT_STOP_GRACE)
        .await?;
    Ok(())
}
