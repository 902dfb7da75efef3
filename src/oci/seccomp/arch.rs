//! The architectures a runtime-spec seccomp profile lists, and each one's system call
//! numbers, from the `syscalls` crate's per-architecture tables.
//!
//! On x86_64 a process can make calls in three ways, each with its own numbers: x86_64,
//! i386 (`int 0x80`, 32-bit programs) and x32 (x86_64's arch value, numbers with bit 30
//! set). On aarch64: aarch64 and 32-bit arm. An architecture the kernel here cannot run
//! (s390x listed on x86_64) never reaches the filter, so listing it changes nothing.

use anyhow::{bail, Result};
use oci_spec::runtime::Arch;

/// A way of making system calls that the filter tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Abi {
    Native,
    /// i386 on x86_64.
    I386,
    /// x32 on x86_64.
    X32,
    /// 32-bit arm on aarch64.
    Arm,
}

const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_ARM: u32 = 0x4000_0028;

/// x32 gives these calls (whose x86_64 versions take 64-bit structures) numbers of
/// their own, from 512 (the kernel's syscall_64.tbl).
const X32_OWN: &[&str] = &[
    "rt_sigaction",
    "rt_sigreturn",
    "ioctl",
    "readv",
    "writev",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "execve",
    "ptrace",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigqueueinfo",
    "sigaltstack",
    "timer_create",
    "mq_notify",
    "kexec_load",
    "waitid",
    "set_robust_list",
    "get_robust_list",
    "vmsplice",
    "move_pages",
    "preadv",
    "pwritev",
    "rt_tgsigqueueinfo",
    "recvmmsg",
    "sendmmsg",
    "process_vm_readv",
    "process_vm_writev",
    "setsockopt",
    "getsockopt",
    "io_setup",
    "io_submit",
    "execveat",
    "preadv2",
    "pwritev2",
];

/// x86_64 calls that x32 does not have at all.
const X32_NONE: &[&str] = &[
    "_sysctl",
    "create_module",
    "epoll_ctl_old",
    "epoll_wait_old",
    "get_kernel_syms",
    "get_thread_area",
    "nfsservctl",
    "query_module",
    "set_thread_area",
    "uselib",
    "vserver",
];

impl Abi {
    /// The call's number as the filter sees it, or None where this ABI has no such call
    /// (libseccomp, and so runc, skip those names).
    pub fn number(self, name: &str) -> Option<u32> {
        match self {
            Abi::Native => name.parse::<syscalls::Sysno>().ok().map(|s| s.id() as u32),
            Abi::I386 => name
                .parse::<syscalls::x86::Sysno>()
                .ok()
                .map(|s| s.id() as u32),
            Abi::Arm => name
                .parse::<syscalls::arm::Sysno>()
                .ok()
                .map(|s| s.id() as u32),
            Abi::X32 => x32_number(name),
        }
    }

    /// AUDIT_ARCH_* of its calls.
    pub fn audit_arch(self) -> u32 {
        match self {
            Abi::Native | Abi::X32 => crate::security::bpf::AUDIT_ARCH,
            Abi::I386 => AUDIT_ARCH_I386,
            Abi::Arm => AUDIT_ARCH_ARM,
        }
    }

    /// Arguments are 64 bits wide. x32 passes full 64-bit registers, which the kernel
    /// reads whole for `long` arguments, so they are compared whole.
    pub fn wide(self) -> bool {
        matches!(self, Abi::Native | Abi::X32)
    }

    pub fn name(self) -> &'static str {
        match self {
            Abi::Native => std::env::consts::ARCH,
            Abi::I386 => "x86",
            Abi::X32 => "x32",
            Abi::Arm => "arm",
        }
    }
}

fn x32_number(name: &str) -> Option<u32> {
    let bit = 0x4000_0000;
    if let Some(i) = X32_OWN.iter().position(|n| *n == name) {
        return Some(bit | (512 + i as u32));
    }
    if X32_NONE.contains(&name) {
        return None;
    }
    let nr = name.parse::<syscalls::x86_64::Sysno>().ok()?;
    Some(bit | nr.id() as u32)
}

