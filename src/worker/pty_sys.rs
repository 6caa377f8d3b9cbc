//! The Linux calls the PTY host and the attach client need, through rustix's safe wrappers:
//! opening a PTY pair, window sizes, poll(2), pidfds, peer credentials. Signals come from
//! signal-hook as bytes on a socket, so the event loops wait for them in poll(2) too.
//!
//! Signals are process-wide but several loops may run in one process (tests run hosts side
//! by side): each [`SignalPipe`] gets every signal it asked for. A terminating signal that
//! arrives while no pipe wants it does what it did before the first pipe (when that was the
//! default action: the process ends).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::OFlags;
use rustix::process::{Pid, PidfdFlags, Signal};
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

use super::protocol::WindowSize;

/// The two ends of a new pseudo-terminal. The slave is opened with `O_NOCTTY` so it never
/// becomes the controlling terminal of the host itself (a unit's main process is a
/// session leader without one, and would otherwise acquire it).
pub(super) struct PtyPair {
    pub master: File,
    pub slave: File,
    pub slave_path: PathBuf,
}

pub(super) fn open_pty(size: WindowSize) -> io::Result<PtyPair> {
    // Close-on-exec, so the agent never inherits the master.
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let slave_path = PathBuf::from(
        name.into_string()
            .map_err(|_| io::Error::other("the terminal's name is not UTF-8"))?,
    );
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(OFlags::NOCTTY.bits() as i32)
        .open(&slave_path)?;
    let master = File::from(master);
    set_window_size(&master, size)?;
    Ok(PtyPair {
        master,
        slave,
        slave_path,
    })
}

pub(super) fn window_size(fd: impl AsFd) -> io::Result<WindowSize> {
    let size = rustix::termios::tcgetwinsize(fd)?;
    Ok(WindowSize {
        cols: size.ws_col,
        rows: size.ws_row,
    })
}

pub(super) fn set_window_size(fd: impl AsFd, size: WindowSize) -> io::Result<()> {
    rustix::termios::tcsetwinsize(
        fd,
        Winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )?;
    Ok(())
}

pub(super) fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK)?;
    Ok(())
}

/// Sends `signal` to the foreground process group of the terminal whose master is `fd`.
pub(super) fn signal_foreground_group(fd: impl AsFd, signal: Signal) {
    if let Ok(group) = rustix::termios::tcgetpgrp(fd) {
        let _ = rustix::process::kill_process_group(group, signal);
    }
}

/// A descriptor that becomes readable when the process exits (Linux 5.3+).
pub(super) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::other(format!("{pid} is not a process id")))?;
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?)
}

/// The uid of the process on the other end of a unix socket.
pub(super) fn peer_uid(fd: BorrowedFd<'_>) -> io::Result<u32> {
    Ok(rustix::net::sockopt::socket_peercred(fd)?.uid.as_raw())
}

pub(super) fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// What one slot of a [`poll`] waits for; `None` leaves the slot out this round.
pub(super) type Interest<'fd> = Option<(BorrowedFd<'fd>, PollFlags)>;

