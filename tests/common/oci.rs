//! sbx-oci's bundles for the tests that drive it directly (tests/oci.rs,
//! tests/oci_systemd.rs): a busybox root (tests/data/mkimage.py) with the config
//! `sbx-oci spec` writes, edited, and a state root of its own.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

pub fn oci_bin() -> PathBuf {
    sbx_bin().with_file_name("sbx-oci")
}

/// A bundle (busybox root, config.json) and a state root of its own.
pub struct Bundle {
    pub dir: TempDir,
    pub config: Value,
}

impl Bundle {
    /// `spec --rootless` (or the root one) with a readable, writable root and no terminal;
    /// `args` is the process.
    pub fn new(args: &[&str]) -> Bundle {
        let dir = TempDir::new();
        let made = Command::new("/usr/bin/python3")
            .arg(data_dir().join("mkimage.py"))
            .arg("dir")
            .arg(dir.join("rootfs"))
            .output()
            .expect("run mkimage.py");
        assert!(made.status.success(), "mkimage.py: {made:?}");
        let mut spec = Command::new(oci_bin());
        spec.arg("spec").arg("--bundle").arg(dir.path());
        if !nix::unistd::geteuid().is_root() {
            spec.arg("--rootless");
        }
        run(spec).assert_success();
        let text = fs::read_to_string(dir.join("config.json")).unwrap();
        let mut config: Value = serde_json::from_str(&text).unwrap();
        config["process"]["terminal"] = json!(false);
        config["root"]["readonly"] = json!(false);
        config["process"]["args"] = json!(args);
        Bundle { dir, config }
    }

    /// Writes the config when it changed (a running `sbx-oci run` may be reading it).
    pub fn write(&self) {
        let path = self.dir.join("config.json");
        let text = serde_json::to_string_pretty(&self.config).unwrap();
        if fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            fs::write(path, text).unwrap();
        }
    }

    /// `sbx-oci --root STATE ARGS` in the bundle, with the config written.
    pub fn oci(&self, args: &[&str]) -> Command {
        self.write();
        let mut cmd = Command::new(oci_bin());
        cmd.arg("--root")
            .arg(self.dir.join("state"))
            .args(args)
            .current_dir(self.dir.path());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Outcome {
        run(self.oci(args))
    }

    pub fn state(&self, id: &str) -> Value {
        let out = self.run(&["state", id]);
        out.assert_success();
        serde_json::from_str(&out.stdout()).unwrap_or_else(|e| panic!("state JSON: {e}\n{out}"))
    }

    /// `create ARGS`: see `create_with`.
    pub fn create(&self, args: &[&str]) -> (i32, String) {
        self.create_with(&[], args, &[])
    }

    /// `sbx-oci GLOBAL create ARGS` with `env` added, whose container process keeps its
    /// stdout and stderr (as runc's does): files here, not the harness's pipes, which
    /// would stay open. Its exit code and stderr.
    pub fn create_with(
        &self,
        global: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (i32, String) {
        let err = self.dir.join("create.err");
        let mut cmd = self.oci(global);
        cmd.arg("create")
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(fs::File::create(self.dir.join("create.out")).unwrap())
            .stderr(fs::File::create(&err).unwrap());
        let status = cmd.status().expect("run sbx-oci create");
        (
            status.code().unwrap_or(-1),
            fs::read_to_string(err).unwrap(),
        )
    }

    pub fn wait_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + scaled(Duration::from_secs(10));
        loop {
            let out = self.run(&["state", id]);
            if out.code != 0 && Instant::now() < deadline {
                // Not created yet.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let state = self.state(id);
            if state["status"] == status || Instant::now() > deadline {
                assert_eq!(state["status"], status, "{state}");
                return state;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn rootfs(&self, path: &str) -> PathBuf {
        self.dir.join("rootfs").join(path.trim_start_matches('/'))
    }

    /// `run ID` of `script`: the outcome.
    pub fn sh(&mut self, script: &str) -> Outcome {
        self.config["process"]["args"] = json!(["sh", "-c", script]);
        let id = unique("c");
        self.run(&["run", &id])
    }

    /// The container's directory in the state root.
    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.dir.join("state").join(id)
    }
}
