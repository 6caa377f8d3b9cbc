//! `rein-host ID [--loop NAME] [-- CMD...]` (and the same as `rein worker host`, for units
//! started before `rein-host` existed): the main process of a worker unit.
//!
//! `rein-host` is a program of its own so that what stays beside every agent for its whole
//! life is only the host: no command-line definition, no span registry, and a small
//! executable whose page tables stay small ([`standalone_main`]).
//!
//! Runs the agent in the PTY host; every transcript line goes to journald as an event with
//! `REIN_WORKER`, `REIN_PROFILE` and `REIN_STREAM=transcript` (the logging layer adds the
//! first two), because a user manager of systemd 252 does not apply `LogExtraFields=` to a
//! unit's output. Without journald the lines go to stdout. A loop's session (`--loop NAME`)
//! has the loop's resume prompt typed into the agent once it looks ready, at every start.

use std::io::Write;
use std::path::PathBuf;

use crate::worker::pty::{run_host, HostOptions, ReadyInput};

/// Sends whole lines to the log; a partial line waits for its end (or the host's flush).
struct TranscriptLog {
    pending: Vec<u8>,
    to_journal: bool,
}

impl TranscriptLog {
    fn emit(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        if self.to_journal {
            tracing::info!(target: "transcript", REIN_STREAM = "transcript", "{text}");
        } else {
            println!("{text}");
        }
    }
}

impl Write for TranscriptLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
        Ok(())
    }
}

impl Drop for TranscriptLog {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// The unit's credentials (`LoadCredential=NAME:…`, one per secret variable) as environment
/// variables for the agent: the secret's value reaches the agent without ever being a
/// command-line argument, a unit property or a log line. One trailing newline is dropped.
fn credentials_as_environment() -> Vec<(String, String)> {
    let Some(directory) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
        return Vec::new();
    };
    let mut env = Vec::new();
    let Ok(entries) = std::fs::read_dir(&directory) else {
        return env;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if crate::config::validate_env_name(&name).is_err() {
            continue;
        }
        match std::fs::read(entry.path()) {
            Ok(bytes) => {
                let mut value = String::from_utf8_lossy(&bytes).into_owned();
                if value.ends_with('\n') {
                    value.pop();
                }
                env.push((name, value));
            }
            Err(error) => tracing::warn!("cannot read the credential {name}: {error}"),
        }
    }
    env.sort();
    env
}

/// Writes the agent CLI's settings into its own HOME (`$REIN_AGENT` names the CLI), with the
/// final environment, secrets included. A failure is logged, not fatal: the agent may still
/// run, and its transcript shows where it stopped.
fn prepare_agent(secrets: &[(String, String)]) {
    let Some(agent) = std::env::var(crate::agents::AGENT_VARIABLE)
        .ok()
        .and_then(|name| crate::agents::Agent::from_name(&name))
    else {
        return;
    };
    let mut env: std::collections::HashMap<String, String> = std::env::vars().collect();
    env.extend(secrets.iter().cloned());
    let path = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let (Some(home), Ok(work_dir)) = (path("HOME"), std::env::current_dir()) else {
        return;
    };
    let setup = crate::agents::Setup {
        home,
        work_dir,
        template: path(crate::agents::TEMPLATE_VARIABLE),
        user_home: path(crate::agents::USER_HOME_VARIABLE),
        rein_bin: std::env::var("REIN_BIN").unwrap_or_default(),
        env,
    };
    match crate::agents::prepare(agent, &setup) {
        Ok(written) => tracing::info!(
            REIN_EVENT = "agent-setup",
            "prepared {} settings: {}",
            agent.name(),
            written
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(error) => tracing::warn!("could not prepare {}'s settings: {error}", agent.name()),
    }
}

/// `rein agent-exec -- CMD…`: what the judge's tick unit runs — the agent's settings and
/// credentials as for a worker, then the command itself in this process (its output goes
/// straight to the pipes rein passed the unit).
pub fn exec(command: Vec<String>) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let command = command_or_environment(command)?;
    let env = credentials_as_environment();
    prepare_agent(&env);
    let (program, args) = command
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("no command to run"))?;
    let error = std::process::Command::new(program)
        .args(args)
        .envs(env)
        .env_remove(crate::fleet::workers::COMMAND_VARIABLE)
        .exec();
    Err(anyhow::anyhow!("could not run {program}: {error}"))
}

