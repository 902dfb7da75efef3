use super::*;
use crate::supervisor::cgroup::V1Hierarchy;

const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
                      32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                      35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                      36 31 0:33 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices\n\
                      40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
const OWN: &str = "9:name=systemd:/\n5:devices:/\n4:memory:/app\n1:cpu:/\n0::/u\n";

#[test]
fn a_hybrid_host_uses_v1_and_a_v2_host_does_not() {
    let host = Host::parse(HYBRID, OWN);
    assert!(host.uses_v1());
    assert_eq!(host.v1.len(), 3, "{host:?}");
    assert_eq!(host.v2.as_ref().unwrap().own, "/u");
    assert!(host.v1_with("memory").is_some() && host.v1_with("pids").is_none());
    assert!(host.can_filter_devices());
    let v2 = Host::parse(
        "41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        "0::/user.slice\n",
    );
    assert!(!v2.uses_v1() && v2.can_filter_devices());
    assert!(!Host::default().can_filter_devices());
}

#[test]
fn cgroups_path_is_below_the_mount_or_our_own_cgroup() {
    let host = Host::parse(HYBRID, OWN);
    let memory = host.v1_with("memory").unwrap();
    let at = |p: &str| leaf(&memory.mount, &memory.own_dir(), Path::new(p));
    assert_eq!(
        at("/cgrouptest"),
        PathBuf::from("/sys/fs/cgroup/memory/cgrouptest")
    );
    assert_eq!(at("a/b"), PathBuf::from("/sys/fs/cgroup/memory/app/a/b"));
    assert_eq!(
        v2::leaf_of(&host, Path::new("c")).unwrap(),
        PathBuf::from("/sys/fs/cgroup/unified/u/c")
    );
}

