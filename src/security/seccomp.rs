//! The seccomp filter: what Docker's default profile denies a container without
//! capabilities, compiled before clone and installed last before execve.
//!
//! Three BPF programs are stacked (the kernel applies the strictest answer):
//! - the deny list, failing with EPERM (or the profile's errno);
//! - clone3 failing with ENOSYS, so libc falls back to clone, whose flags can be inspected;
//! - an ABI guard killing x32 calls (seccompiler's own arch check already kills foreign
//!   architectures such as i386 `int 0x80`).

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use seccompiler::{BpfProgram, TargetArch};
use serde_json::{json, Value};

use crate::profile::SeccompSpec;

/// Denied outright.
const DENY: &[&str] = &[
    // keyrings are not namespaced
    "add_key",
    "keyctl",
    "request_key",
    // kernel attack surface
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
    "perf_event_open",
    "lookup_dcookie",
    "fanotify_init",
    // the machine itself
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "iopl",
    "ioperm",
    "vhangup",
    "open_by_handle_at",
    "setdomainname",
    "sethostname",
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    "get_mempolicy",
    "mbind",
    "set_mempolicy",
    "migrate_pages",
    "move_pages",
    // obsolete
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "nfsservctl",
    "getpmsg",
    "putpmsg",
    "afs_syscall",
    "tuxcall",
    "security",
    "vserver",
];

/// Denied unless nested sandboxes are allowed.
const NESTED: &[&str] = &[
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
];

const CLONE_NEW_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;
/// personality(2) values that change nothing dangerous (Docker's list).
const PERSONALITY_OK: &[u64] = &[0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

#[derive(Debug, Clone)]
pub struct SeccompPlan {
    pub programs: Vec<BpfProgram>,
    /// For `-v`: how many calls the deny list names.
    pub denied: usize,
    pub errno: i32,
}

/// Compiles the filter, or None when the profile turns it off.
pub fn plan(
    spec: &SeccompSpec,
    cli: Option<&str>,
    allow_nested: bool,
) -> Result<Option<SeccompPlan>> {
    let enabled = match cli {
        Some("off") => false,
        Some("default") => true,
        Some(other) => bail!("--seccomp {other:?}: use \"default\" or \"off\""),
        None => spec.enabled.unwrap_or(true),
    };
    if !enabled {
        return Ok(None);
    }
    let errno = match &spec.errno {
        Some(name) => parse_errno(name)?,
        None => libc::EPERM,
    };
    let mut names: BTreeSet<&str> = DENY.iter().copied().collect();
    if !allow_nested {
        names.extend(NESTED);
    }
    names.extend(spec.deny.iter().map(String::as_str));
    for name in &spec.allow {
        names.remove(name.as_str());
    }
    let allowed = |name: &str| !spec.allow.iter().any(|a| a == name);

    let mut rules: Vec<Value> = names.iter().map(|n| json!({ "syscall": n })).collect();
    if !allow_nested && allowed("clone") {
        for flag in CLONE_NEW_FLAGS {
            rules.push(json!({"syscall": "clone", "args": [arg(0, "qword", json!({"masked_eq": flag}), *flag)]}));
        }
    }
    if allowed("socket") {
        for family in [AF_ALG, AF_VSOCK] {
            rules
                .push(json!({"syscall": "socket", "args": [arg(0, "dword", json!("eq"), family)]}));
        }
    }
    if allowed("ioctl") {
        // "dword": only the low 32 bits, as the kernel itself reads the request.
        for request in [TIOCSTI, TIOCLINUX] {
            rules
                .push(json!({"syscall": "ioctl", "args": [arg(1, "dword", json!("eq"), request)]}));
        }
    }
    if allowed("personality") {
        let conds: Vec<Value> = PERSONALITY_OK
            .iter()
            .map(|v| arg(0, "dword", json!("ne"), *v))
            .collect();
        rules.push(json!({"syscall": "personality", "args": conds}));
    }
    let denied = rules.len();
    let mut filters = json!({
        "deny": {"mismatch_action": "allow", "match_action": {"errno": errno}, "filter": rules},
    });
    if !allow_nested && allowed("clone3") {
        filters["enosys"] = json!({"mismatch_action": "allow", "match_action": {"errno": libc::ENOSYS},
                                   "filter": [{"syscall": "clone3"}]});
    }
    let text = filters.to_string();
    let compiled = seccompiler::compile_from_json(text.as_bytes(), arch()?).map_err(|e| {
        anyhow::anyhow!("security.seccomp: {e}; check the names in `deny` and `allow`")
    })?;
    let mut programs: Vec<BpfProgram> = compiled.into_values().collect();
    programs.extend(abi_guard());
    Ok(Some(SeccompPlan {
        programs,
        denied,
        errno,
    }))
}

fn arg(index: u8, len: &str, op: Value, val: u64) -> Value {
    json!({"index": index, "type": len, "op": op, "val": val})
}

fn arch() -> Result<TargetArch> {
    std::env::consts::ARCH.try_into().map_err(|_| {
        anyhow::anyhow!(
            "seccomp filters are not supported on {}",
            std::env::consts::ARCH
        )
    })
}

/// "EPERM", "ENOSYS", "EACCES" or a number.
fn parse_errno(name: &str) -> Result<i32> {
    Ok(match name {
        "EPERM" => libc::EPERM,
        "EACCES" => libc::EACCES,
        "ENOSYS" => libc::ENOSYS,
        "EINVAL" => libc::EINVAL,
        "ENOTSUP" | "EOPNOTSUPP" => libc::EOPNOTSUPP,
        other => match other.parse::<i32>() {
            Ok(n) if (1..4096).contains(&n) => n,
            _ => bail!("security.seccomp.errno {other:?}: use EPERM, EACCES, ENOSYS, EINVAL, EOPNOTSUPP or a number"),
        },
    })
}

/// x32 system calls (x86_64 numbers with bit 30 set) share the x86_64 audit arch, so the
/// arch check lets them through to a filter that only knows x86_64 numbers: kill them.
#[cfg(target_arch = "x86_64")]
fn abi_guard() -> Option<BpfProgram> {
    use seccompiler::sock_filter;
    // BPF_LD | BPF_W | BPF_ABS, BPF_JMP | BPF_JGE | BPF_K, BPF_RET | BPF_K.
    const LD_W_ABS: u16 = 0x20;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    const X32_BIT: u32 = 0x4000_0000;
    Some(vec![
        sock_filter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        sock_filter {
            code: JGE_K,
            jt: 0,
            jf: 1,
            k: X32_BIT,
        },
        sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_KILL_PROCESS,
        },
        sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ])
}

