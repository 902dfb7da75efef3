//! Two users.

use super::*;

/// `sbx ARGS` as `user`, in that user's home.
fn sbx_as(user: &str, env: &[(&str, &Path)], args: &[&str]) -> Outcome {
    as_user(user, None, env, &sbx_bin(), args)
}

/// Run by ci/test.sh as root, which acts as both test users with runuser.
#[test]
fn crossuser_sandboxes_are_private_to_their_user() {
    if uid() != 0 {
        skip("needs root, to act as two users (ci/test.sh runs it as root)");
        return;
    }
    let owner = std::env::var("SBX_TEST_USER").unwrap_or_else(|_| "sbxtest".into());
    let other = std::env::var("SBX_TEST_NOSUB_USER").unwrap_or_else(|_| "sbxnosub".into());
    let name = format!("priv{}", std::process::id());
    sbx_as(
        &owner,
        &[],
        &["run", "--name", &name, "-d", "--", "sleep", "1000"],
    )
    .assert_success();
    let info: Value = serde_json::from_str(&sbx_as(&owner, &[], &["inspect", &name]).stdout())
        .expect("inspect JSON");
    let owner_data = info["data_dir"].as_str().unwrap().to_string();
    let data_home = owner_data.trim_end_matches(&format!("/sbx/sandboxes/{name}"));

    // The other user does not see it, cannot read its store, and cannot enter it.
    let listed = sbx_as(&other, &[], &["ps", "-a"]);
    listed.assert_success();
    assert!(!listed.stdout().contains(&name), "{listed}");
    sbx_as(
        &other,
        &[("XDG_DATA_HOME", Path::new(data_home))],
        &["exec", &name, "--", "true"],
    )
    .assert_code(125);
    sbx_as(
        &other,
        &[("XDG_DATA_HOME", Path::new(data_home))],
        &["stop", &name],
    )
    .assert_code(125);
    let pid = info["command_pid"].as_i64().unwrap().to_string();
    let setns = format!(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nfd = os.pidfd_open({pid})\n\
         print(libc.setns(fd, 0x10000000 | 0x20000), ctypes.get_errno())"
    );
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", &other, "--", "python3", "-c", &setns]);
    let out = run(cmd);
    assert_eq!(out.stdout().trim(), "-1 1", "EPERM expected\n{out}");
    // Its owner still can.
    sbx_as(&owner, &[], &["exec", &name, "--", "true"]).assert_success();
    sbx_as(&owner, &[], &["rm", "-f", &name]).assert_success();
}

/// Connects to the SOCK_SEQPACKET socket argv[1] and says what init does with the
/// connection: `closed` (dropped at once), `kept` (open, waiting for a request) or
/// `error ERRNO` (no connection at all).
const CONTROL_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("error", e.errno)
    sys.exit(0)
s.settimeout(2)
try:
    print("closed" if s.recv(4096) == b"" else "data")
except socket.timeout:
    print("kept")
except OSError as e:
    print("closed", e.errno)
"#;

