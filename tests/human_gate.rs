//! The human gate, enforced by the kernel: workers run in systemd's sandbox on a real user
//! manager, file their asks through the gate as themselves, and cannot answer, withdraw or
//! forge anything. Also a worker's environment and secrets, its directory and worktree, and
//! its lifecycle (kill withdraws its asks; a withdrawn ask is final).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{stderr_of, stdout_of, tree, user_manager, wait_until, Down, Rein};

fn unit(rein: &Rein, id: &str) -> String {
    format!("rein.{}.worker-{id}.service", rein.profile)
}

fn systemctl_show(unit: &str) -> String {
    let output = Command::new("systemctl")
        .args(["--user", "show", unit])
        .output()
        .expect("systemctl show");
    stdout_of(&output)
}

/// Waits for a file the agent writes and returns its contents.
fn wait_for_file(path: &Path, what: &str) -> String {
    wait_until(Duration::from_secs(20), what, || {
        std::fs::read_to_string(path).is_ok_and(|text| text.ends_with("END\n"))
    });
    std::fs::read_to_string(path).expect("read")
}

/// One `key=value` line of what the agent reported.
fn reported<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in:\n{text}"))
}

/// Starts worker `id` running the shell script `text`; returns its working directory.
fn start_script(rein: &Rein, id: &str, brief: &str, text: &str) -> PathBuf {
    let script = rein.temp.path().join(format!("{id}.sh"));
    std::fs::write(&script, text).expect("script");
    rein.ok(&[
        "worker",
        "start",
        id,
        brief,
        "--command",
        &format!("sh {}", script.display()),
    ]);
    rein.data.join(format!("agents/{id}/work"))
}

