//! Images: `sbx image import | ls | rm | inspect` and `sbx run --image`, with test images
//! built by tests/data/mkimage.py from the host's static busybox. Each test has a store of
//! its own (`XDG_DATA_HOME` in a temp dir), emptied with `sbx image rm` at the end.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// One test's image store, working directory and image builder.
struct Images {
    data: TempDir,
    work: TempDir,
    /// Directories that may hold files of subordinate ids, removed from inside a sandbox.
    keep: Vec<PathBuf>,
}

fn images() -> Option<Images> {
    if !require_subids() {
        return None;
    }
    images_with_any_ids()
}

/// Also for the `nosubuid_` tests, which run as a user without a subordinate range.
fn images_with_any_ids() -> Option<Images> {
    if !require_sandbox() {
        return None;
    }
    if !is_static_elf(Path::new("/bin/busybox")) {
        skip("/bin/busybox is missing or not static (install busybox-static)");
        return None;
    }
    if !Path::new("/usr/bin/python3").exists() || !Path::new("/usr/bin/zstd").exists() {
        skip("python3 and zstd build the test images (ci/setup-host.sh installs them)");
        return None;
    }
    Some(Images {
        data: TempDir::new(),
        work: TempDir::new(),
        keep: Vec::new(),
    })
}

impl Images {
    fn store(&self) -> PathBuf {
        self.data.join("sbx")
    }

    /// `mkimage.py ARGS...` in the working directory; returns the path of ARGS[1].
    fn mk(&self, args: &[&str]) -> PathBuf {
        let out = run(Command::new("/usr/bin/python3")
            .arg(data_dir().join("mkimage.py"))
            .args(args)
            .current_dir(self.work.path()));
        out.assert_success();
        self.work.join(args[1])
    }

    fn sbx(&self, args: &[&str]) -> Command {
        let mut cmd = sbx();
        cmd.args(args)
            .env("XDG_DATA_HOME", self.data.path())
            .current_dir(self.work.path());
        cmd
    }

    fn import(&self, name: &str, source: &Path) -> Outcome {
        run(self.sbx(&["image", "import", name, source.to_str().unwrap()]))
    }

    fn sh(&self, options: &[&str], script: &str) -> Outcome {
        let mut args = vec!["run"];
        args.extend_from_slice(options);
        args.extend(["--", "sh", "-c", script]);
        run(self.sbx(&args))
    }

