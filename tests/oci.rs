//! sbx-oci, the OCI runtime: the lifecycle (create leaves the process blocked, start runs
//! it, state, kill, delete), config fields as the process sees them, the console socket,
//! and rootless podman driving it (`podman --runtime sbx-oci`). Bundles are a busybox
//! root (tests/data/mkimage.py) with the config `sbx-oci spec --rootless` writes, edited.
//! `asroot_` tests run as root (the root tier).

mod common;

use std::fs;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::oci::{oci_bin, Bundle};
use common::*;

#[test]
fn create_leaves_the_process_blocked_until_start() {
    let b = Bundle::new(&["sh", "-c", "echo ran > /tmp/ran; exec sleep 60"]);
    let pid_file = b.dir.join("pid");
    let id = unique("life");
    let (code, err) = b.create(&[
        "--bundle",
        ".",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    assert_eq!(code, 0, "{err}");
    // Written before create returned.
    let pid: i32 = fs::read_to_string(&pid_file)
        .expect("the pid file exists when create returns")
        .trim()
        .parse()
        .unwrap();
    let state = b.state(&id);
    assert_eq!(state["status"], "created", "{state}");
    assert_eq!(state["pid"], pid, "{state}");
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["ociVersion"], "1.2.0");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !b.rootfs("/tmp/ran").exists(),
        "nothing of process.args runs before start"
    );
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the process waits"
    );

    b.run(&["start", &id]).assert_success();
    eventually("the process runs after start", || {
        b.rootfs("/tmp/ran").exists()
    });
    assert_eq!(b.state(&id)["status"], "running");
    // Started once only.
    b.run(&["start", &id]).assert_code(125);
    // Not deleted while it runs.
    let out = b.run(&["delete", &id]);
    assert_eq!(out.code, 125, "{out}");
    assert!(out.stderr().contains("running"), "{out}");

    b.run(&["kill", &id, "KILL"]).assert_success();
    let state = b.wait_status(&id, "stopped");
    assert_eq!(state["pid"], 0, "{state}");
    b.run(&["delete", &id]).assert_success();
    let out = b.run(&["state", &id]);
    assert!(out.stderr().contains("does not exist"), "{out}");
    assert!(!b.dir.join("state").join(&id).exists());
}

#[test]
fn run_passes_the_exit_code_and_a_signal_through() {
    let mut b = Bundle::new(&[]);
    b.sh("exit 7").assert_code(7);
    // Killed by a signal: 128 + N, as a shell reports it.
    b.config["process"]["args"] = json!(["sleep", "60"]);
    let id = unique("sig");
    let mut running = spawn(&mut b.oci(&["run", &id]), None);
    let deadline = Instant::now() + scaled(Duration::from_secs(20));
    while b.run(&["state", &id]).code != 0 {
        if let Ok(Some(_)) | Err(_) = running.child.try_wait() {
            panic!("run ended early\n{}", running.finish(TIMEOUT));
        }
        assert!(Instant::now() < deadline, "run did not create {id}");
        std::thread::sleep(Duration::from_millis(20));
    }
    b.wait_status(&id, "running");
    b.run(&["kill", &id, "9"]).assert_success();
    running.finish(TIMEOUT).assert_code(137);
    assert!(
        !b.dir.join("state").join(&id).exists(),
        "run deletes what it made"
    );
}

#[test]
fn kill_sends_the_signal_asked_for() {
    let b = Bundle::new(&[
        "sh",
        "-c",
        "trap 'echo got-usr1 > /tmp/sig; exit 0' USR1; echo ready > /tmp/ready; while :; do sleep 0.05; done",
    ]);
    let id = unique("kill");
    let (code, err) = b.create(&[&id]);
    assert_eq!(code, 0, "{err}");
    b.run(&["start", &id]).assert_success();
    eventually("the trap is set", || b.rootfs("/tmp/ready").exists());
    b.run(&["kill", &id, "SIGUSR1"]).assert_success();
    b.wait_status(&id, "stopped");
    assert_eq!(
        fs::read_to_string(b.rootfs("/tmp/sig")).unwrap(),
        "got-usr1\n"
    );
    // A stopped container: runc's words, which containerd's shim reads as "ended".
    let out = b.run(&["kill", &id, "TERM"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr().contains("container not running"), "{out}");
    b.run(&["delete", &id]).assert_success();
    // A stopped container is not signalled again, nor any process that took its pid.
    let out = b.run(&["kill", &id, "KILL"]);
    assert!(out.stderr().contains("does not exist"), "{out}");
}

/// `kill ID TERM` of a created container stops it, as runc's does (its pid 1 would
/// otherwise ignore TERM): nothing of process.args ever runs.
#[test]
fn kill_term_stops_a_created_container() {
    let b = Bundle::new(&["sh", "-c", "echo ran > /tmp/ran"]);
    let id = unique("kill-created");
    let (code, err) = b.create(&[&id]);
    assert_eq!(code, 0, "{err}");
    b.run(&["kill", &id, "TERM"]).assert_success();
    b.wait_status(&id, "stopped");
    b.run(&["delete", &id]).assert_success();
    assert!(!b.rootfs("/tmp/ran").exists(), "process.args ran");
}

#[test]
fn hostname_env_cwd_and_user_are_the_configs() {
    let mut b = Bundle::new(&[]);
    b.config["hostname"] = json!("ocibox");
    b.config["process"]["env"] = json!(["PATH=/bin:/usr/bin", "FOO=bar baz"]);
    b.config["process"]["cwd"] = json!("/data");
    let out = b.sh("hostname; echo \"$FOO\"; pwd; id -u; id -g; env | sort | tr '\\n' ' '");
    out.assert_success();
    let lines = out.lines();
    assert_eq!(
        lines[..5],
        ["ocibox", "bar baz", "/data", "0", "0"],
        "{out}"
    );
    // Exactly the config's environment.
    assert_eq!(
        lines[5].trim(),
        "FOO=bar baz PATH=/bin:/usr/bin PWD=/data SHLVL=1",
        "{out}"
    );
}

#[test]
fn readonly_paths_are_read_only() {
    let mut b = Bundle::new(&[]);
    let script = "touch /data/x && echo wrote";
    b.config["linux"]["readonlyPaths"] = json!([]);
    let control = b.sh(script);
    assert_eq!(
        control.lines(),
        ["wrote"],
        "control: writable without it\n{control}"
    );
    b.config["linux"]["readonlyPaths"] = json!(["/data"]);
    let out = b.sh(script);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr().contains("Read-only file system"), "{out}");
}

