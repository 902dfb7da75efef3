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
use crate::image::run::{ImagePlan, OverlayKind};
use crate::limits::LimitsPlan;
use crate::network::NetPlan;
use crate::profile::load::Loaded;
use crate::profile::vars::Vars;
use crate::profile::{ImageRootfs, MountKind, MountOption, MountSpec, Profile, RootfsSpec};
use crate::security::{self, SecurityPlan};
use crate::supervisor::idmap::{self, IdPlan};

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
    pub instance: Option<crate::instance::Paths>,
    /// `--status-json`: where to write the sandbox's status.
    pub status_json: Option<PathBuf>,
}

impl Plan {
    /// Whether anyone wants pids and namespace ids reported.
    pub fn reports_status(&self) -> bool {
        self.instance.is_some() || self.status_json.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rootfs {
    /// The host's `/`, recursively read-only.
    Host,
    /// A directory (canonical host path), read-only.
    Dir(PathBuf),
    /// An image's layers as the lower layers of a writable overlay.
    Image {
        name: String,
        /// Unpacked layers in the store, bottom first.
        layers: Vec<PathBuf>,
        /// Host directory keeping the upper layer between runs; None: a tmpfs in the
        /// sandbox's own mount namespace, discarded at exit.
        upper: Option<PathBuf>,
        overlay: OverlayKind,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    Bind {
        /// Canonical host path.
        source: PathBuf,
        /// Normalized absolute path inside.
        destination: PathBuf,
        readonly: bool,
        noexec: bool,
        source_is_dir: bool,
    },
    Tmpfs {
        destination: PathBuf,
        size: Option<u64>,
        mode: u32,
        readonly: bool,
        noexec: bool,
    },
}

impl Mount {
    pub fn destination(&self) -> &Path {
        match self {
            Mount::Bind { destination, .. } | Mount::Tmpfs { destination, .. } => destination,
        }
    }
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

    let (rootfs, image) = resolve_rootfs(args, profile, Path::new(&vars.pwd))?;
    let image_config = image
        .as_ref()
        .map(|i| i.image.config.clone())
        .unwrap_or_default();
    let mut mounts = resolve_mounts(profile, args, vars)?;
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
    let protected = crate::protect::mounts(&mounts, &protect, &own_dirs)?;
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

    let (ids, run_as) = match &image {
        None => {
            let (inside_uid, inside_gid) = inside_ids(profile, args, vars, network.join.as_ref())?;
            let ids = idmap::plan(&vars.user, vars.uid, vars.gid, inside_uid, inside_gid);
            (ids, None)
        }
        Some(_) if network.join.is_some() => bail!(
            "--net sandbox:NAME and an image root cannot go together yet: the joined \
             sandbox's user namespace has its own id maps, the image needs the store's"
        ),
        Some(image) => crate::image::run::ids(
            &image.image,
            args.uid.or(profile.user.uid),
            args.gid.or(profile.user.gid),
            vars,
        )?,
    };
    let inside_uid = ids.inside_uid;
    let limits = crate::limits::plan(&profile.limits, args)?;
    let security = security::plan(
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
    })
}

/// The root filesystem, and the image behind it if it is one.
fn resolve_rootfs(
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

fn resolve_mounts(profile: &Profile, args: &RunArgs, vars: &Vars) -> Result<Vec<Mount>> {
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
fn writable_paths(mounts: &[Mount], writable_root: bool) -> Vec<(PathBuf, bool)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load::{parse, Origin};

    fn caller(pwd: &str) -> Caller {
        Caller {
            vars: Vars {
                pwd: pwd.into(),
                home: "/root".into(),
                user: "nobody-in-particular".into(),
                uid: 1000,
                gid: 1000,
                env: [
                    ("PATH", "/usr/bin:/bin"),
                    ("HOME", "/root"),
                    ("SECRET", "s3cret"),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            },
            stdin_is_tty: false,
        }
    }

    fn loaded(json: &str) -> Loaded {
        Loaded {
            name: "t".into(),
            profile: parse(json, "t").unwrap(),
            origin: Origin::Builtin,
        }
    }

    fn args(extra: &[&str]) -> RunArgs {
        use clap::Parser;
        let mut argv = vec!["sbx", "run"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::parse_from(argv).command {
            crate::cli::Command::Run(a) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn environment_is_clean_unless_asked() {
        let l = loaded(r#"{"env": {"pass": ["PATH"], "set": {"A": "${HOME}/a"}}}"#);
        let plan = build(
            &l,
            &args(&["-e", "B=2", "-e", "SECRET", "--", "true"]),
            &caller("/tmp"),
        )
        .unwrap();
        let env: Vec<String> = plan
            .env
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            env,
            ["A=/root/a", "B=2", "PATH=/usr/bin:/bin", "SECRET=s3cret"]
        );
        assert_eq!(plan.search_path, "/usr/bin:/bin");
    }

    #[test]
    fn cli_overrides_profile() {
        let l = loaded(
            r#"{"hostname": "prof", "workdir": "/", "network": "host", "user": {"uid": 5}}"#,
        );
        let plan = build(
            &l,
            &args(&[
                "--hostname",
                "cli",
                "-w",
                "/tmp",
                "--net",
                "none",
                "--uid",
                "0",
                "--",
                "x",
            ]),
            &caller("/tmp"),
        )
        .unwrap();
        assert_eq!(plan.hostname.as_deref(), Some("cli"));
        assert_eq!(plan.workdir, PathBuf::from("/tmp"));
        assert_eq!(plan.network.mode, crate::profile::NetworkMode::None);
        assert_eq!(plan.ids.inside_uid, 0);
        assert_eq!(plan.ids.inside_gid, 1000);
    }

    #[test]
    fn bind_sources_are_resolved_and_checked() {
        let l = loaded("{}");
        let plan = build(
            &l,
            &args(&[
                "--bind",
                "/usr:/x/y",
                "--ro-bind",
                "/etc:/x",
                "--bind",
                ".",
                "--",
                "x",
            ]),
            &caller("/tmp"),
        )
        .unwrap();
        let dsts: Vec<&Path> = plan.mounts.iter().map(|m| m.destination()).collect();
        assert_eq!(
            dsts,
            [Path::new("/tmp"), Path::new("/x"), Path::new("/x/y")],
            "parents first"
        );
        assert_eq!(
            plan.mounts[1],
            Mount::Bind {
                source: "/etc".into(),
                destination: "/x".into(),
                readonly: true,
                noexec: false,
                source_is_dir: true
            }
        );

        let err = build(
            &l,
            &args(&["--bind", "/does/not/exist", "--", "x"]),
            &caller("/tmp"),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("bind source /does/not/exist does not exist"),
            "{err:#}"
        );
    }

    #[test]
    fn optional_binds_are_skipped_when_missing() {
        let l = loaded(
            r#"{"mounts": [{"type": "ro-bind", "source": "/does/not/exist", "destination": "/x", "optional": true}]}"#,
        );
        let plan = build(&l, &args(&["--", "x"]), &caller("/tmp")).unwrap();
        assert!(plan.mounts.is_empty());
    }

    #[test]
    fn bad_destinations_are_rejected() {
        let l = loaded("{}");
        for bad in [
            ["--tmpfs", "relative"],
            ["--tmpfs", "/a/../b"],
            ["--tmpfs", "/"],
        ] {
            let mut a = bad.to_vec();
            a.extend(["--", "x"]);
            assert!(build(&l, &args(&a), &caller("/tmp")).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tmpfs_options_are_parsed() {
        let l = loaded(
            r#"{"mounts": [{"type": "tmpfs", "destination": "/t", "size": "64M", "mode": "1777", "options": ["ro"]}]}"#,
        );
        let plan = build(&l, &args(&["--", "x"]), &caller("/tmp")).unwrap();
        assert_eq!(
            plan.mounts[0],
            Mount::Tmpfs {
                destination: "/t".into(),
                size: Some(64 << 20),
                mode: 0o1777,
                readonly: true,
                noexec: false,
            }
        );
        let l = loaded(r#"{"mounts": [{"type": "tmpfs", "destination": "/t", "mode": "9"}]}"#);
        assert!(build(&l, &args(&["--", "x"]), &caller("/tmp")).is_err());
    }

    #[test]
    fn relative_profile_sources_are_rejected() {
        let l = loaded(r#"{"mounts": [{"type": "bind", "source": "build", "destination": "/b"}]}"#);
        let err = build(&l, &args(&["--", "x"]), &caller("/tmp")).unwrap_err();
        assert!(err.to_string().contains("not an absolute path"), "{err:#}");
    }

    #[test]
    fn hostname_and_rootfs_are_validated() {
        let l = loaded("{}");
        assert!(build(
            &l,
            &args(&["--hostname", "bad name", "--", "x"]),
            &caller("/tmp")
        )
        .is_err());
        let err = build(
            &l,
            &args(&["--rootfs", "/nonexistent-root", "--", "x"]),
            &caller("/tmp"),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("rootfs directory /nonexistent-root does not exist"));
        let plan = build(&l, &args(&["--rootfs", "/tmp", "--", "x"]), &caller("/tmp")).unwrap();
        assert_eq!(plan.rootfs, Rootfs::Dir("/tmp".into()));
    }

    #[test]
    fn sizes_and_modes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("2k").unwrap(), 2048);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_mode("0700").unwrap(), 0o700);
        assert!(parse_mode("0800").is_err());
    }

    #[test]
    fn default_profile_builds() {
        let (_, text) = crate::profile::load::BUILTINS[0];
        let l = loaded(text);
        let plan = build(&l, &args(&["--", "true"]), &caller("/tmp")).unwrap();
        assert_eq!(plan.rootfs, Rootfs::Host);
        assert_eq!(plan.workdir, PathBuf::from("/tmp"));
        assert_eq!(plan.hostname.as_deref(), Some("sbx"));
        assert!(matches!(plan.mounts[0], Mount::Tmpfs { mode: 0o700, .. }));
        assert_eq!(plan.mounts[1].destination(), Path::new("/tmp"));
    }

    #[test]
    fn image_options_need_an_image_root() {
        let l = loaded("{}");
        let err = build(
            &l,
            &args(&["--upper", "/tmp/u", "--", "x"]),
            &caller("/tmp"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("apply to image roots only"),
            "{err:#}"
        );
        let l = loaded(r#"{"rootfs": {"image": "img", "upper": "relative/dir"}}"#);
        let err = build(&l, &args(&["--", "x"]), &caller("/tmp")).unwrap_err();
        assert!(err.to_string().contains("rootfs.upper"), "{err:#}");
        let l = loaded(r#"{"rootfs": {"image": "img", "overlay": "kernel"}}"#);
        let err = build(&l, &args(&["--overlay", "zfs", "--", "x"]), &caller("/tmp")).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown overlay \"zfs\""),
            "{err:#}"
        );
    }

    #[test]
    fn rootfs_is_a_string_or_an_image_object() {
        assert!(
            crate::profile::load::parse(r#"{"rootfs": {"image": "a", "uper": "/x"}}"#, "t")
                .is_err()
        );
        let l = loaded(r#"{"rootfs": "/tmp"}"#);
        let plan = build(&l, &args(&["--", "x"]), &caller("/tmp")).unwrap();
        assert_eq!(plan.rootfs, Rootfs::Dir("/tmp".into()));
        assert!(plan.run_as.is_none());
    }
}