    fn names(&self) -> Vec<String> {
        let out = run(self.sbx(&["image", "ls", "--json"]));
        out.assert_success();
        let v: Value = serde_json::from_str(&out.stdout()).expect("ls --json");
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn entries(&self, sub: &str) -> Vec<String> {
        fs::read_dir(self.store().join(sub))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        let names = self.names();
        if !names.is_empty() {
            let mut args = vec!["image", "rm"];
            args.extend(names.iter().map(String::as_str));
            let out = run(self.sbx(&args));
            if out.code != 0 {
                eprintln!("warning: cleanup failed\n{out}");
            }
        }
        for dir in &self.keep {
            let parent = dir.parent().unwrap().to_str().unwrap();
            let name = dir.file_name().unwrap().to_str().unwrap();
            let script = format!("rm -rf /tmp/x/{name}");
            let _ = run(sbx_run(
                self.work.path(),
                &[
                    "--uid",
                    "0",
                    "--bind",
                    &format!("{parent}:/tmp/x"),
                    "--",
                    "sh",
                    "-c",
                    &script,
                ],
            ));
        }
    }
}

/// A rootfs tarball imported as `name`.
fn with_image(im: &Images, name: &str) {
    let src = im.mk(&["docker-archive", "image.tar"]);
    im.import(name, &src).assert_success();
}

#[test]
fn each_source_kind_imports_and_runs() {
    let Some(im) = images() else { return };
    let sources = [
        ("tar", vec!["rootfs", "r.tar"]),
        ("gz", vec!["rootfs", "r.tar.gz"]),
        ("xz", vec!["rootfs", "r.tar.xz"]),
        ("zst", vec!["rootfs", "r.tar.zst"]),
        ("dir", vec!["dir", "plain"]),
        ("docker", vec!["docker-archive", "d.tar"]),
        ("ocidir", vec!["oci-dir", "oci"]),
        ("ocitar", vec!["oci-tar", "o.tar"]),
        ("dockergz", vec!["docker-archive", "d.tar.gz"]),
        ("ocizst", vec!["oci-tar", "o.tar.zst"]),
    ];
    for (name, args) in &sources {
        let src = im.mk(args);
        let out = im.import(name, &src);
        out.assert_success();
        assert!(
            out.stderr().contains(&format!("imported {name}:latest")),
            "{out}"
        );
        let out = im.sh(
            &["--image", name, "--uid", "0"],
            "grep alice /etc/passwd; id -u",
        );
        out.assert_success();
        assert_eq!(
            out.lines(),
            ["alice:x:1000:1000::/home/alice:/bin/sh", "0"],
            "{name}: {out}"
        );
    }
    let listed = im.names();
    assert_eq!(listed.len(), sources.len(), "{listed:?}");
    // The rootfs tarballs, whatever their compression, and the docker and OCI images'
    // first layer are one and the same layer, unpacked once.
    assert!(
        im.entries("layers/sha256").len() <= 3,
        "{:?}",
        im.entries("layers/sha256")
    );
}

#[test]
fn whiteouts_opaque_directories_and_cross_layer_hard_links_apply() {
    let Some(im) = images() else { return };
    with_image(&im, "layered");
    for overlay in ["kernel", "fuse"] {
        if overlay == "fuse" && !(require("fuse_overlayfs") && require("dev_fuse")) {
            return;
        }
        // /etc/passwd.hl is layer 2's hard link to layer 1's /etc/passwd.
        let out = im.sh(
            &["--image", "layered", "--overlay", overlay],
            "ls /data; echo --; ls /data/opaque; cat /data/layer2; echo --; cat /etc/passwd.hl",
        );
        out.assert_success();
        assert_eq!(
            out.lines(),
            [
                "fifo",
                "layer2",
                "link",
                "opaque",
                "--",
                "new",
                "layer 2 was here",
                "--",
                "root:x:0:0:root:/root:/bin/sh",
                "alice:x:1000:1000::/home/alice:/bin/sh",
                "bob:x:4242:4242::/srv:/bin/sh",
            ],
            "{overlay}: {out}"
        );
    }
}

#[test]
fn ownership_modes_and_links_survive() {
    let Some(im) = images() else { return };
    let src = im.mk(&["rootfs", "r.tar.gz"]);
    let out = im.import("owners", &src);
    out.assert_success();
    assert!(out.stderr().contains("skipped 1 device node"), "{out}");
    let out = im.sh(
        &["--image", "owners", "--uid", "0"],
        "stat -c '%u:%g %a %F %n' /home/alice /home/alice/notes /srv/bob-tool /etc/shadow /data/fifo; \
         readlink /data/link; \
         test $(stat -c %i /bin/busybox) = $(stat -c %i /bin/busybox-hardlink) && echo hard-link",
    );
    out.assert_success();
    assert_eq!(
        out.lines(),
        [
            "1000:1000 750 directory /home/alice",
            "1000:1000 640 regular file /home/alice/notes",
            "4242:4242 4755 regular file /srv/bob-tool",
            "0:0 600 regular file /etc/shadow",
            "0:0 644 fifo /data/fifo",
            "../etc/passwd",
            "hard-link",
        ],
        "{out}"
    );
    // As alice, alice's file is readable and root's shadow file is not.
    let out = im.sh(
        &["--image", "owners", "--uid", "1000"],
        "id -u; cat /home/alice/notes; cat /etc/shadow || echo denied",
    );
    assert_eq!(out.lines(), ["1000", "alice's", "denied"], "{out}");
}

#[test]
fn image_config_is_the_default_beneath_the_profile() {
    let Some(im) = images() else { return };
    with_image(&im, "configured");
    let out = im.sh(
        &["--image", "configured", "-w", "/"],
        "id -u; id -g; echo $IMAGE_VAR",
    );
    assert_eq!(out.lines(), ["4242", "4242", "from-image"], "{out}");
    let out = im.sh(
        &[
            "--image",
            "configured",
            "--uid",
            "0",
            "-e",
            "IMAGE_VAR=mine",
        ],
        "id -u; id -g; echo $IMAGE_VAR; pwd",
    );
    let pwd = im.work.str().to_string();
    assert_eq!(out.lines(), ["0", "0", "mine", pwd.as_str()], "{out}");
    // The image's working directory applies when the profile names none.
    let profile = im.work.join("p.json");
    fs::write(&profile, r#"{"rootfs": {"image": "configured"}}"#).unwrap();
    let out = im.sh(&["-p", profile.to_str().unwrap()], "pwd");
    assert_eq!(out.lines(), ["/srv"], "{out}");
}

/// As in podman, the image's own environment wins over what the profile passes from the
/// host (the default profile passes PATH); asking for a variable by name (`-e PATH`) takes
/// the host's value.
#[test]
fn the_images_environment_wins_over_the_hosts_pass_through() {
    let Some(im) = images() else { return };
    with_image(&im, "configured");
    let host_path = "/host/only/bin:/usr/bin:/bin";
    let mut cmd = im.sbx(&[
        "run",
        "--image",
        "configured",
        "--uid",
        "0",
        "--",
        "sh",
        "-c",
        "echo $PATH",
    ]);
    cmd.env("PATH", host_path);
    let out = run(cmd);
    out.assert_success();
    assert_eq!(out.lines(), ["/bin"], "the image's PATH\n{out}");
    let mut cmd = im.sbx(&[
        "run",
        "--image",
        "configured",
        "--uid",
        "0",
        "-e",
        "PATH",
        "--",
        "/bin/sh",
        "-c",
        "echo $PATH",
    ]);
    cmd.env("PATH", host_path);
    let out = run(cmd);
    out.assert_success();
    assert_eq!(
        out.lines(),
        [host_path],
        "-e PATH asks for the host's\n{out}"
    );
}

#[test]
fn hostile_archives_are_rejected_and_write_nothing_outside() {
    let Some(im) = images() else { return };
    let target = TempDir::new();
    fs::write(target.join("victim"), "untouched\n").unwrap();
    let before = HostState::capture();
    let cases = [
        ("dotdot", "climbs out with `..`"),
        ("absolute", "absolute path"),
        ("symlink", "refusing to write through evil"),
        ("hardlink", "climbs out with `..`"),
        ("digest", "digest mismatch"),
    ];
    for (kind, why) in cases {
        let out_name = format!("{kind}.src");
        let src = im.mk(&[&format!("hostile-{kind}"), &out_name, target.str()]);
        let out = im.import(kind, &src);
        out.assert_sbx_error(&[why]);
        assert!(!im.names().contains(&format!("{kind}:latest")), "{out}");
    }
    // A symlink planted by one layer cannot be written through by the next: each layer
    // is unpacked on its own, and the overlay shows the later layer's directory.
    let src = im.mk(&["hostile-symlink-layer", "layered.src", target.str()]);
    im.import("layered", &src).assert_success();
    let out = im.sh(&["--image", "layered", "--uid", "0"], "cat /evil/pwned");
    assert_eq!(out.lines(), ["pwned"], "{out}");
    let left: Vec<_> = fs::read_dir(target.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["victim"], "something was written outside the store");
    assert_eq!(
        fs::read_to_string(target.join("victim")).unwrap(),
        "untouched\n"
    );
    assert!(im.entries("tmp").is_empty(), "{:?}", im.entries("tmp"));
    before.assert_nothing_new();
}

#[test]
fn concurrent_imports_do_not_corrupt_the_store() {
    let Some(im) = images() else { return };
    let docker = im.mk(&["docker-archive", "d.tar"]);
    let oci = im.mk(&["oci-dir", "oci"]);
    let rootfs = im.mk(&["rootfs", "r.tar.xz"]);
    // Removed meanwhile: its layers are the others' too, and must survive for them.
    im.import("old", &docker).assert_success();
    let jobs = [
        ("same", &docker),
        ("same", &docker),
        ("other", &oci),
        ("third", &rootfs),
    ];
    let running: Vec<Running> = jobs
        .iter()
        .map(|(name, src)| {
            spawn(
                &mut im.sbx(&["image", "import", name, src.to_str().unwrap()]),
                None,
            )
        })
        .collect();
    let removing = spawn(&mut im.sbx(&["image", "rm", "old"]), None);
    for r in running.into_iter().chain([removing]) {
        r.finish(TIMEOUT).assert_success();
    }
    assert_eq!(im.names(), ["other:latest", "same:latest", "third:latest"]);
    assert_eq!(
        im.entries("layers/sha256").len(),
        2,
        "shared layers are stored once"
    );
    assert!(im.entries("tmp").is_empty(), "{:?}", im.entries("tmp"));
    for name in ["same", "other", "third"] {
        im.sh(&["--image", name], "cat /etc/passwd >/dev/null")
            .assert_success();
    }
}

#[test]
fn an_interrupted_import_leaves_nothing_half_written() {
    let Some(im) = images() else { return };
    let big = im.mk(&["big", "big.tar", "160"]);
    let mut cmd = im.sbx(&["image", "import", "big", big.to_str().unwrap()]);
    let importing = spawn(&mut cmd, None);
    let deadline = Instant::now() + TIMEOUT;
    while !im.entries("tmp").iter().any(|e| e.ends_with("-layer")) {
        assert!(
            Instant::now() < deadline,
            "the import never started unpacking"
        );
        thread::sleep(Duration::from_millis(2));
    }
    importing.signal(nix::sys::signal::Signal::SIGKILL);
    let out = importing.finish(TIMEOUT);
    assert_eq!(out.code, 128 + 9, "{out}");
    thread::sleep(Duration::from_millis(200));
    assert!(im.names().is_empty());
    assert!(
        im.entries("layers/sha256").is_empty(),
        "{:?}",
        im.entries("layers/sha256")
    );
    // The next import works and clears what the killed one left in tmp/.
    let small = im.mk(&["rootfs", "small.tar"]);
    im.import("small", &small).assert_success();
    assert!(im.entries("tmp").is_empty(), "{:?}", im.entries("tmp"));
    assert_eq!(im.names(), ["small:latest"]);
}

#[test]
fn a_runs_changes_are_discarded() {
    let Some(im) = images() else { return };
    with_image(&im, "scratch");
    let before = HostState::capture();
    let out = im.sh(
        &["--image", "scratch", "--uid", "0"],
        "echo new > /newfile && rm /etc/passwd && echo done",
    );
    assert_eq!(out.lines(), ["done"], "{out}");
    let out = im.sh(
        &["--image", "scratch", "--uid", "0"],
        "test -e /newfile || echo no-newfile; grep -c alice /etc/passwd",
    );
    assert_eq!(out.lines(), ["no-newfile", "1"], "{out}");
    before.assert_nothing_new();
}

#[test]
fn a_kept_upper_layer_survives_a_second_run() {
    let Some(mut im) = images() else { return };
    with_image(&im, "dev");
    let upper = im.work.join("upper");
    im.keep.push(upper.clone());
    let upper_s = upper.to_str().unwrap().to_string();
    let out = im.sh(
        &["--image", "dev", "--uid", "0", "--upper", &upper_s],
        "echo installed > /usr-tool && chown 1000:1000 /usr-tool && rm /data/layer2 && echo ok",
    );
    assert_eq!(out.lines(), ["ok"], "{out}");
    // The same upper through a profile.
    let profile = im.work.join("dev.json");
    fs::write(
        &profile,
        format!(r#"{{"rootfs": {{"image": "dev", "upper": "{upper_s}"}}, "user": {{"uid": 0}}}}"#),
    )
    .unwrap();
    let out = im.sh(
        &["-p", profile.to_str().unwrap()],
        "cat /usr-tool; stat -c %u /usr-tool; test -e /data/layer2 || echo layer2-gone",
    );
    assert_eq!(out.lines(), ["installed", "1000", "layer2-gone"], "{out}");
}

#[test]
fn root_inside_can_chown_and_chmod() {
    let Some(im) = images() else { return };
    with_image(&im, "pkg");
    let out = im.sh(
        &["--image", "pkg", "--uid", "0"],
        "mkdir -p /opt/pkg && echo x > /opt/pkg/f && chown 4242:1000 /opt/pkg/f && chmod 2750 /opt/pkg/f \
         && chown -R 1000:1000 /home/alice && chmod 700 /home/alice && chown 0:0 /srv/bob-tool \
         && stat -c '%u:%g %a' /opt/pkg/f /home/alice/notes /home/alice /srv/bob-tool",
    );
    out.assert_success();
    assert_eq!(
        out.lines(),
        [
            "4242:1000 2750",
            "1000:1000 640",
            "1000:1000 700",
            "0:0 755"
        ],
        "{out}"
    );
}

#[test]
fn the_fuse_overlayfs_fallback_can_be_forced() {
    let Some(im) = images() else { return };
    if !(require("fuse_overlayfs") && require("dev_fuse")) {
        return;
    }
    with_image(&im, "fused");
    let out = im.sh(
        &["--image", "fused", "--overlay", "fuse", "--uid", "0"],
        "grep ' / / ' /proc/self/mountinfo; echo hi > /f && cat /f && chown 1000 /f && stat -c %u /f",
    );
    out.assert_success();
    let lines = out.lines();
    assert!(lines[0].contains("fuse-overlayfs"), "{out}");
    assert_eq!(&lines[1..], ["hi", "1000"], "{out}");
}

#[test]
fn kernel_overlayfs_is_the_default() {
    let Some(im) = images() else { return };
    if !require("overlay_userns") {
        return;
    }
    with_image(&im, "kern");
    let out = im.sh(&["--image", "kern"], "grep ' / / ' /proc/self/mountinfo");
    out.assert_success();
    assert!(out.stdout().contains(" - overlay "), "{out}");
    assert!(out.stdout().contains("userxattr"), "{out}");
}

#[test]
fn the_centos_profile_runs_a_stand_in_image() {
    let Some(im) = images() else { return };
    let src = im.mk(&["rootfs", "centos.tar.gz"]);
    im.import("centos:stream9", &src).assert_success();
    let out = im.sh(
        &["-p", "centos"],
        "id -u; hostname; pwd; touch /work/made-inside; echo $HOME",
    );
    assert_eq!(out.lines(), ["0", "centos", "/work", "/root"], "{out}");
    let meta = fs::metadata(im.work.join("made-inside")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        uid(),
        "root inside is you outside"
    );
}

#[test]
fn the_centos_profile_says_how_to_get_its_image() {
    let Some(im) = images() else { return };
    let out = im.sh(&["-p", "centos"], "true");
    out.assert_sbx_error(&[
        "image centos:stream9 is not in the image store",
        "`sbx pull quay.io/centos/centos:stream9`",
        "`sbx image import centos:stream9 ROOTFS.tar`",
    ]);
    // Any missing image: both ways to get it.
    let out = im.sh(&["--image", "nosuch:1"], "true");
    out.assert_sbx_error(&[
        "image nosuch:1 is not in the image store",
        "`sbx pull nosuch:1`",
        "`sbx image import nosuch:1 ROOTFS.tar`",
    ]);
}

#[test]
fn image_rm_leaves_nothing() {
    let Some(im) = images() else { return };
    let docker = im.mk(&["docker-archive", "d.tar"]);
    let rootfs = im.mk(&["rootfs", "r.tar"]);
    im.import("a", &docker).assert_success();
    im.import("b", &rootfs).assert_success();
    assert_eq!(im.entries("layers/sha256").len(), 2);
    let out = run(im.sbx(&["image", "rm", "a"]));
    out.assert_success();
    // b's layer is a's first layer: it stays, and b still runs.
    assert_eq!(im.entries("layers/sha256").len(), 1);
    im.sh(&["--image", "b"], "true").assert_success();
    run(im.sbx(&["image", "rm", "b:latest"])).assert_success();
    for sub in ["layers/sha256", "images", "tmp"] {
        assert!(im.entries(sub).is_empty(), "{sub}: {:?}", im.entries(sub));
    }
    // A missing image is named, exit 1 (as podman's rmi).
    let out = run(im.sbx(&["image", "rm", "b"]));
    out.assert_code(1);
    assert!(out.stderr().contains("no image named b:latest"), "{out}");
    // Importing over a name drops the layers only the old image used.
    im.import("c", &docker).assert_success();
    im.import("c", &rootfs).assert_success();
    assert_eq!(im.entries("layers/sha256").len(), 1);
}

#[test]
fn image_ls_and_inspect_describe_the_store() {
    let Some(im) = images() else { return };
    with_image(&im, "shown:v1");
    let out = run(im.sbx(&["image", "ls"]));
    out.assert_success();
    assert!(
        out.stdout()
            .lines()
            .any(|l| l.starts_with("shown:v1") && l.contains("docker-archive")),
        "{out}"
    );
    let out = run(im.sbx(&["image", "inspect", "shown:v1"]));
    out.assert_success();
    let v: Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(v["config"]["user"], "4242:4242");
    assert_eq!(v["layers"].as_array().unwrap().len(), 2);
    for path in v["layer_paths"].as_array().unwrap() {
        assert!(
            Path::new(path.as_str().unwrap()).join("data").is_dir(),
            "{out}"
        );
    }
    run(im.sbx(&["image", "inspect", "nope"])).assert_sbx_error(&["no image named nope:latest"]);
}

#[test]
fn nosubuid_images_work_with_your_id_alone() {
    let Some(im) = images_with_any_ids() else {
        return;
    };
    let src = im.mk(&["docker-archive", "d.tar"]);
    let out = im.import("single", &src);
    out.assert_success();
    assert!(out.stderr().contains("no subordinate id range"), "{out}");
    assert!(
        out.stderr()
            .contains("owned by ids outside your subordinate range kept root"),
        "{out}"
    );
    let out = im.sh(
        &["--image", "single", "--uid", "0"],
        "id -u; stat -c %u /home/alice; ls /data",
    );
    assert_eq!(
        out.lines(),
        ["0", "0", "fifo", "layer2", "link", "opaque"],
        "{out}"
    );
    run(im.sbx(&["image", "rm", "single"])).assert_success();
    assert!(im.entries("layers/sha256").is_empty());
}

#[test]
fn progress_is_a_redrawn_line_on_a_terminal_and_plain_lines_otherwise() {
    let Some(im) = images() else { return };
    if !Path::new("/usr/bin/script").exists() {
        skip("/usr/bin/script is missing (install util-linux)");
        return;
    }
    let src = im.mk(&["rootfs", "r.tar.xz"]);
    let out = im.import("plain", &src);
    out.assert_success();
    let err = out.stderr();
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{out}");
    assert!(
        err.contains("sbx: layer 1/1: reading 8"),
        "the layer's size when it starts\n{out}"
    );
    let line = format!("{} image import tty {}", sbx_bin().display(), src.display());
    let out = run(Command::new("/usr/bin/script")
        .args(["-qec", &line, "/dev/null"])
        .env("XDG_DATA_HOME", im.data.path())
        .current_dir(im.work.path()));
    out.assert_success();
    let text = out.stdout();
    assert!(text.contains("\r\x1b[Ksbx: layer 1/1: "), "{text:?}");
    assert!(text.contains("/s)"), "a rate\n{text:?}");
    assert!(text.contains("imported tty:latest"), "{text:?}");
}

#[test]
fn removing_an_image_in_use_keeps_its_layers_until_the_run_ends() {
    let Some(im) = images() else { return };
    with_image(&im, "busy");
    let marker = im.work.join("started");
    let script = format!(
        "touch {}; while [ ! -e {}.go ]; do sleep 0.05; done; cat /data/layer2",
        marker.display(),
        marker.display()
    );
    let mut cmd = im.sbx(&[
        "run", "--image", "busy", "--uid", "0", "--", "sh", "-c", &script,
    ]);
    let running = spawn(&mut cmd, None);
    let deadline = Instant::now() + TIMEOUT;
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the sandbox never started");
        thread::sleep(Duration::from_millis(10));
    }
    run(im.sbx(&["image", "rm", "busy"])).assert_success();
    assert!(im.names().is_empty());
    assert_eq!(im.entries("layers/sha256").len(), 2, "layers in use stay");
    fs::write(im.work.join("started.go"), "").unwrap();
    let out = running.finish(TIMEOUT);
    assert_eq!(out.lines(), ["layer 2 was here"], "{out}");
    // The next collection takes them.
    let other = im.mk(&["rootfs", "other.tar"]);
    im.import("other", &other).assert_success();
    run(im.sbx(&["image", "rm", "other"])).assert_success();
    assert!(
        im.entries("layers/sha256").is_empty(),
        "{:?}",
        im.entries("layers/sha256")
    );
}

/// Where the kernel can mount the overlay only read-only (an upper directory on a FUSE
/// filesystem: the kernel log says "mounting read-only"), that is a refusal, never a
/// read-only root: `--overlay kernel` says so, and `auto` goes on to fuse-overlayfs.
#[test]
fn a_kernel_overlay_that_would_be_read_only_is_refused() {
    let Some(im) = images() else { return };
    if !(require("overlay_userns") && require("fuse_overlayfs") && require("dev_fuse")) {
        return;
    }
    with_image(&im, "ro");
    // A FUSE filesystem of our own on the host, to hold the upper directory.
    for dir in ["lo", "up", "wk", "mnt"] {
        fs::create_dir(im.work.join(dir)).unwrap();
    }
    let mnt = im.work.join("mnt");
    // Until it is unmounted, no other test here snapshots the host's mount table.
    let _mounting = mounting_on_the_host();
    let mounted = run(Command::new("fuse-overlayfs")
        .args(["-o", "lowerdir=lo,upperdir=up,workdir=wk", "mnt"])
        .current_dir(im.work.path()));
    mounted.assert_success();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = run(Command::new("fusermount3").arg("-u").arg(&self.0));
        }
    }
    let _unmount = Unmount(mnt.clone());

