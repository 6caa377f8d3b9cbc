//! Where each record lives inside a data dir. Every path rein uses is named here once.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::store::{ensure_dir, validate_id};

/// A data dir (one profile). Construct with [`DataDir::new`]; paths are derived, never typed
/// by hand elsewhere.
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
    "workers",
    "archive/workers",
    "agents",
];

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the directory skeleton (idempotent).
    pub fn create_dirs(&self) -> Result<()> {
        ensure_dir(&self.root)?;
        for dir in DIRS {
            ensure_dir(&self.root.join(dir))?;
        }
        Ok(())
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
        self.asks().join(".lock")
    }
    /// The question index: `asks/.keys/KEY` holds the id of the latest ask of a question.
    pub fn ask_keys(&self) -> PathBuf {
        self.asks().join(".keys")
    }
    pub fn ask_key(&self, key: &str) -> PathBuf {
        self.ask_keys().join(key)
    }
    pub fn ask_sequence(&self) -> PathBuf {
        self.asks().join(".sequence")
    }
    pub fn answers(&self) -> PathBuf {
        self.root.join("answers")
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

    pub fn notes(&self) -> PathBuf {
        self.root.join("notes")
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
    pub fn archived_worker(&self, id: &str, stamp: &str) -> PathBuf {
        self.root
            .join("archive/workers")
            .join(format!("{id}.{stamp}.json"))
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
    /// A bridge's own records: its delivery ledger and the inbound messages it has handled.
    pub fn bridge(&self, name: &str) -> Result<PathBuf> {
        validate_id("bridge name", name)?;
        Ok(self.root.join("bridges").join(name))
    }
    /// Runtime files (attach sockets): not records, may vanish.
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }
}
