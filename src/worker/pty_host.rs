//! [`run_host`]: the main process of a worker unit. One thread, one poll(2) loop without a
//! timeout, over: the signal pipe, the agent's pidfd, the PTY master, the listening
//! socket, the attached client, and connections that have not said Hello yet.
//!
//! Invariants: nothing a client sends can end the loop (bad input only closes that
//! connection); output is never held back for a client (a client that stops reading is
//! dropped once [`CLIENT_BACKLOG_LIMIT`] bytes wait for it); the loop returns only when the
//! agent has exited and been reaped.

use std::collections::VecDeque;
use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustix::event::PollFlags;
use rustix::process::Signal;
use sd_notify::NotifyState;

use super::protocol::{encode_data, Frame, FrameDecoder, WindowSize, PROTOCOL_VERSION};
use super::sys::{self, SignalPipe};
use super::transcript::Terminal;

/// How much recent raw output is kept and replayed to a client when it attaches.
pub const SCROLLBACK_BYTES: usize = 64 * 1024;
/// Unsent output a client may fall behind by before it is disconnected.
const CLIENT_BACKLOG_LIMIT: usize = 4 * 1024 * 1024;
/// Keystrokes waiting for the agent beyond which the client is not read (backpressure).
const AGENT_INPUT_LIMIT: usize = 64 * 1024;
/// Connections that have not sent Hello yet; the oldest is closed to admit a new one.
const MAX_PENDING_CONNECTIONS: usize = 8;
const READ_CHUNK: usize = 16 * 1024;
/// How long a departing client (replaced, or the agent exited) gets to take its last frames.
const FINAL_FLUSH: Duration = Duration::from_secs(1);
/// Reads of leftover output after the agent exited, in case something else still writes.
const MAX_DRAIN_READS: usize = 64;
const DEFAULT_SIZE: WindowSize = WindowSize { cols: 80, rows: 24 };

/// What the host runs and where it listens.
pub struct HostOptions {
    /// The agent's argv, exec'd directly (no shell unless it is `["sh", "-c", ...]`).
    pub command: Vec<String>,
    /// Unix socket for attach clients. Parent directories are created 0700, the socket is
    /// 0600, a stale socket is replaced and a live one refused.
    pub socket: PathBuf,
    /// Extra environment for the agent (`TERM` defaults to `xterm-256color` if unset).
    pub env: Vec<(String, String)>,
    pub cols: u16,
    pub rows: u16,
    /// Receives the agent's output as the text lines a person saw (in a unit: stdout →
    /// journald).
    pub transcript: Box<dyn Write + Send>,
    /// Text to type into the agent once it is ready for input (a loop's resume prompt).
    pub on_ready: Option<ReadyInput>,
    /// Watches the screen for the agent's own dialogs (see [`DialogWatch`]).
    pub dialogs: Option<DialogWatch>,
}

/// What the host looks for on the agent's screen to tell that the agent waits for a person
/// at a dialog of its own (not a rein ask). Checked once the agent has been quiet for a
/// moment after printing; while it is on screen, a small file says so (`agents/ID/dialog.json`)
/// and `rein worker ls` shows the worker `waiting-human` with the dialog's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogWatch {
    /// The agent's name, for the reason shown.
    pub agent: String,
    /// Text that appears on screen only while one of the agent's dialogs is open.
    pub markers: Vec<String>,
    /// Where to record that a dialog is open.
    pub file: PathBuf,
}

/// How long the agent must be quiet before its screen is looked at for a dialog.
const DIALOG_SETTLE: Duration = Duration::from_millis(300);

/// Text the host types into the agent once, when the agent looks ready: it has printed
/// something and then been quiet for `quiet` (or `give_up` has passed). The text goes in as
/// a bracketed paste when the agent turned that on, then Enter after `settle`, so an agent
/// that debounces pastes sees the Enter as a submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyInput {
    pub text: Vec<u8>,
    pub quiet: Duration,
    pub settle: Duration,
    pub give_up: Duration,
}

/// Where the host is with its [`ReadyInput`]. Only while this is not `Done` does the loop
/// wait with a timeout; afterwards an idle host sleeps in poll(2) until something happens.
enum ReadyState {
    Done,
    Waiting { input: ReadyInput, since: Instant },
    Settling { enter_at: Instant },
}

