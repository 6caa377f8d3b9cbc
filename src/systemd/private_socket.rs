//! A zbus connection to the systemd manager's private peer-to-peer socket
//! (`$XDG_RUNTIME_DIR/systemd/private`), for machines with a user manager but no user bus.
//!
//! On that socket systemd stamps every message with the sender `org.freedesktop.systemd1`:
//! a well-known name where D-Bus expects a unique name. zbus 5 panics reading such a header
//! (seen with zbus 5.19 and systemd 252). The read half below passes the authentication
//! lines through untouched, then frames each message and rewrites a sender that is not a
//! unique name in place, at the same length (`org.freedesktop.systemd1` becomes
//! `:rg.freedesktop.systemd1`). Every other byte reaches zbus as systemd sent it; a message
//! it cannot parse is passed through as is.
//!
//! File descriptors pass both ways, as on the bus: the connection negotiates them, and the
//! read half receives each read's descriptors and hands them to zbus with the message they
//! came with. rein falls back to this socket when the bus has no systemd on it yet (a bus
//! just socket-activated, before the manager has taken its name there), and the judge's
//! tick hands systemd the write ends of its output pipes.
//!
//! A second quirk of systemd 252's sd-bus server: a message that arrives in the same read as
//! the client's `BEGIN` stays unprocessed until more input arrives, and zbus sends `BEGIN`
//! and the first call back to back. `connect` therefore ends with a `Peer.Ping` round trip
//! that sends a further no-reply ping now and then until the answer comes, so the connection
//! it returns is past that point.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::unix::OwnedReadHalf;
use zbus::connection::socket::{ReadHalf, Split, WriteHalf};
use zbus::message::Flags;
use zbus::{Connection, Message};

use super::proxies::{MANAGER_PATH, SYSTEMD_SERVICE};

const PEER_INTERFACE: &str = "org.freedesktop.DBus.Peer";
/// How long to wait for the first answer before giving the server more input.
const KICK_INTERVAL: Duration = Duration::from_millis(50);

/// Header field code of the sender (D-Bus specification, "Header Fields").
const FIELD_SENDER: u8 = 7;
/// Size of the fixed part of a message header.
const FIXED_HEADER: usize = 16;
/// The largest message D-Bus allows.
const MAX_MESSAGE: usize = 128 * 1024 * 1024;

/// Connect to a systemd private socket at `path` as a peer-to-peer zbus connection.
pub(crate) async fn connect(path: &Path) -> zbus::Result<Connection> {
    let stream = tokio::net::UnixStream::connect(path).await?;
    let (read, write) = stream.into_split();
    let read: Box<dyn ReadHalf> = Box::new(SenderFixingReader::new(read));
    let write: Box<dyn WriteHalf> = Box::new(write);
    let connection = zbus::connection::Builder::socket(Split::new(read, write))
        .p2p()
        .build()
        .await?;

    let pinger = connection.clone();
    let ping = pinger.call_method(
        Some(SYSTEMD_SERVICE),
        MANAGER_PATH,
        Some(PEER_INTERFACE),
        "Ping",
        &(),
    );
    tokio::pin!(ping);
    loop {
        match tokio::time::timeout(KICK_INTERVAL, &mut ping).await {
            Ok(reply) => {
                reply?;
                return Ok(connection);
            }
            Err(_) => {
                let kick = Message::method_call(MANAGER_PATH, "Ping")?
                    .interface(PEER_INTERFACE)?
                    .destination(SYSTEMD_SERVICE)?
                    .with_flags(Flags::NoReplyExpected)?
                    .build(&())?;
                connection.send(&kick).await?;
            }
        }
    }
}

/// The most descriptors one read takes: the kernel's limit per message (`SCM_MAX_FD`).
const MAX_FDS_PER_READ: usize = 253;
/// How much one read takes from the socket.
const CHUNK: usize = 64 * 1024;

#[derive(Debug)]
struct SenderFixingReader {
    inner: OwnedReadHalf,
    rewriter: Rewriter,
    chunk: Vec<u8>,
}

