//! Socket Mode envelopes from Slack: every message passed on names a valid ask id (a click)
//! or a thread, carries text, and is attributed to a Slack user.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rein::bridge::Target;
use rein_bridge_slack::socket::{interpret, Event};

#[path = "common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let envelope = interpret(&value);
    if let Event::Messages(messages) = &envelope.event {
        assert!(!messages.is_empty());
        for inbound in messages {
            assert!(inbound.identity.starts_with("slack:"), "{inbound:?}");
            assert!(!inbound.text.trim().is_empty(), "{inbound:?}");
            match &inbound.target {
                Target::Ask(id) => common::assert_valid_id("clicked ask id", id),
                Target::Post(post) => assert_eq!(post, &inbound.reply_to),
                Target::Unspecified => panic!("a Slack message always names its ask or thread"),
            }
        }
    }
});
