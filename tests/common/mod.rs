//! Shared harness for the integration tests: find and run the sbx binary, private temp
//! directories, host feature checks through `sbx check --json`, and /proc scans.
//!
//! The tests run the real binary as an unprivileged user (ci/test.sh runs them as a user
//! with a subuid range, and the `nosubuid_` tests as one without). Every run has a timeout,
//! stdin is /dev/null unless a test gives input (so a test started from a terminal does
//! not get a pty session by accident), and every test gets its own working directory.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod landlock;

use std::borrow::BorrowMut;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How long one sandbox run may take before the test kills it and fails. Generous: the
/// test machines have 2 cores and run tests in parallel.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Prefix of every temporary path the harness creates, so leftover checks can tell the
/// harness's own files from files sbx left behind.
pub const PREFIX: &str = "sbx-test-";

// ---------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------

/// Path of the sbx binary under test: `$SBX_BIN` (set by ci/test.sh, which stages the
/// binary where the test user can read it), else the one cargo built for this test.
pub fn sbx_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SBX_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    match option_env!("CARGO_BIN_EXE_sbx") {
        Some(path) => PathBuf::from(path),
        None => panic!("set SBX_BIN to the sbx binary to test"),
    }
}

/// The staged tests/data: `$SBX_TEST_DATA` (ci/test.sh), else the source tree's.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("SBX_TEST_DATA").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data"),
    }
}

/// `runuser -u USER -- env -i HOME=.. PATH=.. ENV.. PROGRAM ARGS` in `dir` (the user's home
/// when None): for the tests run as root that act as the test users.
pub fn as_user(
    user: &str,
    dir: Option<&Path>,
    env: &[(&str, &Path)],
    program: &Path,
    args: &[&str],
) -> Outcome {
    let home = nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no user {user}"))
        .dir;
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", user, "--", "env", "-i"])
        .arg(format!("HOME={}", home.display()))
        .arg("PATH=/usr/local/bin:/usr/bin:/bin")
        .args(env.iter().map(|(k, v)| format!("{k}={}", v.display())))
        .arg(program)
        .args(args)
        .current_dir(dir.unwrap_or(&home));
    run(cmd)
}

/// A `Command` for the sbx binary.
pub fn sbx() -> Command {
    Command::new(sbx_bin())
}

/// `sbx run ARGS...` with `dir` as the working directory (and so, by default, the directory
/// bound into the sandbox).
pub fn sbx_run(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = sbx();
    cmd.arg("run").args(args).current_dir(dir);
    cmd
}

/// Runs `sbx run OPTIONS -- sh -c SCRIPT` in `dir` and waits for it.
pub fn sandbox_sh(dir: &Path, options: &[&str], script: &str) -> Outcome {
    let mut cmd = sbx_run(dir, options);
    cmd.args(["--", "sh", "-c", script]);
    run(&mut cmd)
}

