use super::*;
use crate::security::bpf::tests::{data, run};
use crate::security::bpf::{errno, ALLOW, AUDIT_ARCH};

fn spec(json: serde_json::Value) -> LinuxSeccomp {
    serde_json::from_value(json).unwrap()
}

fn nr(name: &str) -> u32 {
    Abi::Native.number(name).unwrap()
}

/// The verdict of `prog` for a native call.
fn verdict(prog: &BpfProgram, name: &str, args: [u64; 6]) -> u32 {
    run(prog, &data(AUDIT_ARCH, nr(name), args))
}

#[test]
fn every_action() {
    let cases = [
        ("SCMP_ACT_KILL", None, libc::SECCOMP_RET_KILL_THREAD),
        ("SCMP_ACT_KILL_THREAD", None, libc::SECCOMP_RET_KILL_THREAD),
        (
            "SCMP_ACT_KILL_PROCESS",
            None,
            libc::SECCOMP_RET_KILL_PROCESS,
        ),
        ("SCMP_ACT_TRAP", None, libc::SECCOMP_RET_TRAP),
        ("SCMP_ACT_ERRNO", None, errno(libc::EPERM)),
        ("SCMP_ACT_ERRNO", Some(22), errno(libc::EINVAL)),
        ("SCMP_ACT_ERRNO", Some(0), errno(0)),
        ("SCMP_ACT_TRACE", None, libc::SECCOMP_RET_TRACE | 1),
        ("SCMP_ACT_TRACE", Some(7), libc::SECCOMP_RET_TRACE | 7),
        ("SCMP_ACT_LOG", None, libc::SECCOMP_RET_LOG),
        ("SCMP_ACT_ALLOW", None, ALLOW),
    ];
    for (name, ret, want) in cases {
        // As the one rule, under a default that differs from every action.
        let prog = compile(&spec(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 99,
            "syscalls": [{"names": ["getcwd"], "action": name, "errnoRet": ret}],
        })))
        .unwrap();
        assert_eq!(verdict(&prog, "getcwd", [0; 6]), want, "{name} {ret:?}");
        assert_eq!(verdict(&prog, "read", [0; 6]), errno(99), "{name}");
        // As the default.
        let prog = compile(&spec(serde_json::json!({
            "defaultAction": name, "defaultErrnoRet": ret,
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 99}],
        })))
        .unwrap();
        assert_eq!(
            verdict(&prog, "read", [0; 6]),
            want,
            "default {name} {ret:?}"
        );
    }
}

#[test]
fn refused_with_a_reason() {
    let cases = [
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
            "SCMP_ACT_NOTIFY",
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock",
                "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]}),
            "seccomp agent",
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_KILL", "errnoRet": 1}]}),
            "errno return code",
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}),
            "defaultAction",
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                    "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
            "argument index 6",
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5000}]}),
            "above 4095",
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ERRNO",
                    "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
                {"names": ["read"], "action": "SCMP_ACT_LOG",
                    "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
            "same conditions and different actions",
        ),
    ];
    for (json, want) in cases {
        let err = format!("{:#}", compile(&spec(json.clone())).unwrap_err());
        assert!(err.contains(want), "{json}: {err}");
    }
}

/// Names this architecture lacks are skipped, the rest of the entry still applies.
#[test]
fn unknown_names_are_skipped() {
    let prog = compile(&spec(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["no_such_call", "getcwd", "socketcall"],
            "action": "SCMP_ACT_ERRNO"}],
    })))
    .unwrap();
    assert_eq!(verdict(&prog, "getcwd", [0; 6]), errno(libc::EPERM));
    assert_eq!(verdict(&prog, "read", [0; 6]), ALLOW);
}

