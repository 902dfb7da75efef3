//! Named sandboxes: `run --name [-d]`, `ps`, `exec`, `stop`, `kill`, `start`, `logs`, `rm`,
//! `inspect`; `--status-json`, `--env-file` and `--net sandbox:NAME`.
//!
//! Every test keeps its sandboxes in private XDG_DATA_HOME and XDG_RUNTIME_DIR
//! directories, so tests run in parallel without seeing each other's names, and removes
//! whatever it left running when it ends.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;

/// One test's private sandbox store and working directory.
struct Named {
    data: TempDir,
    runtime: TempDir,
    work: TempDir,
}

impl Named {
    fn new() -> Named {
        Named {
            data: TempDir::new(),
            runtime: TempDir::new(),
            work: TempDir::new(),
        }
    }

    /// A store with a busybox rootfs imported as `name`, or None (skipped) without
    /// subordinate ids or a static busybox.
    fn with_image(name: &str) -> Option<Named> {
        if !require_subids() {
            return None;
        }
        if !is_static_elf(Path::new("/bin/busybox")) {
            skip("/bin/busybox is missing or not static (install busybox-static)");
            return None;
        }
        let n = Named::new();
        let mut mk = Command::new("python3");
        mk.arg(data_dir().join("mkimage.py"))
            .args(["rootfs", "img.tar"])
            .current_dir(n.work.path());
        run(mk).assert_success();
        n.sbx(&["image", "import", name, "img.tar"])
            .assert_success();
        Some(n)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = sbx();
        cmd.args(args)
            .current_dir(self.work.path())
            .env("XDG_DATA_HOME", self.data.path())
            .env("XDG_RUNTIME_DIR", self.runtime.path());
        cmd
    }

    fn sbx(&self, args: &[&str]) -> Outcome {
        run(self.cmd(args))
    }

    /// `sbx run --name NAME -d OPTIONS -- CMD...`, which must succeed at once.
    #[track_caller]
    fn detach(&self, name: &str, options: &[&str], command: &[&str]) {
        let mut args = vec!["run", "--name", name, "-d"];
        args.extend_from_slice(options);
        args.push("--");
        args.extend_from_slice(command);
        let out = self.sbx(&args);
        out.assert_success();
        assert_eq!(out.stdout().trim(), name, "run -d prints the name\n{out}");
    }

    fn ps(&self, all: bool) -> Vec<Value> {
        let out = self.sbx(if all {
            &["ps", "-a", "--json"]
        } else {
            &["ps", "--json"]
        });
        out.assert_success();
        match serde_json::from_str(&out.stdout()) {
            Ok(Value::Array(rows)) => rows,
            other => panic!("ps --json is not an array: {other:?}\n{out}"),
        }
    }

    /// The `ps -a --json` row of `name`.
    #[track_caller]
    fn row(&self, name: &str) -> Value {
        self.ps(true)
            .into_iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in `sbx ps -a`"))
    }

    #[track_caller]
    fn inspect(&self, name: &str) -> Value {
        let out = self.sbx(&["inspect", name]);
        out.assert_success();
        serde_json::from_str(&out.stdout()).unwrap_or_else(|e| panic!("inspect JSON: {e}\n{out}"))
    }

    /// `sbx exec NAME -- sh -c SCRIPT`.
    fn exec_sh(&self, name: &str, script: &str) -> Outcome {
        self.sbx(&["exec", name, "--", "sh", "-c", script])
    }

    #[track_caller]
    fn wait_state(&self, name: &str, state: &str) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let row = self.row(name);
            if row["state"] == state {
                return row;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never became {state}: {row}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        // Whatever a failed test left running goes, before its directories do.
        if let Ok(Value::Array(rows)) =
            serde_json::from_slice::<Value>(&run(self.cmd(&["ps", "-a", "--json"])).stdout)
        {
            for row in rows {
                if let Some(name) = row["name"].as_str() {
                    let _ = run(self.cmd(&["rm", "-f", name]));
                }
            }
        }
    }
}

fn marked_sleep(marker: &str) -> String {
    format!("exec -a {marker} sleep 1000")
}

// ---------------------------------------------------------------------------------------
// run -d, ps
// ---------------------------------------------------------------------------------------

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
        .assert_sbx_error(&["db", "already exists", "sbx rm db"]);
    n.sbx(&["run", "--name", "db", "-d", "--", "true"])
        .assert_sbx_error(&["already exists"]);
    for bad in ["a/b", "-x", "..", "has space"] {
        n.sbx(&["run", &format!("--name={bad}"), "--", "true"])
            .assert_sbx_error(&["invalid sandbox name"]);
    }
    n.sbx(&["run", "-d", "--", "true"]).assert_code(125);
    assert_eq!(n.ps(true).len(), 1);
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

// ---------------------------------------------------------------------------------------
// exec
// ---------------------------------------------------------------------------------------

#[test]
fn exec_shares_the_sandbox_and_is_a_child_of_its_init() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.detach(
        "box",
        &["--hostname", "boxhost", "-e", "FROM_RUN=yes"],
        &[
            "sh",
            "-c",
            "echo $$ > /tmp/cmd-pid; echo hi > /tmp/shared; exec sleep 1000",
        ],
    );
    eventually("the command's files", || {
        n.exec_sh("box", "test -s /tmp/cmd-pid").code == 0
    });
    let out = n.exec_sh(
        "box",
        "cat /tmp/shared /tmp/cmd-pid; hostname; echo $FROM_RUN; echo PPid $PPID",
    );
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines[0], "hi", "same /tmp\n{out}");
    assert_eq!(
        lines[1], "2",
        "the command is pid 2 of the same pid namespace\n{out}"
    );
    assert_eq!(lines[2], "boxhost", "same hostname\n{out}");
    assert_eq!(lines[3], "yes", "the run's environment\n{out}");
    // `sh -c` is the exec'd process itself: orphaned at once, it is init's child.
    assert_eq!(lines[4], "PPid 1", "{out}");
}

