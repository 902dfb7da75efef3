//! Private temporary directories.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::*;

/// A unique string for this process and call: for file names and process markers.
pub fn unique(what: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{PREFIX}{what}-{}-{n}-{nanos:x}", std::process::id())
}

/// A private directory owned by the current user (mode 0700), removed when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Under the system temporary directory (normally /tmp).
    pub fn new() -> TempDir {
        TempDir::new_in(&std::env::temp_dir())
    }

    /// Under the caller's home directory (`$HOME`).
    pub fn in_home() -> TempDir {
        TempDir::new_in(&home())
    }

    pub fn new_in(parent: &Path) -> TempDir {
        let name = unique(&sanitize(&test_name()));
        let path = parent.join(name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("create temp dir {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("chmod temp dir {}: {e}", path.display()));
        // Canonical, so paths compare equal to what `pwd` prints inside.
        let path = path.canonicalize().expect("canonicalize temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// The path as a str (the harness only makes UTF-8 names).
    pub fn str(&self) -> &str {
        self.path.to_str().expect("temp dir path is UTF-8")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("warning: cannot remove {}: {e}", self.path.display());
        }
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// A file removed when dropped (for files a test must put outside its temp dir).
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn sanitize(name: &str) -> String {
    let short: String = name
        .rsplit("::")
        .next()
        .unwrap_or(name)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    short.chars().take(40).collect()
}

/// The caller's home directory, as sbx sees it (`$HOME`).
pub fn home() -> PathBuf {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .expect("HOME must be set for the tests");
    PathBuf::from(home).canonicalize().expect("HOME must exist")
}

pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

pub fn gid() -> u32 {
    // SAFETY: getgid has no preconditions and cannot fail.
    unsafe { libc::getgid() }
}

/// The current user's name, from the password database.
pub fn user_name() -> String {
    nix::unistd::User::from_uid(uid().into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid().to_string())
}
