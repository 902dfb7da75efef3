//! sbx as a library: everything but the command lines. Two binaries use it: `sbx`
//! (src/main.rs), and `sbx-pull` (src/bin/sbx-pull.rs), which holds the registry client
//! (an HTTP and TLS stack) so that `sbx` itself, started for every sandbox, stays small.

pub mod beneath;
pub mod child;
pub mod cli;
pub mod clock;
pub mod complete;
pub mod envfile;
pub mod error;
pub mod exit;
pub mod habits;
pub mod helpers;
pub mod holder;
pub mod image;
pub mod init;
pub mod instance;
pub mod limits;
pub mod meta;
pub mod network;
pub mod oci;
pub mod plan;
pub mod planner;
pub mod prepare;
pub mod probe;
pub mod profile;
pub mod protect;
pub mod pull;
pub mod runtime;
pub mod security;
pub mod supervisor;
pub mod sync;
pub mod sys;
