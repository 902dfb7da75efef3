//! Denied system calls.

use super::*;

#[test]
fn keyring_calls_are_denied() {
    assert_denied(Denied::new(&["keyctl", "add_key", "request_key"]));
}

#[test]
fn userfaultfd_is_denied() {
    assert_denied(Denied::new(&["userfaultfd"]));
}

#[test]
fn io_uring_is_denied() {
    assert_denied(Denied::new(&[
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
    ]));
}

#[test]
fn bpf_is_denied() {
    assert_denied(Denied::new(&["bpf"]));
}

#[test]
fn perf_event_open_is_denied() {
    assert_denied(Denied::new(&["perf_event_open"]));
}

#[test]
fn kexec_is_denied() {
    assert_denied(Denied::new(&["kexec_load", "kexec_file_load"]));
}

#[test]
fn kernel_module_calls_are_denied() {
    assert_denied(Denied::new(&[
        "init_module",
        "finit_module",
        "delete_module",
    ]));
}

#[test]
fn mount_calls_are_denied() {
    assert_denied(Denied {
        probes: &[
            "mount",
            "umount2",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
        ],
        // fsopen, fsmount, fspick and move_mount check CAP_SYS_ADMIN in the sandbox's
        // user namespace before their arguments.
        control: &["--uid", "0", "--cap-add", "SYS_ADMIN"],
        kernel_refuses: &[],
    });
}

#[test]
fn pivot_root_is_denied() {
    assert_denied(Denied {
        probes: &["pivot_root"],
        control: &["--uid", "0", "--cap-add", "SYS_ADMIN"],
        kernel_refuses: &[],
    });
}

#[test]
fn swap_calls_are_denied() {
    assert_denied(Denied {
        probes: &["swapon", "swapoff"],
        control: &[],
        // swapoff checks CAP_SYS_ADMIN in the initial namespace before anything else.
        kernel_refuses: &["swapoff"],
    });
}

#[test]
fn reboot_is_denied() {
    assert_denied(Denied {
        probes: &["reboot"],
        // CAP_SYS_BOOT in the pid namespace's owner: then the bad magic gives EINVAL.
        control: &["--uid", "0", "--cap-add", "SYS_BOOT"],
        kernel_refuses: &[],
    });
}

#[test]
fn acct_is_denied() {
    assert_denied(Denied {
        probes: &["acct"],
        control: &[],
        // CAP_SYS_PACCT in the initial namespace, checked first.
        kernel_refuses: &["acct"],
    });
}

#[test]
fn quotactl_is_denied() {
    assert_denied(Denied::new(&["quotactl", "quotactl_fd"]));
}

#[test]
fn syslog_is_denied() {
    assert_denied(Denied {
        probes: &["syslog"],
        control: &[],
        // With kernel.dmesg_restrict=1 the kernel wants CAP_SYSLOG before anything else.
        kernel_refuses: &["syslog"],
    });
}

#[test]
fn clock_setting_is_denied() {
    assert_denied(Denied::new(&[
        "settimeofday",
        "clock_settime",
        "adjtimex",
        "clock_adjtime",
    ]));
}

#[test]
fn open_by_handle_at_is_denied() {
    assert_denied(Denied::new(&["open_by_handle_at"]));
}

#[test]
fn unshare_and_setns_are_denied() {
    assert_denied(Denied::new(&["unshare", "setns"]));
}

#[test]
fn clone_with_namespace_flags_is_denied() {
    if !require_probes() {
        return;
    }
    let denied = Denied::new(&[
        "clone_newns",
        "clone_newcgroup",
        "clone_newuts",
        "clone_newipc",
        "clone_newuser",
        "clone_newpid",
        "clone_newnet",
    ]);
    assert_denied_with(&denied, "EPERM");
    // The filter looks at the flags: the same bad clone without a namespace flag reaches
    // the kernel (EINVAL), so threads and fork still work.
    let dir = TempDir::new();
    let (out, found) = calls(dir.path(), &[], &["clone"]);
    assert_eq!(found["clone"], "EINVAL", "{out}");
}

