//! The helper programs sbx runs (newuidmap, newgidmap, slirp4netns, fuse-overlayfs): one
//! lookup, shared by `sbx check` and `sbx run`, so the two never disagree about whether one
//! is installed. Only these directories, never `$PATH`: a helper runs with the caller's
//! trust (and newuidmap is setuid), so a directory the user can write must not supply one.

use std::path::{Path, PathBuf};

/// Where helpers are looked for, in order: the distribution's, then the administrator's.
pub const DIRS: &[&str] = &[
    "/usr/bin",
    "/usr/sbin",
    "/bin",
    "/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
];

/// The helper `name`'s absolute path, or None. `SBX_<NAME>` (upper case, `-` as `_`)
/// replaces the search, for tests that simulate a missing or odd helper.
pub fn find(name: &str) -> Option<PathBuf> {
    let var = format!("SBX_{}", name.to_uppercase().replace('-', "_"));
    if let Some(path) = std::env::var_os(&var).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    DIRS.iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// "/usr/bin, /usr/sbin, ... or /usr/local/sbin", for messages.
pub fn searched() -> String {
    match DIRS.split_last() {
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_every_directory() {
        assert!(super::searched().ends_with("or /usr/local/sbin"));
        assert!(super::searched().starts_with("/usr/bin, "));
    }
}
