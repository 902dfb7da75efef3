//! `sbx pull` against a hostile registry (tests/data/hostileregistry.py on 127.0.0.1):
//! what a registry or an image says is hostile. Huge manifests, error bodies and configs
//! must not inflate sbx-pull's memory; a layer's foreign URLs are not followed unless
//! asked; a trickling registry meets a deadline; a decompression bomb stops at
//! `--max-size` or at the store's free-space reserve, leaving nothing in the store.

mod common;
mod registry;

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use registry::*;

/// sbx-pull's peak resident memory may not exceed this, whatever the registry sends.
const PEAK_LIMIT_KB: u64 = 64 << 10;

/// tests/data/hostileregistry.py, killed on drop; `log()` lists the requests it got.
struct Hostile {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Hostile {
    fn start(options: &[&str]) -> Hostile {
        let dir = TempDir::new();
        let portfile = dir.join("port");
        let mut child = Command::new("python3")
            .arg(data_dir().join("hostileregistry.py"))
            .arg(&portfile)
            .arg(dir.join("requests.log"))
            .args(options)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hostileregistry.py");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(port) = fs::read_to_string(&portfile)
                .ok()
                .and_then(|p| p.parse().ok())
            {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("hostileregistry.py exited ({status})");
            }
            assert!(
                Instant::now() < deadline,
                "hostileregistry.py did not start"
            );
            thread::sleep(Duration::from_millis(20));
        };
        Hostile { child, port, dir }
    }

    /// The registry, for the host's architecture; `extra` for --foreign-port, --bomb-size.
    fn registry(extra: &[&str]) -> Option<Hostile> {
        if tool("python3").is_none() {
            skip("python3 is missing (ci/setup-host.sh installs it)");
            return None;
        }
        let arch = fixture_arch()?;
        Some(Hostile::start(&[&["--arch", arch][..], extra].concat()))
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn reference(&self, repo: &str) -> String {
        format!("{}/hostile/{repo}:v1", self.host())
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("requests.log")).unwrap_or_default()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// sbx-pull's peak resident memory in KiB, from the line SBX_REPORT_PEAK_RSS=1 makes it
/// print at exit.
#[track_caller]
fn peak_kb(out: &Outcome) -> u64 {
    let stderr = out.stderr();
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("sbx-pull: peak memory VmHWM:"))
        .unwrap_or_else(|| panic!("no peak memory line\n{out}"));
    line.trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("unreadable peak memory line {line:?}\n{out}"))
}

const PEAK: [(&str, &str); 1] = [("SBX_REPORT_PEAK_RSS", "1")];

/// The error line (the peak memory line aside) is one line, and short: nothing of a huge
/// body is quoted.
#[track_caller]
fn assert_one_short_error(out: &Outcome) {
    let stderr = out.stderr();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("sbx: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line\n{out}");
    assert!(errors[0].len() < 1000, "a short error line\n{out}");
}

/// Nothing in the store: no image, no layer, an empty tmp/.
#[track_caller]
fn assert_store_empty(home: &Home) {
    for dir in ["images", "layers/sha256", "tmp"] {
        let path = home.path("data/sbx").join(dir);
        let left: Vec<PathBuf> = fs::read_dir(&path)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in {}: {left:?}", path.display());
    }
}

// ---------------------------------------------------------------------------------------
// Item 2: sizes enforced while streaming
// ---------------------------------------------------------------------------------------

#[test]
fn pull_refuses_a_huge_manifest_without_reading_it_into_memory() {
    let Some(registry) = Hostile::registry(&[]) else {
        return;
    };
    let home = Home::new();
    let started = Instant::now();
    let out = home.pull_with(&[&registry.reference("manifest-huge")], &PEAK);
    out.assert_sbx_error(&[
        "manifest v1 of",
        &registry.host(),
        "larger than 4.0 MiB",
        "nothing was imported",
    ]);
    assert_one_short_error(&out);
    let peak = peak_kb(&out);
    assert!(
        peak < PEAK_LIMIT_KB,
        "sbx-pull reached {peak} kB refusing a 2 GiB manifest\n{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{out}");
    home.assert_no_leftovers(&[]);
}

#[test]
fn pull_reads_only_the_start_of_a_huge_error_body() {
    let Some(registry) = Hostile::registry(&[]) else {
        return;
    };
    let home = Home::new();
    let out = home.pull_with(&[&registry.reference("error-huge")], &PEAK);
    out.assert_sbx_error(&[
        &format!("{}/hostile/error-huge lacks blob sha256:", registry.host()),
        "(404 not found)",
    ]);
    assert_one_short_error(&out);
    let peak = peak_kb(&out);
    assert!(
        peak < PEAK_LIMIT_KB,
        "sbx-pull reached {peak} kB reading a 2 GiB error body\n{out}"
    );
    home.assert_no_leftovers(&[]);
}

