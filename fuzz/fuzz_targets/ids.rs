//! Ids and names: `validate_id` accepts exactly the documented pattern, and every edge that
//! takes an ask id from a stranger (a Slack button, an email subject, an SMS code, a wait
//! token) passes on only valid ones.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rein::bridge::Target;
use rein::store::{validate_id, MAX_ID_LEN};

#[path = "common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(id) = std::str::from_utf8(data) else {
        return;
    };
    let documented = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && !id.contains("..")
        && id
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'));
    assert_eq!(validate_id("id", id).is_ok(), documented, "{id:?}");

    let value = format!("{id}:yes");
    if let Some((ask, option)) = rein_bridge_slack::format::parse_button("rein-answer:x:0", &value)
    {
        common::assert_valid_id("slack button ask id", &ask);
        assert!(!option.is_empty());
    }
    if let Some(ask) = rein_bridge_email::parse::subject_token(&format!("Re: [ask:{id}] x")) {
        common::assert_valid_id("email subject ask id", &ask);
    }
    for body in [format!("[{id}] yes"), format!("{id} yes")] {
        if let Some((Target::Ask(ask), _)) =
            rein_bridge_sms::reply::parse_reply(&body, &rein_bridge_sms::reply::NoMailbox)
        {
            common::assert_valid_id("sms ask code", &ask);
        }
    }
    // A wait token an agent hands back prints and parses back to itself.
    if let Ok(token) = id.parse::<rein::state::Token>() {
        assert_eq!(
            token.to_string().parse::<rein::state::Token>().ok(),
            Some(token)
        );
    }
});
