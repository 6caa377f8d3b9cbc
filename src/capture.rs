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
//! [`run_all`] runs several commands at once (a beat's sensors) and reads them all from the
//! calling thread, with one poll(2) over every pipe and exit, one look for leftovers for all
//! the commands that ended together, and a last one for all of them at the end: a sensor
//! costs its own process and little more.
//!
//! [`collect`] is the reading half on its own, for a process rein did not spawn itself (one
//! systemd started with pipes rein passed): it takes the pipes' read ends, an optional
//! descriptor that reports the process's exit, and a callback that stops everything.

use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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
    run_all(&mut [(command, *limits)])
        .pop()
        .unwrap_or_else(|| Err(std::io::Error::other("nothing was run")))
}

/// Runs every command at once, each within its own limits, reading all of them from this one
/// thread, and stops everything each started before returning. The results come in the
/// commands' order; a command that could not be started is an error of its own and does not
/// hold the others back.
pub fn run_all(commands: &mut [(&mut Command, Limits)]) -> Vec<std::io::Result<Captured>> {
    // Every process of these captures is younger than this pid.
    let before = last_pid();
    let mut results: Vec<Option<std::io::Result<Captured>>> = Vec::new();
    let mut running: Vec<(usize, Running)> = Vec::new();
    let mut readers: Vec<Reader> = Vec::new();
    for (index, (command, limits)) in commands.iter_mut().enumerate() {
        results.push(None);
        match start(command, limits) {
            Ok((started, reader)) => {
                running.push((index, started));
                readers.push(reader);
            }
            Err(error) => results[index] = Some(Err(error)),
        }
    }
    let mut stop = |which: &[usize]| {
        let markers: Vec<&str> = which
            .iter()
            .map(|at| {
                let started = &running[*at].1;
                // SAFETY: signalling a process group this capture created; ESRCH is harmless.
                unsafe { libc::kill(-started.group, libc::SIGKILL) };
                started.marker.as_str()
            })
            .collect();
        kill_marked(&markers, before);
    };
    // Every ending of a reading stops what its command started (see `read_all`). One more
    // look for all of them at once: the look made at an exit can miss what the command left
    // (a test saw a left-behind `sleep` survive it), most likely a process in the middle of
    // an exec, whose environment can read empty for that moment.
    read_all(&mut readers, &mut stop);
    let all: Vec<usize> = (0..readers.len()).collect();
    stop(&all);
    for ((index, started), reader) in running.into_iter().zip(readers) {
        results[index] = Some(started.finish(reader));
    }
    results
        .into_iter()
        .map(|result| result.unwrap_or_else(|| Err(std::io::Error::other("not run"))))
        .collect()
}

/// A command that was started, as far as stopping and reaping it goes.
struct Running {
    child: std::process::Child,
    group: libc::pid_t,
    marker: String,
    /// Readable once the child has exited.
    waited: OwnedFd,
    at: Instant,
}

impl Running {
    fn finish(mut self, reader: Reader) -> std::io::Result<Captured> {
        let elapsed = reader
            .ended
            .as_ref()
            .map_or_else(Instant::now, |ended| ended.at)
            .saturating_duration_since(self.at);
        // Killed by now; a process stuck in the kernel gets GRACE to go. It is reaped however
        // the reading ended.
        let mut fds = [PollFd::new(&self.waited, PollFlags::IN)];
        let grace = Timespec::try_from(GRACE).ok();
        let _ = rustix::event::poll(&mut fds, grace.as_ref());
        let status = self.child.try_wait().ok().flatten();
        let output = reader.outcome()?;
        Ok(Captured {
            output,
            status,
            elapsed,
        })
    }
}

fn start(command: &mut Command, limits: &Limits) -> std::io::Result<(Running, Reader)> {
    let at = Instant::now();
    let marker = uuid::Uuid::new_v4().simple().to_string();
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env(MARKER, &marker)
        .process_group(0);
    let mut child = command.spawn()?;
    let group = child.id() as libc::pid_t;
    match watch(&mut child, limits) {
        Ok((waited, reader)) => Ok((
            Running {
                child,
                group,
                marker,
                waited,
                at,
            },
            reader,
        )),
        Err(error) => {
            // Started but not watchable: nothing of it may run on unread.
            // SAFETY: signalling the process group this capture just created.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = child.wait();
            Err(error)
        }
    }
}

/// The reader of a child just started, and a descriptor that becomes readable at its exit.
fn watch(child: &mut std::process::Child, limits: &Limits) -> std::io::Result<(OwnedFd, Reader)> {
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
    let pid = rustix::process::Pid::from_child(child);
    let exited = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
    let waited = exited.try_clone()?;
    Ok((waited, Reader::new(stdout, stderr, Some(exited), limits)?))
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
    let mut readers = [Reader::new(stdout, stderr, exited, limits)?];
    read_all(&mut readers, &mut |_| stop());
    let [reader] = readers;
    reader.outcome()
}

