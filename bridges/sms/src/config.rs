//! The SMS bridge's own settings: the `[bridges.sms]` keys the engine leaves to the channel,
//! and the Twilio auth token from the bridge's secrets.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use rein::bridge::secrets::Secrets;
use serde::Deserialize;

pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// The channel's own keys of `[bridges.sms]`; any other key is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    base_url: Option<String>,
    account_sid: Option<String>,
    from: Option<String>,
    poll_interval: Option<String>,
    max_segments: Option<i64>,
    webhook_bind: Option<String>,
    webhook_url: Option<String>,
}

/// The optional listener for Twilio's "a message comes in" webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Where to listen (behind the proxy or tunnel that owns the public URL).
    pub bind: SocketAddr,
    /// The public URL exactly as configured at Twilio: it is what Twilio signs.
    pub url: String,
}

#[derive(Clone)]
pub struct SmsConfig {
    /// The REST API root, without a trailing slash.
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    /// Our Twilio number, E.164.
    pub from: String,
    /// None: no polling (the webhook brings replies).
    pub poll_interval: Option<Duration>,
    /// The longest message, in SMS segments (asks are cut to fit).
    pub max_segments: usize,
    pub webhook: Option<Webhook>,
}

impl std::fmt::Debug for SmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsConfig")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"redacted")
            .field("from", &self.from)
            .field("poll_interval", &self.poll_interval)
            .field("max_segments", &self.max_segments)
            .field("webhook", &self.webhook)
            .finish()
    }
}

/// `+` and 7 to 15 digits, as Twilio writes numbers.
pub fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

