//! The PTY host and attach client against real processes, real PTYs and real sockets.
//! Hosts run in threads of this process (their agents are real `sh` processes); the test
//! about signals and systemd notifications runs the host in a child process instead.
//! Every wait has a deadline; nothing synchronises by sleeping.

#[path = "support/wait.rs"]
mod wait;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rein::worker::pty::{
    attach, request, run_host, AttachOptions, AttachOutcome, HostOptions, RawModeGuard, ReadyInput,
    DEFAULT_DETACH_KEY,
};

const DEADLINE: Duration = Duration::from_secs(15);

// ---- support --------------------------------------------------------------------------

/// A `Write` sink other threads can wait on.
#[derive(Clone, Default)]
struct Capture(Arc<(Mutex<Vec<u8>>, Condvar)>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let (buffer, changed) = &*self.0;
        buffer
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .extend_from_slice(bytes);
        changed.notify_all();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        let buffer = self
            .0
             .0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        String::from_utf8_lossy(&buffer).into_owned()
    }

    /// Waits until the captured text contains `needle`; panics with the text at the deadline.
    fn wait_for(&self, needle: &str) -> String {
        let (buffer, changed) = &*self.0;
        let deadline = Instant::now() + DEADLINE;
        let mut guard = buffer.lock().unwrap_or_else(|poison| poison.into_inner());
        loop {
            let text = String::from_utf8_lossy(&guard).into_owned();
            if text.contains(needle) {
                return text;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {needle:?}; got:\n{text}"
            );
            guard = changed
                .wait_timeout(guard, left)
                .unwrap_or_else(|poison| poison.into_inner())
                .0;
        }
    }
}

/// A PTY host running in a thread of this process.
struct TestHost {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    transcript: Capture,
    result: Receiver<anyhow::Result<i32>>,
}

impl TestHost {
    fn start(script: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("run").join("attach.sock");
        Self::start_at(dir, socket, script)
    }

    fn start_at(dir: tempfile::TempDir, socket: PathBuf, script: &str) -> Self {
        Self::start_with(dir, socket, script, None)
    }

    fn start_with(
        dir: tempfile::TempDir,
        socket: PathBuf,
        script: &str,
        on_ready: Option<ReadyInput>,
    ) -> Self {
        let transcript = Capture::default();
        let options = HostOptions {
            command: vec!["sh".into(), "-c".into(), script.into()],
            socket: socket.clone(),
            env: vec![("REIN_TEST".into(), "1".into())],
            cols: 120,
            rows: 40,
            transcript: Box::new(transcript.clone()),
            on_ready,
            dialogs: None,
        };
        let (sender, result) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(run_host(options));
        });
        Self {
            _dir: dir,
            socket,
            transcript,
            result,
        }
    }

    fn is_running(&self) -> bool {
        matches!(self.result.try_recv(), Err(TryRecvError::Empty))
    }

    fn exit_code(&self) -> i32 {
        self.result
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| {
                panic!(
                    "host did not finish in time; transcript:\n{}",
                    self.transcript.text()
                )
            })
            .expect("run_host succeeds")
    }
}

/// An attach client in a thread, typing through one end of a socket pair.
struct TestClient {
    keys: UnixStream,
    output: Capture,
    outcome: Receiver<anyhow::Result<AttachOutcome>>,
}

impl TestClient {
    fn attach(socket: &Path) -> Self {
        let (keys, input) = UnixStream::pair().expect("socket pair");
        let output = Capture::default();
        let client_output = output.clone();
        let options = AttachOptions::new(socket);
        let (sender, outcome) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(attach(&options, input, client_output));
        });
        Self {
            keys,
            output,
            outcome,
        }
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.keys.write_all(keys).expect("typing into the client");
    }

    fn outcome(&self) -> AttachOutcome {
        self.outcome
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| {
                panic!(
                    "attach did not return in time; output:\n{}",
                    self.output.text()
                )
            })
            .expect("attach succeeds")
    }
}

/// Polls `condition` until it holds, for things that offer nothing to block on.
fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    wait::wait_until(DEADLINE, what, condition);
}

fn hello_frame() -> Vec<u8> {
    // Spelled out byte by byte: this is the documented wire format, not the library's encoder.
    let mut frame = vec![1, 0, 0, 0, 10];
    frame.extend_from_slice(b"rein-pty");
    frame.extend_from_slice(&[0, 1]);
    frame
}

