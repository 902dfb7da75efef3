//! The escape suite: one test per attack an untrusted build step might try from inside the
//! sandbox, against the default and the `strict` profile. Each test asserts that the attack
//! fails as a user would see it and, where possible, that it would work without the layer
//! that stops it (`--seccomp off`, `--landlock off`, `--allow-nested`, a capability), so
//! that a test cannot pass because the attack was broken to begin with.
//!
//! The system call probes run inside with /usr/bin/python3 and tests/data/escape.py
//! (`$SBX_TEST_DATA`, bound in read-only): each calls one system call with harmless bad
//! arguments, so that a call the filter lets through fails in the kernel's own argument
//! checks (EFAULT, EINVAL, EBADF, ...) while a filtered one fails with the filter's errno.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const PYTHON: &str = "/usr/bin/python3";
const EROFS: &str = "Read-only file system";
const EPERM_TEXT: &str = "Operation not permitted";

/// The profiles every attack is tried against, with the options that select them.
const PROFILES: &[(&str, &[&str])] = &[("default", &[]), ("strict", &["-p", "strict"])];

// ---------------------------------------------------------------------------------------
// Running the probes
// ---------------------------------------------------------------------------------------

/// What the probe tests need: a sandbox, /usr/bin/python3, escape.py, and x86_64 (the
/// probe knows x86_64's system call numbers and its i386 and x32 ABIs).
fn require_probes() -> bool {
    if !require_sandbox() {
        return false;
    }
    if !Path::new(PYTHON).exists() {
        return skip(&format!(
            "{PYTHON} is missing (ci/setup-host.sh installs python3)"
        ));
    }
    let script = data_dir().join("escape.py");
    if !script.exists() {
        return skip(&format!(
            "{} is missing; set SBX_TEST_DATA to the staged tests/data",
            script.display()
        ));
    }
    if !cfg!(target_arch = "x86_64") {
        return skip("tests/data/escape.py knows only x86_64 system call numbers");
    }
    true
}

/// Runs `sbx run OPTIONS --ro-bind DATA -- python3 DATA/escape.py ARGS...` in `dir`.
fn probe(dir: &Path, options: &[&str], args: &[&str]) -> Outcome {
    let data = data_dir();
    let data = data.to_str().expect("SBX_TEST_DATA is UTF-8");
    let script = format!("{data}/escape.py");
    let mut cmd = sbx_run(dir, options);
    cmd.args(["--ro-bind", data, "--", PYTHON, &script])
        .args(args);
    run(cmd)
}

/// The probe's `NAME RESULT...` lines, by name.
fn results(out: &Outcome) -> BTreeMap<String, String> {
    out.lines()
        .iter()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, result)| (name.to_string(), result.to_string()))
        .collect()
}

/// Runs the system call probes `names` and returns their results (all of them present).
#[track_caller]
fn calls(dir: &Path, options: &[&str], names: &[&str]) -> (Outcome, BTreeMap<String, String>) {
    let mut args = vec!["calls"];
    args.extend_from_slice(names);
    let out = probe(dir, options, &args);
    out.assert_success();
    let found = results(&out);
    for name in names {
        assert!(found.contains_key(*name), "no result for {name}\n{out}");
    }
    (out, found)
}

/// A profile on top of `default` whose seccomp filter answers with EACCES instead of EPERM:
/// a call that fails with EACCES under it was stopped by the filter, not by the kernel.
fn eacces_profile(dir: &TempDir) -> String {
    let path = dir.join("seccomp-eacces.json");
    fs::write(
        &path,
        r#"{"extends": "default", "security": {"seccomp": {"errno": "EACCES"}}}"#,
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// A family of system calls the default filter denies.
struct Denied {
    probes: &'static [&'static str],
    /// Options besides `--seccomp off` for the unfiltered control run: a capability the
    /// kernel checks before it looks at the arguments, so the call gets that far.
    control: &'static [&'static str],
    /// Probes the kernel itself refuses with EPERM on this kind of host even unfiltered (it
    /// checks a capability of the initial user namespace first): only the EACCES profile
    /// shows that the filter stops them.
    kernel_refuses: &'static [&'static str],
}

impl Denied {
    fn new(probes: &'static [&'static str]) -> Denied {
        Denied {
            probes,
            control: &[],
            kernel_refuses: &[],
        }
    }
}

/// Asserts that each probe of `denied` fails with `errno` under both profiles, fails with
/// EACCES when a profile picks that errno, and gets past the filter with `--seccomp off`.
#[track_caller]
fn assert_denied_with(denied: &Denied, errno: &str) {
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let (out, found) = calls(dir.path(), options, denied.probes);
        for name in denied.probes {
            assert_eq!(
                found[*name], errno,
                "{name} under the {profile} profile should fail with {errno}\n{out}"
            );
        }
    }

    // The filter, not the kernel, gives the answer: it follows the profile's errno.
    if errno == "EPERM" {
        let profile = eacces_profile(&dir);
        let (out, found) = calls(dir.path(), &["-p", &profile], denied.probes);
        for name in denied.probes {
            assert_eq!(
                found[*name], "EACCES",
                "{name} with \"errno\": \"EACCES\" in the profile\n{out}"
            );
        }
    }

    // Without the filter each call reaches the kernel's argument checks.
    let mut options = vec!["--seccomp", "off"];
    options.extend_from_slice(denied.control);
    let (out, found) = calls(dir.path(), &options, denied.probes);
    for name in denied.probes {
        if denied.kernel_refuses.contains(name) {
            continue;
        }
        assert_ne!(
            found[*name], errno,
            "control: with --seccomp off {name} should fail differently (or work), so that \
             the test can tell the filter's answer from the kernel's\n{out}"
        );
    }
}

#[track_caller]
fn assert_denied(denied: Denied) {
    if !require_probes() {
        return;
    }
    assert_denied_with(&denied, "EPERM");
}

// ---------------------------------------------------------------------------------------
// Capabilities, no_new_privs and the Seccomp field
// ---------------------------------------------------------------------------------------

