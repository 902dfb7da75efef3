//! The root filesystem and the mounts of a Plan: sources resolved on the host and checked,
//! destinations normalized, options parsed. A source a profile asks to create is listed
//! in the setup, not created.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::image::{self, ImagePlan};
use super::{normalize_destination, Overrides, Request};
use crate::plan::{normalize_absolute, parse_mode, HostSetup, Mount, Rootfs, TmpfsSize};
use crate::profile::vars::Vars;
use crate::profile::{ImageRootfs, MountKind, MountOption, MountSpec, Profile, RootfsSpec};

/// What the root will be, as far as the profile's hiding mounts care (decided without
/// touching anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RootKind {
    /// The host's `/`.
    Host,
    /// A directory, as given.
    Dir(PathBuf),
    /// An image under an overlay (its upper layer takes new mount points).
    Image,
}

pub(super) fn root_kind(args: &Overrides, profile: &Profile) -> RootKind {
    let spec = match (&args.image, &args.rootfs) {
        (Some(_), _) => return RootKind::Image,
        (None, Some(dir)) => Some(RootfsSpec::Path(dir.clone())),
        (None, None) => profile.rootfs.clone(),
    };
    match spec {
        None => RootKind::Host,
        Some(RootfsSpec::Path(dir)) if dir == "host" || Path::new(&dir) == Path::new("/") => {
            RootKind::Host
        }
        Some(RootfsSpec::Path(dir)) => RootKind::Dir(PathBuf::from(dir)),
        Some(RootfsSpec::Image(_)) => RootKind::Image,
    }
}

/// Whether a profile's tmpfs at `destination` hides nothing in a directory root: the path
/// is not there and cannot be made (a shared rootfs owned by root), so there is nothing
/// of the host's to hide and nowhere to mount.
fn nothing_to_hide(root: &Path, destination: &Path) -> bool {
    let inside = root.join(destination.strip_prefix("/").unwrap_or(destination));
    if inside.symlink_metadata().is_ok() {
        return false;
    }
    let mut parent = inside.parent();
    while let Some(p) = parent {
        if p.symlink_metadata().is_ok() {
            return nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_err();
        }
        parent = p.parent();
    }
    true
}

/// The root filesystem, and the image behind it if it is one. `mounts` are the run's own
/// (resolved first): a kept upper directory reached through a link planted in one of its
/// writable binds is refused, as a bind source would be. `default_upper`: where the upper
/// layer is kept when none is named (a named sandbox's own directory).
pub(super) fn resolve_rootfs(
    req: &Request,
    profile: &Profile,
    mounts: &[Mount],
    default_upper: Option<PathBuf>,
    setup: &mut HostSetup,
) -> Result<(Rootfs, Option<ImagePlan>)> {
    let (args, cwd) = (req.overrides, Path::new(&req.caller.vars.pwd));
    let spec = match (&args.image, &args.rootfs, &profile.rootfs) {
        (Some(image), _, Some(RootfsSpec::Image(p))) if p.image == *image => {
            Some(RootfsSpec::Image(p.clone()))
        }
        (Some(image), _, _) => Some(RootfsSpec::Image(ImageRootfs {
            image: image.clone(),
            ..Default::default()
        })),
        (None, Some(dir), _) => Some(RootfsSpec::Path(dir.clone())),
        (None, None, spec) => spec.clone(),
    };
    let Some(RootfsSpec::Image(mut image)) = spec else {
        if args.upper.is_some() || args.overlay.is_some() {
            bail!("--upper and --overlay apply to image roots only; add --image NAME");
        }
        let dir = match spec {
            Some(RootfsSpec::Path(dir)) => dir,
            _ => "host".to_string(),
        };
        return Ok((resolve_dir_rootfs(&dir)?, None));
    };
    match (&args.upper, &image.upper) {
        (Some(cli), _) => image.upper = Some(cwd.join(cli).to_string_lossy().into_owned()),
        (None, Some(profile)) if !profile.starts_with('/') => bail!(
            "rootfs.upper: {profile:?} is not an absolute path; profiles name host paths absolutely (use ${{PWD}} or ${{HOME}})"
        ),
        _ => {}
    }
    if let Some(overlay) = &args.overlay {
        image.overlay = Some(overlay.parse().context("--overlay")?);
    }
    if let Some(upper) = &image.upper {
        let given = normalize_absolute(Path::new(upper), "--upper")?;
        check_links(&given, &writable_dirs(mounts), "upper directory")?;
    }
    if image.upper.is_none() {
        image.upper = default_upper.map(|dir| dir.to_string_lossy().into_owned());
    }
    let store = req
        .host
        .store
        .get()
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let plan = image::plan(&image, store, setup)?;
    let rootfs = Rootfs::Image {
        name: plan.image.name.clone(),
        layers: plan.image.layers.clone(),
        upper: plan.upper.clone(),
        overlay: plan.overlay.clone(),
    };
    Ok((rootfs, Some(plan)))
}

