//! What an attacker or a careless user tried, and what rein must do about it: private modes
//! whatever the umask, planted files refused by name, bounded sizes, success reported when
//! the operation happened, no stale temp files, seeds written once, and the small misuses a
//! new user hits first.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::time::{Duration, SystemTime};

use support::{stderr_of, stdout_of, wait_child, Rein};

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o777
}

/// Item 2: the data dir, its subdirectories and its files are private whatever the umask.
#[test]
fn data_dir_is_private_whatever_the_umask() {
    for umask in [0o022, 0o002, 0o000] {
        let rein = Rein::new();
        let with_umask = |args: &[&str]| {
            let mut command = rein.command(args);
            // SAFETY: umask(2) is async-signal-safe and only changes the child.
            unsafe {
                command.pre_exec(move || {
                    libc::umask(umask);
                    Ok(())
                });
            }
            command.output().expect("run rein")
        };
        let asked = with_umask(&[
            "ask",
            "--prompt",
            "password is hunter2?",
            "--timeout",
            "1ms",
        ]);
        assert_eq!(asked.status.code(), Some(3), "{}", stderr_of(&asked));
        let id = rein.pending_ids()[0].clone();
        let answered = with_umask(&["answer", &id, "yes"]);
        assert!(answered.status.success(), "{}", stderr_of(&answered));
        with_umask(&["notify", "hello"]);
        with_umask(&["goal", "write", "g1", "body"]);
        with_umask(&["sensor", "write", "s1", "echo '{}'"]);
        let mut checked = 0;
        let mut stack = vec![rein.data.clone()];
        while let Some(dir) = stack.pop() {
            assert_eq!(mode_of(&dir), 0o700, "umask {umask:o}: {}", dir.display());
            for entry in std::fs::read_dir(&dir).expect("read dir") {
                let path = entry.expect("entry").path();
                let meta = std::fs::symlink_metadata(&path).expect("stat");
                if meta.is_dir() {
                    stack.push(path);
                } else {
                    let mode = meta.mode() & 0o777;
                    assert_eq!(
                        mode & 0o077,
                        0,
                        "umask {umask:o}: {} is mode {mode:o}",
                        path.display()
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 6, "files were checked: {checked}");
    }
}

/// Item 2: `rein status` (and `rein state`) warn about a data dir others can read.
#[test]
fn a_data_dir_others_can_read_is_warned_about() {
    let rein = Rein::new();
    rein.ok(&["notify", "hi"]);
    std::fs::set_permissions(&rein.data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let state = rein.run(&["state"]);
    assert!(
        stderr_of(&state).contains("chmod 700"),
        "{}",
        stderr_of(&state)
    );
    support::user_manager::ensure();
    let status = rein.ok(&["status"]);
    assert!(
        status.contains("warning") && status.contains("chmod 700"),
        "{status}"
    );
}

/// Item 3: a FIFO, a symlink to /dev/zero and a symlinked answers/ are refused by name.
#[test]
fn planted_files_are_refused_by_name() {
    let rein = Rein::new();
    rein.ok(&["notify", "make the data dir"]);
    let fifo = rein.data.join("asks/x.json");
    let c_path = std::ffi::CString::new(fifo.to_str().expect("utf8")).expect("c path");
    // SAFETY: mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink("/dev/zero", rein.data.join("asks/z.json")).expect("symlink");
    for args in [&["asks"][..], &["state"][..]] {
        let child = rein.spawn(args);
        let out = wait_child(child, Duration::from_secs(10), "rein with planted files");
        let said = format!("{}{}", stdout_of(&out), stderr_of(&out));
        assert!(
            said.contains("asks/x.json") && said.contains("a FIFO, not a regular file"),
            "rein {args:?}: {said}"
        );
        assert!(said.contains("asks/z.json"), "rein {args:?}: {said}");
    }
    let waiter = rein.spawn(&["wait", "--timeout", "10ms", "--since", "v1.0.none"]);
    let out = wait_child(
        waiter,
        Duration::from_secs(10),
        "rein wait with planted files",
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let asker = rein.spawn(&["ask", "--prompt", "still works?", "--timeout", "50ms"]);
    let out = wait_child(asker, Duration::from_secs(10), "rein ask");
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));

    for planted in ["asks/x.json", "asks/z.json"] {
        std::fs::remove_file(rein.data.join(planted)).expect("remove");
    }

    // answers/ replaced by a symlink: nothing is written through it.
    let elsewhere = rein.temp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    std::fs::rename(
        rein.data.join("answers"),
        rein.temp.path().join("old-answers"),
    )
    .expect("move");
    std::os::unix::fs::symlink(&elsewhere, rein.data.join("answers")).expect("symlink");
    let id = rein.ask_id_of("still works?");
    let answered = rein.run(&["answer", &id, "yes"]);
    assert_ne!(answered.status.code(), Some(0));
    assert!(
        stderr_of(&answered).contains("answers") && stderr_of(&answered).contains("symlink"),
        "{}",
        stderr_of(&answered)
    );
    assert_eq!(
        std::fs::read_dir(&elsewhere).expect("ls").count(),
        0,
        "nothing was written through the symlink"
    );
}

/// Item 3: a FIFO planted as a sensor does not hang `rein sense`.
#[test]
fn a_planted_fifo_sensor_does_not_hang_sense() {
    let rein = Rein::new();
    rein.write_config("[sensors]\ntimeout = \"2s\"\n");
    rein.ok(&["sensor", "write", "ok", "echo '{\"a\":1}'"]);
    let fifo = rein.data.join("sensors/f.sh");
    let c_path = std::ffi::CString::new(fifo.to_str().expect("utf8")).expect("c path");
    // SAFETY: mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let started = std::time::Instant::now();
    let sense = rein.spawn(&["sense", "--json"]);
    let out = wait_child(sense, Duration::from_secs(10), "rein sense");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let report: serde_json::Value = serde_json::from_str(&stdout_of(&out)).expect("json");
    let f = report["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .find(|s| s["sensor"] == "f")
        .expect("f's snapshot")
        .clone();
    assert_eq!(f["ok"], false);
    assert!(
        f["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not a regular file"),
        "{f}"
    );
}

/// Item 4: prompts, references, options and answers have limits; journal lines are capped.
#[test]
fn sizes_are_limited() {
    let rein = Rein::new();
    let huge = "x".repeat(10 << 20);
    let refused = rein.run_stdin(&["ask", "--prompt", "-", "--timeout", "1ms"], &huge);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr_of(&refused));
    assert!(
        stderr_of(&refused).contains("limit"),
        "{}",
        stderr_of(&refused)
    );
    let long_ref = "r".repeat(5000);
    let refused = rein.run(&["ask", "--prompt", "q", "--ref", &long_ref]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr_of(&refused));
    let many: Vec<String> = (0..100).map(|n| format!("o{n}")).collect();
    let refused = rein.run(&["ask", "--prompt", "q", "--options", &many.join(",")]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr_of(&refused));
    assert!(rein.pending_ids().is_empty(), "nothing was filed");

    let asked = rein.run(&["ask", "--prompt", "free text?", "--timeout", "1ms"]);
    assert_eq!(asked.status.code(), Some(3));
    let id = rein.pending_ids()[0].clone();
    let answer = "y".repeat(13 << 20);
    let refused = rein.run_stdin(&["answer", &id, "-"], &answer);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr_of(&refused));
    assert_eq!(rein.pending_ids(), vec![id.clone()]);

    // A long (but allowed) prompt makes a capped journal line; the journal stays readable.
    let long = format!("{}\n", "p".repeat(60_000));
    let asked = rein.run_stdin(&["ask", "--prompt", "-", "--timeout", "1ms"], &long);
    assert_eq!(asked.status.code(), Some(3), "{}", stderr_of(&asked));
    rein.ok(&["notify", "after the long one"]);
    let journal = rein.ok(&["journal", "-n", "5"]);
    assert!(journal.contains("after the long one"), "{journal}");
    assert!(
        journal.lines().all(|l| l.len() <= 4096),
        "journal lines are capped"
    );
}

/// Item 10: an answer that was recorded reports success even when the journal cannot be
/// written; the journal failure is a warning.
#[test]
fn a_failed_journal_line_is_a_warning_not_a_failure() {
    let rein = Rein::new();
    rein.ok(&["notify", "make the data dir"]);
    let asker = rein.spawn(&["ask", "--prompt", "deploy?", "--options", "yes,no"]);
    let id = rein.wait_for_one_ask();
    let journal = rein.data.join("journal.md");
    std::fs::remove_file(&journal).expect("rm journal");
    std::fs::create_dir(&journal).expect("a directory where the journal goes");
    let answered = rein.run(&["answer", &id, "yes"]);
    assert_eq!(answered.status.code(), Some(0), "{}", stderr_of(&answered));
    assert!(
        stderr_of(&answered).contains("warning"),
        "{}",
        stderr_of(&answered)
    );
    let asked = wait_child(asker, Duration::from_secs(10), "asker");
    assert_eq!(stdout_of(&asked), "yes\n");
    assert_eq!(asked.status.code(), Some(0), "{}", stderr_of(&asked));
    let again = rein.run(&["ask", "--prompt", "another?", "--timeout", "1ms"]);
    assert_eq!(again.status.code(), Some(3), "{}", stderr_of(&again));
    let noted = rein.run(&["notify", "still fine"]);
    assert_eq!(noted.status.code(), Some(0), "{}", stderr_of(&noted));
    let goal = rein.run(&["goal", "write", "g", "body"]);
    assert_eq!(goal.status.code(), Some(0), "{}", stderr_of(&goal));
}

/// Sets a file's modification time, as the age of a file left behind.
fn set_modified(path: &std::path::Path, at: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(at))
        .unwrap_or_else(|error| panic!("cannot age {}: {error}", path.display()));
}

/// Item 11: stale temp files left by killed writers are removed the next time.
#[test]
fn stale_temp_files_are_removed() {
    let rein = Rein::new();
    rein.ok(&["notify", "make the data dir"]);
    let old = rein.data.join("asks/.tmp-0123456789abcdef-x.json");
    let fresh = rein.data.join("asks/.tmp-fedcba9876543210-y.json");
    for path in [&old, &fresh] {
        std::fs::write(path, "half").expect("write temp");
    }
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    set_modified(&old, hour_ago);
    let old_note = rein.data.join("notes/.tmp-0123456789abcdef-n.json");
    std::fs::write(&old_note, "half").expect("write temp");
    set_modified(&old_note, hour_ago);
    let asked = rein.run(&["ask", "--prompt", "q", "--timeout", "1ms"]);
    assert_eq!(asked.status.code(), Some(3));
    assert!(
        !old.exists(),
        "a stale temp in asks/ is removed when an ask is filed"
    );
    assert!(fresh.exists(), "a fresh temp may be another writer's: kept");
    rein.ok(&["tick"]);
    assert!(!old_note.exists(), "a beat removes stale temps everywhere");

    // Filing looks for stale temps at most every five minutes (half the age that makes one
    // stale), so a filing does not list every ask: one planted now stays until then.
    let later = rein.data.join("asks/.tmp-00000000000000aa-z.json");
    std::fs::write(&later, "half").expect("write temp");
    set_modified(&later, hour_ago);
    rein.run(&["ask", "--prompt", "q2", "--timeout", "1ms"]);
    assert!(later.exists(), "swept a moment ago: no new look yet");
    set_modified(
        &rein.data.join("asks/.swept"),
        SystemTime::now() - Duration::from_secs(301),
    );
    rein.run(&["ask", "--prompt", "q3", "--timeout", "1ms"]);
    assert!(!later.exists(), "five minutes on, filing looks again");

    // A beat too looks everywhere at most every five minutes, so a beat does not list every
    // archived ask.
    let later_note = rein.data.join("notes/.tmp-00000000000000bb-n.json");
    std::fs::write(&later_note, "half").expect("write temp");
    set_modified(&later_note, hour_ago);
    rein.ok(&["tick"]);
    assert!(
        later_note.exists(),
        "a beat swept a moment ago: no new look yet"
    );
    set_modified(
        &rein.data.join(".swept"),
        SystemTime::now() - Duration::from_secs(301),
    );
    rein.ok(&["tick"]);
    assert!(!later_note.exists(), "five minutes on, a beat looks again");
}

/// The voluntary context switches of a process's main thread.
fn switches(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("voluntary_ctxt_switches")
}

/// Item 13: a blocked `rein ask` watches only what can answer it: journal lines, notes,
/// goals and world changes do not wake it.
#[test]
fn writes_elsewhere_do_not_wake_a_blocked_ask() {
    let rein = Rein::new();
    rein.ok(&[
        "sensor",
        "write",
        "counter",
        "echo \"{\\\"n\\\": $(date +%N)}\"",
    ]);
    let asker = rein.spawn(&["ask", "--prompt", "blocked?"]);
    let id = rein.wait_for_one_ask();
    let pid = asker.id();
    let mut last = u64::MAX;
    support::wait_until(Duration::from_secs(10), "the asker to settle", || {
        std::thread::sleep(Duration::from_millis(100));
        let now = switches(pid);
        std::mem::replace(&mut last, now) == now
    });
    let before = switches(pid);
    for n in 0..10 {
        rein.ok(&["notify", &format!("note {n}")]);
        rein.ok(&["goal", "write", &format!("g{n}"), "body"]);
        rein.ok(&["sense"]);
    }
    let after = switches(pid);
    assert!(
        after - before <= 2,
        "the blocked ask woke {} times for writes it does not wait on",
        after - before
    );
    rein.ok(&["answer", &id, "yes"]);
    let out = wait_child(asker, Duration::from_secs(10), "asker");
    assert_eq!(stdout_of(&out), "yes\n");
}

/// The inotify watches a process holds: (inode, mask) of each, from its fdinfo.
fn inotify_watches(pid: u32) -> Vec<(u64, u32)> {
    let mut watches = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo") {
        let info = std::fs::read_to_string(fd.expect("fd").path()).unwrap_or_default();
        for line in info.lines().filter(|l| l.starts_with("inotify ")) {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {line}"))
                    .to_owned()
            };
            let inode = u64::from_str_radix(&field("ino:"), 16).expect("inode");
            let mask = u32::from_str_radix(&field("mask:"), 16).expect("mask");
            watches.push((inode, mask));
        }
    }
    watches
}

