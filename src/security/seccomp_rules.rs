//! The default seccomp policy: the deny lists and the argument rules, as a `bpf::Policy`.
//!
//! Pure and self-contained (no `crate::` paths) because build.rs includes this file and
//! `bpf` with `#[path]` to compile the default program at build time; `seccomp::plan` uses
//! that program when the profile changes nothing, and this code for every other filter.

use std::collections::BTreeSet;

use super::bpf::{self, Cond, Policy, Rule};

/// Denied outright.
pub const DENY: &[&str] = &[
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
pub const NESTED: &[&str] = &[
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
const AF_ALG: u32 = 38;
const AF_VSOCK: u32 = 40;
const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541C;
/// personality(2) values that change nothing dangerous (Docker's list).
const PERSONALITY_OK: &[u32] = &[0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The policy: the built-in lists plus `deny`, minus `allow`, failing with `errno`; names
/// this architecture lacks are left out (the caller checks the profile's own names).
pub fn policy(deny: &[String], allow: &[String], errno: i32, allow_nested: bool) -> Policy {
    let allowed = |name: &str| !allow.iter().any(|a| a == name);
    let fail = bpf::errno(errno);
    let mut policy = Policy::default();
    let mut add = |name: &str, when: Vec<Cond>, action: u32| {
        if let Some(nr) = number(name) {
            policy
                .rules
                .entry(nr)
                .or_default()
                .push(Rule { when, action });
        }
    };

    let mut names: BTreeSet<&str> = DENY.iter().copied().collect();
    if !allow_nested {
        names.extend(NESTED);
    }
    names.extend(deny.iter().map(String::as_str));
    for name in names.iter().filter(|n| allowed(n)) {
        add(name, vec![], fail);
    }
    if !allow_nested && allowed("clone") {
        let mask = CLONE_NEW_FLAGS.iter().fold(0, |m, f| m | f);
        add("clone", vec![Cond::AnyBit { arg: 0, mask }], fail);
    }
    if allowed("socket") {
        for family in [AF_ALG, AF_VSOCK] {
            let when = vec![Cond::Low32Eq {
                arg: 0,
                value: family,
            }];
            add("socket", when, fail);
        }
    }
    if allowed("ioctl") {
        // Only the low 32 bits, as the kernel itself reads the request.
        for request in [TIOCSTI, TIOCLINUX] {
            let when = vec![Cond::Low32Eq {
                arg: 1,
                value: request,
            }];
            add("ioctl", when, fail);
        }
    }
    if allowed("personality") {
        let when = PERSONALITY_OK
            .iter()
            .map(|&value| Cond::Low32Ne { arg: 0, value })
            .collect();
        add("personality", when, fail);
    }
    if !allow_nested && allowed("clone3") {
        // After any deny-list rule for it: a profile that denies clone3 outright wins.
        add("clone3", vec![], bpf::errno(libc::ENOSYS));
    }
    policy
}

/// How many rules `policy` has, for `sbx run -v`.
pub fn count(policy: &Policy) -> usize {
    policy.rules.values().map(Vec::len).sum()
}

/// The number of a system call on the architecture compiled for (build.rs: the host's).
pub fn number(name: &str) -> Option<u32> {
    name.parse::<syscalls::Sysno>()
        .ok()
        .map(|sysno| sysno.id() as u32)
}
