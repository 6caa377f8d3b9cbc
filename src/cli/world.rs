//! `rein sense`, `state`, `wait`: the world and the judge's view of it.

use std::time::Instant;

use crate::cli::{output, Context};
use crate::duration::Span;
use crate::error::Error;
use crate::state::{self, State, Token};
use crate::{journal, world};

pub fn sense(context: &Context) -> anyhow::Result<()> {
    let config = context.config()?;
    let data = context.data();
    let report = world::sense(&data, &config.sensors)?;
    let failed: Vec<&str> = report
        .snapshots
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.sensor.as_str())
        .collect();
    if report.changed {
        journal::record_or_warn(
            &data,
            "sense",
            &format!(
                "world {} ({} sensors, {} failed)",
                report.hash,
                report.snapshots.len(),
                failed.len()
            ),
        );
    }
    if context.json {
        output::json(&report)?;
    } else {
        let mut lines = vec![report.hash.clone()];
        for snapshot in report.snapshots.iter().filter(|s| !s.ok) {
            lines.push(format!(
                "sensor {} failed: {}",
                snapshot.sensor,
                snapshot.error.as_deref().unwrap_or("")
            ));
        }
        output::lines(lines)?;
    }
    Ok(())
}

/// Adds the workers to a state, from systemd when a user manager answers; otherwise the
/// state says why they are missing instead of failing. It connects up front, so a waiter
/// pays for the connection before it blocks, not after it wakes.
struct Workers {
    runtime: tokio::runtime::Runtime,
    manager: Option<crate::systemd::Manager>,
}

impl Workers {
    fn connect() -> anyhow::Result<Workers> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let manager = runtime.block_on(crate::systemd::Manager::connect()).ok();
        Ok(Workers { runtime, manager })
    }

    fn fill(&mut self, context: &Context, mut state: State) -> State {
        // The state has just listed the mailbox: each worker's pending ask comes from there.
        let asks = &state.asks;
        let listed = self.runtime.block_on(async {
            if let Some(manager) = &self.manager {
                if let Ok(workers) =
                    crate::fleet::workers::list_given_asks(manager, &context.paths, asks).await
                {
                    return Ok(workers);
                }
            }
            // No connection yet, or it went stale during a long wait: connect again.
            let manager = crate::systemd::Manager::connect().await?;
            crate::fleet::workers::list_given_asks(&manager, &context.paths, asks).await
        });
        match listed {
            Ok(workers) => {
                state.workers = workers
                    .iter()
                    .filter_map(|w| serde_json::to_value(w).ok())
                    .collect()
            }
            Err(error) => state.problems.push(format!("workers unknown: {error}")),
        }
        state
    }
}

pub fn state(context: &Context) -> anyhow::Result<()> {
    if let Some(warning) = context.data().mode_warning() {
        eprintln!("rein: warning: {warning}");
    }
    let state = state::state(&context.data(), &context.paths.profile)?;
    print_state(context, &Workers::connect()?.fill(context, state))?;
    Ok(())
}

pub fn wait(
    context: &Context,
    only_asks: bool,
    timeout: Option<Span>,
    since: Option<String>,
) -> anyhow::Result<()> {
    let since: Option<Token> = since.as_deref().map(str::parse).transpose()?;
    let deadline = timeout.map(|t| Instant::now() + t.0);
    let mut workers = Workers::connect()?;
    match state::wait(
        &context.data(),
        &context.paths.profile,
        since.as_ref(),
        only_asks,
        deadline,
    )? {
        Some(state) => {
            print_state(context, &workers.fill(context, state))?;
            Ok(())
        }
        None => Err(Error::TimedOut(format!(
            "nothing new within {}",
            timeout.map(|t| t.to_string()).unwrap_or_default()
        ))
        .into()),
    }
}

fn print_state(context: &Context, state: &State) -> anyhow::Result<()> {
    if context.json {
        return output::json(state);
    }
    let mut lines = vec![
        format!("profile   {}", state.profile),
        format!("data dir  {}", state.data_dir),
        format!("world     {}", state.world),
    ];
    if let Some(woke) = &state.woke {
        let mut why = Vec::new();
        let mut list = |what: &str, ids: &[String]| {
            if !ids.is_empty() {
                why.push(format!("{what} {}", ids.join(", ")));
            }
        };
        list("new asks", &woke.new_asks);
        list("answered", &woke.answered);
        list("withdrawn", &woke.withdrawn);
        list("notes", &woke.notes);
        let workers: Vec<String> = woke
            .workers
            .iter()
            .map(|w| format!("{} {}", w.id, w.health))
            .collect();
        list("workers", &workers);
        if woke.world_changed {
            why.push("world changed".to_owned());
        }
        lines.push(format!("woke      {}", why.join("; ")));
    }
    if let Some(snapshots) = state.snapshots.as_object() {
        lines.push(format!("sensors   {}", snapshots.len()));
        for (name, snapshot) in snapshots {
            let said = if snapshot["ok"] == true {
                output::short(&snapshot["value"].to_string(), 60)
            } else {
                format!(
                    "failed: {}",
                    output::short(snapshot["error"].as_str().unwrap_or_default(), 60)
                )
            };
            lines.push(format!("  {name}  {said}"));
        }
    }
    lines.push(format!("asks      {}", state.asks.len()));
    for ask in &state.asks {
        lines.push(format!(
            "  {}  {}  {}  {}",
            ask["id"].as_str().unwrap_or_default(),
            ask["worker"].as_str().unwrap_or_default(),
            ask["state"].as_str().unwrap_or_default(),
            output::short(ask["prompt"].as_str().unwrap_or_default(), 60)
        ));
    }
    lines.push(format!("goals     {}", state.goals.len()));
    for goal in &state.goals {
        lines.push(format!("  {}  {}", goal.id, goal.title));
    }
    if !state.workers.is_empty() {
        lines.push(format!("workers   {}", state.workers.len()));
        for worker in &state.workers {
            lines.push(format!(
                "  {}  {}",
                worker["id"].as_str().unwrap_or_default(),
                worker["health"].as_str().unwrap_or_default()
            ));
        }
    }
    if !state.claims.is_empty() {
        lines.push(format!("claims    {}", state.claims.len()));
        for claim in &state.claims {
            lines.push(format!(
                "  {}  {} (pid {})",
                claim.name, claim.worker, claim.pid
            ));
        }
    }
    lines.push(format!("journal   last {}", state.journal.len()));
    lines.extend(state.journal.iter().map(|line| format!("  {line}")));
    for problem in &state.problems {
        lines.push(format!("problem   {problem}"));
    }
    lines.push(format!("token     {}", state.token));
    output::lines(lines)
}
