//! Resource limits: rlimits and timeouts everywhere; cgroup v2 limits where the caller has
//! a delegated subtree.
//!
//! The host machines here have no cgroup v2 controllers, so the tests named `cgroup_` run in
//! the VM tier (`ci/vm-test.sh`, which boots a kernel with full cgroup v2 and delegates a
//! subtree to the test user). The tests named `nodelegation_` are their counterpart on a
//! host without delegation.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

fn profile_file(dir: &TempDir, json: &str) -> PathBuf {
    let path = dir.join("limits-profile.json");
    fs::write(&path, json).unwrap();
    path
}

#[test]
fn rlimits_apply_inside() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &["--rlimit", "nofile=64:128", "--rlimit", "fsize=1M"],
        "ulimit -Sn; ulimit -Hn; ulimit -f",
    );
    out.assert_success();
    // sh reports fsize in 512-byte blocks.
    assert_eq!(out.lines(), ["64", "128", "2048"], "{out}");
}

#[test]
fn rlimit_fsize_stops_a_large_write() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &["--rlimit", "fsize=64K"],
        "head -c 1048576 /dev/zero > /tmp/big; echo status=$?; wc -c < /tmp/big",
    );
    out.assert_success();
    let lines = out.lines();
    assert_ne!(lines[0], "status=0", "the write must fail\n{out}");
    assert_eq!(lines[1], "65536", "{out}");
}

/// The `Max ...` lines of /proc/self/limits as (soft, hard) by name.
fn parse_limits(text: &str) -> std::collections::BTreeMap<String, (String, String)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            // Names are words separated by single spaces; columns by runs of spaces.
            let (name, rest) = l.split_once("  ")?;
            let mut values = rest.split_whitespace();
            Some((
                name.trim().to_string(),
                (values.next()?.to_string(), values.next()?.to_string()),
            ))
        })
        .collect()
}

#[test]
fn every_rlimit_shows_in_proc_self_limits() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    // (option, the /proc/self/limits line, soft, hard in its units) for the rlimits no
    // other test sets; each within an unprivileged user's usual hard limits.
    let cases = [
        ("nproc=300:400", "Max processes", "300", "400"),
        ("core=1M:2M", "Max core file size", "1048576", "2097152"),
        ("as=2G:3G", "Max address space", "2147483648", "3221225472"),
        ("cpu=100:200", "Max cpu time", "100", "200"),
        ("stack=4M:6M", "Max stack size", "4194304", "6291456"),
        ("memlock=32K:64K", "Max locked memory", "32768", "65536"),
    ];
    let mut options = Vec::new();
    for (option, ..) in &cases {
        options.extend(["--rlimit", option]);
    }
    let out = sandbox_sh(dir.path(), &options, "cat /proc/self/limits");
    out.assert_success();
    let inside = parse_limits(&out.stdout());
    let outside = parse_limits(&fs::read_to_string("/proc/self/limits").unwrap());
    for (option, line, soft, hard) in cases {
        let (s, h) = inside
            .get(line)
            .unwrap_or_else(|| panic!("no {line:?} line inside\n{out}"));
        assert_eq!(
            (s.as_str(), h.as_str()),
            (soft, hard),
            "--rlimit {option}: {line}\n{out}"
        );
        // Control: not what the test runs with anyway.
        assert_ne!(
            outside.get(line).map(|(s, h)| (s.as_str(), h.as_str())),
            Some((soft, hard)),
            "{line} is already {soft}:{hard} outside; pick other values"
        );
    }
}

#[test]
fn rlimit_cpu_stops_a_busy_loop() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let start = Instant::now();
    // One second of CPU time: the kernel sends SIGXCPU (24) at the soft limit.
    let out = sandbox_sh(dir.path(), &["--rlimit", "cpu=1:5"], "while :; do :; done");
    assert_eq!(out.code, 128 + libc::SIGXCPU, "killed by SIGXCPU\n{out}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn rlimit_as_stops_a_large_allocation() {
    if !require_sandbox() {
        return;
    }
    if !Path::new("/usr/bin/python3").exists() {
        skip("/usr/bin/python3 is missing (ci/setup-host.sh installs it)");
        return;
    }
    let dir = TempDir::new();
    let grab = "try:\n b = bytearray(1 << 30)\n print('allocated')\n\
                except MemoryError:\n print('refused')\n";
    let out = run(sbx_run(
        dir.path(),
        &["--rlimit", "as=256M", "--", "/usr/bin/python3", "-c", grab],
    ));
    out.assert_success();
    assert_eq!(out.lines(), ["refused"], "1 GiB under as=256M\n{out}");
    // Control: without the limit the same allocation works.
    let out = run(sbx_run(dir.path(), &["--", "/usr/bin/python3", "-c", grab]));
    out.assert_success();
    assert_eq!(out.lines(), ["allocated"], "control\n{out}");
}

