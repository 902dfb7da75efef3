//! The kept user namespace and its holder process (`src/holder/`): made once under a lock,
//! verified before use, recreated when gone, ended by `sbx system reset`, out of reach of
//! every sandbox; and the per-run mode it replaces gives files the same owners.
//!
//! Each test gives sbx a runtime directory of its own (`XDG_RUNTIME_DIR`), so it has a
//! holder of its own, which it ends when it finishes.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A private runtime directory, and with it a holder of its own, ended on drop.
struct Kept {
    runtime: TempDir,
    work: TempDir,
}

impl Kept {
    fn new() -> Kept {
        Kept {
            runtime: TempDir::new(),
            work: TempDir::new(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = sbx();
        cmd.args(args)
            .current_dir(self.work.path())
            .env("XDG_RUNTIME_DIR", self.runtime.path())
            .env_remove("SBX_USERNS");
        cmd
    }

    /// `sbx run --verbose OPTIONS -- sh -c SCRIPT`.
    fn run(&self, options: &[&str], script: &str) -> Outcome {
        let mut args = vec!["run", "--verbose"];
        args.extend_from_slice(options);
        args.extend_from_slice(&["--", "sh", "-c", script]);
        run(self.cmd(&args))
    }

    fn record(&self) -> PathBuf {
        self.runtime.join("sbx/.holder.json")
    }

    /// The holder's pid from its record.
    fn pid(&self) -> i32 {
        let text = fs::read_to_string(self.record()).expect("the holder's record");
        let record: serde_json::Value = serde_json::from_str(&text).unwrap();
        record["pid"].as_i64().expect("a pid in the record") as i32
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        let _ = run(self.cmd(&["system", "reset"]));
    }
}

/// The `sbx: userns:` line of a verbose run: which holder, and whether it was made now.
fn userns_line(out: &Outcome) -> String {
    out.stderr()
        .lines()
        .find(|l| l.starts_with("sbx: userns:"))
        .unwrap_or_else(|| panic!("no `sbx: userns:` line\n{out}"))
        .to_string()
}

fn nested_in(out: &Outcome) -> i32 {
    let line = userns_line(out);
    let pid = line
        .split("holder (pid ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok());
    pid.unwrap_or_else(|| panic!("not nested in a holder: {line}\n{out}"))
}

fn made_now(out: &Outcome) -> bool {
    userns_line(out).contains("made now")
}

fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn status_field(pid: i32, field: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn the_holder_is_made_once_and_holds_nothing_of_the_caller() {
    if !require_subids() {
        return;
    }
    let kept = Kept::new();
    let first = kept.run(&[], "id -u");
    first.assert_success();
    assert!(made_now(&first), "{first}");
    let pid = nested_in(&first);
    let second = kept.run(&[], "id -u");
    second.assert_success();
    assert_eq!(nested_in(&second), pid, "{second}");
    assert!(!made_now(&second), "{second}");
    assert_eq!(kept.pid(), pid);
    // Its own session and process group, at /, with nothing open but /dev/null.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        (fields[2], fields[3]),
        (&*pid.to_string(), &*pid.to_string()),
        "{stat}"
    );
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        Path::new("/")
    );
    let fds: Vec<PathBuf> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| fs::read_link(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(fds, vec![PathBuf::from("/dev/null"); 3]);
    assert_eq!(
        fs::read_to_string(format!("/proc/{pid}/environ")).unwrap(),
        ""
    );
    assert_eq!(status_field(pid, "Name"), "sbx-holder");
    // The whole range, mapped once: the caller at 0, the range from 1.
    let map = parse_id_map(&fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap());
    let (start, count) = subordinate_ranges("/etc/subuid")[0];
    assert_eq!(map[0], (0, u64::from(nix::unistd::getuid().as_raw()), 1));
    assert_eq!(map[1], (1, start, count), "{map:?}");
}

#[test]
fn files_through_a_writable_bind_get_the_owners_of_per_run_mode() {
    if !require_subids() {
        return;
    }
    let kept = Kept::new();
    let script = "touch $0 && chown 1234:1234 $0 && touch $0.me";
    let mut cmd = kept.cmd(&["run", "--verbose", "--uid", "0", "--gid", "0", "--"]);
    cmd.args(["sh", "-c", script, "nested"]);
    let nested = run(cmd);
    nested.assert_success();
    nested_in(&nested);
    let mut cmd = kept.cmd(&["run", "--verbose", "--uid", "0", "--gid", "0", "--"]);
    cmd.args(["sh", "-c", script, "per-run"])
        .env("SBX_USERNS", "per-run");
    let per_run = run(cmd);
    per_run.assert_success();
    assert!(userns_line(&per_run).contains("per run"), "{per_run}");
    let owner = |name: &str| {
        let meta = fs::metadata(kept.work.join(name)).unwrap();
        (meta.uid(), meta.gid())
    };
    let (start, _) = subordinate_ranges("/etc/subuid")[0];
    let (gstart, _) = subordinate_ranges("/etc/subgid")[0];
    let expected = ((start + 1233) as u32, (gstart + 1233) as u32);
    assert_eq!(owner("nested"), expected);
    assert_eq!(owner("per-run"), expected);
    let me = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    assert_eq!(owner("nested.me"), me);
    assert_eq!(owner("per-run.me"), me);
}

#[test]
fn concurrent_first_runs_make_one_holder() {
    if !require_subids() {
        return;
    }
    let kept = Kept::new();
    let running: Vec<Running> = (0..4)
        .map(|_| {
            let mut cmd = kept.cmd(&["run", "--verbose", "--", "true"]);
            spawn(&mut cmd, None)
        })
        .collect();
    let outs: Vec<Outcome> = running.into_iter().map(|r| r.finish(TIMEOUT)).collect();
    for out in &outs {
        out.assert_success();
    }
    let pids: Vec<i32> = outs.iter().map(nested_in).collect();
    assert!(pids.iter().all(|&p| p == pids[0]), "{pids:?}");
    assert_eq!(outs.iter().filter(|o| made_now(o)).count(), 1, "{pids:?}");
}

#[test]
fn a_killed_holder_is_made_again() {
    if !require_subids() {
        return;
    }
    let kept = Kept::new();
    let first = kept.run(&[], "true");
    first.assert_success();
    let old = nested_in(&first);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), nix::sys::signal::SIGKILL).unwrap();
    eventually("the holder is gone", || !alive(old));
    let again = kept.run(&[], "id -u");
    again.assert_success();
    assert!(made_now(&again), "{again}");
    assert_ne!(nested_in(&again), old);
    assert_eq!(again.lines(), [nix::unistd::getuid().to_string()]);
}

#[test]
fn system_reset_ends_the_holder() {
    if !require_subids() {
        return;
    }
    let kept = Kept::new();
    kept.run(&[], "true").assert_success();
    let pid = kept.pid();
    let reset = run(kept.cmd(&["system", "reset"]));
    reset.assert_success();
    assert!(reset.stdout().contains(&format!("pid {pid}")), "{reset}");
    eventually("the holder is gone", || !alive(pid));
    assert!(!kept.record().exists());
    let again = run(kept.cmd(&["system", "reset"]));
    again.assert_success();
    assert!(again.stdout().contains("no holder"), "{again}");
}

/// Where the kept namespace refuses to nest a sandbox's (a `user.max_user_namespaces`
/// limit: here its own, lowered by its owner, who may), the run fails with exit 125 and says
/// what to do; the holder is ended, and the next runs map per run and say so under
/// `--verbose`, as where making a holder fails.
#[test]
fn a_kept_namespace_that_refuses_nesting_gives_way_to_per_run_maps() {
    if !require_subids() || !require_tool("nsenter") {
        return;
    }
    let kept = Kept::new();
    kept.run(&[], "true").assert_success();
    let pid = kept.pid();
    let lowered = Command::new("nsenter")
        .args([
            "--user",
            "--target",
            &pid.to_string(),
            "--preserve-credentials",
        ])
        .args(["sh", "-c", "echo 0 > /proc/sys/user/max_user_namespaces"])
        .status()
        .unwrap();
    assert!(lowered.success(), "entering the kept namespace");

    let refused = kept.run(&[], "echo ran");
    refused.assert_sbx_error(&[
        &format!("the kept user namespace of the holder (pid {pid}) refused a nested one"),
        "its own user.max_user_namespaces is 0",
        "run the command again",
    ]);
    assert!(!refused.stdout().contains("ran"), "{refused}");
    assert_eq!(
        refused.stderr().matches("sbx: error:").count(),
        1,
        "{refused}"
    );
    eventually("the refusing holder is ended", || !alive(pid));

    let again = kept.run(&[], "echo ran; cat /proc/self/uid_map");
    again.assert_success();
    assert_eq!(again.lines()[0], "ran", "{again}");
    let line = userns_line(&again);
    assert!(
        line.contains("no kept user namespace") && line.contains("refused a nested one"),
        "{again}"
    );
    assert!(line.contains("newuidmap/newgidmap map this run"), "{again}");
    // The whole range, mapped per run: as many ids as the subordinate range and the user's.
    let mapped: u64 = again.lines()[1..]
        .iter()
        .flat_map(|l| parse_id_map(l))
        .map(|(_, _, n)| n)
        .sum();
    assert!(mapped > 1, "{again}");
    let record = fs::read_to_string(kept.record()).unwrap();
    assert!(record.contains("refused"), "{record}");
}

/// `kept.cmd(args)` with the size of the files it may write capped at `FSIZE_CAP` bytes,
/// less than a holder's record, and SIGXFSZ left as it is (killing sbx at that write) or
/// ignored (the write fails with EFBIG).
fn with_small_files(kept: &Kept, args: &[&str], ignore_sigxfsz: bool) -> Outcome {
    let mut cmd = kept.cmd(args);
    // SAFETY: the closure runs between fork and exec and only calls setrlimit and signal,
    // which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let cap = libc::rlimit {
                rlim_cur: FSIZE_CAP,
                rlim_max: FSIZE_CAP,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &cap) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if ignore_sigxfsz {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            }
            Ok(())
        });
    }
    run(cmd)
}