#[test]
fn exec_gets_the_same_hardening_as_the_command() {
    if !require_sandbox() || !require("seccomp") {
        return;
    }
    let n = Named::new();
    n.detach("hard", &[], &["sleep", "1000"]);
    let status = |pid: &str| -> String {
        let script = format!(
            "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters|Uid|Gid|Groups):' /proc/{pid}/status"
        );
        let out = n.exec_sh("hard", &script);
        out.assert_success();
        out.stdout()
    };
    let of_command = status("2");
    let of_exec = status("self");
    assert_eq!(
        of_command, of_exec,
        "the command and the exec'd process differ"
    );
    assert!(of_exec.contains("CapEff:\t0000000000000000"), "{of_exec}");
    assert!(of_exec.contains("NoNewPrivs:\t1"), "{of_exec}");
    assert!(of_exec.contains("Seccomp:\t2"), "{of_exec}");
    // The seccomp filter too: unshare is refused.
    let out = n.sbx(&["exec", "hard", "--", "unshare", "--user", "true"]);
    assert_ne!(out.code, 0, "unshare worked inside exec\n{out}");
    assert!(out.stderr().contains("Operation not permitted"), "{out}");
    // Landlock (network rules, ABI 4): under --net none TCP is denied outright (EACCES),
    // where a plain process would get "connection refused" from loopback.
    if !landlock::has_abi(4, n.work.path()) {
        return;
    }
    let out = n.exec_sh(
        "hard",
        "python3 -c 'import socket\ntry:\n socket.create_connection((\"127.0.0.1\", 9))\nexcept OSError as e:\n print(e.errno)'",
    );
    out.assert_success();
    assert_eq!(out.stdout().trim(), "13", "Landlock applies to exec\n{out}");
}

#[test]
fn exec_exit_codes_follow_the_command() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.detach("codes", &[], &["sleep", "1000"]);
    n.exec_sh("codes", "exit 7").assert_code(7);
    n.exec_sh("codes", "kill -TERM $$").assert_code(143);
    n.sbx(&["exec", "codes", "--", "/nonexistent-sbx"])
        .assert_code(127);
    n.sbx(&["exec", "codes", "--", "/etc/hostname"])
        .assert_code(126);
    n.sbx(&["exec", "codes", "--", "true"]).assert_success();
}

#[test]
fn exec_options_env_workdir_and_env_file() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.detach(
        "opts",
        &["-e", "A=from-run", "-e", "B=from-run"],
        &["sleep", "1000"],
    );
    let file = n.work.join("vars.env");
    std::fs::write(&file, "# exec's own\nB=from-file\nC=from-file\n").unwrap();
    let out = n.sbx(&[
        "exec",
        "--env-file",
        file.to_str().unwrap(),
        "-e",
        "C=from-e",
        "-w",
        "/tmp",
        "opts",
        "--",
        "sh",
        "-c",
        "echo $A $B $C; pwd",
    ]);
    out.assert_success();
    assert_eq!(out.lines(), ["from-run from-file from-e", "/tmp"], "{out}");
    std::fs::write(&file, "GOOD=1\nnot valid\n").unwrap();
    n.sbx(&[
        "exec",
        "--env-file",
        file.to_str().unwrap(),
        "opts",
        "--",
        "true",
    ])
    .assert_sbx_error(&["line 2", "vars.env"]);
}

#[test]
fn exec_forwards_signals_to_its_process() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.detach("sig", &[], &["sleep", "1000"]);
    let mut running = spawn(
        &mut n.cmd(&[
            "exec",
            "sig",
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done",
        ]),
        None,
    );
    running.wait_for_stdout("ready", TIMEOUT);
    running.signal(Signal::SIGTERM);
    let out = running.finish(TIMEOUT);
    out.assert_code(42);
    assert!(out.stdout().contains("got-term"), "{out}");
    assert_eq!(
        n.row("sig")["state"],
        "running",
        "the sandbox itself is untouched"
    );
}

#[test]
fn exec_with_a_terminal() {
    if !require_sandbox() || !require_tool("script") {
        return;
    }
    let n = Named::new();
    n.detach("tty", &[], &["sleep", "1000"]);
    let line = format!(
        "{} exec -t tty -- sh -c 'tty; test -t 0 && echo stdin-is-a-tty'",
        sbx_bin().display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .current_dir(n.work.path())
        .env("XDG_DATA_HOME", n.data.path())
        .env("XDG_RUNTIME_DIR", n.runtime.path());
    let out = run(cmd);
    out.assert_success();
    assert!(out.stdout().contains("/dev/pts/"), "{out}");
    assert!(out.stdout().contains("stdin-is-a-tty"), "{out}");
    // Without -t, no terminal even when one is there.
    let out = n.exec_sh("tty", "tty || true");
    assert!(out.stdout().contains("not a tty"), "{out}");
}

#[test]
fn exec_into_a_stopped_or_unknown_sandbox_fails_clearly() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.detach("gone", &[], &["sleep", "1000"]);
    n.sbx(&["stop", "-t", "1", "gone"]).assert_success();
    n.sbx(&["exec", "gone", "--", "true"]).assert_sbx_error(&[
        "gone",
        "not running",
        "sbx start gone",
    ]);
    n.sbx(&["exec", "nosuch", "--", "true"])
        .assert_sbx_error(&["no sandbox named nosuch"]);
}

