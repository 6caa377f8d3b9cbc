//! The two Twilio REST calls the bridge makes: send a message (`POST …/Messages.json`, form
//! encoded, HTTP Basic auth with the Account SID and Auth Token) and list received ones
//! (`GET …/Messages.json?To=OUR_NUMBER`, newest first, paged).
//!
//! Failures: HTTP 429 (with `Retry-After`), 5xx and network trouble are
//! [`SendError::Retry`]; anything else (401 bad credentials, 400 with Twilio's error JSON
//! `{"code", "message", "more_info", "status"}` such as 21211 "not a valid phone number") is
//! [`SendError::Fatal`].

use std::time::Duration;

use rein::bridge::{HttpOutcome, SendError};
use serde::Deserialize;

use crate::config::SmsConfig;

/// A message resource, as far as the bridge reads it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Message {
    pub sid: String,
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub body: String,
    /// `inbound`, `outbound-api`, `outbound-call` or `outbound-reply`.
    pub direction: String,
    #[serde(default)]
    pub date_sent: Option<String>,
}

/// One page of the message list.
#[derive(Debug, Clone, Deserialize)]
pub struct Page {
    pub messages: Vec<Message>,
    /// Relative to the API root; None on the last page.
    #[serde(default)]
    pub next_page_uri: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    code: Option<u64>,
    message: Option<String>,
    more_info: Option<String>,
}

/// The URL of the page a list's `next_page_uri` names: a path on the API root. Anything
/// else (`@host/…` would make the API root the user name of another host, which would then
/// get the account's credentials) is refused.
pub fn next_page_url(base_url: &str, uri: &str) -> Option<String> {
    let a_path = uri.starts_with('/')
        && !uri.starts_with("//")
        && !uri
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '@' | '\\' | '#'));
    a_path.then(|| format!("{}{uri}", base_url.trim_end_matches('/')))
}

#[derive(Clone)]
pub struct Twilio {
    http: reqwest::Client,
    base_url: String,
    account_sid: String,
    auth_token: String,
}

impl Twilio {
    pub fn new(config: &SmsConfig) -> anyhow::Result<Twilio> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("rein-bridge-sms/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Twilio {
            http,
            base_url: config.base_url.clone(),
            account_sid: config.account_sid.clone(),
            auth_token: config.auth_token.clone(),
        })
    }

    fn messages_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.base_url, self.account_sid
        )
    }

    /// Sends `body` from `from` to `to`; returns the message SID.
    pub async fn send(&self, from: &str, to: &str, body: &str) -> Result<String, SendError> {
        #[derive(Deserialize)]
        struct Created {
            sid: String,
        }
        let request = self
            .http
            .post(self.messages_url())
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .form(&[("To", to), ("From", from), ("Body", body)]);
        let created: Created = self.call("sending a message", request).await?;
        Ok(created.sid)
    }

    /// A page of messages sent to `to` (our number): the first page, or the one `next` names.
    pub async fn received(&self, to: &str, next: Option<&str>) -> Result<Page, SendError> {
        let request = match next {
            Some(uri) => self
                .http
                .get(next_page_url(&self.base_url, uri).ok_or_else(|| {
                    SendError::Fatal(format!(
                        "twilio listed a next page {uri:?} that is not a path on the API"
                    ))
                })?),
            None => self
                .http
                .get(self.messages_url())
                .query(&[("To", to), ("PageSize", "50")]),
        };
        let request = request.basic_auth(&self.account_sid, Some(&self.auth_token));
        self.call("listing received messages", request).await
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, SendError> {
        let retry = |reason: String| SendError::Retry {
            after: None,
            reason,
        };
        let response = request
            .send()
            .await
            .map_err(|e| retry(format!("twilio, {what}: {}", rein::bridge::error_chain(&e))))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok());
        match rein::bridge::classify_http(status.as_u16(), retry_after) {
            HttpOutcome::Success => {
                return response.json().await.map_err(|e| {
                    retry(format!(
                        "twilio, {what}: unreadable response: {}",
                        rein::bridge::error_chain(&e)
                    ))
                })
            }
            HttpOutcome::RateLimited(after) => {
                return Err(SendError::Retry {
                    after,
                    reason: format!("twilio, {what}: rate limited (HTTP 429)"),
                })
            }
            HttpOutcome::ServerError => {
                return Err(retry(format!("twilio, {what}: HTTP {status}")))
            }
            HttpOutcome::Refused => {}
        }
        let detail = match response.json::<ApiError>().await {
            Ok(ApiError {
                code,
                message,
                more_info,
            }) => format!(
                "error {}: {}{}",
                code.map(|c| c.to_string()).unwrap_or_else(|| "?".into()),
                message.unwrap_or_default(),
                more_info.map(|m| format!(" ({m})")).unwrap_or_default()
            ),
            Err(_) => "no error details".to_owned(),
        };
        let hint = match status.as_u16() {
            401 => "; check account_sid and the auth_token secret",
            404 => "; check account_sid and base_url",
            _ => "",
        };
        Err(SendError::Fatal(format!(
            "twilio, {what}: HTTP {status}, {detail}{hint}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_pages_stay_on_the_api() {
        let base = "https://api.twilio.com";
        assert_eq!(
            next_page_url(
                base,
                "/2010-04-01/Accounts/AC1/Messages.json?Page=1&PageToken=PA2"
            ),
            Some(
                "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json?Page=1&PageToken=PA2"
                    .to_owned()
            )
        );
        for uri in [
            "@evil.example/x",
            "//evil.example/x",
            "/x@evil.example",
            ".evil.example/x",
            "https://evil.example/x",
            "/a b",
            "/a\\@b",
            "",
        ] {
            assert_eq!(next_page_url(base, uri), None, "{uri:?}");
        }
    }
}
