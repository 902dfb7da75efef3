//! sbx: run a command in a rootless sandbox.
//!
//! This file parses the command line and is the only place where an exit code leaves the
//! process: an error that reaches it is reported and becomes `exit::SBX_ERROR`; otherwise
//! the code the command's run decided (see src/exit.rs).

use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use sbx::cli::{self, Cli, Command, RunArgs};
use sbx::exit::SBX_ERROR;
use sbx::supervisor::idmap::IdMode;
use sbx::{
    envfile, error, habits, image, instance, limits, meta, network, plan, planner, prepare, probe,
    profile, security, supervisor, sys,
};

fn main() -> ExitCode {
    if std::env::args_os()
        .next()
        .is_some_and(|a| a == sbx::holder::IDLE_ARGV0)
        && std::env::args_os().len() == 1
    {
        sbx::holder::idle();
    }
    let code = match sanitize_process().and_then(|()| dispatch()) {
        Ok(code) => code,
        Err(err) => {
            error::report(&err);
            SBX_ERROR
        }
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn dispatch() -> Result<i32> {
    meta::complete_if_asked();
    if let Some(args) = cli::parse_run_alone(std::env::args_os()) {
        return run(&args);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { SBX_ERROR } else { 0 };
            let _ = e.print();
            return Ok(code);
        }
    };
    if !matches!(
        cli.command,
        Command::Run(_) | Command::Exec(_) | Command::Start(_)
    ) {
        default_sigpipe();
    }
    match cli.command {
        Command::Run(args) => run(&args),
        Command::Check(args) => probe::check_command(args.json),
        Command::Profile(cmd) => profile::cmd::run(cmd),
        Command::Ps(args) => instance::show::ps(&args),
        Command::Exec(args) => instance::enter::exec(&args),
        Command::Stop(args) => instance::cmd::stop(&args),
        Command::Kill(args) => instance::cmd::kill(&args),
        Command::Start(args) => instance::cmd::start(&args),
        Command::Logs(args) => instance::show::logs(&args),
        Command::Rm(args) => instance::cmd::rm(&args),
        Command::Inspect(args) => instance::show::inspect(&args),
        Command::Pull(_) => Err(exec_helper("sbx-pull", 2)),
        Command::Image(cmd) => image::command(cmd),
        Command::System(cli::SystemCommand::Reset) => system_reset(),
        Command::Completion(args) => {
            meta::completion(&args.shell, &mut std::io::stdout()).map(|()| 0)
        }
        Command::Man(args) if args.list => {
            println!("{}", meta::subcommands().join("\n"));
            Ok(0)
        }
        Command::Man(args) => {
            meta::man(args.subcommand.as_deref(), &mut std::io::stdout()).map(|()| 0)
        }
        Command::Version => {
            println!("{}", meta::version());
            Ok(0)
        }
    }
}

fn run(args: &RunArgs) -> Result<i32> {
    let mut args = args.clone();
    habits::fold(&mut args)?;
    if let Some(profile) = &args.profile {
        habits::check_profile_value(profile)?;
    }
    let caller = planner::Caller::from_process()?;
    envfile::fold(&mut args.env_file, &mut args.env, &caller.vars.env)?;
    let choice = profile::select::choose(args.profile.as_deref(), &args.command[0])?;
    let overrides = planner::Overrides::from_args(&args)?;
    let host = instance::host_facts(&overrides)?;
    let paths = args
        .name
        .as_deref()
        .map(instance::cmd::paths_for)
        .transpose()?;
    let req = planner::Request {
        loaded: &choice.loaded,
        overrides: &overrides,
        caller: &caller,
        host: &host,
        instance: paths.as_ref(),
    };
    // Plans without writing: what the host lacks, `prepare` makes just before the run.
    let plan = planner::build(&req)?;
    if let Some(warning) = planner::limits::not_enforced_warning(&plan.limits) {
        eprintln!("sbx: warning: {warning}");
    }
    if let IdMode::Single { warning } = &plan.ids.mode {
        eprintln!("sbx: warning: {warning}");
    }
    for warning in &plan.warnings {
        eprintln!("sbx: warning: {warning}");
    }
    if let Some(systemd_run) = &plan.limits.via_systemd {
        // The kept user namespace's holder is made here if it is missing, outside the scope:
        // made by the run inside it, it would sit in that scope and keep it alive. A failure
        // is the rerun's to report (it maps per run then).
        if let Some(wanted) = sbx::holder::Wanted::for_ids(&plan.ids) {
            if plan.userns == plan::UsernsMode::Holder && plan.network.join.is_none() {
                let _ = sbx::holder::get(&wanted);
            }
        }
        // Before any namespace exists: sbx starts over inside a delegated scope.
        return Err(limits::rerun_in_scope(systemd_run));
    }
    if plan.verbose {
        describe(&plan, &choice.why);
    }
    match &args.name {
        Some(name) => instance::cmd::create(name, &req, plan, args.detach),
        None => {
            let (plan, prepared) = prepare::prepare(&req, plan)?;
            instance::launch::foreground(&plan, &prepared, None).0
        }
    }
}

/// `sbx system reset`: ends the holder, if one runs.
fn system_reset() -> Result<i32> {
    match sbx::holder::reset()? {
        Some(pid) => println!("ended the holder of the kept user namespace (pid {pid})"),
        None => println!("no holder of a kept user namespace was running"),
    }
    Ok(0)
}

fn describe(plan: &plan::Plan, why: &str) {
    eprintln!(
        "sbx: profile {:?} ({}; {why})",
        plan.profile, plan.profile_origin
    );
    match &plan.ids.mode {
        IdMode::Full {
            uid_map, gid_map, ..
        } => {
            let count = |m: &[supervisor::idmap::IdRange]| {
                m.iter().map(|r| u64::from(r.count)).sum::<u64>()
            };
            eprintln!(
                "sbx: ids: uid {} and gid {} inside; {} uids and {} gids mapped from /etc/subuid and /etc/subgid",
                plan.ids.inside_uid,
                plan.ids.inside_gid,
                count(uid_map),
                count(gid_map)
            );
        }
        IdMode::Single { .. } => eprintln!(
            "sbx: ids: uid {} and gid {} inside; single-id map",
            plan.ids.inside_uid, plan.ids.inside_gid
        ),
    }
    match &plan.rootfs {
        plan::Rootfs::Image {
            name,
            layers,
            upper,
            overlay,
        } => eprintln!(
            "sbx: rootfs: image {name} ({} layers) under {}; upper layer {}",
            layers.len(),
            image::run::describe_overlay(overlay),
            upper
                .as_ref()
                .map(|u| &u.path)
                .or(plan.setup.upper.as_ref())
                .map_or("on a tmpfs, discarded at exit".to_string(), |u| {
                    format!("kept in {}", u.display())
                })
        ),
        plan::Rootfs::Host => eprintln!("sbx: rootfs: the host's / (read-only)"),
        plan::Rootfs::Dir(dir) => eprintln!("sbx: rootfs: {} (read-only)", dir.display()),
    }
    eprintln!("sbx: network: {}", network::describe(&plan.network));
    eprintln!("sbx: limits: {}", limits::describe(&plan.limits));
    for line in security::describe(&plan.security) {
        eprintln!("sbx: {line}");
    }
    for m in &plan.mounts {
        eprintln!("sbx: mount: {}", describe_mount(m));
    }
    for s in &plan.skeletons {
        eprintln!(
            "sbx: mount: skeleton {} (a tmpfs with its entries bound back read-only, for new \
             mount points)",
            s.at.display()
        );
    }
}

/// One line a person reads: `bind /src -> /work (rw)`, `tmpfs /tmp/x (rw, size 20%)`.
fn describe_mount(m: &plan::Mount) -> String {
    let access = |readonly: bool, noexec: bool| {
        let mut words = vec![if readonly { "ro" } else { "rw" }];
        if noexec {
            words.push("noexec");
        }
        words.join(", ")
    };
    match m {
        plan::Mount::Bind {
            source,
            destination,
            readonly,
            noexec,
            ..
        } => format!(
            "bind {} -> {} ({})",
            source.display(),
            destination.display(),
            access(*readonly, *noexec)
        ),
        plan::Mount::Tmpfs {
            destination,
            size,
            mode,
            readonly,
            noexec,
        } => {
            let size = size.map_or("the kernel's default size".to_string(), |s| {
                format!("size {s}")
            });
            format!(
                "tmpfs {} ({}, {size}, mode {mode:04o})",
                destination.display(),
                access(*readonly, *noexec)
            )
        }
    }
}

/// Replaces this process with the helper binary `name` installed beside sbx, given our
/// arguments after the first `skip` (the program and the subcommand); returns only on
/// failure. Only beside sbx: a helper is never looked up in PATH.
fn exec_helper(name: &str, skip: usize) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let helper = match std::env::current_exe() {
        Ok(me) => me.with_file_name(name),
        Err(e) => return anyhow::anyhow!("cannot find the sbx binary, and {name} beside it: {e}"),
    };
    let err = std::process::Command::new(&helper)
        .args(std::env::args_os().skip(skip))
        .exec();
    anyhow::anyhow!(
        "cannot run {} ({err}); it is installed with sbx (`cargo install --path .` installs both)",
        helper.display()
    )
}

/// Like firecracker's jailer: make sure fds 0-2 exist (so nothing we open lands there) and
/// that no inherited descriptor can reach a helper or the sandbox.
fn sanitize_process() -> Result<()> {
    for fd in 0..3 {
        if !sys::fd_is_open(fd) {
            let null = std::fs::File::options()
                .read(true)
                .write(true)
                .open("/dev/null")
                .context("open /dev/null")?;
            sys::dup_to(null.as_fd(), fd).context("dup2 /dev/null")?;
        }
    }
    sys::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32)
        .context("mark inherited descriptors close-on-exec")
}

/// Output into a closed pipe (`sbx inspect NAME | head -1`) ends sbx quietly, as it ends
/// other command-line tools: by SIGPIPE, which Rust ignores by default (a write then fails
/// with EPIPE, and `println!` panics). Commands that run a sandbox keep ignoring it: they
/// relay the sandbox's output and handle EPIPE themselves.
fn default_sigpipe() {
    // SAFETY: restoring a signal's default disposition has no memory-safety preconditions;
    // sbx is single-threaded here and installs no handler of its own for SIGPIPE.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
}
