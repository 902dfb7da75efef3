//! `sbx profile ls | show | check | which | schema`.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::load::{self, Loaded};
use super::{layer, select, Profile};
use crate::cli::ProfileCommand;
use crate::error::exit::SBX_ERROR;

pub fn run(cmd: ProfileCommand) -> Result<i32> {
    match cmd {
        ProfileCommand::Ls => ls(),
        ProfileCommand::Show { name } => show(&name),
        ProfileCommand::Check { files } => Ok(check_files(&files)),
        ProfileCommand::Which { command } => which(&command),
        ProfileCommand::Schema => {
            println!("{}", schema());
            Ok(0)
        }
    }
}

fn ls() -> Result<i32> {
    let listing = load::all()?;
    let mut rows: Vec<[String; 4]> = listing
        .loaded
        .iter()
        .map(|l| {
            [
                l.name.clone(),
                l.origin.to_string(),
                l.profile.commands.join(","),
                l.profile.description.clone().unwrap_or_default(),
            ]
        })
        .collect();
    for (path, error) in &listing.broken {
        let name = path.file_stem().unwrap_or_default().to_string_lossy();
        rows.push([
            name.into_owned(),
            path.display().to_string(),
            "-".into(),
            format!("BROKEN: {error}"),
        ]);
    }
    // Columns as wide as their longest entry, so long names keep them aligned.
    let width = |i: usize, head: &str| {
        rows.iter()
            .map(|r| r[i].len())
            .max()
            .unwrap_or(0)
            .max(head.len())
    };
    let (w0, w1, w2) = (width(0, "NAME"), width(1, "FROM"), width(2, "COMMANDS"));
    println!(
        "{:w0$}  {:w1$}  {:w2$}  DESCRIPTION",
        "NAME", "FROM", "COMMANDS"
    );
    for r in &rows {
        println!("{:w0$}  {:w1$}  {:w2$}  {}", r[0], r[1], r[2], r[3]);
    }
    Ok(0)
}

fn show(name: &str) -> Result<i32> {
    let loaded = layer::resolve(name)?;
    let caller = crate::planner::Caller::from_process()?;
    let expanded = caller.vars.expand_profile(&loaded.profile)?;
    println!("{}", serde_json::to_string_pretty(&expanded)?);
    Ok(0)
}

fn which(command: &[String]) -> Result<i32> {
    let choice = select::choose(None, &command[0])?;
    println!(
        "{} ({}): {}",
        choice.loaded.name, choice.loaded.origin, choice.why
    );
    Ok(0)
}

/// The JSON Schema of a profile, generated from the serde types.
pub fn schema() -> String {
    let schema = schemars::schema_for!(Profile);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

fn check_files(files: &[std::path::PathBuf]) -> i32 {
    let mut failed = false;
    for file in files {
        let problems = match std::fs::read_to_string(file) {
            Ok(text) => problems(&text, file),
            Err(e) => vec![format!("cannot read {}: {e}", file.display())],
        };
        if problems.is_empty() {
            println!("{}: ok", file.display());
        } else {
            failed = true;
            for p in problems {
                eprintln!("sbx: error: {p}");
            }
        }
    }
    if failed {
        SBX_ERROR
    } else {
        0
    }
}

/// Every problem in one profile: each top-level field and each mount is checked on its
/// own, so one mistake does not hide the next; then the whole is resolved like a run would.
pub fn problems(text: &str, file: &Path) -> Vec<String> {
    let what = format!("profile {}", file.display());
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => return vec![first_error(text, &what)],
    };
    let Value::Object(fields) = value else {
        return vec![format!("{what}: a profile is a JSON object")];
    };
    let mut found = Vec::new();
    for (key, field) in &fields {
        let line = line_of_key(text, key);
        match (key.as_str(), field) {
            ("mounts", Value::Array(mounts)) => {
                for (i, m) in mounts.iter().enumerate() {
                    let single = serde_json::json!({ "mounts": [m] }).to_string();
                    if let Err(e) = load::parse_with_path(&single) {
                        let message = e.message.replacen("mounts[0]", &format!("mounts[{i}]"), 1);
                        found.push(format!("{what}: line {line}: {message}"));
                    }
                }
            }
            _ => {
                let single = serde_json::json!({ key: field }).to_string();
                if let Err(e) = load::parse_with_path(&single) {
                    found.push(format!("{what}: line {line}: {}", e.message));
                }
            }
        }
    }
    if found.is_empty() {
        if let Err(e) = resolves(text, file) {
            found.push(format!("{what}: {e:#}"));
        }
    }
    found
}

