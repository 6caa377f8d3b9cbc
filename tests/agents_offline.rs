//! The real agent CLIs (claude, codex, opencode, pi) run offline against the scripted model
//! server in `support/model_server.rs`: each test is one recipe rein's presets build on.
//!
//! Every test makes a throwaway HOME with the CLI's config files, starts the CLI the way a
//! rein worker would (one-shot, or interactive in a real terminal under tmux), scripts the
//! model to run `rein ask` through the CLI's own shell tool, answers the ask as a person
//! would, and checks that the model received the answer and the CLI showed the final text.
//! The CLIs come from `contrib/agents.sh install`; a missing one fails the test, naming that
//! command.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::model_server::{ModelServer, Script, Seen, API_KEY};
use support::{wait_until, Rein, REIN};

/// The text the scripted model ends every main conversation with.
const FINAL: &str = "Deployment check finished offline.";

/// The first user message. It must not contain `FINAL`, so seeing `FINAL` proves the model
/// answered.
const PROMPT: &str = "Run the deployment check.";

/// The versions `contrib/agents.sh` pins; the recipes below were checked with these.
const CLAUDE_VERSION: &str = "2.1.332";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cli {
    Claude,
    Codex,
    Opencode,
    Pi,
}

impl Cli {
    fn name(self) -> &'static str {
        match self {
            Cli::Claude => "claude",
            Cli::Codex => "codex",
            Cli::Opencode => "opencode",
            Cli::Pi => "pi",
        }
    }

    /// How long the CLI may take from start to its final text here (opencode boots slowly
    /// on a loaded 2-core machine).
    fn limit(self) -> Duration {
        match self {
            Cli::Opencode => Duration::from_secs(150),
            _ => Duration::from_secs(90),
        }
    }
}

/// `target/agents/node_modules/.bin`, or `$REIN_AGENTS_PREFIX/node_modules/.bin`.
fn agents_bin() -> PathBuf {
    let prefix = std::env::var_os("REIN_AGENTS_PREFIX").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/agents"),
        PathBuf::from,
    );
    prefix.join("node_modules/.bin")
}

fn executable(cli: Cli) -> PathBuf {
    let path = agents_bin().join(cli.name());
    assert!(
        path.exists(),
        "{} is not installed at {}: run `contrib/agents.sh install` first",
        cli.name(),
        path.display()
    );
    path
}

/// A throwaway HOME, a git work tree, and a rein profile, with one CLI configured to reach
/// the model server and nothing else.
struct Sandbox {
    cli: Cli,
    rein: Rein,
    home: PathBuf,
    work: PathBuf,
    /// A directory holding only a `rein` link, for CLIs whose allow rules match `rein …`.
    rein_dir: PathBuf,
    marker: String,
    env: Vec<(String, String)>,
}

impl Sandbox {
    fn new(cli: Cli, server: &ModelServer) -> Sandbox {
        executable(cli);
        let rein = Rein::new();
        let home = rein.temp.path().join("home");
        let work = rein.temp.path().join("work");
        let rein_dir = rein.temp.path().join("rein-bin");
        for dir in [&home, &work, &rein_dir] {
            std::fs::create_dir_all(dir).expect("create sandbox dir");
        }
        std::os::unix::fs::symlink(REIN, rein_dir.join("rein")).expect("link rein");
        let status = Command::new("git")
            .args(["init", "-q"])
            .current_dir(&work)
            .status()
            .expect("git init");
        assert!(status.success(), "git init failed");
        let marker = format!("marker-{}", uuid::Uuid::new_v4().simple());
        let mut sandbox = Sandbox {
            cli,
            rein,
            home,
            work,
            rein_dir,
            marker,
            env: Vec::new(),
        };
        sandbox.configure(server);
        sandbox
    }

    fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.home.join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create config dir");
        std::fs::write(&path, text).expect("write config");
        path
    }

    fn set(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// The recipe: config files and environment for each CLI.
    fn configure(&mut self, server: &ModelServer) {
        let base = server.base_url();
        let work = self.work.display().to_string();
        match self.cli {
            Cli::Claude => {
                // Onboarding done, the key approved (by its last 20 characters) and the
                // work tree trusted: otherwise interactive claude stops at a dialog or tries
                // api.anthropic.com.
                let state = json!({
                    "hasCompletedOnboarding": true,
                    "lastOnboardingVersion": CLAUDE_VERSION,
                    "customApiKeyResponses": {
                        "approved": [&API_KEY[API_KEY.len() - 20..]],
                        "rejected": [],
                    },
                    "projects": {work: {"hasTrustDialogAccepted": true}},
                });
                self.write(".claude.json", &state.to_string());
                let settings = json!({
                    "permissions": {
                        "allow": ["Bash"],
                        "defaultMode": "default",
                        "disableAutoMode": "disable",
                    },
                });
                self.write(".claude/settings.json", &settings.to_string());
                self.set("ANTHROPIC_BASE_URL", &base);
                self.set("ANTHROPIC_API_KEY", API_KEY);
                self.set("DISABLE_AUTOUPDATER", "1");
                self.set("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
            }
            Cli::Codex => {
                let config = format!(
                    r#"model = "offline-model"
model_provider = "offline"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[model_providers.offline]
name = "offline"
base_url = "{base}/v1"
env_key = "OFFLINE_API_KEY"
wire_api = "responses"

[features]
plugins = false
daemon_auto_start = false

[projects."{work}"]
trust_level = "trusted"
"#
                );
                self.write(".codex/config.toml", &config);
                let codex_home = self.home.join(".codex").display().to_string();
                self.set("CODEX_HOME", &codex_home);
                self.set("OFFLINE_API_KEY", API_KEY);
            }
            Cli::Opencode => {
                let config = json!({
                    "$schema": "https://opencode.ai/config.json",
                    "provider": {"offline": {
                        "npm": "@ai-sdk/openai-compatible",
                        "name": "Offline",
                        "options": {"baseURL": format!("{base}/v1"), "apiKey": "{env:OFFLINE_API_KEY}"},
                        "models": {"offline-model": {"name": "Offline model", "tool_call": true}},
                    }},
                    "model": "offline/offline-model",
                    "small_model": "offline/offline-model",
                    "autoupdate": false,
                    "share": "disabled",
                    "permission": {"bash": "allow", "edit": "allow"},
                });
                self.write(".config/opencode/opencode.json", &config.to_string());
                self.set("OFFLINE_API_KEY", API_KEY);
                self.set("OPENCODE_DISABLE_MODELS_FETCH", "1");
            }
            Cli::Pi => {
                let models = json!({"providers": {"offline": {
                    "baseUrl": format!("{base}/v1"),
                    "api": "openai-completions",
                    "apiKey": "OFFLINE_API_KEY",
                    "compat": {"supportsDeveloperRole": false, "supportsReasoningEffort": false},
                    "models": [{"id": "offline-model", "name": "Offline model"}],
                }}});
                self.write(".pi/agent/models.json", &models.to_string());
                let settings = json!({
                    "defaultProvider": "offline",
                    "defaultModel": "offline-model",
                    "enableInstallTelemetry": false,
                });
                self.write(".pi/agent/settings.json", &settings.to_string());
                self.set("OFFLINE_API_KEY", API_KEY);
                self.set("PI_OFFLINE", "1");
            }
        }
    }

    /// A clean environment: nothing of the caller's leaks in (no real API keys, no real
    /// HOME), plus the rein profile and `REIN_BIN` a worker would get.
    fn apply_env(&self, command: &mut Command) {
        let path = format!(
            "{}:{}:/usr/local/bin:/usr/bin:/bin",
            agents_bin().display(),
            self.rein_dir.display()
        );
        command
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", path)
            .env("USER", "root")
            .env("SHELL", "/bin/bash")
            .env("LANG", "C.UTF-8")
            .env("TERM", "xterm-256color")
            .env("REIN_BIN", REIN)
            .env("REIN_MARKER", &self.marker)
            .env("REIN_DATA_DIR", &self.rein.data)
            .env("REIN_CONFIG", &self.rein.config)
            .env("REIN_PROFILE", &self.rein.profile);
        for (key, value) in &self.env {
            command.env(key, value);
        }
    }

    /// The one-shot command line: the prompt in, the final text out.
    fn one_shot(&self, prompt: &str) -> Command {
        let mut command = Command::new(executable(self.cli));
        match self.cli {
            Cli::Claude => command.args(["-p", prompt]),
            Cli::Codex => command.args(["exec", "--skip-git-repo-check", prompt]),
            Cli::Opencode => command.args(["run", prompt]),
            Cli::Pi => command.args(["-p", prompt]),
        };
        self.apply_env(&mut command);
        command.current_dir(&self.work);
        command
    }

    /// The interactive command line, started with `prompt` as its first message.
    fn interactive(&self, prompt: &str) -> Vec<String> {
        let program = executable(self.cli).display().to_string();
        let mut words = vec![program];
        if self.cli == Cli::Opencode {
            words.push("--prompt".into());
        }
        words.push(prompt.into());
        words
    }

    fn marker_file(&self) -> PathBuf {
        self.work.join("marker.txt")
    }
}

/// The shell step every recipe runs: proves the tool sees the worker's environment (a file
/// with `$REIN_MARKER`) and that `"$REIN_BIN"` works even where the shell resets PATH, then
/// blocks in `rein ask` until a person answers.
const ASK_STEP: &str =
    "printf '%s' \"$REIN_MARKER\" > marker.txt && \"$REIN_BIN\" ask --prompt 'Deploy?' --options yes,no";

/// A process group killed when dropped, so a failing test leaves no CLI or tool behind.
struct Group {
    child: Child,
}

impl Group {
    fn spawn(mut command: Command, log: &Path) -> Group {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(log).expect("create log");
        let err = out.try_clone().expect("clone log");
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        Group {
            child: command.spawn().expect("spawn the CLI"),
        }
    }

    fn wait(&mut self, limit: Duration, what: &str) -> std::process::ExitStatus {
        let mut status = None;
        wait_until(limit, what, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        status.expect("exited")
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: signalling the process group this test created.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A tmux server of its own with one window running the CLI; killed when dropped.
struct Terminal {
    socket: String,
    pane_pid: Option<i32>,
}

impl Terminal {
    fn start(sandbox: &Sandbox, words: &[String]) -> Terminal {
        let socket = format!("rein-agents-{}", uuid::Uuid::new_v4().simple());
        let line = shell_words::join(words);
        let mut command = Command::new("tmux");
        command
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", "120", "-y", "40", &line]);
        sandbox.apply_env(&mut command);
        command.current_dir(&sandbox.work);
        let status = command.status().expect("run tmux (apt-get install tmux)");
        assert!(status.success(), "tmux new-session failed");
        let mut terminal = Terminal {
            socket,
            pane_pid: None,
        };
        let pid = terminal.tmux(&["display-message", "-p", "#{pane_pid}"]);
        terminal.pane_pid = pid.trim().parse().ok();
        terminal
    }

    fn tmux(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J"])
    }

    fn wait_for_text(&self, text: &str, limit: Duration) {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(limit, &format!("{text:?} on the screen"), || {
                last = self.screen();
                last.contains(text)
            })
        }));
        if found.is_err() {
            panic!("{text:?} never appeared on the screen; it shows:\n{last}");
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(pid) = self.pane_pid {
            // SAFETY: the pane's process group was made by this test's tmux server.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// Waits for the CLI's `rein ask`, answers it as a person would, and checks the model got
/// the answer back as the tool's result.
/// With a `hold`, the person takes that long to answer, as a person does: the CLI must keep
/// waiting for the command instead of killing it or handing it back unfinished.
fn answer_the_ask(sandbox: &Sandbox, server: &ModelServer, limit: Duration, hold: Duration) {
    server.expect(limit, "the first main request", |seen| {
        seen.main_requests().next().is_some()
    });
    let mut id = None;
    wait_until(Duration::from_secs(60), "the CLI's rein ask", || {
        id = sandbox.rein.pending_ids().into_iter().next();
        id.is_some()
    });
    let id = id.expect("ask id");
    if !hold.is_zero() {
        let early = server.wait_until(hold, |seen| {
            seen.requests
                .iter()
                .any(|request| request.main && request.step.is_some_and(|step| step > 0))
        });
        assert!(
            early.is_err(),
            "{} went on before the ask was answered:\n{}",
            sandbox.cli.name(),
            support::model_server::summary(&server.seen())
        );
    }
    sandbox.rein.ok(&["answer", &id, "yes"]);
    server.expect(limit, "the answer `yes` as a tool result", |seen| {
        seen.tool_results
            .iter()
            .any(|result| result.contains("yes"))
    });
    let marker = std::fs::read_to_string(sandbox.marker_file()).unwrap_or_else(|error| {
        panic!(
            "{}: the shell tool did not write {}: {error}",
            sandbox.cli.name(),
            sandbox.marker_file().display()
        )
    });
    assert_eq!(
        marker,
        sandbox.marker,
        "{} shell tool saw another REIN_MARKER",
        sandbox.cli.name()
    );
}

fn script() -> Script {
    Script::new().shell(ASK_STEP).text(FINAL)
}

fn run_one_shot(cli: Cli) {
    run_one_shot_holding(cli, Duration::ZERO);
}

fn run_one_shot_holding(cli: Cli, hold: Duration) {
    let server = ModelServer::start(script());
    let sandbox = Sandbox::new(cli, &server);
    let log = sandbox.rein.temp.path().join("output.log");
    let mut group = Group::spawn(sandbox.one_shot(PROMPT), &log);
    answer_the_ask(&sandbox, &server, cli.limit(), hold);
    let status = group.wait(cli.limit(), &format!("{} to exit", cli.name()));
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "{} exited with {status}:\n{output}",
        cli.name()
    );
    assert!(
        output.contains(FINAL),
        "{} did not print the final text; it printed:\n{output}",
        cli.name()
    );
    assert_no_rejections(&server.seen());
}

fn run_interactive(cli: Cli) {
    let server = ModelServer::start(script());
    let sandbox = Sandbox::new(cli, &server);
    let terminal = Terminal::start(&sandbox, &sandbox.interactive(PROMPT));
    answer_the_ask(&sandbox, &server, cli.limit(), Duration::ZERO);
    terminal.wait_for_text(FINAL, cli.limit());
    assert_no_rejections(&server.seen());
}

/// The CLI spoke the wire format well enough that the server never refused it.
fn assert_no_rejections(seen: &Seen) {
    assert!(
        seen.rejections.is_empty(),
        "the model server refused requests:\n{}",
        support::model_server::summary(seen)
    );
}

#[test]
fn claude_one_shot_runs_the_shell_tool_without_asking() {
    run_one_shot(Cli::Claude);
}

#[test]
fn codex_one_shot_runs_the_shell_tool_without_asking() {
    run_one_shot(Cli::Codex);
}

#[test]
fn opencode_one_shot_runs_the_shell_tool_without_asking() {
    run_one_shot(Cli::Opencode);
}

#[test]
fn pi_one_shot_runs_the_shell_tool_without_asking() {
    run_one_shot(Cli::Pi);
}

#[test]
fn claude_interactive_reaches_the_model_with_no_dialog() {
    run_interactive(Cli::Claude);
}

#[test]
fn codex_interactive_reaches_the_model_with_no_dialog() {
    run_interactive(Cli::Codex);
}

#[test]
fn opencode_interactive_reaches_the_model_with_no_dialog() {
    run_interactive(Cli::Opencode);
}

#[test]
fn pi_interactive_reaches_the_model_with_no_dialog() {
    run_interactive(Cli::Pi);
}

/// Longer than codex's longest yield (30 s) and than a person's quick reply.
const LONG_HOLD: Duration = Duration::from_secs(45);

#[test]
fn claude_waits_for_a_long_running_command() {
    run_one_shot_holding(Cli::Claude, LONG_HOLD);
}

#[test]
fn codex_waits_for_a_long_running_command() {
    run_one_shot_holding(Cli::Codex, LONG_HOLD);
}

#[test]
fn opencode_waits_for_a_long_running_command() {
    run_one_shot_holding(Cli::Opencode, LONG_HOLD);
}

#[test]
fn pi_waits_for_a_long_running_command() {
    run_one_shot_holding(Cli::Pi, LONG_HOLD);
}

/// claude's permission hooks: `rein ask` runs at once through an allow rule, every other
/// Bash call goes to a PermissionRequest hook that asks a person through rein and may wait
/// long for the answer (here past 60 s); the hook's reply allows one call and denies the
/// next, and the model is told why.
#[test]
fn claude_permission_hook_allows_and_denies_through_rein() {
    let allowed = "printf '%s' \"$REIN_MARKER\" > allowed.txt && echo allowed-ran";
    let denied = "touch denied.txt && echo denied-ran";
    let server = ModelServer::start(
        Script::new()
            .shell("rein ask --prompt 'Deploy?' --options yes,no")
            .shell(allowed)
            .shell(denied)
            .text(FINAL),
    );
    let sandbox = Sandbox::new(Cli::Claude, &server);
    let hook_inputs = sandbox.home.join("hook-inputs");
    std::fs::create_dir_all(&hook_inputs).expect("create hook-inputs");
    // The hook keeps what claude sent it, asks a person, and turns the answer into claude's
    // decision JSON.
    let hook = sandbox.write(
        "permission-hook.sh",
        &format!(
            r#"#!/bin/bash
input=$(cat)
printf '%s' "$input" > "{inputs}/$(date +%s%N).json"
answer=$(rein ask --prompt 'Allow this Bash call?' --options allow,deny) || answer=deny
if [[ $answer == allow ]]; then
    echo '{{"hookSpecificOutput":{{"hookEventName":"PermissionRequest","decision":{{"behavior":"allow"}}}}}}'
else
    echo '{{"hookSpecificOutput":{{"hookEventName":"PermissionRequest","decision":{{"behavior":"deny","message":"A person denied this command through rein."}}}}}}'
fi
"#,
            inputs = hook_inputs.display()
        ),
    );
    make_executable(&hook);
    let settings = json!({
        "permissions": {
            "allow": ["Bash(rein ask:*)"],
            "defaultMode": "default",
            "disableAutoMode": "disable",
        },
        "hooks": {
            "PermissionRequest": [{
                "matcher": "Bash",
                "hooks": [{"type": "command", "command": hook, "timeout": 3600}],
            }],
        },
    });
    sandbox.write(".claude/settings.json", &settings.to_string());

    let log = sandbox.rein.temp.path().join("output.log");
    let mut group = Group::spawn(sandbox.one_shot(PROMPT), &log);
    let limit = Cli::Claude.limit();

    // 1. `rein ask` matches the allow rule: no hook, the ask is filed directly.
    let ask = wait_for_ask(&sandbox, "Deploy?", limit);
    sandbox.rein.ok(&["answer", &ask, "yes"]);
    server.expect(limit, "the answer `yes`", |seen| {
        seen.tool_results
            .iter()
            .any(|result| result.contains("yes"))
    });

    // 2. The hook asks; the person takes over a minute; the call is allowed and runs.
    let ask = wait_for_ask(&sandbox, "Allow this Bash call?", limit);
    let held = std::time::Instant::now();
    let released = server.wait_until(Duration::from_secs(61), |seen| seen.requests.len() > 2);
    assert!(
        released.is_err(),
        "claude went on while its permission hook was still waiting"
    );
    assert!(held.elapsed() >= Duration::from_secs(61));
    sandbox.rein.ok(&["answer", &ask, "allow"]);
    server.expect(limit, "the allowed command's output", |seen| {
        seen.tool_results
            .iter()
            .any(|result| result.contains("allowed-ran"))
    });
    let written = std::fs::read_to_string(sandbox.work.join("allowed.txt")).unwrap_or_default();
    assert_eq!(written, sandbox.marker);

    // 3. The hook asks again; the person denies: the command does not run and the model
    //    is told why.
    let ask = wait_for_ask(&sandbox, "Allow this Bash call?", limit);
    sandbox.rein.ok(&["answer", &ask, "deny"]);
    server.expect(limit, "the denial reason as the tool result", |seen| {
        seen.tool_results
            .iter()
            .any(|result| result.contains("A person denied this command through rein."))
    });
    let status = group.wait(limit, "claude to exit");
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "claude exited with {status}:\n{output}");
    assert!(output.contains(FINAL), "claude printed:\n{output}");
    assert!(
        !sandbox.work.join("denied.txt").exists(),
        "the denied command ran"
    );

    // The hook saw the tool name and input as JSON on stdin, once per gated call.
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&hook_inputs)
        .expect("read hook-inputs")
        .map(|entry| entry.expect("entry").path())
        .collect();
    inputs.sort();
    let inputs: Vec<serde_json::Value> = inputs
        .iter()
        .map(|path| {
            serde_json::from_str(&std::fs::read_to_string(path).expect("read hook input"))
                .expect("hook input is JSON")
        })
        .collect();
    assert_eq!(inputs.len(), 2, "hook inputs: {inputs:#?}");
    for (input, command) in inputs.iter().zip([allowed, denied]) {
        assert_eq!(input["hook_event_name"], "PermissionRequest");
        assert_eq!(input["tool_name"], "Bash");
        assert_eq!(input["tool_input"]["command"], command);
    }
    assert_no_rejections(&server.seen());
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Waits for a pending ask with this prompt and returns its id.
fn wait_for_ask(sandbox: &Sandbox, prompt: &str, limit: Duration) -> String {
    let mut id = None;
    wait_until(limit, &format!("an ask {prompt:?}"), || {
        let asks = sandbox.rein.json(&["asks"]);
        id = asks.as_array().and_then(|asks| {
            asks.iter()
                .find(|ask| ask["prompt"] == prompt)
                .and_then(|ask| ask["id"].as_str().map(str::to_owned))
        });
        id.is_some()
    });
    id.expect("ask id")
}

/// For deriving a recipe by hand (a new CLI version): serves the script in `$SCRIPT` (a JSON
/// list of `{"shell": CMD}` / `{"text": T}`), prints the base URL, and appends every request
/// to `$LOG` as JSON lines, for `$SECONDS_TO_SERVE` seconds (default 600).
#[test]
#[ignore = "a tool for exploring a CLI by hand"]
fn serve_for_exploration() {
    let steps: serde_json::Value =
        serde_json::from_str(&std::env::var("SCRIPT").unwrap_or_else(|_| "[]".into()))
            .expect("SCRIPT is a JSON list");
    let mut script = Script::new();
    for step in steps.as_array().expect("SCRIPT is a JSON list") {
        if let Some(command) = step["shell"].as_str() {
            script = script.shell(command);
        } else if let Some(text) = step["text"].as_str() {
            script = script.text(text);
        }
    }
    let server = ModelServer::start(script);
    println!("{}", server.base_url());
    let seconds: u64 =
        std::env::var("SECONDS_TO_SERVE").map_or(600, |s| s.parse().expect("seconds"));
    let log = std::env::var("LOG").expect("LOG names the request log");
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    let mut written = 0;
    while std::time::Instant::now() < deadline {
        let seen = server
            .wait_until(Duration::from_secs(1), |seen| seen.requests.len() > written)
            .unwrap_or_else(|seen| seen);
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open LOG");
        for request in &seen.requests[written..] {
            let line = json!({
                "method": request.method, "path": request.path, "status": request.status,
                "main": request.main, "step": request.step, "at_ms": request.at_ms as u64,
                "headers": request.headers, "body": request.body,
            });
            writeln!(file, "{line}").expect("write LOG");
        }
        written = seen.requests.len();
    }
}

// ----- the model server itself -----

/// One HTTP/1.1 request to the server; returns the status and the (de-chunked) body.
fn http(
    server: &ModelServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server.addr()).expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
        server.addr(),
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, raw) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .expect("status")
        .parse()
        .expect("number");
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (status, raw.to_owned());
    }
    let mut body = String::new();
    let mut rest = raw;
    loop {
        let (size, after) = rest.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size, 16).expect("hex chunk size");
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        assert_eq!(&after[size..size + 2], "\r\n", "chunk not closed by CRLF");
        rest = &after[size + 2..];
    }
    (status, body)
}

