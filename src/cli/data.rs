//! `rein init`, `goal`, `sensor`, `playbook`, `notify`, `journal`, `claim`, `unclaim`,
//! `report`.

use chrono::Utc;

use crate::claims;
use crate::cli::{
    agent_call, output, print_reply, read_body, require_body, Context, GoalCommand,
    PlaybookCommand, SensorCommand,
};
use crate::config::Preset;
use crate::error::Error;
use crate::gate::Request;
use crate::store;
use crate::{journal, seed, state, world};

pub fn init(context: &Context, runner: Option<Preset>) -> anyhow::Result<()> {
    let report = seed::init(&context.paths.config, &context.data(), runner)?;
    if context.json {
        output::json(&report)?;
        return Ok(());
    }
    let mut lines = Vec::new();
    for path in &report.created {
        lines.push(format!("created {path}"));
    }
    for path in &report.kept {
        lines.push(format!("kept    {path} (already there)"));
    }
    if let Some(id) = &report.setup_ask {
        lines.push(format!(
            "setup ask {id} is pending: `rein asks`, then `rein answer {id} done`"
        ));
    }
    output::lines(lines)?;
    Ok(())
}

fn stamp() -> String {
    Utc::now().format("%Y%m%dt%H%M%S%3f").to_string()
}

pub fn goal(context: &Context, command: GoalCommand) -> anyhow::Result<()> {
    let data = context.data();
    match command {
        GoalCommand::Write { id, body } => {
            let path = data.goal(&id)?;
            let body = read_body(&body, "goal")?;
            require_body(&body, "goal")?;
            data.create_dirs()?;
            let existed = path.exists();
            store::write_atomic(&path, ensure_newline(body).as_bytes())?;
            journal::record_or_warn(
                &data,
                "goal",
                &format!("{} goal {id}", if existed { "updated" } else { "wrote" }),
            );
            output::lines([format!("goal {id} written to {}", path.display())])?;
        }
        GoalCommand::Archive { id } => {
            let path = data.goal(&id)?;
            let target = data.archived_goal(&id, &stamp());
            if !store::move_file(&path, &target)? {
                return Err(
                    Error::NotFound(format!("no goal {id:?}; `rein goal ls` lists them")).into(),
                );
            }
            journal::record_or_warn(&data, "goal", &format!("archived goal {id}"));
            output::lines([format!("goal {id} archived to {}", target.display())])?;
        }
        GoalCommand::Ls => {
            let goals = state::goals(&data)?;
            if context.json {
                output::json(&goals)?;
            } else {
                let rows = goals.into_iter().map(|g| vec![g.id, g.title]).collect();
                output::lines(output::table(&["ID", "TITLE"], rows))?;
            }
        }
    }
    Ok(())
}

fn ensure_newline(mut body: String) -> String {
    if !body.ends_with('\n') {
        body.push('\n');
    }
    body
}

pub fn sensor(context: &Context, command: SensorCommand) -> anyhow::Result<()> {
    let data = context.data();
    match command {
        SensorCommand::Write { name, body } => {
            let path = data.sensor(&name)?;
            let body = read_body(&body, "sensor script")?;
            require_body(&body, "sensor script")?;
            // A `# rein:` line that would make the sensor fail at every beat is refused now.
            world::interval(body.as_bytes())
                .map_err(|why| Error::Invalid(format!("sensor {name}: {why}")))?;
            data.create_dirs()?;
            store::write_atomic_mode(&path, ensure_newline(body).as_bytes(), store::SCRIPT_MODE)?;
            journal::record_or_warn(&data, "sensor", &format!("wrote sensor {name}"));
            output::lines([format!(
                "sensor {name} written to {}; `rein sense` runs it",
                path.display()
            )])?;
        }
        SensorCommand::Rm { name } => {
            let path = data.sensor(&name)?;
            let target = data.archived_sensor(&name, &stamp());
            if !store::move_file(&path, &target)? {
                return Err(Error::NotFound(format!(
                    "no sensor {name:?}; `rein sensor ls` lists them"
                ))
                .into());
            }
            journal::record_or_warn(
                &data,
                "sensor",
                &format!("removed sensor {name} (archived)"),
            );
            output::lines([format!("sensor {name} archived to {}", target.display())])?;
        }
        SensorCommand::Ls => {
            let snapshots = world::snapshots(&data)?;
            let sensors = store::list(&data.sensors(), ".sh")?;
            // How often beats run each one: `None` at every beat, or the reason its
            // `# rein: every` line is not understood.
            // A script that cannot be read shows its error in its snapshot.
            let every = |path: &std::path::Path| {
                let head = world::script_head(path).map(|(_, head)| head);
                world::interval(&head.unwrap_or_default())
            };
            if context.json {
                let list: Vec<_> = sensors
                    .iter()
                    .map(|(name, path)| {
                        let every_secs = every(path).ok().flatten().map(|d| d.as_secs_f64());
                        serde_json::json!({"name": name, "path": path, "every_secs": every_secs, "snapshot": snapshots.get(name)})
                    })
                    .collect();
                output::json(&list)?;
            } else {
                let rows = sensors
                    .into_iter()
                    .map(|(name, path)| {
                        let runs = match every(&path) {
                            Ok(None) => "every beat".to_owned(),
                            Ok(Some(span)) => {
                                format!("every {}", crate::duration::Span(span))
                            }
                            Err(_) => "(bad `# rein:` line)".to_owned(),
                        };
                        let last = match snapshots.get(&name) {
                            None => "never run".to_owned(),
                            Some(s) if s.ok => {
                                format!("ok, the same since {} ago", output::age(s.taken))
                            }
                            Some(s) => format!(
                                "failed, the same since {} ago: {}",
                                output::age(s.taken),
                                s.error.as_deref().unwrap_or("")
                            ),
                        };
                        vec![name, runs, last]
                    })
                    .collect();
                output::lines(output::table(&["NAME", "RUNS", "LAST READING"], rows))?;
            }
        }
    }
    Ok(())
}

