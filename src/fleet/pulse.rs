//! The pulse: a transient timer whose every activation runs `rein tick` — one beat — in a
//! short-lived oneshot service, so nothing of rein runs between beats.
//!
//! A beat senses the world, records itself (`pulse.json`, `journal.md`, journald with
//! `REIN_BEAT`), checks worker health (a worker that failed past its start limit gets a
//! journal entry and a note, once), and runs the judgment hook (agent mode: nothing more;
//! the judge loops on `rein wait`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::Result;
use crate::fleet::{rein_bin, unit_environment, workers, UnitNames};
use crate::paths::Paths;
use crate::store;
use crate::systemd::{Manager, ServiceSpec, ServiceType, SystemdError, TimerSpec, TransientUnit};
use crate::{journal, seed, world};

pub const FORMAT_VERSION: u32 = 1;

/// `pulse.json`: the last beat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BeatRecord {
    pub version: u32,
    pub beat: u64,
    pub at: DateTime<Utc>,
    pub world: String,
    pub changed: bool,
    pub failed_sensors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BeatReport {
    #[serde(flatten)]
    pub record: BeatRecord,
    /// Workers newly seen failed in this beat.
    pub failed_workers: Vec<String>,
    /// Set when systemd could not be asked about the workers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub systemd: Option<String>,
    /// What the judge did (`llm` mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judgment: Option<crate::judge::Judgment>,
}

pub fn last_beat(paths: &Paths) -> Result<Option<BeatRecord>> {
    store::read_json(&paths.data().pulse())
}

/// One beat. `manager` is None when no user manager is reachable (then worker health is
/// skipped and said so).
pub async fn beat(
    paths: &Paths,
    config: &Config,
    manager: Option<&Manager>,
) -> anyhow::Result<BeatReport> {
    let dir = paths.data();
    let sensed = world::sense(&dir, &config.sensors)?;
    let number = last_beat(paths)?.map(|b| b.beat).unwrap_or(0) + 1;
    let failed_sensors: Vec<String> = sensed
        .snapshots
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.sensor.clone())
        .collect();
    let record = BeatRecord {
        version: FORMAT_VERSION,
        beat: number,
        at: Utc::now(),
        world: sensed.hash.clone(),
        changed: sensed.changed,
        failed_sensors,
    };
    store::write_json(&dir.pulse(), &record)?;
    let message = format!(
        "beat {number}: world {} ({}){}",
        record.world,
        if record.changed {
            "changed"
        } else {
            "unchanged"
        },
        if record.failed_sensors.is_empty() {
            String::new()
        } else {
            format!(", failed sensors: {}", record.failed_sensors.join(", "))
        }
    );
    tracing::info!(REIN_EVENT = "beat", REIN_BEAT = number, "{message}");
    journal::append(&dir, "beat", &message)?;
    let (failed_workers, systemd) = match manager {
        Some(manager) => (workers::report_failures(manager, paths).await?, None),
        None => (
            Vec::new(),
            Some("no systemd user manager reachable: worker health not checked".to_owned()),
        ),
    };
    // The judgment hook. In agent mode rein calls no LLM: the judge is an agent looping on
    // `rein wait`, which this beat has just woken if the world changed.
    let judgment = match config.judge.mode {
        crate::config::JudgeMode::Agent => None,
        crate::config::JudgeMode::Llm => {
            let state = crate::state::state(&dir, &paths.profile)?;
            let state_json = serde_json::to_string_pretty(&state)?;
            Some(
                crate::judge::judge(paths, config, number, record.changed, &state_json, manager)
                    .await?,
            )
        }
    };
    Ok(BeatReport {
        record,
        failed_workers,
        systemd,
        judgment,
    })
}

/// A timer's next elapse as wall-clock time: realtime timers say it directly; monotonic ones
/// (`OnUnitActiveSec=`) are converted from CLOCK_MONOTONIC.
pub fn next_elapse(timer: &crate::systemd::TimerState) -> Option<DateTime<Utc>> {
    if let Some(at) = timer.next_elapse_realtime() {
        return Some(at.into());
    }
    let monotonic_usec = timer.next_elapse_monotonic_usec?;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return None;
    }
    let now_usec = now.tv_sec * 1_000_000 + now.tv_nsec / 1000;
    let ahead = monotonic_usec as i64 - now_usec;
    Some(Utc::now() + chrono::Duration::microseconds(ahead))
}

