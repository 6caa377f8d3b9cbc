//! `rein-bridge-konsole`: the engine of `rein::bridge` driving [`KonsoleChannel`], plus the
//! loops' tabs ([`rein_bridge_konsole::loop_tabs`]). `rein bridge start konsole` runs it as
//! the transient unit `rein-bridge-konsole.service` (`rein.PROFILE.bridge-konsole.service` for
//! another profile); `units/rein-bridge@.service` runs it permanently as
//! `rein-bridge@konsole.service`. `--test` sends a test message to every route; `--help` says
//! so. `--show-loop NAME` (what `rein loop show NAME` runs) shows one loop's tab and exits. It
//! belongs in the desktop session, where Konsole and KWin are on the session bus.

use std::process::ExitCode;

use rein::bridge::engine::{serve, BridgeContext};
use rein_bridge_konsole::loop_tabs::{self, LoopTabs};
use rein_bridge_konsole::{KonsoleChannel, KonsoleConfig};

async fn build(context: BridgeContext) -> anyhow::Result<KonsoleChannel> {
    let channel = KonsoleChannel::from_context(&context).await?;
    let paths = rein::paths::Paths::from_env()?;
    let config = channel.config();
    tokio::spawn(loop_tabs::watch(
        paths,
        config.rein_bin.clone(),
        config.desktop,
    ));
    Ok(channel)
}

/// `--show-loop NAME`: the bridge's config is optional here (its `desktop` is the default
/// for loops without one).
async fn show_loop(name: &str) -> anyhow::Result<()> {
    let paths = rein::paths::Paths::from_env()?;
    rein::logging::init(&paths.profile, None);
    let config = rein::config::Config::load(&paths.config)?;
    let konsole = if config.bridges.contains_key("konsole") {
        let settings = rein::bridge::config::load(&config, "konsole")?;
        Some(KonsoleConfig::from_table(&settings.channel)?)
    } else {
        None
    };
    let rein_bin = match &konsole {
        Some(config) => config.rein_bin.clone(),
        None => rein_bridge_konsole::config::default_rein_bin()?,
    };
    let mut tabs = LoopTabs::connect(paths, rein_bin, konsole.and_then(|c| c.desktop)).await?;
    let shown = tabs.show(name).await?;
    println!(
        "loop {}: {} its tab {} on desktop {}",
        shown.name, shown.how, shown.tab, shown.desktop
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--show-loop") {
        let Some(name) = args.get(at + 1) else {
            eprintln!("rein-bridge-konsole: --show-loop needs a loop name");
            return ExitCode::from(2);
        };
        return match show_loop(name).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("rein-bridge-konsole: {}", rein::error::describe(&error));
                ExitCode::from(rein::error::exit_code_of(&error) as u8)
            }
        };
    }
    serve("konsole", build).await
}
