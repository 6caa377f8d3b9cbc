//! Received text messages → [`Inbound`], once per message SID.
//!
//! Twilio has no push without a public URL, so the bridge polls the list of messages sent
//! to our number (newest first), and also accepts the optional [`crate::webhook`]. Both hand
//! messages to one [`Relay`], which passes each SID on once: it skips SIDs the engine has
//! handled (the persistent [`SeenMessages`]) and SIDs it passed on in this run and the engine
//! has not marked yet.
//!
//! The first poll with an empty ledger takes a baseline: the messages already in the list are
//! history (answers to nothing rein asked) and are marked seen without being passed on.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use rein::bridge::{Inbound, PostRef, SendError};
use tokio::sync::mpsc;

use crate::reply::{parse_reply, KnownAsks};
use crate::twilio::{Message, Twilio};

/// Message ids already handled, kept across restarts (the engine's seen-ledger).
pub trait SeenMessages: Send + Sync + 'static {
    fn seen(&self, message_id: &str) -> bool;
    fn mark(&self, message_id: &str) -> anyhow::Result<()>;
}

impl SeenMessages for rein::bridge::ledger::SeenLedger {
    fn seen(&self, message_id: &str) -> bool {
        rein::bridge::ledger::SeenLedger::seen(self, message_id)
    }

    fn mark(&self, message_id: &str) -> anyhow::Result<()> {
        rein::bridge::ledger::SeenLedger::mark(self, message_id)?;
        Ok(())
    }
}

impl<T: SeenMessages + ?Sized> SeenMessages for std::sync::Arc<T> {
    fn seen(&self, message_id: &str) -> bool {
        (**self).seen(message_id)
    }

    fn mark(&self, message_id: &str) -> anyhow::Result<()> {
        (**self).mark(message_id)
    }
}

/// An in-memory [`SeenMessages`], for tests and tools.
#[derive(Debug, Default)]
pub struct MemorySeen(Mutex<HashSet<String>>);

impl SeenMessages for MemorySeen {
    fn seen(&self, message_id: &str) -> bool {
        self.0.lock().is_ok_and(|set| set.contains(message_id))
    }

    fn mark(&self, message_id: &str) -> anyhow::Result<()> {
        self.0
            .lock()
            .map_err(|_| anyhow::anyhow!("the seen set is poisoned"))?
            .insert(message_id.to_owned());
        Ok(())
    }
}

/// What a received message is, as the poller and the webhook see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub sid: String,
    pub from: String,
    pub body: String,
}

impl From<Message> for Received {
    fn from(message: Message) -> Self {
        Received {
            sid: message.sid,
            from: message.from,
            body: message.body,
        }
    }
}

/// The inbound queue's reader is gone: the bridge is shutting down.
#[derive(Debug)]
pub struct Closed;

/// Passes received messages on, once per SID.
pub struct Relay {
    seen: Box<dyn SeenMessages>,
    asks: Box<dyn KnownAsks>,
    passed: Mutex<HashSet<String>>,
    inbound: mpsc::Sender<Inbound>,
}

impl Relay {
    pub fn new(
        seen: Box<dyn SeenMessages>,
        asks: Box<dyn KnownAsks>,
        inbound: mpsc::Sender<Inbound>,
    ) -> Relay {
        Relay {
            seen,
            asks,
            passed: Mutex::default(),
            inbound,
        }
    }

    /// Handled by the engine, or passed on by this relay.
    pub fn known(&self, sid: &str) -> bool {
        self.seen.seen(sid) || self.passed.lock().is_ok_and(|passed| passed.contains(sid))
    }

    /// Passes `message` on unless it is known; true if it was passed on.
    pub async fn offer(&self, message: Received) -> Result<bool, Closed> {
        if self.seen.seen(&message.sid) {
            return Ok(false);
        }
        let first = match self.passed.lock() {
            Ok(mut passed) => passed.insert(message.sid.clone()),
            Err(_) => false,
        };
        if !first {
            return Ok(false);
        }
        let Some((target, text)) = parse_reply(&message.body, self.asks.as_ref()) else {
            tracing::info!(
                "sms from {}: {:?} is a Twilio keyword; not an answer",
                message.from,
                message.body.trim()
            );
            if let Err(error) = self.seen.mark(&message.sid) {
                tracing::warn!("cannot record sms {} as seen: {error:#}", message.sid);
            }
            return Ok(false);
        };
        let inbound = Inbound {
            identity: format!("sms:{}", message.from),
            target,
            text,
            reply_to: PostRef {
                route: message.from.clone(),
                id: message.sid.clone(),
            },
            message_id: message.sid,
        };
        self.inbound.send(inbound).await.map_err(|_| Closed)?;
        Ok(true)
    }
}

