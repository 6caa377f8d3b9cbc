//! Text messages from people: a message that names an ask names a valid id, Twilio's own
//! keywords and empty texts are never answers, and everything else is passed on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rein::bridge::Target;
use rein_bridge_sms::reply::{parse_reply, NoMailbox};

#[path = "common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    match parse_reply(body, &NoMailbox) {
        None => {
            let trimmed = body.trim().to_lowercase();
            assert!(
                trimmed.is_empty()
                    || [
                        "stop",
                        "stopall",
                        "unsubscribe",
                        "cancel",
                        "end",
                        "quit",
                        "help",
                        "info",
                        "start",
                        "unstop"
                    ]
                    .contains(&trimmed.as_str()),
                "{body:?} was dropped"
            );
        }
        Some((Target::Ask(id), answer)) => {
            common::assert_valid_id("sms ask id", &id);
            assert_eq!(answer, answer.trim());
        }
        Some((Target::Unspecified, text)) => assert_eq!(text, body.trim()),
        Some((Target::Post(post), _)) => panic!("an SMS reply names no post: {post:?}"),
    }
});