/// Reads until the host closes the connection; false if it is still open at the deadline.
fn closed_by_peer(stream: &mut UnixStream) -> bool {
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A PTY pair standing in for a person's terminal.
fn open_test_terminal(cols: u16, rows: u16) -> (File, File) {
    // SAFETY: plain libc calls on descriptors this function owns; results are checked.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0, "posix_openpt");
        let master = File::from_raw_fd(master);
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0);
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
            0
        );
        let slave = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(slave >= 0, "open pty slave");
        let slave = File::from_raw_fd(slave);
        set_test_terminal_size(&master, cols, rows);
        (master, slave)
    }
}

fn set_test_terminal_size(master: &File, cols: u16, rows: u16) {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    let result = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    assert_eq!(result, 0, "TIOCSWINSZ");
}

fn local_flags(terminal: &File) -> libc::tcflag_t {
    // SAFETY: termios is plain data and tcgetattr fills it in.
    unsafe {
        let mut settings: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(terminal.as_raw_fd(), &mut settings), 0);
        settings.c_lflag
    }
}

// ---- tests ----------------------------------------------------------------------------

#[test]
fn agent_has_a_terminal_and_takes_input_from_an_attached_client() {
    // /dev/tty opens only for a process that has a controlling terminal.
    let host = TestHost::start("tty; echo via-dev-tty >/dev/tty; echo ready; read x; echo got:$x");
    let transcript = host.transcript.wait_for("ready");
    assert!(
        transcript.lines().any(|line| line.starts_with("/dev/pts/")),
        "the agent has no terminal:\n{transcript}"
    );
    assert!(
        transcript.contains("via-dev-tty"),
        "the terminal is not the agent's controlling terminal:\n{transcript}"
    );

    let mut client = TestClient::attach(&host.socket);
    client.output.wait_for("ready");
    client.type_keys(b"hello\n");
    host.transcript.wait_for("got:hello");

    assert_eq!(host.exit_code(), 0);
    assert_eq!(client.outcome(), AttachOutcome::AgentExited(0));
    assert!(client.output.text().contains("got:hello"));
    assert!(!host.socket.exists(), "the host leaves its socket behind");
}

#[test]
fn transcript_is_readable_text() {
    let host = TestHost::start(r"printf '\033[1;32mgreen\033[0m \033]0;title\007plain\r\n'");
    assert_eq!(host.exit_code(), 0);
    let transcript = host.transcript.text();
    assert!(transcript.contains("green plain\n"), "{transcript:?}");
    assert!(
        !transcript.contains('\x1b'),
        "escape left in {transcript:?}"
    );
    assert!(
        !transcript.contains('\r'),
        "carriage return left in {transcript:?}"
    );
}

#[test]
fn detach_leaves_the_agent_running_and_reattach_replays_output() {
    let host = TestHost::start("echo ready; read a; echo first:$a; read b; echo second:$b");
    host.transcript.wait_for("ready"); // the socket is bound before the agent starts
    let mut first = TestClient::attach(&host.socket);
    first.output.wait_for("ready");
    // Keys after the detach key must not reach the agent.
    first.type_keys(b"one\n\x1dnot-sent\n");
    assert_eq!(first.outcome(), AttachOutcome::Detached);
    host.transcript.wait_for("first:one");
    assert!(host.is_running(), "detaching ended the agent");

    let mut second = TestClient::attach(&host.socket);
    second.output.wait_for("first:one");
    second.type_keys(b"two\n");
    host.transcript.wait_for("second:two");
    assert_eq!(host.exit_code(), 0);
    assert_eq!(second.outcome(), AttachOutcome::AgentExited(0));
    assert!(!host.transcript.text().contains("not-sent"));
}

