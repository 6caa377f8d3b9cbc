//! The agent CLIs rein runs (claude, codex, opencode, pi) and what each needs to run inside a
//! worker without stopping at a dialog only a person could pass.
//!
//! Every agent rein starts gets a HOME of its own (`agents/ID/home`). Right before the agent
//! starts (inside its sandboxed unit, at every start and restart), [`prepare`] writes that
//! HOME's settings: first the user's own settings for the CLI (from `runner.home_template`,
//! else from the user's real home), then what rein requires on top — onboarding done, the
//! work directory trusted, the API key approved, auto-updates off, and for claude the hooks
//! that turn its permission prompts into rein asks ([`crate::cli::hook`]). The user's own
//! files are never changed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// The agent CLIs rein has presets for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    Claude,
    Codex,
    Opencode,
    Pi,
}

/// rein's own verbs a worker runs; they never wait on an agent's permission prompt.
pub const WORKER_VERBS: &[&str] = &[
    "ask", "claim", "unclaim", "notify", "report", "asks", "state", "wait", "journal",
];

/// The environment variable naming the agent in a unit (`claude`, `codex`, …).
pub const AGENT_VARIABLE: &str = "REIN_AGENT";
/// The environment variable naming the settings template directory.
pub const TEMPLATE_VARIABLE: &str = "REIN_AGENT_TEMPLATE";
/// The environment variable holding the user's real home (the agent's HOME is its own).
pub const USER_HOME_VARIABLE: &str = "REIN_USER_HOME";

impl Agent {
    pub fn name(self) -> &'static str {
        match self {
            Agent::Claude => "claude",
            Agent::Codex => "codex",
            Agent::Opencode => "opencode",
            Agent::Pi => "pi",
        }
    }

    pub fn from_name(name: &str) -> Option<Agent> {
        match name {
            "claude" => Some(Agent::Claude),
            "codex" => Some(Agent::Codex),
            "opencode" => Some(Agent::Opencode),
            "pi" => Some(Agent::Pi),
            _ => None,
        }
    }

    /// The agent a command runs, from its program's name (`/opt/x/bin/claude` is claude).
    pub fn of_program(program: &str) -> Option<Agent> {
        Agent::from_name(Path::new(program).file_name()?.to_str()?)
    }

    /// Files only a template may provide: claude's `.claude.json` also holds the user's
    /// account and history, which is not copied from the real home.
    fn template_only_files(self) -> &'static [&'static str] {
        match self {
            Agent::Claude => &[".claude.json"],
            Agent::Codex | Agent::Opencode | Agent::Pi => &[],
        }
    }

    /// The user's settings files for this CLI, relative to a home directory.
    fn settings_files(self) -> &'static [&'static str] {
        match self {
            Agent::Claude => &[".claude/settings.json"],
            Agent::Codex => &[".codex/config.toml"],
            Agent::Opencode => &[".config/opencode/opencode.json"],
            Agent::Pi => &[".pi/agent/models.json", ".pi/agent/settings.json"],
        }
    }
}

/// What [`prepare`] works with.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The agent's HOME (its own, writable).
    pub home: PathBuf,
    /// Where it works (trusted).
    pub work_dir: PathBuf,
    /// `runner.home_template`: files copied into HOME first.
    pub template: Option<PathBuf>,
    /// The user's real home, whose CLI settings are the default template.
    pub user_home: Option<PathBuf>,
    /// The rein binary, for hooks.
    pub rein_bin: String,
    /// The agent's environment (secrets included), e.g. for the key claude must approve.
    pub env: HashMap<String, String>,
}

/// Writes the agent's settings into its HOME; returns the files written.
pub fn prepare(agent: Agent, setup: &Setup) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let files = agent
        .settings_files()
        .iter()
        .map(|file| (file, true))
        .chain(agent.template_only_files().iter().map(|file| (file, false)));
    for (relative, from_user) in files {
        let user_home = setup.user_home.iter().filter(|_| from_user);
        let source = setup
            .template
            .iter()
            .chain(user_home)
            .map(|base| base.join(relative))
            .find(|path| path.is_file());
        if let Some(source) = source {
            let target = setup.home.join(relative);
            // The user's own file (a symlink is followed): a regular file, size-capped.
            let Some(text) = crate::store::read_user_text(&source)? else {
                continue;
            };
            write(&target, text.as_bytes())?;
            written.push(target);
        }
    }
    match agent {
        Agent::Claude => written.extend(claude(setup)?),
        Agent::Codex => written.extend(codex(setup)?),
        Agent::Opencode => written.extend(opencode(setup)?),
        Agent::Pi => written.extend(pi(setup)?),
    }
    Ok(written)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        crate::store::ensure_dir(parent)?;
    }
    crate::store::write_atomic_mode(path, bytes, 0o600)
}

