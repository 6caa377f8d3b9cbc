//! The world: sensors, their snapshots, and the world hash.
//!
//! `rein sense` runs every `sensors/<name>.sh` once, in parallel, through [`crate::capture`]:
//! a timeout that stops everything the sensor started, and caps on what it prints. Each
//! sensor must print one JSON object. A reading that differs from the kept one is written
//! atomically to `snapshots/<name>.json` — a sensor that fails, hangs, floods or prints
//! non-JSON yields an error snapshot, never a crash. The world hash covers what the sensors
//! said (not when), so an unchanged world hashes the same and costs nothing: no file is
//! written and no waiter wakes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::capture;
use crate::config::SensorConfig;
use crate::error::Result;
use crate::store::{self, DataDir};

pub const FORMAT_VERSION: u32 = 1;

/// How much of a failing sensor's stderr is kept in its error snapshot.
const STDERR_KEEP: usize = 2048;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub version: u32,
    pub sensor: String,
    pub taken: DateTime<Utc>,
    pub duration_ms: u64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `world.json`: the hash of the world, written when it changes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct World {
    pub version: u32,
    pub hash: String,
    pub taken: DateTime<Utc>,
    pub sensors: Vec<String>,
    /// When the hash last changed (equal to `taken` when this sense changed it).
    pub changed: DateTime<Utc>,
}

impl Snapshot {
    /// Whether `other` says the same as this one, whenever and however fast it was taken.
    pub fn same_reading(&self, other: &Snapshot) -> bool {
        self.sensor == other.sensor
            && self.ok == other.ok
            && self.value == other.value
            && self.error == other.error
    }
}

/// The hash of a world nobody has sensed yet.
pub const EMPTY_WORLD: &str = "none";

/// Hashes what the sensors said, in name order, ignoring timing.
pub fn world_hash(snapshots: &[Snapshot]) -> String {
    let mut hasher = Sha256::new();
    let mut sorted: Vec<&Snapshot> = snapshots.iter().collect();
    sorted.sort_by(|a, b| a.sensor.cmp(&b.sensor));
    for snapshot in sorted {
        let essence = serde_json::json!({
            "sensor": snapshot.sensor,
            "ok": snapshot.ok,
            "value": snapshot.value,
            "error": snapshot.error,
        });
        hasher.update(essence.to_string().as_bytes());
        hasher.update([0u8]);
    }
    hex::encode(hasher.finalize())[..16].to_owned()
}

/// Runs the sensors all at once, each capped at `config`'s timeout and output cap (see
/// [`crate::capture`]: everything a sensor starts is stopped by then), and reads them from
/// this one thread. One snapshot per sensor, in the order given.
pub fn run_sensors(
    dir: &DataDir,
    sensors: &[(String, std::path::PathBuf)],
    config: &SensorConfig,
) -> Vec<Snapshot> {
    let timeout = config.timeout.0;
    let cap = config.output_cap as usize;
    let limits = capture::Limits {
        timeout,
        stdout_cap: cap,
        stderr_cap: STDERR_KEEP,
        past_cap: capture::PastCap::Stop,
    };
    let taken = Utc::now();
    let mut prepared: Vec<std::result::Result<Command, String>> = sensors
        .iter()
        .map(|(_, script)| sensor_command(script))
        .collect();
    let mut runs: Vec<(&mut Command, capture::Limits)> = prepared
        .iter_mut()
        .filter_map(|command| command.as_mut().ok())
        .map(|command| {
            command
                .current_dir(dir.root())
                .env("REIN_DATA_DIR", dir.root())
                .stdin(Stdio::null());
            (command, limits)
        })
        .collect();
    let mut captured = capture::run_all(&mut runs).into_iter();
    sensors
        .iter()
        .zip(prepared)
        .map(|((name, _), prepared)| {
            let (outcome, duration_ms) = match prepared {
                Err(error) => (Err(error), 0),
                Ok(_) => match captured.next() {
                    Some(Ok(run)) => {
                        let elapsed = run.elapsed.as_millis() as u64;
                        (sensor_output(run, timeout, cap), elapsed)
                    }
                    Some(Err(error)) => (Err(format!("could not start: {error}")), 0),
                    None => (Err("it was not run".to_owned()), 0),
                },
            };
            let (ok, value, error) = match outcome.and_then(|stdout| reading(&stdout)) {
                Ok(value) => (true, Some(value), None),
                Err(error) => (false, None, Some(error)),
            };
            Snapshot {
                version: FORMAT_VERSION,
                sensor: name.clone(),
                taken,
                duration_ms,
                ok,
                value,
                error,
            }
        })
        .collect()
}