/// The reading of one command's output: its pipes, its exit, its deadline, what it read.
struct Reader {
    /// stdout and stderr, while open.
    pipes: [Option<std::fs::File>; 2],
    exited: Option<OwnedFd>,
    limits: Limits,
    end: Instant,
    after_exit: bool,
    collected: Collected,
    /// Set once the reading is over.
    ended: Option<Ended>,
}

/// When a reading ended, and whether it failed.
struct Ended {
    at: Instant,
    result: std::io::Result<()>,
}

/// What a reader asks of the loop after an event.
enum Next {
    Go,
    /// Stop what the command started, and go on reading (its exit: leftovers).
    Stop,
    /// Stop what the command started; the reading is over.
    StopAndEnd(std::io::Result<()>),
}

impl Reader {
    fn new(
        stdout: OwnedFd,
        stderr: OwnedFd,
        exited: Option<OwnedFd>,
        limits: &Limits,
    ) -> std::io::Result<Reader> {
        let pipes = [
            Some(std::fs::File::from(stdout)),
            Some(std::fs::File::from(stderr)),
        ];
        for pipe in pipes.iter().flatten() {
            set_nonblocking(pipe)?;
        }
        Ok(Reader {
            pipes,
            exited,
            limits: *limits,
            end: Instant::now() + limits.timeout,
            after_exit: false,
            collected: Collected {
                stdout: Vec::new(),
                stdout_over: false,
                stderr: Vec::new(),
                stderr_over: false,
                ending: Ending::Finished,
            },
            ended: None,
        })
    }

    fn end_with(&mut self, result: std::io::Result<()>) {
        self.pipes = [None, None];
        self.exited = None;
        self.ended = Some(Ended {
            at: Instant::now(),
            result,
        });
    }

    fn outcome(self) -> std::io::Result<Collected> {
        match self.ended {
            Some(Ended {
                result: Err(error), ..
            }) => Err(error),
            _ => Ok(self.collected),
        }
    }

    /// Slot 0 and 1 are the pipes, 2 the exit.
    fn fds(&self) -> impl Iterator<Item = (usize, BorrowedFd<'_>)> {
        let pipes = self
            .pipes
            .iter()
            .enumerate()
            .filter_map(|(slot, pipe)| Some((slot, pipe.as_ref()?.as_fd())));
        pipes.chain(self.exited.as_ref().map(|fd| (2, fd.as_fd())))
    }

    /// What happened on `slot`.
    fn ready(&mut self, slot: usize, chunk: &mut [u8]) -> Next {
        if slot == 2 {
            // The process exited: stop what it left behind, then drain for a moment.
            self.exited = None;
            self.after_exit = true;
            self.end = self.end.min(Instant::now() + GRACE);
            return Next::Stop;
        }
        let Some(pipe) = self.pipes[slot].as_mut() else {
            return Next::Go;
        };
        loop {
            match pipe.read(chunk) {
                Ok(0) => {
                    self.pipes[slot] = None;
                    return Next::Go;
                }
                Ok(read) => {
                    let limits = &self.limits;
                    let collected = &mut self.collected;
                    if slot == 0 && limits.past_cap == PastCap::Stop {
                        collected.stdout.extend_from_slice(&chunk[..read]);
                        if collected.stdout.len() > limits.stdout_cap {
                            collected.stdout.truncate(limits.stdout_cap);
                            collected.ending = Ending::OverCap;
                            return Next::StopAndEnd(Ok(()));
                        }
                    } else if slot == 0 {
                        let room = limits.stdout_cap.saturating_sub(collected.stdout.len());
                        collected.stdout.extend_from_slice(&chunk[..read.min(room)]);
                        collected.stdout_over |= read > room;
                    } else {
                        let room = limits.stderr_cap.saturating_sub(collected.stderr.len());
                        collected.stderr.extend_from_slice(&chunk[..read.min(room)]);
                        collected.stderr_over |= read > room;
                    }
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => return Next::Go,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Next::StopAndEnd(Err(error)),
            }
        }
    }
}

/// Reads every reader to its end from this one thread. `stop` is called with the indices of
/// the readers whose commands must be stopped: once a command has exited (what it left
/// behind), at its timeout, when its stdout passes its cap, and on a read error. Each reader
/// ends stopped that way, except one with no exit to watch whose pipes simply closed.
fn read_all(readers: &mut [Reader], stop: &mut dyn FnMut(&[usize])) {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        let mut to_stop = Vec::new();
        for (index, reader) in readers.iter_mut().enumerate() {
            if reader.ended.is_some() {
                continue;
            }
            if reader.pipes.iter().all(Option::is_none) && reader.exited.is_none() {
                reader.end_with(Ok(()));
            } else if reader.end <= now {
                if !reader.after_exit {
                    to_stop.push(index);
                    reader.collected.ending = Ending::TimedOut;
                }
                reader.end_with(Ok(()));
            }
        }
        if !to_stop.is_empty() {
            stop(&to_stop);
            to_stop.clear();
        }
        let Some(end) = readers
            .iter()
            .filter(|reader| reader.ended.is_none())
            .map(|reader| reader.end)
            .min()
        else {
            return;
        };
        let mut fds = Vec::new();
        let mut which = Vec::new();
        for (index, reader) in readers.iter().enumerate() {
            if reader.ended.is_some() {
                continue;
            }
            for (slot, fd) in reader.fds() {
                fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
                which.push((index, slot));
            }
        }
        // A wait too long for a timespec is a wait forever.
        let timeout = Timespec::try_from(end.saturating_duration_since(now)).ok();
        let polled = rustix::event::poll(&mut fds, timeout.as_ref());
        let ready: Vec<(usize, usize)> = which
            .into_iter()
            .zip(fds.iter().map(PollFd::revents))
            .filter(|(_, revents)| !revents.is_empty())
            .map(|(at, _)| at)
            .collect();
        drop(fds);
        match polled {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => {
                for (index, reader) in readers.iter_mut().enumerate() {
                    if reader.ended.is_none() {
                        to_stop.push(index);
                        reader.end_with(Err(std::io::Error::from(error)));
                    }
                }
                stop(&to_stop);
                return;
            }
        }
        for (index, slot) in ready {
            let reader = &mut readers[index];
            if reader.ended.is_some() {
                continue;
            }
            match reader.ready(slot, &mut chunk) {
                Next::Go => {}
                Next::Stop => to_stop.push(index),
                Next::StopAndEnd(outcome) => {
                    reader.end_with(outcome);
                    to_stop.push(index);
                }
            }
        }
        if !to_stop.is_empty() {
            stop(&to_stop);
        }
    }
}

