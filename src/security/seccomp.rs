//! The seccomp filter: what Docker's default profile denies a container without
//! capabilities, compiled before clone and installed last before execve.
//!
//! One BPF program (see `bpf`): the deny list failing with EPERM (or the profile's errno);
//! clone with a namespace flag, AF_ALG and AF_VSOCK sockets, TIOCSTI and TIOCLINUX, odd
//! personalities likewise; clone3 failing with ENOSYS, so libc falls back to clone, whose
//! flags can be inspected; calls of other architectures (i386 `int 0x80`, x32) killed.

use anyhow::{bail, Context, Result};

use super::bpf;
use super::seccomp_rules::{self as rules, number as native_number};

pub use crate::plan::security::SeccompPlan;
use crate::profile::SeccompSpec;

/// The default filter's program, compiled by build.rs with `rules` and `bpf` for the build's
/// target (None when cross-compiling: then `plan` compiles it like any other).
mod precompiled {
    include!(concat!(env!("OUT_DIR"), "/seccomp_default.rs"));
}

/// The filter, or None when the profile turns it off.
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
    let unchanged = spec.deny.is_empty() && spec.allow.is_empty() && errno == libc::EPERM;
    if unchanged && !allow_nested {
        if let Some(program) = precompiled::PROGRAM {
            return Ok(Some(SeccompPlan {
                program: program.to_vec(),
                denied: precompiled::DENIED,
                errno,
            }));
        }
    }
    Ok(Some(compile(spec, errno, allow_nested)?))
}

/// Compiles the filter at run time: the default lists with the profile's changes.
fn compile(spec: &SeccompSpec, errno: i32, allow_nested: bool) -> Result<SeccompPlan> {
    // The profile's names must exist; the built-in lists name some calls that only some
    // architectures have.
    for name in spec.deny.iter().chain(&spec.allow) {
        number(name)?;
    }
    let policy = rules::policy(&spec.deny, &spec.allow, errno, allow_nested);
    Ok(SeccompPlan {
        program: bpf::compile(&policy)?,
        denied: rules::count(&policy),
        errno,
    })
}

