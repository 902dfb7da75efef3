//! What `sbx run --image` (or `"rootfs": {"image": ...}`) adds to the Plan: the image's
//! layers, where its upper layer lives, which overlay assembles it, and the image config's
//! env, working directory and user as defaults beneath the profile's own settings.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::ids;
use crate::image::store::{ImageConfig, Store};
use crate::image::ImageName;
use crate::plan::ids::{IdMode, IdPlan};
use crate::plan::rootfs::{OverlayKind, UpperDir};
use crate::plan::HostSetup;
use crate::profile::vars::Vars;
use crate::profile::{ImageRootfs, OverlayMode};

/// An image as a sandbox uses it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub name: String,
    /// Unpacked layers, bottom first.
    pub layers: Vec<PathBuf>,
    pub config: ImageConfig,
}

/// The image root of a Plan, resolved.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    pub image: Resolved,
    pub upper: Option<UpperDir>,
    pub overlay: OverlayKind,
}

/// Resolves an image root: the image must be in the store at `store`, the overlay helper
/// must exist when it is required. A kept upper directory (absolute) that does not exist
/// yet goes to `setup`, for `prepare` to create (mode 0700).
pub fn plan(spec: &ImageRootfs, store: &Path, setup: &mut HostSetup) -> Result<ImagePlan> {
    let Some(image) = resolve(store, &spec.image, spec.pull.as_deref())? else {
        let full = ImageName::parse(&spec.image)?.full();
        // From a registry (as it was named), or from an archive or directory.
        let reference = spec.pull.clone().unwrap_or_else(|| spec.image.clone());
        let pull = format!("`sbx pull {reference}`, or ");
        bail!(
            "image {full} is not in the image store ({}); get it with {pull}`sbx image import {full} ROOTFS.tar` (a rootfs tarball, docker-archive or OCI layout)",
            store.display()
        );
    };
    let upper = match &spec.upper {
        Some(dir) if !Path::new(dir).exists() => {
            setup.upper = Some(PathBuf::from(dir));
            None
        }
        Some(dir) => Some(upper_dir(Path::new(dir))?),
        None => None,
    };
    let fuse = crate::supervisor::idmap::find_helper("fuse-overlayfs");
    let overlay = match spec.overlay.unwrap_or_default() {
        OverlayMode::Kernel => OverlayKind::Kernel,
        OverlayMode::Auto => OverlayKind::KernelElseFuse(fuse),
        OverlayMode::Fuse => match fuse {
            Some(path) => OverlayKind::Fuse(path),
            None => {
                return Err(crate::error::HostFeature::new(
                    "fuse-overlayfs",
                    "--overlay fuse needs fuse-overlayfs, which is not installed; install it \
                     (`sudo apt-get install fuse-overlayfs`) or use --overlay kernel",
                )
                .into())
            }
        },
    };
    Ok(ImagePlan {
        image,
        upper,
        overlay,
    })
}

