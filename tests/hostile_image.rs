//! Hostile inputs to an image root: an upper directory an earlier sandbox rigged with
//! symlinks into the host, an image whose /etc/passwd leads out of the image (or is a FIFO,
//! or huge), and ids that cannot be set. Each attack is paired with a control run that
//! shows the same path working when nothing is rigged.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// One test's image store, project directory and the host directories an attack aims at.
struct Lab {
    data: TempDir,
    runtime: TempDir,
    /// The project: the current directory of every run, bound read-write by default.
    work: TempDir,
    /// Directories holding files only a sandbox can remove (upper layers).
    keep: Vec<PathBuf>,
    images: Vec<String>,
}

fn lab() -> Option<Lab> {
    if !require_subids() {
        return None;
    }
    if !is_static_elf(Path::new("/bin/busybox")) {
        skip("/bin/busybox is missing or not static (install busybox-static)");
        return None;
    }
    Some(Lab {
        data: TempDir::new(),
        runtime: TempDir::new(),
        work: TempDir::new(),
        keep: Vec::new(),
        images: Vec::new(),
    })
}

impl Lab {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = sbx();
        cmd.args(args)
            .current_dir(self.work.path())
            .env("XDG_DATA_HOME", self.data.path())
            .env("XDG_RUNTIME_DIR", self.runtime.path());
        cmd
    }

    fn sbx(&self, args: &[&str]) -> Outcome {
        run(self.cmd(args))
    }

    /// `sbx run OPTIONS -- sh -c SCRIPT`.
    fn sh(&self, options: &[&str], script: &str) -> Outcome {
        let mut args = vec!["run"];
        args.extend_from_slice(options);
        args.extend(["--", "sh", "-c", script]);
        self.sbx(&args)
    }

    /// `mkimage.py ARGS...` writes ARGS[1] in the project, imported as `name`.
    fn image(&mut self, name: &str, args: &[&str]) {
        let out = run(Command::new("/usr/bin/python3")
            .arg(data_dir().join("mkimage.py"))
            .args(args)
            .current_dir(self.work.path()));
        out.assert_success();
        self.sbx(&["image", "import", name, args[1]])
            .assert_success();
        self.images.push(name.to_string());
    }

    /// A busybox rootfs (no config: the command runs as root) imported as `name`.
    fn rootfs(&mut self, name: &str) {
        self.image(name, &["rootfs", "img.tar"]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for dir in &self.keep {
            let parent = dir.parent().unwrap().to_str().unwrap();
            let name = dir.file_name().unwrap().to_str().unwrap();
            let out = sandbox_sh(
                self.work.path(),
                &["--uid", "0", "--bind", &format!("{parent}:/tmp/x")],
                &format!("rm -rf /tmp/x/{name}"),
            );
            if out.code != 0 {
                eprintln!("warning: cleanup of {} failed\n{out}", dir.display());
            }
        }
        if !self.images.is_empty() {
            let mut args = vec!["image", "rm"];
            args.extend(self.images.iter().map(String::as_str));
            let out = self.sbx(&args);
            if out.code != 0 {
                eprintln!("warning: image cleanup failed\n{out}");
            }
        }
    }
}

fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Item 1: a rigged --upper DIR
// ---------------------------------------------------------------------------------------

/// Run 1, a default sandbox in the project, plants `u/upper`, `u/work` and `u/work.fuse`
/// as symlinks to directories in the home; run 2 keeps its upper layer in `./u`. Run 2
/// must refuse, naming the link, and write nothing there; the same run with a clean
/// `./u2` keeps its write in `u2/upper`.
fn planted_upper_is_refused(overlay: &str) {
    let Some(mut lab) = lab() else { return };
    if overlay == "fuse" && !(require("fuse_overlayfs") && require("dev_fuse")) {
        return;
    }
    lab.rootfs("img");
    let victim = TempDir::in_home();
    let victim_work = TempDir::in_home();
    let plant = format!(
        "mkdir u && ln -s {v} u/upper && ln -s {w} u/work && ln -s {w} u/work.fuse && ls u",
        v = victim.str(),
        w = victim_work.str()
    );
    let out = sandbox_sh(lab.work.path(), &[], &plant);
    out.assert_success();
    assert!(
        fs::symlink_metadata(lab.work.join("u/upper")).is_ok_and(|m| m.is_symlink()),
        "run 1 could plant the link through the project's bind\n{out}"
    );

    let out = lab.sh(
        &["--image", "img", "--upper", "./u", "--overlay", overlay],
        "echo pwned > /pwned",
    );
    out.assert_sbx_error(&["u/upper", "symlink", "remove it"]);
    assert_eq!(
        out.stderr().trim().lines().count(),
        1,
        "one line of error\n{out}"
    );
    assert!(
        entries(victim.path()).is_empty(),
        "{:?}",
        entries(victim.path())
    );
    assert!(
        entries(victim_work.path()).is_empty(),
        "{:?}",
        entries(victim_work.path())
    );

    // Control: an upper directory nobody rigged keeps the same write.
    lab.keep.push(lab.work.join("u2"));
    let out = lab.sh(
        &["--image", "img", "--upper", "./u2", "--overlay", overlay],
        "echo pwned > /pwned",
    );
    out.assert_success();
    assert_eq!(
        fs::read_to_string(lab.work.join("u2/upper/pwned")).unwrap_or_default(),
        "pwned\n",
        "the write reached the kept upper layer\n{out}"
    );
}

