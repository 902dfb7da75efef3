//! What an import source is, and the layers and config it holds.
//!
//! A directory with an `oci-layout` file is an OCI image layout; any other directory is a
//! root filesystem. A file starting with gzip, xz or zstd magic is a compressed rootfs
//! tarball; a tar holding `manifest.json` is a docker-archive (`docker save`), one holding
//! `oci-layout` and `index.json` an OCI layout in a tar; any other tar a rootfs tarball.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::decompress::{self, hex};
use super::store::{digest_hex, ImageConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    RootfsTarball,
    DockerArchive,
    OciDir,
    OciTar,
    /// A docker-archive or OCI layout tar, compressed: decompressed first.
    CompressedArchive,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Directory => "directory",
            Kind::RootfsTarball => "rootfs tarball",
            Kind::DockerArchive => "docker-archive",
            Kind::OciDir => "OCI layout directory",
            Kind::OciTar => "OCI layout tar",
            Kind::CompressedArchive => "compressed image archive",
        }
    }
}

/// Where a layer's bytes are: a byte range of a file (a whole file, or a member of a tar).
#[derive(Debug, Clone)]
pub struct Blob {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
}

impl Blob {
    pub fn open(&self) -> Result<io::Take<File>> {
        let mut file =
            File::open(&self.path).with_context(|| format!("open {}", self.path.display()))?;
        file.seek(SeekFrom::Start(self.offset))
            .with_context(|| format!("seek in {}", self.path.display()))?;
        Ok(file.take(self.len))
    }

    fn read_all(&self, limit: u64) -> Result<Vec<u8>> {
        if self.len > limit {
            bail!(
                "{} is too large ({} bytes) for a JSON document",
                self.path.display(),
                self.len
            );
        }
        let mut bytes = Vec::new();
        self.open()?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

#[derive(Debug, Clone)]
pub struct LayerSource {
    pub blob: Blob,
    /// The digest the blob itself must have (OCI layouts).
    pub blob_digest: Option<String>,
    /// The digest its uncompressed tar must have (from the image config).
    pub diff_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub kind: Kind,
    pub layers: Vec<LayerSource>,
    pub config: ImageConfig,
}

/// Reads what `path` holds; `tag` picks among the images of an OCI index.
pub fn inspect(path: &Path, tag: &str) -> Result<Source> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("import source {} does not exist", path.display()))?;
    if meta.is_dir() {
        if path.join("oci-layout").is_file() {
            let files = DirFiles(path.to_path_buf());
            return oci(&files, tag, Kind::OciDir);
        }
        return Ok(Source {
            kind: Kind::Directory,
            layers: Vec::new(),
            config: ImageConfig::default(),
        });
    }
    let whole = Blob {
        path: path.to_path_buf(),
        offset: 0,
        len: meta.len(),
    };
    let mut magic = [0u8; 6];
    let n = whole.open()?.read(&mut magic)?;
    if decompress::is_compressed(&magic[..n]) {
        if first_entry(&whole).is_some_and(|first| looks_like_image_archive(&first)) {
            // `docker save | gzip`: the caller decompresses it and looks again.
            return Ok(Source {
                kind: Kind::CompressedArchive,
                layers: vec![LayerSource {
                    blob: whole,
                    blob_digest: None,
                    diff_id: None,
                }],
                config: ImageConfig::default(),
            });
        }
        return Ok(rootfs(whole));
    }
    let members = match index_tar(path) {
        Ok(members) => members,
        Err(e) => bail!(
            "{} is neither a directory nor a tar archive (plain, gzip, xz or zstd): {e:#}",
            path.display()
        ),
    };
    if members.0.contains_key("manifest.json") {
        return docker_archive(&members);
    }
    if members.0.contains_key("oci-layout") && members.0.contains_key("index.json") {
        return oci(&members, tag, Kind::OciTar);
    }
    Ok(rootfs(whole))
}

/// The name of the first entry of a (compressed) tar, reading only its header.
fn first_entry(blob: &Blob) -> Option<String> {
    let stream = decompress::decompressed(blob.open().ok()?).ok()?;
    let mut archive = tar::Archive::new(stream);
    let mut entries = archive.entries().ok()?;
    let entry = entries.next()?.ok()?;
    let name = entry.path().ok()?.to_string_lossy().into_owned();
    Some(name)
}

/// A docker-archive's or OCI layout's first entry, never a root filesystem's.
fn looks_like_image_archive(name: &str) -> bool {
    let name = name.trim_start_matches("./");
    let digest_named = name.len() >= 64
        && name[..64].bytes().all(|b| b.is_ascii_hexdigit())
        && matches!(&name[64..], "" | "/" | ".json");
    digest_named
        || name.starts_with("blobs/")
        || name == "blobs"
        || ["oci-layout", "index.json", "manifest.json", "repositories"].contains(&name)
}

