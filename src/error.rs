//! The error kinds a caller decides something from, and the exit code each maps to.
//!
//! Exit codes are part of rein's interface (documented in `rein(1)`): 0 success, 1 failure,
//! 2 usage or invalid input, 3 timed out, 4 withdrawn, 5 conflict (already answered, already
//! claimed, already running). Every verb returns `Result<()>`; a non-zero exit is always an
//! error of a kind below, and [`exit_code_of`] is the one place that maps it to its code.

use std::path::PathBuf;

pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_TIMEOUT: i32 = 3;
pub const EXIT_WITHDRAWN: i32 = 4;
pub const EXIT_CONFLICT: i32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: a malformed id, duration, option or file. Nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// Something named by the user does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The operation lost a race or met existing state it must not overwrite.
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this (an agent answering an ask).
    #[error("{0}")]
    Forbidden(String),
    /// A file rein wrote (or should have) cannot be parsed. Named, never skipped silently.
    #[error("corrupt file {path}: {detail}; inspect or move it aside, rein will not guess")]
    Corrupt { path: PathBuf, detail: String },
    /// An I/O failure on a named path.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A wait ended without what it waited for (an ask's answer, something new).
    #[error("{0}")]
    TimedOut(String),
    /// The ask was withdrawn: the asker stops that line of work.
    #[error("{0}")]
    Withdrawn(String),
    /// The operation failed, and the message says what to do.
    #[error("{0}")]
    Failed(String),
    /// A program rein ran in its own place (the agent in a PTY host, a bridge's test) ended
    /// with this status; rein ends the same way, and its output has said everything.
    #[error("exited with status {0}")]
    Exited(i32),
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }

    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid(_) => EXIT_USAGE,
            Error::Conflict(_) => EXIT_CONFLICT,
            Error::TimedOut(_) => EXIT_TIMEOUT,
            Error::Withdrawn(_) => EXIT_WITHDRAWN,
            Error::Exited(code) => *code,
            Error::NotFound(_)
            | Error::Forbidden(_)
            | Error::Corrupt { .. }
            | Error::Io { .. }
            | Error::Failed(_) => EXIT_FAILURE,
        }
    }

    /// The error an exit code stands for, with `message` (a gate's reply, a child's status).
    pub fn from_exit_code(code: i32, message: impl Into<String>) -> Error {
        let message = message.into();
        match code {
            EXIT_USAGE => Error::Invalid(message),
            EXIT_TIMEOUT => Error::TimedOut(message),
            EXIT_WITHDRAWN => Error::Withdrawn(message),
            EXIT_CONFLICT => Error::Conflict(message),
            _ => Error::Failed(message),
        }
    }

    /// Whether `main` prints this error (an [`Error::Exited`] has said its piece).
    pub fn is_silent(&self) -> bool {
        matches!(self, Error::Exited(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes on one line, each said once: a cause whose text the message
/// already holds (an I/O error inside [`Error::Io`], zbus's nested I/O errors) is not
/// repeated, as `{:#}` would.
pub fn describe(error: &anyhow::Error) -> String {
    let mut said = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || said.contains(&text) {
            continue;
        }
        if !said.is_empty() {
            said.push_str(": ");
        }
        said.push_str(&text);
    }
    said
}

/// Maps any error that reached `main` to an exit code: typed errors carry their own, anything
/// else is a plain failure.
pub fn exit_code_of(error: &anyhow::Error) -> i32 {
    for cause in error.chain() {
        if let Some(error) = cause.downcast_ref::<Error>() {
            return error.exit_code();
        }
        if let Some(error) = cause.downcast_ref::<crate::systemd::SystemdError>() {
            return match error {
                crate::systemd::SystemdError::UnitExists(_) => EXIT_CONFLICT,
                crate::systemd::SystemdError::InvalidUnit { .. } => EXIT_USAGE,
                _ => EXIT_FAILURE,
            };
        }
    }
    EXIT_FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_code_and_codes_round_trip() {
        for code in [
            EXIT_FAILURE,
            EXIT_USAGE,
            EXIT_TIMEOUT,
            EXIT_WITHDRAWN,
            EXIT_CONFLICT,
        ] {
            assert_eq!(Error::from_exit_code(code, "x").exit_code(), code);
        }
        assert_eq!(Error::Exited(7).exit_code(), 7);
        let wrapped = anyhow::Error::from(Error::TimedOut("late".into())).context("waiting");
        assert_eq!(exit_code_of(&wrapped), EXIT_TIMEOUT);
    }
}