#[test]
fn profile_rlimits_apply_and_cli_overrides_them() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let profile = profile_file(
        &dir,
        r#"{"extends": "default", "limits": {"rlimits": {"nofile": "100"}}}"#,
    );
    let p = profile.to_str().unwrap();
    let out = sandbox_sh(dir.path(), &["-p", p], "ulimit -Sn");
    out.assert_success();
    assert_eq!(out.lines(), ["100"], "{out}");
    let out = sandbox_sh(
        dir.path(),
        &["-p", p, "--rlimit", "nofile=50"],
        "ulimit -Sn",
    );
    out.assert_success();
    assert_eq!(out.lines(), ["50"], "{out}");
}

#[test]
fn bad_rlimits_are_errors() {
    let dir = TempDir::new();
    sandbox_sh(dir.path(), &["--rlimit", "nofiles=1"], "true")
        .assert_sbx_error(&["nofiles", "nofile"]);
    sandbox_sh(dir.path(), &["--rlimit", "nofile=10:5"], "true")
        .assert_sbx_error(&["above the hard limit"]);
    sandbox_sh(dir.path(), &["--rlimit", "nofile=unlimited"], "true")
        .assert_sbx_error(&["only root on the host can raise"]);
}

#[test]
fn timeout_stops_the_command_with_124() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let start = Instant::now();
    let out = sandbox_sh(dir.path(), &["--timeout", "1s"], "sleep 30");
    assert_eq!(out.code, 124, "{out}");
    assert!(out.stderr().contains("timed out after 1s"), "{out}");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn timeout_kills_a_command_that_ignores_sigterm() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let start = Instant::now();
    let out = sandbox_sh(
        dir.path(),
        &["--timeout", "500ms"],
        "trap 'echo got-term' TERM; i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done",
    );
    assert_eq!(out.code, 124, "{out}");
    let elapsed = start.elapsed();
    assert!(
        out.stdout().contains("got-term"),
        "SIGTERM came first\n{out}"
    );
    assert!(
        elapsed >= Duration::from_secs(5) && elapsed < Duration::from_secs(25),
        "SIGKILL after the 5 s grace period, took {elapsed:?}"
    );
}

#[test]
fn a_command_within_its_timeout_keeps_its_exit_code() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(dir.path(), &["--timeout", "30s"], "exit 3");
    out.assert_code(3);
    assert!(!out.stderr().contains("timed out"), "{out}");
}

#[test]
fn profile_timeout_applies() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let profile = profile_file(
        &dir,
        r#"{"extends": "default", "limits": {"timeout": "1s"}}"#,
    );
    let out = sandbox_sh(dir.path(), &["-p", profile.to_str().unwrap()], "sleep 30");
    assert_eq!(out.code, 124, "{out}");
}

#[test]
fn bad_limit_values_are_errors() {
    let dir = TempDir::new();
    sandbox_sh(dir.path(), &["--timeout", "soon"], "true").assert_sbx_error(&["soon"]);
    sandbox_sh(dir.path(), &["--cpus", "lots"], "true").assert_sbx_error(&["lots"]);
    sandbox_sh(dir.path(), &["--memory", "1Q"], "true").assert_sbx_error(&["1Q"]);
    sandbox_sh(dir.path(), &["--io-weight", "0"], "true").assert_sbx_error(&["io weight"]);
}

/// True when this host delegates a cgroup v2 subtree with controllers to the caller. The
/// harness's one cached `sbx check` run: no other one can be under way during a test's
/// snapshot of /tmp.
fn delegated() -> bool {
    match check_report() {
        Ok(report) => report["cgroup_delegation"]["ok"].as_bool().unwrap_or(false),
        Err(_) => false,
    }
}

