//! What a named sandbox was created with (`Record`) and what it is doing (`State`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use crate::plan::net::ProcId;
use crate::planner::{Caller, Overrides};
use crate::profile::load::{Loaded, Origin};
use crate::profile::vars::Vars;
use crate::profile::Profile;

/// The format of `record.json` this sbx writes.
pub const RECORD_VERSION: u32 = 1;

/// How a named sandbox was created: enough to build the same Plan again for `start` and
/// `exec`, even after the profile files changed. A format of its own, versioned: the
/// overrides are `Overrides`, not the command line's types, so renaming a flag leaves it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// `RECORD_VERSION`. Records without one were written by sbx before 1: their `args`
    /// (the command line as clap parsed it) are read as the overrides.
    pub version: u32,
    pub name: String,
    pub created: u64,
    pub overrides: Overrides,
    /// Created with `run -d`: its output is in its log from the start.
    pub detached: bool,
    pub profile: String,
    pub profile_origin: String,
    /// The profile after `extends`, before variables.
    pub resolved: Profile,
    pub caller: CallerRecord,
}

/// The caller's facts that a profile's variables expand to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallerRecord {
    pub pwd: String,
    pub home: String,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub env: BTreeMap<String, String>,
}

impl Record {
    pub fn new(
        name: &str,
        (overrides, detached): (&Overrides, bool),
        loaded: &Loaded,
        caller: &Caller,
    ) -> Record {
        let v = &caller.vars;
        Record {
            version: RECORD_VERSION,
            name: name.to_string(),
            created: now(),
            overrides: overrides.clone(),
            detached,
            profile: loaded.name.clone(),
            profile_origin: loaded.origin.to_string(),
            resolved: loaded.profile.clone(),
            caller: CallerRecord {
                pwd: v.pwd.clone(),
                home: v.home.clone(),
                user: v.user.clone(),
                uid: v.uid,
                gid: v.gid,
                env: v.env.clone(),
            },
        }
    }

    /// Reads `path`, converting a record of the format before versions (whose `args` field
    /// names the same settings as `Overrides`: the command line's flags, serialized).
    pub fn read(path: &Path) -> Result<Record> {
        let mut value: serde_json::Value = super::read_json(path)?;
        let parse = |value| {
            serde_json::from_value(value).with_context(|| format!("parse {}", path.display()))
        };
        match value.get("version").map(serde_json::Value::as_u64) {
            Some(Some(v)) if v == u64::from(RECORD_VERSION) => parse(value),
            None => {
                let Some(fields) = value.as_object_mut() else {
                    bail!(
                        "{} is not a sandbox record (not a JSON object)",
                        path.display()
                    );
                };
                let args = fields.remove("args").unwrap_or_default();
                let detached = args.get("detach").cloned().unwrap_or(false.into());
                fields.insert("overrides".into(), args);
                fields.insert("detached".into(), detached);
                fields.insert("version".into(), RECORD_VERSION.into());
                parse(value)
            }
            Some(v) => bail!(
                "{} has record version {}, which this sbx does not know (it reads version \
                 {RECORD_VERSION}); use the sbx that created it, or `sbx rm` the sandbox and \
                 create it again",
                path.display(),
                v.map_or("(not a number)".to_string(), |v| v.to_string())
            ),
        }
    }

    pub fn loaded(&self) -> Loaded {
        Loaded {
            name: self.profile.clone(),
            profile: self.resolved.clone(),
            origin: Origin::Recorded(format!(
                "{}, as recorded for sandbox {}",
                self.profile_origin, self.name
            )),
        }
    }

    pub fn caller(&self, stdin_is_tty: bool) -> Caller {
        let c = &self.caller;
        Caller {
            vars: Vars {
                pwd: c.pwd.clone(),
                home: c.home.clone(),
                user: c.user.clone(),
                uid: c.uid,
                gid: c.gid,
                env: c.env.clone(),
            },
            stdin_is_tty,
        }
    }
}

impl ProcId {
    pub fn of(pid: i32) -> Result<ProcId> {
        let start = start_time(pid).with_context(|| format!("read /proc/{pid}/stat"))?;
        Ok(ProcId { pid, start })
    }

    /// A pidfd of this very process, or None once it has ended (its pid is checked after
    /// the pidfd is opened, so a reused pid is never taken for it).
    pub fn pidfd(&self) -> Option<std::os::fd::OwnedFd> {
        let fd = crate::sys::pidfd_open(self.pid).ok()?;
        self.alive().then_some(fd)
    }

