//! The root filesystem and the mounts of a Plan: sources resolved on the host and checked,
//! destinations normalized, options parsed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::*;

/// The root filesystem, and the image behind it if it is one.
pub(super) fn resolve_rootfs(
    args: &RunArgs,
    profile: &Profile,
    cwd: &Path,
) -> Result<(Rootfs, Option<ImagePlan>)> {
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
    let plan = crate::image::run::plan(&image)?;
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

pub(super) fn resolve_mounts(profile: &Profile, args: &RunArgs, vars: &Vars) -> Result<Vec<Mount>> {
    let mut mounts = Vec::new();
    for (i, spec) in profile.mounts.iter().enumerate() {
        if let Some(m) = resolve_profile_mount(spec, &format!("mounts[{i}]"))? {
            mounts.push(m);
        }
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
            mounts.push(bind(&src_abs, &dst, (readonly, false), &what)?);
        }
    }
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
    Ok(mounts)
}

fn resolve_profile_mount(spec: &MountSpec, what: &str) -> Result<Option<Mount>> {
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
            if spec.create && !Path::new(&source).exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(source)
                    .with_context(|| format!("{what}: create bind source {source}"))?;
            }
            if spec.optional && !Path::new(&source).exists() {
                return Ok(None);
            }
            let readonly = spec.kind == MountKind::RoBind || ro_option;
            bind(
                Path::new(&source),
                Path::new(&destination),
                (readonly, noexec),
                what,
            )
            .map(Some)
        }
        MountKind::Tmpfs => {
            if spec.source.is_some() || spec.optional || spec.create {
                bail!("{what}: a tmpfs has no `source`, so `optional` and `create` do not apply");
            }
            let size = spec
                .size
                .as_deref()
                .map(|s| parse_size(s).with_context(|| format!("{what}.size")))
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
