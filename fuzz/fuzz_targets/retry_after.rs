//! `Retry-After` headers: a number of seconds is taken exactly, a date never gives a negative
//! wait, and nothing panics.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rein::bridge::retry_after;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let wait = retry_after(Some(text));
    if let Ok(seconds) = text.trim().parse::<u64>() {
        assert_eq!(wait, Some(Duration::from_secs(seconds)));
    }
    if text.trim().is_empty() {
        assert_eq!(wait, None);
    }
});
