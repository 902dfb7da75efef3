//! The command's environment: the image's, beneath the profile's and the overrides'.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::plan::DEFAULT_PATH;
use crate::profile::vars::Vars;
use crate::profile::Profile;

/// `image`: the image's config `Env` when the root is an image (None otherwise). As in
/// podman, the image's own settings win over what the profile passes from the host (a
/// host `PATH` names the host's directories); only `-e NAME` asks for the host's value
/// by name, and `env.set` and `-e NAME=VALUE` set it outright.
pub(super) fn resolve(
    profile: &Profile,
    image: Option<&[String]>,
    cli: &[String],
    vars: &Vars,
) -> Result<BTreeMap<String, String>> {
    // The image's own environment first, beneath everything the profile and CLI say.
    let mut env: BTreeMap<String, String> = image
        .unwrap_or_default()
        .iter()
        .filter_map(|item| item.split_once('='))
        .filter(|(key, _)| validate_env_key(key, "image env").is_ok())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let from_image: Vec<String> = env.keys().cloned().collect();
    for key in &profile.env.pass {
        validate_env_key(key, "env.pass")?;
        let image_decides = image.is_some() && (key == "PATH" || from_image.contains(key));
        if let (false, Some(value)) = (image_decides, vars.env.get(key)) {
            env.insert(key.clone(), value.clone());
        }
    }
    for item in cli.iter().filter(|i| !i.contains('=')) {
        validate_env_key(item, "-e")?;
        if let Some(value) = vars.env.get(item) {
            env.insert(item.clone(), value.clone());
        }
    }
    for (key, value) in &profile.env.set {
        validate_env_key(key, "env.set")?;
        env.insert(key.clone(), value.clone());
    }
    for item in cli {
        if let Some((key, value)) = item.split_once('=') {
            validate_env_key(key, "-e")?;
            env.insert(key.to_string(), value.to_string());
        }
    }
    Ok(env)
}

/// The environment with a PATH for an image root, and the PATH the command is looked up in.
pub(super) fn with_path(
    mut env: BTreeMap<String, String>,
    image: bool,
) -> (BTreeMap<String, String>, String) {
    if image && !env.contains_key("PATH") {
        // An image's shell needs a PATH; rootfs tarballs carry no config to give one.
        env.insert("PATH".to_string(), DEFAULT_PATH.to_string());
    }
    let search_path = env
        .get("PATH")
        .cloned()
        .unwrap_or_else(|| DEFAULT_PATH.to_string());
    (env, search_path)
}

fn validate_env_key(key: &str, what: &str) -> Result<()> {
    if key.is_empty() || key.contains(['=', '\0']) {
        bail!("{what}: invalid environment variable name {key:?}");
    }
    Ok(())
}