fn describe(paths: &Paths, interval: Duration) -> String {
    // The accuracy is part of it: a timer made with another (an older rein's) is recreated.
    format!(
        "rein pulse of profile {} every {} (within {})",
        paths.profile,
        crate::duration::Span(interval),
        crate::duration::Span(pulse_accuracy(interval))
    )
}

/// How late systemd may fire the pulse: a twentieth of the interval (at least a millisecond),
/// so a beat comes within 5% of its time. systemd's default (a minute), or any fixed second,
/// would make a short pulse beat at twice its interval or worse.
pub fn pulse_accuracy(interval: Duration) -> Duration {
    (interval / 20).max(Duration::from_millis(1))
}

fn pulse_units(paths: &Paths, config: &Config) -> anyhow::Result<TransientUnit> {
    let names = UnitNames::new(paths);
    let interval = config.pulse.interval.0;
    let description = describe(paths, interval);
    let service = ServiceSpec {
        name: names.pulse_service(),
        description: description.clone(),
        exec: vec![rein_bin()?, "tick".to_owned()],
        service_type: ServiceType::Oneshot,
        environment: unit_environment(paths),
        working_directory: Some(paths.data_dir.clone()),
        syslog_identifier: Some("rein-pulse".to_owned()),
        log_extra_fields: vec![("REIN_PROFILE".to_owned(), paths.profile.clone())],
        ..ServiceSpec::default()
    };
    let timer = TimerSpec {
        name: names.pulse_timer(),
        description,
        on_active_sec: Some(Duration::from_secs(1)),
        on_unit_active_sec: Some(interval),
        accuracy: Some(pulse_accuracy(interval)),
        ..TimerSpec::default()
    };
    Ok(TransientUnit::timer(&timer, &service)?)
}

#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    pub profile: String,
    pub timer: String,
    /// `created`, `unchanged`, or `recreated` (the pulse interval changed, or the timer was
    /// not active).
    pub pulse: String,
    pub interval: String,
    pub next_beat: Option<DateTime<Utc>>,
    pub seeded: Vec<String>,
    pub workers_restarted: Vec<String>,
    /// Open loops whose timers were (re-)created.
    pub loop_timers: Vec<String>,
}

/// Creates or reconciles the pulse, brings back recorded workers that are not running, and
/// re-creates the timers of open loops.
pub async fn up(manager: &Manager, paths: &Paths, config: &Config) -> anyhow::Result<UpReport> {
    let seeded = seed::seed_data_dir(&paths.data())?;
    let names = UnitNames::new(paths);
    let wanted = pulse_units(paths, config)?;
    let description = describe(paths, config.pulse.interval.0);
    let existing = manager.list(&[&names.pulse_timer()]).await?;
    let pulse = match existing.first() {
        Some(timer)
            if timer.description == description && timer.active_state.as_str() == "active" =>
        {
            "unchanged"
        }
        Some(_) => {
            remove_pulse(manager, &names).await?;
            manager.start_transient(&wanted).await?;
            "recreated"
        }
        None => {
            // A leftover service (e.g. a failed last beat) would block the name.
            remove_unit(manager, &names.pulse_service()).await?;
            manager.start_transient(&wanted).await?;
            "created"
        }
    };
    if pulse != "unchanged" {
        journal::record(
            &paths.data(),
            "up",
            &format!("pulse {pulse}: {description}"),
        )?;
    }
    crate::fleet::gate_unit::ensure(manager, paths).await?;
    let workers_restarted = workers::restore(manager, paths, config).await?;
    let loop_timers = crate::fleet::loops::restore(manager, paths).await?;
    let next_beat = manager
        .timer_state(&names.pulse_timer())
        .await?
        .as_ref()
        .and_then(next_elapse);
    Ok(UpReport {
        profile: paths.profile.clone(),
        timer: names.pulse_timer(),
        pulse: pulse.to_owned(),
        interval: config.pulse.interval.to_string(),
        next_beat,
        seeded,
        workers_restarted,
        loop_timers,
    })
}

