//! Sending over SMTP with lettre: asks, notes, resolution follow-ups and replies, each with its
//! own Message-ID so a person's reply can be threaded back to what it answers.
//!
//! Every mail about one ask stays in that ask's thread, as mail clients build threads: the
//! subject `Re: [ask:ID] …` and `References:` starting with the Message-ID of the ask's mail
//! to that person (a follow-up or a notice answering their message then adds theirs, and
//! `In-Reply-To:` names it).

use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::Tls;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rein::bridge::ledger::{Kind, Ledger};
use rein::bridge::{ask_text, describe_resolution, Channel, Inbound, PostRef, SendError, Target};
use rein::mailbox::{Ask, Mailbox as Asks, Resolution};
use rein::notes::Note;
use rein::store::DataDir;

use crate::config::{parse_address, EmailSettings, Security};
use crate::parse::{ask_message_id, other_message_id};
use crate::tls;

/// How long one SMTP conversation may take before it counts as a temporary failure.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// `Auto-Submitted: auto-generated` (RFC 3834): out-of-office responders must not answer.
#[derive(Debug, Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// The email channel: sends with SMTP; replies are read by [`crate::read::Reader`].
pub struct EmailChannel {
    settings: Arc<EmailSettings>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    sender: Mailbox,
    /// The asks and the bridge's ledger, to find the thread of an ask a person wrote about.
    threads: Option<(Asks, Ledger)>,
    /// How the reader's IMAP connection stands.
    link: Option<tokio::sync::watch::Receiver<rein::bridge::Link>>,
}

/// The thread of one ask in one person's mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Thread {
    /// `[ask:ID] WORKER: PROMPT`, or `[ask:ID]` when the ask cannot be read; None when the
    /// ask is unknown.
    subject: Option<String>,
    /// The Message-ID of the ask's mail to this person, when one was sent.
    root: Option<String>,
}

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// Subjects stay readable in a list of mail: one line, bounded length.
fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    short.push('…');
    short
}

fn random_part() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// The subject of an ask's email; replies keep the `[ask:ID]` token.
pub fn ask_subject(ask: &Ask, resent: bool) -> String {
    let mut subject = format!(
        "{} {}: {}",
        rein::bridge::ask_token(&ask.id),
        ask.worker,
        shorten(first_line(&ask.prompt), 100)
    );
    if resent {
        subject.push_str(" (resent)");
    }
    subject
}

/// The body of an ask's email.
pub fn ask_body(ask: &Ask, resent: bool) -> String {
    let mut body = String::new();
    if resent {
        body.push_str("(resent: an earlier copy of this ask may have reached you; answering either one is enough)\n\n");
    }
    body.push_str(&ask_text(ask));
    body.push_str("\n\nReply to this email with your answer (first line counts).\n");
    body
}

