//! The image store under `$XDG_DATA_HOME/sbx/` (default `~/.local/share/sbx/`).
//!
//! ```text
//! layers/sha256/<hex>/     one unpacked layer, named by the digest of its uncompressed tar
//! images/<name>.json       an image: its layers bottom-first and its config
//! tmp/<pid>-<n>...         work in progress, renamed into place when complete
//! lock                     flock: exclusive for writers, shared for readers
//! ```
//!
//! Nothing appears under `layers/` or `images/` but by `rename` from `tmp/` (on the same
//! filesystem), under the exclusive lock, so an interrupted import leaves at most an entry
//! in `tmp/`, which the next writer removes: each live writer holds a flock on its own
//! `tmp/` entries, which the kernel drops however the writer ends. Layers are owned by
//! ids of the caller's subordinate range, so every writer runs inside the user namespace
//! (see `userns`).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// What an image record says about how to run the image (from its OCI/Docker config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `KEY=VALUE` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// `uid[:gid]` or a user name from the image's /etc/passwd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// One image in the store: `images/<name>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    /// What it was imported from, and as what kind of source.
    pub source: String,
    pub kind: String,
    /// Seconds since the epoch.
    pub created: u64,
    /// Layer digests (`sha256:<hex>` of the uncompressed tar), bottom first.
    pub layers: Vec<String>,
    /// Bytes of the unpacked layers' tars.
    pub size: u64,
    /// Each layer's bytes, in the order of `layers`.
    #[serde(default)]
    pub layer_sizes: Vec<u64>,
    #[serde(default)]
    pub config: ImageConfig,
}

pub struct Store {
    pub root: PathBuf,
}

/// An entry of `tmp/` a live writer holds (see `claim_tmp`).
pub struct Claim {
    pub path: PathBuf,
    _flock: Flock<File>,
}

/// A held store lock; released when dropped.
pub struct Lock {
    _flock: Flock<File>,
}

