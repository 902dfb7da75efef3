//! Registry credentials from the files `podman login` and `docker login` write: the
//! `auths` map of `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `$XDG_CONFIG_HOME/containers/auth.json` and `~/.docker/config.json`
//! (`$DOCKER_CONFIG/config.json`), first match wins, as podman reads them. Each entry's
//! `auth` field is base64 of `user:password`. Credential helpers (`credsStore`,
//! `credHelpers`) are not run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde::Deserialize;

/// A user name and password for one registry, and the file they came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub source: PathBuf,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password, not even in a debug dump.
        write!(f, "{} from {}", self.username, self.source.display())
    }
}

#[derive(Deserialize, Default)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

/// The credential files, in the order they are searched.
pub fn files() -> Vec<PathBuf> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let home = env("HOME").map(PathBuf::from);
    let mut files = Vec::new();
    if let Some(runtime) = env("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(runtime).join("containers/auth.json"));
    }
    let config = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".config")));
    if let Some(config) = config {
        files.push(config.join("containers/auth.json"));
    }
    let docker = env("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| home.map(|h| h.join(".docker")));
    if let Some(docker) = docker {
        files.push(docker.join("config.json"));
    }
    files
}

/// Credentials for `repository` on `registry` (as the reference names it, `docker.io` for
/// Docker Hub) from the first of `files` that has an entry; None for anonymous access.
/// A file that exists but cannot be read or parsed is an error naming it.
pub fn lookup(files: &[PathBuf], registry: &str, repository: &str) -> Result<Option<Credentials>> {
    let wanted = candidates(registry, repository);
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("read {}", file.display())),
        };
        let parsed: AuthFile = serde_json::from_str(&text)
            .with_context(|| format!("parse {} (registry credentials)", file.display()))?;
        let entries: BTreeMap<String, &AuthEntry> = parsed
            .auths
            .iter()
            .map(|(key, entry)| (normalize_key(key), entry))
            .collect();
        for key in &wanted {
            let Some(entry) = entries.get(key) else {
                continue;
            };
            let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
                continue;
            };
            return decode(auth, file, key).map(Some);
        }
    }
    Ok(None)
}

/// Keys that may hold credentials for the repository, most specific first:
/// `registry/ns/repo`, `registry/ns`, `registry` (with Docker Hub's aliases).
fn candidates(registry: &str, repository: &str) -> Vec<String> {
    let hosts: Vec<&str> = if is_docker_hub(registry) {
        vec!["docker.io"]
    } else {
        vec![registry]
    };
    let mut keys = Vec::new();
    for host in hosts {
        let mut path = repository.to_string();
        loop {
            keys.push(format!("{host}/{path}"));
            match path.rfind('/') {
                Some(slash) => path.truncate(slash),
                None => break,
            }
        }
        keys.push(host.to_string());
    }
    keys
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// `https://index.docker.io/v1/` and `quay.io/org/` become `docker.io` and `quay.io/org`.
fn normalize_key(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key)
        .trim_end_matches('/');
    let (host, path) = key.split_once('/').unwrap_or((key, ""));
    if is_docker_hub(host) {
        let path = if path == "v1" || path == "v2" {
            ""
        } else {
            path
        };
        return if path.is_empty() {
            "docker.io".to_string()
        } else {
            format!("docker.io/{path}")
        };
    }
    key.to_string()
}

fn decode(auth: &str, file: &Path, key: &str) -> Result<Credentials> {
    let bad = || format!("the auth field for {key} in {}", file.display());
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .with_context(|| format!("{} is not valid base64", bad()))?;
    let text = String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", bad()))?;
    let Some((username, password)) = text.split_once(':') else {
        bail!("{} does not decode to USER:PASSWORD", bad());
    };
    Ok(Credentials {
        username: username.to_string(),
        password: password.to_string(),
        source: file.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sbx-auth-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn first_file_with_an_entry_wins_and_most_specific_key_first() {
        let dir = tempdir();
        let podman = write(
            &dir,
            "auth.json",
            &format!(
                r#"{{"auths": {{"quay.io": {{"auth": "{}"}}, "quay.io/org/app": {{"auth": "{}"}}}}}}"#,
                b64("general:one"),
                b64("scoped:two")
            ),
        );
        let docker = write(
            &dir,
            "config.json",
            &format!(
                r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{}"}}, "127.0.0.1:5000": {{"auth": "{}"}}}}, "credsStore": "desktop"}}"#,
                b64("hub:three"),
                b64("local:pa:ss")
            ),
        );
        let files = vec![dir.join("missing.json"), podman.clone(), docker.clone()];
        let c = lookup(&files, "quay.io", "org/app").unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("scoped", "two")
        );
        assert_eq!(c.source, podman);
        let c = lookup(&files, "quay.io", "other/app").unwrap().unwrap();
        assert_eq!(c.username, "general");
        let c = lookup(&files, "docker.io", "library/busybox")
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "hub");
        let c = lookup(&files, "127.0.0.1:5000", "x").unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("local", "pa:ss")
        );
        assert_eq!(c.source, docker);
        assert!(lookup(&files, "ghcr.io", "x").unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn broken_files_are_errors_naming_them() {
        let dir = tempdir();
        let bad_json = write(&dir, "a.json", "{not json");
        let err = lookup(&[bad_json], "quay.io", "x").unwrap_err();
        assert!(format!("{err:#}").contains("a.json"), "{err:#}");
        let bad_auth = write(
            &dir,
            "b.json",
            &format!(
                r#"{{"auths": {{"quay.io": {{"auth": "{}"}}}}}}"#,
                b64("nocolon")
            ),
        );
        let err = lookup(&[bad_auth], "quay.io", "x").unwrap_err();
        assert!(format!("{err:#}").contains("USER:PASSWORD"), "{err:#}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn debug_output_hides_the_password() {
        let c = Credentials {
            username: "u".into(),
            password: "secret".into(),
            source: "/f".into(),
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
