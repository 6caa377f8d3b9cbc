//! The only code that touches files in the data dir.
//!
//! Invariants it keeps for everyone else:
//! - every write is atomic: a temp file (named with a leading `.`, which every reader and
//!   watcher ignores) is written, fsynced, renamed into place, and the directory is fsynced;
//! - an exclusive create publishes a complete file or nothing (hard link of the finished temp
//!   file, which fails if the name exists), so "first writer wins" holds across processes;
//! - appends are one `write` of a whole line followed by fsync; a reader drops a torn tail;
//! - ids and names pass [`validate_id`] before they become part of a path;
//! - everything rein creates is private whatever the umask: directories 0700, files 0600
//!   (sensor scripts 0700), because asks and answers can hold secrets and an answer written
//!   by someone else is a forged decision;
//! - reads take regular files only, never through a symlink, and at most [`MAX_READ`] bytes,
//!   so a FIFO, a device or a symlink planted in the data dir is reported by name instead of
//!   hanging or exhausting the reader; the data dir's own directories must be real ones
//!   ([`ensure_real_dir`], checked by [`DataDir`]), so no write goes through a symlink;
//! - temp files a killed writer left behind are removed by age ([`sweep_temps`]).

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

/// The mode of every directory rein creates.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file rein creates (sensor scripts add the owner's exec bit).
pub const FILE_MODE: u32 = 0o600;
/// The mode of sensor scripts: the owner's, executable.
pub const SCRIPT_MODE: u32 = 0o700;
/// The largest file a store read accepts.
pub const MAX_READ: u64 = 8 << 20;
/// How old a temp file must be before [`sweep_temps`] takes it for a killed writer's.
pub const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(600);

/// The prefix of every temp file rein writes.
const TEMP_PREFIX: &str = ".tmp-";

fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        "{TEMP_PREFIX}{}-{}",
        uuid::Uuid::new_v4().simple(),
        name
    ))
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

/// Creates a directory (and its missing parents) private to the user: mode 0700 whatever
/// the umask. An existing directory is left as it is.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| Error::io("creating directory", dir, e))
}

/// [`ensure_dir`] for a directory inside the data dir, which must be a real directory: one
/// replaced by a symlink would send rein's writes (answers!) wherever it points.
pub fn ensure_real_dir(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(meta) => Err(Error::Corrupt {
            path: dir.to_owned(),
            detail: format!(
                "it is {} where rein keeps a directory; rein writes only into real directories",
                describe_type(&meta.file_type())
            ),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => ensure_dir(dir),
        Err(e) => Err(Error::io("checking directory", dir, e)),
    }
}

/// Says what a non-regular file is, for messages.
fn describe_type(file_type: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_symlink() {
        "a symlink"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else if file_type.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Removes temp files in `dir` older than `older_than`: what a writer killed between its
/// temp file and the rename left behind. Returns how many went. A fresh temp file may be
/// another writer's work in progress and is kept.
pub fn sweep_temps(dir: &Path, older_than: std::time::Duration) -> Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("listing", dir, e)),
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let stale = meta
            .modified()
            .ok()
            .and_then(|at| now.duration_since(at).ok())
            .is_some_and(|age| age >= older_than);
        if stale && meta.is_file() && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Whether `path` was last modified more than `age` ago, or does not exist.
pub fn older_than(path: &Path, age: std::time::Duration) -> Result<bool> {
    match fs::metadata(path) {
        Ok(meta) => Ok(meta
            .modified()
            .ok()
            .and_then(|at| std::time::SystemTime::now().duration_since(at).ok())
            .is_none_or(|since| since >= age)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io("inspecting", path, e)),
    }
}

/// Creates `path` empty if missing and sets its modification time to now (a marker; no
/// content to lose, so not written through a temp).
pub fn touch(path: &Path) -> Result<()> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .and_then(|file| file.set_modified(std::time::SystemTime::now()))
        .map_err(|e| Error::io("writing", path, e))
}

/// Writes `bytes` to a new temp file beside `path` (made durable when `sync`); returns its
/// path. On failure nothing is left behind.
fn write_temp(path: &Path, bytes: &[u8], mode: u32, sync: bool) -> Result<PathBuf> {
    let temp = temp_path_for(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(bytes)?;
        if sync {
            file.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(Error::io("writing", path, e));
    }
    Ok(temp)
}

/// [`write_atomic`] without its fsyncs: for a caller that writes many files and then makes
/// them durable at once (`syncfs`). The temp file has the store's temp name, so one left by a
/// crash is swept like any other.
pub fn replace_unsynced(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = write_temp(path, bytes, FILE_MODE, false)?;
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(Error::io("writing", path, e));
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically (readers see the old or the new file, never a mix).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_mode(path, bytes, FILE_MODE)
}

pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let temp = write_temp(path, bytes, mode, true)?;
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(Error::io("renaming into place", path, e));
    }
    sync_dir(parent_of(path))
}

