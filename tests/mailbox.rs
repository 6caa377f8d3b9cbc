//! The ask/answer/withdraw contract between real processes.

mod support;

use std::time::Duration;

use support::{stderr_of, stdout_of, wait_child, Rein};

#[test]
fn twenty_answerers_one_winner() {
    let rein = Rein::new();
    let asker = rein.spawn(&["ask", "--worker", "w1", "--prompt", "pick a number"]);
    let id = rein.wait_for_one_ask();
    let answerers: Vec<_> = (0..20)
        .map(|n| {
            // Twenty people, each answering as themselves (the CLI records cli:$USER).
            support::Spawned::from(
                rein.command(&["answer", &id, &format!("number-{n}")])
                    .env("USER", format!("person{n}"))
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn an answerer"),
            )
        })
        .collect();
    let outputs: Vec<_> = answerers
        .into_iter()
        .map(|child| wait_child(child, Duration::from_secs(20), "an answerer"))
        .collect();
    let winners: Vec<usize> = (0..20).filter(|&n| outputs[n].status.success()).collect();
    assert_eq!(winners.len(), 1, "exactly one answer wins: {winners:?}");
    let winner = winners[0];
    for (n, output) in outputs.iter().enumerate() {
        if n == winner {
            continue;
        }
        assert_eq!(output.status.code(), Some(5), "a loser exits 5");
        let stderr = stderr_of(output);
        assert!(
            stderr.contains(&format!("number-{winner}"))
                && stderr.contains(&format!("cli:person{winner}")),
            "the loser is told who won: {stderr}"
        );
    }
    let asked = wait_child(asker, Duration::from_secs(10), "the asker");
    assert!(asked.status.success());
    assert_eq!(
        stdout_of(&asked),
        format!("number-{winner}\n"),
        "the asker prints only the answer"
    );
    let all = rein.json(&["asks", "--all"]);
    assert_eq!(all[0]["answered_by"], format!("cli:person{winner}"));
    assert_eq!(all[0]["archived"], true);
}

#[test]
fn killed_ask_rerun_gets_the_answer_given_meanwhile() {
    let rein = Rein::new();
    let args = [
        "ask",
        "--worker",
        "w1",
        "--prompt",
        "deploy?",
        "--options",
        "yes,no",
    ];
    let mut first = rein.spawn(&args);
    let id = rein.wait_for_one_ask();
    first.kill().expect("kill the asker");
    first.wait().expect("reap");
    rein.ok(&["answer", &id, "yes"]);
    let second = wait_child(rein.spawn(&args), Duration::from_secs(10), "the re-run ask");
    assert!(second.status.success(), "{}", stderr_of(&second));
    assert_eq!(stdout_of(&second), "yes\n");
    let all = rein.json(&["asks", "--all"]);
    assert_eq!(
        all.as_array().expect("array").len(),
        1,
        "no duplicate ask was filed"
    );
    // Delivered means archived: the same question now is a new ask.
    let mut third = rein.spawn(&args);
    let new_id = rein.wait_for_one_ask();
    assert_ne!(new_id, id);
    third.kill().expect("kill");
    third.wait().expect("reap");
}

#[test]
fn rerun_while_pending_waits_on_the_same_ask() {
    let rein = Rein::new();
    let args = ["ask", "--worker", "w1", "--prompt", "same question"];
    let mut first = rein.spawn(&args);
    let id = rein.wait_for_one_ask();
    let second = rein.spawn(&args);
    // Give the second asker a moment to file (or find) its ask, then check there is one.
    let timed_out = rein.run(&[
        "ask",
        "--worker",
        "w1",
        "--prompt",
        "same question",
        "--timeout",
        "200ms",
    ]);
    assert_eq!(timed_out.status.code(), Some(3));
    assert_eq!(rein.pending_ids(), vec![id.clone()]);
    first.kill().expect("kill");
    first.wait().expect("reap");
    rein.ok(&["answer", &id, "the answer"]);
    let second = wait_child(second, Duration::from_secs(10), "the second asker");
    assert_eq!(stdout_of(&second), "the answer\n");
}

