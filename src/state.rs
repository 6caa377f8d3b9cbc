//! The combined view of a profile (`rein state`) and the wait token (`rein wait`).
//!
//! A token records what its holder has seen: the highest ask `seq` in the mailbox and the
//! world hash. Something is new when a pending ask has a higher `seq`, or (unless only asks
//! are watched) the world hash differs. Answered asks the holder has seen never wake it again,
//! so a judge loop never spins on one pending ask.

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::mailbox::{AskRecord, Mailbox};
use crate::store::{self, DataDir};
use crate::{claims, journal, world};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub seq: u64,
    pub world: String,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v1.{}.{}", self.seq, self.world)
    }
}

impl std::str::FromStr for Token {
    type Err = Error;
    fn from_str(text: &str) -> Result<Token> {
        let invalid = || {
            Error::invalid(format!(
                "invalid token {text:?}: pass the `token` field printed by a previous `rein wait` or `rein state`"
            ))
        };
        let mut parts = text.splitn(3, '.');
        if parts.next() != Some("v1") {
            return Err(invalid());
        }
        let seq = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(invalid)?;
        let world = parts.next().filter(|w| !w.is_empty()).ok_or_else(invalid)?;
        if !world.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid());
        }
        Ok(Token {
            seq,
            world: world.to_owned(),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GoalSummary {
    pub id: String,
    pub title: String,
}

/// Everything a judge needs to decide one move.
#[derive(Debug, Clone, Serialize)]
pub struct State {
    pub profile: String,
    pub data_dir: String,
    pub world: String,
    pub world_changed: Option<chrono::DateTime<chrono::Utc>>,
    pub snapshots: serde_json::Value,
    pub asks: Vec<serde_json::Value>,
    pub goals: Vec<GoalSummary>,
    pub claims: Vec<claims::Claim>,
    pub journal: Vec<String>,
    /// Workers and their health, filled in by the systemd layer when it is reachable.
    pub workers: Vec<serde_json::Value>,
    /// Files that could not be read, by name.
    pub problems: Vec<String>,
    /// Why `rein wait` returned: the new asks' ids and whether the world changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub woke: Option<Woke>,
    pub token: String,
    #[serde(skip)]
    pub token_value: Token,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Woke {
    pub new_asks: Vec<String>,
    pub world_changed: bool,
}

pub fn goals(dir: &DataDir) -> Result<Vec<GoalSummary>> {
    let mut goals = Vec::new();
    for (id, path) in store::list(&dir.goals(), ".md")? {
        let text = store::read_text(&path)?.unwrap_or_default();
        let title = text
            .lines()
            .map(|l| l.trim_start_matches('#').trim())
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_owned();
        goals.push(GoalSummary { id, title });
    }
    Ok(goals)
}

/// The view a token is computed from: the asks in the mailbox and the world hash.
struct Observed {
    records: Vec<AskRecord>,
    problems: Vec<Error>,
    token: Token,
}

fn observe(mailbox: &Mailbox) -> Result<Observed> {
    let listing = mailbox.list(false)?;
    let seq = listing.records.iter().map(|r| r.ask.seq).max().unwrap_or(0);
    let world = world::current_hash(mailbox.data_dir())?;
    Ok(Observed {
        records: listing.records,
        problems: listing.problems,
        token: Token { seq, world },
    })
}

fn build(dir: &DataDir, profile: &str, observed: Observed, woke: Option<Woke>) -> Result<State> {
    let world = world::read_world(dir)?;
    let snapshots = world::snapshots(dir)?;
    Ok(State {
        profile: profile.to_owned(),
        data_dir: dir.root().display().to_string(),
        world: observed.token.world.clone(),
        world_changed: world.map(|w| w.changed),
        snapshots: serde_json::to_value(snapshots).unwrap_or_default(),
        asks: observed.records.iter().map(AskRecord::to_json).collect(),
        goals: goals(dir)?,
        claims: claims::list(dir)?,
        journal: journal::tail(dir, 20)?,
        workers: Vec::new(),
        problems: observed.problems.iter().map(|p| p.to_string()).collect(),
        woke,
        token: observed.token.to_string(),
        token_value: observed.token,
    })
}

pub fn state(dir: &DataDir, profile: &str) -> Result<State> {
    let observed = observe(&Mailbox::new(dir.clone()))?;
    build(dir, profile, observed, None)
}

/// What is new in `observed` for the holder of `since`.
fn news(since: &Token, observed: &Observed, only_asks: bool) -> Option<Woke> {
    let new_asks: Vec<String> = observed
        .records
        .iter()
        .filter(|r| r.is_pending() && r.ask.seq > since.seq)
        .map(|r| r.ask.id.clone())
        .collect();
    let world_changed = !only_asks && observed.token.world != since.world;
    (world_changed || !new_asks.is_empty()).then_some(Woke {
        new_asks,
        world_changed,
    })
}

/// Blocks until something is new since `since` (without a token: returns the state at once).
/// `Ok(None)` when the deadline passes first.
pub fn wait(
    dir: &DataDir,
    profile: &str,
    since: Option<&Token>,
    only_asks: bool,
    deadline: Option<Instant>,
) -> Result<Option<State>> {
    dir.create_dirs()?;
    let mailbox = Mailbox::new(dir.clone());
    let Some(since) = since else {
        return state(dir, profile).map(Some);
    };
    let mut watched: Vec<PathBuf> = vec![dir.asks()];
    if !only_asks {
        watched.push(dir.root().to_owned());
    }
    let found = store::watch::wait_for(&watched, deadline, || {
        let observed = observe(&mailbox)?;
        Ok(news(since, &observed, only_asks).map(|woke| (observed, woke)))
    })?;
    match found {
        None => Ok(None),
        Some((observed, woke)) => build(dir, profile, observed, Some(woke)).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let token = Token {
            seq: 42,
            world: "ab12".into(),
        };
        assert_eq!(token.to_string().parse::<Token>().expect("parses"), token);
        for bad in [
            "", "v1", "v1.x.ab", "v2.1.ab", "v1.1.", "v1.1.a/b", "garbage",
        ] {
            let error = bad.parse::<Token>().expect_err(bad);
            assert_eq!(error.exit_code(), 2);
        }
    }
}
