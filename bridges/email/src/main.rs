//! `rein-bridge-email`: the email bridge process (see the library's docs for setup). The
//! shared engine does everything but talk SMTP and IMAP.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    rein::bridge::engine::serve("email", rein_bridge_email::build).await
}
