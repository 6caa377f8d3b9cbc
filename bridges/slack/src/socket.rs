//! Socket Mode: the WebSocket through which Slack pushes button clicks and messages.
//!
//! Protocol: `apps.connections.open` (app token) returns a single-use `wss://` URL. Slack
//! sends `hello` once connected, then envelopes `{"envelope_id", "type", "payload", …}` of type
//! `events_api` or `interactive`, and `disconnect` when it wants the client to reconnect.
//! Every envelope with an `envelope_id` must be acknowledged by sending `{"envelope_id": …}`
//! back within three seconds, or Slack delivers it again (with `retry_attempt` counting up).
//!
//! Invariants kept here:
//! - acknowledge first, then interpret: a slow engine never causes redeliveries;
//! - an envelope id, event id or click seen recently is acknowledged again but not passed on,
//!   so a redelivery produces no second [`Inbound`] (the engine's seen-ledger covers restarts);
//! - the loop runs until shutdown: a dropped socket, a `disconnect` or an unreachable Slack
//!   leads to a reconnect, with backoff while connecting fails.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rein::bridge::{Inbound, Link, PostRef, SendError, Target};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::api::WebApi;
use crate::channel::PostedAsks;
use crate::config::{Backoff, SlackConfig};
use crate::format::{parse_button, unescape};

/// What an envelope means to the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Hello,
    /// Slack asks for a reconnect (`refresh_requested`, `warning`, `link_disabled`).
    Disconnect(String),
    /// People's clicks and thread replies. A thread reply still has to be checked against the
    /// asks the bridge posted.
    Messages(Vec<Inbound>),
    /// Nothing for rein (another app's button, a bot's message, a top-level message…).
    Ignored(String),
}

/// One envelope, interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// To acknowledge, if present.
    pub envelope_id: Option<String>,
    /// What identifies the same event delivered in a different envelope.
    pub dedupe_key: Option<String>,
    pub event: Event,
}

fn ignored(why: impl Into<String>) -> Event {
    Event::Ignored(why.into())
}

/// Interprets one envelope as Slack sends it (pure; no I/O).
pub fn interpret(value: &Value) -> Envelope {
    let envelope_id = value["envelope_id"].as_str().map(str::to_owned);
    let payload = &value["payload"];
    let (dedupe_key, event) = match value["type"].as_str().unwrap_or("") {
        "hello" => (None, Event::Hello),
        "disconnect" => (
            None,
            Event::Disconnect(value["reason"].as_str().unwrap_or("unspecified").to_owned()),
        ),
        "events_api" => (
            payload["event_id"].as_str().map(|id| format!("event:{id}")),
            message_event(&payload["event"]),
        ),
        "interactive" => {
            let event = block_actions(payload);
            let key = match &event {
                Event::Messages(list) => list.first().map(|inbound| inbound.message_id.clone()),
                _ => None,
            };
            (key, event)
        }
        other => (None, ignored(format!("envelope type {other:?}"))),
    };
    Envelope {
        envelope_id,
        dedupe_key,
        event,
    }
}

/// A `message` event: a person's reply in a thread becomes an answer to that thread's post.
fn message_event(event: &Value) -> Event {
    if event["type"] != "message" {
        return ignored(format!("event type {}", event["type"]));
    }
    if !event["bot_id"].is_null() {
        return ignored("a bot's message");
    }
    match event["subtype"].as_str() {
        // A thread reply also sent to the channel is still a person's reply.
        None | Some("thread_broadcast") => {}
        Some(other) => return ignored(format!("message subtype {other}")),
    }
    let (Some(user), Some(channel), Some(ts)) = (
        event["user"].as_str(),
        event["channel"].as_str(),
        event["ts"].as_str(),
    ) else {
        return ignored("a message without user, channel or ts");
    };
    let Some(thread_ts) = event["thread_ts"].as_str().filter(|t| *t != ts) else {
        return ignored("a message outside a thread");
    };
    let text = unescape(event["text"].as_str().unwrap_or(""))
        .trim()
        .to_owned();
    if text.is_empty() {
        return ignored("an empty message");
    }
    let post = PostRef {
        route: channel.to_owned(),
        id: thread_ts.to_owned(),
    };
    Event::Messages(vec![Inbound {
        identity: format!("slack:{user}"),
        target: Target::Post(post.clone()),
        text,
        reply_to: post,
        message_id: format!("slack:{channel}:{ts}"),
    }])
}