fn resolve_dir_rootfs(spec: &str) -> Result<Rootfs> {
    if spec == "host" {
        return Ok(Rootfs::Host);
    }
    let dir = Path::new(&spec);
    let canonical = dir.canonicalize().with_context(|| {
        format!("rootfs directory {spec} does not exist; give an existing directory or \"host\"")
    })?;
    if !canonical.is_dir() {
        bail!("rootfs {spec} is not a directory; give a directory or \"host\"");
    }
    if canonical == Path::new("/") {
        return Ok(Rootfs::Host);
    }
    Ok(Rootfs::Dir(canonical))
}

/// The mounts of the profile and the command line, and warnings about profile binds left
/// out (one that would make your whole home writable).
pub(super) fn resolve_mounts(
    profile: &Profile,
    args: &Overrides,
    vars: &Vars,
    root: &RootKind,
    setup: &mut HostSetup,
) -> Result<(Vec<Mount>, Vec<String>)> {
    // Each bind with the path it was given as, to check the links on that path below.
    let mut resolved: Vec<(Mount, Option<PathBuf>)> = Vec::new();
    let mut warnings = Vec::new();
    let home = Path::new(&vars.home);
    for (i, spec) in profile.mounts.iter().enumerate() {
        let what = format!("mounts[{i}]");
        if let Some((source, readonly)) = holds_home(spec, home) {
            let (access, flag) = if readonly {
                ("read-only", "--ro-bind")
            } else {
                ("read-write", "--bind")
            };
            let hint = if source == home {
                format!(", or pass {flag} {} if you mean it", home.display())
            } else {
                String::new()
            };
            warnings.push(format!(
                "not binding {} {access}: it holds your home directory {}, which stays \
                 hidden; cd into a project directory{hint}",
                source.display(),
                home.display(),
            ));
            continue;
        }
        let Some(m) = resolve_profile_mount(spec, &what, root, setup)? else {
            continue;
        };
        // An optional tmpfs hides a host path where the sandbox would see it: below an
        // earlier tmpfs (the runtime directory under /run/user) it is hidden already.
        let hidden = spec.optional
            && matches!(m, Mount::Tmpfs { .. })
            && resolved.iter().any(|(earlier, _)| {
                matches!(earlier, Mount::Tmpfs { .. })
                    && m.destination().starts_with(earlier.destination())
            });
        if hidden {
            continue;
        }
        let given = spec.source.as_ref().map(PathBuf::from);
        resolved.push((m, given));
    }
    let cwd = Path::new(&vars.pwd);
    for (flag, list, readonly) in [
        ("--bind", &args.bind, false),
        ("--ro-bind", &args.ro_bind, true),
    ] {
        for value in list {
            let (src, dst) = match value.split_once(':') {
                Some((s, d)) => (s, Some(d)),
                None => (value.as_str(), None),
            };
            let what = format!("{flag} {value}");
            let src_abs = normalize_absolute(&cwd.join(src), &what)?;
            let dst = match dst {
                Some(d) => PathBuf::from(d),
                None => src_abs.clone(),
            };
            let m = bind(&src_abs, &dst, (readonly, false), &what)?;
            resolved.push((m, Some(src_abs)));
        }
    }
    check_planted_links(&resolved)?;
    let mut mounts: Vec<Mount> = resolved.into_iter().map(|(m, _)| m).collect();
    for value in &args.tmpfs {
        let destination = normalize_destination(Path::new(value), &format!("--tmpfs {value}"))?;
        mounts.push(Mount::Tmpfs {
            destination,
            size: None,
            mode: 0o755,
            readonly: false,
            noexec: false,
        });
    }
    // Parents before children, whatever order the options came in (as podman does); mounts
    // on the same destination keep their order, so a later one covers an earlier one.
    mounts.sort_by_key(|m| m.destination().components().count());
    Ok((mounts, warnings))
}

