//! Which manifest of a multi-platform image (an OCI index or Docker manifest list) to
//! pull: this host's OS and architecture in OCI's names, or the one `--platform` asks for.
//! The names are `image::platform`'s, which `sbx image import` picks by too.

use anyhow::{bail, Result};
use oci_client::manifest::ImageIndexEntry;

pub use crate::image::platform::Platform;

/// Whether `entry` is for `wanted`; an entry naming no platform is for none.
fn matches(wanted: &Platform, entry: &ImageIndexEntry) -> bool {
    let Some(p) = &entry.platform else {
        return false;
    };
    wanted.matches(
        &p.os.to_string(),
        &p.architecture.to_string(),
        p.variant.as_deref(),
    )
}

/// The entry of `entries` for `wanted`, or an error listing the platforms the image has.
pub fn choose<'a>(
    entries: &'a [ImageIndexEntry],
    wanted: &Platform,
    image: &str,
) -> Result<&'a ImageIndexEntry> {
    if let Some(entry) = entries.iter().find(|e| matches(wanted, e)) {
        return Ok(entry);
    }
    let available: Vec<String> = entries
        .iter()
        .filter_map(|e| e.platform.as_ref())
        // Attestation manifests (buildkit's provenance) say unknown/unknown.
        .filter(|p| p.os.to_string() != "unknown")
        .map(|p| {
            let mut s = format!("{}/{}", p.os, p.architecture);
            if let Some(v) = &p.variant {
                s.push('/');
                s.push_str(v);
            }
            s
        })
        .collect();
    let list = if available.is_empty() {
        "none".to_string()
    } else {
        available.join(", ")
    };
    bail!("{image} has no image for {wanted}; it has: {list}; pick one with --platform OS/ARCH")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(json: &str) -> Vec<ImageIndexEntry> {
        serde_json::from_str(json).unwrap()
    }

    const INDEX: &str = r#"[
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:aa", "size": 1,
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:bb", "size": 1,
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:cc", "size": 1,
         "platform": {"os": "unknown", "architecture": "unknown"}}
    ]"#;

    #[test]
    fn host_and_requested_platforms_are_picked() {
        let list = entries(INDEX);
        let amd64 = Platform::parse("linux/amd64").unwrap();
        assert_eq!(choose(&list, &amd64, "img").unwrap().digest, "sha256:bb");
        let arm = Platform::parse("linux/aarch64").unwrap();
        assert_eq!(choose(&list, &arm, "img").unwrap().digest, "sha256:aa");
        let arm_v8 = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(choose(&list, &arm_v8, "img").unwrap().digest, "sha256:aa");
    }

    #[test]
    fn no_match_lists_what_the_image_has() {
        let list = entries(INDEX);
        let s390x = Platform::parse("linux/s390x").unwrap();
        let err = choose(&list, &s390x, "quay.io/x:1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("quay.io/x:1 has no image for linux/s390x"),
            "{err}"
        );
        assert!(err.contains("linux/arm64/v8, linux/amd64"), "{err}");
        assert!(!err.contains("unknown"), "{err}");
    }
}
