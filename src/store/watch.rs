//! Blocking on the data dir with inotify: no sleeps, no periodic wakeups.
//!
//! Waiting is level-triggered: [`wait_for`] evaluates its condition, blocks until any visible
//! file in the watched directories changes, and evaluates again. Events are only a hint to
//! look, so a lost event cannot lose a wake: an `IN_Q_OVERFLOW` just means "look again", and a
//! watched directory that is deleted and re-created (`IN_IGNORED`, then `IN_CREATE` in its
//! parent) is watched again and rescanned. Temp files (leading `.`) never wake anyone.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use crate::error::{Error, Result};

/// Why a wait returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A visible file changed.
    Changed,
    /// Events may have been lost (queue overflow, a directory replaced): look at everything.
    Rescan,
    /// The deadline passed.
    Timeout,
}

pub struct Watcher {
    inotify: Inotify,
    /// Every watched directory and its watch, if armed. Parents of the targets are included
    /// so a re-created target is noticed.
    watched: HashMap<PathBuf, Option<WatchDescriptor>>,
    buffer: Vec<u8>,
}

fn mask() -> WatchMask {
    WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
}

impl Watcher {
    /// Watches `dirs` (and their parents). Directories that do not exist yet are watched as
    /// soon as they appear.
    pub fn new(dirs: &[PathBuf]) -> Result<Self> {
        let inotify = Inotify::init().map_err(|e| {
            let first = dirs.first().cloned().unwrap_or_default();
            Error::io("starting inotify for", first, e)
        })?;
        let mut watched = HashMap::new();
        for dir in dirs {
            watched.insert(dir.clone(), None);
            if let Some(parent) = dir.parent() {
                watched.entry(parent.to_owned()).or_insert(None);
            }
        }
        let mut watcher = Watcher {
            inotify,
            watched,
            buffer: vec![0; 64 * 1024],
        };
        watcher.arm();
        Ok(watcher)
    }

    /// Adds a watch to every directory that lacks one; missing directories stay unarmed.
    fn arm(&mut self) {
        for (dir, watch) in self.watched.iter_mut() {
            if watch.is_none() {
                *watch = self.inotify.watches().add(dir, mask()).ok();
            }
        }
    }

    fn disarm(&mut self, descriptor: &WatchDescriptor) {
        for watch in self.watched.values_mut() {
            if watch.as_ref() == Some(descriptor) {
                *watch = None;
            }
        }
    }

    /// Blocks until something visible changes in a watched directory, or the deadline.
    pub fn wait(&mut self, deadline: Option<Instant>) -> Result<Wake> {
        loop {
            let timeout_ms = match deadline {
                None => -1,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Wake::Timeout);
                    }
                    left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
                }
            };
            let mut poll_fd = libc::pollfd {
                fd: self.inotify.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd that lives across the call.
            let ready = unsafe { libc::poll(&mut poll_fd, 1, timeout_ms) };
            if ready < 0 {
                let error = std::io::Error::last_os_error();
                if error.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io("waiting on inotify for", self.first_dir(), error));
            }
            if ready == 0 {
                continue; // the deadline check above returns Timeout
            }
            if let Some(wake) = self.drain()? {
                return Ok(wake);
            }
        }
    }

    fn first_dir(&self) -> PathBuf {
        self.watched.keys().next().cloned().unwrap_or_default()
    }

    /// Reads all queued events; says whether any of them should wake the waiter.
    fn drain(&mut self) -> Result<Option<Wake>> {
        let mut wake = None;
        let mut lost = Vec::new();
        loop {
            let events = match self.inotify.read_events(&mut self.buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(Error::io("reading inotify events for", self.first_dir(), e)),
            };
            let mut any = false;
            for event in events {
                any = true;
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    tracing::debug!("inotify queue overflowed; rescanning");
                    wake = Some(Wake::Rescan);
                } else if event.mask.contains(EventMask::IGNORED)
                    || event.mask.contains(EventMask::DELETE_SELF)
                    || event.mask.contains(EventMask::MOVE_SELF)
                {
                    tracing::debug!("a watched directory went away; re-arming and rescanning");
                    lost.push(event.wd.clone());
                    wake = Some(Wake::Rescan);
                } else {
                    let visible = event
                        .name
                        .map(|name| !crate::store::is_hidden(&name.to_string_lossy()))
                        .unwrap_or(true);
                    if visible && wake.is_none() {
                        wake = Some(Wake::Changed);
                    }
                }
            }
            if !any {
                break;
            }
        }
        for descriptor in &lost {
            self.disarm(descriptor);
        }
        if wake.is_some() {
            self.arm();
        }
        Ok(wake)
    }
}

/// Level-triggered wait: returns the first `Some` that `check` yields, evaluating it now and
/// after every change in `dirs`; `Ok(None)` when the deadline passes first.
pub fn wait_for<T>(
    dirs: &[PathBuf],
    deadline: Option<Instant>,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    // Arm before the first check, so a change between check and wait is never missed.
    let mut watcher = Watcher::new(dirs)?;
    let found = loop {
        if let Some(found) = check()? {
            break Some(found);
        }
        if watcher.wait(deadline)? == Wake::Timeout {
            break check()?;
        }
    };
    // Closing an inotify instance that has watches waits for an RCU grace period (about 15 ms
    // measured here): a process about to exit hands it to a child that releases it after
    // the exit (`linger`); others close it off the waiter's path, so the result reaches the
    // caller first.
    if super::linger::hand_off(watcher.inotify.as_raw_fd()) {
        drop(watcher);
    } else {
        std::thread::spawn(move || drop(watcher));
    }
    Ok(found)
}
