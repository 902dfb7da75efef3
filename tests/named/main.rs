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

/// One test's private sandbox store and working directory.
struct Named {
    data: TempDir,
    runtime: TempDir,
    work: TempDir,
}

impl Named {
    fn new() -> Named {
        Named {
            data: TempDir::new(),
            runtime: TempDir::new(),
            work: TempDir::new(),
        }
    }

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

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = sbx();
        cmd.args(args)
            .current_dir(self.work.path())
            .env("XDG_DATA_HOME", self.data.path())
            .env("XDG_RUNTIME_DIR", self.runtime.path());
        cmd
    }

    fn sbx(&self, args: &[&str]) -> Outcome {
        run(self.cmd(args))
    }

    /// `sbx run --name NAME -d OPTIONS -- CMD...`, which must succeed at once.
    #[track_caller]
    fn detach(&self, name: &str, options: &[&str], command: &[&str]) {
        let mut args = vec!["run", "--name", name, "-d"];
        args.extend_from_slice(options);
        args.push("--");
        args.extend_from_slice(command);
        let out = self.sbx(&args);
        out.assert_success();
        assert_eq!(out.stdout().trim(), name, "run -d prints the name\n{out}");
    }

    fn ps(&self, all: bool) -> Vec<Value> {
        let out = self.sbx(if all {
            &["ps", "-a", "--json"]
        } else {
            &["ps", "--json"]
        });
        out.assert_success();
        match serde_json::from_str(&out.stdout()) {
            Ok(Value::Array(rows)) => rows,
            other => panic!("ps --json is not an array: {other:?}\n{out}"),
        }
    }

    /// The `ps -a --json` row of `name`.
    #[track_caller]
    fn row(&self, name: &str) -> Value {
        self.ps(true)
            .into_iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in `sbx ps -a`"))
    }

    #[track_caller]
    fn inspect(&self, name: &str) -> Value {
        let out = self.sbx(&["inspect", name]);
        out.assert_success();
        serde_json::from_str(&out.stdout()).unwrap_or_else(|e| panic!("inspect JSON: {e}\n{out}"))
    }

    /// `sbx exec NAME -- sh -c SCRIPT`.
    fn exec_sh(&self, name: &str, script: &str) -> Outcome {
        self.sbx(&["exec", name, "--", "sh", "-c", script])
    }

    #[track_caller]
    fn wait_state(&self, name: &str, state: &str) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let row = self.row(name);
            if row["state"] == state {
                return row;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never became {state}: {row}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        // Whatever a failed test left running goes, before its directories do.
        if let Ok(Value::Array(rows)) =
            serde_json::from_slice::<Value>(&run(self.cmd(&["ps", "-a", "--json"])).stdout)
        {
            for row in rows {
                if let Some(name) = row["name"].as_str() {
                    let _ = run(self.cmd(&["rm", "-f", name]));
                }
            }
        }
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

#[track_caller]
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn require_tool(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(tool).exists()))
        .unwrap_or(false);
    found || skip(&format!("{tool} is not installed"))
}
