//! `rein tui`: the whole fleet on one screen — asks (answered in place), workers and loops,
//! and events — live from inotify and systemd's signals, with no polling.
//!
//! The shape: feeds ([`feeds`]) sleep on the kernel and the bus and send news to one loop,
//! which folds it into the [`model`], and redraws ([`view`]) only when something visible
//! changed or the terminal was resized. Keys ([`input`]) become commands the loop carries
//! out: answers and withdrawals through the mailbox (as `cli:$USER`, like `rein answer`),
//! kills and restarts through systemd, and the verbs built elsewhere (`rein loop …`,
//! `rein worker tell`) as subprocesses of this same binary.

pub mod feeds;
pub mod input;
pub mod loops;
pub mod model;
pub mod text;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Utc};
use crossterm::event::{Event as TermEvent, EventStream};
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen};
use futures_util::StreamExt;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::fleet::UnitNames;
use crate::journal;
use crate::mailbox::{self, AnswerOutcome, ListingCache, Mailbox};
use crate::notes::Note;
use crate::paths::Paths;
use crate::store::{self, DataDir};
use crate::systemd::Manager;
use crate::tui::feeds::{DataChange, Feed, FleetRequest};
use crate::tui::input::{Command, Mode, Ui};
use crate::tui::model::{local, EventKind, Model, Placement};

/// Journal events the screen shows from elsewhere: answers and withdrawals come from the
/// mailbox itself (with who gave them), notes from `notes/`.
const JOURNAL_SKIPPED: &[&str] = &["answer", "withdraw", "notify"];
/// Journal lines and notes shown from before the screen started.
const HISTORY: usize = 20;

type Screen = Terminal<CrosstermBackend<std::io::Stdout>>;

/// Runs the screen until the person quits. The caller has checked that stdin and stdout are
/// terminals.
pub fn run(paths: &Paths) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let mut app = App::new(paths)?;
        enter_screen()?;
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            leave_screen();
            previous(info);
        }));
        let result = app.run().await;
        leave_screen();
        result
    });
    // Feeds may be blocked on the kernel; they end with the process.
    runtime.shutdown_background();
    result
}

fn enter_screen() -> std::io::Result<()> {
    crossterm::terminal::enable_raw_mode()?;
    crossterm::execute!(
        std::io::stdout(),
        EnterAlternateScreen,
        crossterm::cursor::Hide
    )
}

fn leave_screen() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = std::io::stdout().flush();
}

/// What a command running in the background reports when it ends.
struct Done {
    kind: EventKind,
    text: String,
}

struct App {
    paths: Paths,
    data: DataDir,
    mailbox: Mailbox,
    model: Model,
    ui: Ui,
    /// This binary, for the verbs run as subprocesses.
    rein: PathBuf,
    /// Who answers from this screen: `cli:$USER`.
    by: String,
    /// The ask and answer files read so far: a change re-reads only what changed.
    asks_read: ListingCache,
    seen_notes: BTreeSet<String>,
    last_journal_line: Option<String>,
    reported: BTreeSet<String>,
    feed_tx: UnboundedSender<Feed>,
    feed_rx: tokio::sync::mpsc::UnboundedReceiver<Feed>,
    fleet_requests: UnboundedSender<FleetRequest>,
    manager: watch::Receiver<Option<Manager>>,
    actions: JoinSet<Done>,
    /// A `rein loop ls` runs; another is wanted after it.
    loops_listing: bool,
    loops_wanted: bool,
    /// The fleet was read once: later reads (after a reconnect) report what changed.
    fleet_read: bool,
}