fn secret_file(rein: &Rein, value: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = rein.temp.path().join("api.key");
    std::fs::write(&path, format!("{value}\n")).expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

#[test]
fn environment_and_secrets_reach_the_agent_and_nowhere_else() {
    let rein = Rein::fleet("");
    let secret = "sk-test-7f3c9a1e5b";
    let key = secret_file(&rein, secret, 0o600);
    rein.write_config(&format!(
        "[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n\
         [runner.env]\nBASE_URL = \"http://127.0.0.1:9\"\n\
         [runner.secrets]\nAPI_KEY = \"file:{}\"\n\
         [workers.w1.env]\nONLY_W1 = \"mine\"\n",
        key.display()
    ));
    let _down = Down(&rein);
    let out = rein.data.join("agents/w1/work/env.txt");
    rein.ok(&[
        "worker",
        "start",
        "w1",
        "report your environment",
        "--env",
        "FROM_FLAG=flag value",
        "--command",
        "{ echo base=$BASE_URL; echo key=$API_KEY; echo only=$ONLY_W1; echo flag=$FROM_FLAG; \
         echo home=$HOME; echo pwd=$(pwd); echo END; } > env.txt; exec sleep 600",
    ]);
    let text = wait_for_file(&out, "the agent's environment report");
    assert_eq!(reported(&text, "base"), "http://127.0.0.1:9");
    assert_eq!(
        reported(&text, "key"),
        secret,
        "the secret reaches the agent"
    );
    assert_eq!(reported(&text, "only"), "mine");
    assert_eq!(reported(&text, "flag"), "flag value");
    assert_eq!(
        reported(&text, "home"),
        rein.data.join("agents/w1/home").display().to_string()
    );
    assert_eq!(
        reported(&text, "pwd"),
        rein.data.join("agents/w1/work").display().to_string()
    );

    let shown = systemctl_show(&unit(&rein, "w1"));
    assert!(shown.contains("BASE_URL=http://127.0.0.1:9"), "{shown}");
    assert!(
        !shown.contains(secret),
        "the secret is not a unit property:\n{shown}"
    );
    let credentials = Command::new("busctl")
        .args([
            "--user",
            "get-property",
            "org.freedesktop.systemd1",
            &rein::systemd::unit_object_path(&unit(&rein, "w1")),
            "org.freedesktop.systemd1.Service",
            "LoadCredential",
        ])
        .output()
        .expect("busctl");
    let credentials = stdout_of(&credentials);
    assert_eq!(
        credentials.trim(),
        format!("a(ss) 1 \"API_KEY\" \"{}\"", key.display()),
        "the unit names only the secret's source"
    );
    let record = std::fs::read_to_string(rein.data.join("workers/w1.json")).expect("record");
    assert!(!record.contains(secret), "{record}");
    let logs = rein.ok(&["logs", "-n", "500"]);
    assert!(!logs.contains(secret), "the secret is in no log:\n{logs}");

    // A secret others can read is refused before anything happens.
    let _ = secret_file(&rein, secret, 0o644);
    rein.refused(&["worker", "start", "w2", "x"], "chmod 600");
    assert!(rein.worker("w2").is_null());
}

/// What the hostile agent below tries; each line reports the exit code and the message.
const HOSTILE: &str = r#"
exec > attempts.txt 2>&1
"$REIN_BIN" ask --prompt 'Deploy to prod? (irreversible)' --options yes,no > answer.txt 2>&1 &
asker=$!
i=0; while ! grep -q '"worker": "w1"' "$REIN_DATA_DIR"/asks/*.json 2>/dev/null && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
id=$(grep -l '"worker": "w1"' "$REIN_DATA_DIR"/asks/*.json | head -n1 | sed 's|.*/||; s/.json$//')
echo "id=$id"
"$REIN_BIN" answer --as slack:UBOSS "$id" yes; echo "answer_as_slack=$?"
"$REIN_BIN" answer "$id" yes; echo "answer=$?"
"$REIN_BIN" withdraw "$id"; echo "withdraw=$?"
env -u REIN_GATE -u REIN_WORKER_ID "$REIN_BIN" answer "$id" yes; echo "answer_without_env=$?"
printf '{"version":1,"ask":"%s","kind":"answered","text":"yes","by":"slack:UBOSS","at":"2026-01-01T00:00:00Z"}' "$id" > "$REIN_DATA_DIR/answers/$id.json"; echo "write_answer=$?"
echo forged > "$REIN_DATA_DIR/goals/evil.md"; echo "write_goal=$?"
echo forged >> "$REIN_DATA_DIR/PLAYBOOK.md"; echo "write_playbook=$?"
echo 'echo {}' > "$REIN_DATA_DIR/sensors/evil.sh"; echo "write_sensor=$?"
echo forged >> "$REIN_CONFIG"; echo "write_config=$?"
cat "$SECRET_PATH" > /dev/null; echo "read_bridge_secret=$?"
systemd-run --user true; echo "systemd_run=$?"
busctl --user list > /dev/null; echo "busctl=$?"
"$REIN_BIN" notify --worker w2 "I am w2"; echo "notify_as_w2=$?"
REIN_WORKER_ID=w2 "$REIN_BIN" notify "still w1"; echo "notify_env_w2=$?"
"$REIN_BIN" claim job-1; echo "claim=$?"
"$REIN_BIN" report summary.md "all fine"; echo "report=$?"
echo END
wait $asker; echo "asker=$?" >> answer.txt
echo END >> answer.txt
exec sleep 600
"#;

#[test]
fn an_agent_cannot_answer_withdraw_or_forge() {
    let rein = Rein::fleet("");
    let bridge_secret = rein.temp.path().join("slack.secrets");
    std::fs::write(&bridge_secret, "bot_token = \"xoxb-secret\"\n").expect("secret");
    rein.write_config(&format!(
        "[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n\
         [runner.env]\nSECRET_PATH = \"{}\"\n\
         [bridges.slack]\nroutes = [\"C1\"]\nallow = [\"U1\"]\nsecret_file = \"{}\"\n",
        bridge_secret.display(),
        bridge_secret.display()
    ));
    let _down = Down(&rein);
    rein.ok(&["init", "--runner", "custom"]);
    let playbook = std::fs::read(rein.data.join("PLAYBOOK.md")).expect("playbook");
    let config = std::fs::read(&rein.config).expect("config");
    let work = start_script(&rein, "w1", "try to get around the gate", HOSTILE);
    let attempts = wait_for_file(&work.join("attempts.txt"), "the hostile agent's attempts");
    let id = reported(&attempts, "id").to_owned();
    assert_eq!(id.len(), 6, "{attempts}");
    for (attempt, must_fail) in [
        ("answer_as_slack", true),
        ("answer", true),
        ("withdraw", true),
        ("answer_without_env", true),
        ("write_answer", true),
        ("write_goal", true),
        ("write_playbook", true),
        ("write_sensor", true),
        ("write_config", true),
        ("read_bridge_secret", true),
        ("systemd_run", true),
        ("busctl", true),
        ("notify_as_w2", true),
        ("notify_env_w2", false),
        ("claim", false),
        ("report", false),
    ] {
        let code = reported(&attempts, attempt);
        assert_eq!(
            code != "0",
            must_fail,
            "{attempt} exited {code}:\n{attempts}"
        );
    }
    assert!(
        attempts.contains("answers come from people"),
        "rein says why:\n{attempts}"
    );
    // The ask is still pending, filed as w1, and nothing was planted.
    let asks = rein.json(&["asks"]);
    let ask = asks
        .as_array()
        .expect("asks")
        .iter()
        .find(|a| a["id"] == id.as_str())
        .cloned()
        .expect("the ask is pending");
    assert_eq!(ask["worker"], "w1");
    assert_eq!(ask["state"], "pending");
    assert!(!rein.data.join(format!("answers/{id}.json")).exists());
    assert!(!rein.data.join("goals/evil.md").exists());
    assert!(!rein.data.join("sensors/evil.sh").exists());
    assert_eq!(
        std::fs::read(rein.data.join("PLAYBOOK.md")).expect("playbook"),
        playbook
    );
    assert_eq!(std::fs::read(&rein.config).expect("config"), config);
    // The note, the claim and the report are the worker's own, whatever it claimed to be.
    let journal = rein.ok(&["journal", "-n", "50"]);
    assert!(journal.contains("w1: still w1"), "{journal}");
    assert!(!journal.contains("w2:"), "{journal}");
    let claim: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(rein.data.join("claims/job-1.json")).expect("claim"),
    )
    .expect("claim json");
    assert_eq!(claim["worker"], "w1");
    assert_eq!(
        std::fs::read_to_string(rein.data.join("reports/w1/summary.md")).expect("report"),
        "all fine"
    );
    assert_eq!(rein.worker("w1")["health"], "waiting-human");
    assert_eq!(rein.worker("w1")["sandbox"], "enforced");

    // A person answers; the worker's `rein ask` prints it.
    let forged = rein.run(&["answer", "--as", "slack:UBOSS", &id, "yes"]);
    assert_eq!(forged.status.code(), Some(2), "{}", stderr_of(&forged));
    assert!(rein.data.join("asks").join(format!("{id}.json")).exists());
    let answered = rein.ok(&["answer", &id, "yes"]);
    assert!(answered.contains("by cli:tester"), "{answered}");
    let answer = wait_for_file(&work.join("answer.txt"), "the worker's answer");
    assert!(answer.starts_with("yes\n"), "{answer}");
    assert!(answer.contains("asker=0"), "{answer}");
}

