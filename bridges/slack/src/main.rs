//! `rein-bridge-slack`: the engine of `rein::bridge` driving [`SlackChannel`]. `rein bridge
//! start slack` runs it as the transient unit `rein-bridge-slack.service`
//! (`rein.PROFILE.bridge-slack.service` for another profile); `units/rein-bridge@.service` runs
//! it permanently as `rein-bridge@slack.service`. `--test` sends a test message to every route;
//! `--help` says so.

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
