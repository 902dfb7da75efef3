//! `sbx image import`: a source's layers unpacked into the store and the image recorded.
//! Runs inside the store's user namespace (see `userns`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::budget::Budget;
use super::decompress::{self, Hashing, Tally};
use super::progress::{size, Progress};
use super::source::{self, Blob, Kind, LayerSource, Source};
use super::store::{remove_any, Claim, Record, Store};
use super::unpack::{self, Stats};
use super::ImageName;

/// Imports `source` as `name`, recording `origin` as where it came from; prints progress
/// and a summary on stderr. The layers may unpack to `max_size` bytes at most, and never
/// eat into the store's free-space reserve (see `budget`).
pub fn import(name: &ImageName, source: &Path, origin: &str, max_size: Option<u64>) -> Result<()> {
    let store = Store::create()?;
    {
        let lock = store.lock(true)?;
        store.clean_tmp(&lock)?;
    }
    let budget = Budget::new(&name.full(), &store.tmp_dir(), max_size)?;
    let progress = Progress::new();
    // The temporary files the layers are read from, until they are imported.
    let (src, _staged) = inspect(&store, source, &name.tag, &budget)?;
    progress.line(&format!(
        "sbx: importing {origin} ({}, {} layer{}) as {}",
        src.kind.describe(),
        src.layers.len(),
        if src.layers.len() == 1 { "" } else { "s" },
        name.full()
    ));
    // Until the record exists, this keeps `image rm` and other imports from collecting
    // the layers this import has already put in place or found there.
    let pending = TmpFile(store.pending()?);
    let layers = match import_layers(&store, &pending.0, &src.layers, &progress, &budget) {
        Ok(layers) => layers,
        Err(e) => {
            // Layers this import already put in place belong to no image: they go now
            // rather than at the next import.
            drop(pending);
            let lock = store.lock(true)?;
            store.collect_garbage(&lock)?;
            return Err(e);
        }
    };
    let record = Record {
        name: name.full(),
        source: origin.to_string(),
        kind: src.kind.describe().to_string(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        layers: layers.digests,
        size: layers.sizes.iter().sum(),
        layer_sizes: layers.sizes,
        config: src.config,
    };
    commit(&store, &record)?;
    summary(&progress, &layers.stats, &record, &store);
    Ok(())
}

/// What `source` holds, with the layers of an archive or directory staged in `tmp/` as
/// tars: a compressed docker-archive or OCI tar is decompressed and looked at again, a
/// directory archived. The staged files go when the returned list is dropped.
fn inspect(
    store: &Store,
    source: &Path,
    tag: &str,
    budget: &Budget,
) -> Result<(Source, Vec<TmpFile>)> {
    let mut staged = Vec::new();
    let mut src = source::inspect(source, tag)?;
    if let Some(compressed) = src.layers.first() {
        if src.kind == Kind::CompressedArchive {
            let plain = decompress_to_tmp(store, &compressed.blob, budget)?;
            src = source::inspect(&plain.0.path, tag)?;
            staged.push(plain);
        }
    }
    // A directory is archived first, so it goes through exactly the checks a tarball does.
    if src.kind == Kind::Directory {
        let archive = archive_directory(store, source)?;
        src.layers.push(LayerSource {
            blob: Blob {
                len: fs::metadata(&archive.0.path)?.len(),
                path: archive.0.path.clone(),
                offset: 0,
            },
            blob_digest: None,
            diff_id: None,
        });
        staged.push(archive);
    }
    Ok((src, staged))
}

/// The layers an import put in place or found in the store, bottom first.
struct Layers {
    digests: Vec<String>,
    sizes: Vec<u64>,
    stats: Stats,
}

/// Each layer of `layers` unpacked on the ones below it, or found in the store, and noted
/// in `pending`; a progress line for each.
fn import_layers(
    store: &Store,
    pending: &Claim,
    layers: &[LayerSource],
    progress: &Progress,
    budget: &Budget,
) -> Result<Layers> {
    let mut imported = Layers {
        digests: Vec::new(),
        sizes: Vec::new(),
        stats: Stats::default(),
    };
    let count = layers.len();
    for (i, layer) in layers.iter().enumerate() {
        let label = format!("sbx: layer {}/{count}", i + 1);
        let lowers = imported
            .digests
            .iter()
            .map(|d| store.layer_path(d))
            .collect::<Result<Vec<_>>>()?;
        let done = import_layer(store, pending, layer, &lowers, &label, progress, budget)
            .and_then(|done| {
                let what = format!("layer {}/{count}", i + 1);
                budget.add_existing(done.known, &what).map(|()| done)
            })
            .map_err(|e| budget.tripped().unwrap_or(e))?;
        progress.line(&format!("{label}: {} {}", short(&done.digest), done.note));
        imported.sizes.push(done.size);
        imported.stats.add(&done.stats);
        imported.digests.push(done.digest);
    }
    Ok(imported)
}

/// Writes `record`, replacing an image of the same name; the replaced image's layers that
/// nothing uses any more go now.
fn commit(store: &Store, record: &Record) -> Result<()> {
    let lock = store.lock(true)?;
    let replaced = store.read_record(&record.name)?;
    store.commit_record(record, &lock)?;
    if replaced.is_some() {
        store.collect_garbage(&lock)?;
    }
    Ok(())
}

/// The closing lines: what was skipped or changed, and what was imported.
fn summary(progress: &Progress, stats: &Stats, record: &Record, store: &Store) {
    if stats.devices_skipped > 0 {
        progress.line(&format!(
            "sbx: skipped {} device node{} (they cannot be created without privilege; the sandbox's /dev has its own)",
            stats.devices_skipped,
            if stats.devices_skipped == 1 { "" } else { "s" }
        ));
    }
    if stats.unmapped_owners > 0 {
        progress.line(&format!(
            "sbx: {} entr{} owned by ids outside your subordinate range kept root as owner",
            stats.unmapped_owners,
            if stats.unmapped_owners == 1 {
                "y"
            } else {
                "ies"
            }
        ));
    }
    progress.line(&format!(
        "sbx: imported {} ({} unpacked, {})",
        record.name,
        size(record.size),
        store.root.display()
    ));
}

struct Done {
    digest: String,
    size: u64,
    /// Bytes of a layer that was in the store already (not read, so not yet counted).
    known: u64,
    stats: Stats,
    note: String,
}

fn import_layer(
    store: &Store,
    pending: &Claim,
    layer: &LayerSource,
    lowers: &[PathBuf],
    label: &str,
    progress: &Progress,
    budget: &Budget,
) -> Result<Done> {
    if let Some(diff_id) = &layer.diff_id {
        let lock = store.lock(true)?;
        if store.layer_path(diff_id)?.is_dir() {
            store.note_pending(pending, diff_id, &lock)?;
            let size = store.known_layer_size(diff_id);
            return Ok(Done {
                digest: diff_id.clone(),
                size,
                known: size,
                stats: Stats::default(),
                note: "already in the store".to_string(),
            });
        }
    }
    let tmp = TmpDir(Some(store.claim_tmp("layer", true)?));
    let (blob_tally, diff_tally) = (Tally::default(), Tally::default());
    let input = Hashing::new(layer.blob.open()?, blob_tally.clone());
    let input = progress.reader(input, label.to_string(), layer.blob.len);
    let what = label.trim_start_matches("sbx: ");
    let mut stream = Hashing::new(
        budget.reader(
            decompress::decompressed(input).context("open the layer's stream")?,
            what,
        ),
        diff_tally.clone(),
    );
    let dir = tmp.path()?.to_path_buf();
    let stats = unpack::unpack(&mut stream, &dir, lowers)
        .with_context(|| format!("unpack layer from {}", layer.blob.path.display()))?;
    // Whatever follows the end-of-archive blocks still counts for the digests.
    io::copy(&mut stream, &mut io::sink()).context("read the rest of the layer")?;
    drop(stream);
    if let Some(expected) = &layer.blob_digest {
        check_digest(expected, &blob_tally.digest(), "layer blob")?;
    }
    let digest = diff_tally.digest();
    if let Some(expected) = &layer.diff_id {
        check_digest(expected, &digest, "uncompressed layer")?;
    }
    let lock = store.lock(true)?;
    let new = store.commit_layer(&dir, &digest, &lock)?;
    store.note_pending(pending, &digest, &lock)?;
    tmp.forget();
    Ok(Done {
        digest,
        size: diff_tally.bytes(),
        known: 0,
        stats,
        note: format!(
            "{} unpacked{}",
            size(diff_tally.bytes()),
            if new { "" } else { " (already in the store)" }
        ),
    })
}

fn check_digest(expected: &str, actual: &str, what: &str) -> Result<()> {
    if expected != actual {
        bail!("digest mismatch for the {what}: expected {expected}, the content has {actual}; the source is corrupt or was tampered with, and nothing was imported");
    }
    Ok(())
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

/// The host directory `source` as a tar in the store's `tmp/`, removed when dropped.
fn archive_directory(store: &Store, source: &Path) -> Result<TmpFile> {
    let tmp = TmpFile(store.claim_tmp("dir.tar", false)?);
    let file = fs::File::options()
        .write(true)
        .open(&tmp.0.path)
        .with_context(|| format!("open {}", tmp.0.path.display()))?;
    let mut builder = tar::Builder::new(io::BufWriter::new(file));
    builder.follow_symlinks(false);
    builder
        .append_dir_all(".", source)
        .with_context(|| format!("read the directory {}", source.display()))?;
    builder
        .into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?;
    Ok(tmp)
}

fn decompress_to_tmp(store: &Store, blob: &Blob, budget: &Budget) -> Result<TmpFile> {
    let tmp = TmpFile(store.claim_tmp("archive.tar", false)?);
    let mut file = fs::File::options()
        .write(true)
        .open(&tmp.0.path)
        .with_context(|| format!("open {}", tmp.0.path.display()))?;
    let mut stream = budget.reader(decompress::decompressed(blob.open()?)?, "the archive");
    if let Err(e) = io::copy(&mut stream, &mut file) {
        return Err(budget.tripped().unwrap_or_else(|| {
            anyhow::Error::new(e).context(format!("decompress {}", blob.path.display()))
        }));
    }
    Ok(tmp)
}

/// A layer being unpacked in `tmp/`: removed unless committed.
struct TmpDir(Option<Claim>);

impl TmpDir {
    fn path(&self) -> Result<&Path> {
        self.0
            .as_ref()
            .map(|c| c.path.as_path())
            .context("internal error: the layer was committed already")
    }

    /// Committed: the directory is the store's now.
    fn forget(mut self) {
        self.0 = None;
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if let Some(claim) = &self.0 {
            if let Err(e) = remove_any(&claim.path) {
                eprintln!("sbx: warning: {e:#}");
            }
        }
    }
}

struct TmpFile(Claim);

impl Drop for TmpFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0.path);
    }
}
