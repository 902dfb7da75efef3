//! --net sandbox:NAME.

use super::*;

const SERVER: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", PORT))
s.listen()
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"hello from db\n")
    c.close()
"#;

const CLIENT: &str = r#"
import socket, sys
try:
    c = socket.create_connection(("127.0.0.1", PORT), timeout=5)
    print(c.recv(100).decode().strip())
except OSError as e:
    print("refused", e.errno)
"#;

/// The namespaces whose ids a process in a sandbox has, as `readlink /proc/PID/ns/NS`.
const NAMESPACES: [&str; 5] = ["pid", "ipc", "uts", "mnt", "net"];

/// `NS ns:[ID]` for each of [`NAMESPACES`] of the process `pid` ("self": this one).
fn namespace_ids(pid: &str) -> Vec<(String, String)> {
    NAMESPACES
        .iter()
        .map(|ns| {
            let link = std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
                .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{ns}: {e}"));
            (ns.to_string(), link.to_string_lossy().into_owned())
        })
        .collect()
}

#[test]
fn a_sandbox_joins_anothers_network() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    let port = free_port().to_string();
    let (server, client) = (SERVER.replace("PORT", &port), CLIENT.replace("PORT", &port));
    // The server's side needs TCP, which Landlock denies under --net none.
    n.detach("db", &["--landlock", "off"], &["python3", "-c", &server]);
    eventually("the server", || {
        n.sbx(&["logs", "db"]).stdout().contains("listening")
    });
    let out = n.sbx(&["run", "--net", "sandbox:db", "--", "python3", "-c", &client]);
    out.assert_success();
    assert_eq!(out.stdout().trim(), "hello from db", "{out}");
    // Control: a sandbox of its own does not reach it, and neither does the host.
    let out = n.sbx(&["run", "--landlock", "off", "--", "python3", "-c", &client]);
    assert_eq!(out.stdout().trim(), "refused 111", "{out}");
    let host = run({
        let mut c = Command::new("python3");
        c.args(["-c", &client]);
        c
    });
    assert_eq!(host.stdout().trim(), "refused 111", "{host}");
    // Its other namespaces are its own: the joiner's ids against the server's (read on
    // the host, through the server's /proc entry) and the host's.
    let db_pid = n.inspect("db")["command_pid"]
        .as_i64()
        .expect("inspect names the command's pid")
        .to_string();
    let db = namespace_ids(&db_pid);
    let host = namespace_ids("self");
    let script = NAMESPACES
        .map(|ns| format!("echo {ns} $(readlink /proc/self/ns/{ns})"))
        .join("; ");
    let out = n.sbx(&["run", "--net", "sandbox:db", "--", "sh", "-c", &script]);
    out.assert_success();
    let joiner: Vec<(String, String)> = out
        .lines()
        .iter()
        .filter_map(|l| l.split_once(' '))
        .map(|(ns, id)| (ns.to_string(), id.to_string()))
        .collect();
    assert_eq!(joiner.len(), NAMESPACES.len(), "{out}");
    for (((ns, mine), (_, of_db)), (_, of_host)) in joiner.iter().zip(&db).zip(&host) {
        assert!(mine.starts_with(&format!("{ns}:[")), "{ns}: {mine}\n{out}");
        if ns == "net" {
            assert_eq!(mine, of_db, "the joiner shares db's network\n{out}");
        } else {
            assert_ne!(
                mine, of_db,
                "the joiner has a {ns} namespace of its own\n{out}"
            );
            assert_ne!(
                mine, of_host,
                "the joiner's {ns} namespace is not the host's\n{out}"
            );
        }
    }
    assert_ne!(db[4].1, host[4].1, "db has a network of its own");
}

#[test]
fn joining_needs_a_running_sandbox_with_a_network_of_its_own() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.sbx(&["run", "--net", "sandbox:nosuch", "--", "true"])
        .assert_sbx_error(&["no sandbox named nosuch"]);
    n.detach("hostnet", &["--net", "host"], &["sleep", "1000"]);
    n.sbx(&["run", "--net", "sandbox:hostnet", "--", "true"])
        .assert_sbx_error(&["host's network", "--net host"]);
    n.detach("stopped", &[], &["sleep", "1000"]);
    n.sbx(&["stop", "-t", "1", "stopped"]).assert_success();
    n.sbx(&["run", "--net", "sandbox:stopped", "--", "true"])
        .assert_sbx_error(&["not running", "sbx start stopped"]);
    n.detach("other", &[], &["sleep", "1000"]);
    n.sbx(&["run", "--net", "sandbox:other", "--uid", "0", "--", "true"])
        .assert_sbx_error(&["user namespace", "--uid"]);
    n.sbx(&[
        "run",
        "--net",
        "sandbox:other",
        "--publish",
        "8080:80",
        "--",
        "true",
    ])
    .assert_sbx_error(&["--publish"]);
}

#[test]
fn exec_into_a_sandbox_that_joined_another() {
    if !require_sandbox() {
        return;
    }
    let n = Named::new();
    n.detach("a", &["--hostname", "alpha"], &["sleep", "1000"]);
    n.detach(
        "b",
        &["--net", "sandbox:a", "--hostname", "beta"],
        &["sleep", "1000"],
    );
    let net_of = |name: &str| n.inspect(name)["namespaces"]["net"].clone();
    assert_eq!(net_of("a"), net_of("b"));
    let user_of = |name: &str| n.inspect(name)["namespaces"]["user"].clone();
    assert_eq!(user_of("a"), user_of("b"));
    let mnt_of = |name: &str| n.inspect(name)["namespaces"]["mnt"].clone();
    assert_ne!(mnt_of("a"), mnt_of("b"));
    let out = n.exec_sh("b", "hostname");
    assert_eq!(out.stdout().trim(), "beta", "{out}");
}
