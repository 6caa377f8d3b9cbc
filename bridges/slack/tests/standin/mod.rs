//! A local stand-in for Slack, speaking the documented wire format strictly, on 127.0.0.1.
//!
//! - Web API (`POST /api/METHOD`): `apps.connections.open` wants the app token
//!   (`Authorization: Bearer xapp-…`) and returns a single-use `ws://` URL; `chat.postMessage`
//!   and `chat.update` want the bot token (`xoxb-…`), a JSON body with `channel` and `text`, a
//!   known channel, and blocks within Block Kit's limits. Failures are HTTP 200 with
//!   `{"ok": false, "error": …}`, as Slack does; a rate limit is HTTP 429 with `Retry-After`.
//! - Socket Mode (`GET /link/?ticket=…`): sends `hello`, then the envelopes a test injects;
//!   records acknowledgements; delivers an envelope again (retry_attempt + 1) when it was not
//!   acknowledged in time, on the next connection, or when a test says so; drops the
//!   connection or sends `disconnect` on command. What Slack would refuse (a reused ticket,
//!   a bad upgrade request, unmasked or malformed frames, text that is no ack) is recorded
//!   in `Record::protocol_errors`.
//! - `chat.postMessage` with a `thread_ts` wants a message Slack knows in that channel: one
//!   posted, or one an injected envelope is about.
//! - `chat.postEphemeral` wants `channel`, `user` (a `U…` id) and `text`; it is recorded apart
//!   from the messages everyone sees.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite;

pub const APP_TOKEN: &str = "xapp-1-A0STANDIN-1-secret";
pub const BOT_TOKEN: &str = "xoxb-1-standin-secret";
/// How long a socket test waits for anything before failing.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// The largest frame or message the stand-in takes from a client (acks are tiny).
const MAX_MESSAGE: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
    pub text: String,
    pub blocks: Option<Value>,
    pub thread_ts: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Updated {
    pub channel: String,
    pub ts: String,
    pub text: String,
    pub blocks: Option<Value>,
}

enum Command {
    Send(Value),
    Drop,
}

/// A `chat.postEphemeral`: a message only `user` sees.
#[derive(Debug, Clone)]
pub struct Ephemeral {
    pub channel: String,
    pub user: String,
    pub text: String,
    pub thread_ts: Option<String>,
}

#[derive(Default)]
pub struct Record {
    pub posted: Vec<Posted>,
    pub updated: Vec<Updated>,
    pub ephemeral: Vec<Ephemeral>,
    /// Web API methods called, in order (rate-limited calls included).
    pub calls: Vec<String>,
    /// WebSocket connections accepted (each got a hello).
    pub connections: usize,
    /// Whether a connection is open now.
    pub connected: bool,
    /// Envelope ids acknowledged, in order, repeats included.
    pub acks: Vec<String>,
    /// Anything the client sent that Slack would not accept.
    pub protocol_errors: Vec<String>,
    /// Envelopes sent, with the retry_attempt each carried.
    pub deliveries: Vec<(String, u64)>,
    tickets: HashSet<String>,
    next_ts: u64,
    rate_limited: u32,
    retry_after: u64,
    current: Option<(usize, mpsc::UnboundedSender<Command>)>,
    /// Envelope id → the latest envelope sent, until acknowledged.
    unacked: HashMap<String, Value>,
    /// Every envelope by id, for forced redelivery.
    envelopes: HashMap<String, Value>,
    /// Injected while no connection was open.
    queued: Vec<Value>,
    /// (channel, ts) of messages posted by others that injected envelopes were about.
    seen: HashSet<(String, String)>,
    next_id: u64,
}

impl Record {
    /// The ids of every envelope injected, sorted (redeliveries counted once).
    pub fn envelope_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.envelopes.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Whether message `ts` exists in `channel`, as far as this Slack knows.
    fn knows(&self, channel: &str, ts: &str) -> bool {
        self.posted
            .iter()
            .any(|m| m.channel == channel && m.ts == ts)
            || self.seen.contains(&(channel.to_owned(), ts.to_owned()))
    }
}

struct Shared {
    record: Mutex<Record>,
    changed: watch::Sender<u64>,
    addr: SocketAddr,
    channels: Vec<String>,
    ack_timeout: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn protocol_error(&self, problem: String) {
        self.lock().protocol_errors.push(problem);
        self.bump();
    }
}

