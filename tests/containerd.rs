//! containerd as root driving sbx-oci: `ctr run --runc-binary sbx-oci` of an imported
//! image (tests/data/mkimage.py), exit codes and signals passed through, the image's env,
//! working directory and user, and the engine's device rules. Each test starts Debian's
//! containerd on a private socket, root and state directory (no CRI plugin) and tears it
//! down afterwards, shims, mounts and cgroups included, even when the test fails.
//! All tests are `asroot_` (the root tier runs them).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::oci::oci_bin;
use common::*;

const IMAGE: &str = "docker.io/library/test:latest";

/// A containerd of the test's own, with the test image imported into a namespace of its
/// own. Dropped: containerd and its shims killed, mounts beneath its directories undone,
/// its cgroups and directories removed.
struct Containerd {
    dir: TempDir,
    namespace: String,
    daemon: Option<Child>,
}

impl Containerd {
    /// None (after a skip) where the test cannot run: not root, or no containerd.
    fn start(image_kind: &[&str]) -> Option<Containerd> {
        if !nix::unistd::geteuid().is_root() {
            skip("needs root (the root tier runs it)");
            return None;
        }
        for tool in ["containerd", "ctr", "containerd-shim-runc-v2"] {
            let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .any(|d| d.join(tool).is_file());
            if !found {
                skip(&format!(
                    "{tool} is not installed (ci/setup-host.sh installs containerd)"
                ));
                return None;
            }
        }
        let dir = TempDir::new();
        // ctr's namespace names the cgroup (/NAMESPACE/ID): a unique one per test.
        let namespace = format!("sbxtest{}", std::process::id() ^ rand_suffix());
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.internal.v1.opt\"]\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
            d = dir.str()
        );
        fs::write(dir.join("config.toml"), config).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("containerd.log")).unwrap())
            .spawn()
            .expect("start containerd");
        let mut c = Containerd {
            dir,
            namespace,
            daemon: Some(daemon),
        };
        c.wait_ready();
        let tar = c.dir.join("image.tar");
        let made = Command::new("/usr/bin/python3")
            .arg(data_dir().join("mkimage.py"))
            .arg(image_kind[0])
            .arg(&tar)
            .args(&image_kind[1..])
            .output()
            .expect("run mkimage.py");
        assert!(made.status.success(), "mkimage.py: {made:?}");
        run(c.ctr(&["image", "import"]).arg(&tar)).assert_success();
        Some(c)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + scaled(Duration::from_secs(20));
        loop {
            if run(self.ctr(&["version"])).code == 0 {
                return;
            }
            if let Some(status) = self
                .daemon
                .as_mut()
                .and_then(|d| d.try_wait().ok().flatten())
            {
                panic!("containerd exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer on its socket:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args);
        cmd
    }

    /// The state directory sbx-oci is given (`--runc-root`).
    fn runtime_root(&self) -> PathBuf {
        self.dir.join("runtime")
    }

    /// `ctr run --rm --runc-binary sbx-oci OPTIONS IMAGE ID ARGS`.
    fn run_cmd(&self, id: &str, options: &[&str], args: &[&str]) -> Command {
        let mut cmd = self.ctr(&["run", "--rm", "--runc-binary"]);
        cmd.arg(oci_bin())
            .arg("--runc-root")
            .arg(self.runtime_root())
            .arg("--fifo-dir")
            .arg(self.dir.join("fifo"))
            .args(options)
            .arg(IMAGE)
            .arg(id)
            .args(args);
        cmd
    }

    fn run(&self, id: &str, options: &[&str], args: &[&str]) -> Outcome {
        spawn(&mut self.run_cmd(id, options, args), None).finish(Duration::from_secs(60))
    }

    /// Nothing of the container is left: no task, no container, no sbx-oci state.
    #[track_caller]
    fn assert_gone(&self, id: &str) {
        for what in ["task", "container"] {
            let out = run(self.ctr(&[what, "ls", "-q"]));
            out.assert_success();
            assert!(
                !out.lines().iter().any(|l| l == id),
                "{what} {id} is left\n{out}"
            );
        }
        let state = self.runtime_root().join(&self.namespace).join(id);
        assert!(!state.exists(), "sbx-oci left {}", state.display());
        // In every hierarchy: the cgroup v2 leaf, and each v1 one on a hybrid host.
        for (_, mount) in cgroup_hierarchies() {
            let leaf = mount.join(&self.namespace).join(id);
            assert!(!leaf.exists(), "sbx-oci left cgroup {}", leaf.display());
        }
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// Pids whose command line names `needle` (the containerd's directory): its shims.
fn processes_naming(needle: &Path) -> Vec<i32> {
    let needle = needle.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .contains(&needle)
        {
            pids.push(pid);
        }
    }
    pids
}

impl Drop for Containerd {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Some(mut daemon) = self.daemon.take() {
            let _ = kill(Pid::from_raw(daemon.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(daemon.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        // Shims (and any container they still hold) name the socket on their command line.
        for pid in processes_naming(self.dir.path()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // Snapshots and task roots mounted beneath the directory, deepest first.
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<PathBuf> = parse_mountinfo(&mountinfo)
            .into_iter()
            .map(|m| PathBuf::from(m.mount_point))
            .filter(|p| p.starts_with(self.dir.path()))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for point in points {
            let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
        }
        // The namespace's cgroups (/NAMESPACE): sbx-oci removes each container's own.
        for (_, mount) in cgroup_hierarchies() {
            let _ = fs::remove_dir(mount.join(&self.namespace));
        }
        // TempDir removes the directory.
    }
}

fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4))
        .map(PathBuf::from)
}

#[test]
fn asroot_containerd_passes_exit_codes_and_signals_through() {
    let Some(c) = Containerd::start(&["docker-archive-1"]) else {
        return;
    };
    let out = c.run("zero", &[], &["sh", "-c", "echo ran"]);
    out.assert_success();
    assert_eq!(out.lines(), ["ran"], "{out}");
    c.assert_gone("zero");
    c.run("three", &[], &["sh", "-c", "exit 3"]).assert_code(3);
    c.assert_gone("three");
    // A signal from the engine: `ctr task kill -s KILL` ends it with 128 + 9.
    let running = spawn(&mut c.run_cmd("killed", &[], &["sleep", "600"]), None);
    eventually("the task runs", || {
        run(c.ctr(&["task", "ls"]))
            .lines()
            .iter()
            .any(|l| l.starts_with("killed ") && l.contains("RUNNING"))
    });
    run(c.ctr(&["task", "kill", "--signal", "KILL", "killed"])).assert_success();
    running.finish(Duration::from_secs(60)).assert_code(137);
    c.assert_gone("killed");
}

#[test]
fn asroot_containerd_gives_the_image_env_cwd_and_user() {
    let Some(c) = Containerd::start(&["docker-archive-1"]) else {
        return;
    };
    // mkimage.py's image config: IMAGE_VAR=from-image, WorkingDir /srv, User 4242:4242.
    let script = "echo $IMAGE_VAR $EXTRA; pwd; id -u; id -g; cat /proc/1/cmdline | tr '\\0' ' '";
    let out = c.run("image-config", &[], &["sh", "-c", script]);
    out.assert_success();
    let cmdline = format!("sh -c {script} ");
    assert_eq!(
        out.lines(),
        ["from-image", "/srv", "4242", "4242", cmdline.as_str()],
        "{out}"
    );
    let out = c.run(
        "options",
        &["--env", "EXTRA=given", "--cwd", "/tmp"],
        &["sh", "-c", "echo $IMAGE_VAR $EXTRA; pwd"],
    );
    out.assert_success();
    assert_eq!(out.lines(), ["from-image given", "/tmp"], "{out}");
}

#[test]
fn asroot_containerd_device_rules_hold() {
    // The same image run as root (User 0), with CAP_MKNOD, as containerd gives it.
    let Some(c) = Containerd::start(&["user", "0:0", "file"]) else {
        return;
    };
    // A block device of this machine (a disk, a loop device) that root on the host can
    // open: containerd's rules (deny all, allow null, zero, full, random, urandom, tty,
    // ptmx, pts) must keep the container from opening it, as runc's device cgroup does.
    let Some(disk) = fs::read_dir("/sys/dev/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .find(|d| {
            let uevent = fs::read_to_string(format!("/sys/dev/block/{d}/uevent"));
            let name = uevent.ok().and_then(|u| {
                u.lines()
                    .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_string))
            });
            name.is_some_and(|n| fs::File::open(Path::new("/dev").join(n)).is_ok())
        })
    else {
        skip("no block device that root can open on this host");
        return;
    };
    let (major, minor) = disk.split_once(':').unwrap();
    let script = format!(
        "id -u; mknod /tmp/disk b {major} {minor} && echo made; \
         head -c 0 /tmp/disk && echo opened-disk; \
         head -c 1 /dev/zero >/dev/null && echo read-zero; \
         mknod /tmp/zero c 1 5 && head -c 1 /tmp/zero >/dev/null && echo read-own-zero; true"
    );
    let out = c.run("devices", &[], &["sh", "-c", &script]);
    out.assert_success();
    // runc's rules let root make any device node, and use only the allowed ones.
    assert_eq!(
        out.lines(),
        ["0", "made", "read-zero", "read-own-zero"],
        "{out}"
    );
    assert!(out.stderr().contains("Operation not permitted"), "{out}");
}

