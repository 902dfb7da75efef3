//! What the sandbox can and cannot see and touch: the read-only host root and its
//! sub-mounts, binds and their ownership, private /tmp, the hidden home directory, the
//! minimal /dev, the pid namespace and the network.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;

const EROFS: &str = "Read-only file system";

// ---------------------------------------------------------------------------------------
// Binds and ownership
// ---------------------------------------------------------------------------------------

#[test]
fn files_created_in_the_working_directory_are_owned_by_the_caller() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    sandbox_sh(dir.path(), &[], "echo inside > made-inside; mkdir made-dir").assert_success();
    let file = dir.join("made-inside");
    assert_eq!(fs::read_to_string(&file).unwrap(), "inside\n");
    for path in [file, dir.join("made-dir")] {
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (uid(), gid()),
            "owner of {}",
            path.display()
        );
    }
}

#[test]
fn files_created_through_bind_are_owned_by_the_caller() {
    if !require_sandbox() {
        return;
    }
    let cwd = TempDir::new();
    let shared = TempDir::new();
    let file = shared.join("through-bind");
    let script = format!("echo inside > {}", file.display());
    sandbox_sh(cwd.path(), &["--bind", shared.str()], &script).assert_success();
    assert_eq!(fs::read_to_string(&file).unwrap(), "inside\n");
    let meta = fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid(), gid()));
}

#[test]
fn bind_to_another_destination_shows_the_source() {
    if !require_sandbox() {
        return;
    }
    let cwd = TempDir::new();
    let src = TempDir::new();
    fs::write(src.join("from-host"), "host data\n").unwrap();
    // The destination lies in the sandbox's private /tmp, where it can be created.
    let dst = format!("/tmp/{}", unique("bind-dst"));
    let spec = format!("{}:{dst}", src.str());
    let script = format!("cat {dst}/from-host; echo new > {dst}/from-sandbox");
    let out = sandbox_sh(cwd.path(), &["--bind", &spec], &script);
    out.assert_success();
    assert_eq!(out.stdout(), "host data\n");
    assert_eq!(
        fs::read_to_string(src.join("from-sandbox")).unwrap(),
        "new\n"
    );
}

// ---------------------------------------------------------------------------------------
// Read-only root and binds
// ---------------------------------------------------------------------------------------

/// Tries to create each of `paths` inside; returns the output (one line per failure).
fn try_create(dir: &Path, options: &[&str], paths: &[&str]) -> Outcome {
    let script = paths
        .iter()
        .map(|p| format!("touch '{p}' && echo created '{p}'"))
        .collect::<Vec<_>>()
        .join("; ");
    sandbox_sh(dir, options, &script)
}

#[test]
fn host_root_is_read_only() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let name = unique("ro");
    let paths = [format!("/usr/{name}"), format!("/etc/{name}")];
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    let out = try_create(dir.path(), &[], &paths);
    assert!(!out.stdout().contains("created"), "{out}");
    for p in &paths {
        assert!(
            out.stderr()
                .lines()
                .any(|l| l.contains(p) && l.contains(EROFS)),
            "creating {p} should fail with {EROFS:?}\n{out}"
        );
        assert!(!Path::new(p).exists());
    }
}

#[test]
fn host_root_is_read_only_even_where_the_caller_may_write() {
    if !require_sandbox() {
        return;
    }
    // /var/tmp is writable by everyone on the host and is not bound by the default
    // profile: only the read-only root stands between the sandbox and it.
    let host_file = Path::new("/var/tmp").join(unique("var-tmp"));
    let _cleanup = TempFile(host_file.clone());
    // Control: the caller can create the file there on the host.
    if let Err(e) = fs::write(&host_file, "host") {
        skip(&format!("/var/tmp is not writable on this host: {e}"));
        return;
    }
    fs::remove_file(&host_file).unwrap();

    let dir = TempDir::new();
    let path = host_file.to_str().unwrap();
    let out = try_create(dir.path(), &[], &[path]);
    assert!(!out.stdout().contains("created"), "{out}");
    assert!(out.stderr().contains(EROFS), "{out}");
    assert!(
        !host_file.exists(),
        "the sandbox wrote into the host's /var/tmp"
    );
}

