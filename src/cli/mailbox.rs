//! `rein ask`, `answer`, `asks`, `withdraw`: the mailbox verbs.

use std::io::IsTerminal;
use std::time::Instant;

use crate::cli::{agent_call, output, read_body, Context};
use crate::duration::Span;
use crate::error::Error;
use crate::gate::Request;
use crate::journal;
use crate::mailbox::{self, AnswerOutcome, Ask, Filing, Mailbox, ResolutionKind};
use crate::text::inert;

pub fn ask(
    context: &Context,
    prompt: Option<String>,
    reference: Option<String>,
    options: Option<String>,
    timeout: Option<Span>,
    worker: Option<String>,
) -> anyhow::Result<()> {
    let Some(prompt) = prompt else {
        return Err(Error::invalid(
            "no question given: pass --prompt TEXT, or --prompt - to read it from stdin",
        )
        .into());
    };
    let prompt = read_body(&prompt, "prompt")?;
    let options = options
        .as_deref()
        .map(mailbox::parse_options)
        .transpose()?
        .unwrap_or_default();
    let deadline = timeout.map(|t| Instant::now() + t.0);
    let reply = agent_call(
        context,
        worker.clone(),
        &Request::Ask {
            prompt: prompt.trim_end().to_owned(),
            reference,
            options,
        },
    )?;
    if reply.code != 0 {
        return Err(Error::from_exit_code(
            reply.code,
            reply.message.as_deref().unwrap_or("the ask was not filed"),
        )
        .into());
    }
    let ask: Ask = serde_json::from_value(reply.value["ask"].clone())?;
    let filing = if reply.value["filing"] == "existing" {
        Filing::Existing
    } else {
        Filing::New
    };
    let mailbox = Mailbox::new(context.data());
    if std::io::stderr().is_terminal() {
        let again = if filing == Filing::Existing {
            " (already asked; waiting on it)"
        } else {
            ""
        };
        eprintln!(
            "rein: waiting for an answer to ask {}{again}; answer with `rein answer {} TEXT`",
            ask.id, ask.id
        );
    }
    let Some(resolution) = mailbox.wait(&ask.id, deadline)? else {
        return Err(Error::TimedOut(format!(
            "no answer to ask {} within {}; it stays pending — run the same ask again to keep waiting",
            ask.id,
            timeout.map(|t| t.to_string()).unwrap_or_default()
        ))
        .into());
    };
    // Hand the answer over first, then archive: a crash in between only means a re-run of
    // the same ask is given the same answer again.
    if context.json {
        output::json(&resolution)?;
    }
    let outcome = match resolution.kind {
        ResolutionKind::Answered => {
            if !context.json {
                output::lines([resolution.text.clone().unwrap_or_default()])?;
            }
            Ok(())
        }
        ResolutionKind::Withdrawn => Err(Error::Withdrawn(format!(
            "ask {} was {}",
            ask.id,
            inert(&resolution.describe())
        ))
        .into()),
    };
    std::io::Write::flush(&mut std::io::stdout())?;
    // The asker has its answer; archiving is bookkeeping, so a failure is only a warning.
    match agent_call(context, worker, &Request::Deliver { id: ask.id.clone() }) {
        Ok(reply) if reply.code == 0 => {}
        Ok(reply) => eprintln!(
            "rein: warning: ask {} was not archived: {}",
            ask.id,
            reply.message.unwrap_or_default()
        ),
        Err(error) => eprintln!(
            "rein: warning: ask {} was not archived: {}",
            ask.id,
            crate::error::describe(&error)
        ),
    }
    outcome
}

/// Refuses, before anything is read or written, an answer or withdrawal from inside an agent
/// unit: answers come from people. (The kernel refuses the write anyway: the data dir is
/// read-only there.)
fn refuse_inside_agent(context: &Context, verb: &str, id: &str) -> anyhow::Result<()> {
    let unit = crate::fleet::sandbox::current_agent_unit();
    let in_worker = unit.is_some() || crate::cli::gate_socket(context).is_some();
    if in_worker {
        return Err(Error::Forbidden(format!(
            "answers come from people: an agent cannot {verb} asks (ask {id} stays pending){}",
            unit.map(|u| format!("; this process runs in {u}"))
                .unwrap_or_default()
        ))
        .into());
    }
    Ok(())
}

pub fn answer(
    context: &Context,
    id: &str,
    text: Option<String>,
    identity: Option<String>,
) -> anyhow::Result<()> {
    let Some(text) = text else {
        return Err(Error::invalid(format!("no answer given: run `rein answer {id} TEXT`, or `rein answer {id} -` to read it from stdin")).into());
    };
    refuse_inside_agent(context, "answer", id)?;
    let by = answering_identity(identity)?;
    let text = read_body(&text, "answer")?;
    let mailbox = Mailbox::new(context.data());
    let outcome = mailbox.answer(id, &text, &by)?;
    report_outcome(context, &mailbox, id, outcome, "answer")
}

