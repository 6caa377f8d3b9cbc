//! The fleet under misuse and stubborn agents, against a real systemd user manager: beats
//! that run late or fail are reported as such, workers that ignore SIGTERM are stopped within
//! a bounded grace, `down` always finishes, failures after a restore are reported again, and
//! a profile runs under one user manager only.

mod support;

use std::time::Duration;

use support::user_manager::{self, PrivateManager};
use support::{stderr_of, wait_until, Down, Rein};

fn fleet(config: &str) -> Rein {
    user_manager::ensure();
    let rein = Rein::new();
    rein.write_config(config);
    rein
}

fn beat(rein: &Rein) -> serde_json::Value {
    rein.json(&["status"])["pulse"]["beat"].clone()
}

/// Item 8: a beat that is still running is not reported as a success, one that runs past the
/// interval is late, and a failed beat says so.
#[test]
fn status_says_when_a_beat_runs_late_or_failed() {
    let rein = fleet("[pulse]\ninterval = \"2s\"\n[sensors]\ntimeout = \"20s\"\n");
    let _down = Down(&rein);
    rein.ok(&["sensor", "write", "slow", "sleep 30"]);
    rein.ok(&["up"]);
    wait_until(Duration::from_secs(20), "a beat to run late", || {
        let beat = beat(&rein);
        beat["state"] == "running" && beat["late"] == true
    });
    let status = rein.ok(&["status"]);
    assert!(
        status.contains("running for") && status.contains("late"),
        "{status}"
    );
    assert!(!status.contains("succeeded"), "{status}");
    rein.ok(&["down"]);

    rein.ok(&["sensor", "rm", "slow"]);
    // A FIFO where the world record goes: every beat fails reading it (and says so).
    let world = rein.data.join("world.json");
    let _ = std::fs::remove_file(&world);
    let c_path = std::ffi::CString::new(world.to_str().expect("utf8")).expect("c path");
    // SAFETY: mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    rein.ok(&["up"]);
    wait_until(Duration::from_secs(20), "a beat to fail", || {
        beat(&rein)["state"] == "failed"
    });
    let status = rein.ok(&["status"]);
    assert!(status.contains("FAILED"), "{status}");
}

/// Item 17: `status` refuses a config with a misspelled section, like every other verb.
#[test]
fn status_checks_the_config() {
    let rein = fleet("[pulse]\ninterval = \"1h\"\n[sensor]\ntimeout = \"2s\"\n");
    let status = rein.run(&["status"]);
    assert_eq!(status.status.code(), Some(2), "{}", stderr_of(&status));
    assert!(
        stderr_of(&status).contains("sensor"),
        "{}",
        stderr_of(&status)
    );
}

