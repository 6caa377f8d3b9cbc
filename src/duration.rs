//! Durations as users write them: `500ms`, `30s`, `5m`, `1h`, `2d`, and combinations like
//! `1h30m`. One parser for flags and config alike, so every place rejects the same things:
//! `humantime` parses durations and `parse-size` sizes; rein adds its own error wording.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration parsed from the user's notation; it prints back in the same notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

const UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Parses a duration with `humantime` (`500ms`, `30s`, `5m`, `1h30m`, `2 days`…), with rein's
/// own wording for mistakes.
pub fn parse(text: &str) -> Result<Duration, String> {
    let problem = |why: &str| {
        format!("invalid duration {text:?}: {why}; write it like 500ms, 30s, 5m, 1h or 1h30m")
    };
    humantime::parse_duration(text.trim()).map_err(|error| match error {
        humantime::DurationError::Empty => problem("it is empty"),
        humantime::DurationError::NumberExpected(_)
        | humantime::DurationError::InvalidCharacter(_) => problem("expected a number"),
        humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
            problem("a unit is missing")
        }
        humantime::DurationError::UnknownUnit { unit, .. } => {
            problem(&format!("unknown unit {unit:?}"))
        }
        humantime::DurationError::NumberOverflow => problem("it is too large"),
    })
}

impl std::str::FromStr for Span {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse(text).map(Span)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis() as u64;
        if ms == 0 {
            return write!(f, "0s");
        }
        for &(name, factor) in UNITS.iter().rev() {
            let count = ms / factor;
            if count > 0 {
                write!(f, "{count}{name}")?;
                ms -= count * factor;
            }
        }
        Ok(())
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A byte size as users write it: `512M`, `2G`, `64K`, `1048576` — binary multiples, as
/// systemd reads `MemoryMax=` (parsed by `parse-size`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(text.trim())
        .map_err(|_| {
            format!("invalid size {text:?}: write it like 512M, 2G, 64K or a number of bytes")
        })
}

/// A CPU quota percentage: `50%` or `150` (more than one core is allowed).
pub fn parse_percent(text: &str) -> Result<u32, String> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<u32>() {
        Ok(value) if (1..=100_000).contains(&value) => Ok(value),
        _ => Err(format!(
            "invalid CPU quota {text:?}: write a whole percentage from 1% to 100000%, like 50% or 200%"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("500ms", Some(500)),
            ("30s", Some(30_000)),
            ("5m", Some(300_000)),
            ("1h", Some(3_600_000)),
            ("1h30m", Some(5_400_000)),
            ("2d", Some(172_800_000)),
            ("0s", Some(0)),
            ("", None),
            ("5", None),
            ("s", None),
            ("5x", None),
            ("-5s", None),
            // humantime's grammar: a space between number and unit is allowed, and so are
            // longer unit names.
            ("5 s", Some(5_000)),
            ("2 days", Some(172_800_000)),
            ("1h 30min", Some(5_400_000)),
            ("99999999999999999999s", None),
        ];
        for (text, expected) in cases {
            let got = parse(text).ok().map(|d| d.as_millis() as u64);
            assert_eq!(got, *expected, "parsing {text:?}");
        }
    }

    #[test]
    fn durations_print_back() {
        for text in ["500ms", "30s", "5m", "1h", "1h30m", "1m500ms"] {
            let span: Span = text.parse().expect("valid");
            assert_eq!(span.to_string(), text);
        }
    }

    #[test]
    fn sizes_and_percentages() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5Q").is_err());
        assert_eq!(parse_percent("50%"), Ok(50));
        assert_eq!(parse_percent("200"), Ok(200));
        assert!(parse_percent("0%").is_err());
        assert!(parse_percent("half").is_err());
    }
}
