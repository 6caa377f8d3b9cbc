//! The only code that touches files in the data dir.
//!
//! Invariants it keeps for everyone else:
//! - every write is atomic: a temp file (named with a leading `.`, which every reader and
//!   watcher ignores) is written, fsynced, renamed into place, and the directory is fsynced;
//! - an exclusive create publishes a complete file or nothing (hard link of the finished temp
//!   file, which fails if the name exists), so "first writer wins" holds across processes;
//! - appends are one `write` of a whole line followed by fsync; a reader drops a torn tail;
//! - ids and names pass [`validate_id`] before they become part of a path.

pub mod layout;
pub mod linger;
pub mod watch;

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use layout::DataDir;

/// Longest id or name rein accepts.
pub const MAX_ID_LEN: usize = 64;

/// Checks an id or name against rein's one pattern: lowercase letters, digits, `-`, `_`, `.`;
/// not starting with `.`; no `..`; 1 to 64 characters. `kind` names the thing in the message.
pub fn validate_id(kind: &str, id: &str) -> Result<()> {
    let problem = |why: &str| {
        Error::invalid(format!(
            "invalid {kind} {id:?}: {why}; use 1-{MAX_ID_LEN} lowercase letters, digits, '-', '_' or '.', not starting with '.'"
        ))
    };
    if id.is_empty() {
        return Err(problem("it is empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(problem("it is too long"));
    }
    if id.starts_with('.') {
        return Err(problem("it starts with '.'"));
    }
    if id.contains("..") {
        return Err(problem("it contains '..'"));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')))
    {
        return Err(problem(&format!("{bad:?} is not allowed")));
    }
    Ok(())
}

/// For `#[serde(deserialize_with = "store::valid_id")]` on the id and name fields of records:
/// a record whose id breaks the pattern does not load, so a planted or hand-edited file
/// cannot carry an id into code that builds paths or messages from it.
pub fn valid_id<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<String, D::Error> {
    let id = <String as serde::Deserialize>::deserialize(deserializer)?;
    validate_id("id", &id).map_err(serde::de::Error::custom)?;
    Ok(id)
}

/// True for names rein never treats as records: temp files and other dot files.
pub fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".tmp-{}-{}", uuid::Uuid::new_v4().simple(), name))
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// fsyncs a directory so a rename or link inside it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing directory", dir, e))
}

pub fn ensure_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("creating directory", dir, e))
}

fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> Result<PathBuf> {
    let temp = temp_path_for(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(Error::io("writing", path, e));
    }
    Ok(temp)
}

/// Replaces `path` with `bytes` atomically (readers see the old or the new file, never a mix).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let temp = write_temp(path, bytes, mode)?;
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(Error::io("renaming into place", path, e));
    }
    sync_dir(parent_of(path))
}

/// Publishes `bytes` at `path` only if nothing is there yet. Returns false (and writes
/// nothing) when the name already exists. Atomic across processes.
pub fn create_exclusive(path: &Path, bytes: &[u8]) -> Result<bool> {
    create_exclusive_mode(path, bytes, 0o644)
}

pub fn create_exclusive_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<bool> {
    let temp = write_temp(path, bytes, mode)?;
    let linked = fs::hard_link(&temp, path);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            sync_dir(parent_of(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io("creating", path, e)),
    }
}

/// Writes `bytes` only when `path` does not exist; never overwrites what a user wrote.
/// Returns whether it wrote.
pub fn seed_file(path: &Path, bytes: &[u8], mode: u32) -> Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    create_exclusive_mode(path, bytes, mode)
}

/// Appends one line (a newline is added) in a single write, then fsyncs.
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut record = line.replace(['\n', '\r'], " ");
    record.push('\n');
    let result = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
        .and_then(|mut file| {
            file.write_all(record.as_bytes())?;
            file.sync_data()
        });
    result.map_err(|e| Error::io("appending to", path, e))
}

/// Reads a whole file; `Ok(None)` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", path, e)),
    }
}

/// Reads at most the last `window` bytes of a file, starting after a newline when it had to
/// cut; `Ok(None)` when it does not exist.
pub fn read_tail(path: &Path, window: u64) -> Result<Option<Vec<u8>>> {
    use std::io::{Seek, SeekFrom};
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    let read = (|| {
        let length = file.metadata()?.len();
        let start = length.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        if start > 0 {
            let cut = bytes
                .iter()
                .position(|b| *b == b'\n')
                .map_or(bytes.len(), |i| i + 1);
            bytes.drain(..cut);
        }
        Ok(bytes)
    })();
    read.map(Some).map_err(|e| Error::io("reading", path, e))
}