/// Publishes `bytes` at `path` only if nothing is there yet. Returns false (and writes
/// nothing) when the name already exists. Atomic across processes.
pub fn create_exclusive(path: &Path, bytes: &[u8]) -> Result<bool> {
    create_exclusive_mode(path, bytes, FILE_MODE)
}

pub fn create_exclusive_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<bool> {
    let temp = write_temp(path, bytes, mode, true)?;
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
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .and_then(|mut file| {
            file.write_all(record.as_bytes())?;
            file.sync_data()
        });
    result.map_err(|e| Error::io("appending to", path, e))
}

/// Opens a file rein reads: a regular file only, never through a symlink (`O_NOFOLLOW`), and
/// without blocking on a FIFO (`O_NONBLOCK`, then `fstat`). `Ok(None)` when it does not exist.
/// Anything else is [`Error::Corrupt`] naming the file and what it is.
pub fn open_regular(path: &Path) -> Result<Option<(File, u64)>> {
    open_checked(path, libc::O_NOFOLLOW)
}

fn open_checked(path: &Path, follow: libc::c_int) -> Result<Option<(File, u64)>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(follow | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(not_regular(path, "a symlink"))
        }
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    let meta = file.metadata().map_err(|e| Error::io("reading", path, e))?;
    if !meta.is_file() {
        return Err(not_regular(path, describe_type(&meta.file_type())));
    }
    Ok(Some((file, meta.len())))
}

fn not_regular(path: &Path, what: &str) -> Error {
    Error::Corrupt {
        path: path.to_owned(),
        detail: format!("it is {what}, not a regular file; rein reads only regular files"),
    }
}

/// Reads a whole file (a regular file of at most [`MAX_READ`] bytes, see [`open_regular`]);
/// `Ok(None)` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    read_opened(path, open_regular(path)?)
}

/// [`read_text`] for a file the user keeps outside the data dir and may link from elsewhere
/// (the config): a symlink is followed, but the target must still be a regular file.
pub fn read_user_text(path: &Path) -> Result<Option<String>> {
    read_opened(path, open_checked(path, 0)?)?
        .map(|bytes| utf8(path, bytes))
        .transpose()
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| Error::Corrupt {
        path: path.to_owned(),
        detail: "not UTF-8 text".into(),
    })
}

