//! User namespace id maps: the caller's id plus the whole subordinate range when the
//! caller has one (run as a user with a subuid range), and the single-id fallback with one
//! warning when not (the `nosubuid_` tests, which ci/test.sh runs as a user without one).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;

/// Merged `[start, end)` intervals.
fn merged(mut intervals: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    intervals.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in intervals {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Checks a uid_map or gid_map read inside against the caller's id and subordinate ranges.
fn assert_full_map(map_text: &str, own: u32, file: &str) {
    let kind = if file.ends_with("subgid") {
        "gid_map"
    } else {
        "uid_map"
    };
    let map = in_host_ids(&parse_id_map(map_text), kind);
    let ranges = subordinate_ranges(file);
    assert!(!ranges.is_empty(), "no range for the caller in {file}");
    let own = u64::from(own);
    assert!(
        map.contains(&(own, own, 1)),
        "the caller's id {own} is mapped to itself:\n{map_text}"
    );
    let total: u64 = map.iter().map(|l| l.2).sum();
    let expected: u64 = ranges.iter().map(|r| r.1).sum::<u64>() + 1;
    assert_eq!(
        total, expected,
        "ids mapped = the {file} range(s) {ranges:?} + the caller's own\n{map_text}"
    );
    // Exactly the caller's id and the subordinate ids are used outside, nothing else.
    let outside = merged(map.iter().map(|&(_, o, c)| (o, o + c)).collect());
    let mut allowed: Vec<(u64, u64)> = ranges.iter().map(|&(s, c)| (s, s + c)).collect();
    allowed.push((own, own + 1));
    assert_eq!(
        outside,
        merged(allowed),
        "outside ids in the map\n{map_text}"
    );
}

#[test]
fn uid_map_has_the_caller_and_the_subordinate_range() {
    if !require_subids() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(dir.path(), &[], "cat /proc/self/uid_map");
    out.assert_success();
    assert_full_map(&out.stdout(), uid(), "/etc/subuid");
    assert!(
        !out.stderr().contains("warning"),
        "no warning with a full range\n{out}"
    );
}

#[test]
fn gid_map_has_the_caller_and_the_subordinate_range() {
    if !require_subids() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(dir.path(), &[], "cat /proc/self/gid_map");
    out.assert_success();
    assert_full_map(&out.stdout(), gid(), "/etc/subgid");
}

#[test]
fn ids_inside_are_the_callers_by_default() {
    if !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(dir.path(), &[], "id -u; id -g");
    out.assert_success();
    assert_eq!(out.lines(), [uid().to_string(), gid().to_string()]);
}

#[test]
fn uid_zero_maps_root_to_the_caller() {
    if !require_subids() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &["--uid", "0", "--gid", "0"],
        "id -u; id -g; touch made-by-root",
    );
    out.assert_success();
    assert_eq!(out.lines(), ["0", "0"]);
    // Root inside is the caller outside.
    let meta = fs::metadata(dir.join("made-by-root")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid(), gid()));
}

#[test]
fn chown_to_a_subordinate_id_works_inside() {
    if !require_subids() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &["--uid", "0", "--gid", "0"],
        "cat /proc/self/uid_map; echo ---; cat /proc/self/gid_map; echo ---; \
         touch given-away && chown 1:1 given-away && stat -c '%u %g' given-away; \
         touch /tmp/in-tmpfs && chown 2:2 /tmp/in-tmpfs && stat -c '%u %g' /tmp/in-tmpfs",
    );
    out.assert_success();
    let text = out.stdout();
    let parts: Vec<&str> = text.split("---\n").collect();
    assert_eq!(parts.len(), 3, "{out}");
    let (uid_map, gid_map) = (
        in_host_ids(&parse_id_map(parts[0]), "uid_map"),
        in_host_ids(&parse_id_map(parts[1]), "gid_map"),
    );
    assert_eq!(
        parts[2].lines().collect::<Vec<_>>(),
        ["1 1", "2 2"],
        "{out}"
    );

    // On the host the file belongs to whatever inside id 1 maps to: a subordinate id.
    let outside = |map: &[(u64, u64, u64)], id: u64| {
        map.iter()
            .find(|&&(i, _, c)| (i..i + c).contains(&id))
            .map(|&(i, o, _)| o + (id - i))
            .unwrap_or_else(|| panic!("inside id {id} is not mapped\n{out}"))
    };
    let meta = fs::metadata(dir.join("given-away")).unwrap();
    assert_eq!(u64::from(meta.uid()), outside(&uid_map, 1));
    assert_eq!(u64::from(meta.gid()), outside(&gid_map, 1));
    let in_range = subordinate_ranges("/etc/subuid")
        .iter()
        .any(|&(s, c)| (s..s + c).contains(&u64::from(meta.uid())));
    assert!(
        in_range,
        "host owner {} is in the caller's subordinate range",
        meta.uid()
    );
    assert_ne!(meta.uid(), uid());
}