#[test]
fn ro_bind_destination_is_read_only() {
    if !require_sandbox() {
        return;
    }
    let cwd = TempDir::new();
    let src = TempDir::new();
    fs::write(src.join("existing"), "visible\n").unwrap();
    let target = src.join("new-file");
    let script = format!(
        "cat {0}/existing; touch {1} && echo created; echo more >> {0}/existing && echo appended",
        src.str(),
        target.display()
    );
    let out = sandbox_sh(cwd.path(), &["--ro-bind", src.str()], &script);
    assert_eq!(out.stdout(), "visible\n", "{out}");
    assert_eq!(
        out.stderr().matches(EROFS).count(),
        2,
        "both writes fail with {EROFS:?}\n{out}"
    );
    assert!(!target.exists());
    assert_eq!(
        fs::read_to_string(src.join("existing")).unwrap(),
        "visible\n"
    );
    // The same directory is writable on the host, and through a read-write bind.
    sandbox_sh(cwd.path(), &["--bind", src.str()], &script).assert_success();
    assert!(target.exists());
}

#[test]
fn ro_bind_of_a_file_is_read_only() {
    if !require_sandbox() {
        return;
    }
    let cwd = TempDir::new();
    let src = TempDir::new();
    let file = src.join("config");
    fs::write(&file, "original\n").unwrap();
    let dst = format!("/tmp/{}", unique("ro-file"));
    let spec = format!("{}:{dst}", file.display());
    let script = format!("cat {dst}; echo changed > {dst} && echo written");
    let out = sandbox_sh(cwd.path(), &["--ro-bind", &spec], &script);
    assert_eq!(out.stdout(), "original\n", "{out}");
    assert!(out.stderr().contains(EROFS), "{out}");
    assert_eq!(fs::read_to_string(&file).unwrap(), "original\n");
}

/// Sub-mounts of the host root that are read-write on the host, as candidates for showing
/// that the root is read-only recursively. Skips what the sandbox replaces (/proc, /dev,
/// /tmp), the home and working directories, and anything that is not a directory.
fn writable_host_submounts(cwd: &Path) -> Vec<MountEntry> {
    let home = home();
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let replaced = ["/proc", "/dev", "/tmp"];
    let mut seen = BTreeSet::new();
    parse_mountinfo(&text)
        .into_iter()
        .rev() // the last mount on a point is the visible one
        .filter(|m| seen.insert(m.mount_point.clone()))
        .filter(|m| m.mount_point != "/")
        .filter(|m| m.options.split(',').any(|o| o == "rw"))
        .filter(|m| {
            let p = Path::new(&m.mount_point);
            !replaced.iter().any(|r| p.starts_with(r))
                && !p.starts_with(&home)
                && !home.starts_with(p)
                && !p.starts_with(cwd)
                && !cwd.starts_with(p)
                && !m.mount_point.contains(char::is_whitespace)
                && p.is_dir()
        })
        .collect()
}

#[test]
fn host_submounts_are_read_only() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let candidates = writable_host_submounts(dir.path());
    // Prefer mounts outside /sys (which a later sbx may replace); use /sys sub-mounts such
    // as /sys/fs/cgroup when the host has nothing else.
    let (outside_sys, in_sys): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .partition(|m| !Path::new(&m.mount_point).starts_with("/sys"));
    let chosen = if outside_sys.is_empty() {
        in_sys
    } else {
        outside_sys
    };
    if chosen.is_empty() {
        skip("the host has no read-write sub-mount of / outside /proc, /dev and /tmp");
        return;
    }

    let out = sandbox_sh(dir.path(), &[], "cat /proc/self/mountinfo");
    out.assert_success();
    let inside = parse_mountinfo(&out.stdout());
    for host in &chosen {
        let Some(m) = inside
            .iter()
            .rev()
            .find(|m| m.mount_point == host.mount_point)
        else {
            panic!(
                "host mount {} is missing in the sandbox\n{out}",
                host.mount_point
            );
        };
        assert!(
            m.options.split(',').any(|o| o == "ro"),
            "{} is read-write on the host and must be read-only inside, but is: {}",
            m.mount_point,
            m.line
        );
    }

    // And a user would see it: creating a file there fails with EROFS.
    let target = format!("{}/{}", chosen[0].mount_point, unique("submount"));
    let out = try_create(dir.path(), &[], &[&target]);
    assert!(!out.stdout().contains("created"), "{out}");
    assert!(out.stderr().contains(EROFS), "{out}");
}

