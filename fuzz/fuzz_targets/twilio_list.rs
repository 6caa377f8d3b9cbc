//! Twilio's message list pages (what the SMS bridge polls): a page that parses hands each
//! message to the reply parser, which passes on only valid ask ids, and the next page it
//! names is fetched from the API's own host or not at all.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rein::bridge::Target;
use rein_bridge_sms::reply::{parse_reply, NoMailbox};
use rein_bridge_sms::twilio::{next_page_url, Page};

#[path = "common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(page) = serde_json::from_slice::<Page>(data) else {
        return;
    };
    for message in &page.messages {
        if let Some((Target::Ask(id), _)) = parse_reply(&message.body, &NoMailbox) {
            common::assert_valid_id("polled ask id", &id);
        }
    }
    if let Some(next) = &page.next_page_uri {
        let base = "https://api.twilio.com";
        if let Some(address) = next_page_url(base, next) {
            let parsed = url::Url::parse(&address).expect("a next page URL parses");
            assert_eq!(parsed.host_str(), Some("api.twilio.com"), "{next:?}");
            assert_eq!(parsed.username(), "", "{next:?}");
            assert_eq!(parsed.port(), None, "{next:?}");
        }
    }
});
