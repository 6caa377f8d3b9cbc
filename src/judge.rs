//! The judge in `llm` mode: on a changed world, one beat runs the configured one-shot command
//! (`runner.tick`, or the preset's) with a prompt file, reads back one typed [`Move`] and
//! executes it. Every decision is journaled; a daily budget caps the calls; a failing judge
//! backs off exponentially (in beats). In `agent` mode none of this runs: the judge is an agent
//! looping on `rein wait`.
//!
//! The judge can only make rein's own moves. Irreversible actions (merge, deploy, delete,
//! publish, pay) are never moves: a worker that wants one must `rein ask` a human first.

use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{self, Config};
use crate::error::{Error, Result};
use crate::mailbox::{Mailbox, NewAsk};
use crate::paths::Paths;
use crate::store::{self, validate_id};
use crate::{journal, notes};

pub const FORMAT_VERSION: u32 = 1;

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

/// Runs `command` with `sh -c`, killing it after `timeout`; returns its stdout.
fn run_tick(paths: &Paths, command: &str, timeout: Duration) -> Result<String> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .current_dir(&paths.data_dir)
        .env("REIN_DATA_DIR", &paths.data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::invalid(format!("could not start the judge command: {e}")))?;
    let pid = child.id() as i32;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::invalid("no stdout"))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| Error::invalid("no stderr"))?;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = store::read_capped(&mut stdout, 1 << 20)
            .map(|(bytes, _)| bytes)
            .unwrap_or_default();
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        let err = store::read_capped(&mut stderr, 2048)
            .map(|(bytes, _)| bytes)
            .unwrap_or_default();
        let status = child.wait();
        let _ = done_tx.send((out, err, status));
    });
    let (out, err, status) = match done_rx.recv_timeout(timeout) {
        Ok(done) => done,
        Err(_) => {
            // SAFETY: signalling the process group we created for the judge.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            return Err(Error::invalid(format!(
                "the judge command ran longer than {}",
                crate::duration::Span(timeout)
            )));
        }
    };
    let status =
        status.map_err(|e| Error::invalid(format!("waiting for the judge failed: {e}")))?;
    if !status.success() {
        return Err(Error::invalid(format!(
            "the judge command failed ({status}): {}",
            String::from_utf8_lossy(&err).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

use std::os::unix::process::CommandExt;

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
        let output = run_tick(paths, &command, config.judge.timeout.0)?;
        let decided = parse_move(&output)?;
        decided.validate()?;
        execute(paths, config, &decided, manager).await?;
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
