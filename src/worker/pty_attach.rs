//! [`attach`]: the client side of the PTY host's socket. It relays a person's keystrokes
//! and window size to the agent and the agent's output back, and watches for the detach
//! key, which leaves the agent running.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustix::event::PollFlags;
use rustix::termios::{OptionalActions, Termios};

use super::protocol::{encode_data, Frame, FrameDecoder, PROTOCOL_VERSION};
use super::sys::{self, SignalPipe};

/// Ctrl-], as in telnet and `virsh console`.
pub const DEFAULT_DETACH_KEY: u8 = 0x1d;
/// Larger than std's stdin buffer, so reads from `io::stdin()` bypass it and poll(2) on
/// the descriptor never misses input sitting in a user-space buffer.
const INPUT_CHUNK: usize = 16 * 1024;
const SOCKET_CHUNK: usize = 16 * 1024;
/// Keystrokes queued for a host that is not reading, beyond which input is not read.
const OUTBOX_LIMIT: usize = 256 * 1024;
/// How long the Detach notice may take to leave.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachOptions {
    /// The host's socket (`HostOptions::socket`).
    pub socket: PathBuf,
    /// The byte that detaches; it is never sent to the agent.
    pub detach_key: u8,
}

impl AttachOptions {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            detach_key: DEFAULT_DETACH_KEY,
        }
    }
}

/// How an attach session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachOutcome {
    /// The person pressed the detach key, or their input ended; the agent keeps running.
    Detached,
    /// The agent exited with this code (128+N if killed by signal N).
    AgentExited(i32),
    /// Another client attached and took over this session.
    Replaced,
    /// The host closed the connection without saying why (it died or dropped us).
    ConnectionClosed,
}

/// Attaches `input`/`output` to the agent behind `options.socket` until the session ends.
///
/// On connecting, the host replays its recent output so the screen is not blank. If
/// `input` is a terminal, its window size is sent now and on every SIGWINCH; putting it
/// in raw mode is the caller's job (see [`RawModeGuard`]). `input` should be unbuffered
/// (`std::io::stdin()` is fine): readiness is watched on its descriptor.
pub fn attach(
    options: &AttachOptions,
    mut input: impl Read + AsFd,
    mut output: impl Write,
) -> anyhow::Result<AttachOutcome> {
    let socket = &options.socket;
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot connect to the agent's terminal at {}; is the worker running?",
            socket.display()
        )
    })?;
    stream
        .set_nonblocking(true)
        .with_context(|| format!("cannot configure the connection to {}", socket.display()))?;
    let terminal = rustix::termios::isatty(input.as_fd());
    let mut resizes = if terminal {
        Some(SignalPipe::new(&[libc::SIGWINCH]).context("cannot watch for window resizes")?)
    } else {
        None
    };

    let mut outbox = Vec::new();
    Frame::Hello {
        version: PROTOCOL_VERSION,
    }
    .encode(&mut outbox);
    if terminal {
        queue_window_size(input.as_fd(), &mut outbox);
    }
    let mut decoder = FrameDecoder::new();
    let mut input_buffer = vec![0u8; INPUT_CHUNK];
    let mut socket_buffer = vec![0u8; SOCKET_CHUNK];

    loop {
        if flush(&mut stream, &mut outbox).is_err() {
            return Ok(AttachOutcome::ConnectionClosed);
        }
        let mut socket_events = PollFlags::IN;
        if !outbox.is_empty() {
            socket_events |= PollFlags::OUT;
        }
        let events = sys::poll(
            &[
                Some((stream.as_fd(), socket_events)),
                (outbox.len() < OUTBOX_LIMIT).then(|| (input.as_fd(), PollFlags::IN)),
                resizes.as_ref().map(|pipe| (pipe.fd(), PollFlags::IN)),
            ],
            None,
        )
        .context("cannot wait for terminal input")?;

        // Resizes first, so a size change is applied before keystrokes typed after it.
        if !events[2].is_empty() {
            if let Some(pipe) = &mut resizes {
                pipe.drain();
                queue_window_size(input.as_fd(), &mut outbox);
            }
        }

        if events[0].intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            match stream.read(&mut socket_buffer) {
                Ok(0) => return Ok(AttachOutcome::ConnectionClosed),
                Ok(n) => decoder.push(&socket_buffer[..n]),
                Err(error) if is_transient(&error) => {}
                Err(_) => return Ok(AttachOutcome::ConnectionClosed),
            }
            while let Some(frame) = decoder
                .next_frame()
                .context("the PTY host sent something unreadable")?
            {
                match frame {
                    Frame::Data(bytes) => {
                        output
                            .write_all(&bytes)
                            .and_then(|()| output.flush())
                            .context("cannot write the agent's output")?;
                    }
                    Frame::Exited { code } => return Ok(AttachOutcome::AgentExited(code)),
                    Frame::Replaced => return Ok(AttachOutcome::Replaced),
                    other => bail!("the PTY host sent an unexpected {other:?} frame"),
                }
            }
        }

        if !events[1].is_empty() {
            let keys = match input.read(&mut input_buffer) {
                Ok(0) => return Ok(detach(stream, outbox)),
                Ok(n) => &input_buffer[..n],
                Err(error) if is_transient(&error) => continue,
                // EIO: the terminal hung up. Either way, nobody is typing any more.
                Err(_) => return Ok(detach(stream, outbox)),
            };
            match keys.iter().position(|&key| key == options.detach_key) {
                Some(detach_at) => {
                    encode_data(&keys[..detach_at], &mut outbox);
                    return Ok(detach(stream, outbox));
                }
                None => encode_data(keys, &mut outbox),
            }
        }
    }
}

