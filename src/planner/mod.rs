//! The planner: a profile, the overrides and read-only facts about the caller and the host
//! become a `Plan`. It writes nothing (no directory, lock, cgroup file or protected path):
//! what the host lacks goes into `Plan::setup` for `prepare` to make. `sbx profile check`,
//! `sbx exec` and `sbx inspect` build Plans too, and change nothing by it.
//!
//! Anything that can fail without side effects (variables, paths, ids, the command line)
//! fails here, with the sbx-error exit code (`exit::SBX_ERROR`) and a message that names
//! the setting, before any namespace exists.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::plan::ids::IdPlan;
use crate::plan::net::{Join, NetPlan};
use crate::plan::{
    normalize_absolute, HostSetup, LimitsPlan, Mount, Paths, Plan, Rootfs, TmpfsSize,
    DEFAULT_SHM_SIZE, DEFAULT_TMP_SIZE,
};
use crate::profile::load::Loaded;
use crate::profile::vars::Vars;
use crate::profile::Profile;

mod env;
pub mod facts;
pub mod ids;
pub mod image;
pub mod limits;
mod mountpoints;
mod mounts;
pub mod network;
mod overrides;
pub mod security;
#[cfg(test)]
mod tests;

pub use facts::{Caller, Fact, HostFacts};
pub use overrides::Overrides;

use image::ImagePlan;
use mounts::{resolve_mounts, resolve_rootfs, root_kind, writable_paths};

/// Everything a Plan is built from.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub loaded: &'a Loaded,
    pub overrides: &'a Overrides,
    pub caller: &'a Caller,
    pub host: &'a HostFacts,
    /// A named sandbox's directories: its state and control socket, and the writable layer
    /// of an image root that names no upper directory of its own.
    pub instance: Option<&'a Paths>,
}

/// Where a named sandbox on an image keeps its writable layer, beside its record, so
/// `start` finds what the last run installed; `rm` deletes it.
pub const LAYER: &str = "layer";

/// The root, the mounts (protections included) and the image behind the root.
struct Files {
    rootfs: Rootfs,
    mounts: Vec<Mount>,
    image: Option<ImagePlan>,
    warnings: Vec<String>,
}

/// Builds the Plan. Reads the profile's paths, the image store and the cgroup tree; writes
/// nothing.
pub fn build(req: &Request) -> Result<Plan> {
    let (args, vars) = (req.overrides, &req.caller.vars);
    let expanded = vars.expand_profile(&req.loaded.profile)?;
    let profile = &expanded;
    let mut setup = HostSetup::default();
    let files = files(req, profile, &mut setup)?;
    let image_config = files
        .image
        .as_ref()
        .map(|i| i.image.config.clone())
        .unwrap_or_default();
    let image_env = files.image.as_ref().map(|_| image_config.env.as_slice());
    let env = env::resolve(profile, image_env, &args.env, vars)?;
    let (env, search_path) = env::with_path(env, files.image.is_some());
    let workdir = match (&args.workdir, &profile.workdir) {
        (Some(cli), _) => PathBuf::from(cli),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => PathBuf::from(image_config.workdir.as_deref().unwrap_or("/")),
    };
    let workdir = normalize_absolute(&workdir, "workdir")?;
    let hostname = args.hostname.clone().or_else(|| profile.hostname.clone());
    if let Some(name) = &hostname {
        validate_hostname(name)?;
    }
    let network = network::plan(
        profile.network.as_ref().map(|n| n.options()),
        args,
        req.host.join.as_ref(),
    )?;
    let (ids, run_as) = plan_ids(profile, args, vars, &network, files.image.as_ref())?;
    let limits = limits::plan(&profile.limits, args, req.host, &mut setup)?;
    // Once every mount is known: where a mount point is missing on something read-only,
    // and where one cannot be made at all.
    let skeletons = mountpoints::skeletons(
        &files.rootfs,
        &files.mounts,
        &late_mounts(&network, &limits),
    )?;
    let security = security::plan(
        &profile.security,
        args,
        ids.inside_uid,
        &network,
        writable_paths(&files.mounts, files.image.is_some()),
    )?;
    Ok(Plan {
        profile: req.loaded.name.clone(),
        profile_origin: req.loaded.origin.to_string(),
        argv: to_cstrings(&args.command, "command")?,
        env: env
            .iter()
            .map(|(k, v)| cstring(format!("{k}={v}"), "environment variable"))
            .collect::<Result<_>>()?,
        search_path,
        rootfs: files.rootfs,
        mounts: files.mounts,
        skeletons,
        workdir,
        hostname,
        network,
        ids,
        userns: ids::userns_mode(
            profile.user.userns,
            vars.env.get("SBX_USERNS").map(String::as_str),
        )?,
        run_as,
        security,
        limits,
        tty: req.caller.stdin_is_tty,
        verbose: args.verbose,
        instance: req.instance.cloned(),
        status_json: args
            .status_json
            .as_deref()
            .map(|p| absolute(p, "--status-json"))
            .transpose()?,
        warnings: files.warnings,
        tmp_size: size_setting(args.tmp_size.as_ref(), profile.tmp_size.as_ref(), "tmp")?
            .unwrap_or(DEFAULT_TMP_SIZE),
        shm_size: size_setting(args.shm_size.as_ref(), profile.shm_size.as_ref(), "shm")?
            .unwrap_or(DEFAULT_SHM_SIZE),
        setup,
    })
}

