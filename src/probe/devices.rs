//! The optional helper binaries (fuse-overlayfs, slirp4netns) and the character devices
//! they need.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::Check;

fn first_file(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

pub(super) fn fuse_overlayfs() -> Check {
    match first_file(&["/usr/bin/fuse-overlayfs", "/bin/fuse-overlayfs"]) {
        Some(path) => Check::pass("fuse_overlayfs", path.display().to_string()),
        None => Check::fail(
            "fuse_overlayfs",
            "not found in /usr/bin or /bin; it is the fallback when kernel overlayfs does not \
             work in a user namespace",
            "`sudo apt-get install fuse-overlayfs` (Debian/Ubuntu) or `sudo dnf install fuse-overlayfs`",
        ),
    }
}

pub(super) fn slirp4netns() -> Check {
    let Some(path) = first_file(&["/usr/bin/slirp4netns", "/bin/slirp4netns"]) else {
        return Check::fail(
            "slirp4netns",
            "not found in /usr/bin or /bin; needed for network access from a sandbox",
            "`sudo apt-get install slirp4netns` (Debian/Ubuntu) or `sudo dnf install slirp4netns`",
        );
    };
    let version = std::process::Command::new(&path)
        .arg("--version")
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        });
    match version {
        Some(v) if !v.trim().is_empty() => {
            Check::pass("slirp4netns", format!("{} ({})", path.display(), v.trim()))
        }
        _ => Check::pass("slirp4netns", path.display().to_string()),
    }
}

/// A character device the caller must be able to open read-write.
pub(super) fn device(name: &'static str, path: &str, module: &str) -> Check {
    match fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(_) => Check::pass(name, format!("{path} opens read-write")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Check::fail(
            name,
            format!("{path} does not exist"),
            format!("load the module: `sudo modprobe {module}`"),
        ),
        Err(e) => {
            let mode = fs::metadata(path)
                .map(|m| format!(" (mode {:04o}, owner uid {})", m.mode() & 0o7777, m.uid()))
                .unwrap_or_default();
            Check::fail(
                name,
                format!("cannot open {path} read-write: {e}{mode}"),
                format!("`sudo chmod 666 {path}`; distributions normally ship it 0666"),
            )
        }
    }
}