/// A seccomp profile that refuses close_range, installed before the last steps as runc
/// does without noNewPrivileges (the runtime-tools suite's profile lists no close_range):
/// the descriptors are still marked close-on-exec, with fcntl.
#[test]
fn a_profile_without_close_range_still_runs_the_process() {
    let mut b = Bundle::new(&[]);
    b.config["process"]["noNewPrivileges"] = json!(false);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["close_range"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    });
    let out = b.sh("grep Seccomp: /proc/self/status; ls /proc/self/fd | tr '\\n' ' '");
    out.assert_success();
    assert_eq!(out.lines(), ["Seccomp:\t2", "0 1 2 3 "], "{out}");
}

/// `features` says seccomp is supported and with what; a profile made of all it lists
/// (every architecture and supported flag) is taken and enforced.
#[test]
fn features_say_what_seccomp_supports() {
    let out = run({
        let mut cmd = Command::new(oci_bin());
        cmd.arg("features");
        cmd
    });
    out.assert_success();
    let features: Value = serde_json::from_str(&out.stdout()).unwrap();
    let seccomp = &features["linux"]["seccomp"];
    assert_eq!(seccomp["enabled"], true, "{seccomp}");
    let has = |key: &str, name: &str| {
        seccomp[key]
            .as_array()
            .is_some_and(|v| v.contains(&json!(name)))
    };
    for action in [
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_LOG",
    ] {
        assert!(has("actions", action), "{action}: {seccomp}");
    }
    assert!(!has("actions", "SCMP_ACT_NOTIFY"), "{seccomp}");
    assert!(has("operators", "SCMP_CMP_MASKED_EQ"), "{seccomp}");
    #[cfg(target_arch = "x86_64")]
    assert!(
        has("archs", "SCMP_ARCH_X86") && has("archs", "SCMP_ARCH_X32"),
        "{seccomp}"
    );
    assert!(
        has("supportedFlags", "SECCOMP_FILTER_FLAG_TSYNC"),
        "{seccomp}"
    );
    assert!(
        has("knownFlags", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"),
        "{seccomp}"
    );

    let mut b = Bundle::new(&[]);
    b.config["process"]["noNewPrivileges"] = json!(true);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": seccomp["archs"],
        "flags": seccomp["supportedFlags"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
    });
    let out = b.sh("grep Seccomp: /proc/self/status; touch /tmp/b; mkdir /tmp/a");
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.lines(), ["Seccomp:\t2"], "{out}");
    assert!(out.stderr().contains("Permission denied"), "{out}");
    assert!(!b.rootfs("/tmp/a").exists() && b.rootfs("/tmp/b").is_file());
}

#[test]
fn masked_paths_are_masked() {
    let mut b = Bundle::new(&[]);
    let script = "cat /etc/hostname; echo; ls /data | wc -l";
    fs::write(b.rootfs("/etc/hostname"), "secret").unwrap();
    fs::write(b.rootfs("/data/file"), "x").unwrap();
    b.config["linux"]["maskedPaths"] = json!([]);
    let control = b.sh(script);
    assert_eq!(control.lines()[0], "secret", "control\n{control}");
    assert_ne!(control.lines()[1], "0", "control\n{control}");
    b.config["linux"]["maskedPaths"] = json!(["/etc/hostname", "/data", "/no/such/path"]);
    let out = b.sh(script);
    out.assert_success();
    assert_eq!(out.lines(), ["", "0"], "{out}");
}

#[test]
fn a_bind_mount_with_ro_is_read_only() {
    let mut b = Bundle::new(&[]);
    let host = TempDir::new();
    let mount = |options: &[&str]| {
        json!({"destination": "/mnt/host", "type": "bind", "source": host.path(),
               "options": options})
    };
    let script = "echo hi > /mnt/host/f && echo wrote";
    let mounts = b.config["mounts"].as_array().unwrap().clone();
    let with = |m: Value| {
        let mut all = mounts.clone();
        all.push(m);
        json!(all)
    };
    b.config["mounts"] = with(mount(&["rbind", "rw"]));
    let control = b.sh(script);
    assert_eq!(control.lines(), ["wrote"], "control\n{control}");
    assert_eq!(fs::read_to_string(host.join("f")).unwrap(), "hi\n");
    fs::remove_file(host.join("f")).unwrap();
    b.config["mounts"] = with(mount(&["rbind", "ro"]));
    let out = b.sh(script);
    assert!(out.stderr().contains("Read-only file system"), "{out}");
    assert!(!host.join("f").exists());
}

