//! Running a command and capturing what it prints, with limits that hold whatever it does.
//!
//! One routine for every command rein runs and reads back (sensors, the judge's tick, a
//! loop's tick script):
//! stdout and stderr are read concurrently (so a command that fills one pipe while rein reads
//! the other cannot stall), each up to its cap, and everything the command started is stopped
//! at its timeout — its process group, and every process that inherited its marker variable
//! (`REIN_CAPTURE`), so a child that left the group with `setsid` goes too. Once the command
//! has exited, whatever it left behind is stopped as well, and rein stops reading a pipe that
//! a leftover still holds open: a capture returns within its timeout plus [`GRACE`].
//!
//! [`collect`] is the reading half on its own, for a process rein did not spawn itself (one
//! systemd started with pipes rein passed): it takes the pipes' read ends, an optional
//! descriptor that reports the process's exit, and a callback that stops everything.

use std::io::{ErrorKind, Read};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

/// How long reading goes on after the command exited (or was stopped) for pipes still open.
pub const GRACE: Duration = Duration::from_secs(1);

/// The environment variable that marks every process of one capture.
pub const MARKER: &str = "REIN_CAPTURE";

/// What a capture may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    /// The most of stdout kept; what happens past it is [`Limits::past_cap`].
    pub stdout_cap: usize,
    /// stderr beyond this many bytes is read and dropped (the command is not stopped).
    pub stderr_cap: usize,
    pub past_cap: PastCap,
}

/// What a capture does when stdout passes its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PastCap {
    /// The command is stopped ([`Ending::OverCap`]): its output would be wrong cut (a
    /// sensor's JSON, the judge's move).
    Stop,
    /// The rest is read and dropped, as for stderr ([`Collected::stdout_over`]): the output
    /// is a log a person reads (a loop's tick script).
    Drop,
}

/// How a capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The output ended (both pipes closed, or the command exited and its leftovers were
    /// stopped).
    Finished,
    /// stdout passed its cap; everything was stopped.
    OverCap,
    /// The timeout passed; everything was stopped.
    TimedOut,
}

/// What [`collect`] read.
#[derive(Debug, Clone)]
pub struct Collected {
    /// At most `stdout_cap` bytes of stdout.
    pub stdout: Vec<u8>,
    /// Whether stdout had more than was kept (with [`PastCap::Drop`]).
    pub stdout_over: bool,
    /// At most `stderr_cap` bytes of stderr.
    pub stderr: Vec<u8>,
    /// Whether stderr had more than was kept.
    pub stderr_over: bool,
    pub ending: Ending,
}

/// What [`run`] captured.
#[derive(Debug)]
pub struct Captured {
    pub output: Collected,
    /// The command's exit status; `None` when it could not be learned in time.
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
}

/// Runs `command` (its stdin is left as the caller set it; stdout and stderr are captured)
/// within `limits`, and stops everything it started before returning.
pub fn run(command: &mut Command, limits: &Limits) -> std::io::Result<Captured> {
    let started = Instant::now();
    let marker = uuid::Uuid::new_v4().simple().to_string();
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env(MARKER, &marker)
        .process_group(0);
    let before = last_pid();
    let mut child = command.spawn()?;
    let group = child.id() as libc::pid_t;
    let stdout: OwnedFd = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout pipe"))?
        .into();
    let stderr: OwnedFd = child
        .stderr
        .take()
        .ok_or_else(|| std::io::Error::other("no stderr pipe"))?
        .into();
    // A pidfd becomes readable when the child exits, so the reader learns of the exit in the
    // same poll(2) as of its output, with no thread waiting beside it.
    let pid = rustix::process::Pid::from_child(&child);
    let exited = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
    let waited = exited.try_clone()?;
    let mut stop = || stop_all(group, &marker, before);
    let output = collect(stdout, stderr, Some(exited), limits, &mut stop);
    // Whatever ended the capture, nothing the command started outlives it.
    stop();
    let output = output?;
    // Killed by now; a process stuck in the kernel gets GRACE to go.
    let mut fds = [PollFd::new(&waited, PollFlags::IN)];
    let grace = Timespec::try_from(GRACE).ok();
    let _ = rustix::event::poll(&mut fds, grace.as_ref());
    let status = child.try_wait().ok().flatten();
    Ok(Captured {
        output,
        status,
        elapsed: started.elapsed(),
    })
}

