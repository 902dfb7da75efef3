//! config.json to what the container process does: every field is read, checked and turned
//! into plain data here, before any namespace exists. A field sbx-oci cannot honour is an
//! error that names it; nothing is silently left out (docs/oci.md lists each field).

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use caps::Capability;
use nix::sched::CloneFlags;
use oci_spec::runtime::{
    LinuxCapabilities, LinuxNamespaceType, Mount as SpecMount, PosixRlimitType, Process, Spec,
};

use crate::sys::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

/// `MOUNT_ATTR_NOATIME` and friends (linux/mount.h).
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;

/// A bundle's config, checked: what `create` needs, all of it known good.
#[derive(Debug)]
pub struct Container {
    pub spec: Spec,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub root_readonly: bool,
    /// Namespaces made new, in the clone of the container process (the cgroup namespace
    /// is unshared later, once the process is in its cgroup).
    pub new_namespaces: CloneFlags,
    pub new_cgroup_ns: bool,
    /// Namespaces joined by path, in the order they are entered (user first).
    pub joins: Vec<(CloneFlags, PathBuf)>,
    /// A mount namespace of the container's own (new or joined), where its root is built
    /// and pivoted into. Without one, the process chroots into the root as it is, in the
    /// runtime's mount namespace, where nothing is mounted.
    pub own_mount_ns: bool,
    pub mounts: Vec<MountPlan>,
    /// MS_SHARED, MS_SLAVE, MS_PRIVATE or MS_UNBINDABLE (with MS_REC) for the new root.
    pub rootfs_propagation: Option<nix::mount::MsFlags>,
    pub process: ProcessPlan,
    pub uid_mappings: Vec<crate::plan::ids::IdRange>,
    pub gid_mappings: Vec<crate::plan::ids::IdRange>,
    /// The device cgroup program's rules, to attach to the leaf (as root with a cgroup).
    pub device_filter: Option<Vec<super::devices::Rule>>,
}

/// What the container's (or an exec'd) process is, checked.
#[derive(Debug, Clone)]
pub struct ProcessPlan {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub terminal: bool,
    pub console_size: Option<(u16, u16)>,
    pub caps: CapSets,
    pub rlimits: Vec<(nix::sys::resource::Resource, u64, u64)>,
    pub no_new_privileges: bool,
    pub oom_score_adj: Option<i32>,
    /// `linux.personality`: the persona to set before execve (PER_LINUX, PER_LINUX32).
    pub personality: Option<libc::c_ulong>,
}

/// The five capability sets, each as the kernel knows them.
#[derive(Debug, Clone, Default)]
pub struct CapSets {
    pub bounding: HashSet<Capability>,
    pub effective: HashSet<Capability>,
    pub permitted: HashSet<Capability>,
    pub inheritable: HashSet<Capability>,
    pub ambient: HashSet<Capability>,
}

/// One entry of `mounts`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    pub destination: PathBuf,
    pub kind: MountKind,
    /// MOUNT_ATTR_* set on the new mount.
    pub attrs: u64,
    /// MS_SHARED / MS_SLAVE / MS_PRIVATE / MS_UNBINDABLE, and MS_REC for the r- forms.
    pub propagation: Option<nix::mount::MsFlags>,
    /// Filesystem parameters (`mode=755`, `newinstance`), for a new filesystem.
    pub data: Vec<(String, Option<String>)>,
    /// `tmpcopyup`: a tmpfs starts with a copy of the directory it covers.
    pub copy_up: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    Bind { source: PathBuf, recursive: bool },
    Fs { fstype: String, source: String },
}

/// Reads `bundle/config.json` and checks it.
pub fn load(bundle: &Path, host: &super::cgroups::Host) -> Result<Container> {
    let bundle = std::fs::canonicalize(bundle)
        .with_context(|| format!("bundle {}: cannot open it", bundle.display()))?;
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let mut value: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    if let Some(process) = value.get_mut("process") {
        drop_unknown_capabilities(process);
    }
    let spec: Spec = serde_path_to_error::deserialize(value)
        .with_context(|| format!("{} is not a valid OCI runtime config", path.display()))?;
    check(spec, &bundle, host)
}

