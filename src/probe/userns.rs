//! Whether unprivileged user namespaces work, and what blocks them when they do not.

use std::fs;
use std::path::Path;

use nix::sched::{unshare, CloneFlags};

use super::child::in_child;
use super::Check;

pub(super) fn userns() -> Check {
    let verdict = in_child(|| {
        enter_userns(CloneFlags::empty())?;
        // AppArmor's restriction lets the unshare succeed but strips the capabilities the
        // new namespace should grant; needing CAP_SYS_ADMIN in it tells the two apart.
        unshare(CloneFlags::CLONE_NEWNS).map_err(|e| {
            format!("no capabilities in a new user namespace: unshare(CLONE_NEWNS): {e}")
        })
    });
    let Err(why) = verdict else {
        return Check::pass("userns", "user namespaces work for this user");
    };
    let blockers = userns_blockers(|key| fs::read_to_string(Path::new("/proc/sys").join(key)).ok());
    if blockers.is_empty() {
        let fix = if under_seccomp_filter() {
            SECCOMP_FIX
        } else {
            "no blocking sysctl found; inside a container, its seccomp profile or LSM may \
             deny unshare(CLONE_NEWUSER): run sbx on the host or allow user namespaces there"
        };
        return Check::fail("userns", why, fix);
    }
    let (settings, fixes): (Vec<String>, Vec<String>) = blockers.into_iter().unzip();
    let detail = format!("{why}; blocked by {}", settings.join(", "));
    Check::fail("userns", detail, fixes.join("; "))
}

/// Settings that block unprivileged user namespaces, each with the command that lifts it.
/// `read` returns the contents of a file under /proc/sys.
fn userns_blockers(read: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let rules = [
        ("kernel/unprivileged_userns_clone", "0", "1", ""),
        ("user/max_user_namespaces", "0", "15000", ""),
        (
            "kernel/apparmor_restrict_unprivileged_userns",
            "1",
            "0",
            " (Ubuntu 23.10+); or, keeping the restriction, install sbx's AppArmor profile: \
             `sudo install -m 644 contrib/apparmor/sbx /etc/apparmor.d/sbx && sudo \
             apparmor_parser -r /etc/apparmor.d/sbx` (the Debian package installs it)",
        ),
    ];
    let mut found = Vec::new();
    for (file, bad, good, note) in rules {
        if read(file).is_some_and(|v| v.trim() == bad) {
            let key = file.replace('/', ".");
            let fix = format!(
                "`sudo sysctl -w {key}={good}`, kept across reboots in /etc/sysctl.d/{note}"
            );
            found.push((format!("{key} = {bad}"), fix));
        }
    }
    found
}

/// Child side: a new user namespace plus `more` namespaces. Its errors start with
/// NO_USERNS, so the parent can tell "no user namespace at all" from a later failure.
pub(super) fn enter_userns(more: CloneFlags) -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWUSER | more).map_err(|e| format!("{NO_USERNS}{e}"))
}

const NO_USERNS: &str = "cannot create a user namespace: ";

/// The fix for a probe that failed because user namespaces do not work at all.
pub(super) fn needs_userns(why: &str) -> Option<&'static str> {
    why.starts_with(NO_USERNS)
        .then_some("user namespaces must work first: see the `userns` check")
}

/// What to add so that a container's seccomp profile lets sbx create user namespaces.
pub const SECCOMP_FIX: &str = "this process runs under a seccomp filter (a container's \
    profile, such as docker's default, denies unshare(CLONE_NEWUSER)): run the container with \
    `--security-opt seccomp=unconfined` (docker, podman) or a profile that allows unshare, or \
    `securityContext: {seccompProfile: {type: Unconfined}}` in Kubernetes";

/// Whether this process runs under a seccomp filter.
pub fn under_seccomp_filter() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Seccomp:") && l.split_whitespace().nth(1) == Some("2"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_blocking_sysctl() {
        let blockers = userns_blockers(|key| match key {
            "user/max_user_namespaces" => Some("0\n".into()),
            "kernel/apparmor_restrict_unprivileged_userns" => Some("1\n".into()),
            _ => None,
        });
        let settings: Vec<&str> = blockers.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            settings,
            [
                "user.max_user_namespaces = 0",
                "kernel.apparmor_restrict_unprivileged_userns = 1"
            ]
        );
        assert!(blockers[1]
            .1
            .contains("sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"));
        assert!(blockers[1].1.contains("contrib/apparmor/sbx"));
        assert!(blockers[1]
            .1
            .contains("apparmor_parser -r /etc/apparmor.d/sbx"));
        assert!(userns_blockers(|_| Some("1".into())).len() == 1);
        assert!(userns_blockers(|_| None).is_empty());
    }
}
