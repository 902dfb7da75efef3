//! Where each mount's mount point comes from, decided from the mounts and the host's paths
//! (read, never written). A destination that exists needs nothing. A missing one is made
//! where it lands: on a tmpfs of the sandbox's own (a read-only one turns read-only after
//! its mount points are made), or on an image or directory root (as runc does). On the
//! host's read-only root or in a read-only bind, the directory it lands in gets a skeleton
//! (`plan::Skeleton`), so it is made on a tmpfs and nothing is written to the host. In a
//! writable bind from the host it is refused: it would be made on the host.
//!
//! `sbx run` and `sbx profile check` both plan, so both refuse the same mount points with
//! the same message.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::plan::{Mount, Rootfs, Skeleton};

/// What a mount point beneath a layer would be made in.
#[derive(Debug, Clone, Copy)]
enum Under<'a> {
    /// A host directory seen through the sandbox: the host's root, a bind's source.
    Host { source: &'a Path, readonly: bool },
    /// A directory root: sbx makes its missing mount points in it before it turns
    /// read-only, as runc does, where you may write; elsewhere (a shared root owned by
    /// root) it takes a skeleton.
    DirRoot(&'a Path),
    /// Somewhere sbx makes mount points itself: its own tmpfs mounts, an image's overlay.
    Own,
    /// /proc, the bind of a file, a source still to be created: the mount itself reports
    /// what fails.
    Unknown,
}

/// One mount, as seen from the mounts above it.
struct Layer<'a> {
    at: &'a Path,
    under: Under<'a>,
}

/// The skeletons the mounts need, each placed before the first mount beneath it and
/// parents first; or the mount point that cannot be made, as an error naming it. `late`:
/// what the child mounts after the plan's mounts (/etc/resolv.conf, /etc/hosts,
/// /sys/fs/cgroup).
pub(super) fn skeletons(
    rootfs: &Rootfs,
    mounts: &[Mount],
    late: &[&Path],
) -> Result<Vec<Skeleton>> {
    let root = match rootfs {
        Rootfs::Host => Under::Host {
            source: Path::new("/"),
            readonly: true,
        },
        Rootfs::Dir(dir) => Under::DirRoot(dir),
        Rootfs::Image { .. } => Under::Own,
    };
    // The root and what the child mounts on it before the plan's mounts.
    let mut layers = vec![
        Layer {
            at: Path::new("/"),
            under: root,
        },
        Layer {
            at: Path::new("/proc"),
            under: Under::Unknown,
        },
        Layer {
            at: Path::new("/dev"),
            under: Under::Own,
        },
        Layer {
            at: Path::new("/tmp"),
            under: Under::Own,
        },
    ];
    let mut dirs: Vec<PathBuf> = Vec::new();
    for m in mounts {
        let dst = m.destination();
        if let (Some(cover), false) = (deepest(&layers, dst), source_is_missing(m)) {
            if let Some(at) = skeleton_for(cover, dst)? {
                if !dirs.contains(&at) {
                    dirs.push(at);
                }
            }
        }
        layers.push(Layer {
            at: dst,
            under: layer_of(m),
        });
    }
    for dst in late {
        if let Some(cover) = deepest(&layers, dst) {
            if let Some(at) = skeleton_for(cover, dst)? {
                if !dirs.contains(&at) {
                    dirs.push(at);
                }
            }
        }
    }
    let destinations: Vec<&Path> = mounts
        .iter()
        .map(Mount::destination)
        .chain(late.iter().copied())
        .collect();
    Ok(order(dirs, &destinations, mounts.len()))
}

/// The latest of the deepest layers above `dst`: what it lands on.
fn deepest<'a, 'b>(layers: &'b [Layer<'a>], dst: &Path) -> Option<&'b Layer<'a>> {
    layers
        .iter()
        .filter(|l| dst.starts_with(l.at))
        .max_by_key(|l| l.at.components().count())
}

/// A bind whose source is still to be made (`create`, a protected path): its destination
/// is checked in the Plan made once it exists.
fn source_is_missing(m: &Mount) -> bool {
    matches!(m, Mount::Bind { source, .. } if source.symlink_metadata().is_err())
}

