//! `sbx-oci`: an OCI runtime with runc's command line, so podman, containerd and
//! Kubernetes can run their containers with sbx's namespaces, id maps and fd-based root
//! assembly. The engine decides: the config is obeyed as written (no sbx profile, no sbx
//! default seccomp, Landlock or masks beyond the config's own).
//!
//! Who does what, as runc:
//! - `create` (this process): checks the config, makes the state directory and the
//!   `exec.fifo`, starts the container process, writes its id maps, runs the
//!   createRuntime hooks, writes the pid file and exits, leaving the process to the
//!   caller's subreaper (conmon, containerd-shim);
//! - an intermediate process: joins the namespaces the config names by path, clones the
//!   container process with CLONE_PARENT (so it is create's child) and exits;
//! - the container process (`init`): builds the root, pivots, becomes the config's user,
//!   and blocks opening the fifo until `start` reads it; then executes process.args as
//!   the pid 1 of its pid namespace.

pub mod cgroups;
pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod copyup;
pub mod create;
pub mod devices;
pub mod exec;
pub mod hooks;
pub mod init;
pub mod log;
pub mod mounts;
pub mod plug;
pub mod process;
pub mod resources;
pub mod seccomp;
pub mod state;
pub mod systemd;
pub mod waiting;

use serde::{Deserialize, Serialize};

use crate::sync::{Channel, Message};

/// `create` (or `exec`) to the process it starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToContainer {
    /// The id maps are written and the cgroup joined: set up. With the state for hooks.
    Go(Box<state::OciState>),
    /// The prestart and createRuntime hooks ran.
    HooksDone,
    /// `exec` has the new process's pid from the intermediate: go on. The new process
    /// waits for this before it says anything, so its messages cannot overtake the pid.
    PidKnown,
}

/// The started process (and the intermediate before it) to `create` or `exec`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromContainer {
    /// From the intermediate: the container process's pid.
    Child(i32),
    /// The mounts are in place: run the prestart and createRuntime hooks now.
    RunHooks,
    /// Set up; now waiting for `start` (create) or executing (exec).
    Ready,
    Failed(String),
}

impl Message for ToContainer {
    fn kind(&self) -> &'static str {
        match self {
            ToContainer::Go(_) => "Go",
            ToContainer::HooksDone => "HooksDone",
            ToContainer::PidKnown => "PidKnown",
        }
    }
}

impl Message for FromContainer {
    fn kind(&self) -> &'static str {
        match self {
            FromContainer::Child(_) => "Child",
            FromContainer::RunHooks => "RunHooks",
            FromContainer::Ready => "Ready",
            FromContainer::Failed(_) => "Failed",
        }
    }
    fn failure(&self) -> Option<&str> {
        match self {
            FromContainer::Failed(why) => Some(why),
            _ => None,
        }
    }
}

/// The runtime's end.
pub type RuntimeChannel = Channel<ToContainer, FromContainer>;
/// The container process's end.
pub type ContainerChannel = Channel<FromContainer, ToContainer>;

/// Runs the command line; the exit code.
pub fn main(cli: cli::Cli) -> i32 {
    let log = cli.log.clone();
    let format = cli.log_format;
    match commands::dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            log::report(log.as_deref(), format, "error", &format!("{e:#}"));
            crate::exit::SBX_ERROR
        }
    }
}