    let upper = mnt.join("kept");
    let upper = upper.to_str().unwrap();
    let out = im.sh(
        &["--image", "ro", "--overlay", "kernel", "--upper", upper],
        "true",
    );
    out.assert_sbx_error(&["kernel overlayfs", "read-only", "--overlay fuse"]);
    // Auto: the kernel's answer is not taken; the root is fuse-overlayfs's. (A profile
    // with no mounts of its own and `-w /`: on an upper directory on the host's FUSE
    // filesystem nothing can be created as root inside, not even a mount point.)
    let bare = im.work.join("bare.json");
    fs::write(&bare, r#"{"name": "bare"}"#).unwrap();
    let out = im.sh(
        &[
            "-p",
            bare.to_str().unwrap(),
            "-w",
            "/",
            "--image",
            "ro",
            "--upper",
            upper,
        ],
        "grep ' / / ' /proc/self/mountinfo",
    );
    out.assert_success();
    assert!(!out.stderr().contains("read-only"), "{out}");
    let lines = out.lines();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(
        lines[0].contains(" - fuse.fuse-overlayfs "),
        "auto fell back to fuse-overlayfs: {}\n{out}",
        lines[0]
    );
}

/// As the test user in `dir`: an image `img` imported into `env`'s store, and `mnt` a
/// fuse-overlayfs mount of the user's own (the upper directory the kernel will refuse).
fn fuse_scene(
    user: &str,
    dir: &TempDir,
    env: &[(&str, &Path)],
) -> std::sync::RwLockWriteGuard<'static, ()> {
    let py = Path::new("/usr/bin/python3");
    let mkimage = data_dir().join("mkimage.py");
    as_user(
        user,
        Some(dir.path()),
        &[],
        py,
        &[mkimage.to_str().unwrap(), "rootfs", "img.tar"],
    )
    .assert_success();
    as_user(
        user,
        Some(dir.path()),
        env,
        &sbx_bin(),
        &["image", "import", "img", "img.tar"],
    )
    .assert_success();
    for sub in ["lo", "up", "wk", "mnt"] {
        as_user(user, Some(dir.path()), &[], Path::new("/bin/mkdir"), &[sub]).assert_success();
    }
    let mounting = mounting_on_the_host();
    let fuse = Path::new("/usr/bin/fuse-overlayfs");
    as_user(
        user,
        Some(dir.path()),
        &[],
        fuse,
        &["-o", "lowerdir=lo,upperdir=up,workdir=wk", "mnt"],
    )
    .assert_success();
    mounting
}

