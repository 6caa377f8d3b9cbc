//! Data-dir records (asks, answers, ledger entries, claims, notes, the judge's record): a file
//! that loads has valid ids, and every record writes and reads back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rein::bridge::ledger::Entry;
use rein::claims::Claim;
use rein::judge::JudgeRecord;
use rein::mailbox::{Ask, Resolution};
use rein::notes::Note;
use rein::store::to_json_bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

#[path = "common/mod.rs"]
mod common;
use common::assert_valid_id;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(record: &T) {
    let bytes = to_json_bytes(record);
    let again: T = serde_json::from_slice(&bytes).unwrap_or_else(|error| {
        panic!(
            "{record:?} was written as {:?} and does not read back: {error}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(&again, record);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ask) = serde_json::from_slice::<Ask>(data) {
        assert_valid_id("ask id", &ask.id);
        assert_valid_id("worker id", &ask.worker);
        round_trip(&ask);
    }
    if let Ok(resolution) = serde_json::from_slice::<Resolution>(data) {
        assert_valid_id("ask id", &resolution.ask);
        round_trip(&resolution);
    }
    if let Ok(entry) = serde_json::from_slice::<Entry>(data) {
        assert_valid_id("ledger item", &entry.item);
        round_trip(&entry);
    }
    if let Ok(claim) = serde_json::from_slice::<Claim>(data) {
        assert_valid_id("claim name", &claim.name);
        assert_valid_id("worker id", &claim.worker);
        round_trip(&claim);
    }
    if let Ok(note) = serde_json::from_slice::<Note>(data) {
        assert_valid_id("note id", &note.id);
        assert_valid_id("worker id", &note.worker);
        round_trip(&note);
    }
    if let Ok(record) = serde_json::from_slice::<JudgeRecord>(data) {
        round_trip(&record);
    }
});
