//! The agent's screen as a person sees it, and the transcript made from it.
//!
//! Every byte the agent prints goes through a terminal emulator ([`super::screen`]) the size
//! of the agent's terminal, so cursor movement, erasing and redrawing end up as the text on
//! screen: an interactive TUI that moves the cursor instead of printing spaces still reads
//! "Unable to connect", not "Unabletoconnect".
//!
//! A transcript line is written when a line feed leaves a screen row: the row's text as shown
//! at that moment (joined with the rows it soft-wrapped from, trailing blanks trimmed, blank
//! rows skipped). A row that shows the same text it showed when it was last written is not
//! written again: that is a TUI redrawing in place, which a person does not see as new
//! output. What the cursor's row holds when the agent exits is written last.
//!
//! [`Terminal::screen`] is the current screen as text, for the host's Screen request.
//!
//! Memory: one grid of `rows × cols` cells of 4 bytes (about 19 KiB at 120×40), a second
//! one only while the agent uses the alternate screen, no scrollback, one `u64` per row.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::time::Instant;

use super::protocol::WindowSize;
use super::screen::Emulator;

/// What the host's Screen request returns: the screen as text and what a caller needs to
/// judge whether the agent is ready for input.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScreenText {
    pub cols: u16,
    pub rows: u16,
    /// Zero-based `[row, col]` of the cursor.
    pub cursor: [u16; 2],
    /// Whether the agent switched to the alternate screen (a full-screen TUI).
    pub alternate_screen: bool,
    /// Whether the agent turned on bracketed paste (`ESC [ ? 2004 h`): most interactive
    /// agents do once their input box is ready.
    pub bracketed_paste: bool,
    /// Bytes the agent has printed since it started.
    pub output_bytes: u64,
    /// Milliseconds since the agent last printed anything (since it started, if never).
    pub idle_ms: u64,
    /// Every row, trailing blanks trimmed.
    pub lines: Vec<String>,
}

impl ScreenText {
    /// The last row with text on it: what the agent last said.
    pub fn last_line(&self) -> Option<&str> {
        self.lines
            .iter()
            .rev()
            .map(|line| line.trim())
            .find(|line| !line.is_empty())
    }
}

/// The emulated screen and the transcript writer over it.
pub(super) struct Terminal {
    parser: Emulator,
    sink: Box<dyn Write + Send>,
    failed: bool,
    /// A hash of the text last written from each row; 0 for none.
    written: Vec<u64>,
    output_bytes: u64,
    started: Instant,
    last_output: Option<Instant>,
    /// The start of a UTF-8 sequence that the next output may complete.
    carry: Vec<u8>,
}

/// Appends `bytes` (after `carry`, the unfinished sequence of the last call) to `out` as valid
/// UTF-8: each invalid sequence becomes U+FFFD, and an unfinished one at the end is kept in
/// `carry` for the next call. The terminal emulator then only ever sees valid UTF-8, so how
/// the output was cut into reads cannot change what it shows.
fn valid_utf8(carry: &mut Vec<u8>, bytes: &[u8], out: &mut Vec<u8>) {
    let joined;
    let mut rest: &[u8] = if carry.is_empty() {
        bytes
    } else {
        joined = [std::mem::take(carry).as_slice(), bytes].concat();
        &joined
    };
    loop {
        match std::str::from_utf8(rest) {
            Ok(text) => {
                out.extend_from_slice(text.as_bytes());
                return;
            }
            Err(error) => {
                let (valid, after) = rest.split_at(error.valid_up_to());
                out.extend_from_slice(valid);
                match error.error_len() {
                    Some(length) => {
                        out.extend_from_slice("\u{fffd}".as_bytes());
                        rest = &after[length..];
                    }
                    None => {
                        carry.extend_from_slice(after);
                        return;
                    }
                }
            }
        }
    }
}

fn text_hash(text: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    // 0 means "nothing written"; a real hash of 0 is as good as 1.
    hasher.finish().max(1)
}