// ---------------------------------------------------------------------------------------
// /tmp and home
// ---------------------------------------------------------------------------------------

#[test]
fn tmp_is_private_and_empty() {
    if !require_sandbox() {
        return;
    }
    // The working directory under $HOME, so that it is not bound somewhere in /tmp.
    let dir = TempDir::in_home();
    // The host's own /tmp (TMPDIR may point elsewhere, as in the VM tier).
    let host_side = Path::new("/tmp").join(unique("host-visible"));
    fs::write(&host_side, "host").unwrap();
    let _host_guard = TempFile(host_side.clone());
    let inside_name = unique("written-inside");

    let script = format!(
        "ls -A /tmp | wc -l; test -e {} && echo host-file-visible; echo x > /tmp/{inside_name} && ls /tmp",
        host_side.display()
    );
    let out = sandbox_sh(dir.path(), &[], &script);
    out.assert_success();
    assert_eq!(
        out.lines(),
        ["0", inside_name.as_str()],
        "/tmp starts empty, and a file can be written there\n{out}"
    );
    let leaked = Path::new("/tmp").join(&inside_name);
    let _leak_guard = TempFile(leaked.clone());
    assert!(
        !leaked.exists(),
        "a file written in /tmp inside appeared on the host"
    );
}

#[test]
fn tmp_holds_only_the_working_directory_when_it_is_under_tmp() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new_in(Path::new("/tmp"));
    let first = dir
        .path()
        .strip_prefix(Path::new("/tmp").canonicalize().unwrap())
        .ok()
        .and_then(|rest| rest.components().next())
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    let Some(first) = first else {
        skip("the temp dir is not under the system temporary directory");
        return;
    };
    let out = sandbox_sh(dir.path(), &[], "ls -A /tmp");
    out.assert_success();
    assert_eq!(out.lines(), [first]);
}

#[test]
fn home_is_hidden() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new(); // working directory outside $HOME
    if dir.path().starts_with(home()) {
        skip("the system temporary directory is inside $HOME");
        return;
    }
    let secret = home().join(format!(".{}", unique("secret")));
    fs::write(&secret, "top secret\n").unwrap();
    let _guard = TempFile(secret.clone());
    let s = secret.to_str().unwrap();
    // Without sbx the file is readable: the test would notice if the home were shown.
    assert_eq!(fs::read_to_string(&secret).unwrap(), "top secret\n");

    let script = format!("cat {s}; ls -A \"$HOME\" | wc -l");
    let out = sandbox_sh(dir.path(), &[], &script);
    assert!(!out.stdout().contains("top secret"), "{out}");
    assert!(
        out.stderr().contains(s),
        "cat reports the missing file\n{out}"
    );
    assert_eq!(
        out.lines(),
        ["0"],
        "the home directory is empty inside\n{out}"
    );
}

#[test]
fn home_is_hidden_except_a_working_directory_inside_it() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::in_home();
    fs::write(dir.join("project-file"), "project\n").unwrap();
    let secret = home().join(format!(".{}", unique("secret")));
    fs::write(&secret, "top secret\n").unwrap();
    let _guard = TempFile(secret.clone());

    let script = format!(
        "cat {}; cat project-file; pwd; echo out > made-inside",
        secret.display()
    );
    let out = sandbox_sh(dir.path(), &[], &script);
    assert!(!out.stdout().contains("top secret"), "{out}");
    assert_eq!(out.lines(), ["project", dir.str()], "{out}");
    assert_eq!(
        fs::read_to_string(dir.join("made-inside")).unwrap(),
        "out\n"
    );
}