/// The mounts of the profile and the overrides, the root, and what protects sbx's own
/// directories, `.git` and the protected paths inside the writable binds.
fn files(req: &Request, profile: &Profile, setup: &mut HostSetup) -> Result<Files> {
    let (args, vars) = (req.overrides, &req.caller.vars);
    let root = root_kind(args, profile);
    let (mut mounts, warnings) = resolve_mounts(profile, args, vars, &root, setup)?;
    let default_upper = req.instance.map(|paths| paths.data.join(LAYER));
    let (rootfs, image) = resolve_rootfs(req, profile, &mounts, default_upper, setup)?;
    // sbx's own directories: its profiles, and the records, state and images that `start`
    // and `exec` trust later.
    let mut own_dirs: Vec<PathBuf> = crate::profile::load::search_dirs()
        .into_iter()
        .map(|(dir, _)| dir)
        .collect();
    own_dirs.extend(state_dirs(vars));
    let protect: Vec<String> = profile
        .security
        .protect
        .iter()
        .chain(&args.protect)
        .cloned()
        .collect();
    let git = match &args.git {
        Some(mode) => mode.parse().context("--git")?,
        None => profile.security.git.unwrap_or_default(),
    };
    // A bind source still to be created holds nothing yet: it is protected once it exists.
    let existing: Vec<Mount> = mounts
        .iter()
        .filter(|m| !matches!(m, Mount::Bind { source, .. } if setup.bind_sources.contains(source)))
        .cloned()
        .collect();
    let (protected, missing) = crate::protect::mounts(&existing, &protect, &own_dirs, git)?;
    setup.protected = missing;
    mounts.extend(protected);
    Ok(Files {
        rootfs,
        mounts,
        image,
        warnings,
    })
}

/// What the child mounts after the plan's mounts: the generated /etc/resolv.conf and
/// /etc/hosts of user-mode networking, the sandbox's own cgroup tree.
fn late_mounts(network: &NetPlan, limits: &LimitsPlan) -> Vec<&'static Path> {
    let mut late = Vec::new();
    if network.user_mode_nat() {
        late.extend([Path::new("/etc/resolv.conf"), Path::new("/etc/hosts")]);
    }
    if limits.site.is_some() {
        late.push(Path::new("/sys/fs/cgroup"));
    }
    late
}

