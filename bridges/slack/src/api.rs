//! The Slack Web API calls the bridge makes, and what their failures mean to the engine.
//!
//! Slack answers most failures with HTTP 200 and `{"ok": false, "error": "…"}`; rate limits
//! come as HTTP 429 with a `Retry-After` header (seconds). Transient trouble (network, 5xx,
//! `ratelimited`, `internal_error`…) is [`SendError::Retry`]; everything else, such as
//! `invalid_auth` or `channel_not_found`, is [`SendError::Fatal`] with a hint saying what to fix.

use std::time::Duration;

use rein::bridge::{HttpOutcome, SendError};
use serde_json::{json, Value};

use crate::config::SlackConfig;

/// Errors that go away by themselves.
const TRANSIENT: &[&str] = &[
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "team_added_to_org",
];

fn hint(error: &str) -> &'static str {
    match error {
        "invalid_auth" | "not_authed" | "token_revoked" | "token_expired" | "account_inactive" => {
            "; check the tokens in the slack bridge's secrets"
        }
        "not_allowed_token_type" => "; app_token must be xapp-…, bot_token xoxb-…",
        "channel_not_found" => {
            "; check the channel id in routes (an id like C0123ABCD, not a name) and that the bot can see the channel"
        }
        "not_in_channel" => "; invite the bot to the channel with /invite",
        "missing_scope" => "; add the bot scope chat:write and reinstall the app",
        "is_archived" => "; the channel is archived: route to another one",
        _ => "",
    }
}

/// A message Slack accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
}

/// A Web API client holding both tokens.
#[derive(Clone)]
pub struct WebApi {
    http: reqwest::Client,
    base_url: String,
    app_token: String,
    bot_token: String,
}

impl WebApi {
    pub fn new(config: &SlackConfig) -> anyhow::Result<WebApi> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("rein-bridge-slack/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(WebApi {
            http,
            base_url: config.base_url.clone(),
            app_token: config.app_token.clone(),
            bot_token: config.bot_token.clone(),
        })
    }

    /// Calls `method` with `token`; `body` is sent as JSON, or nothing is sent.
    async fn call(
        &self,
        method: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Value, SendError> {
        let url = format!("{}/{method}", self.base_url);
        let mut request = self.http.post(&url).bearer_auth(token);
        request = match body {
            Some(body) => request.json(body),
            None => request.header("content-type", "application/x-www-form-urlencoded"),
        };
        let response = request.send().await.map_err(|error| SendError::Retry {
            after: None,
            reason: format!("slack {method}: {}", rein::bridge::error_chain(&error)),
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok());
        match rein::bridge::classify_http(status.as_u16(), retry_after) {
            HttpOutcome::Success => {}
            HttpOutcome::RateLimited(after) => {
                return Err(SendError::Retry {
                    after,
                    reason: format!("slack {method}: rate limited (HTTP 429)"),
                })
            }
            HttpOutcome::ServerError => {
                return Err(SendError::Retry {
                    after: None,
                    reason: format!("slack {method}: HTTP {status}"),
                })
            }
            HttpOutcome::Refused => {
                return Err(SendError::Fatal(format!(
                    "slack {method}: HTTP {status} from {url}; check base_url"
                )))
            }
        }
        let value: Value = response.json().await.map_err(|error| SendError::Retry {
            after: None,
            reason: format!(
                "slack {method}: unreadable response: {}",
                rein::bridge::error_chain(&error)
            ),
        })?;
        if value["ok"].as_bool() == Some(true) {
            return Ok(value);
        }
        let error = value["error"].as_str().unwrap_or("no error given");
        if TRANSIENT.contains(&error) {
            return Err(SendError::Retry {
                after: None,
                reason: format!("slack {method}: {error}"),
            });
        }
        Err(SendError::Fatal(format!(
            "slack {method}: {error}{}",
            hint(error)
        )))
    }

    /// `apps.connections.open`: a single-use WebSocket URL for Socket Mode.
    pub async fn open_connection(&self) -> Result<String, SendError> {
        let value = self
            .call("apps.connections.open", &self.app_token, None)
            .await?;
        value["url"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| SendError::Retry {
                after: None,
                reason: "slack apps.connections.open: no url in the response".into(),
            })
    }

    /// `chat.postMessage`; `thread_ts` makes it a reply in that thread.
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: Option<&Value>,
        thread_ts: Option<&str>,
    ) -> Result<Posted, SendError> {
        let mut body = json!({ "channel": channel, "text": text, "unfurl_links": false });
        if let Some(blocks) = blocks {
            body["blocks"] = blocks.clone();
        }
        if let Some(thread_ts) = thread_ts {
            body["thread_ts"] = json!(thread_ts);
        }
        let value = self
            .call("chat.postMessage", &self.bot_token, Some(&body))
            .await?;
        let ts = value["ts"].as_str().ok_or_else(|| {
            SendError::Fatal("slack chat.postMessage: the response has no ts".into())
        })?;
        Ok(Posted {
            channel: value["channel"].as_str().unwrap_or(channel).to_owned(),
            ts: ts.to_owned(),
        })
    }

    /// `chat.postEphemeral`: a message only `user` sees, in `channel` (and `thread_ts`).
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
        thread_ts: Option<&str>,
    ) -> Result<(), SendError> {
        let mut body = json!({ "channel": channel, "user": user, "text": text });
        if let Some(thread_ts) = thread_ts {
            body["thread_ts"] = json!(thread_ts);
        }
        self.call("chat.postEphemeral", &self.bot_token, Some(&body))
            .await
            .map(drop)
    }

    /// `chat.update` of a message the bot posted.
    pub async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: &Value,
    ) -> Result<(), SendError> {
        let body = json!({ "channel": channel, "ts": ts, "text": text, "blocks": blocks });
        self.call("chat.update", &self.bot_token, Some(&body))
            .await
            .map(drop)
    }
}