/// The source of a profile's bind that is your home or one of its ancestors (the `${PWD}`
/// bind, run from `~` or `/`), and whether the bind is read-only: binding it, even
/// read-only, would expose all of the home (`~/.ssh` and the like).
fn holds_home(spec: &MountSpec, home: &Path) -> Option<(PathBuf, bool)> {
    let readonly = spec.kind == MountKind::RoBind || spec.options.contains(&MountOption::Ro);
    if spec.kind == MountKind::Tmpfs {
        return None;
    }
    let source = PathBuf::from(spec.source.as_ref()?);
    let identity = crate::beneath::Identity::of_path(&source).ok()?;
    let home_exists = home.is_absolute() && home != Path::new("/") && home.is_dir();
    (home_exists && source.is_dir() && crate::beneath::contains(identity, home))
        .then_some((source, readonly))
}

/// The writable directory binds: where an earlier run may have planted links.
fn writable_dirs(mounts: &[Mount]) -> Vec<(crate::beneath::Identity, &Path)> {
    mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Bind {
                source,
                readonly: false,
                source_is_dir: true,
                ..
            } => Some((
                crate::beneath::Identity::of_path(source).ok()?,
                source.as_path(),
            )),
            _ => None,
        })
        .collect()
}

/// A bind source whose path goes through a symbolic link that lies inside a writable bind
/// of this run is refused: an earlier run could have planted it (`ln -s ~ data`, then
/// `--bind ./data`). Links elsewhere on the path (the user's own layout) are followed.
fn check_planted_links(resolved: &[(Mount, Option<PathBuf>)]) -> Result<()> {
    let mounts: Vec<Mount> = resolved.iter().map(|(m, _)| m.clone()).collect();
    let writable = writable_dirs(&mounts);
    for (_, given) in resolved {
        if let Some(given) = given {
            check_links(given, &writable, "bind source")?;
        }
    }
    Ok(())
}

/// Walks the absolute path `given` as the kernel would, and refuses it when a component is
/// a symbolic link inside one of `writable`.
fn check_links(
    given: &Path,
    writable: &[(crate::beneath::Identity, &Path)],
    what: &str,
) -> Result<()> {
    let mut at = PathBuf::from("/");
    for part in given.components().skip(1) {
        let next = at.join(part);
        let is_link = next
            .symlink_metadata()
            .is_ok_and(|meta| meta.file_type().is_symlink());
        if is_link {
            if let Some((_, bind)) = writable
                .iter()
                .find(|(top, _)| crate::beneath::contains(*top, &at))
            {
                bail!(
                    "{what} {}: {} is a symbolic link inside the writable bind {} (an earlier \
                     sandbox run may have planted it); remove it, or name the directory it \
                     points to",
                    given.display(),
                    next.display(),
                    bind.display()
                );
            }
        }
        // `at` stays canonical: only a link needs resolving (one realpath per link, not
        // one per component).
        at = if is_link {
            match next.canonicalize() {
                Ok(c) => c,
                Err(_) => break,
            }
        } else {
            next
        };
    }
    Ok(())
}