/// Takes out of a runtime-spec `process` the capability names this build does not know
/// (`CAP_TEST`, or one newer than it), with a warning naming them, as runc ignores them
/// ("ignoring unknown or unavailable capabilities") and runs the container. Known
/// capabilities the running kernel lacks are left out later, in `process::prepare`.
/// Also for `exec --process`.
pub fn drop_unknown_capabilities(process: &mut serde_json::Value) {
    let Some(sets) = process
        .get_mut("capabilities")
        .and_then(|c| c.as_object_mut())
    else {
        return;
    };
    let mut unknown = Vec::new();
    for (set, names) in sets.iter_mut() {
        let Some(names) = names.as_array_mut() else {
            continue;
        };
        names.retain(|name| {
            let known =
                serde_json::from_value::<oci_spec::runtime::Capability>(name.clone()).is_ok();
            if !known {
                unknown.push(format!("{} ({set})", name.as_str().unwrap_or("?")));
            }
            known
        });
    }
    if !unknown.is_empty() {
        eprintln!(
            "sbx-oci: warning: process.capabilities: ignoring unknown capabilities: {}",
            unknown.join(", ")
        );
    }
}

/// The checks and conversions, with no side effects but resolving the root's path.
pub fn check(spec: Spec, bundle: &Path, host: &super::cgroups::Host) -> Result<Container> {
    let root = spec
        .root()
        .as_ref()
        .context("config.json has no \"root\": name the container's root filesystem")?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let rootfs = std::fs::canonicalize(&rootfs)
        .with_context(|| format!("root.path {}: cannot open it", rootfs.display()))?;
    if !rootfs.is_dir() {
        bail!("root.path {} is not a directory", rootfs.display());
    }
    let process = spec
        .process()
        .as_ref()
        .context("config.json has no \"process\": the container needs something to run")?;
    let mut process = process_plan(process)?;
    if process.args.is_empty() {
        bail!("process.args is empty: name the program the container runs");
    }
    let (new_namespaces, new_cgroup_ns, joins) = namespaces(&spec)?;
    refuse_unsupported(&spec)?;
    let own_mount_ns = new_namespaces.contains(CloneFlags::CLONE_NEWNS)
        || joins.iter().any(|(f, _)| *f == CloneFlags::CLONE_NEWNS);
    let mounts = mounts(&spec, bundle, own_mount_ns)?;
    let linux = spec.linux().as_ref();
    let rootfs_propagation = match linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        None | Some("") => None,
        Some(p) => Some(
            propagation(p)
                .with_context(|| format!("linux.rootfsPropagation {p:?} is not a propagation"))?,
        ),
    };
    let map = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        m.iter()
            .flatten()
            .map(|m| crate::plan::ids::IdRange {
                inside: m.container_id(),
                outside: m.host_id(),
                count: m.size(),
            })
            .collect::<Vec<_>>()
    };
    let uid_mappings = linux.map(|l| map(l.uid_mappings())).unwrap_or_default();
    let gid_mappings = linux.map(|l| map(l.gid_mappings())).unwrap_or_default();
    let new_user = new_namespaces.contains(CloneFlags::CLONE_NEWUSER);
    if new_user && (uid_mappings.is_empty() || gid_mappings.is_empty()) {
        bail!("a new user namespace needs linux.uidMappings and linux.gidMappings");
    }
    if !new_user && (!uid_mappings.is_empty() || !gid_mappings.is_empty()) {
        bail!("linux.uidMappings and gidMappings need a new user namespace in linux.namespaces");
    }
    // runc's rule: the container's own uts namespace, new or joined by path.
    if (spec.hostname().as_deref().is_some_and(|h| !h.is_empty())
        || spec.domainname().as_deref().is_some_and(|h| !h.is_empty()))
        && !new_namespaces.contains(CloneFlags::CLONE_NEWUTS)
        && !joins.iter().any(|(f, _)| *f == CloneFlags::CLONE_NEWUTS)
    {
        bail!("hostname and domainname need a uts namespace of the container's own in linux.namespaces");
    }
    process.personality = personality(&spec)?;
    let device_filter = enforce_device_rules(&spec, &mut process.caps, host);
    Ok(Container {
        device_filter,
        root_readonly: root.readonly().unwrap_or(false),
        bundle: bundle.to_path_buf(),
        rootfs,
        new_namespaces,
        new_cgroup_ns,
        joins,
        own_mount_ns,
        mounts,
        rootfs_propagation,
        process,
        uid_mappings,
        gid_mappings,
        spec,
    })
}

