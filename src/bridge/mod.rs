//! Bridges: separate processes that relay asks (and notes) to people on a channel — Slack,
//! SMS, email, a Konsole tab — and their answers back through the mailbox.
//!
//! Each bridge crate (`bridges/NAME`) implements [`Channel`] (how to post, update and reply
//! on its channel) and feeds what people send into an [`Inbound`] queue. Everything else is
//! shared and lives here, so no bridge re-implements it: the engine ([`engine::run`]) that
//! watches `asks/`, `answers/` and `notes/` with inotify and delivers each item exactly once
//! per route across restarts (the [`ledger`]), the allowlist, routing, rate limits, retries
//! with backoff honouring Retry-After, secrets ([`secrets`]) and answering through the
//! mailbox with the person's identity. So do the small things every channel needs: the
//! `[ask:ID]` token ([`ask_token`], [`find_ask_token`], [`leading_ask_token`]), the shape of
//! an ask id ([`as_ask_id`]), what an HTTP status means ([`classify_http`]), the one
//! [`Backoff`], and an error with its causes said once ([`error_chain`]).

pub mod config;
pub mod engine;
pub mod ledger;
pub mod secrets;

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mailbox::{Ask, Resolution};
use crate::notes::Note;
use crate::text::{inert, inert_line};

/// A channel's handle on something it posted: enough to update it or to recognise a reply
/// to it (Slack channel + ts, Twilio message SID, email Message-ID, Konsole session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostRef {
    /// Where it went: a Slack channel id, a phone number, an address, a desktop.
    pub route: String,
    /// The channel's id of the message.
    pub id: String,
}

/// Which ask a person's message answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The message named the ask (a button carrying the id, an `[ask:ID]` token, a code).
    Ask(String),
    /// The message replied to something the bridge posted (a thread, In-Reply-To).
    Post(PostRef),
    /// Nothing says which: the engine picks the sender's only pending ask, or lists them.
    Unspecified,
}

/// What a person sent on the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// `slack:U…`, `sms:+1…`, `email:addr`, `konsole:USER`: checked against the allowlist.
    pub identity: String,
    pub target: Target,
    pub text: String,
    /// Where a response to this person goes (a channel + thread, a phone number, an address).
    pub reply_to: PostRef,
    /// The channel's id for this inbound message, so a redelivered one is recognised.
    pub message_id: String,
}

/// Why a send did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying (network trouble, 5xx, 429); `after` is the channel's Retry-After.
    #[error("temporary failure: {reason}")]
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Retrying will not help (bad credentials, unknown recipient, 4xx).
    #[error("{0}")]
    Fatal(String),
}

/// How a channel's connection to its service stands, for channels that hold one (a session
/// bus) and rebuild it when it is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Connected. Sent again whenever something the channel posts to came (back) up.
    Up,
    /// Lost; says what was lost and what the channel is doing about it.
    Down(String),
}

/// One channel. Implementations only talk to their service; the engine decides what to send,
/// when, to whom, and keeps the ledger.
pub trait Channel: Send {
    /// Posts a new ask to `route`. `resent` is true when an earlier attempt may already have
    /// reached the person (the bridge died between sending and recording): the message must
    /// say it is a repeat, so the person recognises the duplicate.
    fn post_ask(
        &mut self,
        ask: &Ask,
        route: &str,
        resent: bool,
    ) -> impl Future<Output = Result<PostRef, SendError>> + Send;

    /// Posts a note from `rein notify` to `route`.
    fn post_note(
        &mut self,
        note: &Note,
        route: &str,
        resent: bool,
    ) -> impl Future<Output = Result<PostRef, SendError>> + Send;

    /// Updates a posted ask once it is resolved anywhere, e.g. "answered: yes — by
    /// cli:ana via cli". [`describe_resolution`] gives the wording.
    fn resolved(
        &mut self,
        ask: &Ask,
        resolution: &Resolution,
        post: &PostRef,
    ) -> impl Future<Output = Result<(), SendError>> + Send;

    /// Sends `text` to the person behind `to` (a refusal, a confirmation, a list of asks).
    fn reply(
        &mut self,
        to: &Inbound,
        text: &str,
    ) -> impl Future<Output = Result<(), SendError>> + Send;

