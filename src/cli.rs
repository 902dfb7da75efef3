//! Command-line types only: parsing lives in clap, meaning lives in `plan`.

use clap::{Args, Parser, Subcommand};
use clap_complete::ArgValueCandidates;
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(
    name = "sbx",
    version,
    about = "Run a command in a rootless sandbox",
    long_about = "Run a command in a rootless sandbox: user, mount, pid, uts, ipc, net and cgroup \
                  namespaces, set up without root and without any setuid binary of sbx's own."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `sbx run ...` parsed with `run`'s own arguments alone: the start of every sandbox, where
/// building clap's definitions of every other subcommand would cost about 0.1 ms. Anything
/// but a clean parse (an error, `--help`) gives None, and the caller parses the whole
/// command line, so every message is the one the full parser prints. A unit test holds the
/// two parsers to the same result. A command with no options at all (`sbx run -- CMD` or
/// `sbx run CMD`) skips clap too: building even `run`'s definition costs about 50 us.
pub fn parse_run_alone(args: impl IntoIterator<Item = std::ffi::OsString>) -> Option<RunArgs> {
    use clap::FromArgMatches;
    let mut args = args.into_iter();
    let _binary = args.next()?;
    if args.next()? != "run" {
        return None;
    }
    let rest: Vec<std::ffi::OsString> = args.collect();
    if let Some(command) = bare_command(&rest) {
        return Some(RunArgs {
            command,
            ..RunArgs::default()
        });
    }
    let command = RunArgs::augment_args(clap::Command::new("run").no_binary_name(true));
    let matches = command.try_get_matches_from(rest).ok()?;
    RunArgs::from_arg_matches(&matches).ok()
}

/// The command of `run -- CMD ARGS...` or of `run CMD ARGS...` when CMD is no option: after
/// it everything is the command's (`trailing_var_arg`). None for anything else, or for an
/// argument that is not UTF-8 (which clap refuses with its own message).
fn bare_command(rest: &[std::ffi::OsString]) -> Option<Vec<String>> {
    let command = match rest.first()?.to_str()? {
        "--" => &rest[1..],
        first if !first.starts_with('-') => rest,
        _ => return None,
    };
    if command.is_empty() {
        return None;
    }
    command
        .iter()
        .map(|arg| arg.to_str().map(str::to_owned))
        .collect()
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run COMMAND in a new sandbox.
    Run(Box<RunArgs>),
    /// Report what this host supports and, for each gap, how to fix it.
    Check(CheckArgs),
    /// List, show, check and pick profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// List named sandboxes: name, state, pid, profile, command, started, exit code.
    Ps(PsArgs),
    /// Run another command inside a running named sandbox, with the same hardening.
    Exec(ExecArgs),
    /// Stop named sandboxes: SIGTERM, then SIGKILL after the grace period.
    Stop(StopArgs),
    /// Send a signal to named sandboxes' commands.
    Kill(KillArgs),
    /// Start a stopped named sandbox again, with the settings it was created with.
    Start(StartArgs),
    /// Print a detached sandbox's output.
    Logs(LogsArgs),
    /// Forget named sandboxes and delete their writable layers.
    Rm(RmArgs),
    /// A named sandbox as JSON: resolved profile, pids, namespaces, mounts, state.
    Inspect(InspectArgs),
    /// Download an image from an OCI or Docker registry into the image store.
    Pull(PullArgs),
    /// Import, list, inspect and remove images (root filesystems for `sbx run --image`).
    #[command(subcommand)]
    Image(ImageCommand),
    /// Per-user state kept between runs: `sbx system reset` ends the kept user namespace.
    #[command(subcommand)]
    System(SystemCommand),
    /// Print a shell completion script: `source <(sbx completion bash)`.
    Completion(CompletionArgs),
    /// Print a man page in roff: `sbx man run | man -l -`.
    Man(ManArgs),
    /// Print the version and the commit sbx was built from.
    Version,
}

#[derive(Args, Debug, Clone)]
pub struct CompletionArgs {
    /// bash, zsh or fish.
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    pub shell: String,
}

#[derive(Args, Debug, Clone)]
pub struct ManArgs {
    /// A subcommand's page (sbx-run), instead of sbx's own.
    pub subcommand: Option<String>,
    /// List the subcommands that have pages of their own.
    #[arg(long, conflicts_with = "subcommand")]
    pub list: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PsArgs {
    /// Also list sandboxes that are not running.
    #[arg(short, long)]
    pub all: bool,
    /// Print JSON (an array of objects).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
#[command(after_help = crate::exit::HELP_EXEC)]
pub struct ExecArgs {
    /// Give the command a terminal of its own, from the sandbox's devpts (default: none).
    #[arg(short, long)]
    pub tty: bool,
    /// Accepted for podman's habits: stdin is always passed on.
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,
    /// Set a variable (KEY=VALUE), or pass the host's value of KEY. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE|KEY")]
    pub env: Vec<String>,
    /// Read variables from a file of KEY=VALUE lines. Repeatable.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<std::path::PathBuf>,
    /// Working directory inside the sandbox (default: the sandbox's).
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// The sandbox's name.
    #[arg(add = ArgValueCandidates::new(crate::complete::sandbox_names))]
    pub name: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct StopArgs {
    /// Seconds between SIGTERM and SIGKILL.
    #[arg(
        short = 't',
        long = "time",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    pub time: u64,
    #[arg(add = ArgValueCandidates::new(crate::complete::sandbox_names), required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct KillArgs {
    /// The signal, by name (TERM, SIGTERM) or number.
    #[arg(short, long, value_name = "SIGNAL", default_value = "KILL")]
    pub signal: String,
    #[arg(add = ArgValueCandidates::new(crate::complete::sandbox_names), required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct StartArgs {
    /// Stay attached: run in the foreground, as `sbx run` does, instead of detached.
    #[arg(short, long)]
    pub attach: bool,
    #[arg(add = ArgValueCandidates::new(crate::complete::sandbox_names))]
    pub name: String,
}

#[derive(Args, Debug, Clone)]
pub struct LogsArgs {
    /// Keep printing new output until the sandbox exits.
    #[arg(short, long)]
    pub follow: bool,
    #[arg(add = ArgValueCandidates::new(crate::complete::sandbox_names))]
    pub name: String,
}

#[derive(Args, Debug, Clone)]
pub struct RmArgs {
    /// Stop running sandboxes first (SIGKILL) instead of refusing.
    #[arg(short, long)]
    pub force: bool,
    #[arg(add = ArgValueCandidates::new(crate::complete::sandbox_names), required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct InspectArgs {
    #[arg(add = ArgValueCandidates::new(crate::complete::sandbox_names))]
    pub name: String,
}

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// End the holder of the kept user namespace (the next run makes a new one, with the
    /// subordinate ranges as they are then), and forget a failure to make one.
    Reset,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Import SOURCE as NAME[:TAG]: a rootfs tarball (plain, gzip, xz, zstd), a
    /// docker-archive, an OCI layout (directory or tar) or a directory.
    Import {
        #[arg(value_name = "NAME[:TAG]")]
        name: String,
        #[arg(value_name = "SOURCE")]
        source: std::path::PathBuf,
        /// Where the image came from, as `sbx image ls` shows it, instead of SOURCE
        /// (`sbx pull` passes its reference).
        #[arg(long, hide = true, value_name = "TEXT")]
        origin: Option<String>,
        /// Refuse the image if its layers unpack to more than SIZE in all (K/M/G/T
        /// suffixes); nothing is imported then.
        #[arg(long = "max-size", value_name = "SIZE")]
        max_size: Option<String>,
    },
    /// The images in the store.
    Ls {
        /// Print the records as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove images, and the layers no other image uses.
    Rm {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// An image's record (layers, config, where its layers are) as JSON.
    Inspect {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProfileCommand {
    /// Every profile reachable by name: name, where it comes from, commands, description.
    Ls,
    /// The fully resolved profile (after `extends` and variables) as JSON.
    Show {
        /// Profile name or path.
        name: String,
    },
    /// Validate profile files (exit status: see `--help`).
    #[command(after_help = crate::exit::HELP_CHECK_PROFILES)]
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<std::path::PathBuf>,
    },
    /// Which profile `sbx run -- COMMAND...` would use, and why.
    Which {
        #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Print the JSON Schema of profiles (profiles/schema.json is generated from this).
    Schema,
}

#[derive(Args, Debug, Default, Clone)]
#[command(
    after_help = "Credentials come from $XDG_RUNTIME_DIR/containers/auth.json, \
                  ~/.config/containers/auth.json, then ~/.docker/config.json (or \
                  $DOCKER_CONFIG/config.json); anonymous otherwise.\n\
                  HTTPS always, except plain HTTP for loopback registries (localhost, 127.0.0.0/8, \
                  ::1) and with --plain-http. See docs/pull.md."
)]
pub struct PullArgs {
    /// The image: [REGISTRY/]REPOSITORY[:TAG|@DIGEST], as docker and podman spell it
    /// (`busybox` is docker.io/library/busybox:latest).
    #[arg(value_name = "REFERENCE")]
    pub reference: String,

    /// Store the image under this name instead of REFERENCE as given.
    #[arg(long, value_name = "NAME[:TAG]")]
    pub name: Option<String>,

    /// Write the image to DIR (which must not exist) as an OCI image layout instead of
    /// adding it to the store, for `sbx image import` or skopeo elsewhere.
    #[arg(long, value_name = "DIR", conflicts_with = "name")]
    pub layout: Option<std::path::PathBuf>,

    /// The platform to pick from a multi-platform image (default: this host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,

    /// Speak plain HTTP to the registry: nothing encrypted, the registry's identity
    /// unchecked; only on a network you trust. Loopback registries get it without this.
    #[arg(long = "plain-http")]
    pub plain_http: bool,

    /// Fetch a layer the registry does not serve from the foreign URLs its descriptor
    /// names (other hosts, chosen by the image). Off by default.
    #[arg(long = "allow-foreign-layers")]
    pub allow_foreign_layers: bool,

    /// Refuse the image if its layers unpack to more than SIZE in all (K/M/G/T suffixes).
    #[arg(long = "max-size", value_name = "SIZE")]
    pub max_size: Option<String>,
}

#[derive(Args, Debug, Default, Clone)]
pub struct CheckArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
#[command(
    after_help = crate::exit::HELP_RUN
)]
pub struct RunArgs {
    /// JSON profile: a name (looked up in ~/.config/sbx/profiles, /etc/sbx/profiles, then the
    /// built-ins) or a path to a file.
    #[arg(short = 'p', long, value_name = "NAME|PATH", add = ArgValueCandidates::new(crate::complete::profile_names))]
    pub profile: Option<String>,

    /// Root filesystem: the host's / read-only ("host"), or a directory.
    #[arg(long, value_name = "host|DIR", conflicts_with = "image")]
    pub rootfs: Option<String>,

    /// Root filesystem from an imported image (`sbx image ls`), under a writable overlay.
    #[arg(long, value_name = "NAME[:TAG]")]
    pub image: Option<String>,

    /// Keep the image overlay's upper layer (the run's changes) in DIR between runs,
    /// instead of discarding it at exit. Created when missing.
    #[arg(long, value_name = "DIR")]
    pub upper: Option<String>,

    /// Which overlay assembles an image root: "auto" (kernel overlayfs, else
    /// fuse-overlayfs), "kernel" or "fuse".
    #[arg(long, value_name = "auto|kernel|fuse")]
    pub overlay: Option<String>,

    /// Read-write bind mount (DST defaults to SRC). Repeatable.
    #[arg(long, value_name = "SRC[:DST]")]
    pub bind: Vec<String>,

    /// Read-only bind mount (DST defaults to SRC). Repeatable.
    #[arg(long = "ro-bind", value_name = "SRC[:DST]")]
    pub ro_bind: Vec<String>,

    /// A bind mount as podman spells it: SRC:DST, read-only with `:ro`. Repeatable.
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro|rw]")]
    #[serde(skip)]
    pub volume: Vec<String>,

    /// Empty tmpfs at DST. Repeatable.
    #[arg(long, value_name = "DST")]
    pub tmpfs: Vec<String>,

    /// Set a variable (KEY=VALUE), or pass the host's value of KEY. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE|KEY")]
    pub env: Vec<String>,

    /// Working directory inside the sandbox.
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,

    /// Host name inside the sandbox.
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// User id inside the sandbox (default: your own).
    #[arg(long, value_name = "N")]
    pub uid: Option<u32>,

    /// UID[:GID] inside the sandbox, as podman's `--user` (numbers).
    #[arg(short = 'u', long = "user", value_name = "UID[:GID]", conflicts_with_all = ["uid", "gid"])]
    #[serde(skip)]
    pub user: Option<String>,

    /// Group id inside the sandbox (default: your own).
    #[arg(long, value_name = "N")]
    pub gid: Option<u32>,

    /// Network: "none" is a namespace with loopback only (the default); "slirp4netns" adds
    /// outbound TCP/UDP through user-mode NAT; "host" shares the host's network namespace,
    /// which gives no network isolation at all; "sandbox:NAME" shares the network
    /// namespace of the running named sandbox NAME (its loopback, its published ports).
    #[arg(
        long,
        visible_alias = "network",
        value_name = "none|slirp4netns|host|sandbox:NAME"
    )]
    pub net: Option<String>,

    /// Forward a host port into the sandbox (slirp4netns); IP defaults to 127.0.0.1.
    /// Repeatable.
    #[arg(long, value_name = "[IP:]HPORT:PORT[/tcp|/udp]")]
    pub publish: Vec<String>,

    /// Let the sandbox reach the host's 127.0.0.1 at 10.0.2.2 (slirp4netns).
    #[arg(long = "allow-host-loopback")]
    pub allow_host_loopback: bool,

    /// Add a capability (NET_RAW or CAP_NET_RAW). Repeatable.
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,

    /// Drop a capability, or ALL. Repeatable.
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,

    /// The seccomp filter: "default" or "off".
    #[arg(long, value_name = "default|off")]
    pub seccomp: Option<String>,

    /// Allow nested sandboxes (unshare, setns, mounts inside), for build steps that run
    /// bwrap or podman themselves; also turns off the kernel path masks.
    #[arg(long = "allow-nested")]
    pub allow_nested: bool,

    /// Landlock: "best-effort" (default), "required" or "off".
    #[arg(long, value_name = "MODE")]
    pub landlock: Option<String>,

    /// Keep PATH read-only: relative, inside every writable bind; absolute, that path.
    /// Repeatable.
    #[arg(long, value_name = "PATH")]
    pub protect: Vec<String>,

    /// Size of the sandbox's own /dev/shm: "128M", or "10%" of memory (default 64M).
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub shm_size: Option<String>,

    /// Size of the sandbox's own /tmp: "1G", or "30%" of memory (default 20%).
    #[arg(long = "tmp-size", value_name = "SIZE")]
    pub tmp_size: Option<String>,

    /// A repository's `.git` at the root of a writable bind: "read-only" (default) or
    /// "writable" (commits work; hooks, config and what git trusts stay read-only).
    #[arg(long, value_name = "MODE")]
    pub git: Option<String>,

    /// memory.max (K/M/G suffixes).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,

    /// memory.swap.max (K/M/G suffixes).
    #[arg(long = "memory-swap", value_name = "SIZE")]
    pub memory_swap: Option<String>,

    /// cpu.max as a number of CPUs (1.5 = 150 ms per 100 ms).
    #[arg(long, value_name = "N")]
    pub cpus: Option<String>,

    /// pids.max: how many processes and threads the sandbox may have.
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,

    /// io.weight (1-10000).
    #[arg(long = "io-weight", value_name = "N")]
    pub io_weight: Option<u32>,

    /// An rlimit: nofile, nproc, core, fsize, as, cpu, stack or memlock. Repeatable.
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub rlimit: Vec<String>,

    /// Wall-clock limit (30s, 10m, 1h): SIGTERM, then SIGKILL 5 s later; exits as timeout(1) does.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,

    /// Say which profile was chosen and why, and what the sandbox gets (`-v` is --volume,
    /// as in podman).
    #[arg(long)]
    pub verbose: bool,

    /// Accepted for podman's habits: stdin is always passed on.
    #[arg(short = 'i', long = "interactive")]
    #[serde(skip)]
    pub interactive: bool,

    /// Accepted for podman's habits: the command gets a terminal of its own whenever stdin
    /// is one.
    #[arg(short = 't', long = "tty")]
    #[serde(skip)]
    pub tty: bool,

    /// Accepted for podman's habits: a sandbox without --name leaves nothing behind anyway.
    #[arg(long = "rm")]
    #[serde(skip)]
    pub rm: bool,

    /// Name the sandbox, so that `sbx ps`, `exec`, `stop`, `start`, `logs`, `rm` and
    /// `inspect` find it.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Return once the sandbox has started; its output goes to `sbx logs NAME`. Without
    /// --name, sbx makes up a name and prints it.
    #[arg(short = 'd', long)]
    pub detach: bool,

    /// Write the sandbox's status as JSON to PATH: pid and namespaces once started, then
    /// the exit code or signal.
    #[arg(long = "status-json", value_name = "PATH")]
    pub status_json: Option<std::path::PathBuf>,

    /// Read variables from a file of KEY=VALUE lines (`#` starts a comment). Repeatable;
    /// -e wins over the file.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<std::path::PathBuf>,

    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn argv(line: &[&str]) -> Vec<std::ffi::OsString> {
        std::iter::once("sbx")
            .chain(line.iter().copied())
            .map(Into::into)
            .collect()
    }

    /// What the whole parser makes of a `run` command line, as JSON; None when it refuses.
    fn full(line: &[&str]) -> Option<String> {
        match Cli::try_parse_from(argv(line)).ok()?.command {
            Command::Run(args) => Some(serde_json::to_string(&args).unwrap()),
            _ => None,
        }
    }

    #[test]
    fn run_alone_parses_as_the_whole_parser_does() {
        let lines: &[&[&str]] = &[
            &["run", "--", "true"],
            &["run", "true", "-x", "--y"],
            // Bare commands, which skip clap.
            &["run", "true"],
            &["run", "--", "--help"],
            &["run", "--", "sh", "--", "-c"],
            &["run", "sh", "--", "x"],
            &["run", "echo", "--version", "-p", "x"],
            &["run", ""],
            &["run", "--", ""],
            &["run", "--", "-"],
            &["run", "-"],
            &[
                "run",
                "-p",
                "strict",
                "--ro-bind",
                "/a:/b",
                "-v",
                "/c:/d:ro",
                "--",
                "ls",
                "-l",
            ],
            &[
                "run",
                "--net",
                "slirp4netns",
                "--publish",
                "8080:80",
                "-d",
                "--name",
                "w",
                "sh",
            ],
            &[
                "run", "-it", "-e", "A=1", "--env", "B", "-w", "/tmp", "-u", "0", "bash",
            ],
            &[
                "run",
                "--memory",
                "1G",
                "--pids",
                "10",
                "--timeout",
                "5",
                "--",
                "sleep",
                "1",
            ],
            &[
                "run",
                "--image",
                "x",
                "--uid",
                "1000",
                "--rlimit",
                "nofile=10:20",
                "id",
            ],
        ];
        for line in lines {
            let fast = parse_run_alone(argv(line)).map(|a| serde_json::to_string(&a).unwrap());
            assert!(fast.is_some(), "{line:?} not parsed alone");
            assert_eq!(fast, full(line), "{line:?}");
        }
    }

    #[test]
    fn run_alone_leaves_a_command_that_is_not_utf8_to_the_whole_parser() {
        use std::os::unix::ffi::OsStringExt;
        let bad = std::ffi::OsString::from_vec(vec![b'a', 0xff]);
        for line in [vec!["--".into(), bad.clone()], vec![bad.clone()]] {
            let args = argv(&["run"]).into_iter().chain(line);
            assert!(parse_run_alone(args).is_none());
        }
    }

    #[test]
    fn run_alone_leaves_help_errors_and_other_commands_to_the_whole_parser() {
        let lines: &[&[&str]] = &[
            &["run", "--help"],
            &["run", "-h"],
            &["run"],
            &["run", "--no-such-flag", "true"],
            &["run", "--net"],
            &["run", "--"],
            &["ps"],
            &["--version"],
            &[],
            &["exec", "x", "run"],
        ];
        for line in lines {
            assert!(parse_run_alone(argv(line)).is_none(), "{line:?}");
        }
    }
}
