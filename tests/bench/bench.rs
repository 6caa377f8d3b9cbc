//! rein's benchmark program. Not a test: it measures and prints figures for README.
//!
//! `cargo bench --bench rein -- [SECTION...] [--rounds N]`; sections: `mailbox` (default),
//! `systemd`, `bridges`.
//! - ask → answer wake: a blocked `rein ask` process, the answer written by this process;
//!   time from the start of the answer write to the asker printing the answer.
//! - wait wake: a blocked `rein wait --since` process; time from writing a changed
//!   `world.json` to the waiter printing the state.
//! - idle wakeups: context switches of a blocked `rein ask` / `rein wait` over 5 s.
//! - systemd (needs a user manager; started with contrib/user-session.sh if none answers):
//!   `rein worker start` from command to unit active over 50 starts, `rein worker ls --json`
//!   with 100 live workers, and rein processes alive half-way between beats.
//! - bridges: from an ask file landing to the bridge engine calling the channel's send, with
//!   the real engine and inotify and a channel that only records the time; then with 100,
//!   1,000 and 10,000 asks already sent and pending in the ledger: that latency, and the
//!   engine thread's CPU for each new ask.
//! - tui (needs a user manager): `rein tui` in a pseudo-terminal this program reads, with
//!   10, 100 and 500 live workers: spawn to the first frame, to the fleet read from systemd,
//!   redraw after an event (an ask filed by this process until its prompt reaches the
//!   terminal; a worker's agent killed until its restart reaches the terminal), and the
//!   screen's context switches over 5 s idle.
//! - agents (needs `contrib/agents.sh install`): for each real CLI run as a rein worker
//!   against the scripted model server, `rein worker start` to the agent's first model
//!   request, and the worker unit's MemoryCurrent once the agent idles at its prompt.
//! - scale (needs a user manager): 100 and 1,000 live workers (start, `worker ls`, `tick`,
//!   `state`, kill), and 1,000 / 10,000 pending asks beside 10,000 / 100,000 archived ones
//!   (file, answer, `asks`, a `rein wait` woken by a new ask: latency and the waiter's CPU).
//! - fleet: the worker half of `scale` alone.
//! - asks: the mailbox half of `scale` alone.
//! - memory (needs a user manager, `script` and `tmux`): 10 rein workers whose agent is
//!   `sleep`, each unit's memory as the kernel charges it, beside the same agent alone in a
//!   unit, under `script`, and as tmux sessions (what each session past the first adds).
//! - loops (needs a user manager): a fire (`systemctl --user start` of the loop's dispatch
//!   unit, timed from outside) to the prompt read by the agent in the session; a session's
//!   main process killed to its agent running again, and to its resume prompt read again;
//!   50 idle loops: rein processes, their context switches over a window between fires, and
//!   each session's memory.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rein::mailbox::{AnswerOutcome, Mailbox};
use rein::store::DataDir;

const REIN: &str = env!("CARGO_BIN_EXE_rein");

#[path = "../support/mod.rs"]
mod support;

struct Profile {
    _temp: tempfile::TempDir,
    data: std::path::PathBuf,
    config: std::path::PathBuf,
}

impl Profile {
    fn new() -> Profile {
        let temp = tempfile::tempdir().expect("tempdir");
        let data = temp.path().join("data");
        let config = temp.path().join("config.toml");
        Profile {
            _temp: temp,
            data,
            config,
        }
    }

    /// A profile whose config file holds `config`.
    fn with_config(config: &str) -> Profile {
        let profile = Profile::new();
        std::fs::write(&profile.config, config).expect("config");
        profile
    }

    /// What `rein ARGS` prints on stdout, as JSON (null when it prints none).
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let output = Command::new(REIN)
            .args(args)
            .env("REIN_DATA_DIR", &self.data)
            .env("REIN_CONFIG", &self.config)
            .output()
            .expect("run rein");
        serde_json::from_slice(&output.stdout).unwrap_or_default()
    }

    /// The token that `rein wait --json` with `args` prints (at once, given no token).
    fn token(&self, args: &[&str]) -> String {
        let mut all = vec!["wait", "--json"];
        all.extend_from_slice(args);
        self.json(&all)["token"]
            .as_str()
            .expect("a token")
            .to_owned()
    }

    fn spawn(&self, args: &[&str]) -> Child {
        Command::new(REIN)
            .args(args)
            .env("REIN_DATA_DIR", &self.data)
            .env("REIN_CONFIG", &self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rein")
    }
}

/// Waits (bounded) until `pid` sleeps in poll(2) on inotify and stays there: its wait channel
/// is poll(2)'s (not epoll's, which the D-Bus connect before it uses) and its context switches
/// do not move for 50 ms.
fn wait_blocked(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        if wchan.starts_with("poll_schedule_timeout") || wchan.starts_with("do_sys_poll") {
            let before = context_switches(pid);
            std::thread::sleep(Duration::from_millis(50));
            if context_switches(pid) == before {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} never blocked (wchan {wchan:?})"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn context_switches(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches")
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().expect("samples"))
    );
}

/// Returns (wake latencies, durations of the answer write itself).
fn ask_answer_latency(rounds: usize) -> (Vec<Duration>, Vec<Duration>) {
    let profile = Profile::new();
    let mailbox = Mailbox::new(DataDir::new(&profile.data));
    let mut samples = Vec::with_capacity(rounds);
    let mut writes = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let prompt = format!("question {round}");
        let mut asker = profile.spawn(&["ask", "--worker", "bench", "--prompt", &prompt]);
        wait_blocked(asker.id());
        let id = mailbox.pending().expect("pending").records[0]
            .ask
            .id
            .clone();
        let mut stdout = BufReader::new(asker.stdout.take().expect("stdout"));
        let started = Instant::now();
        let outcome = mailbox.answer(&id, "yes", "cli:bench").expect("answer");
        writes.push(started.elapsed());
        assert!(matches!(outcome, AnswerOutcome::Accepted(_)));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read answer");
        samples.push(started.elapsed());
        assert_eq!(line, "yes\n");
        asker.wait().expect("reap");
    }
    (samples, writes)
}

/// `answer=$(rein ask …)` as a shell sees it: from the `rein answer` process having exited
/// (waitpid) to the asker's stdout closing and the asker's process exiting — what command
/// substitution waits for. Returns (to the answer printed, to the asker exited).
fn shell_round_trip(rounds: usize) -> (Vec<Duration>, Vec<Duration>) {
    let profile = Profile::new();
    let mailbox = Mailbox::new(DataDir::new(&profile.data));
    let mut printed = Vec::with_capacity(rounds);
    let mut exited = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let prompt = format!("shell question {round}");
        let mut asker = profile.spawn(&["ask", "--worker", "bench", "--prompt", &prompt]);
        wait_blocked(asker.id());
        let id = mailbox.pending().expect("pending").records[0]
            .ask
            .id
            .clone();
        let mut stdout = asker.stdout.take().expect("stdout");
        let answered = Command::new(REIN)
            .args(["answer", &id, "yes"])
            .env("REIN_DATA_DIR", &profile.data)
            .env("REIN_CONFIG", &profile.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("rein answer");
        let started = Instant::now();
        assert!(answered.success(), "rein answer: {answered}");
        let mut first = [0u8; 1];
        stdout.read_exact(&mut first).expect("read answer");
        printed.push(started.elapsed());
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest).expect("read to EOF");
        let status = asker.wait().expect("reap");
        exited.push(started.elapsed());
        assert!(status.success(), "rein ask: {status}");
        assert_eq!([&first[..], &rest[..]].concat(), b"yes\n");
    }
    (printed, exited)
}

