//! What the screen shows, kept current by the feeds: pending asks, the fleet (workers and
//! loops) and recent events. Plain data and the rules that derive states from it; no I/O.
//!
//! Every update says whether anything visible changed, so the screen is redrawn only then.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use chrono::{DateTime, Local, Utc};

use crate::fleet::pulse::PulseStatus;
use crate::fleet::UnitNames;
use crate::mailbox::{AskRecord, Resolution};
use crate::systemd::{health, Health, ServiceState};
use crate::tui::loops::LoopInfo;

/// How many events are kept; older ones scroll away.
pub const EVENTS_KEPT: usize = 1000;

/// The link to the systemd user manager.
#[derive(Debug, Clone, PartialEq)]
pub enum ManagerLink {
    Connecting,
    Connected,
    /// Not reachable (or gone); the fleet area says so until it is back.
    Unreachable(String),
}

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A line of the data dir's `journal.md`.
    Journal,
    /// A note (`rein notify`).
    Note,
    /// A unit changed state.
    Unit,
    /// An ask was filed, answered or withdrawn.
    Ask,
    /// What an action taken on this screen did.
    Action,
    /// A file that could not be read, a verb that failed.
    Problem,
}

impl EventKind {
    pub fn label(self) -> &'static str {
        match self {
            EventKind::Journal => "journal",
            EventKind::Note => "note",
            EventKind::Unit => "unit",
            EventKind::Ask => "ask",
            EventKind::Action => "done",
            EventKind::Problem => "problem",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: DateTime<Local>,
    pub kind: EventKind,
    /// As it came: made inert when drawn.
    pub text: String,
}

/// Where a worker works, from its record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    pub dir: Option<PathBuf>,
    pub branch: Option<String>,
}

/// One worker or loop.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetRow {
    pub id: String,
    pub unit: String,
    /// The unit's state as systemd last said; `None` while no unit is loaded.
    pub service: Option<ServiceState>,
    /// The worker's record (`workers/ID.json`), if it has one.
    pub record: Option<Placement>,
    /// Set when this worker is a loop's session.
    pub looped: Option<LoopInfo>,
    /// The last line the agent printed.
    pub output: Option<String>,
    /// Why the agent waits at its own dialog, as its hooks said.
    pub attention: Option<String>,
}

impl FleetRow {
    pub fn is_loop(&self) -> bool {
        self.looped.is_some()
    }

    /// The state shown (running, waiting-human, restarting, failed, stopped, closed, …)
    /// and, for waiting-human, what it waits on.
    pub fn state(&self, ask: Option<&AskRecord>) -> (String, Option<String>) {
        if self.looped.as_ref().is_some_and(|l| l.state == "closed") {
            return ("closed".to_owned(), None);
        }
        let Some(service) = &self.service else {
            return ("stopped".to_owned(), None);
        };
        let name = match health(service) {
            Health::Running => "running",
            Health::Restarting => "restarting",
            Health::Failed => "failed",
            Health::Exited => "exited",
            Health::Starting => "starting",
            Health::Stopping => "stopping",
            Health::Inactive => "inactive",
        };
        if name == "running" {
            if let Some(ask) = ask {
                return (
                    "waiting-human".to_owned(),
                    Some(format!("ask {}: {}", ask.ask.id, ask.ask.prompt)),
                );
            }
            if let Some(reason) = &self.attention {
                return ("waiting-human".to_owned(), Some(reason.clone()));
            }
        }
        (name.to_owned(), None)
    }

    /// Where it works: the worktree's branch, else the directory.
    pub fn place(&self) -> Option<String> {
        let record = self.record.as_ref();
        record
            .and_then(|r| r.branch.clone())
            .or_else(|| {
                record
                    .and_then(|r| r.dir.as_ref())
                    .map(|d| d.display().to_string())
            })
            .or_else(|| {
                self.looped
                    .as_ref()
                    .and_then(|l| l.dir.as_ref())
                    .map(|d| d.display().to_string())
            })
    }

    /// Restarts as systemd counts them (a loop's own count when systemd has none).
    pub fn restarts(&self) -> u32 {
        match (&self.service, &self.looped) {
            (Some(service), _) => service.n_restarts,
            (None, Some(looped)) => looped.restarts,
            (None, None) => 0,
        }
    }
}

pub struct Model {
    pub profile: String,
    names: UnitNames,
    /// Pending asks, oldest first (newest last).
    pub asks: Vec<AskRecord>,
    pub rows: BTreeMap<String, FleetRow>,
    pub events: VecDeque<Event>,
    pub manager: ManagerLink,
    pub pulse: Option<PulseStatus>,
}