/// Starts a marked exec'd process, ends the sandbox with `sbx ENDER... end`, and expects the
/// process gone and `sbx exec` to report SIGKILL.
fn exec_ends_when_the_sandbox_ends(ender: &[&str]) {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    let marker = unique("execbg");
    n.detach("end", &[], &["sleep", "1000"]);
    let mut running = spawn(
        &mut n.cmd(&[
            "exec",
            "end",
            "--",
            "bash",
            "-c",
            &format!("echo ready; {}", marked_sleep(&marker)),
        ]),
        None,
    );
    running.wait_for_stdout("ready", TIMEOUT);
    wait_for_process(&marker, |p| p.argv[0] == marker, TIMEOUT);
    let mut args = ender.to_vec();
    args.push("end");
    n.sbx(&args).assert_success();
    let out = running.finish(TIMEOUT);
    out.assert_code(137);
    assert_no_process_with(&marker, Duration::from_secs(10));
}

#[test]
fn exec_processes_end_with_the_sandbox() {
    exec_ends_when_the_sandbox_ends(&["kill"]);
}

#[test]
fn rm_f_during_exec_ends_the_execd_process_too() {
    exec_ends_when_the_sandbox_ends(&["rm", "-f"]);
}

/// `exec`s entering while `rm -f` removes the sandbox: each either runs and is killed, or
/// fails clearly; nothing is left running, nothing of the sandbox stays on disk.
#[test]
fn execs_racing_rm_take_turns() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    let marker = unique("race");
    n.detach("race", &[], &["sleep", "1000"]);
    let execs: Vec<Running> = (0..4)
        .map(|_| {
            spawn(
                &mut n.cmd(&["exec", "race", "--", "bash", "-c", &marked_sleep(&marker)]),
                None,
            )
        })
        .collect();
    n.sbx(&["rm", "-f", "race"]).assert_success();
    for out in execs.into_iter().map(|r| r.finish(TIMEOUT)) {
        out.assert_no_panic();
        assert!(
            out.code == 137 || (out.code == 125 && !out.stderr().is_empty()),
            "{out}"
        );
    }
    assert_no_process_with(&marker, Duration::from_secs(10));
    assert!(n.ps(true).is_empty());
    assert!(!n.data.join("sbx/sandboxes/race").exists());
}

// ---------------------------------------------------------------------------------------
// stop, kill, start, logs, rm
// ---------------------------------------------------------------------------------------

#[test]
fn stop_ends_a_cooperative_command_at_once() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.detach(
        "coop",
        &[],
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo up; while :; do sleep 0.05; done",
        ],
    );
    eventually("the trap", || {
        n.sbx(&["logs", "coop"]).stdout().contains("up")
    });
    let started = Instant::now();
    n.sbx(&["stop", "coop"]).assert_success();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let row = n.row("coop");
    assert_eq!(row["state"], "exited");
    assert_eq!(row["exit_code"], 0);
}

#[test]
fn stop_kills_a_command_that_ignores_sigterm_after_the_grace_period() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    let marker = unique("stubborn");
    n.detach(
        "stubborn",
        &[],
        &[
            "bash",
            "-c",
            &format!("trap '' TERM; echo up; exec -a {marker} sleep 1000"),
        ],
    );
    wait_for_process(&marker, |p| p.argv[0] == marker, TIMEOUT);
    let started = Instant::now();
    n.sbx(&["stop", "-t", "2", "stubborn"]).assert_success();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "the grace period was cut short: {took:?}"
    );
    assert!(took < Duration::from_secs(12), "{took:?}");
    assert_no_process_with(&marker, Duration::from_secs(10));
    let row = n.row("stubborn");
    assert_eq!(row["state"], "exited");
    assert_eq!(row["exit_code"], 137, "{row}");
    // Stopping it again is an error that says why.
    n.sbx(&["stop", "stubborn"])
        .assert_sbx_error(&["stubborn", "not running"]);
}

#[test]
fn kill_sends_the_signal_to_the_command() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.detach(
        "k",
        &[],
        &[
            "sh",
            "-c",
            "trap 'echo usr1 >> /tmp/got' USR1; echo ready; while :; do sleep 0.05; done",
        ],
    );
    eventually("the trap", || {
        n.sbx(&["logs", "k"]).stdout().contains("ready")
    });
    n.sbx(&["kill", "-s", "USR1", "k"]).assert_success();
    eventually("USR1 to arrive", || {
        n.exec_sh("k", "cat /tmp/got").stdout().trim() == "usr1"
    });
    n.sbx(&["kill", "-s", "bogus", "k"])
        .assert_sbx_error(&["unknown signal"]);
    n.sbx(&["kill", "k"]).assert_success();
    let row = n.wait_state("k", "exited");
    assert_eq!(row["exit_code"], 137);
}

#[test]
fn logs_keep_stdout_and_stderr_and_follow() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.detach(
        "talk",
        &[],
        &[
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; sleep 1; echo later",
        ],
    );
    let out = n.sbx(&["logs", "-f", "talk"]);
    out.assert_success();
    assert_eq!(out.lines(), ["to-stdout", "to-stderr", "later"], "{out}");
    let out = n.sbx(&["logs", "talk"]);
    assert_eq!(out.lines(), ["to-stdout", "to-stderr", "later"], "{out}");
    n.sbx(&["logs", "nosuch"])
        .assert_sbx_error(&["no sandbox named nosuch"]);
}