/// Reads a JSON object (an absent or broken file is an empty object: rein's keys matter,
/// and the user's original is never touched). The file is in the agent's HOME, which the
/// agent writes: only a regular file is read (no symlink, FIFO or device), size-capped.
fn read_object(path: &Path) -> Value {
    crate::store::read_optional(path)
        .ok()
        .flatten()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

fn object<'a>(value: &'a mut Value, key: &str) -> &'a mut serde_json::Map<String, Value> {
    if !value.get(key).is_some_and(Value::is_object) {
        value[key] = json!({});
    }
    match value.get_mut(key) {
        Some(Value::Object(map)) => map,
        _ => unreachable!("just made an object"),
    }
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    write(path, &bytes)
}

/// claude: onboarding done, the work directory trusted, the API key approved (by its last 20
/// characters, as claude records it), auto mode off, rein's verbs allowed, and hooks: a
/// permission request becomes a rein ask, a notification that claude waits for a person is
/// shown in `worker ls`.
fn claude(setup: &Setup) -> Result<Vec<PathBuf>> {
    let state_path = setup.home.join(".claude.json");
    let mut state = read_object(&state_path);
    state["hasCompletedOnboarding"] = json!(true);
    if state.get("lastOnboardingVersion").is_none() {
        state["lastOnboardingVersion"] = json!("2.1.332");
    }
    if let Some(key) = setup
        .env
        .get("ANTHROPIC_API_KEY")
        .filter(|key| key.len() >= 20)
    {
        let suffix = key[key.len() - 20..].to_owned();
        let responses = object(&mut state, "customApiKeyResponses");
        let approved = responses.entry("approved").or_insert_with(|| json!([]));
        if let Some(list) = approved.as_array_mut() {
            if !list.iter().any(|v| v == suffix.as_str()) {
                list.push(json!(suffix));
            }
        }
        responses.entry("rejected").or_insert_with(|| json!([]));
    }
    let work = setup.work_dir.display().to_string();
    let projects = object(&mut state, "projects");
    let project = projects.entry(work).or_insert_with(|| json!({}));
    project["hasTrustDialogAccepted"] = json!(true);
    write_json(&state_path, &state)?;

    let settings_path = setup.home.join(".claude/settings.json");
    let mut settings = read_object(&settings_path);
    let permissions = object(&mut settings, "permissions");
    let allow = permissions.entry("allow").or_insert_with(|| json!([]));
    if let Some(list) = allow.as_array_mut() {
        for verb in WORKER_VERBS {
            let rule = json!(format!("Bash(rein {verb}:*)"));
            if !list.contains(&rule) {
                list.push(rule);
            }
        }
    }
    permissions
        .entry("defaultMode")
        .or_insert_with(|| json!("default"));
    permissions.insert("disableAutoMode".to_owned(), json!("disable"));
    let hook = |timeout: Option<u64>| {
        let mut command = json!({
            "type": "command",
            "command": format!("{} hook claude", shell_words::quote(&setup.rein_bin)),
        });
        if let Some(timeout) = timeout {
            command["timeout"] = json!(timeout);
        }
        command
    };
    let hooks = object(&mut settings, "hooks");
    // A person may take days to answer: the hook waits as long as the ask does.
    hooks.insert(
        "PermissionRequest".to_owned(),
        json!([{"matcher": "*", "hooks": [hook(Some(30 * 24 * 3600))]}]),
    );
    for event in ["Notification", "UserPromptSubmit", "PostToolUse", "Stop"] {
        hooks.insert(event.to_owned(), json!([{"hooks": [hook(Some(30))]}]));
    }
    settings
        .as_object_mut()
        .map(|s| s.insert("autoUpdates".to_owned(), json!(false)));
    write_json(&settings_path, &settings)?;
    Ok(vec![state_path, settings_path])
}

