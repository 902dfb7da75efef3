//! `sbx-oci`'s command line: runc's, so engines that drive runc can drive it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "sbx-oci",
    version = concat!(env!("CARGO_PKG_VERSION"), "\nspec: ", "1.2.0"),
    about = "An OCI runtime with runc's command line, built on sbx's sandbox"
)]
pub struct Cli {
    /// Where container state lives (default: /run/sbx-oci as root, else
    /// $XDG_RUNTIME_DIR/sbx-oci)
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
    /// Append errors to this file too (conmon and containerd read it)
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Put the container in a transient systemd scope: linux.cgroupsPath is
    /// slice:prefix:name (the system's manager as root, else your user manager)
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// With `spec`: a config for an unprivileged user (a user namespace mapping your own
    /// ids). Otherwise accepted for runc compatibility (true, false or auto)
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,
    /// Accepted for runc compatibility
    #[arg(long, global = true)]
    pub debug: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a container: set everything up, and wait for `start` before running its process
    Create(CreateArgs),
    /// Run the process of a created container
    Start { id: String },
    /// Create and start a container, and wait for it (unless --detach)
    Run(RunArgs),
    /// Print a container's state as JSON
    State { id: String },
    /// Send a signal to a container's process (default TERM)
    Kill {
        /// Send it to every process in the container
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a stopped container (--force: kill it first)
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Run another process in a running container
    Exec(ExecArgs),
    /// List the processes in a container
    Ps {
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
    },
    /// List the containers
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Write a default config.json into the bundle
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Print what this runtime supports, as JSON (runtime-spec features.md)
    Features,
}

#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty's master end when process.terminal is true
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Accepted; sbx-oci always uses pivot_root
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted; the session keyring is left as it is
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass file descriptors 3 .. 3+N-1 on to the container's process
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
    /// The global --systemd-cgroup, copied here by the dispatcher.
    #[arg(skip)]
    pub systemd_cgroup: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    #[arg(short, long)]
    pub detach: bool,
    /// Accepted for runc compatibility
    #[arg(long)]
    pub keep: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// A JSON file with the process to run (runtime-spec `process`)
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    #[arg(short, long)]
    pub detach: bool,
    #[arg(short, long)]
    pub tty: bool,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    #[arg(short, long)]
    pub env: Vec<String>,
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// UID[:GID]
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(short = 'g', long)]
    pub additional_gids: Vec<u32>,
    /// Add a capability (CAP_NAME)
    #[arg(short, long)]
    pub cap: Vec<String>,
    #[arg(long)]
    pub no_new_privs: bool,
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}
