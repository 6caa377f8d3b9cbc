//! Agent text made inert for the screen: a prompt, a reference, a transcript line or a note
//! may hold escape sequences, and none of them may move the cursor, change the title or
//! recolour the screen.
//!
//! The screen uses rein's one rendering of agent text ([`crate::text`]), on one line per cell.

/// `text` on one line with every control character shown visibly (`\e`, `\r`, `\n`, …).
pub fn inert(text: &str) -> String {
    crate::text::inert_line(text).into_owned()
}

/// The lines of `text`, each made inert.
pub fn inert_lines(text: &str) -> Vec<String> {
    text.lines().map(inert).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_on_screen_is_a_control_character() {
        for input in [
            "\u{1b}[2J\u{1b}[H",
            "\u{1b}]0;pwned\u{7}",
            "one\ntwo\r",
            "\u{9b}31m",
        ] {
            let shown = inert(input);
            assert!(
                shown.chars().all(|c| !c.is_control()),
                "{input:?} -> {shown:?}"
            );
        }
        assert_eq!(inert("\u{1b}[2J"), "\\e[2J");
    }
}
