//! Helpers for tests/pull.rs: registries on 127.0.0.1 (Debian's docker-registry, and
//! tests/data/tokenregistry.py for bearer tokens), fixture images from
//! tests/data/ocifixture.py, a private home for `sbx pull`, and layout checks.

// Each helper is used by some of the tests.
#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

pub const BUSYBOX: &str = "/bin/busybox";

/// A program on PATH.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Everything a registry test needs; prints SKIP (or fails under SBX_TEST_STRICT=1).
pub fn require_registry_tools(extra: &[&str]) -> bool {
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
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------
// The registry
// ---------------------------------------------------------------------------------------

/// docker-registry on 127.0.0.1:PORT with its storage in a private directory, killed on
/// drop. With `user`, it asks for that user's password (htpasswd, bcrypt).
pub struct Registry {
    child: Child,
    port: u16,
    dir: TempDir,
    creds: Option<(String, String)>,
}

impl Registry {
    pub fn start(creds: Option<(&str, &str)>) -> Registry {
        Registry::start_with(creds, false)
    }

    /// Over HTTPS, with a certificate for `registry.test` signed by a CA made here
    /// (`ca`), which no trust store has.
    pub fn start_tls() -> Registry {
        Registry::start_with(None, true)
    }

    fn start_with(creds: Option<(&str, &str)>, tls: bool) -> Registry {
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
        let tls = if tls {
            make_certificates(dir.path());
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.join("server.pem").display(),
                dir.join("server.key").display()
            )
        } else {
            String::new()
        };
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: sbx-test\n{tls}{auth}",
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

    /// The CA that signed an HTTPS registry's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn wait_ready(&mut self) {
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

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Builds an image for `arches` with ocifixture.py and pushes it as `repo:tag`;
    /// returns the digest the layout's index.json names.
    pub fn push(&self, repo: &str, tag: &str, arches: &[&str]) -> String {
        let work = TempDir::new();
        let layout = work.join("layout");
        let digest = build_fixture(&layout, tag, arches);
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
    pub fn blob_file(&self, digest: &str) -> PathBuf {
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

/// A CA and a certificate for `registry.test` signed by it, made with openssl in `dir`.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            &[
                "-subj",
                "/CN=sbx test CA",
                "-addext",
                "basicConstraints=critical,CA:true",
            ],
            &["-addext", "keyUsage=critical,keyCertSign"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=registry.test",
            ],
        ]
        .concat(),
    );
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:registry.test\nbasicConstraints=CA:false\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}

/// An HTTP proxy on 127.0.0.1 that tunnels every CONNECT, whatever host it names, to
/// 127.0.0.1:`target`, and records the request lines. It lets sbx talk to a local
/// registry under a name that is not loopback (so over HTTPS) without any DNS lookup or
/// packet leaving the machine. Stops when dropped.
pub struct ConnectProxy {
    pub url: String,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ConnectProxy {
    pub fn start(target: u16) -> ConnectProxy {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, stopped) = (lines.clone(), stop.clone());
        thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let seen = seen.clone();
                thread::spawn(move || {
                    let mut reader = BufReader::new(client.try_clone().unwrap());
                    let mut first = String::new();
                    let _ = reader.read_line(&mut first);
                    seen.lock().unwrap().push(first.trim_end().to_string());
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                        return;
                    };
                    let mut client = client;
                    if client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                    let (mut up_read, mut client_write) =
                        (upstream.try_clone().unwrap(), client.try_clone().unwrap());
                    let mut up_write = upstream;
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut reader, &mut up_write);
                        let _ = up_write.shutdown(std::net::Shutdown::Write);
                    });
                    let _ = std::io::copy(&mut up_read, &mut client_write);
                    let _ = client_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        ConnectProxy { url, lines, stop }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Builds an OCI layout with ocifixture.py; returns the digest its index.json names.
pub fn build_fixture(layout: &Path, tag: &str, arches: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(data_dir().join("ocifixture.py"))
        .arg(layout)
        .arg(tag)
        .args(arches)
        .output()
        .expect("run ocifixture.py");
    assert!(out.status.success(), "ocifixture.py failed: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// tests/data/tokenregistry.py serving one fixture image with bearer-token auth, killed
/// on drop.
pub struct TokenRegistry {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl TokenRegistry {
    /// Serves `repo` with a fixture image tagged `tag`; `options` go to the script
    /// (`--user U:P`, `--reject-tokens`).
    pub fn start(repo: &str, tag: &str, arches: &[&str], options: &[&str]) -> TokenRegistry {
        let dir = TempDir::new();
        build_fixture(&dir.join("layout"), tag, arches);
        let portfile = dir.join("port");
        let log = fs::File::create(dir.join("registry.log")).unwrap();
        let mut child = Command::new("python3")
            .arg(data_dir().join("tokenregistry.py"))
            .arg(dir.join("layout"))
            .arg(repo)
            .arg(&portfile)
            .args(options)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tokenregistry.py");
        let deadline = Instant::now() + Duration::from_secs(15);
        let port = loop {
            if let Some(port) = fs::read_to_string(&portfile)
                .ok()
                .and_then(|p| p.parse().ok())
            {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("tokenregistry.py exited ({status})");
            }
            assert!(Instant::now() < deadline, "tokenregistry.py did not start");
            thread::sleep(Duration::from_millis(20));
        };
        TokenRegistry { child, port, dir }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

impl Drop for TokenRegistry {
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
pub struct Home {
    pub dir: TempDir,
}

impl Home {
    pub fn new() -> Home {
        let dir = TempDir::new();
        for sub in ["home", "data", "run"] {
            fs::create_dir(dir.join(sub)).unwrap();
        }
        Home { dir }
    }

    pub fn pull(&self, args: &[&str]) -> Outcome {
        self.pull_with(args, &[])
    }

    /// `sbx pull ARGS` with extra environment variables.
    pub fn pull_with(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let mut cmd = sbx();
        cmd.envs(env.iter().copied());
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

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.join(sub)
    }

    pub fn write_auth(&self, file: &str, registry: &str, user: &str, password: &str) {
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
    pub fn assert_no_leftovers(&self, allowed: &[&str]) {
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

pub fn base64(text: &str) -> String {
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

pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

pub fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// Checks the layout as an image consumer would, and returns (manifest digest, the
/// architecture its config names, the text of /etc/sbx-fixture in its last layer).
#[track_caller]
pub fn check_layout(layout: &Path, tag: &str) -> (String, String, String) {
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
/// The host's architecture among the fixtures', or None (skipped) on any other.
pub fn fixture_arch() -> Option<&'static str> {
    let arch = host_arch();
    if arch.is_none() {
        skip("the fixture images are amd64 and arm64 only");
    }
    arch
}

pub fn host_arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("arm64"),
        _ => None,
    }
}