// ---------------------------------------------------------------------------------------
// Without a subordinate range (run as sbxnosub)
// ---------------------------------------------------------------------------------------

/// These tests only mean something for a caller without a subuid range.
fn require_no_subuid_range() -> bool {
    if subordinate_ranges("/etc/subuid").is_empty() {
        return true;
    }
    skip(&format!(
        "{} has a subuid range; nosubuid_ tests must run as a user without one \
         (ci/test.sh runs them as sbxnosub)",
        user_name()
    ))
}

fn warnings(out: &Outcome) -> Vec<String> {
    out.stderr()
        .lines()
        .filter(|l| l.to_lowercase().contains("warning"))
        .map(String::from)
        .collect()
}

#[test]
fn nosubuid_single_id_map_and_one_warning() {
    if !require_no_subuid_range() || !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &[],
        "cat /proc/self/uid_map; cat /proc/self/gid_map; id -u; id -g",
    );
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(
        parse_id_map(&lines[0]),
        [(u64::from(uid()), u64::from(uid()), 1)],
        "{out}"
    );
    assert_eq!(
        parse_id_map(&lines[1]),
        [(u64::from(gid()), u64::from(gid()), 1)],
        "{out}"
    );
    assert_eq!(lines[2..], [uid().to_string(), gid().to_string()]);
    assert_eq!(warnings(&out).len(), 1, "exactly one warning\n{out}");
}

#[test]
fn nosubuid_warning_says_how_to_get_a_range() {
    if !require_no_subuid_range() || !require_sandbox() || !require("newuidmap") {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(dir.path(), &[], "true");
    out.assert_success();
    let warnings = warnings(&out);
    assert_eq!(warnings.len(), 1, "{out}");
    for needle in ["/etc/subuid", "usermod", &user_name()] {
        assert!(warnings[0].contains(needle), "mentions {needle:?}\n{out}");
    }
}

#[test]
fn nosubuid_uid_zero_maps_root_to_the_caller() {
    if !require_no_subuid_range() || !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let out = sandbox_sh(
        dir.path(),
        &["--uid", "0", "--gid", "0"],
        "cat /proc/self/uid_map; id -u; touch made-by-root",
    );
    out.assert_success();
    let lines = out.lines();
    assert_eq!(parse_id_map(&lines[0]), [(0, u64::from(uid()), 1)], "{out}");
    assert_eq!(lines[1], "0");
    let meta = fs::metadata(dir.join("made-by-root")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid(), gid()));
}

#[test]
fn nosubuid_files_created_through_bind_are_owned_by_the_caller() {
    if !require_no_subuid_range() || !require_sandbox() {
        return;
    }
    let cwd = TempDir::new();
    let shared = TempDir::new();
    let file = shared.join("through-bind");
    let script = format!("echo inside > {}", file.display());
    sandbox_sh(cwd.path(), &["--bind", shared.str()], &script).assert_success();
    let meta = fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid(), gid()));
}

// ---------------------------------------------------------------------------------------
// What `-v` says about the ids, and supplementary groups
// ---------------------------------------------------------------------------------------

/// The `sbx: ids:` line of `sbx run -v`.
#[track_caller]
fn ids_line(out: &Outcome) -> String {
    out.stderr()
        .lines()
        .find(|l| l.starts_with("sbx: ids: "))
        .unwrap_or_else(|| panic!("-v prints no `sbx: ids:` line\n{out}"))
        .to_string()
}

/// Runs `-v OPTIONS` printing the ids and maps inside: (ids line, uid, gid, uid map, gid
/// map).
#[allow(clippy::type_complexity)]
fn verbose_ids(
    dir: &TempDir,
    options: &[&str],
) -> (
    String,
    String,
    String,
    Vec<(u64, u64, u64)>,
    Vec<(u64, u64, u64)>,
) {
    let mut options = options.to_vec();
    options.push("--verbose");
    let out = sandbox_sh(
        dir.path(),
        &options,
        "id -u; id -g; cat /proc/self/uid_map; echo --; cat /proc/self/gid_map",
    );
    out.assert_success();
    let text = out.stdout();
    let (head, gid_map) = text.split_once("--\n").expect("separator");
    let mut lines = head.lines();
    let uid_inside = lines.next().unwrap_or_default().to_string();
    let gid_inside = lines.next().unwrap_or_default().to_string();
    let uid_map = parse_id_map(&lines.collect::<Vec<_>>().join("\n"));
    (
        ids_line(&out),
        uid_inside,
        gid_inside,
        uid_map,
        parse_id_map(gid_map),
    )
}

