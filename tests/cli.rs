//! The command line as a newcomer meets it: completion scripts, man pages, the version, and
//! output into a closed pipe.

mod common;

use std::io::Read;
use std::process::Stdio;

use common::*;

/// Runs sbx with ARGS, its stdout a pipe the reader closes after one byte: what
/// `sbx ... | head -c1` does. Returns the exit code and stderr.
fn into_closed_pipe(args: &[&str], data: &TempDir) -> (i32, String) {
    let mut child = sbx()
        .args(args)
        .env("XDG_DATA_HOME", data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    let _ = stdout.read(&mut one);
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let code = out.status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&out.status).unwrap_or(0)
    });
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn no_subcommand_panics_writing_into_a_closed_pipe() {
    let data = TempDir::new();
    for args in [
        &["man"][..],
        &["man", "run"],
        &["completion", "bash"],
        &["profile", "ls"],
        &["profile", "show", "default"],
        &["profile", "schema"],
        &["check", "--json"],
        &["ps", "-a", "--json"],
        &["image", "ls"],
        &["--help"],
    ] {
        let (code, stderr) = into_closed_pipe(args, &data);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "sbx {args:?}: {stderr}"
        );
        // Ended by SIGPIPE as other tools are, or done before the reader left.
        assert!(
            matches!(code, 0 | 141),
            "sbx {args:?} exited {code}: {stderr}"
        );
    }
}

#[test]
fn completion_scripts_complete_profiles_and_sandboxes() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(sbx().args(["completion", shell]));
        out.assert_success();
        assert!(out.stdout().contains("COMPLETE"), "{shell}\n{out}");
    }
    run(sbx().args(["completion", "tcsh"])).assert_code(125);
    // What the bash script asks sbx when completing `sbx run --profile <TAB>`.
    let mut cmd = sbx();
    cmd.env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", "3")
        .args(["--", "sbx", "run", "--profile", ""]);
    let out = run(cmd);
    out.assert_success();
    let names: Vec<String> = out
        .stdout()
        .split(['\n', '\u{b}'])
        .map(str::to_string)
        .collect();
    for profile in ["default", "build", "strict", "devshell"] {
        assert!(names.iter().any(|n| n == profile), "{profile} in {names:?}");
    }
}

#[test]
fn man_pages_and_version() {
    let out = run(sbx().args(["man"]));
    out.assert_success();
    assert!(out.stdout().contains(".TH sbx 1"), "{out}");
    let out = run(sbx().args(["man", "run"]));
    out.assert_success();
    assert!(out.stdout().contains(".TH sbx-run 1") && out.stdout().contains("\\-\\-profile"));
    run(sbx().args(["man", "nosuch"])).assert_sbx_error(&["nosuch"]);
    let out = run(sbx().arg("version"));
    out.assert_success();
    let line = out.stdout();
    assert!(
        line.starts_with(&format!("sbx {} (", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
}

#[test]
fn a_schema_key_in_a_profile_is_accepted_and_ignored() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let profile = dir.join("mine.json");
    std::fs::write(
        &profile,
        r#"{"$schema": "../profiles/schema.json", "extends": "default", "hostname": "mine"}"#,
    )
    .unwrap();
    let path = profile.to_str().unwrap();
    run(sbx().args(["profile", "check", path])).assert_success();
    let out = sandbox_sh(dir.path(), &["-p", path], "hostname");
    out.assert_success();
    assert_eq!(out.lines(), ["mine"]);
    // Any other unknown key is still an error.
    std::fs::write(&profile, r#"{"$schemas": "x"}"#).unwrap();
    run(sbx().args(["profile", "check", path])).assert_sbx_error(&["$schemas"]);
}