impl EmailChannel {
    pub fn new(settings: Arc<EmailSettings>) -> anyhow::Result<EmailChannel> {
        let smtp = &settings.smtp;
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
                .port(smtp.port)
                .timeout(Some(SMTP_TIMEOUT));
        builder = match smtp.security {
            Security::StartTls => builder.tls(Tls::Required(tls::smtp_parameters(
                &smtp.host,
                settings.ca_file.as_deref(),
            )?)),
            Security::Tls => builder.tls(Tls::Wrapper(tls::smtp_parameters(
                &smtp.host,
                settings.ca_file.as_deref(),
            )?)),
            Security::None => builder.tls(Tls::None),
        };
        if let Some(password) = &smtp.password {
            builder = builder
                .credentials(Credentials::new(smtp.username.clone(), password.clone()))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        let sender = Mailbox::new(Some("rein".to_owned()), settings.from.clone());
        Ok(EmailChannel {
            transport: builder.build(),
            sender,
            settings,
            threads: None,
            link: None,
        })
    }

    /// Shows the reader's connection state (its [`rein::bridge::Link`]) as the channel's.
    pub fn with_link(mut self, link: tokio::sync::watch::Receiver<rein::bridge::Link>) -> Self {
        self.link = Some(link);
        self
    }

    /// Reads the asks and the ledger of bridge `bridge` in `data`, so that what the bridge says
    /// back about an ask goes into the ask's thread.
    pub fn with_data(mut self, data: &DataDir, bridge: &str) -> anyhow::Result<EmailChannel> {
        self.threads = Some((Asks::new(data.clone()), Ledger::open(data, bridge)?));
        Ok(self)
    }

    pub fn settings(&self) -> &EmailSettings {
        &self.settings
    }

    fn new_id(&self, kind: &str, item: &str) -> String {
        let random = random_part();
        match kind {
            "ask" => ask_message_id(item, &random, self.settings.domain()),
            _ => other_message_id(kind, item, &random, self.settings.domain()),
        }
    }

    /// The thread an inbound message belongs to: the ask it replied to or named.
    fn thread_of(&self, inbound: &Inbound) -> Option<Thread> {
        let (asks, ledger) = self.threads.as_ref()?;
        let (ask, root) = match &inbound.target {
            Target::Post(post) => (
                ledger.ask_for_post(post).ok().flatten(),
                Some(post.id.clone()),
            ),
            Target::Ask(id) => {
                let sent = ledger
                    .get(Kind::Ask, id, &inbound.reply_to.route)
                    .ok()
                    .flatten()
                    .and_then(|entry| entry.post);
                (Some(id.clone()), sent.map(|post| post.id))
            }
            Target::Unspecified => return None,
        };
        let subject = ask.map(|id| match asks.get(&id) {
            Ok(record) => ask_subject(&record.ask, false),
            Err(_) => rein::bridge::ask_token(&id),
        });
        (subject.is_some() || root.is_some()).then_some(Thread { subject, root })
    }

    /// Sends one plain-text message; returns its Message-ID (without angle brackets).
    /// `thread` lists the Message-IDs it follows, oldest first: the last is its parent.
    async fn send(
        &self,
        to: &str,
        subject: &str,
        body: String,
        message_id: String,
        thread: &[&str],
    ) -> Result<String, SendError> {
        let to_address =
            parse_address("routes", to).map_err(|error| SendError::Fatal(format!("{error:#}")))?;
        let mut builder = Message::builder()
            .from(self.sender.clone())
            .to(Mailbox::new(None, to_address))
            .subject(rein::text::inert_line(subject))
            .message_id(Some(format!("<{message_id}>")))
            .header(AutoSubmitted)
            .header(ContentType::TEXT_PLAIN);
        let thread: Vec<String> = thread
            .iter()
            .filter(|id| !id.is_empty())
            .map(|id| format!("<{id}>"))
            .collect();
        if let Some(parent) = thread.last() {
            builder = builder
                .in_reply_to(parent.clone())
                .references(thread.join(" "));
        }
        let message = builder
            .body(rein::text::inert(&body).into_owned())
            .map_err(|error| SendError::Fatal(format!("building the email failed: {error}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(message_id),
            Err(error) => Err(self.classify(&error)),
        }
    }

    /// Turns an SMTP failure into retry-or-not, with a message that says what to fix.
    fn classify(&self, error: &lettre::transport::smtp::Error) -> SendError {
        let smtp = &self.settings.smtp;
        let text = format!("SMTP {}:{}: {}", smtp.host, smtp.port, tls::describe(error));
        if tls::is_certificate_problem(&text) {
            return SendError::Fatal(format!(
                "{text}{}",
                tls::certificate_hint(self.settings.ca_file.as_deref())
            ));
        }
        if error.is_permanent() {
            return SendError::Fatal(text);
        }
        SendError::Retry {
            after: None,
            reason: text,
        }
    }
}

impl Channel for EmailChannel {
    async fn post_ask(
        &mut self,
        ask: &Ask,
        route: &str,
        resent: bool,
    ) -> Result<PostRef, SendError> {
        let id = self.new_id("ask", &ask.id);
        let id = self
            .send(
                route,
                &ask_subject(ask, resent),
                ask_body(ask, resent),
                id,
                &[],
            )
            .await?;
        Ok(PostRef {
            route: route.to_owned(),
            id,
        })
    }

    async fn post_note(
        &mut self,
        note: &Note,
        route: &str,
        resent: bool,
    ) -> Result<PostRef, SendError> {
        let mut subject = format!(
            "[rein] {}: {}",
            note.worker,
            shorten(first_line(&note.message), 100)
        );
        if resent {
            subject.push_str(" (resent)");
        }
        let body = format!(
            "{} says: {}\n\n(a note from rein; no reply needed)\n",
            note.worker, note.message
        );
        let id = self.new_id("note", &note.id);
        let id = self.send(route, &subject, body, id, &[]).await?;
        Ok(PostRef {
            route: route.to_owned(),
            id,
        })
    }

    async fn resolved(
        &mut self,
        ask: &Ask,
        resolution: &Resolution,
        post: &PostRef,
    ) -> Result<(), SendError> {
        let subject = format!("Re: {}", ask_subject(ask, false));
        let body = format!("{}\n", describe_resolution(resolution));
        let id = self.new_id("resolved", &ask.id);
        self.send(&post.route, &subject, body, id, &[&post.id])
            .await
            .map(drop)
    }

    async fn reply(&mut self, to: &Inbound, text: &str) -> Result<(), SendError> {
        let thread = self.thread_of(to);
        let subject = match thread.as_ref().and_then(|t| t.subject.as_ref()) {
            Some(subject) => format!("Re: {subject}"),
            None => format!("rein: {}", shorten(first_line(text), 100)),
        };
        let mut follows: Vec<&str> = thread.iter().filter_map(|t| t.root.as_deref()).collect();
        if !follows.contains(&to.reply_to.id.as_str()) {
            follows.push(&to.reply_to.id);
        }
        let id = self.new_id("reply", "to");
        self.send(
            &to.reply_to.route,
            &subject,
            format!("{text}\n"),
            id,
            &follows,
        )
        .await
        .map(drop)
    }

    fn link(&self) -> Option<tokio::sync::watch::Receiver<rein::bridge::Link>> {
        self.link.clone()
    }

    async fn test(&mut self, route: &str) -> Result<String, SendError> {
        let id = self.new_id("test", "message");
        let body = "This is a test message from rein's email bridge (`rein bridge test email`). Nothing needs doing.\n".to_owned();
        let id = self
            .send(route, "[rein] test message", body, id, &[])
            .await?;
        let smtp = &self.settings.smtp;
        Ok(format!(
            "message <{id}> accepted by {}:{}",
            smtp.host, smtp.port
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(prompt: &str) -> Ask {
        Ask {
            version: 1,
            id: "k3m9pq".into(),
            seq: 1,
            worker: "w1".into(),
            prompt: prompt.into(),
            reference: None,
            options: vec!["yes".into(), "no".into()],
            created: chrono::Utc::now(),
            key: "k".into(),
        }
    }

    #[test]
    fn subjects_and_bodies() {
        let a = ask("\nDeploy to prod?\nIt has 3 migrations.");
        assert_eq!(ask_subject(&a, false), "[ask:k3m9pq] w1: Deploy to prod?");
        assert_eq!(
            ask_subject(&a, true),
            "[ask:k3m9pq] w1: Deploy to prod? (resent)"
        );
        let body = ask_body(&a, false);
        assert!(body.starts_with("w1 asks: \nDeploy to prod?"), "{body}");
        assert!(body.contains("Options: yes, no\n[ask:k3m9pq]"), "{body}");
        assert!(body.ends_with("Reply to this email with your answer (first line counts).\n"));
        assert!(ask_body(&a, true).starts_with("(resent"));
        let long = ask(&"x".repeat(300));
        assert_eq!(
            ask_subject(&long, false).chars().count(),
            "[ask:k3m9pq] w1: ".len() + 100
        );
    }
}