#[test]
fn a_planted_upper_symlink_is_refused_with_kernel_overlayfs() {
    planted_upper_is_refused("kernel");
}

#[test]
fn a_planted_upper_symlink_is_refused_with_fuse_overlayfs() {
    planted_upper_is_refused("fuse");
}

/// Only `work` (or `work.fuse/work`, which fuse-overlayfs opens by name) rigged: the
/// upper layer alone is not enough to check.
/// Run 1 replaces `./u` as a whole with a link to a directory in the home: the next
/// `--upper ./u` must not create its `upper` and `work` there.
#[test]
fn an_upper_directory_that_is_a_planted_link_is_refused() {
    // Dropped after the lab, which removes the sandbox's files from it.
    let victim = TempDir::in_home();
    let Some(mut lab) = lab() else { return };
    lab.rootfs("img");
    let out = sandbox_sh(lab.work.path(), &[], &format!("ln -s {} u", victim.str()));
    out.assert_success();
    let out = lab.sh(&["--image", "img", "--upper", "./u"], "echo pwned > /pwned");
    out.assert_sbx_error(&["upper directory", "symbolic link", "writable bind"]);
    assert!(
        entries(victim.path()).is_empty(),
        "{:?}",
        entries(victim.path())
    );
    // Control: named by its own path (not through the planted link), the directory is
    // used, and the write lands in it.
    lab.keep.push(victim.join("upper"));
    lab.keep.push(victim.join("work"));
    let out = lab.sh(
        &["--image", "img", "--upper", victim.str()],
        "echo pwned > /pwned",
    );
    out.assert_success();
    assert_eq!(
        fs::read_to_string(victim.join("upper/pwned")).unwrap(),
        "pwned\n"
    );
}

#[test]
fn a_planted_work_symlink_is_refused() {
    let Some(mut lab) = lab() else { return };
    lab.rootfs("img");
    let victim = TempDir::in_home();
    let mut overlays = vec![("kernel", "u/work")];
    if require("fuse_overlayfs") && require("dev_fuse") {
        overlays.push(("fuse", "u/work.fuse/work"));
    }
    for (overlay, link) in overlays {
        lab.keep.push(lab.work.join("u"));
        // A first, clean run makes the directories; then the link replaces one of them.
        lab.sh(
            &["--image", "img", "--upper", "./u", "--overlay", overlay],
            "true",
        )
        .assert_success();
        let script = format!(
            "rm -rf /tmp/x/{link} && ln -s {} /tmp/x/{link}",
            victim.str()
        );
        sandbox_sh(
            lab.work.path(),
            &[
                "--uid",
                "0",
                "--bind",
                &format!("{}:/tmp/x", lab.work.str()),
            ],
            &script,
        )
        .assert_success();
        let out = lab.sh(
            &["--image", "img", "--upper", "./u", "--overlay", overlay],
            "echo pwned > /pwned",
        );
        out.assert_sbx_error(&[link, "symlink"]);
        assert!(
            entries(victim.path()).is_empty(),
            "{overlay}: {:?}",
            entries(victim.path())
        );
        // Cleared for the next overlay (through a sandbox: work/work is mode 0).
        sandbox_sh(
            lab.work.path(),
            &[
                "--uid",
                "0",
                "--bind",
                &format!("{}:/tmp/x", lab.work.str()),
            ],
            "rm -rf /tmp/x/u",
        )
        .assert_success();
    }
}

/// A named sandbox keeps its layer beside its record (read-only inside every sandbox);
/// if something rigs it anyway, `start` refuses rather than replaying the attack.
#[test]
fn start_refuses_a_named_sandboxs_rigged_layer() {
    let Some(mut lab) = lab() else { return };
    lab.rootfs("img");
    lab.sbx(&["run", "--name", "dev", "--image", "img", "--", "true"])
        .assert_success();
    let layer = lab.data.join("sbx/sandboxes/dev/layer");
    assert!(layer.join("upper").is_dir(), "the first run made the layer");
    // Control: a plain start works.
    lab.sbx(&["start", "--attach", "dev"]).assert_success();

    let victim = TempDir::in_home();
    fs::rename(layer.join("upper"), layer.join("upper.real")).unwrap();
    std::os::unix::fs::symlink(victim.path(), layer.join("upper")).unwrap();
    let out = lab.sbx(&["start", "--attach", "dev"]);
    out.assert_sbx_error(&["layer/upper", "symlink"]);
    assert!(
        entries(victim.path()).is_empty(),
        "{:?}",
        entries(victim.path())
    );

    fs::remove_file(layer.join("upper")).unwrap();
    fs::rename(layer.join("upper.real"), layer.join("upper")).unwrap();
    lab.sbx(&["rm", "-f", "dev"]).assert_success();
}