fn rootfs(whole: Blob) -> Source {
    Source {
        kind: Kind::RootfsTarball,
        layers: vec![LayerSource {
            blob: whole,
            blob_digest: None,
            diff_id: None,
        }],
        config: ImageConfig::default(),
    }
}

/// Named files of a layout: in a directory, or members of a tar.
trait Files {
    fn blob(&self, name: &str) -> Result<Blob>;
}

struct DirFiles(PathBuf);

impl Files for DirFiles {
    fn blob(&self, name: &str) -> Result<Blob> {
        let path = self.0.join(name);
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("{} is missing from the layout", path.display()))?;
        if !meta.is_file() {
            bail!("{} is not a regular file", path.display());
        }
        Ok(Blob {
            path,
            offset: 0,
            len: meta.len(),
        })
    }
}

struct TarFiles(HashMap<String, Blob>, PathBuf);

impl Files for TarFiles {
    fn blob(&self, name: &str) -> Result<Blob> {
        self.0
            .get(name)
            .cloned()
            .with_context(|| format!("{name} is missing from {}", self.1.display()))
    }
}

/// The regular files of a tar and where their data lies, found by seeking over them.
fn index_tar(path: &Path) -> Result<TarFiles> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    let mut members = HashMap::new();
    for entry in archive.entries_with_seek()? {
        let entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        members.insert(
            name,
            Blob {
                path: path.to_path_buf(),
                offset: entry.raw_file_position(),
                len: entry.size(),
            },
        );
    }
    if members.is_empty() {
        bail!("no files in it");
    }
    Ok(TarFiles(members, path.to_path_buf()))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    layers: Vec<String>,
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    config: Option<RunConfig>,
    #[serde(default)]
    rootfs: Option<RootfsIds>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct RootfsIds {
    diff_ids: Vec<String>,
}

fn docker_archive(files: &TarFiles) -> Result<Source> {
    let text = files.blob("manifest.json")?.read_all(1 << 20)?;
    let manifests: Vec<DockerManifest> =
        serde_json::from_slice(&text).context("manifest.json of the docker-archive")?;
    let manifest = match manifests.as_slice() {
        [one] => one,
        [] => bail!("the docker-archive's manifest.json lists no image"),
        _ => bail!(
            "the docker-archive holds {} images; save one image per archive",
            manifests.len()
        ),
    };
    let config_blob = files.blob(&manifest.config)?;
    let config_bytes = config_blob.read_all(16 << 20)?;
    // The config's file name is its digest, in both the old and the OCI-style layouts.
    let stem = Path::new(&manifest.config)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if stem.len() == 64 {
        verify(&config_bytes, &format!("sha256:{stem}"), &manifest.config)?;
    }
    let (config, diff_ids) = parse_config(&config_bytes)?;
    if diff_ids.len() != manifest.layers.len() {
        bail!(
            "the docker-archive's config lists {} layers but its manifest {}",
            diff_ids.len(),
            manifest.layers.len()
        );
    }
    let layers = manifest
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(name, diff_id)| {
            Ok(LayerSource {
                blob: files.blob(name)?,
                blob_digest: None,
                diff_id: Some(diff_id),
            })
        })
        .collect::<Result<_>>()?;
    Ok(Source {
        kind: Kind::DockerArchive,
        layers,
        config,
    })
}

