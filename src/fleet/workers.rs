//! Workers: agents running as `rein-worker-ID.service`, each inside a PTY host, fenced in by
//! systemd's sandbox ([`crate::fleet::sandbox`]).
//!
//! `start` validates everything first (id, command, environment, secrets, directory, that the
//! agent's program exists), then makes the worker's directories (and its git worktree),
//! writes the worker contract (`prompts/ID.md`), creates the unit, checks from the agent's
//! own mount table that the sandbox holds, and writes the record (`workers/ID.json`: what to
//! run, so `rein up` can bring it back after a reboot). `kill` stops the unit and withdraws
//! the worker's pending asks; `rm` removes a stopped worker with its worktree.
//!
//! Health is the unit's state plus the mailbox: a running worker with a pending ask is
//! `waiting-human`, not idle or stuck.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::agents::{self, Agent};
use crate::config::{self, Config, RestartPolicy, SandboxMode, SecretSource};
use crate::error::{Error, Result, EXIT_WITHDRAWN};
use crate::fleet::sandbox::{self, Enforcement};
use crate::fleet::worktree::{self, Worktree, WorktreeRequest};
use crate::fleet::{rein_bin, unit_environment, UnitNames};
use crate::mailbox::{AskRecord, Mailbox};
use crate::paths::Paths;
use crate::store::{self, validate_id};
use crate::systemd::steady::{self, SteadyRuns};
use crate::systemd::{
    self, health, Health, Manager, ServiceSpec, ServiceState, ServiceType, TransientUnit,
};
use crate::{journal, notes};

pub const FORMAT_VERSION: u32 = 1;

/// Identity recorded on asks rein withdraws itself when their worker is killed or removed.
pub const WITHDRAWN_BY: &str = "rein";

/// `workers/ID.json`: a started worker, as it was asked for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerRecord {
    pub version: u32,
    pub id: String,
    /// The rendered shell command the PTY host runs.
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<u32>,
    pub started: DateTime<Utc>,
    /// Set once a failure has been journaled and notified, so it is reported once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reported: Option<DateTime<Utc>>,
    /// Set once a beat has seen the agent exit on its own (success, no restart), so it is
    /// reported once (`rein wait` wakes on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_reported: Option<DateTime<Utc>>,
    /// Where the agent works: `--dir`, the worktree, or `agents/ID/work`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<Worktree>,
    /// The agent's plain environment (config and `--env`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secret variables and where their values come from (never the values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretSource>,
    /// Set by `rein worker kill`: `rein up` leaves the worker down until it is started again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<DateTime<Utc>>,
    /// Whether the sandbox was checked in force when the worker last started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// The agent CLI the command runs (claude, codex, opencode, pi), whose settings rein
    /// prepares in the worker's HOME.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Set when this worker is a loop's session (`loops/NAME.json`): it restarts always,
    /// and its PTY host types the loop's resume prompt at each start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_name: Option<String>,
}

impl WorkerRecord {
    /// The directory the agent works in.
    pub fn work_dir(&self, paths: &Paths) -> Result<PathBuf> {
        match (&self.worktree, &self.dir) {
            (Some(worktree), _) => Ok(worktree.path.clone()),
            (None, Some(dir)) => Ok(dir.clone()),
            (None, None) => paths.data().agent_work(&self.id),
        }
    }
}

/// What `rein worker start` asks for; validated before anything is written or started.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    pub id: String,
    pub brief: String,
    pub command: Option<String>,
    pub model: Option<String>,
    pub memory_max: Option<u64>,
    pub cpu_quota: Option<u32>,
    /// `--env NAME=VALUE`, applied over the config's.
    pub env: Vec<(String, String)>,
    /// `--dir PATH`.
    pub dir: Option<PathBuf>,
    /// `--worktree REPO [--branch B] [--base REF]`.
    pub worktree: Option<WorktreeRequest>,
    /// The loop this worker is the session of.
    pub loop_name: Option<String>,
}

/// The worker contract: how to ask, claim and report — then the brief.
pub fn contract(paths: &Paths, id: &str, brief: &str) -> String {
    let data = paths.data_dir.display();
    format!(
        "# Worker {id}

You are worker `{id}` of a rein fleet (profile `{profile}`). Run rein as \"$REIN_BIN\" (its full
path, so a shell that resets PATH still finds it); $REIN_WORKER_ID is `{id}`.

## How to work with people and the fleet
- When a decision is a person's, ask: `\"$REIN_BIN\" ask --prompt \"...\" [--options yes,no] [--ref WHAT]`.
  It blocks until a person answers and prints only the answer (exit 4: withdrawn — then stop
  that line of work; do not ask the same question again).
- Irreversible actions (merge, deploy, delete, publish, pay) always need a person's yes first.
- Claim a job before working on it: `\"$REIN_BIN\" claim NAME` (exit 5: someone else holds it);
  `\"$REIN_BIN\" unclaim NAME` when done.
- Tell people something without blocking: `\"$REIN_BIN\" notify \"...\"`.
- File deliverables a person should read: `\"$REIN_BIN\" report NAME --file PATH` (or text, or -).
- Goals are in {data}/goals/, the playbook in {data}/PLAYBOOK.md (read-only to you).
- Answers come from people: you cannot answer or withdraw asks, yours or anyone's.

## Your brief
{brief}
",
        profile = paths.profile,
        brief = if brief.trim().is_empty() {
            "No brief was given: ask a person what to do."
        } else {
            brief.trim_end()
        },
    )
}

