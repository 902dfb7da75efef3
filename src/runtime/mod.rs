//! The runtime toolkit: what the supervisor, the sandbox's init and `sbx exec` share, so
//! each is written once and neither side imports the other.
//!
//! - `command`: the command's own process, from fork to execve (init and `sbx exec`);
//! - `poll`: a poll round over named sources;
//! - `signals`: the forwarded signals, signal sets and signalfd reading;
//! - `namespaces`: the namespaces a sandbox has, to create or to enter.

pub mod command;
pub mod namespaces;
pub mod poll;
pub mod signals;
