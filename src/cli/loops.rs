//! `rein loop add|ls|tick|close|reopen|rm|update-prompt|move|show|import` and the hidden
//! `rein loop fire` that a loop's timer runs.

use std::path::Path;

use crate::cli::fleet::connect;
use crate::cli::{output, read_body, Context, LoopCommand};
use crate::error::Error;
use crate::fleet::loops::{self, AddRequest, SessionSpec};
use crate::fleet::{block_on, loop_import, UnitNames};

fn prompt_text(prompt: Option<String>, file: Option<&Path>) -> anyhow::Result<String> {
    match (prompt, file) {
        (Some(prompt), _) => read_body(&prompt, "prompt"),
        (None, Some(file)) => match crate::store::read_user_text(file) {
            Ok(Some(text)) => Ok(text),
            Ok(None) => Err(Error::invalid(format!(
                "--prompt-file {}: no such file",
                file.display()
            ))
            .into()),
            Err(error) => {
                Err(Error::invalid(format!("--prompt-file {}: {error}", file.display())).into())
            }
        },
        (None, None) => Ok(String::new()),
    }
}

pub fn run(context: &Context, command: LoopCommand) -> anyhow::Result<()> {
    match command {
        LoopCommand::Add {
            name,
            schedule,
            dispatch,
            prompt,
            prompt_file,
            tick_script,
            tick_args,
            desktop,
            settle,
            command,
            model,
            memory_max,
            cpu_quota,
            env,
            dir,
            worktree,
            branch,
            base,
        } => {
            let request = AddRequest {
                name,
                schedule,
                dispatch,
                prompt: prompt_text(prompt, prompt_file.as_deref())?,
                tick_script,
                tick_args,
                desktop,
                paste_settle: settle.map(|s| s.0),
                session: SessionSpec {
                    command,
                    model,
                    env,
                    dir,
                    worktree,
                    branch,
                    base,
                    memory_max,
                    cpu_quota,
                },
                imported_from: None,
            };
            let config = context.config()?;
            // Everything typed is checked before systemd is asked anything.
            loops::prepare(&context.paths, &config, &request)?;
            let record = block_on(async {
                let manager = connect().await?;
                loops::add(&manager, &context.paths, &config, &request).await
            })??;
            if context.json {
                output::json(&record)?;
            } else {
                let names = UnitNames::new(&context.paths);
                output::lines([
                    format!(
                        "added loop {} ({}, dispatch {}): session {}, timer {}",
                        record.name,
                        record.schedule,
                        record.dispatch.name(),
                        names.worker(&record.name),
                        if record.schedule == "none" {
                            "none".to_owned()
                        } else {
                            names.loop_timer(&record.name)
                        }
                    ),
                    format!(
                        "`rein loop ls` shows it; `rein worker attach {}` is its terminal",
                        record.name
                    ),
                ])?;
            }
            Ok(())
        }
        LoopCommand::Ls => {
            let views = block_on(async {
                let manager = connect().await?;
                loops::list(&manager, &context.paths).await
            })??;
            if context.json {
                output::json(&views)?;
            } else if views.is_empty() {
                output::lines([
                    "no loops (`rein loop add NAME --schedule SPEC --dispatch KIND` adds one)"
                        .to_owned(),
                ])?;
            } else {
                let rows = views
                    .iter()
                    .map(|view| {
                        vec![
                            view.name.clone(),
                            view.state.clone(),
                            view.restarts.to_string(),
                            view.schedule.clone(),
                            view.last_fire_shown.clone().unwrap_or_else(|| "-".into()),
                            view.next_fire_shown.clone().unwrap_or_else(|| "-".into()),
                            view.last_dispatch
                                .as_ref()
                                .map(|d| {
                                    format!(
                                        "{}: {}",
                                        if d.ok { "ok" } else { "failed" },
                                        output::short(d.result.lines().next().unwrap_or(""), 50)
                                    )
                                })
                                .unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                output::lines(output::table(
                    &[
                        "NAME",
                        "STATE",
                        "RESTARTS",
                        "SCHEDULE",
                        "LAST FIRE",
                        "NEXT FIRE",
                        "LAST DISPATCH",
                    ],
                    rows,
                ))?;
            }
            Ok(())
        }
        LoopCommand::Tick { name } => fire(context, &name, "tick"),
        LoopCommand::Fire { name } => fire(context, &name, "timer"),
        LoopCommand::Close { name } => {
            let record = block_on(async {
                let manager = connect().await?;
                loops::close(&manager, &context.paths, &name).await
            })??;
            if context.json {
                output::json(&record)?;
            } else {
                output::lines([format!(
                    "closed loop {name}: its timer and session are stopped; `rein loop reopen {name}` brings them back"
                )])?;
            }
            Ok(())
        }
        LoopCommand::Reopen { name } => {
            let config = context.config()?;
            let record = block_on(async {
                let manager = connect().await?;
                loops::reopen(&manager, &context.paths, &config, &name).await
            })??;
            if context.json {
                output::json(&record)?;
            } else {
                output::lines([format!("reopened loop {name} ({})", record.schedule)])?;
            }
            Ok(())
        }
        LoopCommand::Rm { name, force } => {
            let done = block_on(async {
                let manager = connect().await?;
                loops::remove(&manager, &context.paths, &name, force).await
            })??;
            let mut lines = vec![format!("removed loop {name}")];
            lines.extend(done);
            output::lines(lines)?;
            Ok(())
        }
        LoopCommand::UpdatePrompt {
            name,
            prompt,
            prompt_file,
            repaste,
        } => {
            let config = context.config()?;
            let text = prompt_text(prompt, prompt_file.as_deref())?;
            let told = loops::update_prompt(&context.paths, &config, &name, &text, repaste)?;
            if context.json {
                output::json(&serde_json::json!({ "name": name, "repasted": told }))?;
            } else {
                output::lines([match told {
                    Some(told) => format!(
                        "updated the prompt of loop {name} and typed it into its session ({} bytes)",
                        told.bytes
                    ),
                    None => format!(
                        "updated the prompt of loop {name}; it is typed at the next fire or restart"
                    ),
                }])?;
            }
            Ok(())
        }
        LoopCommand::Move { name, desktop } => {
            loops::move_to(&context.paths, &name, desktop)?;
            output::lines([format!(
                "loop {name} belongs on desktop {desktop}; the Konsole bridge moves its tab"
            )])?;
            Ok(())
        }
        LoopCommand::Show { name } => show(context, &name),
        LoopCommand::Import { path, dry_run } => {
            let config = context.config()?;
            let plan = loop_import::plan(&path)?;
            let report = if dry_run {
                loop_import::Report::planned(&plan)
            } else {
                block_on(async {
                    let manager = connect().await?;
                    loop_import::import(&manager, &context.paths, &config, &plan).await
                })??
            };
            if context.json {
                output::json(&report)?;
            } else {
                output::lines(report.lines())?;
            }
            if report.failed.is_empty() {
                Ok(())
            } else {
                Err(Error::Failed(format!(
                    "{} of the loops could not be imported (see above)",
                    report.failed.len()
                ))
                .into())
            }
        }
    }
}

fn fire(context: &Context, name: &str, trigger: &str) -> anyhow::Result<()> {
    let config = context.config()?;
    let record = loops::fire(&context.paths, &config, name, trigger)?;
    if context.json {
        output::json(&record)?;
    } else if trigger == "tick" && record.ok {
        output::lines([format!(
            "loop {name} fired ({}): {}",
            record.dispatch.name(),
            record.result
        )])?;
    }
    if record.ok {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "loop {name}: its dispatch ({}) failed: {}",
            record.dispatch.name(),
            record.result
        ))
        .into())
    }
}

/// `rein loop show NAME`: the Konsole bridge's program opens (or finds) the loop's tab.
fn show(context: &Context, name: &str) -> anyhow::Result<()> {
    loops::read(&context.paths, name)?;
    let bin = std::env::current_exe()?;
    let bridge = bin.with_file_name("rein-bridge-konsole");
    let status = std::process::Command::new(&bridge)
        .args(["--show-loop", name])
        .status()
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot run {} ({error}); the Konsole bridge is installed beside rein",
                bridge.display()
            )
        })?;
    // The bridge's program has said what happened; rein ends as it did.
    crate::cli::exited(status.code().unwrap_or(1))
}