impl SenderFixingReader {
    fn new(inner: OwnedReadHalf) -> SenderFixingReader {
        SenderFixingReader {
            inner,
            rewriter: Rewriter::default(),
            chunk: vec![0u8; CHUNK],
        }
    }

    async fn read_fixed(&mut self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        loop {
            let (taken, fds) = self.rewriter.take(buf);
            if taken > 0 || buf.is_empty() {
                return Ok((taken, fds));
            }
            let (read, fds) = self.receive().await?;
            if read == 0 {
                // End of stream: hand over whatever is left unframed, then report EOF.
                self.rewriter.flush();
                return Ok(self.rewriter.take(buf));
            }
            self.rewriter.push_with_fds(&self.chunk[..read], fds);
        }
    }

    /// One `recvmsg` into the chunk, with the descriptors that came along.
    async fn receive(&mut self) -> io::Result<(usize, Vec<OwnedFd>)> {
        let stream: &tokio::net::UnixStream = self.inner.as_ref();
        loop {
            stream.readable().await?;
            match stream.try_io(Interest::READABLE, || {
                receive_with_fds(stream.as_fd(), &mut self.chunk)
            }) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }
}

fn receive_with_fds(socket: BorrowedFd<'_>, chunk: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_READ))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        match rustix::net::recvmsg(
            socket,
            &mut [io::IoSliceMut::new(chunk)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    let fds: Vec<OwnedFd> = control
        .drain()
        .filter_map(|message| match message {
            RecvAncillaryMessage::ScmRights(fds) => Some(fds),
            _ => None,
        })
        .flatten()
        .collect();
    if received.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::other(
            "systemd sent more file descriptors than one read takes",
        ));
    }
    Ok((received.bytes, fds))
}

// `ReadHalf` is declared with `#[async_trait]`; this is the signature that macro gives
// `async fn recvmsg(&mut self, buf: &mut [u8]) -> RecvmsgResult`.
impl ReadHalf for SenderFixingReader {
    fn recvmsg<'life0, 'life1, 'async_trait>(
        &'life0 mut self,
        buf: &'life1 mut [u8],
    ) -> Pin<Box<dyn Future<Output = io::Result<(usize, Vec<OwnedFd>)>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.read_fixed(buf))
    }

    /// Descriptors are negotiated (`NEGOTIATE_UNIX_FD`) and carried both ways: the write half
    /// is tokio's, which sends them, and this half hands each message's to zbus with its
    /// first bytes.
    fn can_pass_unix_fd(&self) -> bool {
        true
    }
}

/// What the server may still say after its `OK` line: its answer to `NEGOTIATE_UNIX_FD`.
const LINES_AFTER_OK: [&[u8]; 2] = [b"AGREE_UNIX_FD", b"ERROR"];

/// Turns the byte stream from systemd into the byte stream zbus can read.
///
/// File descriptors come with the bytes of the read that carried them. systemd sends each
/// message with its descriptors in one `sendmsg`, and a read from a stream socket ends with
/// the first part of a message that carries descriptors, so the descriptors of a read belong
/// to the last message that has bytes in it. They are handed out with that message's first
/// bytes, which is where zbus, reading a message at a time, collects them.
#[derive(Debug, Default)]
struct Rewriter {
    /// The server's `OK <guid>` line has been seen.
    ok_seen: bool,
    /// The server's authentication lines are over; binary messages follow.
    authenticated: bool,
    /// Bytes not yet framed.
    raw: Vec<u8>,
    /// Descriptors of the message at the start of `raw`.
    raw_fds: Vec<OwnedFd>,
    /// Bytes ready for zbus, from `ready_from` on.
    ready: Vec<u8>,
    ready_from: usize,
    /// Descriptors ready for zbus, each with the place in `ready` where its message starts.
    ready_fds: VecDeque<(usize, Vec<OwnedFd>)>,
}

impl Rewriter {
    fn push(&mut self, bytes: &[u8]) {
        self.push_with_fds(bytes, Vec::new());
    }

