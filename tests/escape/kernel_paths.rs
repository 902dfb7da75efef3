//! Masked and read-only kernel paths.

use super::*;

const MASKED_FILES: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/latency_stats",
];

#[test]
fn masked_proc_files_read_empty() {
    if !require_probes() {
        return;
    }
    let present: Vec<&str> = MASKED_FILES
        .iter()
        .copied()
        .filter(|p| Path::new(p).exists())
        .collect();
    if present.is_empty() {
        skip("the host has none of the masked /proc files");
        return;
    }
    let dir = TempDir::new();
    let mut args = vec!["read", "--add-key"];
    args.extend_from_slice(&present);
    // The probe first adds a key of its own (the filter allows add_key only with
    // --seccomp off), so /proc/keys has something to show.
    let runs: [&[&str]; 4] = [
        &[],
        &["-p", "strict"],
        &["--uid", "0"],
        &["--seccomp", "off"],
    ];
    for options in runs {
        let out = probe(dir.path(), options, &args);
        out.assert_success();
        let found = results(&out);
        for path in &present {
            assert_eq!(
                found.get(*path).map(String::as_str),
                Some("ok 0"),
                "{path} with {options:?} should read empty\n{out}"
            );
        }
    }
    // Control: unmasked (--allow-nested), each reads otherwise: the key is listed, the
    // timer list is refused or shown.
    let out = probe(dir.path(), &["--allow-nested", "--seccomp", "off"], &args);
    out.assert_success();
    let found = results(&out);
    assert_eq!(
        found.get("add_key").map(String::as_str),
        Some("ok"),
        "{out}"
    );
    for path in &present {
        assert_ne!(
            found.get(*path).map(String::as_str),
            Some("ok 0"),
            "control: {path} unmasked\n{out}"
        );
    }
}

#[test]
fn masked_directories_are_empty() {
    if !require_sandbox() {
        return;
    }
    let present: Vec<&str> = ["/proc/acpi", "/proc/scsi", "/sys/firmware"]
        .into_iter()
        .filter(|p| Path::new(p).is_dir())
        .collect();
    if present.is_empty() {
        skip("the host has none of /proc/acpi, /proc/scsi, /sys/firmware");
        return;
    }
    let script = present
        .iter()
        .map(|p| format!("test -d {p} && echo {p} $(ls -A {p} | wc -l)"))
        .collect::<Vec<_>>()
        .join("; ");
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let out = sandbox_sh(dir.path(), options, &script);
        let want: Vec<String> = present.iter().map(|p| format!("{p} 0")).collect();
        assert_eq!(out.lines(), want, "{profile}: empty directories\n{out}");
    }
    // Control: unmasked, what the host lists there shows up.
    let out = sandbox_sh(dir.path(), &["--allow-nested"], &script);
    for path in &present {
        let on_host = fs::read_dir(path).unwrap().count();
        if on_host > 0 {
            assert!(
                out.lines().contains(&format!("{path} {on_host}")),
                "control: {path} unmasked lists {on_host} entries\n{out}"
            );
        }
    }
}

/// A regular file under `dir` on the host (depth first, a few levels), for write attempts.
fn some_file_under(dir: &Path, depth: u32) -> Option<PathBuf> {
    let mut entries: Vec<_> = fs::read_dir(dir).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in &entries {
        let path = entry.path();
        if path.symlink_metadata().is_ok_and(|m| m.is_file()) {
            return Some(path);
        }
    }
    if depth == 0 {
        return None;
    }
    entries
        .iter()
        .filter(|e| e.path().symlink_metadata().is_ok_and(|m| m.is_dir()))
        .find_map(|e| some_file_under(&e.path(), depth - 1))
}

#[test]
fn kernel_tunables_are_read_only_even_for_root_inside() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let script = "echo escaped > /proc/sys/kernel/hostname && echo written";
    for (profile, options) in PROFILES {
        let mut options = options.to_vec();
        options.extend_from_slice(&["--uid", "0"]);
        let out = sandbox_sh(dir.path(), &options, script);
        assert!(!out.stdout().contains("written"), "{profile}\n{out}");
        assert!(out.stderr().contains(EROFS), "{profile}\n{out}");
    }
    // Control: unmasked, the write gets past the mount (to the kernel's own refusal).
    let out = sandbox_sh(dir.path(), &["--uid", "0", "--allow-nested"], script);
    assert!(!out.stderr().contains(EROFS), "control\n{out}");
}

