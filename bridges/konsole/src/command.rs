//! The command line typed into a new tab.
//!
//! `runCommand` types text into the tab's shell, so the line is built only from trusted,
//! checked parts: the rein binary path and environment values from the bridge's own config
//! (single-quoted, refused if they hold a quote-breaking character), fixed words, and an ask
//! or worker id that matches rein's id pattern (`[a-z0-9._-]`). The ask's prompt never goes
//! through here: `rein answer --interactive` reads it from the mailbox and shows it.
//!
//! The line works in sh, bash, zsh and fish: `env` sets the variables (fish has no
//! `VAR=value cmd` before 3.1).
//!
//! The answer prompt replaces the tab's shell (`exec env … rein answer --interactive ID`), so
//! it is the tab's own program: however it ends — an answer, Ctrl+C, Ctrl+D, the ask resolved
//! elsewhere — Konsole closes the tab, and no shell is left in it. (With `prompt; exit`
//! instead, Ctrl+C would end the prompt and the rest of the line, and leave a shell.) The
//! prompt exits normally on SIGINT, SIGTERM and SIGHUP: Konsole keeps the tab of a program
//! killed by a signal open, with a warning.
//!
//! `rein worker attach` is not signal-aware in that way, so it runs as `…; exit`: the shell
//! closes the tab when attach ends, even when the bridge ends it with SIGTERM. Attach puts
//! the terminal in raw mode, so Ctrl+C reaches the agent and never ends that line.

use std::path::Path;

use rein::store::validate_id;
use rein::Error;

/// What a tab runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TabAction {
    /// `rein answer --interactive ASK`: shows the ask and reads the answer.
    Answer { ask: String },
    /// `rein worker attach WORKER`: the worker's own terminal.
    Attach { worker: String },
    /// `rein bridge test`: a harmless line that says what it is and goes away.
    Test,
}

/// The variable `rein answer` records the answering identity from.
pub const IDENTITY_VARIABLE: &str = "REIN_ANSWER_IDENTITY";

impl TabAction {
    /// The arguments after the rein binary; a running tab is recognised by them.
    pub fn rein_args(&self) -> Vec<String> {
        match self {
            TabAction::Answer { ask } => vec!["answer".into(), "--interactive".into(), ask.clone()],
            TabAction::Attach { worker } => vec!["worker".into(), "attach".into(), worker.clone()],
            TabAction::Test => Vec::new(),
        }
    }

    fn check(&self) -> Result<(), Error> {
        match self {
            TabAction::Answer { ask } => validate_id("ask id", ask),
            TabAction::Attach { worker } => validate_id("worker id", worker),
            TabAction::Test => Ok(()),
        }
    }
}

/// Refuses text that single quotes cannot carry the same way in every shell: control
/// characters (a newline would end the command) and backslashes (fish reads `\\` and `\'`
/// inside single quotes). A single quote itself is written as `'\''`.
pub fn check_shell_safe(what: &str, text: &str) -> Result<(), Error> {
    match text.chars().find(|c| c.is_control() || *c == '\\') {
        None => Ok(()),
        Some(bad) => Err(Error::invalid(format!(
            "{what} {text:?} holds {bad:?}, which the Konsole bridge will not type into a shell"
        ))),
    }
}

/// `text` in single quotes.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The line typed into the tab. `env` holds `(NAME, value)` pairs from the bridge's config.
pub fn tab_command(
    rein_bin: &Path,
    env: &[(String, String)],
    action: &TabAction,
) -> Result<String, Error> {
    action.check()?;
    if *action == TabAction::Test {
        return Ok("echo rein bridge test: this tab closes in 5 seconds; sleep 5; exit".to_owned());
    }
    let rein = rein_bin
        .to_str()
        .ok_or_else(|| Error::invalid(format!("rein_bin {} is not UTF-8", rein_bin.display())))?;
    check_shell_safe("rein_bin", rein)?;
    let mut words = Vec::new();
    if matches!(action, TabAction::Answer { .. }) {
        words.push("exec".to_owned());
    }
    words.push("env".to_owned());
    for (name, value) in env {
        let valid_name = name.starts_with(|c: char| c.is_ascii_uppercase())
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !valid_name {
            return Err(Error::invalid(format!(
                "invalid environment variable name {name:?}"
            )));
        }
        check_shell_safe(name, value)?;
        words.push(shell_quote(&format!("{name}={value}")));
    }
    words.push(shell_quote(rein));
    // The arguments are fixed words and a checked id: nothing in them needs quoting.
    words.extend(action.rein_args());
    let line = words.join(" ");
    Ok(match action {
        TabAction::Answer { .. } => line,
        _ => format!("{line}; exit"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        vec![
            (IDENTITY_VARIABLE.to_owned(), "konsole:ana".to_owned()),
            ("REIN_DATA_DIR".to_owned(), "/home/ana/my data".to_owned()),
        ]
    }

    #[test]
    fn answer_and_attach_lines_are_exact() {
        let answer = tab_command(
            Path::new("/opt/rein's tools/rein"),
            &env(),
            &TabAction::Answer {
                ask: "k3x9ab".into(),
            },
        )
        .expect("valid");
        assert_eq!(
            answer,
            r"exec env 'REIN_ANSWER_IDENTITY=konsole:ana' 'REIN_DATA_DIR=/home/ana/my data' '/opt/rein'\''s tools/rein' answer --interactive k3x9ab"
        );
        // A POSIX shell reads it back as exactly these words.
        let words = shell_words::split(&answer).expect("parses");
        assert_eq!(
            words,
            [
                "exec",
                "env",
                "REIN_ANSWER_IDENTITY=konsole:ana",
                "REIN_DATA_DIR=/home/ana/my data",
                "/opt/rein's tools/rein",
                "answer",
                "--interactive",
                "k3x9ab"
            ]
        );
        let attach = tab_command(
            Path::new("/usr/bin/rein"),
            &env()[..1],
            &TabAction::Attach {
                worker: "w1".into(),
            },
        )
        .expect("valid");
        assert_eq!(
            attach,
            "env 'REIN_ANSWER_IDENTITY=konsole:ana' '/usr/bin/rein' worker attach w1; exit"
        );
    }

    #[test]
    fn untrusted_parts_are_refused() {
        let rein = Path::new("/usr/bin/rein");
        for ask in ["a b", "x;rm -rf ~", "$(id)", "A1", "a\nb", "'", ""] {
            assert!(
                tab_command(rein, &[], &TabAction::Answer { ask: ask.into() }).is_err(),
                "accepted ask id {ask:?}"
            );
        }
        assert!(tab_command(
            rein,
            &[],
            &TabAction::Attach {
                worker: "`id`".into()
            }
        )
        .is_err());
        for (name, value) in [
            ("X", "a\nb"),
            ("X", "a\\b"),
            ("lower", "v"),
            ("A-B", "v"),
            ("", "v"),
        ] {
            let env = vec![(name.to_owned(), value.to_owned())];
            assert!(
                tab_command(rein, &env, &TabAction::Answer { ask: "abc".into() }).is_err(),
                "accepted {name}={value:?}"
            );
        }
        assert!(tab_command(
            Path::new("/a\tb/rein"),
            &[],
            &TabAction::Answer { ask: "abc".into() }
        )
        .is_err());
    }

    #[test]
    fn the_test_line_is_fixed() {
        let line =
            tab_command(Path::new("/usr/bin/rein"), &env(), &TabAction::Test).expect("valid");
        assert_eq!(
            line,
            "echo rein bridge test: this tab closes in 5 seconds; sleep 5; exit"
        );
    }
}