/// An `interactive` payload: a click on one of rein's buttons answers the ask it carries.
fn block_actions(payload: &Value) -> Event {
    if payload["type"] != "block_actions" {
        return ignored(format!("interactive type {}", payload["type"]));
    }
    let user = payload["user"]["id"].as_str();
    let channel = payload["container"]["channel_id"]
        .as_str()
        .or_else(|| payload["channel"]["id"].as_str());
    let message_ts = payload["container"]["message_ts"]
        .as_str()
        .or_else(|| payload["message"]["ts"].as_str());
    let (Some(user), Some(channel), Some(message_ts)) = (user, channel, message_ts) else {
        return ignored("a click without user, channel or message");
    };
    let clicks: Vec<Inbound> = payload["actions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|action| {
            let (ask, option) =
                parse_button(action["action_id"].as_str()?, action["value"].as_str()?)?;
            let action_ts = action["action_ts"].as_str().unwrap_or(message_ts);
            Some(Inbound {
                identity: format!("slack:{user}"),
                target: Target::Ask(ask),
                text: option,
                reply_to: PostRef {
                    route: channel.to_owned(),
                    id: message_ts.to_owned(),
                },
                message_id: format!("slack:click:{channel}:{message_ts}:{user}:{action_ts}"),
            })
        })
        .collect();
    if clicks.is_empty() {
        return ignored("a click on something rein did not post");
    }
    Event::Messages(clicks)
}

/// The most recent ids, bounded: enough to catch redeliveries, which come within minutes.
#[derive(Debug, Default)]
struct RecentIds {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl RecentIds {
    const CAPACITY: usize = 4096;

    /// Records `id`; false if it was already recorded.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == Self::CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        true
    }
}

/// Why a connection ended.
enum Ended {
    /// Slack asked for a reconnect.
    Disconnect(String),
    /// The socket closed, failed or went silent.
    Lost(String),
    /// Nobody receives inbound messages any more.
    Stop,
}

/// The Socket Mode client: one connection at a time, for as long as it runs.
pub struct SocketMode {
    api: WebApi,
    inbound: mpsc::Sender<Inbound>,
    posts: Arc<PostedAsks>,
    reconnect: Backoff,
    ping_interval: Duration,
    recent: RecentIds,
    /// The current connection said hello.
    greeted: bool,
    /// How the connection stands, for the engine's STATUS (`rein bridge ls`).
    link: tokio::sync::watch::Sender<Link>,
}

impl SocketMode {
    pub fn new(
        config: &SlackConfig,
        api: WebApi,
        inbound: mpsc::Sender<Inbound>,
        posts: Arc<PostedAsks>,
        link: tokio::sync::watch::Sender<Link>,
    ) -> Self {
        SocketMode {
            link,
            api,
            inbound,
            posts,
            reconnect: config.reconnect,
            ping_interval: config.ping_interval,
            recent: RecentIds::default(),
            greeted: false,
        }
    }

