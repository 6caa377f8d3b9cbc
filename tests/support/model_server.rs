//! A scripted model server on 127.0.0.1, so the real agent CLIs (claude, codex, opencode,
//! pi) run offline in tests.
//!
//! It speaks three wire formats, strictly enough that a client which would fail against the
//! real service fails here too: the Anthropic Messages API (`/v1/messages`, streaming and
//! not, `/v1/messages/count_tokens`), the OpenAI Responses API (`/v1/responses`, streaming,
//! as codex uses it) and OpenAI Chat Completions (`/v1/chat/completions`, streaming and not,
//! as opencode and pi use it), plus `GET /v1/models` in both vendors' shapes.
//!
//! A test scripts the model's side of the main conversation as a list of [`Step`]s: run a
//! shell command through the agent's own shell tool, or answer with text. The server finds
//! the shell tool among the request's `tools` and fills its command argument the way that
//! tool's schema wants it. The script advances only when the main conversation (a request
//! that carries tools) shows that the previous step was consumed: a tool result for the
//! call it made, or its text in the assistant's history. Retries get the same step again;
//! side requests (titles, summaries, probes without tools) get a short text and advance
//! nothing. Every request is recorded (API keys left out) for the test to inspect.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

/// The only API key the server accepts, for every vendor.
pub const API_KEY: &str = "sk-rein-offline-0000";

/// The reply to a side request (one without tools).
pub const SIDE_REPLY: &str = "Offline side reply";

/// The reply to a main request once the script has run out.
pub const SCRIPT_FINISHED: &str = "The script has no more steps.";

/// One move of the model in the main conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Call the agent's shell tool with this command line.
    Shell(String),
    /// Call the agent's shell tool with this command line and these extra arguments merged
    /// into the call (e.g. claude's `{"timeout": 600000}`), where the tool's schema has them.
    ShellWith(String, Value),
    /// Answer with this text and end the turn.
    Text(String),
}

/// The model's side of the main conversation, in order.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub steps: Vec<Step>,
}

impl Script {
    pub fn new() -> Script {
        Script::default()
    }

    pub fn shell(mut self, command: &str) -> Script {
        self.steps.push(Step::Shell(command.to_owned()));
        self
    }

    pub fn shell_with(mut self, command: &str, extra: Value) -> Script {
        self.steps.push(Step::ShellWith(command.to_owned(), extra));
        self
    }

    pub fn text(mut self, text: &str) -> Script {
        self.steps.push(Step::Text(text.to_owned()));
        self
    }
}

/// Which wire format a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Anthropic,
    Responses,
    ChatCompletions,
    Other,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path with its query string, as sent.
    pub path: String,
    /// Header names in lower case; `x-api-key` and `authorization` are left out.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Null` for an empty or unparsable body).
    pub body: Value,
    pub api: Api,
    /// The status the server answered with.
    pub status: u16,
    /// Whether it was part of the main conversation (it carried tools).
    pub main: bool,
    /// The script step it was answered with, if any.
    pub step: Option<usize>,
    /// Milliseconds since the server started.
    pub at_ms: u128,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// What the server has seen so far; handed to [`ModelServer::wait_until`] predicates.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub requests: Vec<Recorded>,
    /// The text of every distinct tool result the model received, in order of arrival.
    pub tool_results: Vec<String>,
    /// Protocol errors the server answered with (status >= 400), as `path: message`.
    pub rejections: Vec<String>,
}

impl Seen {
    /// Main-conversation requests only.
    pub fn main_requests(&self) -> impl Iterator<Item = &Recorded> {
        self.requests.iter().filter(|request| request.main)
    }
}