/// Bracketed-paste markers (xterm): the agent takes what is between them as one paste.
const PASTE_START: &[u8] = b"\x1b[200~";
const PASTE_END: &[u8] = b"\x1b[201~";

/// Runs the agent on a new PTY until it exits, serving attach clients meanwhile. Returns
/// the agent's exit code, or 128+N if a signal N killed it. SIGTERM and SIGHUP sent to
/// the host are forwarded to the agent's process group. Tells systemd READY=1 once the
/// agent runs and keeps STATUS= saying whether someone is attached.
pub fn run_host(options: HostOptions) -> anyhow::Result<i32> {
    let HostOptions {
        command,
        socket,
        env,
        cols,
        rows,
        transcript,
        on_ready,
        dialogs,
    } = options;
    let Some(program) = command.first() else {
        bail!("cannot start a worker: the agent command is empty");
    };
    let size = WindowSize {
        cols: if cols == 0 { DEFAULT_SIZE.cols } else { cols },
        rows: if rows == 0 { DEFAULT_SIZE.rows } else { rows },
    };
    // Before the agent exists, so a SIGTERM that races its start is not lost.
    let signals = SignalPipe::new(&[libc::SIGTERM, libc::SIGHUP])
        .context("cannot install the PTY host's signal handlers")?;
    let listener = ListeningSocket::bind(&socket)?;
    let pty = sys::open_pty(size).context("cannot open a pseudo-terminal for the agent")?;
    let agent = Agent::spawn(&command, &env, &pty.slave)
        .with_context(|| format!("cannot start the agent `{program}`"))?;
    drop(pty.slave);
    sys::set_nonblocking(&pty.master).context("cannot configure the PTY master")?;
    tracing::info!(
        pid = agent.pid(),
        terminal = %pty.slave_path.display(),
        socket = %socket.display(),
        "agent started"
    );
    notify(&[NotifyState::Ready, attached_status(false)]);

    let mut host = Host {
        dialogs,
        dialog_check: None,
        dialog_open: false,
        agent,
        master: pty.master,
        master_open: true,
        size,
        listener,
        accept_paused: false,
        signals,
        terminal: Terminal::new(transcript, size),
        ready: match on_ready {
            Some(input) => ReadyState::Waiting {
                input,
                since: Instant::now(),
            },
            None => ReadyState::Done,
        },
        scrollback: Scrollback::default(),
        to_agent: Vec::new(),
        client: None,
        pending: Vec::new(),
        next_connection: 1,
    };
    // From here on the host only waits and relays, for as long as the agent runs.
    sys::release_start_up_memory();
    host.run()
}

struct Host {
    dialogs: Option<DialogWatch>,
    /// When to look at the screen for a dialog: set by output, cleared by the look.
    dialog_check: Option<Instant>,
    dialog_open: bool,
    agent: Agent,
    master: File,
    /// False once reading the master fails with EIO: no process has the terminal open.
    master_open: bool,
    size: WindowSize,
    listener: ListeningSocket,
    /// Set when accept(2) fails for lack of resources, so a readable listener does not
    /// spin the loop; cleared when a connection closes.
    accept_paused: bool,
    signals: SignalPipe,
    terminal: Terminal,
    ready: ReadyState,
    scrollback: Scrollback,
    to_agent: Vec<u8>,
    client: Option<Connection>,
    pending: Vec<Connection>,
    next_connection: u64,
}

const SIGNALS: usize = 0;
const AGENT_EXIT: usize = 1;
const MASTER: usize = 2;
const LISTENER: usize = 3;
const CLIENT: usize = 4;
const FIRST_PENDING: usize = 5;

