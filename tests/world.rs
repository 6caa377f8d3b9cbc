//! Sensors, the world hash, wait tokens, and waking through inotify edge cases.

mod support;

use std::time::Duration;

use support::{blocked_in_poll, stderr_of, stdout_of, still_running, wait_child, wait_until, Rein};

fn token_of(value: &serde_json::Value) -> String {
    value["token"].as_str().expect("token").to_owned()
}

#[test]
fn wait_tokens_wake_on_new_asks_and_world_changes_only() {
    let rein = Rein::new();
    rein.flag_sensor();
    rein.ok(&["sense"]);
    let first = rein.json(&["wait"]);
    let t0 = token_of(&first);

    let quiet = rein.run(&["wait", "--since", &t0, "--timeout", "300ms"]);
    assert_eq!(quiet.status.code(), Some(3), "nothing new: times out");

    let asker = rein.spawn(&["ask", "--worker", "w1", "--prompt", "p1"]);
    let woke = rein.json(&["wait", "--since", &t0, "--timeout", "10s"]);
    let id = woke["woke"]["new_asks"][0]
        .as_str()
        .expect("new ask")
        .to_owned();
    assert_eq!(woke["woke"]["world_changed"], false);
    let t1 = token_of(&woke);

    // The same pending ask never wakes the holder of t1 again.
    let again = rein.run(&["wait", "--since", &t1, "--timeout", "300ms"]);
    assert_eq!(
        again.status.code(),
        Some(3),
        "a seen ask does not wake: {}",
        stdout_of(&again)
    );

    // A world change wakes a blocked waiter; --only-asks ignores it.
    let mut blocked = rein.spawn(&["wait", "--since", &t1, "--json"]);
    let only_asks = rein.spawn(&["wait", "--since", &t1, "--only-asks", "--timeout", "2s"]);
    support::settled(blocked.id(), "the waiter to block");
    assert!(
        still_running(&mut blocked),
        "wait blocks while nothing is new"
    );
    std::fs::write(rein.data.join("flag.json"), "{\"up\": true}").expect("write");
    rein.ok(&["sense"]);
    let out = wait_child(blocked, Duration::from_secs(10), "blocked wait");
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(state["woke"]["world_changed"], true);
    assert_eq!(state["woke"]["new_asks"], serde_json::json!([]));
    assert_eq!(state["snapshots"]["flag"]["value"]["up"], true);
    let only = wait_child(only_asks, Duration::from_secs(10), "only-asks wait");
    assert_eq!(
        only.status.code(),
        Some(3),
        "--only-asks ignores world changes"
    );

    // An unchanged world keeps its hash: sensing again wakes nobody.
    let t2 = token_of(&state);
    rein.ok(&["sense"]);
    let unchanged = rein.run(&["wait", "--since", &t2, "--timeout", "300ms"]);
    assert_eq!(unchanged.status.code(), Some(3));

    rein.ok(&["answer", &id, "done"]);
    wait_child(asker, Duration::from_secs(10), "asker");
}