#[test]
fn window_size_follows_the_attached_terminal() {
    let host = TestHost::start(
        "stty size; echo ready; read x; stty size; read y; stty size; read z; stty size",
    );
    host.transcript.wait_for("40 120"); // the size from HostOptions

    let (terminal, keyboard) = open_test_terminal(100, 30);
    let raw = RawModeGuard::new(keyboard.as_fd()).expect("raw mode");
    assert_eq!(local_flags(&keyboard) & (libc::ICANON | libc::ECHO), 0);
    let output = Capture::default();
    let client_output = output.clone();
    let options = AttachOptions::new(&host.socket);
    let input = keyboard.try_clone().expect("dup terminal");
    let (sender, outcome) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(attach(&options, input, client_output));
    });
    let mut typing = &terminal;

    output.wait_for("ready");
    typing.write_all(b"go\n").expect("typing");
    host.transcript.wait_for("30 100");

    // A resized terminal delivers SIGWINCH; the client must pass the new size on.
    set_test_terminal_size(&terminal, 90, 20);
    // SAFETY: raise has no preconditions; the client's handler turns it into a byte.
    unsafe { libc::raise(libc::SIGWINCH) };
    typing.write_all(b"go\n").expect("typing");
    host.transcript.wait_for("20 90");

    // Same size again: still applied, and the agent sees it unchanged.
    typing.write_all(b"go\n").expect("typing");
    assert_eq!(host.exit_code(), 0);
    let outcome = outcome
        .recv_timeout(DEADLINE)
        .expect("attach returns")
        .expect("attach succeeds");
    assert_eq!(outcome, AttachOutcome::AgentExited(0));
    assert_eq!(host.transcript.text().matches("20 90").count(), 2);

    drop(raw);
    let restored = local_flags(&keyboard);
    assert_eq!(restored & libc::ICANON, libc::ICANON, "raw mode not undone");
}

#[test]
fn agent_gets_sigwinch_on_resize_and_when_a_client_attaches() {
    // dash's read is interrupted by the trapped signal; the loop reads again. The loop is
    // bounded, so an agent whose terminal went away cannot spin on end-of-input forever.
    let host = TestHost::start(
        "trap 'echo winch:$(stty size)' WINCH; echo ready; i=0; \
         while [ $i -lt 100 ]; do i=$((i + 1)); read x && echo got:$x && [ \"$x\" = q ] && exit 0; done",
    );
    host.transcript.wait_for("ready");
    let resize = |cols: u16, rows: u16| {
        [
            vec![3, 0, 0, 0, 4],
            cols.to_be_bytes().to_vec(),
            rows.to_be_bytes().to_vec(),
        ]
        .concat()
    };
    let mut stream = UnixStream::connect(&host.socket).expect("connect");
    // The size the agent already has: the host still nudges it to redraw for the newcomer.
    stream
        .write_all(&[hello_frame(), resize(120, 40)].concat())
        .expect("send");
    host.transcript.wait_for("winch:40 120");
    stream.write_all(&resize(100, 30)).expect("send");
    host.transcript.wait_for("winch:30 100");
    stream
        .write_all(&[2, 0, 0, 0, 2, b'q', b'\n'])
        .expect("send");
    assert_eq!(host.exit_code(), 0);
}

#[test]
fn exit_codes_are_passed_through() {
    let cases = [
        ("true", 0),
        ("exit 7", 7),
        ("kill -KILL $$", 137),
        ("kill -TERM $$", 143),
    ];
    let hosts: Vec<_> = cases
        .iter()
        .map(|(script, _)| TestHost::start(script))
        .collect();
    for ((script, expected), host) in cases.iter().zip(&hosts) {
        assert_eq!(host.exit_code(), *expected, "sh -c {script:?}");
    }
}

#[test]
fn output_written_just_before_exit_reaches_the_transcript() {
    // More than the host reads per wakeup is still in the PTY when the agent exits.
    let host = TestHost::start("seq 1 40000; exit 3");
    assert_eq!(host.exit_code(), 3);
    let transcript = host.transcript.text();
    let last = transcript.lines().last().unwrap_or_default();
    assert_eq!(last, "40000", "output lost at exit");
    assert_eq!(transcript.lines().count(), 40000);
}

#[test]
fn a_command_that_cannot_start_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let result = run_host(HostOptions {
        command: vec!["/nonexistent/agent".into()],
        socket: dir.path().join("attach.sock"),
        env: Vec::new(),
        cols: 80,
        rows: 24,
        transcript: Box::new(Capture::default()),
        on_ready: None,
        dialogs: None,
    });
    let error = format!("{:#}", result.expect_err("starting must fail"));
    assert!(error.contains("/nonexistent/agent"), "{error}");

    let empty = run_host(HostOptions {
        command: Vec::new(),
        socket: dir.path().join("other.sock"),
        env: Vec::new(),
        cols: 80,
        rows: 24,
        transcript: Box::new(Capture::default()),
        on_ready: None,
        dialogs: None,
    });
    assert!(empty.is_err());
}

