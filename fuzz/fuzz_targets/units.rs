//! Durations, sizes and CPU percentages: only the documented grammar is accepted, sizes stay
//! within their bound, and every value prints and parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rein::duration::{self, parse_percent, parse_size, Span, MAX_SIZE};

/// `(digits unit)+` with unit one of ms, s, m, h, d.
fn documented_duration(text: &str) -> bool {
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ms", "s", "m", "h", "d"].into_iter().find(|unit| {
            rest.starts_with(unit)
                && !rest[unit.len()..].starts_with(|c: char| c.is_ascii_alphabetic())
        }) else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

/// digits, then nothing, `B`, or one of K M G T (any case) followed by nothing, `B` or `iB`.
fn documented_size(text: &str) -> bool {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let unit = &text[digits..];
    let mut prefixes = ["K", "M", "G", "T", "k", "m", "g", "t"].into_iter();
    matches!(unit, "" | "B" | "b")
        || prefixes.any(|p| {
            unit.strip_prefix(p)
                .is_some_and(|rest| matches!(rest, "" | "B" | "b" | "iB" | "ib"))
        })
}

/// digits, then at most one `%`.
fn documented_percent(text: &str) -> bool {
    let number = text.strip_suffix('%').unwrap_or(text);
    !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = duration::parse(text) {
        assert!(documented_duration(text.trim()), "{text:?}");
        let printed = Span(parsed).to_string();
        assert_eq!(
            duration::parse(&printed),
            Ok(parsed),
            "{text:?} printed as {printed:?}"
        );
    }
    if let Ok(bytes) = parse_size(text) {
        assert!(bytes <= MAX_SIZE, "{text:?} is {bytes}");
        assert!(documented_size(text.trim()), "{text:?}");
        assert_eq!(parse_size(&bytes.to_string()), Ok(bytes));
    }
    if let Ok(percent) = parse_percent(text) {
        assert!((1..=100_000).contains(&percent), "{text:?}");
        assert!(documented_percent(text.trim()), "{text:?}");
        assert_eq!(parse_percent(&format!("{percent}%")), Ok(percent));
    }
});
