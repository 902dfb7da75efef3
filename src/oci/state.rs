//! The state directory: `ROOT/ID/` holds `state.json` (what `create` made), `config.json`
//! (the config as it was at create) and, until `start`, the `exec.fifo` the container
//! process waits on. Written like sbx's own records: directories made exclusively, files
//! written atomically through directory fds, the container pid checked by its start time.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use crate::plan::net::ProcId;

/// The runtime-spec version whose state format `state` prints.
pub const OCI_VERSION: &str = "1.2.0";
pub const STATE: &str = "state.json";
pub const CONFIG: &str = "config.json";
pub const FIFO: &str = "exec.fifo";

/// What `create` recorded. The status is not stored: it is read from the process and the
/// fifo each time, so it cannot go stale.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub process: ProcId,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// The container's cgroups, when sbx-oci placed it in them.
    #[serde(flatten)]
    pub cgroups: super::cgroups::Placement,
    /// Its own pid namespace (so killing its pid 1 ends everything in it).
    #[serde(default)]
    pub pid_ns: bool,
    /// In the runtime's mount namespace, chrooted into its root (`exec` does the same).
    #[serde(default)]
    pub chroot: bool,
    /// The systemd scope holding it (`--systemd-cgroup`), stopped by `delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<super::systemd::Unit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Stopped,
}

/// The state as the runtime spec defines it (plus runc's `rootfs`, `created` and `owner`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OciState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    pub pid: i32,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
}

/// `--root`: as runc picks it. Root in the initial user namespace uses /run/sbx-oci;
/// anyone else (rootless podman's root in its user namespace included) uses
/// `$XDG_RUNTIME_DIR/sbx-oci`.
pub fn default_root() -> PathBuf {
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty());
    match xdg {
        Some(dir) if !nix::unistd::geteuid().is_root() || in_user_namespace() => {
            Path::new(&dir).join("sbx-oci")
        }
        _ if nix::unistd::geteuid().is_root() => PathBuf::from("/run/sbx-oci"),
        _ => PathBuf::from(format!("/tmp/sbx-oci-{}", nix::unistd::geteuid())),
    }
}

/// True unless this is the initial user namespace (whose map is the whole id space).
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| {
        let fields: Vec<&str> = m.split_whitespace().collect();
        fields != ["0", "0", "4294967295"]
    })
}

/// Container ids name a directory: letters, digits and `_+-.`, not `.` or `..`.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if !ok {
        bail!("invalid container id {id:?}: use letters, digits and _+-. only");
    }
    Ok(())
}

/// One container's state directory, open.
pub struct Dir {
    pub id: String,
    pub path: PathBuf,
    pub fd: OwnedFd,
}

fn open_root(root: &Path, create: bool) -> Result<OwnedFd> {
    if create {
        std::fs::create_dir_all(root)
            .with_context(|| format!("create the state root {}", root.display()))?;
    }
    nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("open the state root {}", root.display()))
}

impl Dir {
    /// A new, empty directory for `id`; an error if the id is taken.
    pub fn create(root: &Path, id: &str) -> Result<Dir> {
        check_id(id)?;
        let top = open_root(root, true)?;
        match nix::sys::stat::mkdirat(top.as_fd(), id, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {}
            Err(nix::errno::Errno::EEXIST) => bail!("container {id} already exists"),
            Err(e) => return Err(e).with_context(|| format!("create {}", root.join(id).display())),
        }
        Self::open_in(&top, root, id)
    }

    /// The directory of an existing container.
    pub fn open(root: &Path, id: &str) -> Result<Dir> {
        check_id(id)?;
        let top = open_root(root, false).map_err(|_| not_found(id))?;
        Self::open_in(&top, root, id)
    }

    fn open_in(top: &OwnedFd, root: &Path, id: &str) -> Result<Dir> {
        let fd = crate::beneath::open(top.as_fd(), Path::new(id), libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ENOENT) {
                    not_found(id)
                } else {
                    anyhow::Error::from(e).context(format!("open {}", root.join(id).display()))
                }
            })?;
        Ok(Dir {
            id: id.to_string(),
            path: root.join(id),
            fd,
        })
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        crate::beneath::write_atomic(self.fd.as_fd(), OsStr::new(name), bytes)
            .with_context(|| format!("write {}", self.path.join(name).display()))
    }

    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let fd = crate::beneath::open(self.fd.as_fd(), Path::new(name), libc::O_RDONLY)
            .with_context(|| format!("read {}", self.path.join(name).display()))?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut bytes)?;
        Ok(bytes)
    }

    pub fn record(&self) -> Result<Record> {
        let bytes = self.read(STATE).map_err(|_| not_found(&self.id))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("parse {}", self.path.join(STATE).display()))
    }

    /// The config `create` ran with.
    pub fn config(&self) -> Result<oci_spec::runtime::Spec> {
        let bytes = self.read(CONFIG)?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("parse {}", self.path.join(CONFIG).display()))
    }

    pub fn fifo_exists(&self) -> bool {
        crate::beneath::kind_at(self.fd.as_fd(), Path::new(FIFO)).is_ok_and(|k| k == libc::S_IFIFO)
    }

    /// Where the container is: stopped once its process is gone (a recycled pid is not
    /// it), created while its process waits on the fifo, running after.
    pub fn status(&self, record: &Record) -> Status {
        if !record.process.alive() {
            Status::Stopped
        } else if self.fifo_exists() {
            Status::Created
        } else {
            Status::Running
        }
    }

    pub fn oci_state(&self, record: &Record) -> OciState {
        let status = self.status(record);
        OciState {
            oci_version: OCI_VERSION.to_string(),
            id: record.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                record.process.pid
            },
            bundle: record.bundle.clone(),
            rootfs: record.rootfs.clone(),
            created: record.created.clone(),
            owner: record.owner.clone(),
            annotations: record.annotations.clone(),
        }
    }

    /// Removes the directory and everything in it (files sbx-oci wrote, nothing else).
    pub fn remove(self) -> Result<()> {
        std::fs::remove_dir_all(&self.path)
            .with_context(|| format!("remove {}", self.path.display()))
    }
}

pub fn not_found(id: &str) -> anyhow::Error {
    anyhow::anyhow!("container {id} does not exist")
}

/// Every container id under `root`, sorted.
pub fn ids(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| check_id(id).is_ok())
        .collect();
    ids.sort();
    ids
}

/// Now as RFC 3339 in UTC with nanoseconds, as runc writes `created` and log times.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let c = crate::clock::civil(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_709_251_199, 5), "2024-02-29T23:59:59.000000005Z");
    }

    #[test]
    fn ids_name_a_directory_and_nothing_else() {
        check_id("abc-1_2.x+y").unwrap();
        for bad in ["", ".", "..", "a/b", "a b", "é"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_container_directory_is_made_once() {
        let tmp = std::env::temp_dir().join(format!("sbx-oci-state-{}", std::process::id()));
        let dir = Dir::create(&tmp, "one").unwrap();
        dir.write(STATE, b"{}").unwrap();
        let again = Dir::create(&tmp, "one").err().unwrap();
        assert!(again.to_string().contains("already exists"), "{again}");
        assert!(Dir::open(&tmp, "two")
            .err()
            .unwrap()
            .to_string()
            .contains("does not exist"));
        dir.remove().unwrap();
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
