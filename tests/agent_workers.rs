//! The real agent CLIs (claude, codex, opencode, pi, installed by `contrib/agents.sh`) as rein
//! runs them: interactive workers in the PTY host inside their sandboxed units, and the llm
//! judge's one-shot tick, each offline against the scripted model server. Nothing here
//! configures a CLI by hand: rein's presets and `runner.home_template` (the model provider,
//! as a user would keep it) do it all.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use support::agents::{profile, Cli};
use support::model_server::{ModelServer, Script};
use support::{stderr_of, wait_until, Down, Rein};

const FINAL: &str = "Deployment check finished offline.";

/// What the model runs through the agent's shell tool: the worker contract's `rein ask`.
const ASK_STEP: &str = "\"$REIN_BIN\" ask --prompt 'Deploy to staging?' --options yes,no";

/// A git work tree for the worker.
fn project(rein: &Rein) -> PathBuf {
    let work = rein.temp.path().join("project");
    std::fs::create_dir_all(&work).expect("project");
    let status = std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(&work)
        .status()
        .expect("git init");
    assert!(status.success());
    work
}

/// The worker runs the contract's `rein ask` through its own shell tool; a person answers
/// through the CLI; the model receives the answer and finishes.
fn worker_asks_and_gets_the_answer(cli: Cli) {
    let server = ModelServer::start(
        Script::new()
            .shell_with(ASK_STEP, json!({"timeout": 600000}))
            .text(FINAL),
    );
    let rein = profile(cli, &server, false);
    let _down = Down(&rein);
    let work = project(&rein);
    let started = rein.run(&[
        "worker",
        "start",
        "w1",
        "Run the deployment check.",
        "--dir",
        work.to_str().expect("utf-8"),
    ]);
    assert!(
        started.status.success(),
        "{} worker start: {}",
        cli.name(),
        stderr_of(&started)
    );
    let mut id = String::new();
    wait_until(
        Duration::from_secs(180),
        &format!("{}'s ask to be filed", cli.name()),
        || {
            id = rein.pending_ids().first().cloned().unwrap_or_default();
            !id.is_empty()
        },
    );
    let asks = rein.json(&["asks"]);
    assert_eq!(asks[0]["worker"], "w1", "{asks}");
    assert_eq!(asks[0]["prompt"], "Deploy to staging?");
    let view = rein.worker("w1");
    assert_eq!(view["health"], "waiting-human", "{view}");
    assert_eq!(view["sandbox"], "enforced", "{view}");
    rein.ok(&["answer", &id, "yes"]);
    server.expect(
        Duration::from_secs(120),
        &format!("{} to hand the answer to the model", cli.name()),
        |seen| seen.tool_results.iter().any(|r| r.contains("yes")),
    );
    server.expect(
        Duration::from_secs(120),
        &format!("{} to finish the turn", cli.name()),
        |seen| seen.main_requests().count() >= 2,
    );
    let seen = server.seen();
    assert!(seen.rejections.is_empty(), "{:?}", seen.rejections);
    // The agent's home was prepared by rein, per worker, not in the user's home.
    assert!(rein
        .data
        .join("agents/w1/home")
        .read_dir()
        .expect("home")
        .next()
        .is_some());
}

#[test]
fn claude_worker_asks_through_rein_and_gets_the_answer() {
    worker_asks_and_gets_the_answer(Cli::Claude);
}

#[test]
fn codex_worker_asks_through_rein_and_gets_the_answer() {
    worker_asks_and_gets_the_answer(Cli::Codex);
}

#[test]
fn opencode_worker_asks_through_rein_and_gets_the_answer() {
    worker_asks_and_gets_the_answer(Cli::Opencode);
}

#[test]
fn pi_worker_asks_through_rein_and_gets_the_answer() {
    worker_asks_and_gets_the_answer(Cli::Pi);
}

