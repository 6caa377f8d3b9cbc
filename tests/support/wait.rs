//! Waiting in tests: the one set of helpers every test binary uses (the root crate's tests
//! through `support`, the bridge crates' through `#[path]`). Each polls its condition with a
//! growing pause and fails the test, naming what it waited for, past a deadline: no test
//! waits with a bare sleep, and none waits forever.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

const FIRST_PAUSE: Duration = Duration::from_millis(2);
const LONGEST_PAUSE: Duration = Duration::from_millis(100);

/// Polls `condition` until true, failing the test with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    let mut pause = FIRST_PAUSE;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// [`wait_until`] for async code, with a condition that is itself async.
pub async fn wait_until_async<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = FIRST_PAUSE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// [`wait_until_async`] for a check that yields a value once it holds: returns that value.
pub async fn wait_for_async<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = FIRST_PAUSE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// [`wait_until`] for async code with a plain condition (cheap file reads, say).
pub async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    wait_until_async(limit, what, || std::future::ready(condition())).await
}

/// The voluntary context switches of a process's main thread.
pub fn switches(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Waits until process `pid` is blocked: its main thread sleeps and did not run between two
/// looks 100 ms apart. A check that a process "still runs" is worth something only then, not
/// right after a sleep of a guessed length.
pub fn settled(pid: u32, what: &str) {
    let mut last = None;
    wait_until(Duration::from_secs(10), what, || {
        std::thread::sleep(Duration::from_millis(100));
        let now = switches(pid);
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let after = &stat[stat.rfind(')')? + 1..];
                after.split_whitespace().next().map(str::to_owned)
            });
        let asleep = state.as_deref() == Some("S");
        let same = now.is_some() && std::mem::replace(&mut last, now) == now;
        asleep && same
    });
}

/// Waits until process `pid` is blocked in poll(2) (not in the epoll of a D-Bus connect, not
/// between syscalls): its kernel wait channel is poll's and it did not run for 50 ms. Only
/// then has a waiting command armed everything it waits on.
pub fn blocked_in_poll(pid: u32, what: &str) {
    let all_switches = || -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Some(
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum(),
        )
    };
    wait_until(Duration::from_secs(10), what, || {
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        if !(wchan.starts_with("poll_schedule_timeout") || wchan.starts_with("do_sys_poll")) {
            return false;
        }
        let before = all_switches();
        std::thread::sleep(Duration::from_millis(50));
        before.is_some() && all_switches() == before
    });
}