pub struct SlackStandin {
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for SlackStandin {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl SlackStandin {
    /// Serves the Web API and Socket Mode for `channels` on a free port of 127.0.0.1.
    pub async fn start(channels: &[&str]) -> SlackStandin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            record: Mutex::new(Record {
                next_ts: 1,
                ..Record::default()
            }),
            changed,
            addr,
            channels: channels.iter().map(|c| c.to_string()).collect(),
            ack_timeout: Duration::from_secs(3),
        });
        let router = Router::new()
            .route("/api/{method}", post(web_api))
            .route("/link/", get(link))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        SlackStandin { shared, server }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.shared.addr)
    }

    pub fn record(&self) -> MutexGuard<'_, Record> {
        self.shared.lock()
    }

    /// The next `times` Web API calls get HTTP 429 with `Retry-After: seconds`.
    pub fn rate_limit(&self, times: u32, seconds: u64) {
        let mut record = self.shared.lock();
        record.rate_limited = times;
        record.retry_after = seconds;
    }

    /// Waits until `check` finds what it looks for, or fails the test after [`DEADLINE`].
    pub async fn wait_for<T>(&self, what: &str, mut check: impl FnMut(&Record) -> Option<T>) -> T {
        let mut changed = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(found) = check(&self.shared.lock()) {
                return found;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => panic!("timed out after {DEADLINE:?} waiting for {what}"),
            }
        }
    }

    fn next_id(&self, prefix: &str) -> String {
        let mut record = self.shared.lock();
        record.next_id += 1;
        format!("{prefix}{:04}", record.next_id)
    }

    /// Sends an envelope on the open connection (or the next one), and returns its id.
    pub fn inject(&self, envelope: Value) -> String {
        let id = envelope["envelope_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        deliver(&self.shared, envelope);
        id
    }

    /// Sends envelope `id` again with retry_attempt + 1, acknowledged or not (a lost ack).
    pub fn redeliver(&self, id: &str) {
        let envelope = self
            .shared
            .lock()
            .envelopes
            .get(id)
            .cloned()
            .expect("a known envelope");
        deliver(&self.shared, retried(&envelope));
    }

    /// Closes the TCP connection without a close frame, as a network failure would.
    pub fn drop_connection(&self) {
        if let Some((_, sender)) = &self.shared.lock().current {
            let _ = sender.send(Command::Drop);
        }
    }

    /// Asks the client to reconnect, as Slack does before it rotates a connection.
    pub fn disconnect(&self, reason: &str) {
        self.inject(
            json!({ "type": "disconnect", "reason": reason, "debug_info": { "host": "standin" } }),
        );
    }

    /// A person clicking a button of message `message_ts` in `channel`.
    pub fn click(
        &self,
        user: &str,
        channel: &str,
        message_ts: &str,
        action_id: &str,
        value: &str,
    ) -> Value {
        let action = json!({
            "type": "button", "action_id": action_id, "block_id": "b1", "value": value,
            "text": { "type": "plain_text", "text": "option", "emoji": false },
        });
        self.click_envelope(user, channel, message_ts, action)
    }

    /// A person clicking the button with `value` that the bridge posted (or last updated) on
    /// message `message_ts` in `channel`: the action carries that button's `action_id`,
    /// `text` and `value` and its actions block's `block_id`. Fails the test when the
    /// message has no such button.
    pub fn click_posted(&self, user: &str, channel: &str, message_ts: &str, value: &str) -> Value {
        let action = {
            let record = self.shared.lock();
            let blocks = record
                .posted
                .iter()
                .find(|m| m.channel == channel && m.ts == message_ts)
                .unwrap_or_else(|| panic!("no message {message_ts} in {channel}"))
                .blocks
                .clone()
                .unwrap_or_default();
            blocks
                .as_array()
                .into_iter()
                .flatten()
                .filter(|block| block["type"] == "actions")
                .find_map(|block| {
                    let button = block["elements"]
                        .as_array()?
                        .iter()
                        .find(|b| b["type"] == "button" && b["value"] == value)?;
                    // Slack makes up a block_id when the app gave none.
                    let block_id = block["block_id"].as_str().unwrap_or("standin-block");
                    Some(json!({
                        "type": "button", "action_id": button["action_id"],
                        "block_id": block_id, "value": value, "text": button["text"],
                    }))
                })
                .unwrap_or_else(|| {
                    panic!("no button with value {value:?} on message {message_ts}: {blocks}")
                })
        };
        self.click_envelope(user, channel, message_ts, action)
    }

    /// The `interactive` envelope of `user` doing `action` on message `message_ts`.
    fn click_envelope(&self, user: &str, channel: &str, message_ts: &str, action: Value) -> Value {
        let envelope_id = self.next_id("env-click-");
        let mut action = action;
        action["action_ts"] = json!(format!("1800000000.{}", &envelope_id[10..]));
        json!({
            "envelope_id": envelope_id,
            "type": "interactive",
            "accepts_response_payload": false,
            "payload": {
                "type": "block_actions",
                "user": { "id": user, "username": "person", "name": "person", "team_id": "T0STANDIN" },
                "api_app_id": "A0STANDIN",
                "token": "verification-token",
                "container": { "type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": false },
                "trigger_id": "123.456.abc",
                "team": { "id": "T0STANDIN", "domain": "standin" },
                "channel": { "id": channel, "name": "ops" },
                "message": { "type": "message", "ts": message_ts, "text": "an ask", "user": "U0BOT", "bot_id": "B0BOT" },
                "response_url": format!("http://{}/actions/1", self.shared.addr),
                "actions": [action],
            }
        })
    }

    /// A `message` event: `thread_ts` makes it a thread reply; `bot` makes it a bot's.
    pub fn message(
        &self,
        user: &str,
        channel: &str,
        text: &str,
        thread_ts: Option<&str>,
        bot: bool,
    ) -> Value {
        let envelope_id = self.next_id("env-event-");
        let ts = format!("1700000500.{}", &envelope_id[10..]);
        let mut event = json!({
            "type": "message", "channel": channel, "user": user, "text": text, "ts": ts,
            "event_ts": ts, "channel_type": "channel", "team": "T0STANDIN",
        });
        if let Some(thread_ts) = thread_ts {
            event["thread_ts"] = json!(thread_ts);
            event["parent_user_id"] = json!("U0BOT");
        }
        if bot {
            event["bot_id"] = json!("B0BOT");
            event["app_id"] = json!("A0STANDIN");
        }
        json!({
            "envelope_id": envelope_id,
            "type": "events_api",
            "accepts_response_payload": false,
            "retry_attempt": 0,
            "retry_reason": "",
            "payload": {
                "token": "verification-token", "team_id": "T0STANDIN", "api_app_id": "A0STANDIN",
                "type": "event_callback", "event_id": format!("Ev{}", &envelope_id[10..]),
                "event_time": 1_700_000_500, "event": event,
            }
        })
    }
}

