//! Bridge secrets (tokens, passwords): from a TOML file of `key = "value"` lines that only its
//! owner may read, or from a systemd credential (`LoadCredential=` → `$CREDENTIALS_DIRECTORY`).
//! Never from the command line, and never printed: `Debug` shows only the key names.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::bridge::config::BridgeSettings;
use crate::error::{Error, Result};

#[derive(Default, Clone)]
pub struct Secrets {
    values: BTreeMap<String, String>,
    source: Option<PathBuf>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Secrets({:?} from {:?}, values redacted)",
            self.values.keys().collect::<Vec<_>>(),
            self.source
        )
    }
}

impl Secrets {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn require(&self, key: &str) -> anyhow::Result<&str> {
        self.get(key).ok_or_else(|| {
            let from = match &self.source {
                Some(path) => format!("the secrets file {}", path.display()),
                None => {
                    "the config: set secret_file or credential in the bridge's section".to_owned()
                }
            };
            crate::Error::invalid(format!("the secret {key:?} is missing from {from}")).into()
        })
    }

    /// For tests and callers that hold values already.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Secrets {
        Secrets {
            values: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            source: None,
        }
    }
}

/// Reads a secrets file, refusing one that group or others can read.
pub fn read_file(path: &Path) -> Result<Secrets> {
    let metadata =
        std::fs::metadata(path).map_err(|e| Error::io("reading the secrets file", path, e))?;
    let mode = metadata.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::invalid(format!(
            "the secrets file {} is readable by group or others (mode {mode:04o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io("reading the secrets file", path, e))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        // The parse error may quote the line, and the line may hold a secret: say only where.
        let line = e
            .span()
            .map(|s| text[..s.start].matches('\n').count() + 1)
            .unwrap_or(1);
        Error::invalid(format!(
            "{}:{line}: not a TOML file of key = \"value\" lines",
            path.display()
        ))
    })?;
    let mut values = BTreeMap::new();
    for (key, value) in table {
        let toml::Value::String(value) = value else {
            return Err(Error::invalid(format!(
                "{}: the secret {key:?} must be a string",
                path.display()
            )));
        };
        values.insert(key, value);
    }
    Ok(Secrets {
        values,
        source: Some(path.to_owned()),
    })
}

/// The secrets of a bridge: its credential if named, else its secret file, else none.
pub fn load(settings: &BridgeSettings) -> Result<Secrets> {
    if let Some(credential) = &settings.credential {
        crate::store::validate_id("credential name", credential)?;
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
            Error::invalid(format!(
                "[bridges.{}] credential = {credential:?} needs the unit to load it: add LoadCredential={credential}:/path/to/file to the unit (see units/rein-bridge@.service)",
                settings.name
            ))
        })?;
        return read_file(&Path::new(&dir).join(credential));
    }
    match &settings.secret_file {
        Some(path) => read_file(path),
        None => Ok(Secrets::default()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn loose_files_are_refused_and_values_never_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "bot_token = \"xoxb-very-secret\"\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = read_file(&path).expect_err("0644 refused");
        assert!(error.to_string().contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let secrets = read_file(&path).expect("0600 accepted");
        assert_eq!(secrets.get("bot_token"), Some("xoxb-very-secret"));
        assert!(!format!("{secrets:?}").contains("very-secret"));
        std::fs::write(&path, "bot_token = xoxb-very-secret\n").expect("write");
        let error = read_file(&path).expect_err("bad toml");
        assert!(!error.to_string().contains("very-secret"), "{error}");
    }
}
