//! User namespace id maps: the caller's subordinate ranges written by newuidmap/newgidmap,
//! or a single-id map written directly when those are not available.
//!
//! The caller's own id appears inside as the requested inside id (by default the same id),
//! so files created through a writable bind are owned by the caller on the host; the
//! subordinate range fills every other inside id from 0 upwards, so `chown` works inside.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

pub use crate::plan::ids::{IdMode, IdPlan, IdRange};

pub const SUBUID: &str = "/etc/subuid";
pub const SUBGID: &str = "/etc/subgid";

/// A subordinate range from /etc/subuid or /etc/subgid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubRange {
    pub start: u32,
    pub count: u32,
}

/// How ids will be mapped: with the helpers and the caller's subordinate ranges, else
/// only the caller's own id.
pub fn choose_mode(
    user: &str,
    uid: u32,
    gid: u32,
    (inside_uid, inside_gid): (u32, u32),
    (subuid, subgid): (&str, &str),
    helpers: (Option<PathBuf>, Option<PathBuf>),
) -> IdMode {
    let (Some(newuidmap), Some(newgidmap)) = helpers else {
        return IdMode::Single {
            warning:
                "newuidmap/newgidmap not found, so only your own uid and gid are mapped \
                      inside the sandbox; install them (Debian/Ubuntu: `sudo apt-get install \
                      uidmap`; Fedora: `sudo dnf install shadow-utils`) to map your subordinate ids"
                    .to_string(),
        };
    };
    let uid_ranges = parse_subids(subuid, user, uid);
    let gid_ranges = parse_subids(subgid, user, uid);
    if uid_ranges.is_empty() || gid_ranges.is_empty() {
        let file = if uid_ranges.is_empty() {
            SUBUID
        } else {
            SUBGID
        };
        return IdMode::Single {
            warning: format!(
                "no subordinate id range for {user} in {file}, so only your own uid and gid are \
                 mapped inside the sandbox; add one with `sudo usermod --add-subuids \
                 100000-165535 --add-subgids 100000-165535 {user}`"
            ),
        };
    }
    IdMode::Full {
        newuidmap,
        newgidmap,
        uid_map: full_map(&uid_ranges, uid, inside_uid),
        gid_map: full_map(&gid_ranges, gid, inside_gid),
    }
}

/// Absolute path of a setuid id-map helper, or None (see `helpers`).
pub fn find_helper(name: &str) -> Option<PathBuf> {
    crate::helpers::find(name)
}

/// The ranges in a subuid/subgid file that belong to `user` (by name or numeric uid).
pub fn parse_subids(text: &str, user: &str, uid: u32) -> Vec<SubRange> {
    let uid_str = uid.to_string();
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let mut fields = line.split(':');
            let owner = fields.next()?;
            let start = fields.next()?.trim().parse().ok()?;
            let count = fields.next()?.trim().parse().ok()?;
            if fields.next().is_some() || (owner != user && owner != uid_str) || count == 0 {
                return None;
            }
            Some(SubRange { start, count })
        })
        .collect()
}

/// Maps `inside_id` to the caller's `host_id`, and inside ids 0, 1, 2, ... (skipping
/// `inside_id`) to the subordinate ranges in order.
pub fn full_map(ranges: &[SubRange], host_id: u32, inside_id: u32) -> Vec<IdRange> {
    let mut map = vec![IdRange {
        inside: inside_id,
        outside: host_id,
        count: 1,
    }];
    let mut next: u64 = 0;
    for r in ranges {
        let (mut outside, mut left) = (u64::from(r.start), u64::from(r.count));
        while left > 0 && next <= u64::from(u32::MAX) {
            if next == u64::from(inside_id) {
                next += 1;
                continue;
            }
            // Up to the caller's slot, or the whole rest when the slot lies behind us.
            let room = if next < u64::from(inside_id) {
                u64::from(inside_id) - next
            } else {
                u64::from(u32::MAX) - next + 1
            };
            let count = left.min(room);
            map.push(IdRange {
                inside: next as u32,
                outside: outside as u32,
                count: count as u32,
            });
            next += count;
            outside += count;
            left -= count;
        }
    }
    // The kernel accepts at most 340 lines; subuid files never come close in practice.
    map.truncate(340);
    map
}

/// Writes the maps for the child `pid`. Called by the parent after clone, before `Go`.
pub fn write(ids: &IdPlan, pid: i32) -> Result<()> {
    match &ids.mode {
        IdMode::Full {
            newuidmap,
            newgidmap,
            uid_map,
            gid_map,
        } => {
            // Both helpers run at once: each is a setuid exec, and start-up time counts.
            let uid = spawn_helper(newuidmap, pid, uid_map)?;
            let gid = spawn_helper(newgidmap, pid, gid_map);
            let uid_result = finish_helper(newuidmap, pid, uid_map, uid);
            let gid_result = gid.and_then(|child| finish_helper(newgidmap, pid, gid_map, child));
            uid_result.and(gid_result)
        }
        IdMode::Single { .. } => {
            let proc_dir = PathBuf::from(format!("/proc/{pid}"));
            write_file(
                &proc_dir.join("uid_map"),
                &format!("{} {} 1\n", ids.inside_uid, ids.host_uid),
            )?;
            write_file(&proc_dir.join("setgroups"), "deny\n")?;
            write_file(
                &proc_dir.join("gid_map"),
                &format!("{} {} 1\n", ids.inside_gid, ids.host_gid),
            )
        }
    }
}

