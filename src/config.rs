//! `config.toml`: its schema, the runner presets, and validation.
//!
//! A missing file means the embedded defaults. Unknown keys and bad values are refused with
//! `file:line:column` so the user can go straight to the mistake.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::duration::{self, Span};
use crate::error::{Error, Result};
use crate::store;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub runner: RunnerConfig,
    #[serde(default)]
    pub judge: JudgeConfig,
    #[serde(default)]
    pub pulse: PulseConfig,
    #[serde(default)]
    pub sensors: SensorConfig,
    #[serde(default)]
    pub workers: WorkerConfig,
    #[serde(default)]
    pub loops: crate::fleet::loops::LoopsConfig,
    /// Per-bridge settings, validated by each bridge.
    #[serde(default)]
    pub bridges: BTreeMap<String, toml::Table>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    #[default]
    Claude,
    Codex,
    Opencode,
    Pi,
    Custom,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Claude => "claude",
            Preset::Codex => "codex",
            Preset::Opencode => "opencode",
            Preset::Pi => "pi",
            Preset::Custom => "custom",
        }
    }

    /// The interactive worker command, a shell template. `{{prompt_file}}` and `{{model}}` are
    /// replaced by shell-quoted values; the model flag is left out when no model is set.
    fn worker_template(self, with_model: bool) -> Option<&'static str> {
        Some(match (self, with_model) {
            (Preset::Claude, true) => r#"claude --model {{model}} "$(cat {{prompt_file}})""#,
            (Preset::Claude, false) => r#"claude "$(cat {{prompt_file}})""#,
            (Preset::Codex, true) => r#"codex --model {{model}} "$(cat {{prompt_file}})""#,
            (Preset::Codex, false) => r#"codex "$(cat {{prompt_file}})""#,
            (Preset::Opencode, true) => {
                r#"opencode --model {{model}} --prompt "$(cat {{prompt_file}})""#
            }
            (Preset::Opencode, false) => r#"opencode --prompt "$(cat {{prompt_file}})""#,
            (Preset::Pi, true) => r#"pi --model {{model}} "$(cat {{prompt_file}})""#,
            (Preset::Pi, false) => r#"pi "$(cat {{prompt_file}})""#,
            (Preset::Custom, _) => return None,
        })
    }

    /// The one-shot judge command for `judge.mode = "llm"`.
    fn tick_template(self, with_model: bool) -> Option<&'static str> {
        Some(match (self, with_model) {
            (Preset::Claude, true) => r#"claude -p --model {{model}} "$(cat {{prompt_file}})""#,
            (Preset::Claude, false) => r#"claude -p "$(cat {{prompt_file}})""#,
            (Preset::Codex, true) => {
                r#"codex exec --skip-git-repo-check --model {{model}} "$(cat {{prompt_file}})""#
            }
            (Preset::Codex, false) => {
                r#"codex exec --skip-git-repo-check "$(cat {{prompt_file}})""#
            }
            (Preset::Opencode, true) => {
                r#"opencode run --model {{model}} "$(cat {{prompt_file}})""#
            }
            (Preset::Opencode, false) => r#"opencode run "$(cat {{prompt_file}})""#,
            (Preset::Pi, true) => r#"pi -p --model {{model}} "$(cat {{prompt_file}})""#,
            (Preset::Pi, false) => r#"pi -p "$(cat {{prompt_file}})""#,
            (Preset::Custom, _) => return None,
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    #[serde(default)]
    pub preset: Preset,
    /// Overrides the preset's worker command (required for `custom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Overrides the preset's judge command in `llm` mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A directory whose files are copied into every agent's own HOME before rein adds what
    /// it needs (e.g. `.codex/config.toml` with a model provider). Unset: the user's own
    /// settings files for the agent CLI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_template: Option<PathBuf>,
    /// Environment of every worker and of the judge's tick command (plain values: they are
    /// unit properties, so `systemctl --user show` prints them; keys go in `secrets`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secret environment variables (API keys): the variable's name and where its value
    /// comes from. Delivered as systemd credentials, exported by the PTY host.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretSource>,
}

/// Where a secret's value comes from. Written `file:PATH` (a file only its owner may read,
/// `~/` allowed) or `credential:NAME` (a credential the user manager itself holds, or one in
/// /etc/credstore, /run/credstore). The value never reaches a command line, a unit property
/// or a log: the unit gets `LoadCredential=NAME:SOURCE`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum SecretSource {
    File(PathBuf),
    Credential(String),
}

