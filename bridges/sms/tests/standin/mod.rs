//! A local stand-in for Twilio's Messages API, strict about what the real one rejects, on
//! 127.0.0.1.
//!
//! - `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`: HTTP Basic auth (Account SID and
//!   Auth Token), a form body with `To`, `From` (our number) and `Body`; 201 with the message
//!   resource (`sid` "SM…", `status` "queued"), or Twilio's error JSON (`code`, `message`,
//!   `more_info`, `status`) with 400, 401, 404; 429 with `Retry-After` when told.
//! - `GET` of the same path: the message list, newest first, filtered by `To`, paged by
//!   `PageSize`/`Page` with `next_page_uri` and the other paging fields.
//! - Tests inject received messages and read what was sent, and can hold sends: a held
//!   `POST` is recorded (the message is out) but answered only on release, as when the
//!   connection stalls after Twilio accepted a message.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::watch;

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "standin-auth-token";
pub const OUR_NUMBER: &str = "+15550001111";
pub const DEADLINE: Duration = Duration::from_secs(10);
/// The longest a held send waits for its release before it is answered anyway.
pub const HOLD_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Stored {
    pub sid: String,
    pub from: String,
    pub to: String,
    pub body: String,
    pub direction: String,
    pub date_sent: String,
    /// As Twilio reports it (counted here independently of the bridge).
    pub num_segments: usize,
}

#[derive(Default)]
pub struct Record {
    /// Every message, oldest first.
    pub messages: Vec<Stored>,
    /// List requests served (rate-limited ones excluded).
    pub list_requests: usize,
    /// Of those, requests for a page after the first.
    pub later_pages: usize,
    rate_limited: u32,
    retry_after: u64,
    next_sid: u64,
}

impl Record {
    pub fn sent(&self) -> Vec<Stored> {
        self.messages
            .iter()
            .filter(|m| m.direction == "outbound-api")
            .cloned()
            .collect()
    }
}

struct Shared {
    record: Mutex<Record>,
    changed: watch::Sender<u64>,
    /// True while sends are held.
    hold: watch::Sender<bool>,
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
}

