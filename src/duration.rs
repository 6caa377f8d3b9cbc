//! Durations as users write them: `500ms`, `30s`, `5m`, `1h`, `2d`, and combinations like
//! `1h30m`. One parser for flags and config alike, so every place rejects the same things.

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

/// Parses a duration: one or more of a whole number followed at once by a unit (`ms`, `s`,
/// `m`, `h`, `d`), no spaces inside, such as `500ms`, `30s` or `1h30m`. Nothing looser is
/// accepted (`5 s`, `2 days`, `5us` are refused), so every value prints back as it parses.
pub fn parse(text: &str) -> Result<Duration, String> {
    let problem = |why: &str| {
        format!("invalid duration {text:?}: {why}; write it like 500ms, 30s, 5m, 1h or 1h30m")
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(problem("it is empty"));
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(problem("expected a number"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| problem("the number is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        let Some(&(_, factor)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                problem("a unit is missing")
            } else {
                problem(&format!("unknown unit {unit:?}"))
            });
        };
        rest = &rest[unit_len..];
        total_ms = number
            .checked_mul(factor)
            .and_then(|ms| ms.checked_add(total_ms))
            .ok_or_else(|| problem("it is too large"))?;
    }
    Ok(Duration::from_millis(total_ms))
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

/// The largest size rein accepts: 1024T (1 PiB). Far above any memory limit or output cap,
/// and small enough that no arithmetic on a size can overflow.
pub const MAX_SIZE: u64 = 1 << 50;

/// A byte size as users write it: `512M`, `2G`, `64K`, `64KiB`, `1048576` — binary multiples,
/// as systemd reads `MemoryMax=`.
///
/// The grammar: a number, then optionally `B`, or one of `K`, `M`, `G`, `T` (any case, powers
/// of 1024) followed optionally by `B` or `iB`. At most [`MAX_SIZE`].
pub fn parse_size(text: &str) -> Result<u64, String> {
    let problem = || {
        format!("invalid size {text:?}: write it like 512M, 2G, 64K or a number of bytes, at most 1024T")
    };
    let trimmed = text.trim();
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(problem());
    }
    let number: u64 = trimmed[..digits].parse().map_err(|_| problem())?;
    let (prefix, suffix) = match trimmed[digits..].char_indices().nth(1) {
        Some((at, _)) => trimmed[digits..].split_at(at),
        None => (&trimmed[digits..], ""),
    };
    let factor: u64 = match (prefix, suffix) {
        ("", "") | ("B" | "b", "") => 1,
        (unit, "" | "B" | "b" | "iB" | "ib") => match unit {
            "K" | "k" => 1 << 10,
            "M" | "m" => 1 << 20,
            "G" | "g" => 1 << 30,
            "T" | "t" => 1 << 40,
            _ => return Err(problem()),
        },
        _ => return Err(problem()),
    };
    check_size(number.checked_mul(factor).ok_or_else(problem)?).map_err(|_| problem())
}

/// Refuses sizes above [`MAX_SIZE`] (a size given as a plain number in the config).
pub fn check_size(bytes: u64) -> Result<u64, String> {
    if bytes > MAX_SIZE {
        return Err(format!(
            "invalid size {bytes}: at most {MAX_SIZE} bytes (1024T)"
        ));
    }
    Ok(bytes)
}

/// A CPU quota percentage: `50%` or `150` (more than one core is allowed): a whole number
/// from 1 to 100000, optionally followed by one `%`.
pub fn parse_percent(text: &str) -> Result<u32, String> {
    let trimmed = text.trim();
    let number = trimmed.strip_suffix('%').unwrap_or(trimmed);
    let whole = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
    match number.parse::<u32>() {
        Ok(value) if whole && (1..=100_000).contains(&value) => Ok(value),
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
            ("5 s", None),
            // Only the documented grammar: no spaces, no long unit names, nothing below 1ms
            // (it would print back as something else).
            ("2 days", None),
            ("1h 30min", None),
            ("5us", None),
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

    #[test]
    fn sizes_follow_the_documented_grammar() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("5B", Some(5)),
            ("5b", Some(5)),
            ("64k", Some(64 << 10)),
            ("64KB", Some(64 << 10)),
            ("64KiB", Some(64 << 10)),
            ("1T", Some(1 << 40)),
            ("1024T", Some(MAX_SIZE)),
            (" 2G ", Some(2 << 30)),
            // Found by fuzzing: looser than documented.
            ("5i", None),
            ("64iB", None),
            ("1bb", None),
            ("+5", None),
            ("5KiBB", None),
            ("5Ki", None),
            ("5 K", None),
            ("", None),
            ("K", None),
            // Above the bound, and the value that overflowed `read_capped`.
            ("1025T", None),
            ("18446744073709551615", None),
            ("99999999999999999999", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_size(text).ok(), *expected, "parse_size({text:?})");
        }
        assert!(check_size(MAX_SIZE).is_ok());
        assert!(check_size(MAX_SIZE + 1).is_err());
    }

    #[test]
    fn percentages_follow_the_documented_grammar() {
        let cases: &[(&str, Option<u32>)] = &[
            ("1", Some(1)),
            ("50%", Some(50)),
            (" 100000% ", Some(100_000)),
            // Found by fuzzing: looser than documented.
            ("5%%", None),
            ("+5", None),
            ("+5%", None),
            ("%", None),
            ("100001%", None),
            ("5 %", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_percent(text).ok(),
                *expected,
                "parse_percent({text:?})"
            );
        }
    }
}
