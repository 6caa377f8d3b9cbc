//! Blocking on the data dir with inotify: no sleeps, no periodic wakeups.
//!
//! Waiting is level-triggered: [`wait_for`] evaluates its condition, blocks until something
//! it watches changes, and evaluates again. Events are only a hint to look, so a lost event
//! cannot lose a wake: an `IN_Q_OVERFLOW` just means "look again".
//!
//! Each waiter watches only what it needs ([`Target`]): whole directories (any visible file in
//! them), or single files (the world record in the data dir's root, which also holds the
//! journal that every move appends to). A target directory that is missing, or deleted and
//! re-created, is looked for from its parent — and only while it is missing — so the parent's
//! other traffic wakes nobody. Temp files (leading `.`) never wake anyone.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
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
    /// The extra descriptor given to [`Watcher::wait_with`] is readable (or hung up).
    Readable,
}

/// What a waiter watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every visible file in a directory.
    Dir(PathBuf),
    /// One file, written atomically (created, replaced by a rename, or removed).
    File(PathBuf),
}

/// What one watched directory is watched for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Interest {
    /// Any visible name wakes.
    all: bool,
    /// These names wake.
    files: BTreeSet<OsString>,
    /// These subdirectories are missing and awaited: their appearance means "look again".
    lookouts: BTreeSet<OsString>,
}

impl Interest {
    fn mask(&self) -> WatchMask {
        let mut mask = WatchMask::DELETE_SELF | WatchMask::MOVE_SELF;
        if self.all {
            mask |= WatchMask::CLOSE_WRITE
                | WatchMask::MOVED_TO
                | WatchMask::MOVED_FROM
                | WatchMask::CREATE
                | WatchMask::DELETE;
        }
        if !self.files.is_empty() {
            // Not CLOSE_WRITE: a directory whose file is watched (the data dir's root) has a
            // journal appended to on every move, which must not wake anyone.
            mask |=
                WatchMask::MOVED_TO | WatchMask::MOVED_FROM | WatchMask::CREATE | WatchMask::DELETE;
        }
        if !self.lookouts.is_empty() {
            mask |= WatchMask::CREATE | WatchMask::MOVED_TO;
        }
        mask
    }
}

/// The names that changed, for a watcher that records them ([`Watcher::record_names`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed {
    /// (watched directory, name) of each visible file that changed, in the order seen.
    pub names: Vec<(PathBuf, OsString)>,
    /// Events may have been lost, or too many names came to keep: look at everything.
    pub everything: bool,
}

/// How many changed names a recording watcher keeps before it says "everything".
const MAX_RECORDED: usize = 4096;

pub struct Watcher {
    inotify: Inotify,
    /// The changed names since the last [`Watcher::take_changed`], when recording.
    recorded: Option<Changed>,
    targets: Vec<Target>,
    /// The directories watched now, with their watch and what they are watched for.
    watches: HashMap<PathBuf, (WatchDescriptor, Interest)>,
    by_descriptor: HashMap<WatchDescriptor, PathBuf>,
    /// Watches removed on purpose, whose `IN_IGNORED` is expected and means nothing.
    retired: HashSet<WatchDescriptor>,
    buffer: Vec<u8>,
}

impl Watcher {
    /// Lets go of the watch without making the caller wait. Closing an inotify instance that
    /// has watches waits for an RCU grace period (about 15 ms measured here): a process about
    /// to exit hands it to a child that releases it after the exit ([`super::linger`]);
    /// others close it off the waiter's path, so the result reaches the caller first.
    pub fn release(self) {
        if super::linger::hand_off(self.inotify.as_raw_fd()) {
            drop(self);
        } else {
            std::thread::spawn(move || drop(self));
        }
    }

    /// Watches every visible file in `dirs`. Directories that do not exist yet are watched as
    /// soon as they appear.
    pub fn new(dirs: &[PathBuf]) -> Result<Self> {
        let targets: Vec<Target> = dirs.iter().cloned().map(Target::Dir).collect();
        Watcher::watching(&targets)
    }

