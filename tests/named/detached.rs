//! run -d, ps.

use super::*;

#[test]
fn detached_run_returns_at_once_and_is_listed() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    let marker = unique("detached");
    let started = Instant::now();
    n.detach("web", &[], &["bash", "-c", &marked_sleep(&marker)]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "run -d waited for the command"
    );
    let sleeper = wait_for_process(&marker, |p| p.argv[0] == marker, TIMEOUT);

    let rows = n.ps(false);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["name"], "web");
    assert_eq!(row["state"], "running");
    assert_eq!(row["profile"], "default");
    assert!(row["command"].as_str().unwrap().contains(&marker));
    assert!(row["started"].as_u64().unwrap() > 0);
    assert!(row["exit_code"].is_null());
    // The pid is the sandbox's init, the command's parent on the host.
    let init = row["pid"].as_i64().unwrap() as i32;
    let ppid_of = |pid: i32| -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(ppid_of(sleeper.pid), init);

    // The table form names the same.
    let out = n.sbx(&["ps"]);
    out.assert_success();
    let lines = out.lines();
    assert!(lines[0].starts_with("NAME"), "{out}");
    assert!(
        lines[1].starts_with("web ") && lines[1].contains("running"),
        "{out}"
    );

    n.sbx(&["stop", "-t", "1", "web"]).assert_success();
    assert_no_process_with(&marker, Duration::from_secs(10));
    assert!(
        n.ps(false).is_empty(),
        "ps without -a lists only running ones"
    );
    let row = n.row("web");
    assert_eq!(row["state"], "exited");
    assert!(row["pid"].is_null());
}

#[test]
fn detached_run_does_not_hold_the_callers_output_open() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    // `finish` waits for stdout and stderr to close: a supervisor keeping them would hang.
    let out = run(n.cmd(&["run", "--name", "x", "-d", "--", "sleep", "1000"]));
    out.assert_success();
    assert_eq!(n.row("x")["state"], "running");
}

#[test]
fn detached_sandbox_survives_its_terminal_closing() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    let marker = unique("hangup");
    // sbx runs on a pty that is then hung up, as when a terminal window closes.
    let script = r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
while True:
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
os.waitpid(pid, 0)
os.close(fd)
print(out.decode().strip())
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script])
        .arg(sbx_bin())
        .args([
            "run",
            "--name",
            "term",
            "-d",
            "--",
            "bash",
            "-c",
            &marked_sleep(&marker),
        ])
        .current_dir(n.work.path())
        .env("XDG_DATA_HOME", n.data.path())
        .env("XDG_RUNTIME_DIR", n.runtime.path());
    let out = run(cmd);
    out.assert_success();
    assert!(out.stdout().contains("term"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(n.row("term")["state"], "running");
    assert!(!processes_with(&marker).is_empty());
}

#[test]
fn names_are_unique_and_validated() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.detach("db", &[], &["sleep", "1000"]);
    n.sbx(&["run", "--name", "db", "--", "true"])
        .assert_sbx_error(&["db", "already exists", "sbx exec db", "sbx rm -f db"]);
    n.sbx(&["run", "--name", "db", "-d", "--", "true"])
        .assert_sbx_error(&["already exists"]);
    for bad in ["a/b", "-x", "..", "has space"] {
        n.sbx(&["run", &format!("--name={bad}"), "--", "true"])
            .assert_sbx_error(&["invalid sandbox name"]);
    }
    // -d without --name makes up a name, as podman does.
    n.sbx(&["run", "-d", "--", "true"]).assert_success();
    assert_eq!(n.ps(true).len(), 2);
}

#[test]
fn names_are_at_most_64_characters() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    let longest = "n".repeat(64);
    let too_long = "n".repeat(65);
    n.sbx(&["run", "--name", &too_long, "--", "true"])
        .assert_sbx_error(&["invalid sandbox name", "at most 64 characters"]);
    assert!(n.ps(true).is_empty(), "nothing recorded for a refused name");
    n.sbx(&["run", "--name", &longest, "--", "true"])
        .assert_success();
    assert_eq!(n.row(&longest)["state"], "exited");
}

#[test]
fn exec_will_not_follow_the_command_into_nested_namespaces() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    // Control: with --allow-nested and a command that stays put, exec works.
    n.detach("flat", &["--allow-nested"], &["sleep", "1000"]);
    let out = n.exec_sh("flat", "echo entered");
    out.assert_success();
    assert_eq!(out.lines(), ["entered"], "{out}");
    // The command moves into a user and mount namespace of its own.
    n.detach(
        "nested",
        &["--allow-nested"],
        &["unshare", "--user", "--mount", "sleep", "1000"],
    );
    let info = n.inspect("nested");
    let pid = info["command_pid"].as_i64().expect("command_pid");
    let recorded = info["namespaces"]["user"]
        .as_u64()
        .expect("the recorded user namespace");
    let user_ns = || {
        std::fs::metadata(format!("/proc/{pid}/ns/user")).map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino()
        })
    };
    eventually("the command's unshare", || {
        user_ns().is_ok_and(|ino| ino != recorded)
    });
    let out = n.exec_sh("nested", "echo entered");
    out.assert_sbx_error(&["has left the sandbox's", "will not enter a nested one"]);
    assert!(!out.stdout().contains("entered"), "{out}");
}