impl Model {
    pub fn new(profile: &str, names: UnitNames) -> Model {
        Model {
            profile: profile.to_owned(),
            names,
            asks: Vec::new(),
            rows: BTreeMap::new(),
            events: VecDeque::new(),
            manager: ManagerLink::Connecting,
            pulse: None,
        }
    }

    pub fn names(&self) -> &UnitNames {
        &self.names
    }

    pub fn push_event(&mut self, kind: EventKind, text: impl Into<String>) {
        self.push_event_at(Local::now(), kind, text);
    }

    pub fn push_event_at(&mut self, at: DateTime<Local>, kind: EventKind, text: impl Into<String>) {
        self.events.push_back(Event {
            at,
            kind,
            text: text.into(),
        });
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }

    /// The oldest pending ask of a worker: what it waits on.
    pub fn ask_of(&self, worker: &str) -> Option<&AskRecord> {
        self.asks.iter().find(|a| a.ask.worker == worker)
    }

    /// The state of a row as shown.
    pub fn state_of(&self, row: &FleetRow) -> (String, Option<String>) {
        row.state(self.ask_of(&row.id))
    }

    /// Replaces the pending asks. Asks that left become events saying who resolved them,
    /// looked up with `resolution` (unless `quiet`, for the first read). Returns whether
    /// anything changed.
    pub fn set_asks(
        &mut self,
        asks: Vec<AskRecord>,
        quiet: bool,
        resolution: impl Fn(&str) -> Option<Resolution>,
    ) -> bool {
        if asks == self.asks {
            return false;
        }
        if !quiet {
            let gone: Vec<String> = self
                .asks
                .iter()
                .filter(|old| asks.iter().all(|a| a.ask.id != old.ask.id))
                .map(|old| match resolution(&old.ask.id) {
                    Some(resolution) => format!("ask {} {}", old.ask.id, resolution.describe()),
                    None => format!("ask {} left the mailbox", old.ask.id),
                })
                .collect();
            for text in gone {
                self.push_event(EventKind::Ask, text);
            }
        }
        // New asks are journaled by whoever filed them: the journal feed shows them.
        self.asks = asks;
        true
    }

    /// The row of a worker id, made if missing.
    fn row_mut(&mut self, id: &str) -> &mut FleetRow {
        let unit = self.names.worker(id);
        self.rows.entry(id.to_owned()).or_insert_with(|| FleetRow {
            id: id.to_owned(),
            unit,
            ..FleetRow::default()
        })
    }

    /// Rows with neither a unit, a record nor a loop are gone.
    fn prune(&mut self, id: &str) {
        if let Some(row) = self.rows.get(id) {
            if row.service.is_none() && row.record.is_none() && row.looped.is_none() {
                self.rows.remove(id);
            }
        }
    }

    /// A worker unit's new state (`None`: unloaded). Returns whether anything changed; a
    /// change of the shown state becomes an event.
    pub fn set_unit(&mut self, unit: &str, state: Option<ServiceState>) -> bool {
        let Some(id) = self.names.worker_id(unit).map(str::to_owned) else {
            return false;
        };
        let before = self.rows.get(&id).map(|row| self.state_of(row).0);
        if before.is_none() && state.is_none() {
            return false;
        }
        let row = self.row_mut(&id);
        if row.service == state {
            return false;
        }
        row.service = state;
        let restarts = row.restarts();
        self.prune(&id);
        let after = self.rows.get(&id).map(|row| self.state_of(row).0);
        if before != after {
            let text = match (&before, &after) {
                (Some(before), Some(after)) if restarts > 0 && after == "restarting" => {
                    format!("{id}: {before} → {after} (restart {restarts})")
                }
                (Some(before), Some(after)) => format!("{id}: {before} → {after}"),
                (None, Some(after)) => format!("{id}: {after}"),
                (Some(before), None) => format!("{id}: {before} → gone"),
                (None, None) => return true,
            };
            self.push_event(EventKind::Unit, text);
        }
        true
    }

    /// Every worker unit's state at once (after connecting): units not listed are unloaded.
    /// The first read is `quiet`: what the fleet was before is no news.
    pub fn set_all_units(&mut self, units: Vec<(String, ServiceState)>, quiet: bool) -> bool {
        let events = self.events.len();
        let listed: BTreeMap<String, ServiceState> = units
            .into_iter()
            .filter_map(|(unit, state)| {
                self.names.worker_id(&unit).map(|id| (id.to_owned(), state))
            })
            .collect();
        let mut changed = false;
        let known: Vec<String> = self.rows.keys().cloned().collect();
        for id in known {
            if !listed.contains_key(&id) {
                let unit = self.names.worker(&id);
                changed |= self.set_unit(&unit, None);
            }
        }
        for (id, state) in listed {
            let unit = self.names.worker(&id);
            changed |= self.set_unit(&unit, Some(state));
        }
        if quiet {
            self.events.truncate(events);
        }
        changed
    }

