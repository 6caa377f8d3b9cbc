//! Frames spoken on the PTY host's socket (the table is in the `pty` module header):
//! encoding, and an incremental decoder that never trusts what it is given.
//!
//! A public sibling of `pty` (declared in `worker/mod.rs`), re-exported from there.

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    pub cols: u16,
    pub rows: u16,
}

/// Version sent in Hello; the host refuses clients that speak another one.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest payload a frame may carry; larger lengths are treated as garbage.
pub const MAX_PAYLOAD: usize = 64 * 1024;

const MAGIC: &[u8; 8] = b"rein-pty";
const HEADER_LEN: usize = 5;

const TYPE_HELLO: u8 = 1;
const TYPE_DATA: u8 = 2;
const TYPE_RESIZE: u8 = 3;
const TYPE_DETACH: u8 = 4;
const TYPE_EXITED: u8 = 5;
const TYPE_REPLACED: u8 = 6;
const TYPE_INPUT: u8 = 7;
const TYPE_SCREEN: u8 = 8;
const TYPE_REPLY: u8 = 9;

const INPUT_PASTE: u8 = 1;

/// One message on the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello {
        version: u16,
    },
    Data(Vec<u8>),
    Resize(WindowSize),
    Detach,
    Exited {
        code: i32,
    },
    Replaced,
    /// A request (no Hello first): type `text` into the agent's terminal. With `paste`, it
    /// is wrapped in bracketed-paste markers when the agent has turned them on, so the
    /// agent takes it as one paste rather than keystrokes.
    Input {
        paste: bool,
        text: Vec<u8>,
    },
    /// A request (no Hello first): the current screen.
    Screen,
    /// The host's answer to a request: a JSON object.
    Reply(Vec<u8>),
}

/// Why bytes from the other side are not a valid frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    #[error("frame payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("malformed {kind} frame ({len} payload bytes)")]
    Malformed { kind: &'static str, len: usize },
    #[error("peer is not a rein PTY client (bad hello)")]
    BadHello,
    #[error("peer speaks PTY protocol version {0}, this rein speaks {PROTOCOL_VERSION}")]
    UnsupportedVersion(u16),
}

impl Frame {
    /// Appends the encoded frame to `out`. Data larger than [`MAX_PAYLOAD`] is split into
    /// several Data frames, so any slice can be sent.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Hello { version } => {
                let mut payload = MAGIC.to_vec();
                payload.extend_from_slice(&version.to_be_bytes());
                put(out, TYPE_HELLO, &payload);
            }
            Frame::Data(bytes) => encode_data(bytes, out),
            Frame::Resize(size) => {
                let mut payload = size.cols.to_be_bytes().to_vec();
                payload.extend_from_slice(&size.rows.to_be_bytes());
                put(out, TYPE_RESIZE, &payload);
            }
            Frame::Detach => put(out, TYPE_DETACH, &[]),
            Frame::Exited { code } => put(out, TYPE_EXITED, &code.to_be_bytes()),
            Frame::Replaced => put(out, TYPE_REPLACED, &[]),
            Frame::Input { paste, text } => {
                let mut payload = Vec::with_capacity(text.len() + 1);
                payload.push(if *paste { INPUT_PASTE } else { 0 });
                payload.extend_from_slice(text);
                put(out, TYPE_INPUT, &payload);
            }
            Frame::Screen => put(out, TYPE_SCREEN, &[]),
            Frame::Reply(json) => put(out, TYPE_REPLY, json),
        }
    }
}

/// Appends `bytes` as Data frames without copying them into a `Frame` first. Nothing is
/// appended for an empty slice.
pub fn encode_data(bytes: &[u8], out: &mut Vec<u8>) {
    for chunk in bytes.chunks(MAX_PAYLOAD) {
        put(out, TYPE_DATA, chunk);
    }
}

