//! The judge in `llm` mode: on a changed world, one beat runs the configured one-shot command
//! (`runner.tick`, or the preset's) with a prompt file, reads back one typed [`Move`] and
//! executes it. Every decision is journaled; a daily budget caps the calls; a failing judge
//! backs off exponentially (in beats). In `agent` mode none of this runs: the judge is an agent
//! looping on `rein wait`.
//!
//! The judge can only make rein's own moves. Irreversible actions (merge, deploy, delete,
//! publish, pay) are never moves: a worker that wants one must `rein ask` a human first.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{self, Config};
use crate::error::{Error, Result};
use crate::mailbox::{Mailbox, NewAsk};
use crate::paths::Paths;
use crate::store::{self, validate_id};
use crate::systemd::{Manager, TransientUnit, DEFAULT_STOP_GRACE};
use crate::{capture, journal, notes};

pub const FORMAT_VERSION: u32 = 1;

/// The most a tick may print on stdout (one move, in JSON); past it the tick is stopped.
const TICK_STDOUT_MAX: usize = 1 << 20;
/// How much of a tick's stderr is kept to say why it failed.
const TICK_STDERR_KEPT: usize = 4096;

/// The one move a tick may make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "move", rename_all = "snake_case", deny_unknown_fields)]
pub enum Move {
    /// Nothing needs doing.
    None {
        #[serde(default)]
        reason: String,
    },
    /// Ask the human (without blocking the beat); the answer shows up in `rein state`.
    Ask {
        prompt: String,
        #[serde(default)]
        options: Vec<String>,
        #[serde(default, rename = "ref")]
        reference: Option<String>,
    },
    /// Tell the human something.
    Notify { message: String },
    /// Start a worker with a brief.
    StartWorker { id: String, brief: String },
    /// Stop a worker.
    KillWorker { id: String },
    /// Create or replace a goal.
    WriteGoal { id: String, body: String },
    /// Archive a goal that is met or obsolete.
    ArchiveGoal { id: String },
}

impl Move {
    /// Checks ids and texts before anything is executed.
    pub fn validate(&self) -> Result<()> {
        let nonempty = |what: &str, text: &str| {
            if text.trim().is_empty() {
                Err(Error::invalid(format!("the move's {what} is empty")))
            } else {
                Ok(())
            }
        };
        match self {
            Move::None { .. } => Ok(()),
            Move::Ask {
                prompt, options, ..
            } => {
                nonempty("prompt", prompt)?;
                if options.iter().any(|o| o.trim().is_empty()) {
                    return Err(Error::invalid("an option of the ask is empty"));
                }
                Ok(())
            }
            Move::Notify { message } => nonempty("message", message),
            Move::StartWorker { id, brief } => {
                validate_id("worker id", id)?;
                nonempty("brief", brief)
            }
            Move::KillWorker { id } => validate_id("worker id", id),
            Move::WriteGoal { id, body } => {
                validate_id("goal id", id)?;
                nonempty("goal body", body)
            }
            Move::ArchiveGoal { id } => validate_id("goal id", id),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Move::None { reason } if reason.is_empty() => "none".to_owned(),
            Move::None { reason } => format!("none ({reason})"),
            Move::Ask { prompt, .. } => format!("ask {prompt:?}"),
            Move::Notify { message } => format!("notify {message:?}"),
            Move::StartWorker { id, .. } => format!("start worker {id}"),
            Move::KillWorker { id } => format!("kill worker {id}"),
            Move::WriteGoal { id, .. } => format!("write goal {id}"),
            Move::ArchiveGoal { id } => format!("archive goal {id}"),
        }
    }
}

/// Finds the move in what the judge printed: the last JSON object that parses as one, so
/// prose around it does no harm.
pub fn parse_move(output: &str) -> Result<Move> {
    let mut last_error = None;
    for (start, _) in output
        .match_indices('{')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let mut stream =
            serde_json::Deserializer::from_str(&output[start..]).into_iter::<serde_json::Value>();
        let Some(Ok(value)) = stream.next() else {
            continue;
        };
        if value.get("move").is_none() {
            continue;
        }
        match serde_json::from_value::<Move>(value) {
            Ok(found) => return Ok(found),
            Err(error) => last_error = Some(error.to_string()),
        }
    }
    Err(Error::invalid(match last_error {
        Some(error) => format!("the judge printed a move rein does not accept: {error}"),
        None => "the judge printed no move (a JSON object with a \"move\" field)".to_owned(),
    }))
}

