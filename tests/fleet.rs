//! The pulse and workers as transient units of a real systemd user manager, and their logs
//! in the real journald. Every test has its own profile, so tests never share a unit.

mod support;

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::Duration;

use support::{stderr_of, stdout_of, tree, wait_child, wait_until, Down, Rein, REIN};

fn units_of(rein: &Rein) -> Vec<String> {
    let output = std::process::Command::new("systemctl")
        .args([
            "--user",
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            &format!("rein.{}.*", rein.profile),
        ])
        .output()
        .expect("systemctl");
    stdout_of(&output)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn up_down_up_is_idempotent_and_reconciles() {
    let rein = Rein::fleet("[pulse]\ninterval = \"1h\"\n");
    let _down = Down(&rein);
    let first = rein.json(&["up"]);
    assert_eq!(first["pulse"], "created");
    assert!(first["next_beat"].is_string(), "{first}");
    let second = rein.json(&["up"]);
    assert_eq!(second["pulse"], "unchanged");
    let timer = format!("rein.{}.pulse.timer", rein.profile);
    assert!(units_of(&rein).contains(&timer));
    rein.write_config("[pulse]\ninterval = \"30m\"\n");
    let third = rein.json(&["up"]);
    assert_eq!(third["pulse"], "recreated");
    assert!(rein.ok(&["status"]).contains("every 30m"));
    let down = rein.json(&["down"]);
    assert!(down["stopped"]
        .as_array()
        .expect("stopped")
        .iter()
        .any(|u| u == timer.as_str()));
    assert!(
        units_of(&rein).is_empty(),
        "down leaves no unit: {:?}",
        units_of(&rein)
    );
    assert!(rein.json(&["down"])["stopped"]
        .as_array()
        .expect("stopped")
        .is_empty());
    assert_eq!(rein.json(&["up"])["pulse"], "created");
}

#[test]
fn the_pulse_beats_runs_sensors_and_wakes_wait() {
    let rein = Rein::fleet("[pulse]\ninterval = \"1s\"\n");
    let _down = Down(&rein);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    rein.flag_sensor();
    rein.ok(&["up"]);
    wait_until(Duration::from_secs(20), "the first beat", || {
        rein.json(&["status"])["pulse"]["last_beat"]["beat"].as_u64() >= Some(1)
    });
    let token = rein.json(&["state"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let waiter = rein.spawn(&["wait", "--since", &token, "--only-asks", "--timeout", "30s"]);
    std::fs::create_dir_all(&rein.data).expect("data");
    std::fs::write(rein.data.join("flag.json"), "{\"raised\": true}").expect("flag");
    let woke = rein.spawn(&["wait", "--since", &token, "--json", "--timeout", "30s"]);
    let out = wait_child(woke, Duration::from_secs(40), "wait for a beat");
    assert!(
        out.status.success(),
        "a beat changed the world and woke wait: {}",
        stderr_of(&out)
    );
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        state["snapshots"]["flag"]["value"]["raised"], true,
        "the beat ran the sensor"
    );
    assert!(state["journal"]
        .as_array()
        .expect("journal")
        .iter()
        .any(|l| l.as_str().unwrap_or("").contains("beat: beat")));
    let mut waiter = waiter;
    support::settled(waiter.id(), "the --only-asks waiter to be blocked");
    assert!(
        support::still_running(&mut waiter),
        "--only-asks is not woken by beats"
    );
    waiter.kill().expect("kill");
    waiter.wait().expect("reap");
    let status = rein.json(&["status"]);
    assert_eq!(status["pulse"]["active"], true);
    assert!(status["pulse"]["last_beat"]["beat"].as_u64().expect("beat") >= 1);
    // A 1s pulse may fire at most 10 ms late (a hundredth of its interval), not a second:
    // systemd fires at the end of that window as often as not, so it stretches every interval.
    let timer = status["pulse"]["timer"]
        .as_str()
        .expect("timer name")
        .to_owned();
    let accuracy = std::process::Command::new("systemctl")
        .args(["--user", "show", "-p", "AccuracyUSec", "--value", &timer])
        .output()
        .expect("systemctl show");
    assert_eq!(stdout_of(&accuracy).trim(), "10ms", "{timer}");
    // Nor may systemd's start rate limit (by default 5 starts in 10 s) hold a short pulse
    // back for seconds after every fifth beat.
    let service = timer.replace(".timer", ".service");
    let limit = std::process::Command::new("systemctl")
        .args([
            "--user",
            "show",
            "-p",
            "StartLimitIntervalUSec",
            "--value",
            &service,
        ])
        .output()
        .expect("systemctl show");
    assert_eq!(stdout_of(&limit).trim(), "0", "{service}");
    // Each beat is one journal entry (with REIN_BEAT), not that entry plus a copy of the same
    // line from the beat's stdout.
    let beat = status["pulse"]["last_beat"]["beat"].as_u64().expect("beat");
    wait_until(Duration::from_secs(20), "a later beat", || {
        rein.json(&["status"])["pulse"]["last_beat"]["beat"].as_u64() > Some(beat)
    });
    let journal = |matches: &[&str]| {
        let output = std::process::Command::new("journalctl")
            .args(["--no-pager", "-o", "json"])
            .args(matches)
            .output()
            .expect("journalctl");
        stdout_of(&output)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect::<Vec<_>>()
    };
    let entry = journal(&[
        &format!("REIN_PROFILE={}", rein.profile),
        &format!("REIN_BEAT={beat}"),
    ]);
    let pid = entry
        .first()
        .and_then(|e| e["_PID"].as_str())
        .unwrap_or_else(|| panic!("beat {beat} in the journal: {entry:?}"))
        .to_owned();
    let line = format!("beat {beat}: world ");
    // A pid is reused: only this test's entries of it.
    let logged = journal(&[&format!("--since=@{started}"), &format!("_PID={pid}")]);
    let copies = logged
        .iter()
        .filter(|e| e["MESSAGE"].as_str().is_some_and(|m| m.starts_with(&line)))
        .count();
    assert_eq!(copies, 1, "{line}: {logged:?}");
}

#[test]
fn worker_start_ls_kill_and_refusals() {
    let rein = Rein::fleet("[runner]\npreset = \"custom\"\ncommand = \"echo brief at {{prompt_file}}; exec sleep 600\"\n");
    let _down = Down(&rein);
    let before = tree(rein.temp.path());
    for (args, says) in [
        (&["worker", "start", "w 1", "x"][..], "invalid worker id"),
        (
            &["worker", "start", "w1", "x", "--memory-max", "lots"][..],
            "invalid size",
        ),
        (
            &["worker", "start", "w1", "x", "--cpu-quota", "0%"][..],
            "invalid CPU quota",
        ),
        (
            &["worker", "start", "w1", "x", "--command", "run {{nope}}"][..],
            "unknown placeholder",
        ),
    ] {
        let output = rein.run(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr_of(&output)
        );
        assert!(
            stderr_of(&output).contains(says),
            "{args:?}: {}",
            stderr_of(&output)
        );
    }
    assert_eq!(
        tree(rein.temp.path()),
        before,
        "refused starts write nothing"
    );
    assert!(units_of(&rein).is_empty(), "refused starts start nothing");

    rein.ok(&[
        "worker",
        "start",
        "w1",
        "fix the; $(bug)",
        "--memory-max",
        "512M",
        "--cpu-quota",
        "50%",
    ]);
    let view = rein.worker("w1");
    assert_eq!(view["health"], "running", "{view}");
    let pid = view["pid"].as_u64().expect("pid");
    let contract = std::fs::read_to_string(rein.data.join("prompts/w1.md")).expect("prompt");
    assert!(
        contract.contains("\"$REIN_BIN\" ask") && contract.ends_with("fix the; $(bug)\n"),
        "{contract}"
    );
    let unit = format!("rein.{}.worker-w1.service", rein.profile);
    let props = std::process::Command::new("systemctl")
        .args([
            "--user",
            "show",
            &unit,
            "-p",
            "MemoryMax",
            "-p",
            "CPUQuotaPerSecUSec",
            "-p",
            "Environment",
        ])
        .output()
        .expect("systemctl show");
    let props = stdout_of(&props);
    assert!(props.contains("MemoryMax=536870912"), "{props}");
    assert!(props.contains("CPUQuotaPerSecUSec=500ms"), "{props}");
    assert!(props.contains("REIN_WORKER_ID=w1"), "{props}");

    let again = rein.run(&["worker", "start", "w1", "other"]);
    assert_eq!(again.status.code(), Some(5), "{}", stderr_of(&again));
    assert!(stderr_of(&again).contains("already running"));
    assert_eq!(
        rein.worker("w1")["pid"].as_u64(),
        Some(pid),
        "the running worker is untouched"
    );

    rein.ok(&["worker", "kill", "w1"]);
    assert!(
        units_of(&rein).iter().all(|u| !u.contains("worker-")),
        "{:?}",
        units_of(&rein)
    );
    assert_eq!(
        rein.worker("w1")["health"],
        "stopped",
        "a killed worker stays listed until `worker rm`"
    );
    rein.ok(&["worker", "kill", "w1"]);
    rein.ok(&["worker", "rm", "w1"]);
    assert!(rein.worker("w1").is_null());
    assert_eq!(rein.run(&["worker", "kill", "w1"]).status.code(), Some(1));
    assert_eq!(rein.run(&["worker", "rm", "w1"]).status.code(), Some(1));
}

#[test]
fn a_killed_worker_restarts_and_one_that_keeps_failing_is_failed() {
    let rein = Rein::fleet(
        "[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n\
         [workers]\nrestart = \"always\"\nrestart_sec = \"200ms\"\nstart_limit_burst = 4\nstart_limit_interval = \"1m\"\n",
    );
    let _down = Down(&rein);
    rein.ok(&["worker", "start", "steady", "stay up"]);
    let pid = rein.worker("steady")["pid"].as_u64().expect("pid");
    // SAFETY: killing the worker's main process, as a crash would.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_until(Duration::from_secs(20), "the worker to restart", || {
        let view = rein.worker("steady");
        view["health"] == "running"
            && view["restarts"].as_u64() >= Some(1)
            && view["pid"].as_u64() != Some(pid)
    });

    rein.ok(&["worker", "start", "flaky", "--command", "exit 1"]);
    wait_until(Duration::from_secs(30), "the flaky worker to fail", || {
        rein.worker("flaky")["health"] == "failed"
    });
    let view = rein.worker("flaky");
    // systemd 252 keeps the last exit's result; the restarts show the start limit was spent.
    assert!(view["restarts"].as_u64() >= Some(3), "{view}");
    assert_eq!(view["sub_state"], "failed", "{view}");
    let tick = rein.json(&["tick"]);
    assert_eq!(tick["failed_workers"], serde_json::json!(["flaky"]));
    assert!(rein
        .ok(&["journal"])
        .contains("worker-failed: worker flaky failed"));
    let notes = std::fs::read_dir(rein.data.join("notes"))
        .expect("notes")
        .count();
    assert_eq!(notes, 1, "one note for the human");
    assert_eq!(
        rein.json(&["tick"])["failed_workers"],
        serde_json::json!([]),
        "reported once"
    );
    assert!(rein.ok(&["status"]).contains("flaky"));
}

