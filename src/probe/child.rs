//! Running a probe in a forked child: the child's namespaces and mounts die with it, and
//! only its verdict, Ok or a message, comes back through a pipe.

use std::time::Duration;

use crate::runtime::fork::{fork_verdict, Forked, Judged};

/// Runs `body` in a forked child and returns its verdict: Ok, or the message it sent back.
/// A child that does not finish within two seconds is killed and reaped.
pub(super) fn in_child(body: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    // SAFETY: sbx starts no threads before or during `sbx check`, so the child may allocate
    // and do anything.
    match unsafe { fork_verdict() } {
        Err(e) => Err(format!("fork: {e}")),
        Ok(Forked::Child(verdict)) => verdict.conclude(body),
        Ok(Forked::Parent(mut child)) => {
            let Some(message) = child.read(Some(Duration::from_secs(2))) else {
                child.kill();
                return Err("no answer from the probe's child within 2 s".to_string());
            };
            match child.judge(message) {
                Ok(()) => Ok(()),
                Err(Judged::Failed(msg)) => Err(msg),
                Err(Judged::Ended(other)) => Err(format!("probe child ended with {other:?}")),
                Err(Judged::Wait(e)) => Err(format!("waitpid: {e}")),
            }
        }
    }
}
