//! The Plan: everything a sandbox will be, resolved and validated before `clone`.
//!
//! Data flows one way: profile (+ CLI overrides) -> `Plan` -> supervisor and child. Anything
//! that can fail without side effects (variables, paths, ids, the command line) fails here,
//! with exit code 125 and a message that names the setting, before any namespace exists.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cli::RunArgs;
use crate::image::run::ImagePlan;
use crate::profile::load::Loaded;
use crate::profile::vars::Vars;
use crate::profile::{ImageRootfs, MountKind, MountOption, MountSpec, Profile, RootfsSpec};

use crate::supervisor::idmap;

pub mod ids;
pub mod limits;
mod mounts;
pub mod net;
pub mod rootfs;
pub mod security;
#[cfg(test)]
mod tests;

pub use ids::{IdMode, IdPlan, IdRange};
pub use limits::LimitsPlan;
pub use net::NetPlan;
pub use rootfs::{
    Mount, OverlayKind, Rootfs, TmpfsSize, UpperDir, DEFAULT_SHM_SIZE, DEFAULT_TMP_SIZE,
};
pub use security::SecurityPlan;

use mounts::{host_root, resolve_mounts, resolve_rootfs, writable_paths};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The validated, immutable description of one sandbox run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Profile name and where it came from, for `-v`.
    pub profile: String,
    pub profile_origin: String,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// The `PATH` the command is looked up in, inside the sandbox.
    pub search_path: String,
    pub rootfs: Rootfs,
    pub mounts: Vec<Mount>,
    pub workdir: PathBuf,
    pub hostname: Option<String>,
    pub network: NetPlan,
    pub ids: IdPlan,
    /// The uid and gid the command switches to before exec, when the id map puts the
    /// caller at 0 rather than at the command's ids (image roots: see `image::userns`).
    pub run_as: Option<(u32, u32)>,
    /// Held for the run: the image's layers stay in the store while it runs.
    pub _layer_locks: Option<crate::image::run::LayerLocks>,
    pub security: SecurityPlan,
    pub limits: LimitsPlan,
    /// Give the command a pseudo-terminal of its own (stdin is a terminal).
    pub tty: bool,
    pub verbose: bool,
    /// A named sandbox: where its state and control socket live (set by `instance`).
    pub instance: Option<Paths>,
    /// `--status-json`: where to write the sandbox's status.
    pub status_json: Option<PathBuf>,
    /// What the planner left out or changed, for the user to know (printed by `run`).
    pub warnings: Vec<String>,
    /// Sizes of the sandbox's own /tmp and /dev/shm.
    pub tmp_size: TmpfsSize,
    pub shm_size: TmpfsSize,
}

impl Plan {
    /// Whether anyone wants pids and namespace ids reported.
    pub fn reports_status(&self) -> bool {
        self.instance.is_some() || self.status_json.is_some()
    }
}

/// One named sandbox's two directories.
#[derive(Debug, Clone)]
pub struct Paths {
    pub name: String,
    /// Record, log, writable layer.
    pub data: PathBuf,
    /// State and control socket.
    pub runtime: PathBuf,
}

/// Facts about the caller that a Plan is built from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub vars: Vars,
    pub stdin_is_tty: bool,
}

impl Caller {
    pub fn from_process() -> Result<Caller> {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let pwd = std::env::current_dir()
            .context("cannot determine the current directory; cd to an existing directory")?;
        let user = user_name(uid);
        let home = std::env::var("HOME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.dir.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "/".to_string());
        Ok(Caller {
            vars: Vars {
                pwd: pwd.to_string_lossy().into_owned(),
                home,
                user,
                uid,
                gid,
                env: std::env::vars_os()
                    .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                    .collect(),
            },
            stdin_is_tty: nix::unistd::isatty(std::io::stdin()).unwrap_or(false),
        })
    }
}

/// The name of user `uid`: from the password database, else `$USER`, else the number.
pub fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| uid.to_string())
}