/// What the runtime-tools suite gives a bind mount: an atime mode, propagation, and
/// filesystem options that mount(2) ignores for a bind (runc passes them on). As root: in
/// a user namespace the kernel locks the atime mode of the host's mounts.
#[test]
fn asroot_a_bind_mount_takes_strictatime_propagation_and_ignores_fs_options() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root (the root tier runs it)");
        return;
    }
    let mut b = Bundle::new(&[]);
    let host = TempDir::new();
    fs::write(host.join("f"), "from the host\n").unwrap();
    let mut mounts = b.config["mounts"].as_array().unwrap().clone();
    mounts.push(json!({"destination": "/mnt/host", "source": host.path(),
        "options": ["nosuid", "strictatime", "mode=755", "size=1k", "bind", "private"]}));
    b.config["mounts"] = json!(mounts);
    let out = b.sh("cat /mnt/host/f; grep ' /mnt/host ' /proc/self/mountinfo | cut -d' ' -f6");
    out.assert_success();
    assert_eq!(out.lines()[0], "from the host", "{out}");
    let options = &out.lines()[1];
    assert!(
        options.contains("nosuid") && !options.contains("relatime") && !options.contains("noatime"),
        "strictatime: {out}"
    );
}

/// Receives one fd over `stream` (SCM_RIGHTS).
fn receive_fd(stream: &std::os::unix::net::UnixStream) -> OwnedFd {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .expect("recvmsg on the console socket");
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just gave us this descriptor; we are its only owner.
            return unsafe { OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no descriptor came over the console socket");
}

#[test]
fn the_console_socket_gets_a_working_pty_master() {
    let mut b = Bundle::new(&["sh"]);
    b.config["process"]["terminal"] = json!(true);
    let socket_path = b.dir.join("console.sock");
    let listener = UnixListener::bind(&socket_path).unwrap();
    let id = unique("tty");
    let create = spawn(
        &mut b.oci(&[
            "create",
            "--console-socket",
            socket_path.to_str().unwrap(),
            &id,
        ]),
        None,
    );
    let (stream, _) = listener.accept().unwrap();
    let master = fs::File::from(receive_fd(&stream));
    create.finish(TIMEOUT).assert_success();
    b.run(&["start", &id]).assert_success();
    let mut writer = master.try_clone().unwrap();
    writer
        .write_all(b"tty; echo sum-$((40+2)); exit 3\n")
        .unwrap();
    let mut seen = Vec::new();
    let mut reader = master;
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("sum-42\r\n") && Instant::now() < deadline {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("sum-42\r\n"), "{text}");
    assert!(
        text.contains("/dev/pts/0"),
        "the pty is its terminal\n{text}"
    );
    b.wait_status(&id, "stopped");
    b.run(&["delete", &id]).assert_success();
}

#[test]
fn errors_go_to_the_log_in_the_format_asked_for() {
    let b = Bundle::new(&["true"]);
    let log = b.dir.join("log.json");
    let out = b.run(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "start",
        "no-such-container",
    ]);
    assert_eq!(out.code, 125, "{out}");
    let text = fs::read_to_string(&log).expect("the log is written");
    let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["level"], "error", "{text}");
    assert!(
        line["msg"]
            .as_str()
            .unwrap()
            .contains("no-such-container does not exist"),
        "{text}"
    );
    assert!(line["time"].as_str().unwrap().ends_with('Z'), "{text}");
}

#[test]
fn a_missing_program_fails_create_with_runcs_message() {
    let b = Bundle::new(&["no-such-program"]);
    let id = unique("missing");
    let (code, err) = b.create(&[&id]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("executable file not found in $PATH"), "{err}");
    assert!(
        !b.dir.join("state").join(&id).exists(),
        "nothing is left behind"
    );
}

#[test]
fn exec_runs_in_the_containers_namespaces() {
    let b = Bundle::new(&["sleep", "60"]);
    let id = unique("exec");
    let (code, err) = b.create(&[&id]);
    assert_eq!(code, 0, "{err}");
    b.run(&["start", &id]).assert_success();
    let out = b.run(&[
        "exec",
        "--env",
        "X=y",
        "--cwd",
        "/etc",
        &id,
        "sh",
        "-c",
        "echo $X; pwd; cat /proc/1/cmdline",
    ]);
    out.assert_success();
    assert_eq!(
        out.lines(),
        ["y", "/etc", "sleep60"].map(|s| s.replace("sleep60", "sleep\u{0}60\u{0}")),
        "{out}"
    );
    b.run(&["exec", &id, "sh", "-c", "exit 4"]).assert_code(4);
    b.run(&["delete", "--force", &id]).assert_success();
}

