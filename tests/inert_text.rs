//! Text an agent wrote reaches a person inert: a prompt that tries to rewrite the terminal
//! line is shown with its controls visible, in `rein answer --interactive`, `rein asks`,
//! `rein state` and `rein journal`, while JSON output keeps it exact.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use support::{stderr_of, stdout_of, wait_child, Rein};

/// On a terminal this shows only "Fix README typo?": the carriage return goes back to the
/// start of the line and `ESC [K` erases what was there.
const SPOOF: &str = "Drop the prod DB?\r\u{1b}[KFix README typo?";
const SHOWN: &str = r"Drop the prod DB?\r\e[KFix README typo?";

fn assert_no_controls(what: &str, text: &str) {
    let control = text
        .chars()
        .find(|&c| (c.is_control() && c != '\n') || ('\u{80}'..='\u{9f}').contains(&c));
    assert_eq!(
        control, None,
        "{what} passed a control character on: {text:?}"
    );
}

#[test]
fn a_spoofing_prompt_is_shown_with_its_controls_visible() {
    let rein = Rein::new().env("REIN_ANSWER_IDENTITY", "konsole:tester");
    let asker = rein.spawn(&["ask", "--prompt", SPOOF, "--options", "yes,no"]);
    let id = rein.wait_for_one_ask();

    let asks = rein.ok(&["asks"]);
    assert!(asks.contains(SHOWN), "{asks}");
    assert_no_controls("rein asks", &asks);
    let state = rein.ok(&["state"]);
    assert!(state.contains(SHOWN), "{state}");
    assert_no_controls("rein state", &state);
    // JSON carries the prompt exactly; JSON's own escapes keep it inert.
    assert_eq!(rein.json(&["asks"])[0]["prompt"], SPOOF);

    let mut prompt = rein
        .command(&["answer", "--interactive", &id])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("interactive");
    prompt
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"yes\n")
        .expect("type");
    let out = wait_child(prompt, Duration::from_secs(10), "interactive answer");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let shown = stdout_of(&out);
    assert!(shown.contains(&format!("  {SHOWN}\n")), "{shown}");
    assert_no_controls("rein answer --interactive", &shown);
    assert_no_controls("rein answer --interactive (stderr)", &stderr_of(&out));

    let asked = wait_child(asker, Duration::from_secs(10), "asker");
    assert_eq!(stdout_of(&asked), "yes\n");
    let journal = rein.ok(&["journal"]);
    assert!(
        journal.contains(r"Drop the prod DB? \e[KFix README typo?"),
        "{journal}"
    );
    assert_no_controls("rein journal", &journal);
}

#[test]
fn answers_with_terminal_controls_are_refused() {
    let rein = Rein::new();
    let asker = rein.spawn(&["ask", "--prompt", "free text?"]);
    let id = rein.wait_for_one_ask();
    let refused = rein.run(&["answer", &id, "\u{1b}]2;owned\u{7}\u{1b}[2J yes"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr_of(&refused));
    assert!(
        stderr_of(&refused).contains("control character"),
        "{}",
        stderr_of(&refused)
    );
    assert_eq!(rein.pending_ids(), vec![id.clone()]);
    rein.ok(&["answer", &id, "yes"]);
    let asked = wait_child(asker, Duration::from_secs(10), "asker");
    assert_eq!(stdout_of(&asked), "yes\n");
}