/// A request the server must refuse: path, headers, body, status, and a telling fragment.
type Refused<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, u16, &'a str);

const ANTHROPIC: [(&str, &str); 3] = [
    ("x-api-key", API_KEY),
    ("anthropic-version", "2023-06-01"),
    ("content-type", "application/json"),
];

fn openai_headers() -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {API_KEY}"))]
}

/// `(event, data)` pairs of an SSE body, checking every frame ends with a blank line.
fn sse(body: &str) -> Vec<(Option<String>, serde_json::Value)> {
    assert!(
        body.ends_with("\n\n"),
        "SSE body must end with a blank line"
    );
    body.trim_end()
        .split("\n\n")
        .map(|frame| {
            let mut name = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = Some(value.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data = Some(if value == "[DONE]" {
                        json!("[DONE]")
                    } else {
                        serde_json::from_str(value).expect("data is JSON")
                    });
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (name, data.expect("every frame has data"))
        })
        .collect()
}

#[test]
fn model_server_rejects_what_the_real_services_reject() {
    let server = ModelServer::start(Script::new().text("hi"));
    let message = r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"x"}]}"#;
    let cases: Vec<Refused> = vec![
        (
            "/v1/messages",
            vec![("anthropic-version", "2023-06-01")],
            message,
            401,
            "authentication_error",
        ),
        (
            "/v1/messages",
            vec![
                ("x-api-key", "sk-wrong"),
                ("anthropic-version", "2023-06-01"),
            ],
            message,
            401,
            "authentication_error",
        ),
        (
            "/v1/messages",
            vec![("x-api-key", API_KEY)],
            message,
            400,
            "anthropic-version",
        ),
        (
            "/v1/messages",
            ANTHROPIC.to_vec(),
            "{not json",
            400,
            "invalid_request_error",
        ),
        (
            "/v1/messages",
            ANTHROPIC.to_vec(),
            r#"{"max_tokens":1,"messages":[]}"#,
            400,
            "model: Field required",
        ),
        (
            "/v1/messages",
            ANTHROPIC.to_vec(),
            r#"{"model":"m","max_tokens":1}"#,
            400,
            "messages: Field required",
        ),
        (
            "/v1/messages",
            ANTHROPIC.to_vec(),
            r#"{"model":"m","messages":[]}"#,
            400,
            "max_tokens: Field required",
        ),
        (
            "/v1/nothing",
            ANTHROPIC.to_vec(),
            message,
            404,
            "not_found_error",
        ),
    ];
    for (path, headers, body, status, needle) in cases {
        let (got, text) = http(&server, "POST", path, &headers, body);
        assert_eq!(got, status, "{path} {headers:?} {body}: {text}");
        assert!(
            text.contains(needle),
            "{path} {body}: {text} lacks {needle}"
        );
        let value: serde_json::Value = serde_json::from_str(&text).expect("error is JSON");
        assert_eq!(value["type"], "error", "Anthropic error shape: {text}");
    }
    let bearer = format!("Bearer {API_KEY}");
    let openai_cases: Vec<Refused> = vec![
        (
            "/v1/chat/completions",
            vec![],
            r#"{"model":"m","messages":[]}"#,
            401,
            "API key",
        ),
        (
            "/v1/chat/completions",
            vec![("authorization", "Bearer sk-wrong")],
            r#"{"model":"m","messages":[]}"#,
            401,
            "invalid_api_key",
        ),
        (
            "/v1/chat/completions",
            vec![("authorization", &bearer)],
            "{not json",
            400,
            "could not parse the JSON body",
        ),
        (
            "/v1/chat/completions",
            vec![("authorization", &bearer)],
            r#"{"messages":[]}"#,
            400,
            "model parameter",
        ),
        (
            "/v1/chat/completions",
            vec![("authorization", &bearer)],
            r#"{"model":"m"}"#,
            400,
            "'messages'",
        ),
        (
            "/v1/responses",
            vec![("authorization", &bearer)],
            r#"{"model":"m"}"#,
            400,
            "'input'",
        ),
        (
            "/v1/elsewhere",
            vec![("authorization", &bearer)],
            "{}",
            404,
            "Invalid URL (POST /v1/elsewhere)",
        ),
    ];
    for (path, headers, body, status, needle) in openai_cases {
        let (got, text) = http(&server, "POST", path, &headers, body);
        assert_eq!(got, status, "{path} {body}: {text}");
        assert!(
            text.contains(needle),
            "{path} {body}: {text} lacks {needle}"
        );
        let value: serde_json::Value = serde_json::from_str(&text).expect("error is JSON");
        assert!(
            value["error"]["message"].is_string(),
            "OpenAI error shape: {text}"
        );
    }
    let seen = server.seen();
    assert_eq!(
        seen.rejections.len(),
        15,
        "{}",
        support::model_server::summary(&seen)
    );
    assert!(
        seen.requests
            .iter()
            .all(|request| request.header("x-api-key").is_none()
                && request.header("authorization").is_none()),
        "keys must not be recorded"
    );
    assert!(
        seen.main_requests().next().is_none(),
        "nothing rejected may reach the script"
    );
}

