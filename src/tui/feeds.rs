//! Where the screen's news comes from, without polling: inotify on the data dir, systemd's
//! D-Bus signals, and journald's transcript lines. Each feed is a task on the screen's
//! runtime that sleeps until the kernel or the bus has something, and sends a [`Feed`] to the
//! screen's loop; nothing here wakes on a timer.
//!
//! When the user manager goes away the fleet feed says so and waits, with inotify on the
//! runtime dir, for its sockets to be made again; then it reconnects and reads the fleet
//! afresh (a few quick retries follow each such change, bounded, never a steady timer).

use std::collections::{BTreeSet, HashMap};

use futures_util::FutureExt;
use std::path::PathBuf;
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use zbus::message::Sequence;

use crate::fleet::pulse::{self, PulseStatus};
use crate::fleet::UnitNames;
use crate::paths::Paths;
use crate::store::{self, DataDir};
use crate::systemd::{Manager, ServiceState, SystemdError, UnitSignal};
use crate::tui::loops::LoopInfo;
use crate::tui::model::ManagerLink;

/// News for the screen's loop.
#[derive(Debug)]
pub enum Feed {
    /// Files changed in the data dir.
    Data(DataChange),
    Manager(ManagerLink),
    /// Every worker unit, read after (re)connecting.
    AllUnits(Vec<(String, ServiceState)>),
    /// One worker unit's new state; `None` when it was unloaded.
    Unit(String, Option<ServiceState>),
    Pulse(Option<PulseStatus>),
    /// A loop's units changed: list the loops again.
    LoopsChanged,
    Loops(Vec<LoopInfo>),
    /// The last line a worker's agent printed.
    Output {
        worker: String,
        line: String,
    },
}

/// What changed in the data dir, by kind of record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DataChange {
    pub asks: bool,
    pub notes: bool,
    pub journal: bool,
    pub workers: bool,
    pub loops: bool,
    pub pulse: bool,
    /// Workers whose `attention.json` changed.
    pub attention: BTreeSet<String>,
    /// Events were lost (queue overflow, a directory replaced): read everything again.
    pub everything: bool,
}

impl DataChange {
    fn is_empty(&self) -> bool {
        *self == DataChange::default()
    }
}

/// An inotify instance on the screen's runtime: readable is a wake, never a timer.
fn registered(inotify: Inotify) -> std::io::Result<AsyncFd<Inotify>> {
    // SAFETY: the Inotify owns its descriptor, keeps it open and returns that same one from
    // as_raw_fd for as long as it lives, and the AsyncFd owns the Inotify.
    unsafe { AsyncFd::register_with_interest(inotify, tokio::io::Interest::READABLE) }
        .map_err(|error| error.into_parts().1)
}

/// What a watched directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Watched {
    Root,
    Asks,
    Notes,
    Workers,
    Loops,
    Agents,
    Agent(String),
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

/// The data dir's watches.
struct DataWatch {
    inotify: AsyncFd<Inotify>,
    root: PathBuf,
    watches: HashMap<WatchDescriptor, Watched>,
}

impl DataWatch {
    fn new(dir: &DataDir) -> std::io::Result<DataWatch> {
        let inotify = Inotify::init()?;
        let mut watch = DataWatch {
            inotify: registered(inotify)?,
            root: dir.root().to_owned(),
            watches: HashMap::new(),
        };
        watch.arm();
        Ok(watch)
    }

