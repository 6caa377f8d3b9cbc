//! `rein tui` driven for real: the binary runs in a tmux terminal (keys with `send-keys`, the
//! screen read with `capture-pane`) against a real systemd user manager, with real workers,
//! real `rein ask` processes and the real mailbox. Every test has its own profile and its own
//! tmux server.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{stderr_of, user_manager, wait_child, wait_until, Down, Rein, REIN};

const LIMIT: Duration = Duration::from_secs(40);

/// A worker whose agent idles; restarts quickly after a crash.
const CONFIG: &str = "[runner]\npreset = \"custom\"\ncommand = \"exec sleep 600\"\n\
     [workers]\nrestart = \"on-failure\"\nrestart_sec = \"500ms\"\n";

fn fleet() -> Rein {
    user_manager::ensure();
    let rein = Rein::new();
    rein.write_config(CONFIG);
    rein
}

/// `rein tui` in a tmux terminal of its own.
struct Screen {
    socket: String,
}

impl Screen {
    fn start(rein: &Rein, cols: u16, rows: u16) -> Screen {
        let socket = format!("rein-tui-{}", rein.profile);
        let mut words = vec![
            "env".to_owned(),
            format!("REIN_DATA_DIR={}", rein.data.display()),
            format!("REIN_CONFIG={}", rein.config.display()),
            format!("REIN_PROFILE={}", rein.profile),
            "USER=tester".to_owned(),
            "TERM=xterm-256color".to_owned(),
        ];
        // The profile's own manager when it has one, else this process's.
        for key in ["XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS"] {
            let own = rein.extra_env.iter().rev().find(|(k, _)| k == key);
            if let Some(value) = own.map(|(_, v)| v.clone()).or(std::env::var(key).ok()) {
                words.push(format!("{key}={value}"));
            }
        }
        words.push(REIN.to_owned());
        words.push("tui".to_owned());
        let command = shell_words::join(&words);
        let status = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", &cols.to_string(), "-y", &rows.to_string()])
            .arg(&command)
            .env_remove("TMUX")
            .status()
            .expect("run tmux (install the tmux package)");
        assert!(status.success(), "tmux new-session failed");
        let screen = Screen { socket };
        // Keeps the pane's last screen if rein exits, so a failure shows what it said.
        screen.tmux(&["set-option", "-g", "remain-on-exit", "on"]);
        screen.wait_for("systemd: connected");
        screen
    }

    fn tmux(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            self.tmux(&["send-keys", key]);
            // Each key its own read, as a person types.
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Text typed literally.
    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-l", text]);
    }

