//! Protected paths: what a build step must not change even inside a writable bind, because
//! it would run or be trusted later outside the sandbox.
//!
//! - sbx's own directories: profiles (firejail #7132: a sandbox that edits its profile
//!   loosens its next run), and the records of named sandboxes and the image store (a
//!   sandbox that edits its record loosens its next `sbx start`);
//! - the `.git` of a repository at the root of a writable bind: read-only as a whole by
//!   default; with `git: "writable"`, everything git runs or trusts in it (hooks, config,
//!   config.worktree, commondir, info, objects/info, modules, worktrees);
//! - whatever the profile's `security.protect` or `--protect` names.
//!
//! Each is bound read-only over itself, and every directory between the writable bind and
//! it is bound over itself too, which makes it a mount point: it cannot be renamed away and
//! replaced by a look-alike. A missing one must be created on the host first (a directory
//! when the entry ends in `/`, an empty file otherwise), because a path that does not exist
//! cannot be covered by a mount (firejail #1011): the planner lists it in the Plan's
//! `HostSetup`, and `prepare` creates it (`create`) before planning again.
//!
//! Everything below a writable bind was written by an earlier run, so nothing here follows
//! a symbolic link: paths are opened beneath the bind's directory with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS` and created with `mkdirat`/`O_EXCL`, and a link where a protected
//! path should be is an error naming it. A protection never turns a link into a bind, and
//! never creates anything outside the bind.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::beneath::{self, Identity};
use crate::plan::{Mount, ProtectedPath};
use crate::profile::GitMode;

/// What git reads from a `.git` directory that can make it run a command or trust other
/// files, kept read-only when the rest of `.git` is writable. Directories end in `/`.
const GIT_TRUSTED: &[&str] = &[
    "hooks/",
    "config",
    "config.worktree",
    "commondir",
    "info/",
    "objects/info/",
    "modules/",
    "worktrees/",
];

/// What to protect, relative to the writable bind it lies in.
struct Entry {
    rel: PathBuf,
    is_dir: bool,
    /// Create it on the host when missing (false: skip when missing).
    create: bool,
}

/// The extra mounts that protect `entries` (profile `protect` plus `--protect`), the
/// repository's `.git` and sbx's own directories inside the writable binds of `mounts`,
/// and the protected paths missing on the host, which must be created first. Writes nothing.
pub fn mounts(
    mounts: &[Mount],
    entries: &[String],
    own_dirs: &[PathBuf],
    git: GitMode,
) -> Result<(Vec<Mount>, Vec<ProtectedPath>)> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    let mut pinned = BTreeSet::new();
    for m in mounts {
        let Mount::Bind {
            source,
            destination,
            readonly: false,
            source_is_dir: true,
            ..
        } = m
        else {
            continue;
        };
        let top = open_bind(source)?;
        let mut wanted = Vec::new();
        let identity = Identity::of(top.as_fd())?;
        for dir in own_dirs {
            if let Some(rel) = beneath::relative_below(identity, dir) {
                wanted.push(Entry {
                    rel,
                    is_dir: true,
                    create: true,
                });
            }
        }
        wanted.extend(git_entries(&top, source, git)?);
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
            let found = protect(&top, source, destination, &entry, &mut pinned, &mut out)?;
            missing.extend(found);
        }
    }
    Ok((out, missing))
}

/// The bind's own directory, opened without following a link planted since the planner
/// resolved it.
pub fn open_bind(source: &Path) -> Result<OwnedFd> {
    beneath::reopen_canonical(source, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| {
        if beneath::is_link_error(&e) {
            anyhow::anyhow!(
                "bind source {} changed into a symbolic link while sbx was starting; run again",
                source.display()
            )
        } else {
            anyhow::anyhow!("open bind source {}: {e}", source.display())
        }
    })
}