    /// Watches `targets`.
    pub fn watching(targets: &[Target]) -> Result<Self> {
        let inotify = Inotify::init().map_err(|e| {
            let first = targets.first().map(target_path).unwrap_or_default();
            Error::io("starting inotify for", first, e)
        })?;
        let mut watcher = Watcher {
            inotify,
            recorded: None,
            targets: targets.to_vec(),
            watches: HashMap::new(),
            by_descriptor: HashMap::new(),
            retired: HashSet::new(),
            buffer: vec![0; 64 * 1024],
        };
        watcher.sync();
        Ok(watcher)
    }

    /// What each directory should be watched for now: the targets, and for each missing
    /// target directory, its nearest existing ancestor on the lookout for the next step.
    fn wanted(&self) -> HashMap<PathBuf, Interest> {
        let mut wanted: HashMap<PathBuf, Interest> = HashMap::new();
        for target in &self.targets {
            let (dir, file) = match target {
                Target::Dir(dir) => (dir.clone(), None),
                Target::File(file) => (
                    file.parent().map(Path::to_path_buf).unwrap_or_default(),
                    file.file_name().map(OsString::from),
                ),
            };
            if dir.is_dir() {
                let interest = wanted.entry(dir).or_default();
                match file {
                    None => interest.all = true,
                    Some(name) => {
                        interest.files.insert(name);
                    }
                }
                continue;
            }
            let mut missing = dir.as_path();
            while let (Some(parent), Some(name)) = (missing.parent(), missing.file_name()) {
                if parent.is_dir() {
                    wanted
                        .entry(parent.to_owned())
                        .or_default()
                        .lookouts
                        .insert(name.to_owned());
                    break;
                }
                missing = parent;
            }
        }
        wanted
    }

    /// Brings the watches in line with [`Watcher::wanted`]. Looks again when a directory
    /// appeared while it was being set up, so none is missed.
    fn sync(&mut self) {
        for _ in 0..8 {
            let wanted = self.wanted();
            let stale: Vec<PathBuf> = self
                .watches
                .keys()
                .filter(|path| !wanted.contains_key(*path))
                .cloned()
                .collect();
            for path in stale {
                if let Some((descriptor, _)) = self.watches.remove(&path) {
                    self.by_descriptor.remove(&descriptor);
                    if self.inotify.watches().remove(descriptor.clone()).is_ok() {
                        self.retired.insert(descriptor);
                    }
                }
            }
            for (path, interest) in &wanted {
                if self
                    .watches
                    .get(path)
                    .is_some_and(|(_, had)| had == interest)
                {
                    continue;
                }
                // Adding a watch on a watched path replaces its mask and keeps its descriptor.
                match self.inotify.watches().add(path, interest.mask()) {
                    Ok(descriptor) => {
                        self.by_descriptor.insert(descriptor.clone(), path.clone());
                        self.watches
                            .insert(path.clone(), (descriptor, interest.clone()));
                    }
                    Err(error) => {
                        tracing::debug!("cannot watch {}: {error}", path.display());
                        self.watches.remove(path);
                    }
                }
            }
            if self.wanted() == wanted {
                return;
            }
        }
    }

    /// From now on, keeps the names of the files that change, for [`Watcher::take_changed`]:
    /// a caller can then look at those alone.
    pub fn record_names(&mut self) {
        self.recorded.get_or_insert_with(Changed::default);
    }

