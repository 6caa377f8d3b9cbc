//! Replies by email: the answer is one visible line, an `[ask:ID]` token or a thread names
//! only valid asks, the sender is a lowercased address, and machine mail is never passed on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rein::bridge::Target;
use rein_bridge_email::parse::{answer_text, parse_reply, subject_token, Matcher};

#[path = "common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let answer = answer_text(text);
        assert!(!answer.contains('\n'));
        common::assert_inert("an answer", &answer);
        if let Some(id) = subject_token(text) {
            common::assert_valid_id("subject ask id", &id);
        }
    }
    let Some(reply) = parse_reply(data) else {
        return;
    };
    assert!(reply.from.contains('@'));
    assert_eq!(reply.from, reply.from.to_ascii_lowercase());
    assert!(!reply.answer.contains('\n'));
    assert_eq!(reply.answer, reply.answer.trim());
    common::assert_inert("an emailed answer", &reply.answer);
    let matcher = Matcher {
        own_address: "rein@example.org".into(),
        domain: "example.org".into(),
        routes: vec!["ana@example.org".into()],
    };
    if matcher.skip_reason(&reply).is_some() {
        return;
    }
    assert!(!reply.automatic);
    let inbound = matcher.inbound(&reply, "uid-1");
    assert!(!inbound.text.is_empty());
    assert_eq!(inbound.identity, format!("email:{}", reply.from));
    match &inbound.target {
        Target::Ask(id) => common::assert_valid_id("emailed ask id", id),
        Target::Post(post) => assert!(post.id.starts_with("ask-"), "{post:?}"),
        Target::Unspecified => {}
    }
});