fn layer_of(m: &Mount) -> Under<'_> {
    match m {
        Mount::Bind {
            source,
            readonly,
            source_is_dir: true,
            ..
        } if source.symlink_metadata().is_ok() => Under::Host {
            source,
            readonly: *readonly,
        },
        Mount::Bind { .. } => Under::Unknown,
        Mount::Tmpfs { .. } => Under::Own,
    }
}

/// Where `dst`, landing on `cover`, needs a skeleton (the deepest directory of it that
/// exists), if it needs one.
fn skeleton_for(cover: &Layer, dst: &Path) -> Result<Option<PathBuf>> {
    let (source, readonly) = match cover.under {
        Under::Host { source, readonly } => (source, readonly),
        Under::DirRoot(dir) => (dir, true),
        Under::Own | Under::Unknown => return Ok(None),
    };
    let Ok(rel) = dst.strip_prefix(cover.at) else {
        return Ok(None);
    };
    let Some(existing) = missing_below(source, rel, cover.at, dst)? else {
        return Ok(None);
    };
    if let Under::DirRoot(dir) = cover.under {
        let writable =
            nix::unistd::access(&dir.join(&existing), nix::unistd::AccessFlags::W_OK).is_ok();
        if writable {
            return Ok(None);
        }
    }
    if !readonly {
        bail!(
            "cannot create mount point {}: it would be made on the host, as {} in the \
             writable bind of {}, and sbx writes no mount point to the host; create it \
             there first, or choose a destination that exists",
            dst.display(),
            source.join(rel).display(),
            source.display()
        );
    }
    Ok(Some(cover.at.join(existing)))
}

/// The deepest directory of `rel` that exists below the host directory `source` (relative
/// to it) when the rest is missing, or `None` when the whole path exists (or cannot be looked at: the mount itself says so). A path that
/// would have to be made through a symbolic link, or below a file, is refused.
fn missing_below(source: &Path, rel: &Path, at: &Path, dst: &Path) -> Result<Option<PathBuf>> {
    let parts: Vec<_> = rel.components().collect();
    let mut host = source.to_path_buf();
    let mut existing = PathBuf::new();
    for (i, part) in parts.iter().enumerate() {
        host.push(part);
        let meta = match host.symlink_metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Some(existing)),
            Err(_) => return Ok(None),
        };
        let last = i + 1 == parts.len();
        let inside = at.join(&existing).join(part);
        if !last && meta.file_type().is_symlink() {
            if source.join(rel).exists() {
                return Ok(None);
            }
            let target = std::fs::read_link(&host).unwrap_or_default();
            bail!(
                "cannot create mount point {}: {} is a symbolic link (to {}), and sbx makes \
                 mount points only in the directories a destination names; give the \
                 destination through the directory the link points to",
                dst.display(),
                inside.display(),
                target.display()
            );
        }
        if !last && !meta.is_dir() {
            bail!(
                "cannot create mount point {}: {} is not a directory",
                dst.display(),
                inside.display()
            );
        }
        existing.push(part);
    }
    Ok(None)
}

