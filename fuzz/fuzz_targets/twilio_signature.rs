//! Twilio webhook signatures: the signature of a request verifies, a header verifies exactly
//! when it is that signature, and another URL or another parameter set does not verify.
//! Input lines: auth token, URL, X-Twilio-Signature header, then `name=value` parameters.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use rein_bridge_sms::webhook::{signature, verify};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let (Some(token), Some(url), Some(header)) = (lines.next(), lines.next(), lines.next()) else {
        return;
    };
    let params: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once('=').unwrap_or((line, ""));
            (name.to_owned(), value.to_owned())
        })
        .collect();
    let real = signature(token, url, &params);
    assert!(verify(token, url, &params, Some(&real)));
    assert!(verify(token, url, &params, Some(&format!(" {real}\t"))));
    assert!(!verify(token, url, &params, None));
    assert!(!verify(token, &format!("{url}/"), &params, Some(&real)));
    let mut more = params.clone();
    more.push(("Body".into(), "injected".into()));
    assert!(!verify(token, url, &more, Some(&real)));
    let engine = base64::engine::general_purpose::STANDARD;
    let same = engine.decode(header.trim()).ok() == engine.decode(&real).ok();
    assert_eq!(
        verify(token, url, &params, Some(header)),
        same,
        "{header:?}"
    );
    // Twilio sorts the parameters by name: their order on the wire does not matter.
    let mut names: Vec<&str> = params.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    if names.len() == params.len() {
        let reversed: Vec<(String, String)> = params.iter().rev().cloned().collect();
        assert!(verify(token, url, &reversed, Some(&real)));
    }
});
