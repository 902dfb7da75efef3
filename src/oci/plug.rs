//! Where the OCI config's seccomp profile and sysctls meet the modules that turn them into
//! what the kernel takes (`oci/seccomp`, `oci/resources`): one call site each, before any
//! namespace exists. Cgroup resources go through `oci/cgroups`.

use std::collections::HashMap;

use anyhow::Result;
use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp};
use seccompiler::BpfProgram;

/// The config's seccomp profile, compiled, with its `SECCOMP_FILTER_FLAG_*` bits.
pub struct Filter {
    pub program: BpfProgram,
    pub flags: u32,
}

/// The config's seccomp profile as a BPF program, compiled before any namespace exists.
pub fn seccomp(profile: Option<&LinuxSeccomp>) -> Result<Option<Filter>> {
    let Some(profile) = profile else {
        return Ok(None);
    };
    Ok(Some(Filter {
        program: super::seccomp::compile(profile)?,
        flags: super::seccomp::flags(profile)?,
    }))
}

/// runc's rule: a sysctl only where the container has the namespace that isolates it.
pub fn check_sysctl(
    sysctl: &HashMap<String, String>,
    netns: bool,
    ipcns: bool,
    utsns: bool,
) -> Result<()> {
    let own: Vec<LinuxNamespaceType> = [
        (netns, LinuxNamespaceType::Network),
        (ipcns, LinuxNamespaceType::Ipc),
        (utsns, LinuxNamespaceType::Uts),
    ]
    .into_iter()
    .filter_map(|(has, ns)| has.then_some(ns))
    .collect();
    for key in sysctl.keys() {
        super::resources::check_sysctl(key, &own)?;
    }
    Ok(())
}
