//! Profiles as users meet them: user, system and built-in profiles, picked by command or by
//! name, layered with `extends`, and the sandbox really getting what the profile says.
//!
//! Every test points sbx at private profile directories (XDG_CONFIG_HOME and
//! SBX_SYSTEM_PROFILE_DIR) and, where `${HOME}` matters, at a private HOME, so nothing of the
//! test user's own configuration is read or changed.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A private set of profile directories and a home for one test.
struct Profiles {
    dir: TempDir,
}

impl Profiles {
    fn new() -> Profiles {
        let p = Profiles {
            // Not under /tmp: the sandbox's /tmp is private, so a home there would be hidden.
            dir: TempDir::in_home(),
        };
        fs::create_dir_all(p.user_dir()).unwrap();
        fs::create_dir_all(p.system_dir()).unwrap();
        fs::create_dir_all(p.home()).unwrap();
        fs::create_dir_all(p.work()).unwrap();
        p
    }
    fn user_dir(&self) -> PathBuf {
        self.dir.join("config/sbx/profiles")
    }
    fn system_dir(&self) -> PathBuf {
        self.dir.join("system")
    }
    fn home(&self) -> PathBuf {
        self.dir.join("home")
    }
    fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    fn user(&self, name: &str, json: &str) -> PathBuf {
        let path = self.user_dir().join(format!("{name}.json"));
        fs::write(&path, json).unwrap();
        path
    }
    fn system(&self, name: &str, json: &str) -> PathBuf {
        let path = self.system_dir().join(format!("{name}.json"));
        fs::write(&path, json).unwrap();
        path
    }
    /// `sbx ARGS...` with this test's profile directories and home, in its work directory.
    fn sbx(&self, args: &[&str]) -> Command {
        let mut cmd = sbx();
        cmd.args(args)
            .current_dir(self.work())
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .env("SBX_SYSTEM_PROFILE_DIR", self.system_dir())
            .env("HOME", self.home());
        cmd
    }
    fn sh(&self, options: &[&str], script: &str) -> Outcome {
        let mut args = vec!["run"];
        args.extend_from_slice(options);
        args.extend_from_slice(&["--", "sh", "-c", script]);
        run(self.sbx(&args))
    }
}

#[test]
fn user_profile_is_picked_by_command_name() {
    if !require_sandbox() {
        return;
    }
    let p = Profiles::new();
    p.user(
        "shells",
        r#"{"commands": ["sh"], "hostname": "from-user", "env": {"set": {"PICKED": "user"}}}"#,
    );
    let out = p.sh(&["--verbose"], "hostname; echo $PICKED");
    out.assert_success();
    assert_eq!(out.lines(), ["from-user", "user"], "{out}");
    let err = out.stderr();
    assert!(
        err.contains("profile \"shells\"") && err.contains("\"commands\" list \"sh\""),
        "-v says which profile and why\n{out}"
    );
    // Another command is not claimed: the default profile's hostname.
    let out = run(p.sbx(&["run", "--", "hostname"]));
    out.assert_success();
    assert_eq!(out.lines(), ["sbx"], "{out}");
}