    /// Tells someone who is not on the allowlist that they may not answer. Only they should
    /// see it (Slack: an ephemeral message), never a public reply; by default it is a
    /// [`Channel::reply`], for channels whose replies are private anyway. The engine sends
    /// at most one a day per sender, within the channel's rate limit.
    fn refuse(
        &mut self,
        to: &Inbound,
        text: &str,
    ) -> impl Future<Output = Result<(), SendError>> + Send {
        self.reply(to, text)
    }

    /// Sends a test message to `route`; returns what happened, for `rein bridge test`.
    fn test(&mut self, route: &str) -> impl Future<Output = Result<String, SendError>> + Send;

    /// The [`Link`] of a channel that can lose its connection and rebuild it; None (the
    /// default) for one that has none. The engine shows a down link in STATUS (so `rein
    /// bridge ls` does not call the bridge healthy), and on every [`Link::Up`] retries at
    /// once what waits for a retry and asks [`Channel::still_posted`] about pending asks.
    fn link(&self) -> Option<tokio::sync::watch::Receiver<Link>> {
        None
    }

    /// Whether `post`, an ask that is still pending, is still in front of people. A channel
    /// whose posts can vanish (a Konsole tab whose Konsole went away with its bus) answers
    /// false, and the engine posts the ask again. Asked when the engine starts and on every
    /// [`Link::Up`].
    fn still_posted(
        &mut self,
        _ask: &Ask,
        _post: &PostRef,
    ) -> impl Future<Output = Result<bool, SendError>> + Send {
        async { Ok(true) }
    }
}

/// The token that names an ask in what a bridge sends (`[ask:k3m9pq]`), so a reply can
/// name it back.
pub fn ask_token(id: &str) -> String {
    format!("[ask:{id}]")
}

/// The ask named by the first valid `[ask:ID]` token anywhere in `text` (any case), its id
/// lowercased.
pub fn find_ask_token(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let mut rest = lower.as_str();
    while let Some(start) = rest.find("[ask:") {
        let after = &rest[start + "[ask:".len()..];
        if let Some(end) = after.find(']') {
            let id = after[..end].trim();
            if crate::store::validate_id("ask id", id).is_ok() {
                return Some(id.to_owned());
            }
        }
        rest = after;
    }
    None
}

/// A message that starts with `[ask:ID]` or `[ID]`: the id (lowercased) and the rest.
pub fn leading_ask_token(text: &str) -> Option<(String, &str)> {
    let (inner, rest) = text.strip_prefix('[')?.split_once(']')?;
    let inner = inner.trim();
    let id = match inner.get(..4) {
        Some(prefix) if prefix.eq_ignore_ascii_case("ask:") => &inner[4..],
        _ => inner,
    }
    .trim()
    .to_lowercase();
    crate::store::validate_id("ask id", &id).ok()?;
    Some((id, rest))
}

/// `word` as an ask id when it has an ask id's shape (six characters of
/// [`crate::mailbox::ID_ALPHABET`], any case: phones capitalise the first letter).
pub fn as_ask_id(word: &str) -> Option<String> {
    let word = word.to_lowercase();
    (word.chars().count() == crate::mailbox::ID_LEN
        && word
            .chars()
            .all(|c| crate::mailbox::ID_ALPHABET.contains(c)))
    .then_some(word)
}

/// What an HTTP status means to a bridge that sent something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpOutcome {
    /// 2xx.
    Success,
    /// 429: try again after the server's Retry-After, if it gave one.
    RateLimited(Option<Duration>),
    /// 5xx: the service's trouble; try again later.
    ServerError,
    /// Any other status: the request itself is wrong (credentials, recipient, URL).
    Refused,
}

/// Classifies a response by its status and `Retry-After` header, the same for every bridge.
pub fn classify_http(status: u16, retry_after_header: Option<&str>) -> HttpOutcome {
    match status {
        200..=299 => HttpOutcome::Success,
        429 => HttpOutcome::RateLimited(retry_after(retry_after_header)),
        500..=599 => HttpOutcome::ServerError,
        _ => HttpOutcome::Refused,
    }
}