fn resolve_profile_mount(
    spec: &MountSpec,
    what: &str,
    root: &RootKind,
    setup: &mut HostSetup,
) -> Result<Option<Mount>> {
    let destination = &spec.destination;
    let noexec = spec.options.contains(&MountOption::Noexec);
    let ro_option = spec.options.contains(&MountOption::Ro);
    match spec.kind {
        MountKind::Bind | MountKind::RoBind => {
            if spec.size.is_some() || spec.mode.is_some() {
                bail!("{what}: `size` and `mode` apply to tmpfs mounts only");
            }
            let Some(source) = &spec.source else {
                bail!("{what}: a bind mount needs a `source`");
            };
            let source = source.as_str();
            if !source.starts_with('/') {
                bail!("{what}.source: {source:?} is not an absolute path; profiles name host paths absolutely (use ${{PWD}} for the current directory)");
            }
            let readonly = spec.kind == MountKind::RoBind || ro_option;
            if spec.create && !Path::new(&source).exists() {
                // `prepare` creates it, then plans again.
                let source = normalize_absolute(Path::new(source), &format!("{what}.source"))?;
                setup.bind_sources.push(source.clone());
                return Ok(Some(Mount::Bind {
                    source,
                    destination: normalize_destination(Path::new(&destination), what)?,
                    readonly,
                    noexec,
                    source_is_dir: true,
                }));
            }
            if spec.optional && !Path::new(&source).exists() {
                return Ok(None);
            }
            bind(
                Path::new(&source),
                Path::new(&destination),
                (readonly, noexec),
                what,
            )
            .map(Some)
        }
        MountKind::Tmpfs => {
            if spec.source.is_some() || spec.create {
                bail!("{what}: a tmpfs has no `source`, so `create` does not apply");
            }
            // Optional: hides something of the host's only where the host has it.
            if spec.optional && !(*root == RootKind::Host && Path::new(&destination).exists()) {
                return Ok(None);
            }
            // In a directory root, hiding a path it does not have is a no-op.
            if let RootKind::Dir(dir) = root {
                if nothing_to_hide(dir, Path::new(destination)) {
                    return Ok(None);
                }
            }
            let size = spec
                .size
                .as_deref()
                .map(|s| TmpfsSize::parse(s).with_context(|| format!("{what}.size")))
                .transpose()?;
            let mode = spec
                .mode
                .as_deref()
                .map(|m| parse_mode(m).with_context(|| format!("{what}.mode")))
                .transpose()?
                .unwrap_or(0o755);
            Ok(Some(Mount::Tmpfs {
                destination: normalize_destination(Path::new(&destination), what)?,
                size,
                mode,
                readonly: ro_option,
                noexec,
            }))
        }
    }
}

fn bind(
    source: &Path,
    destination: &Path,
    (readonly, noexec): (bool, bool),
    what: &str,
) -> Result<Mount> {
    let canonical = source.canonicalize().with_context(|| {
        format!(
            "{what}: bind source {} does not exist; create it or fix the path",
            source.display()
        )
    })?;
    Ok(Mount::Bind {
        source_is_dir: canonical.is_dir(),
        source: canonical,
        destination: normalize_destination(destination, what)?,
        readonly,
        noexec,
    })
}

/// Where the command may write, for Landlock: the writable mounts (a later read-only mount
/// inside one of them stays read-only by itself), /tmp and /dev/shm.
pub(super) fn writable_paths(mounts: &[Mount], writable_root: bool) -> Vec<(PathBuf, bool)> {
    let mut paths = vec![
        (PathBuf::from("/tmp"), true),
        (PathBuf::from("/dev/shm"), true),
    ];
    if writable_root {
        paths.push((PathBuf::from("/"), true));
    }
    for m in mounts {
        match m {
            Mount::Bind {
                destination,
                readonly: false,
                source_is_dir,
                ..
            } => paths.push((destination.clone(), *source_is_dir)),
            Mount::Tmpfs {
                destination,
                readonly: false,
                ..
            } => paths.push((destination.clone(), true)),
            _ => {}
        }
    }
    paths
}