impl Terminal {
    pub fn new(sink: Box<dyn Write + Send>, size: WindowSize) -> Self {
        Self {
            parser: Emulator::new(size.rows, size.cols),
            sink,
            failed: false,
            written: vec![0; usize::from(size.rows.max(1))],
            output_bytes: 0,
            started: Instant::now(),
            last_output: None,
            carry: Vec::new(),
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.output_bytes += bytes.len() as u64;
        self.last_output = Some(Instant::now());
        let mut valid = Vec::with_capacity(bytes.len() + 3);
        valid_utf8(&mut self.carry, bytes, &mut valid);
        for piece in valid.split_inclusive(|byte| *byte == b'\n') {
            match piece.split_last() {
                Some((b'\n', body)) => {
                    self.parser.process(body);
                    self.line_feed();
                }
                _ => self.parser.process(piece),
            }
        }
    }

    pub fn resize(&mut self, size: WindowSize) {
        self.parser.set_size(size.rows, size.cols);
        self.written = vec![0; usize::from(size.rows.max(1))];
    }

    /// Writes what the cursor's row holds (the agent's last, unfinished line).
    pub fn finish(&mut self) {
        if !std::mem::take(&mut self.carry).is_empty() {
            // An unfinished sequence at the very end: it never became a character.
            self.parser.process("\u{fffd}".as_bytes());
        }
        let (row, _) = self.parser.screen().cursor_position();
        self.write_row(row);
    }

    /// Whether the agent has bracketed paste turned on.
    pub fn bracketed_paste(&self) -> bool {
        self.parser.screen().bracketed_paste()
    }

    /// When the agent last printed anything.
    pub fn last_output(&self) -> Option<Instant> {
        self.last_output
    }

    pub fn screen(&self) -> ScreenText {
        let screen = self.parser.screen();
        let (rows, cols) = screen.size();
        let (row, col) = screen.cursor_position();
        ScreenText {
            cols,
            rows,
            cursor: [row, col],
            alternate_screen: screen.alternate_screen(),
            bracketed_paste: screen.bracketed_paste(),
            output_bytes: self.output_bytes,
            idle_ms: self
                .last_output
                .unwrap_or(self.started)
                .elapsed()
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
            lines: (0..rows).map(|row| screen.row_text(row)).collect(),
        }
    }

    fn line_feed(&mut self) {
        let (row, _) = self.parser.screen().cursor_position();
        self.write_row(row);
        self.parser.process(b"\n");
        let (after, _) = self.parser.screen().cursor_position();
        if after == row {
            // The screen scrolled: what each row showed moved up one.
            if !self.written.is_empty() {
                self.written.remove(0);
                self.written.push(0);
            }
        }
    }

    fn write_row(&mut self, row: u16) {
        let screen = self.parser.screen();
        let mut first = row;
        while first > 0 && screen.row_wrapped(first - 1) {
            first -= 1;
        }
        let mut line = String::new();
        for part in first..=row {
            line.push_str(&screen.row_text(part));
        }
        let line = line.trim_end();
        let Some(slot) = self.written.get_mut(usize::from(row)) else {
            return;
        };
        let hash = if line.is_empty() { 0 } else { text_hash(line) };
        if hash == *slot {
            return;
        }
        *slot = hash;
        if line.is_empty() || self.failed {
            return;
        }
        // What the emulator kept of agent output is shown, never obeyed: a control that
        // reached a cell (a bidi override, say) is written visibly.
        let line = crate::text::inert(line);
        let written = writeln!(self.sink, "{line}").and_then(|()| self.sink.flush());
        if let Err(error) = written {
            // Keep the agent running; there is nowhere better to report this.
            tracing::warn!(%error, "cannot write the agent transcript; dropping it from now on");
            self.failed = true;
        }
    }
}

/// The transcript lines that `chunks` of raw terminal output become, as one string: what a
/// worker's journal shows for that output (used by tests and the fuzz targets).
pub fn render<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> String {
    let sink = SharedSink::default();
    let mut terminal = Terminal::new(Box::new(sink.clone()), DEFAULT_RENDER_SIZE);
    for chunk in chunks {
        terminal.feed(chunk);
    }
    terminal.finish();
    let bytes = std::mem::take(&mut *sink.0.lock().unwrap_or_else(|p| p.into_inner()));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The screen [`render`] emulates: the PTY host's default.
const DEFAULT_RENDER_SIZE: WindowSize = WindowSize {
    cols: 120,
    rows: 40,
};

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

    const SIZE: WindowSize = WindowSize { cols: 40, rows: 6 };

    fn render(chunks: &[&[u8]]) -> String {
        let sink = SharedSink::default();
        let mut terminal = Terminal::new(Box::new(sink.clone()), SIZE);
        for chunk in chunks {
            terminal.feed(chunk);
        }
        terminal.finish();
        let bytes = sink.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8(bytes).expect("transcript is UTF-8")
    }

    /// Fuzzing found a space lost when an invalid UTF-8 sequence (`e2` then `d`) was split
    /// from what came before it by a chunk boundary.
    #[test]
    fn invalid_utf8_reads_the_same_in_any_chunking() {
        let bytes: &[u8] = &[
            0x01, 0x63, 0xc2, 0x1b, 0x5b, 0x30, 0x9b, 0x6d, 0x66, 0x11, 0x00, 0x00, 0xd1, 0xd1,
            0xd1, 0xd1, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x61, 0xc3, 0xa9, 0x20, 0xe2, 0x64,
            0xd8, 0x9b, 0xf0, 0x74, 0x61, 0x62, 0xd1, 0xd1, 0xd1, 0xd1, 0xd1, 0xd1, 0xd1, 0xd1,
            0xd1, 0xd1, 0x0a,
        ];
        let whole = render(&[bytes]);
        for size in 1..=bytes.len() {
            let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
            assert_eq!(render(&chunks), whole, "chunks of {size}");
        }
        assert!(whole.contains("a\u{e9} "), "the space is kept: {whole:?}");
    }

    #[test]
    fn the_transcript_is_the_text_on_screen() {
        let cases: &[(&[&[u8]], &str)] = &[
            (&[b"plain\r\n"], "plain\n"),
            (&[b"onlcr\r\r\n"], "onlcr\n"),
            (&[b"\x1b[1;31mred\x1b[0m text\r\n"], "red text\n"),
            (&[b"\x1b]0;window title\x07after\r\n"], "after\n"),
            (&[b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\r\n"], "link\n"),
            (&[b"\x1b(Bcharset\r\n"], "charset\n"),
            (
                &[b"\x1b[?2004h\x1b[?25lhidden cursor\r\n"],
                "hidden cursor\n",
            ),
            (&[b"10%\r50%\r100%\r\n"], "100%\n"),
            (&[b"typo\x08\x08po\r\n"], "typo\n"),
            (&[b"bell\x07 and nul\x00\r\n"], "bell and nul\n"),
            (&[b"\r\n\r\n   \r\nnot blank\r\n"], "not blank\n"),
            (&[b"trailing spaces   \r\n"], "trailing spaces\n"),
            (&[b"split \x1b[3", b"1mescape\r\n"], "split escape\n"),
            (
                &[
                    "caf\u{e9} ".as_bytes(),
                    &[0xe2, 0x9c],
                    &[0x93, b'\r', b'\n'],
                ],
                "caf\u{e9} \u{2713}\n",
            ),
            (&[b"no newline at exit"], "no newline at exit\n"),
            // A TUI moves the cursor right instead of printing spaces.
            (
                &[b"Unable\x1b[1Cto\x1b[1Cconnect\x1b[1Cto\x1b[1CAnthropic\x1b[1Cservices\r\n"],
                "Unable to connect to Anthropic services\n",
            ),
            // Absolute positioning on a cleared screen.
            (
                &[b"\x1b[2J\x1b[1;1Hleft\x1b[1;20Hright\r\n"],
                "left               right\n",
            ),
            // A line longer than the screen is wide reads as one line.
            (
                &[b"0123456789012345678901234567890123456789abcdef\r\n"],
                "0123456789012345678901234567890123456789abcdef\n",
            ),
            (&[b"tab\there\r\n"], "tab     here\n"),
            // A C1 control around an escape sequence is obeyed by the emulator as a terminal
            // would, never passed on: nothing of it reaches the transcript.
            (&[&[0xc2, 0x1b, b'[', b'0', b'm', 0x9b, b'\r', b'\n']], ""),
            (
                &["bidi \u{202e}txt".as_bytes(), b"\r\n"],
                "bidi \\u{202e}txt\n",
            ),
        ];
        for (chunks, expected) in cases {
            assert_eq!(render(chunks), *expected, "{chunks:?}");
        }
    }

    #[test]
    fn a_redraw_in_place_is_not_written_again_but_repeated_lines_are() {
        // A TUI redraws its two lines: up two rows, erase, the same text.
        let frame = b"status: ok\r\n> \r\n";
        let redraw = b"\x1b[2A\x1b[2Kstatus: ok\r\n\x1b[2K> \r\n";
        assert_eq!(render(&[frame, redraw, redraw]), "status: ok\n>\n");
        // A changed line is news.
        let changed = b"\x1b[2A\x1b[2Kstatus: busy\r\n\x1b[2K> \r\n";
        assert_eq!(render(&[frame, changed]), "status: ok\n>\nstatus: busy\n");
        // The same line printed again as it scrolls is written each time.
        assert_eq!(
            render(&[b"got:x\r\n".repeat(9).as_slice()]),
            "got:x\n".repeat(9)
        );
    }

    #[test]
    fn the_screen_request_sees_rows_cursor_and_modes() {
        let mut terminal = Terminal::new(Box::new(std::io::sink()), SIZE);
        terminal.feed(b"first\r\n\x1b[?2004h> typed");
        let screen = terminal.screen();
        assert_eq!((screen.cols, screen.rows), (40, 6));
        assert_eq!(screen.cursor, [1, 7]);
        assert!(screen.bracketed_paste);
        assert!(!screen.alternate_screen);
        assert_eq!(screen.lines[0], "first");
        assert_eq!(screen.lines[1], "> typed");
        assert_eq!(screen.last_line(), Some("> typed"));
        assert_eq!(screen.output_bytes, 22);
        terminal.feed(b"\x1b[?2004l\x1b[?1049h");
        let screen = terminal.screen();
        assert!(!screen.bracketed_paste);
        assert!(screen.alternate_screen);
        assert_eq!(screen.last_line(), None);
    }
}