/// The architectures whose calls the filter tells apart on this machine, each with a
/// section of its own (`sbx-oci features`); others listed in a profile are skipped.
pub fn runnable() -> &'static [Arch] {
    match std::env::consts::ARCH {
        "x86_64" => &[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "aarch64" => &[Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        _ => &[],
    }
}

/// The ABIs the filter must hold sections for: the native one always, then those listed
/// that this machine can run.
pub fn abis(listed: Option<&Vec<Arch>>) -> Result<Vec<Abi>> {
    let mut out = vec![Abi::Native];
    for arch in listed.into_iter().flatten() {
        let abi = match (arch, std::env::consts::ARCH) {
            (Arch::ScmpArchNative, _)
            | (Arch::ScmpArchX86_64, "x86_64")
            | (Arch::ScmpArchAarch64, "aarch64") => Abi::Native,
            (Arch::ScmpArchX86, "x86_64") => Abi::I386,
            (Arch::ScmpArchX32, "x86_64") => Abi::X32,
            (Arch::ScmpArchArm, "aarch64") => Abi::Arm,
            (_, "x86_64" | "aarch64") => continue,
            (_, other) => bail!("seccomp: sbx-oci does not know the system calls of {other}"),
        };
        if !out.contains(&abi) {
            out.push(abi);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_per_abi() {
        assert_eq!(Abi::I386.number("socketcall"), Some(102));
        assert_eq!(Abi::I386.number("socket"), Some(359));
        assert_eq!(Abi::I386.number("arch_prctl"), Some(384));
        assert_eq!(Abi::X32.number("read"), Some(0x4000_0000));
        assert_eq!(Abi::X32.number("ioctl"), Some(0x4000_0000 | 514));
        assert_eq!(Abi::X32.number("pwritev2"), Some(0x4000_0000 | 547));
        assert_eq!(Abi::X32.number("uselib"), None);
        assert_eq!(Abi::Arm.number("openat"), Some(322));
        assert_eq!(Abi::Native.number("no_such_call"), None);
    }

    /// The x32 table against the kernel's own header, where the machine has it.
    #[test]
    fn x32_numbers_match_the_kernel_headers() {
        let Ok(text) = std::fs::read_to_string("/usr/include/x86_64-linux-gnu/asm/unistd_x32.h")
        else {
            eprintln!("SKIP x32_numbers_match_the_kernel_headers: no unistd_x32.h");
            return;
        };
        let mut checked = 0;
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["#define", name, "(__X32_SYSCALL_BIT", "+", nr] = words[..] {
                let name = name.trim_start_matches("__NR_");
                let nr: u32 = nr.trim_end_matches(')').parse().unwrap();
                // Calls newer than the syscalls crate's table are not known to it.
                if let Some(got) = Abi::X32.number(name) {
                    assert_eq!(got, 0x4000_0000 | nr, "{name}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 300, "{checked} calls checked");
        for name in X32_NONE {
            assert!(!text.contains(&format!("__NR_{name} ")), "{name}");
        }
    }

    #[test]
    fn listed_architectures() {
        #[cfg(target_arch = "x86_64")]
        {
            let podman = vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32];
            assert_eq!(
                abis(Some(&podman)).unwrap(),
                [Abi::Native, Abi::I386, Abi::X32]
            );
            // Architectures this kernel cannot run are left out.
            let other = vec![Arch::ScmpArchS390x, Arch::ScmpArchArm];
            assert_eq!(abis(Some(&other)).unwrap(), [Abi::Native]);
        }
        assert_eq!(abis(None).unwrap(), [Abi::Native]);
    }

    /// Each architecture `features` names gets a section of its own, each another ABI.
    #[test]
    fn runnable_architectures_each_get_a_section() {
        let all = runnable().to_vec();
        assert_eq!(abis(Some(&all)).unwrap().len(), all.len().max(1));
        for arch in runnable() {
            assert!(!abis(Some(&vec![*arch])).unwrap().is_empty(), "{arch}");
        }
        #[cfg(target_arch = "x86_64")]
        assert_eq!(runnable()[0], Arch::ScmpArchX86_64);
    }
}
