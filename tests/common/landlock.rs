//! The running kernel's Landlock ABI, for tests of rights that not every kernel enforces.
//!
//! sbx asks for ABI 6 and takes what the kernel gives (best effort): network rules need ABI
//! 4, truncate ABI 3, ioctl on devices ABI 5, scoping of signals and abstract unix sockets
//! ABI 6. A test of such a right asks [`has_abi`] first: on a kernel below it, what a user
//! can check is that sbx says the layer is partial (or absent), and that is what the test
//! checks instead:
//!
//! ```ignore
//! if !landlock::has_abi(4, dir.path()) {
//!     return; // sbx reported Landlock as partial or absent; nothing more to check here
//! }
//! ```

use std::path::Path;

use serde_json::Value;

use super::{check_report, run, sbx_run, test_name, Outcome};

/// The ABI whose rights sbx asks for (`TARGET_ABI` in src/security/landlock.rs).
pub const SBX_ABI: u32 = 6;

/// The kernel's Landlock ABI version: 0 when it has no Landlock (not built in, or not
/// enabled at boot). Asked of the kernel itself, not of sbx: the tests check sbx's report
/// against it.
pub fn abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1 << 0;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the kernel reads
    // and writes no memory; it only returns the ABI version (or an error).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(ret).unwrap_or(0)
}

/// What `sbx run -v` must say on its `landlock:` line on a kernel with ABI `abi`, when
/// Landlock is not turned off.
pub fn expected_outcome(abi: u32) -> String {
    match abi {
        0 => "not enforced: this kernel has no Landlock".to_string(),
        k if k >= SBX_ABI => format!("fully enforced (ABI {SBX_ABI}; kernel ABI {k})"),
        k => format!("partially enforced (kernel ABI {k} of the {SBX_ABI} sbx uses"),
    }
}

/// The `landlock:` line of `sbx run -v` output.
#[track_caller]
pub fn verbose_line(out: &Outcome) -> String {
    let all = format!("{}{}", out.stdout(), out.stderr());
    all.lines()
        .find(|l| l.contains("landlock:"))
        .unwrap_or_else(|| panic!("-v says nothing about landlock\n{out}"))
        .to_string()
}

/// Asserts that `sbx run -v` (`out`) and `sbx check --json` both report what this kernel's
/// ABI gives: fully enforced from ABI 6, partially below, not enforced without Landlock.
#[track_caller]
pub fn assert_reported(out: &Outcome) {
    let abi = abi();
    let line = verbose_line(out);
    let expected = expected_outcome(abi);
    assert!(
        line.contains(&expected),
        "kernel Landlock ABI {abi}: `sbx run -v` should say {expected:?}: {line}\n{out}"
    );
    let report = check_report()
        .as_ref()
        .unwrap_or_else(|e| panic!("sbx check --json: {e}"));
    let entry = report
        .get("landlock")
        .unwrap_or_else(|| panic!("`sbx check --json` has no landlock entry: {report}"));
    let ok = entry.get("ok").and_then(Value::as_bool);
    let detail = entry.get("detail").and_then(Value::as_str).unwrap_or("");
    match abi {
        0 => assert_eq!(
            ok,
            Some(false),
            "no Landlock here: `sbx check --json` must not report it available: {entry}"
        ),
        k => {
            assert_eq!(ok, Some(true), "Landlock ABI {k}: {entry}");
            assert!(
                detail.starts_with(&format!("ABI {k}:")),
                "`sbx check --json` names the kernel's ABI {k}: {entry}"
            );
            let how = if k >= SBX_ABI {
                "fully enforced"
            } else {
                "partially enforced"
            };
            assert!(detail.contains(how), "ABI {k}: {how}: {entry}");
        }
    }
}

/// Whether this kernel enforces the Landlock rights of ABI `needed`. When it does not,
/// asserts that sbx says so (a `sbx run -v -- true` in `dir`, and `sbx check --json`),
/// prints a note naming the test, and returns false: the caller returns, having checked
/// the one thing a user can check on this kernel.
#[track_caller]
pub fn has_abi(needed: u32, dir: &Path) -> bool {
    let abi = abi();
    if abi >= needed {
        return true;
    }
    let out = run(sbx_run(dir, &["--verbose", "--", "true"]));
    out.assert_success();
    assert_reported(&out);
    eprintln!(
        "note {}: the kernel's Landlock ABI is {abi}, this test needs {needed}; \
         checked that sbx reports Landlock as {}",
        test_name(),
        if abi == 0 { "absent" } else { "partial" }
    );
    false
}