#[test]
fn clone3_fails_with_enosys() {
    if !require_probes() {
        return;
    }
    // ENOSYS, not EPERM: libc then falls back to clone, whose flags the filter can see.
    assert_denied_with(&Denied::new(&["clone3"]), "ENOSYS");
}

#[test]
fn personality_is_limited_to_harmless_values() {
    if !require_probes() {
        return;
    }
    // ADDR_NO_RANDOMIZE turns off address space randomisation.
    assert_denied_with(&Denied::new(&["personality_no_aslr"]), "EPERM");
    // Querying, and the plain Linux personality, still work (programs do both).
    let dir = TempDir::new();
    let names = ["personality_query", "personality_linux"];
    for (profile, options) in PROFILES {
        let (out, found) = calls(dir.path(), options, &names);
        for name in names {
            assert_eq!(found[name], "ok", "{name} under {profile}\n{out}");
        }
    }
}

#[test]
fn af_alg_sockets_are_denied() {
    assert_denied(Denied::new(&["socket_alg"]));
}

#[test]
fn af_vsock_sockets_are_denied() {
    if !require_probes() {
        return;
    }
    assert_denied_with(&Denied::new(&["socket_vsock"]), "EPERM");
    // Other families are untouched.
    let dir = TempDir::new();
    let (out, found) = calls(dir.path(), &[], &["socket_unix"]);
    assert_eq!(found["socket_unix"], "ok", "{out}");
}

#[test]
fn tiocsti_ioctl_is_denied_whatever_the_high_bits() {
    if !require_probes() {
        return;
    }
    // CVE-2019-10063: the kernel ignores the upper 32 bits of the request, so must the
    // filter.
    assert_denied_with(
        &Denied::new(&["ioctl_tiocsti", "ioctl_tiocsti_high"]),
        "EPERM",
    );
    // Other terminal ioctls reach the kernel (EBADF on the closed fd).
    let dir = TempDir::new();
    let (out, found) = calls(dir.path(), &[], &["ioctl_tcgets"]);
    assert_eq!(found["ioctl_tcgets"], "EBADF", "{out}");
}

#[test]
fn tioclinux_ioctl_is_denied_whatever_the_high_bits() {
    assert_denied(Denied::new(&["ioctl_tioclinux", "ioctl_tioclinux_high"]));
}

/// Runs the foreign-ABI probe `abi` and returns its one line (`ABI killed SIG...`, ...).
#[track_caller]
fn foreign(dir: &Path, options: &[&str], abi: &str) -> (Outcome, String) {
    let out = probe(dir, options, &["foreign", abi]);
    out.assert_success();
    let line = out
        .lines()
        .into_iter()
        .find(|l| l.starts_with(abi))
        .unwrap_or_else(|| panic!("no result for {abi}\n{out}"));
    (out, line)
}

#[test]
fn i386_int80_calls_are_killed() {
    if !require_probes() {
        return;
    }
    let dir = TempDir::new();
    // Control: without the filter, getpid through int 0x80 returns a pid (this kernel
    // runs i386 code), so the filter's arch check is all that stands in the way.
    let (out, line) = foreign(dir.path(), &["--seccomp", "off"], "int80");
    if line.contains("killed SIGSEGV") {
        skip(&format!(
            "this kernel runs no i386 code (IA32_EMULATION off): {line}"
        ));
        return;
    }
    assert!(line.starts_with("int80 returned "), "control\n{out}");
    for (profile, options) in PROFILES {
        let (out, line) = foreign(dir.path(), options, "int80");
        assert_eq!(line, "int80 killed SIGSYS", "{profile}\n{out}");
    }
}

#[test]
fn x32_calls_are_killed() {
    if !require_probes() {
        return;
    }
    let dir = TempDir::new();
    // Control: without the filter the call returns (a pid, or ENOSYS on a kernel without
    // x32 support): the process is not killed.
    let (out, line) = foreign(dir.path(), &["--seccomp", "off"], "x32");
    assert!(line.starts_with("x32 returned "), "control\n{out}");
    for (profile, options) in PROFILES {
        let (out, line) = foreign(dir.path(), options, "x32");
        assert_eq!(line, "x32 killed SIGSYS", "{profile}\n{out}");
    }
}
