//! What the SMS bridge texts, from asks as a hand-written file could hold them: never more
//! segments than allowed, the ask's code first, nothing but visible characters, and fitting
//! linear in the input. Input: JSON (see common::Input); `max_segments` 1 to 10.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rein_bridge_sms::text::{ask_sms, note_sms, resolution_sms, segments};

#[path = "common/mod.rs"]
mod common;
use common::{assert_inert_line, Input};

fn thread_cpu_time() -> std::time::Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer it is given.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(read, 0, "no thread CPU clock");
    std::time::Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let max = input.max_segments % 10 + 1;
    let ask = input.ask();
    // CPU time of this thread, not wall time: a fuzzer sharing a busy machine is descheduled
    // for hundreds of milliseconds at a time (a wall-clock bound failed that way once).
    let started = thread_cpu_time();
    let text = ask_sms(&ask, input.resent, max);
    let took = thread_cpu_time().saturating_sub(started);
    assert!(segments(&text) <= max, "{max}: {text:?}");
    assert!(text.starts_with(&format!("[{}] ", ask.id)), "{text:?}");
    assert_inert_line("an ask's text", &text);
    // Linear: a few microseconds a kilobyte, even instrumented; quadratic took seconds.
    assert!(
        took.as_micros() < 200_000 + 100 * data.len() as u128,
        "{took:?} for {} bytes",
        data.len()
    );
    let note = note_sms(&input.note(), input.resent, max);
    assert!(segments(&note) <= max);
    assert_inert_line("a note's text", &note);
    let resolution = resolution_sms(&ask, &input.resolution());
    assert_eq!(segments(&resolution), 1);
    assert_inert_line("a resolution's text", &resolution);
});
