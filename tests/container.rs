//! sbx inside a container, as on CI runners that run jobs in containers (GitLab's docker
//! executor, GitHub `container:` jobs, Kubernetes pods): rootless podman, started by the test
//! user, runs sbx from a busybox image with the host's sbx and its libraries bound in.
//!
//! podman runs with runc and the cgroupfs manager: crun refuses the hybrid cgroup layout of
//! the machines that test sbx (docs/testing.md), and nothing here needs container limits.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;

const IMAGE: &str = "localhost/sbx-test-busybox";

/// A podman command as the test user, with runc.
fn podman() -> Command {
    common::podman::podman(Path::new("runc"))
}

/// The test image, imported once per test binary; None (after a skip) without podman.
fn image() -> Option<&'static str> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| common::podman::import_busybox(podman(), IMAGE));
    common::podman::ready(ready, IMAGE)
}

/// The directory holding the sbx under test, bound into the container at /sbx.
fn sbx_dir() -> PathBuf {
    sbx_bin().parent().unwrap().to_path_buf()
}

/// `podman run --rm OPTIONS` with sbx and its libraries bound in; the image and what to
/// run come next.
fn container(options: &[&str]) -> Command {
    let mut cmd = podman();
    cmd.args(["run", "--rm"]).args(options);
    cmd.arg("-v")
        .arg(format!("{}:/sbx:ro", sbx_dir().display()));
    for lib in [
        "/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib/x86_64-linux-gnu",
    ] {
        if Path::new(lib).is_dir() {
            cmd.arg("-v").arg(format!("{lib}:{lib}:ro"));
        }
    }
    cmd.arg(IMAGE);
    cmd
}

/// `podman run --rm OPTIONS IMAGE /sbx/sbx ARGS...`.
fn in_container(options: &[&str], args: &[&str]) -> Outcome {
    let mut cmd = container(options);
    cmd.arg(sbx_inside()).args(args);
    spawn(&mut cmd, None).finish(std::time::Duration::from_secs(120))
}

/// The sbx under test as the container sees it.
fn sbx_inside() -> String {
    format!("/sbx/{}", sbx_bin().file_name().unwrap().to_string_lossy())
}

fn check_entry(out: &Outcome, name: &str) -> serde_json::Value {
    let report: serde_json::Value = serde_json::from_str(&out.stdout())
        .unwrap_or_else(|e| panic!("sbx check --json: {e}\n{out}"));
    report[name].clone()
}

#[test]
fn check_names_a_masked_proc_and_the_option_that_unmasks_it() {
    if image().is_none() {
        return;
    }
    let out = in_container(&[], &["check", "--json"]);
    assert_eq!(out.code, 1, "sbx cannot run here, and check says so\n{out}");
    let proc = check_entry(&out, "proc_mount");
    assert_eq!(proc["ok"], false, "{out}");
    let detail = proc["detail"].as_str().unwrap();
    assert!(detail.contains("/proc is partly covered"), "{detail}");
    let fix = proc["fix"].as_str().unwrap();
    for option in [
        "unmask=ALL",
        "systempaths=unconfined",
        "procMount: Unmasked",
    ] {
        assert!(fix.contains(option), "{option} in {fix}");
    }
    // Control: with /proc unmasked, the same check passes.
    let out = in_container(&["--security-opt", "unmask=ALL"], &["check", "--json"]);
    assert_eq!(check_entry(&out, "proc_mount")["ok"], true, "{out}");
}

#[test]
fn check_names_a_seccomp_profile_that_denies_user_namespaces() {
    if image().is_none() {
        return;
    }
    // Docker's default profile refuses unshare(CLONE_NEWUSER); this one refuses unshare
    // outright and allows everything else.
    let dir = TempDir::new();
    let profile = dir.join("seccomp.json");
    fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["unshare", "clone3"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let seccomp = format!("seccomp={}", profile.display());
    let out = in_container(&["--security-opt", &seccomp], &["check", "--json"]);
    assert_eq!(out.code, 1, "{out}");
    let userns = check_entry(&out, "userns");
    assert_eq!(userns["ok"], false, "{out}");
    let fix = userns["fix"].as_str().unwrap();
    assert!(
        fix.contains("seccomp") && fix.contains("seccomp=unconfined"),
        "{fix}"
    );
    // Control: without that profile, user namespaces work in the container.
    let out = in_container(&["--security-opt", "unmask=ALL"], &["check", "--json"]);
    assert_eq!(check_entry(&out, "userns")["ok"], true, "{out}");
}

#[test]
fn run_in_a_container_with_proc_masked_fails_clearly() {
    if image().is_none() {
        return;
    }
    let out = in_container(&[], &["run", "--", "echo", "hi"]);
    out.assert_sbx_error(&[
        "/proc is partly covered",
        "unmask=ALL",
        "systempaths=unconfined",
    ]);
    let stderr = out.stderr();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one line of error\n{out}");
}

#[test]
fn run_in_a_container_with_proc_unmasked_works() {
    if image().is_none() {
        return;
    }
    // podman's default seccomp profile denies sethostname: the sandbox keeps the
    // container's name (a warning), in a UTS namespace of its own.
    let out = in_container(
        &["--security-opt", "unmask=ALL", "--hostname", "box"],
        &[
            "run",
            "--",
            "sh",
            "-c",
            "echo hi; hostname; readlink /proc/self/ns/pid",
        ],
    );
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines[..2], ["hi", "box"], "{out}");
    assert!(out.stderr().contains("cannot set the hostname"), "{out}");
    // The sandbox has a pid namespace of its own: init is pid 1 there, not the container's.
    // Its namespaces are its own, not the container's: the container's shell prints its
    // pid namespace, then sbx's command prints the sandbox's.
    let script = format!(
        "ns='readlink /proc/self/ns/pid; readlink /proc/self/ns/mnt'; sh -c \"$ns\"; {} run -- sh -c \"$ns\"",
        sbx_inside()
    );
    let mut cmd = container(&["--security-opt", "unmask=ALL"]);
    cmd.args(["/bin/sh", "-c", &script]);
    let out = spawn(&mut cmd, None).finish(std::time::Duration::from_secs(120));
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines.len(), 4, "{out}");
    assert_ne!(lines[0], lines[2], "pid namespace\n{out}");
    assert_ne!(lines[1], lines[3], "mount namespace\n{out}");
}
