//! `rein worker start|kill|rm|ls|logs|attach|tell|screen` and the hidden `rein worker host`.

use std::io::IsTerminal;
use std::os::fd::AsFd;

use crate::cli::fleet::{connect, worker_table};
use crate::cli::{output, read_body, Context, WorkerCommand};
use crate::fleet::worktree::WorktreeRequest;
use crate::fleet::{block_on, workers};
use crate::worker::pty::{self, AttachOptions, AttachOutcome, RawModeGuard};

pub fn run(context: &Context, command: WorkerCommand) -> anyhow::Result<()> {
    match command {
        WorkerCommand::Start {
            id,
            prompt,
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
            let brief = match prompt {
                Some(prompt) => read_body(&prompt, "brief")?,
                None => String::new(),
            };
            let request = workers::StartRequest {
                id,
                brief,
                command,
                model,
                memory_max,
                cpu_quota,
                env,
                dir,
                worktree: worktree.map(|repo| WorktreeRequest { repo, branch, base }),
                loop_name: None,
            };
            let config = context.config()?;
            // Everything the user typed is checked before systemd is even asked.
            workers::prepare(&context.paths, &config, &request)?;
            let record = block_on(async {
                let manager = connect().await?;
                workers::start(&manager, &context.paths, &config, &request).await
            })??;
            if context.json {
                output::json(&record)?;
            } else {
                let place = record
                    .worktree
                    .as_ref()
                    .map(|w| format!(" in worktree {} (branch {})", w.path.display(), w.branch))
                    .or_else(|| record.dir.as_ref().map(|d| format!(" in {}", d.display())))
                    .unwrap_or_default();
                output::lines([
                    format!(
                        "started worker {} ({}){place}, sandbox {}",
                        record.id,
                        crate::fleet::UnitNames::new(&context.paths).worker(&record.id),
                        record.sandbox.as_deref().unwrap_or("unchecked")
                    ),
                    format!(
                        "attach with `rein worker attach {}`; logs with `rein worker logs {}`",
                        record.id, record.id
                    ),
                ])?;
            }
            Ok(())
        }
        WorkerCommand::Kill { id } => {
            let report = block_on(async {
                let manager = connect().await?;
                workers::kill(&manager, &context.paths, &id).await
            })??;
            if context.json {
                output::json(&report)?;
            } else {
                let mut lines = vec![if report.stopped_unit {
                    format!("killed worker {id}")
                } else {
                    format!("worker {id} was not running; it stays stopped")
                }];
                if !report.withdrawn.is_empty() {
                    lines.push(format!(
                        "withdrew its pending asks: {}",
                        report.withdrawn.join(", ")
                    ));
                }
                lines.push(format!(
                    "`rein worker rm {id}` removes it (and its worktree)"
                ));
                output::lines(lines)?;
            }
            Ok(())
        }
        WorkerCommand::Rm { id, force } => {
            let done = block_on(async {
                let manager = connect().await?;
                workers::remove(&manager, &context.paths, &id, force).await
            })??;
            let mut lines = vec![format!("removed worker {id}")];
            lines.extend(done);
            output::lines(lines)?;
            Ok(())
        }
        WorkerCommand::Ls => {
            let views = block_on(async {
                let manager = connect().await?;
                workers::list(&manager, &context.paths).await
            })??;
            if context.json {
                output::json(&views)?;
            } else if views.is_empty() {
                output::lines(["no workers (`rein worker start ID BRIEF` starts one)".to_owned()])?;
            } else {
                output::lines(worker_table(&views))?;
            }
            Ok(())
        }
        WorkerCommand::Logs { id, follow, lines } => {
            workers::check_known(&context.paths, &id)?;
            crate::cli::fleet::logs(context, Some(&id), follow, lines)
        }
        WorkerCommand::Attach { id } => attach(context, &id),
        WorkerCommand::Tell { id, text, settle } => {
            let text = read_body(&text, "text")?;
            crate::cli::require_body(&text, "text")?;
            let socket = running_socket(context, &id)?;
            let told = pty::request::tell(&socket, &text, settle.0)?;
            if context.json {
                output::json(&told)?;
            } else {
                output::lines([format!(
                    "told worker {id} ({} bytes{})",
                    told.bytes,
                    if told.bracketed_paste {
                        ", as a bracketed paste"
                    } else {
                        ""
                    }
                )])?;
            }
            Ok(())
        }
        WorkerCommand::Screen { id } => {
            let socket = running_socket(context, &id)?;
            let screen = pty::request::screen(&socket)?;
            if context.json {
                output::json(&screen)?;
            } else {
                let mut lines = screen.lines;
                while lines.last().is_some_and(|line| line.is_empty()) {
                    lines.pop();
                }
                output::lines(lines)?;
            }
            Ok(())
        }
        WorkerCommand::Host {
            id,
            loop_name,
            command,
        } => crate::cli::exited(crate::worker::host::serve(
            &context.paths,
            &id,
            loop_name.as_deref(),
            command,
        )?),
    }
}

/// The attach socket of a running worker; not found (exit 1) when there is none.
fn running_socket(context: &Context, id: &str) -> anyhow::Result<std::path::PathBuf> {
    let socket = context.data().worker_socket(id)?;
    if !socket.exists() {
        return Err(crate::Error::NotFound(format!(
            "worker {id} is not running in profile {} (no socket {}); `rein worker ls` lists workers",
            context.paths.profile,
            socket.display()
        ))
        .into());
    }
    Ok(socket)
}

fn attach(context: &Context, id: &str) -> anyhow::Result<()> {
    let socket = running_socket(context, id)?;
    let stdin = std::io::stdin();
    let _raw = if stdin.is_terminal() {
        Some(RawModeGuard::new(stdin.as_fd())?)
    } else {
        None
    };
    if stdin.is_terminal() {
        eprint!("rein: attached to worker {id}; press Ctrl-] to detach\r\n");
    }
    let outcome = pty::attach(&AttachOptions::new(socket), stdin, std::io::stdout())?;
    drop(_raw);
    match outcome {
        AttachOutcome::Detached => {
            eprintln!("\nrein: detached; worker {id} keeps running");
            Ok(())
        }
        AttachOutcome::AgentExited(code) => {
            eprintln!("\nrein: the agent of worker {id} exited with {code}");
            Ok(())
        }
        AttachOutcome::Replaced => {
            eprintln!("\nrein: another terminal attached to worker {id}; this one is detached");
            Ok(())
        }
        AttachOutcome::ConnectionClosed => {
            eprintln!();
            Err(crate::error::Error::Failed(format!("the connection to worker {id} closed")).into())
        }
    }
}