/// The fields of /proc/self/status as the command inside sees them.
#[track_caller]
fn status_inside(dir: &Path, options: &[&str]) -> BTreeMap<String, String> {
    let out = sandbox_sh(dir, options, "cat /proc/self/status");
    out.assert_success();
    let fields: BTreeMap<String, String> = out
        .lines()
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect();
    assert!(fields.contains_key("CapBnd"), "no CapBnd field\n{out}");
    fields
}

/// The Seccomp mode and filter count of this test process, which sbx inherits: a runner
/// that is itself confined (a CI container, systemd's SystemCallFilter) passes its own
/// filters on, so the sandbox's fields are counted from there.
fn own_seccomp() -> (String, u64) {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
    };
    let filters = field("Seccomp_filters").parse().unwrap();
    (field("Seccomp"), filters)
}

/// Asserts the Seccomp fields inside: one filter more than the runner's when `installed`,
/// else exactly the runner's.
#[track_caller]
fn assert_seccomp_fields(status: &BTreeMap<String, String>, installed: bool, what: &str) {
    let (mode, filters) = own_seccomp();
    let inside_filters: u64 = status
        .get("Seccomp_filters")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Seccomp_filters inside: {status:?}"));
    if installed {
        assert_eq!(
            status.get("Seccomp").map(String::as_str),
            Some("2"),
            "{what}: {status:?}"
        );
        assert!(
            inside_filters > filters,
            "{what}: sbx adds a filter to the runner's {filters}: {status:?}"
        );
    } else {
        assert_eq!(
            status.get("Seccomp"),
            Some(&mode),
            "{what}: the runner's own mode, nothing added: {status:?}"
        );
        assert_eq!(
            inside_filters, filters,
            "{what}: the runner's own filters, nothing added: {status:?}"
        );
    }
}

/// A capability set field (hexadecimal) as a number.
#[track_caller]
fn cap_field(status: &BTreeMap<String, String>, field: &str) -> u64 {
    let text = status
        .get(field)
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status: {status:?}"));
    u64::from_str_radix(text, 16).unwrap_or_else(|e| panic!("{field} {text:?}: {e}"))
}

const CAP_FIELDS: &[&str] = &["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"];

/// Podman's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
/// NET_BIND_SERVICE SYS_CHROOT SETFCAP.
const PODMAN_CAPS: u64 = 0x0000_0000_8004_05fb;
const CAP_NET_RAW: u64 = 1 << 13;

#[test]
fn non_root_command_has_no_capabilities() {
    if !require_sandbox() {
        return;
    }
    // Control: the test itself (an ordinary process) has a full bounding set, so a zero
    // below is the sandbox's doing and the parsing works.
    let host: BTreeMap<String, String> = fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect();
    assert_ne!(cap_field(&host, "CapBnd"), 0, "the host's bounding set");

    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let status = status_inside(dir.path(), options);
        for field in CAP_FIELDS {
            assert_eq!(
                cap_field(&status, field),
                0,
                "{field} of a non-root command under the {profile} profile: {status:?}"
            );
        }
    }
}

#[test]
fn root_inside_gets_podmans_default_capabilities() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let mut options = options.to_vec();
        options.extend_from_slice(&["--uid", "0"]);
        let status = status_inside(dir.path(), &options);
        for field in ["CapPrm", "CapEff", "CapBnd"] {
            let value = cap_field(&status, field);
            assert_eq!(
                value, PODMAN_CAPS,
                "{field} of uid 0 under the {profile} profile: {value:#018x} instead of \
                 {PODMAN_CAPS:#018x}"
            );
        }
    }
}

#[test]
fn root_inside_has_no_inheritable_or_ambient_capabilities() {
    if !require_sandbox() {
        return;
    }
    // CVE-2022-24769 (moby), CVE-2022-29162 (runc), CVE-2022-27651 (buildah): with a
    // non-empty inheritable set, a program with inheritable file capabilities gains them
    // when a non-root user runs it; runtimes now leave the set empty.
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let mut options = options.to_vec();
        options.extend_from_slice(&["--uid", "0"]);
        let status = status_inside(dir.path(), &options);
        for field in ["CapInh", "CapAmb"] {
            let value = cap_field(&status, field);
            assert_eq!(
                value, 0,
                "{field} of uid 0 under the {profile} profile: {value:#018x}"
            );
        }
    }
}

#[test]
fn cap_drop_all_leaves_root_inside_without_capabilities() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let status = status_inside(dir.path(), &["--uid", "0", "--cap-drop", "ALL"]);
    for field in CAP_FIELDS {
        assert_eq!(cap_field(&status, field), 0, "{field}: {status:?}");
    }
    // And a user sees it: root inside can no longer chown what it does not own.
    let out = sandbox_sh(
        dir.path(),
        &["--uid", "0", "--cap-drop", "ALL"],
        "touch /tmp/f && chown 1:1 /tmp/f && echo chowned",
    );
    assert!(!out.stdout().contains("chowned"), "{out}");
    let out = sandbox_sh(
        dir.path(),
        &["--uid", "0"],
        "touch /tmp/f && chown 1:1 /tmp/f && echo chowned",
    );
    assert_eq!(
        out.lines(),
        ["chowned"],
        "control: CAP_CHOWN by default\n{out}"
    );
}

#[test]
fn cap_add_net_raw_gives_root_inside_raw_sockets() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let status = status_inside(dir.path(), &["--uid", "0", "--cap-add", "NET_RAW"]);
    for field in ["CapEff", "CapBnd"] {
        assert_eq!(
            cap_field(&status, field),
            PODMAN_CAPS | CAP_NET_RAW,
            "{field}: {status:?}"
        );
    }
    if !Path::new(PYTHON).exists() {
        skip(&format!("{PYTHON} is missing: cannot try a raw socket"));
        return;
    }
    let code = "import socket\n\
                try:\n    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n    print('raw-ok')\n\
                except OSError as e:\n    print('raw', e.errno)\n";
    let raw = |options: &[&str]| {
        let mut cmd = sbx_run(dir.path(), options);
        cmd.args(["--", PYTHON, "-c", code]);
        run(cmd)
    };
    let out = raw(&["--uid", "0", "--cap-add", "NET_RAW"]);
    assert_eq!(out.lines(), ["raw-ok"], "{out}");
    let out = raw(&["--uid", "0"]);
    assert_eq!(
        out.lines(),
        [format!("raw {}", libc::EPERM)],
        "control: no raw socket without NET_RAW\n{out}"
    );
}

