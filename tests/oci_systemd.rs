//! `sbx-oci --systemd-cgroup`: the container in a transient systemd scope, rootless through
//! the caller's user manager on the session bus (rootless podman's default cgroup manager).
//!
//! The `cgroup_systemd_` tests need a systemd user manager: ci/test.sh runs them in the VM
//! that boots systemd (ci/vm-test.sh --systemd), in a login session of the test user; on
//! other hosts they skip through the probe (`sbx check`'s `systemd_user`).

mod common;

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::oci::{oci_bin, Bundle};
use common::*;

/// `systemctl --user show -p PROPERTY UNIT`'s value.
fn unit_property(unit: &str, property: &str) -> String {
    let out = run({
        let mut c = Command::new("systemctl");
        c.args(["--user", "show", "-p", property, "--value", unit]);
        c
    });
    out.assert_success();
    out.stdout().trim().to_string()
}

fn require_systemd_user() -> bool {
    require_sandbox() && require("systemd_user")
}

/// The file the container writes, once it has written all `lines` of it.
fn wait_for_lines(path: &std::path::Path, lines: usize) -> Vec<String> {
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        let got: Vec<String> = text.lines().map(str::to_string).collect();
        if got.len() >= lines {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {got:?}, not {lines} lines",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The container runs in `sbx-NAME.scope` of the user manager's user.slice, with the
/// config's memory and pids limits in that scope's cgroup (read from inside) and as the
/// unit's properties; the unit runs while the container does, and `delete` removes it.
#[test]
fn cgroup_systemd_scope_holds_the_container_and_its_limits() {
    if !require_systemd_user() {
        return;
    }
    // The host's cgroup tree (no cgroup namespace): /proc/self/cgroup names the scope.
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cg=$(sed -n 's/^0:://p' /proc/self/cgroup); echo \"$cg\" > /tmp/out; \
         cat /sys/fs/cgroup$cg/memory.max /sys/fs/cgroup$cg/pids.max >> /tmp/out; \
         exec sleep 600",
    ]);
    let name = unique("scope");
    let unit = format!("sbx-{name}.scope");
    b.config["linux"]["cgroupsPath"] = json!(format!("user.slice:sbx:{name}"));
    b.config["linux"]["resources"] =
        json!({"memory": {"limit": 67_108_864}, "pids": {"limit": 42}});
    let namespaces = b.config["linux"]["namespaces"].as_array_mut().unwrap();
    namespaces.retain(|ns| ns["type"] != "cgroup");
    let id = unique("c");
    let (code, err) = b.create_with(&["--systemd-cgroup"], &[&id], &[]);
    assert_eq!(code, 0, "create: {err}");
    assert_eq!(unit_property(&unit, "ActiveState"), "active");
    assert_eq!(unit_property(&unit, "Slice"), "user.slice");
    assert_eq!(unit_property(&unit, "MemoryMax"), "67108864");
    assert_eq!(unit_property(&unit, "TasksMax"), "42");
    run(b.oci(&["start", &id])).assert_success();
    let lines = wait_for_lines(&b.dir.join("rootfs/tmp/out"), 3);
    assert!(
        lines[0].ends_with(&format!("/user.slice/{unit}")),
        "the container's cgroup is {}",
        lines[0]
    );
    assert_eq!(lines[1..], ["67108864", "42"], "memory.max and pids.max");
    let state: Value = serde_json::from_str(&run(b.oci(&["state", &id])).stdout()).unwrap();
    assert_eq!(state["status"], "running", "{state}");
    let ps = run(b.oci(&["ps", "--format", "json", &id]));
    let pids: Vec<i64> = serde_json::from_str(&ps.stdout()).unwrap_or_default();
    assert!(pids.contains(&state["pid"].as_i64().unwrap()), "{ps}");
    run(b.oci(&["delete", "--force", &id])).assert_success();
    eventually("the scope is gone after delete", || {
        unit_property(&unit, "LoadState") == "not-found"
    });
    assert!(!b.state_dir(&id).exists());
}

/// A create that fails after systemd made the scope, with the container process in it (a
/// limit file the scope's cgroup lacks), stops it again: no unit is left, nor any state.
#[test]
fn cgroup_systemd_a_failed_create_leaves_no_unit() {
    if !require_systemd_user() {
        return;
    }
    let mut b = Bundle::new(&["sh", "-c", "true"]);
    b.config["linux"]["resources"] = json!({"unified": {"memory.nosuch": "1"}});
    let name = unique("failed");
    let unit = format!("sbx-{name}.scope");
    b.config["linux"]["cgroupsPath"] = json!(format!("user.slice:sbx:{name}"));
    let id = unique("c");
    let (code, err) = b.create_with(&["--systemd-cgroup"], &[&id], &[]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains(&format!("{unit}/memory.nosuch")), "{err}");
    eventually("no unit is left", || {
        unit_property(&unit, "LoadState") == "not-found"
    });
    assert!(!b.state_dir(&id).exists(), "nothing is left behind");
}