/// Builds the Plan from a loaded profile, the CLI overrides and the caller.
pub fn build(loaded: &Loaded, args: &RunArgs, caller: &Caller) -> Result<Plan> {
    let vars = &caller.vars;
    let expanded = vars.expand_profile(&loaded.profile)?;
    let profile = &expanded;

    let (mut mounts, warnings) = resolve_mounts(profile, args, vars, host_root(args, profile))?;
    let (rootfs, image) = resolve_rootfs(args, profile, Path::new(&vars.pwd), &mounts)?;
    let image_config = image
        .as_ref()
        .map(|i| i.image.config.clone())
        .unwrap_or_default();
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
    let protected = crate::protect::mounts(&mounts, &protect, &own_dirs, git)?;
    mounts.extend(protected);
    if !args.env_file.is_empty() {
        bail!("internal: --env-file must be folded into -e before the plan is built");
    }
    let mut env = resolve_env(profile, &image_config.env, &args.env, vars)?;
    if image.is_some() && !env.contains_key("PATH") {
        // An image's shell needs a PATH; rootfs tarballs carry no config to give one.
        env.insert("PATH".to_string(), DEFAULT_PATH.to_string());
    }
    let search_path = env
        .get("PATH")
        .cloned()
        .unwrap_or_else(|| DEFAULT_PATH.to_string());

    let workdir = match (&args.workdir, &profile.workdir) {
        (Some(cli), _) => PathBuf::from(cli),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => PathBuf::from(image_config.workdir.as_deref().unwrap_or("/")),
    };
    let workdir = normalize_absolute(&workdir, "workdir")?;

    let hostname = match (&args.hostname, &profile.hostname) {
        (Some(cli), _) => Some(cli.clone()),
        (None, Some(p)) => Some(p.clone()),
        (None, None) => None,
    };
    if let Some(name) = &hostname {
        validate_hostname(name)?;
    }

    let network = crate::network::plan(profile.network.as_ref().map(|n| n.options()), args)?;

    // An image needs the store's id map, with you at 0: a joined user namespace has it when
    // you are 0 there (a sandbox on an image, or one run with --uid 0).
    if let (Some(_), Some(join)) = (&image, &network.join) {
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
    let (ids, run_as) = match &image {
        None => {
            let (inside_uid, inside_gid) = inside_ids(profile, args, vars, network.join.as_ref())?;
            for (kind, id) in [("uid", inside_uid), ("gid", inside_gid)] {
                let what = format!("{kind} {id} (--{kind}, or the profile's user.{kind})");
                idmap::check_settable(kind, id, &what)?;
            }
            let ids = idmap::plan(&vars.user, vars.uid, vars.gid, inside_uid, inside_gid);
            (ids, None)
        }
        Some(image) => crate::image::run::ids(
            &image.image,
            args.uid.or(profile.user.uid),
            args.gid.or(profile.user.gid),
            vars,
        )?,
    };
    let inside_uid = ids.inside_uid;
    let limits = crate::limits::plan(&profile.limits, args)?;
    let security = crate::security::plan(
        &profile.security,
        args,
        inside_uid,
        &network,
        writable_paths(&mounts, image.is_some()),
    )?;

    Ok(Plan {
        profile: loaded.name.clone(),
        profile_origin: loaded.origin.to_string(),
        argv: to_cstrings(&args.command, "command")?,
        env: env
            .iter()
            .map(|(k, v)| cstring(format!("{k}={v}"), "environment variable"))
            .collect::<Result<_>>()?,
        search_path,
        rootfs,
        mounts,
        workdir,
        hostname,
        network,
        ids,
        run_as,
        _layer_locks: image.as_ref().map(|i| i.image.held.clone()),
        security,
        limits,
        tty: caller.stdin_is_tty,
        verbose: args.verbose,
        instance: None,
        status_json: args
            .status_json
            .as_deref()
            .map(|p| absolute(p, "--status-json"))
            .transpose()?,
        warnings,
        tmp_size: size_setting(args.tmp_size.as_ref(), profile.tmp_size.as_ref(), "tmp")?
            .unwrap_or(DEFAULT_TMP_SIZE),
        shm_size: size_setting(args.shm_size.as_ref(), profile.shm_size.as_ref(), "shm")?
            .unwrap_or(DEFAULT_SHM_SIZE),
    })
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

fn resolve_env(
    profile: &Profile,
    image: &[String],
    cli: &[String],
    vars: &Vars,
) -> Result<BTreeMap<String, String>> {
    // The image's own environment first, beneath everything the profile and CLI say.
    let mut env: BTreeMap<String, String> = image
        .iter()
        .filter_map(|item| item.split_once('='))
        .filter(|(key, _)| validate_env_key(key, "image env").is_ok())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut pass = |key: &str, what: &str| -> Result<()> {
        validate_env_key(key, what)?;
        if let Some(value) = vars.env.get(key).cloned() {
            env.insert(key.to_string(), value);
        }
        Ok(())
    };
    for key in &profile.env.pass {
        pass(key, "env.pass")?;
    }
    for item in cli.iter().filter(|i| !i.contains('=')) {
        pass(item, "-e")?;
    }
    for (key, value) in &profile.env.set {
        validate_env_key(key, "env.set")?;
        env.insert(key.clone(), value.clone());
    }
    for item in cli {
        if let Some((key, value)) = item.split_once('=') {
            validate_env_key(key, "-e")?;
            env.insert(key.to_string(), value.to_string());
        }
    }
    Ok(env)
}

/// The ids inside: asked for, or the caller's own; for a sandbox that joins another,
/// what that one's user namespace makes of the caller (and nothing else may be asked).
fn inside_ids(
    profile: &Profile,
    args: &RunArgs,
    vars: &Vars,
    join: Option<&crate::instance::Join>,
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

fn validate_env_key(key: &str, what: &str) -> Result<()> {
    if key.is_empty() || key.contains(['=', '\0']) {
        bail!("{what}: invalid environment variable name {key:?}");
    }
    Ok(())
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

/// An absolute path with `.` removed; `..` is rejected rather than resolved.
pub fn normalize_absolute(path: &Path, what: &str) -> Result<PathBuf> {
    if !path.is_absolute() {
        bail!("{what}: {} is not an absolute path", path.display());
    }
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                bail!(
                    "{what}: {} contains `..`; give the path without it",
                    path.display()
                )
            }
            Component::Prefix(_) => unreachable!("no path prefixes on Linux"),
        }
    }
    Ok(out)
}

fn normalize_destination(path: &Path, what: &str) -> Result<PathBuf> {
    let dst = normalize_absolute(path, what)?;
    if dst == Path::new("/") {
        bail!("{what}: cannot mount over the sandbox's root; use --rootfs to choose the root");
    }
    Ok(dst)
}

/// "64M", "1G", "4096" -> bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (digits, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: u64 = digits.parse().map_err(|_| {
        anyhow::anyhow!("invalid size {s:?}; use a number with an optional K, M, G or T suffix")
    })?;
    n.checked_mul(mult)
        .ok_or_else(|| anyhow::anyhow!("size {s:?} is too large"))
}

/// "0700" -> 0o700.
pub fn parse_mode(s: &str) -> Result<u32> {
    match u32::from_str_radix(s, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => bail!("invalid mode {s:?}; use octal digits such as \"0755\""),
    }
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

/// Bytes of a path, for building C strings.
pub fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}
