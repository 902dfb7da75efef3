//! The built-in profiles as Rust values: `sbx run` picks and layers them without parsing
//! JSON (start-up, issue 18). `profiles/*.json` stay the documented source, embedded for
//! `sbx profile show`, `check` and `ls`; the test below holds each value here equal to the
//! parse of its file, so the two cannot drift.

use std::collections::BTreeMap;

use super::{
    EnvSpec, ImageRootfs, LimitsSpec, MountKind, MountOption, MountSpec, NetworkMode, NetworkSpec,
    Profile, RootfsSpec, UserSpec,
};

/// The built-in profile `name`, as `profiles/NAME.json` parses.
pub fn profile(name: &str) -> Option<Profile> {
    Some(match name {
        "default" => default(),
        "build" => build(),
        "devshell" => devshell(),
        "strict" => strict(),
        "centos" => centos(),
        _ => return None,
    })
}

fn default() -> Profile {
    Profile {
        name: Some("default".into()),
        description: Some(
            "Host root read-only, current directory writable, home and runtime directory \
             hidden, no network"
                .into(),
        ),
        rootfs: Some(RootfsSpec::Path("host".into())),
        mounts: vec![
            tmpfs("${HOME}", "0711", Some("20%"), false),
            tmpfs("/run/user", "0755", Some("1M"), true),
            tmpfs("${XDG_RUNTIME_DIR}", "0700", Some("1M"), true),
            bind(MountKind::Bind, "${PWD}", "${PWD}"),
        ],
        workdir: Some("${PWD}".into()),
        hostname: Some("sbx".into()),
        network: Some(NetworkSpec::Mode(NetworkMode::None)),
        env: pass(&["PATH", "HOME", "USER", "TERM", "LANG"]),
        limits: LimitsSpec {
            rlimits: BTreeMap::from([("nproc".into(), "4096".into())]),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn build() -> Profile {
    let caches = [
        ".cargo/registry",
        ".cargo/git",
        ".cargo/bin",
        ".rustup",
        "go/pkg/mod",
        ".m2/repository",
        ".gradle/caches",
        ".npm",
        ".cache/pip",
        ".cache/go-build",
    ];
    Profile {
        name: Some("build".into()),
        description: Some(
            "An untrusted build step: host root read-only, the current directory writable, no \
             network, home hidden, tool caches read-only"
                .into(),
        ),
        extends: Some("default".into()),
        commands: strings(&[
            "make", "cmake", "ninja", "meson", "cargo", "go", "mvn", "gradle", "npm", "yarn",
            "pnpm", "pip", "pip3",
        ]),
        mounts: caches
            .iter()
            .map(|dir| {
                let path = format!("${{HOME}}/{dir}");
                MountSpec {
                    optional: true,
                    ..bind(MountKind::RoBind, &path, &path)
                }
            })
            .collect(),
        env: pass(&[
            "CARGO_HOME",
            "RUSTUP_HOME",
            "GOPATH",
            "GOCACHE",
            "GOFLAGS",
            "MAKEFLAGS",
            "npm_config_cache",
            "PIP_CACHE_DIR",
        ]),
        network: Some(NetworkSpec::Mode(NetworkMode::None)),
        ..Default::default()
    }
}

fn devshell() -> Profile {
    Profile {
        name: Some("devshell".into()),
        description: Some(
            "A per-user dev shell: a persistent home of its own, the current project writable, \
             the host's network"
                .into(),
        ),
        rootfs: Some(RootfsSpec::Path("host".into())),
        mounts: vec![
            MountSpec {
                create: true,
                ..bind(
                    MountKind::Bind,
                    "${HOME}/.local/share/sbx/homes/devshell",
                    "${HOME}",
                )
            },
            bind(MountKind::Bind, "${PWD}", "${PWD}"),
        ],
        workdir: Some("${PWD}".into()),
        hostname: Some("devshell".into()),
        network: Some(NetworkSpec::Mode(NetworkMode::Host)),
        env: pass(&[
            "PATH",
            "HOME",
            "USER",
            "TERM",
            "LANG",
            "COLORTERM",
            "EDITOR",
            "VISUAL",
        ]),
        ..Default::default()
    }
}

fn strict() -> Profile {
    Profile {
        name: Some("strict".into()),
        description: Some(
            "Nothing writable but /tmp and /dev/shm; the current directory read-only, the rest \
             of home hidden; no network"
                .into(),
        ),
        rootfs: Some(RootfsSpec::Path("host".into())),
        mounts: vec![
            MountSpec {
                options: vec![MountOption::Ro],
                ..tmpfs("${HOME}", "0700", None, false)
            },
            bind(MountKind::RoBind, "${PWD}", "${PWD}"),
        ],
        workdir: Some("${PWD}".into()),
        hostname: Some("sbx".into()),
        network: Some(NetworkSpec::Mode(NetworkMode::None)),
        env: EnvSpec {
            set: BTreeMap::from([("HOME".into(), "/tmp".into())]),
            ..pass(&["PATH", "USER", "TERM", "LANG"])
        },
        ..Default::default()
    }
}

fn centos() -> Profile {
    Profile {
        name: Some("centos".into()),
        description: Some(
            "CentOS Stream 9 userland from the image centos:stream9, root inside, the current \
             directory at /work, no network"
                .into(),
        ),
        rootfs: Some(RootfsSpec::Image(ImageRootfs {
            image: "centos:stream9".into(),
            pull: Some("quay.io/centos/centos:stream9".into()),
            ..Default::default()
        })),
        user: UserSpec {
            uid: Some(0),
            gid: Some(0),
            userns: None,
        },
        hostname: Some("centos".into()),
        mounts: vec![bind(MountKind::Bind, "${PWD}", "/work")],
        workdir: Some("/work".into()),
        network: Some(NetworkSpec::Mode(NetworkMode::None)),
        env: EnvSpec {
            set: BTreeMap::from([("HOME".into(), "/root".into())]),
            ..pass(&["TERM", "LANG"])
        },
        ..Default::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn pass(names: &[&str]) -> EnvSpec {
    EnvSpec {
        set: BTreeMap::new(),
        pass: strings(names),
    }
}

fn tmpfs(destination: &str, mode: &str, size: Option<&str>, optional: bool) -> MountSpec {
    MountSpec {
        kind: MountKind::Tmpfs,
        source: None,
        destination: destination.into(),
        optional,
        create: false,
        options: Vec::new(),
        size: size.map(Into::into),
        mode: Some(mode.into()),
    }
}

fn bind(kind: MountKind, source: &str, destination: &str) -> MountSpec {
    MountSpec {
        kind,
        source: Some(source.into()),
        destination: destination.into(),
        optional: false,
        create: false,
        options: Vec::new(),
        size: None,
        mode: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load::{parse, BUILTINS};

    /// Each Rust value is what its JSON file parses to, field for field.
    #[test]
    fn builtins_equal_their_json() {
        for (name, text) in BUILTINS {
            let parsed = parse(text, name).unwrap_or_else(|e| panic!("built-in {name}: {e:#}"));
            let built = profile(name).unwrap_or_else(|| panic!("no Rust value for {name}"));
            assert_eq!(
                built, parsed,
                "built-in profile {name}: Rust value and JSON differ"
            );
        }
        assert!(profile("nope").is_none());
    }
}
