//! `--rootfs DIR`: a directory as the sandbox's root, built here from a static busybox.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::*;

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "id", "mkdir", "touch", "pwd", "test",
];

/// A minimal root: /bin/busybox (static) with a few applets, and /etc/passwd holding a
/// line no host has.
struct BusyboxRoot {
    _dir: TempDir,
    root: PathBuf,
    marker: String,
}

fn busybox_root() -> Option<BusyboxRoot> {
    if !is_static_elf(Path::new(BUSYBOX)) {
        skip(&format!(
            "{BUSYBOX} is missing or not statically linked (install busybox-static)"
        ));
        return None;
    }
    let dir = TempDir::new();
    let root = dir.join("rootfs");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let marker = unique("rootfs-user");
    fs::write(
        root.join("etc/passwd"),
        format!("root:x:0:0:root:/root:/bin/sh\n{marker}:x:1000:1000::/:/bin/sh\n"),
    )
    .unwrap();
    Some(BusyboxRoot {
        _dir: dir,
        root,
        marker,
    })
}

impl BusyboxRoot {
    fn run(&self, cwd: &Path, script: &str) -> Outcome {
        let root = self.root.to_str().unwrap();
        // -w /: the working directory need not exist in the new root.
        let mut cmd = sbx_run(
            cwd,
            &["--rootfs", root, "-w", "/", "--", "/bin/sh", "-c", script],
        );
        run(&mut cmd)
    }
}

#[test]
fn rootfs_dir_is_the_sandboxs_root() {
    if !require_sandbox() {
        return;
    }
    let Some(rootfs) = busybox_root() else {
        return;
    };
    let cwd = TempDir::new();
    let out = rootfs.run(
        cwd.path(),
        "ls /; echo ---; cat /etc/passwd; test -e /usr && echo has-usr; echo done",
    );
    out.assert_success();
    let text = out.stdout();
    let (listing, rest) = text.split_once("---\n").expect("separator");
    let entries: Vec<&str> = listing.split_whitespace().collect();
    assert!(
        entries.contains(&"bin") && entries.contains(&"etc"),
        "{out}"
    );
    assert!(
        !entries.contains(&"usr"),
        "the host's /usr is visible\n{out}"
    );
    assert!(
        rest.contains(&rootfs.marker),
        "/etc/passwd is the rootfs's\n{out}"
    );
    assert!(!rest.contains("has-usr"), "{out}");
    assert!(rest.ends_with("done\n"), "{out}");
    // And on the host, /etc/passwd is another file (the test would notice the host's).
    assert!(!fs::read_to_string("/etc/passwd")
        .unwrap()
        .contains(&rootfs.marker));
}

#[test]
fn rootfs_dir_is_read_only() {
    if !require_sandbox() {
        return;
    }
    let Some(rootfs) = busybox_root() else {
        return;
    };
    let cwd = TempDir::new();
    let out = rootfs.run(
        cwd.path(),
        "touch /etc/sbx-new && echo created-etc; touch /sbx-new && echo created-root; echo x >> /etc/passwd && echo appended",
    );
    assert!(!out.stdout().contains("created"), "{out}");
    assert!(!out.stdout().contains("appended"), "{out}");
    assert_eq!(
        out.stderr().matches("Read-only file system").count(),
        3,
        "{out}"
    );
    assert!(!rootfs.root.join("etc/sbx-new").exists());
    assert!(!rootfs.root.join("sbx-new").exists());
    assert!(!fs::read_to_string(rootfs.root.join("etc/passwd"))
        .unwrap()
        .contains("\nx\n"));
    // The directory itself is writable by the caller on the host.
    let probe = rootfs.root.join("etc/host-write");
    fs::write(&probe, "ok").unwrap();
}

#[test]
fn rootfs_dir_gets_proc_dev_and_tmp() {
    if !require_sandbox() {
        return;
    }
    let Some(rootfs) = busybox_root() else {
        return;
    };
    let cwd = TempDir::new();
    let out = rootfs.run(
        cwd.path(),
        "echo $$; cat /proc/1/comm >/dev/null && echo proc-ok; echo x > /dev/null && echo dev-ok; \
         echo y > /tmp/f && cat /tmp/f",
    );
    out.assert_success();
    assert_eq!(out.lines(), ["2", "proc-ok", "dev-ok", "y"], "{out}");
}