/// Entries for one call are ORed, the conditions of one entry ANDed, and two conditions
/// on one argument split into rules of their own (runc's fallback), so ORed too.
#[test]
fn entries_or_conditions_and() {
    let prog = compile(&spec(serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["getcwd"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                         {"index": 1, "value": 2, "op": "SCMP_CMP_EQ"}]},
            {"names": ["getcwd"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 2, "value": 3, "op": "SCMP_CMP_GE"}]},
            {"names": ["dup"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 10, "op": "SCMP_CMP_GT"},
                         {"index": 0, "value": 5, "op": "SCMP_CMP_LT"}]},
        ],
    })))
    .unwrap();
    let eperm = errno(libc::EPERM);
    assert_eq!(verdict(&prog, "getcwd", [1, 2, 0, 0, 0, 0]), ALLOW);
    assert_eq!(verdict(&prog, "getcwd", [1, 0, 0, 0, 0, 0]), eperm);
    assert_eq!(verdict(&prog, "getcwd", [0, 2, 0, 0, 0, 0]), eperm);
    assert_eq!(verdict(&prog, "getcwd", [0, 0, 3, 0, 0, 0]), ALLOW);
    assert_eq!(verdict(&prog, "getcwd", [0, 0, 1 << 40, 0, 0, 0]), ALLOW);
    // `arg0 > 10 || arg0 < 5`, as runc has it; ANDed, nothing would match.
    assert_eq!(verdict(&prog, "dup", [11, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(verdict(&prog, "dup", [4, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(verdict(&prog, "dup", [7, 0, 0, 0, 0, 0]), eperm);
}

/// An entry without conditions wins over conditional ones, whatever the order; of two,
/// the first. Entries with the default action are left out first (runc), so they win
/// nothing.
#[test]
fn unconditional_entries_and_the_default() {
    let prog = compile(&spec(serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["getcwd"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 2},
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 3},
            {"names": ["dup"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
            {"names": ["dup"], "action": "SCMP_ACT_ERRNO"},
        ],
    })))
    .unwrap();
    assert_eq!(verdict(&prog, "getcwd", [1, 0, 0, 0, 0, 0]), errno(2));
    assert_eq!(verdict(&prog, "getcwd", [0; 6]), errno(2));
    assert_eq!(verdict(&prog, "dup", [1, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(verdict(&prog, "dup", [0; 6]), errno(libc::EPERM));
}

/// Conditional entries that all match: the most restrictive action decides.
#[test]
fn overlapping_entries_take_the_most_restrictive_action() {
    let prog = compile(&spec(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["getcwd"], "action": "SCMP_ACT_LOG",
                "args": [{"index": 1, "value": 2, "op": "SCMP_CMP_EQ"}]},
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5,
                "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
            {"names": ["getcwd"], "action": "SCMP_ACT_KILL_PROCESS",
                "args": [{"index": 2, "value": 3, "op": "SCMP_CMP_EQ"}]},
        ],
    })))
    .unwrap();
    assert_eq!(
        verdict(&prog, "getcwd", [1, 2, 0, 0, 0, 0]),
        errno(libc::EIO)
    );
    assert_eq!(
        verdict(&prog, "getcwd", [1, 2, 3, 0, 0, 0]),
        libc::SECCOMP_RET_KILL_PROCESS
    );
    assert_eq!(
        verdict(&prog, "getcwd", [0, 2, 0, 0, 0, 0]),
        libc::SECCOMP_RET_LOG
    );
    assert_eq!(verdict(&prog, "getcwd", [0; 6]), ALLOW);
}

/// Under a denying default, calls above the last one named fail with ENOSYS (runc), so
/// that libc falls back; under an allowing one they are allowed.
#[test]
fn calls_newer_than_the_profile() {
    let deny = compile(&spec(serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["read", "getcwd"], "action": "SCMP_ACT_ALLOW"}],
    })))
    .unwrap();
    let above = nr("getcwd") + 1;
    assert_eq!(
        run(&deny, &data(AUDIT_ARCH, above, [0; 6])),
        errno(libc::ENOSYS)
    );
    assert_eq!(verdict(&deny, "write", [0; 6]), errno(libc::EPERM));
    let allow = compile(&spec(serde_json::json!({
        "defaultAction": "SCMP_ACT_LOG",
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO"}],
    })))
    .unwrap();
    assert_eq!(
        run(&allow, &data(AUDIT_ARCH, above, [0; 6])),
        libc::SECCOMP_RET_LOG
    );
}

