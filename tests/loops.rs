//! Loops against the real systemd: schedules compared with `systemd-analyze calendar`,
//! timers firing into a real session, restarts, close and reopen, and the loopctl import.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use rein::schedule::Schedule;
use support::{stderr_of, stdout_of, tree, user_manager, wait_until, Down, Rein};

/// An agent that echoes every line it reads, behind a prompt with bracketed paste on, as
/// interactive agents do.
/// Lines, not `;`: systemd 252 writes `;` in a transient unit's ExecStart as `\;`, which a
/// daemon-reload (by anyone sharing the manager) reads back wrongly.
const ECHO_AGENT: &str =
    "printf '\\033[?2004h> '\nwhile IFS= read -r line\ndo echo \"heard:$line\"\nprintf '> '\ndone";

fn fleet(config: &str) -> Rein {
    user_manager::ensure();
    let rein = Rein::new();
    rein.write_config(config);
    rein
}

/// Quick timings, so tests do not wait on defaults meant for people.
const QUICK: &str =
    "[loops]\nrestart_sec = \"200ms\"\nready_quiet = \"300ms\"\npaste_settle = \"100ms\"\n";

fn units_of(rein: &Rein) -> Vec<String> {
    let output = Command::new("systemctl")
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

fn loop_view(rein: &Rein, name: &str) -> serde_json::Value {
    rein.json(&["loop", "ls"])
        .as_array()
        .expect("array")
        .iter()
        .find(|view| view["name"] == name)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// How often `needle` is in the worker's transcript (journald).
fn heard(rein: &Rein, worker: &str, needle: &str) -> usize {
    rein.ok(&["worker", "logs", worker, "-n", "1000"])
        .matches(needle)
        .count()
}

fn session_pid(rein: &Rein, name: &str) -> Option<u64> {
    rein.json(&["worker", "ls"])
        .as_array()
        .expect("array")
        .iter()
        .find(|w| w["id"] == name && w["health"] == "running")
        .and_then(|w| w["pid"].as_u64())
}

/// What systemd says the next `count` elapses of `expression` are after `base`.
fn systemd_elapses(expression: &str, base: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
    let output = Command::new("systemd-analyze")
        .args([
            "calendar",
            &format!("--base-time=@{}", base.timestamp()),
            &format!("--iterations={count}"),
            expression,
        ])
        .env("TZ", "UTC")
        .output()
        .expect("systemd-analyze");
    assert!(
        output.status.success(),
        "systemd-analyze {expression}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (label, when) = line.split_once(": ")?;
            let label = label.trim();
            if label != "Next elapse" && !label.starts_with("Iter. #") {
                return None;
            }
            // "Sun 2026-04-05 15:45:00 UTC"
            let when = when.trim().strip_suffix(" UTC")?;
            let when = when.split_once(' ')?.1;
            let naive = chrono::NaiveDateTime::parse_from_str(when, "%Y-%m-%d %H:%M:%S").ok()?;
            Some(Utc.from_utc_datetime(&naive))
        })
        .collect()
}

/// rein's own next fires, chained.
fn rein_elapses(schedule: &Schedule, base: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
    let mut fires = Vec::new();
    let mut at = base;
    for _ in 0..count {
        let Some(next) = schedule.next_after(at) else {
            break;
        };
        fires.push(next);
        at = next;
    }
    fires
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test time")
        .with_timezone(&Utc)
}

#[test]
fn next_fires_agree_with_systemd_across_dst_transitions() {
    // Times in and around each zone's gaps and folds, on both sides of each transition.
    let cases: &[(&str, &[&str])] = &[
        (
            "America/Los_Angeles",
            &[
                "2026-03-08T10:00:00Z",
                "2026-11-01T09:00:00Z",
                "2027-03-14T10:00:00Z",
            ],
        ),
        (
            "Europe/Berlin",
            &[
                "2026-03-29T01:00:00Z",
                "2026-10-25T01:00:00Z",
                "2027-03-28T01:00:00Z",
            ],
        ),
        (
            // A half-hour shift: 02:00 → 02:30 in October, 02:00 → 01:30 in April.
            "Australia/Lord_Howe",
            &[
                "2026-04-04T15:00:00Z",
                "2026-10-03T15:30:00Z",
                "2027-04-03T15:00:00Z",
            ],
        ),
        (
            "Asia/Kolkata",
            &["2026-03-08T10:00:00Z", "2026-11-01T09:00:00Z"],
        ),
    ];
    let times = ["01:30", "01:45", "02:15", "02:30", "03:00", "09:00"];
    let mut jobs = Vec::new();
    for (zone, transitions) in cases {
        for (index, time) in times.iter().enumerate() {
            let spec = if index % 3 == 2 {
                format!("weekly Sun,Mon,Sat {time} {zone}")
            } else {
                format!("daily {time} {zone}")
            };
            for transition in *transitions {
                // From a day before to a day after, every 3 h 13 min, plus the transition
                // instant itself: bases inside the gap, the fold and on either side.
                let center = utc(transition);
                jobs.push((spec.clone(), center));
                for step in -8..=8 {
                    jobs.push((spec.clone(), center + chrono::Duration::minutes(193 * step)));
                }
            }
        }
    }
    let compared = jobs.len();
    // systemd-analyze is a process per base time: spread them over a few threads.
    std::thread::scope(|scope| {
        for chunk in jobs.chunks(jobs.len().div_ceil(4)) {
            scope.spawn(move || {
                for (spec, base) in chunk {
                    let schedule = Schedule::parse(spec).expect("valid spec");
                    let theirs = systemd_elapses(&schedule.on_calendar()[0], *base, 3);
                    let ours = rein_elapses(&schedule, *base, 3);
                    assert_eq!(
                        ours, theirs,
                        "{spec} from {base}: rein says {ours:?}, systemd says {theirs:?}"
                    );
                }
            });
        }
    });
    assert!(compared > 300, "only {compared} base times compared");
    // A base that is itself a fire: the next one is strictly later, as in systemd.
    let schedule = Schedule::parse("daily 09:00 Asia/Kolkata").expect("valid");
    let exact = utc("2026-06-01T03:30:00Z");
    assert_eq!(
        rein_elapses(&schedule, exact, 2),
        systemd_elapses(&schedule.on_calendar()[0], exact, 2)
    );
}

#[test]
fn a_resume_prompt_loop_reaches_the_agent_on_every_fire() {
    let rein = fleet(QUICK);
    let _down = Down(&rein);
    let out = rein.ok(&[
        "loop",
        "add",
        "echo",
        "--schedule",
        "every 2s",
        "--dispatch",
        "resume_prompt",
        "--prompt",
        "check the tracker",
        "--command",
        ECHO_AGENT,
    ]);
    assert!(out.contains("added loop echo"), "{out}");
    let units = units_of(&rein);
    assert!(
        units.contains(&format!("rein.{}.loop-echo.timer", rein.profile)),
        "{units:?}"
    );
    assert!(
        units.contains(&format!("rein.{}.worker-echo.service", rein.profile)),
        "{units:?}"
    );
    // Typed once at start (the agent got ready) and then at every fire.
    wait_until(
        Duration::from_secs(40),
        "the prompt to reach the agent 4 times",
        || heard(&rein, "echo", "heard:check the tracker") >= 4,
    );
    let view = loop_view(&rein, "echo");
    assert_eq!(view["state"], "running", "{view}");
    assert_eq!(view["dispatch"], "resume_prompt");
    assert_eq!(view["last_dispatch"]["ok"], true, "{view}");
    assert_eq!(view["last_dispatch"]["trigger"], "timer", "{view}");
    assert!(view["last_dispatch"]["fires"].as_u64() >= Some(3), "{view}");
    assert!(view["next_fire"].is_string(), "{view}");
    assert!(view["last_fire"].is_string(), "{view}");
    // A person and the judge steer it the same way, without attaching.
    rein.ok(&["worker", "tell", "echo", "stop and summarise"]);
    wait_until(Duration::from_secs(10), "tell to reach the agent", || {
        heard(&rein, "echo", "heard:stop and summarise") >= 1
    });
    let screen = rein.ok(&["worker", "screen", "echo"]);
    assert!(screen.contains("heard:stop and summarise"), "{screen}");
    let text = rein.ok(&["loop", "ls"]);
    assert!(text.contains("echo") && text.contains("every 2s"), "{text}");
}

#[test]
fn a_tick_script_runs_in_the_loops_directory_with_its_arguments() {
    let rein = fleet(QUICK);
    let _down = Down(&rein);
    let work = rein.temp.path().join("project");
    std::fs::create_dir_all(&work).expect("project dir");
    let script = rein.temp.path().join("tick.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"$(pwd) $1 $2 $REIN_LOOP\" >> ticks.log\necho ticked in $(pwd)\n",
    )
    .expect("script");
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&script).expect("meta").permissions(),
        0o755,
    );
    Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .expect("chmod");
    rein.ok(&[
        "loop",
        "add",
        "ticker",
        "--schedule",
        "every 2s",
        "--dispatch",
        "tick_script",
        "--tick-script",
        script.to_str().expect("utf-8"),
        "--tick-arg",
        "--since",
        "--tick-arg",
        "yesterday",
        "--dir",
        work.to_str().expect("utf-8"),
        "--command",
        "exec sleep 600",
    ]);
    let log = work.join("ticks.log");
    wait_until(Duration::from_secs(30), "two ticks", || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.lines().count() >= 2)
    });
    let text = std::fs::read_to_string(&log).expect("log");
    let canonical = work.canonicalize().expect("canonical");
    assert!(
        text.lines()
            .all(|line| line == format!("{} --since yesterday ticker", canonical.display())),
        "{text}"
    );
    let fired = rein.json(&["loop", "tick", "ticker"]);
    assert_eq!(fired["ok"], true, "{fired}");
    assert_eq!(fired["trigger"], "tick");
    assert!(
        fired["result"]
            .as_str()
            .expect("result")
            .contains("ticked in"),
        "{fired}"
    );
    assert!(rein
        .ok(&["journal"])
        .contains("loop-fire: loop ticker fired"));
}