impl Host {
    fn run(&mut self) -> anyhow::Result<i32> {
        loop {
            let ready = self.ready_timeout();
            let dialog = self
                .dialog_check
                .map(|at| at.saturating_duration_since(Instant::now()));
            let timeout = match (ready, dialog) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let events = {
                let mut slots = vec![
                    Some((self.signals.fd(), PollFlags::IN)),
                    Some((self.agent.pidfd.as_fd(), PollFlags::IN)),
                    self.master_interest(),
                    (!self.accept_paused).then(|| (self.listener.fd(), PollFlags::IN)),
                    self.client_interest(),
                ];
                for connection in &self.pending {
                    let mut events = PollFlags::IN;
                    if !connection.outbox.is_empty() {
                        events |= PollFlags::OUT;
                    }
                    slots.push(Some((connection.stream.as_fd(), events)));
                }
                sys::poll(&slots, timeout).context("the PTY host cannot wait for events")?
            };
            if ready.is_some() {
                self.advance_ready();
            }
            if dialog.is_some() {
                self.check_dialog();
            }

            if !events[SIGNALS].is_empty() {
                self.forward_signals();
            }
            let master = events[MASTER];
            if master.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
                self.read_agent_output();
            }
            if master.contains(PollFlags::OUT) {
                self.write_agent_input();
            }
            if !events[CLIENT].is_empty() {
                self.service_client(events[CLIENT]);
            }
            // Downwards, so swap_remove only moves connections already looked at.
            for index in (0..self.pending.len()).rev() {
                let revents = events
                    .get(FIRST_PENDING + index)
                    .copied()
                    .unwrap_or(PollFlags::empty());
                if !revents.is_empty() {
                    self.service_pending(index, revents);
                }
            }
            if !events[LISTENER].is_empty() {
                self.accept_connections();
            }
            if !events[AGENT_EXIT].is_empty() {
                return self.finish();
            }
        }
    }

    fn master_interest(&self) -> sys::Interest<'_> {
        if !self.master_open {
            return None;
        }
        let mut events = PollFlags::IN;
        if !self.to_agent.is_empty() {
            events |= PollFlags::OUT;
        }
        Some((self.master.as_fd(), events))
    }

    fn client_interest(&self) -> sys::Interest<'_> {
        let client = self.client.as_ref()?;
        let mut events = PollFlags::empty();
        if self.to_agent.len() < AGENT_INPUT_LIMIT {
            events |= PollFlags::IN;
        }
        if !client.outbox.is_empty() {
            events |= PollFlags::OUT;
        }
        // POLLHUP/POLLERR are reported even with no events requested; service_client
        // reads then, so a hung-up client cannot make poll return in a loop.
        Some((client.stream.as_fd(), events))
    }

    fn forward_signals(&mut self) {
        for signal in self.signals.drain() {
            tracing::info!(signal, "forwarding signal to the agent's process group");
            if let Some(signal) = Signal::from_named_raw(signal) {
                self.agent.signal_group(signal);
            }
        }
    }

    // Not inlined: its read buffer stays out of the loop's frame, so the loop's stack is as
    // small as the loop.
    #[inline(never)]
    fn read_agent_output(&mut self) {
        let mut buffer = [MaybeUninit::uninit(); READ_CHUNK];
        match read_once(&self.master, &mut buffer) {
            Ok([]) => self.close_master(),
            Ok(read) => self.relay_output(read),
            Err(error) if is_transient(&error) => {}
            Err(error) => {
                // EIO is the normal hangup: every process closed the terminal.
                if error.raw_os_error() != Some(libc::EIO) {
                    tracing::warn!(%error, "cannot read the agent's terminal");
                }
                self.close_master();
            }
        }
    }

    fn close_master(&mut self) {
        self.master_open = false;
        self.to_agent.clear();
    }

    fn relay_output(&mut self, bytes: &[u8]) {
        self.terminal.feed(bytes);
        if self.dialogs.is_some() {
            // Looked at once the output settles: no timer runs while the agent is idle.
            self.dialog_check = Some(Instant::now() + DIALOG_SETTLE);
        }
        self.scrollback.push(bytes);
        if let Some(client) = &mut self.client {
            encode_data(bytes, &mut client.outbox);
            if client.outbox.len() > CLIENT_BACKLOG_LIMIT {
                tracing::warn!(
                    connection = client.id,
                    "attached client is not reading the agent's output; disconnecting it"
                );
                self.disconnect_client();
            }
        }
    }

    fn write_agent_input(&mut self) {
        if !self.master_open || self.to_agent.is_empty() {
            return;
        }
        match (&self.master).write(&self.to_agent) {
            Ok(n) => {
                self.to_agent.drain(..n);
            }
            Err(error) if is_transient(&error) => {}
            Err(error) => {
                if error.raw_os_error() != Some(libc::EIO) {
                    tracing::warn!(%error, "cannot write to the agent's terminal");
                }
                self.close_master();
            }
        }
    }

    fn service_client(&mut self, revents: PollFlags) {
        let Some(client) = &mut self.client else {
            return;
        };
        if revents.contains(PollFlags::OUT) && client.flush().is_err() {
            tracing::info!(connection = client.id, "attached client went away");
            self.disconnect_client();
            return;
        }
        if revents.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            if let Received::Closed = client.receive() {
                tracing::info!(connection = client.id, "attached client disconnected");
                self.disconnect_client();
                return;
            }
            self.handle_client_frames();
        }
    }

    /// Acts on every complete frame the attached client has sent.
    fn handle_client_frames(&mut self) {
        while let Some(client) = &mut self.client {
            let frame = match client.decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(connection = client.id, %error, "dropping attached client");
                    self.disconnect_client();
                    return;
                }
            };
            match frame {
                Frame::Data(bytes) => {
                    if self.master_open {
                        self.to_agent.extend_from_slice(&bytes);
                    }
                }
                Frame::Resize(size) => {
                    let first = !std::mem::replace(&mut client.resized, true);
                    self.resize(size, first);
                }
                Frame::Detach => {
                    tracing::info!(connection = client.id, "client detached");
                    self.disconnect_client();
                    return;
                }
                other => {
                    tracing::warn!(
                        connection = client.id,
                        frame = ?other,
                        "unexpected frame from attached client; dropping it"
                    );
                    self.disconnect_client();
                    return;
                }
            }
        }
        self.write_agent_input();
    }

    fn resize(&mut self, size: WindowSize, first_since_attach: bool) {
        if size.cols == 0 || size.rows == 0 || !self.master_open {
            return;
        }
        if size != self.size {
            // The kernel sends SIGWINCH to the terminal's foreground process group.
            match sys::set_window_size(&self.master, size) {
                Ok(()) => {
                    self.size = size;
                    self.terminal.resize(size);
                }
                Err(error) => tracing::warn!(%error, "cannot resize the agent's terminal"),
            }
        } else if first_since_attach {
            // Same size, but the newcomer's screen is blank: ask full-screen agents to redraw.
            sys::signal_foreground_group(&self.master, Signal::WINCH);
        }
    }

    fn disconnect_client(&mut self) {
        if self.client.take().is_some() {
            self.accept_paused = false;
            notify(&[attached_status(false)]);
        }
    }

    fn service_pending(&mut self, index: usize, revents: PollFlags) {
        let Some(connection) = self.pending.get_mut(index) else {
            return;
        };
        if revents.contains(PollFlags::OUT) && connection.flush().is_err() {
            self.drop_pending(index);
            return;
        }
        if !revents.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            return;
        }
        if let Received::Closed = connection.receive() {
            self.drop_pending(index);
            return;
        }
        // Requests (Input, Screen) may come one after another on the same connection; Hello
        // turns it into the attached client.
        loop {
            let Some(connection) = self.pending.get_mut(index) else {
                return;
            };
            let id = connection.id;
            match connection.decoder.next_frame() {
                Ok(None) => return,
                Ok(Some(Frame::Input { paste, text })) => {
                    let bracketed = self.queue_input(paste, &text);
                    tracing::info!(
                        connection = id,
                        bytes = text.len(),
                        paste,
                        bracketed,
                        "typed a request's input into the agent's terminal"
                    );
                    let reply = serde_json::json!({
                        "queued": text.len(),
                        "bracketed_paste": bracketed,
                    });
                    self.reply(index, &reply);
                }
                Ok(Some(Frame::Screen)) => {
                    let screen = serde_json::to_value(self.terminal.screen())
                        .unwrap_or(serde_json::Value::Null);
                    self.reply(index, &screen);
                }
                Ok(Some(Frame::Hello { version })) if version == PROTOCOL_VERSION => {
                    let connection = self.pending.swap_remove(index);
                    self.attach_client(connection);
                    return;
                }
                Ok(Some(Frame::Hello { version })) => {
                    tracing::warn!(
                        connection = id,
                        version,
                        supported = PROTOCOL_VERSION,
                        "client speaks another protocol version; closing it"
                    );
                    self.drop_pending(index);
                    return;
                }
                Ok(Some(other)) => {
                    tracing::warn!(
                        connection = id,
                        frame = ?other,
                        "client did not start with Hello or a request; closing it"
                    );
                    self.drop_pending(index);
                    return;
                }
                Err(error) => {
                    tracing::warn!(connection = id, %error, "closing connection");
                    self.drop_pending(index);
                    return;
                }
            }
        }
    }

    /// Sends a request's JSON reply; a connection that cannot take it is dropped.
    fn reply(&mut self, index: usize, value: &serde_json::Value) {
        let Some(connection) = self.pending.get_mut(index) else {
            return;
        };
        Frame::Reply(value.to_string().into_bytes()).encode(&mut connection.outbox);
        if connection.flush().is_err() || connection.outbox.len() > CLIENT_BACKLOG_LIMIT {
            self.drop_pending(index);
        }
    }

    /// Queues `text` for the agent; with `paste`, between bracketed-paste markers when the
    /// agent has turned them on. Returns whether it was bracketed.
    fn queue_input(&mut self, paste: bool, text: &[u8]) -> bool {
        if !self.master_open {
            return false;
        }
        let bracketed = paste && self.terminal.bracketed_paste();
        if bracketed {
            self.to_agent.extend_from_slice(PASTE_START);
        }
        self.to_agent.extend_from_slice(text);
        if bracketed {
            self.to_agent.extend_from_slice(PASTE_END);
        }
        self.write_agent_input();
        bracketed
    }

    /// Looks at the settled screen for one of the agent's dialogs and records whether one
    /// is open.
    fn check_dialog(&mut self) {
        if self.dialog_check.is_some_and(|at| at > Instant::now()) {
            return;
        }
        self.dialog_check = None;
        let Some(watch) = &self.dialogs else {
            return;
        };
        let screen = self.terminal.screen();
        let open = screen.lines.iter().find_map(|line| {
            watch
                .markers
                .iter()
                .any(|marker| line.contains(marker.as_str()))
                .then(|| line.trim().to_owned())
        });
        let result = match (&open, self.dialog_open) {
            (Some(line), _) => crate::store::write_atomic_mode(
                &watch.file,
                &crate::store::to_json_bytes(&serde_json::json!({
                    "reason": format!("{} shows a dialog: {line}", watch.agent),
                    "since": chrono::Utc::now(),
                })),
                0o600,
            ),
            (None, true) => crate::store::remove_file(&watch.file).map(|_| ()),
            (None, false) => Ok(()),
        };
        if let Err(error) = result {
            tracing::warn!(%error, "cannot record the agent's dialog");
        }
        self.dialog_open = open.is_some();
    }

    /// How long poll(2) may sleep: forever, unless a [`ReadyInput`] is still to be typed.
    fn ready_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        match &self.ready {
            ReadyState::Done => None,
            ReadyState::Waiting { input, since } => {
                let give_up = *since + input.give_up;
                let deadline = match self.terminal.last_output() {
                    Some(last) => (last + input.quiet).min(give_up),
                    None => give_up,
                };
                Some(deadline.saturating_duration_since(now))
            }
            ReadyState::Settling { enter_at } => Some(enter_at.saturating_duration_since(now)),
        }
    }

    /// Types the ready input, or its Enter, when its time has come.
    fn advance_ready(&mut self) {
        if self.ready_timeout().is_some_and(|left| !left.is_zero()) {
            return;
        }
        match std::mem::replace(&mut self.ready, ReadyState::Done) {
            ReadyState::Done => {}
            ReadyState::Waiting { input, since } => {
                let bracketed = self.queue_input(true, &input.text);
                tracing::info!(
                    REIN_EVENT = "resume-prompt",
                    bytes = input.text.len(),
                    bracketed,
                    after_ms = since.elapsed().as_millis() as u64,
                    "the agent looks ready; typed its resume prompt"
                );
                self.ready = ReadyState::Settling {
                    enter_at: Instant::now() + input.settle,
                };
            }
            ReadyState::Settling { .. } => {
                self.queue_input(false, b"\r");
            }
        }
    }

    fn drop_pending(&mut self, index: usize) {
        self.pending.swap_remove(index);
        self.accept_paused = false;
    }

    fn attach_client(&mut self, mut connection: Connection) {
        if let Some(previous) = self.client.take() {
            tracing::info!(
                previous = previous.id,
                connection = connection.id,
                "new client takes over; disconnecting the previous one"
            );
            previous.close_with(Some(Frame::Replaced));
        } else {
            tracing::info!(connection = connection.id, "client attached");
        }
        encode_data(&self.scrollback.replay(), &mut connection.outbox);
        self.client = Some(connection);
        notify(&[attached_status(true)]);
        // Frames sent right behind Hello (a Resize, keystrokes) are already buffered.
        self.handle_client_frames();
    }

    fn accept_connections(&mut self) {
        loop {
            let stream = match self.listener.socket.accept() {
                Ok((stream, _)) => stream,
                Err(error) if is_transient(&error) => return,
                Err(error) if error.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept attach connections for now");
                    self.accept_paused = true;
                    return;
                }
            };
            let id = self.next_connection;
            self.next_connection += 1;
            match sys::peer_uid(stream.as_fd()) {
                Ok(uid) if uid == sys::effective_uid() || uid == 0 => {}
                Ok(uid) => {
                    tracing::warn!(connection = id, uid, "refusing attach from another user");
                    continue;
                }
                Err(error) => {
                    tracing::warn!(connection = id, %error, "cannot identify the peer; closing");
                    continue;
                }
            }
            if let Err(error) = stream.set_nonblocking(true) {
                tracing::warn!(connection = id, %error, "cannot configure connection; closing");
                continue;
            }
            if self.pending.len() >= MAX_PENDING_CONNECTIONS {
                // Oldest first: a silent connection must not lock real clients out.
                self.pending.remove(0);
            }
            self.pending.push(Connection::new(stream, id));
        }
    }

    #[inline(never)]
    fn finish(&mut self) -> anyhow::Result<i32> {
        let code = self
            .agent
            .reap()
            .context("cannot collect the agent's exit status")?;
        // Output the agent wrote just before exiting may still sit in the terminal.
        for _ in 0..MAX_DRAIN_READS {
            if !self.master_open {
                break;
            }
            let mut buffer = [MaybeUninit::uninit(); READ_CHUNK];
            match read_once(&self.master, &mut buffer) {
                Ok(read @ [_, ..]) => self.relay_output(read),
                _ => break,
            }
        }
        self.terminal.finish();
        tracing::info!(code, "agent exited");
        notify(&[
            NotifyState::Stopping,
            NotifyState::Status(&format!("agent exited with code {code}")),
        ]);
        if let Some(client) = self.client.take() {
            client.close_with(Some(Frame::Exited { code }));
        }
        Ok(code)
    }
}

