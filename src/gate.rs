//! The gate: how a sandboxed worker files asks, claims, notes and reports without being able
//! to write the data dir itself.
//!
//! A worker's unit sees the data dir read-only (see [`crate::fleet::sandbox`]), so it can
//! read answers but never write one. What a worker may write goes through the gate: a Unix
//! socket (`run/gate.sock`) that systemd listens on and hands to `rein gate`, a short-lived
//! service outside the sandbox. The gate learns who is calling from the kernel, not from the
//! caller: the peer's pid (`SO_PEERCRED`) names its unit (`GetUnitByPID`), and the unit names
//! the worker. So a worker can file asks, claim, notify and report only as itself, and has
//! no verb to answer or withdraw anything.
//!
//! Protocol: one request per connection, a JSON object on one line ([`Request`]), answered
//! by one JSON object ([`Reply`]). People (outside any worker) run the same operations
//! directly with [`perform`], so both paths share one implementation.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::claims::{self, ClaimOutcome};
use crate::error::{Error, Result, EXIT_CONFLICT, EXIT_FAILURE, EXIT_USAGE};
use crate::mailbox::{FileOptions, Filing, Mailbox, NewAsk};
use crate::store::{self, DataDir};
use crate::{journal, notes};

/// Largest request the gate reads (a report body is the biggest part).
pub const MAX_REQUEST: usize = 2 << 20;
/// Largest report a worker may file.
pub const MAX_REPORT: usize = 1 << 20;
/// How long an idle gate service waits for the next connection before it exits.
const IDLE: Duration = Duration::from_secs(30);
/// How long the gate waits for a caller's request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What a caller asks of the gate (or of [`perform`] directly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// File an ask (or find the same one already filed).
    Ask {
        prompt: String,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        #[serde(default)]
        options: Vec<String>,
    },
    /// The asker has the resolution of its ask: archive it.
    Deliver { id: String },
    /// Take a lease held while `pid` lives.
    Claim { name: String, pid: u32 },
    /// Release a lease; `force` (people only) releases another holder's.
    Unclaim {
        name: String,
        #[serde(default)]
        force: bool,
    },
    /// Leave a note for people.
    Notify { message: String },
    /// File a deliverable under `reports/WORKER/NAME`.
    Report { name: String, body: String },
}

/// The gate's answer: an exit code for the caller, a message for people, and a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub value: serde_json::Value,
}

impl Reply {
    fn ok(message: impl Into<String>, value: serde_json::Value) -> Reply {
        Reply {
            code: 0,
            message: Some(message.into()),
            value,
        }
    }

    fn refused(code: i32, message: impl Into<String>) -> Reply {
        Reply {
            code,
            message: Some(message.into()),
            value: serde_json::Value::Null,
        }
    }

    fn from_error(error: &Error) -> Reply {
        Reply::refused(error.exit_code(), error.to_string())
    }
}

/// Who is calling: a person (who may act for any worker name) or a worker identified by the
/// kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller<'a> {
    Person { worker: &'a str },
    Worker(&'a str),
}

impl Caller<'_> {
    fn worker(&self) -> &str {
        match self {
            Caller::Person { worker } | Caller::Worker(worker) => worker,
        }
    }
}

/// Carries out one request for `caller`. Bad input is a reply with exit 2, never a partial
/// write.
pub fn perform(dir: &DataDir, caller: Caller<'_>, request: &Request) -> Reply {
    match perform_checked(dir, caller, request) {
        Ok(reply) => reply,
        Err(error) => Reply::from_error(&error),
    }
}

