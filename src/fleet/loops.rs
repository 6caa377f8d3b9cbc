//! Loops: long-running agent sessions kept alive for weeks, each ticked on a schedule.
//!
//! A loop is three things systemd already has:
//! - its **session**, a worker (`rein-worker-NAME.service`, the same sandbox, environment,
//!   secrets and directories as any worker) with `Restart=always`, whose PTY host types the
//!   loop's resume prompt each time the agent starts and looks ready;
//! - its **timer** (`rein-loop-NAME.timer`, from [`crate::schedule`]) and the oneshot
//!   **dispatch** service it starts (`rein-loop-NAME.service`, running `rein loop fire NAME`):
//!   `resume_prompt` types the prompt into the running session through the PTY host's Input
//!   request, `tick_script` runs a script in the loop's directory with a timeout and an
//!   output cap, `none` does nothing;
//! - its **definition**, `loops/NAME.json`, written atomically; the last dispatch is
//!   `loop-runs/NAME.json`.
//!
//! Health is the session unit's: a killed session is back after `loops.restart_sec`; past the
//! start limit it is `failed`, and the beat journals and notifies that once (as for every
//! worker). `close` stops the timer and the session and keeps everything; `reopen` brings
//! them back; `rein up` re-creates the timer of every open loop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::duration::Span;
use crate::error::{Error, Result};
use crate::fleet::pulse::next_elapse;
use crate::fleet::worktree::WorktreeRequest;
use crate::fleet::{rein_bin, unit_environment, workers, UnitNames};
use crate::paths::Paths;
use crate::schedule::Schedule;
use crate::store::{self, validate_id};
use crate::systemd::{
    Manager, ServiceSpec, ServiceType, TimerSpec, TransientUnit, DEFAULT_STOP_GRACE,
};
use crate::worker::pty::request;
use crate::{capture, journal};

pub const FORMAT_VERSION: u32 = 1;

/// `[loops]` in the config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoopsConfig {
    /// How soon a session that ended is started again.
    #[serde(default = "default_restart_sec")]
    pub restart_sec: Span,
    /// Between typing a prompt and pressing Enter.
    #[serde(default = "default_paste_settle")]
    pub paste_settle: Span,
    /// An agent is ready for its resume prompt once it has printed something and then been
    /// quiet this long.
    #[serde(default = "default_ready_quiet")]
    pub ready_quiet: Span,
    /// The prompt is typed after this long even if the agent never went quiet.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: Span,
    /// How long a tick script may run.
    #[serde(default = "default_tick_timeout")]
    pub tick_timeout: Span,
    /// The most output of a tick script that is kept and journaled.
    #[serde(default = "default_tick_output_cap", with = "crate::config::size_text")]
    pub tick_output_cap: u64,
}

fn default_restart_sec() -> Span {
    Span(Duration::from_secs(1))
}
fn default_paste_settle() -> Span {
    Span(Duration::from_millis(300))
}
fn default_ready_quiet() -> Span {
    Span(Duration::from_millis(800))
}
fn default_ready_timeout() -> Span {
    Span(Duration::from_secs(60))
}
fn default_tick_timeout() -> Span {
    Span(Duration::from_secs(600))
}
fn default_tick_output_cap() -> u64 {
    64 * 1024
}

impl Default for LoopsConfig {
    fn default() -> Self {
        LoopsConfig {
            restart_sec: default_restart_sec(),
            paste_settle: default_paste_settle(),
            ready_quiet: default_ready_quiet(),
            ready_timeout: default_ready_timeout(),
            tick_timeout: default_tick_timeout(),
            tick_output_cap: default_tick_output_cap(),
        }
    }
}

/// What a fire does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Dispatch {
    /// Type the loop's prompt into its running session.
    #[value(name = "resume_prompt")]
    ResumePrompt,
    /// Run the tick script in the loop's directory.
    #[value(name = "tick_script")]
    TickScript,
    /// Nothing (the session runs on its own).
    None,
}

impl Dispatch {
    pub fn name(self) -> &'static str {
        match self {
            Dispatch::ResumePrompt => "resume_prompt",
            Dispatch::TickScript => "tick_script",
            Dispatch::None => "none",
        }
    }
}

