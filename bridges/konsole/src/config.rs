//! The Konsole bridge's own settings: the `[bridges.konsole]` keys the engine leaves to the
//! channel, and which virtual desktop an ask's tab goes to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rein::store::validate_id;
use rein::Error;
use serde::Deserialize;

use crate::command::check_shell_safe;

/// The channel's own keys of `[bridges.konsole]`; any other key is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    service: Option<String>,
    window: Option<i64>,
    rein_bin: Option<String>,
    desktop: Option<i64>,
    #[serde(default)]
    worker_desktops: BTreeMap<String, i64>,
    #[serde(default)]
    attach_workers: Vec<String>,
}
/// KWin allows at most 20 virtual desktops.
pub const MAX_DESKTOP: u32 = 20;
/// The route that means "the desktop the config gives for the worker".
pub const DEFAULT_ROUTE: &str = "desktop";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KonsoleConfig {
    /// The Konsole to open tabs in (`org.kde.konsole-PID`); None: `$REIN_KONSOLE_SERVICE`,
    /// else the first `org.kde.konsole*` name on the session bus, looked up at each ask.
    pub service: Option<String>,
    /// The Konsole window (`/Windows/N`); None: the lowest-numbered one.
    pub window: Option<u32>,
    /// The `rein` the tabs run: absolute, and safe to put in single quotes in any shell.
    pub rein_bin: PathBuf,
    /// The desktop for workers without an entry in `worker_desktops` (1-based).
    pub desktop: Option<u32>,
    pub worker_desktops: BTreeMap<String, u32>,
    /// Workers whose asks open `rein worker attach WORKER` instead of the answer prompt.
    pub attach_workers: BTreeSet<String>,
}

impl KonsoleConfig {
    /// Parses the channel keys; `rein_bin` defaults to [`default_rein_bin`].
    pub fn from_table(table: &toml::Table) -> Result<KonsoleConfig, Error> {
        let keys: Keys = rein::bridge::config::channel_keys(table, "konsole")?;
        if let Some(service) = &keys.service {
            check_service_name(service)?;
        }
        let window = number("window", keys.window, 1, u32::MAX)?;
        let rein_bin = match keys.rein_bin {
            Some(path) => PathBuf::from(path),
            None => default_rein_bin()?,
        };
        check_rein_bin(&rein_bin)?;
        let desktop = number("desktop", keys.desktop, 1, MAX_DESKTOP)?;
        let mut worker_desktops = BTreeMap::new();
        for (worker, desktop) in keys.worker_desktops {
            validate_id("worker id", &worker)?;
            let Some(desktop) = number("worker_desktops", Some(desktop), 1, MAX_DESKTOP)? else {
                continue;
            };
            worker_desktops.insert(worker, desktop);
        }
        let mut attach_workers = BTreeSet::new();
        for worker in keys.attach_workers {
            validate_id("worker id", &worker)?;
            attach_workers.insert(worker);
        }
        Ok(KonsoleConfig {
            service: keys.service,
            window,
            rein_bin,
            desktop,
            worker_desktops,
            attach_workers,
        })
    }

    /// The desktop an ask of `worker` delivered to `route` goes to, if any: the worker's own
    /// entry in `worker_desktops`, else a numeric route, else `desktop`. None leaves the
    /// window where it is.
    pub fn desktop_for(&self, worker: &str, route: &str) -> Option<u32> {
        self.worker_desktops
            .get(worker)
            .copied()
            .or_else(|| route.parse().ok())
            .or(self.desktop)
    }

    pub fn attaches(&self, worker: &str) -> bool {
        self.attach_workers.contains(worker)
    }
}

/// A route is a desktop number or the word `desktop` (use `desktop` / `worker_desktops`).
pub fn check_route(route: &str) -> Result<(), Error> {
    if route == DEFAULT_ROUTE {
        return Ok(());
    }
    match route.parse::<u32>() {
        Ok(n) if (1..=MAX_DESKTOP).contains(&n) => Ok(()),
        _ => Err(Error::invalid(format!(
            "[bridges.konsole] route {route:?} is neither a desktop number (1-{MAX_DESKTOP}) nor \"{DEFAULT_ROUTE}\""
        ))),
    }
}

/// `rein` for the tabs: `$REIN_BIN`, else `rein` beside this bridge binary, else on PATH.
pub fn default_rein_bin() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os("REIN_BIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("rein")))
        .filter(|path| path.is_file());
    let on_path = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("rein"))
                .find(|path| path.is_file())
        })
    };
    beside.or_else(on_path).ok_or_else(|| {
        Error::NotFound(
            "cannot find rein beside rein-bridge-konsole or on PATH; set rein_bin in [bridges.konsole] or $REIN_BIN".into(),
        )
    })
}

