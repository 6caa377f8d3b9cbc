//! A worker's transcript: the same lines in any chunking, every line inert (no control but
//! a tab), none empty, and output linear in the input (plus at most a screen per line). The
//! first input byte picks a chunk size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rein::worker::pty::render_transcript;

#[path = "common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let whole = render_transcript([bytes]);
    assert_eq!(
        render_transcript(bytes.chunks(usize::from(chunk % 32) + 1)),
        whole
    );
    for line in whole.lines() {
        assert!(!line.trim().is_empty(), "an empty line in {whole:?}");
        assert!(!line.contains('\n'));
        common::assert_inert("a transcript line", line);
    }
    // A byte becomes at most a `\u{9b}` (7 bytes) or a U+FFFD (3); on top of that, each
    // line feed writes what is on the screen's rows (at most 4 bytes a cell), which cursor
    // moves and tabs can fill from a few bytes: at most the 40 × 120 cells of the screen.
    // A repeat (`CSI n b`) writes n cells, and past the bottom they scroll into the
    // transcript as on any terminal. Its count can be spelled across bytes the parser
    // skips (`ESC [ 40 \xff 09 b` is 4009), so the bound allows the most a count can be,
    // 65,535, for every `b`.
    let lines = bytes.iter().filter(|byte| **byte == b'\n').count() + 1;
    let repeats = bytes.iter().filter(|byte| **byte == b'b').count();
    assert!(
        whole.len() <= 8 * bytes.len() + 4 * 65_535 * repeats + 40 * 120 * 4 * lines + 1,
        "{} bytes from {}",
        whole.len(),
        bytes.len()
    );
});