const FSIZE_CAP: u64 = 16;

/// This user's processes with `with_small_files`' cap: what those runs left running.
fn capped_processes() -> Vec<i32> {
    let me = nix::unistd::getuid().as_raw();
    let cap = format!("Max file size             {FSIZE_CAP}");
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let owner = fs::metadata(entry.path()).ok()?.uid();
            let limits = fs::read_to_string(entry.path().join("limits")).ok()?;
            (owner == me && limits.contains(&cap) && alive(pid)).then_some(pid)
        })
        .collect()
}

/// The maker of a holder killed before it recorded it (here by SIGXFSZ, at the record's
/// write), or failing to record it (EFBIG), leaves no holder behind that no record names:
/// the holder waits for its record before it settles. The next making sweeps the record
/// file the killed write left, and the run that could not record its holder maps per run.
#[test]
fn a_holder_that_was_never_recorded_does_not_outlive_its_maker() {
    if !require_subids() {
        return;
    }
    let kept = Kept::new();
    let run_args = ["run", "--verbose", "--", "echo", "ran"];

    let killed = with_small_files(&kept, &run_args, false);
    assert_eq!(killed.code, 128 + libc::SIGXFSZ, "{killed}");
    eventually("no holder outlives the killed run", || {
        capped_processes().is_empty()
    });

    let unrecorded = with_small_files(&kept, &run_args, true);
    unrecorded.assert_success();
    assert_eq!(unrecorded.lines(), ["ran"]);
    let line = userns_line(&unrecorded);
    assert!(
        line.contains("write the holder's record") && line.contains("map this run"),
        "{unrecorded}"
    );
    eventually("no holder outlives the unrecorded one", || {
        capped_processes().is_empty()
    });

    let normal = kept.run(&[], "true");
    normal.assert_success();
    assert!(made_now(&normal), "{normal}");
    let mut left: Vec<String> = fs::read_dir(kept.runtime.join("sbx"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".holder.json", ".holder.lock"]);
}