    fn capture(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    /// Waits until the screen shows `text`; returns that screen.
    fn wait_for(&self, text: &str) -> String {
        self.wait_until(&format!("the screen to show {text:?}"), |screen| {
            screen.contains(text)
        })
    }

    fn wait_until(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let screen = self.capture();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {LIMIT:?} waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn resize(&self, cols: u16, rows: u16) {
        self.tmux(&[
            "resize-window",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
        ]);
    }

    /// Whether rein still runs in the pane.
    fn alive(&self) -> bool {
        self.tmux(&["display-message", "-p", "#{pane_dead}"]).trim() == "0"
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

/// The line of the screen that contains `needle`.
fn line_with<'a>(screen: &'a str, needle: &str) -> &'a str {
    screen
        .lines()
        .find(|line| line.contains(needle))
        .unwrap_or_default()
}

#[test]
fn without_a_terminal_it_exits_2_and_points_to_state_json() {
    let rein = Rein::new();
    let output = rein
        .command(&["tui"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run rein tui");
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains("rein state --json"),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn an_ask_filed_by_a_worker_appears_and_its_option_answers_it() {
    let rein = fleet();
    let _down = Down(&rein);
    // The worker asks, then prints what it was told, then idles: the transcript shows it.
    rein.ok(&[
        "worker",
        "start",
        "w1",
        "x",
        "--command",
        "exec sh -c 'a=$(\"$REIN_BIN\" ask --prompt \"Merge PR 12?\" --options yes,no --ref pr-12) && echo \"asker printed: $a\"; exec sleep 600'",
    ]);
    let screen = Screen::start(&rein, 120, 40);
    let shown = screen.wait_for("Merge PR 12?");
    let row = line_with(&shown, "Merge PR 12?");
    assert!(
        row.contains("w1") && row.contains("pr-12") && row.contains("1 yes  2 no"),
        "the ask's row shows worker, reference and options: {row:?}\n{shown}"
    );
    screen.wait_for("waiting-human");
    let id = rein.wait_for_one_ask();
    screen.keys(&["1"]);
    let after = screen.wait_for(&format!("ask {id} answered \"yes\" by cli:tester"));
    assert!(after.contains("nothing waits on you"), "{after}");
    // The worker's `rein ask` printed the answer.
    wait_until(LIMIT, "the asker to print the answer", || {
        stdout_of_logs(&rein).contains("asker printed: yes")
    });
    assert_eq!(
        rein.json(&["asks", "--all"])[0]["answered_by"],
        "cli:tester",
        "recorded through the mailbox as the person at the screen"
    );
}

fn stdout_of_logs(rein: &Rein) -> String {
    support::stdout_of(&rein.run(&["worker", "logs", "w1", "-n", "50"]))
}

#[test]
fn a_free_text_answer_is_typed_in_place() {
    let rein = fleet();
    let asker = rein.spawn(&["ask", "--worker", "w2", "--prompt", "Name the release?"]);
    let screen = Screen::start(&rein, 100, 30);
    screen.wait_for("Name the release?");
    screen.keys(&["Enter"]);
    screen.wait_for("answer ");
    screen.type_text("Aurora 2");
    screen.wait_for("Aurora 2");
    screen.keys(&["Enter"]);
    let output = wait_child(asker, LIMIT, "the asker");
    assert_eq!(support::stdout_of(&output), "Aurora 2\n");
    screen.wait_for("answered \"Aurora 2\" by cli:tester");
}

#[test]
fn an_ask_answered_elsewhere_disappears_with_who_answered() {
    let rein = fleet();
    let _asker = rein.spawn(&[
        "ask",
        "--worker",
        "w3",
        "--prompt",
        "Deploy?",
        "--options",
        "yes,no",
    ]);
    let screen = Screen::start(&rein, 100, 30);
    screen.wait_for("Deploy?");
    let id = rein.wait_for_one_ask();
    rein.ok(&["answer", &id, "no"]);
    let shown = screen.wait_for(&format!("ask {id} answered \"no\" by cli:tester"));
    assert!(shown.contains("Asks (0 pending)"), "{shown}");
}

#[test]
fn a_worker_killed_with_sigkill_shows_restarting_then_running() {
    let rein = fleet();
    let _down = Down(&rein);
    rein.ok(&["worker", "start", "w1", "idle"]);
    let screen = Screen::start(&rein, 120, 40);
    screen.wait_until("w1 running", |s| line_with(s, "w1 ").contains("running"));
    let pid = rein.json(&["worker", "ls"])[0]["pid"]
        .as_u64()
        .expect("a running worker has a pid");
    // SAFETY: signalling the worker's own PTY host, a process of this test's unit.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    screen.wait_for("→ restarting");
    // Back to running, through `starting` or straight, as the signals arrive.
    let shown = screen.wait_until("w1 running again, its restart counted", |s| {
        let row = line_with(s, "w1 ");
        row.contains("running") && s.contains("→ running")
    });
    let row = line_with(&shown, "w1 ");
    let cells: Vec<&str> = row
        .trim_matches(|c: char| "│┃ ".contains(c))
        .split_whitespace()
        .collect();
    assert!(
        cells.get(1) == Some(&"running") && cells.get(2) == Some(&"1"),
        "the row is running again, one restart counted: {row:?}\n{shown}"
    );
}

#[test]
fn attach_and_detach_return_to_the_screen_as_it_was() {
    let rein = fleet();
    let _down = Down(&rein);
    rein.ok(&[
        "worker",
        "start",
        "w1",
        "x",
        "--command",
        "echo agent-says-hello; exec sleep 600",
    ]);
    let screen = Screen::start(&rein, 100, 30);
    screen.wait_until("w1 running", |s| line_with(s, "w1 ").contains("running"));
    // Focus the fleet, then a filter that stays across the attach.
    screen.keys(&["Tab", "/"]);
    screen.type_text("w1");
    screen.keys(&["Enter"]);
    screen.wait_for("filter “w1”");
    screen.keys(&["a"]);
    let attached = screen.wait_for("attached to worker w1");
    assert!(
        !attached.contains("Fleet ("),
        "the screen was left for the agent: {attached}"
    );
    screen.keys(&["C-]"]);
    let back = screen.wait_for("back from worker w1");
    assert!(back.contains("filter “w1”"), "the filter survived: {back}");
    assert!(
        back.contains("┏ Fleet"),
        "the fleet area still has the focus: {back}"
    );
    assert!(screen.alive());
}

#[test]
fn the_screen_fits_80x24_and_uses_200x60_and_says_when_too_small() {
    let rein = fleet();
    let _asker = rein.spawn(&[
        "ask",
        "--worker",
        "w1",
        "--prompt",
        "Ship it?",
        "--options",
        "yes,no",
    ]);
    let screen = Screen::start(&rein, 120, 40);
    screen.wait_for("Ship it?");
    for (cols, rows) in [(80u16, 24u16), (200, 60)] {
        screen.resize(cols, rows);
        // Redrawn for the new size: every line as wide as the terminal, the last one the
        // footer.
        let shown = screen.wait_until(&format!("a {cols}x{rows} screen"), |s| {
            let lines: Vec<&str> = s.lines().collect();
            lines.len() == usize::from(rows)
                && lines[1].chars().count() == usize::from(cols)
                && lines.last().is_some_and(|l| l.contains("? help"))
        });
        for area in ["Asks (1 pending)", "Fleet (", "Events", "Ship it?"] {
            assert!(
                shown.contains(area),
                "{cols}x{rows} shows {area:?}:\n{shown}"
            );
        }
    }
    screen.resize(40, 8);
    let tiny = screen.wait_for("too small");
    assert!(tiny.contains("asks: 1 pending"), "{tiny}");
    screen.resize(80, 24);
    screen.wait_for("Asks (1 pending)");
    assert!(screen.alive());
}

#[test]
fn a_prompt_with_escape_sequences_shows_inert() {
    let rein = fleet();
    let _asker = rein.spawn(&[
        "ask",
        "--worker",
        "w1",
        "--prompt",
        "\u{1b}]0;PWNED\u{7}\u{1b}[2J\u{1b}[31mred\u{1b}[H evil",
    ]);
    let screen = Screen::start(&rein, 120, 40);
    let shown = screen.wait_for("\\e]0;PWNED\\x07\\e[2J\\e[31mred\\e[H evil");
    assert!(
        shown.contains("Asks (1 pending)"),
        "the layout held: {shown}"
    );
    let title = screen.tmux(&["display-message", "-p", "#{pane_title}"]);
    assert!(
        !title.contains("PWNED"),
        "the title was not changed: {title:?}"
    );
}

#[test]
fn a_corrupt_file_in_the_data_dir_is_an_event_not_a_crash() {
    let rein = fleet();
    let screen = Screen::start(&rein, 120, 40);
    std::fs::write(rein.data.join("asks/zzzzzz.json"), "{ not json").expect("write");
    std::fs::write(rein.data.join("notes/bad.json"), "\u{1b}[2Jnope").expect("write");
    let shown = screen.wait_for("zzzzzz.json");
    assert!(
        line_with(&shown, "zzzzzz.json").contains("problem"),
        "{shown}"
    );
    screen.wait_for("bad.json");
    assert!(screen.alive());
}

#[test]
fn the_fleet_area_says_when_the_user_manager_goes_and_follows_it_when_it_returns() {
    let manager = user_manager::PrivateManager::start();
    let rein = fleet().on(&manager);
    let _down = Down(&rein);
    rein.ok(&["worker", "start", "w1", "idle"]);
    let screen = Screen::start(&rein, 120, 40);
    screen.wait_until("w1 running", |s| line_with(s, "w1 ").contains("running"));

    manager.stop();
    let gone = screen.wait_for("systemd: UNREACHABLE");
    assert!(screen.alive(), "the screen keeps running:\n{gone}");

    manager.start_again();
    // Its workers went with it; one started now shows up, as the screen follows again.
    screen.wait_for("systemd: connected");
    rein.ok(&["worker", "start", "w2", "idle"]);
    let back = screen.wait_until("w2 running on the new manager", |s| {
        line_with(s, "w2 ").contains("running")
    });
    assert!(!back.contains("UNREACHABLE"), "{back}");
}
