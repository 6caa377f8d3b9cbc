//! `rein-bridge-konsole`: the engine of `rein::bridge` driving a [`KonsoleChannel`]. Run as a
//! user unit in the desktop session (`rein bridge start konsole`); `--test` opens a test tab
//! for every route.

use std::process::ExitCode;

use rein::bridge::engine::{serve, BridgeContext};
use rein_bridge_konsole::KonsoleChannel;

async fn build(context: BridgeContext) -> anyhow::Result<KonsoleChannel> {
    KonsoleChannel::from_context(&context).await
}

#[tokio::main]
async fn main() -> ExitCode {
    serve("konsole", build).await
}