#[test]
fn working_directory_is_bound_writable_and_current() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    fs::write(dir.join("from-host"), "hello from the host\n").unwrap();
    let out = sandbox_sh(
        dir.path(),
        &[],
        "pwd; cat from-host; echo hello from inside > from-sandbox",
    );
    out.assert_success();
    assert_eq!(out.lines(), [dir.str(), "hello from the host"]);
    assert_eq!(
        fs::read_to_string(dir.join("from-sandbox")).unwrap(),
        "hello from inside\n"
    );
}

// ---------------------------------------------------------------------------------------
// /dev, /proc and the mount table
// ---------------------------------------------------------------------------------------

const DEV_EXPECTED: &[&str] = &[
    "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd", "stdin",
    "stdout", "stderr",
];

#[test]
fn dev_is_minimal_and_works() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &[],
        "ls -A /dev; echo ---; echo x > /dev/null && head -c 16 /dev/urandom | wc -c \
         && head -c 4 /dev/zero | od -An -tx1 && ls -A /dev/pts",
    );
    out.assert_success();
    let text = out.stdout();
    let (listing, checks) = text.split_once("---\n").expect("separator");
    let inside: BTreeSet<&str> = listing.split_whitespace().collect();
    for want in DEV_EXPECTED {
        assert!(inside.contains(want), "/dev/{want} is missing: {inside:?}");
    }
    // Nothing else of the host's /dev (disks, memory, the kernel log, ...) is there.
    let host: BTreeSet<String> = fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let leaked: Vec<&String> = host
        .iter()
        .filter(|h| inside.contains(h.as_str()) && !DEV_EXPECTED.contains(&h.as_str()))
        .collect();
    assert!(leaked.is_empty(), "host devices in the sandbox: {leaked:?}");
    let checks: Vec<&str> = checks.split_whitespace().collect();
    assert_eq!(checks[..5], ["16", "00", "00", "00", "00"], "{out}");
    // A private devpts: no terminal of the host's is listed.
    assert_eq!(checks[5..], ["ptmx"], "{out}");
}

#[test]
fn host_processes_are_invisible() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(dir.path(), &[], "ls /proc | grep -E '^[0-9]+$'");
    out.assert_success();
    let pids: Vec<u32> = out.lines().iter().map(|l| l.parse().unwrap()).collect();
    // init (1), the shell (2), ls and grep: nothing of the host's.
    assert!(pids.len() <= 4, "processes visible inside: {pids:?}");
    assert!(pids.contains(&1) && pids.contains(&2), "{pids:?}");
}

#[test]
fn old_root_is_gone() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(dir.path(), &[], "cat /proc/self/mountinfo");
    out.assert_success();
    let inside = parse_mountinfo(&out.stdout());
    let host: BTreeSet<String> =
        parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap())
            .into_iter()
            .map(|m| m.mount_point)
            .collect();
    let home = home();
    let allowed = |p: &str| {
        let path = Path::new(p);
        host.contains(p)
            || ["/proc", "/dev", "/tmp", "/sys/firmware"]
                .iter()
                .any(|r| path.starts_with(r))
            || path == home
            || path == dir.path()
            || hides_host_path(p)
    };
    let unexpected: Vec<&MountEntry> = inside.iter().filter(|m| !allowed(&m.mount_point)).collect();
    assert!(
        unexpected.is_empty(),
        "mounts inside that are neither the host's nor the sandbox's own (an old root left \
         attached?): {unexpected:#?}"
    );
    assert_eq!(
        inside.iter().filter(|m| m.mount_point == "/").count(),
        1,
        "exactly one root\n{out}"
    );
}

// ---------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------

fn interfaces(proc_net_dev: &str) -> BTreeSet<String> {
    proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .collect()
}

