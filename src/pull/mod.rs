//! `sbx pull REFERENCE`: download an image from an OCI or Docker registry into an OCI
//! image layout in a private temporary directory, then hand it to the image store.
//!
//! Everything that can fail without touching the network or the disk (the reference, the
//! name, the platform, HTTPS or plain HTTP, the credential files) is settled first in a
//! [`Request`]. Only then is a tokio runtime started, current-thread and inside this
//! command alone: `sbx run` never has one. The temporary layout is removed whatever
//! happens, interrupts included.

mod auth;
mod deadline;
mod explain;
mod fetch;
mod hosts;
mod layout;
mod platform;
mod progress;
mod registry;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use oci_client::Reference;

use crate::cli::PullArgs;
use crate::image::store::{Claim, Store};
use auth::Credentials;
use deadline::Deadlines;
use layout::Layout;
use platform::Platform;

/// A validated pull: what to fetch, how, and where it goes.
pub struct Request {
    /// The reference as the user typed it.
    pub given: String,
    pub reference: Reference,
    pub platform: Platform,
    /// Plain HTTP: a loopback registry, or `--plain-http`.
    pub plain_http: bool,
    pub credentials: Option<Credentials>,
    /// Where credentials were looked for (for messages).
    pub credential_files: Vec<PathBuf>,
    pub destination: Destination,
    /// Follow a layer's foreign `urls` (`--allow-foreign-layers`).
    pub allow_foreign_layers: bool,
    /// `--max-size`: the most the image may unpack to.
    pub max_size: Option<u64>,
    /// Each request's overall deadline.
    pub deadlines: Deadlines,
}

pub enum Destination {
    /// Imported into the store under this name.
    Store { name: String },
    /// Written as an OCI layout to this directory (`--layout`).
    Layout(PathBuf),
}

impl Request {
    pub fn from_args(args: &PullArgs) -> Result<Request> {
        let given = args.reference.trim().to_string();
        let reference = parse_reference(&given)?;
        let platform = match &args.platform {
            Some(text) => Platform::parse(text)?,
            None => Platform::host(),
        };
        let destination = match (&args.layout, &args.name) {
            (Some(dir), _) => Destination::Layout(layout_destination(dir)?),
            (None, Some(name)) => Destination::Store {
                name: store_name(name)?,
            },
            (None, None) => Destination::Store {
                name: given.clone(),
            },
        };
        let plain_http = args.plain_http || is_loopback(reference.resolve_registry());
        let credential_files = auth::files();
        let credentials = auth::lookup(
            &credential_files,
            reference.registry(),
            reference.repository(),
        )?;
        let max_size = args
            .max_size
            .as_deref()
            .map(|s| crate::plan::parse_size(s).with_context(|| format!("--max-size {s}")))
            .transpose()?;
        if max_size.is_some() && matches!(destination, Destination::Layout(_)) {
            bail!("--max-size limits what is imported into the store; --layout imports nothing (pass it to `sbx image import` later)");
        }
        Ok(Request {
            given,
            reference,
            platform,
            plain_http,
            credentials,
            credential_files,
            destination,
            allow_foreign_layers: args.allow_foreign_layers,
            max_size,
            deadlines: Deadlines::from_env()?,
        })
    }

    pub fn scheme(&self) -> &'static str {
        if self.plain_http {
            "http"
        } else {
            "https"
        }
    }

    #[cfg(test)]
    pub fn for_test(reference: &str) -> Request {
        Request {
            given: reference.to_string(),
            reference: parse_reference(reference).unwrap(),
            platform: Platform::host(),
            plain_http: false,
            credentials: None,
            credential_files: vec![PathBuf::from("/home/u/.docker/config.json")],
            destination: Destination::Store {
                name: reference.to_string(),
            },
            allow_foreign_layers: false,
            max_size: None,
            deadlines: Deadlines::parse("60:64K").unwrap(),
        }
    }
}

/// Runs `sbx pull`.
pub fn run(args: &PullArgs) -> Result<i32> {
    let request = Request::from_args(args)?;
    // Into the store: a directory of its `tmp/` that this process claims, so that the
    // store's own cleaning of interrupted work leaves it alone.
    // Into a layout: written beside its destination first, then renamed.
    let (claim, parent, prefix) = match &request.destination {
        Destination::Store { .. } => {
            let claim = Store::create()?.claim_tmp("pull", true)?;
            let parent = claim.path.clone();
            (Some(claim), parent, "layout-".to_string())
        }
        Destination::Layout(dir) => {
            let parent = dir.parent().unwrap_or(Path::new(".")).to_path_buf();
            let base = dir.file_name().unwrap_or_default().to_string_lossy();
            (None, parent, format!(".{base}.sbx-pull-"))
        }
    };
    let layout = Layout::create(&parent, &prefix)?;
    let fetched = fetch_interruptible(&request, &layout);
    match (&request.destination, fetched) {
        (_, Err(e)) => {
            drop(layout);
            release(claim);
            Err(e)
        }
        (Destination::Store { name }, Ok(())) => {
            let imported = crate::image::import_path(
                name,
                layout.path(),
                Some(&request.given),
                request.max_size,
            )
            .with_context(|| format!("import {} as {name}", request.given));
            drop(layout);
            release(claim);
            imported?;
            eprintln!("sbx: pulled {} as {name}", request.given);
            Ok(0)
        }
        (Destination::Layout(dir), Ok(())) => {
            layout.persist(dir)?;
            eprintln!("sbx: wrote {} to {}", request.given, dir.display());
            Ok(0)
        }
    }
}

