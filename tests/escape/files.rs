//! Files, devices and chroot.

use super::*;

#[test]
fn etc_shadow_stays_unreadable_through_a_bind() {
    if !require_sandbox() {
        return;
    }
    let shadow = Path::new("/etc/shadow");
    if !shadow.exists() {
        skip("the host has no /etc/shadow");
        return;
    }
    if fs::read(shadow).is_ok() {
        skip("the test user can read /etc/shadow on the host (running as root?)");
        return;
    }
    let dir = TempDir::new();
    for uid in [&[][..], &["--uid", "0"]] {
        let mut options = vec!["--ro-bind", "/etc/shadow:/tmp/x"];
        options.extend_from_slice(uid);
        let out = sandbox_sh(
            dir.path(),
            &options,
            "test -f /tmp/x && echo bound; cat /tmp/x && echo read",
        );
        assert!(!out.stdout().contains("read"), "{uid:?}\n{out}");
        assert!(!out.stdout().contains("root:"), "{uid:?}\n{out}");
        // Either sbx refuses the bind, naming the file, or the file is bound and the
        // command cannot read it.
        if out.code == 125 {
            out.assert_sbx_error(&["/etc/shadow"]);
        } else {
            out.assert_code(1);
            assert_eq!(out.lines(), ["bound"], "{uid:?}\n{out}");
            assert!(
                out.stderr().contains("/tmp/x: Permission denied"),
                "{uid:?}\n{out}"
            );
        }
    }
}

#[test]
fn mknod_of_a_device_fails_even_for_root_inside() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let mut options = options.to_vec();
        options.extend_from_slice(&["--uid", "0"]);
        let out = sandbox_sh(
            dir.path(),
            &options,
            "mknod /tmp/mem c 1 1 && echo char-made; mknod /tmp/disk b 254 0 && echo block-made; \
             mknod /tmp/fifo p && echo fifo-ok",
        );
        // A fifo works: mknod itself is there, only devices are refused.
        assert_eq!(out.lines(), ["fifo-ok"], "{profile}\n{out}");
        assert_eq!(
            out.stderr().matches(EPERM_TEXT).count(),
            2,
            "{profile}\n{out}"
        );
    }
}

#[test]
fn chroot_fails_for_a_non_root_command() {
    if !require_probes() {
        return;
    }
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let out = probe(dir.path(), options, &["chroot"]);
        out.assert_success();
        assert_eq!(out.lines(), ["chroot EPERM"], "{profile}\n{out}");
    }
    // Control: root inside holds SYS_CHROOT (podman's set), and chroot works.
    let out = probe(dir.path(), &["--uid", "0"], &["chroot"]);
    assert_eq!(out.lines(), ["chroot ok"], "control\n{out}");
}