/// One read into `buffer`, which is not zeroed first: the host lives as long as its agent,
/// and a read buffer costs it no stack page until the kernel writes there (nor a 16 KiB
/// memset per read).
fn read_once(fd: impl AsFd, buffer: &mut [MaybeUninit<u8>]) -> io::Result<&[u8]> {
    match rustix::io::read(fd, buffer) {
        Ok((read, _)) => Ok(read),
        Err(errno) => Err(errno.into()),
    }
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn attached_status(attached: bool) -> NotifyState<'static> {
    NotifyState::Status(if attached {
        "agent running, attached: yes"
    } else {
        "agent running, attached: no"
    })
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::debug!(%error, "cannot notify systemd");
    }
}

/// The agent process, started as the leader of a new session on the PTY. Dropped without
/// having been reaped (the host failed), it kills the agent's process group.
struct Agent {
    child: Child,
    pidfd: OwnedFd,
    reaped: bool,
}

impl Agent {
    fn spawn(command: &[String], env: &[(String, String)], terminal: &File) -> io::Result<Self> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| io::Error::other("empty command"))?;
        let mut builder = Command::new(program);
        builder
            .args(args)
            // The agent is not the unit's main process; it must not talk to systemd as if.
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::from(terminal.try_clone()?))
            .stdout(Stdio::from(terminal.try_clone()?))
            .stderr(Stdio::from(terminal.try_clone()?));
        if std::env::var_os("TERM").is_none() && !env.iter().any(|(key, _)| key == "TERM") {
            builder.env("TERM", "xterm-256color");
        }
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // calls. std has already placed the terminal on fds 0-2.
        unsafe {
            builder.pre_exec(|| {
                // A new session has no controlling terminal; TIOCSCTTY makes the PTY it, so
                // the agent gets job control, /dev/tty and SIGWINCH.
                rustix::process::setsid()?;
                // Descriptor 0 is the PTY's slave here (set up by Command before this runs).
                rustix::process::ioctl_tiocsctty(BorrowedFd::borrow_raw(0))?;
                // The agent starts with default signal handling and nothing blocked, however
                // the host was started: a host launched from a background job inherits
                // SIGINT and SIGQUIT ignored, and an agent that kept that would ignore the
                // Ctrl-C a person types through `rein worker attach`.
                for signal in [
                    libc::SIGHUP,
                    libc::SIGINT,
                    libc::SIGQUIT,
                    libc::SIGTERM,
                    libc::SIGPIPE,
                ] {
                    libc::signal(signal, libc::SIG_DFL);
                }
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                Ok(())
            });
        }
        let mut child = builder.spawn()?;
        match sys::pidfd_open(child.id()) {
            Ok(pidfd) => Ok(Self {
                child,
                pidfd,
                reaped: false,
            }),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(error)
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent leads its own session, so its pid is also its process group id.
    fn signal_group(&self, signal: Signal) {
        if self.reaped {
            return;
        }
        let group = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(group) = group {
            let _ = rustix::process::kill_process_group(group, signal);
        }
    }

    fn reap(&mut self) -> io::Result<i32> {
        let status = self.child.wait()?;
        self.reaped = true;
        Ok(exit_code(status))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if !self.reaped {
            self.signal_group(Signal::KILL);
            let _ = self.child.wait();
        }
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 255,
    }
}

