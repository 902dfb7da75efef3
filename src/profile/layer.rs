//! `extends`: layering a profile on top of another.
//!
//! Scalars override, maps merge, lists append unless the child names them in `replace`.
//! `name`, `description` and `commands` belong to each file alone: a profile that extends
//! `build` does not also claim `cargo`.

use anyhow::{bail, Result};

use super::load::{self, Loaded, Origin};
use super::{
    CapsSpec, EnvSpec, LimitsSpec, ListField, NetworkOptions, NetworkSpec, Profile, SeccompSpec,
    SecuritySpec, UserSpec,
};

/// Loads a profile by name or path and applies its whole `extends` chain.
pub fn resolve(spec: &str) -> Result<Loaded> {
    let loaded = load::load(spec)?;
    resolve_loaded(loaded)
}

/// Applies the `extends` chain of an already loaded profile.
pub fn resolve_loaded(loaded: Loaded) -> Result<Loaded> {
    let mut chain = vec![loaded.clone()];
    while let Some(parent_name) = chain.last().and_then(|l| l.profile.extends.clone()) {
        let child = chain.last().map(|l| (l.name.clone(), l.origin.clone()));
        let Some((child_name, child_origin)) = child else {
            break;
        };
        let parent = if parent_name == child_name {
            // `default` extending `default`: the next one down (user -> system -> built-in).
            load::load_below(&parent_name, &child_origin)?
        } else {
            load::load(&parent_name).map_err(|e| {
                anyhow::anyhow!(
                    "{} (in the extends chain {})",
                    e,
                    describe(&chain, &parent_name)
                )
            })?
        };
        if chain
            .iter()
            .any(|l| l.name == parent.name && l.origin == parent.origin)
        {
            bail!("profile extends cycle: {}", describe(&chain, &parent_name));
        }
        chain.push(parent);
    }
    let mut iter = chain.into_iter().rev();
    let Some(mut merged) = iter.next().map(|l| l.profile) else {
        bail!("empty profile chain");
    };
    for child in iter.collect::<Vec<_>>() {
        merged = merge(merged, child.profile);
    }
    Ok(Loaded {
        name: loaded.name,
        profile: merged,
        origin: loaded.origin,
    })
}

fn describe(chain: &[Loaded], next: &str) -> String {
    let mut names: Vec<&str> = chain.iter().map(|l| l.name.as_str()).collect();
    names.push(next);
    names.join(" -> ")
}

/// `child` layered on top of `parent`.
pub fn merge(parent: Profile, child: Profile) -> Profile {
    let replaces = |field| child.replace.contains(&field);
    let mut mounts = if replaces(ListField::Mounts) {
        Vec::new()
    } else {
        parent.mounts
    };
    mounts.extend(child.mounts);
    let mut pass = if replaces(ListField::EnvPass) {
        Vec::new()
    } else {
        parent.env.pass
    };
    for key in child.env.pass {
        if !pass.contains(&key) {
            pass.push(key);
        }
    }
    let mut set = parent.env.set;
    set.extend(child.env.set);
    Profile {
        schema: None,
        name: child.name,
        description: child.description,
        extends: child.extends,
        replace: Vec::new(),
        commands: child.commands,
        rootfs: child.rootfs.or(parent.rootfs),
        mounts,
        env: EnvSpec { set, pass },
        workdir: child.workdir.or(parent.workdir),
        hostname: child.hostname.or(parent.hostname),
        tmp_size: child.tmp_size.or(parent.tmp_size),
        shm_size: child.shm_size.or(parent.shm_size),
        user: UserSpec {
            uid: child.user.uid.or(parent.user.uid),
            gid: child.user.gid.or(parent.user.gid),
            userns: child.user.userns.or(parent.user.userns),
        },
        network: merge_network(parent.network, child.network),
        security: merge_security(parent.security, child.security),
        limits: merge_limits(parent.limits, child.limits),
    }
}

fn merge_network(parent: Option<NetworkSpec>, child: Option<NetworkSpec>) -> Option<NetworkSpec> {
    match (parent, child) {
        (None, child) => child,
        (parent, None) => parent,
        (Some(p), Some(c)) => {
            let (p, c) = (p.options(), c.options());
            let mut publish = p.publish;
            publish.extend(c.publish);
            let mut ports = p.allow_tcp_connect;
            ports.extend(c.allow_tcp_connect);
            let merged = NetworkOptions {
                mode: c.mode.or(p.mode),
                publish,
                allow_host_loopback: c.allow_host_loopback.or(p.allow_host_loopback),
                allow_tcp_connect: ports,
            };
            // Keep the short form when that is all there is.
            Some(match merged.mode {
                Some(mode)
                    if merged
                        == NetworkOptions {
                            mode: Some(mode),
                            ..Default::default()
                        } =>
                {
                    NetworkSpec::Mode(mode)
                }
                _ => NetworkSpec::Full(merged),
            })
        }
    }
}