    /// Adds every watch that is missing (a directory made since, or replaced); returns the
    /// agents newly watched, whose files may have been written before their watch.
    fn arm(&mut self) -> Vec<String> {
        let mut new_agents = Vec::new();
        let root = self.root.clone();
        let mut wanted = vec![
            (root.clone(), Watched::Root),
            (root.join("asks"), Watched::Asks),
            (root.join("answers"), Watched::Asks),
            (root.join("notes"), Watched::Notes),
            (root.join("workers"), Watched::Workers),
            // Loops are built elsewhere; these are their records (see `tui::loops`).
            (root.join("loops"), Watched::Loops),
            (root.join("loop-runs"), Watched::Loops),
            (root.join("agents"), Watched::Agents),
        ];
        if let Ok(entries) = std::fs::read_dir(root.join("agents")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if store::validate_id("worker id", &name).is_ok() {
                    wanted.push((entry.path(), Watched::Agent(name)));
                }
            }
        }
        for (path, kind) in wanted {
            if self
                .watches
                .values()
                .any(|k| *k == kind && kind != Watched::Asks)
            {
                continue;
            }
            if let Ok(descriptor) = self.inotify.get_mut().watches().add(&path, mask()) {
                if let Watched::Agent(id) = &kind {
                    new_agents.push(id.clone());
                }
                self.watches.insert(descriptor, kind);
            }
        }
        new_agents
    }

    /// Waits for changes and says what they touched.
    async fn next(&mut self) -> std::io::Result<DataChange> {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let mut guard = self.inotify.readable_mut().await?;
            let mut change = DataChange::default();
            let mut rearm = false;
            loop {
                let read = guard.try_io(|inner| {
                    let events: Vec<(WatchDescriptor, EventMask, Option<String>)> = inner
                        .get_mut()
                        .read_events(&mut buffer)?
                        .map(|e| {
                            (
                                e.wd.clone(),
                                e.mask,
                                e.name.map(|n| n.to_string_lossy().into_owned()),
                            )
                        })
                        .collect();
                    Ok(events)
                });
                let events = match read {
                    Ok(Ok(events)) if !events.is_empty() => events,
                    Ok(Ok(_)) => break,
                    Ok(Err(error)) => return Err(error),
                    Err(_would_block) => break,
                };
                for (descriptor, mask, name) in events {
                    if mask.contains(EventMask::Q_OVERFLOW) {
                        change.everything = true;
                        rearm = true;
                        continue;
                    }
                    if mask.contains(EventMask::IGNORED)
                        || mask.contains(EventMask::DELETE_SELF)
                        || mask.contains(EventMask::MOVE_SELF)
                    {
                        self.watches.remove(&descriptor);
                        change.everything = true;
                        rearm = true;
                        continue;
                    }
                    let Some(kind) = self.watches.get(&descriptor) else {
                        continue;
                    };
                    let name = name.unwrap_or_default();
                    if store::is_hidden(&name) {
                        continue;
                    }
                    match kind {
                        Watched::Root => match name.as_str() {
                            "journal.md" => change.journal = true,
                            "pulse.json" => change.pulse = true,
                            _ if mask.contains(EventMask::ISDIR) => {
                                rearm = true;
                                change.everything = true;
                            }
                            _ => {}
                        },
                        Watched::Asks => change.asks = true,
                        Watched::Notes => change.notes = true,
                        Watched::Workers => change.workers = true,
                        Watched::Loops => change.loops = true,
                        Watched::Agents => rearm = true,
                        Watched::Agent(id) => {
                            if name == "attention.json" {
                                change.attention.insert(id.clone());
                            }
                        }
                    }
                }
            }
            if rearm {
                change.attention.extend(self.arm());
            }
            if !change.is_empty() {
                return Ok(change);
            }
        }
    }
}

/// Starts watching the data dir now — before the screen's first read of it, so nothing that
/// changes in between is missed — and returns the task that follows it until the screen ends.
pub fn follow_data_dir(
    dir: &DataDir,
    feed: UnboundedSender<Feed>,
) -> impl std::future::Future<Output = ()> {
    let watch = DataWatch::new(dir);
    async move {
        let mut watch = match watch {
            Ok(watch) => watch,
            Err(error) => {
                tracing::warn!(%error, "cannot watch the data dir; the screen will not follow it");
                return;
            }
        };
        follow_watch(&mut watch, feed).await;
    }
}

async fn follow_watch(watch: &mut DataWatch, feed: UnboundedSender<Feed>) {
    while let Ok(change) = watch.next().await {
        if feed.send(Feed::Data(change)).is_err() {
            return;
        }
    }
}

/// What the screen asks of the fleet feed.
#[derive(Debug)]
pub enum FleetRequest {
    /// Read this unit again (memory and CPU are not signalled).
    Refresh(String),
    /// Read the pulse's status again (`pulse.json` changed).
    Pulse,
}

