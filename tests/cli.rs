//! The command line as a newcomer meets it: completion scripts, man pages, the version, and
//! output into a closed pipe.

mod common;

use std::io::Read;
use std::process::Stdio;

use common::named::Named;
use common::*;

/// Runs sbx with ARGS, its stdout a pipe the reader closes after one byte: what
/// `sbx ... | head -c1` does. Returns the exit code and stderr.
fn into_closed_pipe(args: &[&str], data: &TempDir) -> (i32, String) {
    let mut child = sbx()
        .args(args)
        .env("XDG_DATA_HOME", data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    let _ = stdout.read(&mut one);
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let code = out.status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&out.status).unwrap_or(0)
    });
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn no_subcommand_panics_writing_into_a_closed_pipe() {
    let data = TempDir::new();
    for args in [
        &["man"][..],
        &["man", "run"],
        &["completion", "bash"],
        &["profile", "ls"],
        &["profile", "show", "default"],
        &["profile", "schema"],
        &["check", "--json"],
        &["ps", "-a", "--json"],
        &["image", "ls"],
        &["--help"],
    ] {
        let (code, stderr) = into_closed_pipe(args, &data);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "sbx {args:?}: {stderr}"
        );
        // Ended by SIGPIPE as other tools are, or done before the reader left.
        assert!(
            matches!(code, 0 | 141),
            "sbx {args:?} exited {code}: {stderr}"
        );
    }
}

#[test]
fn completion_scripts_complete_profiles_and_sandboxes() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(sbx().args(["completion", shell]));
        out.assert_success();
        assert!(out.stdout().contains("COMPLETE"), "{shell}\n{out}");
    }
    run(sbx().args(["completion", "tcsh"])).assert_code(125);
    // What the bash script asks sbx when completing `sbx run --profile <TAB>`.
    let mut cmd = sbx();
    cmd.env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", "3")
        .args(["--", "sbx", "run", "--profile", ""]);
    let out = run(cmd);
    out.assert_success();
    let names: Vec<String> = out
        .stdout()
        .split(['\n', '\u{b}'])
        .map(str::to_string)
        .collect();
    for profile in ["default", "build", "strict", "devshell"] {
        assert!(names.iter().any(|n| n == profile), "{profile} in {names:?}");
    }
}