fn merge_limits(parent: LimitsSpec, child: LimitsSpec) -> LimitsSpec {
    let mut rlimits = parent.rlimits;
    rlimits.extend(child.rlimits);
    LimitsSpec {
        memory: child.memory.or(parent.memory),
        memory_swap: child.memory_swap.or(parent.memory_swap),
        cpus: child.cpus.or(parent.cpus),
        pids: child.pids.or(parent.pids),
        io_weight: child.io_weight.or(parent.io_weight),
        rlimits,
        timeout: child.timeout.or(parent.timeout),
        limits_required: child.limits_required.or(parent.limits_required),
    }
}

fn merge_security(parent: SecuritySpec, child: SecuritySpec) -> SecuritySpec {
    let append = |mut a: Vec<String>, b: Vec<String>| {
        a.extend(b);
        a
    };
    SecuritySpec {
        capabilities: CapsSpec {
            add: append(parent.capabilities.add, child.capabilities.add),
            drop: append(parent.capabilities.drop, child.capabilities.drop),
        },
        seccomp: SeccompSpec {
            enabled: child.seccomp.enabled.or(parent.seccomp.enabled),
            deny: append(parent.seccomp.deny, child.seccomp.deny),
            allow: append(parent.seccomp.allow, child.seccomp.allow),
            errno: child.seccomp.errno.or(parent.seccomp.errno),
            allow_nested: child.seccomp.allow_nested.or(parent.seccomp.allow_nested),
        },
        landlock: child.landlock.or(parent.landlock),
        mask_kernel_paths: child.mask_kernel_paths.or(parent.mask_kernel_paths),
        protect: append(parent.protect, child.protect),
        git: child.git.or(parent.git),
        hide_host_sockets: child.hide_host_sockets.or(parent.hide_host_sockets),
    }
}

impl Origin {
    /// 0 for the most specific source; `load_below` searches strictly larger ranks.
    pub fn rank(&self) -> u8 {
        match self {
            Origin::File(_) | Origin::Recorded(_) => 0,
            Origin::User(_) => 1,
            Origin::System(_) => 2,
            Origin::Builtin => 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load::parse;
    use crate::profile::{MountKind, NetworkMode};

    fn p(json: &str) -> Profile {
        parse(json, "test").unwrap()
    }

    #[test]
    fn scalars_override_maps_merge_lists_append() {
        let parent = p(
            r#"{"name": "base", "description": "d", "commands": ["make"],
            "hostname": "base", "network": "host", "workdir": "/w",
            "mounts": [{"type": "tmpfs", "destination": "/a"}],
            "env": {"set": {"A": "1", "B": "1"}, "pass": ["TERM"]}}"#,
        );
        let child = p(r#"{"name": "child", "hostname": "child",
            "mounts": [{"type": "tmpfs", "destination": "/b"}],
            "env": {"set": {"B": "2"}, "pass": ["LANG", "TERM"]}, "user": {"uid": 0}}"#);
        let m = merge(parent, child);
        assert_eq!(m.name.as_deref(), Some("child"));
        assert_eq!(m.description, None, "descriptions are not inherited");
        assert!(m.commands.is_empty(), "commands are not inherited");
        assert_eq!(m.hostname.as_deref(), Some("child"));
        assert_eq!(m.network.unwrap().options().mode, Some(NetworkMode::Host));
        assert_eq!(m.workdir.as_deref(), Some("/w"));
        assert_eq!(m.user.uid, Some(0));
        let dsts: Vec<&str> = m.mounts.iter().map(|m| m.destination.as_str()).collect();
        assert_eq!(dsts, ["/a", "/b"]);
        assert_eq!(m.env.set["A"], "1");
        assert_eq!(m.env.set["B"], "2");
        assert_eq!(m.env.pass, ["TERM", "LANG"]);
    }

    #[test]
    fn replace_drops_inherited_lists() {
        let parent =
            p(r#"{"mounts": [{"type": "tmpfs", "destination": "/a"}], "env": {"pass": ["TERM"]}}"#);
        let child = p(r#"{"replace": ["mounts", "env.pass"],
            "mounts": [{"type": "ro-bind", "source": "/etc", "destination": "/e"}]}"#);
        let m = merge(parent, child);
        assert_eq!(m.mounts.len(), 1);
        assert_eq!(m.mounts[0].kind, MountKind::RoBind);
        assert!(m.env.pass.is_empty());
    }

    #[test]
    fn unknown_replace_field_is_rejected() {
        let err = parse(r#"{"replace": ["mount"]}"#, "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("replace[0]") && err.contains("did you mean `mounts`"),
            "{err}"
        );
    }

    #[test]
    fn extends_chain_of_builtins_resolves() {
        let l = resolve("build").unwrap();
        assert_eq!(
            l.profile.network.unwrap().options().mode,
            Some(NetworkMode::None)
        );
        assert!(l.profile.mounts.len() >= 2, "inherits default's mounts");
    }
}
