//! `sbx pull` against a real registry: Debian's docker-registry on 127.0.0.1 with a
//! private storage directory, images built by tests/data/ocifixture.py from the host's
//! static busybox and pushed with skopeo. Nothing leaves the machine.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const BUSYBOX: &str = "/bin/busybox";

/// The staged tests/data: `$SBX_TEST_DATA` (ci/test.sh), else the source tree's.
fn data_dir() -> PathBuf {
    match std::env::var_os("SBX_TEST_DATA").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data"),
    }
}

/// A program on PATH.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Everything a registry test needs; prints SKIP (or fails under SBX_TEST_STRICT=1).
fn require_registry_tools(extra: &[&str]) -> bool {
    for name in ["docker-registry", "skopeo", "python3"].iter().chain(extra) {
        if tool(name).is_none() {
            return skip(&format!(
                "{name} is missing (ci/setup-host.sh installs docker-registry skopeo python3 apache2-utils)"
            ));
        }
    }
    if !is_static_elf(Path::new(BUSYBOX)) {
        return skip(&format!(
            "{BUSYBOX} is missing or not static (install busybox-static)"
        ));
    }
    true
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------
// The registry
// ---------------------------------------------------------------------------------------

/// docker-registry on 127.0.0.1:PORT with its storage in a private directory, killed on
/// drop. With `user`, it asks for that user's password (htpasswd, bcrypt).
struct Registry {
    child: Child,
    port: u16,
    dir: TempDir,
    creds: Option<(String, String)>,
}

impl Registry {
    fn start(creds: Option<(&str, &str)>) -> Registry {
        let dir = TempDir::new();
        let storage = dir.join("storage");
        fs::create_dir(&storage).unwrap();
        let auth = match creds {
            Some((user, password)) => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("run htpasswd");
                assert!(out.status.success(), "htpasswd failed: {out:?}");
                fs::write(dir.join("htpasswd"), &out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: sbx-test\n    path: {}\n",
                    dir.join("htpasswd").display()
                )
            }
            None => String::new(),
        };
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: sbx-test\n{auth}",
            storage.display()
        );
        fs::write(dir.join("config.yml"), config).unwrap();
        let log = fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut registry = Registry {
            child,
            port,
            dir,
            creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen: {}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Builds an image for `arches` with ocifixture.py and pushes it as `repo:tag`;
    /// returns the digest the layout's index.json names.
    fn push(&self, repo: &str, tag: &str, arches: &[&str]) -> String {
        let work = TempDir::new();
        let layout = work.join("layout");
        let out = Command::new("python3")
            .arg(data_dir().join("ocifixture.py"))
            .arg(&layout)
            .arg(tag)
            .args(arches)
            .output()
            .expect("run ocifixture.py");
        assert!(out.status.success(), "ocifixture.py failed: {out:?}");
        let digest = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let mut cmd = Command::new("skopeo");
        cmd.env("HOME", work.path())
            .env("XDG_RUNTIME_DIR", work.path())
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
            ]);
        if arches.len() > 1 {
            cmd.arg("--all");
        }
        if let Some((user, password)) = &self.creds {
            cmd.arg(format!("--dest-creds={user}:{password}"));
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.host()));
        let out = cmd.output().expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        digest
    }

    /// The file in the registry's storage that holds blob `digest`.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.join(format!(
            "storage/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Running sbx pull in a private home
// ---------------------------------------------------------------------------------------

/// A private HOME, XDG_DATA_HOME and XDG_RUNTIME_DIR for sbx: no credentials unless a
/// test writes some, and a store tmp that can be checked for leftovers.
struct Home {
    dir: TempDir,
}

impl Home {
    fn new() -> Home {
        let dir = TempDir::new();
        for sub in ["home", "data", "run"] {
            fs::create_dir(dir.join(sub)).unwrap();
        }
        Home { dir }
    }