/// What a sensor printed, as its reading: one JSON object, or a sentence saying what is wrong.
fn reading(stdout: &[u8]) -> std::result::Result<serde_json::Value, String> {
    match serde_json::from_slice::<serde_json::Value>(stdout) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(_) => {
            Err("printed JSON that is not an object; a sensor prints one JSON object".to_owned())
        }
        Err(e) => {
            let shown: String = String::from_utf8_lossy(stdout).chars().take(200).collect();
            Err(format!("printed non-JSON ({e}): {shown:?}"))
        }
    }
}

/// The command that runs `script`, or a sentence saying why it cannot run.
fn sensor_command(script: &Path) -> std::result::Result<Command, String> {
    // Only a regular file is run: a FIFO or device planted as a sensor would hang the shell
    // that reads it (and a check that opened it would hang rein).
    let (mut file, _) = store::open_regular(script)
        .map_err(|error| match error {
            crate::Error::Corrupt { detail, .. } => detail,
            other => other.to_string(),
        })?
        .ok_or("it is gone")?;
    // A script with a shebang and the exec bit runs as it asks; anything else runs with sh.
    let executable = file
        .metadata()
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    let mut head = [0u8; 2];
    let has_shebang = std::io::Read::read_exact(&mut file, &mut head).is_ok() && head == *b"#!";
    drop(file);
    Ok(if executable && has_shebang {
        Command::new(script)
    } else {
        let mut sh = Command::new("/bin/sh");
        sh.arg(script);
        sh
    })
}

/// A sensor's stdout once it ran, or a sentence saying what went wrong.
fn sensor_output(
    captured: capture::Captured,
    timeout: Duration,
    cap: usize,
) -> std::result::Result<Vec<u8>, String> {
    match captured.output.ending {
        capture::Ending::TimedOut => {
            return Err(format!(
                "timed out after {}",
                crate::duration::Span(timeout)
            ))
        }
        capture::Ending::OverCap => {
            return Err(format!(
                "printed more than {cap} bytes (sensors.output_cap); stopped"
            ))
        }
        capture::Ending::Finished => {}
    }
    let stderr_text = String::from_utf8_lossy(&captured.output.stderr)
        .trim()
        .to_owned();
    let status = captured.status.ok_or("its exit status could not be read")?;
    if !status.success() {
        let how = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_owned(),
        };
        return Err(if stderr_text.is_empty() {
            how
        } else {
            format!("{how}: {stderr_text}")
        });
    }
    Ok(captured.output.stdout)
}

/// What one `rein sense` did.
#[derive(Debug, Clone, Serialize)]
pub struct SenseReport {
    pub hash: String,
    pub changed: bool,
    pub snapshots: Vec<Snapshot>,
}

/// Runs every sensor in parallel and returns the hash. Only what changed is written: the
/// snapshot of each sensor whose reading (`ok`, `value`, `error`) differs from the one kept,
/// and `world.json` when the hash differs. An unchanged world writes no file, so it costs no
/// disk write and wakes no `rein wait`; a kept snapshot's `taken` is when that reading was
/// first taken.
pub fn sense(dir: &DataDir, config: &SensorConfig) -> Result<SenseReport> {
    dir.create_dirs()?;
    let sensors = store::list(&dir.sensors(), ".sh")?;
    let fresh = run_sensors(dir, &sensors, config);
    let mut changed_snapshots = Vec::new();
    let snapshots: Vec<Snapshot> = fresh
        .into_iter()
        .map(|snapshot| {
            let path = dir.snapshot(&snapshot.sensor);
            // A snapshot that cannot be read is simply written again.
            match store::read_json::<Snapshot>(&path).ok().flatten() {
                Some(kept) if kept.version == FORMAT_VERSION && kept.same_reading(&snapshot) => {
                    kept
                }
                _ => {
                    changed_snapshots.push(snapshot.clone());
                    snapshot
                }
            }
        })
        .collect();
    let files: Vec<_> = changed_snapshots
        .iter()
        .map(|snapshot| (dir.snapshot(&snapshot.sensor), snapshot))
        .collect();
    if !files.is_empty() {
        store::write_json_each(&files)?;
    }
    // Snapshots of sensors that no longer exist are derived data: drop them.
    let current: Vec<&str> = sensors.iter().map(|(name, _)| name.as_str()).collect();
    for (name, path) in store::list(&dir.snapshots(), ".json")? {
        if !current.contains(&name.as_str()) {
            store::remove_file(&path)?;
        }
    }
    let hash = world_hash(&snapshots);
    let previous = read_world(dir)?;
    let changed = previous.as_ref().map(|w| w.hash != hash).unwrap_or(true);
    let kept = previous
        .as_ref()
        .is_some_and(|w| !changed && w.version == FORMAT_VERSION && w.sensors == current);
    if !kept {
        let now = Utc::now();
        let world = World {
            version: FORMAT_VERSION,
            hash: hash.clone(),
            taken: now,
            sensors: current.iter().map(|s| s.to_string()).collect(),
            changed: match (&previous, changed) {
                (Some(previous), false) => previous.changed,
                _ => now,
            },
        };
        store::write_json(&dir.world(), &world)?;
    }
    Ok(SenseReport {
        hash,
        changed,
        snapshots,
    })
}