fn retried(envelope: &Value) -> Value {
    let mut again = envelope.clone();
    if envelope["type"] == "events_api" || envelope["type"] == "interactive" {
        again["retry_attempt"] = json!(envelope["retry_attempt"].as_u64().unwrap_or(0) + 1);
        again["retry_reason"] = json!("timeout");
    }
    again
}

/// Sends now if connected, else queues for the next connection; arms the ack timer.
fn deliver(shared: &Arc<Shared>, envelope: Value) {
    let id = envelope["envelope_id"].as_str().map(str::to_owned);
    {
        let mut record = shared.lock();
        for (channel, ts) in about(&envelope) {
            record.seen.insert((channel, ts));
        }
        if let Some(id) = &id {
            record.unacked.insert(id.clone(), envelope.clone());
            record.envelopes.insert(id.clone(), envelope.clone());
        }
        match &record.current {
            Some((_, sender)) => {
                let _ = sender.send(Command::Send(envelope.clone()));
            }
            None => record.queued.push(envelope.clone()),
        }
    }
    let Some(id) = id else { return };
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(shared.ack_timeout).await;
        let again = {
            let record = shared.lock();
            match record.unacked.get(&id) {
                Some(latest) if latest["retry_attempt"].as_u64().unwrap_or(0) < 3 => {
                    Some(retried(latest))
                }
                _ => None,
            }
        };
        if let Some(again) = again {
            deliver(&shared, again);
        }
    });
}