#[test]
fn logs_are_capped() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    // About 5 MiB of numbered lines; the log keeps the newest, in two files of 1 MiB.
    n.detach("big", &[], &["sh", "-c", "seq 1 700000; echo the-end"]);
    n.wait_state("big", "exited");
    let dir = n.data.join("sbx/sandboxes/big");
    let size = |f: &str| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
    let total = size("log") + size("log.1");
    assert!(total <= 2 * 1024 * 1024 + 64 * 1024, "log is {total} bytes");
    assert!(total >= 1024 * 1024, "log is {total} bytes");
    let out = n.sbx(&["logs", "big"]);
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines.last().map(String::as_str), Some("the-end"));
    assert_eq!(lines[lines.len() - 2], "700000");
    // The oldest output was dropped, and the log starts with a whole line.
    let first: u32 = lines[0].parse().unwrap();
    assert!(first > 100_000, "{first}");
    assert_eq!(lines[1], (first + 1).to_string());
}

#[test]
fn start_runs_a_stopped_sandbox_again_as_recorded() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    let profile = n.work.join("mine.json");
    std::fs::write(
        &profile,
        r#"{"hostname": "first", "env": {"set": {"V": "one"}}}"#,
    )
    .unwrap();
    let keep = n.work.join("keep");
    std::fs::create_dir(&keep).unwrap();
    n.detach(
        "again",
        &[
            "-p",
            profile.to_str().unwrap(),
            "--bind",
            keep.to_str().unwrap(),
        ],
        &[
            "sh",
            "-c",
            &format!(
                "echo run >> {}/runs; echo $(hostname) $V; exec sleep 1000",
                keep.display()
            ),
        ],
    );
    n.sbx(&["stop", "-t", "1", "again"]).assert_success();
    // The profile file changes: `start` keeps what the sandbox was created with.
    std::fs::write(&profile, r#"{"hostname": "second"}"#).unwrap();
    let out = n.sbx(&["start", "again"]);
    out.assert_success();
    assert_eq!(out.stdout().trim(), "again");
    n.wait_state("again", "running");
    n.sbx(&["start", "again"])
        .assert_sbx_error(&["already running"]);
    let out = n.exec_sh("again", "hostname; echo $V");
    assert_eq!(out.lines(), ["first", "one"], "{out}");
    // The command's first lines come a moment after `start` returns.
    eventually("the second run's output", || {
        std::fs::read_to_string(keep.join("runs")).unwrap() == "run\nrun\n"
            && n.sbx(&["logs", "again"]).lines() == ["first one", "first one"]
    });
    n.sbx(&["start", "nosuch"])
        .assert_sbx_error(&["no sandbox named nosuch"]);
}

#[test]
fn concurrent_starts_run_one_sandbox() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.detach("race", &[], &["sleep", "1000"]);
    n.sbx(&["stop", "-t", "1", "race"]).assert_success();
    let starts: Vec<Running> = (0..4)
        .map(|_| spawn(&mut n.cmd(&["start", "race"]), None))
        .collect();
    let outcomes: Vec<Outcome> = starts.into_iter().map(|r| r.finish(TIMEOUT)).collect();
    let ok = outcomes.iter().filter(|o| o.code == 0).count();
    assert_eq!(ok, 1, "{outcomes:?}");
    for o in outcomes.iter().filter(|o| o.code != 0) {
        o.assert_sbx_error(&["already running"]);
    }
    let running: Vec<Value> = n.ps(false);
    assert_eq!(running.len(), 1);
}

#[test]
fn concurrent_creates_of_one_name_make_one_sandbox() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    let runs: Vec<Running> = (0..4)
        .map(|_| {
            spawn(
                &mut n.cmd(&["run", "--name", "one", "-d", "--", "sleep", "1000"]),
                None,
            )
        })
        .collect();
    let outcomes: Vec<Outcome> = runs.into_iter().map(|r| r.finish(TIMEOUT)).collect();
    assert_eq!(
        outcomes.iter().filter(|o| o.code == 0).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(n.ps(true).len(), 1);
}

#[test]
fn rm_refuses_a_running_sandbox_unless_forced_and_removes_everything() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    let marker = unique("rm");
    n.detach("gone", &[], &["bash", "-c", &marked_sleep(&marker)]);
    wait_for_process(&marker, |p| p.argv[0] == marker, TIMEOUT);
    n.sbx(&["rm", "gone"])
        .assert_sbx_error(&["gone", "running", "rm -f"]);
    assert_eq!(n.row("gone")["state"], "running");
    let out = n.sbx(&["rm", "-f", "gone"]);
    out.assert_success();
    assert_no_process_with(&marker, Duration::from_secs(10));
    assert!(n.ps(true).is_empty());
    assert!(!n.data.join("sbx/sandboxes/gone").exists());
    assert!(!n.runtime.join("sbx/gone").exists());
    n.sbx(&["rm", "gone"])
        .assert_sbx_error(&["no sandbox named gone"]);
    // The name is free again.
    n.detach("gone", &[], &["true"]);
}