    /// Connects and reconnects until `shutdown` completes or the inbound queue closes.
    /// `first_url` is a connection URL already obtained (it is single-use).
    pub async fn run(mut self, first_url: Option<String>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut url = first_url;
        let mut failures: u32 = 0;
        loop {
            self.greeted = false;
            let attempt = async {
                let url = match url.take() {
                    Some(url) => url,
                    None => self.api.open_connection().await.map_err(|e| match e {
                        SendError::Retry { reason, .. } | SendError::Fatal(reason) => reason,
                    })?,
                };
                self.connection(&url).await
            };
            let outcome = tokio::select! {
                () = &mut shutdown => return,
                outcome = attempt => outcome,
            };
            let delay = match outcome {
                Ok(Ended::Stop) => return,
                Ok(Ended::Disconnect(reason)) => {
                    tracing::info!("slack asked to reconnect ({reason}); reconnecting");
                    self.down(format!("slack asked to reconnect ({reason})"));
                    failures = 0;
                    Duration::ZERO
                }
                Ok(Ended::Lost(reason)) if self.greeted => {
                    tracing::warn!("the slack socket dropped ({reason}); reconnecting");
                    self.down(format!("the slack socket dropped ({reason})"));
                    failures = 0;
                    self.reconnect.delay(0)
                }
                Ok(Ended::Lost(reason)) | Err(reason) => {
                    let delay = self.reconnect.delay(failures);
                    failures = failures.saturating_add(1);
                    tracing::warn!("cannot connect to slack ({reason}); trying again in {delay:?}");
                    self.down(format!("cannot connect to slack ({reason})"));
                    delay
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn down(&self, why: String) {
        self.link.send_replace(Link::Down(why));
    }

    /// One WebSocket connection, until it ends.
    async fn connection(&mut self, url: &str) -> Result<Ended, String> {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| format!("connecting the socket: {e}"))?;
        let (mut sink, mut stream) = socket.split();
        let mut ping =
            tokio::time::interval_at(Instant::now() + self.ping_interval, self.ping_interval);
        let silence_limit = self.ping_interval * 3;
        let mut last_frame = Instant::now();
        loop {
            tokio::select! {
                _ = ping.tick() => {
                    if last_frame.elapsed() > silence_limit {
                        return Ok(Ended::Lost(format!("nothing received for {silence_limit:?}")));
                    }
                    if let Err(error) = sink.send(Message::Ping(Default::default())).await {
                        return Ok(Ended::Lost(error.to_string()));
                    }
                }
                frame = stream.next() => {
                    last_frame = Instant::now();
                    let text = match frame {
                        None => return Ok(Ended::Lost("closed".into())),
                        Some(Err(error)) => return Ok(Ended::Lost(error.to_string())),
                        Some(Ok(Message::Close(frame))) => {
                            return Ok(Ended::Lost(format!("closed by slack ({frame:?})")));
                        }
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(_)) => continue,
                    };
                    let value: Value = match serde_json::from_str(text.as_str()) {
                        Ok(value) => value,
                        Err(error) => {
                            tracing::warn!("slack sent something that is not JSON ({error}); ignored");
                            continue;
                        }
                    };
                    let envelope = interpret(&value);
                    if let Some(id) = &envelope.envelope_id {
                        let ack = json!({ "envelope_id": id }).to_string();
                        if let Err(error) = sink.send(Message::text(ack)).await {
                            return Ok(Ended::Lost(format!("acknowledging: {error}")));
                        }
                    }
                    if let Some(ended) = self.dispatch(envelope).await {
                        return Ok(ended);
                    }
                }
            }
        }
    }

    /// Passes an acknowledged envelope's messages on, once.
    async fn dispatch(&mut self, envelope: Envelope) -> Option<Ended> {
        let fresh_envelope = envelope
            .envelope_id
            .as_ref()
            .is_none_or(|id| self.recent.insert(&format!("envelope:{id}")));
        let fresh_event = envelope
            .dedupe_key
            .as_ref()
            .is_none_or(|key| self.recent.insert(key));
        if !(fresh_envelope && fresh_event) {
            tracing::debug!(
                "slack redelivered {:?}; already handled",
                envelope.envelope_id
            );
            return None;
        }
        match envelope.event {
            Event::Hello => {
                self.greeted = true;
                tracing::info!("connected to slack (socket mode)");
                self.link.send_replace(Link::Up);
            }
            Event::Disconnect(reason) => return Some(Ended::Disconnect(reason)),
            Event::Ignored(why) => tracing::debug!("slack: ignored {why}"),
            Event::Messages(messages) => {
                for inbound in messages {
                    if let Target::Post(post) = &inbound.target {
                        if !self.posts.is_ours(post) {
                            tracing::debug!("slack: a thread reply not under an ask; ignored");
                            continue;
                        }
                    }
                    if self.inbound.send(inbound).await.is_err() {
                        return Some(Ended::Stop);
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn click(action_id: &str, value: &str) -> Value {
        json!({
            "envelope_id": "e1", "type": "interactive", "accepts_response_payload": false,
            "payload": {
                "type": "block_actions",
                "user": { "id": "U1", "username": "ana", "team_id": "T1" },
                "container": { "type": "message", "message_ts": "100.1", "channel_id": "C1", "is_ephemeral": false },
                "channel": { "id": "C1", "name": "ops" },
                "message": { "ts": "100.1", "text": "w1 asks" },
                "actions": [{ "type": "button", "action_id": action_id, "block_id": "b", "value": value, "action_ts": "200.2" }],
            }
        })
    }

    fn message(extra: Value) -> Value {
        let mut event = json!({ "type": "message", "channel": "C1", "user": "U1", "text": "ship it &amp; tell me", "ts": "300.3", "thread_ts": "100.1", "channel_type": "channel" });
        for (key, value) in extra.as_object().expect("object") {
            event[key] = value.clone();
        }
        json!({
            "envelope_id": "e2", "type": "events_api", "accepts_response_payload": false, "retry_attempt": 0, "retry_reason": "",
            "payload": { "type": "event_callback", "event_id": "Ev1", "event": event },
        })
    }

    #[test]
    fn a_click_answers_the_ask_it_carries() {
        let envelope = interpret(&click("rein-answer:ab3x9k:0", "ab3x9k:yes"));
        assert_eq!(envelope.envelope_id.as_deref(), Some("e1"));
        let Event::Messages(list) = envelope.event else {
            panic!("not a message: {envelope:?}")
        };
        assert_eq!(
            list,
            [Inbound {
                identity: "slack:U1".into(),
                target: Target::Ask("ab3x9k".into()),
                text: "yes".into(),
                reply_to: PostRef {
                    route: "C1".into(),
                    id: "100.1".into()
                },
                message_id: "slack:click:C1:100.1:U1:200.2".into(),
            }]
        );
        assert_eq!(
            envelope.dedupe_key.as_deref(),
            Some("slack:click:C1:100.1:U1:200.2")
        );
    }

    #[test]
    fn a_thread_reply_targets_the_thread() {
        let envelope = interpret(&message(json!({})));
        assert_eq!(envelope.dedupe_key.as_deref(), Some("event:Ev1"));
        let Event::Messages(list) = envelope.event else {
            panic!("not a message: {envelope:?}")
        };
        let post = PostRef {
            route: "C1".into(),
            id: "100.1".into(),
        };
        assert_eq!(list[0].target, Target::Post(post.clone()));
        assert_eq!(list[0].reply_to, post);
        assert_eq!(list[0].text, "ship it & tell me");
        assert_eq!(list[0].message_id, "slack:C1:300.3");
        let broadcast = interpret(&message(json!({ "subtype": "thread_broadcast" })));
        assert!(matches!(broadcast.event, Event::Messages(_)));
    }

    #[test]
    fn what_is_not_for_rein_is_ignored() {
        for (what, value) in [
            ("a bot's reply", message(json!({ "bot_id": "B1" }))),
            ("an edit", message(json!({ "subtype": "message_changed" }))),
            ("a top-level message", message(json!({ "thread_ts": null }))),
            (
                "a thread's first message",
                message(json!({ "thread_ts": "300.3" })),
            ),
            ("an empty reply", message(json!({ "text": "  " }))),
            ("a reaction", message(json!({ "type": "reaction_added" }))),
            ("another app's button", click("deploy-now", "ab3x9k:yes")),
            ("a button without an ask", click("rein-answer:x:0", "yes")),
            // Found by fuzzing: a blank option would have become a blank answer.
            (
                "a button with a blank option",
                click("rein-answer:c:0", "c:       "),
            ),
            (
                "an unknown envelope",
                json!({ "type": "slash_commands", "envelope_id": "e9", "payload": {} }),
            ),
        ] {
            let envelope = interpret(&value);
            assert!(
                matches!(envelope.event, Event::Ignored(_)),
                "{what}: {envelope:?}"
            );
        }
        assert_eq!(
            interpret(&json!({ "type": "hello", "num_connections": 1 })).event,
            Event::Hello
        );
        assert_eq!(
            interpret(&json!({ "type": "disconnect", "reason": "refresh_requested" })).event,
            Event::Disconnect("refresh_requested".into())
        );
    }

    /// Slack's socket URLs are `wss://`: the build must carry a TLS client that works
    /// without further setup (a crypto provider chosen at compile time).
    #[tokio::test]
    async fn a_wss_url_is_spoken_to_in_tls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut first = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut stream, &mut first)
                .await
                .expect("read");
            first[0]
        });
        let outcome =
            tokio_tungstenite::connect_async(format!("wss://127.0.0.1:{port}/link/")).await;
        assert!(outcome.is_err(), "no TLS server here");
        assert_eq!(
            server.await.expect("server"),
            0x16,
            "a TLS handshake record came first"
        );
    }

    #[test]
    fn recent_ids_forget_the_oldest() {
        let mut recent = RecentIds::default();
        assert!(recent.insert("a"));
        assert!(!recent.insert("a"));
        for n in 0..RecentIds::CAPACITY {
            recent.insert(&n.to_string());
        }
        assert!(recent.insert("a"), "the oldest id was forgotten");
        assert_eq!(recent.order.len(), RecentIds::CAPACITY);
    }
}
