//! The optional listener for Twilio's "a message comes in" webhook.
//!
//! Twilio signs each request: `X-Twilio-Signature` is base64(HMAC-SHA1(auth token, the URL
//! configured at Twilio followed by every POST parameter, sorted by name, each name followed
//! by its value)). A request whose signature is missing or wrong gets 403 and is not looked
//! at further; a signed one is handed to the [`Relay`] and answered with an empty TwiML
//! `<Response/>` (the bridge replies through the API, not through TwiML).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::inbound::{Received, Relay};

type HmacSha1 = Hmac<Sha1>;

fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> HmacSha1 {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    // HMAC takes keys of any length; this cannot fail.
    let mut mac =
        HmacSha1::new_from_slice(auth_token.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// The signature Twilio sends for a POST of `params` to `url`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(mac(auth_token, url, params).finalize().into_bytes())
}

/// Whether `header` is Twilio's signature of this request (compared in constant time).
pub fn verify(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header: Option<&str>,
) -> bool {
    let Some(decoded) = header.and_then(|h| {
        base64::engine::general_purpose::STANDARD
            .decode(h.trim())
            .ok()
    }) else {
        return false;
    };
    mac(auth_token, url, params).verify_slice(&decoded).is_ok()
}

struct Hook {
    auth_token: String,
    url: String,
    account_sid: String,
    our_number: String,
    relay: Arc<Relay>,
}

const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

async fn incoming(State(hook): State<Arc<Hook>>, headers: HeaderMap, body: Bytes) -> Response {
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let given = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok());
    if !verify(&hook.auth_token, &hook.url, &params, given) {
        tracing::warn!("sms webhook: a request without a valid X-Twilio-Signature was refused");
        return (StatusCode::FORBIDDEN, "forbidden").into_response();
    }
    let field = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let respond = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml")],
        EMPTY_TWIML,
    );
    let sid = field("MessageSid").or_else(|| field("SmsSid"));
    let (Some(sid), Some(from), Some(body)) = (sid, field("From"), field("Body")) else {
        tracing::info!("sms webhook: a signed request that is not an incoming message; ignored");
        return respond.into_response();
    };
    if field("AccountSid").as_deref() != Some(hook.account_sid.as_str())
        || field("To").as_deref() != Some(hook.our_number.as_str())
    {
        tracing::info!("sms webhook: message {sid} is for another account or number; ignored");
        return respond.into_response();
    }
    match hook.relay.offer(Received { sid, from, body }).await {
        Ok(_) => respond.into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response(),
    }
}

/// A bound webhook listener, ready to serve.
pub struct Listener {
    listener: tokio::net::TcpListener,
    router: Router,
}

impl Listener {
    /// Binds `bind` and routes POSTs to the path of `url` (the URL set at Twilio).
    pub async fn bind(
        bind: SocketAddr,
        url: &str,
        auth_token: &str,
        account_sid: &str,
        our_number: &str,
        relay: Arc<Relay>,
    ) -> anyhow::Result<Listener> {
        let path = reqwest::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("webhook_url {url:?}: {e}"))?
            .path()
            .to_owned();
        let hook = Arc::new(Hook {
            auth_token: auth_token.to_owned(),
            url: url.to_owned(),
            account_sid: account_sid.to_owned(),
            our_number: our_number.to_owned(),
            relay,
        });
        let router = Router::new().route(&path, post(incoming)).with_state(hook);
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on webhook_bind {bind}: {e}"))?;
        Ok(Listener { listener, router })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        if let Err(error) = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("sms webhook stopped: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// The example in Twilio's webhook security documentation.
    #[test]
    fn twilios_documented_example() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = params(&[
            ("Digits", "1234"),
            ("To", "+18005551212"),
            ("From", "+14158675309"),
            ("Caller", "+14158675309"),
            ("CallSid", "CA1234567890ABCDE"),
        ]);
        assert_eq!(
            signature("12345", url, &params),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(verify(
            "12345",
            url,
            &params,
            Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")
        ));
        assert!(!verify(
            "12346",
            url,
            &params,
            Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")
        ));
        assert!(!verify(
            "12345",
            "https://mycompany.com/myapp.php",
            &params,
            Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")
        ));
        assert!(!verify("12345", url, &params, Some("not base64!")));
        assert!(!verify("12345", url, &params, None));
    }
}
