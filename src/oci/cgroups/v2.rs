//! The cgroup v2 manager: one leaf, the fs2 files (`oci/resources`) and the device
//! program (`oci/devices`), then the process.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{Host, Placement, Request};
use crate::oci::resources;

/// The leaf for `path`, configured and joined; removed again if that fails.
pub fn join(host: &Host, path: &Path, req: &Request) -> Result<Placement> {
    let mount = host
        .v2
        .as_ref()
        .context("no cgroup2 filesystem is mounted")?;
    let leaf = leaf_of(host, path)?;
    let made = make_leaf(&mount.mount, &leaf)?;
    let joined = write_files(&leaf, &req.files.v2, Grantor::Parents)
        .and_then(|()| match req.devices {
            Some(rules) => crate::oci::devices::attach(&leaf, rules),
            None => Ok(()),
        })
        .and_then(|()| enter(&leaf, req.pid));
    if let Err(e) = joined {
        // Nothing is in it yet: it goes, and the parents made for it (one another
        // container uses stays, as it is not empty).
        for dir in made.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
        return Err(e);
    }
    Ok(Placement {
        v2: Some(leaf),
        v1: Vec::new(),
    })
}

/// The leaf's path: below the mount, or below this process's cgroup when relative.
pub fn leaf_of(host: &Host, path: &Path) -> Result<PathBuf> {
    let v2 = host
        .v2
        .as_ref()
        .context("no cgroup2 filesystem is mounted")?;
    let own = v2.mount.join(v2.own.trim_start_matches('/'));
    Ok(super::leaf(&v2.mount, &own, path))
}

pub fn enter(leaf: &Path, pid: i32) -> Result<()> {
    std::fs::write(leaf.join("cgroup.procs"), pid.to_string())
        .with_context(|| format!("move the container into cgroup {}", leaf.display()))
}

/// The leaf and its missing parents, each parent with every controller it has enabled
/// for its children, as runc does; a controller that cannot be enabled (a parent with
/// processes of its own, or bound to a cgroup v1 hierarchy) is left out here, and
/// `write_files` says what that means. The directories made, the leaf last.
pub fn make_leaf(mount: &Path, leaf: &Path) -> Result<Vec<PathBuf>> {
    let relative = leaf.strip_prefix(mount).unwrap_or(leaf);
    let mut dir = mount.to_path_buf();
    let mut made = Vec::new();
    for part in relative.components() {
        let controllers =
            std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        for controller in controllers.split_whitespace() {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{controller}"));
        }
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => made.push(dir.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                for dir in made.iter().rev() {
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(e).with_context(|| format!("create cgroup {}", dir.display()));
            }
        }
    }
    Ok(made)
}

/// Who gave a leaf its controllers, for what to say about one it lacks.
#[derive(Debug, Clone, Copy)]
pub enum Grantor {
    /// Its parents' `cgroup.subtree_control` (the cgroupfs manager).
    Parents,
    /// systemd's delegation to a scope (`--systemd-cgroup`).
    Systemd,
}

impl Grantor {
    fn lacks(self, controller: &str, leaf: &Path) -> String {
        match self {
            Grantor::Parents => format!(
                "the {controller} controller is not available in cgroup {}",
                leaf.display()
            ),
            Grantor::Systemd => format!(
                "systemd did not delegate the {controller} controller to {}",
                leaf.display()
            ),
        }
    }

    fn fix(self) -> &'static str {
        match self {
            Grantor::Parents => "enable it in the cgroup.subtree_control of its parents",
            Grantor::Systemd => {
                "for a user manager, add it to Delegate= of user@.service, e.g. a drop-in with \
                 Delegate=pids memory cpu io"
            }
        }
    }
}

/// The resources' files. One whose controller the leaf lacks is a weight, a relative
/// share that only matters under contention, and skipped with a warning; or a limit, and
/// an error, since the container would run without it.
pub fn write_files(leaf: &Path, files: &[(String, String)], grantor: Grantor) -> Result<()> {
    let available = std::fs::read_to_string(leaf.join("cgroup.controllers")).unwrap_or_default();
    let available: Vec<&str> = available.split_whitespace().collect();
    for (file, value) in files {
        // Only where the bfq scheduler is loaded; io.weight says the same to the others.
        if file == "io.bfq.weight" && !leaf.join(file).exists() {
            continue;
        }
        let controller = resources::controller_of(file);
        if controller != "cgroup" && !available.contains(&controller) {
            let lacks = grantor.lacks(controller, leaf);
            if resources::is_weight(file) {
                eprintln!("sbx-oci: warning: linux.resources: {file} not applied: {lacks}");
                continue;
            }
            anyhow::bail!(
                "linux.resources: {file} = {value} cannot be applied: {lacks} ({}, or leave \
                 this limit out)",
                grantor.fix()
            );
        }
        std::fs::write(leaf.join(file), value)
            .with_context(|| format!("write {value} to {}", leaf.join(file).display()))?;
    }
    Ok(())
}