#[test]
fn attach_and_detach_round_trip_through_the_pty() {
    let rein = Rein::fleet("[runner]\npreset = \"custom\"\ncommand = \"tty; while read line; do echo got:$line; done\"\n");
    let _down = Down(&rein);
    rein.ok(&["worker", "start", "talk", "echo back"]);
    let mut attach = rein
        .command(&["worker", "attach", "talk"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("attach");
    let mut stdin = attach.stdin.take().expect("stdin");
    stdin.write_all(b"hello\n").expect("type");
    let mut stdout = attach.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buffer) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buffer[..n]);
            let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
        }
    });
    let mut screen = String::new();
    while !screen.contains("got:hello") {
        screen = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the agent echoed through the PTY");
    }
    assert!(
        screen.contains("/dev/pts/"),
        "the agent has a terminal: {screen}"
    );
    stdin.write_all(&[0x1d]).expect("detach key");
    let out = wait_child(attach, Duration::from_secs(10), "attach");
    assert!(out.status.success());
    assert!(stderr_of(&out).contains("detached"), "{}", stderr_of(&out));
    assert_eq!(
        rein.worker("talk")["health"],
        "running",
        "detaching leaves the agent running"
    );
    wait_until(
        Duration::from_secs(10),
        "the transcript in journald",
        || rein.ok(&["worker", "logs", "talk"]).contains("got:hello"),
    );
}