/// The PATH a worker's unit gets: the directory of this very binary first, then the
/// configured PATH (`[runner.env]` or the worker's own), else the caller's.
fn unit_path(record: &WorkerRecord, bin: &str) -> String {
    let base = record
        .env
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_owned());
    match Path::new(bin).parent() {
        Some(dir) => format!("{}:{base}", dir.display()),
        None => base,
    }
}

/// The unit environment of a worker: rein's own variables, then the agent's.
fn environment(
    paths: &Paths,
    record: &WorkerRecord,
    bin: &str,
    template: Option<&Path>,
) -> Result<Vec<(String, String)>> {
    let dir = paths.data();
    let mut environment: Vec<(String, String)> = unit_environment(paths)
        .into_iter()
        .filter(|(k, _)| k != "PATH" && k != "HOME")
        .collect();
    for (name, value) in &record.env {
        if name != "PATH" {
            environment.push((name.clone(), value.clone()));
        }
    }
    environment.push(("PATH".to_owned(), unit_path(record, bin)));
    let home = dir.agent_home(&record.id)?;
    environment.push(("HOME".to_owned(), home.display().to_string()));
    // The agent's HOME is its own; git still knows who the user is.
    if !record.env.contains_key("GIT_CONFIG_GLOBAL") {
        if let Some(real) = directories::BaseDirs::new().map(|b| b.home_dir().join(".gitconfig")) {
            if real.is_file() {
                environment.push(("GIT_CONFIG_GLOBAL".to_owned(), real.display().to_string()));
            }
        }
    }
    if let Some(agent) = record.agent.as_deref().and_then(Agent::from_name) {
        environment.push((agents::AGENT_VARIABLE.to_owned(), agent.name().to_owned()));
        for (name, value) in agents::environment(agent) {
            if !record.env.contains_key(name) {
                environment.push((name.to_owned(), value.to_owned()));
            }
        }
    }
    if let Some(template) = template {
        environment.push((
            agents::TEMPLATE_VARIABLE.to_owned(),
            template.display().to_string(),
        ));
    }
    if let Some(home) = directories::BaseDirs::new().map(|b| b.home_dir().to_owned()) {
        environment.push((
            agents::USER_HOME_VARIABLE.to_owned(),
            home.display().to_string(),
        ));
    }
    environment.push(("REIN_WORKER_ID".to_owned(), record.id.clone()));
    environment.push(("REIN_BIN".to_owned(), bin.to_owned()));
    environment.push((
        "REIN_GATE".to_owned(),
        dir.gate_socket().display().to_string(),
    ));
    Ok(environment)
}

/// What a worker's sandbox must let it write.
fn needs(paths: &Paths, record: &WorkerRecord, bin: &str) -> Result<sandbox::Needs> {
    let dir = paths.data();
    let mut needs = sandbox::Needs {
        own: Some(dir.agent_dir(&record.id)?),
        writable: Vec::new(),
        read_only: Vec::new(),
        // rein for the agent ($REIN_BIN), and the host the unit runs.
        visible: vec![PathBuf::from(bin), crate::fleet::host_path(bin)],
    };
    match (&record.worktree, &record.dir) {
        (Some(worktree), _) => {
            needs.writable.push(worktree.path.clone());
            needs.writable.push(worktree.git_dir.clone());
            // Hooks and config run on the person's next git command outside the sandbox.
            needs.read_only.push(worktree.git_dir.join("hooks"));
            needs.read_only.push(worktree.git_dir.join("config"));
        }
        (None, Some(work)) => needs.writable.push(work.clone()),
        (None, None) => {}
    }
    Ok(needs)
}

/// The unit of an agent the judge runs for one tick: the same environment, secrets, agent
/// settings and sandbox as a worker, as `agents/judge/`, running `rein agent-exec`
/// once (the command in `$REIN_AGENT_COMMAND`) with its output on the caller's pipes.
pub fn judge_spec(
    paths: &Paths,
    config: &Config,
    command: &str,
    stdout: std::os::fd::RawFd,
    stderr: std::os::fd::RawFd,
) -> anyhow::Result<ServiceSpec> {
    let (env, secrets) = config.agent_environment(None);
    for (name, source) in &secrets {
        source.check(name)?;
    }
    let record = WorkerRecord {
        version: FORMAT_VERSION,
        id: JUDGE.to_owned(),
        command: command.to_owned(),
        model: config.runner.model.clone(),
        memory_max: None,
        cpu_quota: None,
        started: Utc::now(),
        failure_reported: None,
        dir: None,
        worktree: None,
        env,
        secrets,
        stopped: None,
        exit_reported: None,
        sandbox: None,
        agent: program_of(command)?
            .and_then(|program| Agent::of_program(&program))
            .map(|agent| agent.name().to_owned()),
        loop_name: None,
    };
    let dir = paths.data();
    for path in [dir.agent_home(JUDGE)?, dir.agent_work(JUDGE)?] {
        store::ensure_dir(&path)?;
    }
    let mut spec = service_spec(paths, config, &record)?;
    spec.name = UnitNames::new(paths).judge();
    spec.description = format!("rein judge tick of profile {}", paths.profile);
    spec.exec = vec![rein_bin()?, "agent-exec".to_owned()];
    spec.service_type = ServiceType::Exec;
    spec.remain_after_exit = true;
    spec.restart = None;
    spec.restart_sec = None;
    spec.start_limit_burst = None;
    spec.start_limit_interval = None;
    spec.restart_prevent_exit_status = Vec::new();
    spec.syslog_identifier = Some("rein-judge".to_owned());
    spec.log_extra_fields = vec![("REIN_PROFILE".to_owned(), paths.profile.clone())];
    spec.stdout_fd = Some(stdout);
    spec.stderr_fd = Some(stderr);
    Ok(spec)
}

