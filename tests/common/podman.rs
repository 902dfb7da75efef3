//! Rootless podman as the test user, for the tests that run sbx inside a container
//! (tests/container.rs) and sbx-oci as podman's runtime (tests/oci.rs).

use std::path::Path;
use std::process::Command;

use super::{data_dir, run, skip, uid, TempDir};

/// `podman --runtime RUNTIME --cgroup-manager cgroupfs`, with the runtime directory
/// rootless podman needs.
pub fn podman(runtime: &Path) -> Command {
    let mut cmd = Command::new("podman");
    cmd.env("XDG_RUNTIME_DIR", format!("/run/user/{}", uid()))
        .arg("--runtime")
        .arg(runtime)
        .args(["--cgroup-manager", "cgroupfs"]);
    cmd
}

/// Imports the busybox test image (tests/data/mkimage.py) as `image` into the store of
/// `podman` (the user's, or root's own), or says why it cannot.
pub fn import_busybox(mut podman: Command, image: &str) -> Result<(), String> {
    let version = Command::new("podman").arg("--version").output();
    if !version.is_ok_and(|o| o.status.success()) {
        return Err("podman is not installed (ci/setup-host.sh installs podman and runc)".into());
    }
    let rootless = uid() != 0;
    if rootless && !Path::new(&format!("/run/user/{}", uid())).is_dir() {
        return Err("no /run/user/UID for rootless podman (ci/setup-host.sh makes it)".into());
    }
    let dir = TempDir::new();
    let tar = dir.join("busybox.tar");
    let made = Command::new("/usr/bin/python3")
        .arg(data_dir().join("mkimage.py"))
        .arg("rootfs")
        .arg(&tar)
        .output()
        .map_err(|e| format!("mkimage.py: {e}"))?;
    if !made.status.success() {
        return Err(format!(
            "mkimage.py: {}",
            String::from_utf8_lossy(&made.stderr)
        ));
    }
    let out = run(podman.args(["import", "-q"]).arg(&tar).arg(image));
    if out.code != 0 {
        return Err(format!("podman import failed\n{out}"));
    }
    Ok(())
}

/// `image` once it is ready; None, after a skip saying why, when it is not.
pub fn ready(result: &Result<(), String>, image: &'static str) -> Option<&'static str> {
    match result {
        Ok(()) => Some(image),
        Err(why) => {
            skip(why);
            None
        }
    }
}