/// The (channel, ts) of messages an envelope shows to exist: a clicked message, an event's
/// message and the thread it is in.
fn about(envelope: &Value) -> Vec<(String, String)> {
    let payload = &envelope["payload"];
    let event = &payload["event"];
    let mut messages = Vec::new();
    let container = &payload["container"];
    for (channel, ts) in [
        (&container["channel_id"], &container["message_ts"]),
        (&event["channel"], &event["ts"]),
        (&event["channel"], &event["thread_ts"]),
    ] {
        if let (Some(channel), Some(ts)) = (channel.as_str(), ts.as_str()) {
            messages.push((channel.to_owned(), ts.to_owned()));
        }
    }
    messages
}

fn slack_error(error: &str) -> Response {
    Json(json!({ "ok": false, "error": error })).into_response()
}

async fn web_api(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut record = shared.lock();
    record.calls.push(method.clone());
    shared.bump();
    if record.rate_limited > 0 {
        record.rate_limited -= 1;
        let after = record.retry_after.to_string();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, after)],
            Json(json!({ "ok": false, "error": "ratelimited" })),
        )
            .into_response();
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return slack_error("not_authed");
    };
    match method.as_str() {
        "apps.connections.open" => {
            if !token.starts_with("xapp-") {
                return slack_error("not_allowed_token_type");
            }
            if token != APP_TOKEN {
                return slack_error("invalid_auth");
            }
            record.next_id += 1;
            let ticket = format!("ticket-{}", record.next_id);
            record.tickets.insert(ticket.clone());
            let url = format!(
                "ws://{}/link/?ticket={ticket}&app_id=A0STANDIN",
                shared.addr
            );
            Json(json!({ "ok": true, "url": url })).into_response()
        }
        "chat.postMessage" | "chat.update" | "chat.postEphemeral" => {
            if !token.starts_with("xoxb-") {
                return slack_error("not_allowed_token_type");
            }
            if token != BOT_TOKEN {
                return slack_error("invalid_auth");
            }
            let json_body = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            if !json_body {
                return slack_error("invalid_form_data");
            }
            let Ok(body) = serde_json::from_slice::<Value>(&body) else {
                return slack_error("invalid_json");
            };
            chat(&shared, &mut record, &method, &body)
        }
        _ => slack_error("unknown_method"),
    }
}

fn chat(shared: &Shared, record: &mut Record, method: &str, body: &Value) -> Response {
    let Some(channel) = body["channel"]
        .as_str()
        .filter(|c| shared.channels.iter().any(|k| k == c))
    else {
        return slack_error("channel_not_found");
    };
    let Some(text) = body["text"].as_str().filter(|t| !t.trim().is_empty()) else {
        return slack_error("no_text");
    };
    if method == "chat.postEphemeral" {
        let Some(user) = body["user"].as_str().filter(|u| u.starts_with('U')) else {
            return slack_error("user_not_found");
        };
        let thread_ts = body["thread_ts"].as_str().map(str::to_owned);
        record.ephemeral.push(Ephemeral {
            channel: channel.to_owned(),
            user: user.to_owned(),
            text: text.to_owned(),
            thread_ts,
        });
        record.next_ts += 1;
        let ts = format!("1700000000.{:06}", record.next_ts);
        return Json(json!({ "ok": true, "message_ts": ts })).into_response();
    }
    if text.chars().count() > 40_000 {
        return slack_error("msg_too_long");
    }
    let blocks = body.get("blocks").cloned();
    if let Some(blocks) = &blocks {
        if let Err(problem) = check_blocks(blocks) {
            return Json(json!({ "ok": false, "error": "invalid_blocks", "errors": [problem] }))
                .into_response();
        }
    }
    if method == "chat.update" {
        let Some(ts) = body["ts"].as_str() else {
            return slack_error("message_not_found");
        };
        let Some(message) = record
            .posted
            .iter_mut()
            .find(|m| m.channel == channel && m.ts == ts)
        else {
            return slack_error("message_not_found");
        };
        message.text = text.to_owned();
        message.blocks = blocks.clone();
        record.updated.push(Updated {
            channel: channel.to_owned(),
            ts: ts.to_owned(),
            text: text.to_owned(),
            blocks,
        });
        return Json(json!({ "ok": true, "channel": channel, "ts": ts, "text": text }))
            .into_response();
    }
    let thread_ts = match &body["thread_ts"] {
        Value::Null => None,
        Value::String(ts) if record.knows(channel, ts) => Some(ts.clone()),
        Value::String(_) => return slack_error("thread_not_found"),
        _ => return slack_error("invalid_arguments"),
    };
    let ts = format!("1700000000.{:06}", record.next_ts);
    record.next_ts += 1;
    record.posted.push(Posted {
        channel: channel.to_owned(),
        ts: ts.clone(),
        text: text.to_owned(),
        blocks: blocks.clone(),
        thread_ts: thread_ts.clone(),
    });
    let mut message =
        json!({ "type": "message", "text": text, "user": "U0BOT", "bot_id": "B0BOT", "ts": ts });
    if let Some(blocks) = blocks {
        message["blocks"] = blocks;
    }
    if let Some(thread_ts) = thread_ts {
        message["thread_ts"] = json!(thread_ts);
    }
    Json(json!({ "ok": true, "channel": channel, "ts": ts, "message": message })).into_response()
}