/// Follows the user manager until the screen ends: connect, read the fleet, follow the
/// signals; when the manager goes away, say so and wait for it to come back.
pub async fn follow_fleet(
    paths: Paths,
    feed: UnboundedSender<Feed>,
    mut requests: UnboundedReceiver<FleetRequest>,
    current: watch::Sender<Option<Manager>>,
) {
    let names = UnitNames::new(&paths);
    // Quick retries after a change in the runtime dir: a manager starting up makes its
    // sockets before it answers on them.
    const RETRIES: [u64; 5] = [100, 250, 500, 1000, 2000];
    let mut retry = RETRIES.len();
    loop {
        // Armed before connecting, so a manager that appears meanwhile is not missed.
        let mut runtime_dir = RuntimeDirWatch::new();
        let why = match Manager::connect().await {
            Ok(manager) => {
                retry = RETRIES.len();
                let _ = current.send(Some(manager.clone()));
                if feed.send(Feed::Manager(ManagerLink::Connected)).is_err() {
                    return;
                }
                let why = follow(&manager, &paths, &names, &feed, &mut requests).await;
                let _ = current.send(None);
                why
            }
            Err(error) => short_reason(&error),
        };
        if feed
            .send(Feed::Manager(ManagerLink::Unreachable(why)))
            .is_err()
        {
            return;
        }
        if retry < RETRIES.len() {
            tokio::time::sleep(Duration::from_millis(RETRIES[retry])).await;
            retry += 1;
            continue;
        }
        match runtime_dir.as_mut() {
            Some(watch) => watch.changed().await,
            // Nothing to watch: stay unreachable rather than poll.
            None => std::future::pending::<()>().await,
        }
        retry = 0;
    }
}

fn short_reason(error: &SystemdError) -> String {
    match error {
        SystemdError::Unreachable { .. } => "no user manager answers".to_owned(),
        SystemdError::Disconnected => "the user manager went away".to_owned(),
        other => other.to_string(),
    }
}

/// A worker unit's state and the position of the read among received signals.
struct Kept {
    state: ServiceState,
    read_at: Option<Sequence>,
}

/// Reads the fleet, then follows the signals until the connection is lost; returns why.
async fn follow(
    manager: &Manager,
    paths: &Paths,
    names: &UnitNames,
    feed: &UnboundedSender<Feed>,
    requests: &mut UnboundedReceiver<FleetRequest>,
) -> String {
    match follow_inner(manager, paths, names, feed, requests).await {
        Ok(()) => "the screen stopped following".to_owned(),
        Err(error) => short_reason(&error),
    }
}

