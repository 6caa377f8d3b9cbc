//! rein's Slack bridge: posts asks to Slack channels with one button per option, and relays
//! button clicks and thread replies back to the mailbox. It uses Socket Mode, so it needs no
//! public URL: the bridge opens a WebSocket to Slack and Slack pushes events through it.
//!
//! # Setting up the Slack app
//! 1. Create an app at <https://api.slack.com/apps> ("From scratch"), in your workspace.
//! 2. *Socket Mode*: turn it on. Slack offers to create an **app-level token** with the
//!    `connections:write` scope; that token (`xapp-…`) is the bridge's `app_token`.
//! 3. *OAuth & Permissions*, bot token scopes: `chat:write` (post and update asks),
//!    `channels:history` (read thread replies in public channels) and `groups:history` (in
//!    private channels). Install the app to the workspace; the **Bot User OAuth Token**
//!    (`xoxb-…`) is the bridge's `bot_token`.
//! 4. *Interactivity & Shortcuts*: turn it on (with Socket Mode no request URL is needed).
//!    This delivers button clicks.
//! 5. *Event Subscriptions*: turn it on and subscribe to the bot events `message.channels`
//!    (and `message.groups` for private channels). This delivers thread replies.
//! 6. Invite the bot to every channel it posts to (`/invite @your-app`). A route is a channel
//!    **id** (`C0123ABCD`, from the channel's "About" tab), not its name.
//!
//! # Configuration
//! ```toml
//! [bridges.slack]
//! allow = ["slack:U012AB3CD"]       # Slack member ids that may answer
//! routes = ["C0123ABCD"]            # channel ids
//! secret_file = "~/.config/rein/slack.secrets"   # mode 0600
//! # base_url = "https://slack.com/api"   # the Web API; only tests change it
//! ```
//! The secrets file holds `app_token = "xapp-…"` and `bot_token = "xoxb-…"`.
//!
//! # How people answer
//! An ask appears as a message with a button per option; a click answers it. A free-text ask
//! (no options) is answered by replying in the message's thread; a thread reply to an ask with
//! options works too. When the ask is resolved anywhere, the message is updated to say how
//! ("answered: yes — by slack:U012AB3CD via slack") and its buttons disappear.
//!
//! A map of the crate:
//! - [`config`]: the `[bridges.slack]` keys and the tokens.
//! - [`api`]: the Web API client (`chat.postMessage`, `chat.update`, `apps.connections.open`)
//!   and how Slack's errors map to [`rein::bridge::SendError`].
//! - [`mod@format`]: asks, notes and resolutions as Block Kit messages; button values.
//! - [`socket`]: the Socket Mode loop: acknowledge, de-duplicate, turn envelopes into
//!   [`rein::bridge::Inbound`], reconnect with backoff.
//! - [`SlackChannel`]: the [`rein::bridge::Channel`] the engine drives.

pub mod api;
mod channel;
pub mod config;
pub mod format;
pub mod socket;

pub use channel::{PostedAsks, SlackChannel};
pub use config::SlackConfig;