/// Under `SBX_TEST_STRICT=1` (CI) every skip is a failure.
pub fn strict() -> bool {
    std::env::var("SBX_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// The running test's name: libtest names each test's thread after it.
pub fn test_name() -> String {
    thread::current()
        .name()
        .unwrap_or("unknown-test")
        .to_string()
}

/// Skips the running test with a reason (prints `SKIP name: reason`), or fails it under
/// `SBX_TEST_STRICT=1`. Returns false so callers can write `if !skip(..) { return; }`.
///
/// libtest swallows the output of a passing test, so the line also goes to the file
/// `$SBX_TEST_SKIP_FILE` when that is set: ci/test.sh counts and lists the skips from it.
pub fn skip(reason: &str) -> bool {
    let name = test_name();
    if strict() {
        panic!("{name}: {reason} (SBX_TEST_STRICT=1 turns this skip into a failure)");
    }
    let line = format!("SKIP {name}: {reason}");
    eprintln!("{line}");
    if let Some(file) = std::env::var_os("SBX_TEST_SKIP_FILE").filter(|f| !f.is_empty()) {
        let appended = fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            panic!(
                "{name}: cannot record the skip in {}: {e}",
                Path::new(&file).display()
            );
        }
    }
    false
}

// ---------------------------------------------------------------------------------------
// Host features, as sbx's own probe reports them
// ---------------------------------------------------------------------------------------

/// Features assumed present when `sbx check --json` gives no usable report (as while the
/// probe was being written): `sbx run` itself cannot work without them, so on a host that
/// lacks them every sandbox test fails loudly anyway rather than passing by accident.
/// Every other feature must be confirmed by the probe. `check.rs` tests the report itself.
const ASSUMED_WITHOUT_REPORT: &[&str] = &["userns", "mount_api"];

pub fn check_report() -> &'static Result<Value, String> {
    static REPORT: OnceLock<Result<Value, String>> = OnceLock::new();
    REPORT.get_or_init(|| {
        let mut cmd = sbx();
        cmd.args(["check", "--json"]);
        let out = spawn(&mut cmd, None).finish(TIMEOUT);
        let text = out.stdout();
        if text.trim().is_empty() {
            return Err(format!(
                "`sbx check --json` printed nothing (exit {}, stderr: {})",
                out.code,
                out.stderr().trim()
            ));
        }
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("`sbx check --json` printed no valid JSON ({e}): {text}"))?;
        // The report is an object keyed by feature name; accept it wrapped in "features".
        let features = match value.get("features") {
            Some(inner) if inner.is_object() => inner.clone(),
            _ => value,
        };
        if features.is_object() {
            Ok(features)
        } else {
            Err(format!(
                "`sbx check --json` printed JSON that is not an object: {text}"
            ))
        }
    })
}

/// Whether this host has `feature`, according to `sbx check --json` (an object keyed by
/// feature name: `{"ok": bool, "detail": str, "fix": str|null}`). When it does not, prints
/// `SKIP test: why` and returns false; under `SBX_TEST_STRICT=1` it fails the test instead.
pub fn require(feature: &str) -> bool {
    let report = match check_report() {
        Ok(report) => report,
        Err(why) if ASSUMED_WITHOUT_REPORT.contains(&feature) => {
            // Not a skip, but not silent either: see ASSUMED_WITHOUT_REPORT.
            eprintln!("note {}: assuming {feature}: {why}", test_name());
            return true;
        }
        Err(why) => {
            return skip(&format!(
                "cannot tell whether the host has {feature}: {why}"
            ))
        }
    };
    let Some(entry) = report.get(feature) else {
        return skip(&format!(
            "`sbx check --json` does not report the feature {feature:?}"
        ));
    };
    if entry.get("ok").and_then(Value::as_bool) == Some(true) {
        return true;
    }
    let detail = entry
        .get("detail")
        .and_then(Value::as_str)
        .unwrap_or("no detail");
    let fix = entry
        .get("fix")
        .and_then(Value::as_str)
        .map(|f| format!("; fix: {f}"))
        .unwrap_or_default();
    skip(&format!("this host lacks {feature}: {detail}{fix}"))
}

/// What every sandbox test needs: unprivileged user namespaces and the new mount API.
pub fn require_sandbox() -> bool {
    require("userns") && require("mount_api")
}

/// What tests of the full id map need: a subuid/subgid range and the setuid helpers.
pub fn require_subids() -> bool {
    require_sandbox()
        && require("newuidmap")
        && require("newgidmap")
        && require("subuid")
        && require("subgid")
}

// ---------------------------------------------------------------------------------------
// Private temporary directories
// ---------------------------------------------------------------------------------------

/// A unique string for this process and call: for file names and process markers.
pub fn unique(what: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{PREFIX}{what}-{}-{n}-{nanos:x}", std::process::id())
}

