//! `--rootfs DIR`: a directory as the sandbox's root, built here from a static busybox; and
//! new mount points on the host's read-only root and in read-only binds, which sbx makes on
//! a tmpfs of its own (a skeleton) without writing to the host.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
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
    // A mount point it lacks is made on a skeleton, not in the shared root (which the
    // user could not write anyway), and the rest of its top level is as it was.
    assert!(!shared.join("scratch").exists());
    let out = sandbox_sh(
        dir.path(),
        &["--rootfs", shared.to_str().unwrap(), "--tmpfs", "/scratch"],
        "touch /scratch/f && echo scratch-rw; ls /; touch /new 2>&1; echo done",
    );
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines[0], "scratch-rw", "{out}");
    let mut expected: Vec<String> = fs::read_dir(shared)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .chain(["scratch".to_string()])
        .collect();
    expected.sort();
    expected.dedup();
    let listed_end = lines.len() - 2;
    let mut listed = lines[1..listed_end].to_vec();
    listed.sort();
    assert_eq!(listed, expected, "{out}");
    assert!(
        lines[listed_end].ends_with("Read-only file system"),
        "{out}"
    );
    assert!(!shared.join("scratch").exists());
}

// ---------------------------------------------------------------------------------------
// New mount points on the host's root
// ---------------------------------------------------------------------------------------

/// A top-level name no host has, and a guard that fails the test if it appeared on the
/// host (sbx must never create a mount point there).
struct NewPath(PathBuf);

impl NewPath {
    fn top_level() -> NewPath {
        let path = Path::new("/").join(unique("newdir"));
        assert!(!path.exists(), "{} exists on the host", path.display());
        NewPath(path)
    }
    fn below(dir: &str) -> NewPath {
        let path = Path::new(dir).join(unique("newdir"));
        assert!(!path.exists(), "{} exists on the host", path.display());
        NewPath(path)
    }
    fn str(&self) -> &str {
        self.0.to_str().unwrap()
    }
    fn assert_not_on_the_host(&self) {
        assert!(
            fs::symlink_metadata(&self.0).is_err(),
            "the run created {} on the host",
            self.0.display()
        );
    }
}

#[test]
fn a_bind_on_a_new_top_level_path_is_readable_and_nothing_is_made_on_the_host() {
    if !require_sandbox() {
        return;
    }
    let new = NewPath::top_level();
    let data = TempDir::new();
    fs::write(data.join("f"), "from the host\n").unwrap();
    let cwd = TempDir::new();
    let out = sandbox_sh(
        cwd.path(),
        &["--ro-bind", &format!("{}:{}", data.str(), new.str())],
        &format!(
            "cat {n}/f; touch {n}/g 2>&1; touch {n}-sibling 2>&1; echo done",
            n = new.str()
        ),
    );
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines[0], "from the host", "{out}");
    // The bind is read-only, and so is the root around the new mount point.
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[1..3]
            .iter()
            .all(|l| l.contains("Read-only file system")),
        "{out}"
    );
    new.assert_not_on_the_host();
    assert!(!data.join("g").exists());
}

#[test]
fn a_tmpfs_on_a_new_path_is_writable_and_its_parent_is_not() {
    if !require_sandbox() {
        return;
    }
    let new = NewPath::top_level();
    let cwd = TempDir::new();
    let inner = format!("{}/inner", new.str());
    let out = sandbox_sh(
        cwd.path(),
        &["--tmpfs", &inner],
        &format!(
            "touch {inner}/f && echo tmpfs-rw; ls -A {n}; touch {n}/x 2>&1; echo done",
            n = new.str()
        ),
    );
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines[..2], ["tmpfs-rw", "inner"], "{out}");
    // Read-only as a mount (not only refused by Landlock, which says "Permission denied").
    assert!(lines[2].ends_with("Read-only file system"), "{out}");
    assert_eq!(lines.len(), 4, "{out}");
    new.assert_not_on_the_host();
}

#[test]
fn a_new_path_below_an_existing_host_directory_keeps_the_rest_of_it() {
    if !require_sandbox() {
        return;
    }
    let new = NewPath::below("/usr");
    let data = TempDir::new();
    fs::write(data.join("f"), "nested\n").unwrap();
    let cwd = TempDir::new();
    let out = sandbox_sh(
        cwd.path(),
        &["--ro-bind", &format!("{}:{}", data.str(), new.str())],
        &format!(
            "cat {}/f; /usr/bin/env echo usr-bin-runs; ls -A /usr",
            new.str()
        ),
    );
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines[..2], ["nested", "usr-bin-runs"], "{out}");
    let mut expected: Vec<String> = fs::read_dir("/usr")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    expected.push(new.0.file_name().unwrap().to_string_lossy().into_owned());
    expected.sort();
    let mut listed = lines[2..].to_vec();
    listed.sort();
    assert_eq!(listed, expected, "{out}");
    new.assert_not_on_the_host();
}