/// A loop's resume prompt, to be typed once the agent is ready; `None` (and a warning) when
/// the loop cannot be read or has no prompt.
pub fn resume_input(paths: &crate::paths::Paths, name: &str) -> Option<ReadyInput> {
    let record = match crate::fleet::loops::read(paths, name) {
        Ok(record) => record,
        Err(error) => {
            tracing::warn!("no resume prompt for loop {name}: {error}");
            return None;
        }
    };
    if record.prompt.trim().is_empty() {
        return None;
    }
    let config = crate::config::Config::load(&paths.config).unwrap_or_else(|error| {
        tracing::warn!("loop {name}: {error}; typing its prompt with the default timings");
        crate::config::Config::default()
    });
    let text = record.prompt.strip_suffix('\n').unwrap_or(&record.prompt);
    Some(ReadyInput {
        text: text.as_bytes().to_vec(),
        quiet: config.loops.ready_quiet.0,
        settle: record.paste_settle(&config),
        give_up: config.loops.ready_timeout.0,
    })
}

/// The agent's argv: the one given, else `/bin/sh -c "$REIN_AGENT_COMMAND"` (how rein's
/// units pass it, since a transient ExecStart does not survive a daemon-reload intact),
/// with `exec` before a command that is one program, so the shell does not stay.
fn command_or_environment(command: Vec<String>) -> anyhow::Result<Vec<String>> {
    if !command.is_empty() {
        return Ok(command);
    }
    let variable = crate::fleet::workers::COMMAND_VARIABLE;
    let shell = std::env::var(variable)
        .ok()
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| anyhow::anyhow!("no command: give one after --, or set ${variable}"))?;
    let shell = if is_one_program(&shell) {
        format!("exec {shell}")
    } else {
        shell
    };
    Ok(vec!["/bin/sh".to_owned(), "-c".to_owned(), shell])
}

/// What to watch on screen for the agent's own dialogs: the agent named by `$REIN_AGENT`
/// and its markers; recorded next to its socket (`agents/ID/dialog.json`).
fn dialog_watch(socket: &std::path::Path) -> Option<crate::worker::pty::DialogWatch> {
    let agent =
        crate::agents::Agent::from_name(&std::env::var(crate::agents::AGENT_VARIABLE).ok()?)?;
    let markers = crate::agents::dialog_markers(agent);
    if markers.is_empty() {
        return None;
    }
    Some(crate::worker::pty::DialogWatch {
        agent: agent.name().to_owned(),
        markers: markers.iter().map(|m| m.to_string()).collect(),
        file: socket.with_file_name("dialog.json"),
    })
}

/// What `rein-host` was asked to run.
#[derive(Debug, PartialEq)]
pub struct HostArgs {
    pub id: String,
    pub loop_name: Option<String>,
    pub command: Vec<String>,
}

pub const HOST_USAGE: &str = "usage: rein-host ID [--loop NAME] [-- COMMAND...]";

/// Parses `ID [--loop NAME] [-- COMMAND...]`, the arguments rein gives `rein-host` in a
/// worker unit's ExecStart.
pub fn parse_host_args(args: impl IntoIterator<Item = String>) -> Result<HostArgs, String> {
    let mut args = args.into_iter();
    let mut id = None;
    let mut loop_name = None;
    let mut command = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--" => {
                command = args.by_ref().collect();
                break;
            }
            "--loop" => match args.next() {
                Some(name) if !name.is_empty() => loop_name = Some(name),
                _ => return Err("--loop needs a loop's name".to_owned()),
            },
            _ if arg.starts_with("--loop=") => {
                let name = &arg["--loop=".len()..];
                if name.is_empty() {
                    return Err("--loop needs a loop's name".to_owned());
                }
                loop_name = Some(name.to_owned());
            }
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg}")),
            _ if id.is_none() => id = Some(arg),
            _ => {
                return Err(format!(
                    "unexpected argument {arg}; the command goes after --"
                ))
            }
        }
    }
    Ok(HostArgs {
        id: id.ok_or("no worker id given")?,
        loop_name,
        command,
    })
}