fn mapped(map: &[(u64, u64, u64)]) -> u64 {
    map.iter().map(|&(_, _, count)| count).sum()
}

#[test]
fn verbose_run_reports_the_id_maps_it_made() {
    if !require_subids() {
        return;
    }
    let dir = TempDir::new();
    for options in [&[][..], &["--uid", "0", "--gid", "0"]] {
        let (line, u, g, uid_map, gid_map) = verbose_ids(&dir, options);
        let expected = format!(
            "sbx: ids: uid {u} and gid {g} inside; {} uids and {} gids mapped from /etc/subuid and /etc/subgid",
            mapped(&uid_map),
            mapped(&gid_map)
        );
        assert_eq!(line, expected, "{options:?}: uid_map {uid_map:?}");
        // More than the caller's own id: the subordinate range is in the map.
        assert!(mapped(&uid_map) > 1, "{uid_map:?}");
        if options.is_empty() {
            assert_eq!((u, g), (uid().to_string(), gid().to_string()));
        } else {
            assert_eq!((u.as_str(), g.as_str()), ("0", "0"));
        }
    }
}

#[test]
fn nosubuid_verbose_run_reports_the_single_id_map() {
    if !require_no_subuid_range() || !require_sandbox() {
        return;
    }
    let dir = TempDir::new();
    let (line, u, g, uid_map, gid_map) = verbose_ids(&dir, &[]);
    assert_eq!(
        line,
        format!("sbx: ids: uid {u} and gid {g} inside; single-id map"),
    );
    assert_eq!((mapped(&uid_map), mapped(&gid_map)), (1, 1));
    assert_eq!((u, g), (uid().to_string(), gid().to_string()));
}

/// Run by ci/test.sh as root: runuser gives the test user a supplementary group for one
/// command (only root can), and sbx must not carry it into the sandbox.
#[test]
fn asroot_supplementary_groups_are_dropped() {
    if uid() != 0 {
        skip(
            "needs root, to give the test user a supplementary group (ci/test.sh runs it as root)",
        );
        return;
    }
    let user = std::env::var("SBX_TEST_USER").unwrap_or_else(|_| "sbxtest".into());
    let pw = nix::unistd::User::from_name(&user)
        .ok()
        .flatten()
        .expect("test user");
    // A group the user is not in: `users` (Debian's gid 100), else `nogroup`.
    let group = ["users", "nogroup"]
        .into_iter()
        .find_map(|name| nix::unistd::Group::from_name(name).ok().flatten())
        .expect("a users or nogroup group");
    let primary = nix::unistd::Group::from_gid(pw.gid)
        .ok()
        .flatten()
        .expect("the test user's primary group");
    let dir = TempDir::new();
    nix::unistd::chown(dir.path(), Some(pw.uid), Some(pw.gid)).unwrap();
    let as_user_with_group = |program: &[&str]| {
        let mut cmd = std::process::Command::new("runuser");
        // -g as well: the first -G group would otherwise become the primary one.
        cmd.args(["-u", &user, "-g", &primary.name, "-G", &group.name])
            .args(["--", "env", "-i"])
            .arg(format!("HOME={}", pw.dir.display()))
            .arg("PATH=/usr/local/bin:/usr/bin:/bin")
            .args(program)
            .current_dir(dir.path());
        run(cmd)
    };
    let script = "id -G; grep '^Groups:' /proc/self/status";
    // Control: without sbx, the command has the group.
    let out = as_user_with_group(&["sh", "-c", script]);
    out.assert_success();
    let outside: Vec<String> = out.lines()[0].split(' ').map(String::from).collect();
    assert!(
        outside.contains(&group.gid.to_string()),
        "control: runuser -G gave {user} group {}\n{out}",
        group.gid
    );
    let sbx = sbx_bin();
    let out = as_user_with_group(&[sbx.to_str().unwrap(), "run", "--", "sh", "-c", script]);
    out.assert_success();
    let lines = out.lines();
    assert_eq!(
        lines[0],
        pw.gid.to_string(),
        "only the primary group inside\n{out}"
    );
    assert_eq!(
        lines[1].trim_end(),
        "Groups:",
        "no supplementary groups inside\n{out}"
    );
}