#[test]
fn options_are_enforced_and_listed() {
    let rein = Rein::new();
    let asker = rein.spawn(&[
        "ask",
        "--prompt",
        "merge?",
        "--options",
        "yes,no",
        "--ref",
        "pr-12",
    ]);
    let id = rein.wait_for_one_ask();
    let asks = rein.json(&["asks"]);
    assert_eq!(asks[0]["worker"], "human");
    assert_eq!(asks[0]["ref"], "pr-12");
    assert_eq!(asks[0]["options"], serde_json::json!(["yes", "no"]));
    assert!(asks[0]["created"].is_string());
    let refused = rein.run(&["answer", &id, "maybe"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr_of(&refused).contains("yes, no"),
        "{}",
        stderr_of(&refused)
    );
    assert_eq!(
        rein.pending_ids(),
        vec![id.clone()],
        "a refused answer changes nothing"
    );
    rein.ok(&["answer", &id, "no", "--as", "konsole:tester"]);
    let asked = wait_child(asker, Duration::from_secs(10), "asker");
    assert_eq!(stdout_of(&asked), "no\n");
    let all = rein.json(&["asks", "--all"]);
    assert_eq!(all[0]["answer"], "no");
    assert_eq!(all[0]["answered_by"], "konsole:tester");
}

#[test]
fn withdraw_ends_the_ask_with_exit_4() {
    let rein = Rein::new();
    let asker = rein.spawn(&["ask", "--prompt", "still needed?"]);
    let id = rein.wait_for_one_ask();
    rein.ok(&["withdraw", &id]);
    let asked = wait_child(asker, Duration::from_secs(10), "asker");
    assert_eq!(asked.status.code(), Some(4));
    assert_eq!(stdout_of(&asked), "");
    let late = rein.run(&["answer", &id, "yes"]);
    assert_eq!(late.status.code(), Some(5));
    assert!(stderr_of(&late).contains("withdrawn by cli:tester"));
    let all = rein.json(&["asks", "--all"]);
    assert_eq!(all[0]["state"], "withdrawn");
}

#[test]
fn answer_from_stdin_and_timeout() {
    let rein = Rein::new();
    let timed_out = rein.run(&["ask", "--prompt", "anyone?", "--timeout", "300ms"]);
    assert_eq!(timed_out.status.code(), Some(3));
    assert!(stderr_of(&timed_out).contains("stays pending"));
    let id = rein.wait_for_one_ask();
    let answered = rein.run_stdin(&["answer", &id, "-"], "a long\nanswer\n");
    assert!(answered.status.success(), "{}", stderr_of(&answered));
    let asked = rein.run(&["ask", "--prompt", "anyone?"]);
    assert_eq!(stdout_of(&asked), "a long\nanswer\n");
}

#[test]
fn corrupt_files_are_reported_by_name() {
    let rein = Rein::new();
    let mut asker = rein.spawn(&["ask", "--prompt", "fine ask"]);
    let id = rein.wait_for_one_ask();
    std::fs::write(rein.data.join("asks/zzzzzz.json"), "{not json").expect("write");
    let listed = rein.run(&["asks"]);
    assert_eq!(listed.status.code(), Some(1));
    assert!(
        stderr_of(&listed).contains("asks/zzzzzz.json"),
        "{}",
        stderr_of(&listed)
    );
    assert!(
        stdout_of(&listed).contains(&id),
        "the good ask is still listed"
    );
    std::fs::write(rein.data.join(format!("answers/{id}.json")), "garbage").expect("write");
    let answered = rein.run(&["answer", &id, "x"]);
    assert_eq!(answered.status.code(), Some(1));
    assert!(stderr_of(&answered).contains(&format!("answers/{id}.json")));
    asker.kill().expect("kill");
    asker.wait().expect("reap");
}

/// Reads `from` until `marker` has been read; returns what was read.
fn read_until(from: &mut impl std::io::Read, marker: &str) -> String {
    let mut shown = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&shown).contains(marker) {
        let read = from.read(&mut byte).expect("read");
        assert!(
            read > 0,
            "ended before {marker:?}: {}",
            String::from_utf8_lossy(&shown)
        );
        shown.push(byte[0]);
    }
    String::from_utf8_lossy(&shown).into_owned()
}