#[test]
fn a_killed_supervisor_shows_as_exited_and_leaves_nothing_running() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    let marker = unique("orphan");
    n.detach("k9", &[], &["bash", "-c", &marked_sleep(&marker)]);
    wait_for_process(&marker, |p| p.argv[0] == marker, TIMEOUT);
    let supervisor = n.inspect("k9")["supervisor_pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor), Signal::SIGKILL).unwrap();
    assert_no_process_with(&marker, Duration::from_secs(10));
    let row = n.wait_state("k9", "exited");
    assert!(
        row["exit_code"].is_null(),
        "nobody recorded an exit code: {row}"
    );
    assert!(n.inspect("k9")["note"].as_str().is_some());
    n.sbx(&["exec", "k9", "--", "true"])
        .assert_sbx_error(&["not running"]);
    n.sbx(&["stop", "k9"]).assert_sbx_error(&["not running"]);
    // It can be started again.
    n.sbx(&["start", "k9"]).assert_success();
    assert_eq!(n.row("k9")["state"], "running");
}

#[test]
fn inspect_shows_profile_pids_namespaces_and_mounts() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.detach("look", &["--tmpfs", "/tmp/scratch"], &["sleep", "1000"]);
    let v = n.inspect("look");
    assert_eq!(v["name"], "look");
    assert_eq!(v["state"], "running");
    assert_eq!(v["profile"], "default");
    assert!(v["resolved_profile"].is_object());
    assert_eq!(v["argv"], serde_json::json!(["sleep", "1000"]));
    assert!(v["pid"].as_i64().unwrap() > 0);
    assert!(v["command_pid"].as_i64().unwrap() > 0);
    assert!(v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["type"] == "tmpfs" && m["destination"] == "/tmp/scratch"));
    // The namespace ids are the ones a process inside sees.
    for ns in ["mnt", "net", "pid", "user", "uts", "ipc", "cgroup"] {
        let out = n.sbx(&[
            "exec",
            "look",
            "--",
            "readlink",
            &format!("/proc/self/ns/{ns}"),
        ]);
        out.assert_success();
        let want = format!("{ns}:[{}]", v["namespaces"][ns]);
        assert_eq!(out.stdout().trim(), want, "{ns}");
    }
    n.sbx(&["inspect", "nosuch"])
        .assert_sbx_error(&["no sandbox named nosuch"]);
}

// ---------------------------------------------------------------------------------------
// --status-json, --env-file
// ---------------------------------------------------------------------------------------

#[test]
fn status_json_for_an_unnamed_run() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let status = dir.join("status.json");
    let mut running = spawn_with_stdin(&mut sbx_run(
        dir.path(),
        &[
            "--status-json",
            status.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo up; read x; exit 4",
        ],
    ));
    let stdin = running.child.stdin.take().expect("stdin pipe");
    running.wait_for_stdout("up", TIMEOUT);
    // Written once init reports the command started: maybe just after its first output.
    let deadline = Instant::now() + TIMEOUT;
    while !status.exists() {
        assert!(Instant::now() < deadline, "no status file");
        std::thread::sleep(Duration::from_millis(20));
    }
    let during: Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert_eq!(during["status"], "running");
    assert!(during["pid"].as_i64().unwrap() > 0);
    for ns in ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"] {
        assert!(during["namespaces"][ns].as_u64().unwrap() > 0, "{during}");
    }
    assert!(during.get("tracking").is_none());
    drop(stdin);
    running.finish(TIMEOUT).assert_code(4);
    let after: Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert_eq!(after["status"], "exited");
    assert_eq!(after["exit_code"], 4);
    assert_eq!(after["namespaces"], during["namespaces"]);

    sandbox_sh(
        dir.path(),
        &["--status-json", status.to_str().unwrap()],
        "kill -KILL $$",
    )
    .assert_code(137);
    let killed: Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert_eq!(killed["signal"], 9);
    assert_eq!(killed["exit_code"], 137);
}

#[test]
fn env_file_sets_variables_and_names_bad_lines() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let file = dir.join("app.env");
    std::fs::write(
        &file,
        "# settings\n\nNAME=sbx\nSPACED=two words\nexport QUOTED=\"kept\"\nOVERRIDDEN=file\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let out = sandbox_sh(
        dir.path(),
        &["--env-file", f, "-e", "OVERRIDDEN=cli"],
        "echo $NAME; echo $SPACED; echo $QUOTED; echo $OVERRIDDEN",
    );
    out.assert_success();
    assert_eq!(
        out.lines(),
        ["sbx", "two words", "\"kept\"", "cli"],
        "{out}"
    );

    std::fs::write(&file, "OK=1\n\n2BAD=x\n").unwrap();
    sandbox_sh(dir.path(), &["--env-file", f], "true")
        .assert_sbx_error(&["app.env", "line 3", "2BAD"]);
    sandbox_sh(dir.path(), &["--env-file", "/nonexistent-sbx.env"], "true")
        .assert_sbx_error(&["/nonexistent-sbx.env"]);
}

// ---------------------------------------------------------------------------------------
// --net sandbox:NAME
// ---------------------------------------------------------------------------------------

const SERVER: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", PORT))
s.listen()
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"hello from db\n")
    c.close()
"#;

const CLIENT: &str = r#"
import socket, sys
try:
    c = socket.create_connection(("127.0.0.1", PORT), timeout=5)
    print(c.recv(100).decode().strip())
except OSError as e:
    print("refused", e.errno)
"#;

/// A TCP port nothing listens on on the host's loopback right now: the kernel picks it.
/// (The servers here listen inside a sandbox; the host's side must find nothing there.)
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The namespaces whose ids a process in a sandbox has, as `readlink /proc/PID/ns/NS`.
const NAMESPACES: [&str; 5] = ["pid", "ipc", "uts", "mnt", "net"];