/// Blocks in poll(2) until one of the slots is ready or `timeout` passes (forever when
/// `None`), and returns what each slot got, in the slots' order (empty for slots left
/// out). Interrupted calls are retried: the signal that interrupted them shows up as a
/// readable [`SignalPipe`].
pub(super) fn poll(
    slots: &[Interest<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<PollFlags>> {
    let mut fds: Vec<PollFd<'_>> = slots
        .iter()
        .flatten()
        .map(|&(fd, events)| PollFd::from_borrowed_fd(fd, events))
        .collect();
    // A wait too long for a timespec is a wait forever.
    let timeout = timeout.and_then(|timeout| Timespec::try_from(timeout).ok());
    loop {
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    let mut ready = fds.iter().map(PollFd::revents);
    Ok(slots
        .iter()
        .map(|slot| match slot {
            Some(_) => ready.next().unwrap_or(PollFlags::empty()),
            None => PollFlags::empty(),
        })
        .collect())
}

// ---- signals -------------------------------------------------------------------------

/// Per signal: how many pipes want it, and the flag that makes signal-hook run the default
/// action when none does.
struct Wanted {
    pipes: usize,
    nobody: Arc<AtomicBool>,
}

static WANTED: Mutex<Option<HashMap<i32, Wanted>>> = Mutex::new(None);

/// Signals delivered as bytes on a socket, for as long as this value lives.
pub(super) struct SignalPipe {
    delivery: SignalDelivery<UnixStream, SignalOnly>,
    signals: Vec<i32>,
}

impl SignalPipe {
    pub fn new(signals: &[i32]) -> io::Result<Self> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let mut wanted = WANTED.lock().unwrap_or_else(|poison| poison.into_inner());
        let wanted = wanted.get_or_insert_with(HashMap::new);
        for &signal in signals {
            if wanted.contains_key(&signal) {
                continue;
            }
            // Only terminating signals whose action was the default fall back to it; one
            // that was ignored, say, stays ignored when no pipe wants it.
            // No pipe wants it yet: until one does, the default action stands.
            let nobody = Arc::new(AtomicBool::new(true));
            if matches!(signal, libc::SIGTERM | libc::SIGHUP | libc::SIGINT) && is_default(signal)?
            {
                signal_hook::flag::register_conditional_default(signal, Arc::clone(&nobody))?;
            }
            wanted.insert(signal, Wanted { pipes: 0, nobody });
        }
        let delivery = SignalDelivery::with_pipe(read, write, SignalOnly, signals)?;
        for signal in signals {
            if let Some(entry) = wanted.get_mut(signal) {
                entry.pipes += 1;
                entry.nobody.store(false, Ordering::SeqCst);
            }
        }
        Ok(Self {
            delivery,
            signals: signals.to_vec(),
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.delivery.get_read().as_fd()
    }

    /// The signals that arrived since the last call (each once).
    pub fn drain(&mut self) -> Vec<i32> {
        self.delivery.pending().collect()
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        let mut wanted = WANTED.lock().unwrap_or_else(|poison| poison.into_inner());
        // The owner is done with these signals: from here on (before `delivery` goes), a
        // signal no other pipe wants does what it would without rein.
        for signal in &self.signals {
            if let Some(entry) = wanted.as_mut().and_then(|wanted| wanted.get_mut(signal)) {
                entry.pipes = entry.pipes.saturating_sub(1);
                if entry.pipes == 0 {
                    entry.nobody.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}

/// Whether `signal`'s action is the default one (asked of the kernel without changing it).
fn is_default(signal: i32) -> io::Result<bool> {
    // SAFETY: sigaction is plain data; all-zero is a valid value to be overwritten.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `current`.
    if unsafe { libc::sigaction(signal, std::ptr::null(), &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(current.sa_sigaction == libc::SIG_DFL)
}

/// The host lives as long as its agent, one per agent: hands back to the kernel what
/// start-up used and freed (argument parsing, configuration, starting the agent), so it is
/// not charged to the agent's unit for weeks. Called once, as the host's loop begins.
#[inline(never)]
pub fn release_start_up_memory() {
    release_stack_below_here();
    // SAFETY: malloc_trim only releases free memory of the allocator; no pointer is touched.
    unsafe { libc::malloc_trim(0) };
}

/// Hands back to the kernel the main thread's stack pages below this call, which start-up
/// dirtied (rein's whole command-line definition, when the host runs as `rein worker host`,
/// takes about 100 KiB of stack). What the host uses later is faulted in again as zeroed
/// pages.
#[inline(never)]
fn release_stack_below_here() {
    const PAGE: usize = 4096;
    // Below the current stack pointer nothing is live but this frame's own locals (which
    // may sit below `here`) and the system call's: a page of margin covers both.
    const MARGIN: usize = 4 * 1024;
    let here = std::hint::black_box(0u8);
    let here = std::ptr::addr_of!(here) as usize;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let Some((low, high)) = maps
        .lines()
        .find(|line| line.ends_with("[stack]"))
        .and_then(|line| line.split_once(' '))
        .and_then(|(range, _)| range.split_once('-'))
        .and_then(|(low, high)| {
            Some((
                usize::from_str_radix(low, 16).ok()?,
                usize::from_str_radix(high, 16).ok()?,
            ))
        })
    else {
        return;
    };
    // Only on the main thread's stack (tests run hosts on threads of their own).
    let end = (here.saturating_sub(MARGIN)) & !(PAGE - 1);
    if !(low..high).contains(&here) || end <= low {
        return;
    }
    // SAFETY: the range is the main thread's stack below the current frame (and a margin
    // past the red zone and the calls made here): no live value is there, and a page
    // touched again later is a fresh zeroed one, as on first use of the stack.
    let released =
        unsafe { rustix::mm::madvise(low as *mut _, end - low, rustix::mm::Advice::LinuxDontNeed) };
    if let Err(error) = released {
        tracing::debug!("could not release the unused stack: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(pipe: &SignalPipe) -> bool {
        let ready = poll(
            &[Some((pipe.fd(), PollFlags::IN))],
            Some(Duration::from_millis(500)),
        )
        .expect("poll");
        ready[0].contains(PollFlags::IN)
    }

    #[test]
    fn every_pipe_gets_each_signal_it_asked_for_once_per_drain() {
        // SIGUSR2 is used by nothing else in the test binary.
        let mut first = SignalPipe::new(&[libc::SIGUSR2]).expect("first pipe");
        let mut second = SignalPipe::new(&[libc::SIGUSR2, libc::SIGWINCH]).expect("second pipe");
        // SAFETY: raising a signal both pipes handle.
        unsafe {
            libc::raise(libc::SIGUSR2);
            libc::raise(libc::SIGUSR2);
        }
        assert!(readable(&first) && readable(&second));
        assert_eq!(first.drain(), vec![libc::SIGUSR2]);
        assert_eq!(second.drain(), vec![libc::SIGUSR2]);
        assert!(first.drain().is_empty(), "drained means empty");

        drop(first);
        // SAFETY: as above; the second pipe still handles it.
        unsafe { libc::raise(libc::SIGUSR2) };
        assert!(readable(&second));
        assert_eq!(second.drain(), vec![libc::SIGUSR2]);
    }

    #[test]
    fn a_pipe_is_readable_only_after_a_signal() {
        let pipe = SignalPipe::new(&[libc::SIGURG]).expect("pipe");
        let ready = poll(
            &[Some((pipe.fd(), PollFlags::IN)), None],
            Some(Duration::from_millis(20)),
        )
        .expect("poll");
        assert_eq!(ready, vec![PollFlags::empty(), PollFlags::empty()]);
    }

    #[test]
    fn poll_reports_slots_in_order_and_leaves_absent_ones_empty() {
        let (a, b) = UnixStream::pair().expect("pair");
        let (c, _d) = UnixStream::pair().expect("pair");
        use std::io::Write;
        (&b).write_all(b"x").expect("write");
        let ready = poll(
            &[
                Some((c.as_fd(), PollFlags::IN)),
                None,
                Some((a.as_fd(), PollFlags::IN)),
            ],
            None,
        )
        .expect("poll");
        assert_eq!(ready[0], PollFlags::empty());
        assert_eq!(ready[1], PollFlags::empty());
        assert!(ready[2].contains(PollFlags::IN));
    }

    /// Run by the next test in a process of its own: takes SIGTERM into a pipe, lets it go,
    /// raises SIGTERM. Exits 0 only if it survived (which it must not).
    #[test]
    #[ignore = "run by a_terminating_signal_nobody_wants_does_the_default"]
    fn signal_fallback_child() {
        if std::env::var_os("REIN_SIGNAL_FALLBACK_CHILD").is_none() {
            return;
        }
        let mut pipe = SignalPipe::new(&[libc::SIGTERM]).expect("pipe");
        // SAFETY: raising a signal the pipe handles: the process must survive it.
        unsafe { libc::raise(libc::SIGTERM) };
        assert!(readable(&pipe));
        assert_eq!(pipe.drain(), vec![libc::SIGTERM]);
        println!("survived while handled");
        drop(pipe);
        // SAFETY: nobody handles it now: the default action ends the process.
        unsafe { libc::raise(libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(500));
        println!("survived unhandled");
    }

    #[test]
    fn a_terminating_signal_nobody_wants_does_the_default() {
        use std::os::unix::process::ExitStatusExt;
        let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "worker::pty::sys::tests::signal_fallback_child"])
            .args(["--ignored", "--nocapture", "--test-threads=1"])
            .env("REIN_SIGNAL_FALLBACK_CHILD", "1")
            .output()
            .expect("run the child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("survived while handled"), "{stdout}");
        assert!(!stdout.contains("survived unhandled"), "{stdout}");
        assert_eq!(output.status.signal(), Some(libc::SIGTERM), "{stdout}");
    }
}
