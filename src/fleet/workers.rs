//! Workers: agents running as `rein-worker-ID.service`, each inside a PTY host.
//!
//! `start` writes the worker contract (`prompts/ID.md`) and a record (`workers/ID.json`: what
//! to run, so `rein up` can bring the worker back after a reboot), then creates the unit.
//! Health is the unit's state plus the mailbox: a running worker with a pending ask is
//! `waiting-ask`, not idle or stuck.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{self, Config, RestartPolicy};
use crate::error::{Error, Result};
use crate::fleet::pulse::remove_unit;
use crate::fleet::{rein_bin, unit_environment, UnitNames};
use crate::mailbox::Mailbox;
use crate::paths::Paths;
use crate::store::{self, validate_id};
use crate::systemd::{
    self, health, Health, Manager, ServiceSpec, ServiceState, ServiceType, TransientUnit,
};
use crate::{journal, notes};

pub const FORMAT_VERSION: u32 = 1;

/// `workers/ID.json`: a started worker, as it was asked for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerRecord {
    pub version: u32,
    pub id: String,
    /// The rendered shell command the PTY host runs.
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<u32>,
    pub started: DateTime<Utc>,
    /// Set once a failure has been journaled and notified, so it is reported once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reported: Option<DateTime<Utc>>,
}

/// What `rein worker start` asks for; validated before anything is written or started.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub id: String,
    pub brief: String,
    pub command: Option<String>,
    pub model: Option<String>,
    pub memory_max: Option<u64>,
    pub cpu_quota: Option<u32>,
}

/// The worker contract: how to ask, claim and report — then the brief.
pub fn contract(paths: &Paths, id: &str, brief: &str) -> String {
    let data = paths.data_dir.display();
    format!(
        "# Worker {id}

You are worker `{id}` of a rein fleet (profile `{profile}`). The data dir is {data}.
`rein` is on your PATH (also at $REIN_BIN); $REIN_WORKER_ID is `{id}`.

## How to work with the human and the fleet
- When a decision is a human's, ask: `rein ask --prompt \"...\" [--options yes,no] [--ref WHAT]`.
  It blocks until answered and prints only the answer (exit 4: withdrawn).
- Irreversible actions (merge, deploy, delete, publish, pay) always need a human's yes first.
- Claim a job before working on it: `rein claim NAME` (exit 5: someone else holds it);
  `rein unclaim NAME` when done.
- Tell the human something without blocking: `rein notify \"...\"`.
- Put deliverables a human should read in {data}/reports/.
- Goals are in {data}/goals/, the playbook in {data}/PLAYBOOK.md.

## Your brief
{brief}
",
        profile = paths.profile,
        brief = if brief.trim().is_empty() {
            "No brief was given: ask the human what to do."
        } else {
            brief.trim_end()
        },
    )
}

fn service_spec(
    paths: &Paths,
    config: &Config,
    record: &WorkerRecord,
) -> anyhow::Result<ServiceSpec> {
    let names = UnitNames::new(paths);
    let dir = paths.data();
    let bin = rein_bin()?;
    let mut environment = unit_environment(paths);
    // The agent finds `rein` on its PATH: the directory of this very binary goes first.
    if let Some(bin_dir) = std::path::Path::new(&bin).parent() {
        let path = environment
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_owned());
        environment.retain(|(k, _)| k != "PATH");
        environment.push(("PATH".to_owned(), format!("{}:{path}", bin_dir.display())));
    }
    environment.push(("REIN_WORKER_ID".to_owned(), record.id.clone()));
    environment.push(("REIN_BIN".to_owned(), bin.clone()));
    let workers = &config.workers;
    Ok(ServiceSpec {
        name: names.worker(&record.id),
        description: format!("rein worker {} of profile {}", record.id, paths.profile),
        exec: vec![
            bin,
            "worker".to_owned(),
            "host".to_owned(),
            record.id.clone(),
            "--".to_owned(),
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            record.command.clone(),
        ],
        service_type: ServiceType::Notify,
        environment,
        working_directory: Some(dir.root().to_owned()),
        restart: Some(match workers.restart {
            RestartPolicy::No => systemd::RestartPolicy::No,
            RestartPolicy::OnFailure => systemd::RestartPolicy::OnFailure,
            RestartPolicy::Always => systemd::RestartPolicy::Always,
        }),
        restart_sec: Some(workers.restart_sec.0),
        start_limit_burst: Some(workers.start_limit_burst),
        start_limit_interval: Some(workers.start_limit_interval.0),
        memory_max: record.memory_max.or(workers.memory_max),
        cpu_quota_percent: record.cpu_quota.or(workers.cpu_quota),
        log_extra_fields: vec![
            ("REIN_WORKER".to_owned(), record.id.clone()),
            ("REIN_PROFILE".to_owned(), paths.profile.clone()),
        ],
        syslog_identifier: Some(format!("rein-worker-{}", record.id)),
        ..ServiceSpec::default()
    })
}

