//! What the bridge texts, sized in SMS segments.
//!
//! A message in the GSM-7 alphabet fits 160 characters in one segment, or 153 per segment
//! when split (the rest carries the reassembly header); the characters `^{}\[~]|€` take two.
//! One character outside GSM-7 (an emoji, curly quotes) turns the whole message into UCS-2:
//! 70 UTF-16 units in one segment, 67 per segment when split. Asks put their short code
//! first, so it survives any cut, and the prompt is what gets shortened.

use rein::bridge::describe_resolution;
use rein::mailbox::{Ask, Resolution};
use rein::notes::Note;
use rein::text::{inert, inert_line};

/// GSM 03.38's basic character set (the escape code excluded).
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Its extension table: each costs an escape plus the character.
const GSM_EXTENDED: &str = "\u{c}^{}\\[~]|€";

/// Septets `text` needs in GSM-7, or None when it cannot be written in GSM-7.
pub fn gsm_len(text: &str) -> Option<usize> {
    text.chars()
        .try_fold(0usize, |total, c| Some(total + gsm_septets(c)?))
}

fn gsm_septets(c: char) -> Option<usize> {
    // Printable ASCII first, without searching the tables: most text is ASCII.
    match c {
        '^' | '{' | '}' | '\\' | '[' | '~' | ']' | '|' => return Some(2),
        '`' => return None,
        ' '..='~' | '\n' | '\r' => return Some(1),
        _ => {}
    }
    if GSM_BASIC.contains(c) {
        Some(1)
    } else if GSM_EXTENDED.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// What a text costs in both encodings; costs add up, so a candidate cut is measured from
/// its parts without measuring the whole text again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cost {
    /// GSM-7 septets, or None when some character needs UCS-2.
    septets: Option<usize>,
    /// UTF-16 code units.
    units: usize,
}

impl Cost {
    const ZERO: Cost = Cost {
        septets: Some(0),
        units: 0,
    };

    fn of(text: &str) -> Cost {
        text.chars()
            .fold(Cost::ZERO, |total, c| total.plus(Cost::of_char(c)))
    }

    fn of_char(c: char) -> Cost {
        Cost {
            septets: gsm_septets(c),
            units: c.len_utf16(),
        }
    }

    fn plus(self, other: Cost) -> Cost {
        Cost {
            septets: self
                .septets
                .zip(other.septets)
                .map(|(a, b)| a.saturating_add(b)),
            units: self.units.saturating_add(other.units),
        }
    }

    fn segments(self) -> usize {
        match self.septets {
            Some(septets) if septets <= 160 => 1,
            Some(septets) => septets.div_ceil(153),
            None if self.units <= 70 => 1,
            None => self.units.div_ceil(67),
        }
    }
}

/// How many SMS segments `text` takes.
pub fn segments(text: &str) -> usize {
    Cost::of(text).segments()
}

/// Runs of whitespace (newlines included) as one space: every character counts in an SMS.
pub fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The longest cut of `chars` (trailing whitespace trimmed) such that
/// `head + cut + ellipsis + tail` fits in `max_segments`, with that text; None when even an
/// empty cut does not fit. Linear in the input: the cost of every prefix is a running sum,
/// and only the winner is assembled.
fn longest_fit(head: &str, chars: &[char], tail: &str, max_segments: usize) -> Option<String> {
    let around = Cost::of(head).plus(Cost::of(tail));
    // No segment holds more than 160 characters: nothing longer can fit.
    let longest = chars.len().min(160usize.saturating_mul(max_segments));
    // prefix[k]: the cost of chars[..k]; trimmed[k]: the length of chars[..k].trim_end().
    let mut prefix = Vec::with_capacity(longest + 1);
    let mut trimmed = Vec::with_capacity(longest + 1);
    prefix.push(Cost::ZERO);
    trimmed.push(0);
    for (index, &c) in chars[..longest].iter().enumerate() {
        prefix.push(prefix[index].plus(Cost::of_char(c)));
        trimmed.push(if c.is_whitespace() {
            trimmed[index]
        } else {
            index + 1
        });
    }
    (0..=longest).rev().find_map(|keep| {
        let kept = trimmed[keep];
        let plain = around.plus(prefix[kept]);
        // A GSM-7 text keeps a GSM-7 ellipsis; a UCS-2 one can afford the real one.
        let ellipsis = if plain.septets.is_some() {
            "..."
        } else {
            "…"
        };
        if plain.plus(Cost::of(ellipsis)).segments() > max_segments {
            return None;
        }
        let mut text = String::with_capacity(head.len() + kept * 4 + 3 + tail.len());
        text.push_str(head);
        text.extend(&chars[..kept]);
        text.push_str(ellipsis);
        text.push_str(tail);
        Some(text)
    })
}