#[test]
fn net_none_has_only_loopback() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(dir.path(), &[], "cat /proc/net/dev");
    out.assert_success();
    let inside = interfaces(&out.stdout());
    assert_eq!(inside, BTreeSet::from(["lo".to_string()]), "{out}");
    let host = interfaces(&fs::read_to_string("/proc/net/dev").unwrap());
    if host.len() < 2 {
        eprintln!("note: the host has only loopback itself; the check above shows little");
    }
}

#[test]
fn net_host_sees_the_hosts_interfaces() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(dir.path(), &["--net", "host"], "cat /proc/net/dev");
    out.assert_success();
    let host = interfaces(&fs::read_to_string("/proc/net/dev").unwrap());
    assert_eq!(interfaces(&out.stdout()), host);
}

/// Tries to connect from inside to a server the test runs on the host's 127.0.0.1.
/// Returns the sandbox's output and whether the server got a connection.
fn connect_to_host_server(net: &str) -> (Outcome, bool) {
    let dir = TempDir::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script =
        format!("if exec 3<>/dev/tcp/127.0.0.1/{port}; then echo connected; else echo refused; fi");
    let out = run(sbx_run(
        dir.path(),
        &["--net", net, "--", "bash", "-c", &script],
    ));
    listener.set_nonblocking(true).unwrap();
    let accepted = match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    };
    (out, accepted)
}

#[test]
fn net_none_cannot_reach_a_server_on_host_loopback() {
    if !require_sandbox() {
        return;
    }
    let (out, accepted) = connect_to_host_server("none");
    out.assert_success();
    assert_eq!(out.lines(), ["refused"], "{out}");
    assert!(
        !accepted,
        "the host's server got a connection from the sandbox"
    );
}

#[test]
fn net_host_reaches_a_server_on_host_loopback() {
    if !require_sandbox() {
        return;
    }
    // The opposite of the test above, so that it cannot pass because connecting is broken.
    let (out, accepted) = connect_to_host_server("host");
    out.assert_success();
    assert_eq!(out.lines(), ["connected"], "{out}");
    assert!(accepted, "the host's server saw no connection");
}

#[test]
fn net_none_has_a_working_loopback() {
    if !require_sandbox() {
        return;
    }
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        skip("/usr/bin/python3 is not installed (ci/setup-host.sh installs it)");
        return;
    }
    let dir = TempDir::new();
    // UDP: Landlock's network rules cover TCP only.
    let udp = "import socket\n\
               s = socket.socket(type=socket.SOCK_DGRAM); s.bind(('127.0.0.1', 0))\n\
               c = socket.socket(type=socket.SOCK_DGRAM); c.sendto(b'ping', s.getsockname())\n\
               print(s.recv(4).decode())\n";
    let out = run(sbx_run(dir.path(), &["--", "/usr/bin/python3", "-c", udp]));
    out.assert_success();
    assert_eq!(out.lines(), ["ping"]);
    // TCP on the sandbox's loopback works once Landlock's "no TCP without a network" rule is
    // off (the escape suite shows it is denied by default).
    let tcp = "import socket\n\
               s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n\
               c = socket.create_connection(s.getsockname(), timeout=5)\n\
               a, _ = s.accept(); c.sendall(b'ping'); print(a.recv(4).decode())\n";
    let out = run(sbx_run(
        dir.path(),
        &["--landlock", "off", "--", "/usr/bin/python3", "-c", tcp],
    ));
    out.assert_success();
    assert_eq!(out.lines(), ["ping"]);
}

// ---------------------------------------------------------------------------------------
// Mount options: tmpfs, and nosuid/nodev on binds
// ---------------------------------------------------------------------------------------

/// The mountinfo entry inside for `mount_point` (the last one: the visible mount).
#[track_caller]
fn entry_for(inside: &[MountEntry], mount_point: &str, out: &Outcome) -> MountEntry {
    inside
        .iter()
        .rev()
        .find(|e| e.mount_point == mount_point)
        .cloned()
        .unwrap_or_else(|| panic!("nothing is mounted on {mount_point} inside\n{out}"))
}

