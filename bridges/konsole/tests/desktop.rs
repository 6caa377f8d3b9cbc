//! The Konsole bridge against a real Konsole and KWin under Xvfb.
//!
//! Once per test binary, `contrib/desktop-session.sh start` brings up Xvfb, KWin (four
//! virtual desktops) and one Konsole on the session bus of a systemd user manager (started
//! through `contrib/user-session.sh` when none is reachable), in `target/tmp/konsole-desktop`.
//! They are left running at exit for the next run; CI stops them with
//! `contrib/desktop-session.sh stop DIR`. The tests share that one Konsole, so they take turns.
//!
//! The tabs run a fake `rein` (a shell script) that writes its arguments and environment to a
//! file and then waits to be ended, so each test sees exactly what the bridge typed. One test
//! closes the whole loop with the real binaries instead: `rein ask`, `rein-bridge-konsole`,
//! and `rein answer --interactive` in the tab, typed into through Konsole's `sendText`; it
//! needs `target/debug/rein` beside this test (`cargo build -p rein`).

#[path = "../../../tests/support/wait.rs"]
mod wait;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use rein::bridge::config::BridgeSettings;
use rein::bridge::engine::{run, Engine};
use rein::bridge::{Channel, PostRef};
use rein::mailbox::{Ask, Mailbox, NewAsk, Resolution, ResolutionKind};
use rein::store::DataDir;
use rein_bridge_konsole::command::{TabAction, IDENTITY_VARIABLE};
use rein_bridge_konsole::konsole::Konsole;
use rein_bridge_konsole::kwin::{KWin, KWinApi, Placed, Placement};
use rein_bridge_konsole::{Closed, KonsoleChannel, KonsoleConfig};
use tokio::sync::Mutex;

/// The tests share one Konsole window; they take turns.
static TURN: Mutex<()> = Mutex::const_new(());

const DEADLINE: Duration = Duration::from_secs(20);

struct Desktop {
    display: String,
    service: String,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `contrib/SCRIPT ARGS…` and returns the `export NAME=value` lines it prints.
fn exports(script: &str, args: &[&Path]) -> BTreeMap<String, String> {
    exports_with(script, args, &BTreeMap::new())
}

/// [`exports`] with `environment` added to the script's.
fn exports_with(
    script: &str,
    args: &[&Path],
    environment: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let script = repo_root().join("contrib").join(script);
    let output = Command::new("bash")
        .arg(&script)
        .args(args)
        .envs(environment)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()));
    assert!(
        output.status.success(),
        "{} failed ({}):\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut exports = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let (key, value) = line
            .strip_prefix("export ")
            .and_then(|assignment| assignment.split_once('='))
            .unwrap_or_else(|| panic!("unexpected output line {line:?} from {}", script.display()));
        let words = shell_words::split(value).expect("quoted value");
        assert_eq!(words.len(), 1, "{line}");
        exports.insert(key.to_owned(), words[0].clone());
    }
    exports
}

/// The running desktop, started once per test binary: a user manager (the caller's, else
/// one `contrib/user-session.sh` starts) provides the session bus.
fn desktop() -> &'static Desktop {
    static DESKTOP: OnceLock<Desktop> = OnceLock::new();
    DESKTOP.get_or_init(|| {
        let start = Path::new("start");
        for (key, value) in exports("user-session.sh", &[start]) {
            // Set once, while every other test of this binary waits on the OnceLock.
            std::env::set_var(key, value);
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("konsole-desktop");
        let exports = exports("desktop-session.sh", &[start, &dir]);
        let display = exports.get("DISPLAY").expect("DISPLAY exported").clone();
        let service = exports
            .get("REIN_KONSOLE_SERVICE")
            .expect("REIN_KONSOLE_SERVICE exported")
            .clone();
        assert!(service.starts_with("org.kde.konsole-"), "{service}");
        Desktop { display, service }
    })
}

/// Polls `check` until it returns Some, or panics with `what` after [`DEADLINE`].
async fn wait_for<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait::wait_for_async(DEADLINE, what, check).await
}

/// A temp dir with a fake `rein` that records how it was run, then waits to be ended (for two
/// minutes at most, so a failed test leaves nothing running for long), exiting normally on a
/// signal as the real prompt does.
struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = dir.path().join("record");
        let script = format!(
            "#!/bin/sh\n{{ printf '%s\\n' \"$@\"; echo \"{IDENTITY_VARIABLE}=${IDENTITY_VARIABLE}\"; echo \"REIN_DATA_DIR=$REIN_DATA_DIR\"; }} > '{record}.tmp'\nmv '{record}.tmp' '{record}'\ntrap 'exit 0' INT TERM HUP\ni=0\nwhile [ $i -lt 120 ]; do sleep 1; i=$((i + 1)); done\n",
            record = record.display()
        );
        let rein = dir.path().join("rein");
        std::fs::write(&rein, script).expect("write fake rein");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rein, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Fake { dir }
    }

    fn rein(&self) -> PathBuf {
        self.dir.path().join("rein")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// What the fake recorded, once it has; the record is taken, so the next run of the
    /// fake writes a new one.
    async fn record(&self) -> Vec<String> {
        let path = self.dir.path().join("record");
        wait_for("the fake rein to run in the tab", || {
            let path = path.clone();
            async move {
                let text = std::fs::read_to_string(&path).ok()?;
                std::fs::remove_file(&path).ok()?;
                Some(text.lines().map(str::to_owned).collect())
            }
        })
        .await
    }

    /// The channel, configured with `keys` (TOML) plus this fake as `rein_bin`.
    async fn channel(&self, keys: &str) -> KonsoleChannel {
        let desktop = desktop();
        let mut table: toml::Table = keys.parse().expect("toml");
        table.insert("rein_bin".into(), self.rein().display().to_string().into());
        table.insert("service".into(), desktop.service.clone().into());
        let config = KonsoleConfig::from_table(&table).expect("valid config");
        let environment = vec![
            (IDENTITY_VARIABLE.to_owned(), "konsole:tester".to_owned()),
            (
                "REIN_DATA_DIR".to_owned(),
                self.data().display().to_string(),
            ),
        ];
        KonsoleChannel::connect(config, environment)
            .await
            .expect("connect to the session bus")
    }
}

fn ask(worker: &str) -> Ask {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    Ask {
        version: 1,
        id: format!("t{}", nanos % 10_000_000_000),
        seq: 1,
        worker: worker.to_owned(),
        prompt: "Deploy now? $(touch /tmp/never); `id`".to_owned(),
        reference: None,
        options: vec!["yes".into(), "no".into()],
        created: chrono::Utc::now(),
        key: "k".into(),
    }
}

