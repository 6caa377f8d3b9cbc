//! End to end: the real `rein`, `rein-bridge-sms` and `rein-bridge-slack` binaries as
//! processes, each test with its own data dir, config, profile and secrets, against local
//! stand-ins of Twilio (`standin/`) and Slack (the Slack bridge's `tests/standin/`) on
//! 127.0.0.1.
//!
//! What is checked: a bridge killed between texting an ask and recording it resends once,
//! marked as a repeat; the first answer wins when Slack, SMS and the CLI race; strangers are
//! refused; the bridge as a Type=notify user unit; loose secrets are refused.
//!
//! `cargo test -p rein-bridge-sms` builds only this crate's binary, so the first test that
//! runs builds `rein` and `rein-bridge-slack` into the same target dir (a no-op when fresh).

#[path = "../../slack/tests/standin/mod.rs"]
mod slack_standin;
mod standin;
#[path = "../../../tests/support/wait.rs"]
mod wait;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use rein::mailbox::{Mailbox, NewAsk};
use rein::store::DataDir;
use serde_json::Value;
use slack_standin::SlackStandin;
use standin::{Stored, TwilioStandin, ACCOUNT_SID, AUTH_TOKEN, DEADLINE, OUR_NUMBER};
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The allowlisted person asks are texted to.
const PERSON: &str = "+15557654321";
/// Someone not on the allowlist.
const STRANGER: &str = "+15559990000";
/// How long a rein or bridge process may take for anything.
const PROCESS_LIMIT: Duration = Duration::from_secs(30);

// ----------------------------------------------------------------------------------------
// Binaries, profiles and processes

struct Binaries {
    rein: PathBuf,
    sms: PathBuf,
    slack: PathBuf,
}

/// The three binaries, from the target dir this test was built into.
fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let sms = PathBuf::from(env!("CARGO_BIN_EXE_rein-bridge-sms"));
        let dir = sms
            .parent()
            .expect("the bridge binary is in a directory")
            .to_path_buf();
        build_rein_and_slack(&dir);
        let binaries = Binaries {
            rein: dir.join("rein"),
            slack: dir.join("rein-bridge-slack"),
            sms,
        };
        for binary in [&binaries.rein, &binaries.sms, &binaries.slack] {
            assert!(
                binary.exists(),
                "{} is missing; build it with `cargo build --workspace` (or run `cargo test --workspace`)",
                binary.display()
            );
        }
        binaries
    })
}

