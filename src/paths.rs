//! Where the data dir and the config live, and which profile they make.
//!
//! Data dir: `$REIN_DATA_DIR`, else the XDG state dir (`~/.local/state/rein`). Config:
//! `$REIN_CONFIG`, else `~/.config/rein/config.toml`. One data dir is one profile; the profile
//! is `$REIN_PROFILE`, else `default` for the XDG data dir, else a name derived from the data
//! dir's path, so two data dirs never share unit names.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub const DEFAULT_PROFILE: &str = "default";

#[derive(Debug, Clone)]
pub struct Paths {
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub profile: String,
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "rein")
}

/// The XDG default data dir (`~/.local/state/rein`).
pub fn default_data_dir() -> Option<PathBuf> {
    let dirs = project_dirs()?;
    Some(
        dirs.state_dir()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dirs.data_local_dir().to_path_buf()),
    )
}

/// Checks a profile name: like an id, but without dots, because unit names use a dot to
/// separate the profile from the rest (`rein.PROFILE.pulse.timer`).
pub fn validate_profile(profile: &str) -> Result<()> {
    let valid = !profile.is_empty()
        && profile.len() <= 32
        && profile
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid profile {profile:?}: use 1-32 lowercase letters, digits, '-' or '_' (set REIN_PROFILE)"
        )))
    }
}

/// A profile name derived from a data dir path: its sanitised last component and a short hash
/// of the whole path.
pub fn derived_profile(data_dir: &Path) -> String {
    let base: String = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(20)
        .collect();
    let digest = Sha256::digest(data_dir.to_string_lossy().as_bytes());
    let short = &hex::encode(digest)[..8];
    let base = base.trim_matches('-');
    if base.is_empty() {
        format!("p-{short}")
    } else {
        format!("{base}-{short}")
    }
}

impl Paths {
    pub fn from_env() -> Result<Paths> {
        let default_data = default_data_dir();
        let data_dir = env_path("REIN_DATA_DIR")
            .or_else(|| default_data.clone())
            .ok_or_else(|| {
                Error::invalid("cannot find a home directory for the data dir; set REIN_DATA_DIR")
            })?;
        let data_dir = absolute(&data_dir)?;
        let config = match env_path("REIN_CONFIG") {
            Some(path) => absolute(&path)?,
            None => directories::BaseDirs::new()
                .map(|b| b.config_dir().join("rein/config.toml"))
                .ok_or_else(|| Error::invalid("cannot find a config directory; set REIN_CONFIG"))?,
        };
        let profile = match std::env::var("REIN_PROFILE").ok().filter(|p| !p.is_empty()) {
            Some(profile) => {
                validate_profile(&profile)?;
                profile
            }
            None if Some(&data_dir) == default_data.as_ref() => DEFAULT_PROFILE.to_owned(),
            None => derived_profile(&data_dir),
        };
        Ok(Paths {
            data_dir,
            config,
            profile,
        })
    }

    pub fn data(&self) -> crate::store::DataDir {
        crate::store::DataDir::new(&self.data_dir)
    }

    pub fn is_default_profile(&self) -> bool {
        self.profile == DEFAULT_PROFILE
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .map_err(|e| Error::io("reading the current directory for", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_profiles_are_valid_and_distinct() {
        let a = derived_profile(Path::new("/tmp/.tmpAbC12/data"));
        let b = derived_profile(Path::new("/tmp/.tmpXyZ99/data"));
        assert_ne!(a, b);
        for profile in [&a, &b, &derived_profile(Path::new("/"))] {
            validate_profile(profile).expect("derived profile is valid");
        }
        assert!(validate_profile("has.dot").is_err());
        assert!(validate_profile("").is_err());
    }
}