/// A record that names something other than the holder sbx made is never used: each
/// forgery below still gives a run in a new holder of its own.
#[test]
fn forged_records_are_not_trusted() {
    if !require_subids() {
        return;
    }
    let kept = Kept::new();
    kept.run(&[], "true").assert_success();
    let real = fs::read_to_string(kept.record()).unwrap();
    let mut other = Command::new("sleep").arg("60").spawn().unwrap();
    let other_pid = other.id() as i32;
    let other_stat = fs::read_to_string(format!("/proc/{other_pid}/stat")).unwrap();
    let other_start: u64 = other_stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let own_ns = fs::metadata(format!("/proc/{other_pid}/ns/user")).unwrap();
    let with = |pid: i32, start: u64, dev: u64, ino: u64| {
        format!(r#"{{"pid":{pid},"start":{start},"userns_dev":{dev},"userns_ino":{ino},"at":0}}"#)
    };
    let real_json: serde_json::Value = serde_json::from_str(&real).unwrap();
    let field = |k: &str| real_json[k].as_u64().unwrap();
    let forgeries = [
        // The real holder's pid with a start time it does not have.
        (
            "a wrong start time",
            with(
                field("pid") as i32,
                field("start") + 1,
                field("userns_dev"),
                field("userns_ino"),
            ),
        ),
        // Another process of the user, its real start time, its own (our) namespace.
        (
            "another process",
            with(other_pid, other_start, own_ns.dev(), own_ns.ino()),
        ),
        ("garbage", "{\"pid\": 1, ".to_string()),
    ];
    for (what, text) in forgeries {
        // The live holder stays for "a wrong start time": only that check refuses it.
        if what != "a wrong start time" {
            kill_holder(&kept);
        }
        fs::write(kept.record(), &text).unwrap();
        let out = kept.run(&[], "true");
        out.assert_success();
        assert!(made_now(&out), "{what}: {out}");
        assert_ne!(nested_in(&out), other_pid, "{what}");
    }
    // A symlink to a valid record of a live holder is not followed.
    let valid = fs::read_to_string(kept.record()).unwrap();
    let elsewhere = kept.runtime.join("elsewhere.json");
    fs::write(&elsewhere, &valid).unwrap();
    fs::remove_file(kept.record()).unwrap();
    std::os::unix::fs::symlink(&elsewhere, kept.record()).unwrap();
    let out = kept.run(&[], "true");
    out.assert_success();
    assert!(made_now(&out), "a symlinked record: {out}");
    let _ = run(kept.cmd(&["system", "reset"]));
    let old: serde_json::Value = serde_json::from_str(&valid).unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old["pid"].as_i64().unwrap() as i32),
        nix::sys::signal::SIGKILL,
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(field("pid") as i32),
        nix::sys::signal::SIGKILL,
    );
    let _ = other.kill();
    let _ = other.wait();
}

