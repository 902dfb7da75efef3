//! `sbx pull` against real registries on 127.0.0.1: Debian's docker-registry with a
//! private storage directory (and tests/data/tokenregistry.py for bearer tokens), images
//! built by tests/data/ocifixture.py from the host's static busybox and pushed with
//! skopeo. Nothing leaves the machine.

mod common;
mod registry;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use registry::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn pull_single_arch_image_writes_a_verified_layout() {
    if !require_registry_tools(&[]) {
        return;
    }
    let Some(arch) = fixture_arch() else {
        return;
    };
    let registry = Registry::start(None);
    let pushed = registry.push("test/busybox", "v1", &[arch]);
    let home = Home::new();
    let reference = format!("{}/test/busybox:v1", registry.host());
    let out = home.pull(&[&reference, "--layout", "image"]);
    out.assert_success();
    let (digest, config_arch, marker) = check_layout(&home.path("image"), "v1");
    assert_eq!(digest, pushed, "the manifest pushed is the manifest pulled");
    assert_eq!(config_arch, arch);
    assert_eq!(marker, format!("arch={arch} tag=v1\n"));
    // Not a terminal: plain progress lines naming each layer.
    assert!(out.stderr().contains("fetched layer 1/2"), "{out}");
    assert!(out.stderr().contains("fetched layer 2/2"), "{out}");
    home.assert_no_leftovers(&["image"]);
    // An existing, non-empty directory is never written into.
    home.pull(&[&reference, "--layout", "image"])
        .assert_sbx_error(&["--layout", "not empty"]);
}

#[test]
fn pull_imports_under_the_reference_or_the_given_name() {
    if !require_registry_tools(&[]) {
        return;
    }
    let Some(arch) = fixture_arch() else {
        return;
    };
    let registry = Registry::start(None);
    registry.push("test/busybox", "v1", &[arch]);
    let home = Home::new();
    let reference = format!("{}/test/busybox:v1", registry.host());
    let out = home.pull(&[&reference]);
    home.assert_no_leftovers(&[]);
    out.assert_success();
    let named = home.pull(&[&reference, "--name", "fixture:one"]);
    named.assert_success();
    home.assert_no_leftovers(&[]);
    let mut ls = sbx();
    ls.env("HOME", home.path("home"))
        .env("XDG_DATA_HOME", home.path("data"))
        .args(["image", "ls"]);
    let listing = run(&mut ls);
    listing.assert_success();
    assert!(listing.stdout().contains("test/busybox"), "{listing}");
    assert!(listing.stdout().contains("fixture"), "{listing}");
}

/// `sbx image ls` names where a pulled image came from: the reference, never the
/// temporary layout in the store's `tmp/` it was imported from.
#[test]
fn pull_records_the_reference_as_the_images_source() {
    if !require_registry_tools(&[]) {
        return;
    }
    let Some(arch) = fixture_arch() else {
        return;
    };
    let registry = Registry::start(None);
    registry.push("test/busybox", "v1", &[arch]);
    let home = Home::new();
    let reference = format!("{}/test/busybox:v1", registry.host());
    home.pull(&[&reference, "--name", "fixture:one"])
        .assert_success();
    let listing = image_ls(&home, &[]);
    let line = listing
        .stdout()
        .lines()
        .find(|l| l.starts_with("fixture:one "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no fixture:one in {listing}"));
    assert!(
        line.ends_with(&format!("  {reference} (OCI layout directory)")),
        "{line}"
    );
    assert!(!line.contains("tmp/"), "{line}");
    let json: Value = serde_json::from_str(&image_ls(&home, &["--json"]).stdout()).unwrap();
    let record = json
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "fixture:one"))
        .unwrap_or_else(|| panic!("no fixture:one in {json}"));
    assert_eq!(record["source"], reference.as_str(), "{record}");
    assert_eq!(record["kind"], "OCI layout directory", "{record}");
}

/// `sbx image ls ARGS` on `home`'s store.
fn image_ls(home: &Home, args: &[&str]) -> Outcome {
    let mut ls = sbx();
    ls.env("HOME", home.path("home"))
        .env("XDG_DATA_HOME", home.path("data"))
        .args(["image", "ls"])
        .args(args);
    let out = run(&mut ls);
    out.assert_success();
    out
}

