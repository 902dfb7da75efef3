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

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

mod caps;
mod files;
mod kernel_paths;
mod landlock_rules;
mod nested;
mod network;
mod protected;
mod seccomp_profile;
mod syscalls;

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
        if errno == "EPERM" && found[*name] == "EPERM" {
            // Some kernels (Debian 12's 6.1) check a capability of the initial user
            // namespace first and refuse these calls by themselves: the EACCES profile
            // above is what shows the filter's answer there.
            eprintln!("note: the kernel refuses {name} with EPERM by itself here");
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