fn write_world(data: &Path, hash: &str) {
    let world = serde_json::json!({
        "version": 1, "hash": hash, "taken": chrono::Utc::now(), "changed": chrono::Utc::now(), "sensors": []
    });
    rein::store::write_json(&data.join("world.json"), &world).expect("write world");
}

fn wait_latency(rounds: usize) -> Vec<Duration> {
    let profile = Profile::new();
    std::fs::create_dir_all(&profile.data).expect("data dir");
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        write_world(&profile.data, &format!("{:016x}", round * 2));
        let token = format!("v1.0.{:016x}", round * 2);
        let mut waiter = profile.spawn(&["wait", "--since", &token, "--json"]);
        wait_blocked(waiter.id());
        let started = Instant::now();
        write_world(&profile.data, &format!("{:016x}", round * 2 + 1));
        let mut stdout = waiter.stdout.take().expect("stdout");
        let mut first = [0u8; 1];
        stdout.read_exact(&mut first).expect("read state");
        samples.push(started.elapsed());
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        waiter.wait().expect("reap");
    }
    samples
}

fn idle_wakeups(args: &[&str], window: Duration) -> (u64, Duration) {
    let profile = Profile::new();
    let mut child = profile.spawn(args);
    wait_blocked(child.id());
    let before = context_switches(child.id());
    std::thread::sleep(window);
    let after = context_switches(child.id());
    child.kill().expect("kill");
    child.wait().expect("reap");
    (after - before, window)
}

fn mailbox_section(rounds: usize, window: Duration) {
    println!(
        "## mailbox ({} cores)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("| measurement | rounds | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    let (wakes, writes) = ask_answer_latency(rounds);
    report(
        "ask → answer wake (answer written by another process)",
        wakes,
    );
    report(
        "  of which: the answer write itself (fsync, link, dir fsync)",
        writes,
    );
    let (printed, exited) = shell_round_trip(rounds);
    report(
        "`answer=$(rein ask …)`: `rein answer` exited → the answer printed",
        printed,
    );
    report(
        "`answer=$(rein ask …)`: `rein answer` exited → stdout closed and `rein ask` exited",
        exited,
    );
    report(
        "`rein wait` wake after a world change",
        wait_latency(rounds),
    );
    println!();
    let (ask_switches, window) = idle_wakeups(&["ask", "--prompt", "idle?"], window);
    let (wait_switches, _) = idle_wakeups(&["wait", "--since", "v1.0.none"], window);
    println!(
        "| blocked process | context switches in {}s |",
        window.as_secs()
    );
    println!("|---|---|");
    println!("| `rein ask` | {ask_switches} |");
    println!("| `rein wait` | {wait_switches} |");
    println!();
}

/// Makes a systemd user manager reachable for the systemd section: the caller's, or one
/// started with contrib/user-session.sh (as the tests do).
fn ensure_user_manager() {
    let reachable = Command::new("systemctl")
        .args(["--user", "show-environment"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if reachable {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/user-session.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg("start")
        .output()
        .expect("user-session.sh");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if let Some((key, value)) = line.trim_start_matches("export ").split_once('=') {
            std::env::set_var(key, value.trim_matches(['\'', '"']));
        }
    }
}

fn timed(profile: &Profile, args: &[&str]) -> Duration {
    let started = Instant::now();
    let output = Command::new(REIN)
        .args(args)
        .env("REIN_DATA_DIR", &profile.data)
        .env("REIN_CONFIG", &profile.config)
        .stdin(Stdio::null())
        .output()
        .expect("run rein");
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "rein {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    took
}

/// Pids of running processes for which `keep` holds.
fn pids_where(keep: impl Fn(u32) -> bool) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| keep(*pid))
        .collect()
}

/// Pids of running processes whose executable is the rein binary.
fn rein_processes() -> Vec<u32> {
    let target = std::fs::canonicalize(REIN).expect("rein path");
    pids_where(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == target))
}