#[test]
fn pull_multi_arch_index_picks_the_host_platform() {
    if !require_registry_tools(&[]) {
        return;
    }
    let Some(arch) = fixture_arch() else {
        return;
    };
    let registry = Registry::start(None);
    registry.push("test/multi", "v2", &["arm64", "amd64"]);
    let home = Home::new();
    let reference = format!("{}/test/multi:v2", registry.host());

    home.pull(&[&reference, "--layout", "host"])
        .assert_success();
    let (_, config_arch, marker) = check_layout(&home.path("host"), "v2");
    assert_eq!(config_arch, arch);
    assert_eq!(marker, format!("arch={arch} tag=v2\n"));
    let index = read_json(&home.path("host/index.json"));
    assert_eq!(index["manifests"][0]["platform"]["architecture"], arch);

    let other = if arch == "amd64" { "arm64" } else { "amd64" };
    home.pull(&[
        &reference,
        "--layout",
        "other",
        "--platform",
        &format!("linux/{other}"),
    ])
    .assert_success();
    let (_, config_arch, marker) = check_layout(&home.path("other"), "v2");
    assert_eq!(config_arch, other);
    assert_eq!(marker, format!("arch={other} tag=v2\n"));

    home.pull(&[&reference, "--layout", "none", "--platform", "linux/s390x"])
        .assert_sbx_error(&["has no image for linux/s390x", "linux/arm64, linux/amd64"]);
    home.assert_no_leftovers(&["host", "other"]);
}

#[test]
fn pull_with_credentials_from_docker_and_containers_auth_files() {
    if !require_registry_tools(&["htpasswd"]) {
        return;
    }
    let Some(arch) = fixture_arch() else {
        return;
    };
    let registry = Registry::start(Some(("alice", "s3cret-pw")));
    registry.push("private/busybox", "v1", &[arch]);
    let host = registry.host();
    let reference = format!("{host}/private/busybox:v1");

    let home = Home::new();
    home.pull(&[&reference, "--layout", "anon"])
        .assert_sbx_error(&[
            "requires credentials to pull private/busybox",
            "docker login",
        ]);
    home.write_auth("home/.docker/config.json", &host, "alice", "wrong");
    home.pull(&[&reference, "--layout", "wrong"])
        .assert_sbx_error(&["refused the credentials of alice", ".docker/config.json"]);
    home.write_auth("home/.docker/config.json", &host, "alice", "s3cret-pw");
    home.pull(&[&reference, "--layout", "docker"])
        .assert_success();
    check_layout(&home.path("docker"), "v1");

    // containers' auth.json comes first, as podman reads it.
    home.write_auth("run/containers/auth.json", &host, "alice", "stale");
    home.pull(&[&reference, "--layout", "stale"])
        .assert_sbx_error(&["refused the credentials of alice", "containers/auth.json"]);
    home.write_auth("run/containers/auth.json", &host, "alice", "s3cret-pw");
    fs::remove_file(home.path("home/.docker/config.json")).unwrap();
    home.pull(&[&reference, "--layout", "podman"])
        .assert_success();
    check_layout(&home.path("podman"), "v1");
    home.assert_no_leftovers(&["docker", "podman"]);
}

#[test]
fn pull_rejects_a_corrupted_blob_and_imports_nothing() {
    if !require_registry_tools(&[]) {
        return;
    }
    let Some(arch) = fixture_arch() else {
        return;
    };
    let registry = Registry::start(None);
    let manifest_digest = registry.push("test/busybox", "v1", &[arch]);
    let manifest: Value =
        serde_json::from_slice(&fs::read(registry.blob_file(&manifest_digest)).unwrap()).unwrap();
    // Flip one byte of the first (busybox) layer in the registry's own storage.
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let file = registry.blob_file(&layer);
    let mut data = fs::read(&file).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    fs::write(&file, &data).unwrap();

    let home = Home::new();
    let reference = format!("{}/test/busybox:v1", registry.host());
    let out = home.pull(&[&reference]);
    out.assert_sbx_error(&[
        &format!("blob {layer} does not match its digest"),
        "nothing was imported",
    ]);
    let images = fs::read_dir(home.path("data/sbx/images")).map_or(0, |d| d.count());
    assert_eq!(images, 0, "import must not be reached\n{out}");
    home.pull(&[&reference, "--layout", "image"])
        .assert_sbx_error(&[&layer]);
    home.assert_no_leftovers(&[]);
}

