//! The Slack bridge's own settings: the `[bridges.slack]` keys the engine leaves to the
//! channel (only `base_url`), and the two tokens from the bridge's secrets.

use std::time::Duration;

use anyhow::{bail, Context};
use rein::bridge::secrets::Secrets;
use serde::Deserialize;

pub const DEFAULT_BASE_URL: &str = "https://slack.com/api";

/// How long to wait before reconnecting the socket: rein's one backoff.
pub use rein::bridge::Backoff;

/// The socket's reconnect backoff unless a test sets another.
pub const RECONNECT: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(60),
};

/// The channel's own keys of `[bridges.slack]`; any other key is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    base_url: Option<String>,
}

#[derive(Clone)]
pub struct SlackConfig {
    /// The Web API root, without a trailing slash.
    pub base_url: String,
    /// The app-level token (`xapp-…`), for `apps.connections.open`.
    pub app_token: String,
    /// The bot token (`xoxb-…`), for `chat.*`.
    pub bot_token: String,
    pub reconnect: Backoff,
    /// The socket sends a ping this often, and reconnects when nothing at all (not even a
    /// pong) arrived for three of these: a silently dead TCP connection is noticed.
    pub ping_interval: Duration,
}

impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConfig")
            .field("base_url", &self.base_url)
            .field("tokens", &"redacted")
            .finish()
    }
}

impl SlackConfig {
    pub fn new(base_url: &str, app_token: &str, bot_token: &str) -> anyhow::Result<SlackConfig> {
        if !app_token.starts_with("xapp-") {
            bail!("app_token must be the app-level token (xapp-…) with the connections:write scope, from the app's Basic Information page");
        }
        if !bot_token.starts_with("xoxb-") {
            bail!("bot_token must be the Bot User OAuth Token (xoxb-…), from the app's OAuth & Permissions page");
        }
        let base_url = base_url.trim_end_matches('/');
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            bail!("[bridges.slack] base_url {base_url:?} must be an http(s) URL, like {DEFAULT_BASE_URL}");
        }
        Ok(SlackConfig {
            base_url: base_url.to_owned(),
            app_token: app_token.to_owned(),
            bot_token: bot_token.to_owned(),
            reconnect: RECONNECT,
            ping_interval: Duration::from_secs(30),
        })
    }

    /// Reads the channel keys of `[bridges.slack]` (refusing unknown ones) and the tokens.
    /// Every problem is a [`rein::Error::Invalid`] (exit code 2) that names the key.
    pub fn from_settings(channel: &toml::Table, secrets: &Secrets) -> anyhow::Result<SlackConfig> {
        let keys: Keys = rein::bridge::config::channel_keys(channel, "slack")?;
        let base_url = keys.base_url.unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let app_token = secrets.require("app_token")?;
        let bot_token = secrets.require("bot_token")?;
        SlackConfig::new(&base_url, app_token, bot_token)
            .context("the slack bridge's secrets")
            .map_err(|error| rein::Error::invalid(format!("{error:#}")).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).expect("toml")
    }

    #[test]
    fn keys_and_tokens() {
        let secrets = Secrets::from_pairs(&[("app_token", "xapp-1"), ("bot_token", "xoxb-2")]);
        let config = SlackConfig::from_settings(&table(""), &secrets).expect("defaults");
        assert_eq!(config.base_url, DEFAULT_BASE_URL);
        let config =
            SlackConfig::from_settings(&table("base_url = \"http://127.0.0.1:9/api/\""), &secrets)
                .expect("base_url");
        assert_eq!(config.base_url, "http://127.0.0.1:9/api");
        assert!(!format!("{config:?}").contains("xoxb-2"));
    }

    #[test]
    fn bad_settings_are_refused() {
        let good = Secrets::from_pairs(&[("app_token", "xapp-1"), ("bot_token", "xoxb-2")]);
        let swapped = Secrets::from_pairs(&[("app_token", "xoxb-2"), ("bot_token", "xapp-1")]);
        let missing = Secrets::from_pairs(&[("app_token", "xapp-1")]);
        for (keys, secrets, expected) in [
            ("colour = \"red\"", &good, "unknown field `colour`"),
            ("base_url = 3", &good, "base_url"),
            ("base_url = \"slack.com\"", &good, "must be an http(s) URL"),
            ("", &swapped, "xapp-"),
            ("", &missing, "bot_token"),
        ] {
            let error = SlackConfig::from_settings(&table(keys), secrets).expect_err(keys);
            assert!(format!("{error:#}").contains(expected), "{keys}: {error:#}");
            assert_eq!(rein::error::exit_code_of(&error), 2, "{keys}: {error:#}");
        }
    }
}
