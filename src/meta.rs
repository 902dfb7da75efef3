//! `sbx completion SHELL`, `sbx man [SUBCOMMAND]` and `sbx version`: what a package installs
//! beside the binary, generated from the same clap types the command line is parsed with.
//!
//! Completion is dynamic: the script a shell loads calls `sbx` back (with `COMPLETE=SHELL`
//! in its environment) for every completion, so profile and sandbox names are the ones
//! that exist at that moment.

use std::io::Write;

use anyhow::{bail, Context, Result};
use clap::CommandFactory;
use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};

use crate::cli::Cli;

/// The variable the completion scripts set when they call sbx back.
const COMPLETE_VAR: &str = "COMPLETE";

/// Answers a shell's completion request and exits, when sbx was called back by one; returns
/// otherwise. Called first in `main`.
pub fn complete_if_asked() {
    if std::env::var_os(COMPLETE_VAR).is_some_and(|v| !v.is_empty()) {
        clap_complete::CompleteEnv::with_factory(Cli::command)
            .var(COMPLETE_VAR)
            .complete();
    }
}

/// `sbx completion SHELL`: the script to load (or to install as a package's completion).
pub fn completion(shell: &str, out: &mut dyn Write) -> Result<()> {
    let bin = "sbx";
    let written = match shell {
        "bash" => Bash.write_registration(COMPLETE_VAR, bin, bin, bin, out),
        "zsh" => Zsh.write_registration(COMPLETE_VAR, bin, bin, bin, out),
        "fish" => Fish.write_registration(COMPLETE_VAR, bin, bin, bin, out),
        other => bail!("no completion for the shell {other:?}; use bash, zsh or fish"),
    };
    written.context("write the completion script")
}

/// `sbx man [SUBCOMMAND]`: the roff man page, for `sbx man run | man -l -`.
pub fn man(subcommand: Option<&str>, out: &mut dyn Write) -> Result<()> {
    let mut cmd = Cli::command();
    cmd.build();
    let page = match subcommand {
        None => cmd,
        Some(name) => {
            let Some(sub) = cmd.find_subcommand(name).cloned() else {
                bail!("no subcommand {name:?}; `sbx --help` lists them");
            };
            sub.name(format!("sbx-{name}"))
        }
    };
    clap_mangen::Man::new(page)
        .render(out)
        .context("write the man page")
}

/// The names of every subcommand that gets a man page of its own (`sbx-run.1`, ...).
pub fn subcommands() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect()
}

/// `sbx version`: the version and the commit it was built from.
pub fn version() -> String {
    let commit = option_env!("SBX_COMMIT").unwrap_or("unknown commit");
    format!("sbx {} ({commit})", env!("CARGO_PKG_VERSION"))
}
