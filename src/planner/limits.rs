//! Resource limits from the profile and the overrides: cgroup v2 values, where the leaf
//! will go (found by reading the cgroup tree, never writing it), rlimits, a timeout.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::resource::Resource;

use super::{HostFacts, Overrides};
use crate::error::HostFeature;
use crate::limits::show;
use crate::plan::limits::{CgroupLimits, LimitsPlan, Rlimit, Site};
use crate::plan::parse_size;
use crate::plan::HostSetup;
use crate::profile::LimitsSpec;
use crate::supervisor::cgroup;

pub fn plan(
    spec: &LimitsSpec,
    args: &Overrides,
    host: &HostFacts,
    setup: &mut HostSetup,
) -> Result<LimitsPlan> {
    let cgroup = cgroup_limits(spec, args)?;
    let rlimits = rlimits(spec, args)?;
    let timeout = args
        .timeout
        .as_ref()
        .or(spec.timeout.as_ref())
        .map(|t| parse_duration(t))
        .transpose()?;
    let (site, via_systemd, not_enforced) = if cgroup.is_empty() {
        (None, None, None)
    } else {
        match site(&cgroup, host, setup) {
            Ok(site) => (Some(site), None, None),
            Err(why) => no_site(&cgroup, spec, host, why)?,
        }
    };
    Ok(LimitsPlan {
        cgroup,
        site,
        rlimits,
        timeout,
        via_systemd,
        not_enforced,
    })
}

fn cgroup_limits(spec: &LimitsSpec, args: &Overrides) -> Result<CgroupLimits> {
    let size = |v: Option<&String>, what: &str| -> Result<Option<u64>> {
        v.map(|s| parse_size(s).with_context(|| what.to_string()))
            .transpose()
    };
    let cgroup = CgroupLimits {
        memory: size(args.memory.as_ref().or(spec.memory.as_ref()), "memory")?,
        memory_swap: size(
            args.memory_swap.as_ref().or(spec.memory_swap.as_ref()),
            "memory_swap",
        )?,
        cpu: args
            .cpus
            .as_ref()
            .or(spec.cpus.as_ref())
            .map(|c| parse_cpus(c))
            .transpose()?,
        pids: args.pids.or(spec.pids),
        io_weight: args.io_weight.or(spec.io_weight),
    };
    if let Some(w) = cgroup.io_weight {
        if !(1..=10000).contains(&w) {
            bail!("io weight {w}: use 1 to 10000");
        }
    }
    if cgroup.pids == Some(0) {
        bail!("a pids limit of 0 would not even let the command start; use 1 or more");
    }
    Ok(cgroup)
}

fn rlimits(spec: &LimitsSpec, args: &Overrides) -> Result<Vec<Rlimit>> {
    let mut rlimits = Vec::new();
    for (name, value) in &spec.rlimits {
        // A profile's limit is at most yours: a built-in one must not fail on a host whose
        // hard limit is lower (that one is stricter still).
        let limit = parse_rlimit_unchecked(name, value)
            .map(within_yours)
            .with_context(|| format!("limits.rlimits.{name}"))?;
        rlimits.push(limit);
    }
    for item in &args.rlimit {
        let Some((name, value)) = item.split_once('=') else {
            bail!("--rlimit {item}: use NAME=SOFT[:HARD], such as nofile=1024:4096");
        };
        let limit = parse_rlimit(name, value).with_context(|| format!("--rlimit {item}"))?;
        rlimits.retain(|r: &Rlimit| r.name != limit.name);
        rlimits.push(limit);
    }
    Ok(rlimits)
}

/// The delegated site for the leaf; the controllers it does not enable yet go to `setup`.
fn site(
    cgroup: &CgroupLimits,
    host: &HostFacts,
    setup: &mut HostSetup,
) -> std::result::Result<Site, String> {
    let (site, missing) = cgroup::locate(host.cgroup.get().as_ref()?, &cgroup.controllers())?;
    setup.controllers = missing;
    Ok(site)
}

type NoSite = (Option<Site>, Option<PathBuf>, Option<String>);

/// No delegated cgroup: a systemd scope, the rlimits alone (when the profile allows it), or
/// an error.
fn no_site(
    cgroup: &CgroupLimits,
    spec: &LimitsSpec,
    host: &HostFacts,
    why: String,
) -> Result<NoSite> {
    match host.systemd_run.get() {
        Some(systemd_run) => Ok((None, Some(systemd_run.clone()), None)),
        None if spec.limits_required == Some(false) => Ok((None, None, Some(why))),
        None => Err(HostFeature::new(
            "cgroup v2 delegation",
            format!(
                "cannot enforce {}: {why} (a profile may say \"limits_required\": false to run \
                 without them)",
                cgroup.controllers().join(", ")
            ),
        )
        .into()),
    }
}