#[test]
fn two_profiles_side_by_side() {
    let config =
        "[pulse]\ninterval = \"1h\"\n[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n";
    let a = Rein::fleet(config);
    let b = Rein::fleet(config);
    let _down_a = Down(&a);
    let _down_b = Down(&b);
    a.ok(&["up"]);
    b.ok(&["up"]);
    a.ok(&["worker", "start", "w1", "a's"]);
    b.ok(&["worker", "start", "w1", "b's"]);
    b.ok(&["worker", "start", "w2", "b's too"]);
    assert_eq!(a.json(&["worker", "ls"]).as_array().expect("a").len(), 1);
    assert_eq!(b.json(&["worker", "ls"]).as_array().expect("b").len(), 2);
    a.ok(&["down"]);
    assert!(units_of(&a).is_empty());
    assert_eq!(
        units_of(&b).len(),
        6,
        "b's pulse timer and service, gate socket and service, and two workers stay: {:?}",
        units_of(&b)
    );
    assert_eq!(b.worker("w1")["health"], "running");
}

#[test]
fn logs_are_found_by_rein_fields() {
    let marker = format!("marker-{}", uuid::Uuid::new_v4().simple());
    let rein = Rein::fleet(&format!(
        "[runner]\npreset = \"custom\"\ncommand = \"echo {marker}; exec sleep 600\"\n"
    ));
    let _down = Down(&rein);
    rein.ok(&["worker", "start", "speaker", "talk"]);
    wait_until(Duration::from_secs(15), "the marker in journald", || {
        rein.ok(&["worker", "logs", "speaker"]).contains(&marker)
    });
    let by_field = std::process::Command::new("journalctl")
        .args([
            "--no-pager",
            "-o",
            "cat",
            &format!("REIN_PROFILE={}", rein.profile),
            "REIN_WORKER=speaker",
        ])
        .output()
        .expect("journalctl");
    assert!(stdout_of(&by_field).contains(&marker));
    assert!(
        rein.ok(&["logs"]).contains(&marker),
        "rein logs covers the whole profile"
    );
}

