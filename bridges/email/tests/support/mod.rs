//! The real mail servers of `contrib/mail-servers.sh` for these tests: started once per test
//! binary when not already running, and helpers that talk to them as people would (send a
//! reply over SMTP, look into a mailbox over IMAP), always with deadlines.
//!
//! Each test uses its own bridge account (rein1..rein8, noidle) so tests run in parallel
//! without reading each other's mail; mail to the shared people (ana, bob, eve) is found by
//! its Message-ID or subject.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_imap::{Client, Session};
use futures_util::TryStreamExt;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use rein_bridge_email::config::{self, EmailSettings};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// The servers, as `contrib/mail-servers.sh` exported them.
#[derive(Debug)]
pub struct MailServers {
    pub host: String,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub smtp_port: u16,
    pub smtps_port: u16,
    pub ca_file: PathBuf,
    pub domain: String,
    pub password: String,
}

/// Values of `export NAME=VALUE` lines printed with bash's `%q`.
fn parse_exports(text: &str) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for line in text.lines() {
        let Some((name, value)) = line
            .strip_prefix("export ")
            .and_then(|rest| rest.split_once('='))
        else {
            continue;
        };
        let mut unquoted = String::new();
        let mut chars = value.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => unquoted.extend(chars.next()),
                '\'' => {}
                other => unquoted.push(other),
            }
        }
        values.insert(name.to_owned(), unquoted);
    }
    values
}

/// Starts the servers (or finds them running) once per test binary.
pub fn servers() -> &'static MailServers {
    static SERVERS: OnceLock<MailServers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let dir = std::env::var_os("REIN_MAIL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("rein-mail-servers"));
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../contrib/mail-servers.sh");
        let output = std::process::Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running contrib/mail-servers.sh");
        assert!(
            output.status.success(),
            "{} start {} failed:\n{}",
            script.display(),
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let values = parse_exports(&String::from_utf8_lossy(&output.stdout));
        let get = |name: &str| {
            values
                .get(name)
                .unwrap_or_else(|| panic!("mail-servers.sh did not export {name}"))
                .clone()
        };
        let port = |name: &str| get(name).parse::<u16>().expect("a port number");
        MailServers {
            host: get("REIN_MAIL_HOST"),
            imap_port: port("REIN_MAIL_IMAP_PORT"),
            imaps_port: port("REIN_MAIL_IMAPS_PORT"),
            smtp_port: port("REIN_MAIL_SMTP_PORT"),
            smtps_port: port("REIN_MAIL_SMTPS_PORT"),
            ca_file: PathBuf::from(get("REIN_MAIL_CA_FILE")),
            domain: get("REIN_MAIL_DOMAIN"),
            password: get("REIN_MAIL_PASSWORD"),
        }
    })
}

pub type ImapSession = Session<TlsStream<TcpStream>>;

impl MailServers {
    pub fn address(&self, user: &str) -> String {
        format!("{user}@{}", self.domain)
    }

    /// `[bridges.email]` channel keys for bridge account `user`: SMTP with STARTTLS, IMAP
    /// over TLS, trusting the test CA.
    pub fn table(&self, user: &str) -> toml::Table {
        let mut table = toml::Table::new();
        let mut set = |key: &str, value: toml::Value| {
            table.insert(key.to_owned(), value);
        };
        set("from", self.address(user).into());
        set("smtp_host", self.host.clone().into());
        set("smtp_port", i64::from(self.smtp_port).into());
        set("smtp_tls", "starttls".into());
        set("imap_host", self.host.clone().into());
        set("imap_port", i64::from(self.imaps_port).into());
        set("imap_tls", "tls".into());
        set("ca_file", self.ca_file.display().to_string().into());
        table
    }

    pub fn secrets(&self) -> rein::bridge::secrets::Secrets {
        rein::bridge::secrets::Secrets::from_pairs(&[("password", &self.password)])
    }

    /// Validated settings from [`MailServers::table`] with `changes` applied.
    pub fn settings(
        &self,
        user: &str,
        routes: &[&str],
        changes: &[(&str, toml::Value)],
    ) -> Arc<EmailSettings> {
        let mut table = self.table(user);
        for (key, value) in changes {
            table.insert((*key).to_owned(), value.clone());
        }
        let routes: Vec<String> = routes.iter().map(|r| r.to_string()).collect();
        Arc::new(config::load(&table, &routes, &self.secrets()).expect("valid test settings"))
    }

