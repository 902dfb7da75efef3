//! The network part of a pull: log in, resolve the reference to one image manifest for
//! the wanted platform, and download the manifest, the config and every layer into the
//! layout, each verified against its digest and size before it gets its name.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::DigestError;
use oci_client::manifest::{
    OciDescriptor, OciImageIndex, OciImageManifest, IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use serde_json::{json, Value};

use super::explain::{explain, Step};
use super::layout::{sha256_hex, Layout};
use super::platform::{self, Platform};
use super::progress::Progress;
use super::Request;

const ACCEPT: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// Manifests and configs are small; a registry sending more is refused.
const MAX_MANIFEST: usize = 4 << 20;

/// The image manifest chosen for this host, as it goes into index.json.
struct Chosen {
    bytes: Vec<u8>,
    digest: String,
    media_type: String,
    platform: Option<Value>,
}

/// Downloads the image `request` names into `layout` and writes its index.json.
pub async fn fetch(request: &Request, layout: &Layout) -> Result<()> {
    let client = client(request)?;
    let auth = match &request.credentials {
        Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        None => RegistryAuth::Anonymous,
    };
    let reference = &request.reference;
    client
        .auth(reference, &auth, RegistryOperation::Pull)
        .await
        .map_err(|e| explain(e, request, Step::Login))?;
    let chosen = resolve(&client, request, &auth).await?;
    let manifest: OciImageManifest = serde_json::from_slice(&chosen.bytes)
        .with_context(|| format!("parse the image manifest {}", chosen.digest))?;
    save(layout, &chosen.digest, &chosen.bytes)?;

    let mut progress = Progress::new();
    let config = &manifest.config;
    download(
        &client,
        request,
        config,
        layout,
        &mut progress,
        "config".into(),
    )
    .await?;
    check_config_platform(layout, config, request)?;
    let count = manifest.layers.len();
    for (i, layer) in manifest.layers.iter().enumerate() {
        let label = format!("layer {}/{count} {}", i + 1, short(&layer.digest));
        download(&client, request, layer, layout, &mut progress, label).await?;
    }
    let mut descriptor = json!({
        "mediaType": chosen.media_type,
        "digest": chosen.digest,
        "size": chosen.bytes.len(),
    });
    if let Some(platform) = chosen.platform {
        descriptor["platform"] = platform;
    }
    layout.finish(descriptor, reference.tag())
}

fn client(request: &Request) -> Result<Client> {
    let config = ClientConfig {
        protocol: if request.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        // Index resolution is ours, so a miss can list what the image has.
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(120)),
        user_agent: concat!("sbx/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    };
    Client::try_from(config).context("set up the registry client")
}

/// The reference's manifest; for an index or manifest list, the entry for the platform.
async fn resolve(client: &Client, request: &Request, auth: &RegistryAuth) -> Result<Chosen> {
    let reference = &request.reference;
    let (bytes, digest) = client
        .pull_manifest_raw(reference, auth, ACCEPT)
        .await
        .map_err(|e| explain(e, request, Step::Manifest))?;
    let media_type = media_type_of(&bytes, &digest)?;
    if media_type != OCI_IMAGE_INDEX_MEDIA_TYPE && media_type != IMAGE_MANIFEST_LIST_MEDIA_TYPE {
        return Ok(Chosen {
            bytes: bytes.to_vec(),
            digest,
            media_type,
            platform: None,
        });
    }
    let index: OciImageIndex = serde_json::from_slice(&bytes)
        .with_context(|| format!("parse the image index {digest} of {}", request.given))?;
    let entry = platform::choose(&index.manifests, &request.platform, &request.given)?;
    sha256_hex(&entry.digest)?;
    let by_digest = reference.clone_with_digest(entry.digest.clone());
    let (bytes, _) = client
        .pull_manifest_raw(&by_digest, auth, ACCEPT)
        .await
        .map_err(|e| explain(e, request, Step::Manifest))?;
    if u64::try_from(entry.size).ok() != Some(bytes.len() as u64) {
        bail!(
            "manifest {} has {} bytes where the index of {} says {}; nothing was imported",
            entry.digest,
            bytes.len(),
            request.given,
            entry.size
        );
    }
    let media_type = media_type_of(&bytes, &entry.digest)?;
    if media_type != OCI_IMAGE_MEDIA_TYPE && media_type != IMAGE_MANIFEST_MEDIA_TYPE {
        bail!(
            "the index of {} names {} for {} but it is a {media_type}, not an image manifest",
            request.given,
            entry.digest,
            request.platform
        );
    }
    Ok(Chosen {
        bytes: bytes.to_vec(),
        digest: entry.digest.clone(),
        media_type,
        platform: entry
            .platform
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .context("serialize the platform")?,
    })
}

/// The manifest's media type, from its `mediaType` field or, where it has none (older
/// OCI manifests), from its shape.
fn media_type_of(bytes: &[u8], digest: &str) -> Result<String> {
    if bytes.len() > MAX_MANIFEST {
        bail!(
            "manifest {digest} is {} bytes, more than sbx accepts",
            bytes.len()
        );
    }
    let value: Value =
        serde_json::from_slice(bytes).with_context(|| format!("parse manifest {digest}"))?;
    if value.get("schemaVersion").and_then(Value::as_i64) != Some(2) {
        bail!("manifest {digest} is not schema version 2 (Docker schema 1 is not supported)");
    }
    Ok(match value.get("mediaType").and_then(Value::as_str) {
        Some(t) => t.to_string(),
        None if value.get("manifests").is_some() => OCI_IMAGE_INDEX_MEDIA_TYPE.to_string(),
        None => OCI_IMAGE_MEDIA_TYPE.to_string(),
    })
}

/// Writes bytes already in memory as a verified blob.
fn save(layout: &Layout, digest: &str, data: &[u8]) -> Result<()> {
    let mut blob = layout.blob(digest, data.len() as u64)?;
    blob.write(data)?;
    blob.commit()
}

async fn download(
    client: &Client,
    request: &Request,
    desc: &OciDescriptor,
    layout: &Layout,
    progress: &mut Progress,
    label: String,
) -> Result<()> {
    let size = u64::try_from(desc.size)
        .with_context(|| format!("blob {} has a negative size", desc.digest))?;
    let mut blob = layout.blob(&desc.digest, size)?;
    let step = Step::Blob(&desc.digest);
    let mut stream = client
        .pull_blob_stream(&request.reference, desc)
        .await
        .map_err(|e| explain(e, request, step))?;
    progress.start(label, size);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| stream_error(e, request, step))?;
        blob.write(&chunk)?;
        progress.advance(chunk.len() as u64);
    }
    if blob.written() == size {
        progress.finish();
    }
    blob.commit()
}