#[test]
fn a_killed_session_comes_back_and_gets_its_prompt_again() {
    let rein = fleet(QUICK);
    let _down = Down(&rein);
    rein.ok(&[
        "loop",
        "add",
        "phoenix",
        "--schedule",
        "none",
        "--dispatch",
        "resume_prompt",
        "--prompt",
        "resume from NOTES.md",
        "--command",
        ECHO_AGENT,
    ]);
    assert!(
        !units_of(&rein).iter().any(|u| u.contains("loop-phoenix")),
        "schedule none has no timer"
    );
    wait_until(Duration::from_secs(20), "the first prompt", || {
        heard(&rein, "phoenix", "heard:resume from NOTES.md") >= 1
    });
    let pid = session_pid(&rein, "phoenix").expect("running");
    // SAFETY: killing the session's main process, as a crash would.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let killed = Instant::now();
    wait_until(Duration::from_secs(10), "the session to come back", || {
        session_pid(&rein, "phoenix").is_some_and(|new| new != pid)
    });
    let back = killed.elapsed();
    assert!(back < Duration::from_secs(5), "took {back:?}");
    wait_until(Duration::from_secs(20), "the prompt typed again", || {
        heard(&rein, "phoenix", "heard:resume from NOTES.md") >= 2
    });
    let view = loop_view(&rein, "phoenix");
    assert!(view["restarts"].as_u64() >= Some(1), "{view}");
    assert_eq!(view["state"], "running");
    // `loop tick` fires a `none` loop by hand.
    rein.ok(&["loop", "tick", "phoenix"]);
    wait_until(Duration::from_secs(20), "the prompt typed by tick", || {
        heard(&rein, "phoenix", "heard:resume from NOTES.md") >= 3
    });
}