impl TryFrom<String> for SecretSource {
    type Error = String;
    fn try_from(text: String) -> std::result::Result<Self, String> {
        SecretSource::parse(&text)
    }
}

impl From<SecretSource> for String {
    fn from(source: SecretSource) -> String {
        source.to_string()
    }
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::File(path) => write!(f, "file:{}", path.display()),
            SecretSource::Credential(name) => write!(f, "credential:{name}"),
        }
    }
}

impl SecretSource {
    pub fn parse(text: &str) -> std::result::Result<SecretSource, String> {
        let problem = |why: &str| {
            format!("invalid secret source {text:?}: {why}; write file:/path/to/key (mode 0600) or credential:NAME")
        };
        if let Some(path) = text.strip_prefix("file:") {
            let path = match path.strip_prefix("~/") {
                Some(rest) => directories::BaseDirs::new()
                    .map(|dirs| dirs.home_dir().join(rest))
                    .ok_or_else(|| problem("there is no home directory to expand ~ in"))?,
                None => PathBuf::from(path),
            };
            if !path.is_absolute() {
                return Err(problem("the path must be absolute (or start with ~/)"));
            }
            return Ok(SecretSource::File(path));
        }
        if let Some(name) = text.strip_prefix("credential:") {
            let valid = !name.is_empty()
                && name.len() <= 255
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !name.starts_with('.');
            if !valid {
                return Err(problem(
                    "a credential name is letters, digits, '-', '_' and '.'",
                ));
            }
            return Ok(SecretSource::Credential(name.to_owned()));
        }
        Err(problem("it names no source"))
    }

    /// The `SOURCE` of `LoadCredential=ID:SOURCE`.
    pub fn load_credential_source(&self) -> String {
        match self {
            SecretSource::File(path) => path.display().to_string(),
            SecretSource::Credential(name) => name.clone(),
        }
    }

    /// Checks a file source before a unit is made from it: it exists, is a regular file, and
    /// only its owner can read it.
    pub fn check(&self, variable: &str) -> Result<()> {
        let SecretSource::File(path) = self else {
            return Ok(());
        };
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).map_err(|e| {
            Error::invalid(format!(
                "the secret {variable} comes from {}, which cannot be read: {e}",
                path.display()
            ))
        })?;
        if !metadata.is_file() {
            return Err(Error::invalid(format!(
                "the secret {variable} comes from {}, which is not a regular file",
                path.display()
            )));
        }
        if metadata.mode() & 0o077 != 0 {
            return Err(Error::invalid(format!(
                "the secret {variable} comes from {}, which others can read (mode {:o}); run chmod 600 {}",
                path.display(),
                metadata.mode() & 0o777,
                path.display()
            )));
        }
        Ok(())
    }
}

/// Environment variables rein sets itself; config and `--env` may not override them.
const RESERVED_ENV: &[&str] = &[
    "HOME",
    "CREDENTIALS_DIRECTORY",
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
];

/// Checks an environment variable's name: a shell name, not one rein sets itself.
pub fn validate_env_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let shaped = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128;
    if !shaped {
        return Err(Error::invalid(format!(
            "invalid environment variable name {name:?}: use letters, digits and '_', not starting with a digit"
        )));
    }
    if name.starts_with("REIN_") || RESERVED_ENV.contains(&name) {
        return Err(Error::invalid(format!(
            "the environment variable {name} is set by rein itself and cannot be configured"
        )));
    }
    Ok(())
}

