//! Plan building: what each profile and option turns into.

use super::*;
use crate::plan::{parse_mode, parse_size};
use crate::profile::load::{parse, Origin};

/// Plans against a host without a cgroup tree or an image store to reach.
fn build(loaded: &Loaded, overrides: &Overrides, caller: &Caller) -> Result<Plan> {
    let host = HostFacts {
        cgroup: Fact::known(Err("no cgroup tree in unit tests".into())),
        store: Fact::known(Err("no image store in unit tests".into())),
        systemd_run: Fact::known(None),
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
    assert!(matches!(plan.mounts[0], Mount::Tmpfs { mode: 0o711, .. }));
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

/// Every path under `dir` with its kind, size and modification time.
fn snapshot(dir: &Path) -> Vec<(PathBuf, bool, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push((
            path.clone(),
            meta.is_dir(),
            meta.len(),
            meta.modified().unwrap(),
        ));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                todo.push(entry.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// A fake host under `tmp`: a delegated cgroup tree that enables nothing yet, an image
/// store holding `img` (one empty layer), a running sandbox `x` to join.
fn fake_host(tmp: &Path) -> HostFacts {
    use crate::plan::net::{Join, ProcId};
    use crate::supervisor::cgroup::CgroupHost;

    // A delegated cgroup whose subtree_control enables nothing yet.
    let cgroup = tmp.join("cgroup");
    std::fs::create_dir_all(cgroup.join("me")).unwrap();
    std::fs::write(cgroup.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
    std::fs::write(cgroup.join("cgroup.subtree_control"), "").unwrap();
    std::fs::write(cgroup.join("cgroup.procs"), "").unwrap();
    // An image store holding one image of one empty layer.
    let store = tmp.join("store");
    let hex = "0".repeat(64);
    std::fs::create_dir_all(store.join("layers/sha256").join(&hex)).unwrap();
    std::fs::create_dir_all(store.join("images")).unwrap();
    std::fs::write(store.join("lock"), "").unwrap();
    let full = crate::image::ImageName::parse("img").unwrap().full();
    let record = crate::image::store::Record {
        name: full.clone(),
        source: "test".into(),
        kind: "rootfs".into(),
        created: 0,
        layers: vec![format!("sha256:{hex}")],
        size: 0,
        layer_sizes: vec![0],
        config: Default::default(),
    };
    let encoded = crate::image::store::encode_name(&full);
    let record_path = store.join("images").join(format!("{encoded}.json"));
    std::fs::write(record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    let me = ProcId {
        pid: std::process::id() as i32,
        start: 0,
    };
    HostFacts {
        cgroup: Fact::known(Ok(CgroupHost {
            mount: cgroup,
            own: "/me".into(),
        })),
        store: Fact::known(Ok(store)),
        systemd_run: Fact::known(None),
        join: Some(Join {
            name: "x".into(),
            target: me,
            nat: false,
            uid: 0,
            gid: 0,
            user_ns: 1,
            net_ns: 2,
        }),
    }
}

/// A profile bind source to create, a writable bind missing a protected path, a kept upper
/// directory to create, an image root, a joined sandbox and (`extra`) more.
fn fake_request(tmp: &Path, extra: &[&str]) -> (Loaded, Overrides) {
    std::fs::create_dir_all(tmp.join("work")).unwrap();
    let work = tmp.join("work").canonicalize().unwrap();
    let l = loaded(&format!(
        r#"{{"mounts": [{{"type": "bind", "source": "{}", "destination": "/data", "create": true}}]}}"#,
        tmp.join("created-by-prepare").display()
    ));
    let upper = tmp.join("upper");
    let mut argv = vec![
        "--image",
        "img",
        "--upper",
        upper.to_str().unwrap(),
        "--net",
        "sandbox:x",
        "--bind",
        work.to_str().unwrap(),
        "--protect",
        "secret",
    ];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&["--", "true"]);
    (l, args(&argv))
}

fn fresh_dir(name: &str) -> PathBuf {
    let tmp = std::env::temp_dir().join(format!("sbx-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    tmp.canonicalize().unwrap()
}

#[test]
fn planning_writes_nothing() {
    use crate::plan::limits::Site;

    let tmp = fresh_dir("planner");
    let host = fake_host(&tmp);
    let (l, o) = fake_request(&tmp, &["--memory", "64M"]);
    let (cgroup, store, hex) = (tmp.join("cgroup"), tmp.join("store"), "0".repeat(64));
    let (work, to_create, upper) = (
        tmp.join("work"),
        tmp.join("created-by-prepare"),
        tmp.join("upper"),
    );
    let full = crate::image::ImageName::parse("img").unwrap().full();
    let c = caller("/tmp");
    let before = snapshot(&tmp);
    let plan = super::build(&Request {
        loaded: &l,
        overrides: &o,
        caller: &c,
        host: &host,
        instance: None,
    })
    .unwrap();
    assert_eq!(
        snapshot(&tmp),
        before,
        "the planner wrote under {}",
        tmp.display()
    );

    // What it found missing is listed for `prepare`, not made.
    assert_eq!(plan.setup.controllers, ["memory"]);
    assert_eq!(plan.setup.upper.as_deref(), Some(upper.as_path()));
    assert_eq!(plan.setup.bind_sources, std::slice::from_ref(&to_create));
    assert_eq!(plan.setup.protected.len(), 1, "{:?}", plan.setup);
    assert_eq!(plan.setup.protected[0].bind, work);
    assert_eq!(plan.setup.protected[0].rel, Path::new("secret"));
    assert!(!to_create.exists() && !upper.exists() && !work.join("secret").exists());
    // The rest is planned from the fake host.
    assert_eq!(plan.limits.site, Some(Site { parent: cgroup }));
    assert_eq!(plan.limits.cgroup.memory, Some(64 << 20));
    assert_eq!(
        plan.network.join.as_ref().map(|j| j.name.as_str()),
        Some("x")
    );
    match &plan.rootfs {
        Rootfs::Image { name, layers, .. } => {
            assert_eq!(name, &full);
            assert_eq!(layers, &[store.join("layers/sha256").join(&hex)]);
        }
        other => panic!("not an image root: {other:?}"),
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn prepare_makes_what_the_plan_lists_and_plans_again() {
    let tmp = fresh_dir("prepare");
    let host = fake_host(&tmp);
    let (l, o) = fake_request(&tmp, &[]);
    let c = caller("/tmp");
    let req = Request {
        loaded: &l,
        overrides: &o,
        caller: &c,
        host: &host,
        instance: None,
    };
    let first = super::build(&req).unwrap();
    assert!(!first.setup.is_empty());
    let (plan, prepared) = crate::prepare::prepare(&req, first).unwrap();
    assert!(plan.setup.is_empty(), "{:?}", plan.setup);
    assert!(tmp.join("created-by-prepare").is_dir());
    assert!(tmp.join("work/secret").is_file());
    // Made in the second round: the bind source did not exist in the first.
    assert!(tmp.join("created-by-prepare/secret").is_file());
    match &plan.rootfs {
        Rootfs::Image { upper, .. } => {
            let upper = upper.as_ref().expect("the kept upper directory");
            assert_eq!(upper.path, tmp.join("upper"));
        }
        other => panic!("not an image root: {other:?}"),
    }
    assert!(prepared.layer_locks.is_some());
    drop(prepared);
    std::fs::remove_dir_all(&tmp).unwrap();
}