/// The environment variable carrying an agent unit's shell command (see `service_spec`).
pub const COMMAND_VARIABLE: &str = "REIN_AGENT_COMMAND";

/// The id the judge's tick runs under (its HOME is `agents/judge/home`).
pub const JUDGE: &str = "judge";

fn service_spec(
    paths: &Paths,
    config: &Config,
    record: &WorkerRecord,
) -> anyhow::Result<ServiceSpec> {
    let names = UnitNames::new(paths);
    let bin = rein_bin()?;
    let workers = &config.workers;
    let sandbox = match workers.sandbox {
        SandboxMode::Strict => {
            // What the sandbox hides must exist when the unit starts: a missing path is not
            // hidden, and one made later would be in plain view.
            paths.data().create_dirs()?;
            steady::ensure_dir();
            let mut needs = needs(paths, record, &bin)?;
            needs.visible.extend(config.home_template());
            Some(sandbox::agent_sandbox(paths, config, &needs))
        }
        SandboxMode::Off => None,
    };
    let mut exec = crate::fleet::host_exec(&bin);
    exec.push(record.id.clone());
    // A loop's session comes back whatever ended it, quickly, and gets its resume prompt.
    let (restart, restart_sec) = match &record.loop_name {
        Some(name) => {
            exec.extend(["--loop".to_owned(), name.clone()]);
            (RestartPolicy::Always, config.loops.restart_sec.0)
        }
        None => (workers.restart, workers.restart_sec.0),
    };
    // The command travels in the environment, not in ExecStart: systemd 252 writes a `;`
    // in a transient ExecStart as `\;` and reads it back literally after a daemon-reload,
    // which would break the worker at its next restart. Environment= round-trips exactly.
    let mut environment = environment(paths, record, &bin, config.home_template().as_deref())?;
    environment.push((COMMAND_VARIABLE.to_owned(), record.command.clone()));
    Ok(ServiceSpec {
        name: names.worker(&record.id),
        description: format!("rein worker {} of profile {}", record.id, paths.profile),
        exec,
        service_type: ServiceType::Notify,
        environment,
        working_directory: Some(record.work_dir(paths)?),
        restart: Some(match restart {
            RestartPolicy::No => systemd::RestartPolicy::No,
            RestartPolicy::OnFailure => systemd::RestartPolicy::OnFailure,
            RestartPolicy::Always => systemd::RestartPolicy::Always,
        }),
        restart_sec: Some(restart_sec),
        start_limit_burst: Some(workers.start_limit_burst),
        start_limit_interval: Some(workers.start_limit_interval.0),
        memory_max: record.memory_max.or(workers.memory_max),
        cpu_quota_percent: record.cpu_quota.or(workers.cpu_quota),
        cpu_accounting: true,
        log_extra_fields: vec![
            ("REIN_WORKER".to_owned(), record.id.clone()),
            ("REIN_PROFILE".to_owned(), paths.profile.clone()),
        ],
        syslog_identifier: Some(format!("rein-worker-{}", record.id)),
        timeout_stop: Some(workers.stop_timeout.0),
        // A worker whose ask was withdrawn (`rein ask … || exit`) is done, not crashed.
        restart_prevent_exit_status: vec![EXIT_WITHDRAWN],
        load_credentials: record
            .secrets
            .iter()
            .map(|(name, source)| (name.clone(), source.load_credential_source()))
            .collect(),
        sandbox,
        ..ServiceSpec::default()
    })
}

fn is_running(state: &ServiceState) -> bool {
    matches!(
        health(state),
        Health::Running | Health::Starting | Health::Restarting | Health::Stopping
    )
}

/// Shell words that are not programs on PATH: keywords and builtins.
const SHELL_WORDS: &[&str] = &[
    "if", "then", "for", "while", "until", "case", "{", "(", "!", "cd", "export", "set", "unset",
    "eval", "source", ".", "test", "[", "true", "false", ":", "echo", "printf", "read", "trap",
    "umask", "ulimit", "wait", "sleep", "exit",
];

/// The agent's program: the first word of the command that is not an assignment, `exec` or
/// `env`; `None` when the command starts with shell syntax rein cannot judge.
fn program_of(command: &str) -> Result<Option<String>> {
    let words = shell_words::split(command).map_err(|error| {
        Error::invalid(format!(
            "the worker command is not valid shell ({error}): {command}"
        ))
    })?;
    for word in words {
        if word == "exec" || word == "env" || (word.contains('=') && !word.starts_with('=')) {
            continue;
        }
        if SHELL_WORDS.contains(&word.as_str()) || word.contains(['$', '`', ';', '|', '&']) {
            return Ok(None);
        }
        return Ok(Some(word));
    }
    Ok(None)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Checks that the agent's program exists on the PATH the unit will have.
fn check_program(command: &str, path: &str) -> Result<()> {
    let Some(program) = program_of(command)? else {
        return Ok(());
    };
    let found = if program.contains('/') {
        is_executable(Path::new(&program))
    } else {
        path.split(':')
            .filter(|dir| !dir.is_empty())
            .any(|dir| is_executable(&Path::new(dir).join(&program)))
    };
    if found {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "the agent program {program:?} is not on the worker's PATH ({path}); install it, set PATH in [runner.env], or give --command with its full path"
    )))
}