impl App {
    fn new(paths: &Paths) -> anyhow::Result<App> {
        let data = paths.data();
        // The directories must exist to be watched; making them is what any verb does.
        data.create_dirs()?;
        let (feed_tx, feed_rx) = unbounded_channel();
        let (fleet_requests, requests_rx) = unbounded_channel();
        let (manager_tx, manager) = watch::channel(None);
        tokio::spawn(feeds::follow_data_dir(&data, feed_tx.clone()));
        tokio::spawn(feeds::follow_fleet(
            paths.clone(),
            feed_tx.clone(),
            requests_rx,
            manager_tx,
        ));
        tokio::spawn(feeds::follow_transcripts(
            paths.profile.clone(),
            feed_tx.clone(),
        ));
        Ok(App {
            paths: paths.clone(),
            mailbox: Mailbox::new(data.clone()),
            data,
            model: Model::new(&paths.profile, UnitNames::new(paths)),
            ui: Ui::default(),
            rein: std::env::current_exe()?,
            by: mailbox::default_identity(),
            seen_notes: BTreeSet::new(),
            asks_read: ListingCache::default(),
            last_journal_line: None,
            reported: BTreeSet::new(),
            feed_tx,
            feed_rx,
            fleet_requests,
            manager,
            actions: JoinSet::new(),
            loops_listing: false,
            loops_wanted: false,
            fleet_read: false,
        })
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        self.read_everything(true);
        self.list_loops();
        let mut screen = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
        self.draw(&mut screen)?;
        tracing::debug!(took = ?started.elapsed(), "first frame");
        let mut terminal = EventStream::new();
        loop {
            let mut dirty = false;
            let mut command = None;
            tokio::select! {
                event = terminal.next() => match event {
                    Some(Ok(TermEvent::Key(key))) => {
                        command = self.ui.key(&self.model, key);
                        dirty = true;
                    }
                    Some(Ok(TermEvent::Resize(..))) => dirty = true,
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(error.into()),
                    // The terminal is gone: nobody is left to look.
                    None => return Ok(()),
                },
                Some(feed) = self.feed_rx.recv() => {
                    // A burst of news is one redraw, and a unit's passing states within it
                    // (failed for an instant before auto-restart) are not news.
                    let mut units: Vec<(String, Option<crate::systemd::ServiceState>)> = Vec::new();
                    let mut next = Some(feed);
                    while let Some(feed) = next.take().or_else(|| self.feed_rx.try_recv().ok()) {
                        match feed {
                            Feed::Unit(unit, state) => {
                                units.retain(|(u, _)| *u != unit);
                                units.push((unit, state));
                            }
                            other => dirty |= self.apply(other),
                        }
                    }
                    for (unit, state) in units {
                        dirty |= self.model.set_unit(&unit, state);
                    }
                }
                Some(done) = self.actions.join_next() => {
                    if let Ok(done) = done {
                        self.model.push_event(done.kind, done.text.clone());
                        self.ui.message = Some(done.text);
                        dirty = true;
                    }
                }
            }
            match command {
                Some(Command::Quit) => return Ok(()),
                Some(Command::Attach { id }) => {
                    drop(terminal);
                    self.attach(&id).await;
                    terminal = EventStream::new();
                    // A fresh screen draws every cell (ratatui's clear would ask the
                    // terminal where its cursor is, and wait for the answer).
                    crossterm::execute!(
                        std::io::stdout(),
                        crossterm::terminal::Clear(crossterm::terminal::ClearType::All)
                    )?;
                    screen = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
                    dirty = true;
                }
                Some(command) => {
                    dirty |= self.carry_out(command);
                }
                None => {}
            }
            if dirty {
                self.draw(&mut screen)?;
            }
        }
    }

    fn draw(&mut self, screen: &mut Screen) -> anyhow::Result<()> {
        self.ui.settle(&self.model);
        let started = Instant::now();
        screen.draw(|frame| view::draw(frame, &self.model, &self.ui))?;
        tracing::trace!(took = ?started.elapsed(), "drawn");
        Ok(())
    }

    // ---- news -------------------------------------------------------------------------

    /// Folds one piece of news into the model; says whether the screen must be redrawn.
    fn apply(&mut self, feed: Feed) -> bool {
        match feed {
            Feed::Data(change) => self.read_changes(&change),
            Feed::Manager(link) => self.model.set_manager(link),
            Feed::AllUnits(units) => {
                let quiet = !self.fleet_read;
                self.fleet_read = true;
                self.model.set_all_units(units, quiet)
            }
            Feed::Unit(unit, state) => self.model.set_unit(&unit, state),
            Feed::Pulse(pulse) => self.model.set_pulse(pulse),
            Feed::LoopsChanged => {
                self.list_loops();
                false
            }
            Feed::Loops(loops) => {
                self.loops_listing = false;
                if self.loops_wanted {
                    self.list_loops();
                }
                self.model.set_loops(loops)
            }
            Feed::Output { worker, line } => self.model.set_output(&worker, line),
        }
    }

    fn read_everything(&mut self, first: bool) {
        self.read_asks(first);
        self.read_records();
        self.read_notes(first);
        self.read_journal(first);
        let ids: Vec<String> = self.model.rows.keys().cloned().collect();
        for id in ids {
            self.read_attention(&id);
        }
        if first {
            self.model
                .events
                .make_contiguous()
                .sort_by_key(|event| event.at);
        }
    }

