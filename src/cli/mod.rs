//! The command line: the clap definition (the single source of `--help`, the man pages and
//! the completions) and the dispatch to one file per verb group.

pub mod data;
pub mod fleet;
pub mod hook;
pub mod loops;
pub mod mailbox;
pub mod man;
pub mod output;
pub mod tui;
pub mod worker;
pub mod world;

use std::io::Read;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{Config, Preset};
use crate::duration::Span;
use crate::error::Error;
use crate::paths::Paths;

/// rein: a control loop for fleets of AI coding agents that lives inside systemd and keeps a
/// human in the loop.
#[derive(Debug, Parser)]
#[command(
    name = "rein",
    version,
    about = "A control loop for fleets of AI coding agents that keeps a human in the loop",
    long_about = "A control loop for fleets of AI coding agents that lives inside systemd and keeps a human in the loop.\n\n\
Workers ask questions with `rein ask`; people answer with `rein answer` (or through a bridge); \
a judge loops on `rein wait`. Data lives in $REIN_DATA_DIR (default ~/.local/state/rein); \
configuration in $REIN_CONFIG (default ~/.config/rein/config.toml).\n\n\
Exit codes: 0 success, 1 failure, 2 usage or invalid input, 3 timed out, 4 withdrawn, \
5 conflict (already answered, already claimed, already running).",
    after_help = "See rein(1) and rein-VERB(1) for each verb, rein-files(5) for the data dir and rein-config(5) for the config."
)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the config (if missing) and seed the data dir; never overwrites your edits.
    ///
    /// Seeds (the playbook, goals/setup.md, sensors/today.sh and the setup ask) go into a data
    /// dir once: one you archived or removed stays gone. With an existing config naming
    /// another runner, --runner is refused (exit 5) rather than silently ignored.
    Init {
        /// The agent that workers run (default claude for a new config).
        #[arg(long, value_enum)]
        runner: Option<Preset>,
    },
    /// Ask a human and block until answered; prints only the answer.
    ///
    /// Exit 0 answered, 3 timed out (the ask stays pending), 4 withdrawn. Re-running the same
    /// ask (same worker, same prompt) waits on the existing ask instead of filing a duplicate,
    /// and an answer that came while nobody waited is delivered.
    Ask {
        /// The question (at most 64 KiB); `-` reads it from stdin.
        #[arg(long, short = 'p', value_name = "TEXT|-")]
        prompt: Option<String>,
        /// What the question is about (a file, a PR, a goal; at most 1 KiB).
        #[arg(long = "ref", value_name = "R")]
        reference: Option<String>,
        /// Allowed answers, comma-separated (e.g. yes,no; at most 32 of 200 bytes each).
        /// Without it the answer is free text.
        #[arg(long, value_name = "A,B")]
        options: Option<String>,
        /// Give up after this long (500ms, 30s, 5m, 1h) with exit 3.
        #[arg(long, value_name = "DUR")]
        timeout: Option<Span>,
        /// The asking worker (default $REIN_WORKER_ID, else `human`).
        #[arg(long, value_name = "ID")]
        worker: Option<String>,
    },
    /// Answer an ask. The first answer wins; a later one fails and says who answered.
    Answer {
        /// The ask's id (see `rein asks`).
        id: String,
        /// The answer (at most 64 KiB); `-` reads it from stdin.
        #[arg(value_name = "TEXT|-", conflicts_with = "interactive")]
        text: Option<String>,
        /// Who is answering: cli:$USER (the default) or konsole:$USER (a tab the Konsole
        /// bridge opened). Slack, SMS and email identities come only from their bridges.
        #[arg(long = "as", value_name = "IDENTITY")]
        identity: Option<String>,
        /// Show the ask and prompt for the answer; ends when it is answered here or elsewhere.
        #[arg(long, short = 'i')]
        interactive: bool,
    },
    /// List pending asks (with --all, answered, withdrawn and archived ones too).
    Asks {
        #[arg(long)]
        all: bool,
    },
    /// Withdraw a pending ask; the waiting worker's `rein ask` exits 4.
    ///
    /// Recorded as cli:$USER. A withdrawn ask is final: the worker's `rein ask` exits 4 and
    /// the same question from the same worker is not filed again.
    Withdraw {
        id: String,
        /// Who is withdrawing: cli:$USER (the default) or konsole:$USER.
        #[arg(long = "as", value_name = "IDENTITY")]
        identity: Option<String>,
    },
    /// Block until something is new since a token: a new ask, an ask answered or withdrawn,
    /// a note, a worker a beat found failed or exited, or a changed world.
    ///
    /// Without --since it prints the current state at once. Every output carries a `token`
    /// for the next call, so a judge loop never spins on something it has already seen; the
    /// output's `woke` lists each reason (new_asks, answered, withdrawn, notes, workers,
    /// world_changed).
    Wait {
        /// Only new asks wake; nothing else does.
        #[arg(long)]
        only_asks: bool,
        /// Give up after this long with exit 3.
        #[arg(long, value_name = "DUR")]
        timeout: Option<Span>,
        /// The token from the previous `rein wait` or `rein state`.
        #[arg(long, value_name = "TOKEN")]
        since: Option<String>,
    },
    /// Show the world hash, snapshots, asks, goals, claims, journal tail and a wait token.
    State,
    /// Run every sensor once, in parallel; write snapshots; print the world hash.
    ///
    /// This runs every sensor now, even one whose `# rein: every SPAN` line makes beats run
    /// it less often.
    Sense,
    /// Goals: files describing desired state.
    #[command(subcommand)]
    Goal(GoalCommand),
    /// Sensors: scripts that each print one JSON object about the world.
    #[command(subcommand)]
    Sensor(SensorCommand),
    /// The playbook: judgment, priorities and guardrails.
    #[command(subcommand)]
    Playbook(PlaybookCommand),
    /// Leave a note for the human; bridges relay it.
    Notify {
        /// The note (at most 64 KiB); `-` reads it from stdin.
        #[arg(value_name = "MESSAGE|-")]
        message: String,
        /// The worker sending it (default $REIN_WORKER_ID, else `human`).
        #[arg(long, value_name = "ID")]
        worker: Option<String>,
    },
    /// Show the last lines of the journal.
    Journal {
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
    /// Take an exclusive lease on NAME; exit 5 if someone alive holds it.
    Claim {
        name: String,
        /// The holder process (default: the caller's parent, i.e. the agent's shell).
        #[arg(long)]
        pid: Option<u32>,
        /// The claiming worker (default $REIN_WORKER_ID, else `human`).
        #[arg(long, value_name = "ID")]
        worker: Option<String>,
    },
    /// Release a lease you hold (a worker: only its own).
    Unclaim {
        name: String,
        /// Release it even though someone else alive holds it (people only).
        #[arg(long)]
        force: bool,
    },
    /// File a deliverable for people: reports/WORKER/NAME.
    ///
    /// Inside a worker the report is filed as that worker (through rein's gate).
    Report {
        /// The report's name (like an id: report.md, summary-2026-11-30.txt).
        name: String,
        /// The report's text; `-` reads it from stdin.
        #[arg(
            value_name = "TEXT|-",
            conflicts_with = "file",
            required_unless_present = "file"
        )]
        text: Option<String>,
        /// Read the report from this file.
        #[arg(long, value_name = "PATH")]
        file: Option<std::path::PathBuf>,
        /// The reporting worker outside a worker (default $REIN_WORKER_ID, else `human`).
        #[arg(long, value_name = "ID")]
        worker: Option<String>,
    },
    /// Create or reconcile the pulse timer (and bring back recorded workers); idempotent.
    ///
    /// Validates the config, seeds a data dir that was never seeded, and creates the transient
    /// rein-pulse.timer and rein-pulse.service (rein.PROFILE.pulse.* for a profile other than
    /// the default). Run again, it reconciles: a changed pulse.interval is applied.
    ///
    /// A profile runs under one systemd user manager at a time: while another manager that
    /// can be reached still runs units of it, up (and worker start) exit 5 and name it.
    Up,
    /// Stop the pulse and every worker of the profile, leaving no unit behind.
    ///
    /// Workers are stopped at once, each within workers.stop_timeout (then SIGKILL), with the
    /// loops' timers, the gate and a judge's tick a stopped beat left running; a Konsole
    /// window of loop tabs closes with its loops' sessions. Bridges keep running (`rein bridge
    /// stop NAME`). Worker and loop records stay, so the next `rein up` brings them back. A
    /// unit that cannot be stopped is reported (exit 1) after all the others are; running
    /// down again is always safe.
    Down,
    /// Run one beat now: sense, journal, worker health, judgment hook.
    ///
    /// A beat runs each sensor that is due: every one at every beat, but one with a
    /// `# rein: every SPAN` line among its opening comments only once SPAN has passed since
    /// it last ran (its kept reading stands in between).
    ///
    /// Prints the beat's line, then any failed sensor or worker. Run by the pulse, whose
    /// output is the journal, it leaves the beat's line out: the journal has it already as
    /// an entry of its own, with REIN_EVENT=beat and REIN_BEAT.
    ///
    /// A beat that finds the world unchanged writes only pulse.json: no snapshot, no
    /// world.json (so no `rein wait` wakes) and no line in journal.md. It asks systemd about
    /// workers only when there is one that `rein worker kill` has not stopped, or when the
    /// judge is an LLM.
    ///
    /// At most every five minutes a beat also sweeps stale temp files and moves notes more
    /// than a day old to archive/notes/.
    Tick,
    /// Install and enable a static unit that runs `rein up` at login.
    ///
    /// Transient units vanish when the user manager restarts; this brings the fleet back. To
    /// bring it back at boot without a login, run `loginctl enable-linger $USER` once.
    Enable,
    /// Disable and remove the unit `rein enable` installed.
    Disable,
    /// Show the pulse (last and next beat; a beat running, late or failed), workers and
    /// pending asks, and warn about a data dir others can read.
    ///
    /// Checks the config too: a broken one exits 2.
    Status,
    /// Show rein's logs from journald (matched on REIN_PROFILE, so it works in containers too).
    Logs {
        /// Keep printing new lines.
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
    /// The whole fleet on one screen: asks (answered in place), workers and loops, events.
    ///
    /// Three areas, always visible from 80x24 and larger on larger terminals. Asks: pending
    /// asks, newest last, with worker, age, reference and options; an ask answered
    /// elsewhere leaves with who answered it. Fleet: workers and loops with their state
    /// (running, waiting-human, restarting, failed, stopped, closed, ...), restarts, memory
    /// and CPU of the unit, a loop's last and next fire, the directory or worktree branch,
    /// and the last line the agent printed. Events: journal lines, notes, unit state changes,
    /// and what was done here.
    ///
    /// Keys (also in the footer and with ?): arrows or j/k select; Tab switches area; 1-9
    /// answer the selected ask with that option; Enter types a free-text answer; w withdraws
    /// the ask; a attaches to the worker (its detach key, Ctrl-], comes back); t ticks the
    /// loop, or the pulse; s sends a line to the worker (rein worker tell); k kills (in the
    /// fleet area k kills, so use the arrows there); r restarts; c/o close or reopen a loop;
    /// g moves a loop to another desktop; / filters every area (Esc clears); q quits.
    /// Withdraw, kill, restart and close ask for y first.
    ///
    /// Live from inotify on the data dir and systemd's D-Bus signals, with no polling: the
    /// screen is redrawn only when something changed or the terminal was resized, and an
    /// idle screen sleeps (ages are as of the last redraw; the header shows its time).
    /// Memory and CPU are not signalled by systemd: they are read when the screen starts, when
    /// a unit appears and when it is selected. If the user manager goes away the fleet area says so, and the screen
    /// reconnects when it is back. Agent text is shown inert: control characters appear as
    /// symbols and cannot move the cursor or change the title. A file in the data dir that
    /// cannot be read is shown as a problem in the events area.
    ///
    /// Answers and withdrawals are recorded as cli:$USER, through the same mailbox code as
    /// `rein answer`; like it, rein tui refuses to run inside an agent unit. It needs a
    /// terminal: without one it exits 2 (scripts use `rein state --json`).
    Tui,
    /// Workers: agents running as supervised systemd user units.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Loops: long-running agent sessions ticked on a schedule (timers in systemd).
    #[command(subcommand)]
    Loop(LoopCommand),
    /// Bridges: relay asks to Slack, SMS, email and Konsole tabs, and answers back.
    #[command(subcommand)]
    Bridge(BridgeCommand),
    /// Serve workers' asks, claims, notes and reports (socket-activated by systemd).
    #[command(hide = true)]
    Gate,
    /// The hook rein installs in an agent CLI's settings (claude): permission requests
    /// become asks.
    #[command(hide = true)]
    Hook {
        #[arg(value_parser = ["claude"])]
        agent: String,
    },
    /// Run inside an agent unit: prepare the agent's HOME, export its credentials, exec it.
    #[command(hide = true)]
    AgentExec {
        /// The command; without it, `/bin/sh -c "$REIN_AGENT_COMMAND"` (with `exec` before a
        /// command that is one program).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Start a worker: write prompts/ID.md (the worker contract, then the brief) and start
    /// rein-worker-ID.service running the configured agent in a PTY host.
    ///
    /// The PTY host is the program rein-host, which must sit beside rein; without it the
    /// worker runs in `rein worker host`, which costs more memory per agent, and a warning
    /// says so.
    ///
    /// The command template's {{prompt_file}} and {{model}} are filled in shell-quoted, so an
    /// id or brief can never inject shell. Exit 5 if the worker is already running.
    Start {
        id: String,
        /// The brief; `-` reads it from stdin.
        #[arg(value_name = "PROMPT|-")]
        prompt: Option<String>,
        /// The agent command template (default: the config's runner).
        #[arg(long, value_name = "CMD")]
        command: Option<String>,
        /// The model, passed as {{model}}.
        #[arg(long, value_name = "M")]
        model: Option<String>,
        /// MemoryMax= of the unit, e.g. 2G.
        #[arg(long, value_name = "SIZE", value_parser = crate::duration::parse_size)]
        memory_max: Option<u64>,
        /// CPUQuota= of the unit, e.g. 50% or 200%.
        #[arg(long, value_name = "PCT", value_parser = crate::duration::parse_percent)]
        cpu_quota: Option<u32>,
        /// An environment variable for the agent (repeatable). Secrets belong in the
        /// config's [runner.secrets], never on a command line.
        #[arg(long = "env", value_name = "NAME=VALUE", value_parser = crate::config::parse_env_assignment)]
        env: Vec<(String, String)>,
        /// Work in this directory (the worker may write there).
        #[arg(long, value_name = "PATH", conflicts_with = "worktree")]
        dir: Option<std::path::PathBuf>,
        /// Work in a git worktree of this repository, made for this worker.
        #[arg(long, value_name = "REPO")]
        worktree: Option<std::path::PathBuf>,
        /// The worktree's branch (default rein/ID; an existing branch is checked out).
        #[arg(long, value_name = "BRANCH", requires = "worktree")]
        branch: Option<String>,
        /// Where a new branch starts (default the repository's HEAD).
        #[arg(long, value_name = "REF", requires = "worktree")]
        base: Option<String>,
    },
    /// Stop a worker and withdraw its pending asks; `rein up` will not bring it back.
    ///
    /// An agent that ignores SIGTERM is killed after workers.stop_timeout. The worker stays
    /// listed as stopped (with its worktree) until `rein worker rm`.
    Kill { id: String },
    /// Remove a stopped worker, its worktree and branch (archiving its directory).
    ///
    /// Refused (exit 5) while the worker runs, or while its worktree has uncommitted
    /// changes or commits no remote has, unless --force.
    Rm {
        id: String,
        /// Discard the worktree's unsaved work.
        #[arg(long)]
        force: bool,
    },
    /// List workers: health (running, waiting-ask, restarting, failed, exited, stopped),
    /// restarts, result, pid, since, memory and the pending ask.
    Ls,
    /// Show a worker's transcript and events from journald.
    Logs {
        id: String,
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
    /// Connect your terminal to a worker's agent; Ctrl-] detaches and leaves it running.
    Attach { id: String },
    /// Type text into a worker's agent as a paste, then Enter, without attaching.
    ///
    /// The text goes in as a bracketed paste when the agent turned that on (most interactive
    /// agents do), so it arrives as one prompt; Enter follows after --settle. A person
    /// attached to the worker stays attached and sees it arrive.
    Tell {
        id: String,
        /// The text; `-` reads it from stdin.
        #[arg(value_name = "TEXT|-")]
        text: String,
        /// How long to wait between the paste and Enter.
        #[arg(long, value_name = "DUR", default_value = "300ms")]
        settle: Span,
    },
    /// Print a worker's screen as text: what a person attaching would see.
    ///
    /// With --json: cols, rows, cursor, alternate_screen, bracketed_paste, output_bytes,
    /// idle_ms (since the agent last printed) and lines.
    Screen { id: String },
    /// Run inside a worker unit: the PTY host for the agent.
    #[command(hide = true)]
    Host {
        id: String,
        /// The loop whose session this is: its resume prompt is typed once the agent is ready.
        #[arg(long = "loop", value_name = "NAME")]
        loop_name: Option<String>,
        /// The agent's command; without it, `/bin/sh -c "$REIN_AGENT_COMMAND"` (with `exec`
        /// before a command that is one program, so no shell stays beside the agent).
        #[arg(last = true)]
        command: Vec<String>,
    },
}

// Parsed once per process; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum LoopCommand {
    /// Add a loop: its definition (loops/NAME.json), its session (a worker named NAME that
    /// always restarts and gets the prompt typed in at each start) and its timer.
    ///
    /// Schedules: `every 30s|10m|2h`, `daily HH:MM ZONE`, `weekly DAYS HH:MM ZONE` (days
    /// like Mon,Thu or Mon..Fri), `none` (only `rein loop tick` fires it), or a systemd
    /// calendar expression. Zones are IANA names (America/Los_Angeles, Europe/Berlin, UTC).
    /// Bad input exits 2 with nothing written or started; an existing loop or worker of that
    /// name exits 5.
    Add {
        name: String,
        /// When it fires, e.g. "every 10m", "daily 09:00 America/Los_Angeles".
        #[arg(long, value_name = "SPEC")]
        schedule: String,
        /// What a fire does: type the prompt into the session, run the tick script, or nothing.
        #[arg(long, value_enum, value_name = "KIND")]
        dispatch: crate::fleet::loops::Dispatch,
        /// The resume prompt; `-` reads it from stdin.
        #[arg(long, value_name = "TEXT|-", conflicts_with = "prompt_file")]
        prompt: Option<String>,
        /// Read the resume prompt from this file.
        #[arg(long, value_name = "F")]
        prompt_file: Option<std::path::PathBuf>,
        /// The script a `tick_script` fire runs (an absolute path), in the loop's directory.
        #[arg(long, value_name = "PATH")]
        tick_script: Option<std::path::PathBuf>,
        /// An argument of the tick script (repeatable).
        #[arg(long = "tick-arg", value_name = "A", allow_hyphen_values = true)]
        tick_args: Vec<String>,
        /// The virtual desktop of the loop's Konsole tab (1-based).
        #[arg(long, value_name = "N")]
        desktop: Option<u32>,
        /// Between typing the prompt and Enter (default loops.paste_settle).
        #[arg(long, value_name = "DUR")]
        settle: Option<Span>,
        /// The session's command (default: the runner's agent, started without a prompt).
        #[arg(long, value_name = "CMD")]
        command: Option<String>,
        /// The model, passed as {{model}}.
        #[arg(long, value_name = "M")]
        model: Option<String>,
        /// MemoryMax= of the session, e.g. 2G.
        #[arg(long, value_name = "SIZE", value_parser = crate::duration::parse_size)]
        memory_max: Option<u64>,
        /// CPUQuota= of the session, e.g. 50%.
        #[arg(long, value_name = "PCT", value_parser = crate::duration::parse_percent)]
        cpu_quota: Option<u32>,
        /// An environment variable for the agent (repeatable).
        #[arg(long = "env", value_name = "NAME=VALUE", value_parser = crate::config::parse_env_assignment)]
        env: Vec<(String, String)>,
        /// Work in this directory.
        #[arg(long, value_name = "PATH", conflicts_with = "worktree")]
        dir: Option<std::path::PathBuf>,
        /// Work in a git worktree of this repository, made for the loop.
        #[arg(long, value_name = "REPO")]
        worktree: Option<std::path::PathBuf>,
        /// The worktree's branch (default rein/NAME).
        #[arg(long, value_name = "BRANCH", requires = "worktree")]
        branch: Option<String>,
        /// Where a new branch starts (default the repository's HEAD).
        #[arg(long, value_name = "REF", requires = "worktree")]
        base: Option<String>,
    },
    /// List loops: state, restarts, schedule, last and next fire (in the loop's zone and
    /// local time) and the last dispatch's result.
    Ls,
    /// Fire a loop now, whatever its schedule; prints the dispatch's result.
    Tick { name: String },
    /// Stop a loop's timer and session; everything is kept for `reopen`.
    Close { name: String },
    /// Start a closed loop's session and timer again.
    Reopen { name: String },
    /// Remove a loop: its units, its session (and worktree) and its definition (archived).
    ///
    /// Refused (exit 5) while its worktree holds unsaved work, unless --force.
    Rm {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Replace a loop's resume prompt; --repaste types it into the session now.
    UpdatePrompt {
        name: String,
        /// The new prompt; `-` reads it from stdin.
        #[arg(
            long,
            value_name = "TEXT|-",
            conflicts_with = "prompt_file",
            required_unless_present = "prompt_file"
        )]
        prompt: Option<String>,
        #[arg(long, value_name = "F")]
        prompt_file: Option<std::path::PathBuf>,
        #[arg(long)]
        repaste: bool,
    },
    /// Move a loop's Konsole tab to another virtual desktop.
    Move { name: String, desktop: u32 },
    /// Show a loop's session as a Konsole tab on its desktop (adopting one already open).
    Show { name: String },
    /// Import the loops of a loopctl workbench (workbench.toml and README.md prompts).
    ///
    /// Reports what it imported, and refuses what it cannot map by file and line (exit 2,
    /// nothing imported). Loops that exist already are skipped.
    Import {
        /// The workbench directory.
        path: std::path::PathBuf,
        /// Check and report, but add nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run one fire (what the loop's timer starts).
    #[command(hide = true)]
    Fire { name: String },
}

#[derive(Debug, Subcommand)]
pub enum BridgeCommand {
    /// Start a bridge as a user unit (rein-bridge-NAME.service): slack, sms, email or konsole.
    Start { name: String },
    /// Stop a bridge's unit.
    Stop { name: String },
    /// List bridges: unit health (`reconnecting` while a running bridge has lost its
    /// connection), delivery counts from each ledger, and with --json each bridge's STATUS.
    Ls,
    /// Send a test message to every route of a bridge and report what happened.
    Test { name: String },
}

#[derive(Debug, Subcommand)]
pub enum GoalCommand {
    /// Create or replace a goal; the body comes from the argument or `-` for stdin.
    Write {
        id: String,
        #[arg(value_name = "BODY|-")]
        body: String,
    },
    /// Move a goal to the archive.
    Archive { id: String },
    /// List goals.
    Ls,
}

#[derive(Debug, Subcommand)]
pub enum SensorCommand {
    /// Create or replace a sensor script; the body comes from the argument or `-` for stdin.
    ///
    /// A line `# rein: every 10m` among the script's opening comments makes beats run it at
    /// most that often (`rein sense` still runs it); without one, every beat runs it. A
    /// `# rein:` line that does not parse is refused (exit 2).
    Write {
        name: String,
        #[arg(value_name = "BODY|-")]
        body: String,
    },
    /// Move a sensor to the archive.
    Rm { name: String },
    /// List sensors with how often beats run them, their last reading and how long it has
    /// held (a run that reads the same leaves the reading as it was).
    Ls,
}

#[derive(Debug, Subcommand)]
pub enum PlaybookCommand {
    /// Replace the playbook; the body comes from the argument or `-` for stdin.
    Write {
        #[arg(value_name = "BODY|-")]
        body: String,
    },
    /// Print the playbook.
    Show,
}

/// What every verb gets: where things are and how to print.
pub struct Context {
    pub paths: Paths,
    pub json: bool,
}

impl Context {
    pub fn data(&self) -> crate::store::DataDir {
        self.paths.data()
    }

    pub fn config(&self) -> anyhow::Result<Config> {
        Ok(Config::load(&self.paths.config)?)
    }
}

/// The worker id for verbs run by a worker: the flag, else `$REIN_WORKER_ID`, else `human`.
pub fn worker_id(flag: Option<String>) -> anyhow::Result<String> {
    let id = flag
        .or_else(|| {
            std::env::var("REIN_WORKER_ID")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "human".to_owned());
    crate::store::validate_id("worker id", &id)?;
    Ok(id)
}

/// The gate's socket when this process runs inside an agent unit (a worker or the judge's
/// tick): `$REIN_GATE`, else the data dir's gate. `None` for people.
pub fn gate_socket(context: &Context) -> Option<std::path::PathBuf> {
    let from_env = std::env::var_os("REIN_GATE")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from);
    if from_env.is_some() {
        return from_env;
    }
    crate::fleet::sandbox::current_agent_unit().map(|_| context.data().gate_socket())
}

/// Runs one of the verbs a worker may run (ask, deliver, claim, unclaim, notify, report):
/// through the gate inside a worker, where the kernel names the caller; directly for people.
pub fn agent_call(
    context: &Context,
    worker: Option<String>,
    request: &crate::gate::Request,
) -> anyhow::Result<crate::gate::Reply> {
    if let Some(socket) = gate_socket(context) {
        if let Some(named) = worker {
            let own = std::env::var("REIN_WORKER_ID").unwrap_or_default();
            if named != own {
                return Err(Error::invalid(format!(
                    "inside worker {own}, --worker cannot name another worker ({named}); the gate files as {own}"
                ))
                .into());
            }
        }
        return crate::gate::call(&socket, request);
    }
    let worker = worker_id(worker)?;
    Ok(crate::gate::perform(
        &context.data(),
        crate::gate::Caller::Person { worker: &worker },
        request,
    ))
}

/// Prints a gate reply the way every verb does: the message on stdout when it succeeded;
/// the JSON value with --json. A refusal is the error its code stands for (its message goes
/// to stderr with the others).
pub fn print_reply(context: &Context, reply: &crate::gate::Reply) -> anyhow::Result<()> {
    if context.json {
        output::json(&reply.value)?;
    }
    if reply.code != 0 {
        return Err(
            Error::from_exit_code(reply.code, reply.message.clone().unwrap_or_default()).into(),
        );
    }
    if let (Some(message), false) = (&reply.message, context.json) {
        output::lines([message.clone()])?;
    }
    Ok(())
}

/// The most a body read from stdin may hold: more than any limit a verb accepts, so the
/// verb's own limit is the one that speaks, yet bounded, so endless input cannot exhaust
/// memory.
const MAX_STDIN: u64 = 16 << 20;

/// A body from an argument, or from stdin when the argument is `-`.
pub fn read_body(argument: &str, what: &str) -> anyhow::Result<String> {
    if argument != "-" {
        return Ok(argument.to_owned());
    }
    let mut body = String::new();
    std::io::stdin()
        .take(MAX_STDIN + 1)
        .read_to_string(&mut body)
        .with_context(|| format!("reading the {what} from stdin"))?;
    if body.len() as u64 > MAX_STDIN {
        return Err(Error::invalid(format!(
            "the {what} on stdin is larger than {MAX_STDIN} bytes; the limit is far lower"
        ))
        .into());
    }
    Ok(body)
}

pub fn require_body(body: &str, what: &str) -> anyhow::Result<()> {
    if body.trim().is_empty() {
        return Err(Error::invalid(format!(
            "the {what} is empty; pass the text, or - and pipe it on stdin"
        ))
        .into());
    }
    Ok(())
}

/// A status that a verb ends with because a program in its place did (the gate's idle exit,
/// the agent under a PTY host): 0 is success, anything else [`Error::Exited`].
pub fn exited(code: i32) -> anyhow::Result<()> {
    match code {
        0 => Ok(()),
        code => Err(Error::Exited(code).into()),
    }
}

/// Parses the arguments, runs the verb, and returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let paths = match Paths::from_env() {
        Ok(paths) => paths,
        Err(error) => {
            eprintln!("rein: {error}");
            return error.exit_code();
        }
    };
    crate::logging::init(
        &paths.profile,
        std::env::var("REIN_WORKER_ID").ok().as_deref(),
    );
    let context = Context {
        paths,
        json: cli.json,
    };
    match run(&context, cli.command) {
        Ok(()) => 0,
        Err(error) => {
            if is_broken_pipe(&error) {
                return 0;
            }
            let silent = error.downcast_ref::<Error>().is_some_and(Error::is_silent);
            if !silent {
                // Messages quote prompts, answers and file contents: shown inert.
                eprintln!(
                    "rein: {}",
                    crate::text::inert(&crate::error::describe(&error))
                );
            }
            crate::error::exit_code_of(&error)
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

pub fn run(context: &Context, command: Command) -> anyhow::Result<()> {
    if matches!(
        command,
        Command::Ask { .. }
            | Command::Wait { .. }
            | Command::Answer {
                interactive: true,
                ..
            }
    ) {
        // These exit right after their one wait: the exit must not wait on the watch.
        crate::store::linger::enable();
    }
    match command {
        Command::Init { runner } => data::init(context, runner),
        Command::Ask {
            prompt,
            reference,
            options,
            timeout,
            worker,
        } => mailbox::ask(context, prompt, reference, options, timeout, worker),
        Command::Answer {
            id,
            text,
            identity,
            interactive,
        } => {
            if interactive {
                mailbox::answer_interactive(context, &id, identity)
            } else {
                mailbox::answer(context, &id, text, identity)
            }
        }
        Command::Asks { all } => mailbox::asks(context, all),
        Command::Withdraw { id, identity } => mailbox::withdraw(context, &id, identity),
        Command::Wait {
            only_asks,
            timeout,
            since,
        } => world::wait(context, only_asks, timeout, since),
        Command::State => world::state(context),
        Command::Sense => world::sense(context),
        Command::Goal(command) => data::goal(context, command),
        Command::Sensor(command) => data::sensor(context, command),
        Command::Playbook(command) => data::playbook(context, command),
        Command::Notify { message, worker } => data::notify(context, &message, worker),
        Command::Journal { lines } => data::journal(context, lines),
        Command::Claim { name, pid, worker } => data::claim(context, &name, pid, worker),
        Command::Unclaim { name, force } => data::unclaim(context, &name, force),
        Command::Report {
            name,
            text,
            file,
            worker,
        } => data::report(context, &name, text, file, worker),
        Command::Gate => exited(crate::gate::serve(&context.paths)?),
        Command::Hook { .. } => hook::claude(context),
        Command::AgentExec { command } => crate::worker::host::exec(command),
        Command::Up => fleet::up(context),
        Command::Down => fleet::down(context),
        Command::Tick => fleet::tick(context),
        Command::Enable => fleet::enable(context, true),
        Command::Disable => fleet::enable(context, false),
        Command::Status => fleet::status(context),
        Command::Logs { follow, lines } => fleet::logs(context, None, follow, lines),
        Command::Tui => tui::run(context),
        Command::Worker(command) => worker::run(context, command),
        Command::Loop(command) => loops::run(context, command),
        Command::Bridge(command) => fleet::bridge(context, command),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "rein", &mut std::io::stdout());
            Ok(())
        }
    }
}
