//! `--systemd-cgroup`: the container's cgroup is a transient scope unit that systemd makes
//! and owns, as runc's systemd driver does. linux.cgroupsPath is `slice:prefix:name`; the
//! container process goes into the scope `prefix-name.scope` in `slice`, started through
//! systemd's D-Bus API (`StartTransientUnit`, with `PIDs`, `Delegate=yes`, `Slice`) on the
//! system bus as root, on the caller's session bus otherwise (rootless podman's default
//! `cgroup_manager = "systemd"`). The limits go in twice: the few systemd knows as unit
//! properties (so that a `daemon-reload` does not undo them), and every linux.resources
//! file written into the scope's cgroup once it exists, as the cgroupfs manager writes
//! them into its leaf.
//!
//! D-Bus is spoken through `busctl`, systemd's own client, which is wherever systemd is:
//! no bus library in sbx-oci, and the bus's authentication done as systemd does it (also
//! from inside rootless podman's user namespace).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The fix named whenever systemd cannot be used.
const FIX: &str = "run without --systemd-cgroup (podman: --cgroup-manager cgroupfs, or \
                   cgroup_manager = \"cgroupfs\" in containers.conf; containerd: \
                   SystemdCgroup = false)";

/// How long systemd may take to start the scope (under emulation, seconds).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The unit a container is in, as `create` records it for `delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// `prefix-name.scope`.
    pub name: String,
    /// On the caller's session bus (its user manager), not the system bus.
    pub user: bool,
}

/// The scope to ask for: the unit and the slice it goes in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub unit: Unit,
    pub slice: String,
}

/// The scope for linux.cgroupsPath (`slice:prefix:name`; empty parts take runc's defaults:
/// `system.slice` as root, `user.slice` for the user manager, prefix `sbx-oci`, the
/// container's id as the name). `user`: the caller's user manager, not the system's.
pub fn scope(path: Option<&Path>, id: &str, user: bool) -> Result<Scope> {
    let text = path.map(|p| p.to_string_lossy().into_owned());
    let text = text.as_deref().unwrap_or("");
    let parts: Vec<&str> = if text.is_empty() {
        vec!["", "", ""]
    } else {
        text.split(':').collect()
    };
    let [slice, prefix, name] = parts[..] else {
        bail!(
            "linux.cgroupsPath {text:?} is not a systemd slice:prefix:name (with --systemd-cgroup, \
             e.g. \"user.slice:sbx:mycontainer\"); give one, or {FIX}"
        );
    };
    let slice = match slice {
        "" if user => "user.slice",
        "" => "system.slice",
        s => s,
    };
    let prefix = if prefix.is_empty() { "sbx-oci" } else { prefix };
    let name = if name.is_empty() { id } else { name };
    if !slice.ends_with(".slice") || !unit_chars(slice) || slice.starts_with('-') {
        bail!("linux.cgroupsPath {text:?}: {slice:?} is not a systemd slice name (such as user.slice)");
    }
    if name.ends_with(".slice") {
        bail!(
            "linux.cgroupsPath {text:?}: a slice as the container's unit is not supported; \
             name a scope (slice:prefix:name)"
        );
    }
    let unit = format!("{prefix}-{name}.scope");
    if !unit_chars(&unit) || unit.len() > 255 {
        bail!(
            "linux.cgroupsPath {text:?}: {unit:?} is not a systemd unit name (letters, digits, \
             and \":-_.\\\" only, at most 255 characters)"
        );
    }
    let unit = Unit { name: unit, user };
    Ok(Scope {
        unit,
        slice: slice.to_string(),
    })
}

/// What systemd allows in a unit name, `@` aside (templates make no sense here).
fn unit_chars(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\".contains(c))
}

/// The cgroup v2 files that have a unit property, as (property, D-Bus signature, value):
/// systemd writes these files itself when it reloads, so it must know the values.
pub fn properties(files: &[(String, String)]) -> Vec<(&'static str, &'static str, String)> {
    // systemd's "infinity" for a u64 property.
    let number = |v: &str| {
        if v == "max" {
            Some(u64::MAX)
        } else {
            v.parse::<u64>().ok()
        }
    };
    let mut out = Vec::new();
    for (file, value) in files {
        let property = match file.as_str() {
            "memory.max" => "MemoryMax",
            "memory.low" => "MemoryLow",
            "memory.swap.max" => "MemorySwapMax",
            "pids.max" => "TasksMax",
            "cpu.weight" => "CPUWeight",
            "io.weight" => "IOWeight",
            "cpu.max" => {
                // "QUOTA PERIOD" in microseconds; systemd takes the quota per second.
                let mut it = value.split_whitespace();
                let (quota, period) = (it.next().and_then(number), it.next().and_then(number));
                if let (Some(quota), Some(period)) = (quota, period.filter(|p| *p > 0)) {
                    let per_sec = quota
                        .checked_mul(1_000_000)
                        .map_or(u64::MAX, |q| q / period);
                    let per_sec = if quota == u64::MAX { u64::MAX } else { per_sec };
                    out.retain(|p: &(&str, &str, String)| p.0 != "CPUQuotaPerSecUSec");
                    out.push(("CPUQuotaPerSecUSec", "t", per_sec.to_string()));
                }
                continue;
            }
            _ => continue,
        };
        if let Some(n) = number(value) {
            // Later entries win (linux.resources.unified comes last), as in the files.
            out.retain(|p: &(&str, &str, String)| p.0 != property);
            out.push((property, "t", n.to_string()));
        }
    }
    out
}