#[test]
fn model_server_streams_anthropic_events_and_advances_on_tool_results() {
    let server = ModelServer::start(Script::new().shell("echo one").text("two"));
    let bash = json!({"name": "Bash", "description": "run", "input_schema": {
        "type": "object", "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
        "required": ["command"]}});
    // A side request (no tools) gets a short text and advances nothing.
    let side =
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "title?"}]});
    let (status, text) = http(
        &server,
        "POST",
        "/v1/messages",
        &ANTHROPIC,
        &side.to_string(),
    );
    assert_eq!(status, 200, "{text}");
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON message");
    assert_eq!(
        value["content"][0]["text"],
        support::model_server::SIDE_REPLY
    );
    assert_eq!(value["stop_reason"], "end_turn");

    let first = json!({"model": "m", "max_tokens": 5, "stream": true, "tools": [bash],
        "messages": [{"role": "user", "content": "go"}]});
    for _retry in 0..2 {
        let (status, body) = http(
            &server,
            "POST",
            "/v1/messages?beta=true",
            &ANTHROPIC,
            &first.to_string(),
        );
        assert_eq!(status, 200);
        let events = sse(&body);
        let names: Vec<&str> = events
            .iter()
            .map(|(name, _)| name.as_deref().expect("named"))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        for (name, data) in &events {
            assert_eq!(
                data["type"],
                name.as_deref().expect("named"),
                "event name matches data type"
            );
        }
        assert_eq!(events[2].1["content_block"]["name"], "Bash");
        assert_eq!(events[2].1["content_block"]["id"], "toolu_offline_0000");
        let arguments: String = events[3..5]
            .iter()
            .map(|(_, data)| {
                data["delta"]["partial_json"]
                    .as_str()
                    .expect("input_json_delta")
            })
            .collect();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&arguments).expect("JSON"),
            json!({"command": "echo one"})
        );
        assert_eq!(events[6].1["delta"]["stop_reason"], "tool_use");
    }
    let second = json!({"model": "m", "max_tokens": 5, "stream": true, "tools": [bash], "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_offline_0000", "name": "Bash", "input": {"command": "echo one"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_offline_0000", "content": [{"type": "text", "text": "one"}]}]},
    ]});
    let (_, body) = http(
        &server,
        "POST",
        "/v1/messages",
        &ANTHROPIC,
        &second.to_string(),
    );
    let events = sse(&body);
    let text: String = events
        .iter()
        .filter(|(name, _)| name.as_deref() == Some("content_block_delta"))
        .map(|(_, data)| data["delta"]["text"].as_str().expect("text_delta"))
        .collect();
    assert_eq!(text, "two");
    let seen = server.seen();
    assert_eq!(seen.tool_results, ["one"]);
    let steps: Vec<Option<usize>> = seen.requests.iter().map(|request| request.step).collect();
    assert_eq!(steps, [None, Some(0), Some(0), Some(1)]);
    let (status, text) = http(
        &server,
        "POST",
        "/v1/messages/count_tokens",
        &ANTHROPIC,
        &second.to_string(),
    );
    assert_eq!(status, 200);
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).expect("JSON")["input_tokens"].is_u64()
    );
}