/// The identity an answer or withdrawal from the command line is recorded under:
/// `cli:$USER`, or `konsole:$USER` when a Konsole tab opened by the bridge says so (the flag
/// or `$REIN_ANSWER_IDENTITY`). Nothing else: a Slack, SMS or email identity can only come
/// from its bridge, and no one can answer as another local user.
fn answering_identity(flag: Option<String>) -> anyhow::Result<String> {
    let user = mailbox::current_user();
    let cli = format!("cli:{user}");
    let konsole = format!("konsole:{user}");
    let wanted = flag.or_else(|| {
        std::env::var("REIN_ANSWER_IDENTITY")
            .ok()
            .filter(|s| !s.is_empty())
    });
    match wanted {
        None => Ok(cli),
        Some(identity) if identity == cli || identity == konsole => Ok(identity),
        Some(identity) => Err(Error::invalid(format!(
            "cannot answer as {identity:?}: answers from the command line are recorded as {cli} (or {konsole} in a Konsole ask tab); slack:, sms: and email: identities come only from their bridges"
        ))
        .into()),
    }
}

/// `rein answer --interactive ID`: shows the ask and reads answers from the terminal until
/// one is accepted — or until someone answers it elsewhere, which ends the prompt too.
pub fn answer_interactive(
    context: &Context,
    id: &str,
    identity: Option<String>,
) -> anyhow::Result<()> {
    refuse_inside_agent(context, "answer", id)?;
    let by = answering_identity(identity)?;
    let mailbox = Mailbox::new(context.data());
    let record = mailbox.get(id)?;
    if let Some(resolution) = &record.resolution {
        return Err(Error::Conflict(format!(
            "ask {id} was already {}",
            inert(&resolution.describe())
        ))
        .into());
    }
    let ask = &record.ask;
    let mut lines = vec![
        format!("Ask {} from worker {}:", ask.id, ask.worker),
        String::new(),
    ];
    lines.extend(ask.prompt.lines().map(|l| format!("  {l}")));
    lines.push(String::new());
    if let Some(reference) = &ask.reference {
        lines.push(format!("About: {reference}"));
    }
    if ask.options.is_empty() {
        lines.push("Type your answer and press Enter.".to_owned());
    } else {
        lines.push(format!("Answer one of: {}", ask.options.join(", ")));
    }
    leave_pending_on_signal(id);
    output::lines(lines)?;
    let resolution = prompt_until_resolved(&mailbox, id, &by)?;
    if resolution.by == by {
        journal::record_or_warn(
            mailbox.data_dir(),
            "answer",
            &format!("ask {id} {}", resolution.describe()),
        );
        output::lines([format!("\nThanks: ask {id} {}", resolution.describe())])?;
    } else {
        output::lines([format!(
            "\nAsk {id} was {} — nothing more to do here.",
            resolution.describe()
        )])?;
    }
    Ok(())
}

/// Reads answers from stdin until one is accepted, while watching for the ask's answer file,
/// so an answer given elsewhere ends the prompt too. One thread waits on both (poll(2) on inotify and
/// stdin): nothing has to end the process from aside.
fn prompt_until_resolved(
    mailbox: &Mailbox,
    id: &str,
    by: &str,
) -> anyhow::Result<crate::mailbox::Resolution> {
    let targets = [mailbox.answer_target(id)];
    let mut watcher = crate::store::watch::Watcher::watching(&targets)?;
    let resolution = read_answers(mailbox, id, by, &mut watcher);
    watcher.release();
    resolution
}

/// [`prompt_until_resolved`]'s loop, on its watch of the answer file.
fn read_answers(
    mailbox: &Mailbox,
    id: &str,
    by: &str,
    watcher: &mut crate::store::watch::Watcher,
) -> anyhow::Result<crate::mailbox::Resolution> {
    use std::io::Read;
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    eprint!("> ");
    loop {
        if let Some(resolution) = mailbox.resolution(id)? {
            return Ok(resolution);
        }
        let wake = watcher.wait_with(None, Some(stdin.as_fd()))?;
        if wake != crate::store::watch::Wake::Readable {
            continue;
        }
        let read = stdin.lock().read(&mut chunk)?;
        if read == 0 {
            // The terminal is gone: nobody is left to answer here.
            eprintln!();
            return Err(Error::Failed(format!("input ended; ask {id} stays pending")).into());
        }
        pending.extend_from_slice(&chunk[..read]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            if line.trim().is_empty() {
                eprint!("> ");
                continue;
            }
            match mailbox.answer(id, line.trim(), by) {
                Ok(AnswerOutcome::NotAnOption(options)) => {
                    eprintln!(
                        "not an option; answer one of: {}",
                        inert(&options.join(", "))
                    );
                    eprint!("> ");
                }
                Ok(_) => break,
                Err(error) => {
                    eprintln!("rein: {}", inert(&error.to_string()));
                    eprint!("> ");
                }
            }
        }
    }
}

