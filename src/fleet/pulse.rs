//! The pulse: a transient timer whose every activation runs `rein tick` — one beat — in a
//! short-lived oneshot service, so nothing of rein runs between beats.
//!
//! A beat sweeps stale temp files and archives notes older than a day (at most every five
//! minutes), senses the world, records itself (`pulse.json`,
//! `journal.md`, journald with `REIN_BEAT`), checks worker health (a worker that failed past
//! its start limit gets a journal entry and a note, once; one that exited on its own a
//! journal entry, once), and runs the judgment hook (agent mode: nothing more; the judge
//! loops on `rein wait`). The beat service is bounded by [`beat_limit`], and `rein status`
//! reads how beats stand from the service's state ([`BeatState`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::Result;
use crate::fleet::{rein_bin, unit_environment, workers, UnitNames};
use crate::paths::Paths;
use crate::store;
use crate::systemd::{
    Manager, ServiceSpec, ServiceType, SystemdError, TimerSpec, TransientUnit, UnitListEntry,
    DEFAULT_STOP_GRACE,
};
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

/// One beat. It asks systemd about workers only when one is to be watched (see
/// [`workers::any_to_watch`]) or the judge runs as an LLM, so a quiet beat of a fleet with no
/// worker opens no connection at all; when no user manager is reachable, worker health is
/// skipped and said so.
pub async fn beat(paths: &Paths, config: &Config) -> anyhow::Result<BeatReport> {
    let dir = paths.data();
    // Temp files of writers killed mid-write are swept once they are clearly stale. A temp is
    // stale only after STALE_TEMP, so a look every STALE_TEMP/2 finds each one soon enough,
    // and a beat does not list every archived ask.
    if store::older_than(&dir.swept(), store::STALE_TEMP / 2)? {
        for swept in dir.all_dirs() {
            if let Err(error) = store::sweep_temps(&swept, store::STALE_TEMP) {
                tracing::warn!("sweeping stale temp files: {error}");
            }
        }
        // The same look keeps notes/ to the last day's notes.
        if let Err(error) = crate::notes::archive_old(&dir, Utc::now()) {
            tracing::warn!("archiving old notes: {error}");
        }
        store::touch(&dir.swept())?;
    }
    let sensed = world::sense_due(&dir, &config.sensors)?;
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
    // journal.md has a line per move: a beat that found the world as it was made none (it
    // stays in journald above, and pulse.json counts it).
    if record.changed {
        journal::append(&dir, "beat", &message)?;
    }
    let watch = workers::any_to_watch(paths)?;
    let llm = config.judge.mode == crate::config::JudgeMode::Llm;
    let manager = if watch || llm {
        Manager::connect().await.ok()
    } else {
        None
    };
    let manager = manager.as_ref();
    let (failed_workers, systemd) = match manager {
        _ if !watch => (Vec::new(), None),
        Some(manager) => {
            let names = UnitNames::new(paths);
            let fleet_up = manager
                .timer_state(&names.pulse_timer())
                .await?
                .is_some_and(|t| t.active_state == crate::systemd::ActiveState::Active);
            (
                workers::report_failures(manager, paths, fleet_up).await?,
                None,
            )
        }
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
    format!(
        "rein pulse of profile {} every {} (within {})",
        paths.profile,
        crate::duration::Span(interval),
        crate::duration::Span(pulse_accuracy(interval))
    )
}

/// How late systemd may fire the pulse: a hundredth of the interval (see
/// [`crate::schedule::interval_accuracy`]), so a beat comes within about 2% of its time.
pub fn pulse_accuracy(interval: Duration) -> Duration {
    crate::schedule::interval_accuracy(interval)
}

/// How long one beat may run: every sensor's timeout (they run in parallel), the judge's
/// timeout in `llm` mode, and a margin for the rest. The beat service is stopped past it, so a
/// beat can never keep the pulse `activating`.
pub fn beat_limit(config: &Config) -> Duration {
    let judge = match config.judge.mode {
        crate::config::JudgeMode::Agent => Duration::ZERO,
        crate::config::JudgeMode::Llm => config.judge.timeout.0,
    };
    config.sensors.timeout.0 + crate::capture::GRACE + judge + BEAT_MARGIN
}

/// What a beat needs beyond its sensors and judge: writing records, asking systemd.
const BEAT_MARGIN: Duration = Duration::from_secs(30);
/// How long a beat that is being stopped gets before SIGKILL.
const BEAT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn pulse_units(paths: &Paths, config: &Config) -> anyhow::Result<TransientUnit> {
    let names = UnitNames::new(paths);
    let interval = config.pulse.interval.0;
    let description = describe(paths, interval);
    let service = ServiceSpec {
        timeout_start: Some(beat_limit(config)),
        timeout_stop: Some(BEAT_STOP_TIMEOUT),
        name: names.pulse_service(),
        description: description.clone(),
        exec: vec![rein_bin()?, "tick".to_owned()],
        service_type: ServiceType::Oneshot,
        environment: unit_environment(paths),
        working_directory: Some(paths.data_dir.clone()),
        syslog_identifier: Some("rein-pulse".to_owned()),
        log_extra_fields: vec![("REIN_PROFILE".to_owned(), paths.profile.clone())],
        // The timer starts the beat once per interval; systemd's start rate limit (5 starts
        // in 10 s by default) would hold a short pulse back for seconds after every fifth.
        start_limit_interval: Some(Duration::ZERO),
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

/// What `rein up` did with the pulse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PulseChange {
    Created,
    Unchanged,
    /// The interval or its accuracy changed, or the timer was not active.
    Recreated,
}

impl std::fmt::Display for PulseChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PulseChange::Created => "created",
            PulseChange::Unchanged => "unchanged",
            PulseChange::Recreated => "recreated",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    pub profile: String,
    pub timer: String,
    pub pulse: PulseChange,
    pub interval: crate::duration::Span,
    pub next_beat: Option<DateTime<Utc>>,
    pub seeded: Vec<String>,
    pub workers_restarted: Vec<String>,
    /// Open loops whose timers were (re-)created.
    pub loop_timers: Vec<String>,
}

/// Creates or reconciles the pulse, brings back recorded workers that are not running, and
/// re-creates the timers of open loops.
pub async fn up(manager: &Manager, paths: &Paths, config: &Config) -> anyhow::Result<UpReport> {
    crate::fleet::owner::claim(manager, paths).await?;
    let seeded = seed::seed_data_dir(&paths.data())?;
    let names = UnitNames::new(paths);
    let wanted = pulse_units(paths, config)?;
    let description = describe(paths, config.pulse.interval.0);
    let existing = manager.timer_state(&names.pulse_timer()).await?;
    let pulse = match existing {
        Some(timer)
            // A timer made with another accuracy (an older rein's) is recreated too.
            if timer.on_unit_active == Some(config.pulse.interval.0)
                && timer.accuracy == Some(pulse_accuracy(config.pulse.interval.0))
                && timer.active_state == crate::systemd::ActiveState::Active =>
        {
            PulseChange::Unchanged
        }
        Some(_) => {
            remove_pulse(manager, &names).await?;
            manager.start_transient(&wanted).await?;
            PulseChange::Recreated
        }
        None => {
            // A leftover service (e.g. a failed last beat) would block the name.
            manager
                .remove(&names.pulse_service(), DEFAULT_STOP_GRACE)
                .await?;
            manager.start_transient(&wanted).await?;
            PulseChange::Created
        }
    };
    if pulse != PulseChange::Unchanged {
        journal::record_or_warn(
            &paths.data(),
            "up",
            &format!("pulse {pulse}: {description}"),
        );
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
        pulse,
        interval: config.pulse.interval,
        next_beat,
        seeded,
        workers_restarted,
        loop_timers,
    })
}