/// Run by ci/test.sh as root, which can take /dev/fuse away for a moment: with the kernel
/// refusing (an upper directory on FUSE, which it would mount only read-only) and
/// fuse-overlayfs unable to start, the one error names both.
#[test]
fn asroot_neither_overlay_works_and_the_error_names_both() {
    if uid() != 0 {
        skip("needs root, to take /dev/fuse away (ci/test.sh runs it as root)");
        return;
    }
    let user = std::env::var("SBX_TEST_USER").unwrap_or_else(|_| "sbxtest".into());
    let pw = nix::unistd::User::from_name(&user)
        .ok()
        .flatten()
        .expect("test user");
    let dir = TempDir::new();
    nix::unistd::chown(dir.path(), Some(pw.uid), Some(pw.gid)).unwrap();
    let data = dir.join("data");
    let env = [("XDG_DATA_HOME", data.as_path())];
    let sbx = sbx_bin();
    // Until it is unmounted, no other test here snapshots the host's mount table.
    let _mounting = fuse_scene(&user, &dir, &env);

    struct Restore<'a>(&'a str, &'a Path);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666));
            let _ = as_user(
                self.0,
                Some(self.1),
                &[],
                Path::new("/bin/fusermount3"),
                &["-u", "mnt"],
            );
        }
    }
    let restore = Restore(&user, dir.path());
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o600)).unwrap();
    }
    let upper = dir.join("mnt/kept");
    let out = as_user(
        &user,
        Some(dir.path()),
        &env,
        &sbx,
        &[
            "run",
            "--image",
            "img",
            "--upper",
            upper.to_str().unwrap(),
            "--",
            "true",
        ],
    );
    drop(restore);
    out.assert_sbx_error(&[
        "kernel overlayfs refused",
        "fuse-overlayfs failed",
        "sbx check",
    ]);
    as_user(&user, Some(dir.path()), &env, &sbx, &["image", "rm", "img"]).assert_success();
    as_user(
        &user,
        Some(dir.path()),
        &[],
        Path::new("/bin/rm"),
        &["-rf", "data", "lo", "up", "wk", "mnt"],
    );
}

