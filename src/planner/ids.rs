//! The sandbox's ids: who the command is inside, and how the id maps will be written, from
//! the host's files (read only).

use anyhow::{bail, Result};

use crate::plan::ids::{IdPlan, IdRange, UsernsMode};
use crate::supervisor::idmap;

/// Decides how ids will be mapped, from the host's files. Has no side effects.
pub fn plan(user: &str, uid: u32, gid: u32, inside_uid: u32, inside_gid: u32) -> IdPlan {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let helpers = (
        idmap::find_helper("newuidmap"),
        idmap::find_helper("newgidmap"),
    );
    let mode = idmap::choose_mode(
        user,
        uid,
        gid,
        (inside_uid, inside_gid),
        (&read(idmap::SUBUID), &read(idmap::SUBGID)),
        helpers,
    );
    IdPlan {
        host_uid: uid,
        host_gid: gid,
        inside_uid,
        inside_gid,
        mode,
    }
}

/// How a full id map is made: `SBX_USERNS` (from the caller's environment) over the
/// profile's `user.userns`, else the kept namespace.
pub fn userns_mode(profile: Option<UsernsMode>, env: Option<&str>) -> Result<UsernsMode> {
    match env.filter(|v| !v.is_empty()) {
        Some(value) => UsernsMode::parse(value).ok_or_else(|| {
            anyhow::anyhow!(
                "SBX_USERNS={value:?} is not a mode; use \"holder\" (the default) or \"per-run\""
            )
        }),
        None => Ok(profile.unwrap_or_default()),
    }
}

/// `id` can be given to setresuid/setresgid: not -1, which the kernel reads as "leave it
/// unchanged". `what` names the id and where it came from.
pub fn check_settable(kind: &str, id: u32, what: &str) -> Result<()> {
    if id == u32::MAX {
        bail!(
            "{what}, which is -1 to the kernel (\"no {kind}\") and cannot be set; give a {kind} \
             below {}",
            u32::MAX
        );
    }
    Ok(())
}

/// `id` is settable and mapped by `map` (inside ids), so switching to it inside the
/// sandbox gives exactly that id.
pub fn check_mapped(kind: &str, id: u32, map: &[IdRange], what: &str) -> Result<()> {
    check_settable(kind, id, what)?;
    let mapped = |r: &IdRange| id >= r.inside && u64::from(id - r.inside) < u64::from(r.count);
    if map.iter().any(mapped) {
        return Ok(());
    }
    let mut spans: Vec<(u64, u64)> = map
        .iter()
        .map(|r| {
            (
                u64::from(r.inside),
                u64::from(r.inside) + u64::from(r.count),
            )
        })
        .collect();
    spans.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let shown: Vec<String> = merged
        .iter()
        .map(|(s, e)| format!("{s}-{}", e - 1))
        .collect();
    bail!(
        "{what}, which the sandbox's user namespace does not map (its {kind}s are {}); give one \
         of those, or add a larger range to /etc/sub{kind}",
        shown.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_overrides_the_profile() {
        assert_eq!(userns_mode(None, None).unwrap(), UsernsMode::Holder);
        let per_run = Some(UsernsMode::PerRun);
        assert_eq!(userns_mode(per_run, None).unwrap(), UsernsMode::PerRun);
        assert_eq!(
            userns_mode(per_run, Some("holder")).unwrap(),
            UsernsMode::Holder
        );
        assert_eq!(
            userns_mode(None, Some("per-run")).unwrap(),
            UsernsMode::PerRun
        );
        assert_eq!(userns_mode(per_run, Some("")).unwrap(), UsernsMode::PerRun);
        let err = userns_mode(None, Some("perrun")).unwrap_err().to_string();
        assert!(err.contains("SBX_USERNS=\"perrun\""), "{err}");
    }
}