/// `cargo build -p rein -p rein-bridge-slack` into `bin_dir` (`<target>/debug` or
/// `<target>/release`), so the binaries are those of the sources under test.
fn build_rein_and_slack(bin_dir: &Path) {
    let (Some(profile), Some(target)) = (
        bin_dir.file_name().and_then(|n| n.to_str()),
        bin_dir.parent(),
    ) else {
        return;
    };
    let profile_flag = match profile {
        "debug" => None,
        "release" => Some("--release"),
        _ => return, // a custom profile or target layout: the binaries must exist already
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "rein",
            "-p",
            "rein-bridge-slack",
            "--bins",
        ])
        .env("CARGO_TARGET_DIR", target);
    // What cargo set for this test process: build scripts track some of these variables
    // (ring's CARGO_PKG_NAME, CARGO_MANIFEST_DIR), and passing them on would make this build
    // and the next `cargo test` rebuild those crates in turn.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let set_by_cargo = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CFG_",
            "CARGO_FEATURE_",
        ]
        .iter()
        .any(|prefix| key.starts_with(prefix))
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&key.as_ref());
        if set_by_cargo {
            command.env_remove(key.as_ref());
        }
    }
    command.args(profile_flag);
    let output = command.output().expect("run cargo build");
    assert!(
        output.status.success(),
        "building rein and rein-bridge-slack failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A process-wide counter for unique names.
fn next_number() -> usize {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// One rein profile: a temp dir with the data dir, config, secrets and process logs.
struct Profile {
    temp: tempfile::TempDir,
    data: PathBuf,
    config: PathBuf,
    name: String,
    /// Extra environment for every process (the user manager's, for the unit test).
    env: Vec<(String, String)>,
}

impl Profile {
    fn new() -> Profile {
        let temp = tempfile::tempdir().expect("tempdir");
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() % 1_000_000)
            .unwrap_or_default();
        Profile {
            data: temp.path().join("data"),
            config: temp.path().join("config.toml"),
            name: format!("e2e-{}-{millis}-{}", std::process::id(), next_number()),
            env: Vec::new(),
            temp,
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.temp.path().join(file)
    }

    /// Writes a secrets file with `mode`; returns its path.
    fn secrets(&self, file: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.path(file);
        std::fs::write(&path, text).expect("write secrets");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("write config");
    }

    /// `[bridges.sms]` against `twilio` with a 0600 secrets file, allowing PERSON; `extra`
    /// holds the routes and any other keys.
    fn sms_section(&self, twilio: &TwilioStandin, extra: &str) -> String {
        let secrets = self.secrets(
            "sms.secrets",
            &format!("auth_token = \"{AUTH_TOKEN}\"\n"),
            0o600,
        );
        format!(
            "[bridges.sms]\nallow = [\"sms:{PERSON}\"]\nsecret_file = \"{}\"\nbase_url = \"{}\"\naccount_sid = \"{ACCOUNT_SID}\"\nfrom = \"{OUR_NUMBER}\"\npoll_interval = \"1s\"\n{extra}",
            secrets.display(),
            twilio.base_url()
        )
    }

    fn environment(&self, command: &mut Command) {
        command
            .env("REIN_DATA_DIR", &self.data)
            .env("REIN_CONFIG", &self.config)
            .env("REIN_PROFILE", &self.name)
            .env("USER", "tester")
            .env_remove("REIN_WORKER_ID")
            .env_remove("REIN_ANSWER_IDENTITY")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("REIN_LOG")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (key, value) in &self.env {
            command.env(key, value);
        }
    }

    fn rein(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&binaries().rein);
        command.args(args);
        self.environment(&mut command);
        command
    }

    /// Runs rein to the end (within [`PROCESS_LIMIT`]).
    async fn run(&self, args: &[&str]) -> Output {
        finish(
            self.rein(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn rein"),
            &format!("rein {args:?}"),
        )
        .await
    }

    /// Runs rein, asserts exit 0, returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "rein {args:?} failed ({:?}):\n{}{}",
            output.status,
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    /// Starts `rein ask` for worker w1, waiting for its answer.
    fn ask(&self, prompt: &str, options: &str) -> Child {
        self.rein(&[
            "ask",
            "--worker",
            "w1",
            "--prompt",
            prompt,
            "--options",
            options,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rein ask")
    }

    fn mailbox(&self) -> Mailbox {
        Mailbox::new(DataDir::new(&self.data))
    }

    /// The id of the pending ask with `prompt`, once it is filed.
    async fn pending_ask(&self, prompt: &str) -> String {
        let mut id = None;
        eventually(&format!("the ask {prompt:?} filed"), || {
            id = self.mailbox().pending().ok().and_then(|listing| {
                listing
                    .records
                    .into_iter()
                    .find(|r| r.ask.prompt == prompt)
                    .map(|r| r.ask.id)
            });
            id.is_some()
        })
        .await;
        id.unwrap_or_default()
    }

    /// The ledger entry of `bridge` for ask `id`, read from its file in
    /// `<data>/bridges/BRIDGE/ledger/` (one route per bridge in these tests).
    fn ledger_entry(&self, bridge: &str, id: &str) -> Option<Value> {
        let dir = self.data.join("bridges").join(bridge).join("ledger");
        let prefix = format!("ask.{id}.");
        let mut entries: Vec<Value> = std::fs::read_dir(&dir)
            .map(|entries| entries.flatten().collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.starts_with(&prefix) && name.ends_with(".json")
            })
            // The bridge prunes a settled entry by removing its file, which can happen
            // between listing the directory and reading the file: that file is gone.
            .filter_map(|entry| match std::fs::read_to_string(entry.path()) {
                Ok(text) => Some(serde_json::from_str(&text).expect("a ledger file is JSON")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => panic!("read ledger file {}: {e}", entry.path().display()),
            })
            .collect();
        assert!(entries.len() <= 1, "one ledger file per route: {entries:?}");
        entries.pop()
    }

    /// Waits until the ledger of `bridge` has closed ask `id`: its resolution was posted and
    /// the settled entry pruned (the post stays indexed).
    async fn ledger_closes(&self, bridge: &str, id: &str) {
        let index = self.data.join("bridges").join(bridge).join("posts");
        eventually(&format!("the {bridge} ledger to close {id}"), || {
            let indexed = std::fs::read_dir(&index)
                .map(|entries| {
                    entries.flatten().any(|entry| {
                        std::fs::read_to_string(entry.path()).is_ok_and(|item| item.trim() == id)
                    })
                })
                .unwrap_or(false);
            indexed && self.ledger_entry(bridge, id).is_none()
        })
        .await;
    }

    fn journal(&self) -> String {
        std::fs::read_to_string(self.data.join("journal.md")).unwrap_or_default()
    }

    /// Starts a bridge binary as a plain child, its output in a log file and its sd_notify
    /// messages on a socket of its own.
    fn bridge(&self, binary: &Path) -> Bridge {
        let number = next_number();
        let log = self.path(&format!("bridge-{number}.log"));
        let file = std::fs::File::create(&log).expect("create log");
        let notify_path = self.path(&format!("notify-{number}.sock"));
        let socket = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
        // Read every message as it comes: the bridge's send blocks once the socket's queue
        // is full, as it would if systemd stopped reading.
        let (sender, notifications) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok(length) = socket.recv(&mut buffer).await {
                let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
                if sender.send(message).is_err() {
                    return;
                }
            }
        });
        let mut command = Command::new(binary);
        self.environment(&mut command);
        command
            .env("NOTIFY_SOCKET", &notify_path)
            .env("REIN_LOG", "info")
            .stdout(file.try_clone().expect("clone log"))
            .stderr(file);
        Bridge {
            child: command.spawn().expect("spawn the bridge"),
            log,
            notifications,
            reader,
        }
    }
}

/// A bridge binary running as a child of the test.
struct Bridge {
    child: Child,
    log: PathBuf,
    /// What it sent to NOTIFY_SOCKET, message by message.
    notifications: mpsc::UnboundedReceiver<String>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Bridge {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for READY=1 (sent after the first pass over the mailbox); returns its STATUS=.
    async fn ready(&mut self) -> String {
        let deadline = Instant::now() + PROCESS_LIMIT;
        loop {
            let outcome = tokio::select! {
                received = tokio::time::timeout_at(deadline, self.notifications.recv()) => Ok(received),
                status = self.child.wait() => Err(status),
            };
            let message = match outcome {
                Ok(Ok(Some(message))) => message,
                Ok(Ok(None)) => panic!("the notify socket failed"),
                Ok(Err(_)) => panic!(
                    "the bridge sent no READY=1 within {PROCESS_LIMIT:?}; its log:\n{}",
                    self.log()
                ),
                Err(status) => panic!(
                    "the bridge exited ({status:?}) before READY=1; its log:\n{}",
                    self.log()
                ),
            };
            if message.lines().any(|line| line == "READY=1") {
                return message
                    .lines()
                    .find_map(|line| line.strip_prefix("STATUS="))
                    .unwrap_or_default()
                    .to_owned();
            }
        }
    }

    /// SIGKILL, and checks that the signal is what ended it.
    async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL the bridge");
        let status = tokio::time::timeout(PROCESS_LIMIT, self.child.wait())
            .await
            .expect("the bridge dies")
            .expect("wait for the bridge");
        assert_eq!(
            status.signal(),
            Some(9),
            "the bridge ended by itself ({status:?}) before the kill; its log:\n{}",
            self.log()
        );
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Waits for a child to finish within [`PROCESS_LIMIT`], collecting its output.
async fn finish(child: Child, what: &str) -> Output {
    tokio::time::timeout(PROCESS_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {PROCESS_LIMIT:?}"))
        .unwrap_or_else(|error| panic!("{what}: {error}"))
}

/// Polls `condition` (cheap file reads) until true, failing after [`DEADLINE`].
async fn eventually(what: &str, condition: impl FnMut() -> bool) {
    wait::eventually(DEADLINE, what, condition).await
}

/// Texts the stand-in sent to `to` that start with `prefix`.
fn texts(sent: &[Stored], to: &str, prefix: &str) -> Vec<Stored> {
    sent.iter()
        .filter(|m| m.to == to && m.body.starts_with(prefix))
        .cloned()
        .collect()
}

// ----------------------------------------------------------------------------------------
// 1. Killed between send and ledger write

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_killed_mid_send_texts_the_ask_once_more_marked_as_a_repeat() {
    let binaries = binaries();
    let twilio = TwilioStandin::start().await;
    let profile = Profile::new();
    profile.write_config(&profile.sms_section(&twilio, &format!("routes = [\"{PERSON}\"]\n")));
    twilio.hold_sends();
    let mut bridge = profile.bridge(&binaries.sms);
    let asker = profile.ask("Merge PR 12?", "yes,no");
    let id = profile.pending_ask("Merge PR 12?").await;
    let code = format!("[{id}] ");

    let first = twilio
        .wait_for("the ask texted (its response held)", |r| {
            texts(&r.sent(), PERSON, &code).pop()
        })
        .await;
    assert_eq!(first.body, format!("{code}w1: Merge PR 12? Reply yes/no"));
    let entry = profile.ledger_entry("sms", &id).expect("a ledger file");
    assert_eq!(entry["stage"], "sending", "{entry}");
    bridge.kill().await;
    let entry = profile.ledger_entry("sms", &id).expect("a ledger file");
    assert_eq!(entry["stage"], "sending", "the kill came first: {entry}");
    twilio.release_sends();

    let mut bridge = profile.bridge(&binaries.sms);
    let status = bridge.ready().await;
    let sent = texts(&twilio.record().sent(), PERSON, &code);
    assert_eq!(sent.len(), 2, "exactly one more text: {sent:#?}");
    assert_eq!(
        sent[1].body,
        format!("{code}(again) w1: Merge PR 12? Reply yes/no"),
        "the repeat says so"
    );
    // The bridge says it reaches Twilio (its link), then its counts.
    assert!(
        status.starts_with("connected; delivered 1 since start"),
        "{status}"
    );
    let entry = profile.ledger_entry("sms", &id).expect("a ledger file");
    assert_eq!(
        (&entry["stage"], &entry["resent"], &entry["post"]["id"]),
        (
            &Value::from("sent"),
            &Value::from(true),
            &Value::from(sent[1].sid.clone())
        ),
        "{entry}"
    );

    bridge.kill().await;
    let mut bridge = profile.bridge(&binaries.sms);
    let status = bridge.ready().await;
    assert_eq!(
        texts(&twilio.record().sent(), PERSON, &code).len(),
        2,
        "no third text after another restart"
    );
    assert!(
        status.starts_with("connected; delivered 0 since start") && status.ends_with(", 0 pending"),
        "{status}"
    );
    assert_eq!(
        profile.ledger_entry("sms", &id).expect("a ledger file")["stage"],
        "sent"
    );

    // Not lost: the person's bare reply answers it, and the waiting `rein ask` gets it.
    twilio.receive(PERSON, "Yes");
    let output = finish(asker, "rein ask").await;
    assert!(
        output.status.success(),
        "{output:?}\nbridge log:\n{}",
        bridge.log()
    );
    assert_eq!(text(&output.stdout), "yes\n");
    twilio
        .wait_for("the confirmation", |r| {
            texts(&r.sent(), PERSON, &format!("Got it: [{id}] answered yes"))
                .pop()
                .map(drop)
        })
        .await;
    // The person answered from this number: the resolution is not texted back to them.
    profile.ledger_closes("sms", &id).await;
    assert!(texts(&twilio.record().sent(), PERSON, &format!("{code}answered")).is_empty());
    bridge.kill().await;
}

// ----------------------------------------------------------------------------------------
// 2. First answer wins across two bridges and the CLI

const SLACK_USER: &str = "U0E2E1";
const SLACK_CHANNEL: &str = "C0E2E1";
const WEBHOOK_URL: &str = "https://rein.example.org/twilio/sms";

/// Who can answer in the race, and with which option (distinct, so the answer tells who won).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Racer {
    Slack,
    Sms,
    Cli,
}

impl Racer {
    fn option(self) -> &'static str {
        match self {
            Racer::Slack => "red",
            Racer::Sms => "green",
            Racer::Cli => "blue",
        }
    }

    fn identity(self) -> String {
        match self {
            Racer::Slack => format!("slack:{SLACK_USER}"),
            Racer::Sms => format!("sms:{PERSON}"),
            Racer::Cli => "cli:tester".to_owned(),
        }
    }

    fn from_identity(identity: &str) -> Racer {
        [Racer::Slack, Racer::Sms, Racer::Cli]
            .into_iter()
            .find(|r| r.identity() == identity)
            .unwrap_or_else(|| panic!("answered by {identity:?}, who did not race"))
    }
}

/// A port nobody listens on right now, for the SMS webhook.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Twilio's webhook call for a text that just arrived, signed as Twilio signs it.
async fn post_webhook(port: u16, sid: &str, from: &str, body: &str) -> u16 {
    let params: Vec<(String, String)> = [
        ("MessageSid", sid),
        ("SmsSid", sid),
        ("AccountSid", ACCOUNT_SID),
        ("From", from),
        ("To", OUR_NUMBER),
        ("Body", body),
        ("NumMedia", "0"),
    ]
    .iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect();
    let signature = rein_bridge_sms::webhook::signature(AUTH_TOKEN, WEBHOOK_URL, &params);
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/twilio/sms"))
        .header("X-Twilio-Signature", signature)
        .form(&params)
        .send()
        .await
        .expect("the webhook answers")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_answer_wins_across_slack_sms_and_the_cli() {
    let binaries = binaries();
    let twilio = TwilioStandin::start().await;
    let slack = SlackStandin::start(&[SLACK_CHANNEL]).await;
    let profile = Profile::new();
    let port = free_port();
    let slack_secrets = profile.secrets(
        "slack.secrets",
        &format!(
            "app_token = \"{}\"\nbot_token = \"{}\"\n",
            slack_standin::APP_TOKEN,
            slack_standin::BOT_TOKEN
        ),
        0o600,
    );
    profile.write_config(&format!(
        "[bridges.slack]\nallow = [\"slack:{SLACK_USER}\"]\nroutes = [\"{SLACK_CHANNEL}\"]\nsecret_file = \"{}\"\nbase_url = \"{}\"\n\n{}",
        slack_secrets.display(),
        slack.base_url(),
        profile.sms_section(
            &twilio,
            &format!("routes = [\"{PERSON}\"]\nwebhook_bind = \"127.0.0.1:{port}\"\nwebhook_url = \"{WEBHOOK_URL}\"\n"),
        )
    ));
    let mut slack_bridge = profile.bridge(&binaries.slack);
    let mut sms_bridge = profile.bridge(&binaries.sms);
    slack_bridge.ready().await;
    sms_bridge.ready().await;
    slack
        .wait_for("the socket connected", |r| r.connected.then_some(()))
        .await;

    let mut winners = Vec::new();
    for round in 1..=3 {
        let prompt = format!("Round {round}: which colour?");
        let asker = profile.ask(&prompt, "red,green,blue");
        let id = profile.pending_ask(&prompt).await;
        let post = slack
            .wait_for("the ask posted", |r| {
                r.posted
                    .iter()
                    .find(|p| p.thread_ts.is_none() && p.text.contains(&id))
                    .map(|p| p.ts.clone())
            })
            .await;
        twilio
            .wait_for("the ask texted", |r| {
                texts(&r.sent(), PERSON, &format!("[{id}] "))
                    .pop()
                    .map(drop)
            })
            .await;

        // The button the bridge posted for the option, as Slack would send its click.
        let value = format!("{id}:{}", Racer::Slack.option());
        let click = slack.click_posted(SLACK_USER, SLACK_CHANNEL, &post, &value);
        let reply = format!("{id} {}", Racer::Sms.option());
        let answer_args = ["answer", id.as_str(), Racer::Cli.option()];
        let (_, webhook, cli) = tokio::join!(
            async {
                assert!(slack.record().connected, "a socket connection is open");
                slack.inject(click);
            },
            async {
                let sid = twilio.receive(PERSON, &reply);
                post_webhook(port, &sid, PERSON, &reply).await
            },
            profile.run(&answer_args),
        );
        assert_eq!(webhook, 200, "the signed webhook call is taken");

        let asks = profile.json_asks().await;
        let record = asks
            .iter()
            .find(|a| a["id"] == id.as_str())
            .unwrap_or_else(|| panic!("ask {id} in {asks:?}"));
        assert_eq!(record["state"], "answered", "{record}");
        let by = record["answered_by"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let winner = Racer::from_identity(&by);
        let answer = winner.option();
        assert_eq!(record["answer"], answer, "{record}");
        winners.push(winner);
        let asked = finish(asker, "rein ask").await;
        assert_eq!(text(&asked.stdout), format!("{answer}\n"), "{asked:?}");
        let accepted = profile
            .journal()
            .lines()
            .filter(|l| l.contains(&format!(" answer: ask {id} answered")))
            .count();
        assert_eq!(accepted, 1, "one accepted answer:\n{}", profile.journal());

        // The CLI was told the outcome.
        if winner == Racer::Cli {
            assert!(cli.status.success(), "{cli:?}");
        } else {
            assert_eq!(cli.status.code(), Some(5), "{cli:?}");
            let stderr = text(&cli.stderr);
            assert!(
                stderr.contains("already answered") && stderr.contains(&by),
                "{stderr}"
            );
        }
        // Slack: the clicker was told in the thread; the ask shows the resolution.
        let slack_reply = slack
            .wait_for("a reply in the ask's thread", |r| {
                r.posted
                    .iter()
                    .find(|p| p.thread_ts.as_deref() == Some(post.as_str()))
                    .map(|p| p.text.clone())
            })
            .await;
        let via = by.split(':').next().unwrap_or_default();
        let described = format!("answered: {answer} — by {by} via {via}");
        let update = slack
            .wait_for("the ask updated", |r| {
                r.updated
                    .iter()
                    .find(|u| u.ts == post)
                    .map(|u| u.text.clone())
            })
            .await;
        assert!(update.contains(&described), "{update}");
        // SMS: the texter was told; the resolution is texted unless they gave it.
        let sms_reply = twilio
            .wait_for("the reply to the texter", |r| {
                r.sent()
                    .into_iter()
                    .find(|m| {
                        m.to == PERSON
                            && (m.body.starts_with("Got it") || m.body.contains("already"))
                            && m.body.contains(&format!("[{id}]"))
                    })
                    .map(|m| m.body)
            })
            .await;
        for (racer, told) in [(Racer::Slack, &slack_reply), (Racer::Sms, &sms_reply)] {
            if racer == winner {
                assert!(
                    told.starts_with(&format!("Got it: [{id}] answered {answer}")),
                    "{racer:?} won: {told}"
                );
            } else {
                assert!(
                    told.contains(&format!("[{id}] was already answered \"{answer}\" by {by}")),
                    "{racer:?} lost: {told}"
                );
            }
        }
        profile.ledger_closes("slack", &id).await;
        profile.ledger_closes("sms", &id).await;
        let resolution_texts = texts(&twilio.record().sent(), PERSON, &format!("[{id}] answered"));
        if winner == Racer::Sms {
            assert!(resolution_texts.is_empty(), "{resolution_texts:#?}");
        } else {
            let bodies: Vec<&str> = resolution_texts.iter().map(|m| m.body.as_str()).collect();
            assert_eq!(bodies, [format!("[{id}] {described}")]);
        }
    }
    eprintln!("winners of the three races: {winners:?}");
    {
        let record = slack.record();
        assert!(
            record.protocol_errors.is_empty(),
            "{:?}",
            record.protocol_errors
        );
        let envelopes = record.envelope_ids();
        assert_eq!(envelopes.len(), 3, "one click per round: {envelopes:?}");
        assert!(
            envelopes.iter().all(|id| record.acks.contains(id)),
            "every click acknowledged: sent {envelopes:?}, acked {:?}",
            record.acks
        );
    }
    slack_bridge.kill().await;
    sms_bridge.kill().await;
}

impl Profile {
    /// `rein asks --all --json`.
    async fn json_asks(&self) -> Vec<Value> {
        let stdout = self.ok(&["asks", "--all", "--json"]).await;
        match serde_json::from_str(&stdout) {
            Ok(Value::Array(asks)) => asks,
            _ => panic!("not a JSON array: {stdout}"),
        }
    }
}

// ----------------------------------------------------------------------------------------
// 3. Allowlist refusal

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_is_refused_politely_and_answers_nothing() {
    let binaries = binaries();
    let twilio = TwilioStandin::start().await;
    let profile = Profile::new();
    profile.write_config(&profile.sms_section(&twilio, &format!("routes = [\"{PERSON}\"]\n")));
    let mut bridge = profile.bridge(&binaries.sms);
    bridge.ready().await;
    let (asked, _) = profile
        .mailbox()
        .file(&NewAsk {
            worker: "w1".into(),
            prompt: "Deploy to production?".into(),
            reference: None,
            options: vec!["yes".into(), "no".into()],
        })
        .expect("file an ask");
    let id = asked.id;
    twilio
        .wait_for("the ask texted", |r| {
            texts(&r.sent(), PERSON, &format!("[{id}] "))
                .pop()
                .map(drop)
        })
        .await;

    twilio.receive(STRANGER, &format!("{id} yes"));
    let refusal = twilio
        .wait_for("a text to the stranger", |r| {
            texts(&r.sent(), STRANGER, "").pop()
        })
        .await;
    assert_eq!(
        refusal.body,
        "Sorry, you are not on this fleet's list of people who may answer asks; nothing was answered."
    );
    let asks = profile.json_asks().await;
    let record = asks
        .iter()
        .find(|a| a["id"] == id.as_str())
        .unwrap_or_else(|| panic!("ask {id} in {asks:?}"));
    assert_eq!(record["state"], "pending", "{record}");
    let journal = profile.journal();
    assert!(
        journal.lines().any(|line| line.contains(&format!(
            " bridge-refused: sms refused an answer from sms:{STRANGER} (not in the allowlist)"
        ))),
        "{journal}"
    );
    assert!(
        !journal.contains(" answer: "),
        "nothing answered:\n{journal}"
    );
    let sent = twilio.record().sent();
    assert_eq!(
        sent.iter().filter(|m| m.to == STRANGER).count(),
        1,
        "{sent:#?}"
    );
    bridge.kill().await;
}

// ----------------------------------------------------------------------------------------
// 4. As a systemd user unit

/// The environment of a reachable systemd user manager, from `contrib/user-session.sh start`
/// (which reuses a reachable one or starts one), once per test binary.
///
/// `tests/support/user_manager.rs` cannot be used from this crate: it needs the
/// `shell_words` crate (not a dependency here) and finds the script through
/// `CARGO_MANIFEST_DIR`, which is `bridges/sms` for this test.
fn user_manager() -> &'static Vec<(String, String)> {
    static ENV: OnceLock<Vec<(String, String)>> = OnceLock::new();
    ENV.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/user-session.sh");
        let output = std::process::Command::new("bash")
            .arg(&script)
            .arg("start")
            .output()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()));
        let stdout = text(&output.stdout);
        assert!(
            output.status.success(),
            "{} start failed ({}):\n{}",
            script.display(),
            output.status,
            text(&output.stderr)
        );
        let env: Vec<(String, String)> = stdout
            .lines()
            .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
            .map(|(key, value)| {
                // printf %q leaves plain paths as they are; anything quoted is unexpected.
                assert!(
                    !value.contains(['\\', '\'', '"', '$', ' ']),
                    "cannot use {key}={value} from {}",
                    script.display()
                );
                (key.to_owned(), value.to_owned())
            })
            .collect();
        for key in ["XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS"] {
            assert!(
                env.iter().any(|(k, _)| k == key),
                "{} start printed no {key}:\n{stdout}",
                script.display()
            );
        }
        env
    })
}