async fn remove_pulse(manager: &Manager, names: &UnitNames) -> Result<(), SystemdError> {
    manager
        .remove(&names.pulse_timer(), DEFAULT_STOP_GRACE)
        .await?;
    manager
        .remove(&names.pulse_service(), DEFAULT_STOP_GRACE)
        .await
}

#[derive(Debug, Clone, Serialize)]
pub struct DownReport {
    pub profile: String,
    pub stopped: Vec<String>,
    /// Units that could not be stopped, and why; `down` stops all the others regardless.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

/// Stops the pulse, every worker and every loop of the profile and leaves no unit behind.
/// Worker and loop records stay, so the next `rein up` brings them back.
///
/// The timers go first (no new beat or fire starts, and a loop's service stays loaded while
/// its timer refers to it), then everything else at once: each unit within its grace
/// (`workers.stop_timeout` for agents, then SIGKILL), so a stubborn agent costs its grace
/// once, not once per worker. One unit that cannot be stopped does not stop the rest; it is
/// reported, and `down` can simply be run again.
pub async fn down(manager: &Manager, paths: &Paths, grace: Duration) -> DownReport {
    let names = UnitNames::new(paths);
    let mut report = DownReport {
        profile: paths.profile.clone(),
        stopped: Vec::new(),
        failed: Vec::new(),
    };
    let timers = [names.pulse_timer(), names.loop_pattern()];
    let timers: Vec<&str> = timers.iter().map(String::as_str).collect();
    let timers = match manager.list(&timers).await {
        Ok(units) => units
            .into_iter()
            .filter(|entry| entry.name.ends_with(".timer"))
            .collect(),
        Err(error) => {
            report.failed.push(format!("listing the timers: {error}"));
            Vec::new()
        }
    };
    remove_all(manager, &names, &timers, grace, &mut report).await;
    let patterns = [
        names.pulse_service(),
        names.worker_pattern(),
        names.loop_pattern(),
        names.gate_socket(),
        names.gate_service(),
        // A beat stopped mid-judgment leaves the judge's unit (RemainAfterExit) behind.
        names.judge(),
    ];
    let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
    let units = match manager.list(&patterns).await {
        Ok(units) => units,
        Err(error) => {
            report.failed.push(format!("listing the units: {error}"));
            Vec::new()
        }
    };
    remove_all(manager, &names, &units, grace, &mut report).await;
    let mut said = if report.stopped.is_empty() {
        "stopped nothing (already down)".to_owned()
    } else {
        format!("stopped {}", report.stopped.join(", "))
    };
    if !report.failed.is_empty() {
        said.push_str(&format!("; could not stop {}", report.failed.join("; ")));
    }
    journal::record_or_warn(&paths.data(), "down", &said);
    if report.failed.is_empty() {
        // Nothing runs: what listings kept of the runs is of no use any more.
        crate::systemd::steady::forget(&paths.profile);
        if let Err(error) = crate::fleet::owner::release(manager, paths) {
            report
                .failed
                .push(format!("forgetting the manager record: {error}"));
        }
    }
    report
}

/// Removes `units` at once, each within its grace (`grace` for workers), into `report`.
async fn remove_all(
    manager: &Manager,
    names: &UnitNames,
    units: &[UnitListEntry],
    grace: Duration,
    report: &mut DownReport,
) {
    let removals = units.iter().map(|entry| {
        let grace = if names.worker_id(&entry.name).is_some() {
            grace
        } else {
            DEFAULT_STOP_GRACE
        };
        async move { (entry.name.clone(), manager.remove(&entry.name, grace).await) }
    });
    for (unit, outcome) in futures_util::future::join_all(removals).await {
        match outcome {
            Ok(()) => report.stopped.push(unit),
            Err(error) => report.failed.push(format!("{unit}: {error}")),
        }
    }
}

/// Where the beats stand, as `rein status` tells it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BeatState {
    /// No beat has run yet.
    NotYet,
    /// The last beat succeeded and the next is not due yet.
    Idle,
    /// A beat is running; `late` once it has run longer than the pulse interval (the next
    /// beat is due and has to wait).
    Running { since: DateTime<Utc>, late: bool },
    /// The last beat failed; `result` is systemd's (`exit-code`, `timeout`, `signal`, …).
    Failed { result: String },
    /// The timer is up but no beat ran for more than twice the interval.
    Overdue { last: Option<DateTime<Utc>> },
}

