//! Terminals: when stdin is a terminal the command gets a pseudo-terminal of its own
//! (util-linux `script` plays the caller's terminal here); otherwise it runs with the
//! caller's pipes in a new session and cannot push input into the caller's terminal.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::*;

const SCRIPT: &str = "/usr/bin/script";
const PYTHON: &str = "/usr/bin/python3";

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs the shell command line `line` on a fresh pty (`script -qec LINE /dev/null`), with
/// `input` typed on it. Returns script's outcome: its exit code is the command's.
///
/// Script's stdin stays open until the command is done: at EOF script would type the
/// terminal's EOF character into the session, which is not what a user at a terminal does.
fn on_a_terminal(dir: &TempDir, line: &str, input: &[u8]) -> Option<Outcome> {
    if !Path::new(SCRIPT).exists() {
        skip(&format!("{SCRIPT} is missing (install util-linux)"));
        return None;
    }
    let mut cmd = Command::new(SCRIPT);
    cmd.args(["-qec", line, "/dev/null"])
        .current_dir(dir.path())
        .env("SHELL", "/bin/sh");
    let mut running = spawn_with_stdin(&mut cmd);
    let mut stdin = running.child.stdin.take().expect("stdin pipe");
    stdin.write_all(input).expect("write to script's stdin");
    let out = running.finish(TIMEOUT);
    drop(stdin);
    Some(out)
}

fn sbx_line(args: &str) -> String {
    format!("{} run {args}", quote(sbx_bin().to_str().unwrap()))
}

#[test]
fn command_gets_its_own_terminal_when_stdin_is_one() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let inner = "tty; test -t 0 && echo in-is-a-tty; test -t 1 && echo out-is-a-tty; \
                 echo pts: $(ls /dev/pts); exit 5";
    let line = sbx_line(&format!("-- sh -c {}", quote(inner)));
    let Some(out) = on_a_terminal(&dir, &line, b"") else {
        return;
    };
    out.assert_no_panic();
    let lines = out.lines();
    let tty = lines
        .iter()
        .find(|l| l.starts_with("/dev/"))
        .unwrap_or_else(|| panic!("no tty name printed\n{out}"));
    assert!(tty.starts_with("/dev/pts/"), "{out}");
    assert!(lines.iter().any(|l| l == "in-is-a-tty"), "{out}");
    assert!(lines.iter().any(|l| l == "out-is-a-tty"), "{out}");
    // The terminal belongs to the sandbox's own devpts: it is the only one listed there.
    let pts = lines
        .iter()
        .find_map(|l| l.strip_prefix("pts: "))
        .unwrap_or_else(|| panic!("{out}"));
    let mut listed: Vec<&str> = pts.split_whitespace().collect();
    listed.sort();
    let own = tty.trim_start_matches("/dev/pts/");
    assert_eq!(listed, [own, "ptmx"], "{out}");
    assert_eq!(
        out.code, 5,
        "the exit code passes through the pty session\n{out}"
    );
}

#[test]
fn terminal_input_reaches_the_command() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let inner = "read line; echo got-$line";
    let line = sbx_line(&format!("-- sh -c {}", quote(inner)));
    let Some(out) = on_a_terminal(&dir, &line, b"hello\n") else {
        return;
    };
    out.assert_success();
    assert!(out.lines().iter().any(|l| l == "got-hello"), "{out}");
}

#[test]
fn terminal_settings_are_restored_after_a_pty_session() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let line = format!(
        "stty -g; {} >/dev/null; stty -g",
        sbx_line("-- sh -c 'stty raw -echo; echo done'")
    );
    let Some(out) = on_a_terminal(&dir, &line, b"") else {
        return;
    };
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        lines[0], lines[1],
        "the caller's terminal settings changed\n{out}"
    );
}

#[test]
fn piped_stdin_gets_no_terminal() {
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
                "test -t 0 && echo in-is-a-tty || echo in-not-a-tty",
            ],
        ),
        b"",
    );
    out.assert_success();
    assert_eq!(out.lines(), ["in-not-a-tty"]);
}

const TIOCSTI_PY: &str = r#"
import fcntl, termios
try:
    fcntl.ioctl(1, termios.TIOCSTI, b"x")
    print("injected")
except OSError as e:
    print("tiocsti-failed", e.errno)
"#;

#[test]
fn tiocsti_cannot_reach_the_callers_terminal() {
    if !require_sandbox() {
        return;
    }
    if !Path::new(PYTHON).exists() {
        skip(&format!(
            "{PYTHON} is missing (ci/setup-host.sh installs python3)"
        ));
        return;
    }
    let dir = TempDir::new();
    let program = dir.join("tiocsti.py");
    fs::write(&program, TIOCSTI_PY).unwrap();
    let program = quote(program.to_str().unwrap());
    // Stdin a pipe, stdout the caller's terminal (script's pty): no pty of the sandbox's
    // own, so fd 1 inside is the caller's terminal itself.
    let legacy = fs::read_to_string("/proc/sys/dev/tty/legacy_tiocsti")
        .map(|v| v.trim() != "0")
        .unwrap_or(true);
    if legacy {
        // Control: without sbx, the same program can push input into the terminal.
        let Some(out) = on_a_terminal(&dir, &format!("{PYTHON} {program} </dev/null"), b"") else {
            return;
        };
        assert!(out.stdout().contains("injected"), "control\n{out}");
    } else {
        eprintln!("note: dev.tty.legacy_tiocsti=0 here: the kernel refuses TIOCSTI anyway");
    }
    let line = format!("{} </dev/null", sbx_line(&format!("-- {PYTHON} {program}")));
    let Some(out) = on_a_terminal(&dir, &line, b"") else {
        return;
    };
    out.assert_success();
    let text = out.stdout();
    assert!(!text.contains("injected"), "{out}");
    let errno = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("tiocsti-failed "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        errno == libc::EPERM.to_string() || errno == libc::EIO.to_string(),
        "TIOCSTI fails with EPERM or EIO, not errno {errno}\n{out}"
    );
}
