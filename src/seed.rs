//! `rein init`: the config and a seeded data dir. Never overwrites what a user wrote.
//!
//! Seeds are written once: into a data dir that has never been seeded (no `.seeded` marker).
//! After that, a seed the user archived or removed stays gone, whether `rein init` runs
//! again or `rein up` runs at every login.

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
# The date changes once a day: beats run this at most every ten minutes, so a new day
# shows within ten minutes of midnight.
# rein: every 10m
exec date '+{"date":"%F","weekday":"%A"}'
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

/// What seeding the data dir did.
#[derive(Debug, Default)]
pub struct Seeded {
    pub created: Vec<String>,
    pub kept: Vec<String>,
    pub setup_ask: Option<String>,
}

/// Seeds a data dir that was never seeded: every file only if missing, and the setup ask.
/// A data dir seeded before is left as the user keeps it.
pub fn seed(dir: &DataDir) -> Result<Seeded> {
    let mut seeded = Seeded::default();
    dir.create_dirs()?;
    if dir.seeded_marker().exists() {
        return Ok(seeded);
    }
    let files: [(std::path::PathBuf, &str, u32); 3] = [
        (dir.playbook(), PLAYBOOK, store::FILE_MODE),
        (dir.goal("setup")?, SETUP_GOAL, store::FILE_MODE),
        (dir.sensor("today")?, TODAY_SENSOR, store::SCRIPT_MODE),
    ];
    for (path, text, mode) in files {
        let shown = path.display().to_string();
        if store::seed_file(&path, text.as_bytes(), mode)? {
            seeded.created.push(shown);
        } else {
            seeded.kept.push(shown);
        }
    }
    {
        let (ask, filing) = Mailbox::new(dir.clone()).file(&NewAsk {
            worker: "rein".into(),
            prompt: SETUP_PROMPT.into(),
            reference: Some("goals/setup.md".into()),
            options: vec!["done".into()],
        })?;
        if filing == Filing::New {
            crate::journal::record_or_warn(
                dir,
                "init",
                &format!("seeded the data dir; setup ask {}", ask.id),
            );
        }
        seeded.setup_ask = Some(ask.id);
        store::write_atomic(&dir.seeded_marker(), b"1\n")?;
    }
    Ok(seeded)
}

/// Seeds the data dir for `rein up`; returns the files it created.
pub fn seed_data_dir(dir: &DataDir) -> Result<Vec<String>> {
    Ok(seed(dir)?.created)
}

/// Writes the config if missing (with `preset`, else claude), then seeds the data dir. An
/// existing config is never rewritten: asked for another runner than it names, init refuses
/// (conflict) and says how to switch.
pub fn init(config_path: &Path, dir: &DataDir, preset: Option<Preset>) -> Result<InitReport> {
    // Validate before writing anything: an existing broken config stops init.
    if config_path.exists() {
        let existing = config::Config::load(config_path)?;
        if let Some(wanted) = preset.filter(|wanted| *wanted != existing.runner.preset) {
            return Err(crate::Error::Conflict(format!(
                "{} already names runner {}; rein init never rewrites a config: set preset = \"{}\" under [runner] there yourself (or move the file aside and run rein init --runner {} again)",
                config_path.display(),
                existing.runner.preset.name(),
                wanted.name(),
                wanted.name()
            )));
        }
    }
    let preset = preset.unwrap_or_default();
    if let Some(parent) = config_path.parent() {
        store::ensure_dir(parent)?;
    }
    let mut report = InitReport {
        config: config_path.display().to_string(),
        data_dir: dir.root().display().to_string(),
        ..InitReport::default()
    };
    let shown = config_path.display().to_string();
    if store::seed_file(
        config_path,
        config::template(preset).as_bytes(),
        store::FILE_MODE,
    )? {
        report.created.push(shown);
    } else {
        report.kept.push(shown);
    }
    let seeded = seed(dir)?;
    report.created.extend(seeded.created);
    report.kept.extend(seeded.kept);
    report.setup_ask = seeded.setup_ask;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_today_sensor_prints_the_date_and_weekday_as_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("today.sh");
        std::fs::write(&script, TODAY_SENSOR).expect("script");
        let before = chrono::Local::now();
        let output = std::process::Command::new("sh")
            .arg(&script)
            .env("LC_ALL", "C")
            .output()
            .expect("sh");
        let after = chrono::Local::now();
        assert!(output.status.success());
        let value: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("one JSON object");
        let said = (
            value["date"].as_str().expect("date").to_owned(),
            value["weekday"].as_str().expect("weekday").to_owned(),
        );
        let at = |t: chrono::DateTime<chrono::Local>| {
            (t.format("%F").to_string(), t.format("%A").to_string())
        };
        assert!(said == at(before) || said == at(after), "{said:?}");
    }

    #[test]
    fn beats_run_the_today_sensor_at_most_every_ten_minutes() {
        assert_eq!(
            crate::world::interval(TODAY_SENSOR.as_bytes()),
            Ok(Some(std::time::Duration::from_secs(600)))
        );
    }
}
