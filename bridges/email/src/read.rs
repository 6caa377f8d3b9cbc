//! Reading replies over IMAP: log in, select the mailbox, fetch what is unseen, hand each
//! reply to the engine, then mark it `\Seen` (and move it, if configured). Between rounds the
//! reader waits in IDLE, so a reply arrives within moments; only a server without IDLE is
//! polled, every `poll_interval`.
//!
//! Delivery to the engine is at least once: a reply is marked seen only after the engine's
//! queue took it, and the engine drops a Message-ID it has handled before. Connection
//! failures are retried with backoff; the reader stops when its shutdown future completes or
//! the engine's queue closes.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_imap::extensions::idle::IdleResponse;
use async_imap::{Client, Session};
use futures_util::TryStreamExt;
use rein::bridge::Inbound;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::config::{EmailSettings, Security};
use crate::parse::{parse_reply, Matcher};
use crate::tls;

/// Servers may drop an IDLE after 30 minutes (RFC 2177): renew it well before.
const IDLE_RENEW: Duration = Duration::from_secs(25 * 60);
/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(120);
/// Waits before reconnecting after a failure: 1 s, doubling, up to [`MAX_BACKOFF`].
const RECONNECT: rein::bridge::Backoff = rein::bridge::Backoff {
    initial: Duration::from_secs(1),
    max: MAX_BACKOFF,
};
/// How long connecting and logging in may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages fetched per FETCH command.
const FETCH_BATCH: usize = 50;

/// The byte stream under IMAP: TLS, or plain on loopback.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> Stream for T {}
type ImapSession = Session<Box<dyn Stream>>;

/// What the reader is doing, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderEvent {
    /// Logged in and selected the mailbox; `idle` says whether the server offers IDLE.
    Connected { idle: bool },
    /// Waiting in IDLE for the server to announce new mail.
    Idling,
    /// Sleeping until the next poll (the server has no IDLE).
    Polling,
    /// A round of fetching ended: `passed` replies went to the engine, `skipped` were not
    /// answers (auto-replies, the bridge's own mail, empty replies).
    Fetched { passed: usize, skipped: usize },
    /// The connection failed; the reader reconnects after a backoff.
    Failed(String),
}

/// Why a session ended.
enum Ended {
    /// The engine's queue is closed: nothing more to do.
    QueueClosed,
}

pub struct Reader {
    settings: Arc<EmailSettings>,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
    matcher: Matcher,
    inbound: mpsc::Sender<Inbound>,
    events: Option<mpsc::UnboundedSender<ReaderEvent>>,
    /// How the IMAP connection stands, for the engine's STATUS.
    link: Option<tokio::sync::watch::Sender<rein::bridge::Link>>,
}

impl Reader {
    pub fn new(
        settings: Arc<EmailSettings>,
        inbound: mpsc::Sender<Inbound>,
    ) -> anyhow::Result<Reader> {
        let tls = tls::client_config(settings.ca_file.as_deref())?;
        let matcher = Matcher {
            own_address: settings.from.to_string().to_ascii_lowercase(),
            domain: settings.domain().to_owned(),
            routes: settings.routes.clone(),
        };
        Ok(Reader {
            settings,
            tls,
            matcher,
            inbound,
            events: None,
            link: None,
        })
    }

    /// Reports what the reader does on `events` (tests watch it).
    pub fn with_events(mut self, events: mpsc::UnboundedSender<ReaderEvent>) -> Reader {
        self.events = Some(events);
        self
    }

    /// Reports the IMAP connection's state on `link` (the channel's [`rein::bridge::Link`]).
    pub fn with_link(mut self, link: tokio::sync::watch::Sender<rein::bridge::Link>) -> Reader {
        self.link = Some(link);
        self
    }

    fn report(&self, event: ReaderEvent) {
        if let Some(link) = &self.link {
            match &event {
                ReaderEvent::Connected { .. } => {
                    link.send_replace(rein::bridge::Link::Up);
                }
                ReaderEvent::Failed(why) => {
                    link.send_replace(rein::bridge::Link::Down(format!(
                        "reading replies from {} failed: {why}",
                        self.place()
                    )));
                }
                _ => {}
            }
        }
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }

    fn place(&self) -> String {
        let imap = &self.settings.imap;
        format!("IMAP {}:{}", imap.host, imap.port)
    }

    /// Explains a connection failure, with what to fix for a refused certificate.
    fn explain(&self, error: anyhow::Error) -> anyhow::Error {
        let text = format!("{error:#}");
        if tls::is_certificate_problem(&text) {
            return anyhow::anyhow!(
                "{text}{}",
                tls::certificate_hint(self.settings.ca_file.as_deref())
            );
        }
        error
    }