#[test]
fn enable_writes_a_unit_systemd_accepts() {
    let rein = Rein::fleet("");
    /// The unit goes into the real user unit directory (the manager reads only its own):
    /// whatever the test does, it is disabled and removed again.
    struct Disable<'a>(&'a Rein);
    impl Drop for Disable<'_> {
        fn drop(&mut self) {
            let _ = self.0.run(&["disable"]);
        }
    }
    let _disable = Disable(&rein);
    let enabled = rein.json(&["enable"]);
    let path = enabled["path"].as_str().expect("path").to_owned();
    assert_eq!(enabled["action"], "installed");
    let verify = std::process::Command::new("systemd-analyze")
        .args(["--user", "verify", &path])
        .output()
        .expect("systemd-analyze");
    assert!(verify.status.success(), "{}", stderr_of(&verify));
    let text = std::fs::read_to_string(&path).expect("unit");
    assert!(
        text.contains(&format!("REIN_PROFILE={}", rein.profile)) && text.contains(" up\n"),
        "{text}"
    );
    let is_enabled = std::process::Command::new("systemctl")
        .args([
            "--user",
            "is-enabled",
            enabled["unit"].as_str().expect("unit"),
        ])
        .output()
        .expect("systemctl");
    assert_eq!(stdout_of(&is_enabled).trim(), "enabled");
    assert_eq!(rein.json(&["enable"])["action"], "unchanged");
    assert_eq!(rein.json(&["disable"])["action"], "removed");
    assert!(!std::path::Path::new(&path).exists());
}

#[test]
fn no_user_manager_is_one_clear_error() {
    let rein = Rein::new()
        .env("XDG_RUNTIME_DIR", "/nonexistent-runtime")
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent-runtime/bus",
        );
    for args in [
        &["up"][..],
        &["worker", "start", "w1", "x", "--command", "true"][..],
        &["status"][..],
    ] {
        let output = rein.run(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = stderr_of(&output);
        assert!(
            stderr.contains("no systemd user manager is reachable"),
            "{stderr}"
        );
        assert!(
            stderr.contains("loginctl enable-linger") && stderr.contains("contrib/user-session.sh"),
            "{stderr}"
        );
    }
    assert!(!rein.data.exists(), "nothing was created");
}