/// `judge.json`: budget and backoff across beats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JudgeRecord {
    pub version: u32,
    /// The UTC day the count is for.
    pub day: String,
    pub ticks_today: u32,
    /// Consecutive failed ticks.
    pub failures: u32,
    /// No tick before this beat (backoff after failures).
    pub skip_until_beat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "judged", rename_all = "snake_case")]
pub enum Judgment {
    /// Nothing changed, so the judge was not called.
    Unchanged,
    /// The daily budget is spent.
    OverBudget {
        limit: u32,
    },
    /// Backing off after failures.
    BackingOff {
        until_beat: u64,
    },
    Moved {
        decision: String,
    },
    Failed {
        error: String,
        retry_at_beat: u64,
    },
}

const PROMPT_HEAD: &str = "You are the judge of a rein fleet. Decide ONE move that best advances the goals under the playbook, given the state below. Reply with exactly one JSON object (prose around it is ignored), one of:
{\"move\":\"none\",\"reason\":\"...\"}
{\"move\":\"ask\",\"prompt\":\"...\",\"options\":[\"yes\",\"no\"],\"ref\":\"...\"}
{\"move\":\"notify\",\"message\":\"...\"}
{\"move\":\"start_worker\",\"id\":\"lowercase-id\",\"brief\":\"...\"}
{\"move\":\"kill_worker\",\"id\":\"...\"}
{\"move\":\"write_goal\",\"id\":\"...\",\"body\":\"...\"}
{\"move\":\"archive_goal\",\"id\":\"...\"}
Irreversible actions (merge, deploy, delete, publish, pay) are never yours to take: brief a worker, who must ask a human first.
";

fn prompt(paths: &Paths, state_json: &str) -> Result<String> {
    let dir = paths.data();
    let playbook = store::read_text(&dir.playbook())?.unwrap_or_default();
    let mut goals = String::new();
    for (id, path) in store::list(&dir.goals(), ".md")? {
        goals.push_str(&format!(
            "### goal {id}\n{}\n",
            store::read_text(&path)?.unwrap_or_default()
        ));
    }
    Ok(format!("{PROMPT_HEAD}\n## Playbook\n{playbook}\n## Goals\n{goals}\n## State\n```json\n{state_json}\n```\n"))
}

fn today() -> String {
    Utc::now().format("%Y-%m-%d").to_string()
}

/// Runs the judge's tick command once in its own sandboxed unit (`rein-judge.service`, see
/// [`crate::fleet::workers::judge_spec`]) and returns its stdout.
///
/// Its stdout and stderr come back on pipes rein passes to systemd and are read by
/// [`capture::collect`], the routine that reads every command rein runs: concurrently, each
/// with its cap, within `timeout`. systemd holds its copies of the write ends while the unit
/// is loaded, so the end of the tick is the unit's state, not end of file: when the unit's
/// process has ended (or the capture stops early: timeout, stdout over its cap) everything
/// left in the unit is killed and the unit removed, which closes the pipes.
async fn run_tick(
    manager: &Manager,
    paths: &Paths,
    config: &Config,
    command: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    use std::os::fd::{AsRawFd, OwnedFd};
    let (out_read, out_write) = std::io::pipe()?;
    let (err_read, err_write) = std::io::pipe()?;
    let spec = crate::fleet::workers::judge_spec(
        paths,
        config,
        command,
        out_write.as_raw_fd(),
        err_write.as_raw_fd(),
    )?;
    let unit = spec.name.clone();
    manager.remove(&unit, DEFAULT_STOP_GRACE).await?;
    let started = manager
        .start_transient(&TransientUnit::service(&spec)?)
        .await;
    // Only the unit holds the write ends now.
    drop(out_write);
    drop(err_write);
    if let Err(error) = started {
        let _ = manager.remove(&unit, DEFAULT_STOP_GRACE).await;
        return Err(anyhow::anyhow!(
            "could not start the judge command: {error}"
        ));
    }
    // The unit's end is told to the capture by closing `ended_write`; the capture asks for a
    // stop (its timeout, a full stdout, or that end) on `stop_tx`.
    let (ended_read, ended_write) = std::io::pipe()?;
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let limits = capture::Limits {
        timeout,
        stdout_cap: TICK_STDOUT_MAX,
        stderr_cap: TICK_STDERR_KEPT,
        past_cap: capture::PastCap::Stop,
    };
    let reading = tokio::task::spawn_blocking(move || {
        let mut stop = || {
            let _ = stop_tx.send(());
        };
        capture::collect(
            OwnedFd::from(out_read),
            OwnedFd::from(err_read),
            Some(OwnedFd::from(ended_read)),
            &limits,
            &mut stop,
        )
    });
    let watching = async {
        let ended = |state: &crate::systemd::ServiceState| {
            matches!(
                state.active_state,
                crate::systemd::ActiveState::Inactive | crate::systemd::ActiveState::Failed
            ) || state.sub_state == "exited"
        };
        let finished = tokio::select! {
            finished = manager.wait_for_state(&unit, ended, timeout) => Some(finished),
            _ = stop_rx.recv() => None,
        };
        drop(ended_write);
        // Whatever the tick left running goes, and removing the unit closes systemd's copies
        // of the pipes, so the capture ends.
        let _ = manager
            .kill(&unit, crate::systemd::KillTarget::All, libc::SIGKILL)
            .await;
        let _ = manager.remove(&unit, DEFAULT_STOP_GRACE).await;
        finished
    };
    let (finished, collected) = tokio::join!(watching, reading);
    let collected =
        collected.map_err(|_| anyhow::anyhow!("reading the judge's output failed"))??;
    let too_long = || {
        anyhow::anyhow!(
            "the judge command ran longer than {}",
            crate::duration::Span(timeout)
        )
    };
    match collected.ending {
        capture::Ending::TimedOut => return Err(too_long()),
        capture::Ending::OverCap => {
            return Err(anyhow::anyhow!(
                "the judge command printed more than {TICK_STDOUT_MAX} bytes; it was stopped"
            ))
        }
        capture::Ending::Finished => {}
    }
    let state = match finished {
        Some(Ok(state)) => state,
        Some(Err(crate::systemd::SystemdError::Timeout { .. })) => return Err(too_long()),
        Some(Err(error)) => return Err(error.into()),
        // The capture stopped first, and said why above.
        None => return Err(too_long()),
    };
    if state.exec_main_status != 0 || state.result != "success" {
        return Err(anyhow::anyhow!(
            "the judge command failed (exit status {}, result {}): {}",
            state.exec_main_status,
            state.result,
            String::from_utf8_lossy(&collected.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&collected.stdout).into_owned())
}

/// One judgment for beat `beat`. `execute` carries out a validated move.
pub async fn judge(
    paths: &Paths,
    config: &Config,
    beat: u64,
    world_changed: bool,
    state_json: &str,
    manager: Option<&crate::systemd::Manager>,
) -> anyhow::Result<Judgment> {
    let dir = paths.data();
    if !world_changed {
        return Ok(Judgment::Unchanged);
    }
    let path = dir.root().join("judge.json");
    let mut record: JudgeRecord = store::read_json(&path)?.unwrap_or_default();
    record.version = FORMAT_VERSION;
    if record.day != today() {
        record.day = today();
        record.ticks_today = 0;
    }
    let limit = config.judge.max_ticks_per_day;
    if record.ticks_today >= limit {
        journal::record(
            &dir,
            "judge",
            &format!("skipped: the budget of {limit} ticks per day is spent"),
        )?;
        return Ok(Judgment::OverBudget { limit });
    }
    if beat < record.skip_until_beat {
        return Ok(Judgment::BackingOff {
            until_beat: record.skip_until_beat,
        });
    }
    record.ticks_today += 1;
    record.last = Some(Utc::now());
    store::write_json(&path, &record)?;
    let prompt_file = dir.prompts().join("judge.md");
    store::ensure_dir(&dir.prompts())?;
    store::write_atomic(&prompt_file, prompt(paths, state_json)?.as_bytes())?;
    let command = config::render_command(
        &config.tick_template(),
        &prompt_file,
        config.runner.model.as_deref(),
    )?;
    let outcome = async {
        let manager = manager.ok_or_else(|| {
            anyhow::anyhow!(
                "no systemd user manager is reachable: the judge's tick runs sandboxed in a unit"
            )
        })?;
        let output = run_tick(manager, paths, config, &command, config.judge.timeout.0).await?;
        let decided = parse_move(&output)?;
        decided.validate()?;
        execute(paths, config, &decided, Some(manager)).await?;
        anyhow::Ok(decided)
    }
    .await;
    match outcome {
        Ok(decided) => {
            record.failures = 0;
            record.skip_until_beat = 0;
            store::write_json(&path, &record)?;
            let decision = decided.describe();
            journal::record(&dir, "judge", &format!("beat {beat}: {decision}"))?;
            Ok(Judgment::Moved { decision })
        }
        Err(error) => {
            record.failures += 1;
            let wait = 1u64 << record.failures.min(6);
            record.skip_until_beat = beat + wait;
            store::write_json(&path, &record)?;
            let error = format!("{error:#}");
            journal::record(
                &dir,
                "judge-failed",
                &format!(
                    "beat {beat}: {error}; next try at beat {} ({} failures in a row)",
                    record.skip_until_beat, record.failures
                ),
            )?;
            Ok(Judgment::Failed {
                error,
                retry_at_beat: record.skip_until_beat,
            })
        }
    }
}

async fn execute(
    paths: &Paths,
    config: &Config,
    decided: &Move,
    manager: Option<&crate::systemd::Manager>,
) -> anyhow::Result<()> {
    let dir = paths.data();
    let need_manager = || {
        manager.ok_or_else(|| {
            anyhow::anyhow!("no systemd user manager is reachable to carry out the move")
        })
    };
    match decided {
        Move::None { .. } => {}
        Move::Ask {
            prompt,
            options,
            reference,
        } => {
            Mailbox::new(dir.clone()).file(&NewAsk {
                worker: "judge".into(),
                prompt: prompt.clone(),
                reference: reference.clone(),
                options: options.clone(),
            })?;
        }
        Move::Notify { message } => {
            notes::notify(&dir, "judge", message)?;
        }
        Move::StartWorker { id, brief } => {
            let request = crate::fleet::workers::StartRequest {
                id: id.clone(),
                brief: brief.clone(),
                ..Default::default()
            };
            crate::fleet::workers::start(need_manager()?, paths, config, &request).await?;
        }
        Move::KillWorker { id } => {
            crate::fleet::workers::kill(need_manager()?, paths, id).await?;
        }
        Move::WriteGoal { id, body } => {
            dir.create_dirs()?;
            store::write_atomic(&dir.goal(id)?, body.as_bytes())?;
        }
        Move::ArchiveGoal { id } => {
            let stamp = Utc::now().format("%Y%m%dt%H%M%S%3f").to_string();
            if !store::move_file(&dir.goal(id)?, &dir.archived_goal(id, &stamp))? {
                return Err(Error::NotFound(format!("no goal {id:?} to archive")).into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_are_found_in_prose_and_checked() {
        let found =
            parse_move("Thinking...\n{\"move\": \"notify\", \"message\": \"hi {there}\"}\nDone.")
                .expect("move");
        assert_eq!(
            found,
            Move::Notify {
                message: "hi {there}".into()
            }
        );
        let last = parse_move("{\"move\":\"none\"} then {\"move\":\"kill_worker\",\"id\":\"w1\"}")
            .expect("move");
        assert_eq!(last, Move::KillWorker { id: "w1".into() });
        assert!(parse_move("no json here").is_err());
        assert!(
            parse_move("{\"move\":\"merge\",\"pr\":1}").is_err(),
            "unknown moves are refused"
        );
        assert!(parse_move("{\"move\":\"notify\",\"message\":\"x\",\"extra\":1}").is_err());
        assert!(Move::StartWorker {
            id: "../x".into(),
            brief: "b".into()
        }
        .validate()
        .is_err());
        assert!(Move::Ask {
            prompt: " ".into(),
            options: vec![],
            reference: None
        }
        .validate()
        .is_err());
    }
}