#[test]
fn model_server_speaks_openai_chat_and_responses() {
    let server = ModelServer::start(Script::new().shell("echo one").text("two"));
    let headers = openai_headers();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let bash = json!({"type": "function", "function": {"name": "bash", "parameters": {
        "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}});
    let chat = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
        "tools": [bash], "messages": [{"role": "user", "content": "go"}]});
    let (status, body) = http(
        &server,
        "POST",
        "/v1/chat/completions",
        &headers,
        &chat.to_string(),
    );
    assert_eq!(status, 200);
    let chunks = sse(&body);
    assert_eq!(chunks.last().expect("chunks").1, json!("[DONE]"));
    assert!(
        chunks.iter().all(|(name, _)| name.is_none()),
        "chat chunks are bare data lines"
    );
    let call = &chunks[1].1["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(call["id"], "call_offline_0000");
    assert_eq!(call["function"]["name"], "bash");
    let arguments: String = chunks[1..]
        .iter()
        .filter_map(|(_, data)| {
            data["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&arguments).expect("JSON"),
        json!({"command": "echo one"})
    );
    let finish: Vec<&serde_json::Value> = chunks
        .iter()
        .map(|(_, data)| &data["choices"][0]["finish_reason"])
        .filter(|reason| reason.is_string())
        .collect();
    assert_eq!(finish, [&json!("tool_calls")]);
    assert!(
        chunks
            .iter()
            .any(|(_, data)| data["usage"]["total_tokens"].is_u64()),
        "usage chunk when asked"
    );

    // Responses, as codex sends it: exec_command takes `cmd` as a string.
    let exec = json!({"type": "function", "name": "exec_command", "parameters": {
        "type": "object", "properties": {"cmd": {"type": "string"}, "yield_time_ms": {"type": "number"}},
        "required": ["cmd"]}});
    let responses = json!({"model": "m", "stream": true, "tools": [exec], "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]},
        {"type": "function_call", "call_id": "call_offline_0000", "name": "exec_command", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_offline_0000", "output": "one"},
    ]});
    let (status, body) = http(
        &server,
        "POST",
        "/v1/responses",
        &headers,
        &responses.to_string(),
    );
    assert_eq!(status, 200);
    let events = sse(&body);
    let names: Vec<&str> = events
        .iter()
        .map(|(name, _)| name.as_deref().expect("named"))
        .collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    for (index, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_deref().expect("named"));
        assert_eq!(data["sequence_number"], index);
    }
    let done = events
        .iter()
        .find(|(name, _)| name.as_deref() == Some("response.output_item.done"))
        .expect("output_item.done");
    assert_eq!(done.1["item"]["content"][0]["text"], "two");
    let seen = server.seen();
    assert_eq!(seen.tool_results, ["one"]);
    let (status, text) = http(&server, "GET", "/v1/models", &headers, "");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).expect("JSON")["object"],
        "list"
    );
}

#[test]
fn model_server_polls_a_codex_command_that_is_still_running() {
    let server = ModelServer::start(Script::new().shell("sleep 100").text("done"));
    let headers = openai_headers();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let tools = json!([
        {"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}},
        {"type": "function", "name": "write_stdin", "parameters": {"type": "object", "properties": {"session_id": {"type": "number"}}}},
    ]);
    let user = json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]});
    let request = |input: serde_json::Value| {
        let body = json!({"model": "m", "stream": false, "tools": tools, "input": input});
        let (status, text) = http(
            &server,
            "POST",
            "/v1/responses",
            &headers,
            &body.to_string(),
        );
        assert_eq!(status, 200, "{text}");
        serde_json::from_str::<serde_json::Value>(&text).expect("JSON")["output"][0].clone()
    };
    assert_eq!(request(json!([user]))["name"], "exec_command");
    let running = json!({"type": "function_call_output", "call_id": "call_offline_0000",
        "output": "Chunk ID: 1\nWall time: 10.0 seconds\nProcess running with session ID 4242\nOutput:\n"});
    let poll = request(json!([user, running]));
    assert_eq!(poll["name"], "write_stdin");
    let arguments: serde_json::Value =
        serde_json::from_str(poll["arguments"].as_str().expect("string")).expect("JSON");
    assert_eq!(arguments["session_id"], 4242);
    let exited = json!({"type": "function_call_output", "call_id": poll["call_id"],
        "output": "Process exited with code 0\nOutput:\nslept\n"});
    let last = request(json!([user, running, exited]));
    assert_eq!(last["content"][0]["text"], "done");
}
