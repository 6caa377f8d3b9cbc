//! Shared test harness: a temp data dir and config per test, the real `rein` binary, and
//! waiting helpers with deadlines.
#![allow(dead_code)]

pub mod agents;
pub mod model_server;
pub mod user_manager;
pub mod wait;

#[allow(unused_imports)]
pub use wait::{blocked_in_poll, settled, wait_until};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const REIN: &str = env!("CARGO_BIN_EXE_rein");

/// One rein profile in a temp dir.
pub struct Rein {
    pub temp: tempfile::TempDir,
    pub data: PathBuf,
    pub config: PathBuf,
    pub profile: String,
    pub extra_env: Vec<(String, String)>,
}

impl Rein {
    pub fn new() -> Rein {
        Rein::in_temp(tempfile::tempdir().expect("tempdir"))
    }

    /// A profile whose files live under `parent` instead of /tmp.
    pub fn new_in(parent: &Path) -> Rein {
        std::fs::create_dir_all(parent).expect("create parent");
        Rein::in_temp(tempfile::tempdir_in(parent).expect("tempdir"))
    }

    fn in_temp(temp: tempfile::TempDir) -> Rein {
        let data = temp.path().join("data");
        let config = temp.path().join("config.toml");
        let profile = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        Rein {
            temp,
            data,
            config,
            profile,
            extra_env: Vec::new(),
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Rein {
        self.extra_env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// This profile with `rein` (and systemctl) pointed at a manager of the test's own.
    pub fn on(self, manager: &user_manager::PrivateManager) -> Rein {
        manager
            .exports()
            .into_iter()
            .fold(self, |rein, (key, value)| rein.env(key, &value))
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.command_of(Path::new(REIN), args)
    }

    /// [`Rein::command`] with another copy of the `rein` binary.
    pub fn command_of(&self, program: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(program);
        command
            .args(args)
            .env("REIN_DATA_DIR", &self.data)
            .env("REIN_CONFIG", &self.config)
            .env("REIN_PROFILE", &self.profile)
            .env("USER", "tester")
            .env_remove("REIN_WORKER_ID")
            .env_remove("REIN_LOG")
            .stdin(Stdio::null());
        for (key, value) in &self.extra_env {
            command.env(key, value);
        }
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run rein")
    }

    pub fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rein");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait rein")
    }

    /// Runs and asserts exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "rein {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Writes the sensor `flag`: it prints the data dir's `flag.json`, or `{}` while there is
    /// none, so a test changes the world by writing that file.
    pub fn flag_sensor(&self) {
        self.ok(&[
            "sensor",
            "write",
            "flag",
            "cat flag.json 2>/dev/null || echo '{}'",
        ]);
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).expect("valid JSON")
    }

    pub fn spawn(&self, args: &[&str]) -> Spawned {
        Spawned(Some(
            self.command(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn rein"),
        ))
    }

    /// The ids of pending asks.
    pub fn pending_ids(&self) -> Vec<String> {
        self.json(&["asks"])
            .as_array()
            .expect("array")
            .iter()
            .map(|a| a["id"].as_str().expect("id").to_owned())
            .collect()
    }

    /// The id of the listed ask (pending, or resolved and not yet delivered) asking `prompt`.
    pub fn ask_id_of(&self, prompt: &str) -> String {
        self.json(&["asks"])
            .as_array()
            .expect("asks")
            .iter()
            .find(|a| a["prompt"] == prompt)
            .and_then(|a| a["id"].as_str())
            .unwrap_or_else(|| panic!("no ask {prompt:?}"))
            .to_owned()
    }

    /// Runs `args`, which must be refused as bad input: exit 2, `says` in its stderr, and the
    /// data dir exactly as it was. Returns the stderr.
    pub fn refused(&self, args: &[&str], says: &str) -> String {
        let before = tree(&self.data);
        let output = self.run(args);
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(tree(&self.data), before, "{args:?} changed the data dir");
        stderr
    }

    /// Waits until exactly one pending ask exists and returns its id.
    pub fn wait_for_one_ask(&self) -> String {
        let mut id = None;
        wait_until(Duration::from_secs(10), "an ask to be filed", || {
            let ids = self.pending_ids();
            id = ids.first().cloned();
            ids.len() == 1
        });
        id.expect("ask id")
    }

    /// A profile on the reachable user manager (started if needed), with this config.
    pub fn fleet(config: &str) -> Rein {
        user_manager::ensure();
        let rein = Rein::new();
        rein.write_config(config);
        rein
    }

    /// One worker as `rein worker ls --json` shows it, or null when it is not listed.
    pub fn worker(&self, id: &str) -> serde_json::Value {
        self.json(&["worker", "ls"])
            .as_array()
            .expect("array")
            .iter()
            .find(|w| w["id"] == id)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("write config");
    }
}

/// A child process that is killed when dropped, so a failing test leaves no `rein ask` or
/// `rein wait` blocked forever behind it.
pub struct Spawned(Option<Child>);

impl Spawned {
    pub fn into_child(mut self) -> Child {
        self.0.take().expect("child present until taken")
    }
}

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("child present until taken")
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("child present until taken")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl From<Child> for Spawned {
    fn from(child: Child) -> Spawned {
        Spawned(Some(child))
    }
}

impl From<Spawned> for Child {
    fn from(spawned: Spawned) -> Child {
        spawned.into_child()
    }
}

/// Runs `rein down` for the profile when dropped, so a failing test leaves no unit behind.
pub struct Down<'a>(pub &'a Rein);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["down"]);
    }
}

/// Waits for a child with a deadline; kills it and fails the test if it overruns.
pub fn wait_child(child: impl Into<Child>, limit: Duration, what: &str) -> Output {
    let child = child.into();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("wait child"),
        Err(_) => {
            // SAFETY: killing our own child that overran.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

/// True while the child has not exited.
pub fn still_running(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

/// Every file under `root` with its contents, to prove a command changed nothing.
pub fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    fn walk(dir: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.insert(path.clone(), Vec::new());
                walk(&path, files);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    walk(root, &mut files);
    files
}

pub fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
