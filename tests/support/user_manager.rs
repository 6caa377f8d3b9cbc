//! A reachable systemd user manager for integration tests.
//!
//! `ensure()` returns the environment of a user manager that answers: the caller's own (a
//! desktop session, or one CI started with `contrib/user-session.sh start`), else one this
//! test binary starts once through that same script. It sets `XDG_RUNTIME_DIR` and
//! `DBUS_SESSION_BUS_ADDRESS` in the test process so code that reads the environment finds
//! it. A manager started here is left running at exit (there is no reliable exit hook); CI
//! stops it by its recorded pid with `contrib/user-session.sh stop`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where the user manager answers.
#[derive(Debug, Clone)]
pub struct UserManagerEnv {
    pub xdg_runtime_dir: PathBuf,
    pub dbus_session_bus_address: String,
}

/// The environment of a reachable user manager, started if needed (once per test binary).
/// Panics with the script's diagnostics if none can be had: every test here needs one.
pub fn ensure() -> &'static UserManagerEnv {
    static ENV: OnceLock<UserManagerEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let env = start_or_find();
        // Set once, while every other test of this binary waits on the OnceLock.
        std::env::set_var("XDG_RUNTIME_DIR", &env.xdg_runtime_dir);
        std::env::set_var("DBUS_SESSION_BUS_ADDRESS", &env.dbus_session_bus_address);
        env
    })
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/user-session.sh")
}

/// `user-session.sh start` reuses a reachable manager (judged from the inherited
/// `XDG_RUNTIME_DIR`) or starts one, and prints `export` lines either way.
fn start_or_find() -> UserManagerEnv {
    let script = script();
    let output = Command::new("bash")
        .arg(&script)
        .arg("start")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} start failed ({}):\n{stderr}",
        script.display(),
        output.status
    );

    let mut xdg_runtime_dir = None;
    let mut dbus_session_bus_address = None;
    for line in stdout.lines() {
        let Some((key, value)) = line
            .strip_prefix("export ")
            .and_then(|assignment| assignment.split_once('='))
        else {
            continue;
        };
        // The script quotes values with printf %q.
        let value = match shell_words::split(value) {
            Ok(words) if words.len() == 1 => words.into_iter().next().unwrap_or_default(),
            _ => panic!("cannot parse {line:?} from {}", script.display()),
        };
        match key {
            "XDG_RUNTIME_DIR" => xdg_runtime_dir = Some(PathBuf::from(value)),
            "DBUS_SESSION_BUS_ADDRESS" => dbus_session_bus_address = Some(value),
            _ => {}
        }
    }
    match (xdg_runtime_dir, dbus_session_bus_address) {
        (Some(xdg_runtime_dir), Some(dbus_session_bus_address)) => UserManagerEnv {
            xdg_runtime_dir,
            dbus_session_bus_address,
        },
        _ => panic!(
            "{} start printed no environment:\nstdout:\n{stdout}\nstderr:\n{stderr}",
            script.display()
        ),
    }
}

/// A systemd user manager of a test's own (`contrib/user-session.sh start DIR`), stopped by
/// its recorded pid when dropped. Its bus has a slice of its own, so signalling its bus
/// daemon or stopping it touches no other manager's.
pub struct PrivateManager {
    dir: tempfile::TempDir,
}

impl PrivateManager {
    pub fn start() -> PrivateManager {
        ensure();
        let manager = PrivateManager {
            dir: tempfile::tempdir().expect("runtime dir"),
        };
        manager.start_again();
        manager
    }

    fn session(&self, verb: &str) -> std::process::Output {
        let output = Command::new("bash")
            .arg(script())
            .arg(verb)
            .arg(self.dir.path())
            .output()
            .expect("user-session.sh");
        assert!(
            output.status.success(),
            "user-session.sh {verb}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Stops the manager (and with it its bus and every unit it ran).
    pub fn stop(&self) {
        self.session("stop");
    }

    /// Starts it again in the same runtime dir.
    pub fn start_again(&self) {
        self.session("start");
    }

    pub fn runtime_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The environment that points `rein` (and systemctl) at this manager.
    pub fn exports(&self) -> [(&'static str, String); 2] {
        let dir = self.dir.path().display();
        [
            ("XDG_RUNTIME_DIR", dir.to_string()),
            ("DBUS_SESSION_BUS_ADDRESS", format!("unix:path={dir}/bus")),
        ]
    }

    /// The pid of this manager's bus daemon.
    pub fn bus_pid(&self) -> Option<i32> {
        let dir = self.dir.path();
        let output = Command::new("systemctl")
            .args(["--user", "show", "-p", "MainPID", "--value", "dbus.service"])
            .env("XDG_RUNTIME_DIR", dir)
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}/bus", dir.display()),
            )
            .output()
            .ok()?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .ok()
            .filter(|pid| *pid > 0)
    }
}

impl Drop for PrivateManager {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}
