//! `rein init`: the config and a seeded data dir. Never overwrites what a user wrote.

use std::path::Path;

use crate::config::{self, Preset};
use crate::error::Result;
use crate::mailbox::{Filing, Mailbox, NewAsk};
use crate::store::{self, DataDir};

const PLAYBOOK: &str = "# Playbook

How this fleet decides. The judge (an agent looping on `rein wait --json`, or the LLM in
`llm` mode) reads this file before every move.

## Priorities
1. Keep asks answered quickly: a worker blocked on a human is the most expensive state.
2. Move goals forward one small, reviewable step at a time.

## Guardrails
- Irreversible actions (merge, deploy, delete, publish, pay) always wait for a human
  answer: `rein ask --prompt \"...\" --options yes,no`.
- Claim a job before working on it (`rein claim NAME`) so no two workers take it.
- Put deliverables a human should read in `reports/`.
";

const SETUP_GOAL: &str = "# Set up rein

Desired state: this data dir describes real work.

- PLAYBOOK.md says how decisions are made here.
- goals/ holds one file per outcome you want (`rein goal write ID -`).
- sensors/ holds scripts that each print one JSON object about the world
  (`rein sensor write NAME -`); `rein sense` runs them.
- The pending setup ask is answered (`rein asks`, then `rein answer ID done`).
";

const TODAY_SENSOR: &str = r#"#!/bin/sh
# Prints today's date, so the world changes once a day even when nothing else does.
printf '{"date":"%s","weekday":"%s"}\n' "$(date +%F)" "$(date +%A)"
"#;

const SETUP_PROMPT: &str = "rein is set up. Review PLAYBOOK.md, goals/setup.md and sensors/today.sh in the data dir, then answer done.";

/// What `rein init` did with each file.
#[derive(Debug, Default, serde::Serialize)]
pub struct InitReport {
    pub config: String,
    pub data_dir: String,
    pub created: Vec<String>,
    pub kept: Vec<String>,
    pub setup_ask: Option<String>,
}

/// Writes the config if missing (with `preset`), seeds the data dir, and files the setup ask
/// the first time only.
pub fn init(config_path: &Path, dir: &DataDir, preset: Preset) -> Result<InitReport> {
    let mut report = InitReport {
        config: config_path.display().to_string(),
        data_dir: dir.root().display().to_string(),
        ..InitReport::default()
    };
    // Validate before writing anything: an existing broken config stops init.
    if config_path.exists() {
        config::Config::load(config_path)?;
    }
    if let Some(parent) = config_path.parent() {
        store::ensure_dir(parent)?;
    }
    let mut note = |path: &Path, created: bool| {
        let shown = path.display().to_string();
        if created {
            report.created.push(shown);
        } else {
            report.kept.push(shown);
        }
    };
    note(
        config_path,
        store::seed_file(config_path, config::template(preset).as_bytes(), 0o644)?,
    );
    dir.create_dirs()?;
    note(
        &dir.playbook(),
        store::seed_file(&dir.playbook(), PLAYBOOK.as_bytes(), 0o644)?,
    );
    let goal = dir.goal("setup")?;
    note(
        &goal,
        store::seed_file(&goal, SETUP_GOAL.as_bytes(), 0o644)?,
    );
    let sensor = dir.sensor("today")?;
    note(
        &sensor,
        store::seed_file(&sensor, TODAY_SENSOR.as_bytes(), 0o755)?,
    );
    if !dir.seeded_marker().exists() {
        let (ask, filing) = Mailbox::new(dir.clone()).file(&NewAsk {
            worker: "rein".into(),
            prompt: SETUP_PROMPT.into(),
            reference: Some("goals/setup.md".into()),
            options: vec!["done".into()],
        })?;
        if filing == Filing::New {
            crate::journal::record(
                dir,
                "init",
                &format!("seeded the data dir; setup ask {}", ask.id),
            )?;
        }
        report.setup_ask = Some(ask.id);
        store::write_atomic(&dir.seeded_marker(), b"1\n")?;
    }
    Ok(report)
}
