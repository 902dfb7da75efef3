//! On an image: the writable layer is kept until rm.

use super::*;

#[test]
fn a_named_sandbox_on_an_image_keeps_its_writable_layer_until_rm() {
    let Some(n) = Named::with_image("dev") else {
        return;
    };

    n.detach(
        "shell",
        &["--image", "dev", "--uid", "0"],
        &["sleep", "1000"],
    );
    n.exec_sh(
        "shell",
        "echo installed > /opt-tool && chown 1000:1000 /opt-tool && rm /bin/ls",
    )
    .assert_success();
    n.sbx(&["stop", "-t", "1", "shell"]).assert_success();
    n.sbx(&["start", "shell"]).assert_success();
    let out = n.exec_sh(
        "shell",
        "cat /opt-tool; stat -c %u /opt-tool; test -e /bin/ls || echo ls-gone",
    );
    assert_eq!(out.lines(), ["installed", "1000", "ls-gone"], "{out}");
    // A sandbox of its own on the same image does not see those changes.
    let out = n.sbx(&[
        "run",
        "--image",
        "dev",
        "--",
        "sh",
        "-c",
        "test -e /opt-tool || echo clean",
    ]);
    assert_eq!(out.stdout().trim(), "clean", "{out}");

    let layer = n.data.join("sbx/sandboxes/shell/layer");
    assert!(
        layer.join("upper").is_dir(),
        "the layer lives with the record"
    );
    n.sbx(&["rm", "-f", "shell"]).assert_success();
    assert!(
        !n.data.join("sbx/sandboxes/shell").exists(),
        "rm leaves nothing"
    );
    // The image itself is untouched.
    n.sbx(&["run", "--image", "dev", "--", "test", "-e", "/bin/ls"])
        .assert_success();
    // Its layers hold files of subordinate ids, which only sbx can remove.
    n.sbx(&["image", "rm", "dev"]).assert_success();
}

#[test]
fn sandboxes_on_images_share_a_network() {
    let Some(n) = Named::with_image("app") else {
        return;
    };
    // busybox nc serving on the first sandbox's loopback (TCP needs Landlock off there).
    let port = free_port();
    n.detach(
        "db",
        &["--image", "app", "--landlock", "off"],
        &[
            "sh",
            "-c",
            &format!("echo up; while :; do echo hello-from-db | nc -l -p {port}; done"),
        ],
    );
    eventually("the server", || {
        n.sbx(&["logs", "db"]).stdout().contains("up")
    });
    let fetch = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do nc 127.0.0.1 {port} </dev/null && exit; sleep 0.2; done"
    );
    let out = n.sbx(&[
        "run",
        "--image",
        "app",
        "--net",
        "sandbox:db",
        "--",
        "sh",
        "-c",
        &fetch,
    ]);
    out.assert_success();
    assert_eq!(out.stdout().trim(), "hello-from-db", "{out}");
    // A sandbox whose user namespace does not have you at 0 cannot host an image root.
    n.detach("plain", &[], &["sleep", "1000"]);
    n.sbx(&[
        "run",
        "--image",
        "app",
        "--net",
        "sandbox:plain",
        "--",
        "true",
    ])
    .assert_sbx_error(&["uid 0", "--uid 0"]);
    n.sbx(&["rm", "-f", "db", "plain"]).assert_success();
    n.sbx(&["image", "rm", "app"]).assert_success();
}