#[test]
fn pull_refuses_a_huge_config_before_downloading_it() {
    let Some(registry) = Hostile::registry(&[]) else {
        return;
    };
    let home = Home::new();
    let out = home.pull_with(&[&registry.reference("config-huge")], &PEAK);
    out.assert_sbx_error(&[
        "the image config sha256:",
        "is 1073741824 bytes by its manifest",
        "more than the 4.0 MiB",
    ]);
    assert_one_short_error(&out);
    let peak = peak_kb(&out);
    assert!(
        peak < PEAK_LIMIT_KB,
        "sbx-pull reached {peak} kB with a 1 GiB config\n{out}"
    );
    let log = registry.log();
    assert!(!log.contains("/blobs/"), "no blob may be requested:\n{log}");
    home.assert_no_leftovers(&[]);
}

// ---------------------------------------------------------------------------------------
// Item 3: foreign layer URLs
// ---------------------------------------------------------------------------------------

#[test]
fn pull_fetches_foreign_layer_urls_only_when_asked() {
    if tool("python3").is_none() {
        skip("python3 is missing");
        return;
    }
    let foreign = Hostile::start(&["--foreign"]);
    let port = foreign.port.to_string();
    let Some(registry) = Hostile::registry(&["--foreign-port", &port]) else {
        return;
    };
    let home = Home::new();
    let reference = registry.reference("foreign");

    // The registry 404s the layer and points elsewhere: sbx does not go there.
    let out = home.pull(&[&reference, "--layout", "refused"]);
    out.assert_sbx_error(&[
        &format!(
            "{} answered 404 Not Found for blob sha256:",
            registry.host()
        ),
        &format!("foreign URLs on {}", foreign.host()),
        "--allow-foreign-layers",
    ]);
    assert_one_short_error(&out);
    assert_eq!(foreign.log(), "", "the foreign host was contacted\n{out}");

    // Asked: the layer comes from there, without credentials, and verifies.
    home.pull(&[&reference, "--layout", "image", "--allow-foreign-layers"])
        .assert_success();
    let log = foreign.log();
    assert!(log.starts_with("GET /layer/sha256:"), "{log}");
    // Through `sbx pull` into the store too: the flag reaches sbx-pull.
    home.pull(&[&reference, "--allow-foreign-layers", "--name", "foreign:1"])
        .assert_success();

    // A foreign host that fails is the host the error names.
    let out = home.pull(&[
        &registry.reference("foreign-missing"),
        "--allow-foreign-layers",
        "--layout",
        "missing",
    ]);
    out.assert_sbx_error(&[
        "is neither on",
        &format!("{} answered 404 Not Found (nothing here)", foreign.host()),
    ]);
    assert_one_short_error(&out);
    home.assert_no_leftovers(&["image"]);
}

/// The redirect rules are sbx-pull's own (`pull::hosts`): a registry that redirects
/// without end is cut off. Which addresses a redirect or a token service may not name
/// (this machine, the local link such as 169.254.169.254) is checked by the unit tests of
/// `pull::hosts`: a test here never names an address off this machine, not even one sbx
/// is expected to refuse.
#[test]
fn pull_stops_following_a_registry_that_redirects_without_end() {
    let Some(registry) = Hostile::registry(&[]) else {
        return;
    };
    let home = Home::new();
    let started = Instant::now();
    let out = home.pull(&[&registry.reference("redirect")]);
    out.assert_sbx_error(&[
        &format!("registry {} answered blob sha256:", registry.host()),
        "more than 10 redirects",
    ]);
    assert_one_short_error(&out);
    assert!(started.elapsed() < Duration::from_secs(20), "{out}");
    home.assert_no_leftovers(&[]);
}

// ---------------------------------------------------------------------------------------
// Item 6: an overall deadline per request
// ---------------------------------------------------------------------------------------