/// Validates a start request into a record; writes nothing and starts nothing.
pub fn prepare(paths: &Paths, config: &Config, request: &StartRequest) -> Result<WorkerRecord> {
    validate_id("worker id", &request.id)?;
    if request.id == JUDGE {
        return Err(Error::invalid(
            "the worker id \"judge\" is the llm judge's own; pick another",
        ));
    }
    let own = config.workers.overrides.get(&request.id);
    let template = request
        .command
        .clone()
        .or_else(|| own.and_then(|o| o.command.clone()))
        .unwrap_or_else(|| config.worker_template());
    if template.trim().is_empty() {
        return Err(Error::invalid(
            "no worker command: pass --command CMD or set runner.command in the config",
        ));
    }
    let model = request
        .model
        .clone()
        .or_else(|| own.and_then(|o| o.model.clone()))
        .or_else(|| config.runner.model.clone());
    let prompt_file = paths.data().prompt(&request.id)?;
    let command = config::render_command(&template, &prompt_file, model.as_deref())?;
    let (mut env, mut secrets) = config.agent_environment(Some(&request.id));
    for (name, value) in &request.env {
        config::validate_env_name(name)?;
        secrets.remove(name);
        env.insert(name.clone(), value.clone());
    }
    for (name, source) in &secrets {
        source.check(name)?;
    }
    let dir = match &request.dir {
        None => None,
        Some(dir) => {
            let dir = dir.canonicalize().map_err(|error| {
                Error::invalid(format!(
                    "--dir {}: {error}; give an existing directory",
                    dir.display()
                ))
            })?;
            if !dir.is_dir() {
                return Err(Error::invalid(format!(
                    "--dir {} is not a directory",
                    dir.display()
                )));
            }
            if dir.starts_with(&paths.data_dir) || paths.data_dir.starts_with(&dir) {
                return Err(Error::invalid(format!(
                    "--dir {} overlaps the data dir {}: a worker must not write rein's records; give a project directory",
                    dir.display(),
                    paths.data_dir.display()
                )));
            }
            Some(dir)
        }
    };
    if let Some(worktree) = &request.worktree {
        worktree::plan(&request.id, worktree)?;
    }
    let record = WorkerRecord {
        version: FORMAT_VERSION,
        id: request.id.clone(),
        command,
        model,
        memory_max: request.memory_max,
        cpu_quota: request.cpu_quota,
        started: Utc::now(),
        failure_reported: None,
        exit_reported: None,
        dir,
        worktree: None,
        env,
        secrets,
        stopped: None,
        sandbox: None,
        agent: None,
        loop_name: request.loop_name.clone(),
    };
    let bin = rein_bin().map_err(|e| Error::invalid(format!("cannot find rein's binary: {e}")))?;
    check_program(&record.command, &unit_path(&record, &bin))?;
    let mut record = record;
    record.agent = program_of(&record.command)?
        .and_then(|program| Agent::of_program(&program))
        .map(|agent| agent.name().to_owned());
    Ok(record)
}

/// Starts a worker. A worker of that id that is running is refused (and left untouched).
pub async fn start(
    manager: &Manager,
    paths: &Paths,
    config: &Config,
    request: &StartRequest,
) -> anyhow::Result<WorkerRecord> {
    let mut record = prepare(paths, config, request)?;
    let names = UnitNames::new(paths);
    let unit = names.worker(&record.id);
    if let Some(state) = manager.service_state(&unit).await? {
        if is_running(&state) {
            return Err(Error::Conflict(format!(
                "worker {} is already running (unit {unit}, pid {}); `rein worker kill {}` first",
                record.id, state.main_pid, record.id
            ))
            .into());
        }
    }
    let dir = paths.data();
    dir.create_dirs()?;
    // An earlier worker of this id that still has a worktree must be removed first.
    if let Some(previous) = store::read_json::<WorkerRecord>(&dir.worker(&record.id)?)? {
        if let Some(old) = previous.worktree.filter(|w| w.path.exists()) {
            if request.worktree.is_some() {
                return Err(Error::Conflict(format!(
                    "worker {} still has its worktree {}; `rein worker rm {}` removes it first",
                    record.id,
                    old.path.display(),
                    record.id
                ))
                .into());
            }
        }
    }
    let mut made_worktree = None;
    if let Some(wanted) = &request.worktree {
        let made = worktree::create(&record.id, wanted, &dir.worktree(&record.id)?)?;
        made_worktree = Some(made.clone());
        record.worktree = Some(made);
    }
    let outcome = async {
        for path in [dir.agent_home(&record.id)?, dir.agent_work(&record.id)?] {
            store::ensure_dir(&path)?;
        }
        store::write_atomic(
            &dir.prompt(&record.id)?,
            contract(paths, &record.id, &request.brief).as_bytes(),
        )?;
        crate::fleet::gate_unit::ensure(manager, paths).await?;
        record.sandbox = Some(launch(manager, paths, config, &record).await?);
        anyhow::Ok(())
    }
    .await;
    if let Err(error) = outcome {
        // Leave nothing half-made: a worktree made for a worker that did not start goes.
        if let Some(made) = made_worktree {
            let _ = worktree::remove(&made, true);
        }
        return Err(error);
    }
    store::write_json(&dir.worker(&record.id)?, &record)?;
    journal::record_or_warn(
        &dir,
        "worker",
        &format!("started worker {} ({unit})", record.id),
    );
    Ok(record)
}

