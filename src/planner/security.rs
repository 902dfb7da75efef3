//! The hardening layers from the profile and the overrides: capabilities, the seccomp
//! program (compiled here, before clone), Landlock rules, kernel path masks.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::Overrides;
use crate::plan::net::NetPlan;
use crate::plan::security::SecurityPlan;
use crate::profile::{LandlockMode, NetworkMode, SecuritySpec};
use crate::security::{caps, landlock, seccomp, sockets};

/// `writable`: every writable mount destination inside, and whether it is a directory.
pub fn plan(
    spec: &SecuritySpec,
    args: &Overrides,
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
