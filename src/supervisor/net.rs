//! slirp4netns: user-mode networking for the sandbox's network namespace, started by the
//! supervisor after clone and before the child is released.
//!
//! It dies with sbx whatever happens: its exit fd is a pipe whose other end only sbx holds,
//! closed by the kernel even when sbx is killed with SIGKILL. (A parent-death signal would
//! not do: the kernel clears it when slirp4netns changes its credentials for its sandbox.)

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::{pipe2, Pid};

use crate::network::{NetPlan, Proto, Publish, MTU};

const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running slirp4netns; dropping it stops it.
pub struct Slirp {
    child: Child,
    exit_fd: Option<OwnedFd>,
}

impl Drop for Slirp {
    fn drop(&mut self) {
        // Closing the exit fd asks it to stop; SIGKILL makes sure.
        drop(self.exit_fd.take());
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts slirp4netns for `pid`'s network namespace when the plan asks for it, waits until
/// the interface is configured, and publishes the ports.
/// `own_sandbox`: slirp4netns's own `--enable-sandbox` and `--enable-seccomp`, which need
/// ids 0 mapped in the sandbox's user namespace (not so with a single-id map).
pub fn start(plan: &NetPlan, pid: Pid, own_sandbox: bool) -> Result<Option<Slirp>> {
    let Some(bin) = &plan.slirp4netns else {
        return Ok(None);
    };
    for p in &plan.publish {
        check_port_free(p)?;
    }
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    let (exit_r, exit_w) = pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    let api = if plan.publish.is_empty() {
        None
    } else {
        Some(ApiDir::new()?)
    };
    let log = stderr_file()?;

    let mut cmd = Command::new(bin);
    cmd.args(["--configure", &format!("--mtu={MTU}")]);
    if own_sandbox {
        cmd.args(["--enable-sandbox", "--enable-seccomp"]);
    }
    if !plan.allow_host_loopback {
        cmd.arg("--disable-host-loopback");
    }
    cmd.args(["--ready-fd=3", "--exit-fd=4"]);
    if let Some(api) = &api {
        cmd.arg("--api-socket").arg(api.socket());
    }
    cmd.arg(pid.as_raw().to_string()).arg("tap0");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.try_clone().context("dup slirp4netns log")?)
        .env_clear();
    let (ready_raw, exit_raw) = (ready_w.as_raw_fd(), exit_r.as_raw_fd());
    // The closure runs in the forked child before exec.
    // SAFETY: it makes only async-signal-safe calls (fcntl, dup2, close, sigprocmask,
    // umask) on descriptors open in the child and a sigset on its own stack.
    unsafe {
        cmd.pre_exec(move || {
            // Out of the way first, so neither target number clobbers the other source.
            let ready = libc::fcntl(ready_raw, libc::F_DUPFD, 10);
            let exit = libc::fcntl(exit_raw, libc::F_DUPFD, 10);
            if ready < 0 || exit < 0 || libc::dup2(ready, 3) < 0 || libc::dup2(exit, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(ready);
            libc::close(exit);
            // slirp4netns creates its API socket as root of the sandbox's user namespace,
            // a subordinate id: without this it would not let us connect. The socket's
            // directory is ours and 0700, so nobody else can reach it.
            libc::umask(0);
            // sbx blocks the signals it forwards; slirp4netns must get them.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    drop((ready_w, exit_r));
    let mut slirp = Slirp {
        child,
        exit_fd: Some(exit_w),
    };
    wait_ready(&mut slirp, ready_r, log)?;
    if let Some(api) = &api {
        for p in &plan.publish {
            publish(&api.socket(), p)?;
        }
    }
    Ok(Some(slirp))
}

/// A port already in use gets a clear message now rather than slirp4netns's generic one.
fn check_port_free(p: &Publish) -> Result<()> {
    let addr = (p.host_addr, p.host_port);
    let taken = match p.proto {
        Proto::Tcp => TcpListener::bind(addr).err(),
        Proto::Udp => UdpSocket::bind(addr).err(),
    };
    match taken {
        None => Ok(()),
        Some(e) => bail!(
            "cannot publish {p}: {} port {} on {} is not free ({e}); pick another host port",
            p.proto.name(),
            p.host_port,
            p.host_addr
        ),
    }
}

/// An unlinked temporary file for slirp4netns's messages, read only when it fails.
fn stderr_file() -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open(std::env::temp_dir())
        .context("create a temporary file for slirp4netns's messages")
}

fn wait_ready(slirp: &mut Slirp, ready: OwnedFd, mut log: File) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let failed = |log: &mut File, why: String| -> anyhow::Error {
        let mut text = String::new();
        let _ = log.rewind().and_then(|_| log.read_to_string(&mut text));
        let last: Vec<&str> = text.lines().rev().take(5).collect();
        let last: Vec<&str> = last.into_iter().rev().collect();
        anyhow::anyhow!("slirp4netns {why}: {}", last.join(" / "))
    };
    loop {
        let mut fds = [PollFd::new(ready.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(50u16));
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            let mut byte = [0u8; 1];
            return match File::from(ready).read(&mut byte) {
                Ok(1) if byte[0] == b'1' => Ok(()),
                _ => Err(failed(&mut log, "did not configure the network".into())),
            };
        }
        if let Ok(Some(status)) = slirp.child.try_wait() {
            return Err(failed(
                &mut log,
                format!("exited before it was ready ({status})"),
            ));
        }
        if Instant::now() > deadline {
            return Err(failed(
                &mut log,
                format!("was not ready within {READY_TIMEOUT:?}"),
            ));
        }
    }
}

/// slirp4netns's API takes one JSON request per connection.
fn publish(socket: &Path, p: &Publish) -> Result<()> {
    let request = serde_json::json!({
        "execute": "add_hostfwd",
        "arguments": {
            "proto": p.proto.name(),
            "host_addr": p.host_addr.to_string(),
            "host_port": p.host_port,
            "guest_port": p.guest_port,
        }
    });
    let mut conn = UnixStream::connect(socket).context("connect to slirp4netns's API")?;
    conn.write_all(request.to_string().as_bytes())?;
    conn.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    let value: serde_json::Value = serde_json::from_str(&reply)
        .with_context(|| format!("slirp4netns answered {reply:?} to add_hostfwd"))?;
    if let Some(err) = value.get("error") {
        bail!("cannot publish {p}: slirp4netns says {err}");
    }
    Ok(())
}

/// A private directory for the API socket, removed as soon as the ports are published.
struct ApiDir(PathBuf);

impl ApiDir {
    fn new() -> Result<ApiDir> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        for attempt in 0..100u32 {
            let dir = base.join(format!("sbx-net-{}-{attempt}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(ApiDir(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
            }
        }
        bail!("cannot create a private directory in {}", base.display())
    }

    fn socket(&self) -> PathBuf {
        self.0.join("api.sock")
    }
}

impl Drop for ApiDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let _ = std::fs::remove_dir(&self.0);
    }
}