    /// Take in one read: its bytes, and the descriptors that came with them.
    fn push_with_fds(&mut self, bytes: &[u8], mut fds: Vec<OwnedFd>) {
        self.raw.extend_from_slice(bytes);
        while !self.authenticated {
            if self.ok_seen && !self.line_may_follow() {
                self.authenticated = true;
                break;
            }
            let Some(end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                break;
            };
            let line: Vec<u8> = self.raw.drain(..end + 2).collect();
            self.ready.extend_from_slice(&line);
            self.ok_seen |= line.starts_with(b"OK ");
        }
        if self.authenticated {
            while let Some(length) = message_length(&self.raw) {
                if length > self.raw.len() {
                    break;
                }
                let at_the_end = length == self.raw.len();
                let mut message: Vec<u8> = self.raw.drain(..length).collect();
                fix_sender(&mut message);
                let mut message_fds = std::mem::take(&mut self.raw_fds);
                if at_the_end {
                    message_fds.append(&mut fds);
                }
                self.release(&message, message_fds);
            }
        }
        self.raw_fds.append(&mut fds);
    }

    /// Whether what `raw` starts with may be one of [`LINES_AFTER_OK`] (or is still too
    /// short to tell). Binary messages start with `l` or `B`, which no such line does.
    fn line_may_follow(&self) -> bool {
        self.raw.is_empty()
            || LINES_AFTER_OK.iter().any(|line| {
                let shared = line.len().min(self.raw.len());
                self.raw[..shared] == line[..shared]
            })
    }

    fn release(&mut self, bytes: &[u8], fds: Vec<OwnedFd>) {
        if !fds.is_empty() {
            self.ready_fds.push_back((self.ready.len(), fds));
        }
        self.ready.extend_from_slice(bytes);
    }

    /// Release everything unframed (at end of stream).
    fn flush(&mut self) {
        let rest = std::mem::take(&mut self.raw);
        let fds = std::mem::take(&mut self.raw_fds);
        self.release(&rest, fds);
    }

    /// Copy ready bytes into `buf`, with the descriptors of every message that starts among
    /// them.
    fn take(&mut self, buf: &mut [u8]) -> (usize, Vec<OwnedFd>) {
        let available = &self.ready[self.ready_from..];
        let count = available.len().min(buf.len());
        buf[..count].copy_from_slice(&available[..count]);
        self.ready_from += count;
        let mut fds = Vec::new();
        while self
            .ready_fds
            .front()
            .is_some_and(|(at, _)| *at < self.ready_from)
        {
            if let Some((_, mut more)) = self.ready_fds.pop_front() {
                fds.append(&mut more);
            }
        }
        if self.ready_from == self.ready.len() {
            self.ready.clear();
            self.ready_from = 0;
        }
        (count, fds)
    }
}

/// What the rewriter makes of a stream arriving in `chunks`, flushed at its end: the bytes
/// zbus would read (used by tests and the fuzz targets). Always as long as the input, and
/// differing from it only where a sender's first byte became `:`.
pub fn rewrite<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut rewriter = Rewriter::default();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    for chunk in chunks {
        rewriter.push(chunk);
        loop {
            let (count, _) = rewriter.take(&mut buf);
            if count == 0 {
                break;
            }
            out.extend_from_slice(&buf[..count]);
        }
    }
    rewriter.flush();
    loop {
        let (count, _) = rewriter.take(&mut buf);
        if count == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..count]);
    }
}

fn read_u32(bytes: &[u8], at: usize, little_endian: bool) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if little_endian {
        u32::from_le_bytes(raw)
    } else {
        u32::from_be_bytes(raw)
    })
}

fn align(position: usize, to: usize) -> usize {
    position.div_ceil(to) * to
}

/// The total length of the message at the start of `bytes`, once its fixed header is there.
/// A header that makes no sense claims the whole buffer, so it passes through unparsed and
/// zbus reports the error.
fn message_length(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < FIXED_HEADER {
        return None;
    }
    let little_endian = match bytes[0] {
        b'l' => true,
        b'B' => false,
        _ => return Some(bytes.len()),
    };
    let body = read_u32(bytes, 4, little_endian)? as usize;
    let fields = read_u32(bytes, 12, little_endian)? as usize;
    let total = align(FIXED_HEADER + fields, 8) + body;
    if total > MAX_MESSAGE {
        return Some(bytes.len());
    }
    Some(total)
}