/// A blocked `rein ask` watches `answers/` only for names appearing and going, not for writes
/// inside it: a watch for writes makes the kernel mark every cached entry of the directory,
/// which costs an asker tens of milliseconds once `answers/` holds 100,000 answers.
#[test]
fn a_blocked_ask_watches_only_for_names_in_answers() {
    const IN_MODIFY: u32 = 0x2;
    const IN_CLOSE_WRITE: u32 = 0x8;
    let rein = Rein::new();
    let mut asker = rein.spawn(&["ask", "--prompt", "blocked?"]);
    let id = rein.wait_for_one_ask();
    support::blocked_in_poll(asker.id(), "the asker to block on its watch");
    let answers = std::fs::metadata(rein.data.join("answers"))
        .expect("answers")
        .ino();
    let watches = inotify_watches(asker.id());
    assert_eq!(watches.len(), 1, "one watch: {watches:?}");
    let (inode, mask) = watches[0];
    assert_eq!(inode, answers, "the watch is on answers/");
    assert_eq!(mask & (IN_MODIFY | IN_CLOSE_WRITE), 0, "mask {mask:#x}");
    rein.ok(&["answer", &id, "yes"]);
    assert_eq!(asker.wait().expect("asker").code(), Some(0));
}

/// Item 17: text `rein state` shows what README lists: world, snapshots, asks, goals,
/// journal, token.
#[test]
fn text_state_shows_what_the_readme_lists() {
    let rein = Rein::new();
    rein.ok(&["sensor", "write", "weather", "echo '{\"sky\": \"blue\"}'"]);
    rein.ok(&["sense"]);
    rein.ok(&["goal", "write", "ship", "# Ship it"]);
    rein.ok(&["notify", "a line for the journal"]);
    let state = rein.ok(&["state"]);
    for expected in [
        "world ",
        "sensors ",
        "weather",
        "\"sky\":\"blue\"",
        "asks ",
        "goals ",
        "Ship it",
        "journal ",
        "a line for the journal",
        "token ",
    ] {
        assert!(state.contains(expected), "missing {expected:?}:\n{state}");
    }
}