/// Creates the unit for a record, clearing a stopped or failed unit of the same name first,
/// and checks that its sandbox holds. Returns what the check found.
async fn launch(
    manager: &Manager,
    paths: &Paths,
    config: &Config,
    record: &WorkerRecord,
) -> anyhow::Result<String> {
    let spec = service_spec(paths, config, record)?;
    let grace = config.workers.stop_timeout.0;
    manager.remove(&spec.name, grace).await?;
    if let Err(error) = manager
        .start_transient(&TransientUnit::service(&spec)?)
        .await
    {
        // Leave nothing half-created: a unit that failed to start is unloaded again.
        let _ = manager.remove(&spec.name, grace).await;
        if let systemd::SystemdError::JobFailed {
            exit_status: Some(226),
            ..
        } = &error
        {
            return Err(anyhow::anyhow!(
                "{error}\nThe user manager could not set up worker {}'s sandbox (mount namespaces): rein will not run an agent unfenced by default. Fix the manager (see rein-config(5), workers.sandbox), or set workers.sandbox = \"off\" to run agents that could then answer their own asks.",
                record.id
            ));
        }
        return Err(error.into());
    }
    // Kept at once: the first listing after starting a fleet then asks nothing per worker.
    let state = manager.service_state_and_run(&spec.name).await?;
    if let Some((_, Some(run))) = &state {
        steady::keep(&steady::file(&paths.profile), &spec.name, run.clone());
    }
    if config.workers.sandbox == SandboxMode::Off {
        let message = format!(
            "worker {} runs WITHOUT a sandbox (workers.sandbox = \"off\"): it could answer or withdraw asks and rewrite goals",
            record.id
        );
        eprintln!("rein: warning: {message}");
        journal::record_or_warn(&paths.data(), "sandbox", &message);
        return Ok("off".to_owned());
    }
    let pid = state.map(|(s, _)| s.main_pid).unwrap_or(0);
    match sandbox::check(pid, &paths.data_dir) {
        Enforcement::Enforced => Ok("enforced".to_owned()),
        Enforcement::NotEnforced(why) | Enforcement::Unknown(why) if pid != 0 => {
            let _ = manager.remove(&spec.name, grace).await;
            Err(anyhow::anyhow!(
                "worker {}'s sandbox did not take effect ({why}); it was stopped. rein will not run an agent unfenced unless workers.sandbox = \"off\"",
                record.id
            ))
        }
        Enforcement::Gone | Enforcement::NotEnforced(_) | Enforcement::Unknown(_) => {
            Ok("unchecked (the agent exited at once)".to_owned())
        }
    }
}

/// Starts every recorded worker whose unit is not running (and that was not killed);
/// returns their ids.
pub async fn restore(
    manager: &Manager,
    paths: &Paths,
    config: &Config,
) -> anyhow::Result<Vec<String>> {
    let names = UnitNames::new(paths);
    let mut restarted = Vec::new();
    for mut record in records(paths)? {
        if record.stopped.is_some() {
            continue;
        }
        let running = manager
            .service_state(&names.worker(&record.id))
            .await?
            .is_some_and(|s| is_running(&s));
        if !running {
            crate::fleet::gate_unit::ensure(manager, paths).await?;
            record.sandbox = Some(launch(manager, paths, config, &record).await?);
            // A fresh start: its next failure or exit is news again.
            record.failure_reported = None;
            record.exit_reported = None;
            store::write_json(&paths.data().worker(&record.id)?, &record)?;
            journal::record_or_warn(
                &paths.data(),
                "worker",
                &format!("restarted worker {} from its record", record.id),
            );
            restarted.push(record.id);
        }
    }
    Ok(restarted)
}

/// Refuses (not found) a worker id the profile has never had: no record, current or
/// archived. Logs of a removed worker are still found.
pub fn check_known(paths: &Paths, id: &str) -> Result<()> {
    let dir = paths.data();
    if dir.worker(id)?.exists() {
        return Ok(());
    }
    let archived = store::list(&dir.archived_workers(), ".json")?
        .into_iter()
        .any(|(stem, _)| {
            stem.rsplit_once('.')
                .is_some_and(|(worker, _)| worker == id)
        });
    if archived {
        return Ok(());
    }
    Err(Error::NotFound(format!(
        "no worker {id:?} in profile {}; `rein worker ls` lists them",
        paths.profile
    )))
}

/// Starts a stopped worker again from its record (a loop reopened): clears `stopped` and
/// creates its unit. A running worker is left as it is.
pub async fn resume(
    manager: &Manager,
    paths: &Paths,
    config: &Config,
    id: &str,
) -> anyhow::Result<WorkerRecord> {
    let path = paths.data().worker(id)?;
    let Some(mut record) = store::read_json::<WorkerRecord>(&path)? else {
        return Err(
            Error::NotFound(format!("no worker {id:?} in profile {}", paths.profile)).into(),
        );
    };
    let running = manager
        .service_state(&UnitNames::new(paths).worker(id))
        .await?
        .is_some_and(|s| is_running(&s));
    if !running {
        crate::fleet::gate_unit::ensure(manager, paths).await?;
        record.sandbox = Some(launch(manager, paths, config, &record).await?);
        record.stopped = None;
        record.failure_reported = None;
        store::write_json(&path, &record)?;
        journal::record_or_warn(
            &paths.data(),
            "worker",
            &format!("started worker {id} again"),
        );
    }
    Ok(record)
}