impl Store {
    /// Where the store lives: `$XDG_DATA_HOME/sbx`, else `$HOME/.local/share/sbx`.
    pub fn location() -> Result<PathBuf> {
        if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(dir).join("sbx"));
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => Ok(PathBuf::from(home).join(".local/share/sbx")),
            None => {
                bail!("neither XDG_DATA_HOME nor HOME is set, so there is no image store; set HOME")
            }
        }
    }

    /// sbx's volatile directory (named sandboxes' runtime directories, the holder's
    /// record): `$XDG_RUNTIME_DIR/sbx`, else `run/` beside the store.
    pub fn runtime_location() -> Result<PathBuf> {
        match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
            Some(r) => Ok(PathBuf::from(r).join("sbx")),
            None => Ok(Store::location()?.join("run")),
        }
    }

    /// The store, without creating anything (for readers).
    pub fn at_default() -> Result<Store> {
        Ok(Store {
            root: Store::location()?,
        })
    }

    /// The store, its directories created (mode 0700) when missing.
    pub fn create() -> Result<Store> {
        let store = Store::at_default()?;
        for dir in [store.layers_dir(), store.images_dir(), store.tmp_dir()] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("create the image store directory {}", dir.display()))?;
        }
        Ok(store)
    }

    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers/sha256")
    }

    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The directory of layer `digest` (`sha256:<hex>`, already validated).
    pub fn layer_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.layers_dir().join(digest_hex(digest)?))
    }

    pub fn record_path(&self, name: &str) -> PathBuf {
        self.images_dir()
            .join(format!("{}.json", encode_name(name)))
    }

    /// Exclusive (writers) or shared (readers) lock on the whole store.
    pub fn lock(&self, exclusive: bool) -> Result<Lock> {
        let path = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("open the store lock {}", path.display()))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        let flock = Flock::lock(file, arg)
            .map_err(|(_, e)| anyhow::anyhow!("lock the image store {}: {e}", path.display()))?;
        Ok(Lock { _flock: flock })
    }

    /// A fresh private name under `tmp/`.
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        self.tmp_dir()
            .join(format!("{}-{n}-{nanos:x}-{what}", std::process::id()))
    }

    /// Creates a directory (or an empty file) in `tmp/` and claims it with a flock that
    /// lasts as long as the returned `Claim`, or this process. Under the store lock, so
    /// `clean_tmp` never sees it unclaimed.
    pub fn claim_tmp(&self, what: &str, dir: bool) -> Result<Claim> {
        let _lock = self.lock(true)?;
        let path = self.tmp_path(what);
        if dir {
            fs::DirBuilder::new().mode(0o755).create(&path)
        } else {
            File::options()
                .write(true)
                .create_new(true)
                .open(&path)
                .map(drop)
        }
        .with_context(|| format!("create {}", path.display()))?;
        let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
        let flock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| anyhow::anyhow!("lock {}: {e}", path.display()))?;
        Ok(Claim {
            path,
            _flock: flock,
        })
    }

    /// Removes what interrupted writers left in `tmp/`: every entry no live process holds
    /// a claim on. Inside the user namespace, under the exclusive lock.
    pub fn clean_tmp(&self, _lock: &Lock) -> Result<usize> {
        let mut removed = 0;
        let entries = match fs::read_dir(self.tmp_dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e).context("read the store's tmp directory"),
        };
        for entry in entries {
            let path = entry.context("read the store's tmp directory")?.path();
            let claimed = File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .ok()
                .map(|f| Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err());
            if claimed != Some(true) {
                remove_any(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The size of layer `digest` as an image record gives it (0 when none does).
    pub fn known_layer_size(&self, digest: &str) -> u64 {
        let Ok(records) = self.records() else {
            return 0;
        };
        records
            .iter()
            .find_map(|r| {
                let i = r.layers.iter().position(|l| l == digest)?;
                r.layer_sizes.get(i).copied()
            })
            .unwrap_or(0)
    }

    /// Notes, in a claimed `tmp/` file, the layers an import in progress will name, so
    /// that garbage collection keeps them before its record exists.
    pub fn pending(&self) -> Result<Claim> {
        self.claim_tmp("pending", false)
    }

    /// Adds `digest` to the pending list `claim`; under the store lock.
    pub fn note_pending(&self, claim: &Claim, digest: &str, _lock: &Lock) -> Result<()> {
        File::options()
            .append(true)
            .open(&claim.path)
            .and_then(|mut f| writeln!(f, "{digest}"))
            .with_context(|| format!("write {}", claim.path.display()))
    }

    /// Every layer a live import has noted as pending.
    fn pending_layers(&self) -> Result<Vec<String>> {
        let mut layers = Vec::new();
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return Ok(layers);
        };
        for entry in entries {
            let path = entry?.path();
            if !path.to_string_lossy().ends_with("-pending") {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            // Held by its writer: live. (Ours too: flock is per open file.)
            if Flock::lock(file, FlockArg::LockSharedNonblock).is_err() {
                let text = fs::read_to_string(&path).unwrap_or_default();
                layers.extend(text.lines().map(str::to_string));
            }
        }
        Ok(layers)
    }

    pub fn read_record(&self, name: &str) -> Result<Option<Record>> {
        let path = self.record_path(name);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("image record {} is corrupt", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    /// Every image record, sorted by name.
    pub fn records(&self) -> Result<Vec<Record>> {
        let dir = self.images_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
        };
        let mut records = Vec::new();
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
                let record: Record = serde_json::from_slice(&bytes)
                    .with_context(|| format!("image record {} is corrupt", path.display()))?;
                records.push(record);
            }
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }

    /// Writes `record` under a temporary name and renames it into place, replacing an
    /// image of the same name. Every layer it names must be in the store.
    pub fn commit_record(&self, record: &Record, _lock: &Lock) -> Result<()> {
        for layer in &record.layers {
            if !self.layer_path(layer)?.is_dir() {
                bail!("layer {layer} disappeared from the store during the import (removed by `sbx image rm`?); import again");
            }
        }
        let tmp = self.tmp_path("record.json");
        let mut text = serde_json::to_vec_pretty(record)?;
        text.push(b'\n');
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("write {}", tmp.display()))?;
        let dst = self.record_path(&record.name);
        fs::rename(&tmp, &dst).with_context(|| format!("rename into {}", dst.display()))
    }

    /// Moves a complete layer from `tmp/` into place; if another import got there first,
    /// ours is removed and theirs kept. Returns false in that case.
    pub fn commit_layer(&self, tmp: &Path, digest: &str, _lock: &Lock) -> Result<bool> {
        let dst = self.layer_path(digest)?;
        if dst.exists() {
            remove_any(tmp)?;
            return Ok(false);
        }
        fs::rename(tmp, &dst).with_context(|| format!("rename layer into {}", dst.display()))?;
        Ok(true)
    }

    /// Removes the named images and every layer no remaining image uses. Inside the user
    /// namespace. Returns the number of layers removed.
    pub fn remove(&self, names: &[String], lock: &Lock) -> Result<usize> {
        for name in names {
            if self.read_record(name)?.is_none() {
                bail!(
                    "no image named {name} in {}; `sbx image ls` lists them",
                    self.root.display()
                );
            }
        }
        for name in names {
            let path = self.record_path(name);
            fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
        }
        self.collect_garbage(lock)
    }

    /// Removes layers that no image names and no running sandbox holds (see
    /// `hold_layer`): renamed into `tmp/` first, so a layer is either whole or gone. A
    /// layer in use stays until a later collection.
    pub fn collect_garbage(&self, _lock: &Lock) -> Result<usize> {
        let used: std::collections::BTreeSet<String> = self
            .records()?
            .into_iter()
            .flat_map(|r| r.layers)
            .chain(self.pending_layers()?)
            .filter_map(|d| digest_hex(&d).ok().map(str::to_string))
            .collect();
        let mut removed = 0;
        let dir = self.layers_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if used.contains(&name) || in_use(&entry.path()) {
                continue;
            }
            let doomed = self.tmp_path("removed-layer");
            fs::rename(entry.path(), &doomed)
                .with_context(|| format!("move {} aside", entry.path().display()))?;
            remove_any(&doomed)?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// A shared flock on a layer directory, held by a sandbox running on it for as long as it
/// runs: garbage collection leaves the layer alone meanwhile.
pub fn hold_layer(path: &Path) -> Result<Flock<File>> {
    let dir = File::open(path).with_context(|| format!("open layer {}", path.display()))?;
    Flock::lock(dir, FlockArg::LockSharedNonblock)
        .map_err(|(_, e)| anyhow::anyhow!("lock layer {}: {e}", path.display()))
}

fn in_use(layer: &Path) -> bool {
    File::open(layer).is_ok_and(|dir| Flock::lock(dir, FlockArg::LockExclusiveNonblock).is_err())
}

/// `sha256:<64 lowercase hex>` -> the hex; anything else is an error (digests become
/// path names, so nothing else may pass).
pub fn digest_hex(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => bail!("invalid digest {digest:?}: sbx accepts only sha256:<64 hex digits>"),
    }
}

/// An image name as a file name: everything but `[a-z0-9._-]` percent-encoded.
pub fn encode_name(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Removes a file or a whole tree (std's remove_dir_all does not follow symlinks). Inside
/// the user namespace, directories without write permission are no obstacle.
pub fn remove_any(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
    };
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
    .with_context(|| format!("remove {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_validated() {
        let hex = "a".repeat(64);
        assert_eq!(digest_hex(&format!("sha256:{hex}")).unwrap(), hex);
        for bad in [
            "sha256:../../etc".to_string(),
            format!("sha512:{hex}"),
            format!("sha256:{}", "A".repeat(64)),
            "sha256:".to_string(),
        ] {
            assert!(digest_hex(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_become_file_names() {
        assert_eq!(encode_name("centos:stream9"), "centos%3Astream9");
        assert_eq!(
            encode_name("quay.io/centos/centos:stream9"),
            "quay.io%2Fcentos%2Fcentos%3Astream9"
        );
        assert!(!encode_name("../x").contains('/'));
    }
}
