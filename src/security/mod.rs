//! Hardening layers, planned before clone and applied in the command's own process, in
//! this order, last before execve: capabilities, no_new_privs, Landlock, seccomp (last, so
//! the filter need not allow anything the other steps use).

mod bpf;
pub mod caps;
pub mod landlock;
pub mod seccomp;
pub mod sockets;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::cli::RunArgs;
use crate::plan::net::NetPlan;
pub use crate::plan::security::SecurityPlan;
use crate::profile::{LandlockMode, NetworkMode, SecuritySpec};

/// `writable`: every writable mount destination inside, and whether it is a directory.
pub fn plan(
    spec: &SecuritySpec,
    args: &RunArgs,
    inside_uid: u32,
    network: &NetPlan,
    writable: Vec<(PathBuf, bool)>,
) -> Result<SecurityPlan> {
    let allow_nested = args.allow_nested || spec.seccomp.allow_nested.unwrap_or(false);
    let caps = caps::plan(
        inside_uid,
        spec.capabilities.add.iter().chain(&args.cap_add),
        spec.capabilities.drop.iter().chain(&args.cap_drop),
    )?;
    let seccomp = seccomp::plan(&spec.seccomp, args.seccomp.as_deref(), allow_nested)?;
    let mut mode = match &args.landlock {
        Some(m) => m.parse().context("--landlock")?,
        None => spec.landlock.unwrap_or_default(),
    };
    if allow_nested {
        // A Landlock domain forbids every mount, which a nested sandbox needs.
        if mode == LandlockMode::Required {
            bail!(
                "nested sandboxes (--allow-nested or security.seccomp.allow_nested) cannot run \
                 under Landlock, which forbids mounts; drop one of the two"
            );
        }
        mode = LandlockMode::Off;
    }
    let tcp = match network.mode {
        NetworkMode::None => landlock::Tcp::Deny,
        _ if network.allow_tcp_connect.is_empty() => landlock::Tcp::Any,
        _ => landlock::Tcp::ConnectOnly(network.allow_tcp_connect.clone()),
    };
    let kernel_abi = crate::probe::landlock_abi();
    if let landlock::Tcp::ConnectOnly(ports) = &tcp {
        if mode == LandlockMode::Off || kernel_abi.unwrap_or(0) < 4 {
            bail!(
                "network.allow_tcp_connect {ports:?} needs Landlock's network rules (ABI 4 or \
                 newer, and Landlock not turned off); {}",
                match mode {
                    LandlockMode::Off => "Landlock is off here".to_string(),
                    _ => format!("this kernel has ABI {}", kernel_abi.unwrap_or(0)),
                }
            );
        }
    }
    let landlock = landlock::plan(mode, writable, tcp, kernel_abi)?;
    Ok(SecurityPlan {
        caps,
        seccomp,
        landlock,
        mask_kernel_paths: spec.mask_kernel_paths.unwrap_or(true) && !allow_nested,
        allow_nested,
        host_sockets: if spec.hide_host_sockets.unwrap_or(true) {
            sockets::host_sockets()
        } else {
            Vec::new()
        },
    })
}

/// In the command's process, after its working directory is set: the last steps before
/// execve.
pub fn apply(plan: &SecurityPlan) -> Result<()> {
    caps::apply(&plan.caps)?;
    nix::sys::prctl::set_no_new_privs().context("PR_SET_NO_NEW_PRIVS")?;
    landlock::apply(&plan.landlock)?;
    if let Some(filter) = &plan.seccomp {
        seccomp::apply(filter)?;
    }
    Ok(())
}

/// Lines for `sbx run -v`.
pub fn describe(plan: &SecurityPlan) -> Vec<String> {
    let caps = if plan.caps.set.is_empty() {
        "none".to_string()
    } else {
        format!(
            "{} (0x{:016x})",
            caps::names(&plan.caps.set).join(" "),
            caps::mask(&plan.caps.set)
        )
    };
    let seccomp = match &plan.seccomp {
        Some(s) => format!(
            "on: {} rules deny with errno {}{}",
            s.denied,
            s.errno,
            if plan.allow_nested {
                "; nested namespaces allowed"
            } else {
                ""
            }
        ),
        None => "OFF: the kernel's whole system call surface is reachable".to_string(),
    };
    vec![
        format!("capabilities: {caps}"),
        "no_new_privs: on".to_string(),
        format!("landlock: {}", plan.landlock.outcome()),
        format!("seccomp: {seccomp}"),
        format!(
            "kernel paths: {}",
            if plan.mask_kernel_paths {
                "masked"
            } else {
                "NOT masked"
            }
        ),
    ]
}
