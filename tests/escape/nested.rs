//! Nested namespaces.

use super::*;

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
