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

/// GSM 03.38's basic character set (the escape code excluded).
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Its extension table: each costs an escape plus the character.
const GSM_EXTENDED: &str = "\u{c}^{}\\[~]|€";

/// Septets `text` needs in GSM-7, or None when it cannot be written in GSM-7.
pub fn gsm_len(text: &str) -> Option<usize> {
    text.chars().try_fold(0usize, |total, c| {
        if GSM_BASIC.contains(c) {
            Some(total + 1)
        } else if GSM_EXTENDED.contains(c) {
            Some(total + 2)
        } else {
            None
        }
    })
}

/// How many SMS segments `text` takes.
pub fn segments(text: &str) -> usize {
    match gsm_len(text) {
        Some(septets) if septets <= 160 => 1,
        Some(septets) => septets.div_ceil(153),
        None => {
            let units = text.encode_utf16().count();
            if units <= 70 {
                1
            } else {
                units.div_ceil(67)
            }
        }
    }
}

/// Runs of whitespace (newlines included) as one space: every character counts in an SMS.
pub fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `head + body + tail` in at most `max_segments`, shortening `body` (with an ellipsis) if
/// needed. Only when head and tail alone are too long is the whole text cut.
pub fn fit(head: &str, body: &str, tail: &str, max_segments: usize) -> String {
    let max_segments = max_segments.max(1);
    let whole = format!("{head}{body}{tail}");
    if segments(&whole) <= max_segments {
        return whole;
    }
    let with_ellipsis = |head: &str, kept: &str, tail: &str| {
        let plain = format!("{head}{kept}{tail}");
        let ellipsis = if gsm_len(&plain).is_some() {
            "..."
        } else {
            "…"
        };
        format!("{head}{kept}{ellipsis}{tail}")
    };
    let chars: Vec<char> = body.chars().collect();
    // No segment holds more than 160 characters: start there and shorten.
    let mut keep = chars.len().min(160 * max_segments);
    loop {
        let kept: String = chars[..keep].iter().collect();
        let candidate = with_ellipsis(head, kept.trim_end(), tail);
        if segments(&candidate) <= max_segments {
            return candidate;
        }
        if keep == 0 {
            break;
        }
        keep -= 1;
    }
    let chars: Vec<char> = whole.chars().collect();
    let mut keep = chars.len().min(160 * max_segments);
    loop {
        let kept: String = chars[..keep].iter().collect();
        let candidate = with_ellipsis("", kept.trim_end(), "");
        if segments(&candidate) <= max_segments || keep == 0 {
            return candidate;
        }
        keep -= 1;
    }
}

/// `[ab3x9k] w1: Merge PR 12? Reply yes/no`.
pub fn ask_sms(ask: &Ask, resent: bool, max_segments: usize) -> String {
    let again = if resent { "(again) " } else { "" };
    let head = format!("[{}] {again}{}: ", ask.id, ask.worker);
    let mut body = collapse(&ask.prompt);
    if let Some(reference) = &ask.reference {
        body.push_str(&format!(" (re: {})", collapse(reference)));
    }
    let tail = if ask.options.is_empty() {
        format!(" Reply: {} <your answer>", ask.id)
    } else {
        format!(" Reply {}", ask.options.join("/"))
    };
    fit(&head, &body, &tail, max_segments)
}

/// `[note] w1: the nightly build is green`.
pub fn note_sms(note: &Note, resent: bool, max_segments: usize) -> String {
    let again = if resent { "(again) " } else { "" };
    fit(
        &format!("[note] {again}{}: ", note.worker),
        &collapse(&note.message),
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
    fn too_long_options_cut_the_whole_text() {
        let long_options: Vec<String> = (0..40).map(|n| format!("option-number-{n}")).collect();
        let options: Vec<&str> = long_options.iter().map(String::as_str).collect();
        let text = ask_sms(&ask("Pick one", &options), false, 2);
        assert!(segments(&text) <= 2, "{text}");
        assert!(text.starts_with("[ab3x9k] w1: Pick one"), "{text}");
    }
}
