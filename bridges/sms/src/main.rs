//! `rein-bridge-sms`: the engine of `rein::bridge` driving an [`SmsChannel`]. Run as the
//! user unit `rein-bridge@sms.service`; `--test` texts a test message to every route.

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
