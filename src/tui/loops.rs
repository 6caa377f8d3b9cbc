//! Loops as the screen sees them.
//!
//! INTEGRATION POINT: loops are built elsewhere (`rein loop …`); the screen depends on none of
//! their code. [`list`] runs `rein loop ls --json` and reads what it prints, and returns
//! nothing while this rein has no `loop` verb. Once loops are part of the library this can
//! call `fleet::loops::list` directly.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// What the fleet area shows of a loop (fields of `rein loop ls --json`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LoopInfo {
    pub name: String,
    /// The session's health, or `closed`.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub schedule: String,
    /// The worker unit running the loop's session.
    #[serde(default)]
    pub session_unit: String,
    #[serde(default)]
    pub desktop: Option<u32>,
    #[serde(default)]
    pub dir: Option<std::path::PathBuf>,
    #[serde(default)]
    pub last_fire: Option<DateTime<Utc>>,
    #[serde(default)]
    pub next_fire: Option<DateTime<Utc>>,
}

/// The profile's loops, from `rein loop ls --json` run with this process's environment;
/// empty when that verb does not exist (or fails: the reason goes to the log).
pub async fn list(rein: &Path) -> Vec<LoopInfo> {
    let output = tokio::process::Command::new(rein)
        .args(["loop", "ls", "--json"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    match output {
        Ok(output) if output.status.success() => serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| {
                tracing::debug!(%error, "`rein loop ls --json` printed something unreadable");
                Vec::new()
            }),
        Ok(output) => {
            tracing::debug!(
                stderr = %String::from_utf8_lossy(&output.stderr),
                "`rein loop ls --json` failed; showing no loops"
            );
            Vec::new()
        }
        Err(error) => {
            tracing::debug!(%error, "cannot run `rein loop ls --json`");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_listing_is_read_leniently() {
        let text = r#"[{"name":"triage","state":"running","restarts":2,"schedule":"every 10m",
            "dispatch":"paste","session_unit":"rein-worker-triage.service","desktop":2,
            "last_fire":"2026-11-30T08:00:00Z","next_fire":null,"extra":1}]"#;
        let loops: Vec<LoopInfo> = serde_json::from_str(text).expect("parses");
        assert_eq!(loops[0].name, "triage");
        assert_eq!(loops[0].desktop, Some(2));
        assert!(loops[0].last_fire.is_some() && loops[0].next_fire.is_none());
    }
}