#[derive(Debug, Clone, Serialize)]
pub struct PulseStatus {
    pub timer: String,
    pub active: bool,
    /// The pulse interval the timer runs with (from the timer itself).
    pub interval: Option<crate::duration::Span>,
    pub last_elapse: Option<DateTime<Utc>>,
    pub next_elapse: Option<DateTime<Utc>>,
    pub beat: BeatState,
    pub last_beat: Option<BeatRecord>,
}

pub async fn status(manager: &Manager, paths: &Paths) -> anyhow::Result<PulseStatus> {
    let names = UnitNames::new(paths);
    let timer = manager.timer_state(&names.pulse_timer()).await?;
    let service = manager.service_state(&names.pulse_service()).await?;
    let last_beat = last_beat(paths)?;
    let interval = timer.as_ref().and_then(|t| t.on_unit_active);
    let last_elapse = timer
        .as_ref()
        .and_then(|t| t.last_trigger())
        .map(DateTime::<Utc>::from);
    let beat = beat_state(service.as_ref(), interval, last_elapse, Utc::now());
    Ok(PulseStatus {
        timer: names.pulse_timer(),
        active: timer
            .as_ref()
            .is_some_and(|t| t.active_state.as_str() == "active"),
        interval: interval.map(crate::duration::Span),
        last_elapse,
        next_elapse: timer.as_ref().and_then(next_elapse),
        beat,
        last_beat,
    })
}