/// The filesystem type and super block options of a mountinfo line (after " - ").
fn fs_type_and_super_options(entry: &MountEntry) -> (String, Vec<String>) {
    let tail = entry.line.split(" - ").nth(1).unwrap_or("");
    let mut fields = tail.split(' ');
    let fs_type = fields.next().unwrap_or("").to_string();
    let options = fields
        .nth(1)
        .unwrap_or("")
        .split(',')
        .map(str::to_string)
        .collect();
    (fs_type, options)
}

fn has_option(options: &str, option: &str) -> bool {
    options.split(',').any(|o| o == option)
}

#[test]
fn tmpfs_mounts_get_their_size_mode_and_noexec() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let profile = dir.join("tmpfs.json");
    fs::write(
        &profile,
        r#"{"extends": "default", "mounts": [
             {"type": "tmpfs", "destination": "/tmp/scratch", "size": "16M", "mode": "0750",
              "options": ["noexec"]}]}"#,
    )
    .unwrap();
    // A script in each tmpfs, run from there: only the noexec one refuses.
    let script = "for d in /tmp/scratch /tmp/plain; do \
                    printf '#!/bin/sh\\necho ran-in-%s\\n' $d > $d/x.sh && chmod 755 $d/x.sh; \
                    $d/x.sh; echo $d-rc=$?; done; \
                  stat -c '%n %a' /tmp/scratch /tmp/plain; \
                  stat -f -c '%n %b %S' /tmp/scratch; \
                  echo ---; cat /proc/self/mountinfo";
    let out = sandbox_sh(
        dir.path(),
        &["-p", profile.to_str().unwrap(), "--tmpfs", "/tmp/plain"],
        script,
    );
    out.assert_success();
    let text = out.stdout();
    let (report, mountinfo) = text.split_once("---\n").expect("the separator");
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines,
        [
            "/tmp/scratch-rc=126",
            "ran-in-/tmp/plain",
            "/tmp/plain-rc=0",
            "/tmp/scratch 750",
            "/tmp/plain 755",
            // 16M in 4K blocks.
            "/tmp/scratch 4096 4096",
        ],
        "{out}"
    );
    assert!(out.stderr().contains("Permission denied"), "noexec\n{out}");
    let inside = parse_mountinfo(mountinfo);
    let scratch = entry_for(&inside, "/tmp/scratch", &out);
    let (fs_type, options) = fs_type_and_super_options(&scratch);
    assert_eq!(fs_type, "tmpfs", "{}", scratch.line);
    assert!(has_option(&scratch.options, "noexec"), "{}", scratch.line);
    assert!(has_option(&scratch.options, "rw"), "{}", scratch.line);
    assert!(
        options.contains(&"size=16384k".to_string()),
        "{}",
        scratch.line
    );
    assert!(
        options.contains(&"mode=750".to_string()),
        "{}",
        scratch.line
    );
    // --tmpfs DST: an empty, writable, executable tmpfs.
    let plain = entry_for(&inside, "/tmp/plain", &out);
    let (fs_type, options) = fs_type_and_super_options(&plain);
    assert_eq!(fs_type, "tmpfs", "{}", plain.line);
    assert!(!has_option(&plain.options, "noexec"), "{}", plain.line);
    assert!(options.contains(&"mode=755".to_string()), "{}", plain.line);
}

#[test]
fn tmpfs_option_gives_an_empty_directory_over_a_bound_one() {
    if !require_sandbox() {
        return;
    }
    // A directory of the working directory (bound in read-write) with a file in it.
    let dir = TempDir::new();
    let hidden = dir.join("cache");
    fs::create_dir(&hidden).unwrap();
    fs::write(hidden.join("secret"), "host\n").unwrap();
    let hidden = hidden.to_str().unwrap();
    let script = format!("ls -A {hidden}; touch {hidden}/new && echo writable");
    let out = sandbox_sh(dir.path(), &["--tmpfs", hidden], &script);
    out.assert_success();
    assert_eq!(out.lines(), ["writable"], "{out}");
    assert!(
        !dir.join("cache/new").exists(),
        "the write reached the host"
    );
    // Control: without --tmpfs the host's file shows, and the write goes through.
    let out = sandbox_sh(dir.path(), &[], &script);
    out.assert_success();
    assert_eq!(out.lines(), ["secret", "writable"], "control\n{out}");
    assert!(dir.join("cache/new").exists());
}