/// Ends the current holder without telling sbx (its record stays).
fn kill_holder(kept: &Kept) {
    if let Ok(text) = fs::read_to_string(kept.record()) {
        if let Some(pid) = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["pid"].as_i64())
            .filter(|&p| p > 1)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::SIGKILL,
            );
            eventually("the holder is gone", || !alive(pid as i32));
        }
    }
}

#[test]
fn sandboxes_cannot_see_or_signal_the_holder() {
    if !require_subids() {
        return;
    }
    let kept = Kept::new();
    kept.run(&[], "true").assert_success();
    let pid = kept.pid();
    let script = format!(
        "kill -0 {pid} 2>/dev/null && echo signalled; \
         test -e /proc/{pid} && echo visible; \
         cat /proc/[0-9]*/comm 2>/dev/null | grep -x sbx-holder; \
         kill -9 {pid} 2>/dev/null && echo killed; echo done"
    );
    for options in [
        &[][..],
        &[
            "--uid",
            "0",
            "--gid",
            "0",
            "--cap-add",
            "CAP_KILL",
            "--cap-add",
            "CAP_SYS_ADMIN",
            "--cap-add",
            "CAP_SYS_PTRACE",
            "--seccomp",
            "off",
        ],
    ] {
        let out = kept.run(options, &script);
        out.assert_success();
        assert_eq!(out.lines(), ["done"], "{options:?}\n{out}");
        assert!(alive(pid), "{options:?}: the holder was killed");
    }
    // Control: the same check from the host sees it.
    assert_eq!(status_field(pid, "Name"), "sbx-holder");
}