/// Removes the emptied claimed directory (the next store writer would, too).
fn release(claim: Option<Claim>) {
    if let Some(claim) = claim {
        let _ = std::fs::remove_dir(&claim.path);
    }
}

/// Runs the download on a current-thread runtime; SIGINT or SIGTERM ends it with an
/// error, so the temporary layout is still removed.
fn fetch_interruptible(request: &Request, layout: &Layout) -> Result<()> {
    // rustls is built without a default crypto provider; this picks ring. An error only
    // means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the download runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).context("handle SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("handle SIGTERM")?;
        tokio::select! {
            result = fetch::fetch(request, layout) => result,
            _ = int.recv() => Err(anyhow!("interrupted; nothing was imported")),
            _ = term.recv() => Err(anyhow!("terminated; nothing was imported")),
        }
    })
}

fn parse_reference(given: &str) -> Result<Reference> {
    Reference::try_from(given).map_err(|e| {
        anyhow!(
            "invalid image reference {given:?} ({e}); expected [REGISTRY/]REPOSITORY[:TAG|@DIGEST], \
             such as quay.io/centos/centos:stream9"
        )
    })
}

/// `--name NAME[:TAG]`: the store checks the spelling; here only what can never be right.
fn store_name(name: &str) -> Result<String> {
    let bad = name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        bail!("--name {name:?}: expected NAME[:TAG] without spaces, such as centos:stream9");
    }
    Ok(name.to_string())
}

/// `--layout DIR`: DIR must not exist yet (or be an empty directory), its parent must.
fn layout_destination(dir: &Path) -> Result<PathBuf> {
    if dir.file_name().is_none() {
        bail!("--layout {}: name a new directory", dir.display());
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "--layout {}: the directory is not empty; name a new one",
                    dir.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("--layout {}", dir.display())),
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        bail!(
            "--layout {}: {} is not a directory",
            dir.display(),
            parent.display()
        );
    }
    Ok(dir.to_path_buf())
}

/// A registry on this machine: `localhost`, 127.0.0.0/8 or ::1, with or without a port.
/// Only these get plain HTTP without `--plain-http`.
fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.split(':').next().unwrap_or(registry),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(reference: &str) -> PullArgs {
        PullArgs {
            reference: reference.to_string(),
            ..PullArgs::default()
        }
    }

    #[test]
    fn only_loopback_registries_get_plain_http() {
        for local in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.2.1",
            "[::1]:5000",
            "LOCALHOST",
        ] {
            assert!(is_loopback(local), "{local}");
        }
        for remote in [
            "quay.io",
            "192.0.2.1:5000",
            "10.0.0.1",
            "[2001:db8::1]:5000",
            "localhost.example.com",
            "127.0.0.1.nip.io",
            "index.docker.io",
        ] {
            assert!(!is_loopback(remote), "{remote}");
        }
    }

    #[test]
    fn requests_choose_https_unless_loopback_or_asked() {
        let remote = Request::from_args(&args("192.0.2.1:5000/img:1")).unwrap();
        assert_eq!(remote.scheme(), "https");
        let local = Request::from_args(&args("127.0.0.1:5000/img:1")).unwrap();
        assert_eq!(local.scheme(), "http");
        let mut asked = args("192.0.2.1:5000/img:1");
        asked.plain_http = true;
        assert_eq!(Request::from_args(&asked).unwrap().scheme(), "http");
    }

    #[test]
    fn the_name_defaults_to_the_reference_as_given() {
        let r = Request::from_args(&args("busybox")).unwrap();
        assert!(matches!(&r.destination, Destination::Store { name } if name == "busybox"));
        assert_eq!(r.reference.registry(), "docker.io");
        assert_eq!(r.reference.repository(), "library/busybox");
        let mut named = args("quay.io/centos/centos:stream9");
        named.name = Some("centos:9".into());
        let r = Request::from_args(&named).unwrap();
        assert!(matches!(&r.destination, Destination::Store { name } if name == "centos:9"));
    }

    #[test]
    fn bad_references_and_names_fail_before_any_download() {
        let err = Request::from_args(&args("Not A Reference")).err().unwrap();
        assert!(err.to_string().contains("invalid image reference"), "{err}");
        let mut named = args("busybox");
        named.name = Some("two words".into());
        assert!(Request::from_args(&named).is_err());
        let mut layout = args("busybox");
        layout.layout = Some(PathBuf::from("/"));
        assert!(Request::from_args(&layout).is_err());
    }
}