/// The options of the host mount that holds `path` (the longest mount point above it).
fn host_mount_options(path: &Path) -> String {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    parse_mountinfo(&text)
        .into_iter()
        .filter(|e| path.starts_with(&e.mount_point))
        .max_by_key(|e| e.mount_point.len())
        .map(|e| e.options)
        .unwrap_or_default()
}

#[test]
fn binds_are_nosuid_and_nodev() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let src = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &[
            "--bind",
            &format!("{}:/tmp/rw", src.str()),
            "--ro-bind",
            &format!("{}:/tmp/ro", src.str()),
        ],
        "cat /proc/self/mountinfo",
    );
    out.assert_success();
    let inside = parse_mountinfo(&out.stdout());
    for (point, access) in [
        ("/tmp/rw", "rw"),
        ("/tmp/ro", "ro"),
        (dir.str(), "rw"), // the working directory's own bind
    ] {
        let entry = entry_for(&inside, point, &out);
        for option in [access, "nosuid", "nodev"] {
            assert!(
                has_option(&entry.options, option),
                "{point} lacks {option}: {}",
                entry.line
            );
        }
    }
    // Control: the host mount they come from is not nosuid and nodev already, so the
    // options are sbx's (where it is, as on some hosts' /tmp, this says so).
    let host = host_mount_options(src.path());
    if has_option(&host, "nosuid") && has_option(&host, "nodev") {
        eprintln!(
            "note {}: the host mount of {} is nosuid,nodev already ({host})",
            test_name(),
            src.str()
        );
    }
}

#[test]
fn verbose_run_lists_the_mounts_it_makes() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let src = TempDir::new();
    let (rw, ro, tmp) = ("/tmp/v-rw", "/tmp/v-ro", "/tmp/v-tmp");
    let out = sandbox_sh(
        dir.path(),
        &[
            "--verbose",
            "--bind",
            &format!("{}:{rw}", src.str()),
            "--ro-bind",
            &format!("{}:{ro}", src.str()),
            "--tmpfs",
            tmp,
        ],
        "cat /proc/self/mountinfo",
    );
    out.assert_success();
    let listed: Vec<String> = out
        .stderr()
        .lines()
        .filter_map(|l| l.strip_prefix("sbx: mount: "))
        .map(String::from)
        .collect();
    let find = |needle: &str| {
        listed
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("-v lists no mount with {needle}\n{out}"))
            .clone()
    };
    // One line a person reads per mount: `bind SRC -> DST (rw)`, `tmpfs DST (rw, ...)`.
    let bind_rw = find(&format!(" -> {rw} ("));
    assert_eq!(bind_rw, format!("bind {} -> {rw} (rw)", src.str()));
    let bind_ro = find(&format!(" -> {ro} ("));
    assert_eq!(bind_ro, format!("bind {} -> {ro} (ro)", src.str()));
    let tmpfs = find(&format!("tmpfs {tmp} ("));
    assert!(tmpfs.starts_with(&format!("tmpfs {tmp} (rw, ")), "{tmpfs}");
    let cwd = find(&format!(" -> {} (", dir.str()));
    assert!(cwd.ends_with("(rw)"), "the working directory: {cwd}");
    // Every destination listed is a mount point inside, with the access it was listed with.
    let inside = parse_mountinfo(&out.stdout());
    for line in &listed {
        let destination = match line.strip_prefix("tmpfs ") {
            Some(rest) => rest.split(" (").next(),
            None => line.split(" -> ").nth(1).and_then(|r| r.split(" (").next()),
        }
        .unwrap_or_else(|| panic!("no destination in {line}"));
        let entry = entry_for(&inside, destination, &out);
        let access = if line.contains("(ro") { "ro" } else { "rw" };
        assert!(
            has_option(&entry.options, access),
            "-v says {line}, inside: {}",
            entry.line
        );
    }
}