/// How the session is started: the worker start request, kept so a loop can be re-made.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SessionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<u32>,
}

/// `loops/NAME.json`: one loop's definition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoopRecord {
    pub version: u32,
    pub name: String,
    /// The schedule as written (see [`crate::schedule`]).
    pub schedule: String,
    pub dispatch: Dispatch,
    /// The resume prompt: typed at each start of the session, and at each fire of a
    /// `resume_prompt` loop.
    #[serde(default)]
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick_script: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tick_args: Vec<String>,
    /// The virtual desktop (1-based) of the loop's Konsole tab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop: Option<u32>,
    /// Between typing the prompt and Enter; `loops.paste_settle` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paste_settle_ms: Option<u64>,
    pub session: SessionSpec,
    pub created: DateTime<Utc>,
    /// Set by `rein loop close`; cleared by `reopen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<DateTime<Utc>>,
    /// Where `rein loop import` found it (`file:line`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
}

impl LoopRecord {
    pub fn parsed_schedule(&self) -> Result<Schedule> {
        Schedule::parse(&self.schedule)
    }

    pub fn paste_settle(&self, config: &Config) -> Duration {
        self.paste_settle_ms
            .map(Duration::from_millis)
            .unwrap_or(config.loops.paste_settle.0)
    }
}

/// `loop-runs/NAME.json`: the last dispatch of a loop.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DispatchRecord {
    pub version: u32,
    pub name: String,
    pub at: DateTime<Utc>,
    /// `timer` or `tick` (`rein loop tick`).
    pub trigger: String,
    pub dispatch: Dispatch,
    pub ok: bool,
    pub result: String,
    pub duration_ms: u64,
    /// Fires so far.
    pub fires: u64,
}

fn loops_dir(paths: &Paths) -> PathBuf {
    paths.data().loops()
}

fn loop_path(paths: &Paths, name: &str) -> Result<PathBuf> {
    paths.data().loop_record(name)
}

fn run_path(paths: &Paths, name: &str) -> Result<PathBuf> {
    paths.data().loop_run(name)
}

/// The loop's definition; not found (exit 1) when there is none.
pub fn read(paths: &Paths, name: &str) -> Result<LoopRecord> {
    store::read_json(&loop_path(paths, name)?)?.ok_or_else(|| {
        Error::NotFound(format!(
            "no loop {name:?} in profile {}; `rein loop ls` lists them",
            paths.profile
        ))
    })
}

fn write(paths: &Paths, record: &LoopRecord) -> Result<()> {
    store::ensure_real_dir(&loops_dir(paths))?;
    store::write_json(&loop_path(paths, &record.name)?, record)
}

pub fn records(paths: &Paths) -> Result<Vec<LoopRecord>> {
    let mut records = Vec::new();
    for (_, path) in store::list(&loops_dir(paths), ".json")? {
        if let Some(record) = store::read_json::<LoopRecord>(&path)? {
            records.push(record);
        }
    }
    records.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(records)
}

pub fn last_dispatch(paths: &Paths, name: &str) -> Result<Option<DispatchRecord>> {
    store::read_json(&run_path(paths, name)?)
}

/// The session command when none is given: the runner's own command (`runner.command`), or
/// the preset's agent started bare (`claude`, `codex`, `opencode`, `pi`, with `--model`):
/// a loop's prompt is typed into the session, not passed on its command line.
pub fn session_template(config: &Config) -> String {
    if let Some(command) = &config.runner.command {
        return command.clone();
    }
    match config.runner.preset.name() {
        "custom" => String::new(),
        program if config.runner.model.is_some() => format!("{program} --model {{{{model}}}}"),
        program => program.to_owned(),
    }
}

/// What `rein loop add` asks for.
#[derive(Debug, Clone)]
pub struct AddRequest {
    pub name: String,
    pub schedule: String,
    pub dispatch: Dispatch,
    pub prompt: String,
    pub tick_script: Option<PathBuf>,
    pub tick_args: Vec<String>,
    pub desktop: Option<u32>,
    pub paste_settle: Option<Duration>,
    pub session: SessionSpec,
    pub imported_from: Option<String>,
}