#[test]
fn pull_gives_up_on_a_trickling_registry_at_the_deadline() {
    let Some(registry) = Hostile::registry(&[]) else {
        return;
    };
    let home = Home::new();
    // 2 s plus 1 s per MiB: a manifest (counted as 4 MiB) gets 6 s, a small blob 2 s.
    let quick = [("SBX_PULL_DEADLINE", "2:1M")];
    let started = Instant::now();
    let out = home.pull_with(&[&registry.reference("trickle")], &quick);
    out.assert_sbx_error(&[
        &format!(
            "manifest v1 of {} did not arrive",
            registry.reference("trickle")
        ),
        "deadline of 6 s",
        "SBX_PULL_DEADLINE",
    ]);
    assert_one_short_error(&out);
    assert!(started.elapsed() < Duration::from_secs(20), "{out}");

    let started = Instant::now();
    let out = home.pull_with(&[&registry.reference("trickle-blob")], &quick);
    out.assert_sbx_error(&[
        "(layer 1/1) from",
        &format!(
            "{} did not arrive within its deadline of 2 s",
            registry.host()
        ),
    ]);
    assert_one_short_error(&out);
    assert!(started.elapsed() < Duration::from_secs(20), "{out}");
    home.assert_no_leftovers(&[]);
}

#[test]
fn a_bad_deadline_setting_is_refused_before_any_download() {
    let home = Home::new();
    let port = free_port();
    home.pull_with(
        &[&format!("127.0.0.1:{port}/x/y:1")],
        &[("SBX_PULL_DEADLINE", "soon")],
    )
    .assert_sbx_error(&["SBX_PULL_DEADLINE", "FLOOR_SECONDS:MIN_RATE"]);
}

// ---------------------------------------------------------------------------------------
// Item 7: decompression bombs
// ---------------------------------------------------------------------------------------

#[test]
fn a_decompression_bomb_stops_at_max_size_in_pull_and_import() {
    let gib = (1u64 << 30).to_string();
    let Some(registry) = Hostile::registry(&["--bomb-size", &gib]) else {
        return;
    };
    let home = Home::new();
    let reference = registry.reference("bomb");
    let out = home.pull(&[&reference, "--max-size", "64M"]);
    out.assert_sbx_error(&[
        "unpacks to more than --max-size 64.0 MiB",
        "stopped in layer 1/1",
        "nothing was imported",
    ]);
    assert_one_short_error(&out);
    assert_store_empty(&home);

    // The same image as a layout, imported: `sbx image import --max-size`.
    home.pull(&[&reference, "--layout", "bomb"])
        .assert_success();
    let mut import = sbx();
    import
        .env("HOME", home.path("home"))
        .env("XDG_DATA_HOME", home.path("data"))
        .args(["image", "import", "--max-size", "64M", "bomb:1"])
        .arg(home.path("bomb"));
    let out = run(&mut import);
    out.assert_sbx_error(&["bomb:1 unpacks to more than --max-size 64.0 MiB"]);
    assert_store_empty(&home);
    home.assert_no_leftovers(&["bomb"]);
}

#[test]
fn a_huge_blob_stops_downloading_at_the_store_reserve() {
    let Some(registry) = Hostile::registry(&[]) else {
        return;
    };
    let home = Home::new();
    // A reserve 128 MiB below what is free now: the 4 GiB layer cannot fit above it.
    let fs = nix::sys::statvfs::statvfs(&home.path("data")).unwrap();
    let free = fs.blocks_available() as u64 * fs.fragment_size() as u64;
    let reserve = free.saturating_sub(128 << 20).to_string();
    let out = home.pull_with(
        &[&registry.reference("blob-huge")],
        &[("SBX_STORE_RESERVE", reserve.as_str())],
    );
    out.assert_sbx_error(&[
        "sbx keeps in reserve",
        "of blob sha256:0000000000000000000000000000000000000000000000000000000000000000 (4.0 GiB by its descriptor) downloaded",
        "SBX_STORE_RESERVE",
    ]);
    assert_one_short_error(&out);
    assert_store_empty(&home);
    home.assert_no_leftovers(&[]);
}

#[test]
fn a_decompression_bomb_stops_at_the_store_reserve() {
    let size = (2u64 << 30).to_string();
    let Some(registry) = Hostile::registry(&["--bomb-size", &size]) else {
        return;
    };
    let home = Home::new();
    // A reserve 128 MiB below what is free now: the 2 GiB of zeros cannot fit above it.
    let fs = nix::sys::statvfs::statvfs(&home.path("data")).unwrap();
    let free = fs.blocks_available() as u64 * fs.fragment_size() as u64;
    let reserve = free.saturating_sub(128 << 20).to_string();
    let out = home.pull_with(
        &[&registry.reference("bomb")],
        &[("SBX_STORE_RESERVE", reserve.as_str())],
    );
    out.assert_sbx_error(&[
        "the image store's filesystem",
        "sbx keeps in reserve",
        "stopped in layer 1/1",
        "SBX_STORE_RESERVE",
    ]);
    assert_one_short_error(&out);
    assert_store_empty(&home);
    home.assert_no_leftovers(&[]);
}