fn perform_checked(dir: &DataDir, caller: Caller<'_>, request: &Request) -> Result<Reply> {
    let worker = caller.worker();
    store::validate_id("worker id", worker)?;
    match request {
        Request::Ask {
            prompt,
            reference,
            options,
        } => {
            let mailbox = Mailbox::new(dir.clone());
            // A withdrawal is final for the worker's current run: the same question is not
            // filed again until the worker is started anew.
            let final_since =
                store::read_json::<crate::fleet::workers::WorkerRecord>(&dir.worker(worker)?)
                    .ok()
                    .flatten()
                    .map(|record| record.started);
            let (ask, filing) = mailbox.file_with(
                &NewAsk {
                    worker: worker.to_owned(),
                    prompt: prompt.trim_end().to_owned(),
                    reference: reference.clone(),
                    options: options.clone(),
                },
                FileOptions { final_since },
            )?;
            if filing == Filing::New {
                journal::record_or_warn(
                    dir,
                    "ask",
                    &format!("{worker} asked {}: {}", ask.id, short(&ask.prompt, 120)),
                );
            }
            let filing = match filing {
                Filing::New => "new",
                Filing::Existing => "existing",
            };
            Ok(Reply::ok(
                format!("ask {} filed", ask.id),
                serde_json::json!({"ask": ask, "filing": filing}),
            ))
        }
        Request::Deliver { id } => {
            let mailbox = Mailbox::new(dir.clone());
            let record = mailbox.get(id)?;
            if record.ask.worker != worker {
                return Ok(Reply::refused(
                    EXIT_USAGE,
                    format!(
                        "ask {id} was filed by {}, not by {worker}; only its asker takes delivery",
                        record.ask.worker
                    ),
                ));
            }
            if record.resolution.is_none() {
                return Ok(Reply::refused(
                    EXIT_CONFLICT,
                    format!("ask {id} is still pending; nothing to deliver"),
                ));
            }
            mailbox.deliver(id)?;
            Ok(Reply::ok(
                format!("ask {id} delivered"),
                serde_json::Value::Null,
            ))
        }
        Request::Claim { name, pid } => claim(dir, worker, name, *pid),
        Request::Unclaim { name, force } => unclaim(dir, caller, name, *force),
        Request::Notify { message } => {
            let note = notes::notify(dir, worker, message)?;
            Ok(Reply::ok(
                format!("note {} left for people", note.id),
                serde_json::to_value(&note).unwrap_or_default(),
            ))
        }
        Request::Report { name, body } => {
            store::validate_id("report name", name)?;
            if body.len() > MAX_REPORT {
                return Err(Error::invalid(format!(
                    "the report {name} is {} bytes; the limit is {MAX_REPORT} bytes",
                    body.len()
                )));
            }
            if body.trim().is_empty() {
                return Err(Error::invalid(format!(
                    "the report {name} is empty; give its text"
                )));
            }
            let path = dir.report(worker, name)?;
            dir.create_dirs()?;
            store::ensure_dir(path.parent().unwrap_or(dir.root()))?;
            store::write_atomic(&path, body.as_bytes())?;
            journal::record_or_warn(
                dir,
                "report",
                &format!("{worker} filed report {name} ({} bytes)", body.len()),
            );
            Ok(Reply::ok(
                format!("report {name} filed at {}", path.display()),
                serde_json::json!({"path": path}),
            ))
        }
    }
}

