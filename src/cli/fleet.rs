//! `rein up`, `down`, `tick`, `enable`, `disable`, `status`, `logs`: the profile in systemd.

use std::os::unix::process::CommandExt;

use crate::cli::{output, BridgeCommand, Context};
use crate::error::Error;
use crate::fleet::{self, block_on, pulse, workers};
use crate::mailbox::Mailbox;
use crate::systemd::Manager;

/// Connects to the user manager (the error says how to fix a missing one).
pub async fn connect() -> anyhow::Result<Manager> {
    Ok(Manager::connect().await?)
}

pub fn up(context: &Context) -> anyhow::Result<()> {
    let config = context.config()?;
    let report = block_on(async {
        let manager = connect().await?;
        pulse::up(&manager, &context.paths, &config).await
    })??;
    if context.json {
        output::json(&report)?;
        return Ok(());
    }
    let mut lines = vec![format!(
        "pulse {} ({}, every {}) for profile {}",
        report.pulse, report.timer, report.interval, report.profile
    )];
    if let Some(next) = report.next_beat {
        lines.push(format!(
            "next beat at {}",
            next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    for path in &report.seeded {
        lines.push(format!("seeded {path}"));
    }
    for id in &report.workers_restarted {
        lines.push(format!("restarted worker {id}"));
    }
    for name in &report.loop_timers {
        lines.push(format!("created the timer of loop {name}"));
    }
    output::lines(lines)?;
    Ok(())
}

pub fn down(context: &Context) -> anyhow::Result<()> {
    let grace = workers::stop_grace(&context.paths);
    let report = block_on(async {
        let manager = connect().await?;
        anyhow::Ok(pulse::down(&manager, &context.paths, grace).await)
    })??;
    if context.json {
        output::json(&report)?;
    } else if report.stopped.is_empty() && report.failed.is_empty() {
        output::lines([format!("profile {} was already down", report.profile)])?;
    } else {
        output::lines(report.stopped.iter().map(|u| format!("stopped {u}")))?;
    }
    if report.failed.is_empty() {
        return Ok(());
    }
    for failure in &report.failed {
        eprintln!("rein: could not stop {failure}");
    }
    Err(Error::Failed("everything else was stopped; run `rein down` again to retry".into()).into())
}

pub fn tick(context: &Context) -> anyhow::Result<()> {
    let config = context.config()?;
    let report = block_on(pulse::beat(&context.paths, &config))??;
    if context.json {
        output::json(&report)?;
    } else {
        // Under the pulse, stdout is the journal, which already has the beat as an entry of
        // its own (with REIN_BEAT): a second copy from stdout would only double it.
        let mut lines = Vec::new();
        if !crate::logging::stdout_is_journal() {
            lines.push(format!(
                "beat {}: world {} ({})",
                report.record.beat,
                report.record.world,
                if report.record.changed {
                    "changed"
                } else {
                    "unchanged"
                }
            ));
        }
        for sensor in &report.record.failed_sensors {
            lines.push(format!("sensor {sensor} failed; `rein sensor ls` says why"));
        }
        for worker in &report.failed_workers {
            lines.push(format!(
                "worker {worker} failed; `rein worker logs {worker}`"
            ));
        }
        if let Some(note) = &report.systemd {
            lines.push(note.clone());
        }
        match &report.judgment {
            None | Some(crate::judge::Judgment::Unchanged) => {}
            Some(judgment) => lines.push(format!("judge: {}", serde_json::to_string(judgment)?)),
        }
        output::lines(lines)?;
    }
    Ok(())
}

pub fn status(context: &Context) -> anyhow::Result<()> {
    // A broken config is said here too, before `rein up` or the next beat trips on it.
    let config = context.config()?;
    // One look at the mailbox serves the asks and each worker's pending ask.
    let asks = Mailbox::new(context.data()).pending()?;
    let pending: Vec<serde_json::Value> = asks.records.iter().map(|r| r.to_json()).collect();
    let (pulse, workers) = block_on(async {
        let manager = connect().await?;
        let pulse = pulse::status(&manager, &context.paths).await?;
        let workers = workers::list_given_asks(&manager, &context.paths, &pending).await?;
        anyhow::Ok((pulse, workers))
    })??;
    let warnings: Vec<String> = context.data().mode_warning().into_iter().collect();
    let sandbox = sandbox_summary(&config, &workers);
    if context.json {
        output::json(&serde_json::json!({
            "profile": context.paths.profile,
            "pulse": pulse,
            "sandbox": sandbox,
            "workers": workers,
            "asks": pending,
            "warnings": warnings,
        }))?;
        return Ok(());
    }
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| "-".into())
    };
    let mut lines = vec![format!("profile  {}", context.paths.profile)];
    if pulse.active {
        lines.push(format!(
            "pulse    up ({}), every {}, last {}, next {}",
            pulse.timer,
            pulse
                .interval
                .map(|i| i.to_string())
                .unwrap_or_else(|| "?".into()),
            time(pulse.last_elapse),
            time(pulse.next_elapse),
        ));
    } else {
        lines.push("pulse    down (`rein up` starts it)".to_owned());
    }
    let beat = match &pulse.beat {
        pulse::BeatState::NotYet => None,
        pulse::BeatState::Idle => pulse.last_beat.as_ref().map(|beat| {
            format!(
                "beat     {} at {}: world {}, succeeded",
                beat.beat,
                time(Some(beat.at)),
                beat.world
            )
        }),
        pulse::BeatState::Running { since, late } => Some(format!(
            "beat     running for {}{}",
            output::age(*since),
            if *late {
                " (late: longer than the pulse interval; `rein logs` shows what it waits on)"
            } else {
                ""
            }
        )),
        pulse::BeatState::Failed { result } => Some(format!(
            "beat     the last beat FAILED (result {result}); `rein logs` says why"
        )),
        pulse::BeatState::Overdue { last } => Some(format!(
            "beat     late: no beat since {} (more than twice the interval)",
            time(*last)
        )),
    };
    lines.extend(beat);
    lines.push(format!("sandbox  {sandbox}"));
    lines.push(format!("workers  {}", workers.len()));
    lines.extend(worker_table(&workers).into_iter().map(|l| format!("  {l}")));
    lines.push(format!("asks     {} pending", asks.records.len()));
    lines.extend(warnings.iter().map(|w| format!("warning  {w}")));
    output::lines(lines)?;
    Ok(())
}

/// What `status` says of the human gate: whether workers run fenced, checked how. It never
/// claims more than the checks at each worker's start found.
fn sandbox_summary(config: &crate::config::Config, workers: &[workers::WorkerView]) -> String {
    if config.workers.sandbox == crate::config::SandboxMode::Off {
        return "OFF (workers.sandbox = \"off\"): agents run unfenced and could answer their own asks".to_owned();
    }
    let unchecked: Vec<&str> = workers
        .iter()
        .filter(|w| w.sandbox.as_deref().is_some_and(|s| s != "enforced"))
        .map(|w| w.id.as_str())
        .collect();
    if unchecked.is_empty() {
        "strict: every worker's sandbox was checked in force at its start".to_owned()
    } else {
        format!(
            "strict, but not confirmed for {} (see `rein worker ls`)",
            unchecked.join(", ")
        )
    }
}

pub fn worker_table(workers: &[workers::WorkerView]) -> Vec<String> {
    let rows = workers
        .iter()
        .map(|w| {
            vec![
                w.id.clone(),
                w.health.to_string(),
                w.restarts.to_string(),
                w.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                w.since.map(output::age).unwrap_or_else(|| "-".into()),
                w.memory
                    .map(|m| format!("{:.1}M", m as f64 / 1048576.0))
                    .unwrap_or_else(|| "-".into()),
                w.waiting
                    .as_deref()
                    .map(|why| output::short(why, 48))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "HEALTH",
            "RESTARTS",
            "PID",
            "SINCE",
            "MEMORY",
            "WAITING ON",
        ],
        rows,
    )
}

/// `journalctl` matched on rein's own fields, so it works where `-u` does not (containers).
pub fn logs(
    context: &Context,
    worker: Option<&str>,
    follow: bool,
    lines: usize,
) -> anyhow::Result<()> {
    let mut command = std::process::Command::new("journalctl");
    command
        .arg("--no-pager")
        .arg("--output=short-iso")
        .arg(format!("--lines={lines}"))
        .arg(format!("REIN_PROFILE={}", context.paths.profile));
    if let Some(worker) = worker {
        crate::store::validate_id("worker id", worker)?;
        command.arg(format!("REIN_WORKER={worker}"));
    }
    if follow {
        command.arg("--follow");
    }
    if context.json {
        command.arg("--output=json");
    }
    let error = command.exec();
    Err(anyhow::anyhow!(
        "could not run journalctl to read the logs: {error}; install systemd's journalctl"
    ))
}

pub fn enable(context: &Context, enable: bool) -> anyhow::Result<()> {
    let report = block_on(async {
        let manager = connect().await?;
        if enable {
            fleet::enable::enable(&manager, &context.paths).await
        } else {
            fleet::enable::disable(&manager, &context.paths).await
        }
    })??;
    if context.json {
        output::json(&report)?;
    } else {
        output::lines(report.lines())?;
    }
    Ok(())
}

pub fn bridge(context: &Context, command: BridgeCommand) -> anyhow::Result<()> {
    use crate::fleet::bridges;
    let config = context.config()?;
    match command {
        BridgeCommand::Start { name } => {
            bridges::check(&config, &name)?;
            bridges::binary(&name)?;
            let unit = block_on(async {
                let manager = connect().await?;
                bridges::start(&manager, &context.paths, &config, &name).await
            })??;
            output::lines([format!(
                "started the {name} bridge ({unit}); `rein bridge ls` shows it"
            )])?;
            Ok(())
        }
        BridgeCommand::Stop { name } => {
            let stopped = block_on(async {
                let manager = connect().await?;
                bridges::stop(&manager, &context.paths, &name).await
            })??;
            output::lines([if stopped {
                format!("stopped the {name} bridge")
            } else {
                format!("the {name} bridge was not running")
            }])?;
            Ok(())
        }
        BridgeCommand::Ls => {
            let views = block_on(async {
                let manager = connect().await?;
                bridges::list(&manager, &context.paths, &config).await
            })??;
            if context.json {
                output::json(&views)?;
            } else if views.is_empty() {
                output::lines([
                    "no bridges configured (add a [bridges.NAME] section; see rein-bridge(1))"
                        .to_owned(),
                ])?;
            } else {
                let rows = views
                    .into_iter()
                    .map(|v| {
                        vec![
                            v.name,
                            v.health,
                            v.sent.to_string(),
                            v.pending.to_string(),
                            v.failed.to_string(),
                            v.unit,
                        ]
                    })
                    .collect();
                output::lines(output::table(
                    &["NAME", "HEALTH", "SENT", "PENDING", "FAILED", "UNIT"],
                    rows,
                ))?;
            }
            Ok(())
        }
        BridgeCommand::Test { name } => {
            bridges::check(&config, &name)?;
            let binary = bridges::binary(&name)?;
            let status = std::process::Command::new(&binary)
                .arg("--test")
                .env("REIN_DATA_DIR", &context.paths.data_dir)
                .env("REIN_CONFIG", &context.paths.config)
                .env("REIN_PROFILE", &context.paths.profile)
                .status()
                .map_err(|e| anyhow::anyhow!("could not run {}: {e}", binary.display()))?;
            match status.code() {
                Some(0) => Ok(()),
                Some(code) => Err(Error::Exited(code).into()),
                None => Err(
                    Error::Failed(format!("{} was killed by a signal", binary.display())).into(),
                ),
            }
        }
    }
}