/// As podman's rmi: every image that exists is removed, each missing one is named, and the
/// exit status is 1 when the only trouble was a missing image.
#[test]
fn image_rm_removes_what_exists_and_names_what_does_not() {
    let Some(im) = images() else { return };
    let rootfs = im.mk(&["rootfs", "r.tar"]);
    let long = "a-rather-long-image-name-for-the-column-test/with/parts:and-a-long-tag";
    for name in ["one", "two", long] {
        im.import(name, &rootfs).assert_success();
    }
    // `image ls` keeps its columns aligned whatever the names' lengths.
    let out = run(im.sbx(&["image", "ls"]));
    out.assert_success();
    let lines = out.lines();
    let source = lines[0].find("SOURCE").unwrap();
    for line in &lines[1..] {
        assert_eq!(line.find(" /"), Some(source - 1), "{out}");
    }
    let out = run(im.sbx(&["image", "rm", "one", "two", "nosuch"]));
    out.assert_code(1);
    assert!(
        out.stderr().contains("no image named nosuch:latest"),
        "{out}"
    );
    assert_eq!(
        out.lines(),
        ["removed one:latest", "removed two:latest"],
        "{out}"
    );
    let out = run(im.sbx(&["image", "ls", "--json"]));
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&out.stdout())
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, [long]);
    run(im.sbx(&["image", "rm", long])).assert_success();
}

