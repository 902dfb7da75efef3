//! A hostile build step against the *next* run and the user's own tools (issue "a hostile
//! build step must not reach past its sandbox, in this run or the next").
//!
//! A sandbox can write its writable binds, so everything below them is attacker-controlled
//! the next time sbx, git or a shell looks at it. Each test plants what an earlier step
//! could have planted, runs sbx again, and asserts that nothing outside was reached. Each
//! has a control showing that the attack is real: the planted link or file does reach the
//! victim when followed, git does run the planted command when nothing protects it, the
//! socket does answer when bound in on purpose.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// A directory in the user's home that no sandbox should ever reach.
fn victim() -> TempDir {
    let dir = TempDir::in_home();
    fs::write(dir.join("keep"), "untouched\n").unwrap();
    dir
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_untouched(victim: &TempDir) {
    assert_eq!(
        entries(victim.path()),
        ["keep"],
        "the victim directory changed"
    );
    assert_eq!(
        fs::read_to_string(victim.join("keep")).unwrap(),
        "untouched\n"
    );
}

fn git_available() -> bool {
    Command::new("git")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        || skip("git is not installed (ci/setup-host.sh installs it)")
}

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// 1. A planted `.git` link, or a link on a protected path, never becomes a bind
// ---------------------------------------------------------------------------------------

#[test]
fn planted_git_link_is_refused_and_the_home_is_not_reached() {
    if !require_sandbox() {
        return;
    }
    let project = TempDir::new();
    let victim = victim();
    // Run 1: the hostile step plants `.git -> ~/victim` (possible: the project is writable).
    let planted = format!("ln -s {} .git && echo planted", victim.str());
    sandbox_sh(project.path(), &[], &planted).assert_success();
    assert!(project.join(".git").is_symlink());
    // Run 2: any command. It must not see or write the victim through `.git`.
    let out = sandbox_sh(project.path(), &[], "echo pwned > .git/pwned; ls .git");
    out.assert_sbx_error(&[".git is a symbolic link", project.str()]);
    assert_untouched(&victim);
    // Control: the link does lead to the victim when followed (here by the test itself).
    assert!(project.join(".git/keep").exists());
}

#[test]
fn protect_through_a_planted_link_creates_nothing_outside() {
    if !require_sandbox() {
        return;
    }
    let project = TempDir::new();
    let victim = victim();
    sandbox_sh(
        project.path(),
        &[],
        &format!("ln -s {} secrets", victim.str()),
    )
    .assert_success();
    for entry in ["secrets/token", "secrets/keys/"] {
        let out = sandbox_sh(project.path(), &["--protect", entry], "echo ran");
        out.assert_sbx_error(&["symbolic link", "secrets"]);
        assert_untouched(&victim);
    }
    // Control: without the link, --protect creates and pins the path in the project.
    fs::remove_file(project.join("secrets")).unwrap();
    sandbox_sh(
        project.path(),
        &["--protect", "secrets/token"],
        "echo x > secrets/token || echo refused",
    )
    .assert_success();
    assert!(project.join("secrets/token").is_file());
    assert_eq!(fs::read(project.join("secrets/token")).unwrap(), b"");
}

// ---------------------------------------------------------------------------------------
// 2. Git runs nothing on the host that a step planted
// ---------------------------------------------------------------------------------------

/// Plants git configuration that runs `touch MARKER` on the next `git status`.
fn commondir_attack(marker: &Path) -> String {
    format!(
        "mkdir -p .git/evil && \
         printf '[core]\\n\\trepositoryformatversion = 0\\n\\tfsmonitor = touch {m}\\n' > .git/evil/config && \
         cp -r .git/objects .git/refs .git/HEAD .git/evil/ 2>/dev/null; \
         printf 'evil\\n' > .git/commondir && echo commondir; \
         printf '[core]\\n\\tfsmonitor = touch {m}\\n' >> .git/config && echo config; \
         printf '[core]\\n\\tfsmonitor = touch {m}\\n' > .git/config.worktree && echo worktree; \
         printf '/elsewhere\\n' > .git/objects/info/alternates && echo alternates; \
         printf 'x\\n' > .git/info/exclude && echo info; \
         printf '#!/bin/sh\\ntouch {m}\\n' > .git/hooks/pre-commit && echo hook; true",
        m = marker.display()
    )
}

fn repo_with_commit() -> TempDir {
    let repo = TempDir::new();
    assert!(git(repo.path(), &["init", "-q"]).status.success());
    fs::write(repo.join("file"), "x\n").unwrap();
    assert!(git(repo.path(), &["add", "file"]).status.success());
    assert!(git(repo.path(), &["commit", "-qm", "one"]).status.success());
    repo
}

#[test]
fn git_config_surface_cannot_be_planted() {
    if !require_sandbox() || !git_available() {
        return;
    }
    let repo = repo_with_commit();
    let marker_dir = TempDir::in_home();
    let marker = marker_dir.join("pwned");
    for options in [&[][..], &["--git", "writable"]] {
        let out = sandbox_sh(repo.path(), options, &commondir_attack(&marker));
        out.assert_success();
        // Only the commondir of a writable .git can be created (SECURITY.md says so); none
        // of the rest, in either mode.
        let expected: &[&str] = if options.is_empty() {
            &[]
        } else {
            &["commondir"]
        };
        assert_eq!(out.lines(), expected, "{options:?}\n{out}");
        let _ = fs::remove_file(repo.join(".git/commondir"));
        let _ = fs::remove_dir_all(repo.join(".git/evil"));
        git(repo.path(), &["status"]);
        assert!(!marker.exists(), "{options:?}: git ran a planted command");
    }
    // Control: the same attack, made on the host directly, does make git run the command.
    let out = Command::new("sh")
        .arg("-c")
        .arg(commondir_attack(&marker))
        .current_dir(repo.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    git(repo.path(), &["status"]);
    assert!(
        marker.exists(),
        "control: git did not run the planted fsmonitor"
    );
}

#[test]
fn worktree_git_file_cannot_be_redirected() {
    if !require_sandbox() || !git_available() {
        return;
    }
    let repo = repo_with_commit();
    let parent = TempDir::new();
    let tree = parent.join("tree");
    let added = git(
        repo.path(),
        &["worktree", "add", "-q", tree.to_str().unwrap()],
    );
    assert!(added.status.success(), "{added:?}");
    let before = fs::read(tree.join(".git")).unwrap();
    let marker_dir = TempDir::in_home();
    let marker = marker_dir.join("pwned");
    // The step makes a git directory of its own and points the worktree's `.git` file at it.
    let script = format!(
        "mkdir -p evil && cp -r {repo}/.git/objects {repo}/.git/refs {repo}/.git/HEAD evil/ && \
         printf '[core]\\n\\trepositoryformatversion = 0\\n\\tfsmonitor = touch {m}\\n' > evil/config; \
         printf 'gitdir: evil\\n' > .git && echo redirected; \
         rm -f .git && echo removed; true",
        repo = repo.str(),
        m = marker.display()
    );
    let out = sandbox_sh(&tree, &["--ro-bind", repo.str()], &script);
    out.assert_success();
    assert_eq!(out.lines(), Vec::<String>::new(), "{out}");
    assert_eq!(fs::read(tree.join(".git")).unwrap(), before);
    git(&tree, &["status"]);
    assert!(!marker.exists(), "git ran a planted command");
    // Control: done on the host, the redirection works.
    fs::write(tree.join(".git"), "gitdir: evil\n").unwrap();
    git(&tree, &["status"]);
    assert!(
        marker.exists(),
        "control: git did not follow the redirected .git file"
    );
}

#[test]
fn writable_git_commits_but_read_only_git_does_not() {
    if !require_sandbox() || !git_available() {
        return;
    }
    let repo = repo_with_commit();
    let commit = "echo y >> file && git -c user.name=t -c user.email=t@example.invalid \
                  commit -qam two && echo committed";
    let out = sandbox_sh(repo.path(), &[], commit);
    assert!(out.lines().is_empty(), "{out}");
    let out = sandbox_sh(repo.path(), &["--git", "writable"], commit);
    assert_eq!(out.lines(), ["committed"], "{out}");
    let log = git(repo.path(), &["log", "--oneline"]);
    assert_eq!(String::from_utf8_lossy(&log.stdout).lines().count(), 2);
    sandbox_sh(repo.path(), &["--git", "bogus"], "true").assert_sbx_error(&["--git"]);
}

// ---------------------------------------------------------------------------------------
// 3. The user's agents and buses are out of reach
// ---------------------------------------------------------------------------------------

/// Inside: tries to connect to each path; prints `PATH connected` for those that answer.
const CONNECT: &str = r#"
import socket, sys
for path in sys.argv[1:]:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_UNIX, kind)
        try:
            s.connect(path)
            print(path, "connected")
            break
        except OSError:
            pass
        finally:
            s.close()
"#;

fn connect_from_sandbox(
    dir: &Path,
    options: &[&str],
    env: &[(&str, &Path)],
    paths: &[&Path],
) -> Outcome {
    let mut cmd = sbx_run(dir, options);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(["--", "/usr/bin/python3", "-c", CONNECT]);
    cmd.args(paths);
    run(&mut cmd)
}

/// A listening socket that answers every connection until dropped.
fn listen(path: &Path) -> UnixListener {
    let _ = fs::remove_file(path);
    UnixListener::bind(path).unwrap()
}

/// The user's runtime directory as a login session has it: `/run/user/UID`, which
/// ci/setup-host.sh makes for the test user as logind would.
fn runtime_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(format!("/run/user/{}", uid()));
    let probe = dir.join(unique("probe"));
    if fs::write(&probe, "").is_ok() {
        let _ = fs::remove_file(&probe);
        return Some(dir);
    }
    skip(&format!(
        "{} does not exist or is not writable (ci/setup-host.sh makes it, as logind would)",
        dir.display()
    ));
    None
}

