//! The sandbox's life: our init as PID 1, zombie reaping, signal forwarding, nothing
//! outliving a run (even when the runner is killed with SIGKILL), and many runs in a row
//! and at once leaving nothing behind.

mod common;

use std::path::Path;
use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;

use common::*;

#[test]
fn command_runs_as_pid_2_under_sbx_init() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(dir.path(), &[], "echo $$; cat /proc/1/comm");
    out.assert_success();
    let bin = sbx_bin();
    let name = bin.file_name().unwrap().to_string_lossy();
    // comm is the executable's name, truncated to 15 bytes.
    let comm: String = name.chars().take(15).collect();
    assert_eq!(out.lines(), ["2".to_string(), comm], "{out}");
}

/// Process states (`pid comm state`) from `cat /proc/[0-9]*/stat` output.
fn states(stat_text: &str) -> Vec<(u32, char, String)> {
    stat_text
        .lines()
        .filter_map(|l| {
            let pid = l.split(' ').next()?.parse().ok()?;
            let close = l.rfind(')')?;
            let comm = l[l.find('(')? + 1..close].to_string();
            let state = l[close + 1..].trim_start().chars().next()?;
            Some((pid, state, comm))
        })
        .collect()
}

#[test]
fn orphaned_zombies_are_reaped() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    // A holder process whose child exits first: the child stays a zombie while the holder
    // lives (it never waits), which shows a zombie is visible here. When the holder exits,
    // the zombie is orphaned to init, which must reap it.
    let script = r#"
        zombies() { cat /proc/[0-9]*/stat 2>/dev/null | grep -c ') Z '; }
        sh -c 'sleep 0.2 & exec sleep 3' &
        i=0; while [ "$(zombies)" = 0 ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
        echo phase1; cat /proc/[0-9]*/stat 2>/dev/null
        wait
        (sleep 0.2 &)
        sleep 0.5
        i=0; while [ "$(zombies)" != 0 ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
        echo phase2; cat /proc/[0-9]*/stat 2>/dev/null
    "#;
    let out = sandbox_sh(dir.path(), &[], script);
    out.assert_success();
    let text = out.stdout();
    let (phase1, phase2) = text
        .split_once("phase2\n")
        .unwrap_or_else(|| panic!("{out}"));
    let before = states(phase1);
    assert!(
        before.iter().any(|&(_, s, _)| s == 'Z'),
        "control: a zombie was expected while its parent lived\n{out}"
    );
    let after = states(phase2);
    assert!(!after.is_empty(), "{out}");
    let zombies: Vec<_> = after.iter().filter(|&&(_, s, _)| s == 'Z').collect();
    assert!(
        zombies.is_empty(),
        "zombies left unreaped: {zombies:?}\n{out}"
    );
}

/// A command line for a `sleep 1000` whose argv[0] is `marker`, so /proc finds it.
fn marked_sleep(marker: &str) -> String {
    format!("exec -a {marker} sleep 1000")
}

#[test]
fn background_processes_die_with_the_command() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let marker = unique("bg");
    // The command starts a background sleep, waits for stdin to close, then exits.
    let script = format!(
        "bash -c '{}' </dev/null >/dev/null 2>&1 & echo started; read _; exit 0",
        marked_sleep(&marker)
    );
    let mut cmd = sbx_run(dir.path(), &["--", "sh", "-c", &script]);
    let mut running = spawn_with_stdin(&mut cmd);
    let stdin = running.child.stdin.take().expect("stdin pipe");
    running.wait_for_stdout("started", TIMEOUT);
    // Control: the background process is there, and the scan finds it.
    let sleeper = wait_for_process(&marker, |p| p.argv[0] == marker, TIMEOUT);
    // EOF on stdin: `read` returns and the command exits, leaving the sleep behind.
    drop(stdin);
    let out = running.finish(TIMEOUT);
    out.assert_success();
    assert_no_process_with(&marker, Duration::from_secs(10));
    assert!(!Path::new(&format!("/proc/{}", sleeper.pid)).exists());
}