#[test]
fn flags_map_to_the_kernel_bits() {
    let s = spec(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
            "SECCOMP_FILTER_FLAG_TSYNC"],
    }));
    assert_eq!(flags(&s).unwrap(), 2 | 4 | 1);
    let s = spec(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
    }));
    assert!(format!("{:#}", flags(&s).unwrap_err()).contains("SCMP_ACT_NOTIFY"));
    let s = spec(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"}));
    assert_eq!(flags(&s).unwrap(), 0);
}

/// i386 under an allowing default: a rule on a socket call closes `socketcall`.
#[cfg(target_arch = "x86_64")]
#[test]
fn i386_multiplexers_close_under_an_allowing_default() {
    let prog = compile(&spec(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["connect"], "action": "SCMP_ACT_ERRNO"}],
    })))
    .unwrap();
    let i386 = |name: &str| {
        let n = Abi::I386.number(name).unwrap();
        run(&prog, &data(0x4000_0003, n, [0; 6]))
    };
    assert_eq!(i386("connect"), errno(libc::EPERM));
    assert_eq!(i386("socketcall"), errno(libc::ENOSYS));
    assert_eq!(i386("ipc"), ALLOW);
    assert_eq!(i386("read"), ALLOW);
}

/// The profile podman 4.3 (containers/common) sends, captured from a `podman run` with a
/// `--runtime` that copied the bundle's config.json (tests/data/podman-config.json).
#[test]
fn podmans_default_profile() {
    let text = include_str!("../../../tests/data/podman-config.json");
    let config: oci_spec::runtime::Spec = serde_json::from_str(text).unwrap();
    let seccomp = config.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
    let prog = compile(seccomp).unwrap();
    assert!(prog.len() < 4096, "{} instructions", prog.len());
    assert_eq!(flags(seccomp).unwrap(), 0);
    let (eperm, enosys) = (errno(libc::EPERM), errno(libc::ENOSYS));
    for name in [
        "read", "openat", "execve", "clone", "clone3", "mount", "keyctl",
    ] {
        assert_eq!(verdict(&prog, name, [0; 6]), ALLOW, "{name}");
    }
    for name in [
        "bpf",
        "kexec_load",
        "perf_event_open",
        "acct",
        "userfaultfd",
    ] {
        assert_eq!(verdict(&prog, name, [0; 6]), eperm, "{name}");
    }
    // Allowed in entry 1, denied in entry 10: the first entry without conditions
    // decides, as in libseccomp's rule database.
    assert_eq!(verdict(&prog, "setns", [0; 6]), ALLOW);
    // Not named at all: the default, ENOSYS.
    for name in ["add_key", "request_key", "_sysctl"] {
        assert_eq!(verdict(&prog, name, [0; 6]), enosys, "{name}");
    }
    // Above every call it names (runc's patch; the default is ENOSYS here anyway).
    assert_eq!(run(&prog, &data(AUDIT_ARCH, 1000, [0; 6])), enosys);
    assert_eq!(verdict(&prog, "personality", [8, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(
        verdict(&prog, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]),
        ALLOW
    );
    assert_eq!(
        verdict(&prog, "personality", [0x40000, 0, 0, 0, 0, 0]),
        enosys
    );
    // NETLINK_AUDIT sockets fail with EINVAL; the rest are allowed.
    assert_eq!(
        verdict(&prog, "socket", [16, 3, 9, 0, 0, 0]),
        errno(libc::EINVAL)
    );
    assert_eq!(verdict(&prog, "socket", [2, 1, 0, 0, 0, 0]), ALLOW);
    assert_eq!(verdict(&prog, "socket", [16, 3, 0, 0, 0, 0]), ALLOW);
    // The other two ABIs podman lists, with their own numbers.
    #[cfg(target_arch = "x86_64")]
    {
        let bit = 0x4000_0000;
        let x32 = |n| run(&prog, &data(AUDIT_ARCH, n, [0; 6]));
        assert_eq!(x32(bit | nr("read")), ALLOW);
        assert_eq!(x32(bit | 514), ALLOW, "x32 ioctl");
        assert_eq!(x32(bit | nr("bpf")), eperm);
        let i386 = |name: &str| {
            let n = Abi::I386.number(name).unwrap();
            run(&prog, &data(0x4000_0003, n, [0; 6]))
        };
        assert_eq!(i386("read"), ALLOW);
        assert_eq!(i386("socketcall"), ALLOW);
        assert_eq!(i386("bpf"), eperm);
        assert_eq!(i386("add_key"), enosys);
        // arm calls cannot happen here: killed.
        assert_eq!(
            run(&prog, &data(0x4000_0028, 3, [0; 6])),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }
}

/// A compiled profile installed in a forked child (after no_new_privs) makes real calls
/// fail with its errnoRet, by argument, and leaves the others alone.
#[test]
fn installed_filter_returns_errno_ret() {
    let prog = compile(&spec(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42,
                "args": [{"index": 0, "value": 1u64 << 32, "op": "SCMP_CMP_GE"}]},
            {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 43,
                "args": [{"index": 1, "value": 7, "op": "SCMP_CMP_EQ"}]},
        ],
    })))
    .unwrap();
    // SAFETY: the child only makes system calls and exits; it touches no lock.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: getppid ignores its arguments; the filter sees them.
        let call = |a: u64, b: u64| unsafe {
            let r = libc::syscall(libc::SYS_getppid, a, b, 0, 0, 0, 0);
            if r >= 0 {
                0
            } else {
                *libc::__errno_location()
            }
        };
        // SAFETY: plain prctl.
        let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        let code = if nnp != 0 || install(&prog, 0).is_err() {
            1
        } else if call(0, 0) != 0 || call(u32::MAX as u64, 0) != 0 {
            2
        } else if call(1 << 32, 0) != 42 || call(0, 7) != 43 {
            3
        } else {
            0
        };
        // SAFETY: leaves the child without running the test harness's exit code.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "status {status:#x}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "1: install, 2: allowed, 3: errnoRet"
    );
}

