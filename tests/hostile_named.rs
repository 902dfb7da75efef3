//! Named sandboxes against a hostile command (issue 12, issue 19 item 9): each test runs
//! the attack and asserts it fails, beside a control that shows it working where the layer
//! under test is absent.
//!
//! - `sbx exec` without `-t` never hands the caller's terminal to the sandbox: a process
//!   left behind cannot read what is typed after `exec` returned, nor write to the screen;
//!   nor can `run` or `start -a` hand it to a longer-lived sandbox over a unix socket.
//! - `--net sandbox:NAME` does not follow the target's command into nested namespaces.
//! - `sbx logs` onto a terminal shows escape sequences instead of obeying them.
//! - a bare name in `--env-file` passes the host's value, with a warning naming it.

mod common;

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::named::Named;
use common::*;
use nix::poll::{PollFd, PollFlags, PollTimeout};

// ---------------------------------------------------------------------------------------
// A terminal of the test's own
// ---------------------------------------------------------------------------------------

/// A pty pair: the test plays the user at the master; the slave is the terminal a shell
/// would hand its commands (and keeps open, as a shell does).
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

impl Pty {
    fn new() -> Pty {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        Pty {
            master: pty.master,
            slave: pty.slave,
        }
    }

    /// Runs `cmd` with the terminal as its stdin, stdout and stderr, to its end.
    #[track_caller]
    fn run(&self, mut cmd: Command) -> i32 {
        cmd.stdin(Stdio::from(self.slave.try_clone().expect("dup")));
        self.run_out(cmd)
    }

