//! The email bridge's own keys of `[bridges.email]` and its secrets, checked once at start so
//! a mistake is one clear error naming the key, never a failure in the middle of a send.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use lettre::Address;
use rein::bridge::secrets::Secrets;
use serde::Deserialize;

/// The channel's own keys of `[bridges.email]` (the shared ones are the engine's); any other
/// key is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    smtp_host: Option<String>,
    smtp_port: Option<i64>,
    smtp_tls: Option<String>,
    imap_host: Option<String>,
    imap_port: Option<i64>,
    imap_tls: Option<String>,
    from: Option<String>,
    username: Option<String>,
    ca_file: Option<String>,
    mailbox: Option<String>,
    processed_folder: Option<String>,
    poll_interval: Option<String>,
}

/// How a connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain connection upgraded with STARTTLS before anything is said (refused if the server
    /// cannot).
    StartTls,
    /// TLS from the first byte (SMTP port 465, IMAP port 993).
    Tls,
    /// No TLS at all: only for a server on this machine.
    None,
}

impl Security {
    fn parse(key: &str, text: &str) -> anyhow::Result<Security> {
        match text {
            "starttls" => Ok(Security::StartTls),
            "tls" => Ok(Security::Tls),
            "none" => Ok(Security::None),
            other => bail!(
                "[bridges.email] {key} = {other:?} is not a TLS mode; use \"starttls\", \"tls\" or \"none\" (loopback only)"
            ),
        }
    }
}

/// One server: where it is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    /// None: send without AUTH (SMTP only; IMAP always logs in).
    pub password: Option<String>,
}

/// Everything the email channel needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSettings {
    pub smtp: Server,
    pub imap: Server,
    /// The bridge's own address: the From of everything it sends, where replies arrive.
    pub from: Address,
    /// Extra trusted CA certificates (PEM), beside the system's.
    pub ca_file: Option<PathBuf>,
    /// The IMAP folder replies arrive in.
    pub mailbox: String,
    /// Where handled replies are moved; None leaves them (marked \Seen) where they were.
    pub processed_folder: Option<String>,
    /// How often to look for mail when the server has no IDLE.
    pub poll_interval: Duration,
    /// The routes as configured (addresses), to spell a sender's address the same way.
    pub routes: Vec<String>,
}

impl EmailSettings {
    /// The domain of the From address: Message-IDs are made under it.
    pub fn domain(&self) -> &str {
        self.from.domain()
    }
}