impl SmsConfig {
    /// The settings every test and caller needs; the rest take their defaults.
    pub fn new(
        base_url: &str,
        account_sid: &str,
        auth_token: &str,
        from: &str,
    ) -> anyhow::Result<SmsConfig> {
        let base_url = base_url.trim_end_matches('/');
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            bail!("[bridges.sms] base_url {base_url:?} must be an http(s) URL, like {DEFAULT_BASE_URL}");
        }
        let sid_ok = account_sid.len() == 34
            && account_sid.starts_with("AC")
            && account_sid[2..].bytes().all(|b| b.is_ascii_hexdigit());
        if !sid_ok {
            bail!("[bridges.sms] account_sid {account_sid:?} is not an Account SID (AC and 32 hex digits, on the Twilio Console's dashboard)");
        }
        if !is_e164(from) {
            bail!("[bridges.sms] from {from:?} must be your Twilio number in E.164 form, like \"+15551234567\"");
        }
        if auth_token.trim().is_empty() {
            bail!("the sms bridge's auth_token secret is empty");
        }
        Ok(SmsConfig {
            base_url: base_url.to_owned(),
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            from: from.to_owned(),
            poll_interval: Some(Duration::from_secs(5)),
            max_segments: 2,
            webhook: None,
        })
    }

    /// Reads the channel keys of `[bridges.sms]` (refusing unknown ones) and the auth token.
    /// Every problem is a [`rein::Error::Invalid`] (exit code 2) that names the key.
    pub fn from_settings(channel: &toml::Table, secrets: &Secrets) -> anyhow::Result<SmsConfig> {
        SmsConfig::from_keys(channel, secrets)
            .map_err(|error| rein::Error::invalid(format!("{error:#}")).into())
    }

    fn from_keys(channel: &toml::Table, secrets: &Secrets) -> anyhow::Result<SmsConfig> {
        let keys: Keys = rein::bridge::config::channel_keys(channel, "sms")?;
        let base_url = keys.base_url.unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let Some(account_sid) = keys.account_sid else {
            bail!("[bridges.sms] needs account_sid = \"AC…\" (on the Twilio Console's dashboard)");
        };
        let Some(from) = keys.from else {
            bail!("[bridges.sms] needs from = \"+1…\": the Twilio number asks are sent from");
        };
        let poll_interval = match keys.poll_interval.as_deref() {
            None => Some(Duration::from_secs(5)),
            Some("off") => None,
            Some(text) => {
                let interval = rein::duration::parse(text)
                    .map_err(|e| anyhow::anyhow!("[bridges.sms] poll_interval: {e}, or off"))?;
                if interval < Duration::from_secs(1) {
                    bail!("[bridges.sms] poll_interval {text:?} is below 1s; Twilio would rate-limit it");
                }
                Some(interval)
            }
        };
        let max_segments = match keys.max_segments {
            None => 2,
            Some(n) if (1..=10).contains(&n) => n as usize,
            Some(_) => bail!("[bridges.sms] max_segments must be a whole number from 1 to 10"),
        };
        let webhook = match (keys.webhook_bind, keys.webhook_url) {
            (None, None) => None,
            (Some(bind), Some(url)) => {
                let Ok(bind) = bind.parse() else {
                    bail!("[bridges.sms] webhook_bind {bind:?} must be an address and port, like \"127.0.0.1:8088\"");
                };
                let Ok(parsed) = reqwest::Url::parse(&url) else {
                    bail!("[bridges.sms] webhook_url {url:?} is not a URL");
                };
                if !matches!(parsed.scheme(), "https" | "http") {
                    bail!(
                        "[bridges.sms] webhook_url {url:?} must be the http(s) URL set at Twilio"
                    );
                }
                Some(Webhook { bind, url })
            }
            _ => {
                bail!("[bridges.sms] webhook_bind and webhook_url go together: set both or neither")
            }
        };
        if poll_interval.is_none() && webhook.is_none() {
            bail!("[bridges.sms] poll_interval = \"off\" needs webhook_bind and webhook_url, or no reply would ever arrive");
        }
        let auth_token = secrets.require("auth_token")?;
        let mut config = SmsConfig::new(&base_url, &account_sid, auth_token, &from)?;
        config.poll_interval = poll_interval;
        config.max_segments = max_segments;
        config.webhook = webhook;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";

    fn parse(keys: &str) -> anyhow::Result<SmsConfig> {
        let table: toml::Table = toml::from_str(keys).expect("toml");
        SmsConfig::from_settings(&table, &Secrets::from_pairs(&[("auth_token", "tok")]))
    }

    #[test]
    fn keys_and_defaults() {
        let config =
            parse(&format!("account_sid = \"{SID}\"\nfrom = \"+15551234567\"")).expect("minimal");
        assert_eq!(config.base_url, DEFAULT_BASE_URL);
        assert_eq!(config.poll_interval, Some(Duration::from_secs(5)));
        assert_eq!(config.max_segments, 2);
        assert_eq!(config.webhook, None);
        assert!(!format!("{config:?}").contains("tok\""));
        let config = parse(&format!(
            "account_sid = \"{SID}\"\nfrom = \"+15551234567\"\npoll_interval = \"off\"\nmax_segments = 3\nwebhook_bind = \"127.0.0.1:8088\"\nwebhook_url = \"https://example.org/sms\""
        ))
        .expect("full");
        assert_eq!(config.poll_interval, None);
        assert_eq!(config.max_segments, 3);
        assert_eq!(config.webhook.expect("webhook").bind.port(), 8088);
    }

    #[test]
    fn bad_settings_are_refused() {
        let base = format!("account_sid = \"{SID}\"\nfrom = \"+15551234567\"\n");
        for (extra, expected) in [
            ("colour = 1", "unknown field `colour`"),
            ("max_segments = \"two\"", "max_segments"),
            ("max_segments = 0", "max_segments"),
            ("poll_interval = \"soon\"", "poll_interval"),
            ("poll_interval = \"100ms\"", "below 1s"),
            ("poll_interval = \"off\"", "needs webhook_bind"),
            ("webhook_bind = \"127.0.0.1:1\"", "go together"),
            (
                "webhook_bind = \"localhost\"\nwebhook_url = \"https://x.org/\"",
                "address and port",
            ),
            (
                "webhook_bind = \"127.0.0.1:1\"\nwebhook_url = \"ftp://x.org/\"",
                "http(s) URL",
            ),
        ] {
            let error = parse(&format!("{base}{extra}")).expect_err(extra);
            assert!(
                format!("{error:#}").contains(expected),
                "{extra}: {error:#}"
            );
            assert_eq!(rein::error::exit_code_of(&error), 2, "{extra}: {error:#}");
        }
        for (keys, expected) in [
            ("from = \"+15551234567\"", "needs account_sid"),
            (&format!("account_sid = \"{SID}\"") as &str, "needs from"),
            (
                "account_sid = \"AC1\"\nfrom = \"+15551234567\"",
                "not an Account SID",
            ),
            (
                &format!("account_sid = \"{SID}\"\nfrom = \"5551234567\""),
                "E.164",
            ),
        ] {
            let error = parse(keys).expect_err(keys);
            assert!(format!("{error:#}").contains(expected), "{keys}: {error:#}");
        }
    }

    #[test]
    fn e164_numbers() {
        for (number, ok) in [
            ("+15551234567", true),
            ("+4930123456", true),
            ("15551234567", false),
            ("+1 555", false),
            ("+", false),
        ] {
            assert_eq!(is_e164(number), ok, "{number}");
        }
    }
}