#[test]
fn cap_add_all_is_refused() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(dir.path(), &["--uid", "0", "--cap-add", "ALL"], "echo ran");
    out.assert_sbx_error(&["ALL"]);
    assert!(!out.stdout().contains("ran"), "{out}");
}

#[test]
fn cap_names_are_case_insensitive_with_or_without_prefix() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    for name in ["CAP_NET_RAW", "net_raw", "Cap_Net_Raw"] {
        let status = status_inside(dir.path(), &["--uid", "0", "--cap-add", name]);
        assert_eq!(
            cap_field(&status, "CapBnd"),
            PODMAN_CAPS | CAP_NET_RAW,
            "--cap-add {name}: {status:?}"
        );
    }
}

#[test]
fn no_new_privs_is_always_set() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    for options in [
        &[][..],
        &["-p", "strict"],
        &["--uid", "0"],
        &["--seccomp", "off"],
        &["--landlock", "off"],
    ] {
        let status = status_inside(dir.path(), options);
        assert_eq!(
            status.get("NoNewPrivs").map(String::as_str),
            Some("1"),
            "with {options:?}: {status:?}"
        );
    }
}

#[test]
fn seccomp_filter_is_on_by_default() {
    if !require_sandbox() || !require("seccomp") {
        return;
    }
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let status = status_inside(dir.path(), options);
        assert_seccomp_fields(&status, true, &format!("the {profile} profile"));
    }
    // Control: with --seccomp off the fields are the runner's own (0 and 0 unless the
    // runner is itself confined), so the fields do show what sbx adds.
    let status = status_inside(dir.path(), &["--seccomp", "off"]);
    assert_seccomp_fields(&status, false, "--seccomp off");
}

// ---------------------------------------------------------------------------------------
// Denied system calls
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// The seccomp section of a profile
// ---------------------------------------------------------------------------------------

/// Writes a profile on top of `default` with the given `security` section; returns its path.
fn security_profile(dir: &TempDir, name: &str, security: &str) -> String {
    let path = dir.join(format!("{name}.json"));
    fs::write(
        &path,
        format!(r#"{{"extends": "default", "security": {security}}}"#),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn profile_can_deny_more_calls() {
    if !require_probes() {
        return;
    }
    let dir = TempDir::new();
    let (out, found) = calls(dir.path(), &[], &["ptrace"]);
    assert_eq!(
        found["ptrace"], "ESRCH",
        "control: ptrace is allowed\n{out}"
    );
    let profile = security_profile(&dir, "deny", r#"{"seccomp": {"deny": ["ptrace"]}}"#);
    let (out, found) = calls(dir.path(), &["-p", &profile], &["ptrace"]);
    assert_eq!(found["ptrace"], "EPERM", "{out}");
}

#[test]
fn profile_can_allow_a_denied_call_back() {
    if !require_probes() {
        return;
    }
    let dir = TempDir::new();
    let profile = security_profile(&dir, "allow", r#"{"seccomp": {"allow": ["keyctl"]}}"#);
    let (out, found) = calls(dir.path(), &["-p", &profile], &["keyctl", "add_key"]);
    assert_eq!(
        found["keyctl"], "ENOTSUP",
        "keyctl reaches the kernel\n{out}"
    );
    assert_eq!(found["add_key"], "EPERM", "the rest stays denied\n{out}");
}

#[test]
fn profile_can_turn_the_filter_off() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let profile = security_profile(&dir, "off", r#"{"seccomp": {"enabled": false}}"#);
    let status = status_inside(dir.path(), &["-p", &profile]);
    assert_seccomp_fields(&status, false, "\"enabled\": false");
}

// ---------------------------------------------------------------------------------------
// Nested namespaces
// ---------------------------------------------------------------------------------------

#[test]
fn nested_user_namespace_is_refused() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        for cmd in ["unshare -U true", "unshare -r true"] {
            let out = sandbox_sh(dir.path(), options, cmd);
            assert_ne!(out.code, 0, "`{cmd}` under the {profile} profile\n{out}");
            assert!(out.stderr().contains(EPERM_TEXT), "{out}");
        }
    }
    // Control: allowed, the same command works, so it is the sandbox that refuses.
    sandbox_sh(dir.path(), &["--allow-nested"], "unshare -U true").assert_success();
}

#[test]
fn allow_nested_lets_a_nested_sandbox_mount_proc() {
    if !require_sandbox() {
        return;
    }
    // What --allow-nested is for: a build step that runs its own sandbox (bwrap, podman)
    // needs a user, mount and pid namespace of its own and a fresh /proc.
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &["--allow-nested"],
        "unshare -Urmpf --mount-proc sh -c 'echo pid $$'",
    );
    out.assert_success();
    assert_eq!(out.lines(), ["pid 1"], "{out}");
}

#[test]
fn raising_max_user_namespaces_does_not_help() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &["--uid", "0"],
        "echo 1000 > /proc/sys/user/max_user_namespaces && echo raised; \
         unshare -U true && echo nested",
    );
    assert_eq!(out.lines(), Vec::<String>::new(), "{out}");
    assert!(
        out.stderr().contains(EROFS),
        "/proc/sys is read-only\n{out}"
    );
}

#[test]
fn profile_allow_nested_lets_unshare_work() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    // The command reads its user namespace, then makes a nested one and reads that.
    let script = "readlink /proc/self/ns/user; unshare -U readlink /proc/self/ns/user";
    let profile = security_profile(&dir, "nested", r#"{"seccomp": {"allow_nested": true}}"#);
    let out = sandbox_sh(dir.path(), &["-p", &profile], script);
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines.iter().all(|l| l.starts_with("user:[")),
        "two user namespaces named\n{out}"
    );
    assert_ne!(
        lines[0], lines[1],
        "unshare -U made a user namespace of its own\n{out}"
    );
    // Control: without the profile's allow_nested, the same unshare is refused.
    let out = sandbox_sh(dir.path(), &[], script);
    assert_ne!(out.code, 0, "{out}");
    assert_eq!(out.lines().len(), 1, "{out}");
    assert!(out.stderr().contains(EPERM_TEXT), "{out}");
}