async fn follow_inner(
    manager: &Manager,
    paths: &Paths,
    names: &UnitNames,
    feed: &UnboundedSender<Feed>,
    requests: &mut UnboundedReceiver<FleetRequest>,
) -> Result<(), SystemdError> {
    // Subscribed before the reads, so no change between read and signal is lost.
    let mut signals = manager.unit_signals().await?;
    let entries = manager.list(&[&names.worker_pattern()]).await?;
    // A few properties per unit, not every one (GetAll costs systemd a millisecond of CPU
    // per unit: half a second before a fleet of 500 shows).
    let reads = entries.iter().map(|e| manager.listed_service_state_at(e));
    let mut kept: HashMap<String, Kept> = HashMap::new();
    for (entry, read) in entries
        .iter()
        .zip(futures_util::future::join_all(reads).await)
    {
        if let Some((state, read_at)) = read? {
            kept.insert(
                entry.name.clone(),
                Kept {
                    state,
                    read_at: Some(read_at),
                },
            );
        }
    }
    let all = kept
        .iter()
        .map(|(unit, k)| (unit.clone(), k.state.clone()))
        .collect();
    if feed.send(Feed::AllUnits(all)).is_err() {
        return Ok(());
    }
    send_pulse(manager, paths, names, feed).await;
    let pulse_units = [names.pulse_timer(), names.pulse_service()];
    let loop_prefix = names
        .worker_pattern()
        .trim_end_matches("worker-*.service")
        .to_owned()
        + "loop-";
    loop {
        let first = tokio::select! {
            signal = signals.next() => signal?,
            request = requests.recv() => {
                match request {
                    Some(FleetRequest::Refresh(unit)) => {
                        if read_listed(manager, &unit, &mut kept).await? {
                            let state = kept.get(&unit).map(|k| k.state.clone());
                            let _ = feed.send(Feed::Unit(unit, state));
                        }
                    }
                    Some(FleetRequest::Pulse) => send_pulse(manager, paths, names, feed).await,
                    None => return Ok(()),
                }
                continue;
            }
        };
        // Signals that arrived together are one change: a unit passing through `failed` on
        // its way to `auto-restart` is sent once, in its final state.
        let mut batch = vec![first];
        while let Some(next) = signals.next().now_or_never() {
            batch.push(next?);
        }
        let mut dirty = BTreeSet::new();
        let mut pulse_changed = false;
        let mut loops_changed = false;
        for signal in batch {
            let unit = match &signal {
                UnitSignal::New(unit) | UnitSignal::Removed(unit) => unit.clone(),
                UnitSignal::Changed(change) => change.unit.clone(),
            };
            tracing::trace!(?signal, "unit signal");
            // Reading a unit that is not loaded makes systemd load it for the read and unload
            // it after, with UnitNew and UnitRemoved: births and removals are checked with a
            // list (which loads nothing) before anything is read, or the screen would feed
            // itself.
            let changed = matches!(signal, UnitSignal::Changed(_));
            if pulse_units.contains(&unit) {
                pulse_changed |= changed;
                continue;
            }
            if unit.starts_with(&loop_prefix) {
                loops_changed |= changed;
                continue;
            }
            if names.worker_id(&unit).is_none() {
                continue;
            }
            match signal {
                UnitSignal::New(_) => {
                    if !kept.contains_key(&unit) && read_listed(manager, &unit, &mut kept).await? {
                        dirty.insert(unit);
                    }
                }
                UnitSignal::Removed(_) => {
                    if kept.remove(&unit).is_some() {
                        dirty.insert(unit);
                    }
                }
                UnitSignal::Changed(change) => {
                    let Some(entry) = kept.get_mut(&unit) else {
                        if read_listed(manager, &unit, &mut kept).await? {
                            dirty.insert(unit);
                        }
                        continue;
                    };
                    // A signal the last read already reflects would undo newer values.
                    if entry.read_at.is_some_and(|at| change.position() <= at) {
                        continue;
                    }
                    let before = entry.state.clone();
                    if change.apply_to(&mut entry.state) {
                        read_into(manager, &unit, &mut kept).await?;
                        dirty.insert(unit);
                    } else if entry.state != before {
                        dirty.insert(unit);
                    }
                }
            }
        }
        for unit in dirty {
            let state = kept.get(&unit).map(|k| k.state.clone());
            if feed.send(Feed::Unit(unit, state)).is_err() {
                return Ok(());
            }
        }
        if pulse_changed {
            send_pulse(manager, paths, names, feed).await;
        }
        if loops_changed {
            let _ = feed.send(Feed::LoopsChanged);
        }
    }
}

/// Reads a unit only if it is loaded (see above); says whether what is kept changed.
async fn read_listed(
    manager: &Manager,
    unit: &str,
    kept: &mut HashMap<String, Kept>,
) -> Result<bool, SystemdError> {
    if manager.list(&[unit]).await?.is_empty() {
        return Ok(kept.remove(unit).is_some());
    }
    read_into(manager, unit, kept).await
}

/// Reads a unit into what is kept; says whether that changed.
async fn read_into(
    manager: &Manager,
    unit: &str,
    kept: &mut HashMap<String, Kept>,
) -> Result<bool, SystemdError> {
    match manager.service_state_at(unit).await? {
        Some((state, read_at)) => {
            let changed = kept.get(unit).is_none_or(|k| k.state != state);
            kept.insert(
                unit.to_owned(),
                Kept {
                    state,
                    read_at: Some(read_at),
                },
            );
            Ok(changed)
        }
        None => Ok(kept.remove(unit).is_some()),
    }
}

/// The pulse's status; `None` while its timer is not loaded (read without loading it).
async fn send_pulse(
    manager: &Manager,
    paths: &Paths,
    names: &UnitNames,
    feed: &UnboundedSender<Feed>,
) {
    let loaded = manager
        .list(&[&names.pulse_timer()])
        .await
        .map(|units| !units.is_empty());
    match loaded {
        Ok(true) => {}
        Ok(false) => {
            let _ = feed.send(Feed::Pulse(None));
            return;
        }
        Err(error) => {
            tracing::debug!(%error, "cannot list the pulse's units");
            return;
        }
    }
    match pulse::status(manager, paths).await {
        Ok(status) => {
            let _ = feed.send(Feed::Pulse(Some(status)));
        }
        Err(error) => tracing::debug!(%error, "cannot read the pulse's status"),
    }
}

/// inotify on the runtime dir and its `systemd/`, where a user manager makes its sockets.
struct RuntimeDirWatch {
    inotify: AsyncFd<Inotify>,
}

