//! Plan building: what each profile and option turns into.

use super::*;
use crate::plan::{parse_mode, parse_size};
use crate::profile::load::{parse, Origin};

/// Plans against a host without a cgroup tree or an image store to reach.
fn build(loaded: &Loaded, overrides: &Overrides, caller: &Caller) -> Result<Plan> {
    let host = HostFacts {
        cgroup: Err("no cgroup tree in unit tests".into()),
        store: Err("no image store in unit tests".into()),
        systemd_run: None,
        join: None,
    };
    super::build(&Request {
        loaded,
        overrides,
        caller,
        host: &host,
        instance: None,
    })
}

fn caller(pwd: &str) -> Caller {
    Caller {
        vars: Vars {
            pwd: pwd.into(),
            home: "/root".into(),
            user: "nobody-in-particular".into(),
            uid: 1000,
            gid: 1000,
            env: [
                ("PATH", "/usr/bin:/bin"),
                ("HOME", "/root"),
                ("SECRET", "s3cret"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        },
        stdin_is_tty: false,
    }
}

fn loaded(json: &str) -> Loaded {
    Loaded {
        name: "t".into(),
        profile: parse(json, "t").unwrap(),
        origin: Origin::Builtin,
    }
}

fn args(extra: &[&str]) -> Overrides {
    use clap::Parser;
    let mut argv = vec!["sbx", "run"];
    argv.extend_from_slice(extra);
    match crate::cli::Cli::parse_from(argv).command {
        crate::cli::Command::Run(a) => Overrides::from_args(&a).unwrap(),
        _ => unreachable!(),
    }
}

#[test]
fn environment_is_clean_unless_asked() {
    let l = loaded(r#"{"env": {"pass": ["PATH"], "set": {"A": "${HOME}/a"}}}"#);
    let plan = build(
        &l,
        &args(&["-e", "B=2", "-e", "SECRET", "--", "true"]),
        &caller("/tmp"),
    )
    .unwrap();
    let env: Vec<String> = plan
        .env
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        env,
        ["A=/root/a", "B=2", "PATH=/usr/bin:/bin", "SECRET=s3cret"]
    );
    assert_eq!(plan.search_path, "/usr/bin:/bin");
}

#[test]
fn cli_overrides_profile() {
    let l =
        loaded(r#"{"hostname": "prof", "workdir": "/", "network": "host", "user": {"uid": 5}}"#);
    let plan = build(
        &l,
        &args(&[
            "--hostname",
            "cli",
            "-w",
            "/tmp",
            "--net",
            "none",
            "--uid",
            "0",
            "--",
            "x",
        ]),
        &caller("/tmp"),
    )
    .unwrap();
    assert_eq!(plan.hostname.as_deref(), Some("cli"));
    assert_eq!(plan.workdir, PathBuf::from("/tmp"));
    assert_eq!(plan.network.mode, crate::profile::NetworkMode::None);
    assert_eq!(plan.ids.inside_uid, 0);
    assert_eq!(plan.ids.inside_gid, 1000);
}

#[test]
fn bind_sources_are_resolved_and_checked() {
    let l = loaded("{}");
    let plan = build(
        &l,
        &args(&[
            "--bind",
            "/usr:/x/y",
            "--ro-bind",
            "/etc:/x",
            "--bind",
            ".",
            "--",
            "x",
        ]),
        &caller("/tmp"),
    )
    .unwrap();
    let dsts: Vec<&Path> = plan.mounts.iter().map(|m| m.destination()).collect();
    assert_eq!(
        dsts,
        [Path::new("/tmp"), Path::new("/x"), Path::new("/x/y")],
        "parents first"
    );
    assert_eq!(
        plan.mounts[1],
        Mount::Bind {
            source: "/etc".into(),
            destination: "/x".into(),
            readonly: true,
            noexec: false,
            source_is_dir: true
        }
    );

    let err = build(
        &l,
        &args(&["--bind", "/does/not/exist", "--", "x"]),
        &caller("/tmp"),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("bind source /does/not/exist does not exist"),
        "{err:#}"
    );
}

#[test]
fn optional_binds_are_skipped_when_missing() {
    let l = loaded(
        r#"{"mounts": [{"type": "ro-bind", "source": "/does/not/exist", "destination": "/x", "optional": true}]}"#,
    );
    let plan = build(&l, &args(&["--", "x"]), &caller("/tmp")).unwrap();
    assert!(plan.mounts.is_empty());
}

#[test]
fn bad_destinations_are_rejected() {
    let l = loaded("{}");
    for bad in [
        ["--tmpfs", "relative"],
        ["--tmpfs", "/a/../b"],
        ["--tmpfs", "/"],
    ] {
        let mut a = bad.to_vec();
        a.extend(["--", "x"]);
        assert!(build(&l, &args(&a), &caller("/tmp")).is_err(), "{bad:?}");
    }
}

#[test]
fn tmpfs_options_are_parsed() {
    let l = loaded(
        r#"{"mounts": [{"type": "tmpfs", "destination": "/t", "size": "64M", "mode": "1777", "options": ["ro"]}]}"#,
    );
    let plan = build(&l, &args(&["--", "x"]), &caller("/tmp")).unwrap();
    assert_eq!(
        plan.mounts[0],
        Mount::Tmpfs {
            destination: "/t".into(),
            size: Some(TmpfsSize::Bytes(64 << 20)),
            mode: 0o1777,
            readonly: true,
            noexec: false,
        }
    );
    let l = loaded(r#"{"mounts": [{"type": "tmpfs", "destination": "/t", "mode": "9"}]}"#);
    assert!(build(&l, &args(&["--", "x"]), &caller("/tmp")).is_err());
}

#[test]
fn relative_profile_sources_are_rejected() {
    let l = loaded(r#"{"mounts": [{"type": "bind", "source": "build", "destination": "/b"}]}"#);
    let err = build(&l, &args(&["--", "x"]), &caller("/tmp")).unwrap_err();
    assert!(err.to_string().contains("not an absolute path"), "{err:#}");
}

#[test]
fn hostname_and_rootfs_are_validated() {
    let l = loaded("{}");
    assert!(build(
        &l,
        &args(&["--hostname", "bad name", "--", "x"]),
        &caller("/tmp")
    )
    .is_err());
    let err = build(
        &l,
        &args(&["--rootfs", "/nonexistent-root", "--", "x"]),
        &caller("/tmp"),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("rootfs directory /nonexistent-root does not exist"));
    let plan = build(&l, &args(&["--rootfs", "/tmp", "--", "x"]), &caller("/tmp")).unwrap();
    assert_eq!(plan.rootfs, Rootfs::Dir("/tmp".into()));
}

#[test]
fn sizes_and_modes() {
    assert_eq!(parse_size("4096").unwrap(), 4096);
    assert_eq!(parse_size("2k").unwrap(), 2048);
    assert_eq!(parse_size("1G").unwrap(), 1 << 30);
    assert!(parse_size("lots").is_err());
    assert_eq!(parse_mode("0700").unwrap(), 0o700);
    assert!(parse_mode("0800").is_err());
}

#[test]
fn default_profile_builds() {
    let (_, text) = crate::profile::load::BUILTINS[0];
    let l = loaded(text);
    let plan = build(&l, &args(&["--", "true"]), &caller("/tmp")).unwrap();
    assert_eq!(plan.rootfs, Rootfs::Host);
    assert_eq!(plan.workdir, PathBuf::from("/tmp"));
    assert_eq!(plan.hostname.as_deref(), Some("sbx"));
    assert!(matches!(plan.mounts[0], Mount::Tmpfs { mode: 0o700, .. }));
    assert_eq!(plan.mounts[1].destination(), Path::new("/tmp"));
}

#[test]
fn image_options_need_an_image_root() {
    let l = loaded("{}");
    let err = build(
        &l,
        &args(&["--upper", "/tmp/u", "--", "x"]),
        &caller("/tmp"),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("apply to image roots only"),
        "{err:#}"
    );
    let l = loaded(r#"{"rootfs": {"image": "img", "upper": "relative/dir"}}"#);
    let err = build(&l, &args(&["--", "x"]), &caller("/tmp")).unwrap_err();
    assert!(err.to_string().contains("rootfs.upper"), "{err:#}");
    let l = loaded(r#"{"rootfs": {"image": "img", "overlay": "kernel"}}"#);
    let err = build(&l, &args(&["--overlay", "zfs", "--", "x"]), &caller("/tmp")).unwrap_err();
    assert!(
        format!("{err:#}").contains("unknown overlay \"zfs\""),
        "{err:#}"
    );
}

#[test]
fn rootfs_is_a_string_or_an_image_object() {
    assert!(
        crate::profile::load::parse(r#"{"rootfs": {"image": "a", "uper": "/x"}}"#, "t").is_err()
    );
    let l = loaded(r#"{"rootfs": "/tmp"}"#);
    let plan = build(&l, &args(&["--", "x"]), &caller("/tmp")).unwrap();
    assert_eq!(plan.rootfs, Rootfs::Dir("/tmp".into()));
    assert!(plan.run_as.is_none());
}