/// Issue 8, item 15: answered and withdrawn asks and notes wake a waiter too, each listed in
/// `woke`, and once seen they never wake it again.
#[test]
fn wait_wakes_on_answers_withdrawals_and_notes() {
    let rein = Rein::new();
    let first = rein.spawn(&["ask", "--worker", "w1", "--prompt", "p1"]);
    let id1 = rein.wait_for_one_ask();
    let second = rein.spawn(&["ask", "--worker", "w2", "--prompt", "p2"]);
    support::wait_until(Duration::from_secs(10), "two asks", || {
        rein.pending_ids().len() == 2
    });
    let id2 = rein
        .pending_ids()
        .into_iter()
        .find(|id| *id != id1)
        .expect("second ask");
    let t0 = token_of(&rein.json(&["wait"]));
    let quiet = rein.run(&["wait", "--since", &t0, "--timeout", "300ms"]);
    assert_eq!(quiet.status.code(), Some(3), "{}", stdout_of(&quiet));

    let blocked = rein.spawn(&["wait", "--since", &t0, "--json"]);
    rein.ok(&["answer", &id1, "yes"]);
    let out = wait_child(blocked, Duration::from_secs(10), "wait for the answer");
    let woke: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(woke["woke"]["answered"], serde_json::json!([id1]), "{woke}");
    let t1 = token_of(&woke);
    wait_child(first, Duration::from_secs(10), "first asker");

    rein.ok(&["withdraw", &id2]);
    let woke = rein.json(&["wait", "--since", &t1, "--timeout", "10s"]);
    assert_eq!(
        woke["woke"]["withdrawn"],
        serde_json::json!([id2]),
        "{woke}"
    );
    assert_eq!(woke["woke"]["answered"], serde_json::json!([]), "{woke}");
    let t2 = token_of(&woke);
    wait_child(second, Duration::from_secs(10), "second asker");

    rein.ok(&["notify", "the build is red"]);
    let woke = rein.json(&["wait", "--since", &t2, "--timeout", "10s"]);
    assert_eq!(
        woke["woke"]["notes"].as_array().expect("notes").len(),
        1,
        "{woke}"
    );
    let text = rein.ok(&["wait", "--since", &t2, "--timeout", "10s"]);
    assert!(text.contains("woke      notes "), "{text}");
    let t3 = token_of(&woke);
    let seen = rein.run(&["wait", "--since", &t3, "--timeout", "300ms"]);
    assert_eq!(
        seen.status.code(),
        Some(3),
        "seen events do not wake: {}",
        stdout_of(&seen)
    );
    // A waiter that saw only the first event still gets the later ones, all listed.
    let all = rein.json(&["wait", "--since", &t1, "--timeout", "10s"]);
    assert_eq!(all["woke"]["withdrawn"], serde_json::json!([id2]), "{all}");
    assert_eq!(
        all["woke"]["notes"].as_array().expect("notes").len(),
        1,
        "{all}"
    );
}

#[test]
fn ask_survives_inotify_queue_overflow() {
    let rein = Rein::new().env("REIN_LOG", "debug");
    let asker = rein.spawn(&["ask", "--prompt", "overflow?"]);
    let id = rein.wait_for_one_ask();
    let limit: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(16384);
    // Only once it waits in poll(2) is its watch on answers/ armed; freeze it then, so its
    // queue fills, then flood its watched directory with temp files.
    blocked_in_poll(asker.id(), "the asker to wait for its answer");
    // Freeze the asker so its queue fills, then flood its watched directory with temp files.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(asker.id() as i32, libc::SIGSTOP) };
    let answers = rein.data.join("answers");
    for n in 0..(limit / 2 + 200) {
        let path = answers.join(format!(".flood-{n}"));
        std::fs::write(&path, b"x").expect("flood");
        std::fs::remove_file(&path).expect("unflood");
    }
    rein.ok(&["answer", &id, "still delivered"]);
    // SAFETY: as above.
    unsafe { libc::kill(asker.id() as i32, libc::SIGCONT) };
    let out = wait_child(asker, Duration::from_secs(10), "asker after overflow");
    assert_eq!(stdout_of(&out), "still delivered\n");
    assert!(
        stderr_of(&out).contains("overflowed"),
        "the overflow happened and was handled: {}",
        stderr_of(&out)
    );
}

#[test]
fn ask_survives_its_directory_being_recreated() {
    let rein = Rein::new().env("REIN_LOG", "debug");
    let asker = rein.spawn(&["ask", "--prompt", "recreated?"]);
    let id = rein.wait_for_one_ask();
    let answers = rein.data.join("answers");
    std::fs::remove_dir(&answers).expect("remove answers/");
    std::fs::create_dir(&answers).expect("re-create answers/");
    rein.ok(&["answer", &id, "found it"]);
    let out = wait_child(asker, Duration::from_secs(10), "asker after re-create");
    assert_eq!(stdout_of(&out), "found it\n");
}

