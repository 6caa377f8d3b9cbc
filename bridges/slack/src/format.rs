//! Asks, notes and resolutions as Slack messages (a `text` fallback plus Block Kit blocks).
//!
//! A button's `action_id` is `rein-answer:<ask id>:<index>` and its `value` is
//! `<ask id>:<option>`: the click alone says which ask and which answer, so no state is needed
//! to interpret it. Ask ids never contain `:`, options may.

use rein::bridge::{ask_text, describe_resolution};
use rein::mailbox::{Ask, Resolution};
use rein::notes::Note;
use rein::text::{inert, inert_line};
use serde_json::{json, Value};

/// The prefix of the `action_id` of every answer button.
pub const ACTION_PREFIX: &str = "rein-answer:";

/// Block Kit limits (see Slack's block reference).
const SECTION_TEXT_MAX: usize = 3000;
const BUTTON_TEXT_MAX: usize = 75;
const BUTTON_VALUE_MAX: usize = 2000;
const BUTTONS_MAX: usize = 25;
/// Slack cuts `text` beyond 40,000 characters; asks should never come near.
const TEXT_MAX: usize = 4000;
/// The most of a worker name and of a reference a question shows.
const WORKER_SHOWN_MAX: usize = 100;
const REFERENCE_SHOWN_MAX: usize = 500;