fn put(out: &mut Vec<u8>, frame_type: u8, payload: &[u8]) {
    out.push(frame_type);
    // Callers keep payloads within MAX_PAYLOAD, far below u32::MAX.
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Accumulates bytes from a stream and yields whole frames. The buffer never holds more
/// than one maximal frame plus what was pushed since, because the length is checked as
/// soon as a header is complete.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or an error if the
    /// stream is not speaking this protocol (the connection should then be dropped).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        let Some(header) = self.buffer.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let frame_type = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if !(TYPE_HELLO..=TYPE_REPLY).contains(&frame_type) {
            return Err(ProtocolError::UnknownType(frame_type));
        }
        if len > MAX_PAYLOAD {
            return Err(ProtocolError::TooLarge(len));
        }
        let Some(payload) = self.buffer.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let frame = parse(frame_type, payload)?;
        self.buffer.drain(..HEADER_LEN + len);
        Ok(Some(frame))
    }
}

fn parse(frame_type: u8, payload: &[u8]) -> Result<Frame, ProtocolError> {
    let malformed = |kind| ProtocolError::Malformed {
        kind,
        len: payload.len(),
    };
    match frame_type {
        TYPE_HELLO => {
            let (magic, version) = payload
                .split_first_chunk::<8>()
                .ok_or(ProtocolError::BadHello)?;
            let version: [u8; 2] = version.try_into().map_err(|_| ProtocolError::BadHello)?;
            if magic != MAGIC {
                return Err(ProtocolError::BadHello);
            }
            Ok(Frame::Hello {
                version: u16::from_be_bytes(version),
            })
        }
        TYPE_DATA => Ok(Frame::Data(payload.to_vec())),
        TYPE_RESIZE => {
            let bytes: [u8; 4] = payload.try_into().map_err(|_| malformed("Resize"))?;
            Ok(Frame::Resize(WindowSize {
                cols: u16::from_be_bytes([bytes[0], bytes[1]]),
                rows: u16::from_be_bytes([bytes[2], bytes[3]]),
            }))
        }
        TYPE_DETACH if payload.is_empty() => Ok(Frame::Detach),
        TYPE_DETACH => Err(malformed("Detach")),
        TYPE_EXITED => {
            let bytes: [u8; 4] = payload.try_into().map_err(|_| malformed("Exited"))?;
            Ok(Frame::Exited {
                code: i32::from_be_bytes(bytes),
            })
        }
        TYPE_REPLACED if payload.is_empty() => Ok(Frame::Replaced),
        TYPE_REPLACED => Err(malformed("Replaced")),
        TYPE_INPUT => match payload.split_first() {
            Some((flags, text)) if flags & !INPUT_PASTE == 0 => Ok(Frame::Input {
                paste: flags & INPUT_PASTE != 0,
                text: text.to_vec(),
            }),
            _ => Err(malformed("Input")),
        },
        TYPE_SCREEN if payload.is_empty() => Ok(Frame::Screen),
        TYPE_SCREEN => Err(malformed("Screen")),
        TYPE_REPLY => Ok(Frame::Reply(payload.to_vec())),
        other => Err(ProtocolError::UnknownType(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, ProtocolError> {
        let mut decoder = FrameDecoder::new();
        decoder.push(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = decoder.next_frame()? {
            frames.push(frame);
        }
        Ok(frames)
    }

    #[test]
    fn every_frame_round_trips() {
        let frames = [
            Frame::Hello {
                version: PROTOCOL_VERSION,
            },
            Frame::Data(b"hello\r\n".to_vec()),
            Frame::Resize(WindowSize {
                cols: 100,
                rows: 30,
            }),
            Frame::Detach,
            Frame::Exited { code: -3 },
            Frame::Exited { code: 137 },
            Frame::Replaced,
            Frame::Input {
                paste: true,
                text: b"resume\n".to_vec(),
            },
            Frame::Input {
                paste: false,
                text: b"\r".to_vec(),
            },
            Frame::Screen,
            Frame::Reply(b"{}".to_vec()),
        ];
        let mut wire = Vec::new();
        for frame in &frames {
            frame.encode(&mut wire);
        }
        assert_eq!(decode_all(&wire), Ok(frames.to_vec()));
    }

    #[test]
    fn wire_format_matches_the_documented_layout() {
        let cases: &[(Frame, &[u8])] = &[
            (
                Frame::Hello { version: 1 },
                b"\x01\x00\x00\x00\x0arein-pty\x00\x01",
            ),
            (Frame::Data(b"ab".to_vec()), b"\x02\x00\x00\x00\x02ab"),
            (
                Frame::Resize(WindowSize {
                    cols: 100,
                    rows: 30,
                }),
                b"\x03\x00\x00\x00\x04\x00\x64\x00\x1e",
            ),
            (Frame::Detach, b"\x04\x00\x00\x00\x00"),
            (
                Frame::Exited { code: 7 },
                b"\x05\x00\x00\x00\x04\x00\x00\x00\x07",
            ),
            (Frame::Replaced, b"\x06\x00\x00\x00\x00"),
            (
                Frame::Input {
                    paste: true,
                    text: b"hi".to_vec(),
                },
                b"\x07\x00\x00\x00\x03\x01hi",
            ),
            (Frame::Screen, b"\x08\x00\x00\x00\x00"),
            (Frame::Reply(b"{}".to_vec()), b"\x09\x00\x00\x00\x02{}"),
        ];
        for (frame, wire) in cases {
            let mut encoded = Vec::new();
            frame.encode(&mut encoded);
            assert_eq!(&encoded, wire, "{frame:?}");
        }
    }

    #[test]
    fn large_data_is_split_and_reassembles() {
        let big = vec![b'x'; MAX_PAYLOAD * 2 + 10];
        let mut wire = Vec::new();
        Frame::Data(big.clone()).encode(&mut wire);
        let frames = decode_all(&wire).expect("valid frames");
        assert_eq!(frames.len(), 3);
        let joined: Vec<u8> = frames
            .into_iter()
            .flat_map(|frame| match frame {
                Frame::Data(bytes) => bytes,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(joined, big);
    }

    #[test]
    fn partial_input_waits_for_more() {
        let mut wire = Vec::new();
        Frame::Data(b"abcdef".to_vec()).encode(&mut wire);
        let mut decoder = FrameDecoder::new();
        for byte in &wire[..wire.len() - 1] {
            decoder.push(&[*byte]);
            assert_eq!(decoder.next_frame(), Ok(None));
        }
        decoder.push(&wire[wire.len() - 1..]);
        assert_eq!(
            decoder.next_frame(),
            Ok(Some(Frame::Data(b"abcdef".to_vec())))
        );
    }

    #[test]
    fn garbage_is_rejected() {
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"GET / HTTP/1.1\r\n", ProtocolError::UnknownType(b'G')),
            (b"\x00\x00\x00\x00\x00", ProtocolError::UnknownType(0)),
            (
                b"\x02\xff\xff\xff\xff",
                ProtocolError::TooLarge(u32::MAX as usize),
            ),
            (b"\x01\x00\x00\x00\x02hi", ProtocolError::BadHello),
            (
                b"\x01\x00\x00\x00\x0anot-rein\x00\x01",
                ProtocolError::BadHello,
            ),
            (
                b"\x03\x00\x00\x00\x03abc",
                ProtocolError::Malformed {
                    kind: "Resize",
                    len: 3,
                },
            ),
            (
                b"\x04\x00\x00\x00\x01x",
                ProtocolError::Malformed {
                    kind: "Detach",
                    len: 1,
                },
            ),
            (
                b"\x05\x00\x00\x00\x02xy",
                ProtocolError::Malformed {
                    kind: "Exited",
                    len: 2,
                },
            ),
            (
                b"\x07\x00\x00\x00\x00",
                ProtocolError::Malformed {
                    kind: "Input",
                    len: 0,
                },
            ),
            (
                b"\x07\x00\x00\x00\x02\x80x",
                ProtocolError::Malformed {
                    kind: "Input",
                    len: 2,
                },
            ),
            (
                b"\x08\x00\x00\x00\x01x",
                ProtocolError::Malformed {
                    kind: "Screen",
                    len: 1,
                },
            ),
            (b"\x0a\x00\x00\x00\x00", ProtocolError::UnknownType(10)),
        ];
        for (wire, expected) in cases {
            assert_eq!(decode_all(wire).as_ref(), Err(expected), "{wire:?}");
        }
    }
}
