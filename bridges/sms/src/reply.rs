//! What a text message answers: `ab3x9k yes`, `[ab3x9k] yes` and `[ask:ab3x9k] yes` name the
//! ask; a bare `yes` names none, and the engine picks the sender's only pending ask.
//!
//! A first word that looks like an ask code (six characters of the id alphabet, any case:
//! phones capitalise the first letter) is taken as one if it holds a digit or names an
//! existing ask: plenty of English words ("answer", "thanks") are spelt in that alphabet.
//! When the code stands alone the answer is empty, so the engine refuses it rather than
//! answering a free-text ask with the code.

use rein::bridge::Target;

/// Whole-message keywords Twilio acts on itself (opt-out, opt-in help): never answers.
const TWILIO_KEYWORDS: &[&str] = &[
    "stop",
    "stopall",
    "unsubscribe",
    "cancel",
    "end",
    "quit",
    "help",
    "info",
    "start",
    "unstop",
];

/// Tells an ask code from a word that merely looks like one.
pub trait KnownAsks: Send + Sync + 'static {
    /// Whether an ask with this id exists (pending, resolved or archived).
    fn exists(&self, id: &str) -> bool;
}

impl KnownAsks for rein::mailbox::Mailbox {
    fn exists(&self, id: &str) -> bool {
        self.get(id).is_ok()
    }
}

/// No mailbox at hand: only codes with a digit count as codes.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMailbox;

impl KnownAsks for NoMailbox {
    fn exists(&self, _: &str) -> bool {
        false
    }
}

fn as_code(word: &str) -> Option<String> {
    rein::bridge::as_ask_id(word)
}

/// The id inside `[ab3x9k]` or `[ask:ab3x9k]`, with the rest of the message.
fn bracketed(text: &str) -> Option<(String, &str)> {
    rein::bridge::leading_ask_token(text)
}

fn answer(rest: &str) -> String {
    rest.trim_start_matches(|c: char| c.is_whitespace() || matches!(c, ':' | ',' | '-' | '.'))
        .trim()
        .to_owned()
}

/// Which ask `body` answers and with what; None for Twilio's own keywords and empty texts.
pub fn parse_reply(body: &str, asks: &dyn KnownAsks) -> Option<(Target, String)> {
    let body = body.trim();
    if body.is_empty() || TWILIO_KEYWORDS.contains(&body.to_lowercase().as_str()) {
        return None;
    }
    if let Some((id, rest)) = bracketed(body) {
        return Some((Target::Ask(id), answer(rest)));
    }
    let end = body
        .find(|c: char| c.is_whitespace() || matches!(c, ':' | ','))
        .unwrap_or(body.len());
    if let Some(code) = as_code(&body[..end]) {
        if code.chars().any(|c| c.is_ascii_digit()) || asks.exists(&code) {
            return Some((Target::Ask(code), answer(&body[end..])));
        }
    }
    Some((Target::Unspecified, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Known(&'static [&'static str]);

    impl KnownAsks for Known {
        fn exists(&self, id: &str) -> bool {
            self.0.contains(&id)
        }
    }

    #[test]
    fn replies_name_their_ask_or_none() {
        let ask = |id: &str| Target::Ask(id.into());
        let table: &[(&str, Option<(Target, &str)>)] = &[
            ("ab3x9k yes", Some((ask("ab3x9k"), "yes"))),
            ("Ab3x9k Yes", Some((ask("ab3x9k"), "Yes"))),
            ("[ab3x9k] yes", Some((ask("ab3x9k"), "yes"))),
            ("[ab3x9k]yes", Some((ask("ab3x9k"), "yes"))),
            ("[ask:ab3x9k] no", Some((ask("ab3x9k"), "no"))),
            (
                "ab3x9k: release 1.2 first",
                Some((ask("ab3x9k"), "release 1.2 first")),
            ),
            ("ab3x9k, no", Some((ask("ab3x9k"), "no"))),
            ("  ab3x9k   ship it  \n", Some((ask("ab3x9k"), "ship it"))),
            ("ab3x9k", Some((ask("ab3x9k"), ""))),
            ("ab3x9k cancel", Some((ask("ab3x9k"), "cancel"))),
            ("Bcdefg ok", Some((ask("bcdefg"), "ok"))),
            ("answer 12", Some((Target::Unspecified, "answer 12"))),
            ("thanks", Some((Target::Unspecified, "thanks"))),
            ("[answer] 12", Some((ask("answer"), "12"))),
            ("yes", Some((Target::Unspecified, "yes"))),
            ("Yes please", Some((Target::Unspecified, "Yes please"))),
            ("merge it now", Some((Target::Unspecified, "merge it now"))),
            ("release 1.2", Some((Target::Unspecified, "release 1.2"))),
            // "l", "o", "0" and "1" are not in the alphabet: not codes.
            ("hello1 yes", Some((Target::Unspecified, "hello1 yes"))),
            ("abc yes", Some((Target::Unspecified, "abc yes"))),
            (
                "[not an id!] yes",
                Some((Target::Unspecified, "[not an id!] yes")),
            ),
            ("STOP", None),
            ("help", None),
            ("  ", None),
        ];
        for (body, expected) in table {
            let got = parse_reply(body, &Known(&["bcdefg"]));
            let expected = expected.as_ref().map(|(t, a)| (t.clone(), a.to_string()));
            assert_eq!(got, expected, "{body:?}");
        }
    }
}