fn is_running(state: &ServiceState) -> bool {
    matches!(
        health(state),
        Health::Running | Health::Starting | Health::Restarting | Health::Stopping
    )
}

/// Validates a start request into a record; writes nothing.
pub fn prepare(paths: &Paths, config: &Config, request: &StartRequest) -> Result<WorkerRecord> {
    validate_id("worker id", &request.id)?;
    let template = request
        .command
        .clone()
        .unwrap_or_else(|| config.worker_template());
    if template.trim().is_empty() {
        return Err(Error::invalid(
            "no worker command: pass --command CMD or set runner.command in the config",
        ));
    }
    let model = request
        .model
        .clone()
        .or_else(|| config.runner.model.clone());
    let prompt_file = paths.data().prompt(&request.id)?;
    let command = config::render_command(&template, &prompt_file, model.as_deref())?;
    Ok(WorkerRecord {
        version: FORMAT_VERSION,
        id: request.id.clone(),
        command,
        model,
        memory_max: request.memory_max,
        cpu_quota: request.cpu_quota,
        started: Utc::now(),
        failure_reported: None,
    })
}

/// Starts a worker. A worker of that id that is running is refused (and left untouched).
pub async fn start(
    manager: &Manager,
    paths: &Paths,
    config: &Config,
    request: &StartRequest,
) -> anyhow::Result<WorkerRecord> {
    let record = prepare(paths, config, request)?;
    let names = UnitNames::new(paths);
    let unit = names.worker(&record.id);
    if let Some(state) = manager.service_state(&unit).await? {
        if is_running(&state) {
            return Err(Error::Conflict(format!(
                "worker {} is already running (unit {unit}, pid {}); `rein worker kill {}` first",
                record.id, state.main_pid, record.id
            ))
            .into());
        }
    }
    let dir = paths.data();
    dir.create_dirs()?;
    store::write_atomic(
        &dir.prompt(&record.id)?,
        contract(paths, &record.id, &request.brief).as_bytes(),
    )?;
    launch(manager, paths, config, &record).await?;
    store::write_json(&dir.worker(&record.id)?, &record)?;
    journal::record(
        &dir,
        "worker",
        &format!("started worker {} ({unit})", record.id),
    )?;
    Ok(record)
}

/// Creates the unit for a record, clearing a stopped or failed unit of the same name first.
async fn launch(
    manager: &Manager,
    paths: &Paths,
    config: &Config,
    record: &WorkerRecord,
) -> anyhow::Result<()> {
    let spec = service_spec(paths, config, record)?;
    remove_unit(manager, &spec.name).await?;
    if let Err(error) = manager
        .start_transient(&TransientUnit::service(&spec)?)
        .await
    {
        // Leave nothing half-created: a unit that failed to start is unloaded again.
        let _ = remove_unit(manager, &spec.name).await;
        return Err(error.into());
    }
    Ok(())
}

/// Starts every recorded worker whose unit is not running; returns their ids.
pub async fn restore(
    manager: &Manager,
    paths: &Paths,
    config: &Config,
) -> anyhow::Result<Vec<String>> {
    let names = UnitNames::new(paths);
    let mut restarted = Vec::new();
    for record in records(paths)? {
        let running = manager
            .service_state(&names.worker(&record.id))
            .await?
            .is_some_and(|s| is_running(&s));
        if !running {
            launch(manager, paths, config, &record).await?;
            journal::record(
                &paths.data(),
                "worker",
                &format!("restarted worker {} from its record", record.id),
            )?;
            restarted.push(record.id);
        }
    }
    Ok(restarted)
}

pub fn records(paths: &Paths) -> Result<Vec<WorkerRecord>> {
    let mut records = Vec::new();
    for (_, path) in store::list(&paths.data().workers(), ".json")? {
        if let Some(record) = store::read_json(&path)? {
            records.push(record);
        }
    }
    Ok(records)
}

