//! The runner's side of the command's pseudo-terminal: raw mode on the caller's terminal,
//! bytes relayed both ways, window size changes passed on.
//!
//! The pty itself is created inside the sandbox (its own devpts instance), so `tty` and
//! job control work there, and the command never holds the caller's terminal: it cannot
//! inject input into the caller's shell with TIOCSTI.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, libc::winsize);
nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);

pub struct Relay {
    master: OwnedFd,
    saved: Option<Termios>,
    stdin_open: bool,
}

impl Relay {
    /// Takes over the master side: sizes it like the caller's terminal and makes the
    /// caller's terminal raw until the relay is dropped.
    pub fn start(master: OwnedFd) -> io::Result<Relay> {
        let stdin = io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok();
        let relay = Relay {
            master,
            saved: saved.clone(),
            stdin_open: true,
        };
        relay.resize();
        if let Some(mut raw) = saved {
            cfmakeraw(&mut raw);
            tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        }
        Ok(relay)
    }

    /// Copies the caller's window size to the command's terminal (SIGWINCH).
    pub fn resize(&self) {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which is valid for writes.
        if unsafe { get_winsize(io::stdin().as_raw_fd(), &mut ws) }.is_ok() {
            // SAFETY: TIOCSWINSZ reads one winsize from `ws`, which is initialised.
            let _ = unsafe { set_winsize(self.master.as_raw_fd(), &ws) };
        }
    }

    pub fn master(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }

    pub fn stdin_open(&self) -> bool {
        self.stdin_open
    }

    /// The caller typed something: pass it to the command.
    pub fn pump_input(&mut self) {
        let mut buf = [0u8; 4096];
        match nix::unistd::read(io::stdin(), &mut buf) {
            Ok(0) | Err(Errno::EIO) | Err(Errno::EBADF) => self.stdin_open = false,
            Ok(n) => {
                if write_all(self.master.as_fd(), &buf[..n]).is_err() {
                    self.stdin_open = false;
                }
            }
            Err(_) => {}
        }
    }

    /// The command wrote something; returns false once the terminal is closed on its side.
    pub fn pump_output(&mut self) -> bool {
        let mut buf = [0u8; 16384];
        match nix::unistd::read(&self.master, &mut buf) {
            Ok(0) | Err(Errno::EIO) => false,
            Ok(n) => {
                let mut out = io::stdout().lock();
                let _ = out.write_all(&buf[..n]).and_then(|_| out.flush());
                true
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => true,
            Err(_) => false,
        }
    }

    /// Copies whatever output is still buffered once the sandbox is gone.
    pub fn drain(&mut self) {
        let _ = nix::fcntl::fcntl(
            &self.master,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        let mut budget = 4096;
        loop {
            let mut buf = [0u8; 16384];
            match nix::unistd::read(&self.master, &mut buf) {
                Ok(n) if n > 0 && budget > 0 => {
                    budget -= 1;
                    let mut out = io::stdout().lock();
                    let _ = out.write_all(&buf[..n]).and_then(|_| out.flush());
                }
                _ => break,
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = tcsetattr(io::stdin().as_fd(), SetArg::TCSADRAIN, saved);
        }
    }
}

fn write_all(fd: BorrowedFd, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