/// How long to wait before trying again: doubling from `initial` up to `max`. The one
/// backoff of every bridge and the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before attempt `failures + 1`.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.min(16);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// An error and its sources on one line, each cause said once: a source whose text its
/// wrapper already includes (reqwest's "error sending request" hides its cause; zbus and
/// std I/O errors repeat theirs) is not repeated, and one that is not is not hidden.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut said = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !said.contains(&text) {
            said.push_str(": ");
            said.push_str(&text);
        }
        source = cause.source();
    }
    said
}

/// The wait a `Retry-After` header asks for: delay-seconds, or an HTTP date (RFC 9110).
pub fn retry_after(header: Option<&str>) -> Option<Duration> {
    let value = header?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or_default(),
    )
}

/// "answered: yes — by slack:U123 via slack" / "withdrawn — by cli:ana via cli", inert.
pub fn describe_resolution(resolution: &Resolution) -> String {
    let by = inert_line(&resolution.by);
    let via = by.split(':').next().unwrap_or("cli");
    match (&resolution.kind, &resolution.text) {
        (crate::mailbox::ResolutionKind::Answered, Some(text)) => {
            format!("answered: {} — by {by} via {via}", inert_line(text))
        }
        _ => format!("withdrawn — by {by} via {via}"),
    }
}

/// The text of an ask as a person reads it on a channel, with how to answer; everything the
/// agent wrote is inert ([`crate::text`]).
pub fn ask_text(ask: &Ask) -> String {
    let mut text = format!("{} asks: {}", inert_line(&ask.worker), inert(&ask.prompt));
    if let Some(reference) = &ask.reference {
        text.push_str(&format!("\n(re: {})", inert_line(reference)));
    }
    if !ask.options.is_empty() {
        text.push_str(&format!(
            "\nOptions: {}",
            inert_line(&ask.options.join(", "))
        ));
    }
    text.push('\n');
    text.push_str(&ask_token(&ask.id));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ask_tokens_are_written_and_found_one_way() {
        assert_eq!(ask_token("k3m9pq"), "[ask:k3m9pq]");
        for (text, found) in [
            ("Re: [ask:k3m9pq] w1: deploy?", Some("k3m9pq")),
            ("RE: [ASK:K3M9PQ]", Some("k3m9pq")),
            ("[ask:] [ask:ab/c] [ask:x7]", Some("x7")),
            ("[ask:abc", None),
            ("no token", None),
        ] {
            assert_eq!(find_ask_token(text).as_deref(), found, "{text}");
        }
        assert_eq!(
            leading_ask_token("[Ask:ab3x9k] no"),
            Some(("ab3x9k".to_owned(), " no"))
        );
        assert_eq!(
            leading_ask_token("[ab3x9k]yes"),
            Some(("ab3x9k".to_owned(), "yes"))
        );
        assert_eq!(leading_ask_token("[../x] no"), None);
        assert_eq!(as_ask_id("Ab3x9k").as_deref(), Some("ab3x9k"));
        // The shape only: "answer" has it (so SMS asks whether such an ask exists).
        assert_eq!(as_ask_id("answer").as_deref(), Some("answer"));
        assert_eq!(as_ask_id("hello1"), None, "no l or 1 in ask ids");
        assert_eq!(as_ask_id("ab3x9"), None);
    }

    #[test]
    fn http_statuses_mean_the_same_to_every_bridge() {
        assert_eq!(classify_http(201, None), HttpOutcome::Success);
        assert_eq!(
            classify_http(429, Some("7")),
            HttpOutcome::RateLimited(Some(Duration::from_secs(7)))
        );
        assert_eq!(classify_http(503, None), HttpOutcome::ServerError);
        assert_eq!(classify_http(401, None), HttpOutcome::Refused);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        let delays: Vec<u64> = (0..6).map(|n| backoff.delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff.delay(u32::MAX).as_secs(), 10);
    }

    #[test]
    fn error_chains_say_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let wrapped = crate::Error::io("reading", "/x", io);
        assert_eq!(
            error_chain(&wrapped),
            "reading /x: No such file or directory"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(None), None);
        assert_eq!(retry_after(Some("soon")), None);
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let wait = retry_after(Some(&later)).expect("a date");
        assert!((115..=120).contains(&wait.as_secs()), "{wait:?}");
        let past = (chrono::Utc::now() - chrono::Duration::seconds(60)).to_rfc2822();
        assert_eq!(retry_after(Some(&past)), Some(Duration::ZERO));
    }
}
