//! cgroup v2: whether it is mounted, and whether the caller's cgroup is delegated to it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::mounts::MountInfo;
use super::{Caller, Check};
use crate::supervisor::cgroup::own_cgroup;

pub(super) fn cgroup_v2(mounts: &[MountInfo]) -> Check {
    let v1 = v1_controllers(&fs::read_to_string("/proc/cgroups").unwrap_or_default());
    match cgroup_layout(mounts, &v1) {
        Ok(detail) => Check::pass("cgroup_v2", detail),
        Err(detail) => Check::fail(
            "cgroup_v2",
            detail,
            "boot with cgroup v2 (`systemd.unified_cgroup_hierarchy=1`, the default on current \
             distributions)",
        ),
    }
}

/// Where cgroup2 is mounted and whether v1 hierarchies exist beside it; Err when it is not.
fn cgroup_layout(mounts: &[MountInfo], v1_controllers: &[String]) -> Result<String, String> {
    let v2: Vec<&str> = mounts
        .iter()
        .filter(|m| m.fstype == "cgroup2")
        .map(|m| m.mount_point.as_str())
        .collect();
    let named_v1 = mounts.iter().any(|m| m.fstype == "cgroup");
    let v1 = if v1_controllers.is_empty() {
        "named v1 hierarchies only".to_string()
    } else {
        format!("controllers on cgroup v1: {}", v1_controllers.join(" "))
    };
    match (v2.is_empty(), named_v1 || !v1_controllers.is_empty()) {
        (true, _) => Err(format!(
            "no cgroup2 filesystem mounted (cgroup v1 only; {v1})"
        )),
        (false, false) => Ok(format!("cgroup2 at {} (unified)", v2.join(", "))),
        (false, true) => Ok(format!("cgroup2 at {} (hybrid; {v1})", v2.join(", "))),
    }
}

/// A systemd user manager answering on the caller's session bus: what `sbx-oci
/// --systemd-cgroup` asks for a scope when not root (rootless podman's default cgroup
/// manager). Asked through `busctl`, as sbx-oci asks it.
pub(super) fn systemd_user() -> Check {
    let name = "systemd_user";
    let fix = "log in to a session with a systemd user manager (`loginctl enable-linger USER` \
               keeps one running) and DBUS_SESSION_BUS_ADDRESS set (the dbus-user-session \
               package); without one, use sbx-oci without --systemd-cgroup";
    let Some(busctl) = ["/usr/bin/busctl", "/bin/busctl"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        return Check::fail(name, "busctl (systemd) is not installed", fix);
    };
    let out = std::process::Command::new(busctl)
        .args([
            "--user",
            "--timeout=5",
            "get-property",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "Version",
        ])
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout);
            let version = version.trim().trim_start_matches("s ").trim_matches('"');
            Check::pass(
                name,
                format!("systemd {version} answers on the session bus"),
            )
        }
        Ok(out) => Check::fail(
            name,
            format!(
                "no systemd user manager on the session bus: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            fix,
        ),
        Err(e) => Check::fail(name, format!("cannot run {}: {e}", busctl.display()), fix),
    }
}