    /// The workers' records (id → placement).
    pub fn set_records(&mut self, records: BTreeMap<String, Placement>) -> bool {
        let mut changed = false;
        let known: Vec<String> = self.rows.keys().cloned().collect();
        for id in known {
            if !records.contains_key(&id) {
                if let Some(row) = self.rows.get_mut(&id) {
                    changed |= row.record.take().is_some();
                }
                self.prune(&id);
            }
        }
        for (id, placement) in records {
            let row = self.row_mut(&id);
            if row.record.as_ref() != Some(&placement) {
                row.record = Some(placement);
                changed = true;
            }
        }
        changed
    }

    /// The loops; their sessions' rows become loop rows.
    pub fn set_loops(&mut self, loops: Vec<LoopInfo>) -> bool {
        let mut changed = false;
        let known: Vec<String> = self.rows.keys().cloned().collect();
        for id in known {
            if loops.iter().all(|l| l.name != id) {
                if let Some(row) = self.rows.get_mut(&id) {
                    changed |= row.looped.take().is_some();
                }
                self.prune(&id);
            }
        }
        for info in loops {
            let id = info.name.clone();
            let row = self.row_mut(&id);
            if row.looped.as_ref() != Some(&info) {
                if !info.session_unit.is_empty() {
                    row.unit = info.session_unit.clone();
                }
                row.looped = Some(info);
                changed = true;
            }
        }
        changed
    }

    /// The last line a worker's agent printed.
    pub fn set_output(&mut self, worker: &str, line: String) -> bool {
        match self.rows.get_mut(worker) {
            Some(row) if row.output.as_deref() != Some(line.as_str()) => {
                row.output = Some(line);
                true
            }
            _ => false,
        }
    }

    /// Why a worker's agent waits at its own dialog (`None`: it does not).
    pub fn set_attention(&mut self, worker: &str, reason: Option<String>) -> bool {
        match self.rows.get_mut(worker) {
            Some(row) if row.attention != reason => {
                row.attention = reason;
                true
            }
            _ => false,
        }
    }

    pub fn set_manager(&mut self, link: ManagerLink) -> bool {
        if self.manager == link {
            return false;
        }
        let text = match &link {
            ManagerLink::Connecting => None,
            ManagerLink::Connected => Some("connected to the systemd user manager".to_owned()),
            ManagerLink::Unreachable(why) => {
                Some(format!("systemd user manager unreachable: {why}"))
            }
        };
        if let Some(text) = text {
            let kind = if matches!(link, ManagerLink::Unreachable(_)) {
                EventKind::Problem
            } else {
                EventKind::Unit
            };
            self.push_event(kind, text);
        }
        self.manager = link;
        true
    }

    pub fn set_pulse(&mut self, pulse: Option<PulseStatus>) -> bool {
        let same = match (&self.pulse, &pulse) {
            (None, None) => true,
            (Some(a), Some(b)) => serde_json::to_value(a).ok() == serde_json::to_value(b).ok(),
            _ => false,
        };
        self.pulse = pulse;
        !same
    }

    /// Asks that match the filter, oldest first.
    pub fn visible_asks(&self, filter: &str) -> Vec<&AskRecord> {
        self.asks
            .iter()
            .filter(|a| {
                matches(filter, &a.ask.id)
                    || matches(filter, &a.ask.worker)
                    || matches(filter, &a.ask.prompt)
                    || a.ask
                        .reference
                        .as_deref()
                        .is_some_and(|r| matches(filter, r))
            })
            .collect()
    }

    /// Rows that match the filter: loops first, then workers, each by id.
    pub fn visible_rows(&self, filter: &str) -> Vec<&FleetRow> {
        let mut rows: Vec<&FleetRow> = self
            .rows
            .values()
            .filter(|row| {
                matches(filter, &row.id)
                    || matches(filter, &self.state_of(row).0)
                    || row.place().is_some_and(|p| matches(filter, &p))
                    || row.output.as_deref().is_some_and(|o| matches(filter, o))
            })
            .collect();
        rows.sort_by_key(|row| !row.is_loop());
        rows
    }

    pub fn visible_events(&self, filter: &str) -> Vec<&Event> {
        self.events
            .iter()
            .filter(|e| matches(filter, &e.text) || matches(filter, e.kind.label()))
            .collect()
    }

    /// Counts by shown state, for the one-line summary of a tiny terminal.
    pub fn state_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for row in self.rows.values() {
            *counts.entry(self.state_of(row).0).or_insert(0) += 1;
        }
        counts
    }
}