fn systemd_section(starts: usize, listed: usize) {
    ensure_user_manager();
    let profile = Profile::with_config(
        "[pulse]\ninterval = \"2s\"\n[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n",
    );
    println!("## systemd\n");
    println!("| measurement | rounds | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    let mut start_times = Vec::new();
    for n in 0..starts {
        start_times.push(timed(
            &profile,
            &["worker", "start", &format!("s{n}"), "bench"],
        ));
    }
    report("`rein worker start` (command to unit active)", start_times);
    for n in starts..listed.max(starts) {
        timed(&profile, &["worker", "start", &format!("s{n}"), "bench"]);
    }
    let mut list_times = Vec::new();
    for _ in 0..20 {
        list_times.push(timed(&profile, &["worker", "ls", "--json"]));
    }
    report(
        &format!(
            "`rein worker ls --json` with {} live workers",
            listed.max(starts)
        ),
        list_times,
    );
    for n in 0..listed.max(starts) {
        timed(&profile, &["worker", "kill", &format!("s{n}")]);
    }
    // Between beats nothing of rein runs: look half-way between beats, several times.
    timed(&profile, &["up"]);
    let pulse = profile.data.join("pulse.json");
    let beat_of = || -> u64 {
        std::fs::read_to_string(&pulse)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["beat"].as_u64())
            .unwrap_or(0)
    };
    let mut looks = 0;
    let mut alive = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = beat_of();
    while looks < 10 && Instant::now() < deadline {
        let beat = beat_of();
        if beat != last {
            last = beat;
            std::thread::sleep(Duration::from_secs(1));
            looks += 1;
            alive += rein_processes().len();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    timed(&profile, &["down"]);
    println!();
    println!("| between beats (2s pulse), looked {looks} times half-way | rein processes alive |");
    println!("|---|---|");
    println!("| total over all looks | {alive} |");
    println!();
}

/// CPU time (ns) every thread of `pid` has run, from the scheduler's own accounting.
fn cpu_ns_of(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Pids of processes whose command name is `comm`.
fn pids_named(comm: &str) -> Vec<u32> {
    pids_where(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
    })
}

fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_name = &stat[stat.rfind(')').expect("stat has a name") + 2..];
    after_name
        .split_whitespace()
        .nth(1)
        .and_then(|ppid| ppid.parse().ok())
        .expect("ppid")
}

/// CPU (µs) used by every process ever in the cgroup `slice` of the unified hierarchy.
fn slice_cpu_us(slice: &str) -> u64 {
    let roots = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"];
    for root in roots {
        if let Ok(stat) = std::fs::read_to_string(format!("{root}/{slice}/cpu.stat")) {
            return stat
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

/// The pulse with 5 sensors and an unchanged world: CPU per beat of every process involved
/// (the beat and its sensors, the user manager, journald, the bus), and how far apart beats
/// really come.
fn beat_section(beats: u64) {
    ensure_user_manager();
    let profile = Profile::with_config(
        "[pulse]\ninterval = \"1s\"\n[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n",
    );
    timed(&profile, &["init"]);
    for n in 0..5 {
        timed(
            &profile,
            &[
                "sensor",
                "write",
                &format!("s{n}"),
                &format!("echo '{{\"n\": {n}}}'"),
            ],
        );
    }
    // The user manager is the parent of every unit's main process.
    timed(&profile, &["worker", "start", "probe", "bench"]);
    let listed = profile.json(&["worker", "ls", "--json"]);
    let host = listed[0]["pid"].as_u64().expect("the probe's pid") as u32;
    let manager = parent_of(host);
    timed(&profile, &["worker", "kill", "probe"]);
    let others: Vec<u32> = ["systemd-journal", "dbus-daemon", "dbus-broker"]
        .iter()
        .flat_map(|comm| pids_named(comm))
        .collect();
    let slice = std::fs::read_to_string(format!("/proc/{host}/cgroup"))
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        })
        .unwrap_or_else(|| "/app.slice/x".to_owned());
    let slice = Path::new(&slice)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let pulse = profile.data.join("pulse.json");
    let beat_at = || -> Option<(u64, chrono::DateTime<chrono::Utc>)> {
        let text = std::fs::read_to_string(&pulse).ok()?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some((value["beat"].as_u64()?, value["at"].as_str()?.parse().ok()?))
    };
    let next_beat = |after: u64| -> (u64, chrono::DateTime<chrono::Utc>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((beat, at)) = beat_at().filter(|(beat, _)| *beat > after) {
                return (beat, at);
            }
            assert!(
                Instant::now() < deadline,
                "no beat after {after} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    timed(&profile, &["up"]);
    // The first beats sense a new world; measure from the third on.
    let (mut last, _) = next_beat(2);
    // Half-way between beats nothing runs: read the counters there.
    std::thread::sleep(Duration::from_millis(500));
    let counters = || {
        (
            slice_cpu_us(&slice) * 1000,
            cpu_ns_of(manager),
            others.iter().map(|pid| cpu_ns_of(*pid)).sum::<u64>(),
        )
    };
    let before = counters();
    let first = last;
    let mut stamps = Vec::new();
    while last < first + beats {
        let (beat, at) = next_beat(last);
        last = beat;
        stamps.push(at);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = counters();
    timed(&profile, &["down"]);
    let counted = (last - first) as f64;
    let per_beat = |before: u64, after: u64| (after - before) as f64 / counted / 1e6;
    let beat_ms = per_beat(before.0, after.0);
    let manager_ms = per_beat(before.1, after.1);
    let others_ms = per_beat(before.2, after.2);
    let gaps: Vec<Duration> = stamps
        .windows(2)
        .filter_map(|w| (w[1] - w[0]).to_std().ok())
        .collect();
    println!("## beat\n");
    println!("| a 1 s pulse, 5 sensors, unchanged world, over {counted} beats | CPU per beat |");
    println!("|---|---|");
    println!("| the beat's slice: `rein tick`, its sensors, systemd's set-up of the unit | {beat_ms:.2} ms |");
    println!("| the user manager | {manager_ms:.2} ms |");
    println!("| journald and the bus | {others_ms:.2} ms |");
    println!("| all | {:.2} ms |", beat_ms + manager_ms + others_ms);
    println!();
    println!("| measurement | rounds | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    report(
        "time between beats (`at` of consecutive beats), 1 s pulse",
        gaps,
    );
    println!();
}

/// A channel that only reports when the engine calls it: the network is excluded.
struct Stopwatch(std::sync::mpsc::Sender<Instant>);

impl rein::bridge::Channel for Stopwatch {
    async fn post_ask(
        &mut self,
        ask: &rein::mailbox::Ask,
        route: &str,
        _resent: bool,
    ) -> Result<rein::bridge::PostRef, rein::bridge::SendError> {
        let _ = self.0.send(Instant::now());
        Ok(rein::bridge::PostRef {
            route: route.to_owned(),
            id: ask.id.clone(),
        })
    }
    async fn post_note(
        &mut self,
        note: &rein::notes::Note,
        route: &str,
        _resent: bool,
    ) -> Result<rein::bridge::PostRef, rein::bridge::SendError> {
        Ok(rein::bridge::PostRef {
            route: route.to_owned(),
            id: note.id.clone(),
        })
    }
    async fn resolved(
        &mut self,
        _: &rein::mailbox::Ask,
        _: &rein::mailbox::Resolution,
        _: &rein::bridge::PostRef,
    ) -> Result<(), rein::bridge::SendError> {
        Ok(())
    }
    async fn reply(
        &mut self,
        _: &rein::bridge::Inbound,
        _: &str,
    ) -> Result<(), rein::bridge::SendError> {
        Ok(())
    }
    async fn test(&mut self, _: &str) -> Result<String, rein::bridge::SendError> {
        Ok(String::new())
    }
}

/// A bridge engine with the [`Stopwatch`] channel, running on a thread of its own.
struct BenchBridge {
    sent: std::sync::mpsc::Receiver<Instant>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl BenchBridge {
    fn start(data: &DataDir, rate_per_minute: u32) -> BenchBridge {
        let settings = rein::bridge::config::BridgeSettings {
            name: "bench".into(),
            allow: vec!["bench:me".into()],
            routes: vec!["room".into()],
            worker_routes: Default::default(),
            rate_per_minute,
            notes: false,
            secret_file: None,
            credential: None,
            channel: Default::default(),
        };
        let (sent_tx, sent) = std::sync::mpsc::channel();
        let engine = rein::bridge::engine::Engine::new(Stopwatch(sent_tx), settings, data.clone())
            .expect("engine");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let (_inbound_tx, inbound_rx) = tokio::sync::mpsc::channel(1);
            runtime.block_on(rein::bridge::engine::run(engine, inbound_rx, async {
                let _ = stop_rx.await;
            }))
        });
        BenchBridge { sent, stop, thread }
    }

    /// When the engine next called the channel's send.
    fn sent(&self, within: Duration) -> Instant {
        self.sent.recv_timeout(within).expect("the bridge sent")
    }

    fn stop(self) {
        let _ = self.stop.send(());
        self.thread.join().expect("bridge thread").expect("engine");
    }
}

fn bridges_section(rounds: usize, ledger_sizes: &[usize]) {
    let profile = Profile::new();
    let data = DataDir::new(&profile.data);
    data.create_dirs().expect("data dir");
    let bridge = BenchBridge::start(&data, 10_000);
    let mailbox = Mailbox::new(data);
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let started = Instant::now();
        let (ask, _) = mailbox
            .file(&rein::mailbox::NewAsk {
                worker: "w1".into(),
                prompt: format!("q{round}"),
                reference: None,
                options: vec![],
            })
            .expect("file");
        let sent = bridge.sent(Duration::from_secs(10));
        samples.push(sent.duration_since(started));
        // Steady state: the ask is answered and delivered, so the mailbox stays small.
        mailbox.answer(&ask.id, "ok", "bench:me").expect("answer");
        mailbox.deliver(&ask.id).expect("deliver");
    }
    bridge.stop();
    println!("## bridges\n");
    println!("| measurement | rounds | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    report(
        "ask file landing → the bridge's send call (network excluded)",
        samples,
    );
    println!();
    println!("| ledger entries (asks sent, pending) | rounds | engine CPU per new ask p50 | p99 | ask file landing → send call p50 | p99 |");
    println!("|---|---|---|---|---|---|");
    for &size in ledger_sizes {
        bridge_ledger_row(size, rounds.min(20));
    }
    println!();
}

/// The CPU time a thread has used so far, read from another thread.
fn thread_cpu(clock: libc::clockid_t) -> Duration {
    // SAFETY: zeroed timespec is a valid value for clock_gettime to fill.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `clock` is the CPU clock of a thread that is still running (it is joined later).
    let done = unsafe { libc::clock_gettime(clock, &mut now) };
    assert_eq!(done, 0, "clock_gettime");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Waits (bounded) until a thread has used no CPU for 50 ms; returns its CPU time then.
fn thread_settled(clock: libc::clockid_t) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = thread_cpu(clock);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        let now = thread_cpu(clock);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_millis(50) {
            return now;
        }
    }
    panic!("the bridge thread did not go idle within 60 s");
}

/// One row of the ledger-size table: a bridge whose ledger holds `size` asks sent and still
/// pending (each with its ask in the mailbox); then `rounds` times, one more ask is filed,
/// and the engine thread's CPU from before the filing until it is idle again is measured
/// with the latency to its send call. Each ask is then answered and archived, so the ledger
/// stays at `size`.
fn bridge_ledger_row(size: usize, rounds: usize) {
    use rein::bridge::ledger::{Entry, Kind, Ledger, Stage};
    use std::os::unix::thread::JoinHandleExt;
    let profile = Profile::new();
    populate_mailbox(&profile.data, size, 0);
    let data = DataDir::new(&profile.data);
    data.create_dirs().expect("data dir");
    let ledger = Ledger::open(&data, "bench").expect("ledger");
    for n in 0..size {
        let id = bench_id(n);
        let mut entry = Entry::new(Kind::Ask, &id, "room");
        entry.stage = Stage::Sent;
        entry.attempts = 1;
        entry.post = Some(rein::bridge::PostRef {
            route: "room".into(),
            id,
        });
        ledger.put(&entry).expect("ledger entry");
    }
    let bridge = BenchBridge::start(&data, 100_000);
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the thread is alive until joined below, so its pthread_t is valid.
    let found = unsafe { libc::pthread_getcpuclockid(bridge.thread.as_pthread_t(), &mut clock) };
    assert_eq!(found, 0, "pthread_getcpuclockid");
    let mailbox = Mailbox::new(data);
    let mut cpu = Vec::with_capacity(rounds);
    let mut latency = Vec::with_capacity(rounds);
    for round in 0..rounds {
        // The start-up sync (or the last round's answer) is done.
        let before = thread_settled(clock);
        let started = Instant::now();
        let (ask, _) = mailbox
            .file(&rein::mailbox::NewAsk {
                worker: "w1".into(),
                prompt: format!("one more {round}"),
                reference: None,
                options: vec![],
            })
            .expect("file");
        let sent = bridge.sent(Duration::from_secs(30));
        latency.push(sent.duration_since(started));
        cpu.push(thread_settled(clock) - before);
        mailbox.answer(&ask.id, "ok", "bench:me").expect("answer");
        mailbox.deliver(&ask.id).expect("deliver");
    }
    bridge.stop();
    cpu.sort();
    latency.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {size} | {rounds} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
        ms(percentile(&cpu, 0.5)),
        ms(percentile(&cpu, 0.99)),
        ms(percentile(&latency, 0.5)),
        ms(percentile(&latency, 0.99)),
    );
}

/// Reads a unit property with `systemctl --user show`.
fn unit_property(unit: &str, property: &str) -> String {
    let output = Command::new("systemctl")
        .args(["--user", "show", unit, "-p", property, "--value"])
        .output()
        .expect("systemctl show");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// What a unit's processes hold as the kernel charges it, in KiB: on cgroup v1 the memory
/// controller's `rss` + `cache` + kernel memory (its `usage_in_bytes`, which systemd reports
/// as MemoryCurrent, also counts pages a CPU charged ahead and is documented as fuzzy); on
/// cgroup v2 `memory.current`.
fn unit_memory_kib(unit: &str) -> Option<u64> {
    let cgroup = unit_property(unit, "ControlGroup");
    let cgroup = cgroup.trim_start_matches('/');
    if cgroup.is_empty() {
        return None;
    }
    let number = |path: std::path::PathBuf| -> Option<u64> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    };
    let v1 = Path::new("/sys/fs/cgroup/memory").join(cgroup);
    if v1.is_dir() {
        let stat = std::fs::read_to_string(v1.join("memory.stat")).ok()?;
        let field = |name: &str| -> Option<u64> {
            stat.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        };
        let kernel = number(v1.join("memory.kmem.usage_in_bytes"))?;
        return Some((field("rss")? + field("cache")? + kernel) / 1024);
    }
    Some(
        number(
            Path::new("/sys/fs/cgroup")
                .join(cgroup)
                .join("memory.current"),
        )? / 1024,
    )
}

/// Starts `command` as a transient user service named `unit`.
fn run_unit(unit: &str, command: &[&str]) {
    let status = Command::new("systemd-run")
        .args(["--user", "--quiet", "--collect", "--unit", unit])
        .args(command)
        .status()
        .expect("systemd-run");
    assert!(status.success(), "systemd-run {unit}");
}

fn stop_units(units: &[String]) {
    let _ = Command::new("systemctl")
        .args(["--user", "stop"])
        .args(units)
        .status();
}

/// Memory per agent: `count` rein workers whose agent is `sleep`, beside the same agent alone
/// in a unit, under `script` (util-linux's PTY host, a small C program), and in tmux sessions
/// (one server: what each session past the first adds). Each figure is a unit's memory as the
/// kernel charges it ([`unit_memory_kib`]), read once the units have settled.
fn memory_section(count: usize) {
    ensure_user_manager();
    const SETTLE: Duration = Duration::from_secs(8);
    let median = |mut values: Vec<u64>| -> String {
        values.sort_unstable();
        match values.get(values.len() / 2) {
            Some(median) => format!("{median} KiB ({}–{})", values[0], values[values.len() - 1]),
            None => "not reported (no memory accounting here)".to_owned(),
        }
    };
    println!("## memory\n");
    println!("| {count} of each, agent `sleep` | memory per agent, median (min–max) |");
    println!("|---|---|");

    let profile =
        Profile::with_config("[runner]\npreset = \"custom\"\ncommand = \"exec sleep 100000\"\n");
    for n in 0..count {
        timed(&profile, &["worker", "start", &format!("m{n}"), "bench"]);
    }
    std::thread::sleep(SETTLE);
    let name = profile_name(&profile);
    let workers: Vec<u64> = (0..count)
        .filter_map(|n| unit_memory_kib(&format!("rein.{name}.worker-m{n}.service")))
        .collect();
    for n in 0..count {
        timed(&profile, &["worker", "kill", &format!("m{n}")]);
    }
    // Starting a worker also started the profile's gate: nothing of it outlives the section.
    let _ = timed_code(&profile, &["down"]);
    println!(
        "| a rein worker (the PTY host and the agent) | {} |",
        median(workers)
    );

    let tag = std::process::id();
    let mut units = Vec::new();
    for n in 0..count {
        let alone = format!("rein-bench-memory-{tag}-alone-{n}.service");
        run_unit(&alone, &["/bin/sh", "-c", "exec sleep 100000"]);
        let script = format!("rein-bench-memory-{tag}-script-{n}.service");
        run_unit(
            &script,
            &[
                "script",
                "--quiet",
                "--command",
                "exec sleep 100000",
                "/dev/null",
            ],
        );
        units.push(alone);
        units.push(script);
    }
    std::thread::sleep(SETTLE);
    let of = |kind: &str| -> Vec<u64> {
        units
            .iter()
            .filter(|unit| unit.contains(&format!("-{kind}-")))
            .filter_map(|unit| unit_memory_kib(unit))
            .collect()
    };
    println!("| the agent alone in a unit | {} |", median(of("alone")));
    println!(
        "| the agent under `script` (util-linux, a PTY host in C) | {} |",
        median(of("script"))
    );
    stop_units(&units);

    // tmux: one server in its own unit, in the foreground (-D); its growth per session.
    let server = format!("rein-bench-memory-{tag}-tmux.service");
    let socket = format!("rein-bench-memory-{tag}");
    run_unit(&server, &["tmux", "-L", &socket, "-f", "/dev/null", "-D"]);
    // A client that came before the unit's server is listening would start a server of its
    // own outside the unit (and the unit's tmux, finding it, would exit as a client).
    let tmux_dir = std::env::var("TMUX_TMPDIR").unwrap_or_else(|_| "/tmp".to_owned());
    // SAFETY: geteuid has no preconditions.
    let listening = Path::new(&tmux_dir)
        .join(format!("tmux-{}", unsafe { libc::geteuid() }))
        .join(&socket);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listening.exists() {
        assert!(Instant::now() < deadline, "tmux's server made no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let tmux = |args: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(Instant::now() < deadline, "tmux {args:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    tmux(&["new-session", "-d", "-s", "first", "exec sleep 100000"]);
    std::thread::sleep(SETTLE);
    let one = unit_memory_kib(&server);
    for n in 0..count {
        tmux(&[
            "new-session",
            "-d",
            "-s",
            &format!("s{n}"),
            "exec sleep 100000",
        ]);
    }
    std::thread::sleep(SETTLE);
    let all = unit_memory_kib(&server);
    stop_units(std::slice::from_ref(&server));
    match one.zip(all) {
        Some((one, all)) => println!(
            "| a tmux session past the first (one server for all) | {} KiB (the server with one session: {one} KiB) |",
            all.saturating_sub(one) / count as u64
        ),
        None => println!("| a tmux session | not reported (no memory accounting here) |"),
    }
    println!();
}

fn agents_section(rounds: usize) {
    use support::agents::{profile, Cli};
    use support::model_server::{ModelServer, Script};
    ensure_user_manager();
    println!("## agents\n");
    println!("| agent CLI (a rein worker) | rounds | start → first model request p50 | max | unit MemoryCurrent idle, p50 |");
    println!("|---|---|---|---|---|");
    for cli in [Cli::Claude, Cli::Codex, Cli::Opencode, Cli::Pi] {
        let mut firsts = Vec::new();
        let mut memory = Vec::new();
        for round in 0..rounds {
            let server = ModelServer::start(Script::new().text("ready"));
            let rein = profile(cli, &server, false);
            let work = rein.temp.path().join("project");
            std::fs::create_dir_all(&work).expect("project");
            let started = Instant::now();
            let output = rein.run(&[
                "worker",
                "start",
                "w1",
                "Say ready.",
                "--dir",
                work.to_str().expect("utf-8"),
            ]);
            assert!(
                output.status.success(),
                "{}: {}",
                cli.name(),
                String::from_utf8_lossy(&output.stderr)
            );
            server
                .wait_until(Duration::from_secs(120), |seen| !seen.requests.is_empty())
                .unwrap_or_else(|_| panic!("{} never reached the model", cli.name()));
            firsts.push(started.elapsed());
            // Idle at its prompt: the turn is over and nothing more arrives for 3 s.
            let _ = server.wait_until(Duration::from_secs(120), |seen| {
                seen.main_requests().count() >= 1
            });
            let mut count = server.requests().len();
            loop {
                std::thread::sleep(Duration::from_secs(3));
                let now = server.requests().len();
                if now == count {
                    break;
                }
                count = now;
            }
            let unit = format!("rein.{}.worker-w1.service", rein.profile);
            if let Ok(bytes) = unit_property(&unit, "MemoryCurrent").parse::<u64>() {
                memory.push(bytes);
            }
            let _ = rein.run(&["down"]);
            eprintln!("agents: {} round {} done", cli.name(), round + 1);
        }
        firsts.sort();
        memory.sort_unstable();
        let mib = |bytes: u64| format!("{:.0} MiB", bytes as f64 / 1048576.0);
        println!(
            "| {} | {} | {:.2} s | {:.2} s | {} |",
            cli.name(),
            firsts.len(),
            percentile(&firsts, 0.5).as_secs_f64(),
            firsts.last().copied().unwrap_or_default().as_secs_f64(),
            memory
                .get(memory.len() / 2)
                .map(|m| mib(*m))
                .unwrap_or_else(|| "-".into())
        );
    }
    println!();
}

/// Nanoseconds since the epoch on each line of `path` (what the bench agent writes).
fn stamps(path: &Path) -> Vec<u128> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

/// Waits (bounded) until `path` has more than `count` stamps; returns the newest.
fn next_stamp(path: &Path, count: usize) -> u128 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = stamps(path);
        if all.len() > count {
            return *all.last().expect("a stamp");
        }
        assert!(
            Instant::now() < deadline,
            "no new stamp in {}",
            path.display()
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn profile_env(profile: &Profile, name: &str) -> String {
    let _ = profile;
    format!("rein.{name}")
}

fn loops_section(fires: usize, kills: usize, idle: usize, window: Duration) {
    ensure_user_manager();
    // Sessions are killed over and over here: lift the start limit that would mark them failed.
    let profile =
        Profile::with_config("[pulse]\ninterval = \"1h\"\n[workers]\nstart_limit_burst = 10000\n");
    let name = format!("bench{}", std::process::id());
    let work = profile.data.parent().expect("temp").join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    let run = |args: &[&str]| -> Duration {
        let started = Instant::now();
        let output = Command::new(REIN)
            .args(args)
            .env("REIN_DATA_DIR", &profile.data)
            .env("REIN_CONFIG", &profile.config)
            .env("REIN_PROFILE", &name)
            .stdin(Stdio::null())
            .output()
            .expect("run rein");
        assert!(
            output.status.success(),
            "rein {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        started.elapsed()
    };
    // The agent stamps when it starts and each time it reads a line.
    // Newlines, not `;`: systemd 252 writes `;` in a transient unit's ExecStart as `\;`, which
    // a daemon-reload (any other user of the manager) reads back wrongly.
    let agent = "date +%s%N >> started\nprintf '\\033[?2004h> '\nwhile IFS= read -r line\ndo date +%s%N >> reads\ndone";
    run(&[
        "loop",
        "add",
        "echo",
        "--schedule",
        "every 1h",
        "--dispatch",
        "resume_prompt",
        "--prompt",
        "bench tick",
        "--settle",
        "5ms",
        "--command",
        agent,
        "--dir",
        work.to_str().expect("utf-8"),
    ]);
    let reads = work.join("reads");
    let started = work.join("started");
    next_stamp(&reads, 0); // the prompt typed at start
    println!("## loops\n");
    println!("| measurement | rounds | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    let unit = format!("{}.loop-echo.service", profile_env(&profile, &name));
    let mut latencies = Vec::new();
    for _ in 0..fires {
        // Between real fires the agent is idle; a fire waits for `loops.ready_quiet` of quiet.
        std::thread::sleep(Duration::from_secs(1));
        let before = stamps(&reads).len();
        let at = now_ns();
        let status = Command::new("systemctl")
            .args(["--user", "start", &unit])
            .status()
            .expect("systemctl");
        assert!(status.success());
        let read = next_stamp(&reads, before);
        latencies.push(Duration::from_nanos((read.saturating_sub(at)) as u64));
    }
    report(
        "fire (`systemctl --user start` of the dispatch unit) → prompt read by the idle agent (settle 5 ms)",
        latencies,
    );
    let pid_of = || -> u32 {
        let output = Command::new("systemctl")
            .args([
                "--user",
                "show",
                "-p",
                "MainPID",
                "--value",
                &format!("rein.{name}.worker-echo.service"),
            ])
            .output()
            .expect("systemctl");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let mut back = Vec::new();
    let mut repasted = Vec::new();
    for _ in 0..kills {
        let (starts, read) = (stamps(&started).len(), stamps(&reads).len());
        let pid = pid_of();
        let at = now_ns();
        // SAFETY: killing the session's main process, as a crash would.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        back.push(Duration::from_nanos(
            (next_stamp(&started, starts) - at) as u64,
        ));
        repasted.push(Duration::from_nanos((next_stamp(&reads, read) - at) as u64));
    }
    report(
        "session killed (SIGKILL) → agent running again (restart_sec 1s)",
        back,
    );
    report(
        "session killed → resume prompt read again (+ ready_quiet 800 ms)",
        repasted,
    );
    run(&["loop", "rm", "echo"]);

    // Idle loops: only the PTY hosts run, asleep.
    for n in 0..idle {
        run(&[
            "loop",
            "add",
            &format!("idle{n}"),
            "--schedule",
            "every 1h",
            "--dispatch",
            "resume_prompt",
            "--prompt",
            "resume",
            "--command",
            "exec sleep 100000",
        ]);
    }
    // Each host types its prompt once its agent is quiet; then nothing more happens.
    std::thread::sleep(Duration::from_secs(3));
    let pids = rein_processes();
    let before: u64 = pids.iter().map(|pid| context_switches(*pid)).sum();
    std::thread::sleep(window);
    let after: u64 = pids.iter().map(|pid| context_switches(*pid)).sum();
    let rss: Vec<u64> = pids
        .iter()
        .filter_map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()?
                .lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .collect();
    let mut memory: Vec<u64> = (0..idle)
        .filter_map(|n| {
            let output = Command::new("systemctl")
                .args([
                    "--user",
                    "show",
                    "-p",
                    "MemoryCurrent",
                    "--value",
                    &format!("rein.{name}.worker-idle{n}.service"),
                ])
                .output()
                .ok()?;
            String::from_utf8_lossy(&output.stdout).trim().parse().ok()
        })
        .collect();
    memory.sort_unstable();
    let mut rss_sorted = rss.clone();
    rss_sorted.sort_unstable();
    println!();
    println!("| {idle} idle loops (every 1h), over {window:?} between fires | value |");
    println!("|---|---|");
    println!("| rein processes alive (all PTY hosts) | {} |", pids.len());
    println!(
        "| their context switches in the window | {} |",
        after - before
    );
    if let Some(median) = rss_sorted.get(rss_sorted.len() / 2) {
        println!("| PTY host resident memory, median | {median} KiB |");
    }
    match memory.get(memory.len() / 2) {
        Some(median) => println!(
            "| session MemoryCurrent (host + agent), median | {} KiB |",
            median / 1024
        ),
        None => println!("| session MemoryCurrent | not reported (no memory accounting here) |"),
    }
    println!();
    run(&["down"]);
    for n in 0..idle {
        run(&["loop", "rm", &format!("idle{n}")]);
    }
}

/// The screen a terminal shows, as a terminal emulator (vt100) made it from the output,
/// and when the output that made it arrived.
#[derive(Default)]
struct Shown {
    text: String,
    at: Option<Instant>,
    chunks: u64,
}

/// `rein tui` on a pseudo-terminal whose output a thread renders as a terminal would.
struct PtyScreen {
    child: Child,
    shown: std::sync::Arc<std::sync::Mutex<Shown>>,
    _master: std::fs::File,
}

impl PtyScreen {
    fn spawn(profile: &Profile, cols: u16, rows: u16) -> PtyScreen {
        use std::os::fd::FromRawFd;
        use std::os::unix::process::CommandExt;
        let mut master = 0;
        let mut slave = 0;
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty fills two descriptors; the size is read only.
        let opened = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(opened, 0, "openpty");
        // SAFETY: both descriptors were just opened and are owned here.
        let (master, slave) = unsafe {
            (
                std::fs::File::from_raw_fd(master),
                std::fs::File::from_raw_fd(slave),
            )
        };
        let mut command = Command::new(REIN);
        command
            .arg("tui")
            .env("REIN_DATA_DIR", &profile.data)
            .env("REIN_CONFIG", &profile.config)
            .env("TERM", "xterm-256color")
            .stdin(slave.try_clone().expect("slave"))
            .stdout(slave.try_clone().expect("slave"))
            .stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe; the child gets a session of its own.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            })
        };
        let child = command.spawn().expect("spawn rein tui");
        drop(slave);
        let shown = std::sync::Arc::new(std::sync::Mutex::new(Shown::default()));
        let mut reader = master.try_clone().expect("master");
        let sink = shown.clone();
        std::thread::spawn(move || {
            let size = |n: u16| std::num::NonZeroU16::new(n).unwrap_or(std::num::NonZeroU16::MIN);
            let mut parser = vt100::Parser::new(size(rows), size(cols), 0);
            let mut buffer = [0u8; 65536];
            while let Ok(n @ 1..) = reader.read(&mut buffer) {
                let at = Instant::now();
                parser.process(&buffer[..n]);
                let text = parser.screen().contents();
                let mut shown = sink.lock().expect("lock");
                shown.text = text;
                shown.at = Some(at);
                shown.chunks += 1;
            }
        });
        PtyScreen {
            child,
            shown,
            _master: master,
        }
    }

    /// Waits until the screen shows `text`; returns when the output that drew it arrived.
    fn wait_for(&self, text: &str) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            {
                let shown = self.shown.lock().expect("lock");
                if shown.text.contains(text) {
                    return shown.at.expect("output arrived");
                }
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {text:?}"
            );
            std::thread::yield_now();
        }
    }

    /// Waits until the screen no longer shows `text`.
    fn wait_gone(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.shown.lock().expect("lock").text.contains(text) {
            assert!(Instant::now() < deadline, "the screen kept {text:?}");
            std::thread::yield_now();
        }
    }

    /// Context switches of every thread of the screen's process.
    fn context_switches(&self) -> u64 {
        let pid = self.child.id();
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks
                    .flatten()
                    .map(|task| context_switches_of(&task.path().join("status")))
                    .sum()
            })
            .unwrap_or(0)
    }
}