#[test]
fn bad_sensors_yield_error_snapshots() {
    let rein = Rein::new();
    rein.write_config("[sensors]\ntimeout = \"1s\"\noutput_cap = \"4K\"\n");
    rein.ok(&["sensor", "write", "good", "echo '{\"n\": 1}'"]);
    rein.ok(&["sensor", "write", "prose", "echo hello world"]);
    rein.ok(&["sensor", "write", "array", "echo '[1,2]'"]);
    rein.ok(&["sensor", "write", "hang", "sleep 30; echo '{}'"]);
    rein.ok(&["sensor", "write", "flood", "yes '{}'"]);
    rein.ok(&["sensor", "write", "fails", "echo broken >&2; exit 3"]);
    let started = std::time::Instant::now();
    let report = rein.json(&["sense"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the hung sensor was stopped"
    );
    let snapshots = report["snapshots"].as_array().expect("array");
    let by_name = |name: &str| {
        snapshots
            .iter()
            .find(|s| s["sensor"] == name)
            .expect(name)
            .clone()
    };
    assert_eq!(by_name("good")["ok"], true);
    assert_eq!(by_name("good")["value"]["n"], 1);
    let expectations = [
        ("prose", "non-JSON"),
        ("array", "not an object"),
        ("hang", "timed out"),
        ("flood", "more than 4096 bytes"),
        ("fails", "status 3: broken"),
    ];
    for (name, says) in expectations {
        let snapshot = by_name(name);
        assert_eq!(snapshot["ok"], false, "{name}");
        let error = snapshot["error"].as_str().expect("error");
        assert!(error.contains(says), "{name}: {error}");
        assert!(rein.data.join(format!("snapshots/{name}.json")).exists());
    }
    let listed = rein.ok(&["sensor", "ls"]);
    assert!(listed.contains("timed out"), "{listed}");
    rein.ok(&["sensor", "rm", "hang"]);
    let report = rein.json(&["sense"]);
    assert_eq!(report["snapshots"].as_array().expect("array").len(), 5);
    assert!(!rein.data.join("snapshots/hang.json").exists());
    assert_eq!(
        std::fs::read_dir(rein.data.join("archive/sensors"))
            .expect("archive")
            .count(),
        1
    );
}

/// Issue 8, item 8: a sensor's timeout holds whatever it starts. A child that left the
/// process group with setsid and keeps stdout open neither delays `rein sense` past the
/// timeout nor outlives it, and a flood on stderr does not stall the sensor.
#[test]
fn sensors_cannot_outlive_their_timeout() {
    let rein = Rein::new();
    rein.write_config("[sensors]\ntimeout = \"2s\"\n");
    rein.ok(&[
        "sensor",
        "write",
        "daemon",
        "setsid sleep 25.0111 & echo '{\"ok\": 1}'",
    ]);
    rein.ok(&[
        "sensor",
        "write",
        "stuck",
        "setsid sleep 25.0222 & sleep 25.0333",
    ]);
    rein.ok(&[
        "sensor",
        "write",
        "noisy",
        "head -c 200000 /dev/zero >&2; echo '{\"n\": 2}'",
    ]);
    let started = std::time::Instant::now();
    let report = rein.json(&["sense"]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "sense took {:?} with a 2 s timeout",
        started.elapsed()
    );
    let snapshots = report["snapshots"].as_array().expect("array");
    let by_name = |name: &str| {
        snapshots
            .iter()
            .find(|s| s["sensor"] == name)
            .expect(name)
            .clone()
    };
    assert_eq!(by_name("daemon")["value"]["ok"], 1, "{}", by_name("daemon"));
    assert_eq!(by_name("noisy")["value"]["n"], 2, "{}", by_name("noisy"));
    assert!(
        by_name("stuck")["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out"),
        "{}",
        by_name("stuck")
    );
    wait_until(
        Duration::from_secs(2),
        "the sensors' leftovers to be gone",
        || {
            let left = std::process::Command::new("pgrep")
                .args(["-f", "sleep 25.0[123]"])
                .output()
                .expect("pgrep");
            String::from_utf8_lossy(&left.stdout).trim().is_empty()
        },
    );
}

#[test]
fn claims_are_exclusive_and_dead_holders_are_reaped() {
    let rein = Rein::new();
    let mut holder = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    let pid = holder.id().to_string();
    rein.ok(&["claim", "issue-7", "--pid", &pid, "--worker", "w1"]);
    let mut other = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    let other_pid = other.id().to_string();
    let taken = rein.run(&["claim", "issue-7", "--pid", &other_pid, "--worker", "w2"]);
    assert_eq!(taken.status.code(), Some(5));
    assert!(
        stderr_of(&taken).contains("held by w1"),
        "{}",
        stderr_of(&taken)
    );
    holder.kill().expect("kill holder");
    holder.wait().expect("reap");
    let reaped = rein.ok(&["claim", "issue-7", "--pid", &other_pid, "--worker", "w2"]);
    assert!(reaped.contains("reaped"), "{reaped}");
    // Another holder's live lease is not released by accident (issue 8, item 7).
    let refused = rein.run(&["unclaim", "issue-7"]);
    assert_eq!(refused.status.code(), Some(5), "{}", stderr_of(&refused));
    assert!(
        stderr_of(&refused).contains("held by w2") && stderr_of(&refused).contains("--force"),
        "{}",
        stderr_of(&refused)
    );
    assert!(rein.data.join("claims/issue-7.json").exists());
    let forced = rein.ok(&["unclaim", "--force", "issue-7"]);
    assert!(forced.contains("released issue-7 (held by w2)"), "{forced}");
    assert_eq!(rein.run(&["unclaim", "issue-7"]).status.code(), Some(1));
    other.kill().expect("kill");
    other.wait().expect("reap");
    assert!(rein
        .ok(&["journal"])
        .contains("reap: claim issue-7 held by w1"));
}

#[test]
fn goals_playbook_notes_and_state() {
    let rein = Rein::new();
    rein.ok(&["goal", "write", "ship-v1", "# Ship v1\nAll tests green."]);
    let piped = rein.run_stdin(&["goal", "write", "docs", "-"], "# Write docs\n");
    assert!(piped.status.success());
    let goals = rein.json(&["goal", "ls"]);
    assert_eq!(goals[1]["id"], "ship-v1");
    assert_eq!(goals[1]["title"], "Ship v1");
    rein.ok(&["goal", "archive", "docs"]);
    assert_eq!(
        rein.json(&["goal", "ls"]).as_array().expect("array").len(),
        1
    );
    assert_eq!(
        rein.run(&["goal", "archive", "docs"]).status.code(),
        Some(1)
    );
    rein.ok(&["playbook", "write", "Be careful."]);
    assert_eq!(rein.ok(&["playbook", "show"]), "Be careful.\n");
    rein.ok(&["notify", "build is red", "--worker", "w2"]);
    let notes: Vec<_> = std::fs::read_dir(rein.data.join("notes"))
        .expect("notes")
        .collect();
    assert_eq!(notes.len(), 1);
    let state = rein.json(&["state"]);
    assert_eq!(state["goals"][0]["id"], "ship-v1");
    assert!(state["journal"]
        .as_array()
        .expect("journal")
        .iter()
        .any(|l| l.as_str().unwrap_or("").contains("w2: build is red")));
    assert!(state["token"].as_str().expect("token").starts_with("v2."));
    assert_eq!(state["profile"], rein.profile);
}

#[test]
fn wait_blocks_without_waking_up() {
    let rein = Rein::new();
    let first = rein.json(&["wait"]);
    let waiter = rein.spawn(&["wait", "--since", &token_of(&first)]);
    let pid = waiter.id();
    let switches = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("status")
            .lines()
            .filter(|l| {
                l.starts_with("voluntary_ctxt_switches")
                    || l.starts_with("nonvoluntary_ctxt_switches")
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    };
    // Let it settle into its blocking wait, then watch it for a second.
    blocked_in_poll(pid, "the waiter to block");
    let before = switches();
    std::thread::sleep(Duration::from_secs(1));
    let after = switches();
    assert!(
        after - before <= 1,
        "a blocked wait has no periodic wakeups ({before} -> {after})"
    );
    let mut waiter = waiter;
    waiter.kill().expect("kill");
    waiter.wait().expect("reap");
}

/// An unchanged world costs nothing: beats that find the same readings write no snapshot,
/// no `world.json` (whose replacement is what makes a blocked `rein wait` look again) and no
/// journal line; a beat that finds a change is journaled and wakes the waiter.
#[test]
fn quiet_beats_write_nothing_a_waiter_looks_at() {
    use std::os::unix::fs::MetadataExt;
    let rein = Rein::new();
    rein.flag_sensor();
    rein.ok(&["tick"]);
    let beat_lines = || {
        std::fs::read_to_string(rein.data.join("journal.md"))
            .expect("journal")
            .lines()
            .filter(|line| line.contains(" beat: beat "))
            .count()
    };
    let inodes = || {
        ["world.json", "snapshots/flag.json"].map(|file| {
            std::fs::metadata(rein.data.join(file))
                .expect("written")
                .ino()
        })
    };
    assert_eq!(beat_lines(), 1, "the first beat sensed a new world");
    let written = inodes();
    let token = token_of(&rein.json(&["wait"]));
    let waiter = rein.spawn(&["wait", "--since", &token, "--json", "--timeout", "60s"]);
    blocked_in_poll(waiter.id(), "the waiter to block");
    for _ in 0..3 {
        rein.ok(&["tick"]);
    }
    let pulse: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(rein.data.join("pulse.json")).expect("pulse"),
    )
    .expect("pulse json");
    assert_eq!(pulse["beat"], 4, "every beat is counted: {pulse}");
    assert_eq!(pulse["changed"], false);
    assert_eq!(beat_lines(), 1, "quiet beats add no journal line");
    assert_eq!(inodes(), written, "quiet beats replaced no world file");
    let mut waiter = waiter;
    assert!(still_running(&mut waiter));

    std::fs::write(rein.data.join("flag.json"), "{\"raised\": true}").expect("flag");
    rein.ok(&["tick"]);
    let out = wait_child(waiter, Duration::from_secs(10), "the woken waiter");
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(state["woke"]["world_changed"], true, "{state}");
    assert_eq!(beat_lines(), 2, "the beat that found a change is journaled");
}

/// A sensor that asks for an interval (`# rein: every 1h`) runs at the first beat and then
/// not again within the hour, while `rein sense` runs it on request; `sensor ls` says how
/// often each one runs.
#[test]
fn beats_run_a_sensor_with_an_interval_only_when_it_is_due() {
    let rein = Rein::new();
    let runs = rein.data.join("runs.log");
    rein.ok(&[
        "sensor",
        "write",
        "hourly",
        &format!(
            "# rein: every 1h\necho run >> '{}'\necho '{{\"h\": 1}}'",
            runs.display()
        ),
    ]);
    rein.flag_sensor();
    let count = || {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .count()
    };
    rein.ok(&["tick"]);
    rein.ok(&["tick"]);
    rein.ok(&["tick"]);
    assert_eq!(count(), 1, "three beats within the hour ran it once");
    let listed = rein.ok(&["sensor", "ls"]);
    let row = |name: &str| {
        listed
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(row("hourly").contains("every 1h"), "{listed}");
    assert!(row("flag").contains("every beat"), "{listed}");
    let json = rein.json(&["sensor", "ls"]);
    assert_eq!(json[1]["every_secs"], 3600.0, "{json}");
    rein.ok(&["sense"]);
    assert_eq!(count(), 2, "sense runs every sensor");

    // `sensor write` refuses a line it cannot read, and changes nothing.
    let script = rein.data.join("sensors/hourly.sh");
    rein.refused(
        &["sensor", "write", "hourly", "# rein: every now\necho '{}'"],
        "# rein: every 10m",
    );

    // One edited in by hand is the sensor's error, shown by `sensor ls`, and no beat fails
    // for it.
    std::fs::write(&script, "# rein: every now\necho '{}'\n").expect("edit");
    rein.ok(&["tick"]);
    let listed = rein.ok(&["sensor", "ls"]);
    assert!(
        listed.contains("bad `# rein:` line") && listed.contains("# rein: every 10m"),
        "{listed}"
    );
}

/// notes/ keeps a day of notes: a beat's housekeeping moves older ones to archive/notes/,
/// keeping each, so what lists notes/ on every change does not grow with every note ever left.
#[test]
fn a_beat_archives_notes_older_than_a_day() {
    let rein = Rein::new();
    rein.ok(&["init"]);
    rein.ok(&["notify", "fresh news"]);
    let old_id = "20200101t000000000-abcdef";
    let old = format!(
        "{{\"version\":1,\"id\":\"{old_id}\",\"message\":\"old news\",\"worker\":\"w1\",\"at\":\"2020-01-01T00:00:00Z\"}}"
    );
    let notes = rein.data.join("notes");
    std::fs::write(notes.join(format!("{old_id}.json")), &old).expect("old note");
    rein.ok(&["tick"]);
    let left: Vec<String> = std::fs::read_dir(&notes)
        .expect("notes")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !left.is_empty() && left.iter().all(|name| !name.starts_with("2020")),
        "only fresh notes stay: {left:?}"
    );
    let archived = rein
        .data
        .join("archive/notes")
        .join(format!("{old_id}.json"));
    assert_eq!(
        std::fs::read_to_string(&archived).expect("the old note, archived"),
        old,
        "kept as it was"
    );
}