#[cfg(not(target_arch = "x86_64"))]
fn abi_guard() -> Option<BpfProgram> {
    None
}

/// Installs every program; the caller has set no_new_privs.
pub fn apply(plan: &SeccompPlan) -> Result<()> {
    for program in &plan.programs {
        seccompiler::apply_filter(program).context("install the seccomp filter")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filter_compiles() {
        let p = plan(&SeccompSpec::default(), None, false).unwrap().unwrap();
        assert_eq!(p.errno, libc::EPERM);
        assert!(p.programs.len() >= 2);
    }

    #[test]
    fn off_means_off() {
        assert!(plan(&SeccompSpec::default(), Some("off"), false)
            .unwrap()
            .is_none());
        let spec = SeccompSpec {
            enabled: Some(false),
            ..Default::default()
        };
        assert!(plan(&spec, None, false).unwrap().is_none());
    }

    #[test]
    fn unknown_syscall_names_are_errors() {
        let spec = SeccompSpec {
            deny: vec!["not_a_syscall".into()],
            ..Default::default()
        };
        let err = plan(&spec, None, false).unwrap_err().to_string();
        assert!(err.contains("not_a_syscall"), "{err}");
    }

    #[test]
    fn errno_names() {
        assert_eq!(parse_errno("ENOSYS").unwrap(), libc::ENOSYS);
        assert_eq!(parse_errno("13").unwrap(), 13);
        assert!(parse_errno("EWHATEVER").is_err());
    }

    #[test]
    fn filter_denies_in_a_thread() {
        // Filters are per thread: try it on one that is thrown away.
        let p = plan(&SeccompSpec::default(), None, false).unwrap().unwrap();
        let result = std::thread::spawn(move || {
            nix::sys::prctl::set_no_new_privs().unwrap();
            apply(&p).unwrap();
            // SAFETY: keyctl with a bad command only returns an error.
            let keyctl = unsafe { libc::syscall(libc::SYS_keyctl, -1, 0, 0, 0, 0) };
            let keyctl_errno = std::io::Error::last_os_error().raw_os_error();
            // SAFETY: a TIOCSTI ioctl with junk in the high bits on an invalid fd.
            let ioctl = unsafe { libc::syscall(libc::SYS_ioctl, -1, 0xdead_beef_0000_5412u64, 0) };
            let ioctl_errno = std::io::Error::last_os_error().raw_os_error();
            // SAFETY: getpid has no arguments.
            let pid = unsafe { libc::syscall(libc::SYS_getpid) };
            (keyctl, keyctl_errno, ioctl, ioctl_errno, pid)
        })
        .join()
        .unwrap();
        assert_eq!((result.0, result.1), (-1, Some(libc::EPERM)));
        assert_eq!((result.2, result.3), (-1, Some(libc::EPERM)));
        assert!(result.4 > 0);
    }
}