    /// A connection that has read the server's greeting and, unless `imap_tls = "none"`,
    /// speaks TLS.
    async fn open(&self) -> anyhow::Result<Client<Box<dyn Stream>>> {
        let imap = &self.settings.imap;
        let tcp = TcpStream::connect((imap.host.as_str(), imap.port))
            .await
            .with_context(|| format!("connecting to {}", self.place()))?;
        let mut client = match imap.security {
            Security::None => Client::new(Box::new(tcp) as Box<dyn Stream>),
            Security::Tls => Client::new(Box::new(self.handshake(tcp).await?) as Box<dyn Stream>),
            Security::StartTls => {
                let mut plain = Client::new(tcp);
                read_greeting(&mut plain).await?;
                plain
                    .run_command_and_check_ok("STARTTLS", None)
                    .await
                    .with_context(|| {
                        format!("{} refused STARTTLS (set imap_tls = \"tls\" if it speaks TLS from the start)", self.place())
                    })?;
                // After STARTTLS the server sends no second greeting.
                return Ok(Client::new(Box::new(
                    self.handshake(plain.into_inner()).await?,
                )));
            }
        };
        read_greeting(&mut client).await?;
        Ok(client)
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
    ) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let host = self
            .settings
            .imap
            .host
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .with_context(|| format!("{host:?} is not a host name for TLS"))?;
        TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with {}", self.place()))
    }

    /// Connects, logs in and selects the mailbox; returns the session, whether the server
    /// offers IDLE, and the mailbox's UIDVALIDITY.
    async fn connect(&self) -> anyhow::Result<(ImapSession, bool, u32)> {
        let imap = &self.settings.imap;
        let attempt = async {
            let client = self.open().await?;
            let password = imap.password.as_deref().unwrap_or_default();
            let mut session = client
                .login(&imap.username, password)
                .await
                .map_err(|(error, _)| error)
                .with_context(|| {
                    format!(
                        "logging in to {} as {} (check username and the password secret)",
                        self.place(),
                        imap.username
                    )
                })?;
            let capabilities = session
                .capabilities()
                .await
                .with_context(|| format!("asking {} what it can do", self.place()))?;
            let idle = capabilities.has_str("IDLE");
            let mailbox = session
                .select(&self.settings.mailbox)
                .await
                .with_context(|| {
                    format!(
                        "selecting mailbox {:?} on {}",
                        self.settings.mailbox,
                        self.place()
                    )
                })?;
            if let Some(folder) = &self.settings.processed_folder {
                session.status(folder, "(MESSAGES)").await.with_context(|| {
                    format!(
                        "processed_folder {folder:?} is not a folder on {}; create it or remove the key",
                        self.place()
                    )
                })?;
            }
            Ok::<_, anyhow::Error>((session, idle, mailbox.uid_validity.unwrap_or(0)))
        };
        let result = tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .map_err(|_| {
                anyhow::anyhow!("{} did not answer within {CONNECT_TIMEOUT:?}", self.place())
            })
            .and_then(|r| r);
        result.map_err(|error| self.explain(error))
    }

    /// Connects and logs in once, so a wrong setting fails at start with a clear error.
    pub async fn check(&self) -> anyhow::Result<()> {
        let (mut session, _, _) = self.connect().await?;
        let _ = session.logout().await;
        Ok(())
    }

    /// Reads replies until `shutdown` completes or the engine's queue closes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut failures: u32 = 0;
        loop {
            let outcome = tokio::select! {
                () = &mut shutdown => return,
                () = self.inbound.closed() => return,
                outcome = self.session(&mut failures) => outcome,
            };
            match outcome {
                Ok(Ended::QueueClosed) => return,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let wait = RECONNECT.delay(failures.saturating_sub(1));
                    let text = format!("{error:#}");
                    tracing::warn!("reading replies failed: {text}; reconnecting in {wait:?}");
                    self.report(ReaderEvent::Failed(text));
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// One connection: fetch, wait (IDLE or poll), repeat, until something fails.
    async fn session(&self, failures: &mut u32) -> anyhow::Result<Ended> {
        let (mut session, idle, uid_validity) = self.connect().await?;
        *failures = 0;
        tracing::info!(
            "reading replies from {} mailbox {:?} ({})",
            self.place(),
            self.settings.mailbox,
            if idle { "IDLE" } else { "polling" }
        );
        self.report(ReaderEvent::Connected { idle });
        loop {
            if self.fetch(&mut session, uid_validity).await?.is_some() {
                return Ok(Ended::QueueClosed);
            }
            while session.unsolicited_responses.try_recv().is_ok() {}
            if idle {
                let mut handle = session.idle();
                handle
                    .init()
                    .await
                    .with_context(|| format!("starting IDLE on {}", self.place()))?;
                self.report(ReaderEvent::Idling);
                let (wait, stop) = handle.wait_with_timeout(IDLE_RENEW);
                let response = wait
                    .await
                    .with_context(|| format!("waiting in IDLE on {}", self.place()))?;
                drop(stop);
                if let IdleResponse::NewData(data) = &response {
                    tracing::debug!("IMAP IDLE woke: {:?}", data.parsed());
                }
                session = handle
                    .done()
                    .await
                    .with_context(|| format!("ending IDLE on {}", self.place()))?;
            } else {
                self.report(ReaderEvent::Polling);
                tokio::time::sleep(self.settings.poll_interval).await;
            }
        }
    }

    /// Fetches unseen messages and passes the replies on. Some(Ended) when the queue closed.
    async fn fetch(
        &self,
        session: &mut ImapSession,
        uid_validity: u32,
    ) -> anyhow::Result<Option<Ended>> {
        let mut uids: Vec<u32> = session
            .uid_search("UNSEEN")
            .await
            .with_context(|| format!("searching for unseen mail on {}", self.place()))?
            .into_iter()
            .collect();
        uids.sort_unstable();
        let (mut passed, mut skipped) = (0, 0);
        for batch in uids.chunks(FETCH_BATCH) {
            let set = uid_set(batch);
            // PEEK: a message stays unseen until the engine has it.
            let messages: Vec<_> = session
                .uid_fetch(&set, "(UID BODY.PEEK[])")
                .await
                .with_context(|| format!("fetching mail from {}", self.place()))?
                .try_collect()
                .await
                .with_context(|| format!("fetching mail from {}", self.place()))?;
            for message in &messages {
                let Some(uid) = message.uid else { continue };
                let fallback_id = format!(
                    "imap-{uid_validity}-{uid}.{}@{}",
                    self.settings.mailbox, self.settings.imap.host
                );
                match message.body().and_then(parse_reply) {
                    Some(reply) => match self.matcher.skip_reason(&reply) {
                        None => {
                            let inbound = self.matcher.inbound(&reply, &fallback_id);
                            tracing::info!(
                                "reply {} from {} for {:?}",
                                inbound.message_id,
                                inbound.identity,
                                inbound.target
                            );
                            if self.inbound.send(inbound).await.is_err() {
                                return Ok(Some(Ended::QueueClosed));
                            }
                            passed += 1;
                        }
                        Some(reason) => {
                            tracing::info!(
                                "ignoring message {} from {}: {reason}",
                                reply.message_id.as_deref().unwrap_or("without id"),
                                reply.from
                            );
                            skipped += 1;
                        }
                    },
                    None => {
                        tracing::info!("ignoring message UID {uid}: it has no sender address");
                        skipped += 1;
                    }
                }
                self.mark_handled(session, uid).await?;
            }
        }
        self.report(ReaderEvent::Fetched { passed, skipped });
        Ok(None)
    }

    async fn mark_handled(&self, session: &mut ImapSession, uid: u32) -> anyhow::Result<()> {
        let set = uid.to_string();
        let _: Vec<_> = session
            .uid_store(&set, "+FLAGS.SILENT (\\Seen)")
            .await
            .with_context(|| format!("marking UID {uid} seen on {}", self.place()))?
            .try_collect()
            .await
            .with_context(|| format!("marking UID {uid} seen on {}", self.place()))?;
        if let Some(folder) = &self.settings.processed_folder {
            // MOVE where the server has it; COPY + \Deleted + UID EXPUNGE otherwise.
            if session.uid_mv(&set, folder).await.is_err() {
                session.uid_copy(&set, folder).await.with_context(|| {
                    format!("copying UID {uid} to {folder:?} on {}", self.place())
                })?;
                let _: Vec<_> = session
                    .uid_store(&set, "+FLAGS.SILENT (\\Deleted)")
                    .await?
                    .try_collect()
                    .await?;
                let _: Vec<_> = session.uid_expunge(&set).await?.try_collect().await?;
            }
        }
        Ok(())
    }
}

async fn read_greeting<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug>(
    client: &mut Client<T>,
) -> anyhow::Result<()> {
    match client.read_response().await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => anyhow::bail!("the IMAP server closed the connection before its greeting"),
        Err(error) => Err(error).context("reading the IMAP server's greeting"),
    }
}

/// `1,3:5,9` for sorted UIDs.
fn uid_set(uids: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut index = 0;
    while index < uids.len() {
        let start = uids[index];
        let mut end = start;
        while index + 1 < uids.len() && uids[index + 1] == end + 1 {
            index += 1;
            end = uids[index];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        index += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn uid_sets() {
        assert_eq!(super::uid_set(&[1, 3, 4, 5, 9]), "1,3:5,9");
        assert_eq!(super::uid_set(&[7]), "7");
        assert_eq!(super::uid_set(&[]), "");
    }
}
