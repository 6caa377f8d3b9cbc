//! Bridges: separate processes that relay asks (and notes) to people on a channel — Slack,
//! SMS, email, a Konsole tab — and their answers back through the mailbox.
//!
//! Each bridge crate (`bridges/NAME`) implements [`Channel`] (how to post, update and reply
//! on its channel) and feeds what people send into an [`Inbound`] queue. Everything else is
//! shared and lives here, so no bridge re-implements it: the engine ([`engine::run`]) that
//! watches `asks/`, `answers/` and `notes/` with inotify and delivers each item exactly once
//! per route across restarts (the [`ledger`]), the allowlist, routing, rate limits, retries
//! with backoff honouring Retry-After, secrets ([`secrets`]) and answering through the
//! mailbox with the person's identity.

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
    text.push_str(&format!("\n[ask:{}]", ask.id));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

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
