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

/// The exit codes, for callers outside the runtime; they are decided in `crate::exit`.
pub mod exit {
    pub use crate::exit::{CANNOT_EXECUTE, NOT_FOUND, SBX_ERROR};
}
