//! [`SlackChannel`]: the engine's handle on Slack. Posting goes through the Web API; the
//! Socket Mode loop runs beside it as a task that lives as long as the channel.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use anyhow::bail;
use rein::bridge::ledger::Ledger;
use rein::bridge::{Channel, Inbound, Link, PostRef, SendError};
use rein::mailbox::{Ask, Resolution};
use rein::notes::Note;
use tokio::sync::{mpsc, oneshot, watch};

use crate::api::WebApi;
use crate::config::SlackConfig;
use crate::format::{ask_message, escape, note_text, resolved_message};
use crate::socket::SocketMode;

/// The asks this bridge posted, so a thread reply is passed on only when it is under one of
/// them (any other thread in the channel is none of rein's business). Posts of this run are
/// remembered here; older ones are found in the engine's ledger.
#[derive(Debug, Default)]
pub struct PostedAsks {
    recent: Mutex<HashSet<(String, String)>>,
    ledger: Option<Ledger>,
}

impl PostedAsks {
    pub fn new(ledger: Option<Ledger>) -> PostedAsks {
        PostedAsks {
            recent: Mutex::default(),
            ledger,
        }
    }

    pub fn remember(&self, post: &PostRef) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.insert((post.route.clone(), post.id.clone()));
        }
    }

    pub fn is_ours(&self, post: &PostRef) -> bool {
        if self
            .recent
            .lock()
            .is_ok_and(|recent| recent.contains(&(post.route.clone(), post.id.clone())))
        {
            return true;
        }
        match &self.ledger {
            Some(ledger) => match ledger.ask_for_post(post) {
                Ok(found) => found.is_some(),
                Err(error) => {
                    // Passing it on lets the engine answer; dropping it would lose an answer.
                    tracing::warn!("reading the slack ledger failed: {error}");
                    true
                }
            },
            None => false,
        }
    }
}

pub struct SlackChannel {
    api: WebApi,
    posts: Arc<PostedAsks>,
    /// Up while the Socket Mode connection is open (said hello).
    link: watch::Receiver<Link>,
    /// Dropping it (with the channel) stops the Socket Mode loop.
    _stop: oneshot::Sender<()>,
}

impl SlackChannel {
    /// Opens Socket Mode (failing at once on a bad app token) and starts relaying clicks and
    /// thread replies into `inbound`. Must be called within a tokio runtime.
    pub async fn start(
        config: &SlackConfig,
        inbound: mpsc::Sender<Inbound>,
        posts: PostedAsks,
    ) -> anyhow::Result<SlackChannel> {
        let api = WebApi::new(config)?;
        let first_url = match api.open_connection().await {
            Ok(url) => Some(url),
            Err(SendError::Fatal(reason)) => {
                bail!("cannot open a Socket Mode connection: {reason}")
            }
            Err(SendError::Retry { reason, .. }) => {
                tracing::warn!("cannot reach slack yet ({reason}); will keep trying");
                None
            }
        };
        let posts = Arc::new(posts);
        let (stop, stopped) = oneshot::channel::<()>();
        let (link_sender, link) =
            watch::channel(Link::Down("connecting to slack (socket mode)".to_owned()));
        let socket = SocketMode::new(config, api.clone(), inbound, posts.clone(), link_sender);
        tokio::spawn(socket.run(first_url, async move {
            let _ = stopped.await;
        }));
        Ok(SlackChannel {
            api,
            posts,
            link,
            _stop: stop,
        })
    }
}

impl Channel for SlackChannel {
    async fn post_ask(
        &mut self,
        ask: &Ask,
        route: &str,
        resent: bool,
    ) -> Result<PostRef, SendError> {
        let (text, blocks) = ask_message(ask, resent);
        let posted = self
            .api
            .post_message(route, &text, Some(&blocks), None)
            .await?;
        let post = PostRef {
            route: posted.channel,
            id: posted.ts,
        };
        self.posts.remember(&post);
        Ok(post)
    }

    async fn post_note(
        &mut self,
        note: &Note,
        route: &str,
        resent: bool,
    ) -> Result<PostRef, SendError> {
        let posted = self
            .api
            .post_message(route, &note_text(note, resent), None, None)
            .await?;
        Ok(PostRef {
            route: posted.channel,
            id: posted.ts,
        })
    }

    async fn resolved(
        &mut self,
        ask: &Ask,
        resolution: &Resolution,
        post: &PostRef,
    ) -> Result<(), SendError> {
        let (text, blocks) = resolved_message(ask, resolution);
        self.api
            .update_message(&post.route, &post.id, &text, &blocks)
            .await
    }

    async fn reply(&mut self, to: &Inbound, text: &str) -> Result<(), SendError> {
        self.api
            .post_message(
                &to.reply_to.route,
                &escape(text),
                None,
                Some(&to.reply_to.id),
            )
            .await
            .map(drop)
    }

    /// Up once the socket said hello; down (with why) while it reconnects.
    fn link(&self) -> Option<watch::Receiver<Link>> {
        Some(self.link.clone())
    }

    /// Only the refused person sees it: an ephemeral message, not a reply in the thread.
    async fn refuse(&mut self, to: &Inbound, text: &str) -> Result<(), SendError> {
        let Some(user) = to.identity.strip_prefix("slack:") else {
            return Ok(());
        };
        self.api
            .post_ephemeral(
                &to.reply_to.route,
                user,
                &escape(text),
                Some(&to.reply_to.id),
            )
            .await
    }

    async fn test(&mut self, route: &str) -> Result<String, SendError> {
        let text =
            "rein: a test message from the slack bridge; asks routed here will appear like this.";
        let posted = self.api.post_message(route, text, None, None).await?;
        Ok(format!("posted to {} (ts {})", posted.channel, posted.ts))
    }
}
