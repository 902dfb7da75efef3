//! What the planner knows about the caller and the host: read, never written, and given to
//! it as values, so that a test can hand it a fake cgroup tree and image store.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::plan::net::Join;
use crate::profile::vars::Vars;
use crate::supervisor::cgroup::{self, CgroupHost};

/// Facts about the caller that a Plan is built from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub vars: Vars,
    pub stdin_is_tty: bool,
}

impl Caller {
    pub fn from_process() -> Result<Caller> {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let pwd = std::env::current_dir()
            .context("cannot determine the current directory; cd to an existing directory")?;
        let user = user_name(uid);
        let home = std::env::var("HOME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.dir.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "/".to_string());
        Ok(Caller {
            vars: Vars {
                pwd: pwd.to_string_lossy().into_owned(),
                home,
                user,
                uid,
                gid,
                env: std::env::vars_os()
                    .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                    .collect(),
            },
            stdin_is_tty: nix::unistd::isatty(std::io::stdin()).unwrap_or(false),
        })
    }
}

/// The name of user `uid`: from the password database, else `$USER`, else the number.
pub fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| uid.to_string())
}

/// A host fact, read on first use and then kept. Some are costly to read (the cgroup facts
/// parse `/proc/self/mountinfo` and `/proc/self/cgroup`: about 0.2 ms, a few percent of a
/// start) and most runs never ask for them.
#[derive(Debug, Clone)]
pub struct Fact<T> {
    value: std::cell::OnceCell<T>,
    read: fn() -> T,
}

impl<T> Fact<T> {
    /// A fact read from the host by `read` when first asked.
    pub fn lazy(read: fn() -> T) -> Fact<T> {
        Fact {
            value: std::cell::OnceCell::new(),
            read,
        }
    }

    /// A fact already known (a test's fake host, or what `prepare` learned).
    pub fn known(value: T) -> Fact<T> {
        let cell = std::cell::OnceCell::new();
        let _ = cell.set(value);
        Fact {
            value: cell,
            read: || unreachable!("a known fact is never read"),
        }
    }

    pub fn get(&self) -> &T {
        self.value.get_or_init(self.read)
    }
}

/// Host facts the planner reads through parameters rather than fixed paths.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// The cgroup2 mount and the caller's own cgroup, or why there is none to use. `prepare`
    /// sets the reason when enabling the controllers fails, and plans again.
    pub cgroup: Fact<std::result::Result<CgroupHost, String>>,
    /// The image store's directory (`$XDG_DATA_HOME/sbx`), or why there is none.
    pub store: Fact<std::result::Result<PathBuf, String>>,
    /// `systemd-run`, when a systemd user manager can give a delegated scope.
    pub systemd_run: Fact<Option<PathBuf>>,
    /// `--net sandbox:NAME`: that sandbox, as the front end found it running (see
    /// `instance::Join::resolve`); its id map decides the new sandbox's ids.
    pub join: Option<Join>,
}

impl HostFacts {
    /// This host's facts, each read when the planner first needs it (nothing is created);
    /// `join` is the front end's to add.
    pub fn read() -> HostFacts {
        HostFacts {
            cgroup: Fact::lazy(cgroup::host),
            store: Fact::lazy(|| {
                crate::image::store::Store::location().map_err(|e| format!("{e:#}"))
            }),
            systemd_run: Fact::lazy(crate::limits::systemd_user_manager),
            join: None,
        }
    }
}
