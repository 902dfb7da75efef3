//! What the command line asks of a sandbox beyond its profile, as the planner and a named
//! sandbox's record take it: plain settings with names of their own, not clap's `RunArgs`,
//! so that renaming a flag changes neither the planner nor `record.json`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::cli::RunArgs;

/// The settings of `sbx run` that shape the Plan. `-p`, `--name`, `-d` and `--env-file`
/// are not among them: they choose the profile, name the sandbox, pick how it is started,
/// and are folded into `env` before planning.
///
/// The field names are the record's format (version 1): keep them when a flag is renamed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Overrides {
    pub rootfs: Option<String>,
    pub image: Option<String>,
    pub upper: Option<String>,
    pub overlay: Option<String>,
    pub bind: Vec<String>,
    pub ro_bind: Vec<String>,
    pub tmpfs: Vec<String>,
    /// `KEY=VALUE`, or `KEY` to pass the caller's value.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub hostname: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// "none", "slirp4netns", "host" or "sandbox:NAME".
    pub net: Option<String>,
    pub publish: Vec<String>,
    pub allow_host_loopback: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub seccomp: Option<String>,
    pub allow_nested: bool,
    pub landlock: Option<String>,
    pub protect: Vec<String>,
    pub shm_size: Option<String>,
    pub tmp_size: Option<String>,
    pub git: Option<String>,
    pub memory: Option<String>,
    pub memory_swap: Option<String>,
    pub cpus: Option<String>,
    pub pids: Option<u64>,
    pub io_weight: Option<u32>,
    pub rlimit: Vec<String>,
    pub timeout: Option<String>,
    pub verbose: bool,
    pub status_json: Option<PathBuf>,
    /// The command and its arguments.
    pub command: Vec<String>,
}

impl Overrides {
    /// The sandbox this one joins (`--net sandbox:NAME`).
    pub fn joins(&self) -> Option<&str> {
        self.net.as_deref()?.strip_prefix("sandbox:")
    }

    /// The overrides `sbx run` was given. `args.env_file` must be folded into `args.env`
    /// already (see `envfile::fold`): the planner reads no file the profile does not name.
    pub fn from_args(args: &RunArgs) -> Result<Overrides> {
        if !args.env_file.is_empty() {
            bail!("internal: --env-file must be folded into -e before the plan is built");
        }
        let a = args.clone();
        Ok(Overrides {
            rootfs: a.rootfs,
            image: a.image,
            upper: a.upper,
            overlay: a.overlay,
            bind: a.bind,
            ro_bind: a.ro_bind,
            tmpfs: a.tmpfs,
            env: a.env,
            workdir: a.workdir,
            hostname: a.hostname,
            uid: a.uid,
            gid: a.gid,
            net: a.net,
            publish: a.publish,
            allow_host_loopback: a.allow_host_loopback,
            cap_add: a.cap_add,
            cap_drop: a.cap_drop,
            seccomp: a.seccomp,
            allow_nested: a.allow_nested,
            landlock: a.landlock,
            protect: a.protect,
            shm_size: a.shm_size,
            tmp_size: a.tmp_size,
            git: a.git,
            memory: a.memory,
            memory_swap: a.memory_swap,
            cpus: a.cpus,
            pids: a.pids,
            io_weight: a.io_weight,
            rlimit: a.rlimit,
            timeout: a.timeout,
            verbose: a.verbose,
            status_json: a.status_json,
            command: a.command,
        })
    }
}