#[test]
fn user_profiles_beat_system_profiles_which_beat_builtins() {
    if !require_sandbox() {
        return;
    }
    let p = Profiles::new();
    p.system("sys", r#"{"commands": ["sh"], "hostname": "from-system"}"#);
    let out = p.sh(&[], "hostname");
    out.assert_success();
    assert_eq!(out.lines(), ["from-system"], "{out}");

    p.user("usr", r#"{"commands": ["sh"], "hostname": "from-user"}"#);
    let out = p.sh(&[], "hostname");
    out.assert_success();
    assert_eq!(out.lines(), ["from-user"], "{out}");

    let which = run(p.sbx(&["profile", "which", "--", "sh", "-c", "x"]));
    which.assert_success();
    assert!(which.stdout().starts_with("usr (user profile"), "{which}");
}

#[test]
fn two_profiles_of_one_rank_claiming_a_command_is_an_error_naming_both() {
    let p = Profiles::new();
    let a = p.user("a", r#"{"commands": ["sh"]}"#);
    let b = p.user("b", r#"{"commands": ["sh"]}"#);
    let out = p.sh(&[], "true");
    out.assert_sbx_error(&[a.to_str().unwrap(), b.to_str().unwrap()]);
}

#[test]
fn profile_by_path_applies_its_settings() {
    if !require_sandbox() {
        return;
    }
    let p = Profiles::new();
    let file = p.dir.join("mine.json");
    fs::write(
        &file,
        r#"{"hostname": "by-path", "workdir": "/usr", "env": {"set": {"X": "${USER}-${UID}"}}}"#,
    )
    .unwrap();
    let out = p.sh(
        &["--profile", file.to_str().unwrap()],
        "hostname; pwd; echo $X",
    );
    out.assert_success();
    assert_eq!(
        out.lines(),
        ["by-path", "/usr", &format!("{}-{}", user_name(), uid())],
        "{out}"
    );
}

#[test]
fn cli_options_override_the_profile() {
    if !require_sandbox() {
        return;
    }
    let p = Profiles::new();
    p.user("h", r#"{"hostname": "from-profile", "workdir": "/usr"}"#);
    let out = p.sh(
        &["-p", "h", "--hostname", "from-cli", "-w", "/"],
        "hostname; pwd",
    );
    out.assert_success();
    assert_eq!(out.lines(), ["from-cli", "/"], "{out}");
}

#[test]
fn extends_appends_mounts_and_keeps_the_parents() {
    if !require_sandbox() {
        return;
    }
    let p = Profiles::new();
    fs::write(p.home().join("secret"), "s3cret\n").unwrap();
    let data = p.dir.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("file"), "data-file\n").unwrap();
    p.user(
        "child",
        &format!(
            r#"{{"extends": "default", "hostname": "child",
                "mounts": [{{"type": "ro-bind", "source": "{}", "destination": "/mnt"}}]}}"#,
            data.display()
        ),
    );
    let out = p.sh(
        &["-p", "child"],
        "hostname; cat /mnt/file; cat ~/secret || echo home-hidden; touch /mnt/x || echo ro",
    );
    out.assert_success();
    assert_eq!(
        out.lines(),
        ["child", "data-file", "home-hidden", "ro"],
        "{out}"
    );
}

#[test]
fn replace_drops_the_parents_mounts() {
    if !require_sandbox() {
        return;
    }
    let p = Profiles::new();
    fs::write(p.home().join("secret"), "s3cret\n").unwrap();
    // Without the parent's tmpfs on ${HOME}, the home directory is visible (read-only).
    p.user(
        "open",
        r#"{"extends": "default", "replace": ["mounts"], "workdir": "/"}"#,
    );
    let out = p.sh(&["-p", "open"], "cat ~/secret");
    out.assert_success();
    assert_eq!(out.lines(), ["s3cret"], "{out}");
}

#[test]
fn a_user_default_can_extend_the_builtin_default() {
    if !require_sandbox() {
        return;
    }
    let p = Profiles::new();
    p.user(
        "default",
        r#"{"extends": "default", "hostname": "my-default"}"#,
    );
    let out = p.sh(&[], "hostname; pwd");
    out.assert_success();
    assert_eq!(
        out.lines(),
        ["my-default", p.work().to_str().unwrap()],
        "{out}"
    );
}

#[test]
fn extends_cycles_and_missing_parents_are_errors_naming_the_chain() {
    let p = Profiles::new();
    p.user("a", r#"{"extends": "b"}"#);
    p.user("b", r#"{"extends": "a"}"#);
    p.sh(&["-p", "a"], "true")
        .assert_sbx_error(&["cycle", "a -> b -> a"]);
    p.user("c", r#"{"extends": "nowhere"}"#);
    p.sh(&["-p", "c"], "true")
        .assert_sbx_error(&["nowhere", "c -> nowhere"]);
}

#[test]
fn unknown_profile_names_list_the_known_ones() {
    let p = Profiles::new();
    p.user("mine", "{}");
    p.sh(&["-p", "nosuch"], "true")
        .assert_sbx_error(&["nosuch", "default", "build", "strict", "mine"]);
}

#[test]
fn unknown_variables_and_bad_fields_are_errors() {
    let p = Profiles::new();
    p.user("v", r#"{"hostname": "${HOSTNAME_PLEASE}"}"#);
    p.sh(&["-p", "v"], "true")
        .assert_sbx_error(&["HOSTNAME_PLEASE", "hostname"]);
    let file = p.user(
        "f",
        "{\n  \"mounts\": [\n    {\"type\": \"bind\", \"sorce\": \"/x\", \"destination\": \"/y\"}\n  ]\n}",
    );
    p.sh(&["-p", "f"], "true").assert_sbx_error(&[
        file.to_str().unwrap(),
        "line 3",
        "mounts[0]",
        "sorce",
        "did you mean `source`?",
    ]);
    p.user("t", r#"{"user": {"uid": "root"}}"#);
    p.sh(&["-p", "t"], "true")
        .assert_sbx_error(&["user.uid", "expected u32"]);
}

#[test]
fn profile_check_reports_every_problem() {
    let p = Profiles::new();
    let bad = p.dir.join("bad.json");
    fs::write(
        &bad,
        "{\n \"hostnme\": \"x\",\n \"network\": \"hots\",\n \"mounts\": [{\"type\": \"tmpfs\", \"destination\": \"/t\", \"mode\": 7}]\n}",
    )
    .unwrap();
    let good = p.dir.join("good.json");
    fs::write(&good, r#"{"hostname": "fine", "extends": "default"}"#).unwrap();
    let out = run(p.sbx(&[
        "profile",
        "check",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]));
    out.assert_sbx_error(&["hostnme", "hostname", "hots", "mounts[0].mode"]);
    assert!(out.stdout().contains("good.json: ok"), "{out}");
    let ok = run(p.sbx(&["profile", "check", good.to_str().unwrap()]));
    ok.assert_success();
}

#[test]
fn profile_show_is_resolved_and_expanded() {
    let p = Profiles::new();
    let out = run(p.sbx(&["profile", "show", "build"]));
    out.assert_success();
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    let home = p.home();
    let dsts: Vec<&str> = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(
        dsts[0],
        home.to_str().unwrap(),
        "default's home tmpfs comes first\n{out}"
    );
    assert!(dsts.contains(&p.work().to_str().unwrap()), "{out}");
    assert!(
        !out.stdout().contains("${"),
        "variables are expanded\n{out}"
    );
    assert_eq!(v["network"], "none");
}

#[test]
fn profile_ls_lists_builtins_and_users_profiles_with_their_origin() {
    let p = Profiles::new();
    let mine = p.user("mine", r#"{"description": "my own", "commands": ["foo"]}"#);
    let out = run(p.sbx(&["profile", "ls"]));
    out.assert_success();
    let text = out.stdout();
    for name in ["default", "build", "devshell", "strict"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.contains("built-in")),
            "{name}\n{out}"
        );
    }
    let line = text.lines().find(|l| l.starts_with("mine")).unwrap();
    assert!(
        line.contains(mine.to_str().unwrap()) && line.contains("foo") && line.contains("my own"),
        "{out}"
    );
}

#[test]
fn profile_directories_are_never_writable_inside() {
    if !require_sandbox() {
        return;
    }
    // The profile directory lies inside the bound working directory.
    let p = Profiles::new();
    let cfg = p.work().join("cfg");
    let profiles = cfg.join("sbx/profiles");
    fs::create_dir_all(&profiles).unwrap();
    let mut cmd = p.sbx(&[
        "run",
        "--",
        "sh",
        "-c",
        "touch cfg/sbx/profiles/evil.json || echo no-write; \
         mv cfg cfg2 || echo no-move; mv cfg/sbx cfg/sbx2 || echo no-move2; \
         touch ok && echo cwd-writable",
    ]);
    cmd.env("XDG_CONFIG_HOME", &cfg);
    let out = run(cmd);
    out.assert_success();
    assert_eq!(
        out.lines(),
        ["no-write", "no-move", "no-move2", "cwd-writable"],
        "{out}"
    );
    assert!(!profiles.join("evil.json").exists());
    assert!(profiles.is_dir() && !p.work().join("cfg2").exists());
}

#[test]
fn a_missing_user_profile_directory_is_protected_too() {
    if !require_sandbox() {
        return;
    }
    let p = Profiles::new();
    let cfg = p.work().join("newcfg");
    let mut cmd = p.sbx(&[
        "run",
        "--",
        "sh",
        "-c",
        "mkdir -p newcfg/sbx/profiles 2>/dev/null; \
         echo '{\"commands\": [\"sh\"]}' > newcfg/sbx/profiles/evil.json || echo no-write",
    ]);
    cmd.env("XDG_CONFIG_HOME", &cfg);
    let out = run(cmd);
    out.assert_success();
    assert_eq!(out.lines(), ["no-write"], "{out}");
    assert!(!cfg.join("sbx/profiles/evil.json").exists());
}

#[test]
fn strict_profile_allows_writing_only_to_tmp() {
    if !require_sandbox() {
        return;
    }
    let p = Profiles::new();
    let out = p.sh(
        &["-p", "strict"],
        &format!(
            "touch {}/x || echo work-ro; touch {}/x || echo home-ro; \
             touch /tmp/x && echo tmp-ok; cat /proc/net/dev | grep -c :",
            p.work().display(),
            p.home().display()
        ),
    );
    out.assert_success();
    assert_eq!(out.lines(), ["work-ro", "home-ro", "tmp-ok", "1"], "{out}");
    assert!(!p.work().join("x").exists());
}

/// README's example, run from a project under the home: the tool is found in the current
/// directory, which it can read but not write, and the rest of the home stays hidden.
#[test]
fn strict_profile_runs_a_tool_from_the_current_directory_read_only() {
    if !require_sandbox() {
        return;
    }
    let p = Profiles::new();
    let project = p.home().join("project");
    fs::create_dir(&project).unwrap();
    fs::write(p.home().join("secret"), "in the home\n").unwrap();
    let tool = project.join("untrusted-tool");
    fs::write(
        &tool,
        "#!/bin/sh\npwd\ntouch written 2>&1\nls -A ..\ntest -e ../secret && echo secret-shown || echo home-hidden\n",
    )
    .unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = p.sbx(&["run", "--profile", "strict", "--", "./untrusted-tool"]);
    cmd.current_dir(&project);
    let out = run(cmd);
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines[0], project.to_str().unwrap(), "{out}");
    assert!(lines[1].ends_with("Read-only file system"), "{out}");
    // The home shows only the project (its mount point), not the secret beside it.
    assert_eq!(lines[2..], ["project", "home-hidden"], "{out}");
    assert!(!project.join("written").exists());
}

/// Run from the home itself, strict binds nothing (that would show the whole home) and
/// says so.
#[test]
fn strict_profile_run_from_the_home_binds_nothing() {
    if !require_sandbox() {
        return;
    }
    let p = Profiles::new();
    fs::write(p.home().join("secret"), "in the home\n").unwrap();
    let mut cmd = p.sbx(&["run", "--profile", "strict", "--", "sh", "-c", "pwd; ls -A"]);
    cmd.current_dir(p.home());
    let out = run(cmd);
    out.assert_success();
    assert_eq!(out.lines(), [p.home().to_str().unwrap()], "{out}");
    assert!(
        out.stderr().contains("not binding") && out.stderr().contains("read-only"),
        "{out}"
    );
}

/// docs/profiles.md's layering example, as written: the project at /src, a path the host
/// does not have.
#[test]
fn layering_example_binds_the_project_at_a_new_path() {
    if !require_sandbox() {
        return;
    }
    let p = Profiles::new();
    let src_on_host = Path::new("/src").exists();
    fs::write(p.work().join("from-host"), "project file\n").unwrap();
    p.user(
        "layered",
        r#"{
  "extends": "default",
  "replace": ["mounts"],
  "mounts": [{ "type": "bind", "source": "${PWD}", "destination": "/src" }],
  "workdir": "/src"
}"#,
    );
    let out = p.sh(
        &["-p", "layered"],
        "pwd; cat from-host; echo out > built && echo written",
    );
    out.assert_success();
    assert_eq!(out.lines(), ["/src", "project file", "written"], "{out}");
    assert!(p.work().join("built").exists());
    if !src_on_host {
        assert!(
            !Path::new("/src").exists(),
            "the run created /src on the host"
        );
    }
}

#[test]
fn build_profile_is_picked_for_make_and_binds_caches_read_only() {
    if !require_sandbox() {
        return;
    }
    let p = Profiles::new();
    let registry = p.home().join(".cargo/registry");
    fs::create_dir_all(&registry).unwrap();
    fs::write(registry.join("crate"), "cached\n").unwrap();
    let which = run(p.sbx(&["profile", "which", "--", "make", "all"]));
    which.assert_success();
    assert!(
        which.stdout().starts_with("build (built-in profile)"),
        "{which}"
    );

    let out = p.sh(
        &["-p", "build"],
        "cat ~/.cargo/registry/crate; touch ~/.cargo/registry/new || echo cache-ro; \
         touch built && echo cwd-rw",
    );
    out.assert_success();
    assert_eq!(out.lines(), ["cached", "cache-ro", "cwd-rw"], "{out}");
    assert!(p.work().join("built").exists());
}

#[test]
fn devshell_home_persists_between_runs() {
    if !require_sandbox() {
        return;
    }
    let p = Profiles::new();
    p.sh(&["-p", "devshell"], "echo kept > ~/notes")
        .assert_success();
    let out = p.sh(&["-p", "devshell"], "cat ~/notes; hostname");
    out.assert_success();
    assert_eq!(out.lines(), ["kept", "devshell"], "{out}");
    let stored = p.home().join(".local/share/sbx/homes/devshell/notes");
    assert_eq!(fs::read_to_string(stored).unwrap(), "kept\n");
    assert!(
        !p.home().join("notes").exists(),
        "the real home is untouched"
    );
}

#[test]
fn schema_is_published() {
    let p = Profiles::new();
    let out = run(p.sbx(&["profile", "schema"]));
    out.assert_success();
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(
        v["additionalProperties"], false,
        "unknown fields are rejected"
    );
    assert!(v["properties"]["mounts"].is_object());
}

/// One broken file in ~/.config/sbx/profiles breaks only the runs that use it: the others
/// warn once, naming it; `profile ls` lists it as broken; `run` and `check` name an
/// extends chain the same way.
#[test]
fn a_broken_user_profile_breaks_only_what_uses_it() {
    if !require_sandbox() {
        return;
    }
    let p = Profiles::new();
    let dir = p.user_dir();
    fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("mine.json");
    fs::write(
        &broken,
        "{\n \"extends\": \"default\",\n \"mounts\": [{\"type\": \"bind\", \"sorce\": \"/x\", \"destination\": \"/y\"}]\n}\n",
    )
    .unwrap();
    fs::write(dir.join("child.json"), r#"{"extends": "mine"}"#).unwrap();
    // A run that does not use it runs, and says once which file it left out.
    let out = p.sh(&[], "echo ran");
    out.assert_success();
    assert_eq!(out.lines(), ["ran"], "{out}");
    let stderr = out.stderr();
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("mine.json")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(warnings[0].contains("sbx profile check"), "{out}");
    // `profile ls` lists it, as broken.
    let ls = run(p.sbx(&["profile", "ls"]));
    ls.assert_success();
    let row = ls
        .stdout()
        .lines()
        .find(|l| l.starts_with("mine "))
        .map(str::to_string);
    assert!(
        row.is_some_and(|r| r.contains("BROKEN") && r.contains("sorce")),
        "{ls}"
    );
    // A run that uses it, directly or through extends, fails naming the file and the chain,
    // as `profile check` does.
    let out = p.sh(&["-p", "child"], "true");
    out.assert_sbx_error(&["mine.json", "sorce", "child -> mine"]);
    let check = run(p.sbx(&["profile", "check", dir.join("child.json").to_str().unwrap()]));
    check.assert_sbx_error(&["mine.json", "sorce", "child -> mine"]);
}