/// Stops a unit and makes sure it is unloaded (reset if it failed), so no unit is left behind.
pub async fn remove_unit(manager: &Manager, unit: &str) -> Result<(), SystemdError> {
    manager.stop(unit).await?;
    if manager.list(&[unit]).await?.is_empty() {
        return Ok(());
    }
    match manager.reset_failed(unit).await {
        Ok(()) | Err(SystemdError::NoSuchUnit(_)) => {}
        Err(other) => return Err(other),
    }
    manager.wait_unloaded(unit, Duration::from_secs(10)).await
}

async fn remove_pulse(manager: &Manager, names: &UnitNames) -> Result<(), SystemdError> {
    remove_unit(manager, &names.pulse_timer()).await?;
    remove_unit(manager, &names.pulse_service()).await
}

#[derive(Debug, Clone, Serialize)]
pub struct DownReport {
    pub profile: String,
    pub stopped: Vec<String>,
}

/// Stops the pulse, every worker and every loop timer of the profile and leaves no unit
/// behind. Worker and loop records stay, so the next `rein up` brings them back.
pub async fn down(manager: &Manager, paths: &Paths) -> anyhow::Result<DownReport> {
    let names = UnitNames::new(paths);
    let mut stopped = Vec::new();
    for unit in [names.pulse_timer(), names.pulse_service()] {
        if !manager.list(&[&unit]).await?.is_empty() {
            stopped.push(unit.clone());
        }
    }
    remove_pulse(manager, &names).await?;
    let mut units = manager
        .list(&[&names.worker_pattern(), &names.loop_pattern()])
        .await?;
    // A loop's timer first: its service stays loaded while the timer refers to it.
    units.sort_by_key(|entry| !entry.name.ends_with(".timer"));
    for entry in units {
        remove_unit(manager, &entry.name).await?;
        stopped.push(entry.name);
    }
    if !manager.list(&[&names.gate_socket()]).await?.is_empty() {
        stopped.push(names.gate_socket());
    }
    crate::fleet::gate_unit::remove(manager, paths).await?;
    journal::record(
        &paths.data(),
        "down",
        &format!(
            "stopped {}",
            if stopped.is_empty() {
                "nothing (already down)".to_owned()
            } else {
                stopped.join(", ")
            }
        ),
    )?;
    Ok(DownReport {
        profile: paths.profile.clone(),
        stopped,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct PulseStatus {
    pub timer: String,
    pub active: bool,
    pub interval: Option<String>,
    pub last_elapse: Option<DateTime<Utc>>,
    pub next_elapse: Option<DateTime<Utc>>,
    /// The pulse service's last result (`success`, `exit-code`, …).
    pub last_result: Option<String>,
    pub last_beat: Option<BeatRecord>,
}

pub async fn status(manager: &Manager, paths: &Paths) -> anyhow::Result<PulseStatus> {
    let names = UnitNames::new(paths);
    let timer = manager.timer_state(&names.pulse_timer()).await?;
    let service = manager.service_state(&names.pulse_service()).await?;
    let listed = manager.list(&[&names.pulse_timer()]).await?;
    Ok(PulseStatus {
        timer: names.pulse_timer(),
        active: timer
            .as_ref()
            .is_some_and(|t| t.active_state.as_str() == "active"),
        interval: listed
            .first()
            .and_then(|t| t.description.rsplit(" every ").next().map(str::to_owned)),
        last_elapse: timer
            .as_ref()
            .and_then(|t| t.last_trigger())
            .map(DateTime::<Utc>::from),
        next_elapse: timer.as_ref().and_then(next_elapse),
        last_result: service.map(|s| s.result).filter(|r| !r.is_empty()),
        last_beat: last_beat(paths)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pulse_fires_within_five_percent_of_its_interval() {
        assert_eq!(
            pulse_accuracy(Duration::from_secs(1)),
            Duration::from_millis(50)
        );
        assert_eq!(
            pulse_accuracy(Duration::from_secs(60)),
            Duration::from_secs(3)
        );
        assert_eq!(
            pulse_accuracy(Duration::from_millis(10)),
            Duration::from_millis(1)
        );
    }
}