// ---------------------------------------------------------------------------------------
// Landlock
// ---------------------------------------------------------------------------------------

/// Runs the TCP probe `what` (`bind` or `connect [PORT]`); returns its result.
#[track_caller]
fn tcp(dir: &Path, options: &[&str], what: &[&str]) -> (Outcome, String) {
    let mut args = vec!["tcp"];
    args.extend_from_slice(what);
    let out = probe(dir, options, &args);
    out.assert_success();
    let key = format!("tcp_{}", what[0]);
    let result = results(&out)
        .remove(&key)
        .unwrap_or_else(|| panic!("no {key} result\n{out}"));
    (out, result)
}

#[test]
fn tcp_bind_is_denied_with_network_none() {
    if !require_probes() {
        return;
    }
    let dir = TempDir::new();
    // Landlock's network rules came with ABI 4.
    if !landlock::has_abi(4, dir.path()) {
        return;
    }
    for (profile, options) in PROFILES {
        let (out, result) = tcp(dir.path(), options, &["bind"]);
        assert!(
            result == "EACCES" || result == "EPERM",
            "bind on the sandbox's own loopback under {profile}\n{out}"
        );
    }
    let (out, result) = tcp(dir.path(), &["--landlock", "off"], &["bind"]);
    assert_eq!(result, "ok", "control: --landlock off\n{out}");
}

#[test]
fn tcp_connect_is_denied_with_network_none() {
    if !require_probes() {
        return;
    }
    let dir = TempDir::new();
    if !landlock::has_abi(4, dir.path()) {
        return;
    }
    for (profile, options) in PROFILES {
        let (out, result) = tcp(dir.path(), options, &["connect"]);
        assert!(
            result == "EACCES" || result == "EPERM",
            "connect on the sandbox's own loopback under {profile}\n{out}"
        );
    }
    // Control: without Landlock the attempt reaches the network stack (nothing listens).
    let (out, result) = tcp(dir.path(), &["--landlock", "off"], &["connect"]);
    assert_eq!(result, "ECONNREFUSED", "control: --landlock off\n{out}");
}

#[test]
fn tcp_is_not_restricted_with_network_host() {
    if !require_probes() {
        return;
    }
    let dir = TempDir::new();
    // Below ABI 4 nothing restricts TCP, and the claim would hold trivially.
    if !landlock::has_abi(4, dir.path()) {
        return;
    }
    let (out, result) = tcp(dir.path(), &["--net", "host"], &["bind"]);
    assert_eq!(result, "ok", "{out}");
}

#[test]
fn verbose_run_reports_landlock_and_seccomp() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = run(sbx_run(dir.path(), &["-v", "--", "true"]));
    out.assert_success();
    // Fully enforced from ABI 6, partially below, not enforced without Landlock: what
    // this kernel gives, in `-v` and in `sbx check --json` alike.
    landlock::assert_reported(&out);
    let all = format!("{}{}", out.stdout(), out.stderr());
    assert!(all.lines().any(|l| l.contains("seccomp:")), "{out}");

    let out = run(sbx_run(
        dir.path(),
        &["-v", "--landlock", "off", "--", "true"],
    ));
    out.assert_success();
    let line = landlock::verbose_line(&out);
    assert!(
        !line.contains("fully enforced") && !line.contains("partially enforced"),
        "--landlock off must not claim enforcement: {line}\n{out}"
    );
    assert!(
        line.contains("not enforced") || line.contains("off"),
        "--landlock off: {line}\n{out}"
    );
}

