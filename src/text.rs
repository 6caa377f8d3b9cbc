//! Text from agents and strangers, made safe to show a person.
//!
//! A prompt, an answer, a note, a worker's transcript line or a sensor's output can carry
//! terminal controls: `\r` and `ESC [K` that rewrite the line a person is reading (a prompt
//! `Drop the prod DB?\r\e[KFix README typo?` would show only the second question), OSC
//! sequences that retitle the window, C1 controls that some terminals take as ESC, and
//! bidirectional overrides that reorder what is shown. [`inert`] renders every such character
//! visibly instead — `\e`, `\r`, `\x07`, `\u{9b}` — so what a person reads is what was sent.
//! It is the one function every place uses where such text meets a person: the CLI's text
//! output and every bridge's outgoing text. (JSON output needs none: JSON escapes controls.)
//!
//! [`strip_controls`] is for the other direction: text a person sent through a channel
//! (an email body, a text message) before it becomes an answer. Escape sequences are removed
//! whole and other controls dropped, so `ESC ]2;owned BEL ESC [2J yes` answers `yes`.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` is shown as an escape by [`inert`]: C0 controls, DEL, C1 controls, the
/// bidirectional formatting characters and the Unicode line and paragraph separators.
pub fn is_control(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{61c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

/// `text` with every control character rendered visibly, except newlines and tabs, which keep
/// their meaning: for text shown as a block of lines (a prompt under its heading).
pub fn inert(text: &str) -> Cow<'_, str> {
    render(text, true)
}

/// `text` on one line: like [`inert`], and newlines and tabs are rendered as `\n` and `\t`
/// too. For a table cell, a journal line, a tab title.
pub fn inert_line(text: &str) -> Cow<'_, str> {
    render(text, false)
}

fn render(text: &str, keep_lines: bool) -> Cow<'_, str> {
    let kept = |c: char| !is_control(c) || (keep_lines && matches!(c, '\n' | '\t'));
    if text.chars().all(kept) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if kept(c) {
            out.push(c);
            continue;
        }
        match c {
            '\u{1b}' => out.push_str("\\e"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\u{0}'..='\u{1f}' | '\u{7f}' => {
                // Infallible: writing to a String.
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            _ => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// `text` with terminal escape sequences removed whole (CSI `ESC [ … final`, the strings
/// `ESC ]`, `ESC P`, `ESC X`, `ESC ^`, `ESC _` up to BEL or `ESC \`, and their C1 forms) and
/// every other control character dropped, newlines and tabs excepted.
pub fn strip_controls(text: &str) -> String {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Text,
        Escape,
        Intermediate,
        Sequence,
        String,
        StringEscape,
    }
    let mut state = State::Text;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        state = match state {
            State::Text => match c {
                '\u{1b}' => State::Escape,
                '\u{9b}' => State::Sequence,
                '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => State::String,
                '\n' | '\t' => {
                    out.push(c);
                    State::Text
                }
                c if is_control(c) => State::Text,
                c => {
                    out.push(c);
                    State::Text
                }
            },
            State::Escape => match c {
                '[' => State::Sequence,
                ']' | 'P' | 'X' | '^' | '_' => State::String,
                ' '..='/' => State::Intermediate,
                '\u{1b}' => State::Escape,
                _ => State::Text,
            },
            State::Intermediate => match c {
                ' '..='/' => State::Intermediate,
                _ => State::Text,
            },
            State::Sequence => match c {
                '@'..='~' => State::Text,
                '\u{1b}' => State::Escape,
                _ => State::Sequence,
            },
            State::String => match c {
                '\u{7}' | '\u{9c}' => State::Text,
                '\u{1b}' => State::StringEscape,
                _ => State::String,
            },
            State::StringEscape => match c {
                '\\' => State::Text,
                '\u{1b}' => State::StringEscape,
                _ => State::String,
            },
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_rendered_visibly() {
        let cases: &[(&str, &str, &str)] = &[
            // (input, inert, inert_line)
            ("plain text", "plain text", "plain text"),
            ("", "", ""),
            (
                "Drop the prod DB?\r\u{1b}[KFix README typo?",
                "Drop the prod DB?\\r\\e[KFix README typo?",
                "Drop the prod DB?\\r\\e[KFix README typo?",
            ),
            (
                "\u{1b}]2;owned\u{7}\u{1b}[2J yes",
                "\\e]2;owned\\x07\\e[2J yes",
                "\\e]2;owned\\x07\\e[2J yes",
            ),
            (
                "two\nlines\tand a tab",
                "two\nlines\tand a tab",
                "two\\nlines\\tand a tab",
            ),
            (
                "nul\u{0} del\u{7f}",
                "nul\\x00 del\\x7f",
                "nul\\x00 del\\x7f",
            ),
            ("csi \u{9b}31m", "csi \\u{9b}31m", "csi \\u{9b}31m"),
            (
                "rlo \u{202e}txt.exe",
                "rlo \\u{202e}txt.exe",
                "rlo \\u{202e}txt.exe",
            ),
            ("ls \u{2028}", "ls \\u{2028}", "ls \\u{2028}"),
            ("café ✓ 😀 \\e", "café ✓ 😀 \\e", "café ✓ 😀 \\e"),
        ];
        for (input, block, line) in cases {
            assert_eq!(inert(input), *block, "inert({input:?})");
            assert_eq!(inert_line(input), *line, "inert_line({input:?})");
            // Rendering twice changes nothing more.
            assert_eq!(inert(&inert(input)), *block);
            assert_eq!(inert_line(&inert_line(input)), *line);
        }
        assert!(matches!(inert("no controls"), Cow::Borrowed(_)));
    }

    #[test]
    fn escape_sequences_are_stripped_whole() {
        let cases: &[(&str, &str)] = &[
            ("\u{1b}]2;owned\u{7}\u{1b}[2J yes", " yes"),
            (
                "a\u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\b",
                "alinkb",
            ),
            ("\u{9b}31mred\u{9b}0m", "red"),
            ("\u{9d}0;title\u{9c}after", "after"),
            ("\u{1b}(Bcharset", "charset"),
            ("bell\u{7} cr\r nul\u{0}", "bell cr nul"),
            ("keep\nlines\tand tabs", "keep\nlines\tand tabs"),
            ("\u{202e}reversed", "reversed"),
            ("unterminated \u{1b}[", "unterminated "),
        ];
        for (input, expected) in cases {
            assert_eq!(strip_controls(input), *expected, "{input:?}");
        }
    }
}
