//! `rein loop import PATH`: brings the loops of a loopctl workbench over unchanged.
//!
//! A workbench is a directory with:
//! - `workbench.toml`, `schema_version = 1`: a `[workbench]` table of defaults
//!   (`claude_args`, `default_dispatch`, `paste_submit_delay_ms`, …) and `[[loops]]` with
//!   `name`, `dir`, `readme_anchor`, `group_key` (the virtual desktop), `schedule`,
//!   `dispatch`, `tick_script`, `tick_args` and per-loop `claude_args`. `$HOME` and a
//!   leading `~/` are expanded in `dir`, `tick_script`, `tick_args` and `claude_args`; the
//!   session runs `claude` with the loop's (else the workbench's) `claude_args`.
//! - `README.md`: each loop's resume prompt is the first fenced code block under the
//!   heading whose GitHub-style anchor is the loop's `readme_anchor`.
//!
//! Everything is checked first; anything that cannot be mapped is refused by file and line
//! and nothing is imported. Loops that exist already are skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::fleet::loops::{self, AddRequest, Dispatch, SessionSpec};
use crate::paths::Paths;
use crate::schedule::Schedule;
use crate::store;
use crate::systemd::Manager;

#[derive(Debug, Deserialize)]
struct Workbench {
    schema_version: Spanned<i64>,
    #[serde(default)]
    workbench: Defaults,
    #[serde(default)]
    loops: Vec<Spanned<LoopEntry>>,
}

