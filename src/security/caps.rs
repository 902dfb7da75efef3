//! Capabilities: none for a non-root command; podman's default set for uid 0 inside.
//!
//! Whatever the set, it is also the bounding set, so nothing the command executes (a file
//! with capabilities, a setuid binary of a subordinate id) can get more.

use anyhow::{bail, Context, Result};
use caps::{CapSet, Capability, CapsHashSet};

pub use crate::plan::security::CapsPlan;

/// What package managers need as root inside (podman's default).
pub const ROOT_DEFAULT: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETGID,
    Capability::CAP_SETPCAP,
    Capability::CAP_SETUID,
    Capability::CAP_SYS_CHROOT,
];

/// `add` and `drop` apply to the default for `inside_uid`, drops first; "ALL" drops all.
pub fn plan<'a>(
    inside_uid: u32,
    add: impl IntoIterator<Item = &'a String>,
    drop: impl IntoIterator<Item = &'a String>,
) -> Result<CapsPlan> {
    let mut set: CapsHashSet = if inside_uid == 0 {
        ROOT_DEFAULT.iter().copied().collect()
    } else {
        CapsHashSet::new()
    };
    for name in drop {
        if name.eq_ignore_ascii_case("all") {
            set.clear();
        } else {
            set.remove(&parse(name)?);
        }
    }
    for name in add {
        if name.eq_ignore_ascii_case("all") {
            bail!("--cap-add ALL is not allowed: name the capabilities the command needs");
        }
        set.insert(parse(name)?);
    }
    Ok(CapsPlan {
        set,
        ambient: inside_uid != 0,
    })
}

/// "NET_RAW", "net_raw" or "CAP_NET_RAW".
pub fn parse(name: &str) -> Result<Capability> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    full.parse::<Capability>().map_err(|_| {
        anyhow::anyhow!("unknown capability {name:?}; see capabilities(7) for the names")
    })
}

/// In the command's process before execve: bounding set first (that needs CAP_SETPCAP),
/// then inheritable, ambient, effective and permitted.
pub fn apply(plan: &CapsPlan) -> Result<()> {
    let set = &plan.set;
    for cap in caps::runtime::thread_all_supported() {
        if !set.contains(&cap) {
            drop_bounding(cap).with_context(|| format!("drop {cap} from the bounding set"))?;
        }
    }
    // Inheritable stays empty unless ambient capabilities need it (CVE-2022-27651): an
    // executed file's inheritable capabilities must not add anything.
    let empty = CapsHashSet::new();
    let inheritable = if plan.ambient { set } else { &empty };
    caps::set(None, CapSet::Inheritable, inheritable).context("set inheritable capabilities")?;
    caps::clear(None, CapSet::Ambient).context("clear ambient capabilities")?;
    if plan.ambient {
        for cap in set {
            caps::raise(None, CapSet::Ambient, *cap)
                .with_context(|| format!("raise ambient {cap}"))?;
        }
    }
    caps::set(None, CapSet::Effective, set).context("set effective capabilities")?;
    caps::set(None, CapSet::Permitted, set).context("set permitted capabilities")
}

/// PR_CAPBSET_DROP alone: `caps::drop` reads the bit first, a second syscall for each of
/// the ~40 capabilities on every start; dropping one already gone is no error.
fn drop_bounding(cap: Capability) -> std::io::Result<()> {
    // SAFETY: PR_CAPBSET_DROP takes an integer argument and no pointers.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAPBSET_DROP,
            libc::c_ulong::from(cap.index()),
            0,
            0,
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The set as the kernel shows it in /proc/PID/status (`CapEff: ...`).
pub fn mask(set: &CapsHashSet) -> u64 {
    set.iter().map(|c| c.bitmask()).fold(0, |a, b| a | b)
}

/// Names in the kernel's order, for messages.
pub fn names(set: &CapsHashSet) -> Vec<String> {
    let mut caps: Vec<Capability> = set.iter().copied().collect();
    caps.sort_by_key(|c| c.index());
    caps.iter().map(|c| c.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn non_root_gets_nothing_by_default() {
        let p = plan(1000, &s(&[]), &s(&[])).unwrap();
        assert!(p.set.is_empty());
        assert!(p.ambient);
    }

    #[test]
    fn root_gets_podmans_set() {
        let p = plan(0, &s(&[]), &s(&[])).unwrap();
        assert_eq!(mask(&p.set), 0x8000_05fb | 1 << 18);
        assert!(!p.ambient);
    }

    #[test]
    fn drops_then_adds() {
        let p = plan(0, &s(&["net_raw"]), &s(&["ALL"])).unwrap();
        assert_eq!(names(&p.set), ["CAP_NET_RAW"]);
        let p = plan(0, &s(&[]), &s(&["CAP_CHOWN", "kill"])).unwrap();
        assert!(!p.set.contains(&Capability::CAP_CHOWN) && !p.set.contains(&Capability::CAP_KILL));
    }

    #[test]
    fn unknown_names_and_add_all_are_errors() {
        assert!(plan(0, &s(&["NET_RAWR"]), &s(&[]))
            .unwrap_err()
            .to_string()
            .contains("NET_RAWR"));
        assert!(plan(0, &s(&["ALL"]), &s(&[])).is_err());
    }
}