fn start_request(record: &LoopRecord, config: &Config) -> workers::StartRequest {
    let session = &record.session;
    workers::StartRequest {
        id: record.name.clone(),
        brief: record.prompt.clone(),
        command: Some(
            session
                .command
                .clone()
                .unwrap_or_else(|| session_template(config)),
        ),
        model: session.model.clone(),
        memory_max: session.memory_max,
        cpu_quota: session.cpu_quota,
        env: session.env.clone(),
        dir: session.dir.clone(),
        worktree: session.worktree.clone().map(|repo| WorktreeRequest {
            repo,
            branch: session.branch.clone(),
            base: session.base.clone(),
        }),
        loop_name: Some(record.name.clone()),
    }
}

/// Checks a request and returns the record it would write; writes and starts nothing.
pub fn prepare(paths: &Paths, config: &Config, request: &AddRequest) -> Result<LoopRecord> {
    validate_id("loop name", &request.name)?;
    let schedule = Schedule::parse(&request.schedule)?;
    schedule.check_with_systemd()?;
    match request.dispatch {
        Dispatch::ResumePrompt if request.prompt.trim().is_empty() => {
            return Err(Error::invalid(format!(
                "loop {}: dispatch resume_prompt needs a prompt (--prompt TEXT, --prompt -, or --prompt-file F)",
                request.name
            )))
        }
        Dispatch::TickScript => {
            let Some(script) = &request.tick_script else {
                return Err(Error::invalid(format!(
                    "loop {}: dispatch tick_script needs --tick-script PATH",
                    request.name
                )));
            };
            check_script(script)?;
        }
        _ => {}
    }
    if request.dispatch != Dispatch::TickScript
        && (request.tick_script.is_some() || !request.tick_args.is_empty())
    {
        return Err(Error::invalid(format!(
            "loop {}: --tick-script and --tick-arg go with --dispatch tick_script",
            request.name
        )));
    }
    if request.desktop == Some(0) {
        return Err(Error::invalid("desktops are numbered from 1"));
    }
    let record = LoopRecord {
        version: FORMAT_VERSION,
        name: request.name.clone(),
        schedule: schedule.to_string(),
        dispatch: request.dispatch,
        prompt: request.prompt.clone(),
        tick_script: request.tick_script.clone(),
        tick_args: request.tick_args.clone(),
        desktop: request.desktop,
        paste_settle_ms: request.paste_settle.map(|d| d.as_millis() as u64),
        session: request.session.clone(),
        created: Utc::now(),
        closed: None,
        imported_from: request.imported_from.clone(),
    };
    // Everything about the session (command, program on PATH, env, dir) as for a worker.
    workers::prepare(paths, config, &start_request(&record, config))?;
    Ok(record)
}

fn check_script(script: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let executable = script
        .metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if !script.is_absolute() || !executable {
        return Err(Error::invalid(format!(
            "tick script {}: give the absolute path of an executable file",
            script.display()
        )));
    }
    Ok(())
}

/// Adds a loop: writes its definition, starts its session and its timer. A loop or worker of
/// that name is a conflict (exit 5).
pub async fn add(
    manager: &Manager,
    paths: &Paths,
    config: &Config,
    request: &AddRequest,
) -> anyhow::Result<LoopRecord> {
    let record = prepare(paths, config, request)?;
    if store::read_json::<LoopRecord>(&loop_path(paths, &record.name)?)?.is_some() {
        return Err(Error::Conflict(format!(
            "loop {} exists; `rein loop rm {}` first, or `rein loop update-prompt`",
            record.name, record.name
        ))
        .into());
    }
    if store::read_json::<workers::WorkerRecord>(&paths.data().worker(&record.name)?)?.is_some() {
        return Err(Error::Conflict(format!(
            "a worker named {} exists; a loop's session is a worker of the loop's name: pick another name, or `rein worker rm {}`",
            record.name, record.name
        ))
        .into());
    }
    // The session's PTY host reads the prompt from the definition, so it is written first.
    write(paths, &record)?;
    let started = async {
        workers::start(manager, paths, config, &start_request(&record, config)).await?;
        start_timer(manager, paths, &record).await
    }
    .await;
    if let Err(error) = started {
        let _ = manager
            .remove(
                &UnitNames::new(paths).worker(&record.name),
                DEFAULT_STOP_GRACE,
            )
            .await;
        let _ = remove_timer(manager, paths, &record.name).await;
        let _ = store::remove_file(&paths.data().worker(&record.name)?);
        let _ = store::remove_file(&loop_path(paths, &record.name)?);
        return Err(error);
    }
    journal::record_or_warn(
        &paths.data(),
        "loop",
        &format!(
            "added loop {} ({}, dispatch {})",
            record.name,
            record.schedule,
            record.dispatch.name()
        ),
    );
    Ok(record)
}

