//! `sbx run` as a user sees it from the outside: exit codes, options and their errors,
//! profiles, environment, hostname, working directory, stdin and file descriptors.

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use common::*;

// ---------------------------------------------------------------------------------------
// Exit codes
// ---------------------------------------------------------------------------------------

#[test]
fn exit_code_is_the_commands_own() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    sandbox_sh(dir.path(), &[], "exit 7").assert_code(7);
    sandbox_sh(dir.path(), &[], "exit 0").assert_code(0);
}

#[test]
fn killed_by_sigkill_gives_137() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    sandbox_sh(dir.path(), &[], "kill -9 $$").assert_code(128 + 9);
}

#[test]
fn killed_by_sigterm_gives_143() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    sandbox_sh(dir.path(), &[], "kill -TERM $$").assert_code(128 + 15);
}

#[test]
fn command_not_found_gives_127() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let name = unique("no-such-command");
    let out = run(sbx_run(dir.path(), &["--", &name]));
    out.assert_code(127);
    assert!(out.stderr().contains(&name), "the message names it\n{out}");

    let path = format!("/nonexistent/{name}");
    let out = run(sbx_run(dir.path(), &["--", &path]));
    out.assert_code(127);
    assert!(out.stderr().contains(&path), "the message names it\n{out}");
}

#[test]
fn non_executable_file_gives_126() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let file = dir.join("not-executable");
    fs::write(&file, "#!/bin/sh\necho ran\n").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let path = file.to_str().unwrap();
    let out = run(sbx_run(dir.path(), &["--", path]));
    out.assert_code(126);
    assert!(!out.stdout().contains("ran"), "{out}");
    assert!(out.stderr().contains(path), "the message names it\n{out}");

    // The same file, made executable, runs: the 126 came from the mode bits.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(sbx_run(dir.path(), &["--", path]));
    out.assert_success();
    assert_eq!(out.stdout(), "ran\n");
}

#[test]
fn directory_as_command_gives_126() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let sub = dir.join("subdir");
    fs::create_dir(&sub).unwrap();
    for path in [sub.to_str().unwrap(), "/usr"] {
        let out = run(sbx_run(dir.path(), &["--", path]));
        out.assert_code(126);
        assert!(out.stderr().contains(path), "the message names it\n{out}");
    }
}

#[test]
fn bad_option_gives_125_and_runs_nothing() {
    let dir = TempDir::new();
    let marker = dir.join("ran");
    let out = run(sbx_run(
        dir.path(),
        &["--no-such-option", "--", "touch", marker.to_str().unwrap()],
    ));
    out.assert_sbx_error(&["--no-such-option"]);
    assert!(!marker.exists(), "the command ran despite the bad option");
}

#[test]
fn bad_option_value_gives_125() {
    let dir = TempDir::new();
    run(sbx_run(
        dir.path(),
        &["--uid", "not-a-number", "--", "true"],
    ))
    .assert_sbx_error(&["--uid"]);
    run(sbx_run(dir.path(), &["--net", "bogus", "--", "true"])).assert_sbx_error(&["bogus"]);
}

#[test]
fn options_after_double_dash_belong_to_the_command() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(dir.path(), &[], "echo --profile");
    out.assert_success();
    assert_eq!(out.stdout(), "--profile\n");

    // Even ones that would be errors for sbx: no such profile, no such option.
    let out = run(sbx_run(
        dir.path(),
        &[
            "--",
            "printf",
            "%s\\n",
            "--profile",
            "/nonexistent.json",
            "--bogus",
        ],
    ));
    out.assert_success();
    assert_eq!(out.stdout(), "--profile\n/nonexistent.json\n--bogus\n");
}

#[test]
fn malformed_profile_names_file_line_and_column() {
    let dir = TempDir::new();
    let profile = dir.join("broken.json");
    fs::write(
        &profile,
        "{\n  \"hostname\": \"a\",,\n  \"network\": \"none\"\n}\n",
    )
    .unwrap();
    let p = profile.to_str().unwrap();
    let out = run(sbx_run(dir.path(), &["--profile", p, "--", "true"]));
    out.assert_sbx_error(&[p, "line 2", "column"]);
}