/// Parses `--env K=V`.
pub fn parse_env_assignment(text: &str) -> std::result::Result<(String, String), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!(
            "invalid --env {text:?}: write it as NAME=VALUE (secrets belong in [runner.secrets], not on the command line)"
        ));
    };
    validate_env_name(name).map_err(|e| e.to_string())?;
    if value.contains('\0') {
        return Err(format!(
            "invalid --env {name}: the value contains a NUL byte"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JudgeMode {
    #[default]
    Agent,
    Llm,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeConfig {
    #[serde(default)]
    pub mode: JudgeMode,
    /// `llm` mode: at most this many judge calls per UTC day.
    #[serde(default = "default_max_ticks")]
    pub max_ticks_per_day: u32,
    /// `llm` mode: a judge call running longer is killed and counts as a failure.
    #[serde(default = "default_judge_timeout")]
    pub timeout: Span,
}

fn default_max_ticks() -> u32 {
    200
}
fn default_judge_timeout() -> Span {
    Span(std::time::Duration::from_secs(300))
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            mode: JudgeMode::default(),
            max_ticks_per_day: default_max_ticks(),
            timeout: default_judge_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PulseConfig {
    #[serde(default = "default_interval")]
    pub interval: Span,
}

fn default_interval() -> Span {
    Span(std::time::Duration::from_secs(60))
}

impl Default for PulseConfig {
    fn default() -> Self {
        PulseConfig {
            interval: default_interval(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    #[serde(default = "default_sensor_timeout")]
    pub timeout: Span,
    /// Most bytes a sensor may print; past it the sensor is stopped and yields an error.
    #[serde(default = "default_output_cap", with = "size_text")]
    pub output_cap: u64,
}

fn default_sensor_timeout() -> Span {
    Span(std::time::Duration::from_secs(10))
}
fn default_output_cap() -> u64 {
    64 * 1024
}

impl Default for SensorConfig {
    fn default() -> Self {
        SensorConfig {
            timeout: default_sensor_timeout(),
            output_cap: default_output_cap(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    #[default]
    OnFailure,
    Always,
}

/// `[workers]`: defaults for every worker, and `[workers.ID]` tables for one worker each.
/// (Unknown keys are still refused: a key that is not a setting must be a `[workers.ID]`
/// table, whose own keys are checked.)
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WorkerConfig {
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default = "default_restart_sec")]
    pub restart_sec: Span,
    /// Starts allowed within `start_limit_interval` before the worker is marked failed.
    #[serde(default = "default_start_limit_burst")]
    pub start_limit_burst: u32,
    #[serde(default = "default_start_limit_interval")]
    pub start_limit_interval: Span,
    #[serde(
        default,
        with = "optional_size_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_max: Option<u64>,
    #[serde(
        default,
        with = "optional_percent_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_quota: Option<u32>,
    /// How a stop waits for an agent that ignores SIGTERM before it is killed.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: Span,
    /// `strict` (default): every worker runs in systemd's sandbox, checked at start; `off`:
    /// no sandbox (a worker could then answer its own asks), said loudly everywhere.
    #[serde(default)]
    pub sandbox: SandboxMode,
    /// `[workers.ID]`: what one worker adds to or overrides of the runner's settings.
    #[serde(flatten)]
    pub overrides: BTreeMap<String, WorkerOverride>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    #[default]
    Strict,
    Off,
}

/// `[workers.ID]`: one worker's own environment, secrets, command and model.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerOverride {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

fn default_stop_timeout() -> Span {
    Span(std::time::Duration::from_secs(10))
}
fn default_restart_sec() -> Span {
    Span(std::time::Duration::from_secs(5))
}
fn default_start_limit_burst() -> u32 {
    5
}
fn default_start_limit_interval() -> Span {
    Span(std::time::Duration::from_secs(600))
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            restart: RestartPolicy::default(),
            restart_sec: default_restart_sec(),
            start_limit_burst: default_start_limit_burst(),
            start_limit_interval: default_start_limit_interval(),
            memory_max: None,
            cpu_quota: None,
            stop_timeout: default_stop_timeout(),
            sandbox: SandboxMode::default(),
            overrides: BTreeMap::new(),
        }
    }
}

pub(crate) mod size_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(*value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => crate::duration::check_size(n).map_err(serde::de::Error::custom),
            Raw::Text(text) => crate::duration::parse_size(&text).map_err(serde::de::Error::custom),
        }
    }
}

mod optional_size_text {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => serializer.serialize_u64(*v),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        super::size_text::deserialize(deserializer).map(Some)
    }
}

mod optional_percent_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<u32>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => serializer.serialize_str(&format!("{v}%")),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u32>, D::Error> {
        let text = String::deserialize(deserializer)?;
        crate::duration::parse_percent(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

impl Config {
    /// Loads the config at `path`, or the embedded defaults when it does not exist.
    pub fn load(path: &Path) -> Result<Config> {
        match store::read_user_text(path)? {
            None => Ok(Config::default()),
            Some(text) => Config::parse(path, &text),
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|error| {
            let (line, column) = error
                .span()
                .map(|span| line_and_column(text, span.start))
                .unwrap_or((1, 1));
            Error::invalid(format!(
                "{}:{line}:{column}: {}",
                path.display(),
                error.message().trim()
            ))
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let problem = |what: String| Error::invalid(format!("{}: {what}", path.display()));
        if self.runner.preset == Preset::Custom && self.runner.command.is_none() {
            return Err(problem(
                "runner.preset = \"custom\" needs runner.command, e.g. command = \"my-agent --prompt-file {{prompt_file}}\"".into(),
            ));
        }
        if self.judge.mode == JudgeMode::Llm
            && self.runner.preset == Preset::Custom
            && self.runner.tick.is_none()
        {
            return Err(problem(
                "judge.mode = \"llm\" with a custom runner needs runner.tick, the one-shot judge command".into(),
            ));
        }
        if self.pulse.interval.0 < std::time::Duration::from_secs(1) {
            return Err(problem(format!(
                "pulse.interval {} is too short; use 1s or more",
                self.pulse.interval
            )));
        }
        if self.sensors.timeout.0.is_zero() {
            return Err(problem("sensors.timeout must be more than 0s".into()));
        }
        if self.workers.start_limit_burst == 0 {
            return Err(problem(
                "workers.start_limit_burst must be at least 1".into(),
            ));
        }
        let check_env = |section: &str,
                         env: &BTreeMap<String, String>,
                         secrets: &BTreeMap<String, SecretSource>| {
            for name in env.keys().chain(secrets.keys()) {
                validate_env_name(name).map_err(|e| problem(format!("[{section}]: {e}")))?;
            }
            if let Some(both) = env.keys().find(|name| secrets.contains_key(*name)) {
                return Err(problem(format!(
                    "[{section}]: {both} is both a plain variable and a secret; keep one"
                )));
            }
            Ok(())
        };
        check_env("runner", &self.runner.env, &self.runner.secrets)?;
        if let Some(template) = &self.runner.home_template {
            if !template.is_absolute() && !template.starts_with("~") {
                return Err(problem(format!(
                    "runner.home_template {} must be an absolute path (or start with ~/)",
                    template.display()
                )));
            }
        }
        for (id, worker) in &self.workers.overrides {
            store::validate_id("worker id", id)
                .map_err(|e| problem(format!("[workers.{id}]: {e}")))?;
            check_env(&format!("workers.{id}"), &worker.env, &worker.secrets)?;
        }
        Ok(())
    }

    /// `runner.home_template` with `~/` expanded.
    pub fn home_template(&self) -> Option<PathBuf> {
        let template = self.runner.home_template.as_ref()?;
        Some(match template.strip_prefix("~") {
            Ok(rest) => directories::BaseDirs::new()
                .map(|dirs| dirs.home_dir().join(rest))
                .unwrap_or_else(|| template.clone()),
            Err(_) => template.clone(),
        })
    }

    /// A worker's plain environment and secrets: the runner's, then the worker's own
    /// (`[workers.ID]`), the later winning.
    pub fn agent_environment(
        &self,
        worker: Option<&str>,
    ) -> (BTreeMap<String, String>, BTreeMap<String, SecretSource>) {
        let mut env = self.runner.env.clone();
        let mut secrets = self.runner.secrets.clone();
        if let Some(own) = worker.and_then(|id| self.workers.overrides.get(id)) {
            for (name, value) in &own.env {
                secrets.remove(name);
                env.insert(name.clone(), value.clone());
            }
            for (name, source) in &own.secrets {
                env.remove(name);
                secrets.insert(name.clone(), source.clone());
            }
        }
        (env, secrets)
    }

    /// The worker command template after presets and overrides.
    pub fn worker_template(&self) -> String {
        let with_model = self.runner.model.is_some();
        self.runner
            .command
            .clone()
            .or_else(|| {
                self.runner
                    .preset
                    .worker_template(with_model)
                    .map(str::to_owned)
            })
            .unwrap_or_default()
    }

    /// The judge command template for `llm` mode.
    pub fn tick_template(&self) -> String {
        let with_model = self.runner.model.is_some();
        self.runner
            .tick
            .clone()
            .or_else(|| {
                self.runner
                    .preset
                    .tick_template(with_model)
                    .map(str::to_owned)
            })
            .unwrap_or_default()
    }
}

/// Fills `{{prompt_file}}` and `{{model}}` with shell-quoted values, so neither an id nor a
/// prompt nor a model name can inject shell. Unknown placeholders are refused.
pub fn render_command(template: &str, prompt_file: &Path, model: Option<&str>) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(Error::invalid(format!(
                "unclosed placeholder in command template {template:?}"
            )));
        };
        let value = match after[..end].trim() {
            "prompt_file" => prompt_file.to_string_lossy().into_owned(),
            "model" => model.unwrap_or_default().to_owned(),
            other => {
                return Err(Error::invalid(format!(
                    "unknown placeholder {{{{{other}}}}} in command template; use {{{{prompt_file}}}} or {{{{model}}}}"
                )))
            }
        };
        out.push_str(&shell_words::quote(&value));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map(|i| before.len() - i)
        .unwrap_or(before.len() + 1);
    (line, column)
}

/// The config `rein init` writes: every setting shown, with the chosen runner.
pub fn template(preset: Preset) -> String {
    let command = match preset {
        Preset::Custom => "command = \"my-agent --prompt-file {{prompt_file}}\"\n".to_owned(),
        _ => format!(
            "# command = '{}'\n",
            preset.worker_template(false).unwrap_or_default()
        ),
    };
    format!(
        r#"# rein configuration. See rein-config(5) for every key.

[runner]
# The agent workers run: claude, codex, opencode, pi, or custom (then set `command`).
preset = "{preset}"
{command}# model = "..."
# Settings copied into each agent's own HOME first (default: your own, e.g. ~/.codex/config.toml).
# home_template = "~/.config/rein/agent-home"

# [runner.env]                # plain variables for every agent (visible in systemctl show)
# ANTHROPIC_BASE_URL = "https://..."
# [runner.secrets]            # API keys: file:PATH (mode 0600) or credential:NAME
# ANTHROPIC_API_KEY = "file:~/.config/rein/anthropic.key"

[judge]
# agent: rein calls no LLM; an agent session loops on `rein wait --json`.
# llm: each changed world runs the runner's one-shot judge command and executes its move.
mode = "agent"
max_ticks_per_day = 200
timeout = "5m"

[pulse]
interval = "60s"

[sensors]
timeout = "10s"
output_cap = "64K"

[workers]
restart = "on-failure"
restart_sec = "5s"
start_limit_burst = 5
start_limit_interval = "10m"
# memory_max = "4G"
# cpu_quota = "200%"
stop_timeout = "10s"
# strict: every agent runs in systemd's sandbox (checked at each start); off: unfenced.
sandbox = "strict"
"#,
        preset = preset.name()
    )
}

pub fn parse_duration_flag(text: &str) -> std::result::Result<Span, String> {
    duration::parse(text).map(Span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_for_every_preset() {
        for preset in [
            Preset::Claude,
            Preset::Codex,
            Preset::Opencode,
            Preset::Pi,
            Preset::Custom,
        ] {
            let config = Config::parse(Path::new("c.toml"), &template(preset)).expect("parses");
            assert_eq!(config.runner.preset, preset);
            assert!(!config.worker_template().is_empty());
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_a_line() {
        let text = "[pulse]\ninterval = \"30s\"\nbogus = 1\n";
        let error = Config::parse(Path::new("c.toml"), text).expect_err("unknown key");
        let message = error.to_string();
        assert!(message.starts_with("c.toml:3:"), "{message}");
        assert!(message.contains("bogus"), "{message}");
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn bad_values_are_refused() {
        let cases = [
            "[pulse]\ninterval = \"soon\"\n",
            "[pulse]\ninterval = \"100ms\"\n",
            "[runner]\npreset = \"gpt\"\n",
            "[runner]\npreset = \"custom\"\n",
            "[workers]\nmemory_max = \"lots\"\n",
            "[workers]\ncpu_quota = \"0%\"\n",
            // Found by fuzzing: the largest u64 overflowed the sensor output cap.
            "[sensors]\noutput_cap = \"18446744073709551615\"\n",
            "[sensors]\noutput_cap = 1125899906842625\n",
            "[workers]\nmemory_max = \"64iB\"\n",
            "[workers]\ncpu_quota = \"5%%\"\n",
        ];
        for text in cases {
            assert!(Config::parse(Path::new("c.toml"), text).is_err(), "{text}");
        }
    }

    #[test]
    fn rendering_quotes_everything() {
        let rendered = render_command(
            "agent --model {{model}} {{prompt_file}}",
            Path::new("/tmp/it's; rm -rf ~.md"),
            Some("$(reboot)"),
        )
        .expect("renders");
        let words = shell_words::split(&rendered).expect("splits");
        assert_eq!(
            words,
            ["agent", "--model", "$(reboot)", "/tmp/it's; rm -rf ~.md"]
        );
        assert!(render_command("x {{nope}}", Path::new("p"), None).is_err());
        assert!(render_command("x {{model", Path::new("p"), None).is_err());
    }
}
