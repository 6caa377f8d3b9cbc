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
    /// When a sensor with an interval (`# rein: every 10m`) last ran: beats run it again only
    /// once the interval has passed since. Not set for a sensor that runs at every beat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked: Option<DateTime<Utc>>,
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

/// A sensor script as it is to be run: the command, and how often beats run it.
pub struct Prepared {
    pub command: Command,
    /// From a `# rein: every SPAN` line among the script's opening comments; `None` runs it
    /// at every beat.
    pub every: Option<Duration>,
}

/// Runs the sensors all at once, each capped at `config`'s timeout and output cap (see
/// [`crate::capture`]: everything a sensor starts is stopped by then), and reads them from
/// this one thread. One snapshot per sensor, in the order given; a sensor that could not be
/// prepared gets the reason as its error.
fn run_sensors(
    dir: &DataDir,
    sensors: Vec<(String, std::result::Result<Prepared, String>)>,
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
    let mut sensors = sensors;
    let mut runs: Vec<(&mut Command, capture::Limits)> = sensors
        .iter_mut()
        .filter_map(|(_, prepared)| prepared.as_mut().ok())
        .map(|prepared| {
            prepared
                .command
                .current_dir(dir.root())
                .env("REIN_DATA_DIR", dir.root())
                .stdin(Stdio::null());
            (&mut prepared.command, limits)
        })
        .collect();
    let mut captured = capture::run_all(&mut runs).into_iter();
    sensors
        .into_iter()
        .map(|(name, prepared)| {
            let every = prepared.as_ref().ok().and_then(|p| p.every);
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
                sensor: name,
                taken,
                duration_ms,
                ok,
                value,
                error,
                checked: every.map(|_| taken),
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

/// How much of a script is read for its shebang and opening comments.
const HEAD_BYTES: usize = 4096;

/// The command that runs `script` and its interval, or a sentence saying why it cannot run.
fn prepare(script: &Path) -> std::result::Result<Prepared, String> {
    let (executable, head) = script_head(script)?;
    let every = interval(&head)?;
    let command = if executable && head.starts_with(b"#!") {
        Command::new(script)
    } else {
        let mut sh = Command::new("/bin/sh");
        sh.arg(script);
        sh
    };
    Ok(Prepared { command, every })
}

/// Whether a sensor script has the exec bit, and its first [`HEAD_BYTES`]: enough for its
/// shebang and the opening comments [`interval`] reads. Or a sentence saying why it cannot
/// be read.
pub fn script_head(script: &Path) -> std::result::Result<(bool, Vec<u8>), String> {
    // Only a regular file is read: a FIFO or device planted as a sensor would hang the shell
    // that reads it (and a check that opened it would hang rein).
    let (file, _) = store::open_regular(script)
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
    let mut head = Vec::with_capacity(HEAD_BYTES);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&file, HEAD_BYTES as u64),
        &mut head,
    )
    .map_err(|error| format!("could not be read: {error}"))?;
    Ok((executable, head))
}

/// The interval a script asks for with a `# rein: every SPAN` line among its opening comment
/// lines (after the shebang, before the first line of code), if any.
pub fn interval(head: &[u8]) -> std::result::Result<Option<Duration>, String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines().peekable();
    if lines.peek().is_some_and(|line| line.starts_with("#!")) {
        lines.next();
    }
    for line in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(comment) = line.strip_prefix('#') else {
            break;
        };
        let Some(setting) = comment.trim_start().strip_prefix("rein:") else {
            continue;
        };
        let fix = "write it like `# rein: every 10m` (a beat runs the sensor at most that often)";
        let shown = crate::text::inert(line);
        let span = setting
            .trim()
            .strip_prefix("every")
            .filter(|rest| rest.starts_with(char::is_whitespace))
            .ok_or_else(|| format!("its line {shown:?} is no setting rein knows; {fix}"))?;
        let every = crate::duration::parse(span.trim())
            .map_err(|why| format!("its line {shown:?} does not parse ({why}); {fix}"))?;
        return Ok(Some(every));
    }
    Ok(None)
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

/// Runs every sensor in parallel and returns the hash (`rein sense`). Only what changed is
/// written: the snapshot of each sensor whose reading (`ok`, `value`, `error`) differs from
/// the one kept, and `world.json` when the hash differs. An unchanged world writes no file,
/// so it costs no disk write and wakes no `rein wait`; a kept snapshot's `taken` is when that
/// reading was first taken. A sensor with an interval that read the same has only its
/// `checked` time rewritten.
pub fn sense(dir: &DataDir, config: &SensorConfig) -> Result<SenseReport> {
    sense_as(dir, config, false)
}

/// [`sense`] as a beat does it: a sensor with an interval (`# rein: every 10m`) that ran less
/// than that long ago is not run, and its kept reading stands.
pub fn sense_due(dir: &DataDir, config: &SensorConfig) -> Result<SenseReport> {
    sense_as(dir, config, true)
}

