//! --status-json, --env-file.

use super::*;

#[test]
fn status_json_for_an_unnamed_run() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let status = dir.join("status.json");
    let mut running = spawn_with_stdin(&mut sbx_run(
        dir.path(),
        &[
            "--status-json",
            status.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo up; read x; exit 4",
        ],
    ));
    let stdin = running.child.stdin.take().expect("stdin pipe");
    running.wait_for_stdout("up", TIMEOUT);
    // Written once init reports the command started: maybe just after its first output.
    let deadline = Instant::now() + TIMEOUT;
    while !status.exists() {
        assert!(Instant::now() < deadline, "no status file");
        std::thread::sleep(Duration::from_millis(20));
    }
    let during: Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert_eq!(during["status"], "running");
    assert!(during["pid"].as_i64().unwrap() > 0);
    for ns in ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"] {
        assert!(during["namespaces"][ns].as_u64().unwrap() > 0, "{during}");
    }
    assert!(during.get("tracking").is_none());
    drop(stdin);
    running.finish(TIMEOUT).assert_code(4);
    let after: Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert_eq!(after["status"], "exited");
    assert_eq!(after["exit_code"], 4);
    assert_eq!(after["namespaces"], during["namespaces"]);

    sandbox_sh(
        dir.path(),
        &["--status-json", status.to_str().unwrap()],
        "kill -KILL $$",
    )
    .assert_code(137);
    let killed: Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert_eq!(killed["signal"], 9);
    assert_eq!(killed["exit_code"], 137);
}

#[test]
fn env_file_sets_variables_and_names_bad_lines() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let file = dir.join("app.env");
    std::fs::write(
        &file,
        "# settings\n\nNAME=sbx\nSPACED=two words\nexport QUOTED=\"kept\"\nOVERRIDDEN=file\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let out = sandbox_sh(
        dir.path(),
        &["--env-file", f, "-e", "OVERRIDDEN=cli"],
        "echo $NAME; echo $SPACED; echo $QUOTED; echo $OVERRIDDEN",
    );
    out.assert_success();
    assert_eq!(
        out.lines(),
        ["sbx", "two words", "\"kept\"", "cli"],
        "{out}"
    );

    std::fs::write(&file, "OK=1\n\n2BAD=x\n").unwrap();
    sandbox_sh(dir.path(), &["--env-file", f], "true")
        .assert_sbx_error(&["app.env", "line 3", "2BAD"]);
    sandbox_sh(dir.path(), &["--env-file", "/nonexistent-sbx.env"], "true")
        .assert_sbx_error(&["/nonexistent-sbx.env"]);
}
