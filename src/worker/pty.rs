//! The PTY host that runs an agent inside a worker unit, and the client that attaches a
//! person's terminal to it.
//!
//! Inside `rein-worker-<id>.service` the main process is [`run_host`]: it starts the agent
//! in a new session on a fresh pseudo-terminal (so interactive agents see a real terminal),
//! feeds everything the agent prints through a terminal emulator and writes the text a
//! person saw to a transcript (the unit's stdout, i.e. journald), keeps the last [`SCROLLBACK_BYTES`] of raw output, and listens on
//! a unix socket for one attached client at a time. [`attach`] is that client: it relays a
//! person's keystrokes and window size to the agent and the agent's output back, until the
//! person presses the detach key, the agent exits, or another client takes over.
//!
//! The host is one thread blocked in poll(2) with no timeout: an idle worker costs no
//! wakeups. Child exit is watched with a pidfd, signals arrive through a self-pipe. It
//! tells systemd READY=1 once the agent runs and keeps STATUS= current ("agent running,
//! attached: yes|no"). Only the host's own user (or root) may attach: the socket is 0600
//! in a 0700 directory and the peer's uid is checked.
//!
//! # Wire protocol
//!
//! Every message on the socket is a frame: `type: u8`, `length: u32` (big-endian), then
//! `length` payload bytes (at most [`MAX_PAYLOAD`]). Frame types:
//!
//! | type | name     | direction     | payload                                          |
//! |------|----------|---------------|--------------------------------------------------|
//! | 1    | Hello    | client → host | `b"rein-pty"` + protocol version `u16` BE (1)    |
//! | 2    | Data     | both          | raw terminal bytes (keystrokes or agent output)  |
//! | 3    | Resize   | client → host | `cols: u16` BE, `rows: u16` BE                   |
//! | 4    | Detach   | client → host | empty                                            |
//! | 5    | Exited   | host → client | agent exit code `i32` BE (128+N if killed by N)  |
//! | 6    | Replaced | host → client | empty: another client took over                  |
//! | 7    | Input    | client → host | flags `u8` (1 = paste), then the text to type     |
//! | 8    | Screen   | client → host | empty                                            |
//! | 9    | Reply    | host → client | a JSON object answering Input or Screen          |
//!
//! A client's first frame must be Hello; until it is, the connection is not attached and
//! cannot displace the current client. After a valid Hello the host replays its scrollback
//! as Data frames, then relays live output. Any unknown type, oversized length, malformed
//! payload or out-of-place frame makes the host drop that connection; the host itself and
//! the agent carry on. A newly attached client replaces the previous one, which receives
//! Replaced and is disconnected. When the agent exits, the attached client receives Exited
//! and the host returns the exit code.
//!
//! A connection whose first frame is Input or Screen instead of Hello is a *request*
//! connection: it never attaches and never displaces the attached client. Each request gets
//! one Reply: Input → `{"queued": N, "bracketed_paste": BOOL}` (the text is typed into the
//! agent's terminal, between `ESC [200~` and `ESC [201~` when it is a paste and the agent
//! turned bracketed paste on); Screen → the screen as text ([`ScreenText`]: `cols`, `rows`,
//! `cursor`, `alternate_screen`, `bracketed_paste`, `output_bytes`, `idle_ms`, `lines`).
//! Several requests may follow one another on one connection. See [`request`].

// Submodules of `pty`, kept beside it as pty_*.rs and included by path. The wire protocol
// is the exception: `worker/mod.rs` declares `pty_protocol` as a public sibling module, so
// other code (and other clients) can speak it without the host.
#[path = "pty_attach.rs"]
mod attach;
#[path = "pty_host.rs"]
mod host;
#[path = "pty_request.rs"]
pub mod request;
#[path = "pty_screen.rs"]
mod screen;
#[path = "pty_sys.rs"]
mod sys;
#[path = "pty_transcript.rs"]
mod transcript;

use super::pty_protocol as protocol;

pub use attach::{attach, AttachOptions, AttachOutcome, RawModeGuard, DEFAULT_DETACH_KEY};
pub use host::{run_host, DialogWatch, HostOptions, ReadyInput, SCROLLBACK_BYTES};
pub use protocol::{Frame, FrameDecoder, ProtocolError, WindowSize, MAX_PAYLOAD, PROTOCOL_VERSION};
pub use transcript::render as render_transcript;
pub use transcript::ScreenText;