/// `name kind dev:ino` (or `name link TARGET`) for each entry of `/`, as the host has them.
fn root_entries_on_the_host() -> BTreeMap<String, String> {
    fs::read_dir("/")
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link {}", fs::read_link(e.path()).unwrap().display())
            } else {
                let kind = if meta.is_dir() { "dir" } else { "other" };
                format!("{kind} {}:{}", meta.dev(), meta.ino())
            };
            (name, what)
        })
        .collect()
}

/// The same inside, and for each directory what creating something in it gives.
const LIST_ROOT: &str = r#"
import errno, os, stat
def attempt(f):
    try:
        f()
        return "written"
    except OSError as e:
        return errno.errorcode[e.errno]
print("/", attempt(lambda: os.mkdir("/.sbx-probe")))
for n in sorted(os.listdir("/")):
    p = "/" + n
    st = os.lstat(p)
    if stat.S_ISLNK(st.st_mode):
        print(n, "link", os.readlink(p))
    elif stat.S_ISDIR(st.st_mode):
        print(n, "dir", "%d:%d" % (st.st_dev, st.st_ino), attempt(lambda: os.mkdir(p + "/.sbx-probe")))
    else:
        print(n, "other", "%d:%d" % (st.st_dev, st.st_ino))
"#;

#[test]
fn the_hosts_top_level_entries_stay_the_same_and_read_only() {
    if !require_sandbox() || !require_tool("python3") {
        return;
    }
    let host = root_entries_on_the_host();
    // On merged-/usr hosts /bin is a link: the script runs through it.
    let new = NewPath::top_level();
    let data = TempDir::new();
    let cwd = TempDir::new();
    let out = run(sbx_run(
        cwd.path(),
        &[
            "--ro-bind",
            &format!("{}:{}", data.str(), new.str()),
            "--",
            "/bin/sh",
            "-c",
            "exec python3 -c \"$1\"",
            "sh",
            LIST_ROOT,
        ],
    ));
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines[0], "/ EROFS", "the root is writable\n{out}");
    let inside: BTreeMap<String, String> = lines[1..]
        .iter()
        .map(|l| {
            let (name, rest) = l.split_once(' ').unwrap();
            (name.to_string(), rest.to_string())
        })
        .collect();
    let new_name = new.0.file_name().unwrap().to_string_lossy().into_owned();
    let mut names: Vec<&String> = host.keys().collect();
    names.push(&new_name);
    names.sort();
    assert_eq!(inside.keys().collect::<Vec<_>>(), names, "{out}");
    for (name, what) in &host {
        // The sandbox's own /proc, /dev and /tmp cover the host's.
        if ["proc", "dev", "tmp"].contains(&name.as_str()) {
            continue;
        }
        let seen = &inside[name];
        let expected = if what.starts_with("dir ") {
            // A directory the user cannot search (/root, /lost+found) refuses the lookup
            // before the kernel asks whether the mount is writable.
            let searchable =
                nix::unistd::access(&Path::new("/").join(name), nix::unistd::AccessFlags::X_OK)
                    .is_ok();
            format!("{what} {}", if searchable { "EROFS" } else { "EACCES" })
        } else {
            what.clone()
        };
        assert_eq!(seen, &expected, "/{name}\n{out}");
    }
    new.assert_not_on_the_host();
}

#[test]
fn profile_check_names_a_mount_point_run_would_refuse() {
    if !require_sandbox() {
        return;
    }
    // A mount point missing in a writable bind would be made on the host: refused, by
    // `profile check` as by `run`, with the same message, and nothing made.
    let project = TempDir::new();
    let missing = unique("missing");
    let dir = TempDir::new();
    let profile = dir.join("p.json");
    fs::write(
        &profile,
        format!(
            r#"{{"mounts": [{{"type": "bind", "source": "{}", "destination": "/tmp/w"}},
                {{"type": "tmpfs", "destination": "/tmp/w/{missing}"}}]}}"#,
            project.str()
        ),
    )
    .unwrap();
    let message = format!(
        "cannot create mount point /tmp/w/{missing}: it would be made on the host, as {}",
        project.join(&missing).display()
    );
    let check = run(sbx().args(["profile", "check", profile.to_str().unwrap()]));
    check.assert_sbx_error(&[&message]);
    let out = sandbox_sh(dir.path(), &["-p", profile.to_str().unwrap()], "true");
    out.assert_sbx_error(&[&message]);
    assert!(!project.join(&missing).exists());
    // The same mount point, present on the host, is fine for both.
    fs::create_dir(project.join(&missing)).unwrap();
    run(sbx().args(["profile", "check", profile.to_str().unwrap()])).assert_success();
    sandbox_sh(dir.path(), &["-p", profile.to_str().unwrap()], "true").assert_success();
}
