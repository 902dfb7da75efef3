//! Capabilities, no_new_privs and the Seccomp field.

use super::*;

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