/// A hostile agent that takes an exclusive lock on every file it can open under the data dir
/// and rein's runtime dir (reading is enough for flock(2)) holds none that rein waits for:
/// filing, answering, claiming and starting workers all go on.
const LOCK_EVERYTHING: &str = r#"
exec > held.txt 2>&1
held=0
for f in $(find "$REIN_DATA_DIR" "$XDG_RUNTIME_DIR/rein" -type f 2>/dev/null); do
    if flock -n -x "$f" -c 'exec sleep 600' & then held=$((held+1)); fi
done
sleep 1
echo "held=$held"
ls "$REIN_DATA_DIR/locks" > /dev/null 2>&1; echo "list_locks=$?"
echo END
exec sleep 600
"#;

#[test]
fn an_agent_cannot_hold_the_locks_rein_waits_for() {
    let rein = Rein::fleet("[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n");
    let _down = Down(&rein);
    rein.ok(&["init", "--runner", "custom"]);
    // Every lock rein takes exists before the agent starts: filing, a claim, the gate's units
    // and the kept runs of a worker start.
    rein.ok(&["worker", "start", "w0", "x"]);
    let claim = rein.run(&["claim", "job-0"]);
    assert!(claim.status.success(), "{}", stderr_of(&claim));
    let work = start_script(&rein, "locker", "hold every lock", LOCK_EVERYTHING);
    let held = wait_for_file(&work.join("held.txt"), "the agent's locks");
    assert!(
        reported(&held, "held").parse::<u32>().is_ok_and(|n| n > 0),
        "the agent did hold locks on what it can read:\n{held}"
    );
    assert_ne!(reported(&held, "list_locks"), "0", "{held}");
    let limit = Duration::from_secs(20);
    let ask = support::wait_child(
        rein.spawn(&["ask", "--prompt", "still there?", "--timeout", "1ms"]),
        limit,
        "filing an ask",
    );
    assert_eq!(ask.status.code(), Some(3), "{}", stderr_of(&ask));
    let id = rein.ask_id_of("still there?");
    let answer = support::wait_child(rein.spawn(&["answer", &id, "yes"]), limit, "answering");
    assert!(answer.status.success(), "{}", stderr_of(&answer));
    let claim = support::wait_child(rein.spawn(&["claim", "job-1"]), limit, "a claim");
    assert!(claim.status.success(), "{}", stderr_of(&claim));
    let start = support::wait_child(
        rein.spawn(&["worker", "start", "w2", "x"]),
        Duration::from_secs(60),
        "starting a worker",
    );
    assert!(start.status.success(), "{}", stderr_of(&start));
}

