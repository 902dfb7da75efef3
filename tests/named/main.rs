//! Named sandboxes: `run --name [-d]`, `ps`, `exec`, `stop`, `kill`, `start`, `logs`, `rm`,
//! `inspect`; `--status-json`, `--env-file` and `--net sandbox:NAME`.
//!
//! Every test keeps its sandboxes in private XDG_DATA_HOME and XDG_RUNTIME_DIR
//! directories, so tests run in parallel without seeing each other's names, and removes
//! whatever it left running when it ends.

#[path = "../common/mod.rs"]
mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::named::Named;
use common::*;

mod detached;
mod exec;
mod image;
mod join;
mod lifecycle;
mod status;
mod users;
use nix::sys::signal::Signal;
use serde_json::Value;

impl Named {
    /// A store with a busybox rootfs imported as `name`, or None (skipped) without
    /// subordinate ids or a static busybox.
    fn with_image(name: &str) -> Option<Named> {
        if !require_subids() {
            return None;
        }
        if !is_static_elf(Path::new("/bin/busybox")) {
            skip("/bin/busybox is missing or not static (install busybox-static)");
            return None;
        }
        let n = Named::new();
        let mut mk = Command::new("python3");
        mk.arg(data_dir().join("mkimage.py"))
            .args(["rootfs", "img.tar"])
            .current_dir(n.work.path());
        run(mk).assert_success();
        n.sbx(&["image", "import", name, "img.tar"])
            .assert_success();
        Some(n)
    }
}

fn marked_sleep(marker: &str) -> String {
    format!("exec -a {marker} sleep 1000")
}

/// A TCP port nothing listens on on the host's loopback right now: the kernel picks it.
/// (The servers here listen inside a sandbox; the host's side must find nothing there.)
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
