//! `${VAR}` expansion in profile strings. An unknown variable is an error, never "".

use anyhow::{bail, Result};

use super::{ImageRootfs, Profile, RootfsSpec};

/// What the variables in a profile expand to; read once from the caller's process.
#[derive(Debug, Clone)]
pub struct Vars {
    pub pwd: String,
    pub home: String,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// The caller's environment, for `${env:NAME}` and passed-through variables: a
    /// snapshot, so tests need not touch the real environment and a named sandbox can
    /// record it.
    pub env: std::collections::BTreeMap<String, String>,
}

impl Vars {
    /// Expands `${PWD}`, `${HOME}`, `${USER}`, `${UID}`, `${GID}`, `${XDG_RUNTIME_DIR}` (your
    /// runtime directory, `/run/user/UID` when unset) and `${env:NAME}`;
    /// `$$` is a literal `$`. `what` names the field for error messages.
    pub fn expand(&self, input: &str, what: &str) -> Result<String> {
        let mut out = String::with_capacity(input.len());
        let mut rest = input;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
                continue;
            }
            let Some(body) = after.strip_prefix('{') else {
                bail!("{what}: a lone `$` in {input:?}; write `$$` for a literal dollar sign or `${{NAME}}` for a variable");
            };
            let Some(end) = body.find('}') else {
                bail!("{what}: unterminated `${{` in {input:?}");
            };
            let name = &body[..end];
            out.push_str(&self.lookup(name, input, what)?);
            rest = &body[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The profile with every variable expanded; errors name the field.
    pub fn expand_profile(&self, p: &Profile) -> Result<Profile> {
        let opt =
            |v: &Option<String>, what: &str| v.as_ref().map(|s| self.expand(s, what)).transpose();
        let mut out = p.clone();
        out.rootfs = match &p.rootfs {
            Some(RootfsSpec::Path(path)) => Some(RootfsSpec::Path(self.expand(path, "rootfs")?)),
            Some(RootfsSpec::Image(image)) => Some(RootfsSpec::Image(ImageRootfs {
                upper: opt(&image.upper, "rootfs.upper")?,
                ..image.clone()
            })),
            None => None,
        };
        out.workdir = opt(&p.workdir, "workdir")?;
        out.hostname = opt(&p.hostname, "hostname")?;
        for (i, m) in out.mounts.iter_mut().enumerate() {
            m.source = opt(&m.source, &format!("mounts[{i}].source"))?;
            m.destination = self.expand(&m.destination, &format!("mounts[{i}].destination"))?;
        }
        for (key, value) in out.env.set.iter_mut() {
            *value = self.expand(value, &format!("env.set.{key}"))?;
        }
        Ok(out)
    }

    fn lookup(&self, name: &str, input: &str, what: &str) -> Result<String> {
        Ok(match name {
            "PWD" => self.pwd.clone(),
            "HOME" => self.home.clone(),
            "USER" => self.user.clone(),
            "UID" => self.uid.to_string(),
            "GID" => self.gid.to_string(),
            // Your runtime directory: where agents and session buses listen.
            "XDG_RUNTIME_DIR" => match self.env.get("XDG_RUNTIME_DIR") {
                Some(dir) if dir.starts_with('/') => dir.clone(),
                _ => format!("/run/user/{}", self.uid),
            },
            _ => match name.strip_prefix("env:") {
                Some(var) => match self.env.get(var).cloned() {
                    Some(value) => value,
                    None => bail!(
                        "{what}: ${{env:{var}}} in {input:?} but {var} is not set in your environment"
                    ),
                },
                None => bail!(
                    "{what}: unknown variable ${{{name}}} in {input:?}; known: ${{PWD}}, ${{HOME}}, \
                     ${{USER}}, ${{UID}}, ${{GID}}, ${{XDG_RUNTIME_DIR}}, ${{env:NAME}}"
                ),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            pwd: "/src/proj".into(),
            home: "/home/alice".into(),
            user: "alice".into(),
            uid: 1000,
            gid: 1001,
            env: [("EDITOR".to_string(), "vi".to_string())].into(),
        }
    }

    #[test]
    fn expands_known_variables() {
        let v = vars();
        assert_eq!(
            v.expand("${HOME}/.cache:${PWD}", "x").unwrap(),
            "/home/alice/.cache:/src/proj"
        );
        assert_eq!(
            v.expand("${USER}-${UID}-${GID}", "x").unwrap(),
            "alice-1000-1001"
        );
        assert_eq!(v.expand("${env:EDITOR}", "x").unwrap(), "vi");
        assert_eq!(v.expand("cost $$5", "x").unwrap(), "cost $5");
        assert_eq!(v.expand("plain", "x").unwrap(), "plain");
    }

    #[test]
    fn unknown_variable_is_an_error_naming_it() {
        let err = vars()
            .expand("${HOMEDIR}/x", "mounts[0].source")
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("HOMEDIR") && msg.contains("mounts[0].source"),
            "{msg}"
        );
    }

    #[test]
    fn unset_env_variable_is_an_error() {
        let msg = vars()
            .expand("${env:NOPE}", "workdir")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("NOPE is not set"), "{msg}");
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(vars().expand("${HOME", "x").is_err());
        assert!(vars().expand("$HOME", "x").is_err());
    }
}
