//! Named sandboxes: where they are recorded, and what state each is in.
//!
//! Two places per sandbox, as podman keeps them:
//! - `$XDG_DATA_HOME/sbx/sandboxes/NAME/` (default `~/.local/share/sbx/...`): the record
//!   of how it was created (`record.json`), its log, and its writable layer. These survive
//!   a reboot, so `sbx start` works after one.
//! - `$XDG_RUNTIME_DIR/sbx/NAME/` (or `.../sbx/run/NAME/` under the data dir when the
//!   variable is unset): what it is doing now (`state.json`, the control socket). Gone at
//!   reboot, and a state whose processes are gone reads as exited, never as running.
//!
//! Both directories are 0700. Every write is a write to a temporary name and a rename.
//! Changes of state (create, start, stop, rm) happen under one lock per user.

pub mod cmd;
pub mod control;
pub mod enter;
pub mod launch;
pub mod show;
pub mod state;
mod termsafe;

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};

pub use crate::plan::net::Join;
pub use crate::plan::Paths;
use crate::planner::{HostFacts, Overrides};

/// The longest name we accept; the control socket's path must stay short.
const MAX_NAME: usize = 64;

/// A sandbox name: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 64 bytes.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        bail!(
            "invalid sandbox name {name:?}: use letters, digits, `_`, `.` and `-`, starting \
             with a letter or digit, at most {MAX_NAME} characters"
        );
    }
    Ok(())
}

/// The host facts a sandbox is planned from, with the running sandbox that
/// `--net sandbox:NAME` names: its state and id maps (read only) decide the new sandbox's
/// ids, so the lookup comes before planning, here where named sandboxes are known.
pub fn host_facts(overrides: &Overrides) -> Result<HostFacts> {
    let mut host = HostFacts::read();
    if let Some(name) = overrides.joins() {
        host.join = Some(Join::resolve(name).context("--net sandbox:NAME")?);
    }
    Ok(host)
}

impl Join {
    pub fn resolve(name: &str) -> Result<Join> {
        let dirs = Dirs::from_env()?;
        let (paths, _) = cmd::find(&dirs, name)?;
        let state = cmd::load_state(&paths);
        let Some(tracking) = state.as_ref().and_then(state::State::running) else {
            bail!("sandbox {name} is not running; start it first with `sbx start {name}`");
        };
        match tracking.network.as_str() {
            "host" => bail!(
                "sandbox {name} uses the host's network, which is not a namespace to share; \
                 use --net host"
            ),
            "" => bail!("sandbox {name} was started by an older sbx; restart it"),
            _ => {}
        }
        let target = tracking
            .command
            .ok_or_else(|| anyhow::anyhow!("sandbox {name} has no command process to join"))?;
        let recorded = |ns: &str| {
            state
                .as_ref()
                .and_then(|s| s.namespaces.get(ns).copied())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "sandbox {name} has no record of its {ns} namespace; restart it with \
                         `sbx stop {name}; sbx start {name}`"
                    )
                })
        };
        let (user_ns, net_ns) = (recorded("user")?, recorded("net")?);
        let inside = |file: &str, outside: u32| -> Result<u32> {
            let path = format!("/proc/{}/{file}", target.pid);
            let map = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
            map_inside(&map, outside).ok_or_else(|| {
                anyhow::anyhow!("sandbox {name} does not map your id {outside} ({path})")
            })
        };
        // Early, for a clear error before anything is built (and before its id maps are
        // read); `supervisor` checks again where it counts, once it has entered them.
        check_namespaces(name, &target.pid.to_string(), user_ns, net_ns)?;
        let join = Join {
            name: name.to_string(),
            target,
            nat: tracking.network == "slirp4netns",
            uid: inside("uid_map", nix::unistd::getuid().as_raw())?,
            gid: inside("gid_map", nix::unistd::getgid().as_raw())?,
            user_ns,
            net_ns,
        };
        if !target.alive() {
            bail!("sandbox {name} has just ended");
        }
        Ok(join)
    }

    /// The user and network namespaces of `/proc/PROC` must be the ones recorded at start.
    pub fn check_namespaces(&self, proc: &str) -> Result<()> {
        check_namespaces(&self.name, proc, self.user_ns, self.net_ns)
    }
}

