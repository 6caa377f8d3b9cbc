//! TLS for both directions: the system's trusted CAs plus the optional `ca_file`, verified
//! against the configured host name. Nothing here ever accepts an unverified certificate.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// The PEM bytes of `ca_file`, checked to hold at least one certificate.
pub fn read_ca_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read(path).with_context(|| format!("reading ca_file {}", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("ca_file {} is not PEM", path.display()))?;
    if certificates.is_empty() {
        anyhow::bail!(
            "ca_file {} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(pem)
}

/// A rustls client configuration for IMAP.
pub fn client_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!("a system CA certificate could not be loaded: {error}");
    }
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let pem = read_ca_file(path)?;
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            let certificate =
                certificate.with_context(|| format!("ca_file {} is not PEM", path.display()))?;
            roots.add(certificate).with_context(|| {
                format!("ca_file {}: a certificate is unusable", path.display())
            })?;
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// lettre's TLS parameters for SMTP to `host`.
pub fn smtp_parameters(
    host: &str,
    ca_file: Option<&Path>,
) -> anyhow::Result<lettre::transport::smtp::client::TlsParameters> {
    use lettre::transport::smtp::client::{Certificate, TlsParameters};
    let mut builder = TlsParameters::builder(host.to_owned());
    if let Some(path) = ca_file {
        let pem = read_ca_file(path)?;
        let certificate = Certificate::from_pem(&pem)
            .with_context(|| format!("ca_file {} is not a PEM certificate", path.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build_rustls()
        .with_context(|| format!("setting up TLS for {host}"))
}

/// The message of an error and all its causes, on one line.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    // Some errors repeat their cause's words ("Connection error: Connection error: …").
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

/// True when `text` (from [`describe`]) says the server's certificate was not trusted.
pub fn is_certificate_problem(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("certificate") || lower.contains("unknownissuer")
}

/// What to tell a person whose server's certificate was refused.
pub fn certificate_hint(ca_file: Option<&Path>) -> String {
    match ca_file {
        Some(path) => format!(
            " (the server's certificate is not signed by a system CA or by ca_file {}, or does not name the host)",
            path.display()
        ),
        None => " (the server's certificate is not signed by a CA this system trusts, or does not name the host; for a private CA set ca_file = \"/path/to/ca.pem\" in [bridges.email])".to_owned(),
    }
}