/// What the prompt says when a signal ends it; set once, before the handler is installed.
static LEFT_PENDING: std::sync::OnceLock<String> = std::sync::OnceLock::new();

extern "C" fn end_prompt(signal: libc::c_int) {
    if let Some(message) = LEFT_PENDING.get() {
        // SAFETY: write(2) is async-signal-safe and the message is never freed or changed.
        unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
    }
    // SAFETY: _exit(2) is async-signal-safe.
    unsafe { libc::_exit(128 + signal) };
}

/// Ctrl+C (SIGINT), a closed terminal (SIGHUP) or SIGTERM end the prompt with a normal exit
/// (128 + the signal's number) after saying that the ask stays pending. A process killed by
/// a signal is a crash to a terminal emulator: Konsole keeps the tab of one open, with a
/// warning, instead of closing it.
fn leave_pending_on_signal(id: &str) {
    if LEFT_PENDING
        .set(format!("\nrein: ask {id} stays pending\n"))
        .is_err()
    {
        return;
    }
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: sigaction is plain data; all-zero is a valid start, then filled in.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = end_prompt as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

pub fn withdraw(context: &Context, id: &str, identity: Option<String>) -> anyhow::Result<()> {
    refuse_inside_agent(context, "withdraw", id)?;
    let by = answering_identity(identity)?;
    let mailbox = Mailbox::new(context.data());
    let outcome = mailbox.withdraw(id, &by)?;
    report_outcome(context, &mailbox, id, outcome, "withdraw")
}

fn report_outcome(
    context: &Context,
    mailbox: &Mailbox,
    id: &str,
    outcome: AnswerOutcome,
    verb: &str,
) -> anyhow::Result<()> {
    match outcome {
        AnswerOutcome::Accepted(resolution) => {
            journal::record_or_warn(
                mailbox.data_dir(),
                verb,
                &format!("ask {id} {}", resolution.describe()),
            );
            if context.json {
                output::json(&resolution)?;
            } else {
                output::lines([format!("ask {id} {}", resolution.describe())])?;
            }
            Ok(())
        }
        AnswerOutcome::AlreadyResolved(resolution) => {
            if context.json {
                output::json(
                    &serde_json::json!({"error": "already resolved", "resolution": resolution}),
                )?;
            }
            Err(Error::Conflict(format!(
                "ask {id} was already {}; your {verb} was not recorded",
                inert(&resolution.describe())
            ))
            .into())
        }
        AnswerOutcome::NotAnOption(options) => Err(Error::invalid(format!(
            "that is not an option of ask {id}; answer one of: {}",
            inert(&options.join(", "))
        ))
        .into()),
    }
}

pub fn asks(context: &Context, all: bool) -> anyhow::Result<()> {
    let mailbox = Mailbox::new(context.data());
    let listing = if all {
        mailbox.list(true)?
    } else {
        mailbox.pending()?
    };
    if context.json {
        let asks: Vec<_> = listing.records.iter().map(|r| r.to_json()).collect();
        output::json(&asks)?;
    } else if listing.records.is_empty() && listing.problems.is_empty() {
        output::lines([if all {
            "no asks".to_owned()
        } else {
            "no pending asks".to_owned()
        }])?;
    } else {
        let rows = listing
            .records
            .iter()
            .map(|record| {
                let value = record.to_json();
                let state = match &record.resolution {
                    None => "pending".to_owned(),
                    Some(r) => format!(
                        "{}{}",
                        value["state"].as_str().unwrap_or_default(),
                        r.text
                            .as_deref()
                            .map(|t| format!(": {}", output::short(t, 20)))
                            .unwrap_or_default()
                    ),
                };
                vec![
                    record.ask.id.clone(),
                    record.ask.worker.clone(),
                    output::age(record.ask.created),
                    state,
                    if record.ask.options.is_empty() {
                        "-".into()
                    } else {
                        record.ask.options.join(",")
                    },
                    output::short(&record.ask.prompt, 60),
                ]
            })
            .collect();
        output::lines(output::table(
            &["ID", "WORKER", "AGE", "STATE", "OPTIONS", "PROMPT"],
            rows,
        ))?;
    }
    for problem in &listing.problems {
        eprintln!("rein: {problem}");
    }
    if listing.problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "{} file(s) in the mailbox could not be read (named above)",
            listing.problems.len()
        ))
        .into())
    }
}
