//! `rein-bridge-email`: the engine of `rein::bridge` driving the email channel
//! ([`rein_bridge_email::build`]). `rein bridge start email` runs it as the transient unit
//! `rein-bridge-email.service` (`rein.PROFILE.bridge-email.service` for another profile);
//! `units/rein-bridge@.service` runs it permanently as `rein-bridge@email.service`. `--test`
//! sends a test message to every route; `--help` says so.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    rein::bridge::engine::serve("email", rein_bridge_email::build).await
}
