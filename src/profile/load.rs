//! Finding and parsing profiles: user directory, system directory, then built-ins.
//!
//! A project's own directory is never searched: a checked-out pull request must not be able
//! to loosen its own sandbox.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::Profile;

/// Profiles embedded in the binary from the repository's `profiles/`: the text `sbx profile
/// show`, `check` and `ls` read. Runs take the same profiles from `builtin`, as Rust values.
pub const BUILTINS: &[(&str, &str)] = &[
    ("default", include_str!("../../profiles/default.json")),
    ("build", include_str!("../../profiles/build.json")),
    ("devshell", include_str!("../../profiles/devshell.json")),
    ("strict", include_str!("../../profiles/strict.json")),
    ("centos", include_str!("../../profiles/centos.json")),
];

/// The built-in profile `name`, built without parsing: choosing by command reads every
/// built-in, and the chosen one is loaded again through `extends`.
fn builtin(name: &str) -> Option<Profile> {
    super::builtin::profile(name)
}

/// Where a profile was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `$XDG_CONFIG_HOME/sbx/profiles/` (or `~/.config/sbx/profiles/`).
    User(PathBuf),
    /// `/etc/sbx/profiles/` (or `$SBX_SYSTEM_PROFILE_DIR`).
    System(PathBuf),
    /// Embedded in the sbx binary.
    Builtin,
    /// Named by path on the command line.
    File(PathBuf),
    /// Recorded when a named sandbox was created (`sbx start`, `sbx exec`).
    Recorded(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::User(p) => write!(f, "user profile {}", p.display()),
            Origin::System(p) => write!(f, "system profile {}", p.display()),
            Origin::Builtin => write!(f, "built-in profile"),
            Origin::File(p) => write!(f, "profile file {}", p.display()),
            Origin::Recorded(what) => write!(f, "{what}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: String,
    pub profile: Profile,
    pub origin: Origin,
}

/// A profile directory and the origin its profiles get.
pub type SearchDir = (PathBuf, fn(PathBuf) -> Origin);

/// The directories searched by name, most specific first.
pub fn search_dirs() -> Vec<SearchDir> {
    let mut dirs: Vec<SearchDir> = Vec::new();
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(config) = config {
        dirs.push((config.join("sbx/profiles"), Origin::User));
    }
    let system = std::env::var_os("SBX_SYSTEM_PROFILE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/sbx/profiles"));
    dirs.push((system, Origin::System));
    dirs
}

/// Whether `--profile X` names a file rather than a profile.
pub fn is_path(spec: &str) -> bool {
    spec.contains('/') || spec.ends_with(".json")
}

/// Loads a profile by name or path.
pub fn load(spec: &str) -> Result<Loaded> {
    if is_path(spec) {
        let path = PathBuf::from(spec);
        let profile = read_file(&path)?;
        let name = profile.name.clone().unwrap_or_else(|| file_stem(&path));
        return Ok(Loaded {
            name,
            profile,
            origin: Origin::File(path),
        });
    }
    validate_name(spec)?;
    if let Some(found) = all_named(spec)?.into_iter().next() {
        return Ok(found);
    }
    bail!(
        "no profile named {spec:?}; known profiles: {}",
        known_names().join(", ")
    )
}

/// The next profile called `name` in a less specific place than `below` (user, then
/// system, then built-in): how a user's `default` can extend the built-in `default`.
pub fn load_below(name: &str, below: &Origin) -> Result<Loaded> {
    for loaded in all_named(name)? {
        if loaded.origin.rank() > below.rank() {
            return Ok(loaded);
        }
    }
    bail!("profile {name:?} extends {name:?}, but there is no {name:?} below the {below}")
}

/// Every profile called `name`, most specific first.
fn all_named(name: &str) -> Result<Vec<Loaded>> {
    let mut found = Vec::new();
    for (dir, origin) in search_dirs() {
        let path = dir.join(format!("{name}.json"));
        if path.exists() {
            found.push(Loaded {
                name: name.to_string(),
                profile: read_file(&path)?,
                origin: origin(path),
            });
        }
    }
    if let Some(profile) = builtin(name) {
        found.push(Loaded {
            name: name.to_string(),
            profile,
            origin: Origin::Builtin,
        });
    }
    Ok(found)
}

/// Every profile reachable by name, each as found (before `extends`), most specific place
/// first, and the files that could not be read, each with its error: one broken file
/// breaks only the runs that use it, not the choice among the others.
pub struct Listing {
    pub loaded: Vec<Loaded>,
    pub broken: Vec<(PathBuf, String)>,
}

