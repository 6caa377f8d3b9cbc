//! Git worktrees for workers (`rein worker start --worktree REPO`): one per worker, made,
//! inspected and removed with git itself.
//!
//! A worker's worktree lives at `worktrees/ID` in the data dir, on its own branch (`rein/ID`
//! unless `--branch` names another), from `--base` (default: the repository's HEAD). Removing
//! it refuses while it holds work that exists nowhere else: uncommitted changes, or commits
//! since the base that no remote-tracking branch contains.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A worker's worktree, as recorded in its worker record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worktree {
    /// The repository it belongs to (its top-level directory).
    pub repo: PathBuf,
    /// The worktree's directory.
    pub path: PathBuf,
    pub branch: String,
    /// The commit the branch started from.
    pub base: String,
    /// Whether rein created the branch (and so may delete it with the worktree).
    pub created_branch: bool,
    /// The repository's common git directory (objects, refs): the worker must write there
    /// to commit.
    pub git_dir: PathBuf,
}

/// What `--worktree REPO [--branch B] [--base REF]` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorktreeRequest {
    pub repo: PathBuf,
    pub branch: Option<String>,
    pub base: Option<String>,
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|error| {
            Error::invalid(format!(
                "cannot run git ({error}); install git to use --worktree"
            ))
        })?;
    if !output.status.success() {
        return Err(Error::invalid(format!(
            "git -C {} {} failed: {}",
            dir.display(),
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn absolute(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

/// Checks a request against the repository without changing anything; returns the
/// repository's top level, its common git dir, the branch name and the base commit.
pub fn plan(id: &str, request: &WorktreeRequest) -> Result<(PathBuf, PathBuf, String, String)> {
    let repo = request.repo.canonicalize().map_err(|error| {
        Error::invalid(format!(
            "--worktree {}: {error}; name a git repository",
            request.repo.display()
        ))
    })?;
    let top = git(&repo, &["rev-parse", "--show-toplevel"]).map_err(|_| {
        Error::invalid(format!(
            "--worktree {}: not a git repository (git rev-parse failed); name a repository's directory",
            repo.display()
        ))
    })?;
    let top = PathBuf::from(top);
    let git_dir = absolute(&top, &git(&top, &["rev-parse", "--git-common-dir"])?);
    let branch = request
        .branch
        .clone()
        .unwrap_or_else(|| format!("rein/{id}"));
    git(&top, &["check-ref-format", "--branch", &branch])
        .map_err(|_| Error::invalid(format!("--branch {branch:?} is not a valid branch name")))?;
    let base_ref = request.base.clone().unwrap_or_else(|| "HEAD".to_owned());
    let base = git(
        &top,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{base_ref}^{{commit}}"),
        ],
    )
    .map_err(|_| {
        Error::invalid(format!(
            "--base {base_ref:?} names no commit in {}",
            top.display()
        ))
    })?;
    Ok((top, git_dir, branch, base))
}

/// Makes the worktree at `path`: a new branch from the base, or an existing branch checked
/// out there.
pub fn create(id: &str, request: &WorktreeRequest, path: &Path) -> Result<Worktree> {
    let (repo, git_dir, branch, base) = plan(id, request)?;
    if path.exists() {
        return Err(Error::Conflict(format!(
            "{} already exists; `rein worker rm {id}` removes an old worktree first",
            path.display()
        )));
    }
    if let Some(parent) = path.parent() {
        crate::store::ensure_dir(parent)?;
    }
    let exists = git(
        &repo,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ],
    )
    .is_ok();
    let path_text = path.to_string_lossy().into_owned();
    if exists {
        git(&repo, &["worktree", "add", &path_text, &branch])?;
    } else {
        git(
            &repo,
            &["worktree", "add", "-b", &branch, &path_text, &base],
        )?;
    }
    Ok(Worktree {
        repo,
        path: path.to_owned(),
        branch,
        base,
        created_branch: !exists,
        git_dir,
    })
}

/// Work in a worktree that exists nowhere else.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unsaved {
    /// `git status --porcelain` lines.
    pub uncommitted: Vec<String>,
    /// Commits since the base that no remote-tracking branch has (`git log --oneline`).
    pub unpushed: Vec<String>,
}

impl Unsaved {
    pub fn is_empty(&self) -> bool {
        self.uncommitted.is_empty() && self.unpushed.is_empty()
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.uncommitted.is_empty() {
            parts.push(format!(
                "{} uncommitted change(s) ({})",
                self.uncommitted.len(),
                self.uncommitted
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        if !self.unpushed.is_empty() {
            parts.push(format!(
                "{} unpushed commit(s) ({})",
                self.unpushed.len(),
                self.unpushed
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        parts.join(" and ")
    }
}

/// What would be lost with the worktree.
pub fn unsaved(worktree: &Worktree) -> Result<Unsaved> {
    if !worktree.path.exists() {
        return Ok(Unsaved::default());
    }
    let status = git(&worktree.path, &["status", "--porcelain"])?;
    let log = git(
        &worktree.repo,
        &[
            "log",
            "--oneline",
            &format!("refs/heads/{}", worktree.branch),
            "--not",
            &worktree.base,
            "--remotes",
        ],
    )
    .unwrap_or_default();
    Ok(Unsaved {
        uncommitted: status.lines().map(str::to_owned).collect(),
        unpushed: log.lines().map(str::to_owned).collect(),
    })
}

/// Removes the worktree, and its branch if rein made it. The caller checks [`unsaved`]
/// first; `force` also discards uncommitted changes.
pub fn remove(worktree: &Worktree, force: bool) -> Result<()> {
    let path = worktree.path.to_string_lossy().into_owned();
    if worktree.path.exists() {
        let mut args = vec!["worktree", "remove"];
        if force {
            args.push("--force");
        }
        args.push(&path);
        git(&worktree.repo, &args)?;
    } else {
        let _ = git(&worktree.repo, &["worktree", "prune"]);
    }
    if worktree.created_branch {
        // The caller has checked that nothing would be lost (or was told to force), so the
        // branch goes even if git does not see it merged into the repository's HEAD.
        git(&worktree.repo, &["branch", "-D", &worktree.branch])?;
    }
    Ok(())
}

/// The branch checked out in a worktree now (it may have been switched by the agent).
pub fn current_branch(path: &Path) -> Option<String> {
    git(path, &["rev-parse", "--abbrev-ref", "HEAD"]).ok()
}