fn answered(ask: &Ask) -> Resolution {
    Resolution {
        version: 1,
        ask: ask.id.clone(),
        kind: ResolutionKind::Answered,
        text: Some("yes".into()),
        by: "cli:tester".into(),
        at: chrono::Utc::now(),
        reason: None,
    }
}

async fn konsole() -> Konsole {
    let connection = zbus::Connection::session().await.expect("session bus");
    Konsole::find(&connection, Some(&desktop().service))
        .await
        .expect("the test Konsole")
}

fn session_of(post: &PostRef) -> u32 {
    let (service, session) = post.id.rsplit_once('/').expect("service/session");
    assert_eq!(service, desktop().service);
    session.parse().expect("session number")
}

/// The virtual desktop (1-based) of the Konsole window, as `wmctrl -l -p` shows it.
async fn window_desktop(konsole: &Konsole) -> u32 {
    let pid = konsole.pid().await.expect("konsole pid").to_string();
    let output = Command::new("wmctrl")
        .args(["-l", "-p"])
        .env("DISPLAY", &desktop().display)
        .output()
        .expect("run wmctrl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let desktops: Vec<u32> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(2) == Some(&pid.as_str())).then(|| fields[1].parse::<u32>().ok())?
        })
        .collect();
    assert_eq!(desktops.len(), 1, "one Konsole window expected in:\n{text}");
    desktops[0] + 1
}