impl RuntimeDirWatch {
    fn new() -> Option<RuntimeDirWatch> {
        let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                // SAFETY: getuid has no preconditions and cannot fail.
                let uid = unsafe { libc::getuid() };
                PathBuf::from(format!("/run/user/{uid}"))
            });
        let inotify = Inotify::init().ok()?;
        let mask = WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::ATTRIB;
        let mut armed = false;
        for dir in [runtime_dir.clone(), runtime_dir.join("systemd")] {
            armed |= inotify.watches().add(&dir, mask).is_ok();
        }
        armed.then_some(())?;
        Some(RuntimeDirWatch {
            inotify: registered(inotify).ok()?,
        })
    }

    /// Returns once something was made in the runtime dir.
    async fn changed(&mut self) {
        let mut buffer = [0u8; 4096];
        loop {
            let Ok(mut guard) = self.inotify.readable_mut().await else {
                return std::future::pending().await;
            };
            let read =
                guard.try_io(|inner| inner.get_mut().read_events(&mut buffer).map(|e| e.count()));
            if let Ok(Ok(count)) = read {
                if count > 0 {
                    return;
                }
            }
        }
    }
}

/// Follows the agents' transcripts in journald (`REIN_STREAM=transcript`) and sends each
/// worker's latest line. journalctl sleeps on the journal's inotify between entries.
pub async fn follow_transcripts(profile: String, feed: UnboundedSender<Feed>) {
    use tokio::io::AsyncBufReadExt;
    let child = tokio::process::Command::new("journalctl")
        .args([
            "--follow",
            "--output=json",
            "--lines=2000",
            &format!("REIN_PROFILE={profile}"),
            "REIN_STREAM=transcript",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            tracing::debug!(%error, "no journalctl: the last output column stays empty");
            return;
        }
    };
    let Some(stdout) = child.stdout.take() else {
        return;
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Some((worker, text)) = transcript_line(&line) else {
            continue;
        };
        if feed.send(Feed::Output { worker, line: text }).is_err() {
            break;
        }
    }
    let _ = child.kill().await;
}

/// The worker and text of one `journalctl --output=json` entry. journald gives a message
/// that is not valid UTF-8 as an array of bytes.
fn transcript_line(json: &str) -> Option<(String, String)> {
    let entry: serde_json::Value = serde_json::from_str(json).ok()?;
    let worker = entry["REIN_WORKER"].as_str()?.to_owned();
    let text = match &entry["MESSAGE"] {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(bytes) => {
            let bytes: Vec<u8> = bytes
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => return None,
    };
    Some((worker, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_entries_give_worker_and_text() {
        let entry = r#"{"REIN_WORKER":"w1","MESSAGE":"hello","REIN_STREAM":"transcript"}"#;
        assert_eq!(
            transcript_line(entry),
            Some(("w1".to_owned(), "hello".to_owned()))
        );
        let bytes = r#"{"REIN_WORKER":"w1","MESSAGE":[104,105,255]}"#;
        assert_eq!(
            transcript_line(bytes).map(|(_, t)| t),
            Some("hi\u{fffd}".to_owned())
        );
        assert_eq!(transcript_line(r#"{"MESSAGE":"x"}"#), None);
    }

    #[tokio::test]
    async fn data_dir_changes_are_classified() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(temp.path());
        dir.create_dirs().expect("dirs");
        let mut watch = DataWatch::new(&dir).expect("watch");
        std::fs::write(dir.notes().join("n1.json"), "{}").expect("write");
        let change = watch.next().await.expect("change");
        assert!(change.notes && !change.asks, "{change:?}");
        std::fs::write(dir.answers().join(".tmp"), "x").expect("write");
        std::fs::write(dir.journal(), "- x\n").expect("write");
        let change = watch.next().await.expect("change");
        assert!(
            change.journal && !change.asks,
            "temp files are not news: {change:?}"
        );
        std::fs::create_dir_all(dir.agent_dir("w1").expect("dir")).expect("mkdir");
        std::fs::write(dir.agent_attention("w1").expect("path"), "{}").expect("write");
        let mut attention = false;
        for _ in 0..3 {
            let change = watch.next().await.expect("change");
            if change.attention.contains("w1") {
                attention = true;
                break;
            }
        }
        assert!(attention, "a new agent dir is watched at once");
    }
}