#[test]
fn landlock_required_runs_where_the_kernel_has_it() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let full = landlock::abi() >= landlock::SBX_ABI;
    for (profile, options) in PROFILES {
        let mut options = options.to_vec();
        options.extend_from_slice(&["-v", "--landlock", "required"]);
        let out = sandbox_sh(dir.path(), &options, "echo ran");
        if full {
            out.assert_success();
            assert_eq!(out.lines(), ["ran"], "{profile}\n{out}");
            let line = landlock::verbose_line(&out);
            assert!(line.contains("fully enforced"), "{profile}: {line}\n{out}");
        } else {
            // A kernel that cannot enforce every rule: `required` refuses to start.
            out.assert_sbx_error(&["Landlock is required", "sbx check", "best-effort"]);
            assert!(!out.stdout().contains("ran"), "{profile}\n{out}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Masked and read-only kernel paths
// ---------------------------------------------------------------------------------------

const MASKED_FILES: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/latency_stats",
];

#[test]
fn masked_proc_files_read_empty() {
    if !require_probes() {
        return;
    }
    let present: Vec<&str> = MASKED_FILES
        .iter()
        .copied()
        .filter(|p| Path::new(p).exists())
        .collect();
    if present.is_empty() {
        skip("the host has none of the masked /proc files");
        return;
    }
    let dir = TempDir::new();
    let mut args = vec!["read", "--add-key"];
    args.extend_from_slice(&present);
    // The probe first adds a key of its own (the filter allows add_key only with
    // --seccomp off), so /proc/keys has something to show.
    let runs: [&[&str]; 4] = [
        &[],
        &["-p", "strict"],
        &["--uid", "0"],
        &["--seccomp", "off"],
    ];
    for options in runs {
        let out = probe(dir.path(), options, &args);
        out.assert_success();
        let found = results(&out);
        for path in &present {
            assert_eq!(
                found.get(*path).map(String::as_str),
                Some("ok 0"),
                "{path} with {options:?} should read empty\n{out}"
            );
        }
    }
    // Control: unmasked (--allow-nested), each reads otherwise: the key is listed, the
    // timer list is refused or shown.
    let out = probe(dir.path(), &["--allow-nested", "--seccomp", "off"], &args);
    out.assert_success();
    let found = results(&out);
    assert_eq!(
        found.get("add_key").map(String::as_str),
        Some("ok"),
        "{out}"
    );
    for path in &present {
        assert_ne!(
            found.get(*path).map(String::as_str),
            Some("ok 0"),
            "control: {path} unmasked\n{out}"
        );
    }
}

#[test]
fn masked_directories_are_empty() {
    if !require_sandbox() {
        return;
    }
    let present: Vec<&str> = ["/proc/acpi", "/proc/scsi", "/sys/firmware"]
        .into_iter()
        .filter(|p| Path::new(p).is_dir())
        .collect();
    if present.is_empty() {
        skip("the host has none of /proc/acpi, /proc/scsi, /sys/firmware");
        return;
    }
    let script = present
        .iter()
        .map(|p| format!("test -d {p} && echo {p} $(ls -A {p} | wc -l)"))
        .collect::<Vec<_>>()
        .join("; ");
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let out = sandbox_sh(dir.path(), options, &script);
        let want: Vec<String> = present.iter().map(|p| format!("{p} 0")).collect();
        assert_eq!(out.lines(), want, "{profile}: empty directories\n{out}");
    }
    // Control: unmasked, what the host lists there shows up.
    let out = sandbox_sh(dir.path(), &["--allow-nested"], &script);
    for path in &present {
        let on_host = fs::read_dir(path).unwrap().count();
        if on_host > 0 {
            assert!(
                out.lines().contains(&format!("{path} {on_host}")),
                "control: {path} unmasked lists {on_host} entries\n{out}"
            );
        }
    }
}

/// A regular file under `dir` on the host (depth first, a few levels), for write attempts.
fn some_file_under(dir: &Path, depth: u32) -> Option<PathBuf> {
    let mut entries: Vec<_> = fs::read_dir(dir).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in &entries {
        let path = entry.path();
        if path.symlink_metadata().is_ok_and(|m| m.is_file()) {
            return Some(path);
        }
    }
    if depth == 0 {
        return None;
    }
    entries
        .iter()
        .filter(|e| e.path().symlink_metadata().is_ok_and(|m| m.is_dir()))
        .find_map(|e| some_file_under(&e.path(), depth - 1))
}

#[test]
fn kernel_tunables_are_read_only_even_for_root_inside() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let script = "echo escaped > /proc/sys/kernel/hostname && echo written";
    for (profile, options) in PROFILES {
        let mut options = options.to_vec();
        options.extend_from_slice(&["--uid", "0"]);
        let out = sandbox_sh(dir.path(), &options, script);
        assert!(!out.stdout().contains("written"), "{profile}\n{out}");
        assert!(out.stderr().contains(EROFS), "{profile}\n{out}");
    }
    // Control: unmasked, the write gets past the mount (to the kernel's own refusal).
    let out = sandbox_sh(dir.path(), &["--uid", "0", "--allow-nested"], script);
    assert!(!out.stderr().contains(EROFS), "control\n{out}");
}

#[test]
fn proc_kernel_interfaces_are_read_only() {
    if !require_sandbox() {
        return;
    }
    let mut targets: Vec<PathBuf> = ["/proc/irq", "/proc/bus", "/proc/fs"]
        .iter()
        .filter_map(|d| some_file_under(Path::new(d), 3))
        .collect();
    let sysrq = Path::new("/proc/sysrq-trigger");
    if sysrq.exists() {
        targets.push(sysrq.to_path_buf());
    }
    if targets.is_empty() {
        skip("the host has no file under /proc/irq, /proc/bus, /proc/fs");
        return;
    }
    // `>` opens with O_TRUNC: a read-only mount refuses that (EROFS) before the file's
    // permissions are looked at. (`true`, not `:`: a failed redirection of a special
    // builtin ends the shell.)
    let script = targets
        .iter()
        .map(|t| format!("true > {} && echo written {}", t.display(), t.display()))
        .collect::<Vec<_>>()
        .join("; ");
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let mut options = options.to_vec();
        options.extend_from_slice(&["--uid", "0"]);
        let out = sandbox_sh(dir.path(), &options, &script);
        assert!(!out.stdout().contains("written"), "{profile}\n{out}");
        for target in &targets {
            let t = target.to_str().unwrap();
            assert!(
                out.stderr()
                    .lines()
                    .any(|l| l.contains(t) && l.contains(EROFS)),
                "{profile}: writing {t} should fail with {EROFS:?}\n{out}"
            );
        }
    }
}

#[test]
fn sys_is_read_only() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let name = unique("sys");
    let script =
        format!("touch /sys/{name} && echo created; touch /sys/kernel/{name} && echo created");
    for (profile, options) in PROFILES {
        let mut options = options.to_vec();
        options.extend_from_slice(&["--uid", "0"]);
        let out = sandbox_sh(dir.path(), &options, &script);
        assert!(!out.stdout().contains("created"), "{profile}\n{out}");
        assert_eq!(out.stderr().matches(EROFS).count(), 2, "{profile}\n{out}");
    }
}

#[test]
fn kernel_log_device_is_absent() {
    if !require_sandbox() {
        return;
    }
    if !Path::new("/dev/kmsg").exists() {
        eprintln!("note: the host has no /dev/kmsg either");
    }
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let out = sandbox_sh(
            dir.path(),
            options,
            "test -e /dev/kmsg && echo present; echo hi > /dev/kmsg && echo logged; \
             test -e /dev/null && echo dev-ok",
        );
        // The sandbox ran (its /dev is there), and /dev/kmsg is not in it.
        out.assert_success();
        assert_eq!(out.lines(), ["dev-ok"], "{profile}\n{out}");
        assert!(out.stderr().contains("/dev/kmsg"), "{profile}\n{out}");
    }
}

const DEV_ENTRIES: &[&str] = &[
    "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty",
    "urandom", "zero",
];

#[test]
fn dev_holds_only_the_minimal_set() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let out = sandbox_sh(dir.path(), options, "ls -A /dev");
        out.assert_success();
        let mut inside: Vec<String> = out.stdout().split_whitespace().map(String::from).collect();
        inside.sort();
        assert_eq!(inside, DEV_ENTRIES, "{profile}\n{out}");
    }
}