fn describe(paths: &Paths, record: &LoopRecord) -> String {
    format!(
        "rein loop {} of profile {}: {} ({})",
        record.name,
        paths.profile,
        record.schedule,
        record.dispatch.name()
    )
}

fn timer_units(paths: &Paths, record: &LoopRecord) -> anyhow::Result<Option<TransientUnit>> {
    let schedule = record.parsed_schedule()?;
    if !schedule.has_timer() {
        return Ok(None);
    }
    let names = UnitNames::new(paths);
    let description = describe(paths, record);
    let service = ServiceSpec {
        name: names.loop_dispatch(&record.name),
        description: description.clone(),
        exec: vec![
            rein_bin()?,
            "loop".to_owned(),
            "fire".to_owned(),
            record.name.clone(),
        ],
        service_type: ServiceType::Oneshot,
        environment: unit_environment(paths),
        working_directory: Some(paths.data_dir.clone()),
        syslog_identifier: Some(format!("rein-loop-{}", record.name)),
        log_extra_fields: vec![
            ("REIN_PROFILE".to_owned(), paths.profile.clone()),
            ("REIN_LOOP".to_owned(), record.name.clone()),
        ],
        // A loop fires as often as its schedule says: systemd's default start limit (5 in
        // 10 s) would stop an `every 2s` loop after a few fires.
        start_limit_interval: Some(Duration::ZERO),
        ..ServiceSpec::default()
    };
    let interval = schedule.interval();
    let timer = TimerSpec {
        name: names.loop_timer(&record.name),
        description,
        on_active_sec: interval,
        on_unit_active_sec: interval,
        on_calendar: schedule.on_calendar(),
        accuracy: Some(schedule.accuracy()),
        persistent: !schedule.on_calendar().is_empty(),
    };
    Ok(Some(TransientUnit::timer(&timer, &service)?))
}

