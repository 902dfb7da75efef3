//! Hardening layers, planned before clone (`planner::security`, which compiles the seccomp
//! program and decides the Landlock rules here) and applied in the command's own process, in
//! this order, last before execve: capabilities, no_new_privs, Landlock, seccomp (last, so
//! the filter need not allow anything the other steps use).

pub mod bpf;
pub mod caps;
pub mod landlock;
pub mod seccomp;
pub mod seccomp_rules;
pub mod sockets;

pub use crate::plan::security::SecurityPlan;

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
