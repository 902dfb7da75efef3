//! The runtime toolkit: what the supervisor, the sandbox's init and `sbx exec` share, so
//! each is written once and neither side imports the other.
//!
//! - `command`: the command's own process, from fork to execve (init and `sbx exec`);
//! - `poll`: a poll round over named sources;
//! - `signals`: the forwarded signals, signal sets and signalfd reading;
//! - `namespaces`: the namespaces a sandbox has, to create or to enter;
//! - `control`: a named sandbox's control socket (init listens, `sbx exec` connects);
//! - `fork`: fork and verdict, for a child that reports only Ok or a message;
//! - `stdio`, `tty`, `relay`: the caller's terminal, relayed as pipes or through a pty.

pub mod command;
pub mod control;
pub mod fork;
pub mod namespaces;
pub mod poll;
pub mod relay;
pub mod signals;
pub mod stdio;
pub mod tty;