    /// The names that changed since the last take (nothing when not recording).
    pub fn take_changed(&mut self) -> Changed {
        self.recorded
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn lost_events(&mut self) {
        if let Some(recorded) = &mut self.recorded {
            recorded.names.clear();
            recorded.everything = true;
        }
    }

    /// Blocks until something watched changes, or the deadline.
    pub fn wait(&mut self, deadline: Option<Instant>) -> Result<Wake> {
        self.wait_with(deadline, None)
    }

    /// [`Watcher::wait`], also returning [`Wake::Readable`] when `also` can be read (a
    /// terminal's input, say), so one thread can wait for both.
    pub fn wait_with(
        &mut self,
        deadline: Option<Instant>,
        also: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<Wake> {
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
            let mut poll_fds = [
                libc::pollfd {
                    fd: self.inotify.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: also.map_or(-1, |fd| fd.as_raw_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let count = if also.is_some() { 2 } else { 1 };
            // SAFETY: `count` valid pollfds that live across the call.
            let ready = unsafe { libc::poll(poll_fds.as_mut_ptr(), count, timeout_ms) };
            if ready < 0 {
                let error = std::io::Error::last_os_error();
                if error.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io(
                    "waiting on inotify for",
                    self.first_target(),
                    error,
                ));
            }
            if ready == 0 {
                continue; // the deadline check above returns Timeout
            }
            if poll_fds[0].revents != 0 {
                if let Some(wake) = self.drain()? {
                    return Ok(wake);
                }
            }
            if count == 2 && poll_fds[1].revents != 0 {
                return Ok(Wake::Readable);
            }
        }
    }

    fn first_target(&self) -> PathBuf {
        self.targets.first().map(target_path).unwrap_or_default()
    }

    /// Reads all queued events; says whether any of them should wake the waiter.
    fn drain(&mut self) -> Result<Option<Wake>> {
        let mut wake = None;
        let mut resync = false;
        loop {
            let events = match self.inotify.read_events(&mut self.buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    return Err(Error::io(
                        "reading inotify events for",
                        self.first_target(),
                        e,
                    ))
                }
            };
            let mut any = false;
            for event in events {
                any = true;
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    tracing::debug!("inotify queue overflowed; rescanning");
                    wake = Some(Wake::Rescan);
                    resync = true;
                    continue;
                }
                if event.mask.contains(EventMask::IGNORED) {
                    if self.retired.remove(&event.wd) {
                        continue; // a watch we removed ourselves
                    }
                    if let Some(path) = self.by_descriptor.remove(&event.wd) {
                        self.watches.remove(&path);
                    }
                    tracing::debug!("a watched directory went away; rescanning");
                    wake = Some(Wake::Rescan);
                    resync = true;
                    continue;
                }
                if event.mask.contains(EventMask::DELETE_SELF)
                    || event.mask.contains(EventMask::MOVE_SELF)
                {
                    wake = Some(Wake::Rescan);
                    resync = true;
                    continue;
                }
                let Some(interest) = self
                    .by_descriptor
                    .get(&event.wd)
                    .and_then(|path| self.watches.get(path))
                    .map(|(_, interest)| interest)
                else {
                    continue;
                };
                let Some(name) = event.name else {
                    continue;
                };
                if interest.lookouts.contains(name) {
                    wake = Some(Wake::Rescan);
                    resync = true;
                } else if (interest.all && !crate::store::is_hidden(&name.to_string_lossy()))
                    || interest.files.contains(name)
                {
                    wake.get_or_insert(Wake::Changed);
                    let dir = self.by_descriptor.get(&event.wd);
                    if let (Some(recorded), Some(dir)) = (&mut self.recorded, dir) {
                        if recorded.names.len() < MAX_RECORDED {
                            if !recorded.everything {
                                recorded.names.push((dir.clone(), name.to_owned()));
                            }
                        } else {
                            recorded.names.clear();
                            recorded.everything = true;
                        }
                    }
                }
            }
            if !any {
                break;
            }
        }
        if resync {
            self.lost_events();
            self.sync();
        }
        Ok(wake)
    }
}

fn target_path(target: &Target) -> PathBuf {
    match target {
        Target::Dir(path) | Target::File(path) => path.clone(),
    }
}

/// Level-triggered wait: returns the first `Some` that `check` yields, evaluating it now and
/// after every change in `dirs`; `Ok(None)` when the deadline passes first.
pub fn wait_for<T>(
    dirs: &[PathBuf],
    deadline: Option<Instant>,
    check: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let targets: Vec<Target> = dirs.iter().cloned().map(Target::Dir).collect();
    wait_for_targets(&targets, deadline, check)
}

/// [`wait_for`] on any [`Target`]s.
pub fn wait_for_targets<T>(
    targets: &[Target],
    deadline: Option<Instant>,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    // Arm before the first check, so a change between check and wait is never missed.
    let mut watcher = Watcher::watching(targets)?;
    let found = loop {
        if let Some(found) = check()? {
            break Some(found);
        }
        if watcher.wait(deadline)? == Wake::Timeout {
            break check()?;
        }
    };
    watcher.release();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Option<Instant> {
        Some(Instant::now() + Duration::from_millis(200))
    }

    #[test]
    fn only_what_is_watched_wakes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir(root.join("asks")).expect("mkdir");
        let mut watcher = Watcher::watching(&[
            Target::Dir(root.join("asks")),
            Target::File(root.join("world.json")),
        ])
        .expect("watch");
        std::fs::write(root.join("journal.md"), "a line\n").expect("write");
        std::fs::write(root.join("journal.md"), "another\n").expect("write");
        assert_eq!(watcher.wait(soon()).expect("wait"), Wake::Timeout);
        std::fs::write(root.join(".tmp-x-world.json"), "{}").expect("write");
        std::fs::rename(root.join(".tmp-x-world.json"), root.join("world.json")).expect("mv");
        assert_eq!(watcher.wait(soon()).expect("wait"), Wake::Changed);
        std::fs::write(root.join("asks/a.json"), "{}").expect("write");
        assert_eq!(watcher.wait(soon()).expect("wait"), Wake::Changed);
    }