/// Whether a beat has a worker to watch: one whose record `rein worker kill` has not marked
/// stopped. A killed worker's unit is gone, so it can neither fail nor exit on its own.
///
/// It stops at the first such record, so a fleet of running workers costs one read here; a
/// record that cannot be read counts as one to watch (the health check then goes on as
/// `rein worker ls` does, past the damaged file).
pub fn any_to_watch(paths: &Paths) -> Result<bool> {
    for (_, path) in store::list(&paths.data().workers(), ".json")? {
        match store::read_json::<WorkerRecord>(&path) {
            Ok(Some(record)) if record.stopped.is_some() => continue,
            Ok(None) => continue,
            _ => return Ok(true),
        }
    }
    Ok(false)
}

pub fn records(paths: &Paths) -> Result<Vec<WorkerRecord>> {
    let mut records = Vec::new();
    for (_, path) in store::list(&paths.data().workers(), ".json")? {
        if let Some(record) = store::read_json(&path)? {
            records.push(record);
        }
    }
    Ok(records)
}

/// Withdraws every pending ask of a worker, saying why; returns their ids.
pub fn withdraw_asks(paths: &Paths, id: &str, reason: &str) -> Result<Vec<String>> {
    let mailbox = Mailbox::new(paths.data());
    let mut withdrawn = Vec::new();
    for record in mailbox.pending()?.records {
        if record.ask.worker != id {
            continue;
        }
        if let crate::mailbox::AnswerOutcome::Accepted(_) =
            mailbox.withdraw_because(&record.ask.id, WITHDRAWN_BY, reason)?
        {
            withdrawn.push(record.ask.id);
        }
    }
    if !withdrawn.is_empty() {
        journal::record_or_warn(
            &paths.data(),
            "withdraw",
            &format!("withdrew {} of worker {id}: {reason}", withdrawn.join(", ")),
        );
    }
    Ok(withdrawn)
}

/// What `kill` did.
#[derive(Debug, Clone, Serialize)]
pub struct KillReport {
    pub id: String,
    pub stopped_unit: bool,
    pub withdrawn: Vec<String>,
}

/// Stops a worker, withdraws its pending asks, and marks its record stopped so `rein up`
/// leaves it down (`rein worker rm` removes it).
pub async fn kill(manager: &Manager, paths: &Paths, id: &str) -> anyhow::Result<KillReport> {
    validate_id("worker id", id)?;
    let dir = paths.data();
    let unit = UnitNames::new(paths).worker(id);
    let loaded = !manager.list(&[&unit]).await?.is_empty();
    let record_path = dir.worker(id)?;
    let record = store::read_json::<WorkerRecord>(&record_path)?;
    if !loaded && record.is_none() {
        return Err(Error::NotFound(format!(
            "no worker {id:?} in profile {}; `rein worker ls` lists them",
            paths.profile
        ))
        .into());
    }
    manager.remove(&unit, stop_grace(paths)).await?;
    if let Some(mut record) = record {
        if record.stopped.is_none() {
            record.stopped = Some(Utc::now());
            store::write_json(&record_path, &record)?;
        }
    }
    let withdrawn = withdraw_asks(paths, id, &format!("worker {id} was killed"))?;
    if loaded {
        journal::record_or_warn(&dir, "worker", &format!("killed worker {id}"));
    }
    Ok(KillReport {
        id: id.to_owned(),
        stopped_unit: loaded,
        withdrawn,
    })
}

/// Removes a stopped worker: its worktree (refused while it holds unsaved work, unless
/// `force`), its directory and its record (both archived).
pub async fn remove(
    manager: &Manager,
    paths: &Paths,
    id: &str,
    force: bool,
) -> anyhow::Result<Vec<String>> {
    validate_id("worker id", id)?;
    let dir = paths.data();
    let unit = UnitNames::new(paths).worker(id);
    if let Some(state) = manager.service_state(&unit).await? {
        if is_running(&state) {
            return Err(Error::Conflict(format!(
                "worker {id} is running (unit {unit}); `rein worker kill {id}` stops it first"
            ))
            .into());
        }
    }
    let record_path = dir.worker(id)?;
    let Some(record) = store::read_json::<WorkerRecord>(&record_path)? else {
        return Err(Error::NotFound(format!(
            "no worker {id:?} in profile {}; `rein worker ls` lists them",
            paths.profile
        ))
        .into());
    };
    let mut done = Vec::new();
    if let Some(worktree) = &record.worktree {
        let unsaved = worktree::unsaved(worktree)?;
        if !unsaved.is_empty() && !force {
            return Err(Error::Conflict(format!(
                "worker {id}'s worktree {} (branch {}) has {}; push or merge it, or `rein worker rm --force {id}` to discard it",
                worktree.path.display(),
                worktree.branch,
                unsaved.describe()
            ))
            .into());
        }
    }
    // The unit goes first: nothing is removed or archived while anything of it may still run.
    manager.remove(&unit, stop_grace(paths)).await?;
    if let Some(worktree) = &record.worktree {
        worktree::remove(worktree, force)?;
        done.push(format!(
            "removed worktree {} and branch {}",
            worktree.path.display(),
            worktree.branch
        ));
    }
    let withdrawn = withdraw_asks(paths, id, &format!("worker {id} was removed"))?;
    if !withdrawn.is_empty() {
        done.push(format!("withdrew {}", withdrawn.join(", ")));
    }
    let stamp = Utc::now().format("%Y%m%dt%H%M%S%3f").to_string();
    let agent = dir.agent_dir(id)?;
    if agent.exists() {
        let archived = dir.archived_agent(id, &stamp);
        store::move_file(&agent, &archived)?;
        done.push(format!("archived its directory to {}", archived.display()));
    }
    store::move_file(&record_path, &dir.archived_worker(id, &stamp))?;
    journal::record_or_warn(&dir, "worker", &format!("removed worker {id}"));
    Ok(done)
}