#[test]
fn placement_reads_as_the_old_record_did() {
    let old: Placement = serde_json::from_str(r#"{"cgroup": "/sys/fs/cgroup/x"}"#).unwrap();
    assert_eq!(old.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/x")));
    assert!(old.v1.is_empty());
    let both = Placement {
        v2: Some("/u/x".into()),
        v1: vec!["/m/x".into(), "/c/x".into()],
    };
    let text = serde_json::to_string(&both).unwrap();
    assert_eq!(text, r#"{"cgroup":"/u/x","cgroup_v1":["/m/x","/c/x"]}"#);
    assert_eq!(both.dirs().count(), 3);
}

#[test]
fn join_refuses_a_systemd_path_and_dot_dot_and_needs_a_path_for_limits() {
    let host = Host::parse(HYBRID, OWN);
    let files = Files {
        v1: vec![("pids.max".to_string(), "5".to_string())],
        v2: Vec::new(),
    };
    let req = |path: Option<&'static str>, files: &'static Files| Request {
        id: "c1",
        path: path.map(Path::new),
        files,
        devices: None,
        pid: 1,
        privileged: true,
    };
    let files: &'static Files = Box::leak(Box::new(files));
    let none: &'static Files = Box::leak(Box::default());
    let err = |r: Request| format!("{:#}", join(&host, &r).unwrap_err());
    assert!(err(req(None, files)).contains("needs linux.cgroupsPath"));
    assert!(err(req(Some("system.slice:p:n"), files)).contains("systemd"));
    assert!(err(req(Some("a/../../b"), files)).contains(".."));
    assert!(join(&host, &req(None, none)).unwrap().is_empty());
}

fn resources(json: serde_json::Value) -> oci_spec::runtime::LinuxResources {
    serde_json::from_value(json).unwrap()
}

#[test]
fn v1_files_are_runcs_fs_files_in_order() {
    let res = resources(serde_json::json!({
        "memory": {"limit": 50593792, "reservation": 40000000, "swap": 60000000,
                   "kernel": 1, "kernelTCP": 2, "swappiness": 10, "disableOOMKiller": true},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
        "pids": {"limit": -1},
        "blockIO": {"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}]},
        "network": {"classID": 7, "priorities": [{"name": "eth0", "priority": 3}]}
    }));
    let files = v1_files::files(&res).unwrap();
    let text: Vec<String> = files.iter().map(|(f, v)| format!("{f}={v}")).collect();
    assert_eq!(
        text,
        [
            "pids.max=max",
            "memory.limit_in_bytes=50593792",
            "memory.memsw.limit_in_bytes=60000000",
            "memory.soft_limit_in_bytes=40000000",
            "memory.kmem.limit_in_bytes=1",
            "memory.kmem.tcp.limit_in_bytes=2",
            "memory.swappiness=10",
            "memory.oom_control=1",
            "cpu.shares=1024",
            "cpu.cfs_period_us=100000",
            "cpu.cfs_quota_us=50000",
            "cpuset.cpus=0-1",
            "cpuset.mems=0",
            "blkio.weight=500",
            "blkio.throttle.read_bps_device=8:0 1000",
            "net_cls.classid=7",
            "net_prio.ifpriomap=eth0 3",
        ]
    );
    // An unlimited swap goes before the memory limit it would otherwise be below.
    let res = resources(serde_json::json!({"memory": {"limit": 1000, "swap": -1}}));
    assert_eq!(
        v1_files::files(&res).unwrap()[0].0,
        "memory.memsw.limit_in_bytes"
    );
    let err = |json| format!("{:#}", v1_files::files(&resources(json)).unwrap_err());
    assert!(err(serde_json::json!({"memory": {"limit": 1000, "swap": 10}})).contains("below"));
    assert!(err(serde_json::json!({"memory": {"swappiness": 101}})).contains("0..100"));
    assert!(err(serde_json::json!({"unified": {"memory.high": "1"}})).contains("cgroup v2"));
}

#[test]
fn each_controller_goes_where_the_host_has_it() {
    // hugetlb is not a v1 mount here: its limit goes to the v2 leaf.
    let host = Host::parse(HYBRID, OWN);
    let res = resources(serde_json::json!({
        "memory": {"limit": 4096},
        "pids": {"limit": 9},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 0}]
    }));
    let files = files(&host, Some(&res)).unwrap();
    assert_eq!(
        files.v1,
        [("memory.limit_in_bytes".to_string(), "4096".to_string())]
    );
    assert_eq!(
        files.v2,
        [
            ("pids.max".to_string(), "9".to_string()),
            ("hugetlb.2MB.max".to_string(), "0".to_string())
        ]
    );
    let v2 = Host::parse(
        "41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        "0::/\n",
    );
    let files = super::files(&v2, Some(&res)).unwrap();
    assert!(files.v1.is_empty() && files.v2.len() == 3, "{files:?}");
}

/// A fake v1 tree: the cgroup files a kernel would make, made by hand.
fn fake_hierarchy(root: &Path, controller: &str) -> V1Hierarchy {
    let mount = root.join(controller);
    std::fs::create_dir_all(&mount).unwrap();
    V1Hierarchy {
        controllers: vec![controller.to_string()],
        mount,
        root: "/".into(),
        own: "/".into(),
    }
}

#[test]
fn v1_join_writes_each_controllers_files_and_leaves_nothing_on_failure() {
    let tmp = std::env::temp_dir().join(format!("sbx-oci-v1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let host = Host {
        v2: None,
        v1: vec![fake_hierarchy(&tmp, "memory"), fake_hierarchy(&tmp, "pids")],
    };
    // The container's directories exist with their files (as cgroupfs would make them).
    for (dir, file) in [
        ("memory/c", "memory.limit_in_bytes"),
        ("pids/c", "pids.max"),
    ] {
        std::fs::create_dir_all(tmp.join(dir)).unwrap();
        std::fs::write(tmp.join(dir).join(file), "").unwrap();
        std::fs::write(tmp.join(dir).join("cgroup.procs"), "").unwrap();
    }
    let files = Files {
        v1: vec![
            ("memory.limit_in_bytes".into(), "4096".into()),
            ("pids.max".into(), "9".into()),
        ],
        v2: Vec::new(),
    };
    let req = |path: &'static str, files: &'static Files| Request {
        id: "x",
        path: Some(Path::new(path)),
        files,
        devices: None,
        pid: 4242,
        privileged: true,
    };
    let files: &'static Files = Box::leak(Box::new(files));
    let placed = v1::join(&host, Path::new("/c"), &req("/c", files)).unwrap();
    assert_eq!(placed.v1, [tmp.join("memory/c"), tmp.join("pids/c")]);
    let read = |f: &str| std::fs::read_to_string(tmp.join(f)).unwrap();
    assert_eq!(read("memory/c/memory.limit_in_bytes"), "4096");
    assert_eq!(read("pids/c/pids.max"), "9");
    assert_eq!(read("pids/c/cgroup.procs"), "4242");
    // A limit the kernel has no file for: an error, and the directories made are gone.
    let err = v1::join(&host, Path::new("/new/leaf"), &req("/new/leaf", files)).unwrap_err();
    assert!(
        format!("{err:#}").contains("memory.limit_in_bytes"),
        "{err:#}"
    );
    assert!(!tmp.join("memory/new").exists() && !tmp.join("pids/new").exists());
    std::fs::remove_dir_all(&tmp).unwrap();
}