/// Without a subordinate range there is nothing to keep: a single-id map, no holder.
#[test]
fn nosubuid_runs_without_a_holder() {
    if !subordinate_ranges("/etc/subuid").is_empty() {
        skip("this user has a subuid range; nosubuid_ tests run as a user without one");
        return;
    }
    if !require_sandbox() {
        return;
    }
    let kept = Kept::new();
    let out = kept.run(&[], "cat /proc/self/uid_map");
    out.assert_success();
    assert!(!out.stderr().contains("sbx: userns:"), "{out}");
    let uid = nix::unistd::getuid().as_raw();
    assert_eq!(
        parse_id_map(&out.lines()[0]),
        [(u64::from(uid), u64::from(uid), 1)]
    );
    assert!(!kept.record().exists());
}

/// The host pid of the process whose command line is exactly `args`, among this user's.
fn pid_of(args: &[&str]) -> Option<i32> {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        (fs::read(entry.path().join("cmdline")).ok()? == want).then_some(pid)
    })
}

/// Sandboxes nested in the same kept namespace are siblings: one cannot enter another's
/// user namespace even as root with CAP_SYS_ADMIN, no seccomp and no Landlock, holding an
/// open handle on it (the sibling's namespace file as its stdin): setns needs the
/// capability in the target namespace, which only the holder's own namespace, where no
/// sandbox process lives, has over it. The control: the host user, who owns the holder,
/// enters the same namespace through the same kind of handle.
#[test]
fn a_sandbox_cannot_enter_a_siblings_namespaces() {
    if !require_subids() || !require_tool("nsenter") {
        return;
    }
    let kept = Kept::new();
    let marker = format!("{}.{}", 40 + std::process::id() % 9, std::process::id());
    let sleeper = ["sleep", marker.as_str()];
    let mut sibling = kept
        .cmd(&["run", "--", "sleep", &marker])
        .spawn()
        .expect("run a sibling");
    let mut pid = None;
    eventually("the sibling sandbox runs", || {
        pid = pid_of(&sleeper);
        pid.is_some()
    });
    let ns = format!("/proc/{}/ns/user", pid.unwrap());
    // The handle goes in as stdin (the helpers in tests/common give /dev/null).
    let enter = |cmd: &mut Command| {
        let out = cmd
            .stdin(fs::File::open(&ns).expect("open the sibling's user namespace"))
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stderr)
    };
    let (code, stderr) = enter(&mut kept.cmd(&[
        "run",
        "--uid",
        "0",
        "--gid",
        "0",
        "--cap-add",
        "CAP_SYS_ADMIN",
        "--seccomp",
        "off",
        "--landlock",
        "off",
        "--allow-nested",
        "--",
        "nsenter",
        "--user=/proc/self/fd/0",
        "true",
    ]));
    assert_ne!(
        code,
        Some(0),
        "a sandbox entered its sibling's user namespace"
    );
    assert!(
        stderr.contains("reassociate to namespace 'ns/user' failed: Operation not permitted"),
        "refused by setns itself: {stderr}"
    );
    let (code, stderr) = enter(Command::new("nsenter").args(["--user=/proc/self/fd/0", "true"]));
    assert_eq!(code, Some(0), "control: the host user enters it: {stderr}");
    let _ = sibling.kill();
    let _ = sibling.wait();
}