/// `rein-host`'s main: the worker's PTY host, as `rein worker host` runs it, without the
/// CLI. Returns the exit code: the agent's, 2 for bad arguments or environment.
pub fn standalone_main() -> i32 {
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|arg| arg.into_string())
        .collect()
    {
        Ok(args) => args,
        Err(arg) => {
            eprintln!("rein-host: an argument is not UTF-8: {arg:?}\n{HOST_USAGE}");
            return 2;
        }
    };
    let args = match parse_host_args(args) {
        Ok(args) => args,
        Err(problem) => {
            eprintln!("rein-host: {problem}\n{HOST_USAGE}");
            return 2;
        }
    };
    let paths = match crate::paths::Paths::from_env() {
        Ok(paths) => paths,
        Err(error) => {
            eprintln!("rein-host: {error}");
            return error.exit_code();
        }
    };
    crate::logging::init_lean(&paths.profile, Some(&args.id));
    match serve(&paths, &args.id, args.loop_name.as_deref(), args.command) {
        Ok(code) => code,
        Err(error) => {
            // The unit's stderr is the journal.
            eprintln!(
                "rein-host: {}",
                crate::text::inert(&crate::error::describe(&error))
            );
            crate::error::exit_code_of(&error)
        }
    }
}

/// Hosts worker `id`'s agent at the worker's socket, typing loop `loop_name`'s resume
/// prompt once it is ready; returns the agent's exit code. What `rein-host` and `rein worker
/// host` both run.
pub fn serve(
    paths: &crate::paths::Paths,
    id: &str,
    loop_name: Option<&str>,
    command: Vec<String>,
) -> anyhow::Result<i32> {
    let socket = paths.data().worker_socket(id)?;
    let on_ready = loop_name.and_then(|name| resume_input(paths, name));
    run(socket, command, on_ready)
}

/// Runs the agent; returns its exit code for the process to exit with.
pub fn run(
    socket: PathBuf,
    command: Vec<String>,
    on_ready: Option<ReadyInput>,
) -> anyhow::Result<i32> {
    let command = command_or_environment(command)?;
    let to_journal = std::path::Path::new("/run/systemd/journal/socket").exists();
    tracing::info!(
        REIN_EVENT = "worker-host",
        "starting agent: {}",
        shell_words::join(&command)
    );
    let env = credentials_as_environment();
    prepare_agent(&env);
    let dialogs = dialog_watch(&socket);
    let code = run_host(HostOptions {
        dialogs,
        command,
        socket,
        env,
        cols: 120,
        rows: 40,
        on_ready,
        transcript: Box::new(TranscriptLog {
            pending: Vec::new(),
            to_journal,
        }),
    })?;
    tracing::info!(REIN_EVENT = "worker-exit", "agent exited with {code}");
    Ok(code)
}

/// POSIX reserved words and the shell's own builtins: a command starting with one of these is
/// left to the shell as written.
const SHELL_WORDS: &[&str] = &[
    "!", "{", "}", "[[", "]]", "case", "do", "done", "elif", "else", "esac", "fi", "for",
    "function", "if", "in", "select", "then", "time", "until", "while", ".", ":", "[", "alias",
    "bg", "break", "cd", "command", "continue", "echo", "eval", "exec", "exit", "export", "false",
    "fc", "fg", "getopts", "hash", "jobs", "kill", "local", "printf", "pwd", "read", "readonly",
    "return", "set", "shift", "test", "times", "trap", "true", "type", "ulimit", "umask",
    "unalias", "unset", "wait",
];

