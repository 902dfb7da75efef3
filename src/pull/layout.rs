//! The OCI image layout a pull writes (`oci-layout`, `index.json`, `blobs/sha256/HEX`), in
//! a private temporary directory that is removed when dropped unless it was kept, so no
//! error, early return or interrupt leaves a half-written image behind.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::image::budget::{self, CHECK_EVERY, RESERVE_VARIABLE};
use crate::image::byte_size;
use sha2::{Digest, Sha256};

/// A layout being written: a fresh directory under `parent`, removed on drop.
pub struct Layout {
    dir: PathBuf,
    keep: bool,
    /// Free space on its filesystem that downloads never eat into (the store's reserve).
    reserve: u64,
}

impl Layout {
    /// Creates `parent` (mode 0700 for what it creates) and a new `PREFIXXXXXXX` in it.
    pub fn create(parent: &Path, prefix: &str) -> Result<Layout> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("create {}", parent.display()))?;
        let template = parent.join(format!("{prefix}XXXXXX"));
        let dir = nix::unistd::mkdtemp(&template)
            .with_context(|| format!("create a temporary directory in {}", parent.display()))?;
        let reserve = budget::reserve(&dir)?;
        let layout = Layout {
            dir,
            keep: false,
            reserve,
        };
        fs::create_dir_all(layout.blob_dir())
            .with_context(|| format!("create {}", layout.blob_dir().display()))?;
        fs::write(
            layout.dir.join("oci-layout"),
            b"{\"imageLayoutVersion\":\"1.0.0\"}",
        )
        .with_context(|| format!("write {}/oci-layout", layout.dir.display()))?;
        Ok(layout)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn blob_dir(&self) -> PathBuf {
        self.dir.join("blobs/sha256")
    }

    /// Starts writing the blob `digest` of `size` bytes; see [`BlobWriter`].
    pub fn blob(&self, digest: &str, size: u64) -> Result<BlobWriter> {
        let hex = sha256_hex(digest)?;
        let path = self.blob_dir().join(hex);
        let partial = path.with_extension("partial");
        let file =
            File::create(&partial).with_context(|| format!("create {}", partial.display()))?;
        Ok(BlobWriter {
            digest: digest.to_string(),
            size,
            written: 0,
            hasher: Sha256::new(),
            source: None,
            reserve: self.reserve,
            since_check: CHECK_EVERY,
            file,
            partial,
            path,
        })
    }

    /// Writes `index.json` naming the one image manifest, with the tag as its ref name.
    pub fn finish(&self, manifest: serde_json::Value, tag: Option<&str>) -> Result<()> {
        let mut manifest = manifest;
        if let Some(tag) = tag {
            manifest["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [manifest],
        });
        let path = self.dir.join("index.json");
        let text = serde_json::to_vec_pretty(&index).context("serialize index.json")?;
        fs::write(&path, text).with_context(|| format!("write {}", path.display()))
    }

    /// Moves the finished layout to `dest` (on the same file system) and keeps it.
    pub fn persist(mut self, dest: &Path) -> Result<()> {
        fs::rename(&self.dir, dest)
            .with_context(|| format!("move {} to {}", self.dir.display(), dest.display()))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        match fs::remove_dir_all(&self.dir) {
            // The importer may have moved it away whole.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                eprintln!("sbx: warning: cannot remove {}: {e}", self.dir.display());
            }
            _ => {}
        }
    }
}

/// The 64 lowercase hex digits of a `sha256:` digest; anything else is refused, since the
/// digest becomes a file name.
pub fn sha256_hex(digest: &str) -> Result<&str> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        bail!("unsupported digest {digest:?}: sbx handles sha256 digests only");
    };
    let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !valid {
        bail!("malformed digest {digest:?}");
    }
    Ok(hex)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One blob arriving: hashed and counted as it is written; it gets its final name only
/// once its size and sha256 match the descriptor, and never grows past the size.
pub struct BlobWriter {
    digest: String,
    size: u64,
    written: u64,
    hasher: Sha256,
    /// The host that sent it, for messages.
    source: Option<String>,
    /// The layout's free-space reserve, and how much was written since it was checked.
    reserve: u64,
    since_check: u64,
    file: File,
    partial: PathBuf,
    path: PathBuf,
}

