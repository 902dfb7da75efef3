//! One test's private sandbox store (`XDG_DATA_HOME`, `XDG_RUNTIME_DIR`) and working
//! directory: named sandboxes that no other test sees, removed when the test ends.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// One test's private sandbox store and working directory.
pub struct Named {
    pub data: TempDir,
    pub runtime: TempDir,
    pub work: TempDir,
}

impl Named {
    pub fn new() -> Named {
        Named {
            data: TempDir::new(),
            runtime: TempDir::new(),
            work: TempDir::new(),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = sbx();
        cmd.args(args)
            .current_dir(self.work.path())
            .env("XDG_DATA_HOME", self.data.path())
            .env("XDG_RUNTIME_DIR", self.runtime.path());
        cmd
    }

    pub fn sbx(&self, args: &[&str]) -> Outcome {
        run(self.cmd(args))
    }

    /// `sbx run --name NAME -d OPTIONS -- CMD...`, which must succeed at once.
    #[track_caller]
    pub fn detach(&self, name: &str, options: &[&str], command: &[&str]) {
        let mut args = vec!["run", "--name", name, "-d"];
        args.extend_from_slice(options);
        args.push("--");
        args.extend_from_slice(command);
        let out = self.sbx(&args);
        out.assert_success();
        assert_eq!(out.stdout().trim(), name, "run -d prints the name\n{out}");
    }

    pub fn ps(&self, all: bool) -> Vec<Value> {
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
    pub fn row(&self, name: &str) -> Value {
        self.ps(true)
            .into_iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in `sbx ps -a`"))
    }

    #[track_caller]
    pub fn inspect(&self, name: &str) -> Value {
        let out = self.sbx(&["inspect", name]);
        out.assert_success();
        serde_json::from_str(&out.stdout()).unwrap_or_else(|e| panic!("inspect JSON: {e}\n{out}"))
    }

    /// `sbx exec NAME -- sh -c SCRIPT`.
    pub fn exec_sh(&self, name: &str, script: &str) -> Outcome {
        self.sbx(&["exec", name, "--", "sh", "-c", script])
    }

    #[track_caller]
    pub fn wait_state(&self, name: &str, state: &str) -> Value {
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
