//! The cgroup v1 manager, as runc's fs driver: the container's directory in every v1
//! hierarchy (cpuset's given its parent's cpus and mems, or no process could join it),
//! the resources' files (`v1_files`) and the device rules written into the hierarchy of
//! their controller, then the process moved into each. On a hybrid host the process also
//! joins a leaf of the controller-less cgroup v2 tree, as runc's does, which `ps` and
//! `kill --all` read. On any failure every directory made is removed again.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{v1_files, v2, Host, Placement, Request};
use crate::oci::resources::controller_of;
use crate::supervisor::cgroup::V1Hierarchy;

/// The directories for `path`, configured and joined.
pub fn join(host: &Host, path: &Path, req: &Request) -> Result<Placement> {
    let mut made = Vec::new();
    let mut dirs = Vec::new();
    match place(host, path, req, &mut made, &mut dirs) {
        Ok(v2) => Ok(Placement {
            v2,
            v1: dirs.into_iter().map(|(_, d)| d).collect(),
        }),
        Err(e) => {
            // The process goes back where it came from, and the directories made (the
            // parents too) are removed.
            for h in &host.v1 {
                let _ = put(&h.own_dir().join("cgroup.procs"), &req.pid.to_string());
            }
            for dir in made.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
            Err(e)
        }
    }
}

fn place<'h>(
    host: &'h Host,
    path: &Path,
    req: &Request,
    made: &mut Vec<PathBuf>,
    dirs: &mut Vec<(&'h V1Hierarchy, PathBuf)>,
) -> Result<Option<PathBuf>> {
    for h in &host.v1 {
        let dir = super::leaf(&h.mount, &h.own_dir(), path);
        // Unprivileged, as runc rootless: a hierarchy with nothing to apply is skipped
        // when the caller may not make its directory.
        let needed = req.files.v1.iter().any(|(f, _)| h.has(controller_of(f)))
            || (h.has("devices") && req.devices.is_some());
        let mut mine = Vec::new();
        if let Err(e) = make_dirs(h, &dir, &mut mine) {
            for made in mine.iter().rev() {
                let _ = std::fs::remove_dir(made);
            }
            if !needed && !req.privileged {
                continue;
            }
            return Err(e).with_context(|| {
                format!(
                    "create the cgroup {} for the {} controller (cgroup v1 is not delegated to \
                 unprivileged users: run sbx-oci as root, or leave linux.resources out)",
                    dir.display(),
                    h.controllers.join(",")
                )
            });
        }
        made.extend(mine);
        dirs.push((h, dir));
    }
    write_files(dirs, &req.files.v1)?;
    let devices = dirs.iter().find(|(h, _)| h.has("devices"));
    if let (Some(rules), Some((_, dir))) = (req.devices, devices) {
        for (file, line) in crate::oci::devices::v1_lines(rules) {
            put(&dir.join(file), &line).with_context(|| {
                format!("write linux.resources.devices rule {line:?} to {file}")
            })?;
        }
    }
    for (_, dir) in dirs.iter() {
        put(&dir.join("cgroup.procs"), &req.pid.to_string())
            .with_context(|| format!("move the container into cgroup {}", dir.display()))?;
    }
    // The device program, where devices is not a v1 controller, and the files of the
    // controllers on cgroup v2 need the v2 leaf.
    let program = req.devices.filter(|_| devices.is_none());
    let required = program.is_some() || !req.files.v2.is_empty();
    match unified(host, path, program, req, made) {
        Ok(None) if required => bail!(
            "linux.resources: the controllers not on cgroup v1 need the cgroup v2 tree, and              none is mounted"
        ),
        Err(e) if required => Err(e),
        Err(_) => Ok(None),
        Ok(leaf) => Ok(leaf),
    }
}