/// Without a session bus to reach: one error naming the way out, exit 125, no state.
#[test]
fn systemd_cgroup_without_a_bus_fails_with_the_fix() {
    if !require_sandbox() {
        return;
    }
    let b = Bundle::new(&["sh", "-c", "true"]);
    let id = unique("nobus");
    let bus = format!("unix:path={}", b.dir.join("no-bus").display());
    let (code, err) = b.create_with(
        &["--systemd-cgroup"],
        &[&id],
        &[("DBUS_SESSION_BUS_ADDRESS", &bus)],
    );
    assert_eq!(code, 125, "{err}");
    assert!(
        err.contains("--systemd-cgroup") && err.contains("cgroup_manager = \"cgroupfs\""),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one message: {err}");
    assert!(!b.state_dir(&id).exists(), "nothing is left behind");
}

/// A slice:prefix:name path without --systemd-cgroup names the flag.
#[test]
fn a_systemd_cgroups_path_without_the_flag_names_it() {
    if !require_sandbox() {
        return;
    }
    let mut b = Bundle::new(&["sh", "-c", "true"]);
    b.config["linux"]["cgroupsPath"] = json!("user.slice:libpod:abc");
    b.config["linux"]["resources"] = json!({"pids": {"limit": 100}});
    let id = unique("noflag");
    let (code, err) = b.create(&[&id]);
    assert_eq!(code, 125, "{err}");
    assert!(
        err.contains("slice:prefix:name") && err.contains("--systemd-cgroup"),
        "{err}"
    );
    assert!(!b.state_dir(&id).exists());
}

/// `features` says the systemd cgroup manager is there, for the system and the user.
#[test]
fn features_say_systemd() {
    let out = run({
        let mut c = Command::new(oci_bin());
        c.arg("features");
        c
    });
    out.assert_success();
    let features: Value = serde_json::from_str(&out.stdout()).unwrap();
    let cgroup = &features["linux"]["cgroup"];
    assert_eq!(cgroup["systemd"], true, "{features}");
    assert_eq!(cgroup["systemdUser"], true, "{features}");
}

/// Rootless podman with its default cgroup manager, systemd, and sbx-oci as its runtime:
/// the container runs in podman's `libpod-ID.scope` of the user manager's user.slice, with
/// podman's `--memory` and `--pids-limit` in that scope's cgroup.
#[test]
fn cgroup_systemd_podman_runs_its_containers_in_a_scope() {
    if !require_systemd_user() {
        return;
    }
    let podman = || {
        let mut cmd = Command::new("podman");
        cmd.env("XDG_RUNTIME_DIR", format!("/run/user/{}", uid()))
            .arg("--runtime")
            .arg(oci_bin())
            .args(["--cgroup-manager", "systemd"]);
        cmd
    };
    let image = "localhost/sbx-oci-systemd-busybox";
    if let Err(why) = common::podman::import_busybox(podman(), image) {
        skip(&why);
        return;
    }
    let mut cmd = podman();
    cmd.args([
        "run",
        "--rm",
        "--network",
        "none",
        "--cgroupns",
        "host",
        "--memory",
        "64m",
        "--pids-limit",
        "50",
        image,
        "sh",
        "-c",
        "cg=$(sed -n 's/^0:://p' /proc/self/cgroup); echo \"$cg\"; \
         cat /sys/fs/cgroup$cg/memory.max /sys/fs/cgroup$cg/pids.max",
    ]);
    let out = spawn(&mut cmd, None).finish(scaled(Duration::from_secs(120)));
    out.assert_success();
    let lines = out.lines();
    let scope = lines[0].rsplit('/').next().unwrap_or_default();
    assert!(
        lines[0].contains("/user.slice/")
            && scope.starts_with("libpod-")
            && scope.ends_with(".scope"),
        "the container's cgroup is {}\n{out}",
        lines[0]
    );
    assert_eq!(
        lines[1..],
        ["67108864", "50"],
        "memory.max and pids.max\n{out}"
    );
    let _ = run({
        let mut c = podman();
        c.args(["rmi", "-f", image]);
        c
    });
}