/// systemd 252 reads a `;` of a transient unit's ExecStart back as `\;` after a
/// daemon-reload; a worker's command must survive one, and the restart after it.
#[test]
fn a_worker_command_survives_a_daemon_reload_and_a_restart() {
    let rein = Rein::fleet(
        "[runner]\npreset = \"custom\"\ncommand = \"echo one; echo \\\"two; three\\\" >> runs.txt; exec sleep 600\"\n\
         [workers]\nrestart = \"always\"\nrestart_sec = \"100ms\"\n",
    );
    let _down = Down(&rein);
    rein.ok(&["worker", "start", "w1", "x"]);
    let runs = rein.data.join("agents/w1/work/runs.txt");
    wait_until(Duration::from_secs(10), "the first run", || runs.exists());
    let reload = std::process::Command::new("systemctl")
        .args(["--user", "daemon-reload"])
        .status()
        .expect("daemon-reload");
    assert!(reload.success());
    let pid = rein.worker("w1")["pid"].as_u64().expect("pid");
    // SAFETY: killing the worker's main process, as a crash would.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_until(Duration::from_secs(20), "the run after the restart", || {
        std::fs::read_to_string(&runs).is_ok_and(|t| t.lines().count() >= 2)
    });
    assert_eq!(
        std::fs::read_to_string(&runs).expect("runs"),
        "two; three\ntwo; three\n",
        "the command ran the same both times"
    );
}

/// A listing keeps what cannot change during a running worker's run in the runtime dir, and
/// lists a steady fleet from it; a damaged file is only a slower listing.
#[test]
fn a_listing_keeps_running_workers_runs_and_shrugs_off_a_damaged_file() {
    let rein = Rein::fleet("[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n");
    let _down = Down(&rein);
    rein.ok(&["worker", "start", "w1", "stay up"]);
    let first = rein.worker("w1");
    let runtime = std::env::var("XDG_RUNTIME_DIR").expect("a user manager's runtime dir");
    let kept = std::path::Path::new(&runtime)
        .join("rein")
        .join(format!("{}.units.json", rein.profile));
    let text = std::fs::read_to_string(&kept).expect("the listing kept the runs");
    let runs: serde_json::Value = serde_json::from_str(&text).expect("json");
    let unit = format!("rein.{}.worker-w1.service", rein.profile);
    assert_eq!(runs[&unit]["main_pid"], first["pid"], "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&kept).expect("stat").permissions().mode();
    assert_eq!(mode & 0o077, 0, "private to the user: {mode:o}");

    // Listed from what was kept: the same view, the memory read from the cgroup.
    let again = rein.worker("w1");
    for field in ["pid", "restarts", "since", "health"] {
        assert_eq!(again[field], first[field], "{field}: {again} vs {first}");
    }
    assert!(again["memory"].as_u64().is_some_and(|m| m > 0), "{again}");

    std::fs::write(&kept, "{ damaged").expect("damage the file");
    let after = rein.worker("w1");
    assert_eq!(after["pid"], first["pid"], "{after}");
    let text = std::fs::read_to_string(&kept).expect("kept again");
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|runs| runs[&unit].is_object()),
        "rewritten whole: {text}"
    );
    rein.ok(&["down"]);
    assert!(!kept.exists(), "down forgets the runs");
    assert!(!kept.with_extension("lock").exists(), "and their lock");
}