/// codex: the work directory trusted, no approval prompts and no sandbox of its own (rein's
/// systemd sandbox is the fence; codex's would stop writes to the work tree), no update
/// checks, plugins and background daemons off.
fn codex(setup: &Setup) -> Result<Vec<PathBuf>> {
    let path = setup.home.join(".codex/config.toml");
    let mut config: toml::Table = crate::store::read_text(&path)
        .ok()
        .flatten()
        .and_then(|text| text.parse().ok())
        .unwrap_or_default();
    config.insert("approval_policy".into(), "never".into());
    config.insert("sandbox_mode".into(), "danger-full-access".into());
    config.insert("check_for_update_on_startup".into(), false.into());
    let features = config
        .entry("features")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(features) = features {
        features.insert("plugins".into(), false.into());
        features.insert("daemon_auto_start".into(), false.into());
    }
    let projects = config
        .entry("projects")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(projects) = projects {
        let mut trusted = toml::Table::new();
        trusted.insert("trust_level".into(), "trusted".into());
        projects.insert(
            setup.work_dir.display().to_string(),
            toml::Value::Table(trusted),
        );
    }
    let text = toml::to_string(&config)
        .map_err(|e| Error::invalid(format!("cannot write codex's config: {e}")))?;
    write(&path, text.as_bytes())?;
    Ok(vec![path])
}

/// opencode: no auto-update, no sharing, and its shell and edits allowed (rein's sandbox is
/// the fence).
fn opencode(setup: &Setup) -> Result<Vec<PathBuf>> {
    let path = setup.home.join(".config/opencode/opencode.json");
    let mut config = read_object(&path);
    config["autoupdate"] = json!(false);
    config["share"] = json!("disabled");
    let permission = object(&mut config, "permission");
    permission.insert("bash".to_owned(), json!("allow"));
    permission.insert("edit".to_owned(), json!("allow"));
    write_json(&path, &config)?;
    Ok(vec![path])
}

/// pi: no install telemetry (it has no permission prompts of its own).
fn pi(setup: &Setup) -> Result<Vec<PathBuf>> {
    let path = setup.home.join(".pi/agent/settings.json");
    let mut settings = read_object(&path);
    settings["enableInstallTelemetry"] = json!(false);
    write_json(&path, &settings)?;
    Ok(vec![path])
}

/// Text on an agent's screen that means one of its own dialogs is open and waits for a person
/// (the PTY host looks for it once the screen settles). Only dialogs seen in the versions
/// named in rein-config(5); opencode and pi have none that rein's settings leave on.
pub fn dialog_markers(agent: Agent) -> &'static [&'static str] {
    match agent {
        Agent::Claude => &[
            "Do you want to proceed?",
            "Yes, I trust this folder",
            "Do you want to make this edit",
            "Do you want to create",
        ],
        Agent::Codex => &["Trust this folder?", "Hooks need review", "Allow command?"],
        Agent::Opencode | Agent::Pi => &[],
    }
}

/// The environment a preset's agent gets besides the user's: auto-updaters off.
pub fn environment(agent: Agent) -> Vec<(&'static str, &'static str)> {
    match agent {
        Agent::Claude => vec![("DISABLE_AUTOUPDATER", "1")],
        Agent::Codex | Agent::Opencode | Agent::Pi => Vec::new(),
    }
}