/// The warning for limits the profile lets go unenforced, once per run (the front end
/// prints it; the planner prints nothing).
pub fn not_enforced_warning(plan: &LimitsPlan) -> Option<String> {
    plan.not_enforced.as_ref().map(|why| {
        format!(
            "the cgroup limits are NOT enforced: {why}; running with the rlimits only, because \
             the profile says \"limits_required\": false"
        )
    })
}

/// "1.5" CPUs -> 150000 us per 100000 us.
pub fn parse_cpus(s: &str) -> Result<(u64, u64)> {
    let period = 100_000u64;
    match s.trim().parse::<f64>() {
        Ok(n) if n > 0.0 && n <= 4096.0 => {
            Ok(((n * period as f64).round().max(1000.0) as u64, period))
        }
        _ => bail!("invalid CPU count {s:?}; use a positive number such as 0.5 or 2"),
    }
}

/// "30s", "10m", "1h", "500ms", or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid duration {s:?}; use such as 30s, 10m or 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("invalid duration {s:?}; use such as 30s, 10m or 1h"),
    };
    if secs <= 0.0 {
        bail!("a timeout of {s} would stop the command before it starts");
    }
    Ok(Duration::from_secs_f64(secs))
}

const RLIMITS: &[(&str, Resource)] = &[
    ("nofile", Resource::RLIMIT_NOFILE),
    ("nproc", Resource::RLIMIT_NPROC),
    ("core", Resource::RLIMIT_CORE),
    ("fsize", Resource::RLIMIT_FSIZE),
    ("as", Resource::RLIMIT_AS),
    ("cpu", Resource::RLIMIT_CPU),
    ("stack", Resource::RLIMIT_STACK),
    ("memlock", Resource::RLIMIT_MEMLOCK),
];

/// `SOFT[:HARD]`, each a number (with K/M/G) or "unlimited"; HARD defaults to SOFT. Checked
/// against the caller's own hard limit now: only root on the host could raise it.
/// `NAME=SOFT[:HARD]` from the command line: a hard limit above yours is an error.
pub fn parse_rlimit(name: &str, value: &str) -> Result<Rlimit> {
    let limit = parse_rlimit_unchecked(name, value)?;
    let (_, current_hard) = nix::sys::resource::getrlimit(limit.resource)?;
    if limit.hard > current_hard {
        bail!(
            "hard limit {} is above your own ({}), which only root on the host can raise",
            show(limit.hard),
            show(current_hard)
        );
    }
    Ok(limit)
}

/// Lowered to your own hard limit where it is above it.
fn within_yours(limit: Rlimit) -> Rlimit {
    let Ok((_, current_hard)) = nix::sys::resource::getrlimit(limit.resource) else {
        return limit;
    };
    Rlimit {
        soft: limit.soft.min(current_hard),
        hard: limit.hard.min(current_hard),
        ..limit
    }
}

fn parse_rlimit_unchecked(name: &str, value: &str) -> Result<Rlimit> {
    let Some((name, resource)) = RLIMITS.iter().find(|(n, _)| *n == name).copied() else {
        bail!(
            "unknown rlimit {name:?}; use one of {}",
            RLIMITS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let num = |v: &str| -> Result<u64> {
        if v == "unlimited" || v == "-1" {
            Ok(libc::RLIM_INFINITY)
        } else {
            parse_size(v)
        }
    };
    let (soft, hard) = match value.split_once(':') {
        Some((s, h)) => (num(s)?, num(h)?),
        None => (num(value)?, num(value)?),
    };
    if soft > hard {
        bail!("soft limit {soft} is above the hard limit {hard}");
    }
    Ok(Rlimit {
        name,
        resource,
        soft,
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_and_durations() {
        assert_eq!(parse_cpus("1.5").unwrap(), (150_000, 100_000));
        assert_eq!(parse_cpus("0.001").unwrap(), (1000, 100_000));
        assert!(parse_cpus("0").is_err() && parse_cpus("lots").is_err());
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("0s").is_err() && parse_duration("5y").is_err());
    }

    #[test]
    fn rlimits() {
        let r = parse_rlimit("nofile", "64:128").unwrap();
        assert_eq!((r.soft, r.hard), (64, 128));
        let r = parse_rlimit("fsize", "1M").unwrap();
        assert_eq!((r.soft, r.hard), (1 << 20, 1 << 20));
        assert!(parse_rlimit("nofiles", "1")
            .unwrap_err()
            .to_string()
            .contains("nofile"));
        assert!(parse_rlimit("nofile", "10:5").is_err());
        assert!(parse_rlimit("core", "unlimited:0").is_err());
    }
}