#[test]
fn pull_unknown_tag_or_repository_is_one_clear_error() {
    if !require_registry_tools(&[]) {
        return;
    }
    let Some(arch) = fixture_arch() else {
        return;
    };
    let registry = Registry::start(None);
    registry.push("test/busybox", "v1", &[arch]);
    let home = Home::new();
    let host = registry.host();
    let out = home.pull(&[&format!("{host}/test/busybox:nope")]);
    out.assert_sbx_error(&[&format!("tag nope not found in {host}/test/busybox")]);
    assert_eq!(out.stderr().lines().count(), 1, "one line\n{out}");
    home.pull(&[&format!("{host}/test/nothing:v1")])
        .assert_sbx_error(&[&format!("{host}/test/nothing")]);
    home.assert_no_leftovers(&[]);
}

#[test]
fn pull_from_an_unreachable_registry_is_one_clear_error() {
    let home = Home::new();
    let port = free_port();
    let out = home.pull(&[&format!("127.0.0.1:{port}/test/busybox:v1")]);
    out.assert_sbx_error(&[&format!("cannot reach registry 127.0.0.1:{port} over http")]);
    assert_eq!(out.stderr().lines().count(), 1, "one line\n{out}");
    home.pull(&["not a reference"])
        .assert_sbx_error(&["invalid image reference"]);
    home.assert_no_leftovers(&[]);
}

/// Which request a registry that is not on loopback gets: sbx is pointed at a proxy on
/// 127.0.0.1 (this test's own listener), so nothing leaves the machine, and the first
/// line it sends shows the scheme: `CONNECT host:port` for HTTPS, `GET http://...` for
/// plain HTTP.
fn first_request_line(home: &Home, extra: &[&str]) -> (String, Outcome) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let accept = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut conn = loop {
            match listener.accept() {
                Ok((conn, _)) => break conn,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Err(e) => return format!("no connection to the proxy: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = conn.read(&mut buf).unwrap_or(0);
        let _ = conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    });
    let mut cmd = sbx();
    cmd.current_dir(home.dir.path())
        .env("HOME", home.path("home"))
        .env("XDG_DATA_HOME", home.path("data"))
        .env("XDG_RUNTIME_DIR", home.path("run"))
        .env("HTTPS_PROXY", &proxy)
        .env("HTTP_PROXY", &proxy)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .args(["pull", "192.0.2.1:5000/test/busybox:v1"])
        .args(extra);
    let out = run(&mut cmd);
    (accept.join().unwrap(), out)
}

#[test]
fn pull_speaks_https_to_registries_off_this_machine_unless_told() {
    let home = Home::new();
    let (line, out) = first_request_line(&home, &[]);
    assert_eq!(line, "CONNECT 192.0.2.1:5000 HTTP/1.1", "{out}");
    out.assert_sbx_error(&["192.0.2.1:5000", "--plain-http"]);
    let (line, out) = first_request_line(&home, &["--plain-http"]);
    assert_eq!(line, "GET http://192.0.2.1:5000/v2/ HTTP/1.1", "{out}");
    out.assert_code(125);
    home.assert_no_leftovers(&[]);
}

#[test]
fn pull_interrupted_leaves_nothing_behind() {
    // A "registry" that accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let home = Home::new();
    let mut cmd = sbx();
    cmd.current_dir(home.dir.path())
        .env("HOME", home.path("home"))
        .env("XDG_DATA_HOME", home.path("data"))
        .env("XDG_RUNTIME_DIR", home.path("run"))
        .args(["pull", &format!("127.0.0.1:{port}/test/busybox:v1")]);
    let mut running = spawn(&mut cmd, None);
    // Never wait forever: sbx may fail before it connects.
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    let _conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let exited = matches!(running.child.try_wait(), Ok(Some(_)));
                assert!(
                    !exited && std::time::Instant::now() < deadline,
                    "sbx never connected\n{}",
                    running.stderr_so_far()
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    let tmp = home.path("data/sbx/tmp");
    let entries = fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        entries, 1,
        "the download directory exists while the pull runs"
    );
    running.signal(nix::sys::signal::Signal::SIGINT);
    let out = running.finish(TIMEOUT);
    out.assert_sbx_error(&["interrupted; nothing was imported"]);
    home.assert_no_leftovers(&[]);
}