impl Drop for PtyScreen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn context_switches_of(status: &Path) -> u64 {
    std::fs::read_to_string(status)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches")
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

fn tui_section(fleets: &[usize], rounds: usize, window: Duration) {
    ensure_user_manager();
    println!("## tui\n");
    println!("| workers | first frame | fleet read | redraw after an ask p50 | p99 | filing the ask p50 | p99 | shown after filing returned p50 | p99 | redraw after a kill p50 | p99 | idle context switches in {}s |", window.as_secs());
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &count in fleets {
        let profile = Profile::with_config(
            "[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n[workers]\nrestart_sec = \"1s\"\n",
        );
        for n in 0..count {
            timed(&profile, &["worker", "start", &format!("s{n:03}"), "bench"]);
        }
        let mut firsts = Vec::new();
        let mut fleet_reads = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let screen = PtyScreen::spawn(&profile, 120, 40);
            firsts.push(screen.wait_for("q quit") - started);
            fleet_reads.push(screen.wait_for("running") - started);
        }
        let screen = PtyScreen::spawn(&profile, 120, 40);
        screen.wait_for("running");
        std::thread::sleep(Duration::from_millis(500));
        let mailbox = Mailbox::new(DataDir::new(&profile.data));
        let mut asks = Vec::new();
        let mut filings = Vec::new();
        let mut after_filing = Vec::new();
        for round in 0..rounds {
            let prompt = format!("bench-question-{round:04}");
            let started = Instant::now();
            let (ask, _) = mailbox
                .file(&rein::mailbox::NewAsk {
                    worker: "s000".into(),
                    prompt: prompt.clone(),
                    reference: None,
                    options: vec![],
                })
                .expect("file");
            // Filing is durable (fsync) before it returns; the screen may show it sooner.
            let filed = Instant::now();
            filings.push(filed - started);
            let shown = screen.wait_for(&prompt);
            asks.push(shown - started);
            after_filing.push(shown.saturating_duration_since(filed));
            mailbox.answer(&ask.id, "ok", "cli:bench").expect("answer");
            mailbox.deliver(&ask.id).expect("deliver");
            screen.wait_gone(&prompt);
        }
        let mut kills = Vec::new();
        // Each worker once, so the event line looked for is new on the screen.
        for round in 0..rounds.min(20).min(count) {
            let id = format!("s{round:03}");
            let pid = unit_property(
                &format!("rein.{}.worker-{id}.service", profile_name(&profile)),
                "MainPID",
            )
            .parse::<i32>()
            .unwrap_or(0);
            if pid == 0 {
                continue;
            }
            let started = Instant::now();
            // SAFETY: signalling the bench's own worker's PTY host.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // Any change of its row in the events area: the kill reached the screen.
            let restarting = format!("{id}: running → ");
            kills.push(screen.wait_for(&restarting) - started);
            let unit = format!("rein.{}.worker-{id}.service", profile_name(&profile));
            let deadline = Instant::now() + Duration::from_secs(30);
            while unit_property(&unit, "SubState") != "running" {
                assert!(Instant::now() < deadline, "{unit} did not come back");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        let before = screen.context_switches();
        std::thread::sleep(window);
        let idle = screen.context_switches() - before;
        drop(screen);
        let _ = timed(&profile, &["down"]);
        firsts.sort();
        fleet_reads.sort();
        asks.sort();
        filings.sort();
        after_filing.sort();
        kills.sort();
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {count} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {idle} |",
            ms(percentile(&firsts, 0.5)),
            ms(percentile(&fleet_reads, 0.5)),
            ms(percentile(&asks, 0.5)),
            ms(percentile(&asks, 0.99)),
            ms(percentile(&filings, 0.5)),
            ms(percentile(&filings, 0.99)),
            ms(percentile(&after_filing, 0.5)),
            ms(percentile(&after_filing, 0.99)),
            ms(percentile(&kills, 0.5)),
            ms(percentile(&kills, 0.99)),
        );
    }
    println!();
}

/// Runs `rein ARGS` to its end, timed from outside; returns the time and the exit code.
fn timed_code(profile: &Profile, args: &[&str]) -> (Duration, i32) {
    let started = Instant::now();
    let output = Command::new(REIN)
        .args(args)
        .env("REIN_DATA_DIR", &profile.data)
        .env("REIN_CONFIG", &profile.config)
        .stdin(Stdio::null())
        .output()
        .expect("run rein");
    (started.elapsed(), output.status.code().unwrap_or(-1))
}

/// Six characters from the id alphabet, distinct for distinct `n`.
fn bench_id(n: usize) -> String {
    const ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
    let mut n = n;
    (0..6)
        .map(|_| {
            let c = ALPHABET[n % ALPHABET.len()] as char;
            n /= ALPHABET.len();
            c
        })
        .collect()
}

/// A data dir holding `pending` asks and `archived` answered-and-delivered ones, written as
/// the mailbox writes them (set-up only: plain writes, no fsync).
fn populate_mailbox(data: &Path, pending: usize, archived: usize) {
    let asks = data.join("asks");
    let answers = data.join("answers");
    let archive = data.join("archive/asks");
    for dir in [&asks, &answers, &archive] {
        std::fs::create_dir_all(dir).expect("mailbox dirs");
    }
    let now = chrono::Utc::now();
    let record = |n: usize| {
        serde_json::json!({
            "version": 1, "id": bench_id(n), "seq": n as u64 + 1, "worker": "bench",
            "prompt": format!("question {n}"), "options": ["yes", "no"], "created": now,
            "key": format!("{n:064x}"),
        })
    };
    for n in 0..archived {
        let id = bench_id(n);
        let resolution = serde_json::json!({
            "version": 1, "ask": id, "kind": "answered", "text": "yes", "by": "cli:bench", "at": now,
        });
        std::fs::write(archive.join(format!("{id}.json")), record(n).to_string()).expect("ask");
        std::fs::write(answers.join(format!("{id}.json")), resolution.to_string()).expect("answer");
    }
    for n in archived..archived + pending {
        let id = bench_id(n);
        std::fs::write(asks.join(format!("{id}.json")), record(n).to_string()).expect("ask");
    }
    std::fs::write(asks.join(".sequence"), format!("{}\n", archived + pending)).expect("sequence");
    // The key index, as the mailbox keeps it (a data dir without one builds it at its first
    // ask, once).
    let keys = asks.join(".keys");
    std::fs::create_dir_all(&keys).expect("keys");
    for n in 0..archived + pending {
        std::fs::write(keys.join(format!("{n:064x}")), format!("{}\n", bench_id(n))).expect("key");
    }
    std::fs::write(keys.join(".complete"), "1\n").expect("complete");
}

/// CPU (user + system) of a child that has exited, reaped with wait4.
fn reap_cpu(child: Child) -> Duration {
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own, not yet reaped child.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Fleet size and mailbox history: the same operations at 10× the size, timed from outside.
fn scale_section(fleets: &[usize], mailboxes: &[(usize, usize)], rounds: usize) {
    println!("## scale\n");
    fleet_scale(fleets, rounds);
    mailbox_scale(mailboxes, rounds);
}

/// Starting, listing, ticking and killing many live workers.
fn fleet_scale(fleets: &[usize], rounds: usize) {
    ensure_user_manager();
    println!("| live workers | `worker start` p50 (all started in) | `worker ls --json` p50 / p99 | `tick` p50 / p99 | `state --json` p50 / p99 | `worker kill` p50 (all killed in) |");
    println!("|---|---|---|---|---|---|");
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    let p = |mut v: Vec<Duration>| {
        v.sort();
        (percentile(&v, 0.5), percentile(&v, 0.99))
    };
    for &count in fleets {
        let profile =
            Profile::with_config("[runner]\npreset = \"custom\"\ncommand = \"exec sleep 3600\"\n");
        let all = Instant::now();
        let mut starts = Vec::new();
        for n in 0..count {
            starts.push(timed(
                &profile,
                &["worker", "start", &format!("s{n:04}"), "bench"],
            ));
        }
        let started_all = all.elapsed();
        let measure = |args: &[&str]| {
            let samples: Vec<Duration> = (0..rounds).map(|_| timed(&profile, args)).collect();
            p(samples)
        };
        let ls = measure(&["worker", "ls", "--json"]);
        let tick = measure(&["tick"]);
        let state = measure(&["state", "--json"]);
        let all = Instant::now();
        let mut kills = Vec::new();
        for n in 0..count {
            kills.push(timed(&profile, &["worker", "kill", &format!("s{n:04}")]));
        }
        let killed_all = all.elapsed();
        let _ = timed_code(&profile, &["down"]);
        println!(
            "| {count} | {} ({:.1} s) | {} / {} | {} / {} | {} / {} | {} ({:.1} s) |",
            ms(p(starts).0),
            started_all.as_secs_f64(),
            ms(ls.0),
            ms(ls.1),
            ms(tick.0),
            ms(tick.1),
            ms(state.0),
            ms(state.1),
            ms(p(kills).0),
            killed_all.as_secs_f64(),
        );
    }
    println!();
}

/// Filing, answering, listing and a woken `rein wait` beside many pending and archived asks.
fn mailbox_scale(mailboxes: &[(usize, usize)], rounds: usize) {
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    let p = |mut v: Vec<Duration>| {
        v.sort();
        (percentile(&v, 0.5), percentile(&v, 0.99))
    };
    println!("| pending / archived asks | file (`rein ask --timeout 1ms`) p50 / p99 | `rein answer` p50 / p99 | `rein asks --json` p50 | `rein wait` woken by a new ask: latency p50 / p99 | its CPU p50 | a blocked `rein wait`: CPU per quiet beat |");
    println!("|---|---|---|---|---|---|---|");
    for &(pending, archived) in mailboxes {
        let profile = Profile::new();
        populate_mailbox(&profile.data, pending, archived);
        let mut files = Vec::new();
        for round in 0..rounds {
            let prompt = format!("new question {round}");
            let (took, code) = timed_code(
                &profile,
                &[
                    "ask",
                    "--worker",
                    "bench",
                    "--prompt",
                    &prompt,
                    "--timeout",
                    "1ms",
                ],
            );
            assert_eq!(code, 3, "rein ask --timeout 1ms");
            files.push(took);
        }
        let mut answers = Vec::new();
        for round in 0..rounds {
            let id = bench_id(archived + round);
            answers.push(timed(&profile, &["answer", &id, "yes"]));
        }
        let listing: Vec<Duration> = (0..rounds.min(5))
            .map(|_| timed(&profile, &["asks", "--json"]))
            .collect();
        let mailbox = Mailbox::new(DataDir::new(&profile.data));
        let mut wakes = Vec::new();
        let mut cpus = Vec::new();
        for round in 0..rounds {
            let token = profile.token(&["--only-asks"]);
            let mut waiter = profile.spawn(&["wait", "--since", &token, "--only-asks", "--json"]);
            wait_blocked(waiter.id());
            let started = Instant::now();
            mailbox
                .file(&rein::mailbox::NewAsk {
                    worker: "bench".into(),
                    prompt: format!("wake {round}"),
                    reference: None,
                    options: vec![],
                })
                .expect("file");
            let mut stdout = waiter.stdout.take().expect("stdout");
            let mut first = [0u8; 1];
            stdout.read_exact(&mut first).expect("read");
            wakes.push(started.elapsed());
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
            cpus.push(reap_cpu(waiter));
        }
        // A waiter for anything (not only asks) beside beats that find the world unchanged:
        // its CPU over QUIET_BEATS beats, from the kernel's own accounting.
        const QUIET_BEATS: u32 = 10;
        timed(
            &profile,
            &["sensor", "write", "constant", "echo '{\"n\": 1}'"],
        );
        timed(&profile, &["tick"]);
        let token = profile.token(&[]);
        let mut waiter = profile.spawn(&["wait", "--since", &token, "--json"]);
        wait_blocked(waiter.id());
        let before = cpu_ns_of(waiter.id());
        for _ in 0..QUIET_BEATS {
            timed(&profile, &["tick"]);
        }
        let quiet =
            Duration::from_nanos((cpu_ns_of(waiter.id()) - before) / u64::from(QUIET_BEATS));
        let _ = waiter.kill();
        let _ = waiter.wait();
        let (file50, file99) = p(files);
        let (answer50, answer99) = p(answers);
        let (wake50, wake99) = p(wakes);
        println!(
            "| {pending} / {archived} | {} / {} | {} / {} | {} | {} / {} | {} | {:.3} ms |",
            ms(file50),
            ms(file99),
            ms(answer50),
            ms(answer99),
            ms(p(listing).0),
            ms(wake50),
            ms(wake99),
            ms(p(cpus).0),
            quiet.as_secs_f64() * 1000.0,
        );
    }
    println!();
}

/// The profile name rein derives from a data dir (as `rein status --json` reports it).
fn profile_name(profile: &Profile) -> String {
    profile.json(&["status", "--json"])["profile"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and then this program
    // runs as a quick smoke check of itself.
    let benching = std::env::args().any(|a| a == "--bench");
    let mut rounds = if benching { 200 } else { 5 };
    let window = Duration::from_secs(if benching { 5 } else { 1 });
    let mut sections = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--rounds N")
            }
            "--bench" => {}
            other => sections.push(other.to_owned()),
        }
    }
    if sections.is_empty() {
        sections.push("mailbox".to_owned());
    }
    for section in sections {
        match section.as_str() {
            "mailbox" => mailbox_section(rounds, window),
            "bridges" => bridges_section(
                rounds,
                if benching {
                    &[100, 1_000, 10_000]
                } else {
                    &[10]
                },
            ),
            "agents" => agents_section(if benching { 5 } else { 1 }),
            "tui" => tui_section(
                if benching { &[10, 100, 500] } else { &[3] },
                if benching { 100 } else { 3 },
                window,
            ),
            "beat" => beat_section(if benching { 60 } else { 3 }),
            "memory" => memory_section(if benching { 10 } else { 2 }),
            "systemd" => systemd_section(
                if benching { 50 } else { 3 },
                if benching { 100 } else { 3 },
            ),
            "scale" => scale_section(
                if benching { &[100, 1000] } else { &[3] },
                if benching {
                    &[(1_000, 10_000), (10_000, 100_000)]
                } else {
                    &[(3, 10)]
                },
                if benching { 20 } else { 2 },
            ),
            // The worker half of `scale` alone.
            "fleet" => fleet_scale(
                if benching { &[100, 1000] } else { &[3] },
                if benching { 20 } else { 2 },
            ),
            // The mailbox half of `scale` alone.
            "asks" => mailbox_scale(
                if benching {
                    &[(1_000, 10_000), (10_000, 100_000)]
                } else {
                    &[(3, 10)]
                },
                if benching { 20 } else { 2 },
            ),
            "loops" => loops_section(
                if benching { 50 } else { 3 },
                if benching { 20 } else { 2 },
                if benching { 50 } else { 3 },
                window * 2,
            ),
            other => {
                eprintln!(
                    "unknown section {other:?}; known: mailbox, systemd, beat, memory, bridges, agents, loops, tui, scale, fleet, asks"
                );
                std::process::exit(2);
            }
        }
    }
}
