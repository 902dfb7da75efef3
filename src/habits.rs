//! Options spelled as podman spells them, folded into sbx's own before anything is planned:
//! `-v SRC:DST[:ro]`, `-u UID[:GID]`, and `-d` without `--name`. The record of a named
//! sandbox holds sbx's own options only.

use anyhow::{bail, Result};

use crate::cli::RunArgs;

/// Rewrites podman's spellings in `args` into sbx's options.
pub fn fold(args: &mut RunArgs) -> Result<()> {
    for volume in std::mem::take(&mut args.volume) {
        let (bind, readonly) = volume_to_bind(&volume)?;
        if readonly {
            args.ro_bind.push(bind);
        } else {
            args.bind.push(bind);
        }
    }
    if let Some(user) = args.user.take() {
        let (uid, gid) = parse_user(&user)?;
        args.uid = Some(uid);
        args.gid = gid.or(args.gid);
    }
    if args.rm && args.name.is_some() {
        bail!(
            "--rm with --name: a named sandbox is kept for `sbx start` until `sbx rm`; drop \
             --rm, or --name for a sandbox that leaves nothing behind"
        );
    }
    if args.detach && args.name.is_none() {
        args.name = Some(made_up_name());
    }
    Ok(())
}

/// `SRC:DST[:OPTIONS]` -> (`SRC:DST`, read-only).
fn volume_to_bind(volume: &str) -> Result<(String, bool)> {
    let parts: Vec<&str> = volume.split(':').collect();
    let (src, dst, options) = match parts.as_slice() {
        [src, dst] => (*src, *dst, ""),
        [src, dst, options] => (*src, *dst, *options),
        _ => bail!(
            "-v {volume}: give SRC:DST or SRC:DST:ro (a host path and where it goes inside); \
             named volumes are podman's, not sbx's"
        ),
    };
    if src.is_empty() || dst.is_empty() {
        bail!("-v {volume}: give SRC:DST or SRC:DST:ro");
    }
    let mut readonly = false;
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => readonly = true,
            "rw" => readonly = false,
            other => bail!(
                "-v {volume}: sbx does not support the volume option {other:?}; use ro or rw \
                 (sbx binds keep your own ids, so U, z and Z are not needed)"
            ),
        }
    }
    Ok((format!("{src}:{dst}"), readonly))
}

/// `UID[:GID]`, numbers only.
fn parse_user(user: &str) -> Result<(u32, Option<u32>)> {
    let number = |s: &str| {
        s.parse::<u32>().map_err(|_| {
            anyhow::anyhow!(
                "--user {user}: give numeric ids (UID or UID:GID); names are looked up only in \
                 an image's own /etc/passwd, through its config"
            )
        })
    };
    match user.split_once(':') {
        Some((uid, gid)) => Ok((number(uid)?, Some(number(gid)?))),
        None => Ok((number(user)?, None)),
    }
}

/// A name for a detached sandbox nobody named: short, unique enough, valid.
fn made_up_name() -> String {
    use std::hash::BuildHasher;
    let n = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    format!("sbx-{:08x}", n as u32)
}

/// `-p 8080:80` means `--profile` in sbx: a value that looks like a port mapping is
/// almost certainly podman's `--publish`.
pub fn check_profile_value(profile: &str) -> Result<()> {
    let mapping = profile
        .trim_end_matches("/tcp")
        .trim_end_matches("/udp")
        .rsplit(':')
        .take(2)
        .collect::<Vec<_>>();
    let is_port = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if mapping.len() == 2 && mapping.iter().all(|p| is_port(p)) {
        bail!(
            "-p {profile}: -p is --profile in sbx; did you mean `--publish {profile}` (with \
             --net slirp4netns)?"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_become_binds() {
        assert_eq!(volume_to_bind("/a:/b").unwrap(), ("/a:/b".into(), false));
        assert_eq!(
            volume_to_bind("./a:/b:ro").unwrap(),
            ("./a:/b".into(), true)
        );
        assert_eq!(volume_to_bind("/a:/b:rw").unwrap(), ("/a:/b".into(), false));
        for bad in ["/a", "/a:/b:Z", "named:/b:ro:x", ":/b"] {
            assert!(volume_to_bind(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn users_are_numbers() {
        assert_eq!(parse_user("1000").unwrap(), (1000, None));
        assert_eq!(parse_user("0:0").unwrap(), (0, Some(0)));
        assert!(parse_user("alice").is_err());
    }

    #[test]
    fn port_mappings_are_not_profiles() {
        for mapping in ["8080:80", "127.0.0.1:8080:80", "53:53/udp"] {
            assert!(check_profile_value(mapping).is_err(), "{mapping}");
        }
        for profile in ["default", "./mine.json", "build", "centos:9"] {
            assert!(check_profile_value(profile).is_ok(), "{profile}");
        }
    }

    #[test]
    fn made_up_names_are_valid() {
        crate::instance::validate_name(&made_up_name()).unwrap();
    }
}
