use super::*;
use serde_json::json;

fn res(v: serde_json::Value) -> LinuxResources {
    serde_json::from_value(v).unwrap()
}

fn files(v: serde_json::Value) -> Vec<(String, String)> {
    cgroup_files(&res(v)).unwrap()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect()
}

fn refused(v: serde_json::Value, want: &str) {
    let err = format!("{:#}", cgroup_files(&res(v.clone())).unwrap_err());
    assert!(err.contains(want), "{v}: {err}");
}

#[test]
fn memory() {
    assert_eq!(
        files(json!({"memory": {"limit": 1000, "reservation": 500, "swap": 3000}})),
        pairs(&[
            ("memory.swap.max", "2000"),
            ("memory.max", "1000"),
            ("memory.low", "500")
        ])
    );
    // -1: unlimited; unlimited memory without a word on swap: swap unlimited too.
    assert_eq!(
        files(json!({"memory": {"limit": -1}})),
        pairs(&[("memory.swap.max", "max"), ("memory.max", "max")])
    );
    assert_eq!(
        files(json!({"memory": {"limit": 1000, "swap": -1}})),
        pairs(&[("memory.swap.max", "max"), ("memory.max", "1000")])
    );
    // Swap equal to memory: no swap at all.
    assert_eq!(
        files(json!({"memory": {"limit": 1000, "swap": 1000}})),
        pairs(&[("memory.swap.max", "0"), ("memory.max", "1000")])
    );
    assert_eq!(files(json!({"memory": {"limit": 0}})), vec![]);
    refused(json!({"memory": {"swap": 1000}}), "needs memory.limit");
    refused(json!({"memory": {"limit": 1000, "swap": 500}}), "below");
    refused(json!({"memory": {"limit": -5}}), "neither");
}

#[test]
fn cpu() {
    assert_eq!(
        files(
            json!({"cpu": {"shares": 1024, "quota": 50000, "period": 200000,
            "cpus": "0-1", "mems": "0"}})
        ),
        pairs(&[
            ("cpu.weight", "39"),
            ("cpu.max", "50000 200000"),
            ("cpuset.cpus", "0-1"),
            ("cpuset.mems", "0")
        ])
    );
    assert_eq!(
        files(json!({"cpu": {"quota": -1}})),
        pairs(&[("cpu.max", "max 100000")])
    );
    assert_eq!(
        files(json!({"cpu": {"period": 50000}})),
        pairs(&[("cpu.max", "max 50000")])
    );
    assert_eq!(
        files(json!({"cpu": {"idle": 1, "quota": 1000, "burst": 500}})),
        pairs(&[
            ("cpu.idle", "1"),
            ("cpu.max", "1000 100000"),
            ("cpu.max.burst", "500")
        ])
    );
    // runc's and crun's conversion at its ends and at the default.
    assert_eq!(cpu_weight(2), 1);
    assert_eq!(cpu_weight(262_144), 10_000);
    assert_eq!(cpu_weight(1024), 39);
    assert_eq!(cpu_weight(1), 1);
}

#[test]
fn pids_io_hugepages_rdma() {
    assert_eq!(
        files(json!({"pids": {"limit": 100}})),
        pairs(&[("pids.max", "100")])
    );
    assert_eq!(
        files(json!({"pids": {"limit": -1}})),
        pairs(&[("pids.max", "max")])
    );
    assert_eq!(files(json!({"pids": {"limit": 0}})), vec![]);
    assert_eq!(
        files(json!({"blockIO": {"weight": 500,
            "weightDevice": [{"major": 8, "minor": 0, "weight": 300}],
            "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
            "throttleWriteBpsDevice": [{"major": 8, "minor": 16, "rate": 2}],
            "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 3}],
            "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 4}]}})),
        pairs(&[
            ("io.bfq.weight", "500"),
            ("io.weight", "4950"),
            ("io.bfq.weight", "8:0 300"),
            ("io.max", "8:0 rbps=1048576"),
            ("io.max", "8:16 wbps=2"),
            ("io.max", "8:0 riops=3"),
            ("io.max", "8:0 wiops=4")
        ])
    );
    assert_eq!(io_weight(10), 1);
    assert_eq!(io_weight(1000), 10_000);
    refused(json!({"blockIO": {"weight": 5}}), "outside 10..1000");
    assert_eq!(
        files(
            json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 1073741824},
            {"pageSize": "1GB", "limit": -1}]})
        ),
        pairs(&[
            ("hugetlb.2MB.max", "1073741824"),
            ("hugetlb.1GB.max", "max")
        ])
    );
    refused(
        json!({"hugepageLimits": [{"pageSize": "../2MB", "limit": 1}]}),
        "page size",
    );
    assert_eq!(
        files(json!({"rdma": {"mlx4_0": {"hcaHandles": 2, "hcaObjects": 2000}}})),
        pairs(&[("rdma.max", "mlx4_0 hca_handle=2 hca_object=2000")])
    );
}