/// Case-insensitive substring match; an empty filter matches everything.
pub fn matches(filter: &str, text: &str) -> bool {
    filter.is_empty() || text.to_lowercase().contains(&filter.to_lowercase())
}

/// When something happened, from an RFC 3339 time (the journal's), in local time.
pub fn local(at: DateTime<Utc>) -> DateTime<Local> {
    at.with_timezone(&Local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::{Ask, ResolutionKind};
    use crate::systemd::ActiveState;

    fn model() -> Model {
        Model::new("t", UnitNames::for_profile("t", false))
    }

    fn ask(id: &str, worker: &str) -> AskRecord {
        AskRecord {
            ask: Ask {
                version: 1,
                id: id.into(),
                seq: 1,
                worker: worker.into(),
                prompt: "merge?".into(),
                reference: None,
                options: vec!["yes".into(), "no".into()],
                created: DateTime::from_timestamp(1_800_000_000, 0).expect("a time"),
                key: "k".into(),
            },
            resolution: None,
            archived: false,
        }
    }

    fn service(active: &str, sub: &str, restarts: u32) -> ServiceState {
        ServiceState {
            unit: "u".into(),
            load_state: "loaded".into(),
            active_state: ActiveState::parse(active),
            sub_state: sub.into(),
            n_restarts: restarts,
            active_enter_timestamp_usec: 1,
            ..ServiceState::default()
        }
    }

    #[test]
    fn states_follow_units_asks_records_and_loops() {
        let mut model = model();
        let unit = "rein.t.worker-w1.service";
        assert!(model.set_unit(unit, Some(service("active", "running", 0))));
        assert_eq!(model.state_of(&model.rows["w1"]).0, "running");
        model.set_asks(vec![ask("a1", "w1")], true, |_| None);
        let (state, why) = model.state_of(&model.rows["w1"]);
        assert_eq!(state, "waiting-human");
        assert!(why.expect("reason").contains("ask a1"));
        assert!(model.set_unit(unit, Some(service("activating", "auto-restart", 1))));
        assert_eq!(model.state_of(&model.rows["w1"]).0, "restarting");
        assert!(model
            .events
            .back()
            .is_some_and(|e| e.text == "w1: waiting-human → restarting (restart 1)"));
        // Unloaded with a record: stopped; without one: gone.
        let mut records = BTreeMap::new();
        records.insert("w1".to_owned(), Placement::default());
        model.set_records(records);
        model.set_unit(unit, None);
        assert_eq!(model.state_of(&model.rows["w1"]).0, "stopped");
        model.set_records(BTreeMap::new());
        assert!(!model.rows.contains_key("w1"));
        // A closed loop is closed whatever its session does.
        model.set_loops(vec![LoopInfo {
            name: "l1".into(),
            state: "closed".into(),
            ..LoopInfo::default()
        }]);
        assert_eq!(model.state_of(&model.rows["l1"]).0, "closed");
        assert!(model.rows["l1"].is_loop());
        // Units of other profiles are not ours.
        assert!(!model.set_unit(
            "rein-worker-w1.service",
            Some(service("active", "running", 0))
        ));
    }

    #[test]
    fn an_ask_answered_elsewhere_leaves_with_who_answered() {
        let mut model = model();
        assert!(model.set_asks(vec![ask("a1", "w1"), ask("a2", "w2")], true, |_| None));
        assert!(model.events.is_empty(), "the first read is quiet");
        let changed = model.set_asks(vec![ask("a2", "w2")], false, |id| {
            Some(Resolution {
                version: 1,
                ask: id.into(),
                kind: ResolutionKind::Answered,
                text: Some("yes".into()),
                by: "slack:U1".into(),
                at: Utc::now(),
                reason: None,
            })
        });
        assert!(changed);
        let last = model.events.back().expect("event");
        assert!(
            last.text.starts_with("ask a1 answered \"yes\" by slack:U1"),
            "{}",
            last.text
        );
        assert!(!model.set_asks(vec![ask("a2", "w2")], false, |_| None));
    }

    #[test]
    fn filters_match_any_shown_field() {
        let mut model = model();
        model.set_unit(
            "rein.t.worker-build.service",
            Some(service("active", "running", 0)),
        );
        model.set_unit(
            "rein.t.worker-docs.service",
            Some(service("failed", "failed", 0)),
        );
        assert_eq!(model.visible_rows("").len(), 2);
        assert_eq!(model.visible_rows("BUI").len(), 1);
        assert_eq!(model.visible_rows("failed")[0].id, "docs");
        for _ in 0..EVENTS_KEPT + 5 {
            model.push_event(EventKind::Note, "n");
        }
        assert_eq!(model.events.len(), EVENTS_KEPT);
    }
}
