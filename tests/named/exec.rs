//! exec.

use super::*;

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