/// `head + body + tail` in at most `max_segments`, shortening `body` (with an ellipsis) if
/// needed. Only when head and tail alone are too long is the whole text cut. Time and memory
/// are linear in the input, whatever its size.
pub fn fit(head: &str, body: &str, tail: &str, max_segments: usize) -> String {
    let max_segments = max_segments.max(1);
    let whole = Cost::of(head).plus(Cost::of(body)).plus(Cost::of(tail));
    if whole.segments() <= max_segments {
        return format!("{head}{body}{tail}");
    }
    let body_chars: Vec<char> = body.chars().collect();
    if let Some(text) = longest_fit(head, &body_chars, tail, max_segments) {
        return text;
    }
    let whole_chars: Vec<char> = head
        .chars()
        .chain(body.chars())
        .chain(tail.chars())
        .collect();
    // An empty cut plus an ellipsis always fits one segment, so this finds one.
    longest_fit("", &whole_chars, "", max_segments).unwrap_or_default()
}

/// `[ab3x9k] w1: Merge PR 12? Reply yes/no`.
pub fn ask_sms(ask: &Ask, resent: bool, max_segments: usize) -> String {
    let again = if resent { "(again) " } else { "" };
    let head = format!("[{}] {again}{}: ", ask.id, inert_line(&ask.worker));
    let mut body = collapse(&inert(&ask.prompt));
    if let Some(reference) = &ask.reference {
        body.push_str(&format!(" (re: {})", collapse(&inert(reference))));
    }
    let tail = if ask.options.is_empty() {
        format!(" Reply: {} <your answer>", ask.id)
    } else {
        format!(" Reply {}", inert_line(&ask.options.join("/")))
    };
    fit(&head, &body, &tail, max_segments)
}

/// `[note] w1: the nightly build is green`.
pub fn note_sms(note: &Note, resent: bool, max_segments: usize) -> String {
    let again = if resent { "(again) " } else { "" };
    fit(
        &format!("[note] {again}{}: ", inert_line(&note.worker)),
        &collapse(&inert(&note.message)),
        "",
        max_segments,
    )
}