async fn wait_gone(konsole: &Konsole, session: u32) {
    wait_for("the tab to close", || async {
        (!konsole.session_exists(session).await.expect("ask Konsole")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_ask_opens_a_titled_tab_running_the_exact_command() {
    let _turn = TURN.lock().await;
    let fake = Fake::new();
    let mut channel = fake.channel("").await;
    let konsole = konsole().await;
    let window = konsole.window(None).await.expect("a window");
    let before = konsole.sessions(window).await.expect("sessions");
    let ask = ask("w1");

    let post = channel
        .post_ask(&ask, "desktop", false)
        .await
        .expect("posted");
    let session = session_of(&post);
    assert_eq!(post.route, "desktop");

    let after = konsole.sessions(window).await.expect("sessions");
    assert!(
        !before.contains(&session) && after.contains(&session),
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(
        konsole.title(session).await.expect("title"),
        format!("ask {}", ask.id)
    );
    assert_eq!(
        fake.record().await,
        [
            "answer".to_owned(),
            "--interactive".to_owned(),
            ask.id.clone(),
            "REIN_ANSWER_IDENTITY=konsole:tester".to_owned(),
            format!("REIN_DATA_DIR={}", fake.data().display()),
        ]
    );
    // The shell ran the line typed into it: it became env, which exec'd the fake with exactly
    // these words; the fake is the tab's program.
    let foreground = konsole.foreground_process_id(session).await.expect("fg") as u32;
    assert_eq!(
        konsole
            .process_id(session)
            .await
            .expect("the tab's program") as u32,
        foreground
    );
    let arguments = rein_bridge_konsole::process::arguments(foreground).expect("cmdline");
    assert_eq!(
        arguments,
        [
            "/bin/sh".to_owned(),
            fake.rein().display().to_string(),
            "answer".to_owned(),
            "--interactive".to_owned(),
            ask.id.clone()
        ]
    );

    // A repeat of the same ask finds the running tab instead of opening another.
    let again = channel
        .post_ask(&ask, "desktop", true)
        .await
        .expect("posted again");
    assert_eq!(again, post);
    assert_eq!(
        konsole.sessions(window).await.expect("sessions").len(),
        after.len()
    );

    channel
        .resolved(&ask, &answered(&ask), &post)
        .await
        .expect("resolved");
    wait_gone(&konsole, session).await;
}

#[tokio::test]
async fn the_window_lands_on_the_configured_desktop() {
    let _turn = TURN.lock().await;
    let fake = Fake::new();
    let mut channel = fake
        .channel("desktop = 2\nworker_desktops = { w1 = 3 }\n")
        .await;
    let konsole = konsole().await;
    for (worker, route, expected) in [
        ("w1", "desktop", 3),
        ("w2", "desktop", 2),
        ("w2", "4", 4),
        ("w1", "4", 3),
    ] {
        let ask = ask(worker);
        let post = channel.post_ask(&ask, route, false).await.expect("posted");
        fake.record().await;
        assert_eq!(
            window_desktop(&konsole).await,
            expected,
            "worker {worker}, route {route}"
        );
        channel
            .resolved(&ask, &answered(&ask), &post)
            .await
            .expect("resolved");
        wait_gone(&konsole, session_of(&post)).await;
    }
}

#[tokio::test]
async fn resolved_closes_only_the_tab_it_opened() {
    let _turn = TURN.lock().await;
    let fake = Fake::new();
    let mut channel = fake.channel("").await;
    let konsole = konsole().await;
    let window = konsole.window(None).await.expect("a window");
    let ask = ask("w1");
    let post = channel.post_ask(&ask, "1", false).await.expect("posted");
    let session = session_of(&post);
    fake.record().await;
    let open = konsole.sessions(window).await.expect("sessions");
    assert!(open.contains(&session));

    // A tab whose program is not the one named is left alone.
    let other = TabAction::Attach {
        worker: "w1".into(),
    };
    match channel.close_tab(&post, &other).await.expect("close") {
        Closed::LeftOpen(why) => assert!(why.contains("runs"), "{why}"),
        outcome => panic!("closed a tab running something else: {outcome:?}"),
    }
    assert!(konsole.session_exists(session).await.expect("ask Konsole"));

    let action = channel.action_for(&ask);
    assert_eq!(
        channel.close_tab(&post, &action).await.expect("close"),
        Closed::Closed
    );
    let after = konsole.sessions(window).await.expect("sessions");
    assert_eq!(after.len(), open.len() - 1, "{open:?} -> {after:?}");
    assert!(!after.contains(&session));
    assert_eq!(
        channel.close_tab(&post, &action).await.expect("close"),
        Closed::AlreadyGone
    );
    channel
        .resolved(&ask, &answered(&ask), &post)
        .await
        .expect("resolved again");
}

#[tokio::test]
async fn attach_workers_get_worker_attach() {
    let _turn = TURN.lock().await;
    let fake = Fake::new();
    let mut channel = fake.channel("attach_workers = [\"w9\"]\n").await;
    let konsole = konsole().await;
    let ask = ask("w9");
    let post = channel
        .post_ask(&ask, "desktop", false)
        .await
        .expect("posted");
    let record = fake.record().await;
    assert_eq!(record[..3], ["worker", "attach", "w9"]);
    channel
        .resolved(&ask, &answered(&ask), &post)
        .await
        .expect("resolved");
    wait_gone(&konsole, session_of(&post)).await;
}

#[tokio::test]
async fn the_test_route_opens_a_short_lived_tab() {
    let _turn = TURN.lock().await;
    let fake = Fake::new();
    let mut channel = fake.channel("").await;
    let konsole = konsole().await;
    let report = channel.test("2").await.expect("test");
    let session: u32 = report
        .split("(session ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no session number in {report:?}"));
    assert!(report.contains("the window is on desktop 2"), "{report}");
    assert_eq!(window_desktop(&konsole).await, 2);
    assert!(
        konsole.session_exists(session).await.expect("ask Konsole"),
        "{report}"
    );
    assert_eq!(
        konsole.title(session).await.expect("title"),
        "rein bridge test"
    );
    // The harmless line ends after 5 seconds, and its tab with it.
    wait_gone(&konsole, session).await;
    assert!(channel.test("0").await.is_err(), "desktop 0 accepted");
}

#[tokio::test]
async fn the_engine_opens_a_tab_per_ask_and_closes_it_when_answered() {
    let _turn = TURN.lock().await;
    let fake = Fake::new();
    let channel = fake.channel("desktop = 2\n").await;
    let konsole = konsole().await;
    let data = DataDir::new(fake.data());
    data.create_dirs().expect("data dir");
    let settings = BridgeSettings {
        name: "konsole".into(),
        allow: vec!["konsole:tester".into()],
        routes: vec!["desktop".into()],
        worker_routes: BTreeMap::new(),
        rate_per_minute: 100,
        notes: false,
        secret_file: None,
        credential: None,
        channel: toml::Table::new(),
    };
    let engine = Engine::new(channel, settings, data.clone()).expect("engine");
    let (_inbound, receiver) = tokio::sync::mpsc::channel(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let engine = tokio::spawn(run(engine, receiver, async {
        let _ = stopped.await;
    }));

    let mailbox = Mailbox::new(data.clone());
    let (ask, _) = mailbox
        .file(&NewAsk {
            worker: "w1".into(),
            prompt: "Merge it?".into(),
            reference: None,
            options: vec![],
        })
        .expect("file ask");
    let record = fake.record().await;
    assert_eq!(
        record[..3],
        [
            "answer".to_owned(),
            "--interactive".to_owned(),
            ask.id.clone()
        ]
    );
    let session = wait_for("a tab titled with the ask", || async {
        let window = konsole.window(None).await.ok()?;
        for session in konsole.sessions(window).await.ok()? {
            if konsole.title(session).await.ok()? == format!("ask {}", ask.id) {
                return Some(session);
            }
        }
        None
    })
    .await;
    // The engine is still inside post_ask while KWin moves the window.
    wait_for("the window to reach desktop 2", || async {
        (window_desktop(&konsole).await == 2).then_some(())
    })
    .await;

    mailbox
        .answer(&ask.id, "done", "cli:tester")
        .expect("answer");
    wait_gone(&konsole, session).await;

    let _ = stop.send(());
    engine.await.expect("engine task").expect("engine ran");
}

#[tokio::test]
async fn kwin_reports_what_its_script_did() {
    let _turn = TURN.lock().await;
    let konsole = konsole().await;
    let connection = zbus::Connection::session().await.expect("session bus");
    let mut kwin = KWin::new(&connection)
        .await
        .expect("serve the reply object");
    assert_eq!(
        kwin.api().await.expect("KWin version"),
        KWinApi::V5,
        "Debian 12 ships KWin 5.27"
    );
    let pid = konsole.pid().await.expect("konsole pid");
    let placement = |kwin: &KWin, pid: u32, desktop: u32| Placement {
        token: kwin.next_token(),
        window_id: 0,
        pid,
        marker: "no tab has this title".into(),
        desktop,
        reply_to: kwin.reply_to(),
    };

    // Without an X11 id, the pid's only window is the one.
    let by_pid = placement(&kwin, pid, 4);
    assert_eq!(
        kwin.place(&by_pid).await.expect("ran"),
        Placed::Moved { desktop: 4 }
    );
    assert_eq!(window_desktop(&konsole).await, 4);
    let nobody = placement(&kwin, u32::MAX - 1, 1);
    assert_eq!(kwin.place(&nobody).await.expect("ran"), Placed::NoWindow);
    assert_eq!(window_desktop(&konsole).await, 4);
    let too_far = placement(&kwin, pid, 9);
    assert_eq!(
        kwin.place(&too_far).await.expect("ran"),
        Placed::NoSuchDesktop { count: 4 }
    );
    let home = placement(&kwin, pid, 1);
    assert_eq!(
        kwin.place(&home).await.expect("ran"),
        Placed::Moved { desktop: 1 }
    );
    assert_eq!(window_desktop(&konsole).await, 1);
}

/// Runs `command` to its end like `Command::output`, but kills it and fails the test if it
/// has not ended within a minute: a bridge that does not exit fails its test, not the run.
fn bounded_output(command: &mut Command) -> std::process::Output {
    let child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the bridge");
    let pid = child.id() as libc::pid_t;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.expect("wait for the bridge"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of a child that has not been reaped (its waiting
            // thread has not returned).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let output = receiver.recv().expect("the bridge's output");
            panic!("{command:?} did not exit within a minute: {output:?}");
        }
    }
}

/// `rein-bridge-konsole` with a config file and the environment a bridge unit gets.
fn bridge_binary(fake: &Fake, section: &str) -> Command {
    let config = fake.dir.path().join("config.toml");
    let section = format!(
        "[bridges.konsole]\nallow = [\"konsole:tester\"]\nrein_bin = {:?}\n{section}",
        fake.rein().display().to_string()
    );
    std::fs::write(&config, section).expect("write config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_rein-bridge-konsole"));
    command
        .arg("--test")
        .env("REIN_CONFIG", &config)
        .env("REIN_DATA_DIR", fake.data())
        .env("REIN_PROFILE", "konsoletest")
        .env("REIN_KONSOLE_SERVICE", &desktop().service)
        .env_remove("REIN_BIN");
    command
}

#[tokio::test]
async fn the_binary_tests_every_route_and_refuses_bad_config() {
    let _turn = TURN.lock().await;
    let fake = Fake::new();
    let konsole = konsole().await;
    let output = bounded_output(&mut bridge_binary(&fake, "routes = [\"3\"]\n"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let prefix = format!("3: sent: opened tab {}/", desktop().service);
    assert!(stdout.starts_with(&prefix), "{stdout}");
    assert!(stdout.contains("the window is on desktop 3"), "{stdout}");
    assert_eq!(window_desktop(&konsole).await, 3);

    for (section, complaint) in [
        (
            "routes = [\"3\"]\nshell = \"zsh\"\n",
            "unknown field `shell`",
        ),
        ("routes = [\"C0123\"]\n", "neither a desktop number"),
        (
            "routes = [\"desktop\"]\ndesktop = 40\n",
            "desktop must be a whole number",
        ),
    ] {
        let output = bounded_output(&mut bridge_binary(&fake, section));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{section}: {stderr}");
        assert!(stderr.contains(complaint), "{section}: {stderr}");
    }
    let output = bounded_output(
        bridge_binary(&fake, "routes = [\"2\"]\n").env("REIN_KONSOLE_SERVICE", "org.example.other"),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("REIN_KONSOLE_SERVICE"), "{stderr}");
}

/// The real `rein` binary, from the target dir this test was built in
/// (`target/debug/deps/desktop-HASH` → `target/debug/rein`).
fn real_rein() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable");
    let rein = exe
        .parent()
        .and_then(Path::parent)
        .map(|debug| debug.join("rein"))
        .expect("the target dir");
    assert!(
        rein.is_file(),
        "the real rein binary {} is missing: build it into the same target dir first \
         (`cargo build -p rein`, with the same CARGO_TARGET_DIR; `cargo test --workspace` builds it too)",
        rein.display()
    );
    rein
}

/// A child process that is killed when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Withdraws the ask if it is still pending when the test ends (a failed test), so its
/// prompt ends and its tab closes instead of waiting for good.
struct WithdrawOnDrop {
    data: DataDir,
    ask: String,
}

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        let _ = Mailbox::new(self.data.clone()).withdraw(&self.ask, "cli:test-cleanup");
    }
}

/// A temp rein profile (data dir, config, profile name) for the real binaries.
struct Profile {
    dir: tempfile::TempDir,
}

impl Profile {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// `program` run in this profile, with nothing of the caller's rein environment.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env("REIN_DATA_DIR", self.data())
            .env("REIN_CONFIG", self.config())
            .env("REIN_PROFILE", "konsoleloop")
            .env_remove("REIN_BIN")
            .env_remove("REIN_WORKER_ID")
            .env_remove(IDENTITY_VARIABLE);
        command
    }
}

/// rchar and wchar of `pid` from `/proc/PID/io`: bytes it has read and written so far.
fn io_counts(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    Some((field("rchar:")?, field("wchar:")?))
}

/// True when a thread of `pid` waits for input: blocked in `read(0, …)`, or in poll(2) (the
/// prompt waits on its terminal and on `answers/` together, so an answer given elsewhere ends
/// it too).
fn reading_stdin(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let read = libc::SYS_read.to_string();
    let polls = [libc::SYS_poll.to_string(), libc::SYS_ppoll.to_string()];
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("syscall")).is_ok_and(|syscall| {
            let mut fields = syscall.split_whitespace();
            match fields.next() {
                Some(number) if number == read => fields.next() == Some("0x0"),
                Some(number) => polls.iter().any(|poll| poll == number),
                None => false,
            }
        })
    })
}