/// Another uid on an image, run from a project under the home: the hidden home lets the
/// sandbox's other ids pass through to the project (it lists nothing).
#[test]
fn another_uid_on_an_image_reaches_a_project_under_home() {
    let Some(im) = images() else { return };
    let rootfs = im.mk(&["rootfs", "r.tar"]);
    im.import("plain", &rootfs).assert_success();
    let project = TempDir::in_home();
    // A project as checkouts usually are: readable by others.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(project.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(project.join("input"), "from the project\n").unwrap();
    let mut cmd = im.sbx(&[
        "run",
        "--image",
        "plain",
        "--uid",
        "1000",
        "--gid",
        "1000",
        "--",
        "sh",
        "-c",
        "id -u; pwd; cat input; ls ~ >/dev/null 2>&1 || echo home-unlistable",
    ]);
    cmd.current_dir(project.path());
    let out = run(cmd);
    out.assert_success();
    assert_eq!(
        out.lines(),
        ["1000", project.str(), "from the project", "home-unlistable"],
        "{out}"
    );
}

/// Import progress says which size is which: what is read as stored (compressed), then
/// what each layer and the image unpack to.
#[test]
fn import_progress_names_stored_and_unpacked_sizes() {
    let Some(im) = images() else { return };
    let rootfs = im.mk(&["rootfs", "r.tar"]);
    let gz = im.work.join("r.tar.gz");
    let out = run(Command::new("gzip").arg("-k").arg(&rootfs));
    out.assert_success();
    let out = im.import("sizes", &gz);
    out.assert_success();
    let err = out.stderr();
    assert!(
        err.contains("layer 1/1: reading ") && err.contains(" as stored"),
        "{out}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("sbx: layer 1/1: sha256:") && l.ends_with("unpacked")),
        "{out}"
    );
    assert!(
        err.contains("sbx: imported sizes:latest (") && err.contains(" unpacked, "),
        "{out}"
    );
}