/// `NS ns:[ID]` for each of [`NAMESPACES`] of the process `pid` ("self": this one).
fn namespace_ids(pid: &str) -> Vec<(String, String)> {
    NAMESPACES
        .iter()
        .map(|ns| {
            let link = std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
                .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{ns}: {e}"));
            (ns.to_string(), link.to_string_lossy().into_owned())
        })
        .collect()
}

#[test]
fn a_sandbox_joins_anothers_network() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    let port = free_port().to_string();
    let (server, client) = (SERVER.replace("PORT", &port), CLIENT.replace("PORT", &port));
    // The server's side needs TCP, which Landlock denies under --net none.
    n.detach("db", &["--landlock", "off"], &["python3", "-c", &server]);
    eventually("the server", || {
        n.sbx(&["logs", "db"]).stdout().contains("listening")
    });
    let out = n.sbx(&["run", "--net", "sandbox:db", "--", "python3", "-c", &client]);
    out.assert_success();
    assert_eq!(out.stdout().trim(), "hello from db", "{out}");
    // Control: a sandbox of its own does not reach it, and neither does the host.
    let out = n.sbx(&["run", "--landlock", "off", "--", "python3", "-c", &client]);
    assert_eq!(out.stdout().trim(), "refused 111", "{out}");
    let host = run({
        let mut c = Command::new("python3");
        c.args(["-c", &client]);
        c
    });
    assert_eq!(host.stdout().trim(), "refused 111", "{host}");
    // Its other namespaces are its own: the joiner's ids against the server's (read on
    // the host, through the server's /proc entry) and the host's.
    let db_pid = n.inspect("db")["command_pid"]
        .as_i64()
        .expect("inspect names the command's pid")
        .to_string();
    let db = namespace_ids(&db_pid);
    let host = namespace_ids("self");
    let script = NAMESPACES
        .map(|ns| format!("echo {ns} $(readlink /proc/self/ns/{ns})"))
        .join("; ");
    let out = n.sbx(&["run", "--net", "sandbox:db", "--", "sh", "-c", &script]);
    out.assert_success();
    let joiner: Vec<(String, String)> = out
        .lines()
        .iter()
        .filter_map(|l| l.split_once(' '))
        .map(|(ns, id)| (ns.to_string(), id.to_string()))
        .collect();
    assert_eq!(joiner.len(), NAMESPACES.len(), "{out}");
    for (((ns, mine), (_, of_db)), (_, of_host)) in joiner.iter().zip(&db).zip(&host) {
        assert!(mine.starts_with(&format!("{ns}:[")), "{ns}: {mine}\n{out}");
        if ns == "net" {
            assert_eq!(mine, of_db, "the joiner shares db's network\n{out}");
        } else {
            assert_ne!(
                mine, of_db,
                "the joiner has a {ns} namespace of its own\n{out}"
            );
            assert_ne!(
                mine, of_host,
                "the joiner's {ns} namespace is not the host's\n{out}"
            );
        }
    }
    assert_ne!(db[4].1, host[4].1, "db has a network of its own");
}

#[test]
fn joining_needs_a_running_sandbox_with_a_network_of_its_own() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.sbx(&["run", "--net", "sandbox:nosuch", "--", "true"])
        .assert_sbx_error(&["no sandbox named nosuch"]);
    n.detach("hostnet", &["--net", "host"], &["sleep", "1000"]);
    n.sbx(&["run", "--net", "sandbox:hostnet", "--", "true"])
        .assert_sbx_error(&["host's network", "--net host"]);
    n.detach("stopped", &[], &["sleep", "1000"]);
    n.sbx(&["stop", "-t", "1", "stopped"]).assert_success();
    n.sbx(&["run", "--net", "sandbox:stopped", "--", "true"])
        .assert_sbx_error(&["not running", "sbx start stopped"]);
    n.detach("other", &[], &["sleep", "1000"]);
    n.sbx(&["run", "--net", "sandbox:other", "--uid", "0", "--", "true"])
        .assert_sbx_error(&["user namespace", "--uid"]);
    n.sbx(&[
        "run",
        "--net",
        "sandbox:other",
        "--publish",
        "8080:80",
        "--",
        "true",
    ])
    .assert_sbx_error(&["--publish"]);
}

#[test]
fn exec_into_a_sandbox_that_joined_another() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.detach("a", &["--hostname", "alpha"], &["sleep", "1000"]);
    n.detach(
        "b",
        &["--net", "sandbox:a", "--hostname", "beta"],
        &["sleep", "1000"],
    );
    let net_of = |name: &str| n.inspect(name)["namespaces"]["net"].clone();
    assert_eq!(net_of("a"), net_of("b"));
    let user_of = |name: &str| n.inspect(name)["namespaces"]["user"].clone();
    assert_eq!(user_of("a"), user_of("b"));
    let mnt_of = |name: &str| n.inspect(name)["namespaces"]["mnt"].clone();
    assert_ne!(mnt_of("a"), mnt_of("b"));
    let out = n.exec_sh("b", "hostname");
    assert_eq!(out.stdout().trim(), "beta", "{out}");
}

#[track_caller]
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn require_tool(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(tool).exists()))
        .unwrap_or(false);
    found || skip(&format!("{tool} is not installed"))
}

// ---------------------------------------------------------------------------------------
// Two users
// ---------------------------------------------------------------------------------------

/// `sbx ARGS` as `user`, in that user's home.
fn sbx_as(user: &str, env: &[(&str, &Path)], args: &[&str]) -> Outcome {
    as_user(user, None, env, &sbx_bin(), args)
}