fn first_error(text: &str, what: &str) -> String {
    match load::parse(text, what) {
        Err(e) => e.to_string(),
        Ok(_) => format!("{what}: invalid"),
    }
}

/// The line where `"key":` first appears at the top level (good enough for a message).
fn line_of_key(text: &str, key: &str) -> usize {
    let needle = format!("\"{key}\"");
    text.lines()
        .position(|l| l.contains(&needle))
        .map_or(1, |i| i + 1)
}

/// Builds a plan from the profile as `sbx run -- true` would, to catch what only shows
/// then: unknown variables, missing parents, missing bind sources, bad paths.
fn resolves(text: &str, file: &Path) -> Result<()> {
    let mut profile = load::parse(text, &format!("profile {}", file.display()))?;
    if let Some(super::RootfsSpec::Image(image)) = &profile.rootfs {
        // Whether the image is imported yet is the store's business, not the profile's.
        crate::image::ImageName::parse(&image.image).context("rootfs.image")?;
        if let Some(reference) = &image.pull {
            crate::image::ImageName::parse(reference).context("rootfs.pull")?;
        }
        profile.rootfs = None;
    }
    let loaded = layer::resolve_loaded(Loaded {
        // Named as `sbx run -p` would name it, so an extends chain reads the same.
        name: profile.name.clone().unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        profile,
        origin: load::Origin::File(file.to_path_buf()),
    })?;
    let caller = crate::planner::Caller::from_process()?;
    let overrides = crate::planner::Overrides {
        command: vec!["true".into()],
        ..Default::default()
    };
    // Planned against this host, which it leaves as it is: a bind source to create, an
    // upper directory or a cgroup controller is only listed in the Plan's setup.
    let plan = crate::planner::build(&crate::planner::Request {
        loaded: &loaded,
        overrides: &overrides,
        caller: &caller,
        host: &crate::planner::HostFacts::read(),
        instance: None,
    })
    .context("does not resolve")?;
    if let Some(warning) = crate::planner::limits::not_enforced_warning(&plan.limits) {
        eprintln!("sbx: warning: {warning}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_file_is_up_to_date() {
        let committed = include_str!("../../profiles/schema.json");
        assert_eq!(
            committed.trim(),
            schema().trim(),
            "profiles/schema.json is out of date: run `cargo run -- profile schema > profiles/schema.json`"
        );
    }

    #[test]
    fn check_reports_every_problem() {
        let text = r#"{
  "hostnme": "x",
  "mounts": [
    {"type": "bind", "sorce": "/a", "destination": "/b"},
    {"type": "tmpfs", "destination": "/t", "mode": 7}
  ],
  "network": "hots"
}"#;
        let found = problems(text, Path::new("p.json"));
        let all = found.join("\n");
        assert_eq!(found.len(), 4, "{all}");
        assert!(
            all.contains("hostnme") && all.contains("did you mean `hostname`"),
            "{all}"
        );
        assert!(all.contains("mounts[0]") && all.contains("sorce"), "{all}");
        assert!(all.contains("mounts[1].mode"), "{all}");
        assert!(all.contains("hots"), "{all}");
    }

    #[test]
    fn check_accepts_builtins() {
        for (name, text) in load::BUILTINS {
            let found = problems(text, Path::new(name));
            assert!(found.is_empty(), "{name}: {found:?}");
        }
    }

    #[test]
    fn check_resolves_semantics() {
        let found = problems(r#"{"workdir": "${NOPE}"}"#, Path::new("p.json"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("NOPE"), "{found:?}");
    }

    #[test]
    fn check_creates_nothing() {
        let dir = std::env::temp_dir().join(format!("sbx-check-{}", std::process::id()));
        let text = format!(
            r#"{{"mounts": [{{"type": "bind", "source": "{}", "destination": "/d", "create": true}}]}}"#,
            dir.display()
        );
        let found = problems(&text, Path::new("p.json"));
        assert!(found.is_empty(), "{found:?}");
        assert!(!dir.exists(), "profile check created {}", dir.display());
    }
}
