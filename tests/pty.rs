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

fn require_python() -> bool {
    Path::new(PYTHON).exists()
        || skip(&format!(
            "{PYTHON} is missing (ci/setup-host.sh installs python3)"
        ))
}

/// Whether this kernel still lets a process push input into its controlling terminal
/// (`dev.tty.legacy_tiocsti`, 1 unless the host turned it off). With 0 the kernel refuses
/// TIOCSTI to anyone without CAP_SYS_ADMIN (EIO), and only sbx's own layers tell apart.
fn legacy_tiocsti() -> bool {
    fs::read_to_string("/proc/sys/dev/tty/legacy_tiocsti")
        .map(|v| v.trim() != "0")
        .unwrap_or(true)
}

/// The TIOCSTI probe's errno (`None` when it injected).
#[track_caller]
fn tiocsti_result(out: &Outcome) -> Option<i32> {
    let text = out.stdout();
    if text.contains("injected") {
        return None;
    }
    let errno = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("tiocsti-failed "))
        .unwrap_or_else(|| panic!("the probe printed no result\n{out}"));
    Some(errno.parse().unwrap())
}

/// `SESSION TTY_NR` (fields 6 and 7 of /proc/self/stat) as `cut` sees them.
const SESSION_AND_TTY: &str = "cut -d' ' -f6,7 /proc/self/stat";

#[test]
fn tiocsti_cannot_reach_the_callers_terminal() {
    if !require_sandbox() || !require_python() {
        return;
    }
    let dir = TempDir::new();
    let program = dir.join("tiocsti.py");
    fs::write(&program, TIOCSTI_PY).unwrap();
    let program = quote(program.to_str().unwrap());
    let legacy = legacy_tiocsti();
    // Stdin a pipe, stdout the caller's terminal (script's pty): no pty of the sandbox's
    // own, and the terminal reaches the command only through a pipe sbx relays.
    let through_sbx = |options: &str| {
        let line = format!(
            "{} </dev/null",
            sbx_line(&format!("{options} -- {PYTHON} {program}"))
        );
        let out = on_a_terminal(&dir, &line, b"").expect("script is there");
        out.assert_success();
        tiocsti_result(&out)
    };
    if legacy {
        // Control: without sbx, the same program can push input into the terminal.
        let Some(out) = on_a_terminal(&dir, &format!("{PYTHON} {program} </dev/null"), b"") else {
            return;
        };
        assert_eq!(tiocsti_result(&out), None, "control\n{out}");
    } else {
        eprintln!(
            "note {}: dev.tty.legacy_tiocsti=0 here: the kernel refuses TIOCSTI (EIO) by itself, \
             so sbx's own layers are checked by what they do",
            test_name()
        );
    }
    let eperm_or_eio = [libc::EPERM, libc::EIO];
    match through_sbx("") {
        Some(errno) => assert!(eperm_or_eio.contains(&errno), "errno {errno}"),
        None => panic!("TIOCSTI reached the caller's terminal through sbx"),
    }
    // With the filter off: the caller's terminal never enters the sandbox (fd 1 is a pipe
    // sbx relays), so there is no terminal to push input into at all.
    assert_eq!(
        through_sbx("--seccomp off"),
        Some(libc::ENOTTY),
        "TIOCSTI on fd 1 with --seccomp off"
    );
    // What makes it so: outside, the caller's terminal is the controlling one (tty_nr not
    // 0); inside, there is none (tty_nr 0), and the session is one whose leader is inside
    // the sandbox (a session led from outside the pid namespace reads as 0).
    let line = format!(
        "{SESSION_AND_TTY}; {} </dev/null",
        sbx_line(&format!("-- {SESSION_AND_TTY}"))
    );
    let out = on_a_terminal(&dir, &line, b"").expect("script is there");
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines.len(), 2, "{out}");
    let fields = |l: &str| -> (i64, i64) {
        let (sid, tty) = l.split_once(' ').unwrap_or_else(|| panic!("{out}"));
        (sid.parse().unwrap(), tty.parse().unwrap())
    };
    let (outside_sid, outside_tty) = fields(&lines[0]);
    let (inside_sid, inside_tty) = fields(&lines[1]);
    assert!(outside_sid > 0 && outside_tty != 0, "control: {out}");
    assert_eq!(inside_tty, 0, "no controlling terminal inside\n{out}");
    assert_ne!(inside_sid, 0, "a session of the sandbox's own\n{out}");
}

/// The seccomp layer alone: on a terminal the command gets a pty of the sandbox's own,
/// which is its controlling terminal, so the kernel would let it push input there; the
/// filter denies TIOCSTI whatever the terminal (EPERM, sbx's errno, where the kernel
/// would say EIO or let it through).
#[test]
fn seccomp_denies_tiocsti_even_on_the_commands_own_terminal() {
    if !require_sandbox() || !require("seccomp") || !require_python() {
        return;
    }
    let dir = TempDir::new();
    let program = dir.join("tiocsti.py");
    fs::write(&program, TIOCSTI_PY).unwrap();
    let program = quote(program.to_str().unwrap());
    let run_on_own_pty = |options: &str| {
        let line = sbx_line(&format!("{options} -- {PYTHON} {program}"));
        let out = on_a_terminal(&dir, &line, b"").expect("script is there");
        out.assert_success();
        (tiocsti_result(&out), out)
    };
    let (result, out) = run_on_own_pty("");
    assert_eq!(result, Some(libc::EPERM), "the filter's EPERM\n{out}");
    // Control: without the filter, the kernel's own answer.
    let (result, out) = run_on_own_pty("--seccomp off");
    let kernel = if legacy_tiocsti() {
        None
    } else {
        Some(libc::EIO)
    };
    assert_eq!(result, kernel, "--seccomp off: the kernel decides\n{out}");
}