/// One worker as `rein worker ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub id: String,
    pub unit: String,
    pub health: WorkerHealth,
    /// Why a worker is `waiting-human`: the ask it waits on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    pub active_state: String,
    pub sub_state: String,
    pub result: String,
    pub restarts: u32,
    pub pid: Option<u32>,
    pub since: Option<DateTime<Utc>>,
    pub memory: Option<u64>,
    /// Where the agent works.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// The worktree's branch, for a worker started with --worktree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Whether the sandbox was found in force at the last start (`enforced`, `off`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ask: Option<serde_json::Value>,
}

/// A worker's health as `rein worker ls` shows it: its unit's [`Health`], and the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerHealth {
    Running,
    /// Running, and blocked on a pending ask of its own.
    WaitingHuman,
    Restarting,
    Failed,
    Exited,
    Starting,
    Stopping,
    Inactive,
    /// Recorded, but no unit: after `rein down` or `rein worker kill`, or an agent that
    /// finished (transient units are unloaded when they end).
    Stopped,
}

impl WorkerHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerHealth::Running => "running",
            WorkerHealth::WaitingHuman => "waiting-human",
            WorkerHealth::Restarting => "restarting",
            WorkerHealth::Failed => "failed",
            WorkerHealth::Exited => "exited",
            WorkerHealth::Starting => "starting",
            WorkerHealth::Stopping => "stopping",
            WorkerHealth::Inactive => "inactive",
            WorkerHealth::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for WorkerHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Health> for WorkerHealth {
    fn from(health: Health) -> WorkerHealth {
        match health {
            Health::Running => WorkerHealth::Running,
            Health::Restarting => WorkerHealth::Restarting,
            Health::Failed => WorkerHealth::Failed,
            Health::Exited => WorkerHealth::Exited,
            Health::Starting => WorkerHealth::Starting,
            Health::Stopping => WorkerHealth::Stopping,
            Health::Inactive => WorkerHealth::Inactive,
        }
    }
}

/// Every worker of the profile: one `ListUnitsByPatterns` call for the list, then the few
/// properties shown of each unit read concurrently, plus recorded workers that have no unit.
pub async fn list(manager: &Manager, paths: &Paths) -> anyhow::Result<Vec<WorkerView>> {
    // Only each worker's oldest pending ask is shown: only those are made JSON.
    let mut workers = std::collections::HashSet::new();
    let oldest: Vec<serde_json::Value> = Mailbox::new(paths.data())
        .pending()?
        .records
        .iter()
        .filter(|record| workers.insert(record.ask.worker.clone()))
        .map(AskRecord::to_json)
        .collect();
    list_given_asks(manager, paths, &oldest).await
}

/// [`list`] for a caller that has just listed the mailbox: `asks` are its asks as
/// [`AskRecord::to_json`] gives them, oldest first (those not pending are passed over), so
/// the mailbox is not read a second time.
pub async fn list_given_asks(
    manager: &Manager,
    paths: &Paths,
    asks: &[serde_json::Value],
) -> anyhow::Result<Vec<WorkerView>> {
    let names = UnitNames::new(paths);
    let entries = manager.list(&[&names.worker_pattern()]).await?;
    // Running workers whose run is unchanged since the last listing cost no call each.
    let kept_file = steady::file(&paths.profile);
    let kept = steady::load(&kept_file);
    let reads = entries
        .iter()
        .map(|entry| manager.listed_service_state_kept(entry, kept.get(&entry.name)));
    // All reads are sent at once on the one connection and answered concurrently.
    let reads = futures_util::future::join_all(reads).await;
    let mut runs = SteadyRuns::new();
    let mut states = Vec::with_capacity(reads.len());
    for (entry, read) in entries.iter().zip(reads) {
        states.push(read.map(|read| {
            read.map(|(state, run)| {
                if let Some(run) = run {
                    runs.insert(entry.name.clone(), run);
                }
                state
            })
        }));
    }
    if runs != kept {
        steady::save(&kept_file, &runs);
    }
    // Each worker's oldest pending ask.
    let mut pending: BTreeMap<&str, &serde_json::Value> = BTreeMap::new();
    for ask in asks.iter().filter(|a| a["state"] == "pending") {
        if let Some(worker) = ask["worker"].as_str() {
            pending.entry(worker).or_insert(ask);
        }
    }
    let records: BTreeMap<String, WorkerRecord> = records(paths)?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let place = |id: &str| -> (Option<PathBuf>, Option<String>, Option<String>) {
        let Some(record) = records.get(id) else {
            return (None, None, None);
        };
        let branch = record
            .worktree
            .as_ref()
            .map(|w| worktree::current_branch(&w.path).unwrap_or_else(|| w.branch.clone()));
        (record.work_dir(paths).ok(), branch, record.sandbox.clone())
    };
    let mut views = Vec::new();
    for (entry, state) in entries.iter().zip(states) {
        let Some(id) = names.worker_id(&entry.name) else {
            continue;
        };
        let Some(state) = state? else { continue };
        let mut health = WorkerHealth::from(health(&state));
        let ask = pending.get(id).map(|a| (*a).clone());
        let mut waiting = None;
        if health == WorkerHealth::Running {
            if let Some(ask) = &ask {
                health = WorkerHealth::WaitingHuman;
                waiting = Some(format!(
                    "ask {}: {}",
                    ask["id"].as_str().unwrap_or_default(),
                    ask["prompt"].as_str().unwrap_or_default()
                ));
            } else if let Some(reason) = attention(paths, id) {
                health = WorkerHealth::WaitingHuman;
                waiting = Some(reason);
            }
        }
        let (dir, branch, sandbox) = place(id);
        views.push(WorkerView {
            id: id.to_owned(),
            unit: entry.name.clone(),
            health,
            waiting,
            active_state: state.active_state.as_str().to_owned(),
            sub_state: state.sub_state.clone(),
            result: state.result.clone(),
            restarts: state.n_restarts,
            pid: (state.main_pid != 0).then_some(state.main_pid),
            since: state.active_since().map(DateTime::<Utc>::from),
            memory: state.memory_current,
            dir,
            branch,
            sandbox,
            ask,
        });
    }
    for record in records.values() {
        if views.iter().all(|v| v.id != record.id) {
            let (dir, branch, sandbox) = place(&record.id);
            views.push(WorkerView {
                id: record.id.clone(),
                unit: names.worker(&record.id),
                health: WorkerHealth::Stopped,
                waiting: None,
                active_state: "inactive".to_owned(),
                sub_state: "dead".to_owned(),
                result: String::new(),
                restarts: 0,
                pid: None,
                since: None,
                memory: None,
                dir,
                branch,
                sandbox,
                ask: pending.get(record.id.as_str()).map(|a| (*a).clone()),
            });
        }
    }
    views.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(views)
}