#[test]
fn nodelegation_limits_fail_clearly() {
    if delegated() {
        skip("this host delegates cgroup v2 to the caller; the cgroup_ tests cover it");
        return;
    }
    let dir = TempDir::new();
    let state = HostState::capture();
    sandbox_sh(dir.path(), &["--memory", "64M", "--pids", "10"], "true").assert_sbx_error(&[
        "cgroup",
        "memory",
        "limits_required",
    ]);
    state.assert_nothing_new();
}

#[test]
fn nodelegation_limits_required_false_warns_and_runs_with_rlimits() {
    if !require_sandbox() {
        return;
    }
    if delegated() {
        skip("this host delegates cgroup v2 to the caller; the cgroup_ tests cover it");
        return;
    }
    let dir = TempDir::new();
    let profile = profile_file(
        &dir,
        r#"{"extends": "default", "limits": {"memory": "64M", "rlimits": {"nofile": "77"}, "limits_required": false}}"#,
    );
    let out = sandbox_sh(dir.path(), &["-p", profile.to_str().unwrap()], "ulimit -Sn");
    out.assert_success();
    assert_eq!(out.lines(), ["77"], "{out}");
    assert_eq!(
        out.stderr().matches("NOT enforced").count(),
        1,
        "exactly one warning\n{out}"
    );
}

// ---------------------------------------------------------------------------------------
// cgroup v2: run in the VM tier, where a subtree is delegated to the test user
// ---------------------------------------------------------------------------------------

fn require_delegation() -> bool {
    require_sandbox() && require("cgroup_delegation")
}

/// The cgroup of the host process `pid`, as a directory under /sys/fs/cgroup (the tests
/// run in the host's cgroup namespace, so /proc/PID/cgroup gives the whole path).
#[track_caller]
fn cgroup_of(pid: i32) -> PathBuf {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/cgroup: {e}"));
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no cgroup v2 line in /proc/{pid}/cgroup: {text}"));
    Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'))
}

/// The sandbox's leaf, found through the cgroup of its command (host pid `pid`): a
/// directory named sbx-PID that exists now. Wherever sbx put it (beside the caller's
/// cgroup, or beside the systemd scope it ran itself in), the test sees it.
#[track_caller]
fn leaf_of(pid: i32) -> PathBuf {
    let leaf = cgroup_of(pid);
    assert!(
        leaf.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("sbx-")),
        "the sandbox's command is not in a leaf of sbx's: {}",
        leaf.display()
    );
    assert!(leaf.is_dir(), "{} does not exist", leaf.display());
    leaf
}

/// The `sbx-*` cgroups beside `leaf`, other than `leaf` itself.
fn others_beside(leaf: &Path) -> Vec<PathBuf> {
    let parent = leaf.parent().expect("a leaf has a parent");
    let mut found: Vec<PathBuf> = fs::read_dir(parent)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p != leaf)
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("sbx-"))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Waits (20 s at most) until `leaf` is gone and no other `sbx-*` cgroup beside it is
/// new since `others` (the ones seen while the sandbox ran).
#[track_caller]
fn assert_leaf_removed(leaf: &Path, others: &[PathBuf], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while leaf.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!leaf.exists(), "{what}: {} is still there", leaf.display());
    let left: Vec<PathBuf> = others_beside(leaf)
        .into_iter()
        .filter(|p| !others.contains(p))
        .collect();
    assert!(left.is_empty(), "{what}: new cgroups beside it: {left:?}");
}

/// The host pid of the process whose arguments include `marker` and that runs `program`.
#[track_caller]
fn command_pid(marker: &str, program: &str) -> i32 {
    wait_for_process(
        marker,
        |p| p.argv.first().is_some_and(|a| a == program),
        Duration::from_secs(20),
    )
    .pid
}