pub struct TwilioStandin {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TwilioStandin {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Segments as Twilio bills them, counted without the bridge's code: ASCII minus the
/// two-septet characters is GSM-7; anything non-ASCII is taken as UCS-2.
fn count_segments(body: &str) -> usize {
    if body.is_ascii() {
        let septets: usize = body
            .chars()
            .map(|c| if "^{}\\[~]|".contains(c) { 2 } else { 1 })
            .sum();
        if septets <= 160 {
            1
        } else {
            septets.div_ceil(153)
        }
    } else {
        let units = body.encode_utf16().count();
        if units <= 70 {
            1
        } else {
            units.div_ceil(67)
        }
    }
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

fn e164(number: &str) -> bool {
    number
        .strip_prefix('+')
        .is_some_and(|d| (7..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

impl TwilioStandin {
    pub async fn start() -> TwilioStandin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            record: Mutex::new(Record::default()),
            changed,
            hold: watch::Sender::new(false),
        });
        let router = Router::new()
            .route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                get(list).post(create),
            )
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        TwilioStandin {
            shared,
            addr,
            server,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn record(&self) -> MutexGuard<'_, Record> {
        self.shared.lock()
    }

    /// The next `times` requests get HTTP 429 with `Retry-After: seconds`.
    pub fn rate_limit(&self, times: u32, seconds: u64) {
        let mut record = self.shared.lock();
        record.rate_limited = times;
        record.retry_after = seconds;
    }

    /// From now on each send is recorded at once but answered only after
    /// [`TwilioStandin::release_sends`] (or after [`HOLD_LIMIT`]).
    pub fn hold_sends(&self) {
        self.shared.hold.send_replace(true);
    }

    /// Answers the held sends and stops holding.
    pub fn release_sends(&self) {
        self.shared.hold.send_replace(false);
    }

    /// A text from `from` to our number arrives; returns its SID.
    pub fn receive(&self, from: &str, body: &str) -> String {
        self.receive_many(from, &[body.to_owned()]).remove(0)
    }

    /// Texts from `from` arrive at once (no list request sees only some); returns their SIDs.
    pub fn receive_many(&self, from: &str, bodies: &[String]) -> Vec<String> {
        let mut record = self.shared.lock();
        let mut sids = Vec::new();
        for body in bodies {
            let sid = next_sid(&mut record);
            record.messages.push(Stored {
                sid: sid.clone(),
                from: from.to_owned(),
                to: OUR_NUMBER.to_owned(),
                body: body.clone(),
                direction: "inbound".into(),
                date_sent: chrono::Utc::now().to_rfc2822(),
                num_segments: count_segments(body),
            });
            sids.push(sid);
        }
        drop(record);
        self.shared.bump();
        sids
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
}

fn next_sid(record: &mut Record) -> String {
    record.next_sid += 1;
    format!("SM{:032x}", record.next_sid)
}

/// Checks Basic auth and the account in the path; the error response if they are wrong.
fn authenticate(headers: &HeaderMap, sid: &str) -> Option<Response> {
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"));
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    if given != Some(expected.as_str()) {
        return Some(twilio_error(
            StatusCode::UNAUTHORIZED,
            20003,
            "Authenticate",
        ));
    }
    if sid != ACCOUNT_SID {
        return Some(twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            &format!(
                "The requested resource /2010-04-01/Accounts/{sid}/Messages.json was not found"
            ),
        ));
    }
    None
}

fn rate_limited(record: &mut Record) -> Option<Response> {
    if record.rate_limited == 0 {
        return None;
    }
    record.rate_limited -= 1;
    let mut response = twilio_error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
    let after = record.retry_after.to_string();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, after.parse().expect("a header value"));
    Some(response)
}

fn resource(message: &Stored) -> Value {
    let uri = format!(
        "/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{}.json",
        message.sid
    );
    let inbound = message.direction == "inbound";
    json!({
        "account_sid": ACCOUNT_SID,
        "api_version": "2010-04-01",
        "body": message.body,
        "date_created": message.date_sent,
        "date_sent": if inbound { json!(message.date_sent) } else { Value::Null },
        "date_updated": message.date_sent,
        "direction": message.direction,
        "error_code": null,
        "error_message": null,
        "from": message.from,
        "messaging_service_sid": null,
        "num_media": "0",
        "num_segments": message.num_segments.to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": message.sid,
        "status": if inbound { "received" } else { "queued" },
        "subresource_uris": { "media": uri.replace(".json", "/Media.json") },
        "to": message.to,
        "uri": uri,
    })
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = accept(&shared, &sid, &headers, &body);
    let mut hold = shared.hold.subscribe();
    let held = *hold.borrow_and_update();
    if held && response.status() == StatusCode::CREATED {
        let _ = tokio::time::timeout(HOLD_LIMIT, hold.wait_for(|held| !held)).await;
    }
    response
}

/// Checks and records a message to send; the response to give.
fn accept(shared: &Shared, sid: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let mut record = shared.lock();
    if let Some(response) = rate_limited(&mut record) {
        return response;
    }
    if let Some(response) = authenticate(headers, sid) {
        return response;
    }
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21604,
            "A 'To' phone number is required.",
        );
    }
    let fields: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| fields.get(name).filter(|v| !v.is_empty()).cloned();
    let Some(to) = field("To") else {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21604,
            "A 'To' phone number is required.",
        );
    };
    let Some(from) = field("From") else {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21603,
            "A 'From' phone number is required.",
        );
    };
    let Some(text) = field("Body") else {
        return twilio_error(StatusCode::BAD_REQUEST, 21602, "Message body is required.");
    };
    if !e164(&to) {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21211,
            &format!("The 'To' number {to} is not a valid phone number."),
        );
    }
    if from != OUR_NUMBER {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21606,
            &format!("The From phone number {from} is not a valid, SMS-capable inbound phone number or short code for your account."),
        );
    }
    if text.chars().count() > 1600 {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        );
    }
    let message = Stored {
        sid: next_sid(&mut record),
        from,
        to,
        num_segments: count_segments(&text),
        body: text,
        direction: "outbound-api".into(),
        date_sent: chrono::Utc::now().to_rfc2822(),
    };
    let body = resource(&message);
    record.messages.push(message);
    drop(record);
    shared.bump();
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Path(sid): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut record = shared.lock();
    if let Some(response) = rate_limited(&mut record) {
        return response;
    }
    if let Some(response) = authenticate(&headers, &sid) {
        return response;
    }
    let page_size: usize = match query.get("PageSize").map(|v| v.parse::<usize>()) {
        None => 50,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return twilio_error(StatusCode::BAD_REQUEST, 20001, "Invalid PageSize"),
    };
    let page: usize = match query.get("Page").map(|v| v.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return twilio_error(StatusCode::BAD_REQUEST, 20001, "Invalid Page"),
    };
    if page > 0 && !query.contains_key("PageToken") {
        return twilio_error(StatusCode::BAD_REQUEST, 20001, "Page without PageToken");
    }
    record.list_requests += 1;
    if page > 0 {
        record.later_pages += 1;
    }
    let to = query.get("To");
    let matching: Vec<&Stored> = record
        .messages
        .iter()
        .rev()
        .filter(|m| to.is_none_or(|to| &m.to == to))
        .collect();
    let start = page * page_size;
    let items: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(page_size)
        .map(|m| resource(m))
        .collect();
    let encode =
        |value: &str| form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>();
    let filter = to
        .map(|to| format!("To={}&", encode(to)))
        .unwrap_or_default();
    let base =
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json?{filter}PageSize={page_size}");
    let page_uri = |n: usize| format!("{base}&Page={n}&PageToken=PA{n}");
    let more = start + page_size < matching.len();
    let count = items.len();
    let body = json!({
        "messages": items,
        "first_page_uri": format!("{base}&Page=0"),
        "next_page_uri": if more { json!(page_uri(page + 1)) } else { Value::Null },
        "previous_page_uri": if page > 0 { json!(page_uri(page - 1)) } else { Value::Null },
        "page": page,
        "page_size": page_size,
        "start": start,
        "end": start + count.saturating_sub(1),
        "uri": if page == 0 { format!("{base}&Page=0") } else { page_uri(page) },
    });
    drop(record);
    shared.bump();
    Json(body).into_response()
}