    fn read_changes(&mut self, change: &DataChange) -> bool {
        if change.everything {
            self.read_everything(false);
            self.list_loops();
            let _ = self.fleet_requests.send(FleetRequest::Pulse);
            return true;
        }
        let mut changed = false;
        if change.asks {
            changed |= self.read_asks(false);
        }
        if change.workers {
            changed |= self.read_records();
        }
        if change.notes {
            changed |= self.read_notes(false);
        }
        if change.journal {
            changed |= self.read_journal(false);
        }
        for id in &change.attention {
            changed |= self.read_attention(id);
        }
        if change.loops {
            self.list_loops();
        }
        if change.pulse {
            let _ = self.fleet_requests.send(FleetRequest::Pulse);
        }
        changed
    }

    /// A problem with a file is an event once, never a crash.
    fn problem(&mut self, text: String) -> bool {
        if self.reported.insert(text.clone()) {
            self.model.push_event(EventKind::Problem, text);
            return true;
        }
        false
    }

    fn read_asks(&mut self, first: bool) -> bool {
        let listing = match self.mailbox.pending_cached(&mut self.asks_read) {
            Ok(listing) => listing,
            Err(error) => return self.problem(format!("cannot read the asks: {error}")),
        };
        let mut changed = false;
        for problem in listing.problems {
            changed |= self.problem(problem.to_string());
        }
        let mailbox = &self.mailbox;
        changed |= self.model.set_asks(listing.records, first, |id| {
            mailbox.resolution(id).ok().flatten()
        });
        // An answer being typed to an ask that was answered elsewhere is moot.
        if let Mode::Input {
            purpose: input::Purpose::Answer(id),
            ..
        } = &self.ui.mode
        {
            if self.model.asks.iter().all(|a| &a.ask.id != id) {
                let resolution = self.mailbox.resolution(id).ok().flatten();
                self.ui.message = Some(match resolution {
                    Some(resolution) => format!("ask {id} was {}", resolution.describe()),
                    None => format!("ask {id} left the mailbox"),
                });
                self.ui.mode = Mode::Normal;
            }
        }
        changed
    }

    fn read_records(&mut self) -> bool {
        let listed = match store::list(&self.data.workers(), ".json") {
            Ok(listed) => listed,
            Err(error) => return self.problem(format!("cannot list the workers: {error}")),
        };
        let mut records = BTreeMap::new();
        let mut changed = false;
        for (_, path) in listed {
            match store::read_json::<crate::fleet::workers::WorkerRecord>(&path) {
                Ok(Some(record)) => {
                    let placement = Placement {
                        dir: record.work_dir(&self.paths).ok(),
                        branch: record.worktree.as_ref().map(|w| w.branch.clone()),
                    };
                    records.insert(record.id, placement);
                }
                Ok(None) => {}
                Err(error) => changed |= self.problem(error.to_string()),
            }
        }
        changed | self.model.set_records(records)
    }

    fn read_attention(&mut self, id: &str) -> bool {
        let Ok(path) = self.data.agent_attention(id) else {
            return false;
        };
        let reason = match store::read_json::<serde_json::Value>(&path) {
            Ok(value) => value.and_then(|v| v["reason"].as_str().map(str::to_owned)),
            Err(error) => return self.problem(error.to_string()),
        };
        self.model.set_attention(id, reason)
    }

    fn read_notes(&mut self, first: bool) -> bool {
        let listed = match store::list(&self.data.notes(), ".json") {
            Ok(listed) => listed,
            Err(error) => return self.problem(format!("cannot list the notes: {error}")),
        };
        let fresh: Vec<(String, PathBuf)> = listed
            .into_iter()
            .filter(|(id, _)| !self.seen_notes.contains(id))
            .collect();
        let skip = if first {
            fresh.len().saturating_sub(HISTORY)
        } else {
            0
        };
        let mut changed = false;
        for (index, (id, path)) in fresh.into_iter().enumerate() {
            self.seen_notes.insert(id);
            if index < skip {
                continue;
            }
            match store::read_json::<Note>(&path) {
                Ok(Some(note)) => {
                    self.model.push_event_at(
                        local(note.at),
                        EventKind::Note,
                        format!("{}: {}", note.worker, note.message),
                    );
                    changed = true;
                }
                Ok(None) => {}
                Err(error) => changed |= self.problem(error.to_string()),
            }
        }
        changed
    }

