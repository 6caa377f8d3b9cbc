//! rein's benchmark program. Not a test: it measures and prints figures for README.
//!
//! `cargo bench --bench rein -- [SECTION...] [--rounds N]`; sections: `mailbox` (default).
//! - ask → answer wake: a blocked `rein ask` process, the answer written by this process;
//!   time from the start of the answer write to the asker printing the answer.
//! - wait wake: a blocked `rein wait --since` process; time from writing a changed
//!   `world.json` to the waiter printing the state.
//! - idle wakeups: context switches of a blocked `rein ask` / `rein wait` over 5 s.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rein::mailbox::{AnswerOutcome, Mailbox};
use rein::store::DataDir;

const REIN: &str = env!("CARGO_BIN_EXE_rein");

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

/// Waits (bounded) until `pid` sleeps in poll(2), i.e. it is blocked on inotify.
fn wait_blocked(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        if wchan.contains("poll") {
            return;
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
            other => {
                eprintln!("unknown section {other:?}; known: mailbox");
                std::process::exit(2);
            }
        }
    }
}