#[test]
fn a_first_run_that_fails_leaves_nothing() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    // Fails in the plan, in the sandbox's setup, and at exec.
    n.sbx(&[
        "run",
        "--name",
        "a",
        "--bind",
        "/nonexistent-sbx",
        "--",
        "true",
    ])
    .assert_sbx_error(&["/nonexistent-sbx"]);
    n.sbx(&["run", "--name", "b", "-w", "/nonexistent-sbx", "--", "true"])
        .assert_sbx_error(&["/nonexistent-sbx"]);
    n.sbx(&[
        "run",
        "--name",
        "c",
        "-d",
        "-w",
        "/nonexistent-sbx",
        "--",
        "true",
    ])
    .assert_sbx_error(&["/nonexistent-sbx"]);
    n.sbx(&["run", "--name", "d", "--", "/nonexistent-sbx"])
        .assert_code(127);
    assert!(n.ps(true).is_empty(), "{:?}", n.ps(true));
    let leftovers: Vec<_> = std::fs::read_dir(n.data.join("sbx/sandboxes"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.iter().all(|f| f == ".lock"),
        "left in the store: {leftovers:?}"
    );
}

#[test]
fn a_foreground_named_run_records_its_exit_code() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.sbx(&["run", "--name", "fg", "--", "sh", "-c", "echo out; exit 3"])
        .assert_code(3);
    let row = n.row("fg");
    assert_eq!(row["state"], "exited");
    assert_eq!(row["exit_code"], 3);
    n.sbx(&["logs", "fg"])
        .assert_sbx_error(&["foreground", "sbx run -d"]);
}

#[test]
fn state_lives_in_the_runtime_dir_and_is_private() {
    if !require_sandbox() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let n = Named::new();
    n.detach("p", &[], &["sleep", "1000"]);
    for dir in [
        n.runtime.join("sbx"),
        n.runtime.join("sbx/p"),
        n.data.join("sbx/sandboxes/p"),
    ] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
    }
    let state: Value =
        serde_json::from_slice(&std::fs::read(n.runtime.join("sbx/p/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["status"], "running");
    // Without XDG_RUNTIME_DIR, a directory under the data dir takes its place.
    let mut cmd = n.cmd(&["run", "--name", "q", "-d", "--", "sleep", "1000"]);
    cmd.env_remove("XDG_RUNTIME_DIR");
    run(cmd).assert_success();
    assert!(n.data.join("sbx/run/q/state.json").exists());
    let mut cmd = n.cmd(&["rm", "-f", "q"]);
    cmd.env_remove("XDG_RUNTIME_DIR");
    run(cmd).assert_success();
}

/// `run -d` of a command that fails at once says so and exits with its status, also when
/// the supervisor has slirp4netns to stop before it records that status.
#[test]
fn detached_command_that_fails_at_once_is_reported() {
    if !require_sandbox() {
        return;
    }
    let slirp = require("slirp4netns") && require("dev_net_tun");
    let n = Named::new();
    let mut cases = vec![("plain", vec![])];
    if slirp {
        cases.push(("slirp", vec!["--net", "slirp4netns"]));
    }
    for (name, options) in cases {
        let mut args = vec!["run", "--name", name, "-d"];
        args.extend_from_slice(&options);
        args.extend_from_slice(&["--", "sh", "-c", "echo cannot bind >&2; exit 3"]);
        let out = n.sbx(&args);
        out.assert_code(3);
        assert_eq!(out.stdout().trim(), name, "run -d prints the name\n{out}");
        assert!(
            out.stderr().contains(&format!(
                "the command ended at once with status 3; `sbx logs {name}`"
            )),
            "run -d says the command failed\n{out}"
        );
        let logs = n.sbx(&["logs", name]);
        logs.assert_success();
        assert!(logs.stdout().contains("cannot bind"), "{logs}");
    }
}

/// `run -d` of a command that cannot start at all says why and exits as podman does (127
/// not found, 126 not executable), as the same run in the foreground does; the sandbox is
/// not kept (there is nothing to restart), and what it printed reaches the caller escaped.
#[test]
fn detached_command_that_cannot_start_says_why() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    for (name, command, code, why) in [
        (
            "nf",
            "no-such-command-here",
            127,
            "no-such-command-here: command not found",
        ),
        ("nx", "/etc/passwd", 126, "/etc/passwd: cannot execute"),
    ] {
        let out = n.sbx(&["run", "--name", name, "-d", "--", command]);
        out.assert_code(code);
        assert!(out.stderr().contains(why), "run -d says why\n{out}");
        assert!(
            !out.stderr().contains("sbx logs"),
            "no pointer to a log that is gone\n{out}"
        );
        let ps = n.sbx(&["ps", "-a"]);
        assert!(
            !ps.stdout().contains(name),
            "a sandbox that never started is not kept\n{ps}"
        );
        let fg = n.sbx(&["run", "--", command]);
        fg.assert_code(code);
    }
}