/// Creates the loop's timer, replacing one of the same name. Returns whether there is one.
async fn start_timer(
    manager: &Manager,
    paths: &Paths,
    record: &LoopRecord,
) -> anyhow::Result<bool> {
    remove_timer(manager, paths, &record.name).await?;
    match timer_units(paths, record)? {
        Some(units) => {
            manager.start_transient(&units).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

async fn remove_timer(manager: &Manager, paths: &Paths, name: &str) -> anyhow::Result<()> {
    let names = UnitNames::new(paths);
    manager
        .remove(&names.loop_timer(name), DEFAULT_STOP_GRACE)
        .await?;
    manager
        .remove(&names.loop_dispatch(name), DEFAULT_STOP_GRACE)
        .await?;
    Ok(())
}

/// Re-creates the timer of every open loop whose timer is missing or differs; returns their
/// names. (Sessions come back with the workers.)
pub async fn restore(manager: &Manager, paths: &Paths) -> anyhow::Result<Vec<String>> {
    let names = UnitNames::new(paths);
    let mut restored = Vec::new();
    for record in records(paths)? {
        if record.closed.is_some() || !record.parsed_schedule()?.has_timer() {
            continue;
        }
        let listed = manager.list(&[&names.loop_timer(&record.name)]).await?;
        let current = listed.first().is_some_and(|timer| {
            timer.description == describe(paths, &record) && timer.active_state.as_str() == "active"
        });
        if !current {
            start_timer(manager, paths, &record).await?;
            restored.push(record.name.clone());
        }
    }
    if !restored.is_empty() {
        journal::record_or_warn(
            &paths.data(),
            "loop",
            &format!("re-created the timers of {}", restored.join(", ")),
        );
    }
    Ok(restored)
}

/// Stops the timer and the session; keeps the definition, the worker record and its
/// directory. Asks of the session are withdrawn as for a killed worker.
pub async fn close(manager: &Manager, paths: &Paths, name: &str) -> anyhow::Result<LoopRecord> {
    let mut record = read(paths, name)?;
    remove_timer(manager, paths, name).await?;
    workers::kill(manager, paths, name).await?;
    if record.closed.is_none() {
        record.closed = Some(Utc::now());
        write(paths, &record)?;
    }
    journal::record_or_warn(&paths.data(), "loop", &format!("closed loop {name}"));
    Ok(record)
}

/// Brings a closed loop back: its session and its timer.
pub async fn reopen(
    manager: &Manager,
    paths: &Paths,
    config: &Config,
    name: &str,
) -> anyhow::Result<LoopRecord> {
    let mut record = read(paths, name)?;
    record.closed = None;
    write(paths, &record)?;
    match store::read_json::<workers::WorkerRecord>(&paths.data().worker(name)?)? {
        Some(_) => {
            workers::resume(manager, paths, config, name).await?;
        }
        None => {
            workers::start(manager, paths, config, &start_request(&record, config)).await?;
        }
    }
    start_timer(manager, paths, &record).await?;
    journal::record_or_warn(&paths.data(), "loop", &format!("reopened loop {name}"));
    Ok(record)
}

/// Removes a loop: its units, its session (with its worktree: refused while that holds
/// unsaved work, unless `force`) and its definition (archived).
pub async fn remove(
    manager: &Manager,
    paths: &Paths,
    name: &str,
    force: bool,
) -> anyhow::Result<Vec<String>> {
    read(paths, name)?;
    remove_timer(manager, paths, name).await?;
    let mut done = Vec::new();
    if store::read_json::<workers::WorkerRecord>(&paths.data().worker(name)?)?.is_some() {
        workers::kill(manager, paths, name).await?;
        done.extend(workers::remove(manager, paths, name, force).await?);
    }
    let stamp = Utc::now().format("%Y%m%dt%H%M%S%3f").to_string();
    let archived = paths.data().archived_loop(name, &stamp);
    if let Some(archive) = archived.parent() {
        store::ensure_real_dir(archive)?;
    }
    store::move_file(&loop_path(paths, name)?, &archived)?;
    store::remove_file(&run_path(paths, name)?)?;
    journal::record_or_warn(&paths.data(), "loop", &format!("removed loop {name}"));
    done.push(format!(
        "archived its definition to archive/loops/{name}.{stamp}.json"
    ));
    Ok(done)
}

/// Replaces the resume prompt; with `repaste`, types it into the session now.
pub fn update_prompt(
    paths: &Paths,
    config: &Config,
    name: &str,
    prompt: &str,
    repaste: bool,
) -> anyhow::Result<Option<request::Told>> {
    let mut record = read(paths, name)?;
    if prompt.trim().is_empty() && record.dispatch == Dispatch::ResumePrompt {
        return Err(Error::invalid(format!(
            "loop {name} dispatches its resume prompt: it cannot be empty"
        ))
        .into());
    }
    record.prompt = prompt.to_owned();
    write(paths, &record)?;
    journal::record_or_warn(
        &paths.data(),
        "loop",
        &format!("updated the prompt of loop {name}"),
    );
    if !repaste {
        return Ok(None);
    }
    let socket = paths.data().worker_socket(name)?;
    Ok(Some(request::tell(
        &socket,
        prompt,
        record.paste_settle(config),
    )?))
}

/// Sets the loop's desktop (the Konsole bridge moves its tab).
pub fn move_to(paths: &Paths, name: &str, desktop: u32) -> anyhow::Result<LoopRecord> {
    if desktop == 0 {
        return Err(Error::invalid("desktops are numbered from 1").into());
    }
    let mut record = read(paths, name)?;
    record.desktop = Some(desktop);
    write(paths, &record)?;
    journal::record_or_warn(
        &paths.data(),
        "loop",
        &format!("moved loop {name} to desktop {desktop}"),
    );
    Ok(record)
}

/// One fire: dispatches and records the result. `trigger` is `timer` or `tick`.
pub fn fire(paths: &Paths, config: &Config, name: &str, trigger: &str) -> Result<DispatchRecord> {
    let record = read(paths, name)?;
    let started = Instant::now();
    let at = Utc::now();
    let outcome = if record.closed.is_some() {
        Err("the loop is closed".to_owned())
    } else {
        match record.dispatch {
            Dispatch::ResumePrompt => paste_prompt(paths, config, &record),
            Dispatch::TickScript => run_tick_script(paths, config, &record),
            Dispatch::None => Ok("nothing to dispatch".to_owned()),
        }
    };
    let fires = last_dispatch(paths, name)?.map_or(0, |d| d.fires) + 1;
    let (ok, result) = match outcome {
        Ok(result) => (true, result),
        Err(result) => (false, result),
    };
    let dispatched = DispatchRecord {
        version: FORMAT_VERSION,
        name: name.to_owned(),
        at,
        trigger: trigger.to_owned(),
        dispatch: record.dispatch,
        ok,
        result,
        duration_ms: started.elapsed().as_millis() as u64,
        fires,
    };
    store::ensure_real_dir(&paths.data().loop_runs())?;
    store::write_json(&run_path(paths, name)?, &dispatched)?;
    let message = format!(
        "loop {name} fired ({trigger}, {}): {} {}",
        record.dispatch.name(),
        if ok { "ok" } else { "FAILED" },
        first_line(&dispatched.result)
    );
    tracing::info!(
        REIN_EVENT = "loop-fire",
        REIN_LOOP = name,
        "{}",
        dispatched.result
    );
    journal::append(&paths.data(), "loop-fire", &message)?;
    Ok(dispatched)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// Types the prompt into the session once the agent is quiet (a person mid-conversation is
/// not interrupted mid-word), then Enter.
fn paste_prompt(
    paths: &Paths,
    config: &Config,
    record: &LoopRecord,
) -> std::result::Result<String, String> {
    let socket = paths
        .data()
        .worker_socket(&record.name)
        .map_err(|e| e.to_string())?;
    if !socket.exists() {
        return Err(format!(
            "the session of loop {} is not running (no {})",
            record.name,
            socket.display()
        ));
    }
    let quiet = config.loops.ready_quiet.0;
    let screen = request::wait_until_quiet(&socket, quiet, config.loops.ready_timeout.0)
        .map_err(|e| format!("{e:#}"))?;
    let told = request::tell(&socket, &record.prompt, record.paste_settle(config))
        .map_err(|e| format!("{e:#}"))?;
    Ok(format!(
        "typed the resume prompt ({} bytes{}) into the session; its last line was {:?}",
        told.bytes,
        if told.bracketed_paste {
            ", bracketed paste"
        } else {
            ""
        },
        screen.last_line().unwrap_or_default()
    ))
}

/// Runs the tick script in the loop's directory within `loops.tick_timeout`, keeping at most
/// `loops.tick_output_cap` of its stdout and of its stderr; [`capture::run`] stops everything
/// it started, whatever it does.
fn run_tick_script(
    paths: &Paths,
    config: &Config,
    record: &LoopRecord,
) -> std::result::Result<String, String> {
    let Some(script) = &record.tick_script else {
        return Err("no tick script".to_owned());
    };
    let dir = work_dir(paths, &record.name).map_err(|e| e.to_string())?;
    let mut command = Command::new(script);
    command
        .args(&record.tick_args)
        .current_dir(&dir)
        .env("REIN_LOOP", &record.name)
        .stdin(Stdio::null());
    let cap = config.loops.tick_output_cap as usize;
    let timeout = config.loops.tick_timeout.0;
    let limits = capture::Limits {
        timeout,
        stdout_cap: cap,
        stderr_cap: cap,
        past_cap: capture::PastCap::Drop,
    };
    let captured = capture::run(&mut command, &limits)
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if captured.output.ending == capture::Ending::TimedOut {
        return Err(format!(
            "{} ran longer than {} and was killed",
            script.display(),
            Span(timeout)
        ));
    }
    let status = captured
        .status
        .ok_or_else(|| format!("the exit status of {} could not be read", script.display()))?;
    let mut output = captured.output.stdout;
    output.extend_from_slice(&captured.output.stderr);
    let truncated = captured.output.stdout_over || captured.output.stderr_over;
    let mut text = String::from_utf8_lossy(&output).trim_end().to_owned();
    if truncated {
        text.push_str(&format!("\n[output cut at {cap} bytes]"));
    }
    let summary = format!(
        "{} {} in {}: {}{}",
        script.display(),
        if status.success() {
            "succeeded"
        } else {
            "failed"
        },
        dir.display(),
        status,
        if text.is_empty() {
            String::new()
        } else {
            format!("\n{text}")
        }
    );
    if status.success() {
        Ok(summary)
    } else {
        Err(summary)
    }
}

/// Where the loop's session works.
pub fn work_dir(paths: &Paths, name: &str) -> anyhow::Result<PathBuf> {
    match store::read_json::<workers::WorkerRecord>(&paths.data().worker(name)?)? {
        Some(worker) => Ok(worker.work_dir(paths)?),
        None => Ok(paths.data().agent_work(name)?),
    }
}

/// One loop as `rein loop ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LoopView {
    pub name: String,
    /// The session's health (`running`, `restarting`, `failed`, `stopped`, …), or `closed`.
    pub state: String,
    pub restarts: u32,
    pub schedule: String,
    pub dispatch: Dispatch,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desktop: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    pub session_unit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timer_unit: Option<String>,
    pub last_fire: Option<DateTime<Utc>>,
    /// The last fire in the loop's zone and in local time, for people.
    pub last_fire_shown: Option<String>,
    pub next_fire: Option<DateTime<Utc>>,
    pub next_fire_shown: Option<String>,
    pub last_dispatch: Option<DispatchRecord>,
}

/// `TIME ZONE-ABBREV` in the loop's zone, and `(local TIME)` when the zone is not local.
pub fn show_time(at: DateTime<Utc>, zone: Option<chrono_tz::Tz>) -> String {
    let local = at.with_timezone(&chrono::Local);
    let local_text = local.format("%Y-%m-%d %H:%M:%S %Z").to_string();
    match zone {
        Some(zone) => {
            let there = at.with_timezone(&zone);
            let there_text = there.format("%Y-%m-%d %H:%M %Z").to_string();
            if there.offset().to_string() == local.offset().to_string() {
                there_text
            } else {
                format!("{there_text} (local {})", local.format("%Y-%m-%d %H:%M %Z"))
            }
        }
        None => local_text,
    }
}

pub async fn list(manager: &Manager, paths: &Paths) -> anyhow::Result<Vec<LoopView>> {
    let names = UnitNames::new(paths);
    let sessions: BTreeMap<String, workers::WorkerView> = workers::list(manager, paths)
        .await?
        .into_iter()
        .map(|view| (view.id.clone(), view))
        .collect();
    let mut views = Vec::new();
    for record in records(paths)? {
        let schedule = record.parsed_schedule()?;
        let zone = schedule.zone();
        let timer = if schedule.has_timer() {
            manager.timer_state(&names.loop_timer(&record.name)).await?
        } else {
            None
        };
        let session = sessions.get(&record.name);
        let state = match (&record.closed, session) {
            (Some(_), _) => "closed".to_owned(),
            (None, Some(view)) => view.health.to_string(),
            (None, None) => "stopped".to_owned(),
        };
        let last = last_dispatch(paths, &record.name)?;
        let last_fire = timer
            .as_ref()
            .and_then(|t| t.last_trigger())
            .map(DateTime::<Utc>::from)
            .into_iter()
            .chain(last.as_ref().map(|d| d.at))
            .max();
        let next_fire = if record.closed.is_some() {
            None
        } else {
            match &schedule {
                Schedule::Calendar { .. } => schedule.next_after(Utc::now()),
                _ => timer.as_ref().and_then(next_elapse),
            }
        };
        views.push(LoopView {
            name: record.name.clone(),
            state,
            restarts: session.map_or(0, |s| s.restarts),
            schedule: record.schedule.clone(),
            dispatch: record.dispatch,
            zone: zone.map(|z| z.name().to_owned()),
            desktop: record.desktop,
            dir: session.and_then(|s| s.dir.clone()),
            session_unit: names.worker(&record.name),
            timer_unit: schedule.has_timer().then(|| names.loop_timer(&record.name)),
            last_fire,
            last_fire_shown: last_fire.map(|at| show_time(at, zone)),
            next_fire,
            next_fire_shown: next_fire.map(|at| show_time(at, zone)),
            last_dispatch: last,
        });
    }
    Ok(views)
}
