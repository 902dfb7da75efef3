//! Images: a content-addressed store of unpacked layers, `sbx image import | ls | rm |
//! inspect`, and the lookup `sbx run --image` does.

pub mod budget;
mod decompress;
mod import;
mod lookup;
pub mod platform;
mod progress;
pub mod run;
mod source;
pub mod store;
mod unpack;
pub mod userns;

/// Byte counts as people read them (1536 -> "1.5 KiB"), for every progress line.
pub use progress::size as byte_size;

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::cli::ImageCommand;
use store::Store;

/// `NAME[:TAG]`, the tag defaulting to `latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    pub name: String,
    pub tag: String,
}

impl ImageName {
    pub fn parse(spec: &str) -> Result<ImageName> {
        let valid = !spec.is_empty()
            && spec.len() <= 255
            && !spec.starts_with(['/', '.', ':', '-'])
            && !spec.contains("..")
            && !spec.contains("//")
            && spec
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c));
        if !valid {
            bail!("invalid image name {spec:?}: use letters, digits and . _ - / : @, as in centos:stream9");
        }
        let last_slash = spec.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match spec[last_slash..].rfind(':') {
            Some(i) => (&spec[..last_slash + i], &spec[last_slash + i + 1..]),
            None => (spec, "latest"),
        };
        if name.is_empty() || tag.is_empty() || name.ends_with('/') {
            bail!("invalid image name {spec:?}: expected NAME[:TAG], as in centos:stream9");
        }
        Ok(ImageName {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }

    pub fn full(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }
}

/// Imports `source` (a rootfs tarball, plain or gzip/xz/zstd; a docker-archive; an OCI
/// layout directory or tar; a plain directory) as `name`, exactly as
/// `sbx image import NAME SOURCE` does, progress on stderr included. `origin` is where
/// the image came from, as `sbx image ls` shows it: `source` unless given (`sbx pull`
/// gives its reference, the layout it imports being temporary). With `max_size`, an
/// image whose layers unpack to more is refused (see `import::Budget`).
pub fn import_path(
    name: &str,
    source: &Path,
    origin: Option<&str>,
    max_size: Option<u64>,
) -> Result<()> {
    let image = ImageName::parse(name)?;
    let source = std::path::absolute(source)
        .with_context(|| format!("import source {}", source.display()))?;
    let label = origin.map_or_else(|| source.display().to_string(), str::to_string);
    if userns::single_threaded() {
        return userns::run(|| import::import(&image, &source, &label, max_size));
    }
    // fork() is only safe single-threaded: a caller with threads (a registry client) gets
    // a fresh sbx process to do it: the `sbx` beside this binary (sbx-pull is one).
    let sbx = std::env::current_exe()
        .context("find the sbx binary to import with")?
        .with_file_name("sbx");
    let mut cmd = std::process::Command::new(&sbx);
    cmd.args(["image", "import", name]).arg(&source);
    if let Some(origin) = origin {
        cmd.arg(format!("--origin={origin}"));
    }
    if let Some(max) = max_size {
        cmd.arg(format!("--max-size={max}"));
    }
    let status = cmd.status().context("run sbx image import")?;
    if !status.success() {
        bail!(
            "sbx image import {name} {} failed ({status})",
            source.display()
        );
    }
    Ok(())
}

/// `sbx image ...`.
pub fn command(cmd: ImageCommand) -> Result<i32> {
    match cmd {
        ImageCommand::Import {
            name,
            source,
            origin,
            max_size,
        } => {
            let max_size = max_size
                .as_deref()
                .map(|s| crate::plan::parse_size(s).with_context(|| format!("--max-size {s}")))
                .transpose()?;
            import_path(&name, &source, origin.as_deref(), max_size).map(|()| 0)
        }
        ImageCommand::Ls { json } => list(json),
        ImageCommand::Rm { names } => remove(&names),
        ImageCommand::Inspect { name } => inspect(&name),
    }
}