/// Whether a shell command is exactly one invocation of one of rein's worker verbs
/// (`rein ask …`, `"$REIN_BIN" ask …`, `/path/to/rein claim x`): nothing chained, piped,
/// substituted or redirected. Such a call never waits on an agent's permission prompt.
pub fn is_rein_verb(command: &str, rein_bin: &str) -> bool {
    if command.contains(['\n', ';', '&', '|', '`', '>', '<', '(', ')']) {
        return false;
    }
    // Only "$REIN_BIN" / $REIN_BIN may be a variable, and only as the program.
    let command = command.trim();
    let rest = [
        "\"$REIN_BIN\"",
        "\"${REIN_BIN}\"",
        "$REIN_BIN",
        "${REIN_BIN}",
    ]
    .iter()
    .find_map(|form| command.strip_prefix(form))
    .map(|rest| format!("rein{rest}"))
    .unwrap_or_else(|| command.to_owned());
    if rest.contains('$') {
        return false;
    }
    let Ok(words) = shell_words::split(&rest) else {
        return false;
    };
    let Some((program, args)) = words.split_first() else {
        return false;
    };
    let is_rein = program == "rein" || program == rein_bin;
    is_rein
        && args
            .first()
            .is_some_and(|verb| WORKER_VERBS.contains(&verb.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rein_verbs_are_recognised_and_nothing_else() {
        let bin = "/opt/rein/bin/rein";
        for command in [
            "rein ask --prompt 'Deploy?' --options yes,no",
            "\"$REIN_BIN\" ask --prompt \"Merge PR 12?\"",
            "$REIN_BIN claim job-1",
            "/opt/rein/bin/rein notify 'build is red'",
            "rein report summary.md --file out.md",
        ] {
            assert!(is_rein_verb(command, bin), "{command}");
        }
        for command in [
            "rein answer abc yes",
            "rein ask --prompt x; rm -rf /",
            "rein ask --prompt x && git push",
            "rein ask --prompt \"$(cat secrets)\"",
            "rein notify hi > /etc/passwd",
            "git push origin main",
            "REIN_BIN=/bin/sh \"$REIN_BIN\" ask",
            "/tmp/rein ask --prompt x",
            "rein withdraw abc",
            "\"$REIN_BIN\" ask --prompt \"$HOME\"",
        ] {
            assert!(!is_rein_verb(command, bin), "{command}");
        }
    }

    #[test]
    fn claude_settings_keep_the_users_and_add_reins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let user = dir.path().join("user");
        std::fs::create_dir_all(user.join(".claude")).expect("dir");
        std::fs::write(
            user.join(".claude/settings.json"),
            r#"{"permissions":{"allow":["Bash(npm test:*)"]},"model":"opus"}"#,
        )
        .expect("user settings");
        let setup = Setup {
            home: dir.path().join("home"),
            work_dir: PathBuf::from("/srv/project"),
            template: None,
            user_home: Some(user.clone()),
            rein_bin: "/opt/rein".to_owned(),
            env: HashMap::from([(
                "ANTHROPIC_API_KEY".to_owned(),
                "sk-ant-0123456789abcdefghijklmnop".to_owned(),
            )]),
        };
        prepare(Agent::Claude, &setup).expect("prepare");
        let settings = read_object(&setup.home.join(".claude/settings.json"));
        assert_eq!(settings["model"], "opus", "the user's settings are kept");
        let allow = settings["permissions"]["allow"].as_array().expect("allow");
        assert!(allow.contains(&json!("Bash(npm test:*)")));
        assert!(allow.contains(&json!("Bash(rein ask:*)")));
        assert_eq!(
            settings["hooks"]["PermissionRequest"][0]["hooks"][0]["command"],
            "/opt/rein hook claude"
        );
        let state = read_object(&setup.home.join(".claude.json"));
        assert_eq!(state["hasCompletedOnboarding"], true);
        assert_eq!(
            state["customApiKeyResponses"]["approved"][0],
            "6789abcdefghijklmnop"
        );
        assert_eq!(
            state["projects"]["/srv/project"]["hasTrustDialogAccepted"],
            true
        );
        // The user's own file is untouched.
        let original = read_object(&user.join(".claude/settings.json"));
        assert!(original.get("hooks").is_none());
    }

    #[test]
    fn codex_config_keeps_the_provider_and_trusts_the_work_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let template = dir.path().join("template");
        std::fs::create_dir_all(template.join(".codex")).expect("dir");
        std::fs::write(
            template.join(".codex/config.toml"),
            "model = \"m\"\nmodel_provider = \"local\"\n[model_providers.local]\nbase_url = \"http://127.0.0.1:1/v1\"\n",
        )
        .expect("template");
        let setup = Setup {
            home: dir.path().join("home"),
            work_dir: PathBuf::from("/srv/p"),
            template: Some(template),
            user_home: None,
            rein_bin: "/opt/rein".to_owned(),
            env: HashMap::new(),
        };
        prepare(Agent::Codex, &setup).expect("prepare");
        let text = std::fs::read_to_string(setup.home.join(".codex/config.toml")).expect("config");
        let config: toml::Table = text.parse().expect("toml");
        assert_eq!(config["model_provider"].as_str(), Some("local"));
        assert_eq!(config["approval_policy"].as_str(), Some("never"));
        assert_eq!(
            config["projects"]["/srv/p"]["trust_level"].as_str(),
            Some("trusted")
        );
    }
}