impl BlobWriter {
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.written += chunk.len() as u64;
        if self.written > self.size {
            bail!(
                "blob {}{} is larger than the {} bytes its descriptor says; nothing was imported",
                self.digest,
                self.source_text(),
                self.size
            );
        }
        self.since_check += chunk.len() as u64;
        if self.reserve > 0 && self.since_check >= CHECK_EVERY {
            self.since_check = 0;
            let free = budget::free_space(&self.partial)
                .with_context(|| format!("statvfs {}", self.partial.display()))?;
            if free < self.reserve {
                bail!(
                    "the filesystem of {} is down to {} free, below the {} sbx keeps in \
                     reserve, with {} of blob {} ({} by its descriptor) downloaded; nothing \
                     was imported; free some space, or set {RESERVE_VARIABLE} to a smaller size",
                    self.partial.parent().unwrap_or(Path::new(".")).display(),
                    byte_size(free),
                    byte_size(self.reserve),
                    byte_size(self.written),
                    self.digest,
                    byte_size(self.size)
                );
            }
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .with_context(|| format!("write {}", self.partial.display()))
    }

    /// Names the host the bytes come from in errors.
    pub fn served_by(&mut self, host: &str) {
        self.source = Some(host.to_string());
    }

    fn source_text(&self) -> String {
        self.source
            .as_ref()
            .map(|h| format!(" from {h}"))
            .unwrap_or_default()
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks size and digest, then gives the blob its name.
    pub fn commit(self) -> Result<()> {
        if self.written != self.size {
            bail!(
                "blob {}{} has {} bytes where its descriptor says {}; nothing was imported",
                self.digest,
                self.source_text(),
                self.written,
                self.size
            );
        }
        let from = self.source_text();
        let actual = format!("sha256:{}", hex(&self.hasher.finalize()));
        if actual != self.digest {
            bail!(
                "blob {} does not match its digest (the content{from} hashes to {actual}); \
                 nothing was imported",
                self.digest
            );
        }
        fs::rename(&self.partial, &self.path)
            .with_context(|| format!("rename {}", self.partial.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(data: &[u8]) -> String {
        format!("sha256:{}", hex(&Sha256::digest(data)))
    }

    /// A parent directory of the test's own, removed by the test.
    fn parent(test: &str) -> PathBuf {
        std::env::temp_dir().join(format!("sbx-layout-test-{}-{test}", std::process::id()))
    }

    #[test]
    fn a_verified_blob_gets_its_name_and_the_layout_goes_on_drop() {
        let parent = parent("verified");
        let layout = Layout::create(&parent, "pull-").unwrap();
        let dir = layout.path().to_path_buf();
        let data = b"hello layer";
        let mut w = layout.blob(&digest_of(data), data.len() as u64).unwrap();
        w.write(&data[..5]).unwrap();
        w.write(&data[5..]).unwrap();
        w.commit().unwrap();
        let name = dir.join("blobs/sha256").join(&digest_of(data)[7..]);
        assert_eq!(fs::read(name).unwrap(), data);
        assert!(dir.join("oci-layout").exists());
        drop(layout);
        assert!(!dir.exists());
        fs::remove_dir(parent).unwrap();
    }

    #[test]
    fn wrong_content_or_size_is_refused() {
        let parent = parent("refused");
        let layout = Layout::create(&parent, "pull-").unwrap();
        let good = digest_of(b"abc");
        let mut w = layout.blob(&good, 3).unwrap();
        w.write(b"abd").unwrap();
        let err = w.commit().unwrap_err().to_string();
        assert!(
            err.contains(&good) && err.contains("does not match"),
            "{err}"
        );
        let mut w = layout.blob(&good, 3).unwrap();
        assert!(w.write(b"abcd").is_err());
        let mut w = layout.blob(&good, 3).unwrap();
        w.write(b"ab").unwrap();
        assert!(w.commit().unwrap_err().to_string().contains("2 bytes"));
        let hex = &good[7..];
        assert!(!layout.path().join("blobs/sha256").join(hex).exists());
        drop(layout);
        fs::remove_dir(parent).unwrap();
    }

    #[test]
    fn digests_that_are_not_plain_sha256_are_refused() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert!(sha256_hex(&ok).is_ok());
        for bad in [
            "sha512:abc".to_string(),
            format!("sha256:../../{}", "a".repeat(58)),
            format!("sha256:{}", "A".repeat(64)),
            "sha256:".to_string(),
        ] {
            assert!(sha256_hex(&bad).is_err(), "{bad}");
        }
    }
}