/// What to protect of a repository at the root of the bind: `.git` as a whole (read-only
/// mode, or a `.git` file, which names the real git directory), or what git trusts in it.
fn git_entries(top: &OwnedFd, source: &Path, git: GitMode) -> Result<Vec<Entry>> {
    let kind = match beneath::kind_at(top.as_fd(), Path::new(".git")) {
        Ok(kind) => kind,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
        Err(e) => bail!("inspect {}/.git: {e}", source.display()),
    };
    let whole = |is_dir| {
        vec![Entry {
            rel: ".git".into(),
            is_dir,
            create: false,
        }]
    };
    Ok(match kind {
        libc::S_IFLNK => bail!(
            "{}/.git is a symbolic link, which sbx will not bind (an earlier sandbox run may \
             have planted it); remove it, or replace it with the directory it points to",
            source.display()
        ),
        // A worktree's or submodule's `.git` file: what it says decides where git looks.
        libc::S_IFREG => whole(false),
        libc::S_IFDIR if git == GitMode::ReadOnly => whole(true),
        libc::S_IFDIR => GIT_TRUSTED
            .iter()
            .map(|name| Entry {
                rel: Path::new(".git").join(name.trim_end_matches('/')),
                is_dir: name.ends_with('/'),
                // Missing ones are made so nothing can be planted there; but not an empty
                // `commondir`, which git refuses (SECURITY.md: the cost of "writable").
                create: *name != "commondir",
            })
            .collect(),
        _ => Vec::new(),
    })
}

fn check_relative(rel: &Path, what: &str) -> Result<()> {
    if rel.as_os_str().is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        bail!("protect {what:?}: give a path without `..`, inside a writable bind");
    }
    Ok(())
}

fn protect(
    top: &OwnedFd,
    source: &Path,
    destination: &Path,
    entry: &Entry,
    pinned: &mut BTreeSet<PathBuf>,
    out: &mut Vec<Mount>,
) -> Result<Option<ProtectedPath>> {
    let mut missing = None;
    let host = source.join(&entry.rel);
    let is_dir = match beneath::open(top.as_fd(), &entry.rel, libc::O_PATH) {
        Ok(fd) => nix::sys::stat::fstat(fd.as_fd())
            .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .with_context(|| format!("inspect {}", host.display()))?,
        Err(e) if beneath::is_link_error(&e) => bail!(
            "cannot protect {}: a symbolic link lies on its path (an earlier sandbox run may \
             have planted it), and a mount cannot pin a link; remove the link, or replace it \
             with the real file or directory",
            host.display()
        ),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !entry.create => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            missing = Some(ProtectedPath {
                bind: source.to_path_buf(),
                rel: entry.rel.clone(),
                is_dir: entry.is_dir,
            });
            entry.is_dir
        }
        Err(e) => return Err(e).with_context(|| format!("open {}", host.display())),
    };
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
            source_is_dir: !last || is_dir,
        });
    }
    Ok(missing)
}