    fn read_journal(&mut self, first: bool) -> bool {
        let lines = match journal::tail(&self.data, 200) {
            Ok(lines) => lines,
            Err(error) => return self.problem(format!("cannot read the journal: {error}")),
        };
        let start = match &self.last_journal_line {
            Some(last) => match lines.iter().rposition(|l| l == last) {
                Some(position) => position + 1,
                None => 0,
            },
            None if first => lines.len().saturating_sub(HISTORY),
            None => 0,
        };
        let mut changed = false;
        for line in &lines[start..] {
            if let Some((at, text)) = journal_event(line) {
                self.model
                    .push_event_at(local(at), EventKind::Journal, text);
                changed = true;
            }
        }
        if let Some(last) = lines.last() {
            self.last_journal_line = Some(last.clone());
        }
        changed
    }

    /// Lists loops in the background (see [`loops`]); one listing at a time.
    fn list_loops(&mut self) {
        if self.loops_listing {
            self.loops_wanted = true;
            return;
        }
        self.loops_listing = true;
        self.loops_wanted = false;
        let rein = self.rein.clone();
        let feed = self.feed_tx.clone();
        tokio::spawn(async move {
            let loops = loops::list(&rein).await;
            let _ = feed.send(Feed::Loops(loops));
        });
    }

    // ---- commands ---------------------------------------------------------------------

    /// Carries out a command; says whether the screen must be redrawn.
    /// Destructive commands reach here only after `y` (see [`input::Mode::Confirm`]).
    fn carry_out(&mut self, command: Command) -> bool {
        match command {
            Command::Quit | Command::Attach { .. } => {}
            Command::Answer { ask, text } => self.answer(&ask, &text),
            Command::Withdraw { ask } => self.withdraw(&ask),
            Command::Refresh { unit } => {
                let _ = self.fleet_requests.send(FleetRequest::Refresh(unit));
            }
            Command::Kill { id } => self.kill(id),
            Command::Restart { id, unit } => self.restart(id, unit),
            Command::Tick { name } => match name {
                Some(name) => self.verb(format!("tick loop {name}"), &["loop", "tick", &name]),
                None => self.verb("tick the pulse".to_owned(), &["tick"]),
            },
            Command::Tell { id, text } => {
                self.verb(format!("tell {id}"), &["worker", "tell", &id, "--", &text])
            }
            Command::Close { name } => {
                self.verb(format!("close loop {name}"), &["loop", "close", &name])
            }
            Command::Reopen { name } => {
                self.verb(format!("reopen loop {name}"), &["loop", "reopen", &name])
            }
            Command::Move { name, desktop } => self.verb(
                format!("move loop {name} to desktop {desktop}"),
                &["loop", "move", &name, &desktop],
            ),
        }
        true
    }

    fn answer(&mut self, ask: &str, text: &str) {
        let outcome = self.mailbox.answer(ask, text, &self.by);
        self.resolved(ask, "answer", outcome);
    }

    fn withdraw(&mut self, ask: &str) {
        let outcome = self.mailbox.withdraw(ask, &self.by);
        self.resolved(ask, "withdraw", outcome);
    }

    /// Reports an answer or withdrawal like `rein answer` does, journal included.
    fn resolved(&mut self, ask: &str, verb: &str, outcome: crate::error::Result<AnswerOutcome>) {
        self.ui.message = Some(match outcome {
            Ok(AnswerOutcome::Accepted(resolution)) => {
                let text = format!("ask {ask} {}", resolution.describe());
                if let Err(error) = journal::record(&self.data, verb, &text) {
                    self.problem(format!(
                        "the {verb} was recorded, the journal line not: {error}"
                    ));
                }
                text
            }
            Ok(AnswerOutcome::AlreadyResolved(resolution)) => format!(
                "ask {ask} was already {}; your {verb} was not recorded",
                resolution.describe()
            ),
            Ok(AnswerOutcome::NotAnOption(options)) => format!(
                "not an option of ask {ask}; answer one of: {}",
                options.join(", ")
            ),
            Err(error) => {
                let text = format!("{verb} of ask {ask} failed: {error}");
                self.problem(text.clone());
                text
            }
        });
        // Shown at once rather than when inotify says so.
        self.read_asks(false);
    }

    fn manager(&self) -> Option<Manager> {
        self.manager.borrow().clone()
    }

    fn kill(&mut self, id: String) {
        let Some(manager) = self.manager() else {
            self.ui.message = Some("the systemd user manager is unreachable".to_owned());
            return;
        };
        let paths = self.paths.clone();
        self.ui.message = Some(format!("killing {id}…"));
        self.actions.spawn(async move {
            match crate::fleet::workers::kill(&manager, &paths, &id).await {
                Ok(report) => Done {
                    kind: EventKind::Action,
                    text: if report.withdrawn.is_empty() {
                        format!("killed worker {id}")
                    } else {
                        format!(
                            "killed worker {id}; withdrew {}",
                            report.withdrawn.join(", ")
                        )
                    },
                },
                Err(error) => Done {
                    kind: EventKind::Problem,
                    text: format!("kill {id} failed: {error:#}"),
                },
            }
        });
    }

