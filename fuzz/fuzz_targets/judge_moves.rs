//! The judge's output: a move found in any text prints and parses back to itself, and a move
//! that validates names only valid ids.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rein::judge::{parse_move, Move};

#[path = "common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(found) = parse_move(text) else {
        return;
    };
    let printed = serde_json::to_string(&found).expect("a move prints");
    assert_eq!(
        parse_move(&printed).ok().as_ref(),
        Some(&found),
        "{printed}"
    );
    if found.validate().is_ok() {
        match &found {
            Move::StartWorker { id, .. }
            | Move::KillWorker { id }
            | Move::WriteGoal { id, .. }
            | Move::ArchiveGoal { id } => common::assert_valid_id("id", id),
            Move::None { .. } | Move::Ask { .. } | Move::Notify { .. } => {}
        }
    }
    let _ = found.describe();
});
