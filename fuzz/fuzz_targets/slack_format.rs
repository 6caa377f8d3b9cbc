//! Asks, resolutions and notes as Slack messages, from asks as a hand-written file could
//! hold them: every Block Kit limit holds, what people read is inert, and every button
//! carries back exactly its ask and option. Input: JSON (see common::Input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rein_bridge_slack::format::{ask_message, note_text, parse_button, resolved_message};
use serde_json::Value;

#[path = "common/mod.rs"]
mod common;
use common::{assert_inert, Input};

fn texts(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("text", Value::String(text)) => out.push(text.clone()),
                    _ => texts(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| texts(item, out)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let ask = input.ask();
    let (text, blocks) = ask_message(&ask, input.resent);
    assert!(text.chars().count() <= 4000);
    assert_inert("message text", &text);
    let section = blocks[0]["text"]["text"]
        .as_str()
        .expect("a question section");
    assert!(
        section.chars().count() <= 3000,
        "{} characters",
        section.chars().count()
    );
    let mut shown = Vec::new();
    texts(&blocks, &mut shown);
    for text in &shown {
        assert_inert("block text", text);
        assert!(text.chars().count() <= 3000);
    }
    for block in blocks.as_array().expect("blocks") {
        if block["type"] == "actions" {
            let buttons = block["elements"].as_array().expect("buttons");
            assert!(buttons.len() <= 25);
            for (index, button) in buttons.iter().enumerate() {
                assert!(
                    button["text"]["text"]
                        .as_str()
                        .expect("label")
                        .chars()
                        .count()
                        <= 75
                );
                let value = button["value"].as_str().expect("value");
                assert!(value.chars().count() <= 2000);
                let clicked = parse_button(button["action_id"].as_str().expect("id"), value);
                assert_eq!(clicked, Some((ask.id.clone(), ask.options[index].clone())));
            }
        }
    }
    let (text, blocks) = resolved_message(&ask, &input.resolution());
    assert!(text.chars().count() <= 4000);
    assert_inert("resolution text", &text);
    let mut shown = Vec::new();
    texts(&blocks, &mut shown);
    for text in &shown {
        assert_inert("resolution block text", text);
        assert!(text.chars().count() <= 3000);
    }
    let note = note_text(&input.note(), input.resent);
    assert!(note.chars().count() <= 4000);
    assert_inert("note", &note);
});