/// Resolves the upper directory the user named (symlinks in `dir` itself are the user's
/// own choice and followed, once), which exists (`prepare` creates a missing one). It must
/// be a directory of the caller's. What lies below it (`upper`, `work`, `work.fuse`) is checked
/// by the child, beneath a descriptor of this very directory.
pub fn upper_dir(dir: &Path) -> Result<UpperDir> {
    let canonical = dir
        .canonicalize()
        .with_context(|| format!("upper directory {}", dir.display()))?;
    let path = crate::sys::cstr(canonical.as_os_str().as_bytes())?;
    let fd = crate::sys::openat2(
        nix::fcntl::AT_FDCWD,
        &path,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        crate::sys::RESOLVE_NO_SYMLINKS | crate::sys::RESOLVE_NO_MAGICLINKS,
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTDIR) => anyhow::anyhow!(
            "upper {} is not a directory; give a directory for the upper layer",
            dir.display()
        ),
        _ => anyhow::anyhow!("upper directory {}: {e}", dir.display()),
    })?;
    let st =
        nix::sys::stat::fstat(&fd).with_context(|| format!("upper directory {}", dir.display()))?;
    let me = nix::unistd::getuid().as_raw();
    if st.st_uid != me {
        bail!(
            "upper directory {} belongs to uid {}, not to you (uid {me}); give a directory of \
             your own",
            canonical.display(),
            st.st_uid
        );
    }
    Ok(UpperDir {
        path: canonical,
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// Looks up `spec`, then `alias` (the reference a profile says to pull it from), in the
/// store at `root`. Takes no lock on the layers: `prepare` does, for the run.
pub fn resolve(root: &Path, spec: &str, alias: Option<&str>) -> Result<Option<Resolved>> {
    let store = Store {
        root: root.to_path_buf(),
    };
    if !store.root.join("lock").exists() {
        return Ok(None);
    }
    let _lock = store.lock(false)?;
    for candidate in std::iter::once(spec).chain(alias) {
        let full = ImageName::parse(candidate)?.full();
        let Some(record) = store.read_record(&full)? else {
            continue;
        };
        let mut layers = Vec::new();
        for digest in &record.layers {
            let path = store.layer_path(digest)?;
            if !path.is_dir() {
                bail!(
                    "layer {digest} of image {full} is missing from {}; import the image again",
                    store.root.display()
                );
            }
            layers.push(path);
        }
        return Ok(Some(Resolved {
            name: full,
            layers,
            config: record.config,
        }));
    }
    Ok(None)
}

/// Image roots map the caller to uid 0, as the store does, so the image's files show
/// their owners; the command then switches to its own ids: `uid`/`gid` (the CLI's or the
/// profile's), the image config's, else root. Without a subordinate range only the
/// caller's id exists, and the map puts it at the command's ids as elsewhere. An id the
/// sandbox's user namespace does not map is an error, never a silent other identity.
pub fn ids(
    image: &Resolved,
    uid: Option<u32>,
    gid: Option<u32>,
    vars: &Vars,
) -> Result<(IdPlan, Option<(u32, u32)>)> {
    let from_image = uid.is_none();
    let (uid, image_gid) = match uid {
        Some(uid) if gid.is_none() => (uid, primary_gid(image, uid)?),
        Some(uid) => (uid, None),
        None => match user_ids(image)? {
            Some((uid, gid)) => (uid, gid),
            None => (0, Some(0)),
        },
    };
    let gid = gid.or(image_gid).unwrap_or(uid);
    let what = |id: &str| {
        if from_image {
            format!(
                "image {}: its User {:?} names {id}",
                image.name,
                image.config.user.as_deref().unwrap_or_default()
            )
        } else {
            format!("image {}: {id}", image.name)
        }
    };
    let mut ids = crate::image::userns::store_ids();
    if matches!(ids.mode, IdMode::Single { .. }) {
        ids::check_settable("uid", uid, &what(&format!("uid {uid}")))?;
        ids::check_settable("gid", gid, &what(&format!("gid {gid}")))?;
        let ids = ids::plan(&vars.user, vars.uid, vars.gid, uid, gid);
        return Ok((ids, None));
    }
    if let IdMode::Full {
        uid_map, gid_map, ..
    } = &ids.mode
    {
        ids::check_mapped("uid", uid, uid_map, &what(&format!("uid {uid}")))?;
        ids::check_mapped("gid", gid, gid_map, &what(&format!("gid {gid}")))?;
    }
    ids.inside_uid = uid;
    ids.inside_gid = gid;
    let run_as = (uid != 0 || gid != 0).then_some((uid, gid));
    Ok((ids, run_as))
}

/// The image config's `User` as ids: `uid[:gid]`, or names from the image's own
/// /etc/passwd and /etc/group (as the image shows them: see `lookup`).
pub fn user_ids(image: &Resolved) -> Result<Option<(u32, Option<u32>)>> {
    let Some(user) = image.config.user.as_deref() else {
        return Ok(None);
    };
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid = match user_part.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => {
            let passwd = image_file(image, "/etc/passwd", user_part, "--uid and --gid")?;
            let entry = find_entry(&passwd, user_part).with_context(|| {
                format!(
                    "image {}: its user {user_part:?} is not in its /etc/passwd; give --uid",
                    image.name
                )
            })?;
            (
                entry.get(2).and_then(|u| u.parse().ok()).unwrap_or(0),
                entry.get(3).and_then(|g| g.parse().ok()),
            )
        }
    };
    let gid = match group_part {
        None => uid.1,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => Some(gid),
            Err(_) => {
                let group = image_file(image, "/etc/group", g, "--gid")?;
                let entry = find_entry(&group, g).with_context(|| {
                    format!(
                        "image {}: its group {g:?} is not in its /etc/group; give --gid",
                        image.name
                    )
                })?;
                entry.get(2).and_then(|x| x.parse().ok())
            }
        },
    };
    Ok(Some((uid.0, gid)))
}

/// The primary group of `uid` in the image's /etc/passwd.
pub fn primary_gid(image: &Resolved, uid: u32) -> Result<Option<u32>> {
    let passwd = image_file(image, "/etc/passwd", &format!("uid {uid}"), "--gid")?;
    Ok(passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.get(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid))
        .and_then(|f| f.get(3).and_then(|g| g.parse().ok())))
}

/// A file of the image, read beneath its layers (never through a link to the host's
/// files); empty when the image has none.
fn image_file(image: &Resolved, path: &str, looked_for: &str, give: &str) -> Result<String> {
    crate::image::run::read_file(&image.layers, path)
        .map(Option::unwrap_or_default)
        .map_err(|e| {
            anyhow::anyhow!(
                "image {}: cannot look up {looked_for} in its {path}: {e:#}; give {give} as \
                 numbers",
                image.name
            )
        })
}

fn find_entry<'a>(text: &'a str, name: &str) -> Option<Vec<&'a str>> {
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(user: Option<&str>) -> Resolved {
        Resolved {
            name: "t:latest".into(),
            layers: Vec::new(),
            config: ImageConfig {
                user: user.map(str::to_string),
                ..Default::default()
            },
        }
    }

    #[test]
    fn numeric_users() {
        assert_eq!(user_ids(&image(None)).unwrap(), None);
        assert_eq!(
            user_ids(&image(Some("4242:7"))).unwrap(),
            Some((4242, Some(7)))
        );
        assert_eq!(user_ids(&image(Some("5"))).unwrap(), Some((5, None)));
        assert!(user_ids(&image(Some("nobody-here"))).is_err());
    }
}
