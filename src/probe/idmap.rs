//! The id-map helpers (newuidmap, newgidmap) and the caller's subordinate id ranges.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::supervisor::idmap::{find_helper, parse_subids, SubRange};

use super::{Caller, Check};

pub(super) fn id_helper(name: &'static str) -> Check {
    let install =
        "`sudo apt-get install uidmap` (Debian/Ubuntu) or `sudo dnf install shadow-utils`";
    let Some(path) = find_helper(name) else {
        let detail = format!(
            "not found in {}; sbx falls back to a single-id map",
            crate::helpers::searched()
        );
        return Check::fail(name, detail, install);
    };
    let shown = path.display();
    let meta = match fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) => return Check::fail(name, format!("cannot stat {shown}: {e}"), install),
    };
    let nosuid = nix::sys::statvfs::statvfs(&path)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_NOSUID));
    let setuid_root = meta.mode() & libc::S_ISUID != 0 && meta.uid() == 0;
    if setuid_root && !nosuid {
        Check::pass(name, format!("{shown} (setuid root)"))
    } else if has_file_caps(&path) && !nosuid {
        Check::pass(name, format!("{shown} (file capabilities)"))
    } else {
        let why = if nosuid {
            "its filesystem is mounted nosuid"
        } else {
            "it is neither setuid root nor carries file capabilities"
        };
        let detail =
            format!("{shown} cannot write id maps: {why}; sbx falls back to a single-id map");
        Check::fail(name, detail, format!("reinstall it: {install}"))
    }
}

fn has_file_caps(path: &Path) -> bool {
    let Ok(c_path) = crate::sys::cstr(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    crate::sys::xattr_size(&c_path, c"security.capability").is_ok()
}

pub(super) fn subids(name: &'static str, file: &str, caller: &Caller) -> Check {
    let user = &caller.name;
    let fix =
        format!("`sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`");
    let fallback = "sbx falls back to a single-id map (only your own id inside), not fatal";
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => return Check::fail(name, format!("cannot read {file} ({e}); {fallback}"), fix),
    };
    let ranges = parse_subids(&text, user, caller.uid);
    if ranges.is_empty() {
        Check::fail(
            name,
            format!("no range for {user} in {file}; {fallback}"),
            fix,
        )
    } else {
        Check::pass(
            name,
            format!("{user} in {file}: {}", describe_ranges(&ranges)),
        )
    }
}

/// "100000-165535 (65536 ids in total)": inclusive ranges and the total count.
fn describe_ranges(ranges: &[SubRange]) -> String {
    let spans: Vec<String> = ranges
        .iter()
        .map(|r| {
            format!(
                "{}-{}",
                r.start,
                u64::from(r.start) + u64::from(r.count) - 1
            )
        })
        .collect();
    let total: u64 = ranges.iter().map(|r| u64::from(r.count)).sum();
    format!("{} ({total} ids in total)", spans.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_subordinate_ranges() {
        let ranges = [
            SubRange {
                start: 100000,
                count: 65536,
            },
            SubRange {
                start: 300000,
                count: 1,
            },
        ];
        assert_eq!(
            describe_ranges(&ranges),
            "100000-165535, 300000-300000 (65537 ids in total)"
        );
    }
}
