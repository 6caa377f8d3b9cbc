//! `judge.mode = "llm"`: a beat on a changed world runs the one-shot judge command, executes
//! its one move, and journals it; a daily budget and failure backoff hold. The judge command
//! here is a script standing in for a model's CLI: it records its calls and prints a move.
//! It runs in its own sandboxed unit, as every agent rein starts does.

mod support;

use support::Rein;

/// A judge that logs each call and prints the contents of `move.json` (or fails if absent).
/// The judge's tick runs sandboxed in a transient unit, so a user manager is needed.
fn judged(extra: &str) -> Rein {
    support::user_manager::ensure();
    let rein = Rein::new();
    let script = rein.temp.path().join("judge.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"$1\" >> \"$REIN_DATA_DIR/../calls\"\ntest -f \"$REIN_DATA_DIR/../move.json\" || { echo 'model unavailable' >&2; exit 1; }\necho 'Let me think.'\ncat \"$REIN_DATA_DIR/../move.json\"\n",
    )
    .expect("script");
    rein.write_config(&format!(
        "[runner]\npreset = \"custom\"\ncommand = \"true\"\ntick = \"sh {} {{{{prompt_file}}}}\"\n[judge]\nmode = \"llm\"\n{extra}",
        script.display()
    ));
    rein
}

fn set_move(rein: &Rein, json: &str) {
    std::fs::write(rein.temp.path().join("move.json"), json).expect("move");
}

