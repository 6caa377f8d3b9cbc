//! `rein-bridge-slack`: the engine of `rein::bridge` driving a [`SlackChannel`]. Run as the
//! user unit `rein-bridge@slack.service`; `--test` posts a test message to every route.

use std::process::ExitCode;

use rein::bridge::engine::{serve, BridgeContext};
use rein::bridge::ledger::Ledger;
use rein_bridge_slack::{PostedAsks, SlackChannel, SlackConfig};

async fn build(context: BridgeContext) -> anyhow::Result<SlackChannel> {
    let config = SlackConfig::from_settings(&context.settings.channel, &context.secrets)?;
    let ledger = Ledger::open(&context.data, &context.settings.name)?;
    SlackChannel::start(&config, context.inbound, PostedAsks::new(Some(ledger))).await
}

#[tokio::main]
async fn main() -> ExitCode {
    serve("slack", build).await
}