#[test]
fn killing_a_worker_withdraws_its_asks_and_a_withdrawal_is_final() {
    let rein = Rein::fleet(
        "[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n\
         [workers]\nrestart = \"always\"\nrestart_sec = \"100ms\"\n",
    );
    let _down = Down(&rein);
    // A worker that asks and stops when the answer is no (or the ask is withdrawn).
    let script = "\"$REIN_BIN\" ask --prompt 'Proceed with the migration?' --options yes,no || exit; exec sleep 600";
    rein.ok(&["worker", "start", "w1", "migrate", "--command", script]);
    let first = rein.wait_for_one_ask();
    rein.ok(&["withdraw", &first]);
    // The worker exits 4 and is not restarted, and its question is not filed again.
    wait_until(Duration::from_secs(10), "the worker to stop", || {
        rein.worker("w1")["active_state"] != "active"
    });
    std::thread::sleep(Duration::from_millis(500));
    let view = rein.worker("w1");
    assert_eq!(view["restarts"], 0, "exit 4 is not restarted: {view}");
    let all = rein.json(&["asks", "--all"]);
    assert_eq!(all.as_array().expect("asks").len(), 1, "{all}");

    // A killed worker's pending asks are withdrawn, saying why.
    rein.ok(&["worker", "start", "w2", "ask", "--command", script]);
    let pending = rein.wait_for_one_ask();
    let killed = rein.ok(&["worker", "kill", "w2"]);
    assert!(killed.contains(&pending), "{killed}");
    let record = rein
        .json(&["asks", "--all"])
        .as_array()
        .expect("asks")
        .iter()
        .find(|a| a["id"] == pending.as_str())
        .cloned()
        .expect("ask");
    assert_eq!(record["state"], "withdrawn");
    assert_eq!(record["answered_by"], "rein");
    let resolution: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(rein.data.join(format!("answers/{pending}.json")))
            .expect("resolution"),
    )
    .expect("json");
    assert_eq!(resolution["reason"], "worker w2 was killed");
}

#[test]
fn a_missing_agent_program_is_refused_before_anything_happens() {
    let rein = Rein::fleet("[runner]\npreset = \"custom\"\ncommand = \"no-such-agent-cli --go\"\n");
    let _down = Down(&rein);
    let before = tree(rein.temp.path());
    let output = rein.run(&["worker", "start", "w1", "brief"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains("\"no-such-agent-cli\" is not on the worker's PATH"),
        "{}",
        stderr_of(&output)
    );
    assert_eq!(tree(rein.temp.path()), before);
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        stderr_of(&output)
    );
    stdout_of(&output)
}