#[test]
fn dev_is_read_only() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let script = "touch /dev/sbx-planted && echo created; mkdir /dev/sbx-dir && echo created; \
                  touch /dev/shm/ok && echo shm-ok";
    for (profile, options) in PROFILES {
        for uid in [&[][..], &["--uid", "0"]] {
            let mut options = options.to_vec();
            options.extend_from_slice(uid);
            let out = sandbox_sh(dir.path(), &options, script);
            // /dev/shm stays writable: the failures are /dev's own.
            assert_eq!(out.lines(), ["shm-ok"], "{profile} {uid:?}\n{out}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Protected paths
// ---------------------------------------------------------------------------------------

/// A working directory holding a git repository (made with git when it is installed).
fn repo() -> TempDir {
    let dir = TempDir::new();
    let git = Command::new("git")
        .args(["init", "-q"])
        .arg(dir.path())
        .output();
    match git {
        Ok(out) if out.status.success() => {}
        _ => {
            fs::create_dir_all(dir.join(".git/hooks")).unwrap();
            fs::write(
                dir.join(".git/config"),
                "[core]\n\trepositoryformatversion = 0\n",
            )
            .unwrap();
            fs::write(dir.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        }
    }
    assert!(dir.join(".git/hooks").is_dir() && dir.join(".git/config").is_file());
    dir
}

/// The default profile, and strict with the repository bound in and current.
fn repo_profiles(repo: &TempDir) -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("default", vec![]),
        (
            "strict",
            ["-p", "strict", "--bind", repo.str(), "-w", repo.str()]
                .map(String::from)
                .to_vec(),
        ),
    ]
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn git_hook_cannot_be_planted() {
    if !require_sandbox() {
        return;
    }
    let repo = repo();
    for (profile, options) in repo_profiles(&repo) {
        let out = sandbox_sh(
            repo.path(),
            &as_strs(&options),
            "printf '#!/bin/sh\\necho pwned\\n' > .git/hooks/pre-commit && echo planted; \
             touch .git/hooks/post-checkout && echo planted; \
             echo build > output.txt && echo other-ok",
        );
        assert_eq!(out.lines(), ["other-ok"], "{profile}\n{out}");
        for hook in ["pre-commit", "post-checkout"] {
            assert!(
                !repo.join(".git/hooks").join(hook).exists(),
                "{profile}: the hook {hook} was planted"
            );
        }
        assert!(repo.join("output.txt").exists());
        fs::remove_file(repo.join("output.txt")).unwrap();
    }
}

#[test]
fn git_hooks_directory_cannot_be_swapped() {
    if !require_sandbox() {
        return;
    }
    let repo = repo();
    use std::os::unix::fs::MetadataExt;
    let hooks_ino = fs::metadata(repo.join(".git/hooks")).unwrap().ino();
    let out = sandbox_sh(
        repo.path(),
        &[],
        "mv .git/hooks .git/hooks-old && echo moved; \
         rm -rf .git/hooks && echo removed; \
         mkdir -p elsewhere/hooks && mv elsewhere/hooks .git/hooks && echo swapped; \
         test -d elsewhere/hooks && echo other-ok",
    );
    // The sandbox ran, could write the repository, and could not touch the hooks.
    out.assert_success();
    assert_eq!(out.lines(), ["other-ok"], "{out}");
    assert!(repo.join(".git/hooks").is_dir());
    assert_eq!(
        fs::metadata(repo.join(".git/hooks")).unwrap().ino(),
        hooks_ino,
        "the hooks directory was replaced"
    );
    assert!(!repo.join(".git/hooks-old").exists());
    assert!(repo.join("elsewhere/hooks").is_dir());
}

#[test]
fn git_config_cannot_be_changed() {
    if !require_sandbox() {
        return;
    }
    let repo = repo();
    let before = fs::read(repo.join(".git/config")).unwrap();
    for (profile, options) in repo_profiles(&repo) {
        // core.fsmonitor runs a command on the next `git status` outside the sandbox.
        let out = sandbox_sh(
            repo.path(),
            &as_strs(&options),
            "printf '[core]\\n\\tfsmonitor = touch /tmp/pwned\\n' >> .git/config && echo appended; \
             printf '[core]\\n\\tfsmonitor = evil\\n' > new-config; \
             mv new-config .git/config && echo replaced; \
             rm -f .git/config && echo removed; \
             echo more >> notes.txt && echo other-ok",
        );
        assert_eq!(out.lines(), ["other-ok"], "{profile}\n{out}");
        assert_eq!(
            fs::read(repo.join(".git/config")).unwrap(),
            before,
            "{profile}: .git/config changed"
        );
    }
}

#[test]
fn git_directory_cannot_be_renamed() {
    if !require_sandbox() {
        return;
    }
    let repo = repo();
    let out = sandbox_sh(
        repo.path(),
        &[],
        "mv .git .git2 && echo moved; mkdir d && mv d d2 && echo other-moved",
    );
    assert_eq!(out.lines(), ["other-moved"], "{out}");
    assert!(repo.join(".git/config").is_file());
    assert!(!repo.join(".git2").exists());
}

#[test]
fn protect_option_keeps_an_existing_file_read_only() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    fs::write(dir.join("secret.txt"), "original\n").unwrap();
    let script = "cat secret.txt; echo leaked >> secret.txt && echo appended; \
                  rm -f secret.txt && echo removed; echo x > other.txt && echo other-ok";
    let out = sandbox_sh(dir.path(), &["--protect", "secret.txt"], script);
    assert_eq!(out.lines(), ["original", "other-ok"], "{out}");
    assert_eq!(
        fs::read_to_string(dir.join("secret.txt")).unwrap(),
        "original\n"
    );
    // Control: unprotected, the same script changes it.
    let out = sandbox_sh(dir.path(), &[], script);
    assert_eq!(
        out.lines(),
        ["original", "appended", "removed", "other-ok"],
        "{out}"
    );
}

#[test]
fn protect_option_covers_a_file_not_created_yet() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &["--protect", "newfile"],
        "echo planted > newfile && echo created; echo x > other && echo other-ok",
    );
    assert_eq!(out.lines(), ["other-ok"], "{out}");
    // sbx may leave an empty placeholder; never what the sandbox wrote.
    let left = fs::read_to_string(dir.join("newfile")).unwrap_or_default();
    assert_eq!(left, "", "the sandbox created newfile");
    // Control: unprotected, the sandbox can create it.
    let _ = fs::remove_file(dir.join("newfile"));
    let out = sandbox_sh(dir.path(), &[], "echo planted > newfile && echo created");
    assert_eq!(out.lines(), ["created"], "control\n{out}");
}