fn text_object(value: &Value, types: &[&str], max: usize, what: &str) -> Result<(), String> {
    let kind = value["type"].as_str().unwrap_or_default();
    if !types.contains(&kind) {
        return Err(format!("{what}: type must be one of {types:?}"));
    }
    let text = value["text"]
        .as_str()
        .ok_or(format!("{what}: text missing"))?;
    if text.is_empty() || text.chars().count() > max {
        return Err(format!("{what}: text must be 1 to {max} characters"));
    }
    Ok(())
}

/// The parts of Block Kit's rules the bridge could break.
fn check_blocks(blocks: &Value) -> Result<(), String> {
    let blocks = blocks.as_array().ok_or("blocks must be an array")?;
    if blocks.len() > 50 {
        return Err("more than 50 blocks".into());
    }
    let mut block_ids = HashSet::new();
    for (n, block) in blocks.iter().enumerate() {
        if let Some(id) = block.get("block_id") {
            let id = id
                .as_str()
                .ok_or(format!("block {n}: block_id must be a string"))?;
            if id.len() > 255 || !block_ids.insert(id.to_owned()) {
                return Err(format!("block {n}: block_id too long or repeated"));
            }
        }
        match block["type"].as_str() {
            Some("section") => text_object(
                &block["text"],
                &["mrkdwn", "plain_text"],
                3000,
                &format!("block {n}"),
            )?,
            Some("context") => {
                let elements = block["elements"]
                    .as_array()
                    .ok_or(format!("block {n}: elements missing"))?;
                if elements.is_empty() || elements.len() > 10 {
                    return Err(format!("block {n}: a context has 1 to 10 elements"));
                }
                for element in elements {
                    text_object(
                        element,
                        &["mrkdwn", "plain_text"],
                        3000,
                        &format!("block {n}"),
                    )?;
                }
            }
            Some("actions") => {
                let elements = block["elements"]
                    .as_array()
                    .ok_or(format!("block {n}: elements missing"))?;
                if elements.is_empty() || elements.len() > 25 {
                    return Err(format!("block {n}: actions have 1 to 25 elements"));
                }
                let mut action_ids = HashSet::new();
                for element in elements {
                    if element["type"] != "button" {
                        return Err(format!("block {n}: only buttons are expected"));
                    }
                    text_object(
                        &element["text"],
                        &["plain_text"],
                        75,
                        &format!("block {n} button"),
                    )?;
                    let action_id = element["action_id"]
                        .as_str()
                        .ok_or(format!("block {n}: action_id missing"))?;
                    if action_id.len() > 255 || !action_ids.insert(action_id.to_owned()) {
                        return Err(format!("block {n}: action_id too long or repeated"));
                    }
                    if element["value"]
                        .as_str()
                        .is_some_and(|v| v.chars().count() > 2000)
                    {
                        return Err(format!("block {n}: value longer than 2000"));
                    }
                }
            }
            Some("divider") | Some("header") => {}
            other => return Err(format!("block {n}: unknown type {other:?}")),
        }
    }
    Ok(())
}