/// A private directory owned by the current user (mode 0700), removed when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Under the system temporary directory (normally /tmp).
    pub fn new() -> TempDir {
        TempDir::new_in(&std::env::temp_dir())
    }

    /// Under the caller's home directory (`$HOME`).
    pub fn in_home() -> TempDir {
        TempDir::new_in(&home())
    }

    pub fn new_in(parent: &Path) -> TempDir {
        let name = unique(&sanitize(&test_name()));
        let path = parent.join(name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("create temp dir {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("chmod temp dir {}: {e}", path.display()));
        // Canonical, so paths compare equal to what `pwd` prints inside.
        let path = path.canonicalize().expect("canonicalize temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// The path as a str (the harness only makes UTF-8 names).
    pub fn str(&self) -> &str {
        self.path.to_str().expect("temp dir path is UTF-8")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("warning: cannot remove {}: {e}", self.path.display());
        }
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// A file removed when dropped (for files a test must put outside its temp dir).
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn sanitize(name: &str) -> String {
    let short: String = name
        .rsplit("::")
        .next()
        .unwrap_or(name)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    short.chars().take(40).collect()
}

/// The caller's home directory, as sbx sees it (`$HOME`).
pub fn home() -> PathBuf {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .expect("HOME must be set for the tests");
    PathBuf::from(home).canonicalize().expect("HOME must exist")
}

pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

pub fn gid() -> u32 {
    // SAFETY: getgid has no preconditions and cannot fail.
    unsafe { libc::getgid() }
}

/// The current user's name, from the password database.
pub fn user_name() -> String {
    nix::unistd::User::from_uid(uid().into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid().to_string())
}

// ---------------------------------------------------------------------------------------
// Running processes with timeouts
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Looking at the host
// ---------------------------------------------------------------------------------------

/// A process on the host, as /proc shows it.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub argv: Vec<String>,
}

/// Every process whose command line (any argument) contains `marker`, except this test
/// process itself.
pub fn processes_with(marker: &str) -> Vec<Proc> {
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            // The process may be gone by now; then it is not a leftover.
            let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv: Vec<String> = raw
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            argv.iter()
                .any(|a| a.contains(marker))
                .then_some(Proc { pid, argv })
        })
        .collect()
}

/// Waits until some process matches `pred` (within `timeout`); returns it or fails.
#[track_caller]
pub fn wait_for_process(marker: &str, pred: impl Fn(&Proc) -> bool, timeout: Duration) -> Proc {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(p) = processes_with(marker).into_iter().find(|p| pred(p)) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "no process with {marker:?} appeared within {timeout:?}; processes with it: {:?}",
            processes_with(marker)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until no process has `marker` in its command line; fails listing the survivors
/// if some are still there after `timeout`.
#[track_caller]
pub fn assert_no_process_with(marker: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes outlived the sandbox ({timeout:?} after it ended): {left:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// One line of a mountinfo file: the mount point and its per-mount options.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MountEntry {
    pub mount_point: String,
    pub options: String,
    pub line: String,
}

/// Parses mountinfo text (`/proc/PID/mountinfo`), unescaping octal escapes in the mount
/// point.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            Some(MountEntry {
                mount_point: unescape_octal(fields.get(4)?),
                options: fields.get(5)?.to_string(),
                line: line.to_string(),
            })
        })
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Guards the host's mount table within one test binary (tests run as its threads): a test
/// that mounts on the host itself (a FUSE filesystem) holds it exclusively from mount to
/// unmount, and every snapshot-and-compare of the table ([`HostState`]) holds it shared,
/// so a test's own mount never shows up as one a sandbox left behind. A thread must not
/// take it twice.
static HOST_MOUNT_TABLE: RwLock<()> = RwLock::new(());

/// Held while this test mounts something on the host (see [`HOST_MOUNT_TABLE`]).
pub fn mounting_on_the_host() -> RwLockWriteGuard<'static, ()> {
    HOST_MOUNT_TABLE
        .write()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Held while this test compares snapshots of the host's mount table.
pub fn reading_host_mounts() -> RwLockReadGuard<'static, ()> {
    HOST_MOUNT_TABLE
        .read()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The host's mount table as this test process sees it (it runs in the host's mount