#[test]
fn rootfs_dir_with_the_working_directory_bound() {
    if !require_sandbox() {
        return;
    }
    let Some(rootfs) = busybox_root() else {
        return;
    };
    // The default profile binds the working directory: it shows up inside the new root.
    let cwd = TempDir::new();
    fs::write(cwd.join("from-host"), "host file\n").unwrap();
    let root = rootfs.root.to_str().unwrap();
    let mut cmd = sbx_run(
        cwd.path(),
        &[
            "--rootfs",
            root,
            "--",
            "/bin/sh",
            "-c",
            "pwd; cat from-host",
        ],
    );
    let out = run(&mut cmd);
    out.assert_success();
    assert_eq!(out.lines(), [cwd.str(), "host file"]);
}

/// Every path under `root`, relative to it.
fn tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(root).unwrap().to_path_buf());
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn rootfs_dir_is_not_modified_by_a_run() {
    if !require_sandbox() {
        return;
    }
    let Some(rootfs) = busybox_root() else {
        return;
    };
    // A real root filesystem has its mount points for /proc, /dev and /tmp already, and
    // here the home directory the default profile hides. sbx creates only mount points
    // that land directly on the rootfs (as runc does); the working directory under /tmp
    // is mounted on the sandbox's tmpfs, so nothing may appear in the rootfs for it.
    for dir in ["proc", "dev", "tmp"] {
        fs::create_dir(rootfs.root.join(dir)).unwrap();
    }
    let home = home();
    fs::create_dir_all(rootfs.root.join(home.strip_prefix("/").unwrap())).unwrap();
    let before = tree(&rootfs.root);
    // Run the default profile (the working directory and the home directory are mounted
    // inside) from a working directory under /tmp.
    let cwd = TempDir::new();
    let root = rootfs.root.to_str().unwrap();
    let mut cmd = sbx_run(
        cwd.path(),
        &["--rootfs", root, "--", "/bin/sh", "-c", "pwd"],
    );
    run(&mut cmd).assert_success();
    let after = tree(&rootfs.root);
    let created: Vec<&PathBuf> = after.iter().filter(|p| !before.contains(p)).collect();
    assert!(
        created.is_empty(),
        "the run left these in the rootfs directory on the host: {created:?}"
    );
}

/// A shared root filesystem owned by root (ci/setup-host.sh makes one under
/// /var/lib/sbx-test, as /var/lib/machines would hold): readable, not writable by the user.
#[test]
fn a_root_owned_rootfs_runs_and_hiding_what_it_lacks_is_a_no_op() {
    if !require_sandbox() {
        return;
    }
    let shared = Path::new("/var/lib/sbx-test/rootfs");
    if !shared.join("bin/busybox").exists() {
        skip("no root-owned rootfs at /var/lib/sbx-test/rootfs (ci/setup-host.sh makes it)");
        return;
    }
    assert!(
        fs::metadata(shared).unwrap().permissions().readonly()
            || nix::unistd::access(shared, nix::unistd::AccessFlags::W_OK).is_err(),
        "the test needs a rootfs the user cannot write"
    );
    // From a project under /tmp (the sandbox's own tmpfs takes its mount point); the
    // default profile's hidden home is not in that root, and hiding it is a no-op.
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &["--rootfs", shared.to_str().unwrap()],
        "pwd; ls /bin/busybox; test -e ~ && echo home-exists || echo no-home",
    );
    out.assert_success();
    assert_eq!(out.lines(), [dir.str(), "/bin/busybox", "no-home"], "{out}");
    // A mount point that must be made and cannot be is a clear error that names it.
    let out = sandbox_sh(
        dir.path(),
        &["--rootfs", shared.to_str().unwrap(), "--tmpfs", "/scratch"],
        "true",
    );
    out.assert_sbx_error(&["cannot create mount point /scratch"]);
}