async fn link(
    AxumState(shared): AxumState<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let valid = query
        .get("ticket")
        .is_some_and(|ticket| shared.lock().tickets.remove(ticket));
    if !valid {
        shared.protocol_error(format!(
            "a socket request with a bad or reused ticket: {query:?}"
        ));
        return (StatusCode::UNAUTHORIZED, "invalid or reused ticket").into_response();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            shared.protocol_error(format!("a bad WebSocket upgrade request: {rejection}"));
            return rejection.into_response();
        }
    };
    let failed = shared.clone();
    upgrade
        .max_frame_size(MAX_MESSAGE)
        .max_message_size(MAX_MESSAGE)
        .accept_unmasked_frames(false)
        .on_failed_upgrade(move |error| {
            failed.protocol_error(format!("a failed WebSocket upgrade: {error}"))
        })
        .on_upgrade(move |socket| connection(socket, shared))
}

/// What a socket error says about the client: `None` when the connection just ended (EOF,
/// reset, closed), else the rule of RFC 6455 it broke (unmasked, reserved bits, bad opcode,
/// bad UTF-8, too large…).
fn client_fault(error: &axum::Error) -> Option<String> {
    use tungstenite::error::ProtocolError;
    use tungstenite::Error;
    let source = std::error::Error::source(error);
    match source.and_then(|e| e.downcast_ref::<Error>()) {
        Some(
            Error::ConnectionClosed
            | Error::AlreadyClosed
            | Error::Io(_)
            | Error::Protocol(ProtocolError::ResetWithoutClosingHandshake),
        ) => None,
        Some(other) => Some(format!("a socket error: {other}")),
        // Not a tungstenite error (another version?): counted, so it cannot hide.
        None => Some(format!("an unrecognised socket error: {error}")),
    }
}

async fn send(socket: &mut WebSocket, shared: &Shared, envelope: &Value) -> bool {
    if let Some(id) = envelope["envelope_id"].as_str() {
        let attempt = envelope["retry_attempt"].as_u64().unwrap_or(0);
        shared.lock().deliveries.push((id.to_owned(), attempt));
    }
    socket
        .send(Message::Text(envelope.to_string().into()))
        .await
        .is_ok()
}

async fn connection(mut socket: WebSocket, shared: Arc<Shared>) {
    let (sender, mut commands) = mpsc::unbounded_channel();
    let (number, backlog) = {
        let mut record = shared.lock();
        record.connections += 1;
        record.connected = true;
        let number = record.connections;
        record.current = Some((number, sender));
        // Slack delivers what was not acknowledged on the new connection.
        let mut backlog: Vec<Value> = std::mem::take(&mut record.queued);
        for envelope in record.unacked.values() {
            if !backlog
                .iter()
                .any(|b| b["envelope_id"] == envelope["envelope_id"])
            {
                backlog.push(retried(envelope));
            }
        }
        (number, backlog)
    };
    let hello = json!({
        "type": "hello", "num_connections": 1,
        "debug_info": { "host": "applink-standin", "build_number": 1, "approximate_connection_time": 18060 },
        "connection_info": { "app_id": "A0STANDIN" },
    });
    let mut alive = send(&mut socket, &shared, &hello).await;
    for envelope in &backlog {
        alive = alive && send(&mut socket, &shared, envelope).await;
    }
    shared.bump();
    while alive {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Send(envelope)) => alive = send(&mut socket, &shared, &envelope).await,
                Some(Command::Drop) | None => alive = false,
            },
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => acknowledge(&shared, text.as_str()),
                Some(Ok(Message::Binary(_))) => shared.protocol_error("a binary frame".into()),
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    if let Some(problem) = client_fault(&error) {
                        shared.protocol_error(problem);
                    }
                    alive = false;
                }
                None => alive = false,
            },
        }
    }
    let mut record = shared.lock();
    if record.current.as_ref().is_some_and(|(n, _)| *n == number) {
        record.current = None;
        record.connected = false;
    }
    drop(record);
    shared.bump();
}

fn acknowledge(shared: &Shared, text: &str) {
    let mut record = shared.lock();
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    match parsed.as_ref().and_then(|v| v["envelope_id"].as_str()) {
        Some(id) if record.envelopes.contains_key(id) => {
            record.unacked.remove(id);
            record.acks.push(id.to_owned());
        }
        Some(id) => record
            .protocol_errors
            .push(format!("an ack of unknown envelope {id}")),
        None => record.protocol_errors.push(format!("not an ack: {text}")),
    }
    drop(record);
    shared.bump();
}