    /// True while this very process runs. A zombie is dead: its parent may be an init
    /// that is slow to reap, or one that never does.
    pub fn alive(&self) -> bool {
        stat(self.pid).is_ok_and(|(state, start)| start == self.start && !"ZX".contains(state))
    }
}

fn start_time(pid: i32) -> std::io::Result<u64> {
    stat(pid).map(|(_, start)| start)
}

/// The state letter and start time from `/proc/PID/stat`.
fn stat(pid: i32) -> std::io::Result<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let malformed = || std::io::Error::other("malformed stat");
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(malformed)?;
    let mut fields = rest.split_whitespace();
    let state = fields
        .next()
        .and_then(|f| f.chars().next())
        .ok_or_else(malformed)?;
    let start = fields
        .nth(18)
        .and_then(|f| f.parse().ok())
        .ok_or_else(malformed)?;
    Ok((state, start))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Exited,
}

/// What a sandbox is doing, as its supervisor last wrote it. Also the format of
/// `--status-json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    /// The sandbox's init, as the host sees it.
    pub pid: i32,
    /// The command's process, as the host sees it: `exec` enters its namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_pid: Option<i32>,
    /// Namespace inode numbers (`ls -i /proc/PID/ns/`), by type.
    pub namespaces: BTreeMap<String, u64>,
    pub started: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Set when the command was killed by a signal (exit_code is then `exit::signalled(signal)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Internal bookkeeping for named sandboxes (absent from `--status-json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<Tracking>,
}

/// What `ps`, `exec` and `stop` need to find the processes again, safely.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tracking {
    pub boot_id: String,
    pub supervisor: ProcId,
    pub init: ProcId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<ProcId>,
    /// The network: "none", "slirp4netns" or "host" (for a sandbox that joined another's,
    /// what that one has).
    #[serde(default)]
    pub network: String,
    /// The cgroup leaf (host path) that `exec`'d processes join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
    pub detached: bool,
}

/// What `ps` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Running,
    Exited,
    /// The state says running, but its processes are gone (sbx was killed, or the machine
    /// rebooted): shown as exited, with no exit code.
    Vanished,
}

impl State {
    /// What finds the processes again, while the sandbox runs.
    pub fn running(&self) -> Option<&Tracking> {
        match self.liveness() {
            Liveness::Running => self.tracking.as_ref(),
            _ => None,
        }
    }

    pub fn liveness(&self) -> Liveness {
        match (self.status, &self.tracking) {
            (Status::Exited, _) => Liveness::Exited,
            (Status::Running, Some(t)) if t.boot_id == boot_id() && t.init.alive() => {
                Liveness::Running
            }
            (Status::Running, _) => Liveness::Vanished,
        }
    }
}

pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_file(json: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "sbx-record-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("record.json");
        std::fs::write(&path, json).unwrap();
        (dir, path)
    }

    const CALLER: &str = r#""profile": "default", "profile_origin": "built-in",
        "resolved": {}, "caller": {"pwd": "/", "home": "/h", "user": "u", "uid": 1,
        "gid": 1, "env": {}}"#;

    #[test]
    fn records_without_a_version_are_read_as_version_1() {
        let (dir, path) = record_file(&format!(
            r#"{{"name": "old", "created": 5, {CALLER}, "args": {{"profile": null,
            "image": "alpine", "env": ["A=1"], "memory": "64M", "net": "none", "name": "old",
            "detach": true, "env_file": [], "command": ["sh"]}}}}"#
        ));
        let record = Record::read(&path).unwrap();
        assert_eq!(record.version, RECORD_VERSION);
        assert!(record.detached);
        assert_eq!(
            record.overrides,
            Overrides {
                image: Some("alpine".into()),
                env: vec!["A=1".into()],
                memory: Some("64M".into()),
                net: Some("none".into()),
                command: vec!["sh".into()],
                ..Default::default()
            }
        );
        // Written back, it is version 1 with the overrides under their own name.
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["overrides"]["image"], "alpine");
        assert!(json.get("args").is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn records_of_an_unknown_version_are_refused_with_a_fix() {
        let (dir, path) = record_file(&format!(
            r#"{{"version": 7, "name": "new", "created": 5, {CALLER}, "overrides": {{}},
            "detached": false}}"#
        ));
        let err = format!("{:#}", Record::read(&path).unwrap_err());
        assert!(err.contains("version 7") && err.contains("sbx rm"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn own_process_is_alive_and_a_wrong_start_is_not() {
        let me = ProcId::of(std::process::id() as i32).unwrap();
        assert!(me.alive());
        assert!(!ProcId {
            start: me.start + 1,
            ..me
        }
        .alive());
    }
}
