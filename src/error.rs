//! Error types that callers need to tell apart. Everything else is a plain `anyhow::Error`.

use std::fmt;

/// This host lacks something sbx needs (a kernel feature, a helper, a device permission).
/// `main` prints it with its own prefix; tests and `sbx check` use it to name the gap.
#[derive(Debug)]
pub struct HostFeature {
    pub feature: &'static str,
    pub message: String,
}

impl HostFeature {
    pub fn new(feature: &'static str, message: impl Into<String>) -> Self {
        HostFeature {
            feature,
            message: message.into(),
        }
    }
}

impl fmt::Display for HostFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for HostFeature {}

/// Prints an error the way every sbx binary does: one line, the host's gap named.
pub fn report(err: &anyhow::Error) {
    if let Some(feature) = err.downcast_ref::<HostFeature>() {
        eprintln!(
            "sbx: error: this host lacks {}: {}",
            feature.feature, feature.message
        );
    } else {
        eprintln!("sbx: error: {err:#}");
    }
}

/// Exit codes, as podman uses them.
pub mod exit {
    /// sbx itself failed: bad option, bad profile, setup failure.
    pub const SBX_ERROR: i32 = 125;
    /// The command exists but cannot be executed.
    pub const CANNOT_EXECUTE: i32 = 126;
    /// The command was not found.
    pub const NOT_FOUND: i32 = 127;
}