#[test]
fn protect_option_applies_under_every_writable_bind() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let other = TempDir::new();
    fs::write(other.join("secret.txt"), "original\n").unwrap();
    let script = format!(
        "echo leaked >> {0}/secret.txt && echo appended; echo x > {0}/other && echo other-ok",
        other.str()
    );
    let out = sandbox_sh(
        dir.path(),
        &["--bind", other.str(), "--protect", "secret.txt"],
        &script,
    );
    assert_eq!(out.lines(), ["other-ok"], "{out}");
    assert_eq!(
        fs::read_to_string(other.join("secret.txt")).unwrap(),
        "original\n"
    );
}

#[test]
fn protect_option_takes_absolute_paths() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    fs::create_dir(dir.join("sub")).unwrap();
    let target = dir.join("sub/config.toml");
    fs::write(&target, "original\n").unwrap();
    let t = target.to_str().unwrap();
    let script =
        format!("echo leaked >> {t} && echo appended; echo x > sub/other && echo other-ok");
    let out = sandbox_sh(dir.path(), &["--protect", t], &script);
    assert_eq!(out.lines(), ["other-ok"], "{out}");
    assert_eq!(fs::read_to_string(&target).unwrap(), "original\n");
}

#[test]
fn profile_protect_list_keeps_paths_read_only() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    fs::write(dir.join(".env"), "TOKEN=original\n").unwrap();
    fs::create_dir(dir.join("secrets")).unwrap();
    fs::write(dir.join("secrets/key"), "original\n").unwrap();
    let profile = security_profile(&dir, "protect", r#"{"protect": [".env", "secrets/"]}"#);
    let out = sandbox_sh(
        dir.path(),
        &["-p", &profile],
        "echo TOKEN=leaked >> .env && echo env-changed; \
         echo x >> secrets/key && echo key-changed; \
         echo x > secrets/new && echo key-added; echo x > other && echo other-ok",
    );
    assert_eq!(out.lines(), ["other-ok"], "{out}");
    assert_eq!(
        fs::read_to_string(dir.join(".env")).unwrap(),
        "TOKEN=original\n"
    );
    assert_eq!(
        fs::read_to_string(dir.join("secrets/key")).unwrap(),
        "original\n"
    );
    assert!(!dir.join("secrets/new").exists());
}

// ---------------------------------------------------------------------------------------
// Files, devices and chroot
// ---------------------------------------------------------------------------------------

#[test]
fn etc_shadow_stays_unreadable_through_a_bind() {
    if !require_sandbox() {
        return;
    }
    let shadow = Path::new("/etc/shadow");
    if !shadow.exists() {
        skip("the host has no /etc/shadow");
        return;
    }
    if fs::read(shadow).is_ok() {
        skip("the test user can read /etc/shadow on the host (running as root?)");
        return;
    }
    let dir = TempDir::new();
    for uid in [&[][..], &["--uid", "0"]] {
        let mut options = vec!["--ro-bind", "/etc/shadow:/tmp/x"];
        options.extend_from_slice(uid);
        let out = sandbox_sh(
            dir.path(),
            &options,
            "test -f /tmp/x && echo bound; cat /tmp/x && echo read",
        );
        assert!(!out.stdout().contains("read"), "{uid:?}\n{out}");
        assert!(!out.stdout().contains("root:"), "{uid:?}\n{out}");
        // Either sbx refuses the bind, naming the file, or the file is bound and the
        // command cannot read it.
        if out.code == 125 {
            out.assert_sbx_error(&["/etc/shadow"]);
        } else {
            out.assert_code(1);
            assert_eq!(out.lines(), ["bound"], "{uid:?}\n{out}");
            assert!(
                out.stderr().contains("/tmp/x: Permission denied"),
                "{uid:?}\n{out}"
            );
        }
    }
}

#[test]
fn mknod_of_a_device_fails_even_for_root_inside() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let mut options = options.to_vec();
        options.extend_from_slice(&["--uid", "0"]);
        let out = sandbox_sh(
            dir.path(),
            &options,
            "mknod /tmp/mem c 1 1 && echo char-made; mknod /tmp/disk b 254 0 && echo block-made; \
             mknod /tmp/fifo p && echo fifo-ok",
        );
        // A fifo works: mknod itself is there, only devices are refused.
        assert_eq!(out.lines(), ["fifo-ok"], "{profile}\n{out}");
        assert_eq!(
            out.stderr().matches(EPERM_TEXT).count(),
            2,
            "{profile}\n{out}"
        );
    }
}

#[test]
fn chroot_fails_for_a_non_root_command() {
    if !require_probes() {
        return;
    }
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let out = probe(dir.path(), options, &["chroot"]);
        out.assert_success();
        assert_eq!(out.lines(), ["chroot EPERM"], "{profile}\n{out}");
    }
    // Control: root inside holds SYS_CHROOT (podman's set), and chroot works.
    let out = probe(dir.path(), &["--uid", "0"], &["chroot"]);
    assert_eq!(out.lines(), ["chroot ok"], "control\n{out}");
}

// ---------------------------------------------------------------------------------------
// Network, the old root, and init
// ---------------------------------------------------------------------------------------

#[test]
fn host_loopback_service_is_unreachable() {
    if !require_probes() {
        return;
    }
    let dir = TempDir::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let accepted = || match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    };
    // With Landlock off as well: the network namespace alone keeps the host out of reach.
    let runs: [&[&str]; 3] = [&[], &["-p", "strict"], &["--landlock", "off"]];
    for options in runs {
        let (out, result) = tcp(dir.path(), options, &["connect", &port]);
        assert_ne!(result, "ok", "{options:?}\n{out}");
        assert!(
            !accepted(),
            "the host's server got a connection ({options:?})"
        );
    }
    // Control: with the host's network the same connection works.
    let (out, result) = tcp(dir.path(), &["--net", "host"], &["connect", &port]);
    assert_eq!(result, "ok", "control\n{out}");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(accepted(), "control: the host's server saw no connection");
}

