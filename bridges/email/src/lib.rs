//! rein's email bridge: sends each ask to people by SMTP and reads their replies over IMAP.
//!
//! # How it works
//! Every ask becomes one email per route (a recipient address) with its own Message-ID
//! (`<ask-ID.RANDOM@DOMAIN>`, DOMAIN being the domain of `from`), the subject
//! `[ask:ID] WORKER: FIRST LINE OF THE PROMPT` (`(resent)` appended when an earlier copy may
//! have arrived) and the ask's text with "Reply to this email with your answer (first line
//! counts)". Notes from `rein notify` go out as plain emails. When an ask is resolved anywhere,
//! a short follow-up ("answered: yes — by cli:ana via cli") goes into the same thread, and so
//! does whatever the bridge says back about the ask (a refusal, "not an option", "got it"):
//! `Re: [ask:ID] …`, with `References:` naming the ask's mail to that person first.
//! Everything sent carries `Auto-Submitted: auto-generated`, so out-of-office responders stay
//! quiet.
//!
//! The bridge reads the mailbox of `from` over IMAP. It waits in IDLE, so a reply is read
//! within moments; only when the server lacks IDLE does it poll, every `poll_interval`. Each
//! unseen message is matched to an ask by In-Reply-To/References (a reply in the ask's
//! thread) or by an `[ask:ID]` token in its subject; quoted text, the "On … wrote:" line and
//! a signature after "-- " are dropped, and the first remaining line is the answer. Then the
//! message is marked `\Seen` (and moved to `processed_folder` if set). Auto-replies, bounces,
//! list mail and the bridge's own mail are never answers. The sender is identified as
//! `email:ADDRESS` (lowercased) and must be in `allow`; anyone else gets a refusal by email.
//!
//! Email senders can be forged. Use a mailbox that only receives mail your provider has
//! checked (SPF/DKIM/DMARC), keep `allow` short, and prefer asks whose options are limited.
//!
//! # Setup
//! 1. Give the bridge its own mailbox (e.g. `rein@example.org`), reachable over IMAP, and a
//!    way to send as it over SMTP. For Gmail, Fastmail, iCloud or Outlook turn on two-step
//!    verification and create an *app password* for the bridge; your login password will
//!    not work (and should not be used).
//! 2. Configure `[bridges.email]` in `config.toml`:
//!    ```toml
//!    [bridges.email]
//!    allow = ["email:ana@example.org"]     # who may answer (lowercase addresses)
//!    routes = ["ana@example.org"]          # where asks go
//!    from = "rein@example.org"             # the bridge's address (also the login name)
//!    smtp_host = "smtp.example.org"        # submission server
//!    smtp_tls = "starttls"                 # "starttls" (port 587), "tls" (465), "none" (loopback only, 25)
//!    imap_host = "imap.example.org"
//!    imap_tls = "tls"                      # "tls" (port 993), "starttls" (143), "none" (loopback only, 143)
//!    # smtp_port = 587, imap_port = 993    # when not the usual ones
//!    # username = "rein@example.org"       # login name for both, when not `from`
//!    # ca_file = "/etc/ssl/private-ca.pem" # a private CA to trust beside the system's
//!    # mailbox = "INBOX"                   # the folder replies arrive in
//!    # processed_folder = "rein-done"      # move handled replies there (must exist)
//!    # poll_interval = "60s"               # only used when the server has no IDLE
//!    secret_file = "~/.config/rein/email.secrets"
//!    ```
//! 3. Put the password in the secrets file (mode 0600): `password = "app-password"`, or
//!    `smtp_password` and `imap_password` when they differ. Without an SMTP password mail is
//!    sent without AUTH (a relay that trusts this machine).
//! 4. `rein bridge test email` sends a test message to every route; then start the bridge.
//!
//! # Testing against real servers
//! `contrib/mail-servers.sh start DIR` runs dovecot (IMAP with IDLE, STARTTLS and TLS) and
//! aiosmtpd (SMTP delivering into dovecot over LMTP) on 127.0.0.1 with a private CA; this
//! crate's tests start it themselves (in `$REIN_MAIL_DIR`, default `/tmp/rein-mail-servers`).
//!
//! # Map
//! - [`config`]: the `[bridges.email]` keys and secrets, validated.
//! - [`send`]: [`EmailChannel`], the [`rein::bridge::Channel`] that sends with lettre.
//! - [`read`]: [`Reader`], IMAP with IDLE, turning replies into [`rein::bridge::Inbound`].
//! - [`parse`]: a reply's sender, target and answer; quote stripping.
//! - [`tls`]: trusted CAs and error wording for both directions.

pub mod config;
pub mod parse;
pub mod read;
pub mod send;
pub mod tls;

use std::sync::Arc;

use rein::bridge::engine::BridgeContext;

pub use config::EmailSettings;
pub use read::{Reader, ReaderEvent};
pub use send::EmailChannel;

/// Builds the channel for the engine: validates the settings, checks that IMAP login works
/// (so a wrong host, password or certificate fails at start with one clear error), and starts
/// the reader, which feeds `context.inbound` until the engine drops its end.
pub async fn build(context: BridgeContext) -> anyhow::Result<EmailChannel> {
    for allowed in &context.settings.allow {
        if allowed != &allowed.to_ascii_lowercase() {
            return Err(rein::Error::invalid(format!(
                "[bridges.email] allow entry {allowed:?} has capital letters; senders are identified by their lowercased address: write {:?}",
                allowed.to_ascii_lowercase()
            ))
            .into());
        }
    }
    let settings = Arc::new(config::load(
        &context.settings.channel,
        &context.settings.all_routes(),
        &context.secrets,
    )?);
    let (link_sender, link) = tokio::sync::watch::channel(rein::bridge::Link::Up);
    let channel = EmailChannel::new(settings.clone())?
        .with_data(&context.data, &context.settings.name)?
        .with_link(link);
    let reader = Reader::new(settings, context.inbound.clone())?.with_link(link_sender);
    reader.check().await?;
    tokio::spawn(reader.run(std::future::pending()));
    Ok(channel)
}
