//! A commit of the repository checked out in a temporary git worktree, with the diff of a dirty run
//! applied on top, and the `ddpm` binary that commit builds.
use crate::track::fingerprint::{fingerprint, BUILD_INPUTS};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs git in `dir`; its standard output, or an error with its standard error.
pub fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .with_context(|| format!("cannot run git {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("git {} (in {}): {}", args.join(" "), dir.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The top folder of the git repository holding `path`.
pub fn repository_of(path: &Path) -> Result<PathBuf> {
    let dir = if path.is_dir() { path.to_path_buf() } else { path.parent().unwrap_or(Path::new(".")).to_path_buf() };
    let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
    let top = git(&dir, &["rev-parse", "--show-toplevel"])
        .with_context(|| format!("{} is not inside a git repository", path.display()))?;
    Ok(PathBuf::from(top.trim()))
}

/// The full hash of a commit-ish.
pub fn resolve_commit(repo: &Path, commit: &str) -> Result<String> {
    let out = git(repo, &["rev-parse", "--verify", "--quiet", &format!("{commit}^{{commit}}")])
        .with_context(|| format!("`{commit}` is not a commit of {}", repo.display()))?;
    Ok(out.trim().to_string())
}

/// A file's content at a commit, None when the commit has no such file.
pub fn file_at(repo: &Path, commit: &str, path: &str) -> Option<Vec<u8>> {
    let out = Command::new("git").arg("-C").arg(repo).args(["show", &format!("{commit}:{path}")]).output().ok()?;
    out.status.success().then_some(out.stdout)
}

/// A worktree of `commit`, removed (with everything in it) when dropped.
pub struct Checkout {
    pub repo: PathBuf,
    pub commit: String,
    /// The worktree's root.
    pub tree: PathBuf,
    /// A diff applied on top of the commit (a dirty run's `code.patch`).
    pub patched: bool,
}

impl Checkout {
    /// Checks `commit` out under `parent/tree`, links the repository's `.venv` and `data` into it,
    /// and applies `patch` when given.
    pub fn create(repo: &Path, commit: &str, parent: &Path, patch: Option<&[u8]>) -> Result<Checkout> {
        let tree = parent.join("tree");
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        git(repo, &["worktree", "add", "--detach", &tree.to_string_lossy(), commit])?;
        let checkout = Checkout { repo: repo.to_path_buf(), commit: commit.to_string(), tree, patched: false };
        for shared in [".venv", "data"] {
            let from = repo.join(shared);
            if from.exists() && !checkout.tree.join(shared).exists() {
                std::os::unix::fs::symlink(&from, checkout.tree.join(shared))
                    .with_context(|| format!("cannot link {} into the worktree", from.display()))?;
            }
        }
        let mut checkout = checkout;
        if let Some(patch) = patch {
            let file = parent.join("code.patch");
            std::fs::write(&file, patch)?;
            git(&checkout.tree, &["apply", "--whitespace=nowarn", &file.to_string_lossy()])
                .context("cannot apply the recorded diff of the dirty working tree")?;
            checkout.patched = true;
        }
        Ok(checkout)
    }

    /// The `ddpm` binary of this checkout: the running one when the checkout's build inputs are
    /// byte-identical to those it was built from, else a release build of the checkout (in
    /// `<repo>/target/reproduce`, so that dependencies are compiled once for all reproductions).
    pub fn binary(&self, say: &mut dyn FnMut(&str)) -> Result<PathBuf> {
        if fingerprint(&self.tree, &BUILD_INPUTS) == env!("DDPM_BUILD_SHA256") {
            say("the commit's code is byte-identical to this binary's: using it");
            return std::env::current_exe().context("cannot locate the running binary");
        }
        let target = self.repo.join("target/reproduce");
        say(&format!("building the commit in {} (cargo build --release)", target.display()));
        let venv = self.repo.join(".venv");
        let path = format!("{}:{}", venv.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        let status = Command::new("cargo")
            .args(["build", "--release", "--locked"])
            .current_dir(&self.tree)
            .env("CARGO_TARGET_DIR", &target)
            .env("LIBTORCH_USE_PYTORCH", "1")
            .env("VIRTUAL_ENV", &venv)
            .env("PATH", path)
            .status()
            .context("cannot run cargo")?;
        if !status.success() {
            bail!("building commit {} failed ({status})", self.commit);
        }
        Ok(target.join("release/ddpm"))
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let _ = git(&self.repo, &["worktree", "remove", "--force", &self.tree.to_string_lossy()]);
        let _ = std::fs::remove_dir_all(&self.tree);
        let _ = git(&self.repo, &["worktree", "prune"]);
    }
}