fn spawn_helper(helper: &Path, pid: i32, map: &[IdRange]) -> Result<std::process::Child> {
    let mut cmd = Command::new(helper);
    cmd.arg(pid.to_string());
    for r in map {
        cmd.args([
            r.inside.to_string(),
            r.outside.to_string(),
            r.count.to_string(),
        ]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_clear()
        .spawn()
        .with_context(|| format!("cannot run {}", helper.display()))
}

fn finish_helper(
    helper: &Path,
    pid: i32,
    map: &[IdRange],
    child: std::process::Child,
) -> Result<()> {
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {}", helper.display()))?;
    if !out.status.success() {
        let ranges: Vec<String> = map.iter().map(|r| r.to_string()).collect();
        bail!(
            "{} {pid} {} failed ({}): {}; check your entries in {} and {}",
            helper.display(),
            ranges.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            SUBUID,
            SUBGID,
        );
    }
    Ok(())
}

fn write_file(path: &Path, contents: &str) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .with_context(|| format!("cannot write {:?} to {}", contents.trim(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(inside: u32, outside: u32, count: u32) -> IdRange {
        IdRange {
            inside,
            outside,
            count,
        }
    }

    #[test]
    fn parses_subid_files_by_name_or_uid() {
        let text = "# comment\nalice:100000:65536\nbob:200000:65536\n1000:300000:10\nbad line\ncarol:x:1\n";
        assert_eq!(
            parse_subids(text, "alice", 1000),
            [
                SubRange {
                    start: 100000,
                    count: 65536
                },
                SubRange {
                    start: 300000,
                    count: 10
                }
            ]
        );
        assert!(parse_subids(text, "dave", 1001).is_empty());
        assert!(parse_subids("", "alice", 1000).is_empty());
    }

    #[test]
    fn keeps_callers_id_and_fills_the_rest() {
        let map = full_map(
            &[SubRange {
                start: 100000,
                count: 65536,
            }],
            1000,
            1000,
        );
        assert_eq!(
            map,
            [r(1000, 1000, 1), r(0, 100000, 1000), r(1001, 101000, 64536)]
        );
    }

    #[test]
    fn root_inside_maps_the_caller() {
        let map = full_map(
            &[SubRange {
                start: 100000,
                count: 65536,
            }],
            1000,
            0,
        );
        assert_eq!(map, [r(0, 1000, 1), r(1, 100000, 65536)]);
    }

    #[test]
    fn inside_id_beyond_the_range() {
        let map = full_map(
            &[SubRange {
                start: 100000,
                count: 10,
            }],
            1000,
            5000,
        );
        assert_eq!(map, [r(5000, 1000, 1), r(0, 100000, 10)]);
    }

    #[test]
    fn several_ranges_split_around_the_callers_slot() {
        let ranges = [
            SubRange {
                start: 100000,
                count: 3,
            },
            SubRange {
                start: 500000,
                count: 4,
            },
        ];
        let map = full_map(&ranges, 1000, 5);
        assert_eq!(
            map,
            [
                r(5, 1000, 1),
                r(0, 100000, 3),
                r(3, 500000, 2),
                r(6, 500002, 2)
            ]
        );
    }

    #[test]
    fn falls_back_without_helpers_or_ranges() {
        let sub = "alice:100000:65536\n";
        let helpers = || {
            (
                Some(PathBuf::from("/usr/bin/newuidmap")),
                Some(PathBuf::from("/usr/bin/newgidmap")),
            )
        };
        assert!(matches!(
            choose_mode("alice", 1000, 1000, (1000, 1000), (sub, sub), helpers()),
            IdMode::Full { .. }
        ));
        match choose_mode("bob", 1001, 1001, (1001, 1001), (sub, sub), helpers()) {
            IdMode::Single { warning } => {
                assert!(
                    warning.contains("no subordinate id range for bob in /etc/subuid"),
                    "{warning}"
                );
                assert!(warning.contains("usermod --add-subuids"), "{warning}");
            }
            other => panic!("{other:?}"),
        }
        match choose_mode("alice", 1000, 1000, (1000, 1000), (sub, sub), (None, None)) {
            IdMode::Single { warning } => {
                assert!(warning.contains("apt-get install uidmap"), "{warning}")
            }
            other => panic!("{other:?}"),
        }
    }
}