    /// Runs `cmd` with the terminal as its stdout and stderr (stdin as `cmd` has it).
    #[track_caller]
    fn run_out(&self, mut cmd: Command) -> i32 {
        let fd = || Stdio::from(self.slave.try_clone().expect("dup"));
        cmd.stdout(fd()).stderr(fd());
        let mut child = cmd.spawn().expect("spawn");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("timed out; the terminal showed:\n{}", self.screen());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The user types `text`.
    fn type_in(&self, text: &str) {
        nix::unistd::write(&self.master, text.as_bytes()).expect("write to the pty master");
    }

    /// What has reached the screen so far (the master side), without waiting.
    fn screen(&self) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, PollTimeout::from(100u8)) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
            match nix::unistd::read(&self.master, &mut buf) {
                Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A line waiting on the terminal for whoever reads it next (the user's shell), if any
    /// comes within `wait`.
    fn pending_line(&self, wait: Duration) -> Option<String> {
        let mut fds = [PollFd::new(self.slave.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
        let mut buf = [0u8; 4096];
        let n = nix::unistd::read(&self.slave, &mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

// ---------------------------------------------------------------------------------------
// 1. sbx exec and the caller's terminal
// ---------------------------------------------------------------------------------------

const SECRET: &str = "secret-keystroke";

/// Leaves a process behind in a session of its own that keeps the fds it inherited:
/// 2 s later (after `exec` returned) it notes it is alive, reads a line from the stdin it
/// was given and writes it to `./stolen`, then writes to its stdout. (Fd 3 carries stdin
/// past the shell's rule that a background job's stdin is /dev/null.)
const THIEF: &str = r#"trap '' PIPE HUP
exec 3<&0
(setsid sh -c 'trap "" PIPE HUP; sleep 2; echo alive > ./alive; read -r x <&3; echo "got:$x" > ./stolen; echo LEAKED-WRITE' &)
echo exec-done"#;

/// Types `SECRET` on the terminal once `run` has returned, then waits for the thief's
/// verdict: what it stole, what reached the screen, what is left for the user's shell.
fn after_the_thief(pty: &Pty, dir: &Path) -> (String, String, Option<String>) {
    pty.type_in(&format!("{SECRET}\n"));
    let stolen = dir.join("stolen");
    eventually("the left-behind process reads its stdin", || {
        stolen.exists()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(dir.join("alive").exists(), "the thief never ran");
    let got = fs::read_to_string(&stolen).unwrap().trim().to_string();
    let screen = pty.screen();
    let left = pty.pending_line(Duration::from_secs(2));
    (got, screen, left)
}

#[test]
fn exec_keeps_the_callers_terminal_from_processes_left_behind() {
    if !require_sandbox() || !require_tool("setsid") {
        return;
    }
    // Control: the same script on the terminal itself, as `sbx exec` used to pass it.
    let host = TempDir::new();
    let pty = Pty::new();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", THIEF]).current_dir(host.path());
    assert_eq!(pty.run(cmd), 0);
    let (got, screen, left) = after_the_thief(&pty, host.path());
    assert_eq!(
        got,
        format!("got:{SECRET}"),
        "control: the keystroke is stolen"
    );
    assert!(screen.contains("LEAKED-WRITE"), "control: {screen:?}");
    assert_eq!(left, None, "control: nothing left for the shell");

    let n = Named::new();
    n.detach("t", &[], &["sleep", "1000"]);
    let pty = Pty::new();
    assert_eq!(pty.run(n.cmd(&["exec", "t", "--", "sh", "-c", THIEF])), 0);
    let (got, screen, left) = after_the_thief(&pty, n.work.path());
    assert_eq!(
        got, "got:",
        "the process left behind read the user's keystroke"
    );
    assert!(
        screen.contains("exec-done"),
        "output is relayed: {screen:?}"
    );
    assert!(
        !screen.contains("LEAKED-WRITE"),
        "the process left behind wrote to the terminal: {screen:?}"
    );
    assert_eq!(
        left.as_deref().map(str::trim),
        Some(SECRET),
        "the keystroke stays on the terminal for the user's shell"
    );
    n.sbx(&["rm", "-f", "t"]).assert_success();
}

#[test]
fn exec_relays_a_terminal_through_pipes() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.detach("t", &[], &["sleep", "1000"]);
    let pty = Pty::new();
    pty.type_in("hello\n");
    let script = "for fd in 0 1 2; do test -t $fd && echo fd$fd-is-a-tty; done; \
                  read -r x; echo got-$x; echo to-stderr >&2; exit 3";
    assert_eq!(pty.run(n.cmd(&["exec", "t", "--", "sh", "-c", script])), 3);
    let screen = pty.screen();
    assert!(!screen.contains("is-a-tty"), "{screen:?}");
    assert!(screen.contains("got-hello"), "{screen:?}");
    assert!(screen.contains("to-stderr"), "{screen:?}");
    // With -t the command gets a terminal, the sandbox's own.
    let pty = Pty::new();
    let out = pty.run(n.cmd(&["exec", "-t", "t", "--", "sh", "-c", "test -t 0; exit $?"]));
    assert_eq!(out, 0, "{}", pty.screen());
    n.sbx(&["rm", "-f", "t"]).assert_success();
}

/// Keeps whatever fd is sent to `./fd.sock` (a unix socket in the shared working
/// directory), and 2 s later writes to it and reads a line from it into `./stolen`.
const FD_KEEPER: &str = r#"
import os, select, socket, time
s = socket.socket(socket.AF_UNIX)
s.bind("fd.sock")
s.listen()
print("listening", flush=True)
while True:
    c, _ = s.accept()
    _, fds, _, _ = socket.recv_fds(c, 1, 1)
    time.sleep(2)
    open("alive", "w").close()
    try:
        os.write(fds[0], b"LEAKED-WRITE\n")
    except OSError:
        pass
    got = ""
    try:
        if select.select([fds[0]], [], [], 5)[0]:
            got = os.read(fds[0], 100).decode().strip()
    except OSError as e:
        got = "error %d" % e.errno
    with open("stolen.tmp", "w") as f:
        f.write("got:" + got)
    os.rename("stolen.tmp", "stolen")
"#;

/// Sends its stdout to `./fd.sock`.
const FD_SENDER: &str = r#"
import socket
c = socket.socket(socket.AF_UNIX)
c.connect("fd.sock")
socket.send_fds(c, [b"x"], [1])
print("sent")
"#;

#[test]
fn run_and_start_keep_the_callers_terminal_from_other_sandboxes() {
    if !require_sandbox() || !require_tool("python3") {
        return;
    }
    let n = Named::new();
    n.detach("keeper", &[], &["python3", "-c", FD_KEEPER]);
    eventually("the keeper listens", || {
        n.sbx(&["logs", "keeper"]).stdout().contains("listening")
    });
    let stolen = n.work.join("stolen");
    let attempt = |cmd: Command| {
        let _ = fs::remove_file(&stolen);
        let _ = fs::remove_file(n.work.join("alive"));
        let pty = Pty::new();
        let mut cmd = cmd;
        cmd.stdin(Stdio::null());
        assert_eq!(pty.run_out(cmd), 0, "{}", pty.screen());
        after_the_thief(&pty, n.work.path())
    };
    // Control: a host process with the terminal as stdout hands it to the sandbox, which
    // then reads the user's keystroke and writes to the screen.
    let mut host = Command::new("python3");
    host.args(["-c", FD_SENDER]).current_dir(n.work.path());
    let (got, screen, left) = attempt(host);
    assert_eq!(got, format!("got:{SECRET}"), "control");
    assert!(screen.contains("LEAKED-WRITE"), "control: {screen:?}");
    assert_eq!(left, None, "control");

    let runs: [&[&str]; 3] = [
        &["run", "--", "python3", "-c", FD_SENDER],
        &["run", "--name", "fg", "--", "python3", "-c", FD_SENDER],
        &["start", "-a", "fg"],
    ];
    for args in runs {
        let (got, screen, left) = attempt(n.cmd(args));
        assert!(!got.contains(SECRET), "sbx {args:?}: {got}");
        assert!(screen.contains("sent"), "sbx {args:?}: {screen:?}");
        assert!(!screen.contains("LEAKED-WRITE"), "sbx {args:?}: {screen:?}");
        assert_eq!(left.as_deref().map(str::trim), Some(SECRET), "sbx {args:?}");
    }
    n.sbx(&["rm", "-f", "keeper", "fg"]).assert_success();
}

// ---------------------------------------------------------------------------------------
// 2. --net sandbox:NAME and nested namespaces
// ---------------------------------------------------------------------------------------

fn ns_inode(pid: i64, ns: &str) -> Option<u64> {
    fs::metadata(format!("/proc/{pid}/ns/{ns}"))
        .ok()
        .map(|m| m.ino())
}

#[test]
fn joining_a_network_does_not_follow_the_command_into_nested_namespaces() {
    if !require_sandbox() || !require_tool("unshare") {
        return;
    }
    let n = Named::new();
    n.detach(
        "moved",
        &["--allow-nested"],
        &["unshare", "-Urn", "sleep", "1000"],
    );
    let info = n.inspect("moved");
    let pid = info["command_pid"].as_i64().expect("command_pid");
    let recorded = info["namespaces"]["net"].as_u64().expect("namespaces.net");
    // Control: the recorded command's process now lives in other namespaces, which a
    // join through its pidfd would enter.
    eventually("the command moves into new namespaces", || {
        ns_inode(pid, "net").is_some_and(|ino| ino != recorded)
    });
    assert_ne!(
        ns_inode(pid, "user"),
        info["namespaces"]["user"].as_u64(),
        "the user namespace moved too"
    );
    let out = n.sbx(&["run", "--net", "sandbox:moved", "--", "true"]);
    out.assert_sbx_error(&["sandbox moved", "nested", "sbx stop moved"]);
    assert_eq!(out.stderr().trim().lines().count(), 1, "one line\n{out}");

    // A well-behaved sandbox with the same options is joined, in its recorded namespace.
    n.detach("kept", &["--allow-nested"], &["sleep", "1000"]);
    let info = n.inspect("kept");
    let recorded = info["namespaces"]["net"].as_u64().expect("namespaces.net");
    let out = n.sbx(&[
        "run",
        "--net",
        "sandbox:kept",
        "--",
        "readlink",
        "/proc/self/ns/net",
    ]);
    out.assert_success();
    assert_eq!(out.stdout().trim(), format!("net:[{recorded}]"), "{out}");
    n.sbx(&["rm", "-f", "moved", "kept"]).assert_success();
}

// ---------------------------------------------------------------------------------------
// 3. sbx logs onto a terminal
// ---------------------------------------------------------------------------------------

#[test]
fn logs_show_escape_sequences_on_a_terminal_and_pass_them_through_a_pipe() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.detach(
        "esc",
        &[],
        &["printf", "a\\033]0;pwned\\007b\\033[2Jc\\ttab\\n"],
    );
    eventually("the sandbox ends", || n.inspect("esc")["state"] == "exited");
    // Control: the log holds the raw sequences, and a pipe gets them as they are.
    let piped = n.sbx(&["logs", "esc"]);
    piped.assert_success();
    assert_eq!(
        piped.stdout, b"a\x1b]0;pwned\x07b\x1b[2Jc\ttab\n",
        "{piped}"
    );

    let pty = Pty::new();
    assert_eq!(pty.run(n.cmd(&["logs", "esc"])), 0);
    let screen = pty.screen();
    assert!(
        !screen.contains('\x1b') && !screen.contains('\x07'),
        "{screen:?}"
    );
    assert!(
        screen.contains("a\\x1b]0;pwned\\x07b\\x1b[2Jc\ttab"),
        "{screen:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 4. --env-file lines with a bare name
// ---------------------------------------------------------------------------------------

const TOKEN: &str = "host-token-value";

fn warning(file: &str, line: usize, name: &str) -> String {
    format!(
        "sbx: warning: --env-file {file}:{line}: passing the host's value of {name}; \
         write {name}=VALUE to set it, or remove the line"
    )
}

#[test]
fn env_file_bare_names_pass_the_host_value_with_a_warning() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    let file = n.work.join("pr.env");
    // A .env from an untrusted pull request: GITHUB_TOKEN twice, one name the host lacks.
    fs::write(
        &file,
        "A=1\nGITHUB_TOKEN\nSBX_TEST_UNSET_NAME\nexport GITHUB_TOKEN\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let script = "echo token=$GITHUB_TOKEN a=$A";

    let mut cmd = n.cmd(&["run", "--env-file", f, "--", "sh", "-c", script]);
    cmd.env("GITHUB_TOKEN", TOKEN)
        .env_remove("SBX_TEST_UNSET_NAME");
    let out = run(cmd);
    out.assert_success();
    // As docker does: the value passes.
    assert_eq!(out.stdout().trim(), format!("token={TOKEN} a=1"), "{out}");
    // Once, naming the file, the first line and the name.
    assert_eq!(out.stderr().trim(), warning(f, 2, "GITHUB_TOKEN"), "{out}");

    // Without the host's value: nothing passes, nothing to warn about.
    let mut cmd = n.cmd(&["run", "--env-file", f, "--", "sh", "-c", script]);
    cmd.env_remove("GITHUB_TOKEN");
    let out = run(cmd);
    out.assert_success();
    assert_eq!(out.stdout().trim(), "token= a=1", "{out}");
    assert_eq!(out.stderr().trim(), "", "{out}");

    // exec as well; its bare names take values from the environment recorded at creation.
    let mut cmd = n.cmd(&["run", "--name", "envs", "-d", "--", "sleep", "1000"]);
    cmd.env("GITHUB_TOKEN", TOKEN);
    run(cmd).assert_success();
    let mut cmd = n.cmd(&["exec", "--env-file", f, "envs", "--", "sh", "-c", script]);
    cmd.env("GITHUB_TOKEN", TOKEN);
    let out = run(cmd);
    out.assert_success();
    assert_eq!(out.stdout().trim(), format!("token={TOKEN} a=1"), "{out}");
    assert_eq!(out.stderr().trim(), warning(f, 2, "GITHUB_TOKEN"), "{out}");
    n.sbx(&["rm", "-f", "envs"]).assert_success();
}