/// The most pages one poll reads: 500 messages since the last poll is already absurd.
const MAX_PAGES: usize = 10;

/// Reads the messages sent to `our_number` that the relay does not know, oldest first.
async fn unknown_messages(
    twilio: &Twilio,
    relay: &Relay,
    our_number: &str,
) -> Result<Vec<Received>, SendError> {
    let mut fresh = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = twilio.received(our_number, next.as_deref()).await?;
        let mut reached_known = false;
        for message in page.messages {
            if message.direction != "inbound" || message.to != our_number {
                continue;
            }
            if relay.known(&message.sid) {
                reached_known = true;
            } else {
                fresh.push(Received::from(message));
            }
        }
        // Newest first: past a known message, the rest were read before.
        match page.next_page_uri {
            Some(uri) if !reached_known => next = Some(uri),
            _ => break,
        }
    }
    fresh.reverse();
    Ok(fresh)
}

/// The ledger key that says the baseline was taken for this number.
fn baseline_key(our_number: &str) -> String {
    format!("sms-baseline:{our_number}")
}

/// One poll: passes on what is new, or takes the baseline on the very first run.
pub async fn poll_once(
    twilio: &Twilio,
    relay: &Relay,
    our_number: &str,
) -> Result<usize, PollError> {
    let fresh = unknown_messages(twilio, relay, our_number)
        .await
        .map_err(PollError::Send)?;
    let key = baseline_key(our_number);
    if !relay.seen.seen(&key) {
        for message in &fresh {
            relay.seen.mark(&message.sid).map_err(PollError::Ledger)?;
        }
        relay.seen.mark(&key).map_err(PollError::Ledger)?;
        tracing::info!(
            "sms: {} earlier messages to {our_number} taken as history",
            fresh.len()
        );
        return Ok(0);
    }
    let mut passed = 0;
    for message in fresh {
        if relay
            .offer(message)
            .await
            .map_err(|Closed| PollError::Closed)?
        {
            passed += 1;
        }
    }
    Ok(passed)
}

#[derive(Debug)]
pub enum PollError {
    Send(SendError),
    Ledger(anyhow::Error),
    Closed,
}

impl std::fmt::Display for PollError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PollError::Send(error) => write!(f, "{error}"),
            PollError::Ledger(error) => write!(f, "the seen-ledger: {error:#}"),
            PollError::Closed => write!(f, "the bridge is shutting down"),
        }
    }
}

/// Polls every `interval` until `shutdown` completes, waiting longer when Twilio says so
/// (Retry-After) or refuses (bad credentials are logged, then retried slowly).
pub async fn poll(
    twilio: Twilio,
    relay: std::sync::Arc<Relay>,
    our_number: String,
    interval: Duration,
    link: tokio::sync::watch::Sender<rein::bridge::Link>,
    shutdown: impl Future<Output = ()>,
) {
    use rein::bridge::Link;
    tokio::pin!(shutdown);
    loop {
        let wait = match poll_once(&twilio, &relay, &our_number).await {
            Ok(_) => {
                link.send_if_modified(|now| {
                    let changed = *now != Link::Up;
                    *now = Link::Up;
                    changed
                });
                interval
            }
            Err(PollError::Closed) => return,
            Err(PollError::Send(SendError::Retry { after, reason })) => {
                tracing::warn!("sms: polling Twilio failed ({reason}); trying again");
                link.send_replace(Link::Down(format!("polling Twilio failed: {reason}")));
                after.unwrap_or(interval).max(interval)
            }
            Err(error) => {
                tracing::error!("sms: polling Twilio failed: {error}");
                link.send_replace(Link::Down(format!("polling Twilio failed: {error}")));
                (interval * 12).min(Duration::from_secs(300))
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