    fn pull(&self, args: &[&str]) -> Outcome {
        let mut cmd = sbx();
        cmd.current_dir(self.dir.path())
            .env("HOME", self.dir.join("home"))
            .env("XDG_DATA_HOME", self.dir.join("data"))
            .env("XDG_RUNTIME_DIR", self.dir.join("run"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DOCKER_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE")
            .arg("pull")
            .args(args);
        run(&mut cmd)
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.join(sub)
    }

    fn write_auth(&self, file: &str, registry: &str, user: &str, password: &str) {
        let path = self.dir.join(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let auth = base64(&format!("{user}:{password}"));
        fs::write(
            &path,
            format!(r#"{{"auths": {{"{registry}": {{"auth": "{auth}"}}}}}}"#),
        )
        .unwrap();
    }

    /// Nothing may stay behind in the store's tmp or beside a `--layout` target.
    #[track_caller]
    fn assert_no_leftovers(&self, allowed: &[&str]) {
        let tmp = self.path("data/sbx/tmp");
        let left: Vec<_> = fs::read_dir(&tmp)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in {}: {left:?}", tmp.display());
        let mut here: Vec<String> = fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !["home", "data", "run"].contains(&n.as_str()))
            .filter(|n| !allowed.contains(&n.as_str()))
            .collect();
        here.sort();
        assert!(here.is_empty(), "left beside the layout: {here:?}");
    }
}

fn base64(text: &str) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Looking at a layout
// ---------------------------------------------------------------------------------------

fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// Checks the layout as an image consumer would, and returns (manifest digest, the
/// architecture its config names, the text of /etc/sbx-fixture in its last layer).
#[track_caller]
fn check_layout(layout: &Path, tag: &str) -> (String, String, String) {
    let marker = read_json(&layout.join("oci-layout"));
    assert_eq!(marker["imageLayoutVersion"], "1.0.0");
    for entry in fs::read_dir(layout.join("blobs/sha256")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert_eq!(
            sha256_file(&entry.path()),
            format!("sha256:{name}"),
            "blob {name}"
        );
    }
    let index = read_json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    let top = &manifests[0];
    assert_eq!(top["annotations"]["org.opencontainers.image.ref.name"], tag);
    let digest = top["digest"].as_str().unwrap().to_string();
    let manifest_path = blob(layout, &digest);
    assert_eq!(
        fs::metadata(&manifest_path).unwrap().len(),
        top["size"].as_u64().unwrap()
    );
    let manifest = read_json(&manifest_path);
    let config = read_json(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{manifest}");
    for layer in layers {
        assert!(blob(layout, layer["digest"].as_str().unwrap()).is_file());
    }
    let last = blob(layout, layers[1]["digest"].as_str().unwrap());
    let out = Command::new("tar")
        .arg("-xzOf")
        .arg(&last)
        .arg("etc/sbx-fixture")
        .output()
        .expect("tar");
    assert!(out.status.success(), "tar: {out:?}");
    let arch = config["architecture"].as_str().unwrap().to_string();
    (digest, arch, String::from_utf8(out.stdout).unwrap())
}

/// This host's architecture in OCI's names, as sbx should pick it.
fn host_arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("arm64"),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn pull_single_arch_image_writes_a_verified_layout() {
    if !require_registry_tools(&[]) {
        return;
    }
    let Some(arch) = host_arch() else {
        skip("the fixture images are amd64 and arm64 only");
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
    let Some(arch) = host_arch() else {
        skip("the fixture images are amd64 and arm64 only");
        return;
    };
    let registry = Registry::start(None);
    registry.push("test/busybox", "v1", &[arch]);
    let home = Home::new();
    let reference = format!("{}/test/busybox:v1", registry.host());
    let out = home.pull(&[&reference]);
    home.assert_no_leftovers(&[]);
    if out.stderr().contains("image import is not merged yet") {
        skip("the image store is not merged into this branch yet");
        return;
    }
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

#[test]
fn pull_multi_arch_index_picks_the_host_platform() {
    if !require_registry_tools(&[]) {
        return;
    }
    let Some(arch) = host_arch() else {
        skip("the fixture images are amd64 and arm64 only");
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
    let Some(arch) = host_arch() else {
        skip("the fixture images are amd64 and arm64 only");
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
    let Some(arch) = host_arch() else {
        skip("the fixture images are amd64 and arm64 only");
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
    assert!(
        !out.stderr().contains("not merged yet"),
        "import must not be reached\n{out}"
    );
    home.pull(&[&reference, "--layout", "image"])
        .assert_sbx_error(&[&layer]);
    home.assert_no_leftovers(&[]);
}

#[test]
fn pull_unknown_tag_or_repository_is_one_clear_error() {
    if !require_registry_tools(&[]) {
        return;
    }
    let Some(arch) = host_arch() else {
        skip("the fixture images are amd64 and arm64 only");
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
    let running = spawn(&mut cmd, None);
    let (_conn, _) = listener.accept().expect("sbx connects");
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
