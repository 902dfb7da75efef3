//! Reading a file of an image on the host (its /etc/passwd and /etc/group), as the sandbox
//! would see it: through the image's layers, topmost first, with whiteouts and opaque
//! directories honoured, and through the image's own symlinks resolved inside the image
//! (an absolute target or `..` never leaves its root). Every step is an `*at` call on a
//! layer's directory that follows no symlink of the host's; only a regular file of at most
//! `MAX_SIZE` bytes is read, opened non-blocking, so a FIFO or a device cannot hang or
//! flood sbx.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode};

use crate::sys;

/// The largest image file sbx reads on the host.
pub const MAX_SIZE: u64 = 1 << 20;
/// Symlinks followed in one lookup, as the kernel's own limit.
const MAX_LINKS: usize = 40;

const BENEATH: u64 = sys::RESOLVE_BENEATH
    | sys::RESOLVE_NO_SYMLINKS
    | sys::RESOLVE_NO_MAGICLINKS
    | sys::RESOLVE_NO_XDEV;

/// One directory of the merged image: its directory in each layer that contributes,
/// topmost first.
struct Dir(Vec<OwnedFd>);

enum Entry {
    Missing,
    Dir(Dir),
    Symlink(OsString),
    /// Anything else, in the layer that provides it: (that layer's directory, mode bits).
    Other(OwnedFd, u32),
}

/// The contents of `path` (absolute, inside the image) in the image whose unpacked layers
/// are `layers` (bottom first); None when the image has no such file.
pub fn read(layers: &[PathBuf], path: &str) -> Result<Option<String>> {
    let Some((dir, name, mode)) = resolve(layers, path)? else {
        return Ok(None);
    };
    if mode & libc::S_IFMT != libc::S_IFREG {
        bail!("{path} is {}, not a regular file", kind(mode));
    }
    let fd = sys::openat2(
        dir.as_fd(),
        &sys::cstr(name.as_bytes())?,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
        0,
        BENEATH,
    )
    .with_context(|| format!("open {path}"))?;
    let st = nix::sys::stat::fstat(&fd).with_context(|| format!("stat {path}"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        bail!("{path} is {}, not a regular file", kind(st.st_mode));
    }
    let too_big = || anyhow::anyhow!("{path} is larger than {} KiB", MAX_SIZE >> 10);
    if u64::try_from(st.st_size).unwrap_or(u64::MAX) > MAX_SIZE {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_SIZE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("read {path}"))?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(too_big());
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

fn kind(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        libc::S_IFLNK => "a symlink",
        _ => "something else",
    }
}

/// Walks `path` through the merged layers; the last component's layer directory, name and
/// mode, or None when some component does not exist (or is not a directory).
fn resolve(layers: &[PathBuf], path: &str) -> Result<Option<(OwnedFd, OsString, u32)>> {
    let Some(root) = root(layers)? else {
        return Ok(None);
    };
    let mut stack = vec![root];
    let mut todo: VecDeque<OsString> = components(Path::new(path));
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let Some(current) = stack.last() else {
            bail!("internal error: lost the image's root while resolving {path}");
        };
        let last = todo.is_empty();
        match lookup(current, &name).with_context(|| format!("look up {path}"))? {
            Entry::Missing => return Ok(None),
            Entry::Dir(dir) => {
                if last {
                    bail!("{path} is a directory, not a regular file");
                }
                stack.push(dir);
            }
            Entry::Symlink(target) => {
                links += 1;
                if links > MAX_LINKS {
                    bail!("{path}: too many levels of symbolic links in the image");
                }
                if Path::new(&target).is_absolute() {
                    stack.truncate(1);
                }
                for part in components(Path::new(&target)).into_iter().rev() {
                    todo.push_front(part);
                }
            }
            Entry::Other(dir, mode) => {
                if !last {
                    return Ok(None);
                }
                return Ok(Some((dir, name, mode)));
            }
        }
    }
    bail!("{path} is a directory, not a regular file")
}

/// `path`'s names and `..`s, without `/` and `.`.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// The layers' top directories, topmost first, down to the first opaque one.
fn root(layers: &[PathBuf]) -> Result<Option<Dir>> {
    let mut fds = Vec::new();
    for layer in layers.iter().rev() {
        let fd = nix::fcntl::open(
            layer,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("open layer {}", layer.display()))?;
        let opaque = is_opaque(fd.as_fd())?;
        fds.push(fd);
        if opaque {
            break;
        }
    }
    Ok((!fds.is_empty()).then_some(Dir(fds)))
}

