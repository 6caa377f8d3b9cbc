//! `rein ask`, `answer`, `asks`, `withdraw`: the mailbox verbs.

use std::io::IsTerminal;
use std::time::Instant;

use crate::cli::{output, read_body, worker_id, Context};
use crate::duration::Span;
use crate::error::{Error, EXIT_CONFLICT, EXIT_TIMEOUT, EXIT_USAGE, EXIT_WITHDRAWN};
use crate::journal;
use crate::mailbox::{self, AnswerOutcome, Filing, Mailbox, NewAsk, ResolutionKind};
use crate::text::inert;

pub fn ask(
    context: &Context,
    prompt: Option<String>,
    reference: Option<String>,
    options: Option<String>,
    timeout: Option<Span>,
    worker: Option<String>,
) -> anyhow::Result<i32> {
    let worker = worker_id(worker)?;
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
    let mailbox = Mailbox::new(context.data());
    let (ask, filing) = mailbox.file(&NewAsk {
        worker: worker.clone(),
        prompt: prompt.trim_end().to_owned(),
        reference,
        options,
    })?;
    if filing == Filing::New {
        journal::record(
            mailbox.data_dir(),
            "ask",
            &format!(
                "{} asked {}: {}",
                worker,
                ask.id,
                output::short(&ask.prompt, 120)
            ),
        )?;
    }
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
        eprintln!(
            "rein: no answer to ask {} within {}; it stays pending — run the same ask again to keep waiting",
            ask.id,
            timeout.map(|t| t.to_string()).unwrap_or_default()
        );
        return Ok(EXIT_TIMEOUT);
    };
    // Hand the answer over first, then archive: a crash in between only means a re-run of
    // the same ask is given the same answer again.
    if context.json {
        output::json(&resolution)?;
    }
    let code = match resolution.kind {
        ResolutionKind::Answered => {
            if !context.json {
                output::lines([resolution.text.clone().unwrap_or_default()])?;
            }
            0
        }
        ResolutionKind::Withdrawn => {
            eprintln!("rein: ask {} was {}", ask.id, inert(&resolution.describe()));
            EXIT_WITHDRAWN
        }
    };
    std::io::Write::flush(&mut std::io::stdout())?;
    mailbox.deliver(&ask.id)?;
    Ok(code)
}

pub fn answer(
    context: &Context,
    id: &str,
    text: Option<String>,
    identity: Option<String>,
) -> anyhow::Result<i32> {
    let Some(text) = text else {
        return Err(Error::invalid(format!("no answer given: run `rein answer {id} TEXT`, or `rein answer {id} -` to read it from stdin")).into());
    };
    let text = read_body(&text, "answer")?;
    let by = answering_identity(identity);
    let mailbox = Mailbox::new(context.data());
    let outcome = mailbox.answer(id, &text, &by)?;
    report_outcome(context, &mailbox, id, outcome, "answer")
}

/// The identity an answer is recorded under: the flag, else `$REIN_ANSWER_IDENTITY` (set by
/// the Konsole bridge in the tabs it opens), else `cli:$USER`.
fn answering_identity(flag: Option<String>) -> String {
    flag.or_else(|| {
        std::env::var("REIN_ANSWER_IDENTITY")
            .ok()
            .filter(|s| !s.is_empty())
    })
    .unwrap_or_else(mailbox::default_identity)
}

/// `rein answer --interactive ID`: shows the ask and reads answers from the terminal until
/// one is accepted — or until someone answers it elsewhere, which ends the prompt too.
pub fn answer_interactive(
    context: &Context,
    id: &str,
    identity: Option<String>,
) -> anyhow::Result<i32> {
    let by = answering_identity(identity);
    let mailbox = Mailbox::new(context.data());
    let record = mailbox.get(id)?;
    if let Some(resolution) = &record.resolution {
        eprintln!(
            "rein: ask {id} was already {}",
            inert(&resolution.describe())
        );
        return Ok(EXIT_CONFLICT);
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
    output::lines(lines)?;
    let reader_mailbox = Mailbox::new(context.data());
    let reader_id = id.to_owned();
    let reader_by = by.clone();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        loop {
            eprint!("> ");
            let mut line = String::new();
            match stdin.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    // The terminal is gone: nobody is left to answer here.
                    eprintln!("\nrein: input ended; ask {reader_id} stays pending");
                    std::process::exit(crate::error::EXIT_FAILURE);
                }
                Ok(_) => {}
            }
            if line.trim().is_empty() {
                continue;
            }
            match reader_mailbox.answer(&reader_id, line.trim(), &reader_by) {
                Ok(AnswerOutcome::NotAnOption(options)) => {
                    eprintln!(
                        "not an option; answer one of: {}",
                        inert(&options.join(", "))
                    )
                }
                Ok(_) => return,
                Err(error) => {
                    eprintln!("rein: {error}");
                    return;
                }
            }
        }
    });
    let resolution = mailbox
        .wait(id, None)?
        .ok_or_else(|| anyhow::anyhow!("stopped waiting for ask {id}"))?;
    if resolution.by == by {
        journal::record(
            mailbox.data_dir(),
            "answer",
            &format!("ask {id} {}", resolution.describe()),
        )?;
        output::lines([format!("\nThanks: ask {id} {}", resolution.describe())])?;
    } else {
        output::lines([format!(
            "\nAsk {id} was {} — nothing more to do here.",
            resolution.describe()
        )])?;
    }
    Ok(0)
}

pub fn withdraw(context: &Context, id: &str, identity: Option<String>) -> anyhow::Result<i32> {
    let by = identity.unwrap_or_else(mailbox::default_identity);
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
) -> anyhow::Result<i32> {
    match outcome {
        AnswerOutcome::Accepted(resolution) => {
            journal::record(
                mailbox.data_dir(),
                verb,
                &format!("ask {id} {}", resolution.describe()),
            )?;
            if context.json {
                output::json(&resolution)?;
            } else {
                output::lines([format!("ask {id} {}", resolution.describe())])?;
            }
            Ok(0)
        }
        AnswerOutcome::AlreadyResolved(resolution) => {
            if context.json {
                output::json(
                    &serde_json::json!({"error": "already resolved", "resolution": resolution}),
                )?;
            }
            eprintln!(
                "rein: ask {id} was already {}; your {verb} was not recorded",
                inert(&resolution.describe())
            );
            Ok(EXIT_CONFLICT)
        }
        AnswerOutcome::NotAnOption(options) => {
            eprintln!(
                "rein: that is not an option of ask {id}; answer one of: {}",
                inert(&options.join(", "))
            );
            Ok(EXIT_USAGE)
        }
    }
}

pub fn asks(context: &Context, all: bool) -> anyhow::Result<i32> {
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
    Ok(if listing.problems.is_empty() {
        0
    } else {
        crate::error::EXIT_FAILURE
    })
}
