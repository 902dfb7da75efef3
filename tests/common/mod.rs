//! Shared harness for the integration tests: find and run the sbx binary, private temp
//! directories, host feature checks through `sbx check --json`, and /proc scans.
//!
//! The tests run the real binary as an unprivileged user (ci/test.sh runs them as a user
//! with a subuid range, and the `nosubuid_` tests as one without). Every run has a timeout,
//! stdin is /dev/null unless a test gives input (so a test started from a terminal does
//! not get a pty session by accident), and every test gets its own working directory.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod landlock;
pub mod named;
pub mod oci;
pub mod podman;

use std::time::Duration;

/// How long one sandbox run may take before the test kills it and fails. Generous: the
/// test machines have 2 cores and run tests in parallel.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Prefix of every temporary path the harness creates, so leftover checks can tell the
/// harness's own files from files sbx left behind.
pub const PREFIX: &str = "sbx-test-";

mod binary;
mod features;
mod host;
mod process;
mod tmp;

// Each test binary uses some of these.
#[allow(unused_imports)]
pub use {binary::*, features::*, host::*, process::*, tmp::*};
