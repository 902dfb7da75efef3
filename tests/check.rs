//! `sbx check --json`: the report the tests themselves use to decide what to skip, so its
//! shape and its subuid verdict are checked here against the host's own files.

mod common;

use serde_json::Value;

use common::*;

/// Features the harness asks for by name.
const USED_BY_TESTS: &[&str] = &[
    "userns",
    "mount_api",
    "newuidmap",
    "newgidmap",
    "subuid",
    "subgid",
];

/// `sbx check` makes (and removes) a scratch directory in /tmp while it runs: runs of it in
/// this binary's parallel tests take turns, so one test's snapshot never sees another's.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn report() -> serde_json::Map<String, Value> {
    let _turn = one_at_a_time();
    let out = run(sbx().args(["check", "--json"]));
    out.assert_no_panic();
    let value: Value = serde_json::from_str(&out.stdout())
        .unwrap_or_else(|e| panic!("`sbx check --json` is not JSON: {e}\n{out}"));
    match value {
        Value::Object(map) => map,
        other => panic!("`sbx check --json` is not an object: {other}"),
    }
}

#[test]
fn check_json_reports_every_feature_with_ok_detail_and_fix() {
    let report = report();
    for name in USED_BY_TESTS {
        assert!(report.contains_key(*name), "{name} is missing: {report:?}");
    }
    for (name, entry) in &report {
        let ok = entry.get("ok").and_then(Value::as_bool);
        let detail = entry.get("detail").and_then(Value::as_str);
        let fix = entry.get("fix");
        assert!(ok.is_some(), "{name}: \"ok\" is a bool: {entry}");
        assert!(
            detail.is_some_and(|d| !d.is_empty()),
            "{name}: \"detail\" is a non-empty string: {entry}"
        );
        match (ok, fix) {
            (Some(true), Some(Value::Null)) => {}
            (Some(true), Some(Value::String(_))) => {}
            (Some(false), Some(Value::String(f))) if !f.is_empty() => {}
            _ => panic!("{name}: a missing feature says how to fix it: {entry}"),
        }
    }
}

#[test]
fn check_subuid_agrees_with_etc_subuid() {
    let report = report();
    for (feature, file) in [("subuid", "/etc/subuid"), ("subgid", "/etc/subgid")] {
        let ok = report[feature]["ok"].as_bool();
        let has_range = !subordinate_ranges(file).is_empty();
        assert_eq!(
            ok,
            Some(has_range),
            "{feature} for {} ({file} has a range: {has_range}): {}",
            user_name(),
            report[feature]
        );
    }
}

#[test]
fn nosubuid_check_says_how_to_add_a_range() {
    if !subordinate_ranges("/etc/subuid").is_empty() {
        skip("this user has a subuid range; nosubuid_ tests run as sbxnosub");
        return;
    }
    let report = report();
    let entry = &report["subuid"];
    assert_eq!(entry["ok"].as_bool(), Some(false), "{entry}");
    let fix = entry["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains("usermod") && fix.contains(&user_name()),
        "{entry}"
    );
}

#[test]
fn check_leaves_nothing_behind() {
    let _turn = one_at_a_time();
    let state = HostState::capture();
    run(sbx().arg("check")).assert_no_panic();
    run(sbx().args(["check", "--json"])).assert_no_panic();
    state.assert_nothing_new();
}