fn claim(dir: &DataDir, worker: &str, name: &str, pid: u32) -> Result<Reply> {
    let outcome = claims::claim(dir, name, worker, pid)?;
    let (claim, code, message) = match outcome {
        ClaimOutcome::Claimed(claim) => (
            claim,
            0,
            format!("claimed {name} for {worker} (held while pid {pid} lives)"),
        ),
        ClaimOutcome::ClaimedAfterReaping { claim, reaped } => (
            claim,
            0,
            format!(
                "claimed {name} for {worker}; reaped the lease of {} whose pid {} is gone",
                reaped.worker, reaped.pid
            ),
        ),
        ClaimOutcome::HeldBy(holder) => {
            let message = format!(
                "{name} is held by {} (pid {}) since {}; wait or pick other work",
                holder.worker,
                holder.pid,
                holder.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            (holder, EXIT_CONFLICT, message)
        }
    };
    if code == 0 {
        journal::record_or_warn(dir, "claim", &format!("{worker} claimed {name}"));
    }
    Ok(Reply {
        code,
        message: Some(message),
        value: serde_json::json!({"claimed": code == 0, "claim": claim}),
    })
}

fn unclaim(dir: &DataDir, caller: Caller<'_>, name: &str, force: bool) -> Result<Reply> {
    let worker = caller.worker();
    if force && matches!(caller, Caller::Worker(_)) {
        return Ok(Reply::refused(
            EXIT_USAGE,
            "a worker releases only its own claims; --force is for people",
        ));
    }
    let path = dir.claim(name)?;
    let Some(held) = store::read_json::<claims::Claim>(&path)? else {
        return Err(Error::NotFound(format!("{name:?} is not claimed")));
    };
    if held.worker != worker && held.holder_alive() && !force {
        return Ok(Reply::refused(
            EXIT_CONFLICT,
            format!(
                "{name} is held by {} (pid {}, alive), not by {worker}; a person may release it with `rein unclaim --force {name}`",
                held.worker, held.pid
            ),
        ));
    }
    match claims::unclaim(dir, name)? {
        Some(claim) => {
            let message = format!("released {name} (held by {})", claim.worker);
            journal::record_or_warn(dir, "unclaim", &message);
            Ok(Reply::ok(
                message,
                serde_json::to_value(&claim).unwrap_or_default(),
            ))
        }
        None => Err(Error::NotFound(format!("{name:?} is not claimed"))),
    }
}

fn short(text: &str, max: usize) -> String {
    let line = text.replace(['\n', '\r'], " ");
    if line.chars().count() <= max {
        return line;
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Sends one request to the gate at `socket` and returns its reply.
pub fn call(socket: &Path, request: &Request) -> anyhow::Result<Reply> {
    let mut stream = UnixStream::connect(socket).map_err(|error| {
        anyhow::anyhow!(
            "cannot reach rein's gate at {}: {error}; a worker's verbs go through it (`rein up` or `rein worker start` creates it)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let (bytes, over) = store::read_capped(&mut stream, MAX_REQUEST)?;
    if over {
        anyhow::bail!("the gate's reply is larger than {MAX_REQUEST} bytes");
    }
    serde_json::from_slice(&bytes).map_err(|error| {
        anyhow::anyhow!(
            "the gate at {} replied with something that is not a reply ({error}); see `rein logs`",
            socket.display()
        )
    })
}

/// The gate service (`rein gate`, started by systemd on a connection): serves connections
/// until it has been idle for a while, then exits; systemd starts it again on the next one.
pub fn serve(paths: &crate::paths::Paths) -> anyhow::Result<i32> {
    use std::os::fd::FromRawFd;
    let fds = sd_notify::listen_fds().map_err(|e| anyhow::anyhow!("reading LISTEN_FDS: {e}"))?;
    let Some(fd) = fds.into_iter().next() else {
        anyhow::bail!("rein gate runs under systemd's socket activation (no LISTEN_FDS); `rein up` sets it up");
    };
    // SAFETY: systemd passed this listening socket to us and nothing else owns it.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    listener.set_nonblocking(true)?;
    crate::fleet::block_on(serve_on(paths.clone(), listener))?
}

async fn serve_on(
    paths: crate::paths::Paths,
    listener: std::os::unix::net::UnixListener,
) -> anyhow::Result<i32> {
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let manager = crate::systemd::Manager::connect().await?;
    let names = crate::fleet::UnitNames::new(&paths);
    loop {
        let accepted = tokio::time::timeout(IDLE, listener.accept()).await;
        let Ok(accepted) = accepted else {
            return Ok(0); // idle: systemd keeps listening and starts us again
        };
        let (stream, _) = accepted?;
        let reply = match handle(&paths, &manager, &names, &stream).await {
            Ok(reply) => reply,
            Err(error) => Reply::refused(EXIT_FAILURE, format!("{error:#}")),
        };
        let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
        bytes.push(b'\n');
        let mut stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        let _ = stream.write_all(&bytes);
    }
}

async fn handle(
    paths: &crate::paths::Paths,
    manager: &crate::systemd::Manager,
    names: &crate::fleet::UnitNames,
    stream: &tokio::net::UnixStream,
) -> anyhow::Result<Reply> {
    let credentials = stream.peer_cred()?;
    // SAFETY: getuid has no preconditions.
    if credentials.uid() != unsafe { libc::getuid() } {
        return Ok(Reply::refused(
            EXIT_USAGE,
            "the gate serves its own user only",
        ));
    }
    let Some(pid) = credentials.pid().and_then(|p| u32::try_from(p).ok()) else {
        return Ok(Reply::refused(EXIT_FAILURE, "the caller's pid is unknown"));
    };
    let unit = manager.unit_of_pid(pid).await?;
    let Some(worker) = unit.as_deref().and_then(|u| names.worker_id(u)) else {
        return Ok(Reply::refused(
            EXIT_USAGE,
            format!(
                "the gate serves the workers of profile {} only (the caller is in {}); people run rein's verbs directly",
                paths.profile,
                unit.as_deref().unwrap_or("no unit")
            ),
        ));
    };
    let worker = worker.to_owned();
    let request = read_request(stream).await?;
    let request = match request {
        Ok(request) => request,
        Err(reply) => return Ok(reply),
    };
    if let Request::Claim { pid: holder, .. } = &request {
        // The holder must be a process of the same worker, so a claim cannot be pinned to
        // someone else's process.
        let holder_unit = manager.unit_of_pid(*holder).await?;
        if holder_unit != unit {
            return Ok(Reply::refused(
                EXIT_USAGE,
                format!("pid {holder} is not a process of worker {worker}"),
            ));
        }
    }
    let dir = paths.data();
    tracing::debug!(REIN_WORKER = worker.as_str(), "gate request {request:?}");
    Ok(perform(&dir, Caller::Worker(&worker), &request))
}

async fn read_request(
    stream: &tokio::net::UnixStream,
) -> anyhow::Result<std::result::Result<Request, Reply>> {
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    loop {
        let ready = tokio::time::timeout_at(deadline, stream.readable()).await;
        if ready.is_err() {
            return Ok(Err(Reply::refused(
                EXIT_USAGE,
                "no request arrived in time",
            )));
        }
        match stream.try_read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => {
                bytes.extend_from_slice(&chunk[..read]);
                if bytes.len() > MAX_REQUEST {
                    return Ok(Err(Reply::refused(
                        EXIT_USAGE,
                        format!("the request is larger than {MAX_REQUEST} bytes"),
                    )));
                }
                if bytes.ends_with(b"\n") {
                    break;
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Ok(serde_json::from_slice(&bytes).map_err(|error| {
        Reply::refused(
            EXIT_USAGE,
            format!("the request is not one the gate knows: {error}"),
        )
    }))
}

/// Reads a reply's value as `T`.
pub fn value<T: serde::de::DeserializeOwned>(reply: &Reply) -> anyhow::Result<T> {
    Ok(serde_json::from_value(reply.value.clone())?)
}