/// The leaf in the cgroup v2 tree of a hybrid host, joined; with the files of the
/// controllers there and the device program when given. Without either, a failure only
/// means no v2 leaf.
fn unified(
    host: &Host,
    path: &Path,
    program: Option<&[crate::oci::devices::Rule]>,
    req: &Request,
    made: &mut Vec<PathBuf>,
) -> Result<Option<PathBuf>> {
    let Some(v2host) = &host.v2 else {
        return Ok(None);
    };
    let leaf = v2::leaf_of(host, path)?;
    let new = v2::make_leaf(&v2host.mount, &leaf)?;
    let joined = v2::write_files(&leaf, &req.files.v2, v2::Grantor::Parents)
        .and_then(|()| program.map_or(Ok(()), |rules| crate::oci::devices::attach(&leaf, rules)))
        .and_then(|()| v2::enter(&leaf, req.pid));
    if let Err(e) = joined {
        for dir in new.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
        return Err(e);
    }
    made.extend(new);
    Ok(Some(leaf))
}

/// `dir` and its missing parents in hierarchy `h`, each recorded in `made`.
fn make_dirs(h: &V1Hierarchy, dir: &Path, made: &mut Vec<PathBuf>) -> Result<()> {
    let relative = dir.strip_prefix(&h.mount).unwrap_or(dir);
    let mut cur = h.mount.clone();
    for part in relative.components() {
        cur.push(part);
        match std::fs::create_dir(&cur) {
            Ok(()) => made.push(cur.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        if h.has("cpuset") {
            inherit_cpuset(&cur)?;
        }
    }
    Ok(())
}

/// A new cpuset cgroup has no cpus and no memory nodes: its parent's, as runc copies them.
pub fn inherit_cpuset(dir: &Path) -> Result<()> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if own.trim().is_empty() {
            let theirs = std::fs::read_to_string(parent.join(file))
                .with_context(|| format!("read {}", parent.join(file).display()))?;
            put(&dir.join(file), theirs.trim())
                .with_context(|| format!("copy {} from its parent", dir.join(file).display()))?;
        }
    }
    Ok(())
}

/// Each file into the directory of its controller's hierarchy. A weight or network label
/// whose controller or file is missing is skipped with a warning, as is a kernel memory
/// limit the kernel no longer takes; a limit is an error, since the container would run
/// without it.
fn write_files(dirs: &[(&V1Hierarchy, PathBuf)], files: &[(String, String)]) -> Result<()> {
    let warn = |what: String| eprintln!("sbx-oci: warning: linux.resources: {what}");
    for (file, value) in files {
        let controller = controller_of(file);
        let Some((_, dir)) = dirs.iter().find(|(h, _)| h.has(controller)) else {
            if v1_files::is_soft(file) {
                warn(format!(
                    "{file} not applied: no cgroup v1 hierarchy has the {controller} controller"
                ));
                continue;
            }
            bail!(
                "linux.resources: {file} = {value} cannot be applied: no cgroup v1 hierarchy has \
                 the {controller} controller (mount it, e.g. `mount -t cgroup -o {controller} \
                 cgroup /sys/fs/cgroup/{controller}`, or leave this limit out)"
            );
        };
        let target = target(dir, file);
        if !target.exists() && (v1_files::is_soft(file) || v1_files::is_deprecated(file)) {
            warn(format!(
                "{file} not applied: this kernel has no {}",
                target.display()
            ));
            continue;
        }
        if !target.exists() {
            bail!(
                "linux.resources: {file} = {value} cannot be applied: this kernel has no {} \
                 (memory.memsw.* needs swap accounting: boot with swapaccount=1), or leave \
                 this limit out",
                target.display()
            );
        }
        match put(&target, value) {
            Err(e) if v1_files::is_deprecated(file) => {
                warn(format!("{file} not applied: the kernel refuses it ({e})"));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("write {value} to {}", target.display()));
            }
            Ok(()) => {}
        }
    }
    Ok(())
}

/// blkio.weight and blkio.weight_device go to their bfq files where the bfq scheduler
/// provides them, as runc writes them.
fn target(dir: &Path, file: &str) -> PathBuf {
    if let Some(rest) = file.strip_prefix("blkio.weight") {
        let bfq = dir.join(format!("blkio.bfq.weight{rest}"));
        if bfq.exists() {
            return bfq;
        }
    }
    dir.join(file)
}

/// One write of an existing cgroup file (never created: cgroupfs makes its own).
fn put(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}
