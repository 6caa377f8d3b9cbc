//! [`SmsChannel`]: the engine's handle on Twilio. Sending goes through the REST API; the
//! poller and the optional webhook run beside it as tasks that live as long as the channel.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::bail;
use rein::bridge::{Channel, Inbound, Link, PostRef, SendError};
use rein::mailbox::{Ask, Resolution};
use rein::notes::Note;
use tokio::sync::{mpsc, watch};

use crate::config::SmsConfig;
use crate::inbound::{poll, poll_once, PollError, Relay, SeenMessages};
use crate::reply::KnownAsks;
use crate::text::{ask_sms, fit, note_sms, resolution_sms};
use crate::twilio::Twilio;
use crate::webhook;

/// Replies (confirmations, lists of pending asks) may take a little more room than asks.
const REPLY_SEGMENTS_MIN: usize = 3;

pub struct SmsChannel {
    twilio: Twilio,
    config: SmsConfig,
    /// Up while polling Twilio works (always up with the webhook alone: nothing to poll).
    link: watch::Receiver<Link>,
    webhook_addr: Option<SocketAddr>,
    /// Dropping it (with the channel) stops the poller and the webhook.
    _stop: watch::Sender<()>,
}

impl SmsChannel {
    /// Checks the credentials with a first poll (which takes the baseline on a first run),
    /// then starts polling and, if configured, the webhook. Must run within a tokio runtime.
    /// `asks` tells ask codes from words in replies (the mailbox; [`crate::reply::NoMailbox`]
    /// accepts only codes with a digit).
    pub async fn start(
        config: SmsConfig,
        inbound: mpsc::Sender<Inbound>,
        seen: Box<dyn SeenMessages>,
        asks: Box<dyn KnownAsks>,
    ) -> anyhow::Result<SmsChannel> {
        let twilio = Twilio::new(&config)?;
        let relay = Arc::new(Relay::new(seen, asks, inbound));
        let (link_sender, link) = watch::channel(Link::Up);
        match poll_once(&twilio, &relay, &config.from).await {
            Ok(_) => {}
            Err(PollError::Send(SendError::Fatal(reason))) => {
                bail!("cannot read messages from Twilio: {reason}")
            }
            Err(PollError::Ledger(error)) => {
                return Err(error.context("the sms bridge's seen-ledger"))
            }
            Err(error) => {
                tracing::warn!("cannot reach Twilio yet ({error}); will keep trying");
                link_sender.send_replace(Link::Down(format!("cannot reach Twilio: {error}")));
            }
        }
        let (stop, stopped) = watch::channel(());
        let stopped = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.changed().await;
            }
        };
        let mut webhook_addr = None;
        if let Some(hook) = &config.webhook {
            let listener = webhook::Listener::bind(
                hook.bind,
                &hook.url,
                &config.auth_token,
                &config.account_sid,
                &config.from,
                relay.clone(),
            )
            .await?;
            webhook_addr = Some(listener.local_addr()?);
            tokio::spawn(listener.serve(stopped()));
        }
        if let Some(interval) = config.poll_interval {
            tokio::spawn(poll(
                twilio.clone(),
                relay,
                config.from.clone(),
                interval,
                link_sender,
                stopped(),
            ));
        }
        Ok(SmsChannel {
            twilio,
            config,
            link,
            webhook_addr,
            _stop: stop,
        })
    }

    /// Where the webhook listens, if it does (the port chosen for a `:0` bind).
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook_addr
    }

    async fn send(&self, to: &str, body: &str) -> Result<PostRef, SendError> {
        let sid = self.twilio.send(&self.config.from, to, body).await?;
        Ok(PostRef {
            route: to.to_owned(),
            id: sid,
        })
    }
}

impl Channel for SmsChannel {
    async fn post_ask(
        &mut self,
        ask: &Ask,
        route: &str,
        resent: bool,
    ) -> Result<PostRef, SendError> {
        self.send(route, &ask_sms(ask, resent, self.config.max_segments))
            .await
    }

    async fn post_note(
        &mut self,
        note: &Note,
        route: &str,
        resent: bool,
    ) -> Result<PostRef, SendError> {
        self.send(route, &note_sms(note, resent, self.config.max_segments))
            .await
    }

    /// An SMS cannot be edited: the person hears about it in one short message, unless they
    /// answered it themselves from this number (the engine's reply told them already).
    async fn resolved(
        &mut self,
        ask: &Ask,
        resolution: &Resolution,
        post: &PostRef,
    ) -> Result<(), SendError> {
        if resolution.by == format!("sms:{}", post.route) {
            return Ok(());
        }
        self.send(&post.route, &resolution_sms(ask, resolution))
            .await
            .map(drop)
    }

    async fn reply(&mut self, to: &Inbound, text: &str) -> Result<(), SendError> {
        let segments = self.config.max_segments.max(REPLY_SEGMENTS_MIN);
        self.send(&to.reply_to.route, &fit("", text, "", segments))
            .await
            .map(drop)
    }

    fn link(&self) -> Option<watch::Receiver<Link>> {
        Some(self.link.clone())
    }

    async fn test(&mut self, route: &str) -> Result<String, SendError> {
        let post = self
            .send(
                route,
                "rein: a test message from the sms bridge. Asks will come from this number.",
            )
            .await?;
        Ok(format!("sent {} to {route}", post.id))
    }
}
