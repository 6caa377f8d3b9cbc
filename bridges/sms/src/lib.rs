//! rein's SMS bridge: texts asks to phone numbers through Twilio and relays the replies back.
//!
//! # Setting up Twilio
//! 1. A Twilio account with an SMS-capable phone number (Console → Phone Numbers → Buy a
//!    number). That number, in E.164 form (`+15551234567`), is the bridge's `from`.
//! 2. The **Account SID** (`AC…`, on the Console's dashboard) is `account_sid`; the **Auth
//!    Token** next to it is the secret `auth_token`.
//! 3. Replies are read by polling Twilio's message list (every `poll_interval`), so nothing
//!    needs to reach this machine from outside. Optionally, if this machine has a public
//!    HTTPS URL (a reverse proxy, a tunnel), set the number's "A message comes in" webhook
//!    (Console → the number → Messaging) to that URL, method `HTTP POST`, and set
//!    `webhook_url` to exactly the same URL and `webhook_bind` to the local address the proxy
//!    forwards to. Requests are accepted only with a valid `X-Twilio-Signature`.
//! 4. A trial account can only text verified numbers: verify each person's number first.
//!
//! # Configuration
//! ```toml
//! [bridges.sms]
//! allow = ["sms:+15557654321"]           # numbers that may answer, E.164 as Twilio writes them
//! routes = ["+15557654321"]              # numbers asks are texted to
//! account_sid = "AC0123456789abcdef0123456789abcdef"
//! from = "+15551234567"                  # your Twilio number
//! secret_file = "~/.config/rein/sms.secrets"   # mode 0600: auth_token = "…"
//! # poll_interval = "5s"                 # or "off" when the webhook is set up
//! # max_segments = 2                     # longest ask, in 160-character SMS segments
//! # webhook_bind = "127.0.0.1:8088"
//! # webhook_url = "https://example.org/rein/sms"
//! # base_url = "https://api.twilio.com"  # only tests change it
//! ```
//!
//! # How people answer
//! An ask arrives as `[ab3x9k] w1: Merge PR 12? Reply yes/no`. Replying `yes` answers it when
//! it is the only ask pending for that number; otherwise start with the code: `ab3x9k yes`
//! (or `[ab3x9k] yes`). A bare Twilio keyword (STOP, HELP, CANCEL…) is Twilio's business and
//! answers nothing; write `ab3x9k cancel` to answer with such a word.
//!
//! A map of the crate:
//! - [`config`]: the `[bridges.sms]` keys and the auth token.
//! - [`twilio`]: the REST client (send, list inbound) and how Twilio's errors map to
//!   [`rein::bridge::SendError`].
//! - [`text`]: GSM-7 / UCS-2 segment arithmetic and the wording of asks and notes.
//! - [`reply`]: what a text message answers.
//! - [`inbound`]: turning received messages into [`rein::bridge::Inbound`] once per SID,
//!   by polling and through the [`webhook`].
//! - [`SmsChannel`]: the [`rein::bridge::Channel`] the engine drives.

mod channel;
pub mod config;
pub mod inbound;
pub mod reply;
pub mod text;
pub mod twilio;
pub mod webhook;

pub use channel::SmsChannel;
pub use config::SmsConfig;
pub use inbound::{MemorySeen, SeenMessages};
