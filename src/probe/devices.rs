//! The optional helper binaries (fuse-overlayfs, slirp4netns) and the character devices
//! they need.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;

use super::Check;

pub(super) fn fuse_overlayfs() -> Check {
    match crate::helpers::find("fuse-overlayfs") {
        Some(path) => Check::pass("fuse_overlayfs", path.display().to_string()),
        None => Check::fail(
            "fuse_overlayfs",
            format!(
                "not found in {}; it is the fallback when kernel overlayfs does not work in a \
                 user namespace",
                crate::helpers::searched()
            ),
            "`sudo apt-get install fuse-overlayfs` (Debian/Ubuntu) or `sudo dnf install fuse-overlayfs`",
        ),
    }
}

pub(super) fn slirp4netns() -> Check {
    let Some(path) = crate::helpers::find("slirp4netns") else {
        return Check::fail(
            "slirp4netns",
            format!(
                "not found in {}; needed for network access from a sandbox",
                crate::helpers::searched()
            ),
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