fn list(json: bool) -> Result<i32> {
    let store = Store::at_default()?;
    let records = if store.root.join("lock").exists() {
        let _lock = store.lock(false)?;
        store.records()?
    } else {
        Vec::new()
    };
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &records)?;
        writeln!(out)?;
        return Ok(0);
    }
    // The name column as wide as the longest name, so long names keep the columns aligned.
    let width = records
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    writeln!(
        out,
        "{:<width$} {:>6} {:>10}  SOURCE",
        "NAME", "LAYERS", "SIZE"
    )?;
    for r in &records {
        writeln!(
            out,
            "{:<width$} {:>6} {:>10}  {} ({})",
            r.name,
            r.layers.len(),
            progress::size(r.size),
            r.source,
            r.kind
        )?;
    }
    Ok(0)
}

fn inspect(name: &str) -> Result<i32> {
    let image = ImageName::parse(name)?;
    let (record, paths) = {
        let store = Store::at_default()?;
        let found = find(&store, &image.full())?;
        let paths = found
            .layers
            .iter()
            .map(|l| store.layer_path(l))
            .collect::<Result<Vec<_>>>()?;
        (found, paths)
    };
    let mut value = serde_json::to_value(&record)?;
    value["layer_paths"] = serde_json::to_value(paths)?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &value)?;
    writeln!(out)?;
    Ok(0)
}

fn remove(names: &[String]) -> Result<i32> {
    let full: Vec<String> = names
        .iter()
        .map(|n| ImageName::parse(n).map(|i| i.full()))
        .collect::<Result<_>>()?;
    if !userns::single_threaded() {
        bail!("internal error: sbx image rm must run single-threaded");
    }
    // As podman does: remove every image that exists, name each one that does not, and
    // exit 1 when the only trouble was a missing image.
    let (present, missing): (Vec<String>, Vec<String>) = {
        let store = Store::at_default()?;
        let known = if store.root.join("lock").exists() {
            let _lock = store.lock(false)?;
            store.records()?.into_iter().map(|r| r.name).collect()
        } else {
            Vec::new()
        };
        full.into_iter().partition(|name| known.contains(name))
    };
    if !present.is_empty() {
        userns::run(|| {
            let store = Store::create()?;
            let lock = store.lock(true)?;
            let freed = store.remove(&present, &lock)?;
            store.clean_tmp(&lock)?;
            for name in &present {
                println!("removed {name}");
            }
            eprintln!("sbx: {freed} layer(s) no other image uses were deleted");
            Ok(())
        })?;
    }
    for name in &missing {
        eprintln!("sbx: error: no image named {name}; `sbx image ls` lists them");
    }
    Ok(if missing.is_empty() { 0 } else { 1 })
}

fn find(store: &Store, full: &str) -> Result<store::Record> {
    let record = if store.root.join("lock").exists() {
        let _lock = store.lock(false)?;
        store.read_record(full)?
    } else {
        None
    };
    record.with_context(|| {
        format!(
            "no image named {full} in {}; import one with `sbx image import {full} ROOTFS.tar` (`sbx image ls` lists what is there)",
            store.root.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        let n = ImageName::parse("centos:stream9").unwrap();
        assert_eq!((n.name.as_str(), n.tag.as_str()), ("centos", "stream9"));
        assert_eq!(
            ImageName::parse("busybox").unwrap().full(),
            "busybox:latest"
        );
        let n = ImageName::parse("localhost:5000/a/b").unwrap();
        assert_eq!(n.full(), "localhost:5000/a/b:latest");
        assert_eq!(
            ImageName::parse("quay.io/centos/centos:stream9")
                .unwrap()
                .name,
            "quay.io/centos/centos"
        );
        for bad in ["", "../x", "/abs", "a b", "a:", "a/:b", "x/../y"] {
            assert!(ImageName::parse(bad).is_err(), "{bad}");
        }
    }
}