/// Each skeleton just before the first mount beneath it (`/` before anything; one for the
/// late mounts only, after all of the plan's: `before` is `plan`, their count), parents
/// first: a skeleton then binds back what is mounted in it already.
fn order(dirs: Vec<PathBuf>, destinations: &[&Path], plan: usize) -> Vec<Skeleton> {
    let mut out: Vec<Skeleton> = dirs
        .into_iter()
        .filter_map(|at| {
            if at == Path::new("/") {
                return Some(Skeleton { at, before: None });
            }
            let first = destinations
                .iter()
                .position(|dst| *dst != at && dst.starts_with(&at))?;
            Some(Skeleton {
                at,
                before: Some(first.min(plan)),
            })
        })
        .collect();
    out.sort_by_key(|s| (s.before.map_or(0, |i| i + 1), s.at.components().count()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpfs(dst: &str) -> Mount {
        Mount::Tmpfs {
            destination: PathBuf::from(dst),
            size: None,
            mode: 0o755,
            readonly: false,
            noexec: false,
        }
    }

    fn bind(source: &Path, dst: &str, readonly: bool) -> Mount {
        Mount::Bind {
            source: source.to_path_buf(),
            destination: PathBuf::from(dst),
            readonly,
            noexec: false,
            source_is_dir: true,
        }
    }

    /// A private directory for one test, removed at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("sbx-mp-{name}-{}", std::process::id()));
            std::fs::create_dir_all(dir.join("sub")).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn at(s: &[Skeleton]) -> Vec<(&Path, Option<usize>)> {
        s.iter().map(|s| (s.at.as_path(), s.before)).collect()
    }

    #[test]
    fn existing_destinations_and_own_tmpfs_need_nothing() {
        let mounts = [tmpfs("/usr"), tmpfs("/tmp/new/deep"), tmpfs("/usr/new")];
        let found = skeletons(&Rootfs::Host, &mounts, &[]).unwrap();
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_new_top_level_path_gets_the_roots_skeleton_first() {
        let mounts = [tmpfs("/sbx-no-such-dir"), tmpfs("/sbx-no-such-dir/x")];
        let found = skeletons(&Rootfs::Host, &mounts, &[]).unwrap();
        assert_eq!(at(&found), [(Path::new("/"), None)]);
    }

    #[test]
    fn a_new_path_below_a_host_directory_gets_that_directorys_skeleton() {
        let mounts = [
            tmpfs("/usr/sbx-no-such-dir/deep"),
            tmpfs("/sbx-no-such-dir"),
        ];
        let found = skeletons(&Rootfs::Host, &mounts, &[]).unwrap();
        // Parents first, whatever order the mounts named them in.
        assert_eq!(
            at(&found),
            [(Path::new("/"), None), (Path::new("/usr"), Some(0))]
        );
    }

    #[test]
    fn a_late_mount_point_gets_its_skeleton_after_the_plans_mounts() {
        // /etc/resolv.conf of user-mode networking, on a host that has none.
        let late = [Path::new("/etc/sbx-no-such-file")];
        let found = skeletons(&Rootfs::Host, &[tmpfs("/tmp/x")], &late).unwrap();
        assert_eq!(at(&found), [(Path::new("/etc"), Some(1))]);
        let late = [Path::new("/etc/hosts")];
        assert!(skeletons(&Rootfs::Host, &[], &late).unwrap().is_empty());
    }

    #[test]
    fn a_read_only_bind_gets_a_skeleton_a_writable_one_is_refused() {
        let dir = Scratch::new("bind");
        let ro = [bind(&dir.0, "/tmp/b", true), tmpfs("/tmp/b/sub/new")];
        let found = skeletons(&Rootfs::Host, &ro, &[]).unwrap();
        assert_eq!(at(&found), [(Path::new("/tmp/b/sub"), Some(1))]);
        let rw = [bind(&dir.0, "/tmp/b", false), tmpfs("/tmp/b/sub/new")];
        let err = skeletons(&Rootfs::Host, &rw, &[]).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "cannot create mount point /tmp/b/sub/new: it would be made on the host"
            ) && err.contains(&dir.0.join("sub/new").display().to_string()),
            "{err}"
        );
        // What exists in the writable bind is mounted on as before.
        let rw = [bind(&dir.0, "/tmp/b", false), tmpfs("/tmp/b/sub")];
        assert!(skeletons(&Rootfs::Host, &rw, &[]).unwrap().is_empty());
    }

    #[test]
    fn a_directory_root_you_may_write_makes_its_own_mount_points() {
        let dir = Scratch::new("dir");
        let mounts = [tmpfs("/sbx-no-such-dir"), tmpfs("/sub/new")];
        assert!(skeletons(&Rootfs::Dir(dir.0.clone()), &mounts, &[])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_missing_path_through_a_link_or_below_a_file_is_refused() {
        let dir = Scratch::new("link");
        std::os::unix::fs::symlink("sub", dir.0.join("link")).unwrap();
        std::fs::write(dir.0.join("file"), "").unwrap();
        let mounts = [bind(&dir.0, "/tmp/b", true), tmpfs("/tmp/b/link/new")];
        let err = skeletons(&Rootfs::Host, &mounts, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/tmp/b/link is a symbolic link (to sub)"),
            "{err}"
        );
        // Through a link to something that exists, nothing is made.
        let mounts = [bind(&dir.0, "/tmp/b", true), tmpfs("/tmp/b/link")];
        assert!(skeletons(&Rootfs::Host, &mounts, &[]).unwrap().is_empty());
        let mounts = [bind(&dir.0, "/tmp/b", true), tmpfs("/tmp/b/file/new")];
        let err = skeletons(&Rootfs::Host, &mounts, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/tmp/b/file is not a directory"), "{err}");
    }
}