#[test]
fn abstract_unix_socket_on_the_host_is_unreachable() {
    if !require_probes() {
        return;
    }
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    // Such as X11's @/tmp/.X11-unix/X0 or a D-Bus bus: a way to type into the desktop.
    let name = unique("abstract");
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = UnixListener::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let accepted = || match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    };
    let dir = TempDir::new();
    let connect = |options: &[&str]| {
        let out = probe(dir.path(), options, &["unix", &name]);
        out.assert_success();
        let result = results(&out)
            .remove("unix_connect")
            .unwrap_or_else(|| panic!("no result\n{out}"));
        (out, result)
    };
    // The abstract namespace belongs to the network namespace; with the host's network,
    // Landlock's scope (ABI 6) is what keeps the sandbox out.
    let mut runs: Vec<&[&str]> = vec![&[], &["-p", "strict"]];
    if landlock::has_abi(6, dir.path()) {
        runs.push(&["--net", "host"]);
    }
    for options in runs {
        let (out, result) = connect(options);
        assert_ne!(result, "ok", "{options:?}\n{out}");
        assert!(
            !accepted(),
            "the host's socket got a connection ({options:?})"
        );
    }
    // Control: with the host's network and no Landlock, the connection works.
    let (out, result) = connect(&["--net", "host", "--landlock", "off"]);
    assert_eq!(result, "ok", "control\n{out}");
}

#[test]
fn old_root_is_not_visible() {
    if !require_sandbox() {
        return;
    }
    let host: std::collections::BTreeSet<String> =
        parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap())
            .into_iter()
            .map(|m| m.mount_point)
            .collect();
    let dir = TempDir::new();
    let home = home();
    for (profile, options) in PROFILES {
        let out = sandbox_sh(dir.path(), options, "cat /proc/self/mountinfo");
        out.assert_success();
        let inside = parse_mountinfo(&out.stdout());
        // The sandbox's own mounts: /proc, /dev, /tmp and what sits below them, masks
        // in /sys, the home and the working directory; everything else must be a mount
        // point the host has too.
        let own = |p: &str| {
            let path = Path::new(p);
            host.contains(p)
                || ["/proc", "/dev", "/tmp", "/sys"]
                    .iter()
                    .any(|r| path.starts_with(r))
                || path.starts_with(&home)
                || path == dir.path()
                || hides_host_path(p)
        };
        let strays: Vec<&MountEntry> = inside.iter().filter(|m| !own(&m.mount_point)).collect();
        assert!(
            strays.is_empty(),
            "{profile}: mounts that are neither the host's nor the sandbox's own: {strays:#?}"
        );
        assert_eq!(
            inside.iter().filter(|m| m.mount_point == "/").count(),
            1,
            "{profile}: exactly one root\n{out}"
        );
        // And the root directory lists what the host's does, nothing more.
        let out = sandbox_sh(dir.path(), options, "ls -A /");
        let mut listed: Vec<String> = out.stdout().split_whitespace().map(String::from).collect();
        listed.sort();
        let mut on_host: Vec<String> = fs::read_dir("/")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        on_host.sort();
        assert_eq!(listed, on_host, "{profile}: / inside\n{out}");
    }
}

#[test]
fn init_executable_cannot_be_opened_for_writing() {
    if !require_probes() {
        return;
    }
    let dir = TempDir::new();
    let code = "import errno\n\
                for path in ('/proc/1/exe', '/proc/self/exe'):\n    \
                    for mode in ('r+b', 'rb'):\n        \
                        try:\n            open(path, mode).close(); print(path, mode, 'ok')\n        \
                        except OSError as e:\n            print(path, mode, errno.errorcode[e.errno])\n";
    for (profile, options) in PROFILES {
        for uid in [&[][..], &["--uid", "0"]] {
            let mut options = options.to_vec();
            options.extend_from_slice(uid);
            let mut cmd = sbx_run(dir.path(), &options);
            cmd.args(["--", PYTHON, "-c", code]);
            let out = run(cmd);
            out.assert_success();
            let lines = out.lines();
            // sbx's init (CVE-2019-5736): neither for writing nor at all.
            assert!(
                !lines
                    .iter()
                    .any(|l| l.starts_with("/proc/1/exe") && l.ends_with(" ok")),
                "{profile} {uid:?}\n{out}"
            );
            // Control: the command's own executable opens for reading, so /proc works.
            assert!(
                lines.contains(&"/proc/self/exe rb ok".to_string()),
                "{profile} {uid:?}\n{out}"
            );
        }
    }
}

#[test]
fn init_executable_link_is_unreadable() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let out = sandbox_sh(
            dir.path(),
            options,
            "readlink /proc/1/exe && echo leaked; readlink /proc/self/exe >/dev/null && echo self-ok",
        );
        assert_eq!(out.lines(), ["self-ok"], "{profile}\n{out}");
    }
}

#[test]
fn init_cannot_be_reached_through_proc_or_ptrace() {
    if !require_probes() {
        return;
    }
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        for uid in [&[][..], &["--uid", "0"]] {
            let mut options = options.to_vec();
            options.extend_from_slice(uid);
            let out = sandbox_sh(
                dir.path(),
                &options,
                "ls /proc/1/fd && echo fds-listed; cat /proc/1/environ && echo environ-read; \
                 ls /proc/1/root/ && echo root-listed; ls /proc/self/fd >/dev/null && echo self-ok",
            );
            // Control: the command's own entries are there, so /proc works.
            assert_eq!(out.lines(), ["self-ok"], "{profile} {uid:?}\n{out}");
            let (out, found) = calls(dir.path(), &options, &["ptrace_attach_init"]);
            assert_eq!(
                found["ptrace_attach_init"], "EPERM",
                "{profile} {uid:?}\n{out}"
            );
        }
    }
}
