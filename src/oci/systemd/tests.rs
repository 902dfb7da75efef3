use super::*;

fn files(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_cgroups_path_names_the_slice_and_the_scope() {
    let s = scope(Some(Path::new("user.slice:sbx:web")), "id1", true).unwrap();
    assert_eq!(s.slice, "user.slice");
    assert_eq!(
        s.unit,
        Unit {
            name: "sbx-web.scope".into(),
            user: true
        }
    );
}

#[test]
fn empty_parts_take_runcs_defaults() {
    let root = scope(None, "id1", false).unwrap();
    assert_eq!(
        (root.slice.as_str(), root.unit.name.as_str()),
        ("system.slice", "sbx-oci-id1.scope")
    );
    let user = scope(Some(Path::new("")), "id1", true).unwrap();
    assert_eq!(user.slice, "user.slice");
    let parts = scope(Some(Path::new("machine.slice::")), "id2", false).unwrap();
    assert_eq!(
        (parts.slice.as_str(), parts.unit.name.as_str()),
        ("machine.slice", "sbx-oci-id2.scope")
    );
}

#[test]
fn paths_that_are_no_slice_prefix_name_are_refused() {
    for bad in [
        "/sys/fs/cgroup/x",
        "user.slice:sbx",
        "a:b:c:d",
        "notaslice:sbx:x",
        "user.slice:sbx:x/../y",
        "user.slice:sbx:a b",
        "user.slice:sbx:x.slice",
        "-.slice:sbx:x",
    ] {
        let err = scope(Some(Path::new(bad)), "id", true);
        assert!(err.is_err(), "{bad} is accepted: {err:?}");
    }
    let err = scope(Some(Path::new("/a/b")), "id", true).unwrap_err();
    assert!(
        format!("{err:#}").contains("--cgroup-manager cgroupfs"),
        "{err:#}"
    );
}

#[test]
fn limits_become_the_properties_systemd_keeps() {
    let props = properties(&files(&[
        ("pids.max", "100"),
        ("memory.max", "max"),
        ("memory.max", "67108864"),
        ("cpu.max", "50000 100000"),
        ("cpuset.cpus", "0"),
        ("io.bfq.weight", "100"),
    ]));
    let props: Vec<(&str, String)> = props.into_iter().map(|(n, _, v)| (n, v)).collect();
    assert_eq!(
        props,
        [
            ("TasksMax", "100".to_string()),
            ("MemoryMax", "67108864".to_string()),
            ("CPUQuotaPerSecUSec", "500000".to_string()),
        ]
    );
    let unlimited = properties(&files(&[("pids.max", "max"), ("cpu.max", "max 100000")]));
    assert_eq!(unlimited[0].2, u64::MAX.to_string());
    assert_eq!(unlimited[1].2, u64::MAX.to_string());
}
