//! `--env-file`: KEY=VALUE lines, as docker and podman read them.
//!
//! One variable per line; a line that is empty or starts with `#` (after blanks) is
//! skipped; the value is everything after the first `=`, taken literally (no quotes, no
//! expansion); a line with a name alone passes the caller's value of that name.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Reads the files named by `--env-file` into the `-e` list, before the entries given with
/// `-e` (which win). Done once, up front: a named sandbox records the result.
pub fn fold(files: &mut Vec<std::path::PathBuf>, env: &mut Vec<String>) -> Result<()> {
    let mut folded = Vec::new();
    for file in files.iter() {
        folded.extend(read(file)?);
    }
    folded.append(env);
    *env = folded;
    files.clear();
    Ok(())
}

/// The entries of one file, in order, in the same form as `-e` takes them.
pub fn read(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read(path)
        .with_context(|| format!("--env-file {}: cannot read it", path.display()))?;
    let text = String::from_utf8(text)
        .map_err(|_| anyhow::anyhow!("--env-file {}: not UTF-8 text", path.display()))?;
    parse(&text).with_context(|| format!("--env-file {}", path.display()))
}

fn parse(text: &str) -> Result<Vec<String>> {
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
        entries.push(match line.split_once('=') {
            Some(_) => line.to_string(),
            None => key.to_string(),
        });
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
        assert_eq!(
            parse(text).unwrap(),
            ["A=1", "C=\"q\" # kept", "D=a=b", "E", "F="]
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