    fn restart(&mut self, id: String, unit: String) {
        let Some(manager) = self.manager() else {
            self.ui.message = Some("the systemd user manager is unreachable".to_owned());
            return;
        };
        self.ui.message = Some(format!("restarting {id}…"));
        self.actions.spawn(async move {
            match manager.restart(&unit).await {
                Ok(()) => Done {
                    kind: EventKind::Action,
                    text: format!("restart of {id} queued"),
                },
                Err(error) => Done {
                    kind: EventKind::Problem,
                    text: format!("restart {id} failed: {error}"),
                },
            }
        });
    }

    /// Runs `rein ARGS…` in the background; its first line of output becomes an event.
    fn verb(&mut self, what: String, args: &[&str]) {
        let mut command = tokio::process::Command::new(&self.rein);
        command
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        self.ui.message = Some(format!("{what}…"));
        self.actions.spawn(async move {
            match command.output().await {
                Ok(output) if output.status.success() => Done {
                    kind: EventKind::Action,
                    text: format!(
                        "{what}: {}",
                        first_output_line(&output.stdout).unwrap_or_else(|| "done".into())
                    ),
                },
                Ok(output) => Done {
                    kind: EventKind::Problem,
                    text: format!(
                        "{what} failed: {}",
                        first_output_line(&output.stderr)
                            .or_else(|| first_output_line(&output.stdout))
                            .unwrap_or_else(|| format!("{}", output.status))
                    ),
                },
                Err(error) => Done {
                    kind: EventKind::Problem,
                    text: format!("{what}: cannot run rein: {error}"),
                },
            }
        });
    }

    /// Leaves the screen for `rein worker attach ID`; its detach key comes back here.
    async fn attach(&mut self, id: &str) {
        let socket = match self.data.worker_socket(id) {
            Ok(socket) if socket.exists() => socket,
            _ => {
                self.ui.message = Some(format!("worker {id} is not running: nothing to attach to"));
                return;
            }
        };
        tracing::debug!(socket = %socket.display(), "attaching");
        leave_screen();
        let status = tokio::process::Command::new(&self.rein)
            .args(["worker", "attach", id])
            .status()
            .await;
        if let Err(error) = enter_screen() {
            tracing::warn!(%error, "cannot take the screen back");
        }
        self.ui.message = Some(match status {
            Ok(status) if status.success() => format!("back from worker {id}"),
            Ok(status) => format!("attach to {id} ended with {status}"),
            Err(error) => format!("cannot run `rein worker attach {id}`: {error}"),
        });
        // What happened meanwhile waits in the feed; memory and CPU are read afresh.
        if let Some(row) = self.model.rows.get(id) {
            let _ = self
                .fleet_requests
                .send(FleetRequest::Refresh(row.unit.clone()));
        }
    }
}

/// `- 2026-11-30T08:00:00.000Z beat: world …` → its time and `beat: world …`; lines of
/// the kinds shown from elsewhere are left out. A line that does not parse is shown as it is.
fn journal_event(line: &str) -> Option<(DateTime<Utc>, String)> {
    let rest = line.strip_prefix("- ").unwrap_or(line);
    let parsed = rest.split_once(' ').and_then(|(time, text)| {
        DateTime::parse_from_rfc3339(time)
            .ok()
            .map(|t| (t.with_timezone(&Utc), text))
    });
    match parsed {
        Some((at, text)) => {
            let kind = text.split(':').next().unwrap_or_default();
            (!JOURNAL_SKIPPED.contains(&kind)).then(|| (at, text.to_owned()))
        }
        None => Some((Utc::now(), line.to_owned())),
    }
}

fn first_output_line(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| l.trim_start_matches("rein: ").trim())
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_become_events() {
        let (at, text) =
            journal_event("- 2026-11-30T08:00:00.000Z beat: world abc (changed)").expect("event");
        assert_eq!(text, "beat: world abc (changed)");
        assert_eq!(at.to_rfc3339(), "2026-11-30T08:00:00+00:00");
        assert_eq!(
            journal_event("- 2026-11-30T08:00:00.000Z answer: ask x answered"),
            None
        );
        assert_eq!(
            journal_event("garbage \u{1b}[2J")
                .map(|(_, t)| t)
                .as_deref(),
            Some("garbage \u{1b}[2J")
        );
    }
}