fn check_namespaces(name: &str, proc: &str, user_ns: u64, net_ns: u64) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    for (ns, expected) in [("user", user_ns), ("net", net_ns)] {
        let path = format!("/proc/{proc}/ns/{ns}");
        let here = fs::metadata(&path).with_context(|| format!("--net sandbox:{name}: {path}"))?;
        if here.ino() != expected {
            bail!(
                "sandbox {name}: its command has moved from the sandbox's {ns} namespace into \
                 a nested one, which --net sandbox:{name} will not join; restart it with \
                 `sbx stop {name}; sbx start {name}`"
            );
        }
    }
    Ok(())
}

/// The id inside that `outside` maps to, from a uid_map or gid_map.
fn map_inside(map: &str, outside: u32) -> Option<u32> {
    map.lines().find_map(|line| {
        let mut f = line.split_whitespace().map(|n| n.parse::<u64>().ok());
        let (inside, start, count) = (f.next()??, f.next()??, f.next()??);
        let outside = u64::from(outside);
        (start <= outside && outside < start + count).then(|| (inside + outside - start) as u32)
    })
}

/// The two directory trees that named sandboxes live in.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Persistent: one directory per sandbox, holding its record, log and writable layer.
    pub data: PathBuf,
    /// Volatile: one directory per running (or lately run) sandbox.
    pub runtime: PathBuf,
}

impl Dirs {
    /// Beside the image store (`$XDG_DATA_HOME/sbx`), and in `$XDG_RUNTIME_DIR/sbx`.
    pub fn from_env() -> Result<Dirs> {
        Ok(Dirs {
            data: crate::image::store::Store::location()?.join("sandboxes"),
            runtime: crate::image::store::Store::runtime_location()?,
        })
    }

    pub fn paths(&self, name: &str) -> Paths {
        Paths {
            name: name.to_string(),
            data: self.data.join(name),
            runtime: self.runtime.join(name),
        }
    }

    /// Every recorded sandbox name, sorted.
    pub fn names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = match fs::read_dir(&self.data) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(e).with_context(|| format!("read {}", self.data.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("read {}", self.data.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if validate_name(&name).is_ok() && entry.path().join(RECORD).exists() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// The per-user lock that serialises create, start, stop and rm.
    pub fn lock(&self) -> Result<Flock<File>> {
        make_private_dir(&self.data)?;
        let path = self.data.join(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("lock {}", path.display()))
    }
}

pub const RECORD: &str = "record.json";
pub const STATE: &str = "state.json";
pub const LOG: &str = "log";

/// Creates `dir` and its missing parents; `dir` itself gets mode 0700.
pub fn make_private_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("create {}", dir.display())),
    }
}

/// Writes `bytes` to `path` atomically: a fresh temporary file in the same directory, then
/// rename (see `beneath::write_atomic`: no link is ever written through).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("write {}: no file name", path.display()))?;
    File::open(dir)
        .and_then(|dir| crate::beneath::write_atomic(dir.as_fd(), name, bytes))
        .with_context(|| format!("write {}", path.display()))
}

pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).context("encode JSON")?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "db", "dev-shell.2", "X_1"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", ".a", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn id_maps() {
        let map = "         0       1000          1\n         1     100000      65536\n";
        assert_eq!(map_inside(map, 1000), Some(0));
        assert_eq!(map_inside(map, 100_000), Some(1));
        assert_eq!(map_inside(map, 165_535), Some(65536));
        assert_eq!(map_inside(map, 165_536), None);
    }

    #[test]
    fn atomic_writes_leave_no_temporary() {
        let dir = std::env::temp_dir().join(format!("sbx-unit-{}", std::process::id()));
        make_private_dir(&dir).unwrap();
        let path = dir.join("f.json");
        write_json(&path, &serde_json::json!({"a": 1})).unwrap();
        write_json(&path, &serde_json::json!({"a": 2})).unwrap();
        let v: serde_json::Value = read_json(&path).unwrap();
        assert_eq!(v["a"], 2);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
