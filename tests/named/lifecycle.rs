//! stop, kill, start, logs, rm.

use super::*;

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