/// Execs into one container, eight at a time, all run: the new process reports Ready only
/// after `exec` has its pid from the intermediate. (Before, about one exec in a hundred,
/// more under load, failed with "expected Child, got Ready"; eight at a time made two to
/// five of these 200 fail.) The pid `--pid-file` gets is the new process's.
#[test]
fn rapid_execs_into_one_container_all_succeed() {
    let b = Bundle::new(&["sleep", "60"]);
    let id = unique("execs");
    let (code, err) = b.create(&[&id]);
    assert_eq!(code, 0, "{err}");
    b.run(&["start", &id]).assert_success();
    let failed: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|w| {
                let (b, id) = (&b, &id);
                s.spawn(move || {
                    (0..25)
                        .map(|i| (w * 25 + i, i % 7))
                        .map(|(n, code)| {
                            (
                                n,
                                code,
                                b.run(&["exec", id, "sh", "-c", &format!("exit {code}")]),
                            )
                        })
                        .filter(|(_, code, out)| out.code != *code)
                        .map(|(n, _, out)| format!("exec {n}: {out}"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    // The pid the intermediate reported is the new process's.
    let pid_file = b.dir.join("exec.pid");
    let pid_arg = pid_file.to_str().unwrap();
    // Its output not on the harness's pipes, which it would hold open.
    let status = b
        .oci(&["exec", "-d", "--pid-file", pid_arg, &id, "sleep", "30"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    let pid = fs::read_to_string(&pid_file).unwrap_or_default();
    let cmdline = fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap_or_default();
    b.run(&["delete", "--force", &id]).assert_success();
    assert!(
        failed.is_empty(),
        "{} of 200 execs failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert!(status.success(), "exec -d: {status}");
    assert_eq!(cmdline, b"sleep\x0030\x00", "pid {pid:?}");
}

#[test]
fn asroot_device_nodes_are_made_and_the_cgroup_joined() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root (the root tier runs it)");
        return;
    }
    let mut b = Bundle::new(&[]);
    let leaf = format!("/{}", unique("oci-cg"));
    b.config["linux"]["cgroupsPath"] = json!(leaf);
    // Without a cgroup namespace, so that the process shows its cgroup's whole path.
    let namespaces = b.config["linux"]["namespaces"].as_array().unwrap().clone();
    b.config["linux"]["namespaces"] = json!(namespaces
        .into_iter()
        .filter(|n| n["type"] != "cgroup")
        .collect::<Vec<_>>());
    let out = b.sh(
        "ls -l /dev/null /dev/zero; grep -c \" /dev/null \" /proc/mounts; cat /proc/self/cgroup",
    );
    out.assert_success();
    let text = out.stdout();
    assert!(text.contains("1,   3") && text.contains("1,   5"), "{out}");
    assert!(
        out.lines()[2] == "0",
        "made, not bound from the host\n{out}"
    );
    assert!(text.contains(&format!("0::{leaf}")), "{out}");
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cgroup2 = mountinfo
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap();
    assert!(
        !Path::new(cgroup2)
            .join(leaf.trim_start_matches('/'))
            .exists(),
        "delete removes the cgroup"
    );
}

/// As root without linux.cgroupsPath, the device rules still hold as runc's do: a leaf
/// named after the container carries the program, CAP_MKNOD stays as the config asks, a
/// node outside the rules can be made but not opened, and delete removes the leaf.
#[test]
fn asroot_device_rules_hold_without_a_cgroups_path() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root (the root tier runs it)");
        return;
    }
    let mut b = Bundle::new(&[]);
    let caps = json!([
        "CAP_MKNOD",
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_SETUID",
        "CAP_SETGID"
    ]);
    for set in ["bounding", "effective", "permitted", "inheritable"] {
        b.config["process"]["capabilities"][set] = caps.clone();
    }
    b.config["process"]["capabilities"]["ambient"] = json!([]);
    b.config["linux"]["resources"] = json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]});
    if let Some(l) = b.config["linux"].as_object_mut() {
        l.remove("cgroupsPath");
    }
    let namespaces = b.config["linux"]["namespaces"].as_array().unwrap().clone();
    b.config["linux"]["namespaces"] = json!(namespaces
        .into_iter()
        .filter(|n| n["type"] != "cgroup")
        .collect::<Vec<_>>());
    // 7:0, the first loop device: its node opens on the host.
    let script = "mknod /tmp/loop b 7 0 && echo made; head -c 0 /tmp/loop && echo opened; \
                  head -c 0 /dev/null && echo null; cat /proc/self/cgroup | grep '^0::'";
    b.config["process"]["args"] = json!(["sh", "-c", script]);
    let id = unique("devices");
    let out = b.run(&["run", &id]);
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines[..2], ["made", "null"], "{out}");
    assert!(
        lines[2].ends_with(&format!("/{id}")),
        "a leaf named after it\n{out}"
    );
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cgroup2 = mountinfo
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap();
    let leaf = Path::new(cgroup2).join(lines[2].trim_start_matches("0::/"));
    assert!(!leaf.exists(), "delete removes {}", leaf.display());
}

/// As root, linux.resources land in the container's cgroup of each controller's hierarchy
/// (cgroup v1 on a hybrid host, as runc's fs driver writes them; the v2 leaf elsewhere),
/// every one named by linux.cgroupsPath, and delete removes them all.
#[test]
fn asroot_limits_land_in_each_controllers_cgroup_and_delete_removes_them() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root (the root tier runs it)");
        return;
    }
    let mut b = Bundle::new(&["sleep", "60"]);
    let name = unique("oci-limits");
    b.config["linux"]["cgroupsPath"] = json!(format!("/{name}"));
    b.config["linux"]["resources"] = json!({
        "memory": {"limit": 67108864},
        "pids": {"limit": 32},
        "cpu": {"shares": 512},
        "devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "b", "major": 7, "minor": 0, "access": "r"}]});
    let id = unique("limits");
    let (code, err) = b.create(&[&id]);
    assert_eq!(code, 0, "{err}");
    let pid = b.state(&id)["pid"].as_i64().unwrap() as i32;
    let dirs: Vec<PathBuf> = cgroup_hierarchies()
        .iter()
        .filter_map(|(c, _)| cgroup_dir_of(pid, &c[0]))
        .collect();
    assert!(
        !dirs.is_empty() && dirs.iter().all(|d| d.ends_with(&name)),
        "in its cgroup in every hierarchy: {dirs:?}"
    );
    let read = |controller: &str, file: &str| {
        let dir = cgroup_dir_of(pid, controller).unwrap();
        fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
            .trim()
            .to_string()
    };
    let v1 = cgroup_hierarchies()
        .iter()
        .any(|(c, _)| c.iter().any(|c| c == "memory"));
    if v1 {
        assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(read("pids", "pids.max"), "32");
        assert_eq!(read("cpu", "cpu.shares"), "512");
        // The config's rules first, in order (runc's defaults follow).
        let list = read("devices", "devices.list");
        let first: Vec<&str> = list.lines().take(2).collect();
        assert_eq!(first, ["c 1:3 rwm", "b 7:0 r"], "{list}");
    } else {
        assert_eq!(read("", "memory.max"), "67108864");
        assert_eq!(read("", "pids.max"), "32");
        assert_eq!(read("", "cpu.weight"), "20", "cpu.shares 512 as a weight");
    }
    b.run(&["delete", "--force", &id]).assert_success();
    for dir in &dirs {
        assert!(!dir.exists(), "delete removes {}", dir.display());
    }
}

/// The pids limit is in force: forks beyond it fail in the container.
#[test]
fn asroot_a_pids_limit_stops_forks() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root (the root tier runs it)");
        return;
    }
    let mut b = Bundle::new(&[]);
    b.config["linux"]["cgroupsPath"] = json!(format!("/{}", unique("oci-pids")));
    let script = "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait; echo waited";
    // The control: eight children under a limit of 64.
    b.config["linux"]["resources"] = json!({"pids": {"limit": 64}});
    let out = b.sh(script);
    out.assert_success();
    assert_eq!(out.lines(), ["waited"], "{out}");
    b.config["linux"]["resources"] = json!({"pids": {"limit": 4}});
    let out = b.sh(script);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr().contains("can't fork"), "{out}");
}