#[test]
fn man_pages_and_version() {
    let out = run(sbx().args(["man"]));
    out.assert_success();
    assert!(out.stdout().contains(".TH sbx 1"), "{out}");
    let out = run(sbx().args(["man", "run"]));
    out.assert_success();
    assert!(out.stdout().contains(".TH sbx-run 1") && out.stdout().contains("\\-\\-profile"));
    run(sbx().args(["man", "nosuch"])).assert_sbx_error(&["nosuch"]);
    let out = run(sbx().arg("version"));
    out.assert_success();
    let line = out.stdout();
    assert!(
        line.starts_with(&format!("sbx {} (", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
}

#[test]
fn a_schema_key_in_a_profile_is_accepted_and_ignored() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let profile = dir.join("mine.json");
    std::fs::write(
        &profile,
        r#"{"$schema": "../profiles/schema.json", "extends": "default", "hostname": "mine"}"#,
    )
    .unwrap();
    let path = profile.to_str().unwrap();
    run(sbx().args(["profile", "check", path])).assert_success();
    let out = sandbox_sh(dir.path(), &["-p", path], "hostname");
    out.assert_success();
    assert_eq!(out.lines(), ["mine"]);
    // Any other unknown key is still an error.
    std::fs::write(&profile, r#"{"$schemas": "x"}"#).unwrap();
    run(sbx().args(["profile", "check", path])).assert_sbx_error(&["$schemas"]);
}

#[test]
fn podman_habits_work_or_fail_loudly() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let src = TempDir::new();
    std::fs::write(src.join("f"), "from the host\n").unwrap();
    let rw = format!("{}:/tmp/rw", src.str());
    let ro = format!("{}:/tmp/ro:ro", src.str());
    // -v is a bind mount, as in podman; -u, --network, -it and --rm are accepted.
    let out = sandbox_sh(
        dir.path(),
        &[
            "-v",
            &rw,
            "--volume",
            &ro,
            "-u",
            "0:0",
            "--network",
            "none",
            "-it",
            "--rm",
        ],
        "cat /tmp/ro/f; echo x > /tmp/ro/g 2>/dev/null || echo ro-refused; \
         echo y > /tmp/rw/new && echo rw-ok; id -u; id -g",
    );
    out.assert_success();
    assert_eq!(
        out.lines(),
        ["from the host", "ro-refused", "rw-ok", "0", "0"],
        "{out}"
    );
    assert!(src.join("new").exists());
    // Spellings sbx does not take are errors that say what to do.
    for (options, needle) in [
        (&["-v", "/tmp:/x:Z"][..], "volume option"),
        (&["-v", "named:/x:ro:extra"], "SRC:DST"),
        (&["-u", "alice"], "numeric ids"),
        (&["-p", "8080:80"], "--publish 8080:80"),
        (&["--rm", "--name", "x"], "--rm with --name"),
    ] {
        sandbox_sh(dir.path(), options, "true").assert_sbx_error(&[needle]);
    }
}

#[test]
fn detached_run_without_a_name_gets_one() {
    if !require_sandbox() {
        return;
    }
    let p = Named::new();
    let with_dirs = |args: &[&str]| p.sbx(args);
    let out = with_dirs(&["run", "-d", "--", "sleep", "1000"]);
    out.assert_success();
    let name = out.stdout().trim().to_string();
    assert!(
        name.starts_with("sbx-") && !name.contains(char::is_whitespace),
        "{out}"
    );
    let ps = with_dirs(&["ps"]);
    assert!(
        ps.stdout()
            .lines()
            .any(|l| l.starts_with(&name) && l.contains("running")),
        "{ps}"
    );
    with_dirs(&["rm", "-f", &name]).assert_success();
}

#[test]
fn verbose_speaks_to_people() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &["--verbose", "--tmpfs", "/tmp/scratch"],
        "true",
    );
    out.assert_success();
    let err = out.stderr();
    assert!(
        err.contains("sbx: rootfs: the host's / (read-only)"),
        "{out}"
    );
    assert!(
        err.contains(&format!("sbx: mount: bind {0} -> {0} (rw)", dir.str())),
        "{out}"
    );
    assert!(
        err.contains("sbx: mount: tmpfs /tmp/scratch (rw, "),
        "{out}"
    );
    assert!(
        !err.contains("Tmpfs {") && !err.contains("Bind {"),
        "no debug structs\n{out}"
    );
}

#[test]
fn a_corrupt_record_is_listed_as_broken_and_removable() {
    if !require_sandbox() {
        return;
    }
    let p = Named::new();
    let data = &p.data;
    let with_dirs = |args: &[&str]| p.sbx(args);
    with_dirs(&["run", "--name", "cut", "--", "true"]).assert_success();
    // A disk that filled up mid-write: the record is cut short.
    let record = data.join("sbx/sandboxes/cut/record.json");
    std::fs::write(&record, "{\"vers").unwrap();
    let ps = with_dirs(&["ps", "-a"]);
    ps.assert_success();
    assert!(
        ps.stdout()
            .lines()
            .any(|l| l.starts_with("cut ") && l.contains("broken")),
        "{ps}"
    );
    assert!(ps.stderr().contains("sbx rm -f cut"), "{ps}");
    with_dirs(&["rm", "-f", "cut"]).assert_success();
    assert!(!data.join("sbx/sandboxes/cut").exists());
    let ps = with_dirs(&["ps", "-a"]);
    assert!(!ps.stdout().contains("cut"), "{ps}");
}

/// `sbx check` and `sbx run` find helpers the same way (`SBX_SLIRP4NETNS` replaces the
/// search for both): check never calls one missing that run would use, or the reverse.
#[test]
fn check_and_run_find_helpers_the_same_way() {
    if !require_sandbox() || !require("slirp4netns") || !require("dev_net_tun") {
        return;
    }
    let dir = TempDir::new();
    let real = [
        "/usr/bin/slirp4netns",
        "/usr/local/bin/slirp4netns",
        "/bin/slirp4netns",
    ]
    .into_iter()
    .map(std::path::Path::new)
    .find(|p| p.is_file())
    .expect("check found slirp4netns");
    // A copy somewhere else entirely: both must use it.
    let copy = dir.join("my-slirp4netns");
    std::fs::copy(real, &copy).unwrap();
    for (helper, found) in [
        (copy.to_str().unwrap(), true),
        ("/nonexistent/slirp4netns", false),
    ] {
        let mut check = sbx();
        check
            .args(["check", "--json"])
            .env("SBX_SLIRP4NETNS", helper);
        let out = run(check);
        let report: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
        assert_eq!(
            report["slirp4netns"]["ok"], found,
            "check with {helper}\n{out}"
        );
        let mut cmd = sbx_run(dir.path(), &["--net", "slirp4netns", "--", "true"]);
        cmd.env("SBX_SLIRP4NETNS", helper);
        let out = run(cmd);
        assert_eq!(out.code == 0, found, "run with {helper}\n{out}");
    }
}

