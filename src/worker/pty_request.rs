//! Requests to a running PTY host that do not attach: type text into the agent's terminal
//! ([`send_input`], [`tell`]) and read its screen ([`screen`]). A person attached to the
//! same agent stays attached and sees the text arrive as if typed.
//!
//! A request connection sends Input or Screen frames instead of Hello and reads one Reply
//! frame (a JSON object) for each. Every call is bounded by [`REQUEST_DEADLINE`].

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::protocol::{Frame, FrameDecoder};
use super::transcript::ScreenText;

/// How long one request may take, connecting included.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// What the host did with an Input request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputReply {
    /// Bytes queued for the agent (the text, without paste markers).
    pub queued: usize,
    /// Whether the text went in as a bracketed paste.
    pub bracketed_paste: bool,
}

/// One connection to a host for requests.
pub struct RequestConnection {
    stream: UnixStream,
    decoder: FrameDecoder,
}

impl RequestConnection {
    pub fn connect(socket: &Path) -> anyhow::Result<Self> {
        let stream = UnixStream::connect(socket).with_context(|| {
            format!(
                "cannot connect to the agent's terminal at {}; is the worker running?",
                socket.display()
            )
        })?;
        stream.set_read_timeout(Some(REQUEST_DEADLINE))?;
        stream.set_write_timeout(Some(REQUEST_DEADLINE))?;
        Ok(Self {
            stream,
            decoder: FrameDecoder::new(),
        })
    }

    fn request(&mut self, frame: &Frame) -> anyhow::Result<serde_json::Value> {
        let mut wire = Vec::new();
        frame.encode(&mut wire);
        self.stream
            .write_all(&wire)
            .context("cannot send the request to the PTY host")?;
        let deadline = Instant::now() + REQUEST_DEADLINE;
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match self.decoder.next_frame()? {
                Some(Frame::Reply(json)) => {
                    return serde_json::from_slice(&json)
                        .context("the PTY host's reply is not JSON");
                }
                Some(other) => bail!("the PTY host answered with an unexpected {other:?} frame"),
                None => {}
            }
            if Instant::now() >= deadline {
                bail!("the PTY host did not answer within {REQUEST_DEADLINE:?}");
            }
            match self.stream.read(&mut buffer) {
                Ok(0) => bail!(
                    "the PTY host closed the connection (an older host that does not take requests? restart the worker)"
                ),
                Ok(n) => self.decoder.push(&buffer[..n]),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error).context("cannot read the PTY host's answer"),
            }
        }
    }

    /// Types `text` into the agent's terminal (as a bracketed paste with `paste`, when the
    /// agent turned that on).
    pub fn send_input(&mut self, paste: bool, text: &[u8]) -> anyhow::Result<InputReply> {
        let reply = self.request(&Frame::Input {
            paste,
            text: text.to_vec(),
        })?;
        Ok(serde_json::from_value(reply)?)
    }

    /// The agent's screen now.
    pub fn screen(&mut self) -> anyhow::Result<ScreenText> {
        Ok(serde_json::from_value(self.request(&Frame::Screen)?)?)
    }
}

/// Types `text` into the agent's terminal.
pub fn send_input(socket: &Path, paste: bool, text: &[u8]) -> anyhow::Result<InputReply> {
    RequestConnection::connect(socket)?.send_input(paste, text)
}

/// The agent's screen now.
pub fn screen(socket: &Path) -> anyhow::Result<ScreenText> {
    RequestConnection::connect(socket)?.screen()
}

/// What [`tell`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Told {
    pub bytes: usize,
    pub bracketed_paste: bool,
    /// How long the agent had been quiet when the text went in, in milliseconds.
    pub agent_idle_ms: u64,
}

/// Types `text` as a paste, then Enter after `settle`: how a person submits a prompt. Text
/// ending in a newline has it dropped, since Enter follows anyway.
pub fn tell(socket: &Path, text: &str, settle: Duration) -> anyhow::Result<Told> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let mut connection = RequestConnection::connect(socket)?;
    let idle = connection.screen()?.idle_ms;
    let reply = connection.send_input(true, text.as_bytes())?;
    std::thread::sleep(settle);
    connection.send_input(false, b"\r")?;
    Ok(Told {
        bytes: reply.queued,
        bracketed_paste: reply.bracketed_paste,
        agent_idle_ms: idle,
    })
}

/// Waits until the agent has printed something and been quiet for `quiet`, or `limit`
/// passed; returns the screen then. Polls the host's screen every 50 ms (the host itself
/// never wakes for this).
pub fn wait_until_quiet(
    socket: &Path,
    quiet: Duration,
    limit: Duration,
) -> anyhow::Result<ScreenText> {
    let deadline = Instant::now() + limit;
    let mut connection = RequestConnection::connect(socket)?;
    loop {
        let screen = connection.screen()?;
        let quiet_enough = screen.output_bytes > 0 && screen.idle_ms >= quiet.as_millis() as u64;
        if quiet_enough || Instant::now() >= deadline {
            return Ok(screen);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