/// Whether `exec COMMAND` runs exactly as `COMMAND` does: one simple command naming a program
/// (no list, pipeline, background job, compound command, leading assignment or redirection,
/// builtin or reserved word). Then `/bin/sh` replaces itself with the agent instead of waiting
/// beside it for the agent's whole life, which would cost every agent's unit a shell
/// process. Anything this cannot tell for sure is left to the shell as written.
fn is_one_program(command: &str) -> bool {
    #[derive(PartialEq)]
    enum Context {
        Top,
        Double,
        Substitution,
    }
    let command = command.trim();
    let first = command.split(char::is_whitespace).next().unwrap_or("");
    let plain_name = !first.is_empty()
        && first
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./+,@%:".contains(c))
        && !first.starts_with('-');
    if !plain_name || SHELL_WORDS.contains(&first) {
        return false;
    }
    let mut stack = vec![Context::Top];
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        let context = stack.last().expect("the stack keeps its bottom");
        match c {
            '`' => return false,
            '\\' => {
                chars.next();
            }
            '$' if chars.peek() == Some(&'(') => {
                chars.next();
                if chars.peek() == Some(&'(') {
                    return false;
                }
                stack.push(Context::Substitution);
            }
            '"' if *context == Context::Double => {
                stack.pop();
            }
            '"' => stack.push(Context::Double),
            _ if *context == Context::Double => {}
            // A single-quoted string runs to the next quote; one that does not end is not ours.
            '\'' if !chars.by_ref().any(|c| c == '\'') => return false,
            '\'' => {}
            ')' if *context == Context::Substitution => {
                stack.pop();
            }
            ';' | '&' | '|' | '\n' | '(' | ')' => return false,
            _ => {}
        }
    }
    stack.len() == 1
}

#[cfg(test)]
mod tests {
    use super::{is_one_program, parse_host_args, HostArgs};

    fn parse(args: &[&str]) -> Result<HostArgs, String> {
        parse_host_args(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn host_arguments_are_an_id_a_loop_and_a_command_after_the_dashes() {
        assert_eq!(
            parse(&["w1"]),
            Ok(HostArgs {
                id: "w1".into(),
                loop_name: None,
                command: vec![],
            })
        );
        assert_eq!(
            parse(&["w1", "--loop", "nightly", "--", "sleep", "--loop", "x"]),
            Ok(HostArgs {
                id: "w1".into(),
                loop_name: Some("nightly".into()),
                command: vec!["sleep".into(), "--loop".into(), "x".into()],
            })
        );
        assert_eq!(
            parse(&["--loop=n", "w1"]).map(|a| (a.id, a.loop_name)),
            Ok(("w1".into(), Some("n".into())))
        );
        for (bad, problem) in [
            (&[][..], "no worker id given"),
            (&["--", "sleep"][..], "no worker id given"),
            (&["w1", "--loop"][..], "--loop needs a loop's name"),
            (&["w1", "--loop="][..], "--loop needs a loop's name"),
            (&["w1", "--json"][..], "unknown option --json"),
            (
                &["w1", "sleep"][..],
                "unexpected argument sleep; the command goes after --",
            ),
        ] {
            assert_eq!(parse(bad), Err(problem.to_owned()), "{bad:?}");
        }
    }

    #[test]
    fn one_program_is_told_from_what_only_a_shell_can_run() {
        for simple in [
            "sleep 100000",
            "claude \"$(cat /home/a/prompts/w1.md)\"",
            "codex --yolo 'a; b | c' \"x && y\"",
            "/usr/bin/env FOO=1 agent",
            "agent \"$(cat \"a b\")\" $(printf x)",
            "agent --flag=value > out.log",
            "pi -p 'it'\\''s'",
        ] {
            assert!(is_one_program(simple), "{simple}");
        }
        for shell in [
            "",
            "exit 1",
            "exec agent",
            "cd /tmp && agent",
            "agent; echo done",
            "agent | tee log",
            "agent &",
            "agent\necho done",
            "FOO=1 agent",
            "(agent)",
            "{ agent; }",
            "if true; then agent; fi",
            "agent `date`",
            "agent $((1 + 2))",
            "\"exit\" 1",
            "ex\\it 1",
            "$AGENT --go",
            ">log agent",
            "2>log agent",
            "agent 'unterminated",
            "agent \"$(cat x",
            "agent \"$(echo a; echo b)\"",
            "! agent",
            "-agent",
        ] {
            assert!(!is_one_program(shell), "{shell:?}");
        }
    }
}