/// Run by ci/test.sh as root, which acts as both test users with runuser.
#[test]
fn crossuser_sandboxes_are_private_to_their_user() {
    if uid() != 0 {
        skip("needs root, to act as two users (ci/test.sh runs it as root)");
        return;
    }
    let owner = std::env::var("SBX_TEST_USER").unwrap_or_else(|_| "sbxtest".into());
    let other = std::env::var("SBX_TEST_NOSUB_USER").unwrap_or_else(|_| "sbxnosub".into());
    let name = format!("priv{}", std::process::id());
    sbx_as(
        &owner,
        &[],
        &["run", "--name", &name, "-d", "--", "sleep", "1000"],
    )
    .assert_success();
    let info: Value = serde_json::from_str(&sbx_as(&owner, &[], &["inspect", &name]).stdout())
        .expect("inspect JSON");
    let owner_data = info["data_dir"].as_str().unwrap().to_string();
    let data_home = owner_data.trim_end_matches(&format!("/sbx/sandboxes/{name}"));

    // The other user does not see it, cannot read its store, and cannot enter it.
    let listed = sbx_as(&other, &[], &["ps", "-a"]);
    listed.assert_success();
    assert!(!listed.stdout().contains(&name), "{listed}");
    sbx_as(
        &other,
        &[("XDG_DATA_HOME", Path::new(data_home))],
        &["exec", &name, "--", "true"],
    )
    .assert_code(125);
    sbx_as(
        &other,
        &[("XDG_DATA_HOME", Path::new(data_home))],
        &["stop", &name],
    )
    .assert_code(125);
    let pid = info["command_pid"].as_i64().unwrap().to_string();
    let setns = format!(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nfd = os.pidfd_open({pid})\n\
         print(libc.setns(fd, 0x10000000 | 0x20000), ctypes.get_errno())"
    );
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", &other, "--", "python3", "-c", &setns]);
    let out = run(cmd);
    assert_eq!(out.stdout().trim(), "-1 1", "EPERM expected\n{out}");
    // Its owner still can.
    sbx_as(&owner, &[], &["exec", &name, "--", "true"]).assert_success();
    sbx_as(&owner, &[], &["rm", "-f", &name]).assert_success();
}

/// Connects to the SOCK_SEQPACKET socket argv[1] and says what init does with the
/// connection: `closed` (dropped at once), `kept` (open, waiting for a request) or
/// `error ERRNO` (no connection at all).
const CONTROL_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("error", e.errno)
    sys.exit(0)
s.settimeout(2)
try:
    print("closed" if s.recv(4096) == b"" else "data")
except socket.timeout:
    print("kept")
except OSError as e:
    print("closed", e.errno)
"#;

/// Run by ci/test.sh as root. The control socket sits in a private directory, which is the
/// first layer; init's check of the peer's uid is the second. Root opens the first (the
/// directories searchable, the socket writable by all) to show the second alone keeps the
/// other user out, while the owner's connection through the same path is served.
#[test]
fn crossuser_init_serves_only_its_own_user_on_the_control_socket() {
    if uid() != 0 {
        skip("needs root, to act as two users (ci/test.sh runs it as root)");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let owner = std::env::var("SBX_TEST_USER").unwrap_or_else(|_| "sbxtest".into());
    let other = std::env::var("SBX_TEST_NOSUB_USER").unwrap_or_else(|_| "sbxnosub".into());
    let pw = nix::unistd::User::from_name(&owner)
        .ok()
        .flatten()
        .expect("the test user");
    // The owner's sandbox state in directories of this test's own.
    let base = TempDir::new();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o711)).unwrap();
    let (data, runtime) = (base.join("data"), base.join("runtime"));
    for dir in [&data, &runtime] {
        fs::create_dir(dir).unwrap();
        nix::unistd::chown(dir, Some(pw.uid), Some(pw.gid)).unwrap();
    }
    let env = [
        ("XDG_DATA_HOME", data.as_path()),
        ("XDG_RUNTIME_DIR", runtime.as_path()),
    ];
    let name = format!("ctl{}", std::process::id());
    sbx_as(
        &owner,
        &env,
        &["run", "--name", &name, "-d", "--", "sleep", "1000"],
    )
    .assert_success();
    struct Remove<'a>(&'a str, [(&'a str, &'a Path); 2], String);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = sbx_as(self.0, &self.1, &["rm", "-f", &self.2]);
        }
    }
    let _remove = Remove(&owner, env, name.clone());
    let info: Value = serde_json::from_str(&sbx_as(&owner, &env, &["inspect", &name]).stdout())
        .expect("inspect JSON");
    let dir = Path::new(info["runtime_dir"].as_str().expect("runtime_dir")).to_path_buf();
    let socket = dir.join("ctl.sock");
    assert!(socket.exists(), "no control socket at {}", socket.display());
    // Open the first layer: every directory from the runtime dir down searchable, the
    // socket writable by anyone.
    let mut at = dir.clone();
    while at.starts_with(&runtime) {
        let mode = fs::metadata(&at).unwrap().permissions().mode();
        fs::set_permissions(&at, fs::Permissions::from_mode(mode | 0o011)).unwrap();
        if !at.pop() {
            break;
        }
    }
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o777)).unwrap();
    let client = |user: &str| {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", user, "--", "python3", "-c", CONTROL_CLIENT])
            .arg(&socket)
            .current_dir("/");
        let out = run(cmd);
        out.assert_success();
        out.stdout().trim().to_string()
    };
    let of_other = client(&other);
    assert!(
        of_other == "closed" || of_other.starts_with("closed "),
        "{other} got a connection init kept: {of_other}"
    );
    // Control: the owner, through the same path, is served.
    assert_eq!(client(&owner), "kept", "the owner's connection");
    // And the sandbox still works for its owner.
    sbx_as(&owner, &env, &["exec", &name, "--", "true"]).assert_success();
}