#[test]
fn interactive_answer_prompts_until_valid_and_ends_when_answered_elsewhere() {
    use std::io::Write;
    let rein = Rein::new().env("REIN_ANSWER_IDENTITY", "konsole:tester");
    let asker = rein.spawn(&[
        "ask",
        "--prompt",
        "deploy now?",
        "--options",
        "yes,no",
        "--ref",
        "pr-7",
    ]);
    let id = rein.wait_for_one_ask();
    let mut prompt = rein
        .command(&["answer", "--interactive", &id])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("interactive");
    let mut input = prompt.stdin.take().expect("stdin");
    input.write_all(b"maybe\nyes\n").expect("type");
    let out = wait_child(prompt, Duration::from_secs(10), "interactive answer");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let shown = stdout_of(&out);
    assert!(
        shown.contains("deploy now?") && shown.contains("About: pr-7") && shown.contains("yes, no"),
        "{shown}"
    );
    assert!(
        stderr_of(&out).contains("not an option"),
        "{}",
        stderr_of(&out)
    );
    let asked = wait_child(asker, Duration::from_secs(10), "asker");
    assert_eq!(stdout_of(&asked), "yes\n");
    assert_eq!(
        rein.json(&["asks", "--all"])[0]["answered_by"],
        "konsole:tester"
    );

    // Answered elsewhere: the prompt ends by itself and says so.
    let mut second = rein.spawn(&["ask", "--prompt", "another?"]);
    let id = rein.wait_for_one_ask();
    let mut prompt = rein
        .command(&["answer", "--interactive", &id])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("interactive");
    // Answer elsewhere only once the prompt is up: before it, the prompt would rightly say
    // the ask is already answered (the race this test used to lose now and then).
    let mut stdout = prompt.stdout.take().expect("stdout");
    let mut shown = read_until(&mut stdout, "Type your answer");
    let elsewhere = rein
        .command(&["answer", &id, "from elsewhere"])
        .env_remove("REIN_ANSWER_IDENTITY")
        .output()
        .expect("answer from elsewhere");
    assert!(elsewhere.status.success(), "{}", stderr_of(&elsewhere));
    std::io::Read::read_to_string(&mut stdout, &mut shown).expect("the rest of stdout");
    let out = wait_child(prompt, Duration::from_secs(10), "interactive answer");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        shown.contains("answered \"from elsewhere\" by cli:tester"),
        "{shown}"
    );
    second.kill().expect("kill");
    second.wait().expect("reap");

    // Input that ends (the tab or terminal closed) ends the prompt; the ask stays pending.
    let mut third = rein.spawn(&["ask", "--prompt", "a third?"]);
    let id = rein.wait_for_one_ask();
    let gone = rein.run(&["answer", "--interactive", &id]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stderr_of(&gone).contains("stays pending"),
        "{}",
        stderr_of(&gone)
    );
    assert_eq!(rein.pending_ids(), vec![id]);
    third.kill().expect("kill");
    third.wait().expect("reap");
}

/// Ctrl+C, a hang-up or SIGTERM end the prompt with a normal exit (a terminal keeps the tab of
/// a program killed by a signal open) that says the ask stays pending.
#[test]
fn interactive_answer_ends_normally_on_signals_and_leaves_the_ask_pending() {
    let rein = Rein::new().env("REIN_ANSWER_IDENTITY", "konsole:tester");
    let mut asker = rein.spawn(&["ask", "--prompt", "deploy now?"]);
    let id = rein.wait_for_one_ask();
    for (signal, code) in [
        (libc::SIGINT, 130),
        (libc::SIGTERM, 143),
        (libc::SIGHUP, 129),
    ] {
        let prompt = rein
            .command(&["answer", "--interactive", &id])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("interactive");
        let mut prompt = prompt;
        // The prompt is up once it has shown the question.
        let mut stdout = prompt.stdout.take().expect("stdout");
        read_until(&mut stdout, "Type your answer");
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(prompt.id() as i32, signal) }, 0);
        let out = wait_child(prompt, Duration::from_secs(10), "interactive answer");
        assert_eq!(
            out.status.code(),
            Some(code),
            "signal {signal}: {:?}",
            out.status
        );
        assert!(
            stderr_of(&out).contains(&format!("ask {id} stays pending")),
            "{}",
            stderr_of(&out)
        );
        assert_eq!(rein.pending_ids(), vec![id.clone()]);
    }
    asker.kill().expect("kill");
    asker.wait().expect("reap");
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
        })
        .collect()
}

/// `answer=$(rein ask …)` in a real shell: the substitution ends with the answer, and nothing
/// `rein ask` left to release its watch outlives it (the process that holds the watch past
/// the asker's exit ends by itself, holding no output the shell would wait on).
#[test]
fn a_shell_gets_the_answer_and_nothing_lingers() {
    let rein = Rein::new();
    let marker = format!("linger-check-{}", std::process::id());
    let script = format!(
        "answer=$(\"$REIN\" ask --worker w1 --prompt {marker}) || exit 9; printf '%s\\n' \"got:$answer\""
    );
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", &script])
        .env("REIN", env!("CARGO_BIN_EXE_rein"))
        .env("REIN_DATA_DIR", &rein.data)
        .env("REIN_CONFIG", &rein.config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let shell = command.spawn().expect("run sh");
    let id = rein.wait_for_one_ask();
    rein.ok(&["answer", &id, "ship it"]);
    let output = wait_child(shell, Duration::from_secs(10), "the shell");
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output), "got:ship it\n");
    support::wait_until(
        Duration::from_secs(10),
        "every process of that `rein ask` to end",
        || processes_with(&marker).is_empty(),
    );
}
