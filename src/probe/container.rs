//! What a container around sbx can take away: a new `/proc` (the kernel refuses one while
//! parts of the old one are covered, as container runtimes mask them), and user namespaces
//! (a seccomp profile that denies `unshare(CLONE_NEWUSER)`, as docker's default does).

use nix::sched::CloneFlags;

use super::child::in_child;
use super::mounts::MountInfo;
use super::userns::{enter_userns, needs_userns};
use super::Check;

/// What to add to the container's options so that sbx can mount a new /proc.
pub const UNMASK_FIX: &str = "run the container with /proc unmasked: podman `--security-opt \
    unmask=ALL`, docker `--security-opt systempaths=unconfined`, Kubernetes \
    `securityContext: {procMount: Unmasked}`";

pub(super) fn proc_mount(mounts: &[MountInfo]) -> Check {
    let verdict = in_child(|| {
        enter_userns(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID)?;
        // The new pid namespace is its children's: a new /proc is mounted by one of them.
        in_child(|| {
            let flags = crate::sys::MOUNT_ATTR_NOSUID
                | crate::sys::MOUNT_ATTR_NODEV
                | crate::sys::MOUNT_ATTR_NOEXEC;
            crate::sys::new_mount(c"proc", &[], flags)
                .map(drop)
                .map_err(|e| format!("mount a new /proc: {e}"))
        })
    });
    let Err(why) = verdict else {
        return Check::pass("proc_mount", "a new /proc mounts in a new pid namespace");
    };
    if let Some(fix) = needs_userns(&why) {
        return Check::fail("proc_mount", why, fix);
    }
    let masked = masked_proc(mounts);
    if masked.is_empty() {
        let fix = "a security module or container may forbid mounting /proc; run sbx where \
                   it can mount one (`unshare -Urpf --mount-proc true` must work)";
        return Check::fail("proc_mount", why, fix);
    }
    let detail = format!(
        "{why}: /proc is partly covered ({}), as a container runtime masks it, and the kernel \
         then refuses a new one",
        masked.join(", ")
    );
    Check::fail("proc_mount", detail, UNMASK_FIX)
}

/// The mount points below /proc of this process's mount namespace, for the error of a
/// refused /proc mount (`sbx run`): what a container runtime masked.
pub fn masked_proc_here() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    masked_proc(&super::mounts::parse_mountinfo(&text))
}

/// Mount points below /proc: what a container runtime put over parts of it.
pub(super) fn masked_proc(mounts: &[MountInfo]) -> Vec<String> {
    let mut out: Vec<String> = mounts
        .iter()
        .map(|m| m.mount_point.clone())
        .filter(|p| p.starts_with("/proc/") && !p.starts_with("/proc/sys/fs/binfmt_misc"))
        .collect();
    out.sort();
    out.dedup();
    out.truncate(4);
    out
}
