//! The seccomp section of a profile.

use super::*;

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