pub fn playbook(context: &Context, command: PlaybookCommand) -> anyhow::Result<()> {
    let data = context.data();
    match command {
        PlaybookCommand::Write { body } => {
            let body = read_body(&body, "playbook")?;
            require_body(&body, "playbook")?;
            data.create_dirs()?;
            store::write_atomic(&data.playbook(), ensure_newline(body).as_bytes())?;
            journal::record_or_warn(&data, "playbook", "rewrote the playbook");
            output::lines([format!("playbook written to {}", data.playbook().display())])?;
        }
        PlaybookCommand::Show => {
            let text = store::read_text(&data.playbook())?.ok_or_else(|| {
                Error::NotFound(format!(
                    "no playbook at {}; run `rein init` or `rein playbook write -`",
                    data.playbook().display()
                ))
            })?;
            if context.json {
                output::json(&serde_json::json!({"path": data.playbook(), "text": text}))?;
            } else {
                print!("{text}");
            }
        }
    }
    Ok(())
}

pub fn notify(context: &Context, message: &str, worker: Option<String>) -> anyhow::Result<()> {
    let message = read_body(message, "message")?;
    let reply = agent_call(context, worker, &Request::Notify { message })?;
    print_reply(context, &reply)
}

pub fn journal(context: &Context, count: usize) -> anyhow::Result<()> {
    let lines = journal::tail(&context.data(), count)?;
    if context.json {
        output::json(&lines)?;
    } else {
        output::lines(lines)?;
    }
    Ok(())
}

pub fn claim(
    context: &Context,
    name: &str,
    pid: Option<u32>,
    worker: Option<String>,
) -> anyhow::Result<()> {
    let pid = pid.unwrap_or_else(std::os::unix::process::parent_id);
    if claims::process_start(pid).is_none() {
        return Err(Error::invalid(format!(
            "no process {pid} to hold the claim; pass --pid of a running process"
        ))
        .into());
    }
    let reply = agent_call(
        context,
        worker,
        &Request::Claim {
            name: name.to_owned(),
            pid,
        },
    )?;
    print_reply(context, &reply)
}

pub fn unclaim(context: &Context, name: &str, force: bool) -> anyhow::Result<()> {
    let reply = agent_call(
        context,
        None,
        &Request::Unclaim {
            name: name.to_owned(),
            force,
        },
    )?;
    print_reply(context, &reply)
}

pub fn report(
    context: &Context,
    name: &str,
    text: Option<String>,
    file: Option<std::path::PathBuf>,
    worker: Option<String>,
) -> anyhow::Result<()> {
    let body = match (text, file) {
        (Some(text), _) => read_body(&text, "report")?,
        (None, Some(path)) => {
            let file = std::fs::File::open(&path).map_err(|error| {
                Error::invalid(format!(
                    "cannot read the report {}: {error}",
                    path.display()
                ))
            })?;
            let (bytes, over) = crate::store::read_capped(
                &mut std::io::BufReader::new(file),
                crate::gate::MAX_REPORT,
            )?;
            if over {
                return Err(Error::invalid(format!(
                    "the report {} is larger than {} bytes",
                    path.display(),
                    crate::gate::MAX_REPORT
                ))
                .into());
            }
            String::from_utf8(bytes).map_err(|_| {
                Error::invalid(format!("the report {} is not UTF-8 text", path.display()))
            })?
        }
        (None, None) => {
            return Err(
                Error::invalid("give the report's text, - for stdin, or --file PATH").into(),
            )
        }
    };
    let reply = agent_call(
        context,
        worker,
        &Request::Report {
            name: name.to_owned(),
            body,
        },
    )?;
    print_reply(context, &reply)
}