/// Starting a worker keeps its run at once, so the first listing after starting a fleet
/// asks the manager nothing per unit; concurrent starts keep each other's runs.
#[test]
fn a_started_worker_is_kept_before_any_listing() {
    let rein = Rein::fleet("[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n");
    let _down = Down(&rein);
    let runtime = std::env::var("XDG_RUNTIME_DIR").expect("a user manager's runtime dir");
    let kept = std::path::Path::new(&runtime)
        .join("rein")
        .join(format!("{}.units.json", rein.profile));
    let starts: Vec<_> = ["k1", "k2", "k3"]
        .iter()
        .map(|id| rein.spawn(&["worker", "start", id, "stay up"]))
        .collect();
    for start in starts {
        let output = wait_child(start, Duration::from_secs(60), "worker start");
        assert!(output.status.success(), "{}", stderr_of(&output));
    }
    let text = std::fs::read_to_string(&kept).expect("the starts kept the runs");
    let runs: serde_json::Value = serde_json::from_str(&text).expect("json");
    for id in ["k1", "k2", "k3"] {
        let unit = format!("rein.{}.worker-{id}.service", rein.profile);
        let show = |property: &str| {
            let output = std::process::Command::new("systemctl")
                .args(["--user", "show", "-p", property, "--value", &unit])
                .output()
                .expect("systemctl show");
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        };
        assert_eq!(runs[&unit]["invocation"], show("InvocationID"), "{text}");
        assert_eq!(
            runs[&unit]["main_pid"].to_string(),
            show("MainPID"),
            "{text}"
        );
        assert_eq!(runs[&unit]["control_group"], show("ControlGroup"), "{text}");
        assert_eq!(rein.worker(id)["pid"], runs[&unit]["main_pid"]);
    }
}

/// The processes in a worker's unit: their command names.
fn unit_processes(rein: &Rein, id: &str) -> Vec<String> {
    let pid = rein.worker(id)["pid"].as_u64().expect("pid");
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a unified cgroup line")
        .to_owned();
    let procs = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .find_map(|root| std::fs::read_to_string(format!("{root}{path}/cgroup.procs")).ok())
        .expect("cgroup.procs");
    procs
        .lines()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .map(|comm| comm.trim().to_owned())
        .collect()
}

/// A `rein` copied without `rein-host` beside it still runs workers, in its own copy of the
/// host, and says what is missing and how to fix it.
#[test]
fn a_rein_without_rein_host_beside_it_runs_workers_in_itself_and_says_so() {
    let rein = Rein::fleet("");
    let _down = Down(&rein);
    let alone = rein.temp.path().join("bin");
    std::fs::create_dir_all(&alone).expect("bin dir");
    let copy = alone.join("rein");
    std::fs::hard_link(REIN, &copy)
        .or_else(|_| std::fs::copy(REIN, &copy).map(|_| ()))
        .expect("rein on its own");
    let output = rein
        .command_of(
            &copy,
            &["worker", "start", "lone", "x", "--command", "sleep 600"],
        )
        .output()
        .expect("run the lone rein");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{} is missing", alone.join("rein-host").display()))
            && stderr.contains("install rein-host beside rein"),
        "{stderr}"
    );
    wait_until(Duration::from_secs(10), "the agent running", || {
        unit_processes(&rein, "lone").contains(&"sleep".to_owned())
    });
    let mut processes = unit_processes(&rein, "lone");
    processes.sort();
    assert_eq!(processes, ["rein", "sleep"], "rein hosts the agent itself");
    assert_eq!(
        rein.worker("lone")["health"],
        "running",
        "{}",
        rein.worker("lone")
    );
}

/// A command that is one program replaces the shell that starts it, so a worker's unit holds
/// its host and its agent only; anything else keeps the shell it needs.
#[test]
fn a_one_program_command_leaves_no_shell_behind() {
    let rein = Rein::fleet("");
    let _down = Down(&rein);
    rein.ok(&["worker", "start", "one", "x", "--command", "sleep 600"]);
    rein.ok(&[
        "worker",
        "start",
        "two",
        "x",
        "--command",
        "sleep 600; true",
    ]);
    wait_until(Duration::from_secs(10), "both agents running", || {
        unit_processes(&rein, "one").contains(&"sleep".to_owned())
            && unit_processes(&rein, "two").contains(&"sleep".to_owned())
    });
    let mut one = unit_processes(&rein, "one");
    one.sort();
    // The host is rein-host, a program of its own without the CLI, not rein itself.
    assert_eq!(one, ["rein-host", "sleep"], "host and agent only");
    let mut two = unit_processes(&rein, "two");
    two.sort();
    assert_eq!(two, ["rein-host", "sh", "sleep"], "a list keeps its shell");
}

