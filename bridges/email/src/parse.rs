//! Reading a person's reply: who sent it, which ask it answers, and the answer itself — the
//! first line they wrote, without the quoted ask, the "On … wrote:" line or their signature.
//!
//! Mail written by machines (out-of-office notices, bounces, mailing-list traffic) is never an
//! answer: a vacation reply quoting `[ask:ID]` must not answer the ask with "I am away".

use mail_parser::{HeaderValue, MessageParser};
use rein::bridge::{Inbound, PostRef, Target};

/// What a received message says, before it is matched to an ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The From address, lowercased.
    pub from: String,
    /// The Message-ID without angle brackets, if it has one.
    pub message_id: Option<String>,
    /// In-Reply-To first, then References from the newest to the oldest; no angle brackets.
    pub referenced: Vec<String>,
    pub subject: String,
    /// The first line the person wrote; empty when they wrote nothing above the quote.
    pub answer: String,
    /// Sent by a machine (auto-reply, bounce, list): never an answer.
    pub automatic: bool,
}

fn text_list(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(text) => vec![text.to_string()],
        HeaderValue::TextList(list) => list.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    }
}

fn strip_brackets(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

/// Parses a raw RFC 5322 message; None when it has no usable From address.
pub fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let message = MessageParser::default().parse(raw)?;
    let from = message
        .from()
        .and_then(|address| address.first())
        .and_then(|addr| addr.address())
        .map(|address| address.trim().to_ascii_lowercase())
        .filter(|address| address.contains('@'))?;
    let mut referenced: Vec<String> = text_list(message.in_reply_to())
        .iter()
        .map(|id| strip_brackets(id))
        .collect();
    let mut references: Vec<String> = text_list(message.references())
        .iter()
        .map(|id| strip_brackets(id))
        .collect();
    references.reverse();
    for id in references {
        if !referenced.contains(&id) {
            referenced.push(id);
        }
    }
    let header_text = |name: &str| {
        message
            .header_raw(name)
            .map(|value| value.trim().to_ascii_lowercase())
    };
    let auto_submitted = header_text("Auto-Submitted").is_some_and(|value| value != "no");
    let precedence = header_text("Precedence")
        .is_some_and(|value| matches!(value.as_str(), "bulk" | "junk" | "list" | "auto_reply"));
    let autoreply_header = message.header_raw("X-Autoreply").is_some()
        || message.header_raw("X-Autorespond").is_some();
    let bounce = header_text("Return-Path").is_some_and(|value| value == "<>")
        || from.starts_with("mailer-daemon@");
    let list = message.header_raw("List-Id").is_some();
    let body = message.body_text(0).unwrap_or_default();
    Some(Reply {
        from,
        message_id: message.message_id().map(strip_brackets),
        referenced,
        subject: message.subject().unwrap_or_default().trim().to_owned(),
        answer: answer_text(&body),
        automatic: auto_submitted || precedence || autoreply_header || bounce || list,
    })
}

/// Where the quoted original begins in a reply: everything from this line on is not the
/// person's answer.
fn starts_quote(line: &str, next: Option<&str>) -> bool {
    let trimmed = line.trim();
    if trimmed == "--" || line.trim_end_matches(['\r', '\n']) == "-- " {
        return true; // signature delimiter
    }
    if trimmed.starts_with("-----Original Message-----")
        || trimmed.starts_with("________________________________")
        || trimmed.starts_with("---------- Forwarded message")
    {
        return true;
    }
    // "On Mon, 1 Jan 2026 at 10:00, Rein <rein@example.org> wrote:" — mail programs often wrap
    // it over two lines.
    if trimmed.starts_with("On ") {
        let ends_with_wrote = |text: &str| text.trim_end().ends_with("wrote:");
        return ends_with_wrote(trimmed) || next.is_some_and(ends_with_wrote);
    }
    false
}

/// The person's answer: the first non-empty line above any quoted text or signature.
pub fn answer_text(body: &str) -> String {
    let lines: Vec<&str> = body.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        if starts_quote(line, lines.get(index + 1).copied()) {
            break;
        }
        // Escape sequences and control characters are not part of anyone's answer.
        let line = rein::text::strip_controls(line);
        let trimmed = line.trim();
        if trimmed.starts_with('>') || trimmed.is_empty() {
            continue;
        }
        return trimmed.to_owned();
    }
    String::new()
}

/// The ask id of an `[ask:ID]` token in a subject, lowercased.
pub fn subject_token(subject: &str) -> Option<String> {
    rein::bridge::find_ask_token(subject)
}

/// What the matching of replies needs to know about the bridge.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The bridge's own address, lowercased: its own mail is never an answer.
    pub own_address: String,
    /// The domain of the Message-IDs the bridge makes.
    pub domain: String,
    /// Configured routes, so a sender's address is spelt as the config spells it.
    pub routes: Vec<String>,
}

