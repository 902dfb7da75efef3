//! Exit codes, decided here and nowhere else (as podman and timeout(1) use them). Only
//! `main` turns them into the process's status; a process after fork or clone that must
//! end at once passes one of them to `sys::exit_now`.

use nix::sys::wait::WaitStatus;

/// The command ran past `--timeout` and was stopped (as timeout(1)).
pub const TIMEOUT: i32 = 124;
/// sbx itself failed: bad option, bad profile, setup failure.
pub const SBX_ERROR: i32 = 125;
/// The command exists but cannot be executed.
pub const CANNOT_EXECUTE: i32 = 126;
/// The command was not found.
pub const NOT_FOUND: i32 = 127;

/// What `sbx run --help` ends with: where options stop, and the exit codes, written here
/// beside the codes themselves.
pub const HELP_RUN: &str = "Options come before `--`; everything after it is the command, even \
    `--profile`.\nExit status: the command's own; 128+N if it was killed by signal N; \
    125 for an sbx error; 126 if the command cannot be executed; 127 if it is not found; 124 \
    after --timeout.";
/// `sbx exec`'s exit status, for its `--help`.
pub const HELP_EXEC: &str =
    "Exit status: the command's own, as for `sbx run`; 125 for an sbx error.";
/// `sbx profile check`'s exit status, for its `--help`.
pub const HELP_CHECK_PROFILES: &str = "Exit status: 0, or 125 with every problem found.";

/// The status of a command killed by signal `signal`, as a shell reports it.
pub fn signalled(signal: i32) -> i32 {
    128 + signal
}

/// What a process's wait status means as an exit code; `None` while it is neither exited
/// nor killed.
pub fn from_wait_status(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(signalled(sig as i32)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

    #[test]
    fn signals_and_exits_become_codes() {
        let pid = Pid::from_raw(1);
        assert_eq!(from_wait_status(WaitStatus::Exited(pid, 3)), Some(3));
        assert_eq!(
            from_wait_status(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(from_wait_status(WaitStatus::StillAlive), None);
        assert_eq!(signalled(15), 143);
    }
}