/// A create that fails applying a limit (a cpu the machine does not have) exits 125,
/// names the file, and leaves no cgroup in any hierarchy (the parent it made neither)
/// and no state.
#[test]
fn asroot_a_failed_create_leaves_no_cgroup_behind() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root (the root tier runs it)");
        return;
    }
    let mut b = Bundle::new(&["true"]);
    let name = unique("oci-fails");
    b.config["linux"]["cgroupsPath"] = json!(format!("/{name}/c"));
    b.config["linux"]["resources"] =
        json!({"memory": {"limit": 67108864}, "pids": {"limit": 32}, "cpu": {"cpus": "1023"}});
    let id = unique("fails");
    let (code, err) = b.create(&[&id]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("cpuset.cpus"), "{err}");
    for (_, mount) in cgroup_hierarchies() {
        assert!(
            !mount.join(&name).exists(),
            "left {}/{name}\n{err}",
            mount.display()
        );
    }
    assert_ne!(b.run(&["state", &id]).code, 0, "no state is left");
}

/// hostname in a uts namespace the container joins by path (runc allows it): set there.
#[test]
fn asroot_hostname_in_a_joined_uts_namespace() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root (the root tier runs it)");
        return;
    }
    let mut holder = Command::new("unshare");
    holder.args(["--uts", "sleep", "60"]);
    let holder = spawn(&mut holder, None);
    let uts = format!("/proc/{}/ns/uts", holder.pid());
    eventually("unshare made its uts namespace", || {
        fs::read_link(&uts).ok() != fs::read_link("/proc/self/ns/uts").ok()
    });
    let mut b = Bundle::new(&[]);
    let namespaces = b.config["linux"]["namespaces"].as_array().unwrap().clone();
    let mut namespaces: Vec<Value> = namespaces
        .into_iter()
        .filter(|n| n["type"] != "uts")
        .collect();
    namespaces.push(json!({"type": "uts", "path": uts}));
    b.config["linux"]["namespaces"] = json!(namespaces);
    b.config["hostname"] = json!("joined");
    let out = b.sh("hostname");
    out.assert_success();
    assert_eq!(out.lines(), ["joined"], "{out}");
    let theirs = run(Command::new("nsenter")
        .arg(format!("--uts={uts}"))
        .arg("hostname"));
    assert_eq!(
        theirs.lines(),
        ["joined"],
        "set in the joined namespace\n{theirs}"
    );
    drop(holder);
}

// Rootless podman with sbx-oci as its runtime, as the test user.

const IMAGE: &str = "localhost/sbx-oci-test-busybox";

fn podman() -> Command {
    common::podman::podman(&oci_bin())
}

/// The test image, imported once; None (after a skip) without podman.
fn image() -> Option<&'static str> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        if nix::unistd::geteuid().is_root() {
            return Err("rootless podman runs as the test user".into());
        }
        common::podman::import_busybox(podman(), IMAGE)
    });
    common::podman::ready(ready, IMAGE)
}

/// `podman run --rm OPTIONS IMAGE ARGS`, with podman's default seccomp profile.
fn podman_run(options: &[&str], args: &[&str]) -> Outcome {
    let mut cmd = podman();
    cmd.args(["run", "--rm"])
        .args(options)
        .arg(IMAGE)
        .args(args);
    spawn(&mut cmd, None).finish(Duration::from_secs(120))
}

#[test]
fn podman_run_passes_exit_codes_env_user_and_workdir() {
    if image().is_none() {
        return;
    }
    podman_run(&[], &["sh", "-c", "exit 3"]).assert_code(3);
    let out = podman_run(
        &["-e", "FOO=bar", "-u", "1000:1000", "-w", "/tmp"],
        &[
            "sh",
            "-c",
            "echo $FOO; id -u; id -g; pwd; cat /proc/1/cmdline",
        ],
    );
    out.assert_success();
    assert_eq!(out.lines()[..4], ["bar", "1000", "1000", "/tmp"], "{out}");
    // process.args is pid 1 of the container (busybox sh execs its last command).
    assert!(
        out.lines()[4]
            .replace('\0', " ")
            .starts_with("cat /proc/1/cmdline"),
        "{out}"
    );
    let out = podman_run(&[], &["no-such-program"]);
    assert_eq!(out.code, 127, "{out}");
}

