//! `sbx pull`, in a binary of its own: the registry client brings an HTTP and TLS stack
//! that `sbx`, which starts every sandbox, should not have to load. `sbx pull ARGS` runs
//! this binary (installed beside sbx) with the same ARGS.

use std::process::ExitCode;

use clap::Parser;

use sbx::cli::PullArgs;
use sbx::error::exit::SBX_ERROR;

#[derive(Parser, Debug)]
#[command(
    name = "sbx pull",
    version,
    about = "Download an image from an OCI or Docker registry into the image store"
)]
struct Cli {
    #[command(flatten)]
    args: PullArgs,
}

fn main() -> ExitCode {
    let code = match Cli::try_parse() {
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                SBX_ERROR
            } else {
                0
            }
        }
        Ok(cli) => match sbx::pull::run(&cli.args) {
            Ok(code) => code,
            Err(err) => {
                sbx::error::report(&err);
                SBX_ERROR
            }
        },
    };
    report_peak_memory();
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// With `SBX_REPORT_PEAK_RSS=1`, the process's peak resident memory (VmHWM) goes to
/// stderr as it exits: the tests check that hostile responses cannot inflate it.
fn report_peak_memory() {
    if !std::env::var_os("SBX_REPORT_PEAK_RSS").is_some_and(|v| !v.is_empty()) {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:")) {
        eprintln!(
            "sbx-pull: peak memory {}",
            line.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
}