    fn tls_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_file_iter(&self.ca_file).expect("CA file") {
            roots.add(certificate.expect("CA cert")).expect("add CA");
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// Sends `raw` (a complete message) from `from_user` to `to_user` over SMTP with STARTTLS
    /// and AUTH, as a person's mail program would.
    pub async fn send_raw(&self, from_user: &str, to_user: &str, raw: &str) {
        let pem = std::fs::read(&self.ca_file).expect("CA file");
        let tls = TlsParameters::builder(self.host.clone())
            .add_root_certificate(Certificate::from_pem(&pem).expect("CA"))
            .build_rustls()
            .expect("TLS parameters");
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.host.as_str())
            .port(self.smtp_port)
            .tls(Tls::Required(tls))
            .credentials(Credentials::new(
                self.address(from_user),
                self.password.clone(),
            ))
            .timeout(Some(Duration::from_secs(10)))
            .build();
        let envelope = Envelope::new(
            Some(self.address(from_user).parse().expect("from")),
            vec![self.address(to_user).parse().expect("to")],
        )
        .expect("envelope");
        transport
            .send_raw(&envelope, raw.replace('\n', "\r\n").as_bytes())
            .await
            .expect("the SMTP server accepted the message");
    }

    /// An IMAP session for `user` (over TLS), with INBOX selected.
    pub async fn imap(&self, user: &str) -> ImapSession {
        self.imap_folder(user, "INBOX").await
    }

    /// An IMAP session for `user` (over TLS), with `folder` selected (created if missing).
    pub async fn imap_folder(&self, user: &str, folder: &str) -> ImapSession {
        let tcp = TcpStream::connect((self.host.as_str(), self.imaps_port))
            .await
            .expect("connect IMAP");
        let name = ServerName::try_from(self.host.clone()).expect("server name");
        let tls = tokio_rustls::TlsConnector::from(self.tls_config())
            .connect(name, tcp)
            .await
            .expect("TLS with IMAP");
        let mut client = Client::new(tls);
        client.read_response().await.expect("greeting");
        let mut session = client
            .login(self.address(user), &self.password)
            .await
            .map_err(|(e, _)| e)
            .expect("IMAP login");
        if folder != "INBOX" {
            // Already there from an earlier run is fine.
            let _ = session.create(folder).await;
        }
        session.select(folder).await.expect("select the folder");
        session
    }

    /// How many messages `user` has in `folder`.
    pub async fn count(&self, user: &str, folder: &str) -> u32 {
        let mut session = self.imap(user).await;
        let status = session.status(folder, "(MESSAGES)").await.expect("status");
        let _ = session.logout().await;
        status.exists
    }

    /// Deletes everything in `user`'s INBOX, so a test starts from nothing.
    pub async fn empty_mailbox(&self, user: &str) {
        self.empty_folder(user, "INBOX").await;
    }

    /// Deletes everything in `user`'s `folder` (creating it if missing).
    pub async fn empty_folder(&self, user: &str, folder: &str) {
        let mut session = self.imap_folder(user, folder).await;
        let _: Vec<_> = session
            .store("1:*", "+FLAGS.SILENT (\\Deleted)")
            .await
            .expect("store")
            .try_collect()
            .await
            .expect("store");
        let _: Vec<_> = session
            .expunge()
            .await
            .expect("expunge")
            .try_collect()
            .await
            .expect("expunge");
        let _ = session.logout().await;
    }

    /// Waits until a message matching the IMAP search `criteria` is in `user`'s INBOX and
    /// returns the raw bytes of the first match.
    pub async fn wait_for_message(&self, user: &str, criteria: &str, within: Duration) -> Vec<u8> {
        self.wait_for_message_in(user, "INBOX", criteria, within)
            .await
    }