fn check_rein_bin(path: &Path) -> Result<(), Error> {
    if !path.is_absolute() {
        return Err(Error::invalid(format!(
            "[bridges.konsole] rein_bin {} must be an absolute path: the tab's shell has its own PATH",
            path.display()
        )));
    }
    let text = path.to_str().ok_or_else(|| {
        Error::invalid(format!(
            "[bridges.konsole] rein_bin {} is not UTF-8",
            path.display()
        ))
    })?;
    check_shell_safe("rein_bin", text)?;
    if !path.is_file() {
        return Err(Error::NotFound(format!(
            "[bridges.konsole] rein_bin {} does not exist",
            path.display()
        )));
    }
    Ok(())
}

/// A Konsole bus name: `org.kde.konsole…`, and nothing a bus name cannot hold.
pub fn check_service_name(service: &str) -> Result<(), Error> {
    let valid = service.starts_with("org.kde.konsole")
        && service
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "[bridges.konsole] service {service:?} is not a Konsole bus name like org.kde.konsole-1234"
        )))
    }
}

fn number(key: &str, value: Option<i64>, min: u32, max: u32) -> Result<Option<u32>, Error> {
    match value {
        None => Ok(None),
        Some(n) if n >= i64::from(min) && n <= i64::from(max) => Ok(Some(n as u32)),
        Some(_) => Err(Error::invalid(format!(
            "[bridges.konsole] {key} must be a whole number from {min} to {max}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KonsoleConfig, Error> {
        let table: toml::Table = text.parse().expect("toml");
        KonsoleConfig::from_table(&table)
    }

    #[test]
    fn keys_are_read_and_desktops_chosen() {
        let config = parse(
            "service = \"org.kde.konsole-42\"\nwindow = 2\nrein_bin = \"/bin/sh\"\ndesktop = 2\nworker_desktops = { w1 = 3 }\nattach_workers = [\"w9\"]\n",
        )
        .expect("valid");
        assert_eq!(config.service.as_deref(), Some("org.kde.konsole-42"));
        assert_eq!(config.window, Some(2));
        assert_eq!(config.rein_bin, PathBuf::from("/bin/sh"));
        // The worker's own desktop wins, then a numeric route, then `desktop`.
        assert_eq!(config.desktop_for("w1", "4"), Some(3));
        assert_eq!(config.desktop_for("w2", "4"), Some(4));
        assert_eq!(config.desktop_for("w2", "desktop"), Some(2));
        assert!(config.attaches("w9") && !config.attaches("w1"));

        let bare = parse("rein_bin = \"/bin/sh\"\n").expect("valid");
        assert_eq!(bare.desktop_for("w1", "desktop"), None);
        assert_eq!(bare.desktop_for("w1", "3"), Some(3));
    }

    #[test]
    fn bad_keys_are_refused() {
        for text in [
            "rein_bin = \"/bin/sh\"\nshell = \"zsh\"\n",
            "rein_bin = \"bin/rein\"\n",
            "rein_bin = \"/no/such/rein\"\n",
            "rein_bin = \"/tmp/it's/rein\"\n",
            "rein_bin = \"/tmp/a\\\\b\"\n",
            "rein_bin = \"/bin/sh\"\ndesktop = 0\n",
            "rein_bin = \"/bin/sh\"\ndesktop = 21\n",
            "rein_bin = \"/bin/sh\"\ndesktop = \"2\"\n",
            "rein_bin = \"/bin/sh\"\nworker_desktops = { w1 = 0 }\n",
            "rein_bin = \"/bin/sh\"\nworker_desktops = { \"W 1\" = 2 }\n",
            "rein_bin = \"/bin/sh\"\nattach_workers = [\"../x\"]\n",
            "rein_bin = \"/bin/sh\"\nattach_workers = \"w1\"\n",
            "rein_bin = \"/bin/sh\"\nservice = \"org.example.evil\"\n",
            "rein_bin = \"/bin/sh\"\nservice = \"org.kde.konsole-1; rm\"\n",
        ] {
            assert!(parse(text).is_err(), "accepted: {text}");
        }
    }

    #[test]
    fn routes_are_desktops_or_the_default() {
        for good in ["desktop", "1", "20"] {
            check_route(good).expect(good);
        }
        for bad in ["0", "21", "-1", "C0123", ""] {
            assert!(check_route(bad).is_err(), "accepted route {bad:?}");
        }
    }
}