#[test]
fn agents_in_the_runtime_directory_are_unreachable() {
    if !require_sandbox() || !Path::new("/usr/bin/python3").exists() && !skip("no python3") {
        return;
    }
    let Some(runtime) = runtime_dir() else {
        return;
    };
    let agent = runtime.join(format!("{}.sock", unique("agent")));
    let _listener = listen(&agent);
    let _cleanup = TempFile(agent.clone());
    let project = TempDir::new();
    let env = [("XDG_RUNTIME_DIR", runtime.as_path())];
    let out = connect_from_sandbox(project.path(), &[], &env, &[&agent]);
    out.assert_success();
    assert_eq!(out.stdout(), "", "{out}");
    // Control: bound in on purpose, the agent answers.
    let out = connect_from_sandbox(
        project.path(),
        &["--ro-bind", runtime.to_str().unwrap()],
        &env,
        &[&agent],
    );
    out.assert_success();
    assert_eq!(
        out.lines(),
        [format!("{} connected", agent.display())],
        "{out}"
    );
}

/// The invariant: from a default sandbox, no unix socket bound on the host accepts a
/// connection, except those inside the project directory itself.
#[test]
fn no_host_socket_answers_but_the_projects_own() {
    if !require_sandbox() || !Path::new("/usr/bin/python3").exists() && !skip("no python3") {
        return;
    }
    let project = TempDir::new();
    let elsewhere = TempDir::new_in(Path::new("/var/tmp"));
    let own = project.join("dev.sock");
    let host = elsewhere.join("db.sock");
    let _l1 = listen(&own);
    let _l2 = listen(&host);
    // Every pathname socket of the host's network namespace, ours included.
    let table = fs::read_to_string("/proc/net/unix").unwrap();
    let mut paths: Vec<PathBuf> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(7))
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    paths.sort();
    paths.dedup();
    assert!(paths.contains(&host) && paths.contains(&own));
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let out = connect_from_sandbox(project.path(), &[], &[], &refs);
    out.assert_success();
    assert_eq!(
        out.lines(),
        [format!("{} connected", own.display())],
        "{out}"
    );
    // Control: with the layer off, the host's socket answers through the read-only root.
    let profile = project.join("visible.json");
    fs::write(
        &profile,
        r#"{"extends": "default", "security": {"hide_host_sockets": false}}"#,
    )
    .unwrap();
    let out = connect_from_sandbox(
        project.path(),
        &["-p", profile.to_str().unwrap()],
        &[],
        &[&host],
    );
    assert_eq!(
        out.lines(),
        [format!("{} connected", host.display())],
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------
// 5. Files sbx writes where a sandbox can write follow no link
// ---------------------------------------------------------------------------------------

#[test]
fn status_json_does_not_write_through_planted_links() {
    if !require_sandbox() {
        return;
    }
    let project = TempDir::new();
    let victim = victim();
    let target = victim.join("keep");
    // What a sandbox could spray: the final name and the temporary names of the next pids
    // (sbx's pid is not known inside, but they come in sequence on the host).
    symlink(&target, project.join("st.json")).unwrap();
    let last: u32 = fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .map(|s| s.trim().parse().unwrap_or(1))
        .unwrap_or(1);
    for pid in last..last + 400 {
        symlink(&target, project.join(format!(".st.json.{pid}.tmp"))).unwrap();
    }
    let out = sandbox_sh(project.path(), &["--status-json", "st.json"], "true");
    out.assert_success();
    assert_untouched(&victim);
    let meta = fs::symlink_metadata(project.join("st.json")).unwrap();
    assert!(meta.file_type().is_file(), "st.json is not a fresh file");
    let status: serde_json::Value =
        serde_json::from_slice(&fs::read(project.join("st.json")).unwrap()).unwrap();
    assert_eq!(status["status"], "exited", "{status}");
}

// ---------------------------------------------------------------------------------------
// 6. sbx's own directories are found by identity, not by their text
// ---------------------------------------------------------------------------------------

#[test]
fn profiles_behind_a_symlinked_config_home_stay_read_only() {
    if !require_sandbox() {
        return;
    }
    // A dotfiles layout: the config home is a link into the project (a writable bind).
    let project = TempDir::new();
    let links = TempDir::new();
    fs::create_dir_all(project.join("dotfiles/config/sbx/profiles")).unwrap();
    let profile = project.join("dotfiles/config/sbx/profiles/mine.json");
    fs::write(&profile, r#"{"extends": "default"}"#).unwrap();
    let config = links.join("config");
    symlink(project.join("dotfiles/config"), &config).unwrap();
    let mut cmd = sbx_run(project.path(), &["-p", "mine"]);
    cmd.env("XDG_CONFIG_HOME", &config).args([
        "--",
        "sh",
        "-c",
        "echo '{\"network\": \"host\"}' > dotfiles/config/sbx/profiles/mine.json && echo edited; \
         echo x > dotfiles/config/sbx/profiles/new.json && echo added; \
         echo x > dotfiles/config/other && echo other-ok",
    ]);
    let out = run(&mut cmd);
    out.assert_success();
    // Control: the rest of the config home is as writable as the project.
    assert_eq!(out.lines(), ["other-ok"], "{out}");
    assert_eq!(
        fs::read_to_string(&profile).unwrap(),
        r#"{"extends": "default"}"#
    );
}

// ---------------------------------------------------------------------------------------
// 7. A file given as stdin stays read-only
// ---------------------------------------------------------------------------------------

#[test]
fn stdin_file_cannot_be_written_through_proc() {
    if !require_sandbox() || !require("landlock") {
        return;
    }
    let notes_dir = TempDir::in_home();
    let notes = notes_dir.join("notes.txt");
    let project = TempDir::new();
    let attack = "cat > /dev/null; echo pwned > /proc/self/fd/0 && echo wrote; true";
    for (options, expect_written) in [(&[][..], false), (&["--landlock", "off"][..], true)] {
        fs::write(&notes, "mine\n").unwrap();
        // The harness gives every run its own stdin; a shell redirects this one.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "f=$1; shift; exec \"$@\" < \"$f\"", "sh"])
            .arg(&notes)
            .arg(sbx_bin())
            .arg("run")
            .args(options)
            .args(["--", "sh", "-c", attack])
            .current_dir(project.path());
        let out = run(&mut cmd);
        out.assert_success();
        let content = fs::read_to_string(&notes).unwrap();
        if expect_written {
            // Control: without Landlock the attack works (the file's own mount is writable).
            assert_eq!(content, "pwned\n", "control {options:?}\n{out}");
        } else {
            assert_eq!(content, "mine\n", "{out}");
            assert!(out.lines().is_empty(), "{out}");
        }
    }
    // Output files stay writable: `> /dev/stdout` inside reaches the caller's file.
    let output = notes_dir.join("out.txt");
    let mut cmd = sbx_run(project.path(), &[]);
    cmd.args(["--", "sh", "-c", "echo via-reopen > /dev/stdout"]);
    cmd.stdout(fs::File::create(&output).unwrap());
    let status = cmd.status().unwrap();
    assert!(status.success());
    assert_eq!(fs::read_to_string(&output).unwrap(), "via-reopen\n");
}

// ---------------------------------------------------------------------------------------
// 8. Bind sources through links planted in a writable bind
// ---------------------------------------------------------------------------------------

#[test]
fn bind_source_through_a_planted_link_is_refused() {
    if !require_sandbox() {
        return;
    }
    let project = TempDir::new();
    let victim = victim();
    sandbox_sh(project.path(), &[], &format!("ln -s {} data", victim.str())).assert_success();
    for option in ["--bind", "--ro-bind"] {
        let out = sandbox_sh(
            project.path(),
            &[option, "./data:/tmp/data"],
            "echo pwned > /tmp/data/pwned; ls /tmp/data",
        );
        out.assert_sbx_error(&["symbolic link", "data"]);
    }
    assert_untouched(&victim);
    // Control: a real directory binds, and naming the link's target directly works too.
    fs::remove_file(project.join("data")).unwrap();
    fs::create_dir(project.join("data")).unwrap();
    sandbox_sh(
        project.path(),
        &["--bind", "./data:/tmp/data"],
        "echo ok > /tmp/data/ok",
    )
    .assert_success();
    assert!(project.join("data/ok").exists());
    let out = sandbox_sh(
        project.path(),
        &["--ro-bind", &format!("{}:/tmp/data", victim.str())],
        "cat /tmp/data/keep",
    );
    out.assert_success();
    assert_eq!(out.lines(), ["untouched"]);
}

// ---------------------------------------------------------------------------------------
// 10. Running from the home directory; fork bombs
// ---------------------------------------------------------------------------------------

#[test]
fn run_from_home_does_not_expose_it() {
    if !require_sandbox() {
        return;
    }
    let home = home();
    let marker = unique("planted");
    let _cleanup = TempFile(home.join(&marker));
    let script =
        format!("pwd; ls -A; touch {marker} && echo wrote; ls ~/.bashrc 2>/dev/null; true");
    let out = sandbox_sh(&home, &[], &script);
    out.assert_success();
    assert!(
        out.stderr().contains("not binding") && out.stderr().contains("home directory"),
        "{out}"
    );
    // The hidden, empty home; what is written there is gone afterwards.
    assert_eq!(
        out.lines(),
        [home.display().to_string(), "wrote".to_string()],
        "{out}"
    );
    assert!(!home.join(&marker).exists());
    // From /, the same: the read-only root as the working directory.
    let out = sandbox_sh(
        Path::new("/"),
        &[],
        "pwd; touch /x 2>/dev/null || echo read-only",
    );
    out.assert_success();
    assert_eq!(out.lines(), ["/", "read-only"], "{out}");
    // Control: asked for by name, the home is bound.
    let out = sandbox_sh(
        &home,
        &["--bind", home.to_str().unwrap()],
        &format!("touch {marker}"),
    );
    out.assert_success();
    assert!(home.join(&marker).exists());
}

#[test]
fn default_profile_bounds_the_number_of_processes() {
    if !require_sandbox() || !Path::new("/usr/bin/python3").exists() && !skip("no python3") {
        return;
    }
    let project = TempDir::new();
    let bomb = r#"
import os, signal
n = 0
try:
    while n < 20000:
        if os.fork() == 0:
            signal.pause()
            os._exit(0)
        n += 1
except OSError as e:
    print("stopped", n, e.errno)
"#;
    // Thousands of forks: minutes under a VM's software emulation, so a longer deadline.
    let mut cmd = sbx_run(project.path(), &[]);
    cmd.args([
        "--",
        "sh",
        "-c",
        &format!("grep 'Max processes' /proc/self/limits; /usr/bin/python3 -c '{bomb}'"),
    ]);
    let out = spawn(&mut cmd, None).finish(Duration::from_secs(300));
    out.assert_success();
    let lines = out.lines();
    assert!(lines[0].split_whitespace().any(|w| w == "4096"), "{out}");
    let stopped: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(stopped[0], "stopped", "{out}");
    let n: u32 = stopped[1].parse().unwrap();
    assert!(n < 4096, "{out}");
    assert_eq!(stopped[2], "11", "EAGAIN\n{out}");
}

// ---------------------------------------------------------------------------------------
// Memory through tmpfs (issue "hostile images, registries and upper directories", 8)
// ---------------------------------------------------------------------------------------

/// Sizes in bytes of the filesystems at `paths` inside a sandbox run with `options`.
fn tmpfs_sizes(options: &[&str], paths: &[&str]) -> Vec<u64> {
    let project = TempDir::new();
    let script = format!("stat -f -c '%b %S' {}", paths.join(" "));
    let out = sandbox_sh(project.path(), options, &script);
    out.assert_success();
    out.lines()
        .iter()
        .map(|l| {
            let (blocks, size) = l.split_once(' ').unwrap();
            blocks.parse::<u64>().unwrap() * size.parse::<u64>().unwrap()
        })
        .collect()
}

fn mem_total() -> u64 {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Within a page per share of the kernel's rounding.
fn about(actual: u64, expected: u64) -> bool {
    actual.abs_diff(expected) <= 1 << 20
}

#[test]
fn default_tmpfs_sizes_leave_memory_for_the_host() {
    if !require_sandbox() {
        return;
    }
    let mem = mem_total();
    let sizes = tmpfs_sizes(&[], &["/tmp", "/dev/shm", "~"]);
    assert_eq!(
        sizes[1],
        64 << 20,
        "/dev/shm is 64 MiB, as podman's: {sizes:?}"
    );
    assert!(about(sizes[0], mem / 5), "/tmp is 20% of {mem}: {sizes:?}");
    assert!(
        about(sizes[2], mem / 5),
        "the hidden home is 20% of {mem}: {sizes:?}"
    );
    assert!(sizes.iter().sum::<u64>() <= mem / 2, "{sizes:?} of {mem}");
    // Each one can be set: on the command line, in a profile, and for a profile's mounts.
    let sizes = tmpfs_sizes(
        &["--shm-size", "128M", "--tmp-size", "10%"],
        &["/tmp", "/dev/shm"],
    );
    assert_eq!(sizes[1], 128 << 20, "{sizes:?}");
    assert!(about(sizes[0], mem / 10), "{sizes:?}");
    let project = TempDir::new();
    let profile = project.join("sizes.json");
    fs::write(
        &profile,
        r#"{"extends": "default", "tmp_size": "256M", "shm_size": "5%",
            "mounts": [{"type": "tmpfs", "destination": "/tmp/t", "size": "32M"}]}"#,
    )
    .unwrap();
    let sizes = tmpfs_sizes(
        &["-p", profile.to_str().unwrap()],
        &["/tmp", "/dev/shm", "/tmp/t"],
    );
    assert_eq!(sizes[0], 256 << 20, "{sizes:?}");
    assert!(about(sizes[1], mem / 20), "{sizes:?}");
    assert_eq!(sizes[2], 32 << 20, "{sizes:?}");
    let project = TempDir::new();
    sandbox_sh(project.path(), &["--shm-size", "0%"], "true").assert_sbx_error(&["--shm-size"]);
}
