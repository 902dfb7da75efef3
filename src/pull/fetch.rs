//! The network part of a pull: log in, resolve the reference to one image manifest for
//! the wanted platform, and download the manifest, the config and every layer into the
//! layout, each verified against its digest and size before it gets its name. Every
//! request is bounded in size and in time (see `registry`); a layer's foreign `urls` are
//! followed only with `--allow-foreign-layers`.

use anyhow::{anyhow, bail, Context, Result};
use oci_client::manifest::{
    OciDescriptor, OciImageIndex, OciImageManifest, IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use reqwest::{Response, StatusCode, Url};
use serde_json::{json, Value};

use super::deadline::within;
use super::explain::Step;
use super::hosts::host_of;
use super::layout::{sha256_hex, Layout};
use super::platform::{self, Platform};
use super::progress::Progress;
use super::registry::{self, Registry, MAX_CONFIG};
use super::Request;
use crate::image::byte_size;

const ACCEPT: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// The image manifest chosen for this host, as it goes into index.json.
struct Chosen {
    bytes: Vec<u8>,
    digest: String,
    media_type: String,
    platform: Option<Value>,
}

/// Downloads the image `request` names into `layout` and writes its index.json.
pub async fn fetch(request: &Request, layout: &Layout) -> Result<()> {
    let registry = Registry::login(request, request.deadlines).await?;
    let chosen = resolve(&registry, request).await?;
    let manifest: OciImageManifest = serde_json::from_slice(&chosen.bytes)
        .with_context(|| format!("parse the image manifest {}", chosen.digest))?;
    save(layout, &chosen.digest, &chosen.bytes)?;

    let mut progress = Progress::new();
    let config = &manifest.config;
    // The config is read whole later: its declared size is checked before any byte.
    if u64::try_from(config.size).map_or(true, |n| n > MAX_CONFIG) {
        bail!(
            "the image config {} of {} is {} bytes by its manifest, more than the {} sbx \
             accepts for a config (a hostile registry?); nothing was imported",
            config.digest,
            request.given,
            config.size,
            byte_size(MAX_CONFIG)
        );
    }
    download(
        &registry,
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
        download(&registry, request, layer, layout, &mut progress, label).await?;
    }
    let mut descriptor = json!({
        "mediaType": chosen.media_type,
        "digest": chosen.digest,
        "size": chosen.bytes.len(),
    });
    if let Some(platform) = chosen.platform {
        descriptor["platform"] = platform;
    }
    layout.finish(descriptor, request.reference.tag())
}

/// The reference's manifest; for an index or manifest list, the entry for the platform.
async fn resolve(registry: &Registry, request: &Request) -> Result<Chosen> {
    let reference = &request.reference;
    let (bytes, digest) = registry.manifest(request, reference, ACCEPT).await?;
    let media_type = media_type_of(&bytes, &digest)?;
    if media_type != OCI_IMAGE_INDEX_MEDIA_TYPE && media_type != IMAGE_MANIFEST_LIST_MEDIA_TYPE {
        return Ok(Chosen {
            bytes,
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
    let (bytes, _) = registry.manifest(request, &by_digest, ACCEPT).await?;
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
        bytes,
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

/// Downloads one blob into the layout within its deadline.
async fn download(
    registry: &Registry,
    request: &Request,
    desc: &OciDescriptor,
    layout: &Layout,
    progress: &mut Progress,
    label: String,
) -> Result<()> {
    let size = u64::try_from(desc.size)
        .with_context(|| format!("blob {} has a negative size", desc.digest))?;
    let what = format!(
        "blob {} ({}) from {}",
        desc.digest,
        label.split(' ').take(2).collect::<Vec<_>>().join(" "),
        request.reference.resolve_registry()
    );
    let limit = registry.deadlines.for_size(size);
    let describe = registry.deadlines.describe(size);
    within(limit, &what, &describe, async {
        let response = respond(registry, request, desc).await?;
        receive(response, desc, size, layout, progress, label).await
    })
    .await
}

/// The response that will carry the blob: the registry's, or with
/// `--allow-foreign-layers` and a registry that does not serve it, a foreign URL's.
async fn respond(registry: &Registry, request: &Request, desc: &OciDescriptor) -> Result<Response> {
    let step = Step::Blob(&desc.digest);
    let mut response = registry.blob(request, &desc.digest).await?;
    if response.status() == StatusCode::OK {
        return Ok(response);
    }
    let urls = foreign_urls(desc);
    if urls.is_empty() {
        registry::check_status(&mut response, request, step).await?;
        return Ok(response);
    }
    let hosts: Vec<String> = urls.iter().map(host_of).collect();
    if !request.allow_foreign_layers {
        bail!(
            "{} answered {} for blob {}, whose descriptor names foreign URLs on {} instead; \
             sbx does not fetch layers from other hosts unless asked: pass \
             --allow-foreign-layers if you trust them; nothing was imported",
            host_of(response.url()),
            response.status(),
            desc.digest,
            hosts.join(", ")
        );
    }
    drop(response);
    let mut failures = Vec::new();
    for url in &urls {
        match registry.foreign(url).await {
            Ok(response) if response.status() == StatusCode::OK => return Ok(response),
            Ok(mut response) => {
                let body = registry::error_body(&mut response).await;
                failures.push(format!(
                    "{} answered {} ({})",
                    host_of(response.url()),
                    response.status(),
                    registry::quote(&body)
                ));
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    bail!(
        "blob {} is neither on {} nor at its foreign URLs: {}; nothing was imported",
        desc.digest,
        request.reference.resolve_registry(),
        failures.join("; ")
    )
}

/// A layer's `urls` that sbx would fetch: http and https only.
fn foreign_urls(desc: &OciDescriptor) -> Vec<Url> {
    desc.urls
        .iter()
        .flatten()
        .filter_map(|u| Url::parse(u).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .collect()
}

/// Streams the body into the layout, cut off at the declared size and checked against
/// the digest before the blob gets its name.
async fn receive(
    mut response: Response,
    desc: &OciDescriptor,
    size: u64,
    layout: &Layout,
    progress: &mut Progress,
    label: String,
) -> Result<()> {
    let source = host_of(response.url());
    if let Some(announced) = response.content_length().filter(|&n| n > size) {
        bail!(
            "{source} announces {announced} bytes for blob {}, whose descriptor says {size}; \
             nothing was imported",
            desc.digest
        );
    }
    let mut blob = layout.blob(&desc.digest, size)?;
    blob.served_by(&source);
    progress.start(label, size);
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            anyhow!(
                "the download of blob {} from {source} broke off ({:#}); nothing was imported",
                desc.digest,
                anyhow::Error::new(e)
            )
        })?;
        let Some(chunk) = chunk else { break };
        blob.write(&chunk)?;
        progress.advance(chunk.len() as u64);
    }
    if blob.written() == size {
        progress.finish();
    }
    blob.commit()
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
