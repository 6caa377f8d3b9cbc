//! Turns the agent's raw terminal output into readable text lines for the journal: escape
//! sequences (CSI, OSC, DCS, ...) are removed, other control characters dropped, a bare
//! carriage return starts the line over (as it would on screen), blank lines are skipped.

use std::io::Write;

/// Longer lines are cut, so one endless line cannot grow memory or a journal entry.
const MAX_LINE_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    /// After ESC.
    Escape,
    /// ESC followed by intermediate bytes (0x20..=0x2f), waiting for the final byte.
    EscapeIntermediate,
    /// ESC [ ... up to a final byte in 0x40..=0x7e.
    ControlSequence,
    /// ESC ] / ESC P / ESC X / ESC ^ / ESC _ ... up to BEL or ESC \.
    ControlString,
    /// ESC seen inside a control string.
    ControlStringEscape,
}

/// A line-oriented, sanitising writer over the transcript sink.
pub(super) struct Transcript {
    sink: Box<dyn Write + Send>,
    line: Vec<u8>,
    state: State,
    carriage_return: bool,
    failed: bool,
}

impl Transcript {
    pub fn new(sink: Box<dyn Write + Send>) -> Self {
        Self {
            sink,
            line: Vec::new(),
            state: State::Text,
            carriage_return: false,
            failed: false,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.feed_byte(byte);
        }
    }

    /// Writes out a final partial line.
    pub fn finish(&mut self) {
        self.end_line();
    }

    fn feed_byte(&mut self, byte: u8) {
        const ESC: u8 = 0x1b;
        const BEL: u8 = 0x07;
        match self.state {
            State::Text => self.text_byte(byte),
            State::Escape => {
                self.state = match byte {
                    b'[' => State::ControlSequence,
                    b']' | b'P' | b'X' | b'^' | b'_' => State::ControlString,
                    0x20..=0x2f => State::EscapeIntermediate,
                    ESC => State::Escape,
                    _ => State::Text,
                }
            }
            State::EscapeIntermediate => {
                if !(0x20..=0x2f).contains(&byte) {
                    self.state = State::Text;
                }
            }
            State::ControlSequence => match byte {
                0x40..=0x7e => self.state = State::Text,
                ESC => self.state = State::Escape,
                _ => {}
            },
            State::ControlString => match byte {
                BEL => self.state = State::Text,
                ESC => self.state = State::ControlStringEscape,
                _ => {}
            },
            State::ControlStringEscape => {
                if byte == b'\\' {
                    self.state = State::Text;
                } else {
                    // The string ended without a terminator; this ESC starts something new.
                    self.state = State::Escape;
                    self.feed_byte(byte);
                }
            }
        }
    }

    fn text_byte(&mut self, byte: u8) {
        // ONLCR turns a program's "\r\n" into "\r\r\n": only text after a CR overwrites.
        if byte != b'\r' && std::mem::take(&mut self.carriage_return) && byte != b'\n' {
            self.line.clear();
        }
        match byte {
            0x1b => self.state = State::Escape,
            b'\n' => self.end_line(),
            b'\r' => self.carriage_return = true,
            b'\t' => self.push(byte),
            0x08 => self.erase_last_char(),
            0x00..=0x1f | 0x7f => {}
            _ => self.push(byte),
        }
    }

    fn push(&mut self, byte: u8) {
        self.line.push(byte);
        if self.line.len() >= MAX_LINE_BYTES {
            self.end_line();
        }
    }

    fn erase_last_char(&mut self) {
        // Drop UTF-8 continuation bytes along with their lead byte.
        while let Some(byte) = self.line.pop() {
            if byte & 0xc0 != 0x80 {
                break;
            }
        }
    }

    fn end_line(&mut self) {
        let line = String::from_utf8_lossy(&self.line);
        // Dropping bytes inside a UTF-8 sequence can leave a C1 control (`c2` + `9b` is a
        // CSI); whatever control remains is shown, not obeyed.
        let line = crate::text::inert(line.trim_end());
        if !line.is_empty() && !self.failed {
            let written = writeln!(self.sink, "{line}").and_then(|()| self.sink.flush());
            if let Err(error) = written {
                // Keep the agent running; there is nowhere better to report this.
                tracing::warn!(%error, "cannot write the agent transcript; dropping it from now on");
                self.failed = true;
            }
        }
        self.line.clear();
    }
}

/// The transcript lines that `chunks` of raw terminal output become, as one string: what a
/// worker's journal shows for that output (used by tests and the fuzz targets).
pub fn render<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> String {
    let sink = SharedSink::default();
    let mut transcript = Transcript::new(Box::new(sink.clone()));
    for chunk in chunks {
        transcript.feed(chunk);
    }
    transcript.finish();
    let bytes = std::mem::take(&mut *sink.0.lock().unwrap_or_else(|p| p.into_inner()));
    String::from_utf8_lossy(&bytes).into_owned()
}

#[derive(Clone, Default)]
struct SharedSink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for SharedSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(chunks: &[&[u8]]) -> String {
        super::render(chunks.iter().copied())
    }

    #[test]
    fn sanitises_terminal_output() {
        let cases: &[(&[&[u8]], &str)] = &[
            (&[b"plain\r\n"], "plain\n"),
            (&[b"onlcr\r\r\n"], "onlcr\n"),
            (&[b"\x1b[1;31mred\x1b[0m text\n"], "red text\n"),
            (&[b"\x1b]0;window title\x07after\n"], "after\n"),
            (&[b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\n"], "link\n"),
            (&[b"\x1bPq#0;2;0;0;0\x1b\\sixel gone\n"], "sixel gone\n"),
            (&[b"\x1b(Bcharset\n"], "charset\n"),
            (&[b"\x1b[?2004h\x1b[?25lhidden cursor\n"], "hidden cursor\n"),
            (&[b"10%\r50%\r100%\n"], "100%\n"),
            (&[b"typo\x08\x08po\n"], "typo\n"),
            (&[b"bell\x07 and nul\x00\n"], "bell and nul\n"),
            (&[b"\n\n   \nnot blank\n"], "not blank\n"),
            (&[b"trailing spaces   \n"], "trailing spaces\n"),
            (&[b"split \x1b[3", b"1mescape\n"], "split escape\n"),
            (
                &["caf\u{e9} ".as_bytes(), &[0xe2, 0x9c], &[0x93, b'\n']],
                "caf\u{e9} \u{2713}\n",
            ),
            (&[b"no newline at exit"], "no newline at exit\n"),
            (&[b"tab\there\n"], "tab\there\n"),
            // A C1 control assembled from the bytes around a removed escape sequence.
            (&[&[0xc2, 0x1b, b'[', b'0', b'm', 0x9b, b'\n']], "\\u{9b}\n"),
            (
                &["bidi \u{202e}txt".as_bytes(), b"\n"],
                "bidi \\u{202e}txt\n",
            ),
        ];
        for (chunks, expected) in cases {
            assert_eq!(render(chunks), *expected, "{chunks:?}");
        }
    }

    #[test]
    fn very_long_lines_are_cut() {
        let long = vec![b'a'; MAX_LINE_BYTES * 2 + 5];
        let text = render(&[&long]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES);
        assert_eq!(lines[2].len(), 5);
    }
}