pub(super) fn cgroup_delegation(mounts: &[MountInfo], caller: &Caller) -> Check {
    let name = "cgroup_delegation";
    let fix = "run under a systemd user session with delegation (`systemd-run --user --scope -p \
               Delegate=yes sbx ...`) or on a cgroup v2 host";
    let self_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Some(cgroup) = own_cgroup(&self_cgroup) else {
        return Check::fail(name, "no cgroup v2 entry (0::) in /proc/self/cgroup", fix);
    };
    let Some(dir) = cgroup_dir(mounts, &cgroup) else {
        return Check::fail(
            name,
            format!("cgroup {cgroup} is not under a cgroup2 mount"),
            fix,
        );
    };
    let delegated = |d: &Path| {
        let owned = fs::metadata(d).is_ok_and(|m| m.uid() == caller.uid);
        owned && nix::unistd::access(d, nix::unistd::AccessFlags::W_OK).is_ok()
    };
    let parent = dir
        .parent()
        .filter(|_| cgroup != "/")
        .map(Path::to_path_buf);
    let target = std::iter::once(dir.clone())
        .chain(parent)
        .find(|d| delegated(d));
    let shown = target.as_deref().unwrap_or(&dir);
    let text = fs::read_to_string(shown.join("cgroup.controllers")).unwrap_or_default();
    let controllers: Vec<&str> = text.split_whitespace().collect();
    let useful = controllers
        .iter()
        .any(|c| ["memory", "pids", "cpu"].contains(c));
    let access = match &target {
        Some(t) => format!(
            "{} is owned and writable by uid {}",
            t.display(),
            caller.uid
        ),
        None => {
            let owner = fs::metadata(&dir)
                .map(|m| format!("owner uid {}, mode {:04o}", m.uid(), m.mode() & 0o7777))
                .unwrap_or_else(|e| e.to_string());
            format!(
                "{} is not writable by uid {} ({owner})",
                dir.display(),
                caller.uid
            )
        }
    };
    let listed = if controllers.is_empty() {
        "none".to_string()
    } else {
        controllers.join(" ")
    };
    let detail = format!("cgroup {cgroup}: {access}; controllers: {listed}");
    // The verdict is the one `sbx run` would reach, in the order it tries.
    let wanted = ["memory", "pids", "cpu"];
    match crate::supervisor::cgroup::probe_site(&wanted) {
        Ok(site) => {
            return Check::pass(
                name,
                format!("path 1, a delegated subtree: sbx creates its leaves in {} ({detail})", site.parent.display()),
            )
        }
        Err(why) if crate::limits::systemd_user_manager().is_some() => {
            return Check::pass(
                name,
                format!("path 2, the systemd user manager: sbx reruns itself in a scope with Delegate=yes ({why})"),
            )
        }
        Err(_) => {}
    }
    match (target.is_some(), useful) {
        (true, true) => Check::pass(name, detail),
        (true, false) => {
            let fix = "none of memory, pids, cpu is available to this cgroup (on a hybrid host \
                       they are bound to cgroup v1): use a cgroup v2 host, or enable them in the \
                       parent's cgroup.subtree_control";
            Check::fail(name, detail, fix)
        }
        (false, _) => Check::fail(name, detail, fix),
    }
}

/// The directory of cgroup `path` under the first cgroup2 mount whose root contains it.
fn cgroup_dir(mounts: &[MountInfo], path: &str) -> Option<PathBuf> {
    mounts
        .iter()
        .filter(|m| m.fstype == "cgroup2")
        .find_map(|m| {
            let rest = if m.root == "/" {
                path
            } else {
                path.strip_prefix(m.root.as_str())
                    .filter(|r| r.is_empty() || r.starts_with('/'))?
            };
            let dir = Path::new(&m.mount_point);
            Some(match rest.trim_start_matches('/') {
                "" => dir.to_path_buf(),
                rest => dir.join(rest),
            })
        })
}

/// Controllers bound to a cgroup v1 hierarchy, from /proc/cgroups text.
fn v1_controllers(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let bound = f.len() >= 4 && f[1] != "0" && f[3] == "1";
            bound.then(|| f[0].to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::mounts::parse_mountinfo;
    use crate::probe::HYBRID;

    #[test]
    fn finds_own_cgroup_v2_path() {
        let text = "4:memory:/process_api/x\n1:cpu:/\n0::/user.slice/user-1000.slice/app.scope\n";
        assert_eq!(
            own_cgroup(text).as_deref(),
            Some("/user.slice/user-1000.slice/app.scope")
        );
        assert_eq!(own_cgroup("0::/\n").as_deref(), Some("/"));
        assert_eq!(own_cgroup("1:name=systemd:/\n"), None);
    }

    #[test]
    fn resolves_cgroup_directory_under_the_cgroup2_mount() {
        let hybrid = parse_mountinfo(HYBRID);
        assert_eq!(
            cgroup_dir(&hybrid, "/"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup_dir(&hybrid, "/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/unified/a/b"))
        );
        let nested = parse_mountinfo("1 0 0:5 /a /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(
            cgroup_dir(&nested, "/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/b"))
        );
        assert_eq!(cgroup_dir(&nested, "/ab"), None);
        assert_eq!(cgroup_dir(&parse_mountinfo(HYBRID)[..3], "/"), None);
    }

    #[test]
    fn tells_unified_hybrid_and_v1_apart() {
        let proc_cgroups = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
                            cpu\t1\t1\t1\nmemory\t4\t23\t1\nhugetlb\t0\t1\t1\npids\t8\t1\t0\n";
        let v1 = v1_controllers(proc_cgroups);
        assert_eq!(v1, ["cpu", "memory"]);
        let hybrid = cgroup_layout(&parse_mountinfo(HYBRID), &v1);
        assert_eq!(
            hybrid.as_deref(),
            Ok("cgroup2 at /sys/fs/cgroup/unified (hybrid; controllers on cgroup v1: cpu memory)")
        );
        let unified = parse_mountinfo("1 0 0:5 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(
            cgroup_layout(&unified, &[]).as_deref(),
            Ok("cgroup2 at /sys/fs/cgroup (unified)")
        );
        let v1_only = &parse_mountinfo(HYBRID)[..3];
        assert!(cgroup_layout(v1_only, &v1).is_err());
    }
}
