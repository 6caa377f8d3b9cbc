//! `rein-bridge-sms`: the engine of `rein::bridge` driving [`SmsChannel`]. `rein bridge start
//! sms` runs it as the transient unit `rein-bridge-sms.service`
//! (`rein.PROFILE.bridge-sms.service` for another profile); `units/rein-bridge@.service` runs
//! it permanently as `rein-bridge@sms.service`. `--test` sends a test message to every route;
//! `--help` says so.

use std::process::ExitCode;

use rein::bridge::engine::{serve, BridgeContext};
use rein::mailbox::Mailbox;
use rein_bridge_sms::{SmsChannel, SmsConfig};

async fn build(context: BridgeContext) -> anyhow::Result<SmsChannel> {
    let config = SmsConfig::from_settings(&context.settings.channel, &context.secrets)?;
    let mailbox = Mailbox::new(context.data.clone());
    SmsChannel::start(
        config,
        context.inbound,
        Box::new(context.seen),
        Box::new(mailbox),
    )
    .await
}

#[tokio::main]
async fn main() -> ExitCode {
    serve("sms", build).await
}