/// The judge's one-shot tick with the real CLI: a changed world reaches the model, and the
/// move it prints is carried out.
fn judge_moves(cli: Cli) {
    let message = format!("judged by {}", cli.name());
    let server = ModelServer::start(
        Script::new().text(&json!({"move": "notify", "message": message}).to_string()),
    );
    let rein = profile(cli, &server, true);
    rein.ok(&["sensor", "write", "n", "echo '{\"n\": 1}'"]);
    let beat = rein.json(&["tick"]);
    assert_eq!(
        beat["judgment"]["judged"],
        "moved",
        "{}: {beat}",
        cli.name()
    );
    assert!(
        rein.ok(&["journal", "-n", "20"]).contains(&message),
        "the move was carried out"
    );
    let seen = server.seen();
    assert!(seen.rejections.is_empty(), "{:?}", seen.rejections);
    assert!(
        seen.main_requests().count() + seen.requests.len() >= 1,
        "the judge reached the model"
    );
}

#[test]
fn claude_judges_a_changed_world() {
    judge_moves(Cli::Claude);
}

#[test]
fn codex_judges_a_changed_world() {
    judge_moves(Cli::Codex);
}

#[test]
fn opencode_judges_a_changed_world() {
    judge_moves(Cli::Opencode);
}

#[test]
fn pi_judges_a_changed_world() {
    judge_moves(Cli::Pi);
}

/// claude's own permission prompts become rein asks: one tool call allowed, another denied,
/// each by a person answering the ask; the decision goes back to claude.
#[test]
fn claude_tool_calls_are_allowed_and_denied_through_asks() {
    let server = ModelServer::start(
        Script::new()
            .shell("touch allowed.txt")
            .shell("touch denied.txt")
            .text(FINAL),
    );
    let rein = profile(Cli::Claude, &server, false);
    let _down = Down(&rein);
    let work = project(&rein);
    rein.ok(&[
        "worker",
        "start",
        "w1",
        "Touch two files.",
        "--dir",
        work.to_str().expect("utf-8"),
    ]);
    for (file, answer) in [("allowed.txt", "allow"), ("denied.txt", "deny")] {
        let mut ask = serde_json::Value::Null;
        wait_until(
            Duration::from_secs(120),
            &format!("the permission ask for {file}"),
            || {
                ask = rein
                    .json(&["asks"])
                    .as_array()
                    .expect("asks")
                    .first()
                    .cloned()
                    .unwrap_or_default();
                !ask.is_null()
            },
        );
        assert_eq!(
            ask["prompt"],
            format!("w1 wants to run `touch {file}`"),
            "{ask}"
        );
        assert_eq!(ask["options"], json!(["allow", "deny"]));
        let view = rein.worker("w1");
        assert_eq!(view["health"], "waiting-human", "{view}");
        rein.ok(&["answer", ask["id"].as_str().expect("id"), answer]);
        server.expect(
            Duration::from_secs(60),
            &format!("the result of touching {file}"),
            |seen| seen.tool_results.len() >= if answer == "allow" { 1 } else { 2 },
        );
    }
    assert!(work.join("allowed.txt").exists(), "the allowed call ran");
    assert!(!work.join("denied.txt").exists(), "the denied call did not");
    let results = server.tool_results();
    assert!(
        results[1].contains("denied this through rein ask"),
        "the model is told why: {results:?}"
    );
}

/// An agent that sits at its own prompt waiting for a person shows as `waiting-human` with
/// the agent's own words (claude's Notification hook), and is running again once it moves on.
#[test]
fn claude_waiting_at_its_prompt_is_waiting_human() {
    let server = ModelServer::start(Script::new().text(FINAL));
    let rein = profile(Cli::Claude, &server, false);
    // claude says it waits for input after this long idle (its default is a minute).
    std::fs::write(
        rein.temp.path().join("agent-home/.claude.json"),
        json!({"messageIdleNotifThresholdMs": 1000}).to_string(),
    )
    .expect("template state");
    let _down = Down(&rein);
    let work = project(&rein);
    rein.ok(&[
        "worker",
        "start",
        "w1",
        "Say you are done.",
        "--dir",
        work.to_str().expect("utf-8"),
    ]);
    server.expect(Duration::from_secs(120), "claude's turn", |seen| {
        seen.main_requests().count() >= 1
    });
    let mut view = serde_json::Value::Null;
    wait_until(
        Duration::from_secs(60),
        "claude to say it waits for a person",
        || {
            view = rein.worker("w1");
            view["health"] == "waiting-human"
        },
    );
    let reason = view["waiting"].as_str().unwrap_or_default();
    assert!(reason.starts_with("claude: "), "{view}");
    assert!(view["ask"].is_null(), "no rein ask is involved: {view}");
}
