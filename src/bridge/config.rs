//! `[bridges.NAME]` in config.toml: the keys every bridge shares. Every other key of the
//! section is the channel's own (`BridgeSettings::channel`), read by the bridge with
//! [`channel_keys`] into a serde struct that refuses unknown keys.
//!
//! ```toml
//! [bridges.slack]
//! allow = ["slack:U012AB3CD"]          # who may answer
//! routes = ["C0123456"]                # where asks go (channel ids, numbers, addresses, desktops)
//! worker_routes = { deploy = ["C0999"] } # per-worker routing, overrides `routes`
//! rate_per_minute = 30                 # sends per minute on this channel
//! notes = true                         # relay `rein notify` notes too
//! secret_file = "~/.config/rein/slack.secrets"   # mode 0600 TOML; or:
//! credential = "slack"                 # a systemd credential (LoadCredential=) of the unit
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::Config;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct BridgeSettings {
    pub name: String,
    pub allow: Vec<String>,
    pub routes: Vec<String>,
    pub worker_routes: BTreeMap<String, Vec<String>>,
    pub rate_per_minute: u32,
    pub notes: bool,
    pub secret_file: Option<PathBuf>,
    pub credential: Option<String>,
    /// The channel's own keys.
    pub channel: toml::Table,
}

impl BridgeSettings {
    /// Where a worker's asks go.
    pub fn routes_for(&self, worker: &str) -> &[String] {
        self.worker_routes
            .get(worker)
            .map(Vec::as_slice)
            .unwrap_or(&self.routes)
    }

    /// Every route any worker uses.
    pub fn all_routes(&self) -> Vec<String> {
        let mut all: Vec<String> = self.routes.clone();
        for routes in self.worker_routes.values() {
            for route in routes {
                if !all.contains(route) {
                    all.push(route.clone());
                }
            }
        }
        all
    }

    pub fn allows(&self, identity: &str) -> bool {
        self.allow.iter().any(|allowed| allowed == identity)
    }
}

pub fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// The keys every bridge shares, as serde reads them (the channel's own keys are left for
/// [`channel_keys`]).
#[derive(Debug, Default, Deserialize)]
struct SharedKeys {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default)]
    worker_routes: BTreeMap<String, Vec<String>>,
    rate_per_minute: Option<i64>,
    notes: Option<bool>,
    secret_file: Option<String>,
    credential: Option<String>,
}

/// The names of [`SharedKeys`].
pub const SHARED_KEYS: &[&str] = &[
    "allow",
    "routes",
    "worker_routes",
    "rate_per_minute",
    "notes",
    "secret_file",
    "credential",
];

/// Reads a bridge's own keys (what [`load`] leaves in `BridgeSettings::channel`) into `T`, a
/// serde struct with `deny_unknown_fields`: a misspelled key or a wrong type is
/// [`Error::Invalid`] (exit 2) naming the section and the key.
pub fn channel_keys<T: serde::de::DeserializeOwned>(
    channel: &toml::Table,
    bridge: &str,
) -> Result<T> {
    toml::Value::Table(channel.clone())
        .try_into()
        .map_err(|error: toml::de::Error| {
            Error::invalid(format!(
                "[bridges.{bridge}] {}; the keys every bridge shares are {}",
                error.to_string().trim(),
                SHARED_KEYS.join(", ")
            ))
        })
}

