//! Which manifest of a multi-platform image (an OCI index or Docker manifest list) to
//! pull: this host's OS and architecture in OCI's names, or the one `--platform` asks for.

use std::fmt;

use anyhow::{bail, Result};
use oci_client::manifest::ImageIndexEntry;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    /// None matches any variant (arm64 images say "v8" or nothing).
    pub variant: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// This host, with Rust's architecture names mapped to OCI's (GOARCH) names.
    pub fn host() -> Platform {
        Platform {
            os: "linux".to_string(),
            arch: oci_arch(std::env::consts::ARCH).to_string(),
            variant: None,
        }
    }

    /// `OS/ARCH[/VARIANT]`, as docker and podman spell `--platform`.
    pub fn parse(text: &str) -> Result<Platform> {
        let parts: Vec<&str> = text.split('/').collect();
        let ok = (2..=3).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty());
        if !ok {
            bail!("--platform {text:?}: expected OS/ARCH or OS/ARCH/VARIANT, such as linux/arm64");
        }
        Ok(Platform {
            os: parts[0].to_string(),
            arch: oci_arch(parts[1]).to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    fn matches(&self, entry: &ImageIndexEntry) -> bool {
        let Some(p) = &entry.platform else {
            return false;
        };
        p.os.to_string() == self.os
            && p.architecture.to_string() == self.arch
            && (self.variant.is_none() || p.variant == self.variant)
    }
}

/// OCI (Go) architecture names for Rust's `std::env::consts::ARCH` values; OCI names
/// pass through unchanged.
fn oci_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" | "i386" | "i686" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        other => other,
    }
}

/// The entry of `entries` for `wanted`, or an error listing the platforms the image has.
pub fn choose<'a>(
    entries: &'a [ImageIndexEntry],
    wanted: &Platform,
    image: &str,
) -> Result<&'a ImageIndexEntry> {
    if let Some(entry) = entries.iter().find(|e| wanted.matches(e)) {
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
    fn rust_arch_names_become_oci_names() {
        assert_eq!(oci_arch("x86_64"), "amd64");
        assert_eq!(oci_arch("aarch64"), "arm64");
        assert_eq!(oci_arch("s390x"), "s390x");
        assert_eq!(oci_arch("riscv64"), "riscv64");
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        assert!(!host.arch.contains('_'), "{host}");
    }

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

    #[test]
    fn bad_platform_spellings_are_rejected() {
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", ""] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }
}