/// Podman's seccomp profile (its config's `linux.seccomp`) is compiled and installed: the
/// container's process runs in seccomp filter mode with one filter, and with
/// `seccomp=unconfined` (the control) without one.
#[test]
fn podman_seccomp_profile_is_installed() {
    if image().is_none() {
        return;
    }
    let status =
        "grep -E '^(Seccomp|Seccomp_filters|NoNewPrivs):' /proc/self/status | tr -s '\t' ' '";
    let out = podman_run(&[], &["sh", "-c", status]);
    out.assert_success();
    assert!(out.stdout().contains("Seccomp: 2"), "filter mode\n{out}");
    assert!(
        out.stdout().contains("Seccomp_filters: 1"),
        "one filter\n{out}"
    );
    let out = podman_run(
        &["--security-opt", "no-new-privileges"],
        &["sh", "-c", status],
    );
    out.assert_success();
    assert!(out.stdout().contains("Seccomp: 2"), "{out}");
    assert!(out.stdout().contains("NoNewPrivs: 1"), "{out}");
    let out = podman_run(
        &["--security-opt", "seccomp=unconfined"],
        &["sh", "-c", status],
    );
    out.assert_success();
    assert!(
        out.stdout().contains("Seccomp: 0"),
        "control: no filter\n{out}"
    );
}

#[test]
fn podman_volume_files_belong_to_the_user() {
    if image().is_none() {
        return;
    }
    let dir = TempDir::new();
    let volume = format!("{}:/data", dir.path().display());
    podman_run(&["-v", &volume], &["sh", "-c", "echo hi > /data/f"]).assert_success();
    let meta = fs::metadata(dir.join("f")).expect("the file is on the host");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), uid());
    assert_eq!(fs::read_to_string(dir.join("f")).unwrap(), "hi\n");
}

#[test]
fn podman_detached_exec_stop_rm_and_kill() {
    if image().is_none() {
        return;
    }
    let name = unique("pd");
    let mut cmd = podman();
    cmd.args(["run", "-d", "--name", &name, IMAGE]).args([
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 0.1; done",
    ]);
    run(cmd).assert_success();
    let out = run(podman().args([
        "exec",
        &name,
        "sh",
        "-c",
        "echo in-exec; cat /proc/1/cmdline",
    ]));
    out.assert_success();
    assert_eq!(out.lines()[0], "in-exec", "{out}");
    let started = Instant::now();
    run(podman().args(["stop", "-t", "20", &name])).assert_success();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopped by TERM, not the timeout"
    );
    run(podman().args(["rm", &name])).assert_success();

    let name = unique("pk");
    let mut cmd = podman();
    cmd.args(["run", "-d", "--name", &name, IMAGE, "sleep", "60"]);
    run(cmd).assert_success();
    run(podman().args(["kill", "-s", "KILL", &name])).assert_success();
    let out = run(podman().args(["wait", &name]));
    assert_eq!(out.stdout().trim(), "137", "{out}");
    run(podman().args(["rm", &name])).assert_success();
}

#[test]
fn podman_it_gets_a_terminal_through_the_console_socket() {
    if image().is_none() || !require_tool("script") {
        return;
    }
    // The terminal's size reaches the container too (`stty size`: rows, columns).
    let line = format!(
        "stty rows 30 cols 100; podman --runtime {} --cgroup-manager cgroupfs run --rm -it \
         {IMAGE} sh -c 'tty; busybox stty size; exit 5'",
        oci_bin().display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .env("XDG_RUNTIME_DIR", format!("/run/user/{}", uid()));
    let mut running = spawn_with_stdin(&mut cmd);
    let stdin = running.child.stdin.take();
    let out = running.finish(Duration::from_secs(120));
    drop(stdin);
    assert_eq!(out.code, 5, "{out}");
    assert!(out.stdout().contains("/dev/pts/0"), "{out}");
    assert!(out.stdout().contains("30 100"), "{out}");
}

// Rootful podman with sbx-oci as its runtime, as root, on a store of its own.

/// Podman as root on a private store (root and tmpdir in a temporary directory; the
/// runroot, whose path podman keeps under 50 characters, in /run), reset when dropped.
struct RootfulPodman {
    dir: TempDir,
    runroot: PathBuf,
}

impl RootfulPodman {
    fn new() -> RootfulPodman {
        let runroot = PathBuf::from(format!("/run/sbx-test-podman.{}", std::process::id()));
        let _ = fs::remove_dir_all(&runroot);
        RootfulPodman {
            dir: TempDir::new(),
            runroot,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(&self.runroot)
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"));
        cmd.arg("--runtime")
            .arg(oci_bin())
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args);
        cmd
    }

    /// `podman run OPTIONS IMAGE ARGS` with the options every container here gets: no
    /// network (rootful podman's bridge is not what is tested), and rlimits no higher than
    /// this process's own. Podman asks for nofile and nproc of 1048576 by default, which
    /// only a runtime with CAP_SYS_RESOURCE may set; the test machines' root lacks it, and
    /// runc refuses those configs here the same way.
    fn run(&self, options: &[&str], args: &[&str]) -> Outcome {
        let mut cmd = self.cmd(&["run"]);
        cmd.args(["--network", "none"])
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=4096:4096",
            ])
            .args(options)
            .arg(IMAGE)
            .args(args);
        spawn(&mut cmd, None).finish(Duration::from_secs(120))
    }
}

impl Drop for RootfulPodman {
    fn drop(&mut self) {
        let _ = run(self.cmd(&["system", "reset", "--force"]));
        let _ = fs::remove_dir_all(&self.runroot);
    }
}

