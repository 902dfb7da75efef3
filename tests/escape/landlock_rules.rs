//! Landlock.

use super::*;

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
    let out = run(sbx_run(dir.path(), &["--verbose", "--", "true"]));
    out.assert_success();
    // Fully enforced from ABI 6, partially below, not enforced without Landlock: what
    // this kernel gives, in `-v` and in `sbx check --json` alike.
    landlock::assert_reported(&out);
    let all = format!("{}{}", out.stdout(), out.stderr());
    assert!(all.lines().any(|l| l.contains("seccomp:")), "{out}");

    let out = run(sbx_run(
        dir.path(),
        &["--verbose", "--landlock", "off", "--", "true"],
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
        options.extend_from_slice(&["--verbose", "--landlock", "required"]);
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
