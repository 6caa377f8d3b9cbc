//! Safe wrappers over the Linux calls the PTY host and the attach client need: opening a
//! PTY pair, window sizes, poll(2), pidfds, peer credentials, and a self-pipe that turns
//! signals into readable bytes so the event loops can wait for them in poll(2).
//!
//! Signals are process-wide but several loops may run in one process (tests run hosts side
//! by side), so the handler writes each signal to every pipe registered for it. A signal
//! that arrives while no pipe wants it falls back to what the process did before.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::protocol::WindowSize;

pub(super) fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// The two ends of a new pseudo-terminal. The slave is opened with `O_NOCTTY` so it never
/// becomes the controlling terminal of the host itself (a unit's main process is a
/// session leader without one, and would otherwise acquire it).
pub(super) struct PtyPair {
    pub master: File,
    pub slave: File,
    pub slave_path: PathBuf,
}

pub(super) fn open_pty(size: WindowSize) -> io::Result<PtyPair> {
    // std opens with O_CLOEXEC, so the agent never inherits the master.
    let master = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/ptmx")?;
    let fd = master.as_raw_fd();
    // SAFETY: fd is a valid, open PTY master owned by `master`.
    check(unsafe { libc::grantpt(fd) })?;
    // SAFETY: as above.
    check(unsafe { libc::unlockpt(fd) })?;
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: the buffer is writable for its full length, which we pass.
    let error = unsafe { libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) };
    if error != 0 {
        return Err(io::Error::from_raw_os_error(error));
    }
    // SAFETY: ptsname_r succeeded, so the buffer holds a NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    let slave_path = PathBuf::from(std::ffi::OsStr::new(
        std::str::from_utf8(name.to_bytes()).map_err(io::Error::other)?,
    ));
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&slave_path)?;
    set_window_size(master.as_raw_fd(), size)?;
    Ok(PtyPair {
        master,
        slave,
        slave_path,
    })
}

pub(super) fn window_size(fd: RawFd) -> io::Result<WindowSize> {
    // SAFETY: winsize is plain data; all-zero is a valid value.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into the pointer we pass.
    check(unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) })?;
    Ok(WindowSize {
        cols: size.ws_col,
        rows: size.ws_row,
    })
}

pub(super) fn set_window_size(fd: RawFd, size: WindowSize) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer we pass.
    check(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) })?;
    Ok(())
}

pub(super) fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

pub(super) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL only change flags of the descriptor.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// Sends `signal` to the foreground process group of the terminal whose master is `fd`.
pub(super) fn signal_foreground_group(fd: RawFd, signal: libc::c_int) {
    // SAFETY: tcgetpgrp only inspects the descriptor.
    let group = unsafe { libc::tcgetpgrp(fd) };
    if group > 0 {
        // SAFETY: sending a signal has no memory-safety preconditions.
        unsafe { libc::killpg(group, signal) };
    }
}

/// A descriptor that becomes readable when the process exits (Linux 5.3+).
pub(super) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The uid of the process on the other end of a unix socket.
pub(super) fn peer_uid(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: ucred is plain data; all-zero is a valid value.
    let mut credentials: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes at most `len` bytes into `credentials`.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut credentials as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(credentials.uid)
}