/// Stops the profile's sms bridge unit when dropped, so a failing test leaves no unit.
struct StopBridge<'a>(&'a Profile);

impl Drop for StopBridge<'_> {
    fn drop(&mut self) {
        let mut command = std::process::Command::new(&binaries().rein);
        command
            .args(["bridge", "stop", "sms"])
            .env("REIN_DATA_DIR", &self.0.data)
            .env("REIN_CONFIG", &self.0.config)
            .env("REIN_PROFILE", &self.0.name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in &self.0.env {
            command.env(key, value);
        }
        let _ = command.status();
    }
}

async fn systemctl(profile: &Profile, args: &[&str]) -> String {
    let mut command = Command::new("systemctl");
    command.arg("--user").args(args).kill_on_drop(true);
    for (key, value) in &profile.env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(PROCESS_LIMIT, command.output())
        .await
        .expect("systemctl finishes")
        .expect("run systemctl");
    assert!(
        output.status.success(),
        "systemctl --user {args:?}: {output:?}"
    );
    text(&output.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_runs_as_a_notify_unit_started_and_stopped_by_rein() {
    let binaries = binaries();
    let twilio = TwilioStandin::start().await;
    let mut profile = Profile::new();
    profile.env = user_manager().clone();
    profile.write_config(&profile.sms_section(&twilio, &format!("routes = [\"{PERSON}\"]\n")));
    let unit = format!("rein.{}.bridge-sms.service", profile.name);
    let _stop = StopBridge(&profile);
    // The unit runs in the data dir, which a profile in use has.
    std::fs::create_dir_all(&profile.data).expect("create the data dir");
    assert!(binaries.rein.with_file_name("rein-bridge-sms").exists());

    let started = profile.ok(&["bridge", "start", "sms"]).await;
    assert!(started.contains(&unit), "{started}");
    // `start` returns when the job is done, which for Type=notify is after READY=1.
    let show = systemctl(
        &profile,
        &[
            "show",
            "-p",
            "Type",
            "-p",
            "ExecStart",
            "-p",
            "ActiveState",
            "-p",
            "SubState",
            "-p",
            "StatusText",
            &unit,
        ],
    )
    .await;
    let exec_start = format!("ExecStart={{ path={} ;", binaries.sms.display());
    assert!(
        show.lines().any(|l| l.starts_with(&exec_start)),
        "{exec_start} in:\n{show}"
    );
    for expected in [
        "Type=notify",
        "ActiveState=active",
        "SubState=running",
        "StatusText=connected; delivered 0 since start, last delivery none yet, 0 pending",
    ] {
        assert!(
            show.lines().any(|l| l == expected),
            "{expected} in:\n{show}"
        );
    }
    let bridges = profile.ok(&["bridge", "ls", "--json"]).await;
    let bridges: Value = serde_json::from_str(&bridges).expect("JSON");
    let sms = bridges
        .as_array()
        .and_then(|list| list.iter().find(|b| b["name"] == "sms"))
        .unwrap_or_else(|| panic!("sms in {bridges}"));
    assert_eq!(
        (&sms["health"], &sms["unit"]),
        (&Value::from("running"), &Value::from(unit.clone())),
        "{sms}"
    );

    let (asked, _) = profile
        .mailbox()
        .file(&NewAsk {
            worker: "w1".into(),
            prompt: "Rotate the keys?".into(),
            reference: None,
            options: vec!["yes".into(), "no".into()],
        })
        .expect("file an ask");
    let delivered = twilio
        .wait_for("the ask texted by the unit", |r| {
            texts(&r.sent(), PERSON, &format!("[{}] ", asked.id)).pop()
        })
        .await;
    assert_eq!(
        delivered.body,
        format!("[{}] w1: Rotate the keys? Reply yes/no", asked.id)
    );
    let mut status = String::new();
    let deadline = Instant::now() + DEADLINE;
    while !status.starts_with("connected; delivered 1 since start, last delivery 2") {
        assert!(Instant::now() < deadline, "StatusText stayed {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = systemctl(&profile, &["show", "-p", "StatusText", "--value", &unit])
            .await
            .trim()
            .to_owned();
    }

    let again = profile.run(&["bridge", "start", "sms"]).await;
    assert_eq!(again.status.code(), Some(5), "{again:?}");
    assert!(text(&again.stderr).contains("already running"), "{again:?}");

    let stopped = profile.ok(&["bridge", "stop", "sms"]).await;
    assert!(stopped.contains("stopped the sms bridge"), "{stopped}");
    let pattern = format!("rein.{}.*", profile.name);
    let left = systemctl(
        &profile,
        &["list-units", "--all", "--no-legend", "--plain", &pattern],
    )
    .await;
    assert_eq!(left.trim(), "", "no unit left for the profile");
}

// ----------------------------------------------------------------------------------------
// 5. Bad secrets

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loose_secrets_are_refused_and_the_test_verb_texts_every_route() {
    let binaries = binaries();
    let twilio = TwilioStandin::start().await;
    let profile = Profile::new();
    let routes: [&str; 3] = [PERSON, "+15550002222", "+15550003333"];
    profile.write_config(&profile.sms_section(
        &twilio,
        &format!(
            "routes = [\"{}\", \"{}\"]\nworker_routes = {{ w2 = [\"{}\"] }}\n",
            routes[0], routes[1], routes[2]
        ),
    ));
    let secrets = profile.path("sms.secrets");
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let mut command = Command::new(&binaries.sms);
    profile.environment(&mut command);
    let output = finish(
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the bridge"),
        "rein-bridge-sms with loose secrets",
    )
    .await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        stderr.contains(&secrets.display().to_string())
            && stderr.contains(&format!("chmod 600 {}", secrets.display())),
        "{stderr}"
    );
    let test = profile.run(&["bridge", "test", "sms"]).await;
    assert_eq!(test.status.code(), Some(2), "{test:?}");
    {
        let record = twilio.record();
        assert!(
            record.messages.is_empty() && record.list_requests == 0,
            "nothing reached Twilio"
        );
    }

    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let stdout = profile.ok(&["bridge", "test", "sms"]).await;
    let sent = twilio.record().sent();
    for route in routes {
        let to_route: Vec<&Stored> = sent.iter().filter(|m| m.to == route).collect();
        assert_eq!(to_route.len(), 1, "one test text to {route}: {sent:#?}");
        assert!(to_route[0].body.contains("test message"), "{to_route:?}");
        assert!(
            stdout.contains(&format!(
                "{route}: sent: sent {} to {route}",
                to_route[0].sid
            )),
            "{stdout}"
        );
    }
    assert_eq!(sent.len(), routes.len(), "{sent:#?}");
}