/// Errors inside a blob's byte stream: the crate's own digest check, or the connection.
fn stream_error(err: std::io::Error, request: &Request, step: Step) -> anyhow::Error {
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<DigestError>());
    match (inner, step) {
        (Some(DigestError::VerificationError { actual, .. }), Step::Blob(digest)) => {
            anyhow::anyhow!(
                "blob {digest} does not match its digest (its content hashes to {actual}); \
                 nothing was imported"
            )
        }
        (Some(other), Step::Blob(digest)) => {
            anyhow::anyhow!("blob {digest} cannot be verified ({other}); nothing was imported")
        }
        _ => anyhow::Error::new(err).context(format!(
            "download from {}",
            request.reference.resolve_registry()
        )),
    }
}

/// A single-platform image for another platform is refused unless asked for by name.
fn check_config_platform(layout: &Layout, config: &OciDescriptor, request: &Request) -> Result<()> {
    let path = layout
        .path()
        .join("blobs/sha256")
        .join(sha256_hex(&config.digest)?);
    let text = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let value: Value = serde_json::from_slice(&text)
        .with_context(|| format!("parse the image config {}", config.digest))?;
    let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_string);
    let (Some(os), Some(arch)) = (field("os"), field("architecture")) else {
        return Ok(());
    };
    let image = Platform {
        os,
        arch,
        variant: None,
    };
    let wanted = &request.platform;
    if image.os != wanted.os || image.arch != wanted.arch {
        bail!(
            "{} is an image for {image} only, not {wanted}; pass --platform {image} to pull it anyway",
            request.given
        );
    }
    Ok(())
}

/// `sha256:0123456789ab...` -> `sha256:0123456789ab`.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}