fn worker(rein: &Rein, id: &str) -> serde_json::Value {
    rein.json(&["worker", "ls"])
        .as_array()
        .expect("array")
        .iter()
        .find(|w| w["id"] == id)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

fn journal_count(rein: &Rein, needle: &str) -> usize {
    rein.ok(&["journal", "-n", "1000"]).matches(needle).count()
}

/// Items 14 and 15: a worker brought back by `rein up` reports its next failure too, a
/// worker that exits on its own is reported once, and both wake `rein wait`, listed.
#[test]
fn a_restored_worker_reports_its_next_failure_and_wait_wakes() {
    let rein = fleet(
        "[pulse]\ninterval = \"1h\"\n[runner]\npreset = \"custom\"\ncommand = \"sleep 1; exit 1\"\n\
         [workers]\nrestart = \"no\"\n",
    );
    let _down = Down(&rein);
    rein.ok(&["worker", "start", "flaky", "fail soon"]);
    let token = rein.json(&["wait"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    wait_until(Duration::from_secs(20), "the worker to fail", || {
        worker(&rein, "flaky")["health"] == "failed"
    });
    assert_eq!(
        rein.json(&["tick"])["failed_workers"],
        serde_json::json!(["flaky"])
    );
    let woke = rein.json(&["wait", "--since", &token, "--timeout", "10s"]);
    let workers = &woke["woke"]["workers"];
    assert_eq!(workers[0]["id"], "flaky", "{woke}");
    assert_eq!(workers[0]["health"], "failed", "{woke}");

    rein.ok(&["down"]);
    let up = rein.json(&["up"]);
    assert_eq!(
        up["workers_restarted"],
        serde_json::json!(["flaky"]),
        "{up}"
    );
    wait_until(
        Duration::from_secs(20),
        "the restored worker to fail",
        || worker(&rein, "flaky")["health"] == "failed",
    );
    wait_until(
        Duration::from_secs(20),
        "its failure to be reported again",
        || {
            let _ = rein.run(&["tick"]);
            journal_count(&rein, "worker-failed: worker flaky failed") >= 2
        },
    );

    rein.ok(&[
        "worker",
        "start",
        "done",
        "--command",
        "sleep 1; exit 0",
        "finish",
    ]);
    let token = rein.json(&["wait"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    // A worker that finished has no unit left; with the pulse up, a beat reports it.
    wait_until(Duration::from_secs(20), "the worker to exit", || {
        matches!(
            worker(&rein, "done")["health"].as_str(),
            Some("exited" | "stopped")
        )
    });
    rein.ok(&["tick"]);
    rein.ok(&["tick"]);
    assert_eq!(journal_count(&rein, "worker-exited: worker done exited"), 1);
    let woke = rein.json(&["wait", "--since", &token, "--timeout", "10s"]);
    let exited: Vec<&serde_json::Value> = woke["woke"]["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter(|w| w["id"] == "done")
        .collect();
    assert_eq!(exited.len(), 1, "{woke}");
    assert_eq!(exited[0]["health"], "exited", "{woke}");
}

/// Item 16: `rein up` (run at every login) does not re-seed what the user archived or
/// removed; it seeds only a data dir that was never seeded.
#[test]
fn up_does_not_reseed() {
    let rein = fleet("[pulse]\ninterval = \"1h\"\n");
    let _down = Down(&rein);
    let first = rein.json(&["up"]);
    assert!(
        first["seeded"].as_array().expect("seeded").len() >= 3,
        "an empty data dir is seeded: {first}"
    );
    rein.ok(&["goal", "archive", "setup"]);
    rein.ok(&["sensor", "rm", "today"]);
    let again = rein.json(&["up"]);
    assert_eq!(again["seeded"], serde_json::json!([]), "{again}");
    assert!(!rein.data.join("goals/setup.md").exists());
    assert!(!rein.data.join("sensors/today.sh").exists());
}

/// An agent that ignores SIGTERM, SIGHUP and SIGINT.
const STUBBORN: &str = "trap \\\"\\\" TERM HUP INT; while :; do sleep 0.2; done";

fn units_of(rein: &Rein) -> Vec<String> {
    let mut command = std::process::Command::new("systemctl");
    command.args([
        "--user",
        "list-units",
        "--all",
        "--plain",
        "--no-legend",
        &format!("rein.{}.*", rein.profile),
    ]);
    for (key, value) in &rein.extra_env {
        command.env(key, value);
    }
    let output = command.output().expect("systemctl");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Item 9: a worker that ignores SIGTERM is stopped within its grace (then SIGKILL), `down`
/// stops every worker at once and leaves no unit, and running it again is harmless.
#[test]
fn stubborn_workers_stop_within_their_grace_and_down_stops_them_at_once() {
    let rein = fleet(&format!(
        "[runner]\npreset = \"custom\"\ncommand = \"{STUBBORN}\"\n[workers]\nstop_timeout = \"2s\"\n"
    ));
    let _down = Down(&rein);
    for id in ["s1", "s2", "s3", "s4"] {
        rein.ok(&["worker", "start", id, "ignore SIGTERM"]);
    }
    let started = std::time::Instant::now();
    rein.ok(&["worker", "kill", "s1"]);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "kill took {:?}",
        started.elapsed()
    );
    assert!(!units_of(&rein).iter().any(|u| u.contains("worker-s1")));

    let started = std::time::Instant::now();
    let down = rein.json(&["down"]);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "three stubborn workers with a 2 s grace took {took:?} to stop"
    );
    assert_eq!(
        down["stopped"].as_array().expect("stopped").len(),
        5,
        "{down}"
    );
    assert!(units_of(&rein).is_empty(), "{:?}", units_of(&rein));
    let again = rein.json(&["down"]);
    assert_eq!(again["stopped"], serde_json::json!([]), "{again}");
}

/// Item 9: a unit that carries a longer stop timeout than the configured grace (started
/// before the config changed) is SIGKILLed by rein after the grace.
#[test]
fn a_unit_with_a_longer_stop_timeout_is_killed_after_the_grace() {
    let stubborn = format!("[runner]\npreset = \"custom\"\ncommand = \"{STUBBORN}\"\n");
    let rein = fleet(&format!("{stubborn}[workers]\nstop_timeout = \"90s\"\n"));
    let _down = Down(&rein);
    rein.ok(&["worker", "start", "w1", "ignore SIGTERM"]);
    rein.write_config(&format!("{stubborn}[workers]\nstop_timeout = \"1s\"\n"));
    let started = std::time::Instant::now();
    rein.ok(&["worker", "kill", "w1"]);
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "kill took {:?}",
        started.elapsed()
    );
    assert!(units_of(&rein).iter().all(|u| !u.contains("worker-w1")));
}

/// Item 9, the cause of "D-Bus error … failed to read from socket": the bus daemon went
/// away while rein waited on a long stop job (here it is killed; on a shared container it
/// was another manager stopping a bus in the same cgroup). rein now carries the stop on over
/// a fresh connection, and the worker is stopped and reported as such.
#[test]
fn a_bus_that_breaks_during_a_stop_does_not_fail_it() {
    let second = PrivateManager::start();
    let rein = fleet(&format!(
        "[runner]\npreset = \"custom\"\ncommand = \"{STUBBORN}\"\n[workers]\nstop_timeout = \"3s\"\n"
    ))
    .on(&second);
    let _down = Down(&rein);
    rein.ok(&["worker", "start", "w1", "ignore SIGTERM"]);
    let bus = second.bus_pid().expect("the second manager's bus daemon");
    let killer = rein.spawn(&["worker", "kill", "w1"]);
    std::thread::sleep(Duration::from_millis(800));
    // SAFETY: kill(2) of the bus daemon of the manager this test started.
    assert_eq!(unsafe { libc::kill(bus, libc::SIGKILL) }, 0);
    let out = support::wait_child(killer, Duration::from_secs(30), "rein worker kill");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(
        units_of(&rein).iter().all(|u| !u.contains("worker-w1")),
        "{:?}",
        units_of(&rein)
    );
}

/// Item 20: a second user manager on the same data dir is refused while the first runs the
/// profile, and may take over once the first is down.
#[test]
fn a_profile_runs_under_one_user_manager_at_a_time() {
    let second = PrivateManager::start();
    let rein = fleet(
        "[pulse]\ninterval = \"1h\"\n[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n",
    );
    let _down = Down(&rein);
    rein.ok(&["up"]);
    rein.ok(&["worker", "start", "w1", "work"]);
    let in_second = |args: &[&str]| {
        rein.command(args)
            .envs(second.exports())
            .output()
            .expect("rein")
    };
    for args in [&["up"][..], &["worker", "start", "w2", "more work"][..]] {
        let refused = in_second(args);
        assert_eq!(
            refused.status.code(),
            Some(5),
            "{args:?}: {}",
            stderr_of(&refused)
        );
        assert!(
            stderr_of(&refused).contains("already runs under another systemd user manager"),
            "{}",
            stderr_of(&refused)
        );
    }
    assert!(
        rein.json(&["worker", "ls"])
            .as_array()
            .expect("workers")
            .iter()
            .any(|w| w["id"] == "w1" && w["health"] == "running"),
        "the first manager's worker is undisturbed"
    );
    rein.ok(&["down"]);
    let taken = in_second(&["up"]);
    assert_eq!(taken.status.code(), Some(0), "{}", stderr_of(&taken));
    let down = in_second(&["down"]);
    assert_eq!(down.status.code(), Some(0), "{}", stderr_of(&down));
}