/// Item 16: seeds are written once; a seed the user archived or removed stays gone when
/// `rein init` runs again (and `rein up`, see fleet_hardening).
#[test]
fn seeds_are_written_once() {
    let rein = Rein::new();
    rein.ok(&["init"]);
    rein.ok(&["goal", "archive", "setup"]);
    rein.ok(&["sensor", "rm", "today"]);
    std::fs::remove_file(rein.data.join("PLAYBOOK.md")).expect("rm playbook");
    let again = rein.json(&["init"]);
    assert!(
        again["created"]
            .as_array()
            .expect("created")
            .iter()
            .all(|c| !c
                .as_str()
                .unwrap_or_default()
                .starts_with(rein.data.to_str().expect("utf8"))),
        "{again}"
    );
    assert!(!rein.data.join("goals/setup.md").exists());
    assert!(!rein.data.join("sensors/today.sh").exists());
    assert!(!rein.data.join("PLAYBOOK.md").exists());
}

/// Item 17: `rein notify -` reads the note from stdin; `rein worker logs` of a worker the
/// profile never had is not found.
#[test]
fn notify_reads_stdin_and_logs_of_no_worker_fail() {
    let rein = Rein::new();
    let noted = rein.run_stdin(&["notify", "-", "--json"], "the build is red\n");
    assert!(noted.status.success(), "{}", stderr_of(&noted));
    let note: serde_json::Value = serde_json::from_slice(&noted.stdout).expect("json");
    assert_eq!(note["message"], "the build is red\n", "{note}");
    let logs = rein.run(&["worker", "logs", "nosuch"]);
    assert_eq!(logs.status.code(), Some(1), "{}", stderr_of(&logs));
    assert!(
        stderr_of(&logs).contains("no worker \"nosuch\""),
        "{}",
        stderr_of(&logs)
    );
}

/// Item 18: logs on a stderr that is not a terminal (a unit's, read by journald) carry no
/// colour escapes, and an error's cause is said once.
#[test]
fn errors_and_logs_are_plain_and_said_once() {
    let rein = Rein::new().env("REIN_LOG", "debug");
    rein.ok(&["sensor", "write", "s", "echo '{}'"]);
    let sensed = rein.run(&["sense"]);
    assert!(sensed.status.success(), "{}", stderr_of(&sensed));
    assert!(
        !stderr_of(&sensed).contains('\u{1b}'),
        "{:?}",
        stderr_of(&sensed)
    );
    let file = rein.temp.path().join("a-file");
    std::fs::write(&file, "").expect("write");
    let broken = Rein::new().env("REIN_DATA_DIR", file.join("data").to_str().expect("utf8"));
    let out = broken.run(&["notify", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_of(&out).matches("Not a directory").count(),
        1,
        "{}",
        stderr_of(&out)
    );
}