/// `[ab3x9k] answered: yes — by slack:U1 via slack`.
pub fn resolution_sms(ask: &Ask, resolution: &Resolution) -> String {
    fit(
        &format!("[{}] ", ask.id),
        &describe_resolution(resolution),
        "",
        1,
    )
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn ask(prompt: &str, options: &[&str]) -> Ask {
        Ask {
            version: 1,
            id: "ab3x9k".into(),
            seq: 1,
            worker: "w1".into(),
            prompt: prompt.into(),
            reference: None,
            options: options.iter().map(|o| o.to_string()).collect(),
            created: Utc::now(),
            key: "k".into(),
        }
    }

    #[test]
    fn segments_follow_gsm_and_ucs2_rules() {
        for (text, expected) in [
            (String::new(), 1),
            ("a".repeat(160), 1),
            ("a".repeat(161), 2),
            ("a".repeat(306), 2),
            ("a".repeat(307), 3),
            ("{".repeat(80), 1),
            ("{".repeat(81), 2),
            ("é".repeat(160), 1),
            ("€".repeat(81), 2),
            ("✓".repeat(70), 1),
            ("✓".repeat(71), 2),
            ("✓".repeat(134), 2),
            ("✓".repeat(135), 3),
            (format!("{}✓", "a".repeat(69)), 1),
            (format!("{}✓", "a".repeat(70)), 2),
            ("😀".repeat(35), 1),
            ("😀".repeat(36), 2),
        ] {
            assert_eq!(
                segments(&text),
                expected,
                "{} chars of {:?}",
                text.chars().count(),
                text.chars().next()
            );
        }
    }

    #[test]
    fn a_short_ask_is_one_segment_code_first() {
        let text = ask_sms(&ask("Merge PR 12?", &["yes", "no"]), false, 2);
        assert_eq!(text, "[ab3x9k] w1: Merge PR 12? Reply yes/no");
        let text = ask_sms(&ask("Which  branch\nname?", &[]), true, 2);
        assert_eq!(
            text,
            "[ab3x9k] (again) w1: Which branch name? Reply: ab3x9k <your answer>"
        );
    }

    #[test]
    fn a_long_prompt_is_cut_to_fit_keeping_code_and_options() {
        for (prompt, max) in [
            ("word ".repeat(200), 2),
            ("word ".repeat(200), 1),
            ("mot “cité” ".repeat(100), 2),
            ("x".repeat(5000), 3),
        ] {
            let text = ask_sms(&ask(&prompt, &["yes", "no"]), false, max);
            assert!(segments(&text) <= max, "{max}: {text}");
            assert!(text.starts_with("[ab3x9k] w1: "), "{text}");
            assert!(
                text.ends_with("... Reply yes/no") || text.ends_with("… Reply yes/no"),
                "{text}"
            );
            // Cut no more than needed: one more segment's worth would not have fitted.
            assert!(segments(&text) == max, "{max}: {text}");
        }
        let gsm = ask_sms(&ask(&"word ".repeat(200), &["yes"]), false, 2);
        assert!(
            gsm.contains("...") && gsm_len(&gsm).is_some(),
            "a GSM text keeps a GSM ellipsis"
        );
    }

    #[test]
    fn the_ascii_shortcut_agrees_with_the_tables() {
        for c in (0..0x2600u32).filter_map(char::from_u32) {
            let expected = if GSM_BASIC.contains(c) {
                Some(1)
            } else if GSM_EXTENDED.contains(c) {
                Some(2)
            } else {
                None
            };
            assert_eq!(gsm_septets(c), expected, "{c:?}");
        }
    }

    #[test]
    fn fitting_is_linear_in_the_input() {
        // Found by fuzzing: ~1 MB of options took 17 s (2 segments) or 88 s (10): every
        // shorter cut re-measured the whole text.
        let options: Vec<String> = (0..115_000).map(|n| format!("opt{n:06}")).collect();
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        let long = ask("Pick one", &options);
        assert!(long.options.join("/").len() > 1_000_000);
        for max in [1, 2, 10] {
            let start = std::time::Instant::now();
            let text = ask_sms(&long, false, max);
            let took = start.elapsed();
            eprintln!("fitting 1 MB of options into {max} segments: {took:?}");
            assert!(segments(&text) <= max, "{max}: {text}");
            assert!(text.starts_with("[ab3x9k] w1: Pick one"), "{text}");
            // Milliseconds in a release build, well under a second in a debug build; the
            // bound is generous for a busy machine and still far below quadratic.
            assert!(
                took < std::time::Duration::from_secs(5),
                "{max} segments: {took:?}"
            );
        }
    }

    #[test]
    fn agent_text_is_sent_inert() {
        let text = ask_sms(
            &ask(
                "Drop the prod DB?\r\u{1b}[KFix README typo?",
                &["yes\u{9b}", "no"],
            ),
            false,
            3,
        );
        assert_eq!(
            text,
            "[ab3x9k] w1: Drop the prod DB?\\r\\e[KFix README typo? Reply yes\\u{9b}/no"
        );
    }

    #[test]
    fn too_long_options_cut_the_whole_text() {
        let long_options: Vec<String> = (0..40).map(|n| format!("option-number-{n}")).collect();
        let options: Vec<&str> = long_options.iter().map(String::as_str).collect();
        let text = ask_sms(&ask("Pick one", &options), false, 2);
        assert!(segments(&text) <= 2, "{text}");
        assert!(text.starts_with("[ab3x9k] w1: Pick one"), "{text}");
    }
}