#[test]
fn close_leaves_no_unit_reopen_and_up_bring_them_back() {
    let rein = fleet(&format!("{QUICK}[pulse]\ninterval = \"1h\"\n"));
    let _down = Down(&rein);
    rein.ok(&[
        "loop",
        "add",
        "nightly",
        "--schedule",
        "daily 03:00 Asia/Kolkata",
        "--dispatch",
        "none",
        "--command",
        "exec sleep 600",
        "--desktop",
        "2",
    ]);
    let view = loop_view(&rein, "nightly");
    assert_eq!(view["zone"], "Asia/Kolkata");
    let next: DateTime<Utc> = view["next_fire"]
        .as_str()
        .expect("next")
        .parse()
        .expect("time");
    assert_eq!(
        next.with_timezone(&chrono_tz::Asia::Kolkata)
            .format("%H:%M")
            .to_string(),
        "03:00"
    );
    assert!(
        view["next_fire_shown"]
            .as_str()
            .expect("shown")
            .contains("IST"),
        "{view}"
    );
    // The timer systemd made agrees with rein.
    let timer = format!("rein.{}.loop-nightly.timer", rein.profile);
    let shown = Command::new("systemctl")
        .args([
            "--user",
            "show",
            "-p",
            "NextElapseUSecRealtime",
            "--value",
            &timer,
        ])
        .env("TZ", "UTC")
        .output()
        .expect("systemctl show");
    // "Mon 2026-11-30 21:30:00 UTC"
    let stamp = stdout_of(&shown);
    let seconds = chrono::NaiveDateTime::parse_from_str(
        stamp
            .trim()
            .split_once(' ')
            .map_or("", |(_, rest)| rest)
            .trim_end_matches(" UTC"),
        "%Y-%m-%d %H:%M:%S",
    )
    .unwrap_or_else(|_| panic!("{stamp}"))
    .and_utc()
    .timestamp();
    assert_eq!(seconds, next.timestamp(), "systemd's next elapse is rein's");

    rein.ok(&["loop", "close", "nightly"]);
    assert!(
        !units_of(&rein).iter().any(|u| u.contains("nightly")),
        "{:?}",
        units_of(&rein)
    );
    assert_eq!(loop_view(&rein, "nightly")["state"], "closed");
    // `rein up` leaves a closed loop closed.
    rein.ok(&["up"]);
    assert!(!units_of(&rein).iter().any(|u| u.contains("nightly")));
    rein.ok(&["loop", "reopen", "nightly"]);
    assert_eq!(loop_view(&rein, "nightly")["state"], "running");
    assert!(units_of(&rein).contains(&timer));
    // Down removes every unit; up re-creates the session and the timer.
    rein.ok(&["down"]);
    assert!(units_of(&rein).is_empty(), "{:?}", units_of(&rein));
    let up = rein.json(&["up"]);
    assert_eq!(up["loop_timers"], serde_json::json!(["nightly"]), "{up}");
    assert_eq!(
        up["workers_restarted"],
        serde_json::json!(["nightly"]),
        "{up}"
    );
    assert!(units_of(&rein).contains(&timer));
    rein.ok(&["loop", "move", "nightly", "3"]);
    assert_eq!(loop_view(&rein, "nightly")["desktop"], 3);
    rein.ok(&["loop", "rm", "nightly"]);
    assert!(!units_of(&rein).iter().any(|u| u.contains("nightly")));
    assert!(loop_view(&rein, "nightly").is_null());
}