/// Text made safe to show in mrkdwn: control characters rendered visibly
/// ([`rein::text::inert`]), then the three characters Slack's mrkdwn gives a meaning to
/// (`<@U1>` mentions, links) escaped.
pub fn escape(text: &str) -> String {
    inert(text)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Undoes [`escape`]: Slack sends message text escaped this way.
pub fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// `text` cut to at most `max` characters, with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The value a button carries for `option` of `ask`.
pub fn button_value(ask_id: &str, option: &str) -> String {
    format!("{ask_id}:{option}")
}

/// The ask id and option a clicked button carries; None for anything rein did not post.
pub fn parse_button(action_id: &str, value: &str) -> Option<(String, String)> {
    if !action_id.starts_with(ACTION_PREFIX) {
        return None;
    }
    let (id, option) = value.split_once(':')?;
    // A blank option is no answer (`rein answer` refuses one): not a click for rein.
    if rein::store::validate_id("ask id", id).is_err() || option.trim().is_empty() {
        return None;
    }
    Some((id.to_owned(), option.to_owned()))
}

fn mrkdwn(text: &str) -> Value {
    json!({ "type": "mrkdwn", "text": text })
}

/// The ask's question as a section: who asks, the prompt, what it refers to.
fn question_block(ask: &Ask, resent: bool) -> Value {
    let mut text = String::new();
    if resent {
        text.push_str("_(sent again: this may have reached you before)_\n");
    }
    // Worker ids are at most 64 characters, but a hand-written ask file can hold anything:
    // every length here is bounded, so the prompt always has room and nothing underflows.
    text.push_str(&format!(
        "*{}* asks:\n",
        truncate(&escape(&ask.worker), WORKER_SHOWN_MAX)
    ));
    let reference = ask
        .reference
        .as_ref()
        .map(|r| truncate(&format!("\n_re: {}_", escape(r)), REFERENCE_SHOWN_MAX))
        .unwrap_or_default();
    let room = SECTION_TEXT_MAX.saturating_sub(text.chars().count() + reference.chars().count());
    text.push_str(&truncate(&escape(&ask.prompt), room));
    text.push_str(&reference);
    json!({ "type": "section", "text": mrkdwn(&text) })
}

/// Whether every option can be a button that answers it: an empty option (a hand-written
/// ask file) would be a button whose click parse_button refuses.
fn buttons_fit(ask: &Ask) -> bool {
    !ask.options.is_empty()
        && ask.options.len() <= BUTTONS_MAX
        && ask.options.iter().all(|o| {
            !o.trim().is_empty() && button_value(&ask.id, o).chars().count() <= BUTTON_VALUE_MAX
        })
}

/// A new ask: the question, a button per option, and how else to answer.
pub fn ask_message(ask: &Ask, resent: bool) -> (String, Value) {
    let mut blocks = vec![question_block(ask, resent)];
    let how = if buttons_fit(ask) {
        let elements: Vec<Value> = ask
            .options
            .iter()
            .enumerate()
            .map(|(index, option)| {
                json!({
                    "type": "button",
                    "text": { "type": "plain_text", "text": truncate(&inert_line(option), BUTTON_TEXT_MAX), "emoji": false },
                    "action_id": format!("{ACTION_PREFIX}{}:{index}", ask.id),
                    "value": button_value(&ask.id, option),
                })
            })
            .collect();
        blocks.push(json!({ "type": "actions", "block_id": format!("rein-ask-{}", ask.id), "elements": elements }));
        "click an option, or reply in this thread".to_owned()
    } else if ask.options.is_empty() {
        "reply in this thread with your answer".to_owned()
    } else {
        truncate(
            &format!(
                "reply in this thread with one of: {}",
                escape(&ask.options.join(", "))
            ),
            SECTION_TEXT_MAX,
        )
    };
    blocks.push(json!({
        "type": "context",
        "elements": [mrkdwn(&truncate(&format!("ask `{}` · {how}", ask.id), SECTION_TEXT_MAX))],
    }));
    let mut text = escape(&ask_text(ask));
    if resent {
        text = format!("(sent again) {text}");
    }
    (truncate(&text, TEXT_MAX), Value::Array(blocks))
}

/// A resolved ask: the question stays, the buttons give way to who resolved it and how.
pub fn resolved_message(ask: &Ask, resolution: &Resolution) -> (String, Value) {
    let outcome = describe_resolution(resolution);
    let blocks = json!([
        question_block(ask, false),
        { "type": "section", "text": mrkdwn(&truncate(&format!("*{}*", escape(&outcome)), SECTION_TEXT_MAX)) },
        { "type": "context", "elements": [mrkdwn(&format!("ask `{}`", ask.id))] },
    ]);
    let text = escape(&format!(
        "{} asked: {}\n{outcome}",
        inert_line(&ask.worker),
        ask.prompt
    ));
    (truncate(&text, TEXT_MAX), blocks)
}

/// A note from `rein notify` (plain text: nothing to click).
pub fn note_text(note: &Note, resent: bool) -> String {
    let repeat = if resent { "_(sent again)_ " } else { "" };
    truncate(
        &format!(
            "{repeat}*{}*: {}",
            escape(&note.worker),
            escape(&note.message)
        ),
        TEXT_MAX,
    )
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use rein::mailbox::ResolutionKind;

    use super::*;

    fn ask(options: &[&str]) -> Ask {
        Ask {
            version: 1,
            id: "ab3x9k".into(),
            seq: 1,
            worker: "w1".into(),
            prompt: "Merge <PR 12> & deploy?".into(),
            reference: Some("PR 12".into()),
            options: options.iter().map(|o| o.to_string()).collect(),
            created: Utc::now(),
            key: "k".into(),
        }
    }

    #[test]
    fn options_become_buttons_carrying_the_ask() {
        let (text, blocks) = ask_message(&ask(&["yes", "no: not now"]), false);
        assert!(text.contains("[ask:ab3x9k]"), "{text}");
        let buttons = blocks[1]["elements"].as_array().expect("actions block");
        assert_eq!(blocks[1]["type"], "actions");
        assert_eq!(buttons.len(), 2);
        assert_eq!(buttons[1]["value"], "ab3x9k:no: not now");
        let parsed = parse_button(
            buttons[1]["action_id"].as_str().expect("id"),
            buttons[1]["value"].as_str().expect("value"),
        );
        assert_eq!(parsed, Some(("ab3x9k".into(), "no: not now".into())));
        let question = blocks[0]["text"]["text"].as_str().expect("section");
        assert!(
            question.contains("Merge &lt;PR 12&gt; &amp; deploy?"),
            "{question}"
        );
    }

    #[test]
    fn free_text_and_too_many_options_ask_for_a_thread_reply() {
        let (_, blocks) = ask_message(&ask(&[]), true);
        assert!(blocks
            .as_array()
            .expect("blocks")
            .iter()
            .all(|b| b["type"] != "actions"));
        assert!(blocks[0]["text"]["text"]
            .as_str()
            .expect("text")
            .contains("sent again"));
        let many: Vec<String> = (0..30).map(|n| format!("o{n}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let (_, blocks) = ask_message(&ask(&many), false);
        let last = blocks
            .as_array()
            .expect("blocks")
            .last()
            .expect("context")
            .clone();
        assert!(last["elements"][0]["text"]
            .as_str()
            .expect("text")
            .contains("one of: o0, o1"));
    }

    #[test]
    fn long_prompts_and_options_respect_block_limits() {
        let mut long = ask(&["x".repeat(200).as_str()]);
        long.prompt = "y".repeat(10_000);
        let (text, blocks) = ask_message(&long, false);
        assert!(text.chars().count() <= TEXT_MAX);
        assert!(
            blocks[0]["text"]["text"]
                .as_str()
                .expect("text")
                .chars()
                .count()
                <= SECTION_TEXT_MAX
        );
        let button = &blocks[1]["elements"][0];
        assert_eq!(
            button["text"]["text"]
                .as_str()
                .expect("text")
                .chars()
                .count(),
            BUTTON_TEXT_MAX
        );
        assert_eq!(
            button["value"].as_str().expect("value").len(),
            "ab3x9k:".len() + 200
        );
    }

    #[test]
    fn any_worker_name_leaves_the_section_within_its_limit() {
        // Found by fuzzing: from 2,992 characters the room for the prompt underflowed; at
        // 2,991 the section was 3,001 characters.
        for length in [64, 2_990, 2_991, 2_992, 10_000] {
            let mut long = ask(&["yes"]);
            long.worker = "w".repeat(length);
            long.reference = Some("r".repeat(length));
            for resent in [false, true] {
                let (_, blocks) = ask_message(&long, resent);
                let section = blocks[0]["text"]["text"].as_str().expect("text");
                assert!(section.chars().count() <= SECTION_TEXT_MAX, "{length}");
                assert!(section.contains("Merge"), "the prompt keeps room: {length}");
            }
        }
        assert_eq!(truncate("abc", 0), "");
        assert_eq!(truncate("abc", 1), "…");
    }

    #[test]
    fn a_long_option_list_keeps_the_context_within_its_limit() {
        // Found by fuzzing: "ask `ID` · " came on top of a list already cut to 3,000.
        let long: Vec<String> = (0..30).map(|n| format!("{n}{}", "o".repeat(200))).collect();
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        let (_, blocks) = ask_message(&ask(&long), false);
        let context = blocks.as_array().expect("blocks").last().expect("context")["elements"][0]
            ["text"]
            .as_str()
            .expect("text")
            .to_owned();
        assert!(
            context.chars().count() <= SECTION_TEXT_MAX,
            "{}",
            context.len()
        );
        assert!(context.starts_with("ask `ab3x9k` · reply in this thread with one of: 0o"));
    }

    #[test]
    fn an_empty_option_gets_no_button() {
        // Found by fuzzing: a button for "" (or "   ") could never be clicked into an answer.
        for blank in ["", "   "] {
            let (_, blocks) = ask_message(&ask(&["yes", blank]), false);
            assert!(blocks
                .as_array()
                .expect("blocks")
                .iter()
                .all(|b| b["type"] != "actions"));
        }
    }

    #[test]
    fn agent_text_is_shown_inert() {
        let mut spoof = ask(&["yes\u{1b}[8m", "no"]);
        spoof.prompt = "Drop the prod DB?\r\u{1b}[KFix README typo?".into();
        let (text, blocks) = ask_message(&spoof, false);
        assert!(!text.contains(['\u{1b}', '\r']), "{text}");
        let question = blocks[0]["text"]["text"].as_str().expect("text");
        assert!(
            question.contains("Drop the prod DB?\\r\\e[KFix README typo?"),
            "{question}"
        );
        assert_eq!(blocks[1]["elements"][0]["text"]["text"], "yes\\e[8m");
        // The button still carries the option exactly.
        assert_eq!(blocks[1]["elements"][0]["value"], "ab3x9k:yes\u{1b}[8m");
    }

    #[test]
    fn resolution_replaces_the_buttons() {
        let resolution = Resolution {
            version: 1,
            ask: "ab3x9k".into(),
            kind: ResolutionKind::Answered,
            text: Some("yes".into()),
            by: "cli:ana".into(),
            at: Utc::now(),
            reason: None,
        };
        let (text, blocks) = resolved_message(&ask(&["yes", "no"]), &resolution);
        assert!(
            text.contains("answered: yes — by cli:ana via cli"),
            "{text}"
        );
        assert!(blocks
            .as_array()
            .expect("blocks")
            .iter()
            .all(|b| b["type"] != "actions"));
        assert!(blocks[1]["text"]["text"]
            .as_str()
            .expect("text")
            .contains("answered: yes"));
    }

    #[test]
    fn foreign_buttons_are_not_ours() {
        for (action_id, value) in [
            ("other-app", "ab3x9k:yes"),
            ("rein-answer:ab3x9k:0", "no-colon"),
            ("rein-answer:ab3x9k:0", ":yes"),
            ("rein-answer:ab3x9k:0", "ab3x9k:"),
            // Found by fuzzing: an id that is no ask id was passed on.
            ("rein-answer:ab3x9k:0", "%:2"),
            ("rein-answer:ab3x9k:0", "..:yes"),
            ("rein-answer:ab3x9k:0", "AB3X9K:yes"),
        ] {
            assert_eq!(parse_button(action_id, value), None, "{action_id} {value}");
        }
        assert_eq!(unescape("a &lt;b&gt; &amp;amp;"), "a <b> &amp;");
    }
}
