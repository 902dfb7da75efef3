//! Protected paths.

use super::*;

/// A working directory holding a git repository (made with git when it is installed).
fn repo() -> TempDir {
    let dir = TempDir::new();
    let git = Command::new("git")
        .args(["init", "-q"])
        .arg(dir.path())
        .output();
    match git {
        Ok(out) if out.status.success() => {}
        _ => {
            fs::create_dir_all(dir.join(".git/hooks")).unwrap();
            fs::write(
                dir.join(".git/config"),
                "[core]\n\trepositoryformatversion = 0\n",
            )
            .unwrap();
            fs::write(dir.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        }
    }
    assert!(dir.join(".git/hooks").is_dir() && dir.join(".git/config").is_file());
    dir
}

/// The default profile, and strict with the repository bound in and current.
fn repo_profiles(repo: &TempDir) -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("default", vec![]),
        (
            "strict",
            ["-p", "strict", "--bind", repo.str(), "-w", repo.str()]
                .map(String::from)
                .to_vec(),
        ),
    ]
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn git_hook_cannot_be_planted() {
    if !require_sandbox() {
        return;
    }
    let repo = repo();
    for (profile, options) in repo_profiles(&repo) {
        let out = sandbox_sh(
            repo.path(),
            &as_strs(&options),
            "printf '#!/bin/sh\\necho pwned\\n' > .git/hooks/pre-commit && echo planted; \
             touch .git/hooks/post-checkout && echo planted; \
             echo build > output.txt && echo other-ok",
        );
        assert_eq!(out.lines(), ["other-ok"], "{profile}\n{out}");
        for hook in ["pre-commit", "post-checkout"] {
            assert!(
                !repo.join(".git/hooks").join(hook).exists(),
                "{profile}: the hook {hook} was planted"
            );
        }
        assert!(repo.join("output.txt").exists());
        fs::remove_file(repo.join("output.txt")).unwrap();
    }
}

#[test]
fn git_hooks_directory_cannot_be_swapped() {
    if !require_sandbox() {
        return;
    }
    let repo = repo();
    use std::os::unix::fs::MetadataExt;
    let hooks_ino = fs::metadata(repo.join(".git/hooks")).unwrap().ino();
    let out = sandbox_sh(
        repo.path(),
        &[],
        "mv .git/hooks .git/hooks-old && echo moved; \
         rm -rf .git/hooks && echo removed; \
         mkdir -p elsewhere/hooks && mv elsewhere/hooks .git/hooks && echo swapped; \
         test -d elsewhere/hooks && echo other-ok",
    );
    // The sandbox ran, could write the repository, and could not touch the hooks.
    out.assert_success();
    assert_eq!(out.lines(), ["other-ok"], "{out}");
    assert!(repo.join(".git/hooks").is_dir());
    assert_eq!(
        fs::metadata(repo.join(".git/hooks")).unwrap().ino(),
        hooks_ino,
        "the hooks directory was replaced"
    );
    assert!(!repo.join(".git/hooks-old").exists());
    assert!(repo.join("elsewhere/hooks").is_dir());
}

#[test]
fn git_config_cannot_be_changed() {
    if !require_sandbox() {
        return;
    }
    let repo = repo();
    let before = fs::read(repo.join(".git/config")).unwrap();
    for (profile, options) in repo_profiles(&repo) {
        // core.fsmonitor runs a command on the next `git status` outside the sandbox.
        let out = sandbox_sh(
            repo.path(),
            &as_strs(&options),
            "printf '[core]\\n\\tfsmonitor = touch /tmp/pwned\\n' >> .git/config && echo appended; \
             printf '[core]\\n\\tfsmonitor = evil\\n' > new-config; \
             mv new-config .git/config && echo replaced; \
             rm -f .git/config && echo removed; \
             echo more >> notes.txt && echo other-ok",
        );
        assert_eq!(out.lines(), ["other-ok"], "{profile}\n{out}");
        assert_eq!(
            fs::read(repo.join(".git/config")).unwrap(),
            before,
            "{profile}: .git/config changed"
        );
    }
}