pub fn all() -> Result<Listing> {
    let mut found = Vec::new();
    let mut broken = Vec::new();
    for (dir, origin) in search_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        for path in paths {
            match read_file(&path) {
                Ok(profile) => found.push(Loaded {
                    name: file_stem(&path),
                    profile,
                    origin: origin(path),
                }),
                Err(e) => broken.push((path, format!("{e:#}"))),
            }
        }
    }
    for (name, _) in BUILTINS {
        found.push(Loaded {
            name: name.to_string(),
            profile: builtin(name).context("a built-in profile")?,
            origin: Origin::Builtin,
        });
    }
    Ok(Listing {
        loaded: found,
        broken,
    })
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if !ok {
        bail!("invalid profile name {name:?}: use letters, digits, '-', '_' and '.', or give a path containing '/'");
    }
    Ok(())
}

/// Names of every profile reachable by name, deduplicated and sorted.
pub fn known_names() -> Vec<String> {
    let mut names: Vec<String> = BUILTINS.iter().map(|(n, _)| n.to_string()).collect();
    for (dir, _) in search_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                names.push(file_stem(&path));
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads and parses one profile file.
pub fn read_file(path: &Path) -> Result<Profile> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read profile {}; check the path and its permissions",
            path.display()
        )
    })?;
    parse(&text, &format!("profile {}", path.display()))
}

/// Parses profile JSON; errors name the file, line, column and the field's path.
pub fn parse(text: &str, what: &str) -> Result<Profile> {
    parse_with_path(text).map_err(|e| {
        anyhow::anyhow!(
            "{what}: line {}, column {}: {}",
            e.line,
            e.column,
            e.message
        )
    })
}

/// Why a profile text did not parse.
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    /// `path: detail`, with a "did you mean" hint where one fits.
    pub message: String,
}

pub fn parse_with_path(text: &str) -> std::result::Result<Profile, ParseError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, Profile>(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let detail = strip_position(&inner.to_string());
        let mut message = if path.is_empty() || path == "." {
            detail.clone()
        } else {
            format!("{path}: {detail}")
        };
        if let Some(hint) = did_you_mean(&detail) {
            message.push_str(&format!("; did you mean `{hint}`?"));
        }
        ParseError {
            line: inner.line(),
            column: inner.column(),
            message,
        }
    })
}

/// serde_json appends " at line L column C"; we report the position ourselves.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// For "unknown field `sorce`, expected one of `source`, ..." suggests the nearest name.
fn did_you_mean(detail: &str) -> Option<String> {
    let rest = detail
        .strip_prefix("unknown field `")
        .or_else(|| detail.strip_prefix("unknown variant `"))?;
    let (bad, expected) = rest.split_once('`')?;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|cand| (edit_distance(bad, cand), cand))
        .filter(|(d, cand)| *d <= 2.max(cand.len() / 3))
        .min()
        .map(|(_, cand)| cand.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse() {
        for (name, text) in BUILTINS {
            parse(text, name).unwrap_or_else(|e| panic!("built-in {name}: {e:#}"));
        }
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let err = parse("{\n  \"hostname\": \"a\",,\n}", "profile p.json").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("profile p.json: line 2, column "), "{msg}");
    }

    #[test]
    fn unknown_field_names_path_and_suggestion() {
        let text = r#"{"mounts": [{"type": "tmpfs", "destination": "/a"},
                                  {"type": "bind", "sorce": "/x", "destination": "/y"}]}"#;
        let msg = parse(text, "profile p.json").unwrap_err().to_string();
        assert!(msg.contains("mounts[1]"), "{msg}");
        assert!(msg.contains("unknown field `sorce`"), "{msg}");
        assert!(msg.contains("did you mean `source`?"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn unknown_top_level_field_is_rejected() {
        let msg = parse(r#"{"hostnme": "x"}"#, "p").unwrap_err().to_string();
        assert!(
            msg.contains("hostnme") && msg.contains("did you mean `hostname`?"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_names_path_and_expected_type() {
        let msg = parse(r#"{"user": {"uid": "root"}}"#, "p")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("user.uid"), "{msg}");
        assert!(msg.contains("expected u32"), "{msg}");
    }

    #[test]
    fn unknown_network_mode_lists_choices() {
        let msg = parse(r#"{"network": "hots"}"#, "p")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("did you mean `host`?"), "{msg}");
    }

    #[test]
    fn names_versus_paths() {
        assert!(is_path("./x"));
        assert!(is_path("x.json"));
        assert!(!is_path("default"));
        assert!(validate_name("../etc").is_err());
        assert!(validate_name(".hidden").is_err());
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("sorce", "source"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