fn read_opened(path: &Path, opened: Option<(File, u64)>) -> Result<Option<Vec<u8>>> {
    let Some((file, length)) = opened else {
        return Ok(None);
    };
    let too_big = || Error::Corrupt {
        path: path.to_owned(),
        detail: format!("it is larger than {MAX_READ} bytes, more than any record rein writes"),
    };
    if length > MAX_READ {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(length as usize);
    file.take(MAX_READ + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("reading", path, e))?;
    if bytes.len() as u64 > MAX_READ {
        return Err(too_big());
    }
    Ok(Some(bytes))
}

/// Reads at most the last `window` bytes of a file, starting after a newline when it had to
/// cut; `Ok(None)` when it does not exist.
pub fn read_tail(path: &Path, window: u64) -> Result<Option<Vec<u8>>> {
    use std::io::{Seek, SeekFrom};
    let Some((mut file, length)) = open_regular(path)? else {
        return Ok(None);
    };
    let read = (|| {
        let start = length.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        (&mut file).take(window).read_to_end(&mut bytes)?;
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
    read_optional(path)?
        .map(|bytes| utf8(path, bytes))
        .transpose()
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

/// [`write_json`] of several files: each is written to its temp file and synced, then all are
/// renamed into place and each directory is synced once (a beat writes a snapshot per sensor:
/// one directory sync, not one per file). Each file ends up old or new, never half-written.
pub fn write_json_each<T: serde::Serialize>(files: &[(PathBuf, &T)]) -> Result<()> {
    let mut temps: Vec<(PathBuf, &Path)> = Vec::with_capacity(files.len());
    for (path, value) in files {
        match write_temp(path, &to_json_bytes(value), FILE_MODE, true) {
            Ok(temp) => temps.push((temp, path)),
            Err(error) => {
                for (temp, _) in &temps {
                    let _ = fs::remove_file(temp);
                }
                return Err(error);
            }
        }
    }
    let mut dirs: Vec<&Path> = Vec::new();
    for (index, (temp, path)) in temps.iter().enumerate() {
        if let Err(e) = fs::rename(temp, path) {
            for (temp, _) in &temps[index..] {
                let _ = fs::remove_file(temp);
            }
            return Err(Error::io("renaming into place", path, e));
        }
        if !dirs.contains(&parent_of(path)) {
            dirs.push(parent_of(path));
        }
    }
    for dir in dirs {
        sync_dir(dir)?;
    }
    Ok(())
}

pub fn to_json_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The visible entries of a directory whose names end with `suffix`, as (stem, path), sorted.
/// A missing directory is empty.
pub fn list(dir: &Path, suffix: &str) -> Result<Vec<(String, PathBuf)>> {
    Ok(list_with_inodes(dir, suffix)?
        .into_iter()
        .map(|(stem, path, _)| (stem, path))
        .collect())
}

/// [`list`] with each entry's inode number, as the directory listing gives it (no stat).
/// rein replaces a file only by renaming or linking a new one over it, so an entry whose
/// inode is unchanged has unchanged contents: a reader that keeps what it read can skip it.
pub fn list_with_inodes(dir: &Path, suffix: &str) -> Result<Vec<(String, PathBuf, u64)>> {
    use std::os::unix::fs::DirEntryExt;
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
                found.push((stem.to_owned(), entry.path(), entry.ino()));
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

/// Moves each file of `files` into the directory `to` under its own name, keeping it, with
/// one sync of each directory for the lot. A move is a rename: a crash leaves each file in
/// one place or the other, never in both or neither. Returns how many were moved (a file
/// already gone is passed over).
pub fn move_files_into(files: &[PathBuf], to: &Path) -> Result<usize> {
    ensure_dir(to)?;
    let mut moved = 0;
    let mut sources = Vec::new();
    for from in files {
        let Some(name) = from.file_name() else {
            continue;
        };
        match fs::rename(from, to.join(name)) {
            Ok(()) => {
                moved += 1;
                let source = parent_of(from);
                if !sources.contains(&source) {
                    sources.push(source);
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("moving", from, e)),
        }
    }
    if moved > 0 {
        sync_dir(to)?;
        for source in sources {
            sync_dir(source)?;
        }
    }
    Ok(moved)
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
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
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

/// Takes an exclusive lock on `path` without waiting, and records `holder` in the file for
/// whoever finds it taken. `Ok(Err(holder))` names the process that holds it.
pub fn try_lock(path: &Path, holder: &str) -> Result<std::result::Result<Lock, String>> {
    use std::os::fd::AsRawFd;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io("opening lock", path, e))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut held = String::new();
            let _ = (&mut file).take(1024).read_to_string(&mut held);
            return Ok(Err(held.trim().to_owned()));
        }
        return Err(Error::io("locking", path, error));
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.write_all(holder.as_bytes()))
        .and_then(|()| file.sync_data());
    written.map_err(|e| Error::io("writing", path, e))?;
    Ok(Ok(Lock { _file: file }))
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
    fn several_files_are_written_all_or_none_left_half() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
        std::fs::write(&a, "old\n").expect("old a");
        write_json_each(&[(a.clone(), &1), (b.clone(), &2)]).expect("write");
        assert_eq!(std::fs::read_to_string(&a).expect("a"), "1\n");
        assert_eq!(std::fs::read_to_string(&b).expect("b"), "2\n");
        // One that cannot be written: nothing is renamed into place and no temp is left.
        let missing = dir.path().join("missing/c.json");
        assert!(write_json_each(&[(a.clone(), &3), (missing, &4)]).is_err());
        assert_eq!(std::fs::read_to_string(&a).expect("a"), "1\n");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

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