/// Rootful podman (as containerd is, but through conmon) runs its containers with
/// sbx-oci: exit codes, -e/-u/-w, a volume written as root, -d + exec + stop + rm, kill -s
/// KILL with 137, and --memory in the container's memory cgroup.
#[test]
fn asroot_rootful_podman_runs_its_containers_with_sbx_oci() {
    if !require_tool("podman") {
        return;
    }
    let podman = RootfulPodman::new();
    let imported = common::podman::import_busybox(podman.cmd(&[]), IMAGE);
    if common::podman::ready(&imported, IMAGE).is_none() {
        return;
    }
    podman
        .run(&["--rm"], &["sh", "-c", "exit 3"])
        .assert_code(3);
    let out = podman.run(
        &["--rm", "-e", "FOO=bar", "-u", "1000:1000", "-w", "/tmp"],
        &["sh", "-c", "echo $FOO; id -u; id -g; pwd"],
    );
    out.assert_success();
    assert_eq!(out.lines(), ["bar", "1000", "1000", "/tmp"], "{out}");
    assert_eq!(podman.run(&["--rm"], &["no-such-program"]).code, 127);

    let volume = TempDir::new();
    let bind = format!("{}:/data", volume.path().display());
    podman
        .run(&["--rm", "-v", &bind], &["sh", "-c", "echo hi > /data/f"])
        .assert_success();
    let meta = fs::metadata(volume.join("f")).expect("the file is on the host");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);

    let name = unique("rp");
    let script = "trap 'exit 0' TERM; while :; do sleep 0.1; done";
    podman
        .run(
            &["-d", "--name", &name, "--memory", "64m"],
            &["sh", "-c", script],
        )
        .assert_success();
    let out = run(podman.cmd(&["exec", &name, "sh", "-c", "echo in-exec"]));
    out.assert_success();
    assert_eq!(out.lines(), ["in-exec"], "{out}");
    let out = run(podman.cmd(&["inspect", "-f", "{{.State.Pid}}", &name]));
    let pid: i32 = out.stdout().trim().parse().expect("the container's pid");
    let memory_max = match cgroup_dir_of(pid, "memory") {
        Some(dir) => fs::read_to_string(dir.join("memory.limit_in_bytes")),
        None => cgroup_dir_of(pid, "")
            .map(|dir| fs::read_to_string(dir.join("memory.max")))
            .expect("the container's cgroup"),
    };
    assert_eq!(memory_max.unwrap().trim(), "67108864");
    let started = Instant::now();
    run(podman.cmd(&["stop", "-t", "20", &name])).assert_success();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopped by TERM, not the timeout"
    );
    run(podman.cmd(&["rm", &name])).assert_success();

    let name = unique("rk");
    podman
        .run(&["-d", "--name", &name], &["sleep", "60"])
        .assert_success();
    run(podman.cmd(&["kill", "-s", "KILL", &name])).assert_success();
    let out = run(podman.cmd(&["wait", &name]));
    assert_eq!(out.stdout().trim(), "137", "{out}");
    run(podman.cmd(&["rm", &name])).assert_success();
}

#[test]
fn hooks_run_at_their_points_with_the_state() {
    let mut b = Bundle::new(&[]);
    let out_dir = b.dir.join("hooks");
    fs::create_dir(&out_dir).unwrap();
    let hook = |name: &str| {
        json!([{"path": "/bin/sh",
                "args": ["sh", "-c", format!("cat > {}/{name}.json", out_dir.display())]}])
    };
    b.config["hooks"] = json!({
        "createRuntime": hook("createRuntime"),
        "createContainer": hook("createContainer"),
        "poststart": hook("poststart"),
        "poststop": hook("poststop"),
    });
    b.sh("true").assert_success();
    let mut pids = Vec::new();
    for (name, status) in [
        ("createRuntime", "creating"),
        ("createContainer", "creating"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ] {
        let text = fs::read_to_string(out_dir.join(format!("{name}.json")))
            .unwrap_or_else(|e| panic!("the {name} hook ran: {e}"));
        let state: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(state["status"], status, "{name}: {state}");
        assert!(
            state["id"].as_str().unwrap().starts_with(PREFIX),
            "{name}: {state}"
        );
        pids.push(state["pid"].as_i64().unwrap_or(0));
    }
    // The container's process, even in poststart once `true` has ended.
    assert!(pids[0] > 0 && pids[..3] == [pids[0]; 3], "pids {pids:?}");
    // A failing createRuntime hook fails create, leaving nothing behind.
    b.config["hooks"] = json!({"createRuntime": [{"path": "/bin/false"}]});
    let out = b.sh("true");
    assert_eq!(out.code, 125, "{out}");
    assert!(
        out.stderr().contains("createRuntime hook /bin/false"),
        "{out}"
    );
    assert_eq!(fs::read_dir(b.dir.join("state")).unwrap().count(), 0);
}

/// runtime-tools `linux_ns_itype`: a config without a mount namespace runs in the runtime's
/// own, chrooted into its root. Nothing is mounted there (the config's mounts are skipped
/// with a warning, where runc mounts them on the host's table and leaves them behind), and
/// `exec` enters the same root.
#[test]
fn without_a_mount_namespace_the_container_shares_the_runtimes_and_mounts_nothing() {
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat /marker > /seen; ls /proc | wc -l >> /seen; exec sleep 60",
    ]);
    fs::write(b.rootfs("/marker"), "in the container's root\n").unwrap();
    let namespaces = b.config["linux"]["namespaces"].as_array().unwrap().clone();
    b.config["linux"]["namespaces"] = json!(namespaces
        .into_iter()
        .filter(|n| n["type"] != "mount")
        .collect::<Vec<_>>());
    b.config["linux"]["maskedPaths"] = json!([]);
    b.config["linux"]["readonlyPaths"] = json!([]);
    let mounts_before = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let id = unique("nomnt");
    let (code, err) = b.create(&[&id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("no mount namespace") && err.contains("/proc"),
        "the skipped mounts are named: {err}"
    );
    let pid = b.state(&id)["pid"].as_i64().unwrap();
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap(),
        fs::read_link("/proc/self/ns/mnt").unwrap(),
        "the runtime's mount namespace"
    );
    b.run(&["start", &id]).assert_success();
    eventually("the process ran", || {
        fs::read_to_string(b.rootfs("/seen")).is_ok_and(|s| s.lines().count() == 2)
    });
    assert_eq!(
        fs::read_to_string(b.rootfs("/seen")).unwrap(),
        "in the container's root\n0\n",
        "its root is the bundle's, with nothing mounted on /proc"
    );
    let out = b.run(&["exec", &id, "cat", "/marker"]);
    assert_eq!(
        out.lines(),
        ["in the container's root"],
        "exec enters the root\n{out}"
    );
    b.run(&["delete", "--force", &id]).assert_success();
    assert_eq!(
        fs::read_to_string("/proc/self/mountinfo").unwrap(),
        mounts_before,
        "nothing was mounted in the runtime's mount namespace"
    );
}