/// `linux.personality` as personality(2) takes it. The runtime spec defines no flags, so
/// any is refused (runc warns and drops them).
pub fn personality(spec: &Spec) -> Result<Option<libc::c_ulong>> {
    use oci_spec::runtime::LinuxPersonalityDomain as D;
    let Some(p) = spec.linux().as_ref().and_then(|l| l.personality().as_ref()) else {
        return Ok(None);
    };
    if let Some(flags) = p.flags().as_ref().filter(|f| !f.is_empty()) {
        bail!(
            "linux.personality.flags {flags:?}: the runtime spec defines no personality flags; \
             remove them"
        );
    }
    Ok(Some(match p.domain() {
        D::PerLinux => 0,
        D::PerLinux32 => 0x0008,
    }))
}

/// The config's mounts, checked; none without a mount namespace to make them in.
fn mounts(spec: &Spec, bundle: &Path, own_mount_ns: bool) -> Result<Vec<MountPlan>> {
    let mut mounts = Vec::new();
    for m in spec.mounts().iter().flatten() {
        mounts.push(mount_plan(m, bundle)?);
    }
    if !own_mount_ns {
        check_without_mount_ns(spec, &mounts)?;
        mounts.clear();
    }
    Ok(mounts)
}

fn ns_flag(t: LinuxNamespaceType) -> Result<CloneFlags> {
    Ok(match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => {
            bail!("linux.namespaces: the time namespace is not supported by sbx-oci")
        }
    })
}

type Namespaces = (CloneFlags, bool, Vec<(CloneFlags, PathBuf)>);

fn namespaces(spec: &Spec) -> Result<Namespaces> {
    let mut new = CloneFlags::empty();
    let mut seen = CloneFlags::empty();
    let mut joins = Vec::new();
    let list = spec.linux().as_ref().and_then(|l| l.namespaces().clone());
    for ns in list.iter().flatten() {
        let flag = ns_flag(ns.typ())?;
        if seen.contains(flag) {
            bail!("linux.namespaces lists {:?} twice", ns.typ());
        }
        seen |= flag;
        match ns.path() {
            Some(path) if !path.as_os_str().is_empty() => {
                if !path.is_absolute() {
                    bail!(
                        "linux.namespaces: the path of the {:?} namespace must be absolute",
                        ns.typ()
                    );
                }
                joins.push((flag, path.clone()));
            }
            _ => new |= flag,
        }
    }
    // The user namespace first: the others are entered with its capabilities. The mount
    // namespace last, as it changes what the paths of the others mean.
    joins.sort_by_key(|(flag, _)| {
        if *flag == CloneFlags::CLONE_NEWUSER {
            0
        } else if *flag == CloneFlags::CLONE_NEWNS {
            2
        } else {
            1
        }
    });
    let cgroup = new.contains(CloneFlags::CLONE_NEWCGROUP);
    new.remove(CloneFlags::CLONE_NEWCGROUP);
    Ok((new, cgroup, joins))
}

