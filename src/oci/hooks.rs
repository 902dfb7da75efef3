//! Hooks, run at the runtime spec's points with the container's state on stdin, each with
//! its own environment and timeout.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::Hook;

use super::state::{OciState, Status};

/// Runs `hooks` in order; the first failure stops them and is the error.
pub fn run(hooks: &[Hook], phase: &str, state: &OciState, status: Status) -> Result<()> {
    let mut state = state.clone();
    state.status = status;
    let json = serde_json::to_vec(&state)?;
    for hook in hooks {
        run_one(hook, &json).with_context(|| format!("{phase} hook {}", hook.path().display()))?;
    }
    Ok(())
}

/// Runs them all, reporting failures as warnings (poststart, poststop).
pub fn run_warn(hooks: &[Hook], phase: &str, state: &OciState, status: Status) -> Vec<String> {
    let mut warnings = Vec::new();
    for hook in hooks {
        if let Err(e) = run(std::slice::from_ref(hook), phase, state, status) {
            warnings.push(format!("{e:#}"));
        }
    }
    warnings
}

fn run_one(hook: &Hook, state: &[u8]) -> Result<()> {
    let mut cmd = Command::new(hook.path());
    if let Some(args) = hook.args() {
        if let Some((arg0, rest)) = args.split_first() {
            cmd.arg0(arg0).args(rest);
        }
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    // Hooks write to our stderr: stdout may be what the caller parses.
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    cmd.stdin(Stdio::piped()).stdout(Stdio::from(stderr));
    let mut child = cmd.spawn().context("cannot run it")?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its state is not an error.
        let _ = stdin.write_all(state);
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("failed: {status}");
            }
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {} s", hook.timeout().unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
