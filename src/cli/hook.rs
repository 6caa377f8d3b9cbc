//! `rein hook claude`: the hook rein installs in a claude worker's settings.
//!
//! claude runs it with one JSON object on stdin for each event it is configured for:
//! - `PermissionRequest`: a tool call claude would ask its user about. A call of one of rein's
//!   own worker verbs is allowed at once; anything else becomes a rein ask ("w1 wants to run
//!   `git push origin main`", allow/deny) answered from any bridge, and the decision goes
//!   back to claude. Any failure denies: the gate fails closed.
//! - `Notification`: claude waits for a person (its own permission dialog, or idle at its
//!   prompt). rein records why in `agents/ID/attention.json`, so `rein worker ls` shows the
//!   worker `waiting-human` with the reason.
//! - `UserPromptSubmit`, `PostToolUse`, `Stop`: the agent moved on; the record is cleared.

use std::io::Read;

use serde_json::{json, Value};

use crate::agents;
use crate::cli::{agent_call, Context};
use crate::gate::Request;
use crate::mailbox::{Ask, Mailbox, ResolutionKind};
use crate::store;

/// Largest hook input read (a tool call's input can carry a whole file being written).
const MAX_INPUT: usize = 4 << 20;
/// How much of a tool call a person is shown in the ask.
const SHOWN: usize = 600;

pub fn claude(context: &Context) -> anyhow::Result<()> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_INPUT as u64)
        .read_to_end(&mut input)?;
    let event: Value = serde_json::from_slice(&input).unwrap_or(Value::Null);
    let name = event["hook_event_name"].as_str().unwrap_or_default();
    match name {
        "PermissionRequest" => {
            let decision = permission(context, &event);
            println!("{}", serde_json::to_string(&decision)?);
        }
        "Notification" => {
            let message = event["message"].as_str().unwrap_or("waiting for a person");
            set_attention(context, Some(&format!("claude: {message}")));
        }
        "UserPromptSubmit" | "PostToolUse" | "Stop" => set_attention(context, None),
        _ => {}
    }
    Ok(())
}

fn decision(allow: bool, message: &str) -> Value {
    let mut decision = json!({"behavior": if allow { "allow" } else { "deny" }});
    if !allow {
        decision["message"] = json!(message);
    }
    json!({"hookSpecificOutput": {"hookEventName": "PermissionRequest", "decision": decision}})
}

/// What a person is asked about a tool call: the command for a shell call, the file for an
/// edit, the input otherwise — cut to a readable length.
fn describe(worker: &str, tool: &str, input: &Value) -> String {
    let cut = |text: &str| -> String {
        let text = text.trim();
        if text.chars().count() <= SHOWN {
            text.to_owned()
        } else {
            let mut cut: String = text.chars().take(SHOWN).collect();
            cut.push('…');
            cut
        }
    };
    match (tool, input) {
        ("Bash", input) => format!(
            "{worker} wants to run `{}`",
            cut(input["command"].as_str().unwrap_or_default())
        ),
        (_, input) if input["file_path"].is_string() => format!(
            "{worker} wants to use {tool} on {}",
            cut(input["file_path"].as_str().unwrap_or_default())
        ),
        (_, input) if input["url"].is_string() => format!(
            "{worker} wants to use {tool} on {}",
            cut(input["url"].as_str().unwrap_or_default())
        ),
        (_, input) => format!("{worker} wants to use {tool}: {}", cut(&input.to_string())),
    }
}

fn permission(context: &Context, event: &Value) -> Value {
    let tool = event["tool_name"].as_str().unwrap_or("a tool");
    let input = &event["tool_input"];
    let rein_bin = std::env::var("REIN_BIN").unwrap_or_default();
    if tool == "Bash"
        && agents::is_rein_verb(input["command"].as_str().unwrap_or_default(), &rein_bin)
    {
        return decision(true, "");
    }
    let worker = std::env::var("REIN_WORKER_ID").unwrap_or_else(|_| "the agent".to_owned());
    match ask(context, &describe(&worker, tool, input), tool) {
        Ok((true, _)) => decision(true, ""),
        Ok((false, message)) => decision(false, &message),
        Err(error) => decision(
            false,
            &format!("rein could not ask a person about this ({error:#}); not allowed"),
        ),
    }
}

/// Files the permission ask through the gate and waits for a person's answer.
fn ask(context: &Context, prompt: &str, tool: &str) -> anyhow::Result<(bool, String)> {
    let reply = agent_call(
        context,
        None,
        &Request::Ask {
            prompt: prompt.to_owned(),
            reference: Some(format!("tool:{tool}")),
            options: vec!["allow".to_owned(), "deny".to_owned()],
        },
    )?;
    if reply.code != 0 {
        anyhow::bail!("{}", reply.message.unwrap_or_default());
    }
    let filed: Ask = serde_json::from_value(reply.value["ask"].clone())?;
    set_attention(context, Some(&format!("ask {}: {prompt}", filed.id)));
    let mailbox = Mailbox::new(context.data());
    let resolution = mailbox
        .wait(&filed.id, None)?
        .ok_or_else(|| anyhow::anyhow!("stopped waiting for ask {}", filed.id))?;
    let _ = agent_call(
        context,
        None,
        &Request::Deliver {
            id: filed.id.clone(),
        },
    );
    set_attention(context, None);
    Ok(match resolution.kind {
        ResolutionKind::Answered if resolution.text.as_deref() == Some("allow") => {
            (true, String::new())
        }
        ResolutionKind::Answered => (
            false,
            format!(
                "A person ({}) denied this through rein ask {}.",
                resolution.by, filed.id
            ),
        ),
        ResolutionKind::Withdrawn => (
            false,
            format!(
                "rein ask {} was {}; not allowed.",
                filed.id,
                resolution.describe()
            ),
        ),
    })
}

/// Records (or clears) why the agent waits for a person, in its own writable directory.
fn set_attention(context: &Context, reason: Option<&str>) {
    let Ok(id) = std::env::var("REIN_WORKER_ID") else {
        return;
    };
    let Ok(path) = context.data().agent_attention(&id) else {
        return;
    };
    let result = match reason {
        Some(reason) => store::write_atomic_mode(
            &path,
            &store::to_json_bytes(&json!({
                "reason": reason,
                "since": chrono::Utc::now(),
            })),
            0o600,
        ),
        None => store::remove_file(&path).map(|_| ()),
    };
    if let Err(error) = result {
        eprintln!("rein hook: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_are_described_for_people() {
        assert_eq!(
            describe("w1", "Bash", &json!({"command": "git push origin main"})),
            "w1 wants to run `git push origin main`"
        );
        assert_eq!(
            describe(
                "w1",
                "Write",
                &json!({"file_path": "/srv/p/x.rs", "content": "…"})
            ),
            "w1 wants to use Write on /srv/p/x.rs"
        );
        let long = "x".repeat(2000);
        assert!(
            describe("w1", "Bash", &json!({ "command": long }))
                .chars()
                .count()
                < 700
        );
    }

    #[test]
    fn decisions_have_claudes_shape() {
        assert_eq!(
            decision(false, "no")["hookSpecificOutput"]["decision"],
            json!({"behavior": "deny", "message": "no"})
        );
        assert_eq!(
            decision(true, "")["hookSpecificOutput"]["decision"],
            json!({"behavior": "allow"})
        );
    }
}