fn port(key: &str, value: Option<i64>) -> anyhow::Result<Option<u16>> {
    match value {
        None => Ok(None),
        Some(n) if (1..=65535).contains(&n) => Ok(Some(n as u16)),
        Some(_) => bail!("[bridges.email] {key} must be a port number from 1 to 65535"),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Parses an address as people write it in the config, naming the key on failure.
pub fn parse_address(key: &str, text: &str) -> anyhow::Result<Address> {
    text.trim().parse::<Address>().map_err(|error| {
        anyhow::anyhow!("[bridges.email] {key}: {text:?} is not an email address ({error})")
    })
}

/// Builds the settings from the channel keys of `[bridges.email]`, the routes and the secrets
/// (`password`, or `smtp_password` / `imap_password` to differ). Every problem is a
/// [`rein::Error::Invalid`] (exit code 2) that names the key.
pub fn load(
    channel: &toml::Table,
    routes: &[String],
    secrets: &Secrets,
) -> anyhow::Result<EmailSettings> {
    load_inner(channel, routes, secrets)
        .map_err(|error| rein::Error::invalid(format!("{error:#}")).into())
}

fn load_inner(
    channel: &toml::Table,
    routes: &[String],
    secrets: &Secrets,
) -> anyhow::Result<EmailSettings> {
    let keys: Keys = rein::bridge::config::channel_keys(channel, "email")?;
    let from = keys.from.context(
        "[bridges.email] from is missing: set the bridge's own address, like from = \"rein@example.org\"",
    )?;
    let from = parse_address("from", &from)?;
    let smtp_host = keys
        .smtp_host
        .context("[bridges.email] smtp_host is missing: set the SMTP server, like smtp_host = \"smtp.example.org\"")?;
    let imap_host = keys
        .imap_host
        .context("[bridges.email] imap_host is missing: set the IMAP server, like imap_host = \"imap.example.org\"")?;
    let smtp_tls = match keys.smtp_tls {
        Some(text) => Security::parse("smtp_tls", &text)?,
        None => Security::StartTls,
    };
    let imap_tls = match keys.imap_tls {
        Some(text) => Security::parse("imap_tls", &text)?,
        None => Security::Tls,
    };
    for (key, host, security) in [
        ("smtp_tls", &smtp_host, smtp_tls),
        ("imap_tls", &imap_host, imap_tls),
    ] {
        if security == Security::None && !is_loopback(host) {
            bail!(
                "[bridges.email] {key} = \"none\" is allowed only for a server on this machine (127.0.0.1, ::1, localhost), not {host:?}: passwords and answers would cross the network in clear; use \"starttls\" or \"tls\""
            );
        }
    }
    let smtp_port = port("smtp_port", keys.smtp_port)?.unwrap_or(match smtp_tls {
        Security::StartTls => 587,
        Security::Tls => 465,
        Security::None => 25,
    });
    let imap_port = port("imap_port", keys.imap_port)?.unwrap_or(match imap_tls {
        Security::Tls => 993,
        Security::StartTls | Security::None => 143,
    });
    let username = keys.username.unwrap_or_else(|| from.to_string());
    let ca_file = keys
        .ca_file
        .map(|path| rein::bridge::config::expand_home(&path));
    if let Some(path) = &ca_file {
        if !path.is_file() {
            bail!(
                "[bridges.email] ca_file {} does not exist or is not a file",
                path.display()
            );
        }
    }
    let mailbox = keys.mailbox.unwrap_or_else(|| "INBOX".to_owned());
    let processed_folder = keys.processed_folder;
    let poll_interval = match keys.poll_interval {
        Some(text) => rein::duration::parse(&text)
            .map_err(|error| anyhow::anyhow!("[bridges.email] poll_interval: {error}"))?,
        None => Duration::from_secs(60),
    };
    if poll_interval < Duration::from_secs(1) {
        bail!("[bridges.email] poll_interval must be at least 1s");
    }

    for route in routes {
        parse_address("routes", route)?;
    }
    let shared = secrets.get("password");
    let imap_password = secrets.get("imap_password").or(shared).context(
        "the secret \"password\" (or \"imap_password\") is missing: the bridge logs in to IMAP to read replies; put it in the secrets file (secret_file) or the systemd credential",
    )?;
    let smtp_password = secrets.get("smtp_password").or(shared);
    Ok(EmailSettings {
        smtp: Server {
            host: smtp_host,
            port: smtp_port,
            security: smtp_tls,
            username: username.clone(),
            password: smtp_password.map(str::to_owned),
        },
        imap: Server {
            host: imap_host,
            port: imap_port,
            security: imap_tls,
            username,
            password: Some(imap_password.to_owned()),
        },
        from,
        ca_file,
        mailbox,
        processed_folder,
        poll_interval,
        routes: routes.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets::from_pairs(&[("password", "hunter2")])
    }

    fn parse(text: &str) -> anyhow::Result<EmailSettings> {
        let table: toml::Table = toml::from_str(text).expect("toml");
        load(&table, &["ana@example.org".to_owned()], &secrets())
    }

    const MINIMAL: &str =
        "from = \"rein@example.org\"\nsmtp_host = \"smtp.example.org\"\nimap_host = \"imap.example.org\"\n";

    #[test]
    fn defaults_follow_the_tls_mode() {
        let settings = parse(MINIMAL).expect("valid");
        assert_eq!(
            (settings.smtp.port, settings.smtp.security),
            (587, Security::StartTls)
        );
        assert_eq!(
            (settings.imap.port, settings.imap.security),
            (993, Security::Tls)
        );
        assert_eq!(settings.smtp.username, "rein@example.org");
        assert_eq!(settings.imap.password.as_deref(), Some("hunter2"));
        assert_eq!(settings.mailbox, "INBOX");
        assert_eq!(settings.poll_interval, Duration::from_secs(60));
        assert_eq!(settings.domain(), "example.org");
        let settings = parse(&format!(
            "{MINIMAL}smtp_tls = \"tls\"\nimap_tls = \"starttls\"\n"
        ))
        .expect("ok");
        assert_eq!((settings.smtp.port, settings.imap.port), (465, 143));
    }

    #[test]
    fn mistakes_are_named() {
        for (extra, expected) in [
            ("smtp_tls = \"none\"\n", "only for a server on this machine"),
            ("imap_tls = \"ssl\"\n", "not a TLS mode"),
            ("smtp_port = 0\n", "port number"),
            ("poll_interval = \"soon\"\n", "poll_interval"),
            ("imap_folder = \"x\"\n", "unknown field `imap_folder`"),
            ("smtp_port = \"25\"\n", "smtp_port"),
            ("ca_file = \"/nonexistent/ca.pem\"\n", "does not exist"),
        ] {
            let error = parse(&format!("{MINIMAL}{extra}")).expect_err(extra);
            assert!(
                format!("{error:#}").contains(expected),
                "{extra}: {error:#}"
            );
        }
        let error = parse("smtp_host = \"a\"\nimap_host = \"b\"\n").expect_err("no from");
        assert_eq!(rein::error::exit_code_of(&error), 2);
        assert!(
            format!("{error:#}").contains("from is missing"),
            "{error:#}"
        );
        let error = parse("from = \"not an address\"\nsmtp_host = \"a\"\nimap_host = \"b\"\n")
            .expect_err("bad from");
        assert!(format!("{error:#}").contains("not an email address"));
    }

    #[test]
    fn none_is_allowed_on_loopback_only() {
        for host in ["127.0.0.1", "::1", "localhost", "127.0.0.2"] {
            let text = format!(
                "from = \"rein@example.org\"\nsmtp_host = \"{host}\"\nimap_host = \"{host}\"\nsmtp_tls = \"none\"\nimap_tls = \"none\"\n"
            );
            let settings = parse(&text).expect(host);
            assert_eq!((settings.smtp.port, settings.imap.port), (25, 143));
        }
    }

    #[test]
    fn routes_must_be_addresses_and_imap_needs_a_password() {
        let table: toml::Table = toml::from_str(MINIMAL).expect("toml");
        let error =
            load(&table, &["+15551234".to_owned()], &secrets()).expect_err("phone number route");
        assert!(format!("{error:#}").contains("routes"), "{error:#}");
        let error = load(&table, &[], &Secrets::default()).expect_err("no password");
        assert!(format!("{error:#}").contains("imap_password"), "{error:#}");
        let split = Secrets::from_pairs(&[("imap_password", "i"), ("smtp_password", "s")]);
        let settings = load(&table, &[], &split).expect("split secrets");
        assert_eq!(settings.smtp.password.as_deref(), Some("s"));
        assert_eq!(settings.imap.password.as_deref(), Some("i"));
    }
}