#[test]
fn a_worker_in_a_worktree_commits_there_and_rm_keeps_unpushed_work() {
    let rein = Rein::fleet("[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n");
    let _down = Down(&rein);
    let repo = rein.temp.path().join("project");
    std::fs::create_dir(&repo).expect("repo dir");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "hello\n").expect("readme");
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let commit = "echo work > work.txt && git add work.txt && \
        git -c user.name=w1 -c user.email=w1@example.invalid commit -q -m 'w1: work' && \
        echo END > \"$HOME/committed\"; exec sleep 600";
    rein.ok(&[
        "worker",
        "start",
        "w1",
        "do the work",
        "--worktree",
        repo.to_str().expect("utf-8"),
        "--command",
        commit,
    ]);
    let worktree = rein.data.join("worktrees/w1");
    wait_until(Duration::from_secs(20), "the worker's commit", || {
        rein.data.join("agents/w1/home/committed").exists()
    });
    let log = git(&repo, &["log", "--format=%s", "rein/w1"]);
    assert!(log.starts_with("w1: work\n"), "{log}");
    let view = rein.worker("w1");
    assert_eq!(view["branch"], "rein/w1", "{view}");
    assert_eq!(view["dir"], worktree.display().to_string());
    // The repository's hooks stay out of the agent's reach.
    let unit_props = systemctl_show(&unit(&rein, "w1"));
    assert!(
        unit_props.contains(&format!("{}/.git/hooks", repo.display())),
        "{unit_props}"
    );

    let running = rein.run(&["worker", "rm", "w1"]);
    assert_eq!(running.status.code(), Some(5), "{}", stderr_of(&running));
    rein.ok(&["worker", "kill", "w1"]);
    let refused = rein.run(&["worker", "rm", "w1"]);
    assert_eq!(refused.status.code(), Some(5), "{}", stderr_of(&refused));
    assert!(
        stderr_of(&refused).contains("unpushed commit") && stderr_of(&refused).contains("w1: work"),
        "{}",
        stderr_of(&refused)
    );
    assert!(worktree.exists(), "refused rm keeps the worktree");

    // Once pushed, the work is safe and rm removes the worktree and its branch.
    let remote = rein.temp.path().join("remote.git");
    git(
        rein.temp.path(),
        &["init", "-q", "--bare", remote.to_str().expect("utf-8")],
    );
    git(
        &repo,
        &["remote", "add", "origin", remote.to_str().expect("utf-8")],
    );
    git(&repo, &["push", "-q", "origin", "rein/w1"]);
    let removed = rein.ok(&["worker", "rm", "w1"]);
    assert!(removed.contains("removed worktree"), "{removed}");
    assert!(!worktree.exists());
    assert!(git(&repo, &["branch", "--list", "rein/w1"])
        .trim()
        .is_empty());
    assert!(rein.worker("w1").is_null());
}

#[test]
fn answers_from_the_command_line_are_the_users_own() {
    let rein = Rein::new();
    let asker = rein.spawn(&["ask", "--prompt", "Merge?", "--options", "yes,no"]);
    let id = rein.wait_for_one_ask();
    let before = tree(&rein.data);
    for identity in [
        "slack:U1",
        "sms:+15550001111",
        "email:boss@example.com",
        "cli:root",
        "konsole:root",
    ] {
        let output = rein.run(&["answer", "--as", identity, &id, "yes"]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{identity}: {}",
            stderr_of(&output)
        );
        let withdraw = rein.run(&["withdraw", "--as", identity, &id]);
        assert_eq!(withdraw.status.code(), Some(2), "{identity}");
    }
    let from_env = rein
        .command(&["answer", &id, "yes"])
        .env("REIN_ANSWER_IDENTITY", "slack:U1")
        .output()
        .expect("run");
    assert_eq!(from_env.status.code(), Some(2), "{}", stderr_of(&from_env));
    assert_eq!(tree(&rein.data), before, "refused answers write nothing");
    let answered = rein.ok(&["answer", "--as", "konsole:tester", &id, "no"]);
    assert!(answered.contains("by konsole:tester"), "{answered}");
    let output = support::wait_child(asker, Duration::from_secs(10), "the asker");
    assert_eq!(stdout_of(&output), "no\n");
}

#[test]
fn a_worker_gets_a_private_tmp_when_nothing_it_needs_lives_there() {
    user_manager::ensure();
    let rein = Rein::new_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp/gate"));
    rein.write_config("[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n");
    let _down = Down(&rein);
    let marker = format!("rein-private-{}", rein.profile);
    rein.ok(&[
        "worker",
        "start",
        "w1",
        "x",
        "--command",
        &format!(
            "touch /tmp/{marker} && echo tmp=ok > out.txt || echo tmp=refused > out.txt; \
             touch \"$REIN_DATA_DIR/answers/x\" 2>/dev/null && echo data=wrote >> out.txt || echo data=refused >> out.txt; \
             echo END >> out.txt; exec sleep 600"
        ),
    ]);
    let text = wait_for_file(&rein.data.join("agents/w1/work/out.txt"), "the report");
    assert_eq!(
        reported(&text, "tmp"),
        "ok",
        "the agent has a /tmp to write"
    );
    assert_eq!(reported(&text, "data"), "refused");
    let marker = Path::new("/tmp").join(&marker);
    let properties = systemctl_show(&unit(&rein, "w1"));
    // The worker must see the rein binary; built in a checkout under /tmp, that binary would
    // be hidden by a private /tmp, and the documented fallback is the shared one.
    if Path::new(env!("CARGO_BIN_EXE_rein")).starts_with("/tmp") {
        assert!(marker.exists(), "a rein under /tmp keeps /tmp shared");
        let _ = std::fs::remove_file(&marker);
        assert!(properties.contains("PrivateTmp=no"), "{properties}");
    } else {
        assert!(!marker.exists(), "the agent's /tmp is its own");
        assert!(properties.contains("PrivateTmp=yes"), "{properties}");
    }
}