/// A container in the runtime's mount namespace: its process chroots into the root as it
/// is. runc mounts the config's mounts there all the same, on the host's mount table,
/// and leaves them behind after `delete`; sbx-oci mounts nothing outside a mount namespace
/// of the container's own, so the mounts are skipped with a warning, and what only a
/// mount could enforce (masked and read-only paths, as runc refuses them too; a read-only
/// root, which runc silently leaves writable) or make (device nodes, in the image's own
/// directory on the host) is refused.
fn check_without_mount_ns(spec: &Spec, mounts: &[MountPlan]) -> Result<()> {
    let linux = spec.linux().as_ref();
    let set = |v: Option<&Vec<String>>| v.is_some_and(|v| !v.is_empty());
    let mut refused = Vec::new();
    if set(linux.and_then(|l| l.masked_paths().as_ref())) {
        refused.push("linux.maskedPaths");
    }
    if set(linux.and_then(|l| l.readonly_paths().as_ref())) {
        refused.push("linux.readonlyPaths");
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        refused.push("root.readonly");
    }
    if linux
        .and_then(|l| l.devices().as_ref())
        .is_some_and(|d| !d.is_empty())
    {
        refused.push("linux.devices");
    }
    if linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .is_some_and(|p| !p.is_empty())
    {
        refused.push("linux.rootfsPropagation");
    }
    if !refused.is_empty() {
        bail!(
            "config.json sets {} but linux.namespaces has no mount namespace, without which \
             sbx-oci cannot apply it; add {{\"type\": \"mount\"}} to linux.namespaces",
            refused.join(", ")
        );
    }
    if !mounts.is_empty() {
        eprintln!(
            "sbx-oci: warning: linux.namespaces has no mount namespace: the container runs \
             in the root as it is (chroot), without the config's mounts ({}), which would \
             change the host's mount table",
            mounts
                .iter()
                .map(|m| m.destination.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// How `linux.resources.devices` holds (docs/oci.md, Resources): by the user namespace,
/// by the device cgroup (as root with a cgroup: v1 rules or a v2 program; the rules are returned),
/// or, outside a user namespace without one, by dropping CAP_MKNOD from every set, so that
/// no device node beyond those the runtime made can appear. Also for `exec`.
pub fn enforce_device_rules(
    spec: &Spec,
    caps: &mut CapSets,
    host: &super::cgroups::Host,
) -> Option<Vec<super::devices::Rule>> {
    // Without linux.cgroupsPath, create makes a cgroup named after the container for it.
    let can_filter = nix::unistd::geteuid().is_root()
        && !super::state::in_user_namespace()
        && host.can_filter_devices();
    device_rules(spec, caps, can_filter)
}

/// `enforce_device_rules` once it is known whether a program can be attached.
fn device_rules(
    spec: &Spec,
    caps: &mut CapSets,
    can_filter: bool,
) -> Option<Vec<super::devices::Rule>> {
    use super::resources::{device_access, DeviceAccess};
    let linux = spec.linux().as_ref();
    let user_namespace = linux
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|list| list.iter().any(|n| n.typ() == LinuxNamespaceType::User));
    let rules = linux
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    let access = device_access(&rules, user_namespace, can_filter);
    if access == DeviceAccess::Filter {
        let devices = linux.and_then(|l| l.devices().clone()).unwrap_or_default();
        return Some(super::devices::rules(&rules, &devices));
    }
    if access == DeviceAccess::DropMknod {
        for set in [
            &mut caps.bounding,
            &mut caps.effective,
            &mut caps.permitted,
            &mut caps.inheritable,
            &mut caps.ambient,
        ] {
            set.remove(&Capability::CAP_MKNOD);
        }
    }
    None
}

/// Fields sbx-oci does not implement: each is an error naming it, unless empty.
fn refuse_unsupported(spec: &Spec) -> Result<()> {
    let Some(linux) = spec.linux() else {
        bail!("config.json has no \"linux\" section; sbx-oci runs Linux containers");
    };
    let mut refused = Vec::new();
    if linux
        .mount_label()
        .as_deref()
        .is_some_and(|l| !l.is_empty())
    {
        refused.push("linux.mountLabel (SELinux)");
    }
    if linux.intel_rdt().is_some() {
        refused.push("linux.intelRdt");
    }
    if linux.memory_policy().is_some() {
        refused.push("linux.memoryPolicy");
    }
    if linux.time_offsets().is_some() {
        refused.push("linux.timeOffsets");
    }
    if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
        refused.push("linux.netDevices");
    }
    if let Some(p) = spec.process() {
        if p.io_priority().is_some() {
            refused.push("process.ioPriority");
        }
        if p.scheduler().is_some() {
            refused.push("process.scheduler");
        }
        if p.exec_cpu_affinity().is_some() {
            refused.push("process.execCPUAffinity");
        }
    }
    if !refused.is_empty() {
        bail!(
            "config.json sets {}, which sbx-oci does not support; remove it from the config",
            refused.join(", ")
        );
    }
    Ok(())
}

/// `process`, checked; also used for `exec --process`.
pub fn process_plan(p: &Process) -> Result<ProcessPlan> {
    for (what, label) in [
        ("process.apparmorProfile", p.apparmor_profile()),
        ("process.selinuxLabel", p.selinux_label()),
    ] {
        if label.as_deref().is_some_and(|l| !l.is_empty()) {
            bail!(
                "{what} is set, but sbx-oci does not apply AppArmor or SELinux labels; \
                 remove it (podman: --security-opt label=disable, apparmor=unconfined)"
            );
        }
    }
    let user = p.user();
    let mut rlimits = Vec::new();
    for r in p.rlimits().iter().flatten() {
        rlimits.push((rlimit(r.typ())?, r.soft(), r.hard()));
    }
    if !p.cwd().is_absolute() {
        bail!("process.cwd {} must be absolute", p.cwd().display());
    }
    let console_size = p
        .console_size()
        .map(|b| (b.height().min(0xffff) as u16, b.width().min(0xffff) as u16));
    Ok(ProcessPlan {
        args: p.args().clone().unwrap_or_default(),
        env: p.env().clone().unwrap_or_default(),
        cwd: p.cwd().clone(),
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        terminal: p.terminal().unwrap_or(false),
        console_size,
        caps: cap_sets(p.capabilities().as_ref())?,
        rlimits,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        oom_score_adj: p.oom_score_adj(),
        personality: None,
    })
}

fn cap_sets(caps: Option<&LinuxCapabilities>) -> Result<CapSets> {
    let Some(caps) = caps else {
        return Ok(CapSets::default());
    };
    let convert = |set: &Option<oci_spec::runtime::Capabilities>| -> Result<HashSet<Capability>> {
        let mut out = HashSet::new();
        for cap in set.iter().flatten() {
            // The spec's names are the kernel's ("CAP_CHOWN").
            let name = serde_json::to_value(cap)?;
            let name = name.as_str().unwrap_or_default();
            match name.parse::<Capability>() {
                Ok(c) => {
                    out.insert(c);
                }
                Err(_) => bail!("unknown capability {name} in process.capabilities"),
            }
        }
        Ok(out)
    };
    Ok(CapSets {
        bounding: convert(caps.bounding())?,
        effective: convert(caps.effective())?,
        permitted: convert(caps.permitted())?,
        inheritable: convert(caps.inheritable())?,
        ambient: convert(caps.ambient())?,
    })
}

fn rlimit(t: PosixRlimitType) -> Result<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Ok(match t {
        PosixRlimitType::RlimitCpu => R::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => R::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => R::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => R::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => R::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => R::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => R::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => R::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => R::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => R::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => R::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => R::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => R::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => R::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => R::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => R::RLIMIT_RTTIME,
    })
}

/// "private", "rslave", ...: the propagation flags, None for anything else.
pub fn propagation(option: &str) -> Option<nix::mount::MsFlags> {
    use nix::mount::MsFlags as F;
    let (recursive, base) = match option.strip_prefix('r') {
        Some(rest) if ["private", "shared", "slave", "unbindable"].contains(&rest) => (true, rest),
        _ => (false, option),
    };
    let flag = match base {
        "private" => F::MS_PRIVATE,
        "shared" => F::MS_SHARED,
        "slave" => F::MS_SLAVE,
        "unbindable" => F::MS_UNBINDABLE,
        _ => return None,
    };
    Some(if recursive { flag | F::MS_REC } else { flag })
}

/// One `mounts` entry: its options sorted into mount attributes, propagation and the
/// filesystem's own parameters.
pub fn mount_plan(m: &SpecMount, bundle: &Path) -> Result<MountPlan> {
    let destination = m.destination().clone();
    if !destination.is_absolute()
        || destination
            .components()
            .any(|c| matches!(c, Component::ParentDir))
    {
        bail!(
            "mount destination {} must be an absolute path without \"..\"",
            destination.display()
        );
    }
    let typ = m.typ().clone().unwrap_or_default();
    let Options {
        attrs,
        propagation: propagation_flags,
        data,
        bind,
        recursive,
        copy_up,
    } = sort_options(
        m.options().as_deref().unwrap_or_default(),
        typ == "bind",
        &destination,
    )?;
    let kind = if bind {
        if !data.is_empty() {
            // runc passes them to mount(2), which ignores them for a bind mount.
            eprintln!(
                "sbx-oci: warning: mount {}: filesystem options ignored for a bind mount ({})",
                destination.display(),
                data.iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let source = m
            .source()
            .as_ref()
            .with_context(|| format!("bind mount {} has no source", destination.display()))?;
        let source = if source.is_absolute() {
            source.clone()
        } else {
            bundle.join(source)
        };
        MountKind::Bind { source, recursive }
    } else {
        let fstype = match typ.as_str() {
            "" | "none" => bail!(
                "mount {} has no type: name the filesystem, or use a bind option",
                destination.display()
            ),
            "proc" | "sysfs" | "tmpfs" | "devpts" | "mqueue" | "cgroup" | "cgroup2" => typ,
            other => bail!(
                "mount {}: filesystem type {other:?} is not supported by sbx-oci (proc, \
                 sysfs, tmpfs, devpts, mqueue, cgroup, cgroup2 and bind are)",
                destination.display()
            ),
        };
        let source = m
            .source()
            .as_ref()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| fstype.clone());
        MountKind::Fs { fstype, source }
    };
    Ok(MountPlan {
        destination,
        attrs,
        propagation: propagation_flags,
        data,
        // runc copies up into a tmpfs only; the option means nothing to other types.
        copy_up: copy_up && matches!(&kind, MountKind::Fs { fstype, .. } if fstype == "tmpfs"),
        kind,
    })
}

/// A mount's options, sorted.
struct Options {
    attrs: u64,
    propagation: Option<nix::mount::MsFlags>,
    data: Vec<(String, Option<String>)>,
    bind: bool,
    recursive: bool,
    copy_up: bool,
}

fn sort_options(options: &[String], bind: bool, destination: &Path) -> Result<Options> {
    let mut attrs = 0u64;
    let mut propagation_flags = None;
    let mut data = Vec::new();
    let mut bind = bind;
    let mut recursive = false;
    let mut copy_up = false;
    for option in options {
        match option.as_str() {
            "bind" => bind = true,
            "rbind" => (bind, recursive) = (true, true),
            "ro" => attrs |= MOUNT_ATTR_RDONLY,
            "nosuid" => attrs |= MOUNT_ATTR_NOSUID,
            "nodev" => attrs |= MOUNT_ATTR_NODEV,
            "noexec" => attrs |= MOUNT_ATTR_NOEXEC,
            "noatime" => attrs |= MOUNT_ATTR_NOATIME,
            "strictatime" => attrs |= MOUNT_ATTR_STRICTATIME,
            "nodiratime" => attrs |= MOUNT_ATTR_NODIRATIME,
            // The defaults, or what the kernel does anyway.
            "rw" | "suid" | "dev" | "exec" | "relatime" | "atime" | "diratime" | "async"
            | "norelatime" | "nostrictatime" => {}
            "tmpcopyup" => copy_up = true,
            "notmpcopyup" => copy_up = false,
            "idmap" | "ridmap" | "remount" | "sync" | "dirsync" | "mand" | "nomand" => bail!(
                "mount {}: option {option:?} is not supported by sbx-oci",
                destination.display()
            ),
            other => match propagation(other) {
                Some(p) => propagation_flags = Some(p),
                None => {
                    let (k, v) = match other.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (other.to_string(), None),
                    };
                    data.push((k, v));
                }
            },
        }
    }
    Ok(Options {
        attrs,
        propagation: propagation_flags,
        data,
        bind,
        recursive,
        copy_up,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    fn mount(typ: &str, src: &str, dst: &str, options: &[&str]) -> SpecMount {
        MountBuilder::default()
            .typ(typ)
            .source(src)
            .destination(dst)
            .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap()
    }

    #[test]
    fn bind_options_become_attributes_and_propagation() {
        let m = mount(
            "bind",
            "data",
            "/data",
            &["rbind", "ro", "nosuid", "rprivate"],
        );
        let plan = mount_plan(&m, Path::new("/bundle")).unwrap();
        assert_eq!(
            plan.kind,
            MountKind::Bind {
                source: "/bundle/data".into(),
                recursive: true
            }
        );
        assert_eq!(plan.attrs, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID);
        assert_eq!(
            plan.propagation,
            Some(nix::mount::MsFlags::MS_PRIVATE | nix::mount::MsFlags::MS_REC)
        );
    }

    #[test]
    fn filesystem_options_are_its_parameters() {
        let m = mount(
            "devpts",
            "devpts",
            "/dev/pts",
            &["nosuid", "newinstance", "ptmxmode=0666", "gid=5"],
        );
        let plan = mount_plan(&m, Path::new("/b")).unwrap();
        assert_eq!(plan.attrs, MOUNT_ATTR_NOSUID);
        assert_eq!(
            plan.data,
            [
                ("newinstance".to_string(), None),
                ("ptmxmode".to_string(), Some("0666".to_string())),
                ("gid".to_string(), Some("5".to_string())),
            ]
        );
    }

    #[test]
    fn unsupported_mounts_are_refused_by_name() {
        let e = mount_plan(&mount("nfs", "x", "/x", &[]), Path::new("/b")).unwrap_err();
        assert!(e.to_string().contains("\"nfs\""), "{e}");
        let e = mount_plan(&mount("bind", "/x", "/x", &["idmap"]), Path::new("/b")).unwrap_err();
        assert!(e.to_string().contains("idmap"), "{e}");
        let e = mount_plan(&mount("tmpfs", "t", "../x", &[]), Path::new("/b")).unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
    }

    #[test]
    fn propagation_names() {
        use nix::mount::MsFlags as F;
        assert_eq!(propagation("rshared"), Some(F::MS_SHARED | F::MS_REC));
        assert_eq!(propagation("slave"), Some(F::MS_SLAVE));
        assert_eq!(propagation("ro"), None);
    }

    fn spec_json(extra: serde_json::Value) -> Spec {
        let mut spec = serde_json::to_value(Spec::default()).unwrap();
        spec["root"]["path"] = "/".into();
        for (k, v) in extra.as_object().unwrap() {
            spec["linux"][k] = v.clone();
        }
        serde_json::from_value(spec).unwrap()
    }

    #[test]
    fn joins_put_the_user_namespace_first_and_the_mount_namespace_last() {
        let spec = spec_json(serde_json::json!({"namespaces": [
            {"type": "mount", "path": "/proc/1/ns/mnt"},
            {"type": "network", "path": "/run/netns/x"},
            {"type": "user", "path": "/proc/1/ns/user"},
            {"type": "pid"},
        ]}));
        let (new, _, joins) = namespaces(&spec).unwrap();
        assert_eq!(new, CloneFlags::CLONE_NEWPID);
        let order: Vec<CloneFlags> = joins.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            order,
            [
                CloneFlags::CLONE_NEWUSER,
                CloneFlags::CLONE_NEWNET,
                CloneFlags::CLONE_NEWNS
            ]
        );
    }

    #[test]
    fn labels_and_unsupported_fields_are_refused() {
        let mut spec = spec_json(serde_json::json!({}));
        let mut p = spec.process().clone().unwrap();
        p.set_selinux_label(Some("system_u:system_r:container_t".into()));
        spec.set_process(Some(p));
        let e = check(
            spec,
            Path::new("/"),
            &super::super::cgroups::Host::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("process.selinuxLabel"), "{e}");
        let spec = spec_json(serde_json::json!({"intelRdt": {"closID": "x"}}));
        let e = check(
            spec,
            Path::new("/"),
            &super::super::cgroups::Host::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("linux.intelRdt"), "{e}");
        // Empty labels are no labels.
        let mut spec = spec_json(serde_json::json!({}));
        let mut p = spec.process().clone().unwrap();
        p.set_apparmor_profile(Some(String::new()));
        spec.set_process(Some(p));
        check(
            spec,
            Path::new("/"),
            &super::super::cgroups::Host::default(),
        )
        .unwrap();
    }

    #[test]
    fn mappings_need_a_user_namespace() {
        let spec = spec_json(serde_json::json!({
            "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
            "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
        }));
        let e = check(
            spec,
            Path::new("/"),
            &super::super::cgroups::Host::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("user namespace"), "{e}");
    }

    #[test]
    fn device_rules_hold_by_program_by_user_namespace_or_by_dropping_mknod() {
        // (program attachable, config) -> the caps left, and whether a program is made.
        let apply = |can_filter: bool, extra| {
            let spec = spec_json(extra);
            let mut caps = CapSets::default();
            for set in [&mut caps.bounding, &mut caps.effective, &mut caps.permitted] {
                set.insert(Capability::CAP_MKNOD);
            }
            let filter = device_rules(&spec, &mut caps, can_filter);
            (
                caps.effective.contains(&Capability::CAP_MKNOD),
                filter.is_some(),
            )
        };
        let deny = serde_json::json!({"allow": false, "access": "rwm"});
        let dev_null = serde_json::json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"});
        let engine = serde_json::json!({"resources": {"devices": [deny, dev_null]}});
        assert_eq!(
            apply(true, engine.clone()),
            (true, true),
            "a program, as runc"
        );
        assert_eq!(apply(false, engine), (false, false), "no program: no mknod");
        let all = serde_json::json!({"allow": true, "access": "rwm"});
        let privileged = serde_json::json!({"resources": {"devices": [deny, all]}});
        assert_eq!(
            apply(false, privileged),
            (true, false),
            "allow-all needs nothing"
        );
        let user = serde_json::json!({
            "namespaces": [{"type": "user"}, {"type": "mount"}],
            "resources": {"devices": [deny]},
        });
        assert_eq!(apply(false, user), (true, false), "by construction");
    }

    #[test]
    fn unknown_capability_names_are_dropped_and_known_ones_kept() {
        let mut process = serde_json::json!({"capabilities": {
            "bounding": ["CAP_KILL", "CAP_TEST"], "effective": ["CAP_NOPE"]}});
        drop_unknown_capabilities(&mut process);
        assert_eq!(
            process["capabilities"]["bounding"],
            serde_json::json!(["CAP_KILL"])
        );
        assert_eq!(process["capabilities"]["effective"], serde_json::json!([]));
    }

    #[test]
    fn personality_domains_and_no_flags() {
        let spec = spec_json(serde_json::json!({"personality": {"domain": "LINUX32"}}));
        assert_eq!(personality(&spec).unwrap(), Some(0x0008));
        let spec = spec_json(serde_json::json!({"personality": {"domain": "LINUX"}}));
        assert_eq!(personality(&spec).unwrap(), Some(0));
        let spec =
            spec_json(serde_json::json!({"personality": {"domain": "LINUX", "flags": ["X"]}}));
        let e = personality(&spec).unwrap_err();
        assert!(e.to_string().contains("linux.personality.flags"), "{e}");
    }

    #[test]
    fn without_a_mount_namespace_mounts_are_dropped_and_masks_refused() {
        let spec = spec_json(serde_json::json!({"namespaces": [{"type": "pid"}]}));
        let mut value = serde_json::to_value(&spec).unwrap();
        value["mounts"] = serde_json::json!([{"destination": "/proc", "type": "proc"}]);
        value["linux"]["maskedPaths"] = serde_json::json!([]);
        value["linux"]["readonlyPaths"] = serde_json::json!([]);
        value["root"]["readonly"] = serde_json::json!(false);
        value["hostname"] = serde_json::json!("");
        let spec: Spec = serde_json::from_value(value).unwrap();
        let c = check(
            spec.clone(),
            Path::new("/"),
            &super::super::cgroups::Host::default(),
        )
        .unwrap();
        assert!(!c.own_mount_ns);
        assert!(
            c.mounts.is_empty(),
            "nothing to mount outside a mount namespace"
        );
        let mut value = serde_json::to_value(&spec).unwrap();
        value["linux"]["maskedPaths"] = serde_json::json!(["/proc/kcore"]);
        let e = check(
            serde_json::from_value(value).unwrap(),
            Path::new("/"),
            &super::super::cgroups::Host::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("linux.maskedPaths"), "{e}");
    }

    #[test]
    fn tmpcopyup_applies_to_a_tmpfs_only() {
        let plan = mount_plan(&mount("tmpfs", "t", "/t", &["tmpcopyup"]), Path::new("/b")).unwrap();
        assert!(plan.copy_up);
        assert!(plan.data.is_empty(), "not a filesystem parameter");
        let plan = mount_plan(&mount("bind", "/x", "/x", &["tmpcopyup"]), Path::new("/b")).unwrap();
        assert!(!plan.copy_up);
    }

    #[test]
    fn capability_names_are_the_kernels() {
        let spec = spec_json(serde_json::json!({}));
        let c = check(
            spec,
            Path::new("/"),
            &super::super::cgroups::Host::default(),
        )
        .unwrap();
        assert!(c.process.caps.bounding.contains(&Capability::CAP_KILL));
        assert!(!c.process.caps.bounding.contains(&Capability::CAP_SYS_ADMIN));
    }
}