#[test]
fn bad_loops_exit_2_with_nothing_written_or_started() {
    let rein = fleet(QUICK);
    let _down = Down(&rein);
    std::fs::create_dir_all(&rein.data).expect("data dir");
    let before = tree(&rein.data);
    let cases: &[(&[&str], &str)] = &[
        (
            &["--schedule", "daily 09:00 Mars/Base", "--dispatch", "none"],
            "unknown time zone",
        ),
        (
            &["--schedule", "daily 24:30 UTC", "--dispatch", "none"],
            "is not a time",
        ),
        (
            &[
                "--schedule",
                "weekly Mon,Caturday 08:00 UTC",
                "--dispatch",
                "none",
            ],
            "\"Caturday\" is not a day",
        ),
        (
            &["--schedule", "*-*-* 99:00", "--dispatch", "none"],
            "systemd refuses it",
        ),
        (
            &["--schedule", "every 10m", "--dispatch", "resume_prompt"],
            "needs a prompt",
        ),
        (
            &["--schedule", "every 10m", "--dispatch", "tick_script"],
            "needs --tick-script",
        ),
        (
            &[
                "--schedule",
                "every 10m",
                "--dispatch",
                "none",
                "--command",
                "no-such-agent-q",
            ],
            "not on the worker's PATH",
        ),
    ];
    for (args, problem) in cases {
        let mut all = vec!["loop", "add", "bad", "--command", "exec sleep 600"];
        all.extend_from_slice(args);
        if args.contains(&"--command") {
            all.drain(3..5);
        }
        let output = rein.run(&all);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr_of(&output)
        );
        assert!(
            stderr_of(&output).contains(problem),
            "{args:?}: {}",
            stderr_of(&output)
        );
    }
    let output = rein.run(&[
        "loop",
        "add",
        "Bad Name",
        "--schedule",
        "none",
        "--dispatch",
        "none",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(tree(&rein.data), before, "nothing written");
    assert!(units_of(&rein).is_empty(), "nothing started");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn a_loopctl_workbench_imports_unchanged() {
    let home = tempfile::tempdir().expect("home");
    let bench = home.path().join("work/ops-bench");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loopctl"),
        &bench,
    );
    for dir in ["work/tracker", "work/reports", "work/shared", "bin"] {
        std::fs::create_dir_all(home.path().join(dir)).expect("dirs");
    }
    // A stand-in `claude` that echoes what it reads, so the sessions really run.
    let claude = home.path().join("bin/claude");
    std::fs::write(
        &claude,
        format!("#!/bin/sh\necho claude \"$@\"\n{ECHO_AGENT}\n"),
    )
    .expect("claude");
    Command::new("chmod")
        .arg("755")
        .arg(&claude)
        .status()
        .expect("chmod");
    let path = format!(
        "{}:{}",
        home.path().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let rein = fleet(QUICK)
        .env("HOME", home.path().to_str().expect("utf-8"))
        .env("PATH", &path);
    let _down = Down(&rein);
    let bench_arg = bench.to_str().expect("utf-8");

    let planned = rein.ok(&["loop", "import", "--dry-run", bench_arg]);
    assert_eq!(planned.matches("would import").count(), 3, "{planned}");
    assert!(units_of(&rein).is_empty(), "a dry run starts nothing");

    let report = rein.json(&["loop", "import", bench_arg]);
    assert_eq!(
        report["imported"].as_array().map(Vec::len),
        Some(3),
        "{report}"
    );
    let loops = rein.json(&["loop", "ls"]);
    let find = |name: &str| {
        loops
            .as_array()
            .expect("array")
            .iter()
            .find(|l| l["name"] == name)
            .cloned()
            .expect(name)
    };
    let tracker = find("tracker");
    assert_eq!(tracker["schedule"], "every 10m");
    assert_eq!(tracker["desktop"], 2);
    assert_eq!(tracker["dispatch"], "resume_prompt");
    let report_loop = find("daily-report");
    assert_eq!(report_loop["desktop"], 3);
    assert_eq!(report_loop["zone"], "America/Los_Angeles");
    let triage = find("triage");
    assert_eq!(triage["schedule"], "weekly Mon,Thu 08:00 Europe/Berlin");
    assert_eq!(triage["dispatch"], "tick_script");
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(rein.data.join("loops/daily-report.json")).expect("record"),
    )
    .expect("json");
    assert!(
        record["prompt"]
            .as_str()
            .expect("prompt")
            .starts_with("Write today's report"),
        "{record}"
    );
    assert_eq!(record["paste_settle_ms"], 400);
    let shared = home.path().join("work/shared");
    assert_eq!(
        record["session"]["command"],
        format!("claude --model opus --add-dir {}", shared.display())
    );
    let triage_record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(rein.data.join("loops/triage.json")).expect("record"),
    )
    .expect("json");
    assert_eq!(
        triage_record["tick_args"],
        serde_json::json!([
            "--since",
            format!("{}/work/tracker/.last-triage", home.path().display())
        ])
    );
    assert!(
        triage_record["imported_from"]
            .as_str()
            .expect("where")
            .ends_with("workbench.toml:28"),
        "{triage_record}"
    );
    // The tracker's session is the stand-in claude, with the workbench's arguments, and its
    // README prompt typed in.
    wait_until(
        Duration::from_secs(30),
        "the tracker's prompt in its session",
        || heard(&rein, "tracker", "heard:You are the tracker loop.") >= 1,
    );
    assert!(heard(&rein, "tracker", "claude --model sonnet") >= 1);
    // The tick script runs in the loop's dir with $HOME expanded in its arguments.
    let fired = rein.json(&["loop", "tick", "triage"]);
    assert_eq!(fired["ok"], true, "{fired}");
    let written =
        std::fs::read_to_string(home.path().join("work/tracker/TRIAGE.md")).expect("triage");
    assert_eq!(
        written,
        format!(
            "{}\n--since\n{}/work/tracker/.last-triage\n",
            home.path().join("work/tracker").display(),
            home.path().display()
        )
    );
    // Importing again skips what exists.
    let again = rein.json(&["loop", "import", bench_arg]);
    assert_eq!(
        again["skipped"].as_array().map(Vec::len),
        Some(3),
        "{again}"
    );
}

