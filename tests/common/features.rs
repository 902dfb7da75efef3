//! Host features, as sbx's own probe reports them.

use serde_json::Value;
use std::sync::OnceLock;

use super::*;

/// Features assumed present when `sbx check --json` gives no usable report (as while the
/// probe was being written): `sbx run` itself cannot work without them, so on a host that
/// lacks them every sandbox test fails loudly anyway rather than passing by accident.
/// Every other feature must be confirmed by the probe. `check.rs` tests the report itself.
const ASSUMED_WITHOUT_REPORT: &[&str] = &["userns", "mount_api"];

pub fn check_report() -> &'static Result<Value, String> {
    static REPORT: OnceLock<Result<Value, String>> = OnceLock::new();
    REPORT.get_or_init(|| {
        let mut cmd = sbx();
        cmd.args(["check", "--json"]);
        let out = spawn(&mut cmd, None).finish(TIMEOUT);
        let text = out.stdout();
        if text.trim().is_empty() {
            return Err(format!(
                "`sbx check --json` printed nothing (exit {}, stderr: {})",
                out.code,
                out.stderr().trim()
            ));
        }
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("`sbx check --json` printed no valid JSON ({e}): {text}"))?;
        // The report is an object keyed by feature name; accept it wrapped in "features".
        let features = match value.get("features") {
            Some(inner) if inner.is_object() => inner.clone(),
            _ => value,
        };
        if features.is_object() {
            Ok(features)
        } else {
            Err(format!(
                "`sbx check --json` printed JSON that is not an object: {text}"
            ))
        }
    })
}

/// Whether this host has `feature`, according to `sbx check --json` (an object keyed by
/// feature name: `{"ok": bool, "detail": str, "fix": str|null}`). When it does not, prints
/// `SKIP test: why` and returns false; under `SBX_TEST_STRICT=1` it fails the test instead.
pub fn require(feature: &str) -> bool {
    let report = match check_report() {
        Ok(report) => report,
        Err(why) if ASSUMED_WITHOUT_REPORT.contains(&feature) => {
            // Not a skip, but not silent either: see ASSUMED_WITHOUT_REPORT.
            eprintln!("note {}: assuming {feature}: {why}", test_name());
            return true;
        }
        Err(why) => {
            return skip(&format!(
                "cannot tell whether the host has {feature}: {why}"
            ))
        }
    };
    let Some(entry) = report.get(feature) else {
        return skip(&format!(
            "`sbx check --json` does not report the feature {feature:?}"
        ));
    };
    if entry.get("ok").and_then(Value::as_bool) == Some(true) {
        return true;
    }
    let detail = entry
        .get("detail")
        .and_then(Value::as_str)
        .unwrap_or("no detail");
    let fix = entry
        .get("fix")
        .and_then(Value::as_str)
        .map(|f| format!("; fix: {f}"))
        .unwrap_or_default();
    skip(&format!("this host lacks {feature}: {detail}{fix}"))
}

/// What every sandbox test needs: unprivileged user namespaces and the new mount API.
pub fn require_sandbox() -> bool {
    require("userns") && require("mount_api")
}

/// What tests of the full id map need: a subuid/subgid range and the setuid helpers.
pub fn require_subids() -> bool {
    require_sandbox()
        && require("newuidmap")
        && require("newgidmap")
        && require("subuid")
        && require("subgid")
}
