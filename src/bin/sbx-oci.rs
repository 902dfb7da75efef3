//! `sbx-oci`, the OCI runtime (runc's command line), installed beside `sbx`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let code = match sbx::oci::cli::Cli::try_parse() {
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                sbx::error::exit::SBX_ERROR
            } else {
                0
            }
        }
        Ok(cli) => sbx::oci::main(cli),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