/// `unified` comes last, so it wins over the fields, and names files of the leaf only.
#[test]
fn unified_is_passed_through_last() {
    assert_eq!(
        files(json!({"pids": {"limit": 5}, "unified": {"pids.max": "7", "memory.high": "max"}})),
        pairs(&[("pids.max", "5"), ("memory.high", "max"), ("pids.max", "7")])
    );
    for bad in ["../cgroup.procs", "a/b", "..", ""] {
        refused(json!({"unified": {bad: "1"}}), "file name of the cgroup");
    }
}

#[test]
fn v1_only_fields_are_ignored_and_named() {
    let r = res(
        json!({"memory": {"limit": 10, "kernel": 5, "swappiness": 10,
        "disableOOMKiller": true}, "cpu": {"realtimeRuntime": 5},
        "blockIO": {"leafWeight": 20}, "network": {"classID": 1}}),
    );
    assert_eq!(cgroup_files(&r).unwrap(), pairs(&[("memory.max", "10")]));
    assert_eq!(
        ignored(&r),
        [
            "memory.kernel",
            "memory.swappiness",
            "memory.disableOOMKiller",
            "cpu.realtimeRuntime/realtimePeriod",
            "blockIO.leafWeight",
            "network"
        ]
    );
    assert!(ignored(&res(json!({"memory": {"limit": 10}}))).is_empty());
}

#[test]
fn devices() {
    let podman: Vec<LinuxDeviceCgroup> =
        serde_json::from_value(json!([{"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]))
        .unwrap();
    assert_eq!(
        device_access(&podman, true, true),
        DeviceAccess::ByConstruction
    );
    assert_eq!(
        device_access(&podman, false, false),
        DeviceAccess::DropMknod
    );
    assert_eq!(device_access(&podman, false, true), DeviceAccess::Filter);
    let privileged: Vec<LinuxDeviceCgroup> =
        serde_json::from_value(json!([{"allow": true, "access": "rwm"}])).unwrap();
    assert_eq!(
        device_access(&privileged, false, true),
        DeviceAccess::AllowAll
    );
    let partial: Vec<LinuxDeviceCgroup> =
        serde_json::from_value(json!([{"allow": true, "access": "rw"}])).unwrap();
    assert_eq!(
        device_access(&partial, false, false),
        DeviceAccess::DropMknod
    );
    assert_eq!(device_access(&[], false, false), DeviceAccess::DropMknod);
}

#[test]
fn sysctls_need_their_namespace() {
    use LinuxNamespaceType::{Ipc, Network, Uts};
    let all = [Ipc, Network, Uts];
    for name in [
        "net.ipv4.ip_forward",
        "net/ipv4/conf/eth0.100/forwarding",
        "kernel.shmmax",
        "kernel.msgmnb",
        "fs.mqueue.msg_max",
        "kernel.domainname",
    ] {
        check_sysctl(name, &all).unwrap();
    }
    let cases = [
        ("net.ipv4.ip_forward", &[Ipc, Uts][..], "network namespace"),
        ("kernel.sem", &[Network][..], "IPC namespace"),
        ("fs.mqueue.queues_max", &[][..], "IPC namespace"),
        ("kernel.domainname", &[Ipc][..], "not isolated"),
        ("kernel.hostname", &all[..], "hostname field"),
        ("kernel.pid_max", &all[..], "not isolated"),
        ("vm.swappiness", &all[..], "not isolated"),
        ("kernel.shm_next_id", &all[..], "not isolated"),
    ];
    for (name, own, want) in cases {
        let err = check_sysctl(name, own).unwrap_err().to_string();
        assert!(err.contains(want), "{name}: {err}");
    }
}

#[test]
fn sysctl_paths() {
    let p = |n| sysctl_path(n).unwrap().display().to_string();
    assert_eq!(p("net.ipv4.ip_forward"), "/proc/sys/net/ipv4/ip_forward");
    assert_eq!(
        p("net/ipv4/conf/eth0.100/forwarding"),
        "/proc/sys/net/ipv4/conf/eth0.100/forwarding"
    );
    for bad in [
        "net..ipv4",
        "net/../../etc",
        "net.ipv4.",
        ".net",
        "net/./x",
        "",
    ] {
        assert!(sysctl_path(bad).is_err(), "{bad}");
    }
}

#[test]
fn files_name_their_controller_and_weights_are_told_from_limits() {
    for (file, controller) in [
        ("cpu.weight", "cpu"),
        ("io.bfq.weight", "io"),
        ("hugetlb.2MB.max", "hugetlb"),
        ("cpuset.cpus", "cpuset"),
        ("cgroup.freeze", "cgroup"),
    ] {
        assert_eq!(controller_of(file), controller, "{file}");
    }
    assert!(is_weight("cpu.weight") && is_weight("io.weight") && is_weight("io.bfq.weight"));
    assert!(!is_weight("memory.max") && !is_weight("cpu.max") && !is_weight("pids.max"));
}