#[test]
fn killing_the_runner_with_sigkill_leaves_nothing() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new_in(&home());
    let state = HostState::capture();
    let marker = unique("kill9");
    let mut cmd = sbx_run(dir.path(), &["--", "bash", "-c", &marked_sleep(&marker)]);
    let mut running = spawn(&mut cmd, None);
    let sbx_pid = running.pid();
    let sleeper = wait_for_process(&marker, |p| p.argv[0] == marker, TIMEOUT);
    assert_ne!(sleeper.pid, sbx_pid);

    running.signal(Signal::SIGKILL);
    let _ = running.child.wait();
    assert_no_process_with(&marker, Duration::from_secs(10));
    state.assert_nothing_new();
    drop(running);
}

/// Starts a command that traps `sig`, sends `sig` to the runner, expects the trap to run.
fn assert_signal_forwarded(sig: Signal) {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let name = sig.as_str().trim_start_matches("SIG");
    let script =
        format!("trap 'echo got-{name}; exit 3' {name}; echo ready; while :; do sleep 0.1; done");
    let mut cmd = sbx_run(dir.path(), &["--", "sh", "-c", &script]);
    let mut running = spawn(&mut cmd, None);
    running.wait_for_stdout("ready", TIMEOUT);
    running.signal(sig);
    let out = running.finish(TIMEOUT);
    out.assert_code(3);
    assert_eq!(out.lines(), ["ready".to_string(), format!("got-{name}")]);
}

#[test]
fn sigterm_is_forwarded() {
    assert_signal_forwarded(Signal::SIGTERM);
}

#[test]
fn sigint_is_forwarded() {
    assert_signal_forwarded(Signal::SIGINT);
}

#[test]
fn sighup_is_forwarded() {
    assert_signal_forwarded(Signal::SIGHUP);
}

#[test]
fn sigusr1_is_forwarded() {
    assert_signal_forwarded(Signal::SIGUSR1);
}

#[test]
fn sigusr2_is_forwarded() {
    assert_signal_forwarded(Signal::SIGUSR2);
}

#[test]
fn sigquit_is_forwarded() {
    assert_signal_forwarded(Signal::SIGQUIT);
}

#[test]
fn untrapped_sigterm_ends_the_command_with_143() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let marker = unique("term");
    let script = format!("echo ready; {}", marked_sleep(&marker));
    let mut cmd = sbx_run(dir.path(), &["--", "bash", "-c", &script]);
    let mut running = spawn(&mut cmd, None);
    running.wait_for_stdout("ready", TIMEOUT);
    wait_for_process(&marker, |p| p.argv[0] == marker, TIMEOUT);
    running.signal(Signal::SIGTERM);
    running.finish(TIMEOUT).assert_code(128 + 15);
    assert_no_process_with(&marker, Duration::from_secs(10));
}

#[test]
fn fifty_sequential_runs_leave_nothing() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new_in(&home());
    let state = HostState::capture();
    let marker = unique("seq");
    for i in 0..50 {
        let out = run(sbx_run(dir.path(), &["--", "true", &marker]));
        assert_eq!(out.code, 0, "run {i}\n{out}");
    }
    assert_no_process_with(&marker, Duration::from_secs(10));
    state.assert_nothing_new();
}

#[test]
fn twenty_parallel_runs_leave_nothing() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new_in(&home());
    let state = HostState::capture();
    let marker = unique("par");
    let outcomes: Vec<Outcome> = thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let (dir, marker) = (dir.path(), &marker);
                s.spawn(move || {
                    let script = format!("echo run-{i}");
                    let mut cmd = sbx_run(dir, &["--", "sh", "-c", &script, marker]);
                    spawn(&mut cmd, None).finish(Duration::from_secs(120))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, out) in outcomes.iter().enumerate() {
        out.assert_success();
        assert_eq!(out.stdout(), format!("run-{i}\n"), "{out}");
    }
    assert_no_process_with(&marker, Duration::from_secs(10));
    state.assert_nothing_new();
}