/// Reads `stdout` and `stderr` until both close, stdout passes its cap, or the timeout; then
/// closes them. `exited`, when given, becomes readable or hangs up once the process has
/// exited: `stop` is then called to end what it left behind, and reading goes on for at most
/// [`GRACE`]. On a timeout or a full stdout `stop` is called before returning.
pub fn collect(
    stdout: OwnedFd,
    stderr: OwnedFd,
    exited: Option<OwnedFd>,
    limits: &Limits,
    stop: &mut dyn FnMut(),
) -> std::io::Result<Collected> {
    let mut end = Instant::now() + limits.timeout;
    let mut after_exit = false;
    let mut pipes = [
        Some(std::fs::File::from(stdout)),
        Some(std::fs::File::from(stderr)),
    ];
    for pipe in pipes.iter().flatten() {
        set_nonblocking(pipe)?;
    }
    let mut exited = exited;
    let mut collected = Collected {
        stdout: Vec::new(),
        stdout_over: false,
        stderr: Vec::new(),
        stderr_over: false,
        ending: Ending::Finished,
    };
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if pipes.iter().all(Option::is_none) && exited.is_none() {
            return Ok(collected);
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            if !after_exit {
                stop();
                collected.ending = Ending::TimedOut;
            }
            return Ok(collected);
        }
        // Slots 0 and 1 are the pipes, 2 the exit: what each got, once poll returns.
        let ready: Vec<(usize, PollFlags)> = {
            let mut fds = Vec::with_capacity(3);
            let mut which = Vec::with_capacity(3);
            for (index, pipe) in pipes.iter().enumerate() {
                if let Some(pipe) = pipe {
                    fds.push(PollFd::new(pipe, PollFlags::IN));
                    which.push(index);
                }
            }
            if let Some(fd) = &exited {
                fds.push(PollFd::new(fd, PollFlags::IN));
                which.push(2);
            }
            // A wait too long for a timespec is a wait forever.
            let timeout = Timespec::try_from(left).ok();
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(error) => {
                    stop();
                    return Err(error.into());
                }
            }
            which
                .into_iter()
                .zip(fds.iter().map(PollFd::revents))
                .collect()
        };
        for (index, revents) in ready {
            if revents.is_empty() {
                continue;
            }
            if index == 2 {
                // The process exited: stop what it left behind, then drain for a moment.
                exited = None;
                after_exit = true;
                stop();
                end = end.min(Instant::now() + GRACE);
                continue;
            }
            let Some(pipe) = pipes[index].as_mut() else {
                continue;
            };
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => {
                        pipes[index] = None;
                        break;
                    }
                    Ok(read) => {
                        if index == 0 && limits.past_cap == PastCap::Stop {
                            collected.stdout.extend_from_slice(&chunk[..read]);
                            if collected.stdout.len() > limits.stdout_cap {
                                collected.stdout.truncate(limits.stdout_cap);
                                collected.ending = Ending::OverCap;
                                stop();
                                return Ok(collected);
                            }
                        } else if index == 0 {
                            let room = limits.stdout_cap.saturating_sub(collected.stdout.len());
                            collected.stdout.extend_from_slice(&chunk[..read.min(room)]);
                            collected.stdout_over |= read > room;
                        } else {
                            let room = limits.stderr_cap.saturating_sub(collected.stderr.len());
                            collected.stderr.extend_from_slice(&chunk[..read.min(room)]);
                            collected.stderr_over |= read > room;
                        }
                    }
                    Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                    Err(error) => {
                        stop();
                        return Err(error);
                    }
                }
            }
        }
    }
}