/// The Message-ID of an ask the bridge posted: `ask-ID.RANDOM@DOMAIN`.
pub fn ask_message_id(ask_id: &str, random: &str, domain: &str) -> String {
    format!("ask-{}.{random}@{domain}", sanitize(ask_id))
}

/// A Message-ID of another kind the bridge sends (`note`, `resolved`, `reply`, `test`).
pub fn other_message_id(kind: &str, item: &str, random: &str, domain: &str) -> String {
    format!("{kind}-{}.{random}@{domain}", sanitize(item))
}

fn sanitize(item: &str) -> String {
    item.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl Matcher {
    /// The route a sender's address corresponds to (as configured), else the address itself.
    pub fn route_for(&self, address: &str) -> String {
        self.routes
            .iter()
            .find(|route| route.trim().eq_ignore_ascii_case(address))
            .cloned()
            .unwrap_or_else(|| address.to_owned())
    }

    fn is_ask_post(&self, id: &str) -> bool {
        id.starts_with("ask-")
            && id
                .rsplit_once('@')
                .is_some_and(|(_, domain)| domain.eq_ignore_ascii_case(&self.domain))
    }

    /// Why a reply is not passed on, if it is not.
    pub fn skip_reason(&self, reply: &Reply) -> Option<&'static str> {
        if reply.from == self.own_address {
            Some("it is the bridge's own mail")
        } else if reply.automatic {
            Some("it was sent automatically (auto-reply, bounce or list mail)")
        } else if reply.answer.is_empty() {
            Some("it has no answer above the quoted text")
        } else {
            None
        }
    }

    /// The inbound message for the engine. `fallback_id` identifies a reply without a
    /// Message-ID (stable across restarts: the mailbox's UIDVALIDITY and the message's UID).
    pub fn inbound(&self, reply: &Reply, fallback_id: &str) -> Inbound {
        let route = self.route_for(&reply.from);
        let post = reply
            .referenced
            .iter()
            .find(|id| self.is_ask_post(id))
            .map(|id| PostRef {
                route: route.clone(),
                id: id.clone(),
            });
        let token = subject_token(&reply.subject);
        let from_a_route = self
            .routes
            .iter()
            .any(|r| r.trim().eq_ignore_ascii_case(&reply.from));
        // A thread reply names the post; but a post only matches the route it went to, so a
        // reply from another address is better matched by the subject's token when it has one.
        let target = match (post, token) {
            (Some(post), _) if from_a_route => Target::Post(post),
            (_, Some(id)) => Target::Ask(id),
            (Some(post), None) => Target::Post(post),
            (None, None) => Target::Unspecified,
        };
        let message_id = reply
            .message_id
            .clone()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| fallback_id.to_owned());
        Inbound {
            identity: format!("email:{}", reply.from),
            target,
            text: reply.answer.clone(),
            reply_to: PostRef {
                route,
                id: message_id.clone(),
            },
            message_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_the_first_line_above_the_quote() {
        for (body, expected) in [
            ("yes\r\n", "yes"),
            ("\n\n  Yes, ship it  \nthanks\n", "Yes, ship it"),
            ("> quoted first\nno\n", "no"),
            (
                "On Mon, 1 Jan 2026 at 10:00, rein <rein@example.org> wrote:\n> w1 asks: deploy?\n",
                "",
            ),
            (
                "deploy\n\nOn Mon, 1 Jan 2026 at 10:00, rein\n<rein@example.org> wrote:\n> x\n",
                "deploy",
            ),
            (
                "On Mon, 1 Jan 2026, rein\n<rein@example.org> wrote:\n> yes\n",
                "",
            ),
            ("On second thought, no\n", "On second thought, no"),
            ("-- \nAna\n", ""),
            ("--\nAna\n", ""),
            ("-----Original Message-----\nFrom: rein\n", ""),
            ("", ""),
            // Found by fuzzing: terminal controls became part of the answer.
            ("\u{1b}]2;owned\u{7}\u{1b}[2J yes\n", "yes"),
            ("\u{1b}[2J\n\u{9b}31mno\r\n", "no"),
        ] {
            assert_eq!(answer_text(body), expected, "{body:?}");
        }
    }

    #[test]
    fn subject_tokens() {
        for (subject, expected) in [
            ("Re: [ask:k3m9pq] w1: deploy?", Some("k3m9pq")),
            ("RE: [ASK:K3M9PQ] w1", Some("k3m9pq")),
            ("[ask:] [ask:ab/c] [ask:x7]", Some("x7")),
            ("[ask:abc", None),
            ("no token", None),
            // Found by fuzzing: `..` was taken as an ask id.
            ("Re: [ask:..] deploy?", None),
            ("[ask:..] [ask:.x] [ask:k3m9pq]", Some("k3m9pq")),
        ] {
            assert_eq!(subject_token(subject).as_deref(), expected, "{subject}");
        }
    }

    fn matcher() -> Matcher {
        Matcher {
            own_address: "rein@example.org".into(),
            domain: "example.org".into(),
            routes: vec!["Ana@Example.org".into()],
        }
    }

    fn reply(headers: &str, body: &str) -> Reply {
        let raw = format!("{headers}\r\n\r\n{body}");
        parse_reply(raw.as_bytes()).expect("parses")
    }

    #[test]
    fn thread_replies_target_the_post() {
        let reply = reply(
            "From: Ana <ANA@example.org>\r\nTo: rein@example.org\r\nSubject: Re: [ask:k3m9pq] w1: deploy?\r\nMessage-ID: <r1@mail.example.org>\r\nIn-Reply-To: <ask-k3m9pq.abc@example.org>\r\nReferences: <ask-k3m9pq.abc@example.org>",
            "yes\r\n\r\nOn Mon, rein <rein@example.org> wrote:\r\n> w1 asks: deploy?\r\n",
        );
        let inbound = matcher().inbound(&reply, "uid-1");
        assert_eq!(inbound.identity, "email:ana@example.org");
        assert_eq!(inbound.text, "yes");
        assert_eq!(inbound.message_id, "r1@mail.example.org");
        assert_eq!(
            inbound.target,
            Target::Post(PostRef {
                route: "Ana@Example.org".into(),
                id: "ask-k3m9pq.abc@example.org".into()
            })
        );
        assert_eq!(inbound.reply_to.route, "Ana@Example.org");
        assert_eq!(matcher().skip_reason(&reply), None);
    }

    #[test]
    fn other_targets() {
        let m = matcher();
        // A reply to the resolution follow-up still finds the ask in References.
        let r = reply(
            "From: ana@example.org\r\nSubject: Re: x\r\nIn-Reply-To: <resolved-k3.x@example.org>\r\nReferences: <ask-k3.y@example.org> <resolved-k3.x@example.org>",
            "no",
        );
        assert!(
            matches!(m.inbound(&r, "u").target, Target::Post(p) if p.id == "ask-k3.y@example.org")
        );
        // From an address that is not a route: the subject token wins.
        let r = reply(
            "From: bob@example.org\r\nSubject: Re: [ask:k3] x\r\nIn-Reply-To: <ask-k3.y@example.org>",
            "no",
        );
        assert_eq!(m.inbound(&r, "u").target, Target::Ask("k3".into()));
        // Someone else's Message-ID is not one of our posts.
        let r = reply(
            "From: ana@example.org\r\nSubject: hello\r\nIn-Reply-To: <ask-k3.y@elsewhere.org>",
            "no",
        );
        let inbound = m.inbound(&r, "uid-7-3@INBOX");
        assert_eq!(inbound.target, Target::Unspecified);
        assert_eq!(inbound.message_id, "uid-7-3@INBOX");
    }

    #[test]
    fn machine_mail_and_own_mail_are_skipped() {
        let m = matcher();
        for headers in [
            "From: ana@example.org\r\nAuto-Submitted: auto-replied\r\nSubject: Auto: [ask:k3] x",
            "From: ana@example.org\r\nPrecedence: bulk\r\nSubject: [ask:k3]",
            "From: ana@example.org\r\nX-Autoreply: yes\r\nSubject: [ask:k3]",
            "Return-Path: <>\r\nFrom: ana@example.org\r\nSubject: [ask:k3]",
            "From: MAILER-DAEMON@example.org\r\nSubject: Undelivered Mail",
            "From: rein@example.org\r\nSubject: [ask:k3] w1: deploy?",
        ] {
            let r = reply(headers, "I am away until Monday");
            assert!(m.skip_reason(&r).is_some(), "{headers}");
        }
        let r = reply(
            "From: ana@example.org\r\nAuto-Submitted: no\r\nSubject: x",
            "yes",
        );
        assert_eq!(m.skip_reason(&r), None);
        let r = reply("From: ana@example.org\r\nSubject: x", "> only a quote\r\n");
        assert!(m.skip_reason(&r).is_some());
        assert!(parse_reply(b"Subject: no sender\r\n\r\nyes").is_none());
    }

    #[test]
    fn message_ids_are_safe_and_recognised() {
        let id = ask_message_id("k3.m_9", "r4nd", "example.org");
        assert_eq!(id, "ask-k3-m-9.r4nd@example.org");
        assert!(matcher().is_ask_post(&id));
        assert!(!matcher().is_ask_post(&other_message_id("note", "n1", "r", "example.org")));
    }
}