fn calls(rein: &Rein) -> usize {
    std::fs::read_to_string(rein.temp.path().join("calls"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn change_world(rein: &Rein, value: u32) {
    rein.ok(&[
        "sensor",
        "write",
        "n",
        &format!("echo '{{\"n\": {value}}}'"),
    ]);
}

#[test]
fn a_changed_world_gets_one_move_executed_and_journaled() {
    let rein = judged("");
    set_move(
        &rein,
        r#"{"move": "notify", "message": "the build needs you"}"#,
    );
    change_world(&rein, 1);
    let beat = rein.json(&["tick"]);
    assert_eq!(beat["judgment"]["judged"], "moved", "{beat}");
    assert_eq!(calls(&rein), 1);
    let prompt = std::fs::read_to_string(rein.data.join("prompts/judge.md")).expect("prompt");
    assert!(
        prompt.contains("## State") && prompt.contains("\"world\""),
        "{prompt}"
    );
    let notes: Vec<_> = std::fs::read_dir(rein.data.join("notes"))
        .expect("notes")
        .collect();
    assert_eq!(notes.len(), 1, "the move was carried out");
    assert!(rein
        .ok(&["journal"])
        .contains("judge: beat 1: notify \"the build needs you\""));

    // An unchanged world costs nothing.
    let beat = rein.json(&["tick"]);
    assert_eq!(beat["judgment"]["judged"], "unchanged");
    assert_eq!(calls(&rein), 1);

    set_move(
        &rein,
        r#"{"move": "ask", "prompt": "Ship v2?", "options": ["yes", "no"]}"#,
    );
    change_world(&rein, 2);
    rein.ok(&["tick"]);
    let asks = rein.json(&["asks"]);
    assert_eq!(asks[0]["worker"], "judge");
    assert_eq!(asks[0]["options"], serde_json::json!(["yes", "no"]));

    set_move(
        &rein,
        r#"{"move": "write_goal", "id": "ship-v2", "body": "Ship v2 when asked."}"#,
    );
    change_world(&rein, 3);
    rein.ok(&["tick"]);
    assert!(rein.data.join("goals/ship-v2.md").exists());
}

#[test]
fn bad_moves_and_failures_back_off() {
    let rein = judged("");
    // No move file: the judge command fails.
    change_world(&rein, 1);
    let beat = rein.json(&["tick"]);
    assert_eq!(beat["judgment"]["judged"], "failed", "{beat}");
    assert!(beat["judgment"]["error"]
        .as_str()
        .expect("error")
        .contains("model unavailable"));
    let retry = beat["judgment"]["retry_at_beat"].as_u64().expect("retry");
    assert_eq!(retry, 3, "one failure skips two beats");
    change_world(&rein, 2);
    assert_eq!(rein.json(&["tick"])["judgment"]["judged"], "backing_off");
    assert_eq!(calls(&rein), 1);
    // A move outside rein's vocabulary, or with a bad id, is refused and counted as a failure.
    set_move(&rein, r#"{"move": "merge", "pr": 12}"#);
    change_world(&rein, 3);
    let beat = rein.json(&["tick"]);
    assert_eq!(beat["judgment"]["judged"], "failed", "{beat}");
    assert!(beat["judgment"]["error"]
        .as_str()
        .expect("error")
        .contains("does not accept"));
    assert_eq!(
        beat["judgment"]["retry_at_beat"],
        3 + 4,
        "two failures in a row skip four beats"
    );
    assert!(rein.ok(&["journal"]).contains("judge-failed"));
    assert!(
        rein.json(&["asks"]).as_array().expect("asks").is_empty(),
        "nothing was done"
    );
}

#[test]
fn the_daily_budget_holds() {
    let rein = judged("max_ticks_per_day = 2\n");
    set_move(&rein, r#"{"move": "none", "reason": "all good"}"#);
    for n in 1..=3 {
        change_world(&rein, n);
        rein.ok(&["tick"]);
    }
    assert_eq!(calls(&rein), 2);
    assert!(rein
        .ok(&["journal"])
        .contains("budget of 2 ticks per day is spent"));
}

/// The judge's tick is an agent like any worker: it runs sandboxed in its own unit, so it
/// cannot write an answer or a goal itself, and it gets the runner's environment and secrets.
#[test]
fn the_judge_runs_sandboxed_with_the_runners_secrets() {
    support::user_manager::ensure();
    let rein = Rein::new();
    let script = rein.temp.path().join("judge.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         mkdir -p \"$REIN_DATA_DIR/answers\" 2>/dev/null\n\
         echo forged > \"$REIN_DATA_DIR/answers/forged.json\" 2>/dev/null && w=wrote || w=refused\n\
         echo forged > \"$REIN_DATA_DIR/goals/forged.md\" 2>/dev/null && g=wrote || g=refused\n\
         printf '{\"move\":\"notify\",\"message\":\"answers %s, goals %s, key %s, home %s\"}' \"$w\" \"$g\" \"$JUDGE_KEY\" \"$HOME\"\n",
    )
    .expect("script");
    let key = rein.temp.path().join("judge.key");
    std::fs::write(&key, "k-123\n").expect("key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    rein.write_config(&format!(
        "[runner]\npreset = \"custom\"\ncommand = \"true\"\ntick = \"sh {}\"\n\
         [runner.secrets]\nJUDGE_KEY = \"file:{}\"\n[judge]\nmode = \"llm\"\n",
        script.display(),
        key.display()
    ));
    change_world(&rein, 1);
    let beat = rein.json(&["tick"]);
    assert_eq!(beat["judgment"]["judged"], "moved", "{beat}");
    let journal = rein.ok(&["journal", "-n", "20"]);
    let home = rein.data.join("agents/judge/home");
    assert!(
        journal.contains(&format!(
            "answers refused, goals refused, key k-123, home {}",
            home.display()
        )),
        "{journal}"
    );
    assert!(!rein.data.join("answers/forged.json").exists());
    assert!(!rein.data.join("goals/forged.md").exists());
}

/// A beat stopped mid-judgment (the pulse's unit stopped by `rein down`, say) cannot remove
/// the judge's unit itself; `rein down` does, so it leaves no unit of the profile behind.
#[test]
fn down_removes_a_judge_unit_its_beat_left_behind() {
    support::user_manager::ensure();
    let rein = Rein::new();
    rein.write_config(
        "[runner]\npreset = \"custom\"\ncommand = \"true\"\ntick = \"exec sleep 600\"\n[judge]\nmode = \"llm\"\n",
    );
    change_world(&rein, 1);
    let unit = format!("rein.{}.judge.service", rein.profile);
    let active = || {
        let output = std::process::Command::new("systemctl")
            .args(["--user", "show", "-p", "ActiveState", "--value", &unit])
            .output()
            .expect("systemctl show");
        support::stdout_of(&output).trim().to_owned()
    };
    let mut beat = std::process::Child::from(rein.spawn(&["tick"]));
    support::wait_until(
        std::time::Duration::from_secs(20),
        "the judge's unit",
        || active() == "active",
    );
    // SAFETY: ending our own child as systemd ends a stopped unit's process.
    unsafe { libc::kill(beat.id() as i32, libc::SIGTERM) };
    let _ = beat.wait();
    assert_eq!(active(), "active", "the judge's unit outlived its beat");
    rein.ok(&["down"]);
    assert_eq!(active(), "inactive", "down removed the judge's unit");
}