/// The shared settings of bridge `name`, with clear errors for a missing or bad section.
pub fn load(config: &Config, name: &str) -> Result<BridgeSettings> {
    crate::store::validate_id("bridge name", name)?;
    let Some(section) = config.bridges.get(name) else {
        return Err(Error::invalid(format!(
            "no [bridges.{name}] section in the config; add one (see rein-bridge-{name}(1) and contrib/bridges/{name}.toml)"
        )));
    };
    let shared: SharedKeys =
        toml::Value::Table(section.clone())
            .try_into()
            .map_err(|error: toml::de::Error| {
                Error::invalid(format!("[bridges.{name}] {}", error.to_string().trim()))
            })?;
    let mut channel = section.clone();
    for key in SHARED_KEYS {
        channel.remove(*key);
    }
    let allow = shared.allow;
    if allow.is_empty() {
        return Err(Error::invalid(format!(
            "[bridges.{name}] allow is empty: nobody could answer; list identities like allow = [\"{name}:...\"]"
        )));
    }
    if let Some(bad) = allow.iter().find(|a| !a.starts_with(&format!("{name}:"))) {
        return Err(Error::invalid(format!(
            "[bridges.{name}] allow entry {bad:?} is not a {name} identity; write it like \"{name}:...\""
        )));
    }
    for worker in shared.worker_routes.keys() {
        crate::store::validate_id("worker id", worker)?;
    }
    if shared.routes.is_empty() && shared.worker_routes.is_empty() {
        return Err(Error::invalid(format!(
            "[bridges.{name}] has no routes: say where asks go with routes = [\"...\"]"
        )));
    }
    let rate_per_minute = match shared.rate_per_minute {
        None => 30,
        Some(n) if (1..=10_000).contains(&n) => n as u32,
        Some(_) => {
            return Err(Error::invalid(format!(
                "[bridges.{name}] rate_per_minute must be a whole number from 1 to 10000"
            )))
        }
    };
    Ok(BridgeSettings {
        name: name.to_owned(),
        allow,
        routes: shared.routes,
        worker_routes: shared.worker_routes,
        rate_per_minute,
        notes: shared.notes.unwrap_or(true),
        secret_file: shared.secret_file.as_deref().map(expand_home),
        credential: shared.credential,
        channel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BridgeSettings> {
        let config = Config::parse(std::path::Path::new("c.toml"), text)?;
        load(&config, "slack")
    }

    #[test]
    fn shared_keys_and_channel_keys() {
        let settings = parse(
            "[bridges.slack]\nallow = [\"slack:U1\"]\nroutes = [\"C1\"]\nworker_routes = { w2 = [\"C2\"] }\nbase_url = \"http://127.0.0.1:1\"\n",
        )
        .expect("valid");
        assert_eq!(settings.routes_for("w1"), ["C1"]);
        assert_eq!(settings.routes_for("w2"), ["C2"]);
        assert_eq!(settings.all_routes(), ["C1", "C2"]);
        assert!(settings.allows("slack:U1") && !settings.allows("slack:U2"));
        assert_eq!(settings.rate_per_minute, 30);
        assert_eq!(settings.channel.keys().collect::<Vec<_>>(), ["base_url"]);
    }

    #[test]
    fn bad_sections_are_refused() {
        for text in [
            "",
            "[bridges.slack]\nroutes = [\"C1\"]\n",
            "[bridges.slack]\nallow = [\"sms:+1\"]\nroutes = [\"C1\"]\n",
            "[bridges.slack]\nallow = [\"slack:U1\"]\n",
            "[bridges.slack]\nallow = \"slack:U1\"\nroutes = [\"C1\"]\n",
            "[bridges.slack]\nallow = [\"slack:U1\"]\nroutes = [\"C1\"]\nrate_per_minute = 0\n",
            "[bridges.slack]\nallow = [\"slack:U1\"]\nworker_routes = { \"../x\" = [\"C1\"] }\n",
        ] {
            let error = parse(text).expect_err(text);
            assert_eq!(error.exit_code(), 2, "{text}: {error}");
        }
    }
}

#[cfg(test)]
mod channel_tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Keys {
        base_url: Option<String>,
    }

    #[test]
    fn channel_keys_refuse_unknown_keys_and_wrong_types() {
        let table: toml::Table = toml::from_str("base_url = \"http://x\"").expect("toml");
        let keys: Keys = channel_keys(&table, "slack").expect("valid");
        assert_eq!(keys.base_url.as_deref(), Some("http://x"));
        for text in ["colour = \"red\"", "base_url = 3"] {
            let table: toml::Table = toml::from_str(text).expect("toml");
            let error = channel_keys::<Keys>(&table, "slack").expect_err(text);
            assert_eq!(error.exit_code(), 2);
            assert!(error.to_string().starts_with("[bridges.slack]"), "{error}");
        }
    }
}