#[test]
fn pull_gets_an_anonymous_bearer_token() {
    if !require_registry_tools(&[]) {
        return;
    }
    let Some(arch) = fixture_arch() else {
        return;
    };
    let registry = TokenRegistry::start("test/busybox", "v3", &[arch, "s390x"], &[]);
    let home = Home::new();
    let reference = format!("{}/test/busybox:v3", registry.host());
    home.pull(&[&reference, "--layout", "image"])
        .assert_success();
    let (_, config_arch, _) = check_layout(&home.path("image"), "v3");
    assert_eq!(config_arch, arch);
    let log = registry.log();
    assert!(
        log.contains("GET /token?scope=repository%3Atest%2Fbusybox%3Apull"),
        "{log}"
    );
    home.assert_no_leftovers(&["image"]);
}

#[test]
fn pull_trades_credentials_for_a_token_and_reports_a_refused_one() {
    if !require_registry_tools(&[]) {
        return;
    }
    let Some(arch) = fixture_arch() else {
        return;
    };
    let registry = TokenRegistry::start("private/app", "v1", &[arch], &["--user", "bob:pw1"]);
    let host = registry.host();
    let reference = format!("{host}/private/app:v1");
    let home = Home::new();
    home.pull(&[&reference, "--layout", "anon"])
        .assert_sbx_error(&["requires credentials to pull private/app"]);
    home.write_auth("home/.docker/config.json", &host, "bob", "nope");
    home.pull(&[&reference, "--layout", "wrong"])
        .assert_sbx_error(&["refused the credentials of bob", ".docker/config.json"]);
    home.write_auth("home/.docker/config.json", &host, "bob", "pw1");
    home.pull(&[&reference, "--layout", "image"])
        .assert_success();
    check_layout(&home.path("image"), "v1");
    home.assert_no_leftovers(&["image"]);

    // A token the registry then refuses: 401 after the token, one clear line.
    let refusing = TokenRegistry::start("private/app", "v1", &[arch], &["--reject-tokens"]);
    let out = home.pull(&[&format!("{}/private/app:v1", refusing.host())]);
    out.assert_sbx_error(&["requires credentials to pull private/app"]);
    assert_eq!(out.stderr().lines().count(), 1, "one line\n{out}");
    home.assert_no_leftovers(&["image"]);
}

#[test]
fn pull_over_https_checks_the_registry_certificate() {
    if !require_registry_tools(&["openssl"]) {
        return;
    }
    let Some(arch) = fixture_arch() else {
        return;
    };
    let registry = Registry::start_tls();
    registry.push("test/busybox", "v1", &[arch]);
    // registry.test is not loopback, so sbx speaks HTTPS to it; the proxy brings the
    // connection to the local registry.
    let proxy = ConnectProxy::start(registry.port());
    let home = Home::new();
    let reference = "registry.test:443/test/busybox:v1";
    let system = [("HTTPS_PROXY", proxy.url.as_str())];
    let untrusted = home.pull_with(&[reference, "--layout", "untrusted"], &system);
    untrusted.assert_sbx_error(&["registry.test", "certificate", "trust store"]);
    let ca = registry.ca();
    let trusted = [
        ("HTTPS_PROXY", proxy.url.as_str()),
        ("SSL_CERT_FILE", ca.to_str().unwrap()),
    ];
    home.pull_with(&[reference, "--layout", "image"], &trusted)
        .assert_success();
    check_layout(&home.path("image"), "v1");
    assert!(
        proxy
            .lines()
            .iter()
            .all(|l| l == "CONNECT registry.test:443 HTTP/1.1"),
        "{:?}",
        proxy.lines()
    );
    home.assert_no_leftovers(&["image"]);
}