/// `name` in the merged directory `dir`, as overlayfs would show it.
fn lookup(dir: &Dir, name: &OsStr) -> Result<Entry> {
    let mut merged = Vec::new();
    for fd in &dir.0 {
        let st = match fstatat(fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        let mode = st.st_mode & libc::S_IFMT;
        if mode == libc::S_IFCHR && st.st_rdev == 0 {
            // A whiteout: nothing of this name below.
            break;
        }
        if mode == libc::S_IFDIR {
            let sub = sys::openat2(
                fd.as_fd(),
                &sys::cstr(name.as_bytes())?,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
                BENEATH,
            )?;
            let opaque = is_opaque(sub.as_fd())?;
            merged.push(sub);
            if opaque {
                break;
            }
            continue;
        }
        if !merged.is_empty() {
            // A file below a directory of that name is hidden by the directory.
            break;
        }
        if mode == libc::S_IFLNK {
            let target = nix::fcntl::readlinkat(fd, name)?;
            return Ok(Entry::Symlink(target));
        }
        return Ok(Entry::Other(fd.try_clone()?, st.st_mode));
    }
    Ok(if merged.is_empty() {
        Entry::Missing
    } else {
        Entry::Dir(Dir(merged))
    })
}

/// Whether a layer's directory hides the layers below it (the import marks it so).
fn is_opaque(dir: BorrowedFd) -> Result<bool> {
    Ok(sys::has_xattr(dir, c"user.overlay.opaque")?
        || sys::has_xattr(dir, c"user.fuseoverlayfs.opaque")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    struct Layers(PathBuf);

    impl Layers {
        fn new(name: &str, count: usize) -> Layers {
            let dir = std::env::temp_dir().join(format!(
                "sbx-lookup-{name}-{}-{:?}",
                std::process::id(),
                std::time::SystemTime::now()
            ));
            for i in 0..count {
                fs::create_dir_all(dir.join(i.to_string()).join("etc")).unwrap();
            }
            Layers(dir)
        }
        fn at(&self, layer: usize) -> PathBuf {
            self.0.join(layer.to_string())
        }
        fn all(&self) -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            v.sort();
            v
        }
    }

    impl Drop for Layers {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_topmost_layer_wins_and_links_stay_inside() {
        let l = Layers::new("top", 2);
        fs::write(l.at(0).join("etc/passwd"), "low\n").unwrap();
        fs::create_dir_all(l.at(0).join("usr/lib")).unwrap();
        fs::write(l.at(0).join("usr/lib/passwd"), "from usr\n").unwrap();
        assert_eq!(read(&l.all(), "/etc/passwd").unwrap().unwrap(), "low\n");
        // A relative link in the upper layer to a file of the lower one.
        symlink("../usr/lib/passwd", l.at(1).join("etc/passwd")).unwrap();
        assert_eq!(
            read(&l.all(), "/etc/passwd").unwrap().unwrap(),
            "from usr\n"
        );
        // An absolute link, and `..` above the root, both stay in the image.
        fs::remove_file(l.at(1).join("etc/passwd")).unwrap();
        symlink("/../../../usr/lib/passwd", l.at(1).join("etc/passwd")).unwrap();
        assert_eq!(
            read(&l.all(), "/etc/passwd").unwrap().unwrap(),
            "from usr\n"
        );
    }

    #[test]
    fn links_out_loops_fifos_and_big_files_are_refused() {
        let l = Layers::new("bad", 1);
        let passwd = l.at(0).join("etc/passwd");
        // The host's own file: resolved in the image, where it is this very link.
        symlink("/etc/passwd", &passwd).unwrap();
        let err = read(&l.all(), "/etc/passwd").unwrap_err();
        assert!(format!("{err:#}").contains("too many levels"), "{err:#}");
        fs::remove_file(&passwd).unwrap();
        symlink("/dev/zero", &passwd).unwrap();
        assert_eq!(read(&l.all(), "/etc/passwd").unwrap(), None);
        fs::remove_file(&passwd).unwrap();
        nix::unistd::mkfifo(&passwd, Mode::from_bits_truncate(0o644)).unwrap();
        let err = read(&l.all(), "/etc/passwd").unwrap_err();
        assert!(format!("{err:#}").contains("FIFO"), "{err:#}");
        fs::remove_file(&passwd).unwrap();
        fs::write(&passwd, vec![b'x'; MAX_SIZE as usize + 1]).unwrap();
        let err = read(&l.all(), "/etc/passwd").unwrap_err();
        assert!(format!("{err:#}").contains("larger than"), "{err:#}");
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_what_lies_below() {
        let l = Layers::new("wh", 2);
        fs::write(l.at(0).join("etc/passwd"), "low\n").unwrap();
        let whiteout = l.at(1).join("etc/passwd");
        match nix::sys::stat::mknod(
            &whiteout,
            nix::sys::stat::SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o644),
            0,
        ) {
            Ok(()) => assert_eq!(read(&l.all(), "/etc/passwd").unwrap(), None),
            Err(e) => eprintln!("SKIP whiteout part: mknod 0/0: {e}"),
        }
        let _ = fs::remove_file(&whiteout);
        let etc = fs::File::open(l.at(1).join("etc")).unwrap();
        match sys::set_xattr(etc.as_fd(), c"user.overlay.opaque", b"y") {
            Ok(()) => assert_eq!(read(&l.all(), "/etc/passwd").unwrap(), None),
            Err(e) => eprintln!("SKIP opaque part: user xattrs: {e}"),
        }
    }
}