fn queue_window_size(fd: BorrowedFd<'_>, outbox: &mut Vec<u8>) {
    match sys::window_size(fd) {
        Ok(size) if size.cols > 0 && size.rows > 0 => Frame::Resize(size).encode(outbox),
        Ok(_) => {}
        Err(error) => tracing::debug!(%error, "cannot read the terminal size"),
    }
}

/// Tells the host we leave (best effort, bounded by [`FINAL_FLUSH`]).
fn detach(mut stream: UnixStream, mut outbox: Vec<u8>) -> AttachOutcome {
    Frame::Detach.encode(&mut outbox);
    let deadline = Instant::now() + FINAL_FLUSH;
    if stream.set_nonblocking(false).is_ok() {
        let mut written = 0;
        while written < outbox.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stream.set_write_timeout(Some(left)).is_err() {
                break;
            }
            match stream.write(&outbox[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    AttachOutcome::Detached
}

fn flush(stream: &mut UnixStream, outbox: &mut Vec<u8>) -> io::Result<()> {
    while !outbox.is_empty() {
        match stream.write(outbox) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                outbox.drain(..n);
            }
            Err(error) if is_transient(&error) => return Ok(()),
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Puts a terminal in raw mode (no echo, no line editing, no signals from keys, no output
/// processing) and restores the previous settings when dropped, also on error paths.
pub struct RawModeGuard {
    /// A duplicate of the terminal's descriptor (the same open terminal).
    terminal: OwnedFd,
    original: Termios,
}

impl RawModeGuard {
    /// The terminal must stay open for as long as the guard lives.
    pub fn new(terminal: BorrowedFd<'_>) -> io::Result<Self> {
        let terminal = terminal.try_clone_to_owned()?;
        let original = rustix::termios::tcgetattr(&terminal)?;
        let mut raw = original.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&terminal, OptionalActions::Now, &raw)?;
        Ok(Self { terminal, original })
    }
}

impl Drop for RawModeGuard {
    fn drop(&mut self) {
        // Restores the settings read in `new`; a terminal that is gone just fails.
        let _ = rustix::termios::tcsetattr(&self.terminal, OptionalActions::Now, &self.original);
    }
}
