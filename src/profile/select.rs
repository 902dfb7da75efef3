//! Picking a profile per command: with no `--profile`, the profile whose `commands` lists
//! the command's base name, user profiles before system before built-in; else `default`.

use std::path::Path;

use anyhow::{bail, Result};

use super::layer;
use super::load::{self, Loaded};

/// The chosen profile (with `extends` applied) and a sentence saying why.
pub struct Choice {
    pub loaded: Loaded,
    pub why: String,
}

/// Resolves `--profile` if given, else picks by the command's name.
pub fn choose(explicit: Option<&str>, command: &str) -> Result<Choice> {
    if let Some(spec) = explicit {
        return Ok(Choice {
            loaded: layer::resolve(spec)?,
            why: "named with --profile".to_string(),
        });
    }
    let listing = load::all()?;
    for (path, error) in &listing.broken {
        eprintln!(
            "sbx: warning: left out the broken profile {}: {error}; `sbx profile check {}` \
             shows every problem",
            path.display(),
            path.display()
        );
    }
    let candidates = listing.loaded;
    let base = base_name(command);
    match pick(&candidates, &base)? {
        Some(found) => Ok(Choice {
            why: format!("its \"commands\" list {base:?}"),
            loaded: layer::resolve_loaded(found.clone())?,
        }),
        None => Ok(Choice {
            loaded: layer::resolve("default")?,
            why: format!("no --profile given and no profile lists {base:?} in \"commands\""),
        }),
    }
}

pub fn base_name(command: &str) -> String {
    Path::new(command)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| command.to_string())
}

/// The most specific profile claiming `base`; two of the same rank is an error naming both.
pub fn pick<'a>(candidates: &'a [Loaded], base: &str) -> Result<Option<&'a Loaded>> {
    let claiming: Vec<&Loaded> = candidates
        .iter()
        .filter(|l| l.profile.commands.iter().any(|c| c == base))
        .collect();
    let Some(best) = claiming.iter().map(|l| l.origin.rank()).min() else {
        return Ok(None);
    };
    let top: Vec<&&Loaded> = claiming
        .iter()
        .filter(|l| l.origin.rank() == best)
        .collect();
    if top.len() > 1 {
        bail!(
            "{base:?} is claimed by two profiles of the same rank: {} and {}; remove {base:?} \
             from the \"commands\" of one of them, or pick one with --profile",
            top[0].origin,
            top[1].origin
        );
    }
    Ok(Some(top[0]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load::{parse, Origin};
    use std::path::PathBuf;

    fn loaded(name: &str, origin: Origin, commands: &[&str]) -> Loaded {
        let json = serde_json::json!({ "commands": commands }).to_string();
        Loaded {
            name: name.into(),
            profile: parse(&json, name).unwrap(),
            origin,
        }
    }

    #[test]
    fn user_beats_system_beats_builtin() {
        let c = [
            loaded("b", Origin::Builtin, &["cargo"]),
            loaded(
                "s",
                Origin::System(PathBuf::from("/etc/s.json")),
                &["cargo", "make"],
            ),
            loaded(
                "u",
                Origin::User(PathBuf::from("/home/u/u.json")),
                &["cargo"],
            ),
        ];
        assert_eq!(pick(&c, "cargo").unwrap().unwrap().name, "u");
        assert_eq!(pick(&c, "make").unwrap().unwrap().name, "s");
        assert!(pick(&c, "npm").unwrap().is_none());
    }

    #[test]
    fn same_rank_conflict_names_both_files() {
        let c = [
            loaded("a", Origin::User(PathBuf::from("/p/a.json")), &["cargo"]),
            loaded("b", Origin::User(PathBuf::from("/p/b.json")), &["cargo"]),
        ];
        let err = pick(&c, "cargo").unwrap_err().to_string();
        assert!(
            err.contains("/p/a.json") && err.contains("/p/b.json"),
            "{err}"
        );
    }

    #[test]
    fn base_names() {
        assert_eq!(base_name("/usr/bin/cargo"), "cargo");
        assert_eq!(base_name("make"), "make");
    }
}