/// The attach socket; removed when the host ends, if it is still the one we created.
struct ListeningSocket {
    socket: UnixListener,
    path: PathBuf,
    identity: (u64, u64),
}

impl ListeningSocket {
    fn bind(path: &Path) -> anyhow::Result<Self> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| {
                    format!("cannot create the socket directory {}", parent.display())
                })?;
        }
        match fs::symlink_metadata(path) {
            Ok(metadata) if metadata.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    bail!(
                        "{} is in use by another running PTY host; stop that worker first",
                        path.display()
                    );
                }
                fs::remove_file(path).with_context(|| {
                    format!("cannot remove the stale socket {}", path.display())
                })?;
            }
            Ok(_) => bail!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error).with_context(|| format!("cannot inspect {}", path.display()))
            }
        }
        let socket = UnixListener::bind(path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict permissions of {}", path.display()))?;
        socket
            .set_nonblocking(true)
            .with_context(|| format!("cannot configure {}", path.display()))?;
        let metadata = fs::symlink_metadata(path)
            .with_context(|| format!("cannot inspect {}", path.display()))?;
        Ok(Self {
            socket,
            path: path.to_path_buf(),
            identity: (metadata.dev(), metadata.ino()),
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Drop for ListeningSocket {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|metadata| (metadata.dev(), metadata.ino()) == self.identity);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

enum Received {
    Bytes,
    Nothing,
    Closed,
}

/// One client connection, attached or still waiting to say Hello.
struct Connection {
    stream: UnixStream,
    decoder: FrameDecoder,
    /// Encoded frames not yet accepted by the socket.
    outbox: Vec<u8>,
    id: u64,
    /// Whether this client has sent a Resize since it attached.
    resized: bool,
}

impl Connection {
    fn new(stream: UnixStream, id: u64) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::new(),
            outbox: Vec::new(),
            id,
            resized: false,
        }
    }

    #[inline(never)]
    fn receive(&mut self) -> Received {
        let mut buffer = [MaybeUninit::uninit(); READ_CHUNK];
        match read_once(&self.stream, &mut buffer) {
            Ok([]) => Received::Closed,
            Ok(read) => {
                self.decoder.push(read);
                Received::Bytes
            }
            Err(error) if is_transient(&error) => Received::Nothing,
            Err(_) => Received::Closed,
        }
    }

    /// Writes what the socket accepts without blocking.
    fn flush(&mut self) -> io::Result<()> {
        while !self.outbox.is_empty() {
            match self.stream.write(&self.outbox) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.outbox.drain(..n);
                }
                Err(error) if is_transient(&error) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Sends what is queued plus `last`, waiting at most [`FINAL_FLUSH`], then closes.
    fn close_with(mut self, last: Option<Frame>) {
        if let Some(frame) = last {
            frame.encode(&mut self.outbox);
        }
        let deadline = Instant::now() + FINAL_FLUSH;
        if self.stream.set_nonblocking(false).is_err() {
            return;
        }
        let mut written = 0;
        while written < self.outbox.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_write_timeout(Some(left)).is_err() {
                break;
            }
            match self.stream.write(&self.outbox[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// The last [`SCROLLBACK_BYTES`] of raw output.
#[derive(Default)]
struct Scrollback {
    bytes: VecDeque<u8>,
    truncated: bool,
}

impl Scrollback {
    /// Keeps the last [`SCROLLBACK_BYTES`]: what would go past them is dropped before the
    /// new bytes are added, so the buffer never grows beyond them (a ring that grew first
    /// and dropped after would double its allocation, and every agent's memory with it).
    fn push(&mut self, data: &[u8]) {
        let cut = data.len().saturating_sub(SCROLLBACK_BYTES);
        let data = &data[cut..];
        let over = (self.bytes.len() + data.len()).saturating_sub(SCROLLBACK_BYTES);
        if cut > 0 || over > 0 {
            self.bytes.drain(..over);
            self.truncated = true;
        }
        if self.bytes.capacity() == 0 {
            self.bytes.reserve_exact(SCROLLBACK_BYTES);
        }
        self.bytes.extend(data);
    }

    /// What a newly attached client is shown. After truncation the replay starts at a
    /// line boundary, so it does not begin inside an escape sequence or a UTF-8 character.
    fn replay(&self) -> Vec<u8> {
        let bytes: Vec<u8> = self.bytes.iter().copied().collect();
        if !self.truncated {
            return bytes;
        }
        match bytes[..bytes.len() / 2]
            .iter()
            .position(|&byte| byte == b'\n')
        {
            Some(newline) => bytes[newline + 1..].to_vec(),
            None => bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrollback_keeps_the_tail_and_starts_at_a_line() {
        let mut scrollback = Scrollback::default();
        scrollback.push(b"short\n");
        assert_eq!(scrollback.replay(), b"short\n");

        let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
        for _ in 0..(SCROLLBACK_BYTES / line.len() + 10) {
            scrollback.push(line);
        }
        scrollback.push(b"tail");
        let replay = scrollback.replay();
        assert!(replay.len() <= SCROLLBACK_BYTES);
        assert!(replay.starts_with(line), "replay starts mid-line");
        assert!(replay.ends_with(b"tail"));
    }

    #[test]
    fn the_scrollback_ring_stays_its_own_size() {
        let mut scrollback = Scrollback::default();
        for _ in 0..3 * SCROLLBACK_BYTES / 64 {
            scrollback.push(&[b'x'; 64]);
        }
        assert_eq!(scrollback.bytes.len(), SCROLLBACK_BYTES);
        assert!(
            scrollback.bytes.capacity() < SCROLLBACK_BYTES + SCROLLBACK_BYTES / 8,
            "a ring that grows before it drops doubles: {}",
            scrollback.bytes.capacity()
        );
        let mut big = Scrollback::default();
        big.push(&[b'y'; 3 * SCROLLBACK_BYTES]);
        assert_eq!(big.bytes.len(), SCROLLBACK_BYTES);
        assert!(big.truncated);
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
    }
}