/// Creates a protected path the planner found missing, beneath its bind's directory and
/// following no link (`prepare` calls this; the planner only lists the paths). One that
/// appeared meanwhile is left as it is: the next plan inspects it as any other.
pub fn create(missing: &ProtectedPath) -> Result<()> {
    let top = open_bind(&missing.bind)?;
    let host = missing.bind.join(&missing.rel);
    let made = if missing.is_dir {
        beneath::create_dirs(top.as_fd(), &missing.rel, 0o700).map(drop)
    } else {
        beneath::create_file(top.as_fd(), &missing.rel, 0o600)
    };
    match made {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) if beneath::is_link_error(&e) => bail!(
            "cannot create {} to protect it: a symbolic link lies on its path (an earlier \
             sandbox run may have planted it); remove the link",
            host.display()
        ),
        Err(e) => bail!("create {} so that it can be protected: {e}", host.display()),
        Ok(()) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As `prepare` runs it: plan, create what is missing, plan again.
    fn mounts(
        binds: &[Mount],
        entries: &[String],
        own_dirs: &[PathBuf],
        git: GitMode,
    ) -> Result<Vec<Mount>> {
        for _ in 0..3 {
            let (out, missing) = super::mounts(binds, entries, own_dirs, git)?;
            if missing.is_empty() {
                return Ok(out);
            }
            missing.iter().try_for_each(create)?;
        }
        bail!("protected paths still missing after creating them")
    }

    fn rw(src: &Path, dst: &str) -> Mount {
        Mount::Bind {
            source: src.canonicalize().unwrap(),
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
        dir.canonicalize().unwrap()
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
    fn git_is_read_only_as_a_whole() {
        let dir = tmp();
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        std::fs::write(dir.join(".git/config"), "").unwrap();
        let ms = mounts(&[rw(&dir, "/w")], &[], &[], GitMode::ReadOnly).unwrap();
        assert_eq!(summary(&ms), [("/w/.git".into(), true)]);
        assert!(!dir.join(".git/hooks").exists(), "nothing is created");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn writable_git_pins_what_git_trusts() {
        let dir = tmp();
        std::fs::create_dir_all(dir.join(".git/objects")).unwrap();
        std::fs::write(dir.join(".git/config"), "").unwrap();
        let ms = mounts(&[rw(&dir, "/w")], &[], &[], GitMode::Writable).unwrap();
        assert_eq!(
            summary(&ms),
            [
                ("/w/.git".into(), false),
                ("/w/.git/hooks".into(), true),
                ("/w/.git/config".into(), true),
                ("/w/.git/config.worktree".into(), true),
                ("/w/.git/info".into(), true),
                ("/w/.git/objects".into(), false),
                ("/w/.git/objects/info".into(), true),
                ("/w/.git/modules".into(), true),
                ("/w/.git/worktrees".into(), true),
            ]
        );
        assert!(dir.join(".git/hooks").is_dir() && dir.join(".git/objects/info").is_dir());
        assert!(
            !dir.join(".git/commondir").exists(),
            "an empty commondir breaks git"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_git_file_is_read_only() {
        let dir = tmp();
        std::fs::write(dir.join(".git"), "gitdir: /elsewhere\n").unwrap();
        for git in [GitMode::ReadOnly, GitMode::Writable] {
            let ms = mounts(&[rw(&dir, "/w")], &[], &[], git).unwrap();
            assert_eq!(summary(&ms), [("/w/.git".into(), true)]);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_planted_git_link_is_refused_and_nothing_is_created() {
        let dir = tmp();
        let outside = dir.join("outside");
        std::fs::create_dir_all(dir.join("proj")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("proj/.git")).unwrap();
        for git in [GitMode::ReadOnly, GitMode::Writable] {
            let err = mounts(&[rw(&dir.join("proj"), "/w")], &[], &[], git)
                .unwrap_err()
                .to_string();
            assert!(err.contains(".git is a symbolic link"), "{err}");
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
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
            GitMode::ReadOnly,
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
    fn entries_through_links_are_refused_and_nothing_is_created() {
        let dir = tmp();
        let outside = dir.join("outside");
        std::fs::create_dir_all(dir.join("proj")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("proj/secrets")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("proj/link")).unwrap();
        let proj = rw(&dir.join("proj"), "/w");
        assert!(mounts(
            std::slice::from_ref(&proj),
            &["../x".into()],
            &[],
            GitMode::ReadOnly
        )
        .is_err());
        for entry in ["secrets/token", "secrets/", "link"] {
            let err = mounts(
                std::slice::from_ref(&proj),
                &[entry.into()],
                &[],
                GitMode::ReadOnly,
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("symbolic link"), "{entry}: {err}");
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn own_dirs_are_found_by_identity() {
        let dir = tmp();
        std::fs::create_dir_all(dir.join("real/.config")).unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("home")).unwrap();
        let own = [dir.join("home/.config/sbx/profiles")];
        let ms = mounts(&[rw(&dir.join("real"), "/w")], &[], &own, GitMode::ReadOnly).unwrap();
        assert_eq!(
            summary(&ms),
            [
                ("/w/.config".into(), false),
                ("/w/.config/sbx".into(), false),
                ("/w/.config/sbx/profiles".into(), true)
            ]
        );
        assert!(dir.join("real/.config/sbx/profiles").is_dir());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