#[test]
fn cgroup_pids_limit_stops_a_fork_bomb_and_says_so() {
    if !require_delegation() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &["--pids", "32", "--timeout", "60s"],
        // dash gives up when a fork fails; what matters is the limit and the report.
        "read max < /sys/fs/cgroup/pids.max; echo max=$max; i=0; \
         while [ $i -lt 100 ]; do sleep 5 & i=$((i+1)); done 2>/dev/null",
    );
    assert!(out.stdout().contains("max=32"), "pids.max inside\n{out}");
    assert!(out.stderr().contains("pids limit 32 reached"), "{out}");
}

#[test]
fn cgroup_memory_limit_kills_a_hog_and_says_so() {
    if !require_delegation() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &["--memory", "32M", "--memory-swap", "0"],
        "python3 -c 'b = bytearray(256 << 20); print(len(b))'",
    );
    assert_eq!(out.code, 137, "killed by the OOM killer\n{out}");
    assert!(
        out.stderr().contains("killed: out of memory (limit 32M)"),
        "{out}"
    );
}

#[test]
fn cgroup_memory_swap_is_written() {
    if !require_delegation() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &["--memory", "64M", "--memory-swap", "16M"],
        "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory.swap.max",
    );
    out.assert_success();
    assert_eq!(out.lines(), ["67108864", "16777216"], "{out}");
    // Control: without the option, swap is not limited.
    let out = sandbox_sh(
        dir.path(),
        &["--memory", "64M"],
        "cat /sys/fs/cgroup/memory.swap.max",
    );
    out.assert_success();
    assert_eq!(out.lines(), ["max"], "{out}");
}

#[test]
fn cgroup_cpus_throttle_the_command() {
    if !require_delegation() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &["--cpus", "0.2"],
        "cat /sys/fs/cgroup/cpu.max; end=$(($(date +%s) + 2)); \
         while [ $(date +%s) -lt $end ]; do :; done; grep nr_throttled /sys/fs/cgroup/cpu.stat",
    );
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines[0], "20000 100000", "{out}");
    let throttled: u64 = lines[1].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(throttled > 0, "a busy loop at 0.2 CPUs is throttled\n{out}");
}

#[test]
fn cgroup_io_weight_is_written() {
    if !require_delegation() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &["--io-weight", "50"],
        "cat /sys/fs/cgroup/io.weight",
    );
    if std::env::var("SBX_VM").is_ok_and(|v| v == "systemd") {
        // Debian's user@.service delegates memory, pids and cpu, not io: a clear error.
        out.assert_sbx_error(&["io", "not available"]);
        return;
    }
    out.assert_success();
    assert!(out.stdout().contains("default 50"), "{out}");
}

#[test]
fn cgroup_leaf_is_the_sandboxs_root_and_read_only() {
    if !require_delegation() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &["--pids", "100"],
        "cat /proc/self/cgroup; echo 5 > /sys/fs/cgroup/pids.max || echo read-only",
    );
    out.assert_success();
    assert_eq!(out.lines(), ["0::/", "read-only"], "{out}");
}

#[test]
fn cgroup_leaf_is_removed_after_the_run() {
    if !require_delegation() {
        return;
    }
    let dir = TempDir::new();
    let marker = unique("leaf");
    let mut cmd = sbx_run(
        dir.path(),
        &[
            "--pids",
            "100",
            "--",
            "sh",
            "-c",
            // `read` at end of input fails: the script's own status is 0.
            "echo up; read _; exit 0",
            &marker,
        ],
    );
    let mut running = spawn_with_stdin(&mut cmd);
    let stdin = running.child.stdin.take();
    running.wait_for_stdout("up", TIMEOUT);
    // While it runs: the command sits in a leaf of its own, with the limit.
    let leaf = leaf_of(command_pid(&marker, "sh"));
    assert_eq!(
        fs::read_to_string(leaf.join("pids.max")).unwrap().trim(),
        "100",
        "{}",
        leaf.display()
    );
    let others = others_beside(&leaf);
    drop(stdin);
    running.finish(TIMEOUT).assert_success();
    assert!(!leaf.exists(), "{} outlived the run", leaf.display());
    assert_leaf_removed(&leaf, &others, "after the run");
}