    /// [`MailServers::wait_for_message`] in another folder.
    pub async fn wait_for_message_in(
        &self,
        user: &str,
        folder: &str,
        criteria: &str,
        within: Duration,
    ) -> Vec<u8> {
        let deadline = Instant::now() + within;
        let mut session = self.imap_folder(user, folder).await;
        loop {
            let mut uids: Vec<u32> = session
                .uid_search(criteria)
                .await
                .expect("search")
                .into_iter()
                .collect();
            uids.sort_unstable();
            if let Some(uid) = uids.first() {
                let messages: Vec<_> = session
                    .uid_fetch(uid.to_string(), "BODY.PEEK[]")
                    .await
                    .expect("fetch")
                    .try_collect()
                    .await
                    .expect("fetch");
                let raw = messages
                    .first()
                    .and_then(|m| m.body())
                    .expect("a body")
                    .to_vec();
                let _ = session.logout().await;
                return raw;
            }
            assert!(
                Instant::now() < deadline,
                "no message matching {criteria} reached {user}'s {folder} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The UID of the first message in `user`'s INBOX matching `criteria`.
    pub async fn uid_of(&self, user: &str, criteria: &str) -> u32 {
        let mut session = self.imap(user).await;
        let uid = session
            .uid_search(criteria)
            .await
            .expect("search")
            .into_iter()
            .min()
            .unwrap_or_else(|| panic!("no message matching {criteria} in {user}'s INBOX"));
        let _ = session.logout().await;
        uid
    }

    /// The threads of `user`'s INBOX as the server groups them for a mail client (`UID
    /// THREAD REFERENCES`, RFC 5256): the UIDs of each thread. Spoken raw, since the IMAP
    /// client crate does not parse THREAD answers.
    pub async fn threads(&self, user: &str) -> Vec<Vec<u32>> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let tcp = TcpStream::connect((self.host.as_str(), self.imaps_port))
            .await
            .expect("connect IMAP");
        let name = ServerName::try_from(self.host.clone()).expect("server name");
        let tls = tokio_rustls::TlsConnector::from(self.tls_config())
            .connect(name, tcp)
            .await
            .expect("TLS with IMAP");
        let mut stream = BufReader::new(tls);
        let quote = |text: &str| format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""));
        let mut threads = None;
        let mut greeting = String::new();
        stream.read_line(&mut greeting).await.expect("greeting");
        for (tag, command) in [
            (
                "a1",
                format!(
                    "LOGIN {} {}",
                    quote(&self.address(user)),
                    quote(&self.password)
                ),
            ),
            ("a2", "SELECT INBOX".to_owned()),
            ("a3", "UID THREAD REFERENCES UTF-8 ALL".to_owned()),
            ("a4", "LOGOUT".to_owned()),
        ] {
            let line = format!("{tag} {command}\r\n");
            stream
                .get_mut()
                .write_all(line.as_bytes())
                .await
                .expect("write");
            loop {
                let mut line = String::new();
                let read =
                    tokio::time::timeout(Duration::from_secs(10), stream.read_line(&mut line))
                        .await
                        .expect("the IMAP server answered in time")
                        .expect("read");
                assert!(read > 0, "the IMAP server hung up during {command}");
                if let Some(list) = line.strip_prefix("* THREAD") {
                    threads = Some(parse_threads(list));
                }
                if let Some(status) = line.strip_prefix(&format!("{tag} ")) {
                    assert!(status.starts_with("OK"), "{command}: {line}");
                    break;
                }
            }
        }
        threads.expect("a THREAD answer")
    }

    /// The UIDs in `user`'s INBOX that are still unseen.
    pub async fn unseen(&self, user: &str) -> Vec<u32> {
        let mut session = self.imap(user).await;
        let uids = session
            .uid_search("UNSEEN")
            .await
            .expect("search")
            .into_iter()
            .collect();
        let _ = session.logout().await;
        uids
    }
}

/// Waits for the next item on `receiver`, failing the test after `within`.
pub async fn next<T>(
    receiver: &mut tokio::sync::mpsc::Receiver<T>,
    within: Duration,
    what: &str,
) -> T {
    tokio::time::timeout(within, receiver.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {within:?}"))
        .unwrap_or_else(|| panic!("the channel closed while waiting for {what}"))
}

/// Waits for the reader event `wanted`, failing after `within`; returns the events before it.
pub async fn wait_event(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<rein_bridge_email::ReaderEvent>,
    within: Duration,
    wanted: impl Fn(&rein_bridge_email::ReaderEvent) -> bool,
) -> Vec<rein_bridge_email::ReaderEvent> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if wanted(&event) => return seen,
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("the reader stopped; events: {seen:?}"),
            Err(_) => {
                panic!("the awaited reader event did not come within {within:?}; events: {seen:?}")
            }
        }
    }
}

/// The top-level threads of a THREAD answer, `(1 2)(3 (4)(5))` → `[[1, 2], [3, 4, 5]]`.
pub fn parse_threads(list: &str) -> Vec<Vec<u32>> {
    let mut threads: Vec<Vec<u32>> = Vec::new();
    let mut depth = 0;
    let mut number = String::new();
    for c in list.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        if !number.is_empty() {
            if let (Some(thread), Ok(uid)) = (threads.last_mut(), number.parse()) {
                thread.push(uid);
            }
            number.clear();
        }
        match c {
            '(' => {
                if depth == 0 {
                    threads.push(Vec::new());
                }
                depth += 1;
            }
            ')' => depth -= 1,
            _ => {}
        }
    }
    threads
}

/// A header of a raw message, unfolded and trimmed.
pub fn header(raw: &[u8], name: &str) -> Option<String> {
    let message = mail_parser::MessageParser::default().parse(raw)?;
    message
        .header_raw(name)
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The decoded text body of a raw message.
pub fn body(raw: &[u8]) -> String {
    let message = mail_parser::MessageParser::default()
        .parse(raw)
        .expect("a message");
    message.body_text(0).unwrap_or_default().into_owned()
}

/// A unique Message-ID for a message a test writes as a person.
pub fn person_message_id(user: &str) -> String {
    format!(
        "{}.{}@mail.example.test",
        user,
        uuid::Uuid::new_v4().simple()
    )
}