// ---------------------------------------------------------------------------------------
// Item 4: an image's /etc/passwd is read inside the image, a regular file, bounded
// ---------------------------------------------------------------------------------------

/// An image whose User is `user` and whose /etc/passwd is `passwd` (see mkimage.py).
fn user_image(lab: &mut Lab, name: &str, user: &str, passwd: &str) {
    lab.image(name, &["user", &format!("{name}.tar"), user, passwd]);
}

/// Control for the tests below: a plain passwd, and a relative link within the image
/// (to a file of a lower layer), are followed as the sandbox would see them.
#[test]
fn an_images_passwd_is_read_as_the_image_shows_it() {
    let Some(mut lab) = lab() else { return };
    user_image(&mut lab, "plain", "carol", "file");
    user_image(&mut lab, "linked", "carol", "relative");
    let out = lab.sh(&["--image", "plain"], "id -u; id -g");
    assert_eq!(out.lines(), ["777", "779"], "{out}");
    let out = lab.sh(&["--image", "linked"], "id -u; id -g; readlink /etc/passwd");
    assert_eq!(out.lines(), ["778", "779", "../usr/lib/passwd"], "{out}");
}

#[test]
fn an_images_passwd_linked_to_the_hosts_is_not_read() {
    let Some(mut lab) = lab() else { return };
    let me = user_name();
    user_image(&mut lab, "hostlink", &me, "host");
    let out = lab.sh(&["--image", "hostlink"], "id -u");
    out.assert_sbx_error(&["image hostlink", "/etc/passwd", "--uid"]);
    assert!(
        !out.stdout().contains(&uid().to_string()),
        "the command ran as the host's uid for {me}\n{out}"
    );
}

#[test]
fn an_images_passwd_linked_to_dev_zero_or_too_big_fails_fast() {
    let Some(mut lab) = lab() else { return };
    user_image(&mut lab, "zero", "carol", "zero");
    user_image(&mut lab, "big", "carol", "big");
    let started = Instant::now();
    // In the image, /dev/zero does not exist (the import skips devices).
    lab.sh(&["--image", "zero"], "id -u")
        .assert_sbx_error(&["image zero", "carol", "/etc/passwd"]);
    lab.sh(&["--image", "big"], "id -u").assert_sbx_error(&[
        "image big",
        "/etc/passwd",
        "larger than",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_images_passwd_that_is_a_fifo_does_not_hang() {
    let Some(mut lab) = lab() else { return };
    user_image(&mut lab, "fifo", "carol", "fifo");
    let started = Instant::now();
    lab.sh(&["--image", "fifo"], "id -u")
        .assert_sbx_error(&["image fifo", "/etc/passwd", "FIFO"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Numbers given on the command line need no lookup (and `stat`, unlike `id`, does
    // not read the FIFO inside either).
    let out = lab.sh(
        &["--image", "fifo", "--uid", "5", "--gid", "6"],
        "stat -c '%u %g' /proc/self/",
    );
    assert_eq!(out.lines(), ["5 6"], "{out}");
}

// ---------------------------------------------------------------------------------------
// Item 5: ids that cannot be set are errors, never another identity
// ---------------------------------------------------------------------------------------

#[test]
fn an_image_user_of_minus_one_is_refused() {
    let Some(mut lab) = lab() else { return };
    user_image(&mut lab, "minus", "4294967295:4294967295", "file");
    let out = lab.sh(&["--image", "minus"], "id -u");
    out.assert_sbx_error(&["image minus", "4294967295", "cannot be set"]);
    // Control: an ordinary numeric User is used as given.
    user_image(&mut lab, "numeric", "4242:4243", "file");
    let out = lab.sh(&["--image", "numeric"], "id -u; id -g");
    assert_eq!(out.lines(), ["4242", "4243"], "{out}");
}

#[test]
fn uids_and_gids_that_cannot_be_set_are_refused() {
    let Some(mut lab) = lab() else { return };
    lab.rootfs("img");
    for args in [["--uid", "4294967295"], ["--gid", "4294967295"]] {
        let mut options = vec!["--image", "img"];
        options.extend(args);
        lab.sh(&options, "id")
            .assert_sbx_error(&["4294967295", "cannot be set"]);
        lab.sh(&args, "id")
            .assert_sbx_error(&["4294967295", "cannot be set"]);
    }
    // Beyond the subordinate range: not mapped in the image's user namespace.
    let beyond = subordinate_ranges("/etc/subuid")
        .iter()
        .map(|&(_, count)| count)
        .sum::<u64>()
        + 1;
    let beyond = beyond.to_string();
    lab.sh(&["--image", "img", "--uid", &beyond], "id -u")
        .assert_sbx_error(&[&format!("uid {beyond}"), "does not map"]);
    // Control: the last mapped id works.
    let last = (beyond.parse::<u64>().unwrap() - 1).to_string();
    let out = lab.sh(&["--image", "img", "--uid", &last, "--gid", "0"], "id -u");
    assert_eq!(out.lines(), [last.as_str()], "{out}");
}