#[test]
fn asroot_containerd_limits_apply_or_are_refused() {
    let Some(c) = Containerd::start(&["docker-archive-1"]) else {
        return;
    };
    // The memory limit is in force in the memory controller's cgroup, wherever the host
    // has it: cgroup v1 on a hybrid host (read through a bind of the hierarchy, as the
    // container's own /sys/fs/cgroup is a cgroup2), the v2 leaf elsewhere. A host with
    // neither has sbx-oci refuse rather than run without it.
    let v1_memory = cgroup_hierarchies()
        .into_iter()
        .find(|(c, _)| c.iter().any(|c| c == "memory"))
        .map(|(_, mount)| mount);
    let v2_memory = cgroup2_mount()
        .and_then(|m| fs::read_to_string(m.join("cgroup.controllers")).ok())
        .is_some_and(|c| c.split_whitespace().any(|c| c == "memory"));
    let out = match &v1_memory {
        Some(mount) => {
            let bind = format!(
                "type=bind,src={},dst=/memory-hierarchy,options=rbind:ro",
                mount.display()
            );
            c.run(
                "limited",
                &["--memory-limit", "67108864", "--mount", &bind],
                &[
                    "sh",
                    "-c",
                    "p=$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup); \
                     cat /memory-hierarchy$p/memory.limit_in_bytes",
                ],
            )
        }
        None => c.run(
            "limited",
            &["--memory-limit", "67108864"],
            &[
                "sh",
                "-c",
                "p=$(sed -n 's/^0:://p' /proc/self/cgroup); cat /sys/fs/cgroup$p/memory.max",
            ],
        ),
    };
    if v1_memory.is_some() || v2_memory {
        out.assert_success();
        assert_eq!(out.lines(), ["67108864"], "{out}");
    } else {
        assert_ne!(out.code, 0, "{out}");
        assert!(
            out.stderr().contains("memory controller is not available"),
            "{out}"
        );
    }
    c.assert_gone("limited");
}