#[test]
fn garbage_clients_are_dropped_and_the_host_carries_on() {
    let host = TestHost::start("echo ready; read x; echo got:$x");
    host.transcript.wait_for("ready");

    let after_hello = |tail: &[u8]| [hello_frame(), tail.to_vec()].concat();
    let mut wrong_version = hello_frame();
    wrong_version[14] = 99;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "http request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("zero bytes", vec![0; 64]),
        ("data before hello", vec![2, 0, 0, 0, 1, b'x']),
        ("wrong version", wrong_version),
        ("unknown type after hello", after_hello(&[0xff, 0, 0, 0, 0])),
        (
            "huge length after hello",
            after_hello(&[2, 0xff, 0xff, 0xff, 0xff]),
        ),
        ("second hello", after_hello(&hello_frame())),
        ("short resize", after_hello(&[3, 0, 0, 0, 1, 7])),
        ("host-only frame", after_hello(&[5, 0, 0, 0, 4, 0, 0, 0, 0])),
    ];
    for (name, bytes) in &cases {
        let mut stream = UnixStream::connect(&host.socket).expect("connect");
        stream.write_all(bytes).expect("send garbage");
        assert!(
            closed_by_peer(&mut stream),
            "{name}: host kept the connection"
        );
        assert!(host.is_running(), "{name}: host stopped");
    }

    // Clients that vanish, or stall mid-frame, must not get in the way either.
    drop(UnixStream::connect(&host.socket).expect("connect"));
    let mut half_hello = UnixStream::connect(&host.socket).expect("connect");
    half_hello.write_all(&hello_frame()[..7]).expect("send");

    let mut client = TestClient::attach(&host.socket);
    client.output.wait_for("ready");
    client.type_keys(b"still here\n");
    host.transcript.wait_for("got:still here");
    assert_eq!(host.exit_code(), 0);
    assert_eq!(client.outcome(), AttachOutcome::AgentExited(0));
}

#[test]
fn a_second_client_takes_over_from_the_first() {
    let host = TestHost::start("echo ready; read x; echo got:$x");
    host.transcript.wait_for("ready");
    let first = TestClient::attach(&host.socket);
    first.output.wait_for("ready");

    let mut second = TestClient::attach(&host.socket);
    second.output.wait_for("ready"); // replayed for the newcomer
    assert_eq!(first.outcome(), AttachOutcome::Replaced);

    second.type_keys(b"hi\n");
    host.transcript.wait_for("got:hi");
    assert_eq!(host.exit_code(), 0);
    assert_eq!(second.outcome(), AttachOutcome::AgentExited(0));
    assert!(!first.output.text().contains("got:hi"));
}

#[test]
fn socket_is_private_stale_ones_are_replaced_and_live_ones_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_dir = dir.path().join("a").join("b");
    let socket = socket_dir.join("attach.sock");
    std::fs::create_dir_all(&socket_dir).expect("mkdir");
    std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    drop(UnixListener::bind(&socket).expect("stale socket"));
    assert!(socket.exists());

    let nested = dir.path().join("new").join("dir").join("attach.sock");
    let other = TestHost::start_at(
        tempfile::tempdir().expect("temp dir"),
        nested.clone(),
        "read x",
    );
    let host = TestHost::start_at(dir, socket.clone(), "echo ready; read x; echo got:$x");
    host.transcript.wait_for("ready");
    wait_until("the nested socket exists", || nested.exists());

    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(nested.parent().expect("parent")), 0o700);

    let second = run_host(HostOptions {
        command: vec!["true".into()],
        socket: socket.clone(),
        env: Vec::new(),
        cols: 80,
        rows: 24,
        transcript: Box::new(Capture::default()),
        on_ready: None,
        dialogs: None,
    });
    let error = format!("{:#}", second.expect_err("a live socket is refused"));
    assert!(error.contains("in use"), "{error}");

    let not_a_socket = socket_dir.join("file");
    std::fs::write(&not_a_socket, "precious").expect("write");
    let refused = run_host(HostOptions {
        command: vec!["true".into()],
        socket: not_a_socket.clone(),
        env: Vec::new(),
        cols: 80,
        rows: 24,
        transcript: Box::new(Capture::default()),
        on_ready: None,
        dialogs: None,
    });
    assert!(refused.is_err());
    assert_eq!(
        std::fs::read_to_string(&not_a_socket).expect("read"),
        "precious"
    );

    for (test_host, line) in [(&host, "x\n"), (&other, "y\n")] {
        let mut client = TestClient::attach(&test_host.socket);
        client.type_keys(line.as_bytes());
        assert_eq!(test_host.exit_code(), 0);
        assert_eq!(client.outcome(), AttachOutcome::AgentExited(0));
    }
}

