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
    // line feed writes what is on the screen's rows, which cursor moves and tabs can fill
    // from a few bytes: at most the 40 × 120 cells of the screen. A repeat (`CSI n b`)
    // writes n cells, and past the bottom they scroll into the transcript as on any
    // terminal, so the bound counts every number the input gives (each at most 65,535).
    let lines = bytes.iter().filter(|byte| **byte == b'\n').count() + 1;
    let numbers: usize = bytes
        .split(|byte| !byte.is_ascii_digit())
        .filter(|digits| !digits.is_empty())
        .map(|digits| {
            digits
                .iter()
                .try_fold(0usize, |n, d| {
                    n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
                })
                .unwrap_or(usize::MAX)
                .min(65_535)
        })
        .sum();
    assert!(
        whole.len() <= 8 * bytes.len() + 3 * numbers + 40 * 120 * 3 * lines + 1,
        "{} bytes from {}",
        whole.len(),
        bytes.len()
    );
});
