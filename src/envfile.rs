//! `--env-file`: KEY=VALUE lines, as docker and podman read them.
//!
//! One variable per line; a line that is empty or starts with `#` (after blanks) is
//! skipped; the value is everything after the first `=`, taken literally (no quotes, no
//! expansion); a line with a name alone passes the caller's value of that name.
//!
//! That last rule is docker's, and a `.env` from an untrusted checkout can use it to pull
//! `GITHUB_TOKEN` or `AWS_SECRET_ACCESS_KEY` into the sandbox; so each name taken from the
//! caller's environment this way is named in a warning on stderr, once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Reads the files named by `--env-file` into the `-e` list, before the entries given with
/// `-e` (which win). Done once, up front: a named sandbox records the result. `host` is the
/// environment a bare name takes its value from (for `exec`, the one recorded at creation).
pub fn fold(
    files: &mut Vec<std::path::PathBuf>,
    env: &mut Vec<String>,
    host: &BTreeMap<String, String>,
) -> Result<()> {
    let mut folded = Vec::new();
    let mut warned = BTreeSet::new();
    for file in files.iter() {
        for (line, entry) in read(file)? {
            let warning = host_value_warning(file, line, &entry, env, host, &mut warned);
            if let Some(warning) = warning {
                eprintln!("sbx: warning: {warning}");
            }
            folded.push(entry);
        }
    }
    folded.append(env);
    *env = folded;
    files.clear();
    Ok(())
}

/// A bare `NAME` line that takes a value from our environment (and `-e` does not name it
/// too, which would be the caller's own choice) is worth one line, once per name.
fn host_value_warning(
    file: &Path,
    line: usize,
    entry: &str,
    env: &[String],
    host: &BTreeMap<String, String>,
    warned: &mut BTreeSet<String>,
) -> Option<String> {
    if entry.contains('=') || !host.contains_key(entry) {
        return None;
    }
    let named_by_e = env
        .iter()
        .any(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == entry);
    if named_by_e || !warned.insert(entry.to_string()) {
        return None;
    }
    Some(format!(
        "--env-file {}:{line}: passing the host's value of {entry}; write {entry}=VALUE to \
         set it, or remove the line",
        file.display()
    ))
}

/// The entries of one file, in order, in the same form as `-e` takes them, each with its
/// line number.
pub fn read(path: &Path) -> Result<Vec<(usize, String)>> {
    let text = std::fs::read(path)
        .with_context(|| format!("--env-file {}: cannot read it", path.display()))?;
    let text = String::from_utf8(text)
        .map_err(|_| anyhow::anyhow!("--env-file {}: not UTF-8 text", path.display()))?;
    parse(&text).with_context(|| format!("--env-file {}", path.display()))
}

fn parse(text: &str) -> Result<Vec<(usize, String)>> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let key = line.split_once('=').map_or(line.trim_end(), |(k, _)| k);
        let valid = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            bail!(
                "line {}: {raw:?} is not KEY=VALUE (a name of letters, digits and `_`, then `=`)",
                i + 1
            );
        }
        entries.push((
            i + 1,
            match line.split_once('=') {
                Some(_) => line.to_string(),
                None => key.to_string(),
            },
        ));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_comments_and_literal_values() {
        let text = "# a comment\n\nA=1\n  B = x\nexport C=\"q\" # not a comment\nD=a=b\nE\n";
        let err = parse(text).unwrap_err();
        assert!(format!("{err:#}").contains("line 4"), "{err:#}");
        let text = "# a comment\n\nA=1\nexport C=\"q\" # kept\nD=a=b\nE\nF=\n";
        let entries: Vec<String> = parse(text).unwrap().into_iter().map(|(_, e)| e).collect();
        assert_eq!(entries, ["A=1", "C=\"q\" # kept", "D=a=b", "E", "F="]);
        let lines: Vec<usize> = parse(text).unwrap().into_iter().map(|(l, _)| l).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7]);
    }

    #[test]
    fn bare_names_from_the_host_warn_once() {
        let file = Path::new("/w/.env");
        let mut warned = BTreeSet::new();
        let host: BTreeMap<String, String> = [("PATH".to_string(), "/bin".to_string())].into();
        // A name the host does not set passes nothing and says nothing.
        let first = host_value_warning(file, 3, "PATH", &[], &host, &mut warned).unwrap();
        assert_eq!(
            first,
            "--env-file /w/.env:3: passing the host's value of PATH; write PATH=VALUE to set \
             it, or remove the line"
        );
        assert_eq!(
            host_value_warning(file, 9, "PATH", &[], &host, &mut warned),
            None
        );
        let unset = "HOME";
        assert_eq!(
            host_value_warning(file, 4, unset, &[], &host, &mut warned),
            None
        );
        assert_eq!(
            host_value_warning(file, 5, "A=1", &[], &host, &mut warned),
            None
        );
        let mut fresh = BTreeSet::new();
        let e = ["PATH=/bin".to_string()];
        assert_eq!(
            host_value_warning(file, 3, "PATH", &e, &host, &mut fresh),
            None
        );
    }

    #[test]
    fn bad_names_name_the_line() {
        for bad in ["1A=x", "A-B=x", "=x", "A B"] {
            let err = parse(&format!("OK=1\n{bad}\n")).unwrap_err();
            assert!(format!("{err}").starts_with("line 2:"), "{bad}: {err}");
        }
    }
}