#[test]
fn a_sandbox_turned_off_is_said_loudly_and_really_off() {
    let rein = Rein::fleet(
        "[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n[workers]\nsandbox = \"off\"\n",
    );
    let _down = Down(&rein);
    let started = rein.run(&[
        "worker",
        "start",
        "w1",
        "x",
        "--command",
        "touch \"$REIN_DATA_DIR/goals/unfenced.md\"; exec sleep 600",
    ]);
    assert!(started.status.success(), "{}", stderr_of(&started));
    assert!(
        stderr_of(&started).contains("WITHOUT a sandbox"),
        "{}",
        stderr_of(&started)
    );
    assert!(stdout_of(&started).contains("sandbox off"));
    wait_until(Duration::from_secs(10), "the unfenced write", || {
        rein.data.join("goals/unfenced.md").exists()
    });
    let status = rein.ok(&["status"]);
    assert!(status.contains("sandbox  OFF"), "{status}");
    assert_eq!(rein.worker("w1")["sandbox"], "off");
}

#[test]
fn a_worker_cannot_reach_another_workers_session() {
    let rein = Rein::fleet("[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n");
    let _down = Down(&rein);
    rein.ok(&["worker", "start", "w1", "x"]);
    assert!(rein.data.join("agents/w1/pty.sock").exists());
    rein.ok(&[
        "worker",
        "start",
        "w2",
        "x",
        "--command",
        "{ echo agents=$(ls \"$REIN_DATA_DIR/agents\" | tr '\\n' ' '); \
           test -e \"$REIN_DATA_DIR/agents/w1/pty.sock\" && echo sock=visible || echo sock=hidden; \
           \"$REIN_BIN\" worker attach w1 </dev/null >/dev/null 2>&1; echo attach=$?; \
           echo END; } > out.txt; exec sleep 600",
    ]);
    let text = wait_for_file(&rein.data.join("agents/w2/work/out.txt"), "w2's report");
    assert_eq!(reported(&text, "agents").trim(), "w2", "{text}");
    assert_eq!(reported(&text, "sock"), "hidden");
    assert_ne!(reported(&text, "attach"), "0");
}

/// An agent sitting at a dialog of its own (not a rein ask) is `waiting-human`, with the
/// dialog's line, from what its PTY host sees on the screen; once it moves on it is running.
/// The agent here is a stand-in named `claude` that shows claude's permission question.
#[test]
fn an_agent_at_its_own_dialog_is_waiting_human() {
    let rein = Rein::fleet("");
    let bin = rein.temp.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let fake = bin.join("claude");
    std::fs::write(
        &fake,
        "#!/bin/sh\nprintf 'Bash command\\n  git push origin main\\nDo you want to proceed?\\n> 1. Yes\\n  2. No\\n'\n\
         read answer\nprintf '\\033[2J\\033[Hgot %s\\n' \"$answer\"\nexec sleep 600\n",
    )
    .expect("fake agent");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    rein.write_config(&format!(
        "[runner]\npreset = \"custom\"\ncommand = \"{}\"\n",
        fake.display()
    ));
    let _down = Down(&rein);
    rein.ok(&["worker", "start", "w1", "x"]);
    let mut view = serde_json::Value::Null;
    wait_until(Duration::from_secs(20), "the dialog to be seen", || {
        view = rein.worker("w1");
        view["health"] == "waiting-human"
    });
    assert_eq!(
        view["waiting"], "claude shows a dialog: Do you want to proceed?",
        "{view}"
    );
    rein.ok(&["worker", "tell", "w1", "1"]);
    wait_until(Duration::from_secs(20), "the agent to move on", || {
        rein.worker("w1")["health"] == "running"
    });
}
