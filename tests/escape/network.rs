//! Network, the old root, and init.

use super::*;

#[test]
fn host_loopback_service_is_unreachable() {
    if !require_probes() {
        return;
    }
    let dir = TempDir::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let accepted = || match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    };
    // With Landlock off as well: the network namespace alone keeps the host out of reach.
    let runs: [&[&str]; 3] = [&[], &["-p", "strict"], &["--landlock", "off"]];
    for options in runs {
        let (out, result) = tcp(dir.path(), options, &["connect", &port]);
        assert_ne!(result, "ok", "{options:?}\n{out}");
        assert!(
            !accepted(),
            "the host's server got a connection ({options:?})"
        );
    }
    // Control: with the host's network the same connection works.
    let (out, result) = tcp(dir.path(), &["--net", "host"], &["connect", &port]);
    assert_eq!(result, "ok", "control\n{out}");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(accepted(), "control: the host's server saw no connection");
}

#[test]
fn abstract_unix_socket_on_the_host_is_unreachable() {
    if !require_probes() {
        return;
    }
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    // Such as X11's @/tmp/.X11-unix/X0 or a D-Bus bus: a way to type into the desktop.
    let name = unique("abstract");
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = UnixListener::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let accepted = || match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    };
    let dir = TempDir::new();
    let connect = |options: &[&str]| {
        let out = probe(dir.path(), options, &["unix", &name]);
        out.assert_success();
        let result = results(&out)
            .remove("unix_connect")
            .unwrap_or_else(|| panic!("no result\n{out}"));
        (out, result)
    };
    // The abstract namespace belongs to the network namespace; with the host's network,
    // Landlock's scope (ABI 6) is what keeps the sandbox out.
    let mut runs: Vec<&[&str]> = vec![&[], &["-p", "strict"]];
    if landlock::has_abi(6, dir.path()) {
        runs.push(&["--net", "host"]);
    }
    for options in runs {
        let (out, result) = connect(options);
        assert_ne!(result, "ok", "{options:?}\n{out}");
        assert!(
            !accepted(),
            "the host's socket got a connection ({options:?})"
        );
    }
    // Control: with the host's network and no Landlock, the connection works.
    let (out, result) = connect(&["--net", "host", "--landlock", "off"]);
    assert_eq!(result, "ok", "control\n{out}");
}

#[test]
fn old_root_is_not_visible() {
    if !require_sandbox() {
        return;
    }
    let host: std::collections::BTreeSet<String> =
        parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap())
            .into_iter()
            .map(|m| m.mount_point)
            .collect();
    let dir = TempDir::new();
    let home = home();
    for (profile, options) in PROFILES {
        let out = sandbox_sh(dir.path(), options, "cat /proc/self/mountinfo");
        out.assert_success();
        let inside = parse_mountinfo(&out.stdout());
        // The sandbox's own mounts: /proc, /dev, /tmp and what sits below them, masks
        // in /sys, the home and the working directory; everything else must be a mount
        // point the host has too.
        let own = |p: &str| {
            let path = Path::new(p);
            host.contains(p)
                || ["/proc", "/dev", "/tmp", "/sys"]
                    .iter()
                    .any(|r| path.starts_with(r))
                || path.starts_with(&home)
                || path == dir.path()
                || hides_host_path(p)
        };
        let strays: Vec<&MountEntry> = inside.iter().filter(|m| !own(&m.mount_point)).collect();
        assert!(
            strays.is_empty(),
            "{profile}: mounts that are neither the host's nor the sandbox's own: {strays:#?}"
        );
        assert_eq!(
            inside.iter().filter(|m| m.mount_point == "/").count(),
            1,
            "{profile}: exactly one root\n{out}"
        );
        // And the root directory lists what the host's does, nothing more.
        let out = sandbox_sh(dir.path(), options, "ls -A /");
        let mut listed: Vec<String> = out.stdout().split_whitespace().map(String::from).collect();
        listed.sort();
        let mut on_host: Vec<String> = fs::read_dir("/")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        on_host.sort();
        assert_eq!(listed, on_host, "{profile}: / inside\n{out}");
    }
}

#[test]
fn init_executable_cannot_be_opened_for_writing() {
    if !require_probes() {
        return;
    }
    let dir = TempDir::new();
    let code = "import errno\n\
                for path in ('/proc/1/exe', '/proc/self/exe'):\n    \
                    for mode in ('r+b', 'rb'):\n        \
                        try:\n            open(path, mode).close(); print(path, mode, 'ok')\n        \
                        except OSError as e:\n            print(path, mode, errno.errorcode[e.errno])\n";
    for (profile, options) in PROFILES {
        for uid in [&[][..], &["--uid", "0"]] {
            let mut options = options.to_vec();
            options.extend_from_slice(uid);
            let mut cmd = sbx_run(dir.path(), &options);
            cmd.args(["--", PYTHON, "-c", code]);
            let out = run(cmd);
            out.assert_success();
            let lines = out.lines();
            // sbx's init (CVE-2019-5736): neither for writing nor at all.
            assert!(
                !lines
                    .iter()
                    .any(|l| l.starts_with("/proc/1/exe") && l.ends_with(" ok")),
                "{profile} {uid:?}\n{out}"
            );
            // Control: the command's own executable opens for reading, so /proc works.
            assert!(
                lines.contains(&"/proc/self/exe rb ok".to_string()),
                "{profile} {uid:?}\n{out}"
            );
        }
    }
}

#[test]
fn init_executable_link_is_unreadable() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let out = sandbox_sh(
            dir.path(),
            options,
            "readlink /proc/1/exe && echo leaked; readlink /proc/self/exe >/dev/null && echo self-ok",
        );
        assert_eq!(out.lines(), ["self-ok"], "{profile}\n{out}");
    }
}

#[test]
fn init_cannot_be_reached_through_proc_or_ptrace() {
    if !require_probes() {
        return;
    }
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        for uid in [&[][..], &["--uid", "0"]] {
            let mut options = options.to_vec();
            options.extend_from_slice(uid);
            let out = sandbox_sh(
                dir.path(),
                &options,
                "ls /proc/1/fd && echo fds-listed; cat /proc/1/environ && echo environ-read; \
                 ls /proc/1/root/ && echo root-listed; ls /proc/self/fd >/dev/null && echo self-ok",
            );
            // Control: the command's own entries are there, so /proc works.
            assert_eq!(out.lines(), ["self-ok"], "{profile} {uid:?}\n{out}");
            let (out, found) = calls(dir.path(), &options, &["ptrace_attach_init"]);
            assert_eq!(
                found["ptrace_attach_init"], "EPERM",
                "{profile} {uid:?}\n{out}"
            );
        }
    }
}
