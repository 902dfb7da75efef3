//! Resource limits as planned before clone: cgroup v2 values, rlimits, a wall-clock timeout,
//! and where the sandbox's cgroup leaf will live.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::resource::Resource;

use crate::cli::RunArgs;
use crate::error::HostFeature;
pub use crate::plan::limits::{CgroupLimits, LimitsPlan, Rlimit};
use crate::plan::parse_size;
use crate::profile::LimitsSpec;
use crate::supervisor::cgroup;

/// Set in the environment of sbx re-run inside a systemd scope, so it does not loop.
pub const IN_SCOPE_ENV: &str = "SBX_IN_SYSTEMD_SCOPE";

/// SIGTERM at the timeout, SIGKILL this much later.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(5);

pub fn plan(spec: &LimitsSpec, args: &RunArgs) -> Result<LimitsPlan> {
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
    let mut rlimits = Vec::new();
    for (name, value) in &spec.rlimits {
        // A profile's limit is at most yours: a built-in one must not fail on a host whose
        // hard limit is lower (that one is stricter still).
        let limit = parse_rlimit_unchecked(name, value)
            .map(Rlimit::within_yours)
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
    let timeout = args
        .timeout
        .as_ref()
        .or(spec.timeout.as_ref())
        .map(|t| parse_duration(t))
        .transpose()?;
    let mut via_systemd = None;
    let site = if cgroup.is_empty() {
        None
    } else {
        match cgroup::find_site(&cgroup.controllers()) {
            Ok(site) => Some(site),
            Err(why) => match systemd_user_manager() {
                Some(systemd_run) => {
                    via_systemd = Some(systemd_run);
                    None
                }
                None if spec.limits_required == Some(false) => {
                    eprintln!(
                        "sbx: warning: the cgroup limits are NOT enforced: {why}; running with \
                         the rlimits only, because the profile says \"limits_required\": false"
                    );
                    None
                }
                None => {
                    return Err(HostFeature::new(
                        "cgroup v2 delegation",
                        format!(
                            "cannot enforce {}: {why} (a profile may say \"limits_required\": \
                             false to run without them)",
                            cgroup.controllers().join(", ")
                        ),
                    )
                    .into())
                }
            },
        }
    };
    Ok(LimitsPlan {
        cgroup,
        site,
        rlimits,
        timeout,
        via_systemd,
    })
}

/// `systemd-run`, when a systemd user manager answers for this user (and we are not already
/// running in a scope it made for us).
pub fn systemd_user_manager() -> Option<PathBuf> {
    if std::env::var_os(IN_SCOPE_ENV).is_some() {
        return None;
    }
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)?;
    if !runtime.join("systemd/private").exists() {
        return None;
    }
    ["/usr/bin/systemd-run", "/bin/systemd-run"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Replaces this process with sbx itself, same arguments, inside a transient systemd scope
/// with `Delegate=yes`; returns only on failure.
pub fn rerun_in_scope(systemd_run: &std::path::Path) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let me = match std::env::current_exe() {
        Ok(path) => path,
        Err(e) => return anyhow::anyhow!("cannot find the sbx binary to run it again: {e}"),
    };
    let err = std::process::Command::new(systemd_run)
        .args([
            "--user",
            "--scope",
            "--quiet",
            "--collect",
            "-p",
            "Delegate=yes",
            "--",
        ])
        .arg(me)
        .args(std::env::args_os().skip(1))
        .env(IN_SCOPE_ENV, "1")
        .exec();
    anyhow::anyhow!(
        "cannot run {} to get a delegated cgroup from the systemd user manager: {err}",
        systemd_run.display()
    )
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

impl Rlimit {
    /// Lowered to your own hard limit where it is above it.
    fn within_yours(self) -> Rlimit {
        let Ok((_, current_hard)) = nix::sys::resource::getrlimit(self.resource) else {
            return self;
        };
        Rlimit {
            soft: self.soft.min(current_hard),
            hard: self.hard.min(current_hard),
            ..self
        }
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

fn show(v: u64) -> String {
    if v == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// In the command's process before execve.
pub fn apply_rlimits(rlimits: &[Rlimit]) -> Result<()> {
    for r in rlimits {
        nix::sys::resource::setrlimit(r.resource, r.soft, r.hard).with_context(|| {
            format!("set rlimit {} to {}:{}", r.name, show(r.soft), show(r.hard))
        })?;
    }
    Ok(())
}

/// For `sbx run -v`.
pub fn describe(plan: &LimitsPlan) -> String {
    let mut parts = Vec::new();
    let c = &plan.cgroup;
    if let Some(m) = c.memory {
        parts.push(format!("memory {m}"));
    }
    if let Some(m) = c.memory_swap {
        parts.push(format!("swap {m}"));
    }
    if let Some((q, p)) = c.cpu {
        parts.push(format!("cpu {q}/{p}"));
    }
    if let Some(n) = c.pids {
        parts.push(format!("pids {n}"));
    }
    if let Some(w) = c.io_weight {
        parts.push(format!("io.weight {w}"));
    }
    let cgroup = match (&plan.site, c.is_empty()) {
        (_, true) => "no cgroup limits".to_string(),
        (Some(site), false) => format!(
            "{} in a leaf under {}",
            parts.join(", "),
            site.parent.display()
        ),
        (None, false) => format!("{} NOT enforced (no delegated cgroup)", parts.join(", ")),
    };
    let rl: Vec<String> = plan
        .rlimits
        .iter()
        .map(|r| format!("{}={}:{}", r.name, show(r.soft), show(r.hard)))
        .collect();
    let timeout = plan
        .timeout
        .map(|t| format!("; timeout {t:?}"))
        .unwrap_or_default();
    format!(
        "{cgroup}; rlimits: {}{timeout}",
        if rl.is_empty() {
            "inherited".into()
        } else {
            rl.join(" ")
        }
    )
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