/// Puts `pid` into a new transient scope and applies `files` (and the device rules, as
/// root) to its cgroup; the scope's cgroup directory. On failure nothing is left: the unit
/// is stopped again.
pub fn join(
    scope: &Scope,
    pid: i32,
    files: &[(String, String)],
    devices: Option<&[super::devices::Rule]>,
) -> Result<PathBuf> {
    let busctl = busctl()?;
    start(&busctl, scope, pid, files)?;
    let joined = wait_for(pid, &scope.unit.name).and_then(|cgroup| {
        // A weight whose controller systemd did not delegate is skipped with a warning, a
        // limit is an error.
        super::cgroups::v2::write_files(&cgroup, files, super::cgroups::v2::Grantor::Systemd)?;
        if let Some(rules) = devices {
            super::devices::attach(&cgroup, rules)?;
        }
        Ok(cgroup)
    });
    if joined.is_err() {
        stop(&scope.unit, None);
    }
    joined
}

/// Stops the unit if it is still there (`delete`, and a create that failed part way), and
/// waits a while for systemd to remove its cgroup, when given.
pub fn stop(unit: &Unit, cgroup: Option<&Path>) {
    let Ok(busctl) = busctl() else {
        return;
    };
    let mut cmd = bus(&busctl, unit.user);
    cmd.args(["StopUnit", "ss", &unit.name, "replace"]);
    // "not loaded": it ended with its last process and systemd collected it (a failed one
    // too: CollectMode).
    let _ = cmd.output();
    let deadline = Instant::now() + Duration::from_secs(2);
    while cgroup.is_some_and(Path::exists) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn busctl() -> Result<PathBuf> {
    ["/usr/bin/busctl", "/bin/busctl"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .with_context(|| {
            format!("--systemd-cgroup needs systemd's busctl, which is not installed; {FIX}")
        })
}

/// `busctl call` of a method of systemd's manager, on the system or the session bus.
fn bus(busctl: &Path, user: bool) -> Command {
    let mut cmd = Command::new(busctl);
    if user {
        cmd.arg("--user");
    }
    cmd.args([
        "--quiet",
        "call",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
    ]);
    cmd.stdin(std::process::Stdio::null());
    cmd
}

fn start(busctl: &Path, scope: &Scope, pid: i32, files: &[(String, String)]) -> Result<()> {
    let props = properties(files);
    let mut cmd = bus(busctl, scope.unit.user);
    let description = format!("sbx-oci container {}", scope.unit.name);
    cmd.args([
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        &scope.unit.name,
        "fail",
    ]);
    cmd.arg((5 + props.len()).to_string());
    cmd.args(["PIDs", "au", "1", &pid.to_string()]);
    cmd.args(["Delegate", "b", "true"]);
    cmd.args(["Slice", "s", &scope.slice]);
    cmd.args(["Description", "s", &description]);
    // Gone once it ends, even after an OOM kill: no failed unit to reset by hand.
    cmd.args(["CollectMode", "s", "inactive-or-failed"]);
    for (name, signature, value) in &props {
        cmd.args([name, signature, value.as_str()]);
    }
    cmd.arg("0");
    let which = if scope.unit.user {
        "your systemd user manager on the session bus"
    } else {
        "systemd on the system bus"
    };
    let out = cmd
        .output()
        .with_context(|| format!("run {}", busctl.display()))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        bail!(
            "--systemd-cgroup: {which} did not start the scope {} in {}: {}; {}",
            scope.unit.name,
            scope.slice,
            why.trim(),
            if scope.unit.user {
                format!(
                    "is a user manager running (loginctl enable-linger), with \
                         DBUS_SESSION_BUS_ADDRESS or $XDG_RUNTIME_DIR/bus set? Else {FIX}"
                )
            } else {
                FIX.to_string()
            }
        );
    }
    Ok(())
}

/// The scope's cgroup, once systemd has moved `pid` into it (the job ran).
fn wait_for(pid: i32, unit: &str) -> Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mount = crate::supervisor::cgroup::cgroup2_mount(&mountinfo)
        .context("--systemd-cgroup: no cgroup2 filesystem is mounted")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .with_context(|| format!("read the cgroup of the container process {pid}"))?;
        let path = crate::supervisor::cgroup::own_cgroup(&text).unwrap_or_default();
        if Path::new(&path).file_name().is_some_and(|n| n == unit) {
            return Ok(mount.join(path.trim_start_matches('/')));
        }
        if Instant::now() > deadline {
            bail!(
                "--systemd-cgroup: systemd did not move the container process into {unit} \
                 within {} s (it is in {path}); see `systemctl status {unit}`",
                START_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests;