#[test]
fn unknown_profile_field_is_named() {
    let dir = TempDir::new();
    let profile = dir.join("typo.json");
    fs::write(
        &profile,
        "{\n  \"hostname\": \"a\",\n  \"sbx_bogus_field\": true\n}\n",
    )
    .unwrap();
    let p = profile.to_str().unwrap();
    let marker = dir.join("ran");
    let out = run(sbx_run(
        dir.path(),
        &["-p", p, "--", "touch", marker.to_str().unwrap()],
    ));
    out.assert_sbx_error(&[p, "sbx_bogus_field", "line 3"]);
    assert!(!marker.exists(), "the command ran despite the bad profile");
}

#[test]
fn missing_profile_file_gives_125() {
    let dir = TempDir::new();
    let p = dir.join("absent.json");
    let p = p.to_str().unwrap();
    run(sbx_run(dir.path(), &["--profile", p, "--", "true"])).assert_sbx_error(&[p]);
}

#[test]
fn missing_bind_source_gives_125_naming_it() {
    let dir = TempDir::new();
    let missing = dir.join("no-such-source");
    let m = missing.to_str().unwrap();
    run(sbx_run(dir.path(), &["--bind", m, "--", "true"])).assert_sbx_error(&[m]);
    let spec = format!("{m}:/mnt");
    run(sbx_run(dir.path(), &["--ro-bind", &spec, "--", "true"])).assert_sbx_error(&[m]);
}

#[test]
fn missing_rootfs_gives_125_naming_it() {
    let dir = TempDir::new();
    let missing = dir.join("no-such-rootfs");
    let m = missing.to_str().unwrap();
    run(sbx_run(dir.path(), &["--rootfs", m, "--", "true"])).assert_sbx_error(&[m]);
}

#[test]
fn no_command_gives_125() {
    let dir = TempDir::new();
    run(sbx_run(dir.path(), &[])).assert_sbx_error(&[]);
    run(sbx_run(dir.path(), &["--"])).assert_sbx_error(&[]);
}

// ---------------------------------------------------------------------------------------
// Hostname
// ---------------------------------------------------------------------------------------

fn host_hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn hostname_defaults_to_sbx() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(dir.path(), &[], "cat /proc/sys/kernel/hostname");
    out.assert_success();
    assert_eq!(out.stdout().trim(), "sbx");
    if host_hostname() == "sbx" {
        eprintln!("note: the host is itself named sbx, so this test shows little here");
    }
}

#[test]
fn hostname_option_sets_it_and_leaves_the_host_alone() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let before = host_hostname();
    let out = sandbox_sh(
        dir.path(),
        &["--hostname", "sbx-test-foo"],
        "cat /proc/sys/kernel/hostname; hostname",
    );
    out.assert_success();
    assert_eq!(out.lines(), ["sbx-test-foo", "sbx-test-foo"], "{out}");
    assert_eq!(host_hostname(), before, "the host's hostname changed");
    assert_ne!(before, "sbx-test-foo");
}

// ---------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------

const PASSED_BY_DEFAULT: &[&str] = &["PATH", "HOME", "USER", "TERM", "LANG"];

/// `env` inside (run directly: a shell would add PWD, SHLVL and friends).
fn env_inside(dir: &TempDir, options: &[&str]) -> Vec<(String, String)> {
    let mut cmd = sbx_run(dir.path(), options);
    cmd.args(["--", "env"])
        .env("SBX_TEST_SECRET", "s3cret")
        .env("LANG", "C.UTF-8")
        .env("TERM", "dumb");
    let out = run(&mut cmd);
    out.assert_success();
    out.lines()
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => panic!("unexpected env line {l:?}\n{out}"),
        })
        .collect()
}

#[test]
fn environment_is_clean() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let env = env_inside(&dir, &[]);
    let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    let mut expected: Vec<&str> = PASSED_BY_DEFAULT
        .iter()
        .copied()
        .filter(|k| std::env::var_os(k).is_some() || ["LANG", "TERM"].contains(k))
        .collect();
    expected.sort();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "variables inside: {env:?}");
    for (k, v) in &env {
        let host = match k.as_str() {
            "LANG" => "C.UTF-8".to_string(),
            "TERM" => "dumb".to_string(),
            _ => std::env::var(k).unwrap(),
        };
        assert_eq!(v, &host, "{k} is passed with the host's value");
    }
}

