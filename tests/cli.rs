//! Bad input is refused with exit 2 and a clear message, and changes nothing; init is
//! idempotent and never overwrites the user's edits.

mod support;

use support::{stderr_of, tree, Rein};

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let rein = Rein::new();
    rein.write_config("[pulse]\ninterval = \"30s\"\n");
    let mut asker = rein.spawn(&["ask", "--prompt", "real ask", "--options", "yes,no"]);
    let _ = rein.wait_for_one_ask();
    // The asker journals its ask just after filing it: the snapshot starts after that.
    support::wait_until(
        std::time::Duration::from_secs(10),
        "the ask's journal line",
        || rein.ok(&["journal"]).contains("real ask"),
    );
    let before = tree(rein.temp.path());
    let catalogue: &[(&[&str], &str)] = &[
        (&["answer", "../etc", "yes"], "invalid ask id"),
        (&["answer", "ABC", "yes"], "invalid ask id"),
        (&["answer", ".hidden", "yes"], "starts with '.'"),
        (&["goal", "write", "a/b", "body"], "invalid goal id"),
        (&["goal", "write", "a..b", "body"], "contains '..'"),
        (&["goal", "write", &"x".repeat(65), "body"], "too long"),
        (&["goal", "write", "fine", "   "], "empty"),
        (&["goal", "archive", "No"], "invalid goal id"),
        (
            &["sensor", "write", "my sensor", "echo"],
            "invalid sensor name",
        ),
        (&["sensor", "rm", "../x"], "invalid sensor name"),
        (&["claim", "Upper"], "invalid claim name"),
        (&["unclaim", "a/b"], "invalid claim name"),
        (
            &["ask", "--prompt", "x", "--worker", "w 1"],
            "invalid worker id",
        ),
        (
            &["ask", "--prompt", "x", "--timeout", "5x"],
            "invalid duration",
        ),
        (
            &["ask", "--prompt", "x", "--timeout", "soon"],
            "invalid duration",
        ),
        (&["ask", "--prompt", "x", "--options", "a,,b"], "empty"),
        (
            &["ask", "--prompt", "x", "--options", "a,A"],
            "listed twice",
        ),
        (&["ask", "--prompt", "   "], "prompt is empty"),
        (&["ask"], "--prompt"),
        (&["wait", "--since", "garbage"], "invalid token"),
        (&["wait", "--timeout=-1s"], "invalid duration"),
        (&["notify", "  "], "message is empty"),
        (&["notify", "hi", "--worker", "../w"], "invalid worker id"),
        (&["init", "--runner", "gpt"], "invalid value"),
        (&["journal", "-n", "lots"], "invalid value"),
        (&["no-such-verb"], "unrecognized subcommand"),
    ];
    for (args, says) in catalogue {
        let output = rein.run(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "rein {args:?}: {}",
            stderr_of(&output)
        );
        assert!(
            stderr_of(&output).contains(says),
            "rein {args:?} should say {says:?}: {}",
            stderr_of(&output)
        );
        assert_eq!(
            tree(rein.temp.path()),
            before,
            "rein {args:?} changed the data dir"
        );
    }
    let ids = rein.pending_ids();
    let not_option = rein.run(&["answer", &ids[0], "maybe"]);
    assert_eq!(not_option.status.code(), Some(2));
    let unknown = rein.run(&["answer", "zzzzzz", "yes"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr_of(&unknown).contains("no ask \"zzzzzz\""));
    assert_eq!(tree(rein.temp.path()), before);
    asker.kill().expect("kill");
    asker.wait().expect("reap");
}

#[test]
fn broken_config_is_refused_with_file_and_line() {
    let rein = Rein::new();
    rein.write_config(
        "[pulse]\ninterval = \"30s\"\n\n[runner]\npreset = \"claude\"\nmodle = \"x\"\n",
    );
    let before = tree(rein.temp.path());
    for args in [&["sense"][..], &["init"][..]] {
        let output = rein.run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = stderr_of(&output);
        assert!(stderr.contains("config.toml:6:1"), "{stderr}");
        assert!(stderr.contains("modle"), "{stderr}");
        assert_eq!(tree(rein.temp.path()), before);
    }
}

#[test]
fn init_is_idempotent_and_keeps_edits() {
    let rein = Rein::new();
    let first = rein.json(&["init", "--runner", "codex"]);
    let ask = first["setup_ask"].as_str().expect("setup ask").to_owned();
    assert!(std::fs::read_to_string(&rein.config)
        .expect("config")
        .contains("preset = \"codex\""));
    for file in ["PLAYBOOK.md", "goals/setup.md", "sensors/today.sh"] {
        assert!(rein.data.join(file).exists(), "{file} seeded");
    }
    let asks = rein.json(&["asks"]);
    assert_eq!(asks[0]["id"], ask.as_str());
    assert_eq!(asks[0]["state"], "pending");
    std::fs::write(rein.data.join("PLAYBOOK.md"), "my own playbook\n").expect("edit");
    std::fs::write(&rein.config, "[runner]\npreset = \"pi\"\n").expect("edit");
    // Another runner than the config names is refused, not silently kept (issue 8, item 17).
    let switch = rein.run(&["init", "--runner", "claude"]);
    assert_eq!(switch.status.code(), Some(5), "{}", stderr_of(&switch));
    assert!(
        stderr_of(&switch).contains("preset = \"claude\""),
        "says how to switch: {}",
        stderr_of(&switch)
    );
    let second = rein.json(&["init", "--runner", "pi"]);
    assert!(
        second["created"].as_array().expect("created").is_empty(),
        "{second}"
    );
    assert!(second["setup_ask"].is_null());
    assert_eq!(
        std::fs::read_to_string(rein.data.join("PLAYBOOK.md")).expect("read"),
        "my own playbook\n"
    );
    assert_eq!(
        std::fs::read_to_string(&rein.config).expect("read"),
        "[runner]\npreset = \"pi\"\n"
    );
    assert_eq!(rein.pending_ids(), vec![ask.clone()], "no second setup ask");
    rein.ok(&["answer", &ask, "done"]);
    rein.ok(&["init"]);
    assert!(rein.pending_ids().is_empty());
    let sensed = rein.json(&["sense"]);
    assert_eq!(
        sensed["snapshots"][0]["ok"], true,
        "the seeded sensor works: {sensed}"
    );
}

/// Output into a pipe nobody reads any more (`rein state --json | head -1`) ends quietly,
/// in JSON as in text.
#[test]
fn a_closed_pipe_ends_output_quietly() {
    let rein = Rein::new();
    rein.ok(&["notify", "make the data dir"]);
    for args in [&["state", "--json"][..], &["state"][..]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = rein
            .command(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run rein");
        assert_eq!(stderr_of(&out), "", "rein {args:?}");
    }
}