struct State {
    script: Vec<Step>,
    /// The step most recently served to the main conversation.
    current: Option<usize>,
    seen: Seen,
    result_ids: HashSet<String>,
    next_id: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stopping: AtomicBool,
    started: Instant,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// A running server; stops accepting when dropped.
pub struct ModelServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl ModelServer {
    /// Binds a free port on 127.0.0.1 and serves `script` from a background thread.
    pub fn start(script: Script) -> ModelServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                script: script.steps,
                current: None,
                seen: Seen::default(),
                result_ids: HashSet::new(),
                next_id: 1,
            }),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
            started: Instant::now(),
        });
        let accepting = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("model-server".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accepting.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = Arc::clone(&accepting);
                    let _ = std::thread::Builder::new()
                        .name("model-server-conn".into())
                        .spawn(move || serve_connection(stream, &shared));
                }
            })
            .expect("spawn model server thread");
        ModelServer { addr, shared }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash or `/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A copy of everything seen so far.
    pub fn seen(&self) -> Seen {
        self.shared.lock().seen.clone()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.seen().requests
    }

    pub fn tool_results(&self) -> Vec<String> {
        self.seen().tool_results
    }

    /// Replaces the script (and starts it over) for the next main request.
    pub fn set_script(&self, script: Script) {
        let mut state = self.shared.lock();
        state.script = script.steps;
        state.current = None;
    }

    /// Blocks until `predicate` holds for what the server has seen, or the deadline passes.
    /// Woken by every request, so it never polls.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut predicate: impl FnMut(&Seen) -> bool,
    ) -> Result<Seen, Seen> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if predicate(&state.seen) {
                return Ok(state.seen.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(state.seen.clone());
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poison| poison.into_inner())
                .0;
        }
    }

    /// Like [`ModelServer::wait_until`], but fails the test naming `what` and summing up the
    /// requests seen.
    pub fn expect(&self, timeout: Duration, what: &str, predicate: impl FnMut(&Seen) -> bool) {
        if let Err(seen) = self.wait_until(timeout, predicate) {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                summary(&seen)
            );
        }
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// One line per request, for failure messages.
pub fn summary(seen: &Seen) -> String {
    let mut out = String::new();
    for request in &seen.requests {
        out.push_str(&format!(
            "  {} {} -> {} main={} step={:?}\n",
            request.method, request.path, request.status, request.main, request.step
        ));
    }
    for rejection in &seen.rejections {
        out.push_str(&format!("  rejected: {rejection}\n"));
    }
    out.push_str(&format!("  tool results: {:?}\n", seen.tool_results));
    out
}

// ----- HTTP/1.1 -----

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
}

enum Body {
    Json(Value),
    /// Server-sent events: `(event name, data)`; a `None` name writes a bare `data:` line.
    Events(Vec<(Option<String>, String)>),
}

struct Response {
    status: u16,
    body: Body,
}

fn serve_connection(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(600)));
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut writer = writer;
    loop {
        let request = match read_request(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(message) => {
                let response = Response {
                    status: 400,
                    body: Body::Json(json!({"error": {"message": message}})),
                };
                let _ = write_response(&mut writer, &response, true);
                return;
            }
        };
        let close = request
            .header("connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"));
        let response = handle(shared, &request);
        if write_response(&mut writer, &response, close).is_err() || close {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Option<Request>, String> {
    let mut line = String::new();
    if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().ok_or("empty request line")?.to_owned();
    let path = parts
        .next()
        .ok_or("request line without a path")?
        .to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("connection closed inside the headers".into());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or("malformed header line")?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value): &(String, String)| value.clone())
    };
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|value| value.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size_line = String::new();
            reader
                .read_line(&mut size_line)
                .map_err(|e| e.to_string())?;
            let size_text = size_line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            if size == 0 {
                let mut trailer = String::new();
                while reader.read_line(&mut trailer).map_err(|e| e.to_string())? > 2 {
                    trailer.clear();
                }
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).map_err(|e| e.to_string())?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = header("content-length") {
        let length: usize = length.parse().map_err(|_| "bad content-length")?;
        body.resize(length, 0);
        reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    }
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        415 => "Unsupported Media Type",
        _ => "Error",
    }
}

fn write_response(writer: &mut TcpStream, response: &Response, close: bool) -> std::io::Result<()> {
    let connection = if close { "close" } else { "keep-alive" };
    match &response.body {
        Body::Json(value) => {
            let text = value.to_string();
            write!(
                writer,
                "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {connection}\r\nrequest-id: req_offline\r\nx-request-id: req_offline\r\n\r\n{text}",
                response.status,
                reason(response.status),
                text.len()
            )?;
        }
        Body::Events(events) => {
            // Chunked, one event a chunk, as the real services stream.
            write!(
                writer,
                "HTTP/1.1 {} {}\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\nconnection: {connection}\r\nrequest-id: req_offline\r\nx-request-id: req_offline\r\n\r\n",
                response.status,
                reason(response.status)
            )?;
            for (name, data) in events {
                let frame = match name {
                    Some(name) => format!("event: {name}\ndata: {data}\n\n"),
                    None => format!("data: {data}\n\n"),
                };
                write!(writer, "{:x}\r\n{frame}\r\n", frame.len())?;
                writer.flush()?;
            }
            write!(writer, "0\r\n\r\n")?;
        }
    }
    writer.flush()
}

// ----- routing and validation -----

fn handle(shared: &Shared, request: &Request) -> Response {
    let route = request.route().to_owned();
    let api = match route.as_str() {
        "/v1/messages" | "/v1/messages/count_tokens" => Api::Anthropic,
        "/v1/responses" => Api::Responses,
        "/v1/chat/completions" => Api::ChatCompletions,
        _ => Api::Other,
    };
    let parsed: Option<Value> = serde_json::from_slice(&request.body).ok();
    let mut state = shared.lock();
    let outcome = answer(&mut state, request, api, &route, parsed.as_ref());
    let (response, main, step) = match outcome {
        Ok(answered) => answered,
        Err(rejection) => {
            state.seen.rejections.push(format!(
                "{} {}: {}",
                request.method, route, rejection.message
            ));
            (rejection.response, false, None)
        }
    };
    let headers = request
        .headers
        .iter()
        .filter(|(name, _)| name != "x-api-key" && name != "authorization")
        .cloned()
        .collect();
    state.seen.requests.push(Recorded {
        method: request.method.clone(),
        path: request.path.clone(),
        headers,
        body: parsed.unwrap_or(Value::Null),
        api,
        status: response.status,
        main,
        step,
        at_ms: shared.started.elapsed().as_millis(),
    });
    drop(state);
    shared.changed.notify_all();
    response
}

struct Rejection {
    response: Response,
    message: String,
}

fn anthropic_error(status: u16, kind: &str, message: &str) -> Rejection {
    Rejection {
        response: Response {
            status,
            body: Body::Json(json!({
                "type": "error",
                "error": {"type": kind, "message": message},
                "request_id": "req_offline",
            })),
        },
        message: message.to_owned(),
    }
}

fn openai_error(status: u16, message: &str, param: Option<&str>, code: Option<&str>) -> Rejection {
    Rejection {
        response: Response {
            status,
            body: Body::Json(json!({
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": param,
                    "code": code,
                }
            })),
        },
        message: message.to_owned(),
    }
}

type Answered = (Response, bool, Option<usize>);

fn answer(
    state: &mut State,
    request: &Request,
    api: Api,
    route: &str,
    body: Option<&Value>,
) -> Result<Answered, Rejection> {
    let anthropic_style = api == Api::Anthropic || request.header("anthropic-version").is_some();
    if api == Api::Other {
        if request.method == "GET" && route == "/v1/models" {
            check_key(request, anthropic_style)?;
            return Ok((models(anthropic_style), false, None));
        }
        return Err(if anthropic_style {
            anthropic_error(404, "not_found_error", "Not Found")
        } else {
            openai_error(
                404,
                &format!("Invalid URL ({} {})", request.method, route),
                None,
                None,
            )
        });
    }
    if request.method != "POST" {
        return Err(if anthropic_style {
            anthropic_error(405, "invalid_request_error", "Method Not Allowed")
        } else {
            openai_error(
                405,
                &format!("Invalid method for URL ({} {})", request.method, route),
                None,
                None,
            )
        });
    }
    check_key(request, anthropic_style)?;
    if let Some(encoding) = request.header("content-encoding") {
        if !encoding.eq_ignore_ascii_case("identity") {
            let message = format!("unsupported content-encoding {encoding}");
            return Err(if anthropic_style {
                anthropic_error(415, "invalid_request_error", &message)
            } else {
                openai_error(415, &message, None, None)
            });
        }
    }
    match api {
        Api::Anthropic => {
            if request.header("anthropic-version").is_none() {
                return Err(anthropic_error(
                    400,
                    "invalid_request_error",
                    "anthropic-version: header is required",
                ));
            }
            let body = body.ok_or_else(|| {
                anthropic_error(
                    400,
                    "invalid_request_error",
                    "There was an error parsing the body of your request: invalid JSON",
                )
            })?;
            let object = body.as_object().ok_or_else(|| {
                anthropic_error(
                    400,
                    "invalid_request_error",
                    "The request body must be a JSON object",
                )
            })?;
            for field in ["model", "messages"] {
                if !object.contains_key(field) {
                    return Err(anthropic_error(
                        400,
                        "invalid_request_error",
                        &format!("{field}: Field required"),
                    ));
                }
            }
            if !body["messages"].is_array() {
                return Err(anthropic_error(
                    400,
                    "invalid_request_error",
                    "messages: Input should be a valid list",
                ));
            }
            if route == "/v1/messages/count_tokens" {
                let tokens = body.to_string().len() / 4;
                return Ok((
                    Response {
                        status: 200,
                        body: Body::Json(json!({"input_tokens": tokens})),
                    },
                    false,
                    None,
                ));
            }
            if !object.contains_key("max_tokens") {
                return Err(anthropic_error(
                    400,
                    "invalid_request_error",
                    "max_tokens: Field required",
                ));
            }
        }
        Api::Responses | Api::ChatCompletions => {
            let body = body.ok_or_else(|| {
                openai_error(
                    400,
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
                    None,
                    None,
                )
            })?;
            if !body.is_object() {
                return Err(openai_error(
                    400,
                    "Invalid type for request body: expected an object",
                    None,
                    None,
                ));
            }
            if body.get("model").is_none() {
                return Err(openai_error(
                    400,
                    "you must provide a model parameter",
                    None,
                    None,
                ));
            }
            let field = if api == Api::Responses {
                "input"
            } else {
                "messages"
            };
            if body.get(field).is_none() {
                return Err(openai_error(
                    400,
                    &format!("Missing required parameter: '{field}'."),
                    Some(field),
                    Some("missing_required_parameter"),
                ));
            }
        }
        Api::Other => unreachable!("handled above"),
    }
    let body = body.expect("validated above");
    let conversation = Conversation::read(api, body);
    for (id, text) in &conversation.tool_results {
        if state.result_ids.insert(id.clone()) {
            state.seen.tool_results.push(text.clone());
        }
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("offline")
        .to_owned();
    let tools = conversation.tools.clone();
    if tools.is_empty() {
        let reply = Reply::Text(SIDE_REPLY.to_owned());
        return Ok((
            render(api, &reply, &model, (stream, include_usage), state),
            false,
            None,
        ));
    }
    if let Some(poll) = poll_running_command(state, &conversation, &tools) {
        return Ok((
            render(api, &poll, &model, (stream, include_usage), state),
            true,
            state.current,
        ));
    }
    let step = next_step(state, &conversation);
    let reply = match step.and_then(|index| state.script.get(index).cloned()) {
        None => Reply::Text(SCRIPT_FINISHED.to_owned()),
        Some(Step::Text(text)) => Reply::Text(text),
        Some(Step::Shell(command)) => shell_call(api, &tools, &command, &Value::Null, step)?,
        Some(Step::ShellWith(command, extra)) => shell_call(api, &tools, &command, &extra, step)?,
    };
    state.current = step.or(state.current);
    Ok((
        render(api, &reply, &model, (stream, include_usage), state),
        true,
        step,
    ))
}

fn check_key(request: &Request, anthropic_style: bool) -> Result<(), Rejection> {
    let bearer = request
        .header("authorization")
        .and_then(|value| value.strip_prefix("Bearer "));
    if anthropic_style {
        match request.header("x-api-key").or(bearer) {
            None => Err(anthropic_error(
                401,
                "authentication_error",
                "x-api-key header is required",
            )),
            Some(key) if key != API_KEY => Err(anthropic_error(
                401,
                "authentication_error",
                "invalid x-api-key",
            )),
            Some(_) => Ok(()),
        }
    } else {
        match bearer {
            None => Err(openai_error(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                None,
                None,
            )),
            Some(key) if key != API_KEY => Err(openai_error(
                401,
                &format!("Incorrect API key provided: {key}."),
                None,
                Some("invalid_api_key"),
            )),
            Some(_) => Ok(()),
        }
    }
}

fn models(anthropic_style: bool) -> Response {
    let ids = ["offline-model"];
    let body = if anthropic_style {
        json!({
            "data": ids.iter().map(|id| json!({
                "type": "model", "id": id, "display_name": id,
                "created_at": "2025-01-01T00:00:00Z",
            })).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": ids[0],
            "last_id": ids[ids.len() - 1],
        })
    } else {
        json!({
            "object": "list",
            "data": ids.iter().map(|id| json!({
                "id": id, "object": "model", "created": 1_735_689_600, "owned_by": "rein",
            })).collect::<Vec<_>>(),
        })
    };
    Response {
        status: 200,
        body: Body::Json(body),
    }
}

// ----- the conversation inside a request -----

/// A tool the request offers: its name and JSON schema.
#[derive(Debug, Clone)]
struct Tool {
    name: String,
    schema: Value,
}

#[derive(Debug, Default)]
struct Conversation {
    tools: Vec<Tool>,
    /// `(call id, text)` of every tool result in the history.
    tool_results: Vec<(String, String)>,
    /// Every assistant text in the history.
    assistant_texts: Vec<String>,
}

/// The text of a content value: a string, or a list of parts with `text`.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| match part {
                Value::String(text) => Some(text.clone()),
                _ => part.get("text").and_then(Value::as_str).map(str::to_owned),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

impl Conversation {
    fn read(api: Api, body: &Value) -> Conversation {
        let mut conversation = Conversation::default();
        let empty = Vec::new();
        let tools = body
            .get("tools")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        for tool in tools {
            let (name, schema) = match api {
                Api::ChatCompletions => (
                    tool.pointer("/function/name"),
                    tool.pointer("/function/parameters"),
                ),
                Api::Anthropic => (tool.get("name"), tool.get("input_schema")),
                _ => (tool.get("name"), tool.get("parameters")),
            };
            if let Some(name) = name.and_then(Value::as_str) {
                conversation.tools.push(Tool {
                    name: name.to_owned(),
                    schema: schema.cloned().unwrap_or(Value::Null),
                });
            }
        }
        match api {
            Api::Anthropic => {
                for message in body["messages"].as_array().unwrap_or(&empty) {
                    let role = message.get("role").and_then(Value::as_str);
                    let content = message.get("content").unwrap_or(&Value::Null);
                    if role == Some("assistant") {
                        let text = match content {
                            Value::Array(blocks) => blocks
                                .iter()
                                .filter(|block| block["type"] == "text")
                                .filter_map(|block| block["text"].as_str())
                                .collect::<Vec<_>>()
                                .join(""),
                            other => content_text(other),
                        };
                        conversation.assistant_texts.push(text);
                    }
                    for block in content.as_array().unwrap_or(&empty) {
                        if block["type"] == "tool_result" {
                            if let Some(id) = block["tool_use_id"].as_str() {
                                conversation
                                    .tool_results
                                    .push((id.to_owned(), content_text(&block["content"])));
                            }
                        }
                    }
                }
            }
            Api::Responses => {
                let items = match &body["input"] {
                    Value::Array(items) => items.clone(),
                    Value::String(text) => vec![json!({"role": "user", "content": text})],
                    _ => Vec::new(),
                };
                for item in &items {
                    let kind = item
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("message");
                    match kind {
                        "function_call_output" | "custom_tool_call_output" => {
                            if let Some(id) = item["call_id"].as_str() {
                                let output = match &item["output"] {
                                    Value::Object(map) => {
                                        map.get("content").map(content_text).unwrap_or_default()
                                    }
                                    other => content_text(other),
                                };
                                conversation.tool_results.push((id.to_owned(), output));
                            }
                        }
                        "message" if item["role"] == "assistant" => {
                            conversation
                                .assistant_texts
                                .push(content_text(&item["content"]));
                        }
                        _ => {}
                    }
                }
            }
            Api::ChatCompletions => {
                for message in body["messages"].as_array().unwrap_or(&empty) {
                    match message.get("role").and_then(Value::as_str) {
                        Some("tool") => {
                            if let Some(id) = message["tool_call_id"].as_str() {
                                conversation
                                    .tool_results
                                    .push((id.to_owned(), content_text(&message["content"])));
                            }
                        }
                        Some("assistant") => {
                            conversation
                                .assistant_texts
                                .push(content_text(&message["content"]));
                        }
                        _ => {}
                    }
                }
            }
            Api::Other => {}
        }
        conversation
    }
}

/// The id of the tool call the server makes for step `index`: stable, so a retried request
/// gets the same call and a result can be matched to its step.
fn call_id(api: Api, index: usize) -> String {
    match api {
        Api::Anthropic => format!("toolu_offline_{index:04}"),
        _ => format!("call_offline_{index:04}"),
    }
}

/// The step to serve: the next one once the history shows the current one was consumed,
/// else the current one again (a retry), or the first.
fn next_step(state: &State, conversation: &Conversation) -> Option<usize> {
    let Some(current) = state.current else {
        return Some(0);
    };
    let consumed = match state.script.get(current) {
        None => true,
        Some(Step::Text(text)) => conversation
            .assistant_texts
            .iter()
            .any(|said| said.trim() == text.trim()),
        Some(Step::Shell(_) | Step::ShellWith(..)) => {
            let wanted = [
                call_id(Api::Anthropic, current),
                call_id(Api::Other, current),
            ];
            conversation
                .tool_results
                .iter()
                .any(|(id, _)| wanted.contains(id))
        }
    };
    if consumed {
        Some(current + 1)
    } else {
        Some(current)
    }
}

/// codex runs a command as a session and hands it back to the model when it is still
/// running after `yield_time_ms` ("Process running with session ID N"); a real model then
/// polls the session with `write_stdin` until the command exits. So does the script: the
/// step is consumed only by a result that says the command ended.
fn poll_running_command(
    state: &State,
    conversation: &Conversation,
    tools: &[Tool],
) -> Option<Reply> {
    let current = state.current?;
    let (id, text) = conversation.tool_results.last()?;
    if !id.starts_with(&call_id(Api::Other, current)) {
        return None;
    }
    let session = text
        .split("Process running with session ID ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse::<u64>()
        .ok()?;
    let tool = tools.iter().find(|tool| tool.name == "write_stdin")?;
    let polls = conversation
        .tool_results
        .iter()
        .filter(|(id, _)| id.starts_with(&call_id(Api::Other, current)))
        .count();
    Some(Reply::Call {
        id: format!("{}_poll_{polls}", call_id(Api::Other, current)),
        name: tool.name.clone(),
        arguments: json!({"session_id": session, "chars": "", "yield_time_ms": 300_000}),
    })
}

enum Reply {
    Text(String),
    Call {
        id: String,
        name: String,
        arguments: Value,
    },
}

/// Names of shell tools, most specific first.
const SHELL_TOOLS: [&str; 6] = [
    "Bash",
    "bash",
    "shell_command",
    "exec_command",
    "shell",
    "container.exec",
];

fn shell_call(
    api: Api,
    tools: &[Tool],
    command: &str,
    extra: &Value,
    step: Option<usize>,
) -> Result<Reply, Rejection> {
    let tool = SHELL_TOOLS
        .iter()
        .find_map(|name| tools.iter().find(|tool| tool.name == *name))
        .or_else(|| {
            tools.iter().find(|tool| {
                tool.schema.pointer("/properties/command").is_some()
                    || tool.schema.pointer("/properties/cmd").is_some()
            })
        });
    let Some(tool) = tool else {
        let names: Vec<&str> = tools.iter().map(|tool| tool.name.as_str()).collect();
        let message = format!("the script wants a shell call but no shell tool is among {names:?}");
        return Err(match api {
            Api::Anthropic => anthropic_error(400, "invalid_request_error", &message),
            _ => openai_error(400, &message, Some("tools"), None),
        });
    };
    let properties = tool.schema.get("properties");
    let field = if properties.and_then(|p| p.get("command")).is_some() {
        "command"
    } else if properties.and_then(|p| p.get("cmd")).is_some() {
        "cmd"
    } else {
        "command"
    };
    let wants_array = properties
        .and_then(|p| p.get(field))
        .and_then(|schema| schema.get("type"))
        .is_some_and(|kind| kind == "array");
    let value = if wants_array {
        json!(["bash", "-lc", command])
    } else {
        json!(command)
    };
    let mut arguments = Map::new();
    arguments.insert(field.to_owned(), value);
    if let Value::Object(extra) = extra {
        for (key, value) in extra {
            if properties.and_then(|p| p.get(key)).is_some() {
                arguments.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(Reply::Call {
        id: call_id(api, step.unwrap_or(0)),
        name: tool.name.clone(),
        arguments: Value::Object(arguments),
    })
}

// ----- rendering replies in each wire format -----

fn render(
    api: Api,
    reply: &Reply,
    model: &str,
    (stream, include_usage): (bool, bool),
    state: &mut State,
) -> Response {
    let serial = state.next_id;
    state.next_id += 1;
    let body = match (api, stream) {
        (Api::Anthropic, true) => Body::Events(anthropic_events(reply, model, serial)),
        (Api::Anthropic, false) => Body::Json(anthropic_message(reply, model, serial)),
        (Api::Responses, _) if stream => Body::Events(responses_events(reply, model, serial)),
        (Api::Responses, _) => Body::Json(responses_object(reply, model, serial, "completed")),
        (Api::ChatCompletions, true) => {
            Body::Events(chat_chunks(reply, model, serial, include_usage))
        }
        _ => Body::Json(chat_completion(reply, model, serial)),
    };
    Response { status: 200, body }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

fn anthropic_usage(output_tokens: u64) -> Value {
    json!({
        "input_tokens": 100,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    })
}

fn anthropic_blocks(reply: &Reply) -> (Vec<Value>, &'static str) {
    match reply {
        Reply::Text(text) => (vec![json!({"type": "text", "text": text})], "end_turn"),
        Reply::Call {
            id,
            name,
            arguments,
        } => (
            vec![json!({"type": "tool_use", "id": id, "name": name, "input": arguments})],
            "tool_use",
        ),
    }
}

fn anthropic_message(reply: &Reply, model: &str, serial: u64) -> Value {
    let (content, stop_reason) = anthropic_blocks(reply);
    json!({
        "id": format!("msg_offline_{serial:06}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": anthropic_usage(20),
    })
}

fn event(name: &str, data: Value) -> (Option<String>, String) {
    (Some(name.to_owned()), data.to_string())
}

fn anthropic_events(reply: &Reply, model: &str, serial: u64) -> Vec<(Option<String>, String)> {
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": format!("msg_offline_{serial:06}"),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": anthropic_usage(1),
            }}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    let stop_reason = match reply {
        Reply::Text(text) => {
            events.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}),
            ));
            for piece in split_in_two(text) {
                events.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": piece}}),
                ));
            }
            "end_turn"
        }
        Reply::Call {
            id,
            name,
            arguments,
        } => {
            events.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
            ));
            for piece in split_in_two(&arguments.to_string()) {
                events.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "input_json_delta", "partial_json": piece}}),
                ));
            }
            "tool_use"
        }
    };
    events.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": stop_reason, "stop_sequence": null},
               "usage": {"output_tokens": 20}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    events
}

/// Splits text in two at a char boundary, so clients must join deltas.
fn split_in_two(text: &str) -> Vec<String> {
    let mut middle = text.len() / 2;
    while !text.is_char_boundary(middle) {
        middle += 1;
    }
    let (first, second) = text.split_at(middle);
    [first, second]
        .into_iter()
        .filter(|piece| !piece.is_empty())
        .map(str::to_owned)
        .collect()
}

fn responses_item(reply: &Reply, serial: u64) -> Value {
    match reply {
        Reply::Text(text) => json!({
            "type": "message",
            "id": format!("msg_offline_{serial:06}"),
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }),
        Reply::Call {
            id,
            name,
            arguments,
        } => json!({
            "type": "function_call",
            "id": format!("fc_offline_{serial:06}"),
            "status": "completed",
            "call_id": id,
            "name": name,
            "arguments": arguments.to_string(),
        }),
    }
}

fn responses_object(reply: &Reply, model: &str, serial: u64, status: &str) -> Value {
    let output = if status == "completed" {
        vec![responses_item(reply, serial)]
    } else {
        Vec::new()
    };
    json!({
        "id": format!("resp_offline_{serial:06}"),
        "object": "response",
        "created_at": unix_now(),
        "status": status,
        "model": model,
        "output": output,
        "usage": if status == "completed" {
            json!({
                "input_tokens": 100,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 20,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 120,
            })
        } else {
            Value::Null
        },
    })
}

fn responses_events(reply: &Reply, model: &str, serial: u64) -> Vec<(Option<String>, String)> {
    let mut sequence = 0;
    let mut events = Vec::new();
    let mut push = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        data["sequence_number"] = json!(sequence);
        sequence += 1;
        events.push(event(name, data));
    };
    push(
        "response.created",
        json!({"response": responses_object(reply, model, serial, "in_progress")}),
    );
    push(
        "response.in_progress",
        json!({"response": responses_object(reply, model, serial, "in_progress")}),
    );
    let done = responses_item(reply, serial);
    let mut added = done.clone();
    added["status"] = json!("in_progress");
    match reply {
        Reply::Text(text) => {
            added["content"] = json!([]);
            push(
                "response.output_item.added",
                json!({"output_index": 0, "item": added}),
            );
            let item_id = done["id"].clone();
            push(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": []}}),
            );
            for piece in split_in_two(text) {
                push(
                    "response.output_text.delta",
                    json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                           "delta": piece}),
                );
            }
            push(
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                       "text": text}),
            );
            push(
                "response.content_part.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "text": text, "annotations": []}}),
            );
        }
        Reply::Call { arguments, .. } => {
            added["arguments"] = json!("");
            push(
                "response.output_item.added",
                json!({"output_index": 0, "item": added}),
            );
            let item_id = done["id"].clone();
            let arguments = arguments.to_string();
            for piece in split_in_two(&arguments) {
                push(
                    "response.function_call_arguments.delta",
                    json!({"item_id": item_id, "output_index": 0, "delta": piece}),
                );
            }
            push(
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": 0, "arguments": arguments}),
            );
        }
    }
    push(
        "response.output_item.done",
        json!({"output_index": 0, "item": done}),
    );
    push(
        "response.completed",
        json!({"response": responses_object(reply, model, serial, "completed")}),
    );
    events
}

fn chat_completion(reply: &Reply, model: &str, serial: u64) -> Value {
    let (message, finish_reason) = match reply {
        Reply::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
        Reply::Call {
            id,
            name,
            arguments,
        } => (
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": id, "type": "function",
                "function": {"name": name, "arguments": arguments.to_string()},
            }]}),
            "tool_calls",
        ),
    };
    json!({
        "id": format!("chatcmpl-offline{serial:06}"),
        "object": "chat.completion",
        "created": unix_now(),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    })
}

fn chat_chunks(
    reply: &Reply,
    model: &str,
    serial: u64,
    include_usage: bool,
) -> Vec<(Option<String>, String)> {
    let id = format!("chatcmpl-offline{serial:06}");
    let created = unix_now();
    let chunk = |delta: Value, finish_reason: Value| {
        (
            None,
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            })
            .to_string(),
        )
    };
    let mut chunks = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let finish_reason = match reply {
        Reply::Text(text) => {
            for piece in split_in_two(text) {
                chunks.push(chunk(json!({"content": piece}), Value::Null));
            }
            "stop"
        }
        Reply::Call {
            id: call,
            name,
            arguments,
        } => {
            chunks.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": call, "type": "function",
                                        "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ));
            for piece in split_in_two(&arguments.to_string()) {
                chunks.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
            "tool_calls"
        }
    };
    chunks.push(chunk(json!({}), json!(finish_reason)));
    if include_usage {
        chunks.push((
            None,
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            })
            .to_string(),
        ));
    }
    chunks.push((None, "[DONE]".to_owned()));
    chunks
}
