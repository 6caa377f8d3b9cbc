//! `rein-bridge-konsole`: the engine of `rein::bridge` driving [`KonsoleChannel`]. `rein bridge
//! start konsole` runs it as the transient unit `rein-bridge-konsole.service`
//! (`rein.PROFILE.bridge-konsole.service` for another profile); `units/rein-bridge@.service`
//! runs it permanently as `rein-bridge@konsole.service`. `--test` sends a test message to every
//! route; `--help` says so. It belongs in the desktop session, where Konsole and KWin are on
//! the session bus.

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