/// namespace, where sbx must never leave a mount). Compare two snapshots only while
/// holding [`reading_host_mounts`], as [`HostState`] does.
pub fn host_mounts() -> BTreeSet<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("read /proc/self/mountinfo")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Entries of the temporary directory owned by the current user or one of its
/// subordinate uids (what a sandbox of ours could create), excluding the harness's own.
pub fn tmp_entries() -> BTreeSet<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let tmp = std::env::temp_dir();
    let me = uid();
    let ranges = subordinate_ranges("/etc/subuid");
    let ours = |owner: u32| {
        owner == me
            || ranges
                .iter()
                .any(|&(start, count)| (start..start + count).contains(&u64::from(owner)))
    };
    let Ok(entries) = fs::read_dir(&tmp) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with(PREFIX))
        .filter(|e| e.path().symlink_metadata().is_ok_and(|m| ours(m.uid())))
        .map(|e| e.path())
        .collect()
}

/// A snapshot of what a run could leave behind on the host: mounts and temp files. It
/// holds the mount table lock until dropped, so no test of this binary mounts on the host
/// in between.
pub struct HostState {
    mounts: BTreeSet<String>,
    tmp: BTreeSet<PathBuf>,
    _mount_table: RwLockReadGuard<'static, ()>,
}

impl HostState {
    pub fn capture() -> HostState {
        let guard = reading_host_mounts();
        HostState {
            mounts: host_mounts(),
            tmp: tmp_entries(),
            _mount_table: guard,
        }
    }

    /// Fails if mounts or temp entries appeared since the snapshot.
    #[track_caller]
    pub fn assert_nothing_new(&self) {
        let mounts = host_mounts();
        let new_mounts: Vec<&String> = mounts.difference(&self.mounts).collect();
        assert!(
            new_mounts.is_empty(),
            "new mounts on the host after the run: {new_mounts:#?}"
        );
        let tmp = tmp_entries();
        let new_tmp: Vec<&PathBuf> = tmp.difference(&self.tmp).collect();
        assert!(
            new_tmp.is_empty(),
            "new entries in {} after the run: {new_tmp:?}",
            std::env::temp_dir().display()
        );
    }
}

/// Reads /etc/subuid or /etc/subgid and returns the ranges `(start, count)` that belong to
/// the current user (by name or by uid), as sbx should.
pub fn subordinate_ranges(file: &str) -> Vec<(u64, u64)> {
    let text = fs::read_to_string(file).unwrap_or_default();
    let (name, id) = (user_name(), uid().to_string());
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let owner = f.next()?;
            let start = f.next()?.parse().ok()?;
            let count = f.next()?.parse().ok()?;
            (owner == name || owner == id).then_some((start, count))
        })
        .filter(|&(_, count)| count > 0)
        .collect()
}

/// Parses `/proc/PID/uid_map` text into `(inside, outside, count)` lines.
pub fn parse_id_map(text: &str) -> Vec<(u64, u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            (f.len() == 3).then(|| (f[0], f[1], f[2]))
        })
        .collect()
}

/// The file at `path` exists as a static binary we can copy (no ELF interpreter), as
/// Debian's busybox-static installs /bin/busybox.
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(data) = fs::read(path) else {
        return false;
    };
    // ELF64 little-endian: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let off = phoff + i * phentsize;
        // PT_INTERP = 3: a dynamically linked program names its loader.
        data.get(off..off + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3)
    })
}

/// Mount points the default profile adds over the host's own paths: the hidden runtime
/// directories and the covers over host unix sockets (`/proc/net/unix`).
pub fn hides_host_path(mount_point: &str) -> bool {
    let path = Path::new(mount_point);
    if ["/run/user", "/run/dbus"]
        .iter()
        .any(|r| path.starts_with(r))
    {
        return true;
    }
    fs::read_to_string("/proc/net/unix").is_ok_and(|table| {
        table
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(7) == Some(mount_point))
    })
}
