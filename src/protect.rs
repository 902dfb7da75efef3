//! Protected paths: what a build step must not change even inside a writable bind, because
//! it would run or be trusted later outside the sandbox.
//!
//! - sbx's own directories: profiles (firejail #7132: a sandbox that edits its profile
//!   loosens its next run), and the records of named sandboxes and the image store (a
//!   sandbox that edits its record loosens its next `sbx start`);
//! - `.git/hooks` and `.git/config` of a repository at the root of a writable bind (a hook
//!   or a `core.fsmonitor` command runs on the next `git status` outside);
//! - whatever the profile's `security.protect` or `--protect` names.
//!
//! Each is bound read-only over itself, and every directory between the writable bind and
//! it is bound over itself too, which makes it a mount point: it cannot be renamed away and
//! replaced by a look-alike. A missing one is created on the host first (a directory when
//! the entry ends in `/`, an empty file otherwise), because a path that does not exist
//! cannot be covered by a mount (firejail #1011).

use std::collections::BTreeSet;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::plan::Mount;

/// What to protect, relative to the writable bind it lies in.
struct Entry {
    rel: PathBuf,
    is_dir: bool,
    /// Create it on the host when missing (false: skip when missing).
    create: bool,
}

/// The extra mounts that protect `entries` (profile `protect` plus `--protect`) and the
/// built-in set inside the writable binds of `mounts`.
pub fn mounts(mounts: &[Mount], entries: &[String], own_dirs: &[PathBuf]) -> Result<Vec<Mount>> {
    let mut out = Vec::new();
    let mut pinned = BTreeSet::new();
    for m in mounts {
        let Mount::Bind {
            source,
            destination,
            readonly: false,
            ..
        } = m
        else {
            continue;
        };
        let mut wanted = Vec::new();
        for dir in own_dirs {
            if let Ok(rel) = dir.strip_prefix(source) {
                wanted.push(Entry {
                    rel: rel.to_path_buf(),
                    is_dir: true,
                    create: true,
                });
            }
        }
        if source.join(".git").is_dir() {
            wanted.push(Entry {
                rel: ".git/hooks".into(),
                is_dir: true,
                create: true,
            });
            wanted.push(Entry {
                rel: ".git/config".into(),
                is_dir: false,
                create: false,
            });
        }
        for e in entries {
            let rel = match e.strip_prefix('/') {
                // Absolute: only where it lies in this bind.
                Some(_) => match Path::new(e).strip_prefix(destination) {
                    Ok(rel) => rel.to_path_buf(),
                    Err(_) => continue,
                },
                None => PathBuf::from(e),
            };
            check_relative(&rel, e)?;
            wanted.push(Entry {
                rel,
                is_dir: e.ends_with('/'),
                create: true,
            });
        }
        for entry in wanted {
            protect(source, destination, &entry, &mut pinned, &mut out)?;
        }
    }
    Ok(out)
}

fn check_relative(rel: &Path, what: &str) -> Result<()> {
    if rel.as_os_str().is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        bail!("protect {what:?}: give a path without `..`, inside a writable bind");
    }
    Ok(())
}

fn protect(
    source: &Path,
    destination: &Path,
    entry: &Entry,
    pinned: &mut BTreeSet<PathBuf>,
    out: &mut Vec<Mount>,
) -> Result<()> {
    let host = source.join(&entry.rel);
    match host.symlink_metadata() {
        Ok(meta) if meta.file_type().is_symlink() => bail!(
            "cannot protect {}: it is a symbolic link, which a mount cannot pin; replace it \
             with the real file or directory",
            host.display()
        ),
        Ok(_) => {}
        Err(_) if !entry.create => return Ok(()),
        Err(_) => create(&host, entry.is_dir)?,
    }
    let parts: Vec<_> = entry.rel.components().collect();
    let (mut h, mut inside) = (source.to_path_buf(), destination.to_path_buf());
    for (i, part) in parts.iter().enumerate() {
        h.push(part);
        inside.push(part);
        let last = i + 1 == parts.len();
        if !last && !pinned.insert(inside.clone()) {
            continue;
        }
        out.push(Mount::Bind {
            source: h.clone(),
            destination: inside.clone(),
            readonly: last,
            noexec: false,
            source_is_dir: !last || h.is_dir(),
        });
    }
    Ok(())
}

fn create(host: &Path, is_dir: bool) -> Result<()> {
    let made = if is_dir {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(host)
    } else {
        if let Some(parent) = host.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(host)
            .map(drop)
    };
    made.with_context(|| format!("create {} so that it can be protected", host.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(src: &Path, dst: &str) -> Mount {
        Mount::Bind {
            source: src.to_path_buf(),
            destination: dst.into(),
            readonly: false,
            noexec: false,
            source_is_dir: true,
        }
    }

    fn tmp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sbx-protect-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn summary(ms: &[Mount]) -> Vec<(String, bool)> {
        ms.iter()
            .map(|m| match m {
                Mount::Bind {
                    destination,
                    readonly,
                    ..
                } => (destination.display().to_string(), *readonly),
                Mount::Tmpfs { destination, .. } => (destination.display().to_string(), false),
            })
            .collect()
    }

    #[test]
    fn git_hooks_and_config_are_pinned_once() {
        let dir = tmp();
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        std::fs::write(dir.join(".git/config"), "").unwrap();
        let ms = mounts(&[rw(&dir, "/w")], &[], &[]).unwrap();
        assert_eq!(
            summary(&ms),
            [
                ("/w/.git".into(), false),
                ("/w/.git/hooks".into(), true),
                ("/w/.git/config".into(), true)
            ]
        );
        assert!(
            dir.join(".git/hooks").is_dir(),
            "a missing hooks directory is created"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn entries_are_created_and_pinned() {
        let dir = tmp();
        let ms = mounts(
            &[rw(&dir, "/w")],
            &[
                "sub/secret".into(),
                "keys/".into(),
                "/w/abs".into(),
                "/elsewhere".into(),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            summary(&ms),
            [
                ("/w/sub".into(), false),
                ("/w/sub/secret".into(), true),
                ("/w/keys".into(), true),
                ("/w/abs".into(), true)
            ]
        );
        assert!(dir.join("sub/secret").is_file() && dir.join("keys").is_dir());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_entries_are_rejected() {
        let dir = tmp();
        assert!(mounts(&[rw(&dir, "/w")], &["../x".into()], &[]).is_err());
        std::os::unix::fs::symlink("/etc", dir.join("link")).unwrap();
        let err = mounts(&[rw(&dir, "/w")], &["link".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("symbolic link"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
