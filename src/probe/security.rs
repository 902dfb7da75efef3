//! Landlock and seccomp: what the kernel offers for sbx's own confinement steps. Neither
//! probe installs a ruleset or a filter.

use std::fs;

use super::{landlock_abi, Check};

pub(super) fn landlock() -> Check {
    let fix = "a kernel with CONFIG_SECURITY_LANDLOCK=y, booted with landlock in its LSM list \
               (`lsm=landlock,...`)";
    if let Some(abi) = landlock_abi() {
        let target = crate::security::landlock::TARGET_ABI;
        let how = if abi >= target {
            format!("sbx's rules are fully enforced (sbx uses ABI {target})")
        } else {
            format!("sbx's rules are partially enforced (sbx uses ABI {target}; newer rights are not enforced here)")
        };
        return Check::pass("landlock", format!("ABI {abi}: {how}"));
    }
    let detail = match crate::sys::landlock_version() {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            format!("not built into this kernel ({e})")
        }
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            format!("built in but not enabled at boot ({e})")
        }
        Err(e) => format!("unavailable ({e})"),
        Ok(abi) => format!("unexpected ABI {abi}"),
    };
    Check::fail("landlock", detail, fix)
}

pub(super) fn seccomp() -> Check {
    let fix = "a kernel with CONFIG_SECCOMP and CONFIG_SECCOMP_FILTER";
    let mode = match crate::sys::seccomp_mode() {
        Ok(mode) => mode,
        Err(e) => return Check::fail("seccomp", format!("prctl(PR_GET_SECCOMP): {e}"), fix),
    };
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    if status_field(&status, "Seccomp").is_none() {
        return Check::fail("seccomp", "no Seccomp field in /proc/self/status", fix);
    }
    let filters = status_field(&status, "Seccomp_filters").unwrap_or("?");
    let state = match mode {
        0 => "mode 0: sbx itself runs unfiltered".to_string(),
        _ => format!(
            "mode {mode}: sbx already runs under {filters} inherited filter(s); new ones stack"
        ),
    };
    let actions = fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    let detail = match actions.trim() {
        "" => state,
        list => format!("{state}; actions: {list}"),
    };
    Check::pass("seccomp", detail)
}

/// The value of `Key:` in /proc/PID/status text.
fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == key).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_fields_exactly() {
        let status = "Name:\tsbx\nSeccomp:\t2\nSeccomp_filters:\t3\n";
        assert_eq!(status_field(status, "Seccomp"), Some("2"));
        assert_eq!(status_field(status, "Seccomp_filters"), Some("3"));
        assert_eq!(status_field(status, "Secc"), None);
    }
}