#[test]
fn git_directory_cannot_be_renamed() {
    if !require_sandbox() {
        return;
    }
    let repo = repo();
    let out = sandbox_sh(
        repo.path(),
        &[],
        "mv .git .git2 && echo moved; mkdir d && mv d d2 && echo other-moved",
    );
    assert_eq!(out.lines(), ["other-moved"], "{out}");
    assert!(repo.join(".git/config").is_file());
    assert!(!repo.join(".git2").exists());
}

#[test]
fn protect_option_keeps_an_existing_file_read_only() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    fs::write(dir.join("secret.txt"), "original\n").unwrap();
    let script = "cat secret.txt; echo leaked >> secret.txt && echo appended; \
                  rm -f secret.txt && echo removed; echo x > other.txt && echo other-ok";
    let out = sandbox_sh(dir.path(), &["--protect", "secret.txt"], script);
    assert_eq!(out.lines(), ["original", "other-ok"], "{out}");
    assert_eq!(
        fs::read_to_string(dir.join("secret.txt")).unwrap(),
        "original\n"
    );
    // Control: unprotected, the same script changes it.
    let out = sandbox_sh(dir.path(), &[], script);
    assert_eq!(
        out.lines(),
        ["original", "appended", "removed", "other-ok"],
        "{out}"
    );
}

#[test]
fn protect_option_covers_a_file_not_created_yet() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &["--protect", "newfile"],
        "echo planted > newfile && echo created; echo x > other && echo other-ok",
    );
    assert_eq!(out.lines(), ["other-ok"], "{out}");
    // sbx may leave an empty placeholder; never what the sandbox wrote.
    let left = fs::read_to_string(dir.join("newfile")).unwrap_or_default();
    assert_eq!(left, "", "the sandbox created newfile");
    // Control: unprotected, the sandbox can create it.
    let _ = fs::remove_file(dir.join("newfile"));
    let out = sandbox_sh(dir.path(), &[], "echo planted > newfile && echo created");
    assert_eq!(out.lines(), ["created"], "control\n{out}");
}

#[test]
fn protect_option_applies_under_every_writable_bind() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let other = TempDir::new();
    fs::write(other.join("secret.txt"), "original\n").unwrap();
    let script = format!(
        "echo leaked >> {0}/secret.txt && echo appended; echo x > {0}/other && echo other-ok",
        other.str()
    );
    let out = sandbox_sh(
        dir.path(),
        &["--bind", other.str(), "--protect", "secret.txt"],
        &script,
    );
    assert_eq!(out.lines(), ["other-ok"], "{out}");
    assert_eq!(
        fs::read_to_string(other.join("secret.txt")).unwrap(),
        "original\n"
    );
}

#[test]
fn protect_option_takes_absolute_paths() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    fs::create_dir(dir.join("sub")).unwrap();
    let target = dir.join("sub/config.toml");
    fs::write(&target, "original\n").unwrap();
    let t = target.to_str().unwrap();
    let script =
        format!("echo leaked >> {t} && echo appended; echo x > sub/other && echo other-ok");
    let out = sandbox_sh(dir.path(), &["--protect", t], &script);
    assert_eq!(out.lines(), ["other-ok"], "{out}");
    assert_eq!(fs::read_to_string(&target).unwrap(), "original\n");
}

#[test]
fn profile_protect_list_keeps_paths_read_only() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    fs::write(dir.join(".env"), "TOKEN=original\n").unwrap();
    fs::create_dir(dir.join("secrets")).unwrap();
    fs::write(dir.join("secrets/key"), "original\n").unwrap();
    let profile = security_profile(&dir, "protect", r#"{"protect": [".env", "secrets/"]}"#);
    let out = sandbox_sh(
        dir.path(),
        &["-p", &profile],
        "echo TOKEN=leaked >> .env && echo env-changed; \
         echo x >> secrets/key && echo key-changed; \
         echo x > secrets/new && echo key-added; echo x > other && echo other-ok",
    );
    assert_eq!(out.lines(), ["other-ok"], "{out}");
    assert_eq!(
        fs::read_to_string(dir.join(".env")).unwrap(),
        "TOKEN=original\n"
    );
    assert_eq!(
        fs::read_to_string(dir.join("secrets/key")).unwrap(),
        "original\n"
    );
    assert!(!dir.join("secrets/new").exists());
}