/// `[workbench]`. Keys rein has no use for (a name, a terminal profile) are accepted and
/// ignored: they describe loopctl's own daemon, which rein replaces.
#[derive(Debug, Default, Deserialize)]
struct Defaults {
    #[serde(default)]
    claude_args: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    default_dispatch: Option<Spanned<String>>,
    #[serde(default)]
    paste_submit_delay_ms: Option<Spanned<u64>>,
    #[serde(flatten)]
    _other: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoopEntry {
    name: Spanned<String>,
    #[serde(default)]
    dir: Option<Spanned<String>>,
    #[serde(default)]
    readme_anchor: Option<Spanned<String>>,
    #[serde(default)]
    group_key: Option<Spanned<toml::Value>>,
    schedule: Spanned<String>,
    #[serde(default)]
    dispatch: Option<Spanned<String>>,
    #[serde(default)]
    tick_script: Option<Spanned<String>>,
    #[serde(default)]
    tick_args: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    claude_args: Option<Spanned<Vec<String>>>,
}

/// What would be imported: one add request per loop.
#[derive(Debug, Clone)]
pub struct Plan {
    pub workbench: PathBuf,
    pub loops: Vec<AddRequest>,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub imported: Vec<String>,
    /// Loops that exist already, and why they were left alone.
    pub skipped: Vec<String>,
    /// Loops whose add failed (systemd refused, …), with the error.
    pub failed: Vec<String>,
    /// A dry run: what would be imported.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<String>,
}

fn describe(request: &AddRequest) -> String {
    format!(
        "{} ({}, dispatch {}{}{}) from {}",
        request.name,
        request.schedule,
        request.dispatch.name(),
        request
            .desktop
            .map(|d| format!(", desktop {d}"))
            .unwrap_or_default(),
        request
            .session
            .dir
            .as_ref()
            .map(|d| format!(", in {}", d.display()))
            .unwrap_or_default(),
        request.imported_from.as_deref().unwrap_or("?")
    )
}

impl Report {
    pub fn planned(plan: &Plan) -> Report {
        Report {
            planned: plan.loops.iter().map(describe).collect(),
            ..Report::default()
        }
    }

    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        lines.extend(self.planned.iter().map(|l| format!("would import {l}")));
        lines.extend(self.imported.iter().map(|l| format!("imported {l}")));
        lines.extend(self.skipped.iter().map(|l| format!("skipped {l}")));
        lines.extend(self.failed.iter().map(|l| format!("FAILED {l}")));
        if lines.is_empty() {
            lines.push("the workbench has no loops".to_owned());
        }
        lines
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn expand_home(text: &str, home: &str) -> String {
    let text = match text.strip_prefix("~/") {
        Some(rest) => format!("{home}/{rest}"),
        None => text.to_owned(),
    };
    text.replace("${HOME}", home).replace("$HOME", home)
}

/// GitHub's anchor for a heading: lowercase; letters, digits, `-`, `_` and spaces kept;
/// spaces become `-`; everything else dropped.
pub fn anchor_slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every heading's anchor (duplicates get `-1`, `-2`, … as on GitHub) with the first fenced
/// code block under it (before the next heading of the same or a higher level) and the line
/// the block starts on.
pub fn readme_prompts(readme: &str) -> BTreeMap<String, (Option<String>, usize)> {
    let mut found = BTreeMap::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let lines: Vec<&str> = readme.lines().collect();
    let mut index = 0;
    let mut fence: Option<&str> = None;
    while index < lines.len() {
        let line = lines[index];
        let trimmed = line.trim_start();
        if let Some(open) = fence {
            if trimmed.starts_with(open) {
                fence = None;
            }
            index += 1;
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(&trimmed[..3]);
            index += 1;
            continue;
        }
        let level = trimmed.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&level) && trimmed[level..].starts_with(' ') {
            let mut slug = anchor_slug(&trimmed[level..]);
            let count = seen.entry(slug.clone()).or_insert(0);
            if *count > 0 {
                slug = format!("{slug}-{count}");
            }
            *count += 1;
            let block = first_block(&lines, index + 1, level);
            found.entry(slug).or_insert((
                block.as_ref().map(|(text, _)| text.clone()),
                block.map_or(index + 1, |(_, at)| at),
            ));
        }
        index += 1;
    }
    found
}

/// The first fenced block after line `start` and before a heading of `level` or higher.
fn first_block(lines: &[&str], start: usize, level: usize) -> Option<(String, usize)> {
    let mut index = start;
    while index < lines.len() {
        let trimmed = lines[index].trim_start();
        let heading = trimmed.chars().take_while(|c| *c == '#').count();
        if (1..=level).contains(&heading) && trimmed[heading..].starts_with(' ') {
            return None;
        }
        let marker = if trimmed.starts_with("```") {
            "```"
        } else if trimmed.starts_with("~~~") {
            "~~~"
        } else {
            index += 1;
            continue;
        };
        let opened_at = index + 1;
        let mut body = Vec::new();
        index += 1;
        while index < lines.len() && !lines[index].trim_start().starts_with(marker) {
            body.push(lines[index]);
            index += 1;
        }
        let mut text = body.join("\n");
        text.push('\n');
        return Some((text, opened_at));
    }
    None
}

/// Reads and checks a workbench; refuses (exit 2) with every problem by file and line.
pub fn plan(workbench: &Path) -> Result<Plan> {
    let toml_path = workbench.join("workbench.toml");
    let readme_path = workbench.join("README.md");
    let text = store::read_user_text(&toml_path)?.ok_or_else(|| {
        Error::invalid(format!(
            "{} not found: give the directory of a loopctl workbench",
            toml_path.display()
        ))
    })?;
    let file = toml_path.display().to_string();
    let parsed: Workbench = toml::from_str(&text).map_err(|error| {
        let line = error.span().map_or(1, |span| line_of(&text, span.start));
        Error::invalid(format!("{file}:{line}: {}", error.message()))
    })?;
    let at = |span: std::ops::Range<usize>| format!("{file}:{}", line_of(&text, span.start));
    let mut problems = Vec::new();
    if *parsed.schema_version.get_ref() != 1 {
        problems.push(format!(
            "{}: schema_version {} is not one rein can import (only 1)",
            at(parsed.schema_version.span()),
            parsed.schema_version.get_ref()
        ));
    }
    let readme = store::read_user_text(&readme_path)?.unwrap_or_default();
    let prompts = readme_prompts(&readme);
    let readme_file = readme_path.display().to_string();
    let home = std::env::var("HOME").unwrap_or_default();
    let defaults = &parsed.workbench;
    let default_dispatch = match &defaults.default_dispatch {
        Some(value) => match parse_dispatch(value.get_ref()) {
            Some(dispatch) => dispatch,
            None => {
                problems.push(format!(
                    "{}: default_dispatch {:?} is not resume_prompt, tick_script or none",
                    at(value.span()),
                    value.get_ref()
                ));
                Dispatch::None
            }
        },
        None => Dispatch::ResumePrompt,
    };
    let mut requests = Vec::new();
    let mut names = Vec::new();
    for entry in &parsed.loops {
        let entry = entry.get_ref();
        let where_ = at(entry.name.span());
        let name = entry.name.get_ref().clone();
        if let Err(error) = store::validate_id("loop name", &name) {
            problems.push(format!("{}: {error}", at(entry.name.span())));
            continue;
        }
        if names.contains(&name) {
            problems.push(format!(
                "{}: loop {name} is defined twice",
                at(entry.name.span())
            ));
            continue;
        }
        names.push(name.clone());
        let schedule = entry.schedule.get_ref();
        if let Err(error) = Schedule::parse(schedule).and_then(|s| s.check_with_systemd()) {
            problems.push(format!("{}: {error}", at(entry.schedule.span())));
        }
        let dispatch = match &entry.dispatch {
            Some(value) => match parse_dispatch(value.get_ref()) {
                Some(dispatch) => dispatch,
                None => {
                    problems.push(format!(
                        "{}: dispatch {:?} is not resume_prompt, tick_script or none",
                        at(value.span()),
                        value.get_ref()
                    ));
                    continue;
                }
            },
            None => default_dispatch,
        };
        let prompt = match &entry.readme_anchor {
            Some(anchor) => match prompts.get(anchor.get_ref()) {
                Some((Some(prompt), _)) => prompt.clone(),
                Some((None, line)) => {
                    problems.push(format!(
                        "{}: the heading #{} at {readme_file}:{line} has no fenced block to use as the prompt",
                        at(anchor.span()),
                        anchor.get_ref()
                    ));
                    continue;
                }
                None => {
                    problems.push(format!(
                        "{}: no heading in {readme_file} has the anchor #{}",
                        at(anchor.span()),
                        anchor.get_ref()
                    ));
                    continue;
                }
            },
            None => String::new(),
        };
        if dispatch == Dispatch::ResumePrompt && prompt.trim().is_empty() {
            problems.push(format!(
                "{where_}: loop {name} dispatches its resume prompt but has no readme_anchor"
            ));
            continue;
        }
        let desktop = match &entry.group_key {
            None => None,
            Some(value) => match desktop_of(value.get_ref()) {
                Some(desktop) => Some(desktop),
                None => {
                    problems.push(format!(
                        "{}: group_key {} is not a desktop number (1, 2, … or \"desktop-2\")",
                        at(value.span()),
                        value.get_ref()
                    ));
                    continue;
                }
            },
        };
        let dir = entry.dir.as_ref().map(|dir| {
            let expanded = PathBuf::from(expand_home(dir.get_ref(), &home));
            if expanded.is_absolute() {
                expanded
            } else {
                workbench.join(expanded)
            }
        });
        if let (Some(dir), Some(span)) = (&dir, entry.dir.as_ref().map(|d| d.span())) {
            if !dir.is_dir() {
                problems.push(format!(
                    "{}: dir {} does not exist",
                    at(span),
                    dir.display()
                ));
                continue;
            }
        }
        let tick_script = entry.tick_script.as_ref().map(|script| {
            let expanded = PathBuf::from(expand_home(script.get_ref(), &home));
            if expanded.is_absolute() {
                expanded
            } else {
                dir.clone()
                    .unwrap_or_else(|| workbench.to_path_buf())
                    .join(expanded)
            }
        });
        if dispatch == Dispatch::TickScript && tick_script.is_none() {
            problems.push(format!(
                "{where_}: loop {name} dispatches tick_script but has no tick_script"
            ));
            continue;
        }
        let tick_args = entry
            .tick_args
            .as_ref()
            .map(|args| {
                args.get_ref()
                    .iter()
                    .map(|a| expand_home(a, &home))
                    .collect()
            })
            .unwrap_or_default();
        let claude_args: Vec<String> = entry
            .claude_args
            .as_ref()
            .or(defaults.claude_args.as_ref())
            .map(|args| {
                args.get_ref()
                    .iter()
                    .map(|a| expand_home(a, &home))
                    .collect()
            })
            .unwrap_or_default();
        let command = std::iter::once("claude".to_owned())
            .chain(
                claude_args
                    .iter()
                    .map(|arg| shell_words::quote(arg).into_owned()),
            )
            .collect::<Vec<_>>()
            .join(" ");
        requests.push(AddRequest {
            name,
            schedule: schedule.clone(),
            dispatch,
            prompt,
            tick_script: if dispatch == Dispatch::TickScript {
                tick_script
            } else {
                None
            },
            tick_args: if dispatch == Dispatch::TickScript {
                tick_args
            } else {
                Vec::new()
            },
            desktop,
            paste_settle: defaults
                .paste_submit_delay_ms
                .as_ref()
                .map(|ms| std::time::Duration::from_millis(*ms.get_ref())),
            session: SessionSpec {
                command: Some(command),
                dir,
                ..SessionSpec::default()
            },
            imported_from: Some(where_),
        });
    }
    if !problems.is_empty() {
        return Err(Error::invalid(format!(
            "cannot import {}; nothing was imported:\n{}",
            workbench.display(),
            problems.join("\n")
        )));
    }
    Ok(Plan {
        workbench: workbench.to_path_buf(),
        loops: requests,
    })
}

fn parse_dispatch(text: &str) -> Option<Dispatch> {
    match text {
        "resume_prompt" => Some(Dispatch::ResumePrompt),
        "tick_script" => Some(Dispatch::TickScript),
        "none" => Some(Dispatch::None),
        _ => None,
    }
}

fn desktop_of(value: &toml::Value) -> Option<u32> {
    let number = match value {
        toml::Value::Integer(n) => u32::try_from(*n).ok(),
        toml::Value::String(text) => text
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .ok(),
        _ => None,
    };
    number.filter(|n| *n >= 1)
}

/// Checks every loop as `rein loop add` would (exit 2 on any problem, nothing added), then
/// adds the ones that do not exist yet.
pub async fn import(
    manager: &Manager,
    paths: &Paths,
    config: &Config,
    plan: &Plan,
) -> anyhow::Result<Report> {
    let existing: Vec<String> = loops::records(paths)?.into_iter().map(|r| r.name).collect();
    let mut problems = Vec::new();
    for request in &plan.loops {
        if existing.contains(&request.name) {
            continue;
        }
        if let Err(error) = loops::prepare(paths, config, request) {
            problems.push(format!(
                "{}: {error}",
                request.imported_from.as_deref().unwrap_or(&request.name)
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Error::invalid(format!(
            "cannot import {}; nothing was imported:\n{}",
            plan.workbench.display(),
            problems.join("\n")
        ))
        .into());
    }
    let mut report = Report::default();
    for request in &plan.loops {
        if existing.contains(&request.name) {
            report
                .skipped
                .push(format!("{}: a loop of that name exists", request.name));
            continue;
        }
        match loops::add(manager, paths, config, request).await {
            Ok(_) => report.imported.push(describe(request)),
            Err(error) => report.failed.push(format!("{}: {error:#}", request.name)),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_githubs() {
        let cases = [
            ("Tracker (every 10 minutes)", "tracker-every-10-minutes"),
            ("Daily report: 09:00 LA", "daily-report-0900-la"),
            ("  Weekly triage — Mon  ", "weekly-triage--mon"),
            ("snake_case and CAPS", "snake_case-and-caps"),
        ];
        for (heading, slug) in cases {
            assert_eq!(anchor_slug(heading), slug, "{heading}");
        }
    }

    #[test]
    fn prompts_are_the_first_block_under_each_heading() {
        let readme =
            "# Bench\n\n### Tracker\nSome words.\n```text\nCheck the tracker.\nReport.\n```\n\
                      ```\nnot this one\n```\n### Empty\nno block\n## Tracker\n~~~\nsecond\n~~~\n";
        let prompts = readme_prompts(readme);
        assert_eq!(
            prompts.get("tracker"),
            Some(&(Some("Check the tracker.\nReport.\n".to_owned()), 5))
        );
        assert_eq!(prompts.get("empty").map(|p| p.0.clone()), Some(None));
        assert_eq!(
            prompts.get("tracker-1").map(|p| p.0.clone()),
            Some(Some("second\n".to_owned()))
        );
        // A heading inside a fence is not a heading.
        assert!(readme_prompts("```\n# not\n```\n").is_empty());
    }

    #[test]
    fn home_is_expanded() {
        assert_eq!(expand_home("$HOME/src", "/h"), "/h/src");
        assert_eq!(expand_home("~/bin/x", "/h"), "/h/bin/x");
        assert_eq!(expand_home("${HOME}/a:$HOME/b", "/h"), "/h/a:/h/b");
    }
}