/// The id map, and the ids the command switches to (image roots).
fn plan_ids(
    profile: &Profile,
    args: &Overrides,
    vars: &Vars,
    network: &NetPlan,
    image: Option<&ImagePlan>,
) -> Result<(IdPlan, Option<(u32, u32)>)> {
    let Some(image) = image else {
        let (inside_uid, inside_gid) = inside_ids(profile, args, vars, network.join.as_ref())?;
        for (kind, id) in [("uid", inside_uid), ("gid", inside_gid)] {
            let what = format!("{kind} {id} (--{kind}, or the profile's user.{kind})");
            ids::check_settable(kind, id, &what)?;
        }
        let ids = ids::plan(&vars.user, vars.uid, vars.gid, inside_uid, inside_gid);
        return Ok((ids, None));
    };
    // An image needs the store's id map, with you at 0: a joined user namespace has it when
    // you are 0 there (a sandbox on an image, or one run with --uid 0).
    if let Some(join) = &network.join {
        if (join.uid, join.gid) != (0, 0) {
            bail!(
                "--net sandbox:{name}: an image root needs a user namespace where you are \
                 uid 0, and in {name}'s you are uid {} and gid {}; start {name} on an image \
                 or with --uid 0",
                join.uid,
                join.gid,
                name = join.name
            );
        }
    }
    image::ids(
        &image.image,
        args.uid.or(profile.user.uid),
        args.gid.or(profile.user.gid),
        vars,
    )
}

/// `--NAME-size` over the profile's `NAME_size`.
fn size_setting(
    cli: Option<&String>,
    profile: Option<&String>,
    name: &str,
) -> Result<Option<TmpfsSize>> {
    match (cli, profile) {
        (Some(s), _) => TmpfsSize::parse(s)
            .with_context(|| format!("--{name}-size"))
            .map(Some),
        (None, Some(s)) => TmpfsSize::parse(s)
            .with_context(|| format!("{name}_size"))
            .map(Some),
        (None, None) => Ok(None),
    }
}

/// The ids inside: asked for, or the caller's own; for a sandbox that joins another,
/// what that one's user namespace makes of the caller (and nothing else may be asked).
fn inside_ids(
    profile: &Profile,
    args: &Overrides,
    vars: &Vars,
    join: Option<&Join>,
) -> Result<(u32, u32)> {
    let asked = (args.uid.or(profile.user.uid), args.gid.or(profile.user.gid));
    let Some(join) = join else {
        return Ok((asked.0.unwrap_or(vars.uid), asked.1.unwrap_or(vars.gid)));
    };
    if asked.0.is_some_and(|u| u != join.uid) || asked.1.is_some_and(|g| g != join.gid) {
        bail!(
            "--net sandbox:{}: a sandbox that joins another shares its user namespace, \
             where you are uid {} and gid {}; drop --uid/--gid (or the profile's user)",
            join.name,
            join.uid,
            join.gid
        );
    }
    Ok((join.uid, join.gid))
}

/// Where sbx keeps state for the caller: `$XDG_DATA_HOME/sbx` (images, named sandboxes) and
/// `$XDG_RUNTIME_DIR/sbx`, from the caller's environment as recorded.
fn state_dirs(vars: &Vars) -> Vec<PathBuf> {
    let var = |name: &str| {
        vars.env
            .get(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let data = var("XDG_DATA_HOME").unwrap_or_else(|| Path::new(&vars.home).join(".local/share"));
    let mut dirs = vec![data.join("sbx")];
    dirs.extend(var("XDG_RUNTIME_DIR").map(|r| r.join("sbx")));
    dirs
}

/// `path` made absolute against the current directory (the file need not exist yet).
fn absolute(path: &Path, what: &str) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("{what} {}", path.display()))
}

fn validate_hostname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !ok {
        bail!("invalid hostname {name:?}: use at most 64 letters, digits, '-' and '.'");
    }
    Ok(())
}

fn normalize_destination(path: &Path, what: &str) -> Result<PathBuf> {
    let dst = normalize_absolute(path, what)?;
    if dst == Path::new("/") {
        bail!("{what}: cannot mount over the sandbox's root; use --rootfs to choose the root");
    }
    Ok(dst)
}

fn cstring(s: String, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| anyhow::anyhow!("{what} contains a NUL byte"))
}

fn to_cstrings(items: &[String], what: &str) -> Result<Vec<CString>> {
    if items.is_empty() || items[0].is_empty() {
        bail!("no {what} given: put the command after `--`, as in `sbx run -- /bin/true`");
    }
    items
        .iter()
        .map(|s| {
            CString::new(s.as_bytes()).map_err(|_| anyhow::anyhow!("{what} contains a NUL byte"))
        })
        .collect()
}