#[test]
fn cgroup_kill_9_of_sbx_leaves_no_cgroup() {
    if !require_delegation() {
        return;
    }
    let dir = TempDir::new();
    let marker = unique("cgroup-kill");
    let mut cmd = sbx_run(
        dir.path(),
        &["--pids", "100", "--", "sh", "-c", "sleep 1000", &marker],
    );
    let running = spawn(&mut cmd, None);
    let command = wait_for_process(
        &marker,
        // The command's shell, not sbx (whose own arguments hold the script too).
        |p| p.argv.first().is_some_and(|a| a == "sh") && p.argv.iter().any(|a| a == "sleep 1000"),
        Duration::from_secs(20),
    );
    let leaf = leaf_of(command.pid);
    let others = others_beside(&leaf);
    running.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = running.finish(Duration::from_secs(20));
    assert_no_process_with(&marker, Duration::from_secs(20));
    assert_leaf_removed(&leaf, &others, "the janitor removes the leaf");
}

#[test]
fn cgroup_exec_joins_the_sandboxs_cgroup_and_limits() {
    if !require_delegation() {
        return;
    }
    let dir = TempDir::new();
    let store = TempDir::new();
    let sbx_in = |args: &[&str]| {
        let mut cmd = sbx();
        cmd.args(args)
            .current_dir(dir.path())
            .env("XDG_DATA_HOME", store.path());
        run(cmd)
    };
    let out = sbx_in(&[
        "run", "--name", "lim", "-d", "--pids", "20", "--", "sleep", "1000",
    ]);
    out.assert_success();
    let info: serde_json::Value =
        serde_json::from_str(&sbx_in(&["inspect", "lim"]).stdout()).expect("inspect JSON");
    let pid = info["command_pid"].as_i64().expect("command_pid") as i32;
    let leaf = leaf_of(pid);
    let others = others_beside(&leaf);
    let out = sbx_in(&[
        "exec",
        "lim",
        "--",
        "sh",
        "-c",
        "cat /proc/self/cgroup /sys/fs/cgroup/pids.max",
    ]);
    out.assert_success();
    assert_eq!(out.lines(), ["0::/", "20"], "{out}");
    // The limit holds for exec'd processes too: forty sleeps do not fit under twenty.
    let out = sbx_in(&[
        "exec",
        "lim",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 40 ]; do sleep 3 & i=$((i+1)); done; echo all-forked",
    ]);
    assert!(!out.stdout().contains("all-forked"), "{out}");
    assert!(out.stderr().contains("fork"), "{out}");
    sbx_in(&["rm", "-f", "lim"]).assert_success();
    assert_leaf_removed(&leaf, &others, "rm -f removes the leaf");
}

/// The kept user namespace's holder sits in the caller's cgroup, never in the run's: a run
/// with limits that makes the holder (here, the first run after `sbx system reset`) makes
/// it before going into a systemd scope, where it would keep the scope alive after the run.
/// The user's own runtime directory: sbx asks the user manager through it for the scope.
#[test]
fn cgroup_the_holder_is_made_outside_the_runs_cgroup() {
    if !require_delegation() {
        return;
    }
    let runtime = PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR").expect("XDG_RUNTIME_DIR"));
    let dir = TempDir::new();
    let sbx_with = |args: &[&str]| {
        let mut cmd = sbx();
        cmd.args(args)
            .current_dir(dir.path())
            .env_remove("SBX_USERNS");
        cmd
    };
    run(sbx_with(&["system", "reset"])).assert_success();
    let out = run(sbx_with(&[
        "run",
        "--verbose",
        "--memory",
        "64M",
        "--",
        "true",
    ]));
    let record = fs::read_to_string(runtime.join("sbx/.holder.json"));
    let holder = record
        .as_deref()
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .and_then(|r| r["pid"].as_i64())
        .map(|pid| pid as i32);
    let holder_cgroup = holder.map(cgroup_of);
    let _ = run(sbx_with(&["system", "reset"]));
    out.assert_success();
    assert!(
        out.stderr()
            .contains("nested in the kept user namespace of the holder"),
        "{out}"
    );
    let holder = holder.unwrap_or_else(|| panic!("no holder recorded: {record:?}\n{out}"));
    assert_eq!(
        holder_cgroup.unwrap(),
        cgroup_of(std::process::id() as i32),
        "the holder (pid {holder}) is not in the caller's cgroup\n{out}"
    );
}