/// Without a mount namespace, what only a mount can enforce is refused, not skipped.
#[test]
fn without_a_mount_namespace_masked_paths_and_a_read_only_root_are_refused() {
    let mut b = Bundle::new(&["true"]);
    let namespaces = b.config["linux"]["namespaces"].as_array().unwrap().clone();
    b.config["linux"]["namespaces"] = json!(namespaces
        .into_iter()
        .filter(|n| n["type"] != "mount")
        .collect::<Vec<_>>());
    b.config["linux"]["readonlyPaths"] = json!([]);
    b.config["linux"]["maskedPaths"] = json!(["/proc/kcore"]);
    let out = b.run(&["run", &unique("nomnt-masked")]);
    assert_eq!(out.code, 125, "{out}");
    assert!(
        out.stderr().contains("linux.maskedPaths") && out.stderr().contains("mount namespace"),
        "{out}"
    );
    b.config["linux"]["maskedPaths"] = json!([]);
    b.config["root"]["readonly"] = json!(true);
    let out = b.run(&["run", &unique("nomnt-ro")]);
    assert_eq!(out.code, 125, "{out}");
    assert!(out.stderr().contains("root.readonly"), "{out}");
    // Control: with neither, it runs.
    b.config["root"]["readonly"] = json!(false);
    b.run(&["run", &unique("nomnt-ok")]).assert_success();
}

/// runtime-tools `process_capabilities_fail`: an unknown capability name is ignored with a
/// warning, as runc does, and the known ones still apply.
#[test]
fn an_unknown_capability_is_ignored_with_a_warning() {
    let mut b = Bundle::new(&[]);
    let caps = json!(["CAP_KILL", "CAP_TEST"]);
    for set in [
        "bounding",
        "effective",
        "permitted",
        "inheritable",
        "ambient",
    ] {
        b.config["process"]["capabilities"][set] = caps.clone();
    }
    let out = b.sh("grep CapBnd /proc/self/status");
    out.assert_success();
    // CAP_KILL is 5.
    assert_eq!(out.lines(), ["CapBnd:\t0000000000000020"], "{out}");
    assert!(
        out.stderr()
            .contains("ignoring unknown capabilities: CAP_TEST"),
        "{out}"
    );
}

/// linux.personality: LINUX32 makes the container (and an exec'd process) a 32-bit one.
#[test]
fn personality_linux32_makes_uname_say_i686() {
    if std::env::consts::ARCH != "x86_64" {
        skip("checks i686 under LINUX32, an x86_64 name");
        return;
    }
    let mut b = Bundle::new(&[]);
    let control = b.sh("uname -m");
    assert_eq!(control.lines(), ["x86_64"], "control\n{control}");
    b.config["linux"]["personality"] = json!({"domain": "LINUX32"});
    let out = b.sh("uname -m");
    assert_eq!(out.lines(), ["i686"], "{out}");
    b.config["process"]["args"] = json!(["sleep", "60"]);
    let id = unique("pers");
    let (code, err) = b.create(&[&id]);
    assert_eq!(code, 0, "{err}");
    b.run(&["start", &id]).assert_success();
    let out = b.run(&["exec", &id, "sh", "-c", "uname -m"]);
    assert_eq!(out.lines(), ["i686"], "exec too\n{out}");
    b.run(&["delete", "--force", &id]).assert_success();
}

/// `tmpcopyup`: a tmpfs over a directory of the root starts with a copy of its contents
/// (files, directories with their modes, symlinks as symlinks, not followed); what the
/// container writes there stays in the tmpfs.
#[test]
fn a_tmpfs_with_tmpcopyup_starts_with_the_directorys_contents() {
    let mut b = Bundle::new(&[]);
    fs::create_dir_all(b.rootfs("/data/sub")).unwrap();
    fs::write(b.rootfs("/data/f"), "from the image\n").unwrap();
    fs::write(b.rootfs("/data/sub/g"), "nested\n").unwrap();
    fs::set_permissions(
        b.rootfs("/data/sub"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    std::os::unix::fs::symlink("/", b.rootfs("/data/up")).unwrap();
    let script = "cat /data/f /data/sub/g; stat -c %a /data/sub; readlink /data/up; \
                  grep ' /data ' /proc/self/mountinfo | cut -d' ' -f9; echo new > /data/new";
    let mut mounts = b.config["mounts"].as_array().unwrap().clone();
    mounts.push(
        json!({"destination": "/data", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "mode=755"]}),
    );
    b.config["mounts"] = json!(mounts.clone());
    let control = b.sh(script);
    assert!(
        control.stderr().contains("/data/f"),
        "control: an empty tmpfs without the option\n{control}"
    );
    mounts.last_mut().unwrap()["options"] = json!(["nosuid", "nodev", "mode=755", "tmpcopyup"]);
    b.config["mounts"] = json!(mounts);
    let out = b.sh(script);
    out.assert_success();
    assert_eq!(
        out.lines(),
        ["from the image", "nested", "750", "/", "tmpfs"],
        "{out}"
    );
    assert!(
        !b.rootfs("/data/new").exists(),
        "the write stayed in the tmpfs"
    );
}