    #[test]
    fn a_recording_watcher_names_what_changed_and_says_when_it_cannot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let asks = dir.path().join("asks");
        std::fs::create_dir(&asks).expect("mkdir");
        let mut watcher = Watcher::new(std::slice::from_ref(&asks)).expect("watch");
        watcher.record_names();
        std::fs::write(asks.join(".tmp-a"), "{}").expect("write");
        std::fs::rename(asks.join(".tmp-a"), asks.join("a.json")).expect("mv");
        std::fs::remove_file(asks.join("a.json")).expect("rm");
        assert_eq!(watcher.wait(soon()).expect("wait"), Wake::Changed);
        let changed = watcher.take_changed();
        assert!(!changed.everything);
        assert!(
            changed
                .names
                .iter()
                .all(|(d, n)| *d == asks && n == "a.json")
                && !changed.names.is_empty(),
            "{changed:?}"
        );
        assert_eq!(watcher.take_changed(), Changed::default(), "taken once");
        // The directory replaced: whatever was in the new one is unknown.
        std::fs::remove_dir(&asks).expect("rmdir");
        std::fs::create_dir(&asks).expect("mkdir again");
        assert_eq!(watcher.wait(soon()).expect("wait"), Wake::Rescan);
        assert!(watcher.take_changed().everything);
        // More names than are kept: everything.
        for n in 0..=MAX_RECORDED {
            std::fs::write(asks.join(format!("{n}.json")), "{}").expect("write");
        }
        while watcher.wait(soon()).expect("wait") != Wake::Timeout {}
        let changed = watcher.take_changed();
        assert!(
            changed.everything && changed.names.is_empty(),
            "{}",
            changed.names.len()
        );
    }

    #[test]
    fn a_missing_directory_is_awaited_and_a_recreated_one_watched_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let asks = dir.path().join("asks");
        let mut watcher = Watcher::new(std::slice::from_ref(&asks)).expect("watch");
        std::fs::write(dir.path().join("other"), "x").expect("write");
        assert_eq!(watcher.wait(soon()).expect("wait"), Wake::Timeout);
        std::fs::create_dir(&asks).expect("mkdir");
        assert_eq!(watcher.wait(soon()).expect("wait"), Wake::Rescan);
        std::fs::write(dir.path().join("other"), "y").expect("write");
        assert_eq!(
            watcher.wait(soon()).expect("wait"),
            Wake::Timeout,
            "once asks/ is watched, its parent is not"
        );
        std::fs::remove_dir(&asks).expect("rmdir");
        assert_eq!(watcher.wait(soon()).expect("wait"), Wake::Rescan);
        std::fs::create_dir(&asks).expect("mkdir");
        assert_eq!(watcher.wait(soon()).expect("wait"), Wake::Rescan);
        std::fs::write(asks.join("b.json"), "{}").expect("write");
        assert_eq!(watcher.wait(soon()).expect("wait"), Wake::Changed);
    }
}