fn sense_as(dir: &DataDir, config: &SensorConfig, due_only: bool) -> Result<SenseReport> {
    dir.create_dirs()?;
    let sensors = store::list(&dir.sensors(), ".sh")?;
    let now = Utc::now();
    // A snapshot that cannot be read is simply written again.
    let mut kept: Vec<Option<Snapshot>> = sensors
        .iter()
        .map(|(name, _)| {
            store::read_json::<Snapshot>(&dir.snapshot(name))
                .ok()
                .flatten()
                .filter(|kept| kept.version == FORMAT_VERSION && kept.sensor == *name)
        })
        .collect();
    let mut to_run = Vec::new();
    let mut slots = Vec::new();
    for (index, (name, script)) in sensors.iter().enumerate() {
        let prepared = prepare(script);
        let fresh = |every: Duration| {
            kept[index]
                .as_ref()
                .and_then(|kept| kept.checked)
                .is_some_and(|checked| {
                    now.signed_duration_since(checked)
                        .to_std()
                        .is_ok_and(|age| age < every)
                })
        };
        match &prepared {
            Ok(Prepared {
                every: Some(every), ..
            }) if due_only && fresh(*every) => {}
            _ => {
                slots.push(index);
                to_run.push((name.clone(), prepared));
            }
        }
    }
    let mut changed_snapshots = Vec::new();
    for (index, snapshot) in slots.into_iter().zip(run_sensors(dir, to_run, config)) {
        let slot = &mut kept[index];
        match slot {
            Some(held) if held.same_reading(&snapshot) => {
                if snapshot.checked.is_some() || held.checked.is_some() {
                    held.checked = snapshot.checked;
                    changed_snapshots.push(held.clone());
                }
            }
            _ => {
                changed_snapshots.push(snapshot.clone());
                *slot = Some(snapshot);
            }
        }
    }
    let snapshots: Vec<Snapshot> = kept.into_iter().flatten().collect();
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
            checked: None,
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

    fn write_sensor(dir: &DataDir, name: &str, body: &str) {
        std::fs::write(dir.sensors().join(format!("{name}.sh")), body).expect("sensor");
    }

    #[test]
    fn a_sensor_with_an_interval_runs_once_per_interval_on_beats() {
        let temp = tempfile::tempdir().expect("temp");
        let dir = DataDir::new(temp.path().join("data"));
        dir.create_dirs().expect("dirs");
        let config = SensorConfig::default();
        let runs = temp.path().join("runs");
        let count = || {
            std::fs::read_to_string(&runs)
                .unwrap_or_default()
                .lines()
                .count()
        };
        write_sensor(
            &dir,
            "slow",
            &format!(
                "#!/bin/sh\n# Counts its runs.\n#  rein:  every 1h \necho run >> '{}'\necho '{{\"s\": 1}}'\n",
                runs.display()
            ),
        );
        std::fs::set_permissions(
            dir.sensors().join("slow.sh"),
            std::fs::Permissions::from_mode(0o700),
        )
        .expect("chmod");
        write_sensor(&dir, "fast", "echo '{\"f\": 1}'");

        let first = sense_due(&dir, &config).expect("sense");
        assert!(first.changed);
        assert_eq!(count(), 1, "a sensor never run is due");
        let kept = store::read_json::<Snapshot>(&dir.snapshot("slow"))
            .expect("read")
            .expect("written");
        assert_eq!(kept.checked, Some(kept.taken), "{kept:?}");
        let written = inodes(&dir);

        // Within its hour a beat takes its reading as kept, and writes nothing for it.
        let second = sense_due(&dir, &config).expect("sense");
        assert!(!second.changed);
        assert_eq!(count(), 1, "not due within its interval");
        assert_eq!(second.snapshots, first.snapshots);
        assert_eq!(inodes(&dir), written);

        // `rein sense` runs every sensor: the same reading, so only when it was checked moves.
        let third = sense(&dir, &config).expect("sense");
        assert!(!third.changed);
        assert_eq!(
            count(),
            2,
            "sensing on request runs it whatever its interval"
        );
        let rechecked = store::read_json::<Snapshot>(&dir.snapshot("slow"))
            .expect("read")
            .expect("kept");
        assert_eq!(
            rechecked.taken, kept.taken,
            "the reading held since it was taken"
        );
        assert!(rechecked.checked > kept.checked, "{rechecked:?}");

        // Once the interval has passed, a beat runs it again.
        let mut stale = rechecked.clone();
        stale.checked = Some(Utc::now() - chrono::Duration::hours(2));
        store::write_json(&dir.snapshot("slow"), &stale).expect("age it");
        let fourth = sense_due(&dir, &config).expect("sense");
        assert!(!fourth.changed);
        assert_eq!(count(), 3, "due again after its interval");
    }

    #[test]
    fn an_interval_line_that_does_not_parse_is_the_sensors_error() {
        let temp = tempfile::tempdir().expect("temp");
        let dir = DataDir::new(temp.path());
        dir.create_dirs().expect("dirs");
        write_sensor(&dir, "soon", "# rein: every soon\necho '{}'");
        write_sensor(&dir, "what", "# rein: sometimes\necho '{}'");
        write_sensor(&dir, "late", "echo '{}'\n# rein: every banana\n");
        let report = sense_due(&dir, &SensorConfig::default()).expect("sense");
        let by_name = |name: &str| {
            report
                .snapshots
                .iter()
                .find(|s| s.sensor == name)
                .expect("a snapshot")
                .clone()
        };
        let soon = by_name("soon");
        assert!(!soon.ok);
        let error = soon.error.unwrap_or_default();
        assert!(
            error.contains("# rein: every soon") && error.contains("# rein: every 10m"),
            "{error}"
        );
        let what = by_name("what").error.unwrap_or_default();
        assert!(
            what.contains("sometimes") && what.contains("every"),
            "{what}"
        );
        assert!(
            by_name("late").ok,
            "a line past the opening comments is the script's own"
        );
    }

    #[test]
    fn an_unchanged_world_is_sensed_without_writing_a_file() {
        let temp = tempfile::tempdir().expect("temp");
        let dir = DataDir::new(temp.path());
        dir.create_dirs().expect("dirs");
        let config = SensorConfig::default();
        let sensor = |name: &str, body: &str| write_sensor(&dir, name, body);
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