pub fn read_text(path: &Path) -> Result<Option<String>> {
    match read_optional(path)? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::Corrupt {
                path: path.to_owned(),
                detail: "not UTF-8 text".into(),
            }),
    }
}

/// Reads and parses a JSON record; a parse failure is reported with the file's name.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match read_optional(path)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                path: path.to_owned(),
                detail: e.to_string(),
            }),
    }
}

pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, &to_json_bytes(value))
}

pub fn to_json_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The visible entries of a directory whose names end with `suffix`, as (stem, path), sorted.
/// A missing directory is empty.
pub fn list(dir: &Path, suffix: &str) -> Result<Vec<(String, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("listing", dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_hidden(&name) {
            continue;
        }
        if let Some(stem) = name.strip_suffix(suffix) {
            if !stem.is_empty() {
                found.push((stem.to_owned(), entry.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Moves a file to `to` (creating its directory), keeping it: rein archives, never deletes.
/// Returns false when `from` was already gone.
pub fn move_file(from: &Path, to: &Path) -> Result<bool> {
    ensure_dir(parent_of(to))?;
    match fs::rename(from, to) {
        Ok(()) => {
            sync_dir(parent_of(to))?;
            sync_dir(parent_of(from))?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("moving", from, e)),
    }
}

/// Removes a file that is derived or ephemeral (a lease, a stale snapshot). Missing is fine.
pub fn remove_file(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_dir(parent_of(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("removing", path, e)),
    }
}

pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("setting permissions of", path, e))
}

/// An exclusive advisory lock on a file, released on drop (or when the process dies).
pub struct Lock {
    _file: File,
}

pub fn lock(path: &Path) -> Result<Lock> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| Error::io("opening lock", path, e))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        return Err(Error::io("locking", path, std::io::Error::last_os_error()));
    }
    Ok(Lock { _file: file })
}

/// Reads at most `cap` bytes from a reader; the flag says whether more was available.
pub fn read_capped(reader: &mut impl Read, cap: usize) -> std::io::Result<(Vec<u8>, bool)> {
    let mut buffer = Vec::new();
    // One byte past the cap tells whether there was more; a cap of u64::MAX cannot overflow.
    let read = reader
        .take((cap as u64).saturating_add(1))
        .read_to_end(&mut buffer)?;
    let over = read > cap;
    buffer.truncate(cap);
    Ok((buffer, over))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_pattern() {
        let good = [
            "w1",
            "fix-login",
            "a.b",
            "x_y",
            "0",
            &"a".repeat(MAX_ID_LEN),
        ];
        for id in good {
            assert!(validate_id("id", id).is_ok(), "{id:?} should pass");
        }
        let long = "a".repeat(MAX_ID_LEN + 1);
        let bad = [
            "",
            ".hidden",
            "a/b",
            "..",
            "a..b",
            "Upper",
            "sp ace",
            "semi;colon",
            "é",
            &long,
            "../etc",
            "a\nb",
        ];
        for id in bad {
            let err = validate_id("id", id).expect_err(id);
            assert_eq!(err.exit_code(), crate::error::EXIT_USAGE);
        }
    }

    #[test]
    fn exclusive_create_has_one_winner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.json");
        assert!(create_exclusive(&path, b"first").expect("create"));
        assert!(!create_exclusive(&path, b"second").expect("create"));
        assert_eq!(fs::read(&path).expect("read"), b"first");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(leftovers.len(), 1, "no temp files remain");
    }

    #[test]
    fn read_capped_takes_any_cap() {
        // Found by fuzzing: `cap + 1` overflowed for the largest cap (a debug build
        // panicked, a release build read nothing).
        for (cap, input, expected, over) in [
            (
                usize::MAX,
                &b"sensor output"[..],
                &b"sensor output"[..],
                false,
            ),
            (4, b"sensor", b"sens", true),
            (6, b"sensor", b"sensor", false),
            (0, b"", b"", false),
            (0, b"x", b"", true),
        ] {
            let (read, more) = read_capped(&mut &input[..], cap).expect("read");
            assert_eq!((read.as_slice(), more), (expected, over), "cap {cap}");
        }
    }

    #[test]
    fn seed_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("PLAYBOOK.md");
        fs::write(&path, "mine").expect("write");
        assert!(!seed_file(&path, b"seed", 0o644).expect("seed"));
        assert_eq!(fs::read_to_string(&path).expect("read"), "mine");
    }
}