#[test]
fn what_cannot_be_mapped_is_refused_by_file_and_line() {
    let rein = fleet(QUICK);
    let bench = rein.temp.path().join("bench");
    std::fs::create_dir_all(&bench).expect("bench");
    std::fs::write(bench.join("README.md"), "### Only\nno block here\n").expect("readme");
    std::fs::write(
        bench.join("workbench.toml"),
        "schema_version = 1\n\n[[loops]]\nname = \"a\"\nschedule = \"daily 09:00 Nowhere/Land\"\ndispatch = \"none\"\n\n\
         [[loops]]\nname = \"b\"\nschedule = \"every 5m\"\nreadme_anchor = \"missing\"\n\n\
         [[loops]]\nname = \"c\"\nschedule = \"every 5m\"\nreadme_anchor = \"only\"\n\n\
         [[loops]]\nname = \"d\"\nschedule = \"every 5m\"\ndispatch = \"paste\"\n",
    )
    .expect("toml");
    let output = rein.run(&["loop", "import", bench.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    let said = stderr_of(&output);
    let file = bench.join("workbench.toml").display().to_string();
    assert!(
        said.contains(&format!(
            "{file}:5: schedule \"daily 09:00 Nowhere/Land\": unknown time zone"
        )),
        "{said}"
    );
    assert!(said.contains(&format!("{file}:11: no heading")), "{said}");
    assert!(
        said.contains(&format!("{file}:16: the heading #only at")),
        "{said}"
    );
    assert!(
        said.contains(&format!("{file}:21: dispatch \"paste\"")),
        "{said}"
    );
    assert!(!rein.data.join("loops").exists(), "nothing imported");
    std::fs::write(
        bench.join("workbench.toml"),
        "schema_version = 1\n[[loops]]\nname = \"x\"\nschedule = \"none\"\ncolour = \"red\"\n",
    )
    .expect("toml");
    let output = rein.run(&["loop", "import", bench.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains(&format!("{file}:5: unknown field `colour`")),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn a_loop_past_its_start_limit_is_failed_and_reported_once() {
    let rein = fleet(&format!(
        "{QUICK}[workers]\nstart_limit_burst = 3\nstart_limit_interval = \"1m\"\n"
    ));
    let _down = Down(&rein);
    rein.ok(&[
        "loop",
        "add",
        "crashy",
        "--schedule",
        "every 1h",
        "--dispatch",
        "none",
        "--command",
        "exit 1",
    ]);
    wait_until(Duration::from_secs(30), "the loop to fail", || {
        loop_view(&rein, "crashy")["state"] == "failed"
    });
    let tick = rein.json(&["tick"]);
    assert_eq!(
        tick["failed_workers"],
        serde_json::json!(["crashy"]),
        "{tick}"
    );
    assert!(rein
        .ok(&["journal"])
        .contains("loop crashy's session failed past its start limit"));
    let notes = std::fs::read_dir(rein.data.join("notes"))
        .expect("notes")
        .count();
    assert_eq!(notes, 1);
    assert_eq!(
        rein.json(&["tick"])["failed_workers"],
        serde_json::json!([])
    );
    // Closing it leaves no unit of it, failed or not.
    rein.ok(&["loop", "close", "crashy"]);
    assert!(
        !units_of(&rein).iter().any(|unit| unit.contains("crashy")),
        "{:?}",
        units_of(&rein)
    );
}
