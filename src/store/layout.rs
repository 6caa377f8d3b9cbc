//! Where each record lives inside a data dir: every directory and every record outside a
//! bridge's own directory is named here once. A bridge's directory (`bridges/NAME/`: its
//! ledger, post index, seen and refused senders) is laid out by
//! [`crate::bridge::ledger`], the one module that reads and writes it.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::store::{ensure_dir, ensure_real_dir, validate_id};

/// A data dir (one profile). Construct with [`DataDir::new`]; paths are derived here, not
/// typed by hand elsewhere.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// The subdirectories rein creates in every data dir.
const DIRS: &[&str] = &[
    "goals",
    "sensors",
    "snapshots",
    "asks",
    "answers",
    "archive",
    "archive/asks",
    "archive/goals",
    "archive/sensors",
    "claims",
    "reports",
    "prompts",
    "notes",
    "run",
    "locks",
    "workers",
    "archive/workers",
    "agents",
];

/// Directories rein makes only when it first writes there (a data dir without loops has
/// none); swept like the others.
const MADE_ON_DEMAND: &[&str] = &["loops", "loop-runs", "archive/loops"];

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the directory skeleton (idempotent), private to the user, and checks that each
    /// of its directories is a real one: a directory replaced by a symlink is refused by name
    /// rather than written through.
    pub fn create_dirs(&self) -> Result<()> {
        ensure_dir(&self.root)?;
        for dir in DIRS {
            ensure_real_dir(&self.root.join(dir))?;
        }
        Ok(())
    }

    /// The data dir's modes as `rein status` judges them: `Some(mode)` when others (group or
    /// world) may enter or read it.
    pub fn open_to_others(&self) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        let mode = std::fs::metadata(&self.root).ok()?.mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }

    /// The warning `rein status` and `rein state` print for a data dir others can read.
    pub fn mode_warning(&self) -> Option<String> {
        self.open_to_others().map(|mode| {
            format!(
                "the data dir {} is mode {mode:o}: other users can read its asks and answers; run chmod 700 {}",
                self.root.display(),
                self.root.display()
            )
        })
    }

    /// Every directory rein writes into, for sweeping stale temp files.
    pub fn all_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.root.clone(), self.ask_keys()];
        dirs.extend(
            DIRS.iter()
                .chain(MADE_ON_DEMAND)
                .map(|dir| self.root.join(dir)),
        );
        dirs
    }

    pub fn playbook(&self) -> PathBuf {
        self.root.join("PLAYBOOK.md")
    }
    pub fn journal(&self) -> PathBuf {
        self.root.join("journal.md")
    }
    pub fn world(&self) -> PathBuf {
        self.root.join("world.json")
    }
    /// The last beat: its number, time and world hash.
    pub fn pulse(&self) -> PathBuf {
        self.root.join("pulse.json")
    }
    pub fn seeded_marker(&self) -> PathBuf {
        self.root.join(".seeded")
    }

    pub fn goals(&self) -> PathBuf {
        self.root.join("goals")
    }
    pub fn goal(&self, id: &str) -> Result<PathBuf> {
        validate_id("goal id", id)?;
        Ok(self.goals().join(format!("{id}.md")))
    }
    pub fn archived_goal(&self, id: &str, stamp: &str) -> PathBuf {
        self.root
            .join("archive/goals")
            .join(format!("{id}.{stamp}.md"))
    }

    pub fn sensors(&self) -> PathBuf {
        self.root.join("sensors")
    }
    pub fn sensor(&self, name: &str) -> Result<PathBuf> {
        validate_id("sensor name", name)?;
        Ok(self.sensors().join(format!("{name}.sh")))
    }
    pub fn archived_sensor(&self, name: &str, stamp: &str) -> PathBuf {
        self.root
            .join("archive/sensors")
            .join(format!("{name}.{stamp}.sh"))
    }

    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    pub fn snapshot(&self, name: &str) -> PathBuf {
        self.snapshots().join(format!("{name}.json"))
    }

    pub fn asks(&self) -> PathBuf {
        self.root.join("asks")
    }
    pub fn ask(&self, id: &str) -> PathBuf {
        self.asks().join(format!("{id}.json"))
    }
    pub fn asks_lock(&self) -> PathBuf {
        self.locks().join("asks.lock")
    }
    /// Touched whenever a beat sweeps every directory of stale temp files.
    pub fn swept(&self) -> PathBuf {
        self.root.join(".swept")
    }
    /// Touched whenever filing sweeps `asks/` and `asks/.keys/` of stale temp files.
    pub fn asks_swept(&self) -> PathBuf {
        self.asks().join(".swept")
    }
    /// The question index: `asks/.keys/KEY` holds the id of the latest ask of a question.
    pub fn ask_keys(&self) -> PathBuf {
        self.asks().join(".keys")
    }
    pub fn ask_key(&self, key: &str) -> PathBuf {
        self.ask_keys().join(key)
    }
    /// Marks `asks/.keys/` as built from every ask (a data dir from before the index).
    pub fn ask_keys_complete(&self) -> PathBuf {
        self.ask_keys().join(".complete")
    }
    pub fn ask_sequence(&self) -> PathBuf {
        self.asks().join(".sequence")
    }
    pub fn answers(&self) -> PathBuf {
        self.root.join("answers")
    }
    /// The index of recent resolutions: `answers/.recent/MICROS-ID`, one empty file per
    /// resolution, named by its time.
    pub fn recent_answers(&self) -> PathBuf {
        self.answers().join(".recent")
    }
    pub fn answer(&self, id: &str) -> PathBuf {
        self.answers().join(format!("{id}.json"))
    }
    pub fn archived_asks(&self) -> PathBuf {
        self.root.join("archive/asks")
    }
    pub fn archived_ask(&self, id: &str) -> PathBuf {
        self.archived_asks().join(format!("{id}.json"))
    }

    pub fn claims(&self) -> PathBuf {
        self.root.join("claims")
    }
    pub fn claim(&self, name: &str) -> Result<PathBuf> {
        validate_id("claim name", name)?;
        Ok(self.claims().join(format!("{name}.json")))
    }

    /// Serialises the reaping of claims whose holder is gone.
    pub fn claims_lock(&self) -> PathBuf {
        self.locks().join("claims.lock")
    }

    pub fn notes(&self) -> PathBuf {
        self.root.join("notes")
    }
    /// A note: `notes/TIME-ID.json` (the id starts with the time, so names sort by it).
    pub fn note(&self, id: &str) -> PathBuf {
        self.notes().join(format!("{id}.json"))
    }
    pub fn archived_notes(&self) -> PathBuf {
        self.root.join("archive/notes")
    }
    pub fn reports(&self) -> PathBuf {
        self.root.join("reports")
    }
    pub fn prompts(&self) -> PathBuf {
        self.root.join("prompts")
    }
    pub fn prompt(&self, worker: &str) -> Result<PathBuf> {
        validate_id("worker id", worker)?;
        Ok(self.prompts().join(format!("{worker}.md")))
    }
    pub fn workers(&self) -> PathBuf {
        self.root.join("workers")
    }
    /// The record of a started worker: what to run, so `rein up` can bring it back.
    pub fn worker(&self, id: &str) -> Result<PathBuf> {
        validate_id("worker id", id)?;
        Ok(self.workers().join(format!("{id}.json")))
    }
    /// Where removed workers' records go.
    pub fn archived_workers(&self) -> PathBuf {
        self.root.join("archive/workers")
    }
    pub fn archived_worker(&self, id: &str, stamp: &str) -> PathBuf {
        self.archived_workers().join(format!("{id}.{stamp}.json"))
    }

    pub fn loops(&self) -> PathBuf {
        self.root.join("loops")
    }
    /// A loop's definition: its schedule, dispatch and prompt, and its session's settings.
    pub fn loop_record(&self, name: &str) -> Result<PathBuf> {
        validate_id("loop name", name)?;
        Ok(self.loops().join(format!("{name}.json")))
    }
    pub fn loop_runs(&self) -> PathBuf {
        self.root.join("loop-runs")
    }
    /// A loop's last dispatch.
    pub fn loop_run(&self, name: &str) -> Result<PathBuf> {
        validate_id("loop name", name)?;
        Ok(self.loop_runs().join(format!("{name}.json")))
    }
    pub fn archived_loop(&self, name: &str, stamp: &str) -> PathBuf {
        self.root
            .join("archive/loops")
            .join(format!("{name}.{stamp}.json"))
    }
    /// Everything a worker's sandbox lets it write in the data dir: its HOME, its default
    /// working directory and its PTY host's socket.
    pub fn agent_dir(&self, id: &str) -> Result<PathBuf> {
        validate_id("worker id", id)?;
        Ok(self.root.join("agents").join(id))
    }
    /// The agent's HOME: the agent CLIs' own settings and state, made by rein per worker.
    pub fn agent_home(&self, id: &str) -> Result<PathBuf> {
        Ok(self.agent_dir(id)?.join("home"))
    }
    /// Why the agent waits for a person, as its hooks report it (`rein worker ls` shows it).
    pub fn agent_attention(&self, id: &str) -> Result<PathBuf> {
        Ok(self.agent_dir(id)?.join("attention.json"))
    }
    /// The agent's own dialog, as its PTY host saw it on screen.
    pub fn agent_dialog(&self, id: &str) -> Result<PathBuf> {
        Ok(self.agent_dir(id)?.join("dialog.json"))
    }
    /// Where a worker started without --dir or --worktree works.
    pub fn agent_work(&self, id: &str) -> Result<PathBuf> {
        Ok(self.agent_dir(id)?.join("work"))
    }
    /// Git worktrees rein makes for workers (`--worktree REPO`).
    pub fn worktree(&self, id: &str) -> Result<PathBuf> {
        validate_id("worker id", id)?;
        Ok(self.root.join("worktrees").join(id))
    }
    /// Where `rein worker rm` keeps a removed worker's directory.
    pub fn archived_agent(&self, id: &str, stamp: &str) -> PathBuf {
        self.root
            .join("archive/agents")
            .join(format!("{id}.{stamp}"))
    }
    /// The attach socket of a worker's PTY host (inside the worker's own writable dir).
    pub fn worker_socket(&self, id: &str) -> Result<PathBuf> {
        Ok(self.agent_dir(id)?.join("pty.sock"))
    }
    /// The gate's socket: how sandboxed workers file asks, claims, notes and reports.
    pub fn gate_socket(&self) -> PathBuf {
        self.run().join("gate.sock")
    }
    /// A report a worker filed: `reports/WORKER/NAME`.
    pub fn report(&self, worker: &str, name: &str) -> Result<PathBuf> {
        validate_id("worker id", worker)?;
        validate_id("report name", name)?;
        Ok(self.reports().join(worker).join(name))
    }
    /// When a bridge first started: notes older than that are history, not news.
    pub fn bridge_since(&self, name: &str) -> Result<PathBuf> {
        Ok(self.bridge(name)?.join("since"))
    }
    /// A bridge's own records: its delivery ledger and the inbound messages it has handled.
    pub fn bridge(&self, name: &str) -> Result<PathBuf> {
        validate_id("bridge name", name)?;
        Ok(self.root.join("bridges").join(name))
    }
    /// Runtime files (attach sockets): not records, may vanish.
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }
    /// The lock files rein waits on. Hidden from workers (`InaccessiblePaths=`): flock(2) needs
    /// only a file opened for reading, so an agent that could open one could hold it.
    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }
    /// Held while the gate's units are checked and created, so concurrent starts of workers
    /// create them once and never remove each other's.
    pub fn gate_lock(&self) -> PathBuf {
        self.locks().join("gate.lock")
    }
    /// Held by a running bridge: one bridge per ledger.
    pub fn bridge_lock(&self, name: &str) -> Result<PathBuf> {
        validate_id("bridge name", name)?;
        Ok(self.locks().join(format!("bridge.{name}.lock")))
    }
    /// Which systemd user manager runs the profile (see `fleet::owner`).
    pub fn manager_record(&self) -> PathBuf {
        self.run().join("manager.json")
    }
}
