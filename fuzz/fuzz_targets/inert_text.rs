//! `rein::text`: what `inert` and `inert_line` render holds no control (but line breaks and
//! tabs in a block), renders again to itself, leaves text without controls unchanged, grows
//! at most eightfold, and reads back to the original (for text without backslashes);
//! `strip_controls` leaves no control behind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rein::text::{inert, inert_line, is_control, strip_controls};

#[path = "common/mod.rs"]
mod common;

/// Undoes the rendering: `\e`, `\r`, `\n`, `\t`, `\xHH`, `\u{H…}`.
fn read_back(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'e' => out.push('\u{1b}'),
            'r' => out.push('\r'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            'u' => {
                if chars.next()? != '{' {
                    return None;
                }
                let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let block = inert(text);
    let line = inert_line(text);
    common::assert_inert("inert", &block);
    common::assert_inert_line("inert_line", &line);
    assert_eq!(inert(&block), block);
    assert_eq!(inert_line(&line), line);
    assert!(line.len() <= 8 * text.len());
    if !text.chars().any(is_control) {
        assert_eq!(block, text);
        assert_eq!(line, text);
    }
    if !text.contains('\\') {
        assert_eq!(read_back(&line).as_deref(), Some(text), "{line:?}");
        assert_eq!(read_back(&block).as_deref(), Some(text), "{block:?}");
    }
    let stripped = strip_controls(text);
    common::assert_inert("strip_controls", &stripped);
    assert!(stripped.len() <= text.len());
    if !text.chars().any(is_control) {
        assert_eq!(stripped, text);
    }
});