fn set_nonblocking(file: &std::fs::File) -> std::io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    rustix::fs::fcntl_setfl(file, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
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

/// SIGKILLs every process (readable to us) whose environment has `MARKER=` one of `markers`:
/// the ones that left their capture's process group. Only processes started after the pid
/// `before` are looked at (every process of a capture is younger than the capture): a beat
/// costs the same however many agents run beside it. Looks again while it finds some, since a dying process may just
/// have forked.
pub fn kill_marked(markers: &[&str], before: Option<libc::pid_t>) {
    if markers.is_empty() {
        return;
    }
    let needles: Vec<String> = markers
        .iter()
        .map(|marker| format!("{MARKER}={marker}"))
        .collect();
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
                .any(|variable| needles.iter().any(|needle| variable == needle.as_bytes()))
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
    fn commands_run_together_each_within_its_own_limits() {
        let started = Instant::now();
        let mut quick = sh("echo quick");
        let mut slow = sh("sleep 37");
        let mut missing = Command::new("/nonexistent/rein-test-no-such-program");
        let mut leaver = sh("setsid sleep 27 & echo left");
        let mut flood = sh("head -c 1000000 /dev/zero");
        let results = run_all(&mut [
            (&mut quick, limits(5000)),
            (&mut slow, limits(1000)),
            (&mut missing, limits(5000)),
            (&mut leaver, limits(5000)),
            (&mut flood, limits(5000)),
        ]);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "one reader for all, each stopped at its own end: {:?}",
            started.elapsed()
        );
        let [quick, slow, missing, leaver, flood] = results.try_into().expect("five results");
        let quick = quick.expect("quick");
        assert_eq!(quick.output.stdout, b"quick\n");
        assert_eq!(quick.status.and_then(|s| s.code()), Some(0));
        let slow = slow.expect("slow");
        assert_eq!(slow.output.ending, Ending::TimedOut);
        assert!(
            slow.elapsed >= Duration::from_millis(1000),
            "{:?}",
            slow.elapsed
        );
        assert!(
            quick.elapsed < slow.elapsed,
            "each command has its own elapsed time"
        );
        assert!(
            missing.is_err(),
            "a command that cannot start is an error of its own"
        );
        let leaver = leaver.expect("leaver");
        assert_eq!(leaver.output.stdout, b"left\n");
        assert_eq!(leaver.output.ending, Ending::Finished);
        assert_eq!(flood.expect("flood").output.ending, Ending::OverCap);
        // Nothing any of them started is left. A process killed a moment ago may take a
        // moment more to go; one nobody killed would stay for half a minute.
        let left_running = || -> Vec<String> {
            let found = std::process::Command::new("pgrep")
                .args(["-f", "^sleep (27|37)$"])
                .output()
                .expect("pgrep");
            String::from_utf8_lossy(&found.stdout)
                .lines()
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/environ"))
                        .is_ok_and(|env| env.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()))
                })
                .map(str::to_owned)
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut mine = left_running();
        while !mine.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            mine = left_running();
        }
        assert!(mine.is_empty(), "left running: {mine:?}");
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