/// Run by ci/test.sh as root. The control socket sits in a private directory, which is the
/// first layer; init's check of the peer's uid is the second. Root opens the first (the
/// directories searchable, the socket writable by all) to show the second alone keeps the
/// other user out, while the owner's connection through the same path is served.
#[test]
fn crossuser_init_serves_only_its_own_user_on_the_control_socket() {
    if uid() != 0 {
        skip("needs root, to act as two users (ci/test.sh runs it as root)");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let owner = std::env::var("SBX_TEST_USER").unwrap_or_else(|_| "sbxtest".into());
    let other = std::env::var("SBX_TEST_NOSUB_USER").unwrap_or_else(|_| "sbxnosub".into());
    let pw = nix::unistd::User::from_name(&owner)
        .ok()
        .flatten()
        .expect("the test user");
    // The owner's sandbox state in directories of this test's own.
    let base = TempDir::new();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o711)).unwrap();
    let (data, runtime) = (base.join("data"), base.join("runtime"));
    for dir in [&data, &runtime] {
        fs::create_dir(dir).unwrap();
        nix::unistd::chown(dir, Some(pw.uid), Some(pw.gid)).unwrap();
    }
    let env = [
        ("XDG_DATA_HOME", data.as_path()),
        ("XDG_RUNTIME_DIR", runtime.as_path()),
    ];
    let name = format!("ctl{}", std::process::id());
    sbx_as(
        &owner,
        &env,
        &["run", "--name", &name, "-d", "--", "sleep", "1000"],
    )
    .assert_success();
    struct Remove<'a>(&'a str, [(&'a str, &'a Path); 2], String);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = sbx_as(self.0, &self.1, &["rm", "-f", &self.2]);
        }
    }
    let _remove = Remove(&owner, env, name.clone());
    let info: Value = serde_json::from_str(&sbx_as(&owner, &env, &["inspect", &name]).stdout())
        .expect("inspect JSON");
    let dir = Path::new(info["runtime_dir"].as_str().expect("runtime_dir")).to_path_buf();
    let socket = dir.join("ctl.sock");
    assert!(socket.exists(), "no control socket at {}", socket.display());
    // Open the first layer: every directory from the runtime dir down searchable, the
    // socket writable by anyone.
    let mut at = dir.clone();
    while at.starts_with(&runtime) {
        let mode = fs::metadata(&at).unwrap().permissions().mode();
        fs::set_permissions(&at, fs::Permissions::from_mode(mode | 0o011)).unwrap();
        if !at.pop() {
            break;
        }
    }
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o777)).unwrap();
    let client = |user: &str| {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", user, "--", "python3", "-c", CONTROL_CLIENT])
            .arg(&socket)
            .current_dir("/");
        let out = run(cmd);
        out.assert_success();
        out.stdout().trim().to_string()
    };
    let of_other = client(&other);
    assert!(
        of_other == "closed" || of_other.starts_with("closed "),
        "{other} got a connection init kept: {of_other}"
    );
    // Control: the owner, through the same path, is served.
    assert_eq!(client(&owner), "kept", "the owner's connection");
    // And the sandbox still works for its owner.
    sbx_as(&owner, &env, &["exec", &name, "--", "true"]).assert_success();
}

#[test]
fn start_attached_runs_in_the_foreground_with_its_exit_code() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.sbx(&[
        "run",
        "--name",
        "fg2",
        "--",
        "sh",
        "-c",
        "echo hello; exit 5",
    ])
    .assert_code(5);
    let out = n.sbx(&["start", "-a", "fg2"]);
    out.assert_code(5);
    assert_eq!(out.stdout().trim(), "hello", "{out}");
    assert_eq!(n.row("fg2")["exit_code"], 5);
}

#[test]
fn a_sandbox_cannot_edit_its_own_record() {
    if !require_sandbox() {
        return;
    }
    // The store lies inside the working directory, which the sandbox may write.
    let n = Named::new();
    let data = n.work.join("data");
    let runtime = n.work.join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    let sbx_here = |args: &[&str]| {
        let mut cmd = n.cmd(args);
        cmd.env("XDG_DATA_HOME", &data)
            .env("XDG_RUNTIME_DIR", &runtime);
        run(cmd)
    };
    let tamper = "echo '{}' > data/sbx/sandboxes/rec/record.json || echo no-record; \
                  echo x > run/sbx/rec/state.json || echo no-state; \
                  mv data/sbx data/sbx2 || echo no-move; \
                  touch data/other && echo work-writable";
    let out = sbx_here(&["run", "--name", "rec", "--", "sh", "-c", tamper]);
    out.assert_success();
    assert_eq!(
        out.lines(),
        ["no-record", "no-state", "no-move", "work-writable"],
        "{out}"
    );
    let record = std::fs::read_to_string(data.join("sbx/sandboxes/rec/record.json")).unwrap();
    assert!(record.contains("\"name\": \"rec\""), "{record}");
    sbx_here(&["rm", "rec"]).assert_success();
}
