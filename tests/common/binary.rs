//! The binary.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use super::*;

/// Path of the sbx binary under test: `$SBX_BIN` (set by ci/test.sh, which stages the
/// binary where the test user can read it), else the one cargo built for this test.
pub fn sbx_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SBX_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    match option_env!("CARGO_BIN_EXE_sbx") {
        Some(path) => PathBuf::from(path),
        None => panic!("set SBX_BIN to the sbx binary to test"),
    }
}

/// The staged tests/data: `$SBX_TEST_DATA` (ci/test.sh), else the source tree's.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("SBX_TEST_DATA").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data"),
    }
}

/// `runuser -u USER -- env -i HOME=.. PATH=.. ENV.. PROGRAM ARGS` in `dir` (the user's home
/// when None): for the tests run as root that act as the test users.
pub fn as_user(
    user: &str,
    dir: Option<&Path>,
    env: &[(&str, &Path)],
    program: &Path,
    args: &[&str],
) -> Outcome {
    let home = nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no user {user}"))
        .dir;
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", user, "--", "env", "-i"])
        .arg(format!("HOME={}", home.display()))
        .arg("PATH=/usr/local/bin:/usr/bin:/bin")
        .args(env.iter().map(|(k, v)| format!("{k}={}", v.display())))
        .arg(program)
        .args(args)
        .current_dir(dir.unwrap_or(&home));
    run(cmd)
}

/// A `Command` for the sbx binary.
pub fn sbx() -> Command {
    Command::new(sbx_bin())
}

/// `sbx run ARGS...` with `dir` as the working directory (and so, by default, the directory
/// bound into the sandbox).
pub fn sbx_run(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = sbx();
    cmd.arg("run").args(args).current_dir(dir);
    cmd
}

/// Runs `sbx run OPTIONS -- sh -c SCRIPT` in `dir` and waits for it.
pub fn sandbox_sh(dir: &Path, options: &[&str], script: &str) -> Outcome {
    let mut cmd = sbx_run(dir, options);
    cmd.args(["--", "sh", "-c", script]);
    run(&mut cmd)
}

/// Under `SBX_TEST_STRICT=1` (CI) every skip is a failure.
pub fn strict() -> bool {
    std::env::var("SBX_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// The running test's name: libtest names each test's thread after it.
pub fn test_name() -> String {
    thread::current()
        .name()
        .unwrap_or("unknown-test")
        .to_string()
}

/// Skips the running test with a reason (prints `SKIP name: reason`), or fails it under
/// `SBX_TEST_STRICT=1`. Returns false so callers can write `if !skip(..) { return; }`.
///
/// libtest swallows the output of a passing test, so the line also goes to the file
/// `$SBX_TEST_SKIP_FILE` when that is set: ci/test.sh counts and lists the skips from it.
pub fn skip(reason: &str) -> bool {
    let name = test_name();
    if strict() {
        panic!("{name}: {reason} (SBX_TEST_STRICT=1 turns this skip into a failure)");
    }
    let line = format!("SKIP {name}: {reason}");
    eprintln!("{line}");
    if let Some(file) = std::env::var_os("SBX_TEST_SKIP_FILE").filter(|f| !f.is_empty()) {
        let appended = fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            panic!(
                "{name}: cannot record the skip in {}: {e}",
                Path::new(&file).display()
            );
        }
    }
    false
}