/// Make the sender header field of one complete message a valid unique name.
fn fix_sender(message: &mut [u8]) {
    let _ = try_fix_sender(message);
}

fn try_fix_sender(message: &mut [u8]) -> Option<()> {
    let little_endian = match message.first()? {
        b'l' => true,
        b'B' => false,
        _ => return None,
    };
    let fields_end = FIXED_HEADER.checked_add(read_u32(message, 12, little_endian)? as usize)?;
    if fields_end > message.len() {
        return None;
    }
    let mut position = FIXED_HEADER;
    loop {
        position = align(position, 8);
        if position >= fields_end {
            return Some(());
        }
        let code = *message.get(position)?;
        let signature_length = usize::from(*message.get(position + 1)?);
        let signature_start = position + 2;
        let signature = message.get(signature_start..signature_start + signature_length)?;
        position = signature_start + signature_length + 1;
        match signature {
            b"s" | b"o" => {
                position = align(position, 4);
                let length = read_u32(message, position, little_endian)? as usize;
                let start = position + 4;
                let end = start.checked_add(length)?;
                if end >= fields_end {
                    return None;
                }
                if code == FIELD_SENDER && length > 1 && message[start] != b':' {
                    message[start] = b':';
                }
                position = end + 1;
            }
            b"g" => {
                let length = usize::from(*message.get(position)?);
                position += 1 + length + 1;
            }
            b"u" => position = align(position, 4) + 4,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian method return as systemd sends it on its private socket: reply
    /// serial, sender, signature, and a body of one string.
    fn reply_from_systemd(body_text: &str) -> Vec<u8> {
        let mut fields = Vec::new();
        let pad = |bytes: &mut Vec<u8>, to: usize| {
            while !(FIXED_HEADER + bytes.len()).is_multiple_of(to) {
                bytes.push(0);
            }
        };
        // REPLY_SERIAL (5), "u", 1
        fields.extend_from_slice(&[5, 1, b'u', 0]);
        fields.extend_from_slice(&1u32.to_le_bytes());
        // SENDER (7), "s", "org.freedesktop.systemd1"
        pad(&mut fields, 8);
        fields.extend_from_slice(&[7, 1, b's', 0]);
        let sender = b"org.freedesktop.systemd1";
        fields.extend_from_slice(&(sender.len() as u32).to_le_bytes());
        fields.extend_from_slice(sender);
        fields.push(0);
        // SIGNATURE (8), "g", "s"
        pad(&mut fields, 8);
        fields.extend_from_slice(&[8, 1, b'g', 0, 1, b's', 0]);

        let mut body = Vec::new();
        body.extend_from_slice(&(body_text.len() as u32).to_le_bytes());
        body.extend_from_slice(body_text.as_bytes());
        body.push(0);

        let mut message = vec![b'l', 2, 1, 1];
        message.extend_from_slice(&(body.len() as u32).to_le_bytes());
        message.extend_from_slice(&7u32.to_le_bytes());
        message.extend_from_slice(&(fields.len() as u32).to_le_bytes());
        message.extend_from_slice(&fields);
        while !message.len().is_multiple_of(8) {
            message.push(0);
        }
        message.extend_from_slice(&body);
        message
    }

    fn drain(rewriter: &mut Rewriter, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let (count, _) = rewriter.take(&mut buf);
            if count == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..count]);
        }
    }

    #[test]
    fn only_the_sender_changes_and_only_after_authentication() {
        // The body mentions the same name: it must stay as it is.
        let message = reply_from_systemd("org.freedesktop.systemd1");
        let mut stream = b"OK 0123456789abcdef0123456789abcdef\r\n".to_vec();
        stream.extend_from_slice(&message);
        stream.extend_from_slice(&message);

        let mut expected_message = message.clone();
        let at = expected_message
            .windows(24)
            .position(|w| w == b"org.freedesktop.systemd1")
            .expect("sender in header");
        expected_message[at] = b':';
        let mut expected = b"OK 0123456789abcdef0123456789abcdef\r\n".to_vec();
        expected.extend_from_slice(&expected_message);
        expected.extend_from_slice(&expected_message);

        // Whatever the read sizes on either side, the output is the same.
        for (in_chunk, out_chunk) in [(1, 1), (3, 16), (7, 1024), (stream.len(), 5)] {
            let mut rewriter = Rewriter::default();
            let mut out = Vec::new();
            for piece in stream.chunks(in_chunk) {
                rewriter.push(piece);
                out.extend(drain(&mut rewriter, out_chunk));
            }
            assert_eq!(out, expected, "in {in_chunk}, out {out_chunk}");
            assert!(String::from_utf8_lossy(&out).contains(":rg.freedesktop.systemd1"));
        }
    }

    #[test]
    fn the_answer_to_fd_negotiation_passes_as_a_line_however_it_is_split() {
        let message = reply_from_systemd("x");
        let mut stream = b"OK 00\r\nAGREE_UNIX_FD\r\n".to_vec();
        stream.extend_from_slice(&message);
        for split in 1..stream.len() {
            let mut rewriter = Rewriter::default();
            rewriter.push(&stream[..split]);
            rewriter.push(&stream[split..]);
            let out = drain(&mut rewriter, 7);
            assert!(
                out.starts_with(b"OK 00\r\nAGREE_UNIX_FD\r\n"),
                "split at {split}"
            );
            assert!(
                String::from_utf8_lossy(&out).contains(":rg.freedesktop.systemd1"),
                "split at {split}: the message after the line was framed"
            );
        }
    }

    /// Read like zbus: the fixed header first, then the rest of that one message.
    fn read_message(rewriter: &mut Rewriter) -> (Vec<u8>, usize) {
        let mut header = [0u8; FIXED_HEADER];
        let (count, mut fds) = rewriter.take(&mut header);
        assert_eq!(count, FIXED_HEADER);
        let mut rest = vec![0u8; message_length(&header).expect("length") - FIXED_HEADER];
        let (count, more) = rewriter.take(&mut rest);
        assert_eq!(count, rest.len());
        fds.extend(more);
        let mut message = header.to_vec();
        message.extend(rest);
        (message, fds.len())
    }

    #[test]
    fn descriptors_reach_zbus_with_the_message_that_carried_them() {
        let devnull = || -> OwnedFd { std::fs::File::open("/dev/null").expect("open").into() };
        let first = reply_from_systemd("first");
        let second = reply_from_systemd("second");
        let mut rewriter = Rewriter::default();
        let lines = b"OK 00\r\nAGREE_UNIX_FD\r\n";
        rewriter.push(lines);
        let mut out = [0u8; 64];
        assert_eq!(rewriter.take(&mut out).0, lines.len());

        // One read ends with the start of the second message, which carries two descriptors;
        // the next read brings the rest of it.
        let mut stream = first.clone();
        stream.extend_from_slice(&second[..20]);
        rewriter.push_with_fds(&stream, vec![devnull(), devnull()]);
        rewriter.push_with_fds(&second[20..], Vec::new());
        assert_eq!(read_message(&mut rewriter).1, 0, "the first carried none");
        assert_eq!(read_message(&mut rewriter).1, 2, "the second carried two");

        // A read that ends exactly at a message's end: the descriptors are that message's.
        rewriter.push_with_fds(&first, vec![devnull()]);
        let (message, fds) = read_message(&mut rewriter);
        assert_eq!(fds, 1);
        assert_eq!(message.len(), first.len());
    }

    #[test]
    fn a_message_that_cannot_be_parsed_passes_unchanged() {
        let mut message = reply_from_systemd("x");
        // An unknown field signature stops the parse before the sender.
        message[FIXED_HEADER + 2] = b'x';
        let before = message.clone();
        fix_sender(&mut message);
        assert_eq!(message, before);

        let mut rewriter = Rewriter::default();
        rewriter.push(b"OK 00\r\n");
        rewriter.push(b"garbage that is no message at all");
        rewriter.flush();
        let out = drain(&mut rewriter, 64);
        assert!(out.ends_with(b"no message at all"));
    }
}
