//! Letting go of an inotify instance without making the process's exit wait for it.
//!
//! Releasing an inotify instance that had watches waits for an RCU grace period in the kernel
//! (9–22 ms measured here). A process that closes it — explicitly, or implicitly in
//! `exit_group` — pays that wait before its parent sees it exit, so `answer=$(rein ask …)`
//! would return that much after the answer was printed. A command that is about to exit
//! ([`enable`]: `rein ask`, `rein wait`, `rein answer --interactive`) instead hands the
//! instance to a child process that holds nothing else (no stdout for a `$(…)` to wait on)
//! and releases it once this process is gone; the process's own close then only drops a
//! reference.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// From now on, [`hand_off`] hands instances to a child: for a process that exits soon after
/// its wait.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Gives a child process a reference to `fd` that it keeps until this process has exited.
/// Returns false (nothing done) unless [`enable`]d, or when the child cannot be made; then
/// the caller releases the instance itself.
pub fn hand_off(fd: RawFd) -> bool {
    if !ENABLED.load(Ordering::Relaxed) {
        return false;
    }
    let mut pipe = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return false;
    }
    let [read_end, write_end] = pipe;
    // SAFETY: the child runs only async-signal-safe calls (close_range, close, read, _exit)
    // before it exits, as required after fork in a process that may have other threads.
    match unsafe { libc::fork() } {
        -1 => {
            // SAFETY: closing the two descriptors pipe2 just made.
            unsafe {
                libc::close(read_end);
                libc::close(write_end);
            }
            false
        }
        0 => {
            // SAFETY: async-signal-safe calls only; `keep` are this child's own descriptors.
            unsafe { hold_until_parent_exits(fd, read_end) }
        }
        _ => {
            // The write end stays open until this process exits: its close is the child's cue.
            // SAFETY: closing the parent's copy of the read end, which only the child uses.
            unsafe { libc::close(read_end) };
            true
        }
    }
}

/// In the child: closes every descriptor but `fd` and `read_end` (stdout above all, so a
/// shell's `$(…)` does not wait for this process), waits for end-of-file on `read_end` (the
/// parent has exited), and exits, releasing `fd`.
unsafe fn hold_until_parent_exits(fd: RawFd, read_end: RawFd) -> ! {
    let (low, high) = if fd < read_end {
        (fd, read_end)
    } else {
        (read_end, fd)
    };
    let close_range = |first: RawFd, last: u32| {
        if first as u32 <= last {
            // SAFETY: close_range only closes this process's descriptors.
            let done = unsafe { libc::syscall(libc::SYS_close_range, first as u32, last, 0) };
            if done != 0 {
                for each in first..=(last.min(65_535) as RawFd) {
                    // SAFETY: as above, one descriptor at a time (kernels before 5.9).
                    unsafe { libc::close(each) };
                }
            }
        }
    };
    if low > 0 {
        close_range(0, (low - 1) as u32);
    }
    close_range(low + 1, (high - 1) as u32);
    close_range(high + 1, u32::MAX);
    let mut byte = 0u8;
    loop {
        // SAFETY: reading one byte into a local.
        let read = unsafe { libc::read(read_end, (&mut byte as *mut u8).cast(), 1) };
        if read >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    // SAFETY: _exit ends the child without running the parent's atexit handlers.
    unsafe { libc::_exit(0) }
}