fn set_nonblocking(file: &std::fs::File) -> std::io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    rustix::fs::fcntl_setfl(file, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

/// SIGKILLs the process group `group` and every process carrying `MARKER=marker` among those
/// started after the pid `before` was handed out.
fn stop_all(group: libc::pid_t, marker: &str, before: Option<libc::pid_t>) {
    // SAFETY: signalling a process group this capture created; ESRCH is harmless.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    kill_marked(marker, before);
}

/// Up to how many pids handed out since a capture began are looked at one by one.
const PIDS_LOOKED_AT: libc::pid_t = 256;

/// The last pid the kernel handed out in this pid namespace.
fn last_pid() -> Option<libc::pid_t> {
    std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` can belong to a process started after `before` was handed out, `last` being
/// the newest pid now. Pids go up and wrap at `pid_max`: after a wrap (`last < before`) the
/// window runs past the top and on from the bottom.
fn started_since(pid: libc::pid_t, before: libc::pid_t, last: libc::pid_t) -> bool {
    if last >= before {
        pid > before && pid <= last
    } else {
        pid > before || pid <= last
    }
}

/// SIGKILLs every process (readable to us) whose environment has `MARKER=marker`: the ones
/// that left the process group. Only processes started after the pid `before` are looked at
/// (every process of a capture is younger than the capture): a beat costs the same however
/// many agents run beside it. Looks again while it finds some, since a dying process may just
/// have forked.
pub fn kill_marked(marker: &str, before: Option<libc::pid_t>) {
    let needle = format!("{MARKER}={marker}");
    for _ in 0..5 {
        let window = before.zip(last_pid());
        let pids: Vec<libc::pid_t> = match window {
            // Few pids handed out since: look at each (most are gone) rather than list /proc.
            Some((before, last)) if last >= before && last - before <= PIDS_LOOKED_AT => {
                (before + 1..=last).collect()
            }
            _ => {
                let Ok(entries) = std::fs::read_dir("/proc") else {
                    return;
                };
                entries
                    .flatten()
                    .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
                    .filter(|pid| {
                        window.is_none_or(|(before, last)| started_since(*pid, before, last))
                    })
                    .collect()
            }
        };
        let mut found = false;
        for pid in pids {
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if environ
                .split(|byte| *byte == 0)
                .any(|variable| variable == needle.as_bytes())
            {
                // SAFETY: kill(2) with a pid read from /proc; ESRCH is harmless.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                found = true;
            }
        }
        if !found {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(timeout_ms: u64) -> Limits {
        Limits {
            timeout: Duration::from_millis(timeout_ms),
            stdout_cap: 1024,
            stderr_cap: 64,
            past_cap: PastCap::Stop,
        }
    }

    fn sh(script: &str) -> Command {
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(script).stdin(Stdio::null());
        command
    }

    #[test]
    fn the_leftover_search_looks_only_at_pids_handed_out_since_the_start() {
        // No wrap: the pids after `before` up to the newest.
        assert!(started_since(101, 100, 200));
        assert!(started_since(200, 100, 200));
        assert!(!started_since(100, 100, 200));
        assert!(!started_since(50, 100, 200));
        assert!(!started_since(201, 100, 200));
        // Wrapped at pid_max: the top of the range and the bottom up to the newest.
        assert!(started_since(32_000, 30_000, 40));
        assert!(started_since(7, 30_000, 40));
        assert!(!started_since(41, 30_000, 40));
        assert!(!started_since(30_000, 30_000, 40));
        // Nothing new: no pid at all.
        assert!(!started_since(100, 100, 100));
    }

    #[test]
    fn output_and_status_are_captured() {
        let captured = run(&mut sh("echo out; echo err >&2; exit 3"), &limits(5000)).expect("run");
        assert_eq!(captured.output.stdout, b"out\n");
        assert_eq!(captured.output.stderr, b"err\n");
        assert_eq!(captured.output.ending, Ending::Finished);
        assert_eq!(captured.status.and_then(|s| s.code()), Some(3));
    }

    #[test]
    fn a_child_that_left_the_group_and_holds_stdout_is_stopped() {
        let started = Instant::now();
        let captured = run(&mut sh("setsid sleep 25 & echo '{}'"), &limits(2000)).expect("run");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(captured.output.stdout, b"{}\n");
        assert_eq!(captured.status.and_then(|s| s.code()), Some(0));
    }

    #[test]
    fn the_timeout_stops_everything() {
        let started = Instant::now();
        let captured =
            run(&mut sh("setsid sh -c 'sleep 30' & sleep 30"), &limits(500)).expect("run");
        assert_eq!(captured.output.ending, Ending::TimedOut);
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_flood_on_either_pipe_is_bounded() {
        let captured = run(
            &mut sh("head -c 1000000 /dev/zero >&2; echo done"),
            &limits(5000),
        )
        .expect("run");
        assert_eq!(captured.output.stdout, b"done\n");
        assert_eq!(captured.output.stderr.len(), 64);
        assert!(captured.output.stderr_over);
        let captured = run(&mut sh("head -c 1000000 /dev/zero"), &limits(5000)).expect("run");
        assert_eq!(captured.output.ending, Ending::OverCap);
        assert_eq!(captured.output.stdout.len(), 1024);
    }

    #[test]
    fn past_its_cap_stdout_can_be_dropped_instead() {
        let dropping = Limits {
            past_cap: PastCap::Drop,
            ..limits(5000)
        };
        let captured = run(
            &mut sh("head -c 1000000 /dev/zero; echo; echo done >&2; exit 4"),
            &dropping,
        )
        .expect("run");
        assert_eq!(captured.output.ending, Ending::Finished);
        assert_eq!(captured.output.stdout.len(), 1024);
        assert!(captured.output.stdout_over);
        assert_eq!(captured.output.stderr, b"done\n");
        assert_eq!(captured.status.and_then(|s| s.code()), Some(4));
    }
}
