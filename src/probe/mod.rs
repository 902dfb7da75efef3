//! Host feature probes, used by `sbx check`, by preflight checks and by the tests.
//!
//! Each probe is fast and leaves nothing behind: namespaces are tried in a forked child
//! that ends with `_exit` (its mounts die with it), the overlay probe's scratch directory is
//! removed whatever happens, and no probe installs a filter or a ruleset on sbx itself.
//! Parsing is done by functions that take text, so it is tested without the host.
//!
//! One file per area: `userns` and `mounts` (namespaces, the mount API, overlayfs),
//! `idmap` (newuidmap/newgidmap and subordinate ids), `devices` (helper binaries and
//! character devices), `cgroup`, `security` (Landlock and seccomp); `child` runs a probe
//! in a forked child and brings back its verdict.

mod cgroup;
mod child;
pub mod container;
mod devices;
mod idmap;
mod mounts;
mod security;
pub mod userns;

use std::fs;
use std::io::{self, Write};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::supervisor::idmap::{SUBGID, SUBUID};

/// The outcome of one probe. `fix` says what to do when `ok` is false.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        let (ok, detail, fix) = (true, detail.into(), None);
        Check {
            name,
            ok,
            detail,
            fix,
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        let (ok, detail, fix) = (false, detail.into(), Some(fix.into()));
        Check {
            name,
            ok,
            detail,
            fix,
        }
    }
}

/// `sbx check`: prints the report; exit 0 when sbx can run its default profile here.
pub fn check_command(json: bool) -> Result<i32> {
    let checks = probe_all();
    let text = if json {
        render_json(&checks)?
    } else {
        render_human(&checks)
    };
    io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("write the report to stdout")?;
    Ok(exit_code(&checks))
}

/// Every probe, in report order.
pub fn probe_all() -> Vec<Check> {
    let caller = Caller::current();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = mounts::parse_mountinfo(&mountinfo);
    vec![
        userns::userns(),
        idmap::id_helper("newuidmap"),
        idmap::id_helper("newgidmap"),
        idmap::subids("subuid", SUBUID, &caller),
        idmap::subids("subgid", SUBGID, &caller),
        mounts::mount_api(),
        container::proc_mount(&mounts),
        mounts::overlay_userns(&caller),
        devices::fuse_overlayfs(),
        devices::device("dev_fuse", "/dev/fuse", "fuse"),
        devices::slirp4netns(),
        devices::device("dev_net_tun", "/dev/net/tun", "tun"),
        cgroup::cgroup_v2(&mounts),
        cgroup::cgroup_delegation(&mounts, &caller),
        cgroup::systemd_user(),
        security::landlock(),
        security::seccomp(),
    ]
}

/// The Landlock ABI version this kernel offers, or None without Landlock.
pub fn landlock_abi() -> Option<u32> {
    crate::sys::landlock_version().ok().filter(|abi| *abi >= 1)
}

/// 0 when the checks the default profile depends on pass, 1 otherwise.
fn exit_code(checks: &[Check]) -> i32 {
    let required = ["userns", "mount_api", "proc_mount"];
    let ok = |name: &str| checks.iter().any(|c| c.name == name && c.ok);
    if required.iter().all(|name| ok(name)) {
        0
    } else {
        1
    }
}

/// The user running `sbx check`, whose ids and name the probes ask about.
struct Caller {
    uid: u32,
    gid: u32,
    name: String,
}

impl Caller {
    fn current() -> Caller {
        let uid = nix::unistd::getuid();
        let name = match nix::unistd::User::from_uid(uid) {
            Ok(Some(user)) => user.name,
            _ => uid.to_string(),
        };
        let gid = nix::unistd::getgid().as_raw();
        Caller {
            uid: uid.as_raw(),
            gid,
            name,
        }
    }
}

fn render_human(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let status = if c.ok { "ok  " } else { "MISSING" };
        out.push_str(&format!("{status} {:width$}  {}\n", c.name, c.detail));
        if let (false, Some(fix)) = (c.ok, &c.fix) {
            out.push_str(&format!("    fix: {fix}\n"));
        }
    }
    out
}

/// One JSON object keyed by check name, in report order (serde_json's map would sort them).
fn render_json(checks: &[Check]) -> Result<String> {
    #[derive(Serialize)]
    struct Entry<'a> {
        ok: bool,
        detail: &'a str,
        fix: Option<&'a str>,
    }
    let mut lines = Vec::with_capacity(checks.len());
    for c in checks {
        let entry = Entry {
            ok: c.ok,
            detail: &c.detail,
            fix: c.fix.as_deref(),
        };
        let key = serde_json::to_string(c.name).context("encode a check name")?;
        let value = serde_json::to_string(&entry).context("encode a check result")?;
        lines.push(format!("  {key}: {value}"));
    }
    Ok(format!("{{\n{}\n}}\n", lines.join(",\n")))
}

/// /proc/self/mountinfo of a hybrid cgroup host, for the mountinfo and cgroup tests.
#[cfg(test)]
const HYBRID: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
";

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &'static str, ok: bool, fix: Option<&str>) -> Check {
        let detail = format!("{name} says \"hi\"");
        let fix = fix.map(str::to_string);
        Check {
            name,
            ok,
            detail,
            fix,
        }
    }

    #[test]
    fn human_report_has_one_line_per_check_and_fixes_for_gaps() {
        let checks = [
            check("userns", true, None),
            check("cgroup_delegation", false, Some("do it")),
        ];
        assert_eq!(
            render_human(&checks),
            "ok   userns             userns says \"hi\"\n\
             MISSING cgroup_delegation  cgroup_delegation says \"hi\"\n    fix: do it\n"
        );
    }

    #[test]
    fn json_report_keeps_order_and_escapes() {
        let checks = [
            check("userns", true, None),
            check("mount_api", false, Some("upgrade")),
            check("cgroup_v2", true, None),
        ];
        let text = render_json(&checks).expect("render");
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(value["userns"]["ok"], true);
        assert_eq!(value["userns"]["fix"], serde_json::Value::Null);
        assert_eq!(value["userns"]["detail"], "userns says \"hi\"");
        assert_eq!(value["mount_api"]["fix"], "upgrade");
        let at = |key: &str| text.find(&format!("\"{key}\"")).expect("key present");
        assert!(at("userns") < at("mount_api") && at("mount_api") < at("cgroup_v2"));
    }

    #[test]
    fn exit_code_needs_userns_mount_api_and_proc() {
        let all = [
            check("userns", true, None),
            check("mount_api", true, None),
            check("proc_mount", true, None),
        ];
        assert_eq!(exit_code(&all), 0);
        for missing in 0..all.len() {
            let mut some = all.to_vec();
            some[missing].ok = false;
            assert_eq!(exit_code(&some), 1, "{}", all[missing].name);
        }
        assert_eq!(exit_code(&all[..2]), 1);
    }
}