#[test]
fn proc_kernel_interfaces_are_read_only() {
    if !require_sandbox() {
        return;
    }
    let mut targets: Vec<PathBuf> = ["/proc/irq", "/proc/bus", "/proc/fs"]
        .iter()
        .filter_map(|d| some_file_under(Path::new(d), 3))
        .collect();
    let sysrq = Path::new("/proc/sysrq-trigger");
    if sysrq.exists() {
        targets.push(sysrq.to_path_buf());
    }
    if targets.is_empty() {
        skip("the host has no file under /proc/irq, /proc/bus, /proc/fs");
        return;
    }
    // `>` opens with O_TRUNC: a read-only mount refuses that (EROFS) before the file's
    // permissions are looked at. (`true`, not `:`: a failed redirection of a special
    // builtin ends the shell.)
    let script = targets
        .iter()
        .map(|t| format!("true > {} && echo written {}", t.display(), t.display()))
        .collect::<Vec<_>>()
        .join("; ");
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let mut options = options.to_vec();
        options.extend_from_slice(&["--uid", "0"]);
        let out = sandbox_sh(dir.path(), &options, &script);
        assert!(!out.stdout().contains("written"), "{profile}\n{out}");
        for target in &targets {
            let t = target.to_str().unwrap();
            assert!(
                out.stderr()
                    .lines()
                    .any(|l| l.contains(t) && l.contains(EROFS)),
                "{profile}: writing {t} should fail with {EROFS:?}\n{out}"
            );
        }
    }
}

#[test]
fn sys_is_read_only() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let name = unique("sys");
    let script =
        format!("touch /sys/{name} && echo created; touch /sys/kernel/{name} && echo created");
    for (profile, options) in PROFILES {
        let mut options = options.to_vec();
        options.extend_from_slice(&["--uid", "0"]);
        let out = sandbox_sh(dir.path(), &options, &script);
        assert!(!out.stdout().contains("created"), "{profile}\n{out}");
        assert_eq!(out.stderr().matches(EROFS).count(), 2, "{profile}\n{out}");
    }
}

#[test]
fn kernel_log_device_is_absent() {
    if !require_sandbox() {
        return;
    }
    if !Path::new("/dev/kmsg").exists() {
        eprintln!("note: the host has no /dev/kmsg either");
    }
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let out = sandbox_sh(
            dir.path(),
            options,
            "test -e /dev/kmsg && echo present; echo hi > /dev/kmsg && echo logged; \
             test -e /dev/null && echo dev-ok",
        );
        // The sandbox ran (its /dev is there), and /dev/kmsg is not in it.
        out.assert_success();
        assert_eq!(out.lines(), ["dev-ok"], "{profile}\n{out}");
        assert!(out.stderr().contains("/dev/kmsg"), "{profile}\n{out}");
    }
}

const DEV_ENTRIES: &[&str] = &[
    "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty",
    "urandom", "zero",
];

#[test]
fn dev_holds_only_the_minimal_set() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    for (profile, options) in PROFILES {
        let out = sandbox_sh(dir.path(), options, "ls -A /dev");
        out.assert_success();
        let mut inside: Vec<String> = out.stdout().split_whitespace().map(String::from).collect();
        inside.sort();
        assert_eq!(inside, DEV_ENTRIES, "{profile}\n{out}");
    }
}

#[test]
fn dev_is_read_only() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let script = "touch /dev/sbx-planted && echo created; mkdir /dev/sbx-dir && echo created; \
                  touch /dev/shm/ok && echo shm-ok";
    for (profile, options) in PROFILES {
        for uid in [&[][..], &["--uid", "0"]] {
            let mut options = options.to_vec();
            options.extend_from_slice(uid);
            let out = sandbox_sh(dir.path(), &options, script);
            // /dev/shm stays writable: the failures are /dev's own.
            assert_eq!(out.lines(), ["shm-ok"], "{profile} {uid:?}\n{out}");
        }
    }
}