fn parse_config(bytes: &[u8]) -> Result<(ImageConfig, Vec<String>)> {
    let file: ConfigFile = serde_json::from_slice(bytes).context("the image config")?;
    let run = file.config.unwrap_or_default();
    let diff_ids = file.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    for id in &diff_ids {
        digest_hex(id)?;
    }
    Ok((
        ImageConfig {
            env: run.env.unwrap_or_default(),
            workdir: run.working_dir.filter(|w| !w.is_empty()),
            user: run.user.filter(|u| !u.is_empty()),
        },
        diff_ids,
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
    /// Set when the document is an image manifest rather than an index.
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn oci(files: &dyn Files, tag: &str, kind: Kind) -> Result<Source> {
    let index: Index = serde_json::from_slice(&files.blob("index.json")?.read_all(1 << 20)?)
        .context("index.json of the OCI layout")?;
    let host = super::platform::Platform::host();
    let mut chosen = pick(&index.manifests, Some(tag), &host)?.digest.clone();
    // Nested indexes (multi-platform images) down to one image manifest.
    for _ in 0..4 {
        let bytes = read_verified(files, &chosen, 4 << 20)?;
        let doc: Index =
            serde_json::from_slice(&bytes).with_context(|| format!("manifest {chosen}"))?;
        if let Some(config) = &doc.config {
            let config_bytes = read_verified(files, &config.digest, 16 << 20)?;
            let (image_config, diff_ids) = parse_config(&config_bytes)?;
            if diff_ids.len() != doc.layers.len() {
                bail!(
                    "the image config lists {} layers but its manifest {}",
                    diff_ids.len(),
                    doc.layers.len()
                );
            }
            let layers = doc
                .layers
                .iter()
                .zip(diff_ids)
                .map(|(layer, diff_id)| {
                    Ok(LayerSource {
                        blob: files.blob(&blob_name(&layer.digest)?)?,
                        blob_digest: Some(layer.digest.clone()),
                        diff_id: Some(diff_id),
                    })
                })
                .collect::<Result<_>>()?;
            return Ok(Source {
                kind,
                layers,
                config: image_config,
            });
        }
        chosen = pick(&doc.manifests, None, &host)?.digest.clone();
    }
    bail!("the OCI layout nests indexes too deeply")
}

/// The manifest for `tag` (by its ref.name annotation) or for the `wanted` platform.
fn pick<'a>(
    manifests: &'a [Descriptor],
    tag: Option<&str>,
    wanted: &super::platform::Platform,
) -> Result<&'a Descriptor> {
    if let [one] = manifests {
        return Ok(one);
    }
    if let Some(tag) = tag {
        let named = manifests.iter().find(|m| {
            m.annotations
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .is_some_and(|r| r == tag)
        });
        if let Some(m) = named {
            return Ok(m);
        }
    }
    manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| wanted.matches(&p.os, &p.architecture, p.variant.as_deref()))
        })
        .or_else(|| {
            manifests
                .iter()
                .find(|m| m.platform.is_none() && m.media_type.is_some())
        })
        .with_context(|| {
            format!(
                "the OCI index lists {} manifests and none is for tag {} or {wanted}",
                manifests.len(),
                tag.unwrap_or("(none)")
            )
        })
}

fn blob_name(digest: &str) -> Result<String> {
    Ok(format!("blobs/sha256/{}", digest_hex(digest)?))
}

fn read_verified(files: &dyn Files, digest: &str, limit: u64) -> Result<Vec<u8>> {
    let bytes = files.blob(&blob_name(digest)?)?.read_all(limit)?;
    verify(&bytes, digest, digest)?;
    Ok(bytes)
}

fn verify(bytes: &[u8], digest: &str, what: &str) -> Result<()> {
    let actual = format!("sha256:{}", hex(&Sha256::digest(bytes)));
    if actual != digest {
        bail!("digest mismatch for {what}: expected {digest}, the content has {actual}; the source is corrupt or was tampered with");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_archives_are_told_from_root_filesystems() {
        let hex = "ab".repeat(32);
        for image in [
            "blobs/",
            "./manifest.json",
            "oci-layout",
            &format!("{hex}/"),
            &format!("{hex}.json"),
        ] {
            assert!(looks_like_image_archive(image), "{image}");
        }
        for rootfs in ["./", "bin/", "etc/passwd", "usr", "manifest.json.bak"] {
            assert!(!looks_like_image_archive(rootfs), "{rootfs}");
        }
    }

    #[test]
    fn indexes_are_picked_by_the_platform_table_pull_uses() {
        let index: Index = serde_json::from_str(
            r#"{"manifests": [
                {"mediaType": "m", "digest": "sha256:aa", "platform": {"os": "linux", "architecture": "386"}},
                {"mediaType": "m", "digest": "sha256:bb", "platform": {"os": "linux", "architecture": "ppc64le"}},
                {"mediaType": "m", "digest": "sha256:cc", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
            ]}"#,
        )
        .unwrap();
        let pick_for = |text: &str| {
            let wanted = super::super::platform::Platform::parse(text).unwrap();
            pick(&index.manifests, None, &wanted).map(|d| d.digest.clone())
        };
        assert_eq!(pick_for("linux/i686").unwrap(), "sha256:aa");
        assert_eq!(pick_for("linux/ppc64le").unwrap(), "sha256:bb");
        assert_eq!(pick_for("linux/aarch64").unwrap(), "sha256:cc");
        let err = pick_for("linux/s390x").unwrap_err().to_string();
        assert!(
            err.contains("none is for tag (none) or linux/s390x"),
            "{err}"
        );
    }
}