#[test]
fn start_attached_runs_in_the_foreground_with_its_exit_code() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.sbx(&[
        "run",
        "--name",
        "fg2",
        "--",
        "sh",
        "-c",
        "echo hello; exit 5",
    ])
    .assert_code(5);
    let out = n.sbx(&["start", "-a", "fg2"]);
    out.assert_code(5);
    assert_eq!(out.stdout().trim(), "hello", "{out}");
    assert_eq!(n.row("fg2")["exit_code"], 5);
}

#[test]
fn a_sandbox_cannot_edit_its_own_record() {
    if !require_sandbox() {
        return;
    }
    // The store lies inside the working directory, which the sandbox may write.
    let n = Named::new();
    let data = n.work.join("data");
    let runtime = n.work.join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    let sbx_here = |args: &[&str]| {
        let mut cmd = n.cmd(args);
        cmd.env("XDG_DATA_HOME", &data)
            .env("XDG_RUNTIME_DIR", &runtime);
        run(cmd)
    };
    let tamper = "echo '{}' > data/sbx/sandboxes/rec/record.json || echo no-record; \
                  echo x > run/sbx/rec/state.json || echo no-state; \
                  mv data/sbx data/sbx2 || echo no-move; \
                  touch data/other && echo work-writable";
    let out = sbx_here(&["run", "--name", "rec", "--", "sh", "-c", tamper]);
    out.assert_success();
    assert_eq!(
        out.lines(),
        ["no-record", "no-state", "no-move", "work-writable"],
        "{out}"
    );
    let record = std::fs::read_to_string(data.join("sbx/sandboxes/rec/record.json")).unwrap();
    assert!(record.contains("\"name\": \"rec\""), "{record}");
    sbx_here(&["rm", "rec"]).assert_success();
}

// ---------------------------------------------------------------------------------------
// On an image: the writable layer is kept until rm
// ---------------------------------------------------------------------------------------

#[test]
fn a_named_sandbox_on_an_image_keeps_its_writable_layer_until_rm() {
    let Some(n) = Named::with_image("dev") else {
        return;
    };

    n.detach(
        "shell",
        &["--image", "dev", "--uid", "0"],
        &["sleep", "1000"],
    );
    n.exec_sh(
        "shell",
        "echo installed > /opt-tool && chown 1000:1000 /opt-tool && rm /bin/ls",
    )
    .assert_success();
    n.sbx(&["stop", "-t", "1", "shell"]).assert_success();
    n.sbx(&["start", "shell"]).assert_success();
    let out = n.exec_sh(
        "shell",
        "cat /opt-tool; stat -c %u /opt-tool; test -e /bin/ls || echo ls-gone",
    );
    assert_eq!(out.lines(), ["installed", "1000", "ls-gone"], "{out}");
    // A sandbox of its own on the same image does not see those changes.
    let out = n.sbx(&[
        "run",
        "--image",
        "dev",
        "--",
        "sh",
        "-c",
        "test -e /opt-tool || echo clean",
    ]);
    assert_eq!(out.stdout().trim(), "clean", "{out}");

    let layer = n.data.join("sbx/sandboxes/shell/layer");
    assert!(
        layer.join("upper").is_dir(),
        "the layer lives with the record"
    );
    n.sbx(&["rm", "-f", "shell"]).assert_success();
    assert!(
        !n.data.join("sbx/sandboxes/shell").exists(),
        "rm leaves nothing"
    );
    // The image itself is untouched.
    n.sbx(&["run", "--image", "dev", "--", "test", "-e", "/bin/ls"])
        .assert_success();
    // Its layers hold files of subordinate ids, which only sbx can remove.
    n.sbx(&["image", "rm", "dev"]).assert_success();
}

#[test]
fn sandboxes_on_images_share_a_network() {
    let Some(n) = Named::with_image("app") else {
        return;
    };
    // busybox nc serving on the first sandbox's loopback (TCP needs Landlock off there).
    let port = free_port();
    n.detach(
        "db",
        &["--image", "app", "--landlock", "off"],
        &[
            "sh",
            "-c",
            &format!("echo up; while :; do echo hello-from-db | nc -l -p {port}; done"),
        ],
    );
    eventually("the server", || {
        n.sbx(&["logs", "db"]).stdout().contains("up")
    });
    let fetch = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do nc 127.0.0.1 {port} </dev/null && exit; sleep 0.2; done"
    );
    let out = n.sbx(&[
        "run",
        "--image",
        "app",
        "--net",
        "sandbox:db",
        "--",
        "sh",
        "-c",
        &fetch,
    ]);
    out.assert_success();
    assert_eq!(out.stdout().trim(), "hello-from-db", "{out}");
    // A sandbox whose user namespace does not have you at 0 cannot host an image root.
    n.detach("plain", &[], &["sleep", "1000"]);
    n.sbx(&[
        "run",
        "--image",
        "app",
        "--net",
        "sandbox:plain",
        "--",
        "true",
    ])
    .assert_sbx_error(&["uid 0", "--uid 0"]);
    n.sbx(&["rm", "-f", "db", "plain"]).assert_success();
    n.sbx(&["image", "rm", "app"]).assert_success();
}
