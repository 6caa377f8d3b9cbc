//! `rein enable` / `rein disable`: the static unit that re-creates a profile's fleet at login.
//!
//! The template is `units/rein-fleet.service`; the installed copy names this binary, the data
//! dir, the config and the profile. It goes to the user's unit directory
//! (`$XDG_CONFIG_HOME/systemd/user`), and is enabled over D-Bus (`EnableUnitFiles`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::fleet::{rein_bin, UnitNames};
use crate::paths::Paths;
use crate::store;
use crate::systemd::Manager;

const TEMPLATE: &str = include_str!("../../units/rein-fleet.service");

/// Quotes one word for a unit file: `%` doubled, quotes and backslashes escaped.
fn unit_quote(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    format!("\"{escaped}\"")
}

/// The unit file text for `paths`.
pub fn render(paths: &Paths, bin: &str) -> Result<String> {
    for (what, value) in [
        ("binary path", bin.to_owned()),
        ("data dir", paths.data_dir.display().to_string()),
        ("config path", paths.config.display().to_string()),
    ] {
        if value.contains(['\n', '\r']) {
            return Err(Error::invalid(format!(
                "the {what} {value:?} contains a newline; a unit file cannot hold it"
            )));
        }
    }
    let env = |key: &str, value: &str| unit_quote(&format!("{key}={value}"));
    Ok(TEMPLATE
        .replace("@PROFILE@", &paths.profile)
        .replace(
            "@ENV_DATA_DIR@",
            &env("REIN_DATA_DIR", &paths.data_dir.display().to_string()),
        )
        .replace(
            "@ENV_CONFIG@",
            &env("REIN_CONFIG", &paths.config.display().to_string()),
        )
        .replace("@ENV_PROFILE@", &env("REIN_PROFILE", &paths.profile))
        .replace("@REIN_BIN@", &unit_quote(bin)))
}

/// The user's unit directory.
pub fn unit_dir() -> Result<PathBuf> {
    directories::BaseDirs::new()
        .map(|b| b.config_dir().join("systemd/user"))
        .ok_or_else(|| {
            Error::invalid(
                "cannot find the config directory for the unit file; set HOME or XDG_CONFIG_HOME",
            )
        })
}

#[derive(Debug, Clone, Serialize)]
pub struct EnableReport {
    pub unit: String,
    pub path: String,
    /// `installed`, `updated`, `unchanged`, `removed` or `not installed`.
    pub action: String,
    /// Whether the user manager (and so the fleet) starts at boot without a login.
    pub linger: bool,
}

impl EnableReport {
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!("{} {} ({})", self.action, self.unit, self.path)];
        if self.action != "removed" && self.action != "not installed" {
            lines.push("the fleet comes back at login".to_owned());
            if !self.linger {
                lines.push(
                    "to bring it back at boot without a login: loginctl enable-linger $USER"
                        .to_owned(),
                );
            }
        }
        lines
    }
}

fn linger_enabled() -> bool {
    let user = crate::mailbox::current_user();
    Path::new("/var/lib/systemd/linger").join(user).exists()
}

pub async fn enable(manager: &Manager, paths: &Paths) -> anyhow::Result<EnableReport> {
    let unit = UnitNames::new(paths).fleet_unit();
    let dir = unit_dir()?;
    let path = dir.join(&unit);
    let text = render(paths, &rein_bin()?)?;
    let action = match store::read_text(&path)? {
        Some(existing) if existing == text => "unchanged",
        Some(_) => "updated",
        None => "installed",
    };
    if action != "unchanged" {
        store::ensure_dir(&dir)?;
        store::write_atomic(&path, text.as_bytes())?;
    }
    manager.reload().await?;
    // By path: systemd links it in even when the user manager searches elsewhere.
    manager
        .enable_unit_files(&[&path.display().to_string()])
        .await?;
    crate::journal::record_or_warn(
        &paths.data(),
        "enable",
        &format!("{action} {}", path.display()),
    );
    Ok(EnableReport {
        unit,
        path: path.display().to_string(),
        action: action.to_owned(),
        linger: linger_enabled(),
    })
}

pub async fn disable(manager: &Manager, paths: &Paths) -> anyhow::Result<EnableReport> {
    let unit = UnitNames::new(paths).fleet_unit();
    let path = unit_dir()?.join(&unit);
    let action = if path.exists() {
        match manager.disable_unit_files(&[unit.as_str()]).await {
            Ok(()) | Err(crate::systemd::SystemdError::NoSuchUnit(_)) => {}
            Err(other) => return Err(other.into()),
        }
        store::remove_file(&path)?;
        manager.reload().await?;
        crate::journal::record_or_warn(
            &paths.data(),
            "disable",
            &format!("removed {}", path.display()),
        );
        "removed"
    } else {
        "not installed"
    };
    Ok(EnableReport {
        unit,
        path: path.display().to_string(),
        action: action.to_owned(),
        linger: linger_enabled(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_text_quotes_paths() {
        let paths = Paths {
            data_dir: PathBuf::from("/home/a b/100%/data"),
            config: PathBuf::from("/home/a\"q/config.toml"),
            profile: "work".into(),
        };
        let text = render(&paths, "/opt/rein bin/rein").expect("renders");
        assert!(
            text.contains("Environment=\"REIN_DATA_DIR=/home/a b/100%%/data\""),
            "{text}"
        );
        assert!(
            text.contains("Environment=\"REIN_CONFIG=/home/a\\\"q/config.toml\""),
            "{text}"
        );
        assert!(
            text.contains("ExecStart=\"/opt/rein bin/rein\" up"),
            "{text}"
        );
        assert!(!text.contains('@'), "every field is filled: {text}");
    }
}
