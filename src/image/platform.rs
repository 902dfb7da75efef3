//! Platforms in OCI's names (the GOOS and GOARCH values image indexes use): this host's, or
//! the one `--platform` asks for. The one table of architecture names, for both the
//! manifest `sbx image import` picks from an OCI index and the one `sbx pull` fetches.

use std::fmt;

use anyhow::{bail, Result};

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

    /// Whether an index entry's platform, as the index spells it, is this one.
    pub fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        os == self.os
            && arch == self.arch
            && (self.variant.is_none() || variant == self.variant.as_deref())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_arch_names_become_oci_names() {
        assert_eq!(oci_arch("x86_64"), "amd64");
        assert_eq!(oci_arch("aarch64"), "arm64");
        assert_eq!(oci_arch("i686"), "386");
        assert_eq!(oci_arch("loongarch64"), "loong64");
        assert_eq!(oci_arch("s390x"), "s390x");
        assert_eq!(oci_arch("riscv64"), "riscv64");
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        assert!(!host.arch.contains('_'), "{host}");
    }

    #[test]
    fn variants_match_only_when_asked_for() {
        let any = Platform::parse("linux/arm64").unwrap();
        assert!(any.matches("linux", "arm64", Some("v8")));
        assert!(any.matches("linux", "arm64", None));
        assert!(!any.matches("linux", "amd64", None));
        let v8 = Platform::parse("linux/aarch64/v8").unwrap();
        assert!(v8.matches("linux", "arm64", Some("v8")));
        assert!(!v8.matches("linux", "arm64", Some("v7")));
        assert!(!v8.matches("linux", "arm64", None));
    }

    #[test]
    fn bad_platform_spellings_are_rejected() {
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", ""] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }
}