#[test]
fn a_woken_wait_shows_workers_and_asks_from_one_look_at_the_mailbox() {
    let rein = Rein::fleet("[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n");
    let _down = Down(&rein);
    rein.ok(&["worker", "start", "w1", "x"]);
    let first = rein.spawn(&["ask", "--worker", "w1", "--prompt", "first look"]);
    let id = rein.wait_for_one_ask();
    let token = rein.json(&["state"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let waiter = rein.spawn(&[
        "wait",
        "--since",
        &token,
        "--only-asks",
        "--json",
        "--timeout",
        "30s",
    ]);
    support::settled(waiter.id(), "the waiter to be blocked");
    // Edited in place (the mailbox never does that: it renames new files in), the ask file
    // keeps its inode, so the waiter's kept listing still has the first text. A second look
    // at the mailbox for the workers would read the other one.
    let path = rein.data.join(format!("asks/{id}.json"));
    let text = std::fs::read_to_string(&path).expect("ask file");
    std::fs::write(&path, text.replace("first look", "other look")).expect("in place");
    let second = rein.spawn(&["ask", "--worker", "w2", "--prompt", "wake up"]);
    let out = wait_child(waiter, Duration::from_secs(40), "the woken wait");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let prompt = state["asks"]
        .as_array()
        .expect("asks")
        .iter()
        .find(|a| a["id"] == id.as_str())
        .and_then(|a| a["prompt"].as_str())
        .expect("the first ask in the state")
        .to_owned();
    let w1 = state["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|w| w["id"] == "w1")
        .expect("w1 in the state")
        .clone();
    assert_eq!(w1["health"], "waiting-human", "{w1}");
    assert_eq!(
        w1["waiting"].as_str(),
        Some(format!("ask {id}: {prompt}").as_str()),
        "{state}"
    );
    drop((first, second));
}

/// A beat asks systemd about workers only when there is one to watch: with none (or only
/// killed ones), a quiet beat opens no connection to the bus or the manager at all.
#[test]
fn a_beat_with_no_worker_to_watch_does_not_talk_to_systemd() {
    let rein = Rein::fleet("[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n");
    let _down = Down(&rein);
    rein.ok(&["init"]);
    // A bus that only counts who connects; a runtime dir with no bus and no manager.
    let fake = rein.temp.path().join("fake");
    std::fs::create_dir_all(&fake).expect("fake runtime dir");
    let listener =
        std::os::unix::net::UnixListener::bind(fake.join("bus")).expect("fake bus socket");
    listener.set_nonblocking(true).expect("nonblocking");
    // One beat against the fake bus: its output, and how many connections it made (each is
    // hung up at once, so a beat that tries does not wait out the connect timeout).
    let tick = || {
        let child = rein
            .command(&["tick", "--json"])
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}", fake.join("bus").display()),
            )
            .env("XDG_RUNTIME_DIR", &fake)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tick");
        std::thread::scope(|scope| {
            let waited = scope.spawn(|| wait_child(child, Duration::from_secs(30), "tick"));
            let mut accepted = 0;
            loop {
                let finished = waited.is_finished();
                while listener.accept().is_ok() {
                    accepted += 1;
                }
                if finished {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let output = waited.join().expect("tick thread");
            assert!(output.status.success(), "{}", stderr_of(&output));
            let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
            (report, accepted)
        })
    };
    let not_checked = |report: &serde_json::Value| {
        report["systemd"]
            .as_str()
            .is_some_and(|s| s.contains("worker health not checked"))
    };

    let (report, accepted) = tick();
    assert_eq!(report["systemd"], serde_json::Value::Null, "{report}");
    assert_eq!(accepted, 0, "no worker: the beat did not connect");

    // A live worker is watched: the beat tries the bus, and says it could not check.
    rein.ok(&["worker", "start", "w1", "x"]);
    let (report, accepted) = tick();
    assert!(accepted >= 1, "a live worker: the beat asked systemd");
    assert!(not_checked(&report), "{report}");

    // Killed, it is not watched any more.
    rein.ok(&["worker", "kill", "w1"]);
    let (report, accepted) = tick();
    assert_eq!(accepted, 0, "only a killed worker: no connection");
    assert_eq!(report["systemd"], serde_json::Value::Null, "{report}");

    // A record that cannot be read is not taken for a killed worker: the beat still checks,
    // and does not fail on it.
    std::fs::write(rein.data.join("workers/w2.json"), "{ damaged").expect("damage");
    let (report, accepted) = tick();
    assert!(accepted >= 1, "a damaged record: the beat asked systemd");
    assert!(not_checked(&report), "{report}");
}
