//! The mount API and overlayfs in a user namespace, and /proc/self/mountinfo parsing.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sched::CloneFlags;

use super::child::in_child;
use super::userns::{enter_userns, needs_userns};
use super::{Caller, Check};

pub(super) fn mount_api() -> Check {
    // The same calls sbx makes for the host rootfs: a recursive detached clone of /, made
    // read-only, from inside a new user and mount namespace.
    let verdict = in_child(|| {
        enter_userns(CloneFlags::CLONE_NEWNS)?;
        let flags = crate::sys::OPEN_TREE_CLONE
            | crate::sys::OPEN_TREE_CLOEXEC
            | crate::sys::AT_RECURSIVE as u32;
        let tree = crate::sys::open_tree(libc::AT_FDCWD, c"/", flags)
            .map_err(|e| format!("open_tree(/, OPEN_TREE_CLONE): {e}"))?;
        crate::sys::mount_setattr(tree.as_fd(), crate::sys::MOUNT_ATTR_RDONLY, true)
            .map_err(|e| format!("mount_setattr(MOUNT_ATTR_RDONLY): {e}"))
    });
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kernel = format!("Linux {}", release.trim());
    match verdict {
        Ok(()) => Check::pass(
            "mount_api",
            format!("open_tree and mount_setattr work in a user namespace ({kernel})"),
        ),
        Err(why) => {
            let fix = if why.contains("ENOSYS") {
                "upgrade to Linux 5.12 or newer (open_tree, move_mount, mount_setattr)"
            } else {
                "sbx needs a recursive read-only clone of / in a user namespace; the error \
                 says what refused it (a security module, or an old kernel: upgrade to 5.12+)"
            };
            let detail = format!("{why} ({kernel}); sbx requires the new mount API");
            Check::fail("mount_api", detail, needs_userns(&why).unwrap_or(fix))
        }
    }
}

pub(super) fn overlay_userns(caller: &Caller) -> Check {
    let name = "overlay_userns";
    let fix = "use a kernel with overlayfs in user namespaces (Linux 5.11+, or Ubuntu's patch); \
               sbx can use fuse-overlayfs instead (see fuse_overlayfs)";
    let scratch = match Scratch::create() {
        Ok(scratch) => scratch,
        Err(e) => {
            return Check::fail(
                name,
                format!("cannot create a scratch directory: {e:#}"),
                fix,
            )
        }
    };
    let (uid, gid, dir) = (caller.uid, caller.gid, scratch.path.clone());
    let verdict = in_child(move || {
        enter_userns(CloneFlags::CLONE_NEWNS)?;
        let write = |file: &str, text: String| {
            fs::write(file, &text).map_err(|e| format!("write {text:?} to {file}: {e}"))
        };
        write("/proc/self/setgroups", "deny".to_string())?;
        write("/proc/self/uid_map", format!("0 {uid} 1"))?;
        write("/proc/self/gid_map", format!("0 {gid} 1"))?;
        let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
        mount(None::<&str>, "/", None::<&str>, private, None::<&str>)
            .map_err(|e| format!("make / private: {e}"))?;
        // Relative paths, so no character of the scratch path can break the option string.
        nix::unistd::chdir(&dir).map_err(|e| format!("chdir {}: {e}", dir.display()))?;
        let options = "lowerdir=lower,upperdir=upper,workdir=work,userxattr";
        mount(
            Some("overlay"),
            "merged",
            Some("overlay"),
            MsFlags::empty(),
            Some(options),
        )
        .map_err(|e| format!("mount overlay ({options}): {e}"))
    });
    drop(scratch);
    match verdict {
        Ok(()) => {
            let base = std::env::temp_dir();
            let detail = format!(
                "overlay with userxattr mounts in a user namespace (tried in {})",
                base.display()
            );
            Check::pass(name, detail)
        }
        Err(why) => {
            let fix = needs_userns(&why).unwrap_or(fix);
            Check::fail(name, why, fix)
        }
    }
}

/// A private directory with lower/upper/work/merged for the overlay probe, removed on drop.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn create() -> Result<Scratch> {
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for attempt in 0..16u32 {
            let path = base.join(format!(
                "sbx-probe-{}-{nanos}-{attempt}",
                std::process::id()
            ));
            // mkdir never follows a symlink planted at `path`, and fails if anything is there.
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    let scratch = Scratch { path };
                    for sub in ["lower", "upper", "work", "merged"] {
                        let dir = scratch.path.join(sub);
                        fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
                    }
                    return Ok(scratch);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("mkdir {}", path.display())),
            }
        }
        anyhow::bail!("no free name for a scratch directory in {}", base.display())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.path) {
            eprintln!("sbx: warning: cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Like `remove_dir_all`, but first makes each directory accessible: overlayfs creates its
/// `work/work` with mode 0.
fn remove_tree(path: &Path) -> io::Result<()> {
    if !fs::symlink_metadata(path)?.is_dir() {
        return fs::remove_file(path);
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
    for entry in fs::read_dir(path)? {
        remove_tree(&entry?.path())?;
    }
    fs::remove_dir(path)
}

/// One mount from /proc/self/mountinfo, with octal escapes decoded.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct MountInfo {
    pub(super) root: String,
    pub(super) mount_point: String,
    pub(super) fstype: String,
}

pub(super) fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            if sep < 6 {
                return None;
            }
            Some(MountInfo {
                root: unescape(fields[3]),
                mount_point: unescape(fields[4]),
                fstype: (*fields.get(sep + 1)?).to_string(),
            })
        })
        .collect()
}

/// Decodes the kernel's `\NNN` octal escapes (space, tab, newline, backslash).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) if bytes[i] == b'\\' => {
                let value = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::HYBRID;

    #[test]
    fn parses_mountinfo_with_optional_fields_and_escapes() {
        let text =
            "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 shared:2 - ext3 /dev/root rw\n\
                    garbage line\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(
            mounts,
            [MountInfo {
                root: "/mnt1".into(),
                mount_point: "/mnt two".into(),
                fstype: "ext3".into(),
            }]
        );
        assert_eq!(parse_mountinfo(HYBRID)[3].fstype, "cgroup2");
        assert_eq!(unescape("a\\134b\\011c\\12"), "a\\b\tc\\12");
    }

    #[test]
    fn scratch_directory_is_removed_with_unreadable_subdirectories() {
        let scratch = Scratch::create().expect("scratch");
        let path = scratch.path.clone();
        let locked = path.join("work/work");
        fs::create_dir(&locked).expect("mkdir");
        fs::write(path.join("upper/file"), "x").expect("write");
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod");
        drop(scratch);
        assert!(!path.exists(), "{} left behind", path.display());
    }
}
