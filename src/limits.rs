//! Resource limits at run time: the rlimits applied before execve, the systemd scope sbx
//! runs itself again in when it has no delegated cgroup, and `-v`'s description. The
//! limits are planned by `planner::limits` (types in `plan::limits`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

pub use crate::plan::limits::{CgroupLimits, LimitsPlan, Rlimit};

/// Set in the environment of sbx re-run inside a systemd scope, so it does not loop.
pub const IN_SCOPE_ENV: &str = "SBX_IN_SYSTEMD_SCOPE";

/// SIGTERM at the timeout, SIGKILL this much later.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(5);

/// `systemd-run`, when a systemd user manager answers for this user (and we are not already
/// running in a scope it made for us).
pub fn systemd_user_manager() -> Option<PathBuf> {
    if std::env::var_os(IN_SCOPE_ENV).is_some() {
        return None;
    }
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)?;
    if !runtime.join("systemd/private").exists() {
        return None;
    }
    ["/usr/bin/systemd-run", "/bin/systemd-run"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Replaces this process with sbx itself, same arguments, inside a transient systemd scope
/// with `Delegate=yes`; returns only on failure.
pub fn rerun_in_scope(systemd_run: &std::path::Path) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let me = match std::env::current_exe() {
        Ok(path) => path,
        Err(e) => return anyhow::anyhow!("cannot find the sbx binary to run it again: {e}"),
    };
    let err = std::process::Command::new(systemd_run)
        .args([
            "--user",
            "--scope",
            "--quiet",
            "--collect",
            "-p",
            "Delegate=yes",
            "--",
        ])
        .arg(me)
        .args(std::env::args_os().skip(1))
        .env(IN_SCOPE_ENV, "1")
        .exec();
    anyhow::anyhow!(
        "cannot run {} to get a delegated cgroup from the systemd user manager: {err}",
        systemd_run.display()
    )
}

/// A limit as `ulimit` shows it.
pub fn show(v: u64) -> String {
    if v == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// In the command's process before execve.
pub fn apply_rlimits(rlimits: &[Rlimit]) -> Result<()> {
    for r in rlimits {
        nix::sys::resource::setrlimit(r.resource, r.soft, r.hard).with_context(|| {
            format!("set rlimit {} to {}:{}", r.name, show(r.soft), show(r.hard))
        })?;
    }
    Ok(())
}

/// For `sbx run -v`.
pub fn describe(plan: &LimitsPlan) -> String {
    let mut parts = Vec::new();
    let c = &plan.cgroup;
    if let Some(m) = c.memory {
        parts.push(format!("memory {m}"));
    }
    if let Some(m) = c.memory_swap {
        parts.push(format!("swap {m}"));
    }
    if let Some((q, p)) = c.cpu {
        parts.push(format!("cpu {q}/{p}"));
    }
    if let Some(n) = c.pids {
        parts.push(format!("pids {n}"));
    }
    if let Some(w) = c.io_weight {
        parts.push(format!("io.weight {w}"));
    }
    let cgroup = match (&plan.site, c.is_empty()) {
        (_, true) => "no cgroup limits".to_string(),
        (Some(site), false) => format!(
            "{} in a leaf under {}",
            parts.join(", "),
            site.parent.display()
        ),
        (None, false) => format!("{} NOT enforced (no delegated cgroup)", parts.join(", ")),
    };
    let rl: Vec<String> = plan
        .rlimits
        .iter()
        .map(|r| format!("{}={}:{}", r.name, show(r.soft), show(r.hard)))
        .collect();
    let timeout = plan
        .timeout
        .map(|t| format!("; timeout {t:?}"))
        .unwrap_or_default();
    format!(
        "{cgroup}; rlimits: {}{timeout}",
        if rl.is_empty() {
            "inherited".into()
        } else {
            rl.join(" ")
        }
    )
}
