//! Agent text made inert for the screen: a prompt, a reference, a transcript line or a note
//! may hold escape sequences, and none of them may move the cursor, change the title or
//! recolour the screen. Every control character becomes a visible symbol instead.
//!
//! [`inert`] is the one function the screen calls for any text it did not write itself.

/// `text` with every control character (C0, DEL, C1) and every bidirectional override shown
/// as a visible symbol, so it prints exactly as the characters it is: ESC becomes `␛`, a
/// newline `␊`, a tab a space.
pub fn inert(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '\t' => shown.push(' '),
            '\u{0}'..='\u{1f}' => {
                // The Control Pictures block has one symbol per C0 character, in order.
                let picture = char::from_u32(0x2400 + character as u32).unwrap_or('\u{fffd}');
                shown.push(picture);
            }
            '\u{7f}' => shown.push('\u{2421}'),
            '\u{80}'..='\u{9f}' => shown.push('\u{fffd}'),
            // Bidirectional embeddings, overrides and isolates reorder what follows them.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' => {
                shown.push('\u{fffd}')
            }
            other => shown.push(other),
        }
    }
    shown
}

/// The lines of `text`, each made inert.
pub fn inert_lines(text: &str) -> Vec<String> {
    text.lines().map(inert).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_symbols() {
        let cases = [
            ("plain text", "plain text"),
            ("\u{1b}[2J\u{1b}[H", "␛[2J␛[H"),
            ("\u{1b}]0;pwned\u{7}", "␛]0;pwned␇"),
            ("a\tb", "a b"),
            ("one\ntwo\r", "one␊two␍"),
            ("\u{9b}31m", "\u{fffd}31m"),
            ("x\u{7f}", "x␡"),
            ("\u{202e}evil", "\u{fffd}evil"),
            ("ünïcødé ✓", "ünïcødé ✓"),
        ];
        for (input, shown) in cases {
            assert_eq!(inert(input), shown, "{input:?}");
        }
        assert!(inert("\u{1b}\u{9b}\u{7}").chars().all(|c| !c.is_control()));
    }
}