/// The pid of the tab's program once it is exactly `rein answer --interactive ID`, run by
/// Konsole as the tab's own program (no shell in between), and waiting for a line: what a
/// person sees as the `> ` prompt.
async fn waiting_prompt(konsole: &Konsole, session: u32, rein: &Path, id: &str) -> Option<u32> {
    let program = konsole.process_id(session).await.ok()?;
    let foreground = konsole.foreground_process_id(session).await.ok()?;
    if program <= 0 || foreground != program {
        return None;
    }
    let program = program as u32;
    if rein_bridge_konsole::process::parent(program) != Some(konsole.pid().await.ok()?) {
        return None;
    }
    let arguments = rein_bridge_konsole::process::arguments(program)?;
    let expected = [&rein.display().to_string(), "answer", "--interactive", id];
    (arguments == expected && reading_stdin(program)).then_some(program)
}

/// True while `pid` runs (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// Runs xdotool with `args` on the test display.
fn xdotool(args: &[&str]) {
    let output = Command::new("xdotool")
        .args(args)
        .env("DISPLAY", &desktop().display)
        .output()
        .expect("run xdotool");
    assert!(
        output.status.success(),
        "xdotool {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Presses keys in the tab as a person at the keyboard would: KWin activates the Konsole
/// window (switching to its desktop), the tab comes to the front, and xdotool sends X11 key
/// events (`ctrl+c`, `Return`) or types text.
async fn keyboard(konsole: &Konsole, session: u32, keys: &[&str], text: Option<&str>) {
    let window = konsole.window(None).await.expect("a window");
    let x11 = konsole
        .window_id("")
        .await
        .expect("ask Konsole")
        .expect("the X11 id of the Konsole window");
    xdotool(&["windowactivate", "--sync", &x11.to_string()]);
    konsole
        .show_session(window, session)
        .await
        .expect("bring the tab to the front");
    let connection = zbus::Connection::session().await.expect("session bus");
    wait_for("the tab to be in front", || async {
        let current: i32 = rein_bridge_konsole::dbus::call(
            &connection,
            konsole.service(),
            &format!("/Windows/{window}"),
            "org.kde.konsole.Window",
            "currentSession",
            &(),
        )
        .await
        .ok()?;
        (current == session as i32).then_some(())
    })
    .await;
    if let Some(text) = text {
        xdotool(&["type", "--delay", "30", text]);
    }
    if !keys.is_empty() {
        let mut args = vec!["key", "--clearmodifiers"];
        args.extend_from_slice(keys);
        xdotool(&args);
    }
}

/// How a person (or the fleet) ends the answer prompt in a tab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Types an option and Enter.
    Answers,
    CtrlC,
    CtrlD,
    /// The ask is answered with `rein answer` elsewhere.
    AnsweredElsewhere,
    /// The bridge ends the prompt (as it does when the prompt does not end by itself).
    EndedByTheBridge,
}

/// A tab the bridge opens runs the real answer prompt as the tab's own program, so however
/// the prompt ends — an answer, Ctrl+C, Ctrl+D, the ask answered elsewhere, the bridge ending
/// it — the tab closes and nothing is left running in it (no shell); only an answer resolves
/// the ask.
#[tokio::test]
async fn ending_the_prompt_any_way_closes_its_tab() {
    let _turn = TURN.lock().await;
    let rein = real_rein();
    let konsole = konsole().await;
    let profile = Profile {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let data = DataDir::new(profile.data());
    data.create_dirs().expect("data dir");
    let mailbox = Mailbox::new(data.clone());
    let mut table = toml::Table::new();
    table.insert("rein_bin".into(), rein.display().to_string().into());
    table.insert("service".into(), desktop().service.clone().into());
    let config = KonsoleConfig::from_table(&table).expect("valid config");
    // `rein answer` accepts `konsole:$USER` for its own user only.
    let user = rein::mailbox::current_user();
    let environment = vec![
        (IDENTITY_VARIABLE.to_owned(), format!("konsole:{user}")),
        (
            "REIN_DATA_DIR".to_owned(),
            profile.data().display().to_string(),
        ),
        (
            "REIN_CONFIG".to_owned(),
            profile.config().display().to_string(),
        ),
    ];
    let mut channel = KonsoleChannel::connect(config, environment)
        .await
        .expect("connect to the session bus");

    for ending in [
        Ending::CtrlC,
        Ending::CtrlD,
        Ending::Answers,
        Ending::AnsweredElsewhere,
        Ending::EndedByTheBridge,
    ] {
        let (ask, _) = mailbox
            .file(&NewAsk {
                worker: "w1".into(),
                prompt: format!("Ending {ending:?}?"),
                reference: None,
                options: vec!["yes".into(), "no".into()],
            })
            .expect("file ask");
        let _withdraw = WithdrawOnDrop {
            data: data.clone(),
            ask: ask.id.clone(),
        };
        let post = channel
            .post_ask(&ask, "desktop", false)
            .await
            .expect("posted");
        let session = session_of(&post);
        let prompt = wait_for(
            "the prompt to be the tab's program, waiting for a line",
            || waiting_prompt(&konsole, session, &rein, &ask.id),
        )
        .await;
        match ending {
            Ending::Answers => keyboard(&konsole, session, &["Return"], Some("yes")).await,
            Ending::CtrlC => keyboard(&konsole, session, &["ctrl+c"], None).await,
            Ending::CtrlD => keyboard(&konsole, session, &["ctrl+d"], None).await,
            Ending::AnsweredElsewhere => {
                mailbox.answer(&ask.id, "no", "cli:tester").expect("answer");
            }
            Ending::EndedByTheBridge => assert_eq!(
                channel
                    .close_tab(&post, &channel.action_for(&ask))
                    .await
                    .expect("close"),
                Closed::Closed
            ),
        }
        wait_for(&format!("the tab to close after {ending:?}"), || async {
            (!konsole.session_exists(session).await.expect("ask Konsole")).then_some(())
        })
        .await;
        assert!(!alive(prompt), "{ending:?}: the prompt still runs");
        let resolution = mailbox.resolution(&ask.id).expect("read the ask");
        match ending {
            Ending::Answers => {
                let resolution = resolution.expect("answered in the tab");
                assert_eq!(resolution.text.as_deref(), Some("yes"));
                assert_eq!(resolution.by, format!("konsole:{user}"));
            }
            Ending::AnsweredElsewhere => {
                assert_eq!(resolution.expect("answered").by, "cli:tester")
            }
            _ => assert_eq!(resolution, None, "{ending:?} resolved the ask"),
        }
    }
}

/// Types `text` into the tab as a person at its keyboard would, through Konsole's own
/// `sendText`. Test-only, and only ever with fixed text.
async fn type_into(konsole: &Konsole, session: u32, text: &str) {
    let connection = zbus::Connection::session().await.expect("session bus");
    let () = rein_bridge_konsole::dbus::call(
        &connection,
        konsole.service(),
        &format!("/Sessions/{session}"),
        "org.kde.konsole.Session",
        "sendText",
        &(text,),
    )
    .await
    .expect("sendText");
}

/// The whole loop with the real binaries: a waiting `rein ask`, the bridge opening a tab
/// that runs the real `rein answer --interactive`, a person typing into it, and the answer
/// reaching the asker.
#[tokio::test]
async fn a_person_answers_a_real_ask_in_the_tab() {
    let _turn = TURN.lock().await;
    let rein = real_rein();
    let konsole = konsole().await;
    let window = konsole.window(None).await.expect("a window");
    let before = konsole.sessions(window).await.expect("sessions");
    let profile = Profile {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let user = rein::mailbox::current_user();
    let mut bridge_config = toml::Table::new();
    bridge_config.insert("allow".into(), vec![format!("konsole:{user}")].into());
    bridge_config.insert("routes".into(), vec!["desktop".to_owned()].into());
    bridge_config.insert("notes".into(), false.into());
    bridge_config.insert("rein_bin".into(), rein.display().to_string().into());
    let mut bridges = toml::Table::new();
    bridges.insert("konsole".into(), bridge_config.into());
    let mut config = toml::Table::new();
    config.insert("bridges".into(), bridges.into());
    std::fs::write(profile.config(), config.to_string()).expect("write config");

    // The real bridge, as its user unit runs it; its log goes to a file for the messages.
    let log_path = profile.dir.path().join("bridge.log");
    let log = std::fs::File::create(&log_path).expect("bridge log");
    let _bridge = Running(
        profile
            .command(Path::new(env!("CARGO_BIN_EXE_rein-bridge-konsole")))
            .env("REIN_KONSOLE_SERVICE", konsole.service())
            .env("REIN_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start rein-bridge-konsole"),
    );
    let bridge_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // A worker asks and waits.
    let mut asker = Running(
        profile
            .command(&rein)
            .args([
                "ask",
                "--worker",
                "w1",
                "--prompt",
                "Ship it?",
                "--options",
                "yes,no",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start rein ask"),
    );
    let data = DataDir::new(profile.data());
    let mailbox = Mailbox::new(data.clone());
    let id = wait_for("`rein ask` to file its ask", || {
        let pending = mailbox.pending().ok().map(|listing| listing.records);
        std::future::ready(match pending.as_deref() {
            Some([record]) => Some(record.ask.id.clone()),
            _ => None,
        })
    })
    .await;
    let _withdraw = WithdrawOnDrop {
        data: data.clone(),
        ask: id.clone(),
    };

    let title = format!("ask {id}");
    let session = wait_for("the bridge to open a tab titled with the ask", || async {
        for session in konsole.sessions(window).await.ok()? {
            if konsole.title(session).await.ok()? == title {
                return Some(session);
            }
        }
        None
    })
    .await;
    let open = konsole.sessions(window).await.expect("sessions");
    assert_eq!(open.len(), before.len() + 1, "{before:?} -> {open:?}");
    let prompt = wait_for("`rein answer --interactive` to wait for a line", || {
        waiting_prompt(&konsole, session, &rein, &id)
    })
    .await;
    let environ = std::fs::read(format!("/proc/{prompt}/environ")).expect("environ");
    let identity = environ
        .split(|b| *b == 0)
        .find_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            Some(entry.strip_prefix("REIN_ANSWER_IDENTITY=")?.to_owned())
        })
        .unwrap_or_else(|| panic!("the bridge set no REIN_ANSWER_IDENTITY in the tab"));
    assert_eq!(identity, format!("konsole:{user}"));

    // Not an option: the prompt reads the line, says so, and waits for another. Konsole
    // 22.12 has no D-Bus call that shows a tab's text, so /proc tells that it read and wrote.
    let (read, written) = io_counts(prompt).expect("/proc/PID/io");
    type_into(&konsole, session, "maybe\n").await;
    wait_for(
        "the prompt to read \"maybe\", reply, and wait again",
        || {
            let waits_again = io_counts(prompt).is_some_and(|(r, w)| r > read && w > written)
                && reading_stdin(prompt);
            // A prompt that took "maybe" ends the wait at once, for the assertions below.
            let resolved = !matches!(mailbox.resolution(&id), Ok(None));
            std::future::ready((waits_again || resolved).then_some(()))
        },
    )
    .await;
    assert_eq!(
        mailbox.resolution(&id).expect("resolution"),
        None,
        "\"maybe\" is not an option"
    );
    assert!(
        asker.0.try_wait().expect("try_wait").is_none(),
        "rein ask ended"
    );
    assert_eq!(
        konsole.foreground_process_id(session).await.expect("fg") as u32,
        prompt
    );

    type_into(&konsole, session, "yes\n").await;
    let status = wait_for("the waiting `rein ask` to exit", || {
        std::future::ready(asker.0.try_wait().expect("try_wait"))
    })
    .await;
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut pipe) = asker.0.stdout.take() {
        pipe.read_to_string(&mut stdout).expect("read stdout");
    }
    if let Some(mut pipe) = asker.0.stderr.take() {
        pipe.read_to_string(&mut stderr).expect("read stderr");
    }
    assert!(status.success(), "rein ask: {status}\n{stderr}");
    assert_eq!(stdout, "yes\n", "{stderr}");

    let output = profile
        .command(&rein)
        .args(["asks", "--all", "--json"])
        .output()
        .expect("run rein asks");
    assert!(output.status.success(), "{output:?}");
    let asks: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let listed = asks
        .as_array()
        .and_then(|asks| asks.iter().find(|ask| ask["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("ask {id} not in {asks}"));
    assert_eq!(listed["state"], "answered", "{listed}");
    assert_eq!(listed["answer"], "yes", "{listed}");
    assert_eq!(listed["answered_by"], identity.as_str(), "{listed}");

    // The prompt ends, `; exit` ends the shell, and the tab closes.
    wait_gone(&konsole, session).await;
    let after = konsole.sessions(window).await.expect("sessions");
    assert_eq!(after.len(), open.len() - 1, "{open:?} -> {after:?}");
    // The prompt itself recorded the answer: it ran to its end, not ended early by the
    // bridge (which the same answer wakes to close the tab).
    let journal = std::fs::read_to_string(data.journal()).expect("journal");
    let recorded = format!("answer: ask {id} answered \"yes\" by {identity} at ");
    assert!(
        journal.contains(&recorded),
        "{journal}\nbridge log:\n{}",
        bridge_log()
    );

    // SIGTERM (`rein bridge stop`, or the session ending) stops the bridge at once: nothing
    // it runs in the background (the loops' watch among them) holds it up.
    let mut bridge = _bridge;
    let pid = bridge.0.id() as libc::pid_t;
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_for("the bridge to exit on SIGTERM", || {
        std::future::ready(bridge.0.try_wait().expect("try_wait"))
    })
    .await;
    assert!(status.success(), "{status}\n{}", bridge_log());
}

/// A systemd user manager and a desktop (Xvfb, KWin, Konsole) of one test's own, so that the
/// test may stop and restart their session bus: `contrib/user-session.sh` gives that bus a
/// slice of its own, and nothing else runs on it. Both are stopped when this is dropped.
struct PrivateDesktop {
    runtime: PathBuf,
    desktop: PathBuf,
    /// `XDG_RUNTIME_DIR` and `DBUS_SESSION_BUS_ADDRESS`.
    environment: BTreeMap<String, String>,
}

impl PrivateDesktop {
    fn start(dir: &Path) -> PrivateDesktop {
        let runtime = dir.join("run");
        let desktop = dir.join("desktop");
        // Only this test's bus: never the caller's, whose variables are replaced here.
        let mut environment = BTreeMap::new();
        environment.insert("XDG_RUNTIME_DIR".to_owned(), runtime.display().to_string());
        environment.insert(
            "DBUS_SESSION_BUS_ADDRESS".to_owned(),
            format!("unix:path={}/bus", runtime.display()),
        );
        let private = PrivateDesktop {
            runtime,
            desktop,
            environment,
        };
        exports_with(
            "user-session.sh",
            &[Path::new("start"), &private.runtime],
            &private.environment,
        );
        private.start_desktop();
        private
    }

    /// Starts what of the desktop does not run on the bus now; returns Konsole's bus name.
    fn start_desktop(&self) -> String {
        let exports = exports_with(
            "desktop-session.sh",
            &[Path::new("start"), &self.desktop],
            &self.environment,
        );
        exports
            .get("REIN_KONSOLE_SERVICE")
            .expect("REIN_KONSOLE_SERVICE exported")
            .clone()
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.envs(&self.environment);
        command
    }

    /// `systemctl --user ARGS…` on this manager (over its private socket when the bus is away).
    fn systemctl(&self, args: &[&str]) {
        let output = self
            .command("systemctl")
            .arg("--user")
            .args(args)
            .output()
            .expect("run systemctl");
        assert!(
            output.status.success(),
            "systemctl --user {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    async fn bus(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.environment["DBUS_SESSION_BUS_ADDRESS"].as_str())
            .expect("bus address")
            .build()
            .await
            .expect("connect to the test's session bus")
    }
}

impl Drop for PrivateDesktop {
    fn drop(&mut self) {
        for (script, dir) in [
            ("desktop-session.sh", &self.desktop),
            ("user-session.sh", &self.runtime),
        ] {
            let _ = self
                .command("bash")
                .arg(repo_root().join("contrib").join(script))
                .arg("stop")
                .arg(dir)
                .output();
        }
    }
}

/// The tabs of `konsole`'s first window titled `title`.
async fn tabs_titled(konsole: &Konsole, title: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(window) = konsole.window(None).await else {
        return found;
    };
    for session in konsole.sessions(window).await.unwrap_or_default() {
        if konsole.title(session).await.ok().as_deref() == Some(title) {
            found.push(session);
        }
    }
    found
}

/// The bridge's row of `rein bridge ls --json`.
fn bridge_row(profile: &Profile, private: &PrivateDesktop, rein: &Path) -> serde_json::Value {
    let output = profile
        .command(rein)
        .envs(&private.environment)
        .args(["bridge", "ls", "--json"])
        .output()
        .expect("run rein bridge ls");
    assert!(output.status.success(), "{output:?}");
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    rows.as_array()
        .and_then(|rows| rows.iter().find(|row| row["name"] == "konsole"))
        .cloned()
        .unwrap_or_else(|| panic!("no konsole bridge in {rows}"))
}

/// The session bus goes away under a running bridge and comes back with a new KWin and
/// Konsole: meanwhile STATUS and `rein bridge ls` say it is reconnecting; then it is connected
/// again and the pending ask gets its tab (one) in the new Konsole, which closes once the ask
/// is answered. The bridge runs as `rein bridge start` runs it, a unit of the test's own
/// user manager.
#[tokio::test]
async fn the_bridge_comes_back_after_the_session_bus_restarts() {
    let rein = real_rein();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("konsole-bus-restart");
    let private = PrivateDesktop::start(&dir);
    let profile = Profile {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let user = rein::mailbox::current_user();
    std::fs::write(
        profile.config(),
        format!(
            "[bridges.konsole]\nallow = [\"konsole:{user}\"]\nroutes = [\"desktop\"]\nnotes = false\nrein_bin = {:?}\n",
            rein.display().to_string()
        ),
    )
    .expect("write config");
    let started = profile
        .command(&rein)
        .envs(&private.environment)
        .args(["bridge", "start", "konsole"])
        .output()
        .expect("run rein bridge start");
    assert!(started.status.success(), "{started:?}");
    struct StopBridge<'a>(&'a Profile, &'a PrivateDesktop, &'a Path);
    impl Drop for StopBridge<'_> {
        fn drop(&mut self) {
            let _ = self
                .0
                .command(self.2)
                .envs(&self.1.environment)
                .args(["bridge", "stop", "konsole"])
                .output();
        }
    }
    let _stop_bridge = StopBridge(&profile, &private, &rein);
    let data = DataDir::new(profile.data());
    let mailbox = Mailbox::new(data.clone());
    wait_for("the bridge to say it is connected", || {
        let row = bridge_row(&profile, &private, &rein);
        std::future::ready(
            (row["health"] == "running"
                && row["status"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("connected")))
            .then_some(()),
        )
    })
    .await;

    let (ask, _) = mailbox
        .file(&NewAsk {
            worker: "w1".into(),
            prompt: "Still there?".into(),
            reference: None,
            options: vec!["yes".into(), "no".into()],
        })
        .expect("file ask");
    let _withdraw = WithdrawOnDrop {
        data: data.clone(),
        ask: ask.id.clone(),
    };
    let title = format!("ask {}", ask.id);
    let bus = private.bus().await;
    let first = Konsole::find(&bus, None).await.expect("the test's Konsole");
    wait_for("the ask's tab", || async {
        (tabs_titled(&first, &title).await.len() == 1).then_some(())
    })
    .await;

    // The bus goes away (socket and daemon), and with it Konsole's and KWin's names.
    private.systemctl(&["stop", "dbus.socket", "dbus.service"]);
    wait_for(
        "STATUS and `rein bridge ls` to say the bridge is reconnecting",
        || {
            let row = bridge_row(&profile, &private, &rein);
            std::future::ready(
                (row["health"] == "reconnecting"
                    && row["status"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("reconnecting: lost the session bus")))
                .then_some(()),
            )
        },
    )
    .await;

    // It comes back; KWin and a Konsole start on the new bus.
    private.systemctl(&["start", "dbus.socket"]);
    let service = private.start_desktop();
    assert_ne!(service, first.service(), "a new Konsole on the new bus");
    let bus = private.bus().await;
    let second = Konsole::find(&bus, Some(&service))
        .await
        .expect("the new Konsole");
    let session = wait_for("the ask's tab in the new Konsole", || async {
        match tabs_titled(&second, &title).await.as_slice() {
            [session] => Some(*session),
            _ => None,
        }
    })
    .await;
    wait_for("the prompt in the new tab", || {
        waiting_prompt(&second, session, &rein, &ask.id)
    })
    .await;
    wait_for("the bridge to say it is connected again", || {
        let row = bridge_row(&profile, &private, &rein);
        std::future::ready(
            (row["health"] == "running"
                && row["status"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("connected")))
            .then_some(()),
        )
    })
    .await;
    // Raised links and retries did not open it twice.
    assert_eq!(tabs_titled(&second, &title).await, [session]);

    mailbox
        .answer(&ask.id, "yes", "cli:tester")
        .expect("answer");
    wait_gone(&second, session).await;
}

/// A profile of the real binaries for loop tabs, with a name of its own.
struct LoopProfile {
    dir: tempfile::TempDir,
    profile: String,
}

impl LoopProfile {
    fn new() -> LoopProfile {
        let dir = tempfile::tempdir().expect("temp dir");
        let profile = format!("kl{}", std::process::id());
        std::fs::write(
            dir.path().join("config.toml"),
            "[loops]\nrestart_sec = \"200ms\"\n\
             [bridges.konsole]\nallow = [\"konsole:tester\"]\nroutes = [\"desktop\"]\nnotes = false\n",
        )
        .expect("config");
        LoopProfile { dir, profile }
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env("REIN_DATA_DIR", self.dir.path().join("data"))
            .env("REIN_CONFIG", self.dir.path().join("config.toml"))
            .env("REIN_PROFILE", &self.profile)
            .env("REIN_BIN", real_rein())
            .env("DISPLAY", &desktop().display)
            .env("USER", "tester")
            .env_remove("REIN_WORKER_ID")
            .env_remove(IDENTITY_VARIABLE);
        command
    }

    fn rein(&self, args: &[&str]) -> String {
        let output = self
            .command(&real_rein())
            .args(args)
            .output()
            .expect("rein");
        assert!(
            output.status.success(),
            "rein {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn bridge(&self) -> Running {
        Running(
            self.command(Path::new(env!("CARGO_BIN_EXE_rein-bridge-konsole")))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start the bridge"),
        )
    }

    /// The main pid of the Konsole window unit of `desktop`, 0 if none.
    fn window_pid(&self, desktop: u32) -> u32 {
        let output = Command::new("systemctl")
            .args([
                "--user",
                "show",
                "-p",
                "MainPID",
                "--value",
                &format!("rein.{}.konsole-desktop-{desktop}.service", self.profile),
            ])
            .output()
            .expect("systemctl");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

impl Drop for LoopProfile {
    fn drop(&mut self) {
        let _ = self.command(&real_rein()).arg("down").output();
        let _ = Command::new("systemctl")
            .args([
                "--user",
                "stop",
                &format!("rein.{}.konsole-desktop-*.service", self.profile),
            ])
            .output();
    }
}

/// Every tab titled `title` in every Konsole on the bus, as `service/session`.
async fn loop_tabs(title: &str) -> Vec<String> {
    let connection = zbus::Connection::session().await.expect("session bus");
    let mut found = Vec::new();
    for service in rein_bridge_konsole::dbus::names(&connection)
        .await
        .expect("names")
    {
        if !service.starts_with("org.kde.konsole") {
            continue;
        }
        let konsole = Konsole::at(&connection, &service);
        for window in konsole.windows().await.unwrap_or_default() {
            for session in konsole.sessions(window).await.unwrap_or_default() {
                if konsole.title(session).await.ok().as_deref() == Some(title) {
                    found.push(format!("{service}/{session}"));
                }
            }
        }
    }
    found
}

/// The desktops (1-based) of the windows of process `pid`, from `wmctrl -l -p`.
fn desktops_of(pid: u32) -> Vec<u32> {
    let output = Command::new("wmctrl")
        .args(["-l", "-p"])
        .env("DISPLAY", &desktop().display)
        .output()
        .expect("run wmctrl");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(2) == Some(&pid.to_string().as_str()))
                .then(|| Some(fields[1].parse::<u32>().ok()? + 1))?
        })
        .collect()
}

#[tokio::test]
async fn each_loop_gets_one_tab_on_its_desktop_across_bridge_restarts_and_moves() {
    let _turn = TURN.lock().await;
    desktop();
    let profile = LoopProfile::new();
    for (name, desktop) in [("alpha", "2"), ("beta", "3"), ("gamma", "2")] {
        profile.rein(&[
            "loop",
            "add",
            name,
            "--schedule",
            "none",
            "--dispatch",
            "none",
            "--command",
            "exec sleep 600",
            "--desktop",
            desktop,
        ]);
    }
    let bridge = profile.bridge();
    for name in ["alpha", "beta", "gamma"] {
        let title = format!("loop {name}");
        wait_for(&format!("the tab of {name}"), || async {
            (loop_tabs(&title).await.len() == 1).then_some(())
        })
        .await;
    }
    let (two, three) = (profile.window_pid(2), profile.window_pid(3));
    assert!(two != 0 && three != 0 && two != three);
    wait_for("the windows on their desktops", || async {
        (desktops_of(two) == [2] && desktops_of(three) == [3]).then_some(())
    })
    .await;
    let alpha = loop_tabs("loop alpha").await;
    assert!(
        alpha[0].starts_with(&format!("org.kde.konsole-{two}/")),
        "{alpha:?}"
    );
    assert!(loop_tabs("loop gamma").await[0].starts_with(&format!("org.kde.konsole-{two}/")));
    assert!(loop_tabs("loop beta").await[0].starts_with(&format!("org.kde.konsole-{three}/")));

    // A restarted bridge adopts the tabs: same tabs, none added.
    drop(bridge);
    let bridge = profile.bridge();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        loop_tabs("loop alpha").await,
        alpha,
        "re-adopted, not duplicated"
    );
    assert_eq!(loop_tabs("loop beta").await.len(), 1);
    assert_eq!(loop_tabs("loop gamma").await.len(), 1);
    // `rein loop show` adopts too.
    let shown = String::from_utf8_lossy(
        &profile
            .command(Path::new(env!("CARGO_BIN_EXE_rein-bridge-konsole")))
            .args(["--show-loop", "alpha"])
            .output()
            .expect("show")
            .stdout,
    )
    .into_owned();
    assert!(shown.contains("adopted"), "{shown}");

    // Moving a loop moves its tab to the other desktop's window.
    profile.rein(&["loop", "move", "alpha", "3"]);
    wait_for("alpha's tab in the desktop-3 window", || async {
        let tabs = loop_tabs("loop alpha").await;
        (tabs.len() == 1 && tabs[0].starts_with(&format!("org.kde.konsole-{three}/"))).then_some(())
    })
    .await;

    // A tab a person closes does not stop the loop.
    let connection = zbus::Connection::session().await.expect("bus");
    let beta = loop_tabs("loop beta").await;
    let (service, session) = beta[0].rsplit_once('/').expect("tab");
    let konsole = Konsole::at(&connection, service);
    let session: u32 = session.parse().expect("session");
    let attach = konsole.foreground_process_id(session).await.expect("pid");
    // SAFETY: ending the tab's program, as closing the tab does.
    unsafe { libc::kill(-attach, libc::SIGHUP) };
    wait_gone(&konsole, session).await;
    let workers = profile.rein(&["worker", "ls", "--json"]);
    let workers: serde_json::Value = serde_json::from_str(&workers).expect("json");
    let beta = workers
        .as_array()
        .expect("array")
        .iter()
        .find(|w| w["id"] == "beta")
        .expect("beta");
    assert_eq!(beta["health"], "running", "{beta}");
    drop(bridge);

    // `rein down` leaves no unit of the profile behind: the loops' windows close with their
    // sessions.
    profile.rein(&["down"]);
    wait_for("the loops' windows closed", || async {
        (profile.window_pid(2) == 0 && profile.window_pid(3) == 0).then_some(())
    })
    .await;
    for name in ["alpha", "beta", "gamma"] {
        assert!(
            loop_tabs(&format!("loop {name}")).await.is_empty(),
            "{name}"
        );
    }
}