/// `features` names what a profile may use: each action, operator and supported flag it
/// lists compiles, what it leaves out is refused.
#[test]
fn features_list_what_compiles() {
    let f = features();
    assert_eq!(f["enabled"], true);
    for action in f["actions"].as_array().unwrap() {
        let p = spec(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getpid"], "action": action}],
        }));
        compile(&p).unwrap_or_else(|e| panic!("{action}: {e:#}"));
    }
    assert!(!f["actions"]
        .as_array()
        .unwrap()
        .contains(&"SCMP_ACT_NOTIFY".into()));
    let operators = f["operators"].as_array().unwrap();
    assert_eq!(operators.len(), 7);
    for op in operators {
        let p = spec(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 0, "value": 1, "valueTwo": 1, "op": op}]}],
        }));
        compile(&p).unwrap_or_else(|e| panic!("{op}: {e:#}"));
    }
    let p = spec(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": f["archs"],
        "flags": f["supportedFlags"],
    }));
    compile(&p).unwrap();
    assert!(flags(&p).is_ok());
    let known = f["knownFlags"].as_array().unwrap();
    for flag in known {
        let p = spec(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": [flag]}));
        let supported = f["supportedFlags"].as_array().unwrap().contains(flag);
        assert_eq!(flags(&p).is_ok(), supported, "{flag}");
    }
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        f["archs"],
        serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    );
}