// ---- the host as a process: signals, sd_notify, idleness --------------------------------

const HELPER_SOCKET: &str = "REIN_PTY_TEST_HELPER_SOCKET";

/// Not a test of its own: `host_process_*` runs this binary with only this "test" selected
/// to get a PTY host as a separate process whose signals and exit it can observe.
#[test]
#[ignore = "helper process for host_process_forwards_sigterm_notifies_systemd_and_sleeps_when_idle"]
fn host_process_helper() {
    let Some(socket) = std::env::var_os(HELPER_SOCKET) else {
        return;
    };
    let result = run_host(HostOptions {
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo ready; sleep 600; echo not-killed".into(),
        ],
        socket: socket.into(),
        env: Vec::new(),
        cols: 80,
        rows: 24,
        transcript: Box::new(std::io::stdout()),
        dialogs: None,
        // Typed once the agent is quiet; afterwards the host must sleep like any idle host.
        on_ready: Some(ReadyInput {
            text: b"resume-typed".to_vec(),
            quiet: Duration::from_millis(100),
            settle: Duration::from_millis(50),
            give_up: Duration::from_secs(5),
        }),
    });
    std::process::exit(result.expect("host runs"));
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Receives notifications until one contains `needle`; returns everything received.
fn wait_for_notification(socket: &UnixDatagram, needle: &str, seen: &mut String) {
    let deadline = Instant::now() + DEADLINE;
    let mut buffer = [0u8; 4096];
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {needle:?} from the host; got:\n{seen}");
        socket.set_read_timeout(Some(left)).expect("timeout");
        if let Ok(n) = socket.recv(&mut buffer) {
            seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
            seen.push('\n');
        }
    }
}

fn thread_statuses(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list threads");
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .collect()
}