/// A start killed at any moment leaves either a sandbox that `sbx ps -a` lists (its record
/// was written) or nothing: never a runtime directory that no record names.
#[test]
fn a_killed_start_leaves_nothing_unnamed() {
    if !require_sandbox() {
        return;
    }
    let p = Named::new();
    let (data, runtime) = (&p.data, &p.runtime);
    for i in 0..48u64 {
        let mut cmd = p.cmd(&["run", "--name", &format!("k{i}"), "--", "sleep", "1000"]);
        let running = spawn(&mut cmd, None);
        std::thread::sleep(std::time::Duration::from_micros(250 * i));
        running.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = running.finish(TIMEOUT);
    }
    let names = |d: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(d)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let sandboxes = data.join("sbx/sandboxes");
    let recorded = names(&sandboxes);
    for name in names(&runtime.join("sbx")) {
        if name.starts_with('k') {
            let record = sandboxes.join(&name).join("record.json");
            assert!(record.is_file(), "runtime dir {name} without a record");
        }
    }
    // Clean up what did start: kill -9 of sbx leaves the sandbox's processes to die with
    // its init; the records go with rm -f.
    for name in recorded {
        p.sbx(&["rm", "-f", &name]);
    }
}

/// A pull that cannot connect says what failed and gives the hint that fits: nothing
/// listening is not a matter of --plain-http.
#[test]
fn pull_errors_name_the_failure() {
    let dir = TempDir::new();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut cmd = sbx();
    cmd.args(["pull", &format!("127.0.0.1:{port}/team/tool:1")])
        .env("XDG_DATA_HOME", dir.path());
    let out = run(cmd);
    out.assert_sbx_error(&["connection refused", "nothing listens there"]);
    assert!(!out.stderr().contains("--plain-http"), "{out}");
}

#[test]
fn completion_offers_the_sandboxes_that_exist() {
    if !require_sandbox() {
        return;
    }
    let p = Named::new();
    p.sbx(&["run", "--name", "completeme", "--", "true"])
        .assert_success();
    // What the bash script asks sbx when completing `sbx exec <TAB>`.
    let mut cmd = p.cmd(&["--", "sbx", "exec", ""]);
    cmd.env("COMPLETE", "bash").env("_CLAP_COMPLETE_INDEX", "2");
    let out = run(cmd);
    out.assert_success();
    assert!(
        out.stdout()
            .split(['\n', '\u{b}'])
            .any(|n| n == "completeme"),
        "{out}"
    );
    p.sbx(&["rm", "-f", "completeme"]).assert_success();
}

/// sbx, sbx-pull and sbx-oci are linked statically (.cargo/config.toml): no program
/// interpreter, so no ld.so, libc.so or libgcc_s to load, relocate and let probe the CPU on
/// every start (README, "Start-up").
#[test]
fn the_binaries_load_no_shared_libraries() {
    let dir = sbx_bin().parent().unwrap().to_path_buf();
    for name in ["sbx", "sbx-pull", "sbx-oci"] {
        let elf = std::fs::read(dir.join(name)).unwrap();
        assert!(
            !has_interpreter(&elf),
            "{name} is linked dynamically: it names a program interpreter (PT_INTERP)"
        );
    }
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP program header.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    assert!(
        elf.starts_with(b"\x7fELF\x02\x01"),
        "not a 64-bit little-endian ELF file"
    );
    let word = |at: usize| usize::from(u16::from_le_bytes([elf[at], elf[at + 1]]));
    let offset = usize::try_from(u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap())).unwrap();
    let (size, count) = (word(0x36), word(0x38));
    (0..count).any(|i| {
        let at = offset + i * size;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    })
}
