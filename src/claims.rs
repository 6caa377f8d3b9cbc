//! Claims: exclusive, named leases (`rein claim NAME`) so two workers never take the same job.
//!
//! A claim is `claims/<name>.json`, published with an exclusive create. It names its holder
//! process (by default the caller's parent, i.e. the agent or shell that ran `rein claim`) and
//! that process's start time, so a recycled pid is not mistaken for the holder. A claim whose
//! holder is gone is reaped (and journaled) by the next claimant.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{self, DataDir};

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claim {
    pub version: u32,
    #[serde(deserialize_with = "store::valid_id")]
    pub name: String,
    #[serde(deserialize_with = "store::valid_id")]
    pub worker: String,
    pub pid: u32,
    /// The holder's start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub pid_start: Option<u64>,
    pub at: DateTime<Utc>,
}

/// A process's start time, which with its pid identifies it uniquely.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past its end.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

impl Claim {
    pub fn holder_alive(&self) -> bool {
        match process_start(self.pid) {
            None => false,
            Some(start) => self.pid_start.is_none_or(|recorded| recorded == start),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    Claimed(Claim),
    /// Claimed after reaping a lease whose holder was gone.
    ClaimedAfterReaping {
        claim: Claim,
        reaped: Claim,
    },
    HeldBy(Claim),
}

pub fn claim(dir: &DataDir, name: &str, worker: &str, pid: u32) -> Result<ClaimOutcome> {
    let path = dir.claim(name)?;
    store::validate_id("worker id", worker)?;
    dir.create_dirs()?;
    let claim = Claim {
        version: FORMAT_VERSION,
        name: name.to_owned(),
        worker: worker.to_owned(),
        pid,
        pid_start: process_start(pid),
        at: Utc::now(),
    };
    let bytes = store::to_json_bytes(&claim);
    if store::create_exclusive(&path, &bytes)? {
        return Ok(ClaimOutcome::Claimed(claim));
    }
    let _lock = store::lock(&dir.claims_lock())?;
    let Some(existing) = store::read_json::<Claim>(&path)? else {
        // Released between our attempt and the read.
        return if store::create_exclusive(&path, &bytes)? {
            Ok(ClaimOutcome::Claimed(claim))
        } else {
            Err(Error::Conflict(format!(
                "claim {name:?} changed hands while claiming; try again"
            )))
        };
    };
    if existing.holder_alive() {
        return Ok(ClaimOutcome::HeldBy(existing));
    }
    store::remove_file(&path)?;
    crate::journal::record_or_warn(
        dir,
        "reap",
        &format!(
            "claim {name} held by {} (pid {}) whose process is gone",
            existing.worker, existing.pid
        ),
    );
    if store::create_exclusive(&path, &bytes)? {
        Ok(ClaimOutcome::ClaimedAfterReaping {
            claim,
            reaped: existing,
        })
    } else {
        let winner = store::read_json::<Claim>(&path)?.unwrap_or(existing);
        Ok(ClaimOutcome::HeldBy(winner))
    }
}

/// Releases a claim; returns the released claim, or None if it was not held.
pub fn unclaim(dir: &DataDir, name: &str) -> Result<Option<Claim>> {
    let path = dir.claim(name)?;
    let existing = store::read_json::<Claim>(&path)?;
    store::remove_file(&path)?;
    Ok(existing)
}

pub fn list(dir: &DataDir) -> Result<Vec<Claim>> {
    let mut claims = Vec::new();
    for (_, path) in store::list(&dir.claims(), ".json")? {
        if let Some(claim) = store::read_json(&path)? {
            claims.push(claim);
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_with_invalid_names_do_not_load() {
        let claim = Claim {
            version: FORMAT_VERSION,
            name: "deploy".into(),
            worker: "w1".into(),
            pid: 1,
            pid_start: None,
            at: Utc::now(),
        };
        let read: Claim =
            serde_json::from_slice(&store::to_json_bytes(&claim)).expect("round trip");
        assert_eq!(read, claim);
        for (field, bad) in [("name", ""), ("name", "../x"), ("worker", "W 1")] {
            let mut value = serde_json::to_value(&claim).expect("json");
            value[field] = bad.into();
            assert!(
                serde_json::from_value::<Claim>(value).is_err(),
                "{field}={bad:?}"
            );
        }
    }
}
