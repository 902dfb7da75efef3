//! An image root at run time: the locks that keep its layers in the store while a sandbox
//! runs on them, the kept upper directory `prepare` creates, and `-v`'s description. The
//! planning (lookup, ids, overlay choice) is `planner::image`.

use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::Flock;

use super::store::Store;
pub use crate::plan::rootfs::{OverlayKind, UpperDir};

/// Shared locks on the layers of a running sandbox's image (see `store::hold_layer`): while
/// they are held, `sbx image rm` (or an import replacing the image) leaves the layers where
/// they are.
#[derive(Debug, Default)]
pub struct LayerLocks {
    _locks: Vec<Flock<File>>,
}

/// Takes the locks on `layers` (of image `name`, in the store at `store`), under the
/// store's own lock so that no removal runs between the check and the lock.
pub fn hold_layers(store: &Path, name: &str, layers: &[PathBuf]) -> Result<LayerLocks> {
    let store = Store {
        root: store.to_path_buf(),
    };
    let _lock = store.lock(false)?;
    let mut locks = Vec::new();
    for layer in layers {
        let lock = super::store::hold_layer(layer).with_context(|| {
            format!("image {name} changed in the store while sbx was starting; run again")
        })?;
        locks.push(lock);
    }
    Ok(LayerLocks { _locks: locks })
}

/// A file of an image, read beneath its layers (`lookup::read`): for the planner, which
/// looks up the image's users.
pub fn read_file(layers: &[PathBuf], path: &str) -> Result<Option<String>> {
    super::lookup::read(layers, path)
}

/// Creates the kept upper directory `dir` (mode 0700, with its missing parents).
pub fn create_upper(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create the upper directory {}", dir.display()))
}

/// For `sbx run -v`.
pub fn describe_overlay(overlay: &OverlayKind) -> String {
    match overlay {
        OverlayKind::Kernel => "kernel overlayfs".to_string(),
        OverlayKind::Fuse(path) => format!("fuse-overlayfs ({})", path.display()),
        OverlayKind::KernelElseFuse(Some(path)) => {
            format!("kernel overlayfs, else fuse-overlayfs ({})", path.display())
        }
        OverlayKind::KernelElseFuse(None) => {
            "kernel overlayfs (no fuse-overlayfs to fall back on)".to_string()
        }
    }
}