pub(super) fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Blocks in poll(2) with no timeout until one of `fds` is ready. Interrupted calls are
/// retried: the signal that interrupted them shows up as a readable [`SignalPipe`].
pub(super) fn poll_forever(fds: &mut [libc::pollfd]) -> io::Result<()> {
    loop {
        // SAFETY: the pointer and length describe the caller's slice of pollfd.
        let result = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if result >= 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// poll(2) that waits at most `timeout` (forever when `None`), retrying on EINTR.
pub(super) fn poll_with_timeout(
    fds: &mut [libc::pollfd],
    timeout: Option<std::time::Duration>,
) -> io::Result<()> {
    let Some(timeout) = timeout else {
        return poll_forever(fds);
    };
    // Rounded up, so a wait of 0.3 ms does not become a busy loop of zero-timeout polls.
    let millis = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    loop {
        // SAFETY: the pointer and length describe the caller's slice of pollfd.
        let result = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
        if result >= 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

pub(super) fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

// ---- signals -------------------------------------------------------------------------

const SLOTS: usize = 64;
const NO_FD: i32 = -1;

struct Slot {
    fd: AtomicI32,
    signals: AtomicU64,
}

static SLOTS_TABLE: [Slot; SLOTS] = [const {
    Slot {
        fd: AtomicI32::new(NO_FD),
        signals: AtomicU64::new(0),
    }
}; SLOTS];
/// Handlers currently running; unregistering waits for zero before closing its pipe, so a
/// handler never writes to a descriptor number that has since been reused.
static HANDLERS_RUNNING: AtomicUsize = AtomicUsize::new(0);
/// Per signal: with no pipe registered, restore the default action and re-raise.
static FALL_BACK_TO_DEFAULT: [AtomicBool; 65] = [const { AtomicBool::new(false) }; 65];

struct Installed {
    signal: libc::c_int,
    registrations: usize,
    previous: libc::sigaction,
}

// SAFETY: sigaction is plain data (flags, a mask and a handler address).
unsafe impl Send for Installed {}

static INSTALLED: Mutex<Vec<Installed>> = Mutex::new(Vec::new());

extern "C" fn on_signal(signal: libc::c_int) {
    HANDLERS_RUNNING.fetch_add(1, Ordering::SeqCst);
    // SAFETY: reading and restoring errno is what async-signal-safe handlers must do.
    let saved_errno = unsafe { *libc::__errno_location() };
    let bit = 1u64.checked_shl(signal as u32).unwrap_or(0);
    let byte = signal as u8;
    let mut delivered = false;
    for slot in &SLOTS_TABLE {
        if slot.signals.load(Ordering::SeqCst) & bit == 0 {
            continue;
        }
        let fd = slot.fd.load(Ordering::SeqCst);
        if fd != NO_FD {
            // SAFETY: write(2) is async-signal-safe; fd stays open while we run (see
            // HANDLERS_RUNNING). A full pipe just drops the byte: one is enough to wake.
            unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
            delivered = true;
        }
    }
    let fall_back = usize::try_from(signal)
        .ok()
        .and_then(|index| FALL_BACK_TO_DEFAULT.get(index))
        .is_some_and(|flag| flag.load(Ordering::SeqCst));
    if !delivered && fall_back {
        // SAFETY: signal(2) and raise(3) are async-signal-safe.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
    // SAFETY: see above.
    unsafe { *libc::__errno_location() = saved_errno };
    HANDLERS_RUNNING.fetch_sub(1, Ordering::SeqCst);
}

/// Installs `on_signal` for `signal` unless it already is, counting registrations.
fn install_handler(installed: &mut Vec<Installed>, signal: libc::c_int) -> io::Result<()> {
    if let Some(entry) = installed.iter_mut().find(|entry| entry.signal == signal) {
        entry.registrations += 1;
        return Ok(());
    }
    // SAFETY: sigaction is plain data; all-zero is a valid starting value.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_signal as *const () as usize;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: the mask is a valid sigset_t inside `action`.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: as above.
    let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid sigaction values.
    check(unsafe { libc::sigaction(signal, &action, &mut previous) })?;
    let terminates = matches!(signal, libc::SIGTERM | libc::SIGHUP | libc::SIGINT);
    if let Some(flag) = usize::try_from(signal)
        .ok()
        .and_then(|index| FALL_BACK_TO_DEFAULT.get(index))
    {
        flag.store(
            terminates && previous.sa_sigaction == libc::SIG_DFL,
            Ordering::SeqCst,
        );
    }
    installed.push(Installed {
        signal,
        registrations: 1,
        previous,
    });
    Ok(())
}

/// Signals delivered as bytes on a pipe, for as long as this value lives.
pub(super) struct SignalPipe {
    read: File,
    /// Only held open: the handler writes to it by number through the slot.
    _write: OwnedFd,
    slot: usize,
    signals: Vec<libc::c_int>,
}

impl SignalPipe {
    pub fn new(signals: &[libc::c_int]) -> io::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
        // SAFETY: pipe2 succeeded; we are the only owner of both descriptors.
        let (read, write) = unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mask = signals.iter().fold(0u64, |mask, &signal| {
            mask | 1u64.checked_shl(signal as u32).unwrap_or(0)
        });

        let mut installed = INSTALLED
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let slot = SLOTS_TABLE
            .iter()
            .position(|slot| slot.fd.load(Ordering::SeqCst) == NO_FD)
            .ok_or_else(|| io::Error::other("too many signal pipes in one process"))?;
        SLOTS_TABLE[slot].signals.store(mask, Ordering::SeqCst);
        SLOTS_TABLE[slot]
            .fd
            .store(write.as_raw_fd(), Ordering::SeqCst);
        // From here on, dropping `pipe` undoes whatever part of the registration happened.
        let mut pipe = Self {
            read,
            _write: write,
            slot,
            signals: Vec::new(),
        };
        for &signal in signals {
            if let Err(error) = install_handler(&mut installed, signal) {
                drop(installed);
                return Err(error);
            }
            pipe.signals.push(signal);
        }
        Ok(pipe)
    }

    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// The signals that arrived since the last call (without duplicates per read).
    pub fn drain(&mut self) -> Vec<libc::c_int> {
        use std::io::Read;
        let mut buffer = [0u8; 64];
        let mut signals = Vec::new();
        while let Ok(n @ 1..) = self.read.read(&mut buffer) {
            for &byte in &buffer[..n] {
                let signal = libc::c_int::from(byte);
                if !signals.contains(&signal) {
                    signals.push(signal);
                }
            }
        }
        signals
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        let mut installed = INSTALLED
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let slot = &SLOTS_TABLE[self.slot];
        slot.fd.store(NO_FD, Ordering::SeqCst);
        while HANDLERS_RUNNING.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        slot.signals.store(0, Ordering::SeqCst);
        for &signal in &self.signals {
            let Some(index) = installed.iter().position(|entry| entry.signal == signal) else {
                continue;
            };
            installed[index].registrations -= 1;
            if installed[index].registrations == 0 {
                let entry = installed.swap_remove(index);
                // SAFETY: restoring the action that was in place before we installed ours.
                unsafe { libc::sigaction(signal, &entry.previous, std::ptr::null_mut()) };
            }
        }
        // `_write` closes when the fields drop, after the slot no longer names it.
    }
}
