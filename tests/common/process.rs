//! Running processes with timeouts.

use std::borrow::BorrowMut;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// What a finished process left: its exit code (128+N when killed by signal N, as a shell
/// reports it) and everything it wrote.
pub struct Outcome {
    pub what: String,
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Outcome {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Stdout lines, trimmed of `\r` (pty output).
    pub fn lines(&self) -> Vec<String> {
        self.stdout()
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect()
    }

    /// Panics (showing everything) unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n{self}");
        self.assert_no_panic()
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }

    /// sbx must never panic, whatever it is given.
    #[track_caller]
    pub fn assert_no_panic(&self) -> &Self {
        let all = format!("{}{}", self.stdout(), self.stderr());
        assert!(
            !all.contains("panicked at") && !all.contains("RUST_BACKTRACE"),
            "sbx panicked\n{self}"
        );
        self
    }

    /// An sbx error: exit 125, no panic, and a message on stderr containing each of
    /// `needles`.
    #[track_caller]
    pub fn assert_sbx_error(&self, needles: &[&str]) -> &Self {
        self.assert_code(125);
        let err = self.stderr();
        for needle in needles {
            assert!(
                err.contains(needle),
                "the error message should mention {needle:?}\n{self}"
            );
        }
        self
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command: {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n---",
            self.what,
            self.code,
            self.stdout(),
            self.stderr()
        )
    }
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Collects one output pipe on a thread; the buffer can be looked at while it fills.
struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Capture {
    fn start(mut pipe: impl Read + Send + 'static) -> Capture {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = std::sync::mpsc::channel();
        let sink = Arc::clone(&buf);
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        });
        Capture { buf, done }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.buf.lock().unwrap().clone()
    }

    /// Waits for EOF; false if the pipe is still open at the deadline.
    fn wait(&self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        self.done.recv_timeout(left).is_ok()
    }
}

/// A process started by a test, with its output being collected.
pub struct Running {
    pub child: Child,
    what: String,
    stdout: Capture,
    stderr: Capture,
}

/// Spawns `cmd` with stdout and stderr collected; stdin gets `input` (then EOF), or
/// /dev/null when `input` is None.
pub fn spawn(cmd: &mut Command, input: Option<Vec<u8>>) -> Running {
    let what = describe(cmd);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    if let Some(data) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        thread::spawn(move || {
            // The command may exit without reading everything; that is its business.
            let _ = stdin.write_all(&data);
        });
    }
    let stdout = Capture::start(child.stdout.take().expect("piped stdout"));
    let stderr = Capture::start(child.stderr.take().expect("piped stderr"));
    Running {
        child,
        what,
        stdout,
        stderr,
    }
}

/// Spawns `cmd` with stdin a pipe left open in `child.stdin`, for the test to write to or
/// close when it wants.
pub fn spawn_with_stdin(cmd: &mut Command) -> Running {
    let what = describe(cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stdout = Capture::start(child.stdout.take().expect("piped stdout"));
    let stderr = Capture::start(child.stderr.take().expect("piped stderr"));
    Running {
        child,
        what,
        stdout,
        stderr,
    }
}

/// Runs `cmd` to completion (stdin /dev/null) within [`TIMEOUT`].
pub fn run(mut cmd: impl BorrowMut<Command>) -> Outcome {
    spawn(cmd.borrow_mut(), None).finish(TIMEOUT)
}

/// Runs `cmd` to completion with `input` on its stdin.
pub fn run_with_input(mut cmd: impl BorrowMut<Command>, input: &[u8]) -> Outcome {
    spawn(cmd.borrow_mut(), Some(input.to_vec())).finish(TIMEOUT)
}

fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(shell_quote));
    parts.join(" ")
}

fn shell_quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+%@".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stdout.snapshot()).into_owned()
    }

    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stderr.snapshot()).into_owned()
    }

    /// Waits until stdout contains `needle`; on timeout or early exit kills the process
    /// and fails the test, showing what it wrote.
    #[track_caller]
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) {
        let timeout = scaled(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout_so_far().contains(needle) {
                return;
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                // Whatever is still in the pipe.
                thread::sleep(Duration::from_millis(100));
                if self.stdout_so_far().contains(needle) {
                    return;
                }
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} before {needle:?} appeared on stdout\ncommand: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    if exited { "the process exited" } else { "timed out" },
                    self.what,
                    self.stdout_so_far(),
                    self.stderr_so_far()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig)
            .unwrap_or_else(|e| panic!("kill -{sig} {}: {e}", self.pid()));
    }

    /// Waits for the exit within `timeout` (else kills it and fails the test), then for
    /// its output pipes to close: a pipe still open a while after the exit means some
    /// process that inherited it outlived the sandbox, which is a failure too.
    #[track_caller]
    pub fn finish(mut self, timeout: Duration) -> Outcome {
        let timeout = scaled(timeout);
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "timed out after {timeout:?}; killed it\ncommand: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                        self.what,
                        self.stdout_so_far(),
                        self.stderr_so_far()
                    );
                }
                Err(e) => panic!("wait for {}: {e}", self.what),
            }
        };
        let pipes_deadline = Instant::now() + Duration::from_secs(10);
        let closed = self.stdout.wait(pipes_deadline) && self.stderr.wait(pipes_deadline);
        assert!(
            closed,
            "the output pipes stayed open 10 s after sbx exited: a process outlived the sandbox\ncommand: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.stdout_so_far(),
            self.stderr_so_far()
        );
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .expect("an exit status has a code or a signal");
        Outcome {
            what: std::mem::take(&mut self.what),
            code,
            stdout: self.stdout.snapshot(),
            stderr: self.stderr.snapshot(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A test that failed half-way must not leave its sandbox running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A deadline stretched by `$SBX_TEST_TIME_SCALE` (a whole number, default 1): the VM tier
/// runs under software emulation, where everything takes several times longer.
pub fn scaled(timeout: Duration) -> Duration {
    let scale = std::env::var("SBX_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|s| *s >= 1)
        .unwrap_or(1);
    timeout * scale
}

/// Waits until `cond` holds, polling, for at most [`TIMEOUT`]; fails naming `what`.
#[track_caller]
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `tool` is on PATH; otherwise a skip naming it.
pub fn require_tool(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| std::path::Path::new(&d).join(tool).exists()))
        .unwrap_or(false);
    found || skip(&format!("{tool} is not installed"))
}