pub fn read_world(dir: &DataDir) -> Result<Option<World>> {
    store::read_json(&dir.world())
}

/// The current world hash, or [`EMPTY_WORLD`].
pub fn current_hash(dir: &DataDir) -> Result<String> {
    Ok(read_world(dir)?
        .map(|w| w.hash)
        .unwrap_or_else(|| EMPTY_WORLD.to_owned()))
}

/// Every snapshot on disk, by sensor name.
pub fn snapshots(dir: &DataDir) -> Result<BTreeMap<String, Snapshot>> {
    let mut all = BTreeMap::new();
    for (name, path) in store::list(&dir.snapshots(), ".json")? {
        if let Some(snapshot) = store::read_json::<Snapshot>(&path)? {
            all.insert(name, snapshot);
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(name: &str, value: serde_json::Value, ms: u64) -> Snapshot {
        Snapshot {
            version: 1,
            sensor: name.into(),
            taken: Utc::now(),
            duration_ms: ms,
            ok: true,
            value: Some(value),
            error: None,
        }
    }

    #[test]
    fn hash_ignores_timing_and_order() {
        let a = vec![
            snapshot("a", serde_json::json!({"x": 1}), 5),
            snapshot("b", serde_json::json!({}), 1),
        ];
        let b = vec![
            snapshot("b", serde_json::json!({}), 9),
            snapshot("a", serde_json::json!({"x": 1}), 7),
        ];
        assert_eq!(world_hash(&a), world_hash(&b));
        let c = vec![
            snapshot("a", serde_json::json!({"x": 2}), 5),
            snapshot("b", serde_json::json!({}), 1),
        ];
        assert_ne!(world_hash(&a), world_hash(&c));
    }

    /// The inode of each file under `dir` that a sense may write, by name.
    fn inodes(dir: &DataDir) -> BTreeMap<String, u64> {
        use std::os::unix::fs::MetadataExt;
        let mut files: Vec<std::path::PathBuf> = store::list(&dir.snapshots(), ".json")
            .expect("snapshots")
            .into_iter()
            .map(|(_, path)| path)
            .collect();
        files.push(dir.world());
        files
            .into_iter()
            .map(|path| {
                let inode = std::fs::metadata(&path).expect("written").ino();
                (path.display().to_string(), inode)
            })
            .collect()
    }

    #[test]
    fn an_unchanged_world_is_sensed_without_writing_a_file() {
        let temp = tempfile::tempdir().expect("temp");
        let dir = DataDir::new(temp.path());
        dir.create_dirs().expect("dirs");
        let config = SensorConfig::default();
        let sensor = |name: &str, body: &str| {
            std::fs::write(dir.sensors().join(format!("{name}.sh")), body).expect("sensor")
        };
        sensor("a", "echo '{\"a\": 1}'");
        sensor("b", "echo '{\"b\": 1}'");
        sensor("broken", "echo oops; exit 1");
        let first = sense(&dir, &config).expect("sense");
        assert!(first.changed);
        let written = inodes(&dir);
        let world = read_world(&dir).expect("world").expect("written");

        // The same readings again: every file stays as it was (a rename would give a new
        // inode), so a quiet beat writes nothing and wakes no waiter.
        let second = sense(&dir, &config).expect("sense");
        assert!(!second.changed);
        assert_eq!(second.hash, first.hash);
        assert_eq!(inodes(&dir), written);
        assert_eq!(read_world(&dir).expect("world"), Some(world.clone()));
        assert_eq!(
            second.snapshots, first.snapshots,
            "the report gives the readings as kept, from when each was first taken"
        );

        // One reading changes: its snapshot and the world are written, nothing else.
        sensor("b", "echo '{\"b\": 2}'");
        let third = sense(&dir, &config).expect("sense");
        assert!(third.changed);
        let now = inodes(&dir);
        let moved: Vec<&String> = now
            .iter()
            .filter(|(path, inode)| written.get(*path) != Some(inode))
            .map(|(path, _)| path)
            .collect();
        assert_eq!(
            moved,
            [
                &dir.snapshot("b").display().to_string(),
                &dir.world().display().to_string()
            ],
            "{now:?}"
        );
        let after = read_world(&dir).expect("world").expect("written");
        assert!(after.changed > world.changed && after.taken == after.changed);

        // A snapshot that cannot be read is written again, whatever it held.
        std::fs::write(dir.snapshot("a"), "{not json").expect("corrupt");
        let fourth = sense(&dir, &config).expect("a corrupt snapshot is no error");
        assert!(!fourth.changed);
        assert_eq!(
            store::read_json::<Snapshot>(&dir.snapshot("a"))
                .expect("readable again")
                .and_then(|s| s.value),
            Some(serde_json::json!({"a": 1}))
        );
    }
}