/// Why a running agent waits for a person at its own dialog: what its hooks reported
/// (`attention.json`), else what its PTY host saw on its screen (`dialog.json`).
fn attention(paths: &Paths, id: &str) -> Option<String> {
    let dir = paths.data();
    [dir.agent_attention(id).ok()?, dir.agent_dialog(id).ok()?]
        .iter()
        .find_map(|path| {
            let value: serde_json::Value = store::read_json(path).ok().flatten()?;
            value["reason"].as_str().map(str::to_owned)
        })
}

/// Journals and notifies each failed worker once, and journals each worker that exited on
/// its own once (both wake `rein wait`); returns the failed ones' ids.
///
/// A worker that exited successfully has no unit left (transient units are unloaded when
/// they finish), so while the pulse runs (`fleet_up`) a recorded worker without a unit that
/// nobody stopped has exited; after `rein down` it has merely been stopped with the fleet.
pub async fn report_failures(
    manager: &Manager,
    paths: &Paths,
    fleet_up: bool,
) -> anyhow::Result<Vec<String>> {
    let dir = paths.data();
    let mut reported = Vec::new();
    // Health only: what each worker waits on is not the beat's, so the mailbox is not read.
    let views = list_given_asks(manager, paths, &[]).await?;
    for view in &views {
        let failed = view.health == WorkerHealth::Failed;
        let exited = view.health == WorkerHealth::Exited
            || (view.health == WorkerHealth::Stopped && fleet_up);
        if !failed && !exited {
            continue;
        }
        let path = dir.worker(&view.id)?;
        let Some(mut record) = store::read_json::<WorkerRecord>(&path)? else {
            continue;
        };
        if exited {
            if record.exit_reported.is_some() || record.stopped.is_some() {
                continue;
            }
            journal::record_or_warn(
                &dir,
                "worker-exited",
                &format!("worker {} exited (its agent finished)", view.id),
            );
            record.exit_reported = Some(Utc::now());
            store::write_json(&path, &record)?;
            continue;
        }
        if record.failure_reported.is_some() {
            continue;
        }
        let message = match &record.loop_name {
            Some(name) => format!(
                "loop {name}'s session failed past its start limit (result {}, {} restarts); see `rein worker logs {name}`, then `rein loop close {name}` and `rein loop reopen {name}`",
                view.result, view.restarts
            ),
            None => format!(
                "worker {} failed (result {}, {} restarts); see `rein worker logs {}`",
                view.id, view.result, view.restarts, view.id
            ),
        };
        journal::record_or_warn(&dir, "worker-failed", &message);
        notes::notify(&dir, "rein", &message)?;
        record.failure_reported = Some(Utc::now());
        store::write_json(&path, &record)?;
        reported.push(view.id.clone());
    }
    Ok(reported)
}

/// How long stopping a worker waits after SIGTERM before SIGKILL: `workers.stop_timeout`
/// (the default when the config cannot be read: stopping must not depend on it).
pub fn stop_grace(paths: &Paths) -> Duration {
    Config::load(&paths.config)
        .map(|config| config.workers.stop_timeout.0)
        .unwrap_or(crate::systemd::DEFAULT_STOP_GRACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_found_past_assignments_and_exec() {
        let cases = [
            ("claude \"$(cat /p)\"", Some("claude")),
            ("FOO=1 BAR=2 exec codex exec hi", Some("codex")),
            ("env X=1 /usr/bin/pi -p x", Some("/usr/bin/pi")),
            ("echo hi; exec sleep 600", None),
            ("$AGENT --go", None),
            ("if true; then x; fi", None),
        ];
        for (command, program) in cases {
            assert_eq!(
                program_of(command).expect("parses").as_deref(),
                program,
                "{command}"
            );
        }
        assert!(program_of("claude \"unclosed").is_err());
    }

    #[test]
    fn a_missing_program_is_refused_with_the_path() {
        let error = check_program("no-such-agent-xyz --go", "/usr/bin:/bin").expect_err("missing");
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("no-such-agent-xyz"), "{error}");
        assert!(error.to_string().contains("/usr/bin:/bin"), "{error}");
        check_program("sh -c true", "/usr/bin:/bin").expect("sh exists");
    }
}