/// Stops a worker, unloads its unit and archives its record (so `rein up` leaves it down).
pub async fn kill(manager: &Manager, paths: &Paths, id: &str) -> anyhow::Result<()> {
    validate_id("worker id", id)?;
    let dir = paths.data();
    let unit = UnitNames::new(paths).worker(id);
    let loaded = !manager.list(&[&unit]).await?.is_empty();
    let record = dir.worker(id)?;
    let stamp = Utc::now().format("%Y%m%dt%H%M%S%3f").to_string();
    let archived = store::move_file(&record, &dir.archived_worker(id, &stamp))?;
    if !loaded && !archived {
        return Err(Error::NotFound(format!(
            "no worker {id:?} in profile {}; `rein worker ls` lists them",
            paths.profile
        ))
        .into());
    }
    remove_unit(manager, &unit).await?;
    journal::record(&dir, "worker", &format!("killed worker {id}"))?;
    Ok(())
}

/// One worker as `rein worker ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub id: String,
    pub unit: String,
    /// running, waiting-ask, restarting, failed, exited, starting, stopping, inactive, or
    /// stopped (recorded but no unit: after `rein down`).
    pub health: String,
    pub active_state: String,
    pub sub_state: String,
    pub result: String,
    pub restarts: u32,
    pub pid: Option<u32>,
    pub since: Option<DateTime<Utc>>,
    pub memory: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ask: Option<serde_json::Value>,
}

fn health_name(health: Health) -> &'static str {
    match health {
        Health::Running => "running",
        Health::Restarting => "restarting",
        Health::Failed => "failed",
        Health::Exited => "exited",
        Health::Starting => "starting",
        Health::Stopping => "stopping",
        Health::Inactive => "inactive",
    }
}

/// Every worker of the profile: one `ListUnitsByPatterns` call for the list, then each
/// unit's properties read concurrently, plus recorded workers that have no unit.
pub async fn list(manager: &Manager, paths: &Paths) -> anyhow::Result<Vec<WorkerView>> {
    let names = UnitNames::new(paths);
    let entries = manager.list(&[&names.worker_pattern()]).await?;
    let reads = entries
        .iter()
        .map(|entry| manager.service_state(&entry.name));
    // All reads are sent at once on the one connection and answered concurrently.
    let states = futures_util::future::join_all(reads).await;
    let mut pending: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for record in Mailbox::new(paths.data()).pending()?.records {
        pending
            .entry(record.ask.worker.clone())
            .or_insert_with(|| record.to_json());
    }
    let mut views = Vec::new();
    for (entry, state) in entries.iter().zip(states) {
        let Some(id) = names.worker_id(&entry.name) else {
            continue;
        };
        let Some(state) = state? else { continue };
        let mut health = health_name(health(&state)).to_owned();
        let ask = pending.get(id).cloned();
        if health == "running" && ask.is_some() {
            health = "waiting-ask".to_owned();
        }
        views.push(WorkerView {
            id: id.to_owned(),
            unit: entry.name.clone(),
            health,
            active_state: state.active_state.as_str().to_owned(),
            sub_state: state.sub_state.clone(),
            result: state.result.clone(),
            restarts: state.n_restarts,
            pid: (state.main_pid != 0).then_some(state.main_pid),
            since: state.active_since().map(DateTime::<Utc>::from),
            memory: state.memory_current,
            ask,
        });
    }
    for record in records(paths)? {
        if views.iter().all(|v| v.id != record.id) {
            views.push(WorkerView {
                id: record.id.clone(),
                unit: names.worker(&record.id),
                health: "stopped".to_owned(),
                active_state: "inactive".to_owned(),
                sub_state: "dead".to_owned(),
                result: String::new(),
                restarts: 0,
                pid: None,
                since: None,
                memory: None,
                ask: pending.get(&record.id).cloned(),
            });
        }
    }
    views.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(views)
}

/// Journals and notifies each failed worker once; returns their ids.
pub async fn report_failures(manager: &Manager, paths: &Paths) -> anyhow::Result<Vec<String>> {
    let dir = paths.data();
    let mut reported = Vec::new();
    let views = list(manager, paths).await?;
    for view in views.iter().filter(|v| v.health == "failed") {
        let path = dir.worker(&view.id)?;
        let Some(mut record) = store::read_json::<WorkerRecord>(&path)? else {
            continue;
        };
        if record.failure_reported.is_some() {
            continue;
        }
        let message = format!(
            "worker {} failed (result {}, {} restarts); see `rein worker logs {}`",
            view.id, view.result, view.restarts, view.id
        );
        journal::record(&dir, "worker-failed", &message)?;
        notes::notify(&dir, "rein", &message)?;
        record.failure_reported = Some(Utc::now());
        store::write_json(&path, &record)?;
        reported.push(view.id.clone());
    }
    Ok(reported)
}