/// The number of a system call on this architecture.
fn number(name: &str) -> Result<u32> {
    match native_number(name) {
        Some(nr) => Ok(nr),
        None => bail!(
            "security.seccomp: unknown system call {name:?} on {}; check the names in `deny` and `allow`",
            std::env::consts::ARCH
        ),
    }
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

/// Installs the program; the caller has set no_new_privs.
pub fn apply(plan: &SeccompPlan) -> Result<()> {
    seccompiler::apply_filter(&plan.program).context("install the seccomp filter")
}

/// Installs `program` with `SECCOMP_FILTER_FLAG_*` `flags` through seccomp(2), leaving
/// no_new_privs as it is: without it the caller needs CAP_SYS_ADMIN in its user
/// namespace (sbx-oci, where the config decides `noNewPrivileges`).
pub fn install(program: &[seccompiler::sock_filter], flags: u32) -> Result<()> {
    let len = u16::try_from(program.len())
        .ok()
        .filter(|&n| n > 0)
        .context("install the seccomp filter: the program is empty or too long")?;
    let prog = libc::sock_fprog {
        len,
        // The kernel only reads the program.
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies it.
    // `seccompiler::sock_filter` has the layout of `libc::sock_filter` (both repr(C)).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::c_ulong::from(flags),
            &prog as *const libc::sock_fprog,
        )
    };
    match rc {
        0 => Ok(()),
        tid if tid > 0 => bail!(
            "install the seccomp filter: thread {tid} cannot take it (SECCOMP_FILTER_FLAG_TSYNC)"
        ),
        _ => Err(std::io::Error::last_os_error()).with_context(|| {
            format!("install the seccomp filter (flags {flags:#x}): without no_new_privs this needs CAP_SYS_ADMIN; EINVAL means this kernel lacks a flag")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filter_compiles() {
        let p = plan(&SeccompSpec::default(), None, false).unwrap().unwrap();
        assert_eq!(p.errno, libc::EPERM);
        assert!(p.program.len() < 400, "{} instructions", p.program.len());
    }

    /// The program build.rs compiled is, instruction for instruction, what `rules` and
    /// `bpf` compile at run time for the same inputs, and the one the default filter uses.
    #[test]
    fn precompiled_default_is_the_compiled_one() {
        let precompiled = precompiled::PROGRAM
            .expect("built for the host, so build.rs precompiled the default program");
        let compiled = compile(&SeccompSpec::default(), libc::EPERM, false).unwrap();
        assert_eq!(precompiled, compiled.program.as_slice());
        assert_eq!(precompiled::DENIED, compiled.denied);
        // Spelling out the default errno changes nothing.
        let spec = SeccompSpec {
            errno: Some("EPERM".into()),
            ..Default::default()
        };
        let planned = plan(&spec, Some("default"), false).unwrap().unwrap();
        assert_eq!(planned.program, compiled.program);
        assert_eq!(planned.denied, compiled.denied);
        // Any change is compiled at run time: nesting allowed, another errno.
        let nested = plan(&SeccompSpec::default(), None, true).unwrap().unwrap();
        assert_ne!(nested.program.as_slice(), precompiled);
        let spec = SeccompSpec {
            errno: Some("ENOSYS".into()),
            ..Default::default()
        };
        let enosys = plan(&spec, None, false).unwrap().unwrap();
        assert_eq!(enosys.errno, libc::ENOSYS);
        assert_ne!(enosys.program.as_slice(), precompiled);
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

    /// The real default filter, run through a BPF interpreter for each class of rule.
    #[test]
    fn default_filter_decides_as_documented() {
        use super::bpf::tests::{data, run};
        use super::bpf::{ALLOW, AUDIT_ARCH};
        let p = plan(&SeccompSpec::default(), None, false).unwrap().unwrap();
        let decide = |name: &str, args: [u64; 6]| {
            run(&p.program, &data(AUDIT_ARCH, number(name).unwrap(), args))
        };
        let eperm = bpf::errno(libc::EPERM);
        for name in rules::DENY.iter().chain(rules::NESTED) {
            if number(name).is_ok() {
                assert_eq!(decide(name, [0; 6]), eperm, "{name}");
            }
        }
        for ok in [
            "read", "write", "openat", "execve", "getpid", "mmap", "futex",
        ] {
            assert_eq!(decide(ok, [0; 6]), ALLOW, "{ok}");
        }
        let flags = libc::CLONE_NEWUSER as u64 | libc::SIGCHLD as u64;
        assert_eq!(decide("clone", [flags, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(
            decide("clone", [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(decide("clone3", [0; 6]), bpf::errno(libc::ENOSYS));
        assert_eq!(decide("socket", [38, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(decide("socket", [2, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            decide("ioctl", [0, 0xdead_beef_0000_5412, 0, 0, 0, 0]),
            eperm
        );
        assert_eq!(decide("ioctl", [0, 0x5413, 0, 0, 0, 0]), ALLOW);
        assert_eq!(decide("personality", [0x0040_0000, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(decide("personality", [0xffff_ffff, 0, 0, 0, 0, 0]), ALLOW);

        // Nested sandboxes: namespaces and mounts allowed, clone3 too.
        let p = plan(&SeccompSpec::default(), None, true).unwrap().unwrap();
        let nr = |n: &str| number(n).unwrap();
        for name in ["unshare", "mount", "clone3"] {
            assert_eq!(run(&p.program, &data(AUDIT_ARCH, nr(name), [0; 6])), ALLOW);
        }
        assert_eq!(
            run(
                &p.program,
                &data(AUDIT_ARCH, nr("clone"), [flags, 0, 0, 0, 0, 0])
            ),
            ALLOW
        );
    }

    #[test]
    fn profile_lists_add_and_remove() {
        use super::bpf::tests::{data, run};
        use super::bpf::{ALLOW, AUDIT_ARCH};
        let spec = SeccompSpec {
            deny: vec!["getpid".into()],
            allow: vec!["keyctl".into(), "ioctl".into()],
            errno: Some("EACCES".into()),
            ..Default::default()
        };
        let p = plan(&spec, None, false).unwrap().unwrap();
        let decide = |name: &str, args: [u64; 6]| {
            run(&p.program, &data(AUDIT_ARCH, number(name).unwrap(), args))
        };
        assert_eq!(decide("getpid", [0; 6]), bpf::errno(libc::EACCES));
        assert_eq!(decide("keyctl", [0; 6]), ALLOW);
        assert_eq!(decide("ioctl", [0, 0x5412, 0, 0, 0, 0]), ALLOW);
        assert_eq!(decide("bpf", [0; 6]), bpf::errno(libc::EACCES));
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