/// Judges the beats from the pulse service's state, the interval and the timer's last
/// trigger.
pub fn beat_state(
    service: Option<&crate::systemd::ServiceState>,
    interval: Option<Duration>,
    last_trigger: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> BeatState {
    use crate::systemd::ActiveState;
    let interval = interval.and_then(|i| chrono::Duration::from_std(i).ok());
    let Some(service) = service else {
        return match (last_trigger, interval) {
            (None, _) => BeatState::NotYet,
            (Some(last), Some(interval)) if now - last > interval * 2 => {
                BeatState::Overdue { last: Some(last) }
            }
            _ => BeatState::Idle,
        };
    };
    match service.active_state {
        ActiveState::Activating | ActiveState::Active | ActiveState::Deactivating
            if service.sub_state != "dead" =>
        {
            let since = service
                .started_at()
                .map(DateTime::<Utc>::from)
                .unwrap_or(now);
            let late = interval.is_some_and(|interval| now - since > interval);
            return BeatState::Running { since, late };
        }
        ActiveState::Failed => {
            return BeatState::Failed {
                result: service.result.clone(),
            }
        }
        _ => {}
    }
    if !service.result.is_empty() && service.result != "success" {
        return BeatState::Failed {
            result: service.result.clone(),
        };
    }
    match (last_trigger, interval) {
        (None, _) if service.started_at().is_none() => BeatState::NotYet,
        (Some(last), Some(interval)) if now - last > interval * 2 => {
            BeatState::Overdue { last: Some(last) }
        }
        _ => BeatState::Idle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systemd::{ActiveState, ServiceState};

    fn service(active: &str, sub: &str, result: &str, started_secs_ago: i64) -> ServiceState {
        let started = Utc::now() - chrono::Duration::seconds(started_secs_ago);
        ServiceState {
            unit: "rein-pulse.service".into(),
            load_state: "loaded".into(),
            active_state: ActiveState::parse(active),
            sub_state: sub.into(),
            result: result.into(),
            inactive_exit_timestamp_usec: started.timestamp_micros() as u64,
            ..ServiceState::default()
        }
    }

    #[test]
    fn beats_are_judged_running_late_failed_or_overdue() {
        let now = Utc::now();
        let minute = Some(Duration::from_secs(60));
        let recently = Some(now - chrono::Duration::seconds(10));
        let long_ago = Some(now - chrono::Duration::seconds(600));
        let running = service("activating", "start", "success", 5);
        assert!(matches!(
            beat_state(Some(&running), minute, recently, now),
            BeatState::Running { late: false, .. }
        ));
        let stuck = service("activating", "start", "success", 300);
        assert!(matches!(
            beat_state(Some(&stuck), minute, recently, now),
            BeatState::Running { late: true, .. }
        ));
        let failed = service("failed", "failed", "timeout", 5);
        assert_eq!(
            beat_state(Some(&failed), minute, recently, now),
            BeatState::Failed {
                result: "timeout".into()
            }
        );
        let done = service("inactive", "dead", "success", 5);
        assert_eq!(
            beat_state(Some(&done), minute, recently, now),
            BeatState::Idle
        );
        assert!(matches!(
            beat_state(Some(&done), minute, long_ago, now),
            BeatState::Overdue { .. }
        ));
        assert_eq!(beat_state(None, minute, None, now), BeatState::NotYet);
    }

    #[test]
    fn the_pulse_fires_within_a_hundredth_of_its_interval() {
        assert_eq!(
            pulse_accuracy(Duration::from_secs(1)),
            Duration::from_millis(10)
        );
        assert_eq!(
            pulse_accuracy(Duration::from_secs(60)),
            Duration::from_millis(600)
        );
        assert_eq!(
            pulse_accuracy(Duration::from_secs(24 * 3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            pulse_accuracy(Duration::from_millis(10)),
            Duration::from_millis(1)
        );
    }
}
