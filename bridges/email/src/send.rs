//! Sending over SMTP with lettre: asks, notes, resolution follow-ups and replies, each with its
//! own Message-ID so a person's reply can be threaded back to what it answers.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::Tls;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rein::bridge::{ask_text, describe_resolution, Channel, Inbound, PostRef, SendError};
use rein::mailbox::{Ask, Resolution};
use rein::notes::Note;

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
        "[ask:{}] {}: {}",
        ask.id,
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
        })
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

    /// Sends one plain-text message; returns its Message-ID (without angle brackets).
    async fn send(
        &self,
        to: &str,
        subject: &str,
        body: String,
        message_id: String,
        in_reply_to: Option<&str>,
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
        if let Some(parent) = in_reply_to.filter(|p| !p.is_empty()) {
            builder = builder
                .in_reply_to(format!("<{parent}>"))
                .references(format!("<{parent}>"));
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
                None,
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
        let id = self.send(route, &subject, body, id, None).await?;
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
        self.send(&post.route, &subject, body, id, Some(&post.id))
            .await
            .map(drop)
    }

    async fn reply(&mut self, to: &Inbound, text: &str) -> Result<(), SendError> {
        let subject = format!("rein: {}", shorten(first_line(text), 100));
        let id = self.new_id("reply", "to");
        self.send(
            &to.reply_to.route,
            &subject,
            format!("{text}\n"),
            id,
            Some(&to.reply_to.id),
        )
        .await
        .map(drop)
    }

    async fn test(&mut self, route: &str) -> Result<String, SendError> {
        let id = self.new_id("test", "message");
        let body = "This is a test message from rein's email bridge (`rein bridge test email`). Nothing needs doing.\n".to_owned();
        let id = self
            .send(route, "[rein] test message", body, id, None)
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