#[test]
fn env_option_passes_a_host_variable() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let env = env_inside(&dir, &["-e", "SBX_TEST_SECRET"]);
    assert!(
        env.contains(&("SBX_TEST_SECRET".into(), "s3cret".into())),
        "{env:?}"
    );
}

#[test]
fn env_option_sets_a_variable() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let env = env_inside(&dir, &["-e", "A=B", "--env", "SBX_TEST_SECRET=overridden"]);
    assert!(env.contains(&("A".into(), "B".into())), "{env:?}");
    assert!(
        env.contains(&("SBX_TEST_SECRET".into(), "overridden".into())),
        "{env:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Working directory
// ---------------------------------------------------------------------------------------

#[test]
fn workdir_option_sets_the_working_directory() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(dir.path(), &["-w", "/usr"], "pwd");
    out.assert_success();
    assert_eq!(out.stdout(), "/usr\n");
}

#[test]
fn missing_workdir_gives_125_naming_it() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let missing = format!("/{}", unique("no-such-workdir"));
    let out = sandbox_sh(dir.path(), &["-w", &missing], "echo ran");
    out.assert_sbx_error(&[&missing]);
    assert!(!out.stdout().contains("ran"), "{out}");
}

// ---------------------------------------------------------------------------------------
// Stdin
// ---------------------------------------------------------------------------------------

#[test]
fn stdin_is_piped_to_the_command() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = run_with_input(sbx_run(dir.path(), &["--", "cat"]), b"hello\n");
    out.assert_success();
    assert_eq!(out.stdout(), "hello\n");
}

/// A descriptor with no path as stdin (a namespace file here; an eventfd or a memfd alike)
/// reaches the command: Landlock, which refuses rules on such files, gets none for it.
#[test]
fn stdin_without_a_path_reaches_the_command() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let mut cmd = sbx_run(dir.path(), &["--", "readlink", "/proc/self/fd/0"]);
    let out = cmd
        .stdin(std::fs::File::open("/proc/self/ns/user").unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("user:["),
        "{stderr}"
    );
}

#[test]
fn large_stdin_passes_intact() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    // 1 MiB of pseudo-random bytes (xorshift), every byte value included.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let data: Vec<u8> = (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let out = run_with_input(sbx_run(dir.path(), &["--", "cat"]), &data);
    out.assert_success();
    assert_eq!(out.stdout.len(), data.len(), "stdout length");
    assert!(out.stdout == data, "the data came back altered");
}

#[test]
fn stdin_that_is_a_pipe_is_not_a_terminal() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = run_with_input(
        sbx_run(
            dir.path(),
            &[
                "--",
                "sh",
                "-c",
                "read line; echo \"$line\"; test -t 0 && echo is-a-tty || echo not-a-tty",
            ],
        ),
        b"piped\n",
    );
    out.assert_success();
    assert_eq!(out.lines(), ["piped", "not-a-tty"]);
}

// ---------------------------------------------------------------------------------------
// File descriptors
// ---------------------------------------------------------------------------------------

/// `sh -c 'ls /proc/$$/fd'`, with fd 7 of the started process open (no CLOEXEC) on a file.
fn fds_with_extra_fd(cmd: &mut Command, dir: &TempDir) -> Outcome {
    let file = fs::File::create(dir.join("leak-me")).unwrap();
    let fd = file.as_raw_fd();
    // SAFETY: the closure runs between fork and exec and only calls dup2, which is
    // async-signal-safe; `fd` stays open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = run(cmd);
    drop(file);
    out
}

fn fd_list(out: &Outcome) -> Vec<String> {
    out.assert_success();
    let mut fds: Vec<String> = out.stdout().split_whitespace().map(String::from).collect();
    fds.sort();
    fds
}

#[test]
fn only_stdin_stdout_stderr_reach_the_command() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let script = "ls /proc/$$/fd";

    // Without sbx the extra descriptor is there: the test would notice a leak.
    let mut direct = Command::new("sh");
    direct.args(["-c", script]).current_dir(dir.path());
    let fds = fd_list(&fds_with_extra_fd(&mut direct, &dir));
    assert!(fds.contains(&"7".to_string()), "control: {fds:?}");

    let mut cmd = sbx_run(dir.path(), &["--", "sh", "-c", script]);
    let fds = fd_list(&fds_with_extra_fd(&mut cmd, &dir));
    assert_eq!(fds, ["0", "1", "2"], "descriptors open in the sandbox");
}
