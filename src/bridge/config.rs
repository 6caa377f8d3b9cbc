//! `[bridges.NAME]` in config.toml: the keys every bridge shares. Every other key of the
//! section is the channel's own (`BridgeSettings::channel`), parsed and checked by the bridge.
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

fn strings(name: &str, key: &str, value: &toml::Value) -> Result<Vec<String>> {
    let problem = || {
        Error::invalid(format!(
            "[bridges.{name}] {key} must be a list of strings, like {key} = [\"a\", \"b\"]"
        ))
    };
    let array = value.as_array().ok_or_else(problem)?;
    array
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(problem))
        .collect()
}

pub fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// The shared settings of bridge `name`, with clear errors for a missing or bad section.
pub fn load(config: &Config, name: &str) -> Result<BridgeSettings> {
    crate::store::validate_id("bridge name", name)?;
    let Some(section) = config.bridges.get(name) else {
        return Err(Error::invalid(format!(
            "no [bridges.{name}] section in the config; add one (see rein-bridge-{name}(1) and contrib/bridges/{name}.toml)"
        )));
    };
    let mut channel = section.clone();
    let allow = channel
        .remove("allow")
        .map(|v| strings(name, "allow", &v))
        .transpose()?
        .unwrap_or_default();
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
    let routes = channel
        .remove("routes")
        .map(|v| strings(name, "routes", &v))
        .transpose()?
        .unwrap_or_default();
    let mut worker_routes = BTreeMap::new();
    if let Some(value) = channel.remove("worker_routes") {
        let table = value.as_table().ok_or_else(|| {
            Error::invalid(format!(
                "[bridges.{name}] worker_routes must be a table like {{ w1 = [\"route\"] }}"
            ))
        })?;
        for (worker, routes) in table {
            crate::store::validate_id("worker id", worker)?;
            worker_routes.insert(worker.clone(), strings(name, "worker_routes", routes)?);
        }
    }
    if routes.is_empty() && worker_routes.is_empty() {
        return Err(Error::invalid(format!(
            "[bridges.{name}] has no routes: say where asks go with routes = [\"...\"]"
        )));
    }
    let rate_per_minute = match channel.remove("rate_per_minute") {
        None => 30,
        Some(toml::Value::Integer(n)) if (1..=10_000).contains(&n) => n as u32,
        Some(_) => {
            return Err(Error::invalid(format!(
                "[bridges.{name}] rate_per_minute must be a whole number from 1 to 10000"
            )))
        }
    };
    let notes = match channel.remove("notes") {
        None => true,
        Some(toml::Value::Boolean(b)) => b,
        Some(_) => {
            return Err(Error::invalid(format!(
                "[bridges.{name}] notes must be true or false"
            )))
        }
    };
    let secret_file = match channel.remove("secret_file") {
        None => None,
        Some(toml::Value::String(path)) => Some(expand_home(&path)),
        Some(_) => {
            return Err(Error::invalid(format!(
                "[bridges.{name}] secret_file must be a path"
            )))
        }
    };
    let credential = match channel.remove("credential") {
        None => None,
        Some(toml::Value::String(credential)) => Some(credential),
        Some(_) => {
            return Err(Error::invalid(format!(
                "[bridges.{name}] credential must be a credential name"
            )))
        }
    };
    Ok(BridgeSettings {
        name: name.to_owned(),
        allow,
        routes,
        worker_routes,
        rate_per_minute,
        notes,
        secret_file,
        credential,
        channel,
    })
}

/// Takes a string key from the channel table, refusing a wrong type.
pub fn take_string(settings: &mut toml::Table, bridge: &str, key: &str) -> Result<Option<String>> {
    match settings.remove(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::invalid(format!(
            "[bridges.{bridge}] {key} must be a string"
        ))),
    }
}

/// Refuses keys the channel did not take.
pub fn refuse_unknown(settings: &toml::Table, bridge: &str, known: &[&str]) -> Result<()> {
    match settings.keys().next() {
        None => Ok(()),
        Some(key) => Err(Error::invalid(format!(
            "[bridges.{bridge}] has an unknown key {key:?}; known keys: allow, routes, worker_routes, rate_per_minute, notes, secret_file, credential, {}",
            known.join(", ")
        ))),
    }
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