/// Context switches of every thread of a process so far.
fn context_switches(pid: u32) -> u64 {
    thread_statuses(pid)
        .iter()
        .flat_map(|status| {
            status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Whether every thread of a process is blocked (its last switch is already counted).
fn all_threads_sleeping(pid: u32) -> bool {
    thread_statuses(pid)
        .iter()
        .all(|status| status.lines().any(|line| line.starts_with("State:\tS")))
}

#[test]
fn host_process_forwards_sigterm_notifies_systemd_and_sleeps_when_idle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("attach.sock");
    let notify_path = dir.path().join("notify.sock");
    let notifications = UnixDatagram::bind(&notify_path).expect("notify socket");
    let executable = std::env::current_exe().expect("test binary");
    let child = Command::new(executable)
        .args(["host_process_helper", "--exact", "--ignored", "--nocapture"])
        .env(HELPER_SOCKET, &socket)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the helper host");
    let mut child = KillOnDrop(child);
    let pid = child.0.id();

    let mut seen = String::new();
    wait_for_notification(&notifications, "READY=1", &mut seen);
    wait_for_notification(
        &notifications,
        "STATUS=agent running, attached: no",
        &mut seen,
    );

    let mut client = TestClient::attach(&socket);
    client.output.wait_for("ready");
    wait_for_notification(
        &notifications,
        "STATUS=agent running, attached: yes",
        &mut seen,
    );
    client.type_keys(&[DEFAULT_DETACH_KEY]);
    assert_eq!(client.outcome(), AttachOutcome::Detached);
    seen.clear();
    wait_for_notification(
        &notifications,
        "STATUS=agent running, attached: no",
        &mut seen,
    );

    // The ready input has been typed and submitted (the terminal echoed it and the Enter).
    wait_until("the ready input to be typed", || {
        request::screen(&socket).is_ok_and(|screen| {
            screen
                .lines
                .iter()
                .any(|line| line.contains("resume-typed"))
                && screen.cursor[1] == 0
        })
    });
    // Idle: the host must be blocked, not waking up on a timer. Measuring needs a pause.
    wait_until("the host process is idle", || all_threads_sleeping(pid));
    let before = context_switches(pid);
    std::thread::sleep(Duration::from_secs(1));
    let after = context_switches(pid);
    assert_eq!(after - before, 0, "the idle host process was woken up");

    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    let mut status = None;
    wait_until("the host process exits", || {
        status = child.0.try_wait().expect("wait for helper");
        status.is_some()
    });
    assert_eq!(
        status.and_then(|status| status.code()),
        Some(128 + libc::SIGTERM)
    );
    wait_for_notification(&notifications, "STOPPING=1", &mut seen);

    let mut transcript = String::new();
    if let Some(stdout) = child.0.stdout.as_mut() {
        stdout
            .read_to_string(&mut transcript)
            .expect("read transcript");
    }
    assert!(transcript.contains("ready"), "{transcript}");
    assert!(
        transcript.contains("resume-typed"),
        "the ready input was echoed by the terminal: {transcript}"
    );
    assert!(!transcript.contains("not-killed"), "{transcript}");
}

#[test]
fn a_tui_that_moves_the_cursor_reads_with_its_spaces() {
    let host = TestHost::start(r"printf 'Unable\033[1Cto\033[1Cconnect\r\n\033[5;10Hplaced\r\n'");
    assert_eq!(host.exit_code(), 0);
    let transcript = host.transcript.text();
    assert!(transcript.contains("Unable to connect\n"), "{transcript:?}");
    assert!(transcript.contains("\n         placed\n"), "{transcript:?}");
}

#[test]
fn requests_type_into_the_agent_and_read_its_screen_while_a_person_stays_attached() {
    let host = TestHost::start(
        r"printf '\033[?2004h'; echo ready; while IFS= read -r line; do echo got:$line; done",
    );
    host.transcript.wait_for("ready");
    let mut person = TestClient::attach(&host.socket);
    person.output.wait_for("ready");

    let told = request::tell(&host.socket, "hello there\n", Duration::from_millis(50))
        .expect("tell the agent");
    assert!(told.bracketed_paste, "the agent asked for bracketed paste");
    assert_eq!(told.bytes, "hello there".len());
    host.transcript.wait_for("got:hello there");
    person.output.wait_for("got:");

    let screen = request::screen(&host.socket).expect("the screen");
    assert!(screen.bracketed_paste);
    assert!(
        screen
            .lines
            .iter()
            .any(|line| line.ends_with("hello there")),
        "{:?}",
        screen.lines
    );
    assert_eq!((screen.cols, screen.rows), (120, 40));
    assert!(screen.output_bytes > 0);

    // Plain input (no paste) arrives as typed; the person is still attached.
    let reply = request::send_input(&host.socket, false, b"typed\r").expect("input");
    assert!(!reply.bracketed_paste);
    host.transcript.wait_for("got:typed");
    person.type_keys(b"from-person\n");
    host.transcript.wait_for("got:from-person");
    person.type_keys(&[DEFAULT_DETACH_KEY]);
    assert_eq!(person.outcome(), AttachOutcome::Detached);
    assert!(host.is_running());
}

#[test]
fn the_ready_input_is_typed_once_the_agent_is_quiet() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("attach.sock");
    let host = TestHost::start_with(
        dir,
        socket,
        r"sleep 0.3; printf '\033[?2004h> '; IFS= read -r line; echo got:$line; IFS= read -r again; echo again:$again",
        Some(ReadyInput {
            text: b"resume where you left off".to_vec(),
            quiet: Duration::from_millis(200),
            settle: Duration::from_millis(50),
            give_up: Duration::from_secs(10),
        }),
    );
    let transcript = host.transcript.wait_for("got:");
    assert!(
        transcript.contains("got:resume where you left off"),
        "{transcript:?}"
    );
    // Typed once: the second read waits for a person.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!host.transcript.text().contains("again:"));
    request::send_input(&host.socket, false, b"done\r").expect("input");
    host.transcript.wait_for("again:done");
    assert_eq!(host.exit_code(), 0);
}
