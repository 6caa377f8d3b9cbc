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
    // line feed writes what is on the screen's rows, which cursor moves, tabs and repeats
    // (`CSI n b`) can fill from a few bytes: at most the 40 × 120 cells of the screen.
    let lines = bytes.iter().filter(|byte| **byte == b'\n').count() + 1;
    assert!(
        whole.len() <= 8 * bytes.len() + 40 * 120 * 3 * lines + 1,
        "{} bytes from {}",
        whole.len(),
        bytes.len()
    );
});
