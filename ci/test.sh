#!/usr/bin/env bash
# Runs the whole sbx test suite.
#
#   sudo ci/test.sh            # on a fresh Debian/Ubuntu machine
#
# As root it first prepares the host (ci/setup-host.sh: packages, unprivileged test users
# with and without a subuid/subgid range, device modes), then checks formatting and lints,
# builds, runs the unit tests, and runs the integration tests in tiers:
#
#   user      tests/*.rs as the test user with a subordinate id range (most tests)
#   per-run   the user tier again (all but tests/holder.rs) with the kept user namespace off
#             (SBX_USERNS=per-run)
#   nosub     the nosubuid_ tests as the second user, who has no range (single-id fallback)
#   root      the crossuser_ and asroot_ tests as root, which acts as both users
#   docs      the examples of README.md and docs/*.md, as written, as the test user
#             (ci/docs.py; docs/testing.md)
#   vm        the cgroup_ tests in a VM with full cgroup v2, in a delegated subtree
#   vm-systemd  the same in a VM booting systemd, in a login session, and sbx-oci's
#             cgroup_systemd_ tests (tests/oci_systemd.rs)
#   package   the Debian package (ci/package.sh): built, installed with apt-get, and used by
#             the test user
#   vm-kernel the kernel-sensitive tests (escape, hostile, isolation) in a VM on the
#             distribution's own stock kernel (Debian 12: 6.1, Landlock ABI 2)
#
# Not as root, only the user tier can run (as the current user); the others are reported as
# not run, and under SBX_TEST_STRICT=1 that is a failure.
#
# Environment: SBX_TEST_STRICT=1 turns every skipped test and every tier that did not run
#              into a failure (CI sets it).
#              SBX_TEST_FILTER=TEXT runs only the integration tests whose name contains TEXT
#              (in every tier; the unit tests and lints still run).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
strict=${SBX_TEST_STRICT:-}
filter=${SBX_TEST_FILTER:-}

# cargo: on PATH, else where rustup puts it for root or for the user who ran sudo.
if ! command -v cargo >/dev/null 2>&1; then
  for dir in "$HOME/.cargo/bin" /root/.cargo/bin ${SUDO_USER:+"$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin"}; do
    if [ -x "$dir/cargo" ]; then
      PATH="$dir:$PATH"
      break
    fi
  done
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "ci/test.sh: no Rust toolchain (cargo) found on PATH, in ~/.cargo/bin or /root/.cargo/bin;" \
    "install one for the user running this script first:" \
    "curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component rustfmt,clippy" >&2
  exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
  bash ci/setup-host.sh
fi
TEST_USER=${SBX_TEST_USER:-sbxtest}
NOSUB_USER=${SBX_TEST_NOSUB_USER:-sbxnosub}

# Everything the tests run is staged here: the checkout may sit where the test user cannot
# read (/root).
stage=$(mktemp -d /tmp/sbx-ci.XXXXXX)
trap 'rm -rf "$stage"' EXIT
results="$stage/results"   # every test binary's output, to add up one closing line
skips="$stage/skips"       # SKIP lines that libtest would swallow (tests/common::skip)
notrun="$stage/notrun"     # tiers that did not run, and why
: >"$results"
: >"$skips"
: >"$notrun"
chmod 666 "$results" "$skips"
count() { tee -a "$results"; }

echo "== format and lints"
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
python3 ci/layers.py

echo "== build"
cargo build --quiet
# Static builds land under target/<host tuple>/ (.cargo/config.toml).
out=target/$(rustc --print host-tuple)
# Test executables, built but not run yet: we run them as the test users below. A failed
# build stops here, and so does a test binary that did not come out of it.
if ! cargo test --no-run --message-format=json --quiet >"$stage/build.json" 2>"$stage/build.err"; then
  cat "$stage/build.err" >&2
  echo "ci/test.sh: building the tests failed" >&2
  exit 1
fi
mapfile -t test_bins < <(python3 - "$stage/build.json" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["target"]["kind"][0] + " " + m["target"]["name"] + " " + m["executable"])
PY
)
expected=("lib sbx" "bin sbx" "bin sbx-pull" "bin sbx-oci")
for f in tests/*.rs; do expected+=("test $(basename "$f" .rs)"); done
for f in tests/*/main.rs; do expected+=("test $(basename "$(dirname "$f")")"); done
for want in "${expected[@]}"; do
  found=0
  for entry in "${test_bins[@]}"; do
    read -r kind name _ <<<"$entry"
    [ "$kind $name" = "$want" ] && found=1
  done
  if [ $found = 0 ]; then
    echo "ci/test.sh: the build produced no test binary for $want" >&2
    exit 1
  fi
done

echo "== unit tests"
for entry in "${test_bins[@]}"; do
  read -r kind name exe <<<"$entry"
  if [ "$kind" = "lib" ] || [ "$kind" = "bin" ]; then "$exe" --quiet 2>&1 | count; fi
done

cp "$out"/debug/sbx "$out"/debug/sbx-pull "$out"/debug/sbx-oci "$stage/"
mkdir -p "$stage/tests"
if [ ! -d tests/data ]; then
  echo "ci/test.sh: tests/data is missing from the checkout" >&2
  exit 1
fi
cp -r tests/data "$stage/tests/"
mkdir -p "$stage/docs" "$stage/ci"
cp README.md "$stage/"
cp docs/*.md "$stage/docs/"
cp ci/docs.py "$stage/ci/"
for entry in "${test_bins[@]}"; do
  read -r kind name exe <<<"$entry"
  [ "$kind" = "test" ] && cp "$exe" "$stage/tests/$name"
done
chmod -R a+rX "$stage"

# The tests of binary $1 whose names contain one of the words in $2 (all when empty), none
# of the words in $3, and SBX_TEST_FILTER. libtest ORs its filters, so the selection is
# made here and passed with --exact.
select_tests() {
  local exe=$1 include=$2 exclude=$3
  "$exe" --list --format terse 2>/dev/null | sed -n 's/: test$//p' |
    python3 -c '
import sys
include, exclude, flt = sys.argv[1].split(), sys.argv[2].split(), sys.argv[3]
for name in sys.stdin.read().split():
    if include and not any(w in name for w in include): continue
    if any(w in name for w in exclude): continue
    if flt and flt not in name: continue
    print(name)' "$include" "$exclude" "$filter"
}

run_as() {
  local user=$1; shift
  local home
  home=$(getent passwd "$user" | cut -d: -f6)
  (cd "$home" && runuser -u "$user" -- env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME="$home" USER="$user" LANG=C.UTF-8 TERM="${TERM:-dumb}" \
    SBX_BIN="$stage/sbx" SBX_TEST_DATA="$stage/tests/data" SBX_TEST_SKIP_FILE="$skips" \
    SBX_TEST_STRICT="$strict" SBX_TEST_ROOT_HELPER=1 \
    RUST_BACKTRACE=1 "$@")
}

# run_tier LABEL WHO INCLUDE EXCLUDE: every test binary's selected tests, as WHO (a user
# name, "root", or "self"). A tier that selects nothing (with no SBX_TEST_FILTER) fails:
# its tests were renamed or lost.
failed=()
run_tier() {
  local label=$1 who=$2 include=$3 exclude=$4 total=0 entry kind name
  for entry in "${test_bins[@]}"; do
    read -r kind name _ <<<"$entry"
    [ "$kind" = "test" ] || continue
    local exe="$stage/tests/$name"
    mapfile -t names < <(select_tests "$exe" "$include" "$exclude")
    [ ${#names[@]} -gt 0 ] || continue
    total=$((total + ${#names[@]}))
    case $who in
      self) SBX_BIN="$stage/sbx" SBX_TEST_DATA="$stage/tests/data" SBX_TEST_SKIP_FILE="$skips" \
              "$exe" --exact "${names[@]}" 2>&1 | count || failed+=("$name ($label)") ;;
      root) SBX_BIN="$stage/sbx" SBX_TEST_DATA="$stage/tests/data" SBX_TEST_SKIP_FILE="$skips" \
              SBX_TEST_STRICT="$strict" SBX_TEST_USER="$TEST_USER" SBX_TEST_NOSUB_USER="$NOSUB_USER" \
              "$exe" --exact "${names[@]}" 2>&1 | count || failed+=("$name ($label)") ;;
      *) run_as "$who" "$exe" --exact "${names[@]}" 2>&1 | count || failed+=("$name ($label)") ;;
    esac
  done
  if [ $total = 0 ] && [ -z "$filter" ]; then
    echo "ci/test.sh: the $label tier selected no test" >&2
    failed+=("$label tier: no test")
  fi
}

# per_run_tier: the test user's whole tier again with the kept user namespace off
# (SBX_USERNS=per-run): newuidmap and newgidmap map each run, as they do where nesting is
# refused. All but tests/holder.rs, whose tests are about the kept namespace itself.
per_run_tier() {
  local entry kind name exe total=0
  for entry in "${test_bins[@]}"; do
    read -r kind name _ <<<"$entry"
    [ "$kind" = "test" ] && [ "$name" != holder ] || continue
    exe="$stage/tests/$name"
    mapfile -t names < <(select_tests "$exe" "" "nosubuid_ cgroup_ crossuser_ asroot_")
    [ ${#names[@]} -gt 0 ] || continue
    total=$((total + ${#names[@]}))
    run_as "$TEST_USER" env SBX_USERNS=per-run "$exe" --exact "${names[@]}" 2>&1 | count ||
      failed+=("$name (per-run)")
  done
  if [ $total = 0 ] && [ -z "$filter" ]; then
    failed+=("per-run tier: no test")
  fi
}

# The docs tier (ci/docs.py) runs without SBX_TEST_FILTER, with a filter that "docs" contains,
# and with one naming a document (README.md, docs/pull.md:24), whose blocks it then selects.
docs_only=()
[[ $filter == *.md* ]] && docs_only=(--only "$filter")
docs_selected() {
  [ -z "$filter" ] || [[ docs == *"$filter"* ]] || [ ${#docs_only[@]} -gt 0 ]
}

tier_not_run() {
  echo "NOT RUN $1 tier: $2" | tee -a "$notrun"
  [ "$strict" = 1 ] && failed+=("$1 tier (not run: $2)")
  return 0
}

if [ "$(id -u)" -eq 0 ]; then
  echo "== integration tests as $TEST_USER"
  run_tier user "$TEST_USER" "" "nosubuid_ cgroup_ crossuser_ asroot_"
  echo "== integration tests again as $TEST_USER, mapped per run (SBX_USERNS=per-run)"
  per_run_tier
  echo "== integration tests as $NOSUB_USER (no subordinate ids)"
  run_tier nosub "$NOSUB_USER" "nosubuid_" ""
  # What one user can do to another's sandboxes (root acts as both users through runuser),
  # and host conditions no user can cause (asroot_).
  echo "== tests as root, acting as $TEST_USER and $NOSUB_USER"
  run_tier root root "crossuser_ asroot_" ""
  # The examples of README.md and docs/*.md, as written, as the test user.
  if docs_selected; then
    echo "== documentation examples as $TEST_USER"
    run_as "$TEST_USER" python3 "$stage/ci/docs.py" "$stage" "${docs_only[@]}" 2>&1 | count ||
      failed+=("documentation examples")
  fi
else
  echo "== integration tests as $(id -un)"
  run_tier user self "" "nosubuid_ cgroup_ crossuser_ asroot_"
  if docs_selected; then
    echo "== documentation examples as $(id -un)"
    python3 ci/docs.py "$stage" "${docs_only[@]}" 2>&1 | count || failed+=("documentation examples")
  fi
  tier_not_run per-run "needs root to run tests as the test user"
  tier_not_run nosub "needs root to run tests as the second test user"
  tier_not_run root "needs root"
fi

# The cgroup v2 tests: these hosts have no cgroup v2 controllers, so a VM with full cgroup v2
# boots (once per mode) and runs them as the test user (ci/vm-test.sh).
vm_tier() {
  local label=$1; shift
  local out="$stage/$label.out" script="" want=0 set name include
  # limits' cgroup_ tests; in the systemd VM, in the same boot, sbx-oci's cgroup_systemd_
  # tests too (its scopes need a systemd manager).
  local sets=("limits cgroup_")
  [ "$label" = vm-systemd ] && sets+=("oci_systemd cgroup_systemd_")
  for set in "${sets[@]}"; do
    read -r name include <<<"$set"
    mapfile -t names < <(select_tests "$stage/tests/$name" "$include" "")
    [ ${#names[@]} -gt 0 ] || continue
    want=$((want + ${#names[@]}))
    script+="$stage/tests/$name --test-threads=1 --exact ${names[*]}; "
  done
  if [ $want = 0 ]; then
    [ -n "$filter" ] && return 0
    failed+=("$label tier: no cgroup_ test")
    return 0
  fi
  SBX_BIN="$stage/sbx" SBX_TEST_DATA="$stage/tests/data" SBX_TEST_STRICT="$strict" \
    bash ci/vm-test.sh "$@" -- sh -c "rc=0; ${script//; / || rc=1; }exit \$rc" 2>&1 | tee "$out" | count ||
    failed+=("cgroup_ tests in the $label tier")
  # The VM must have run every selected test: a guest that ran none exits 0 too.
  local ran
  ran=$(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed.*/\1/p' "$out" | awk '{ s += $1 } END { print s + 0 }')
  if [ "${ran:-0}" != "$want" ]; then
    echo "ci/test.sh: the $label tier passed ${ran:-0} of $want cgroup_ tests" >&2
    failed+=("$label tier: ${ran:-0} of $want cgroup_ tests passed")
  fi
}
# The package, as a user gets it: apt-get installs it (pulling uidmap), and the test user
# runs the installed binary; then it is removed again. Reported as libtest does.
package_tier() {
  local deb passed=0 failed_checks=0 check
  deb=$(bash ci/package.sh | tail -1)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$(readlink -f "$deb")" >/dev/null
  local home
  home=$(getent passwd "$TEST_USER" | cut -d: -f6)
  for check in \
    "sbx version | grep -q '^sbx '" \
    "sbx run -- sh -c 'test \"\$(id -un)\" = $TEST_USER'" \
    "sbx-pull --help >/dev/null" \
    "sbx-oci --version | grep -q spec" \
    "sbx check --json >/dev/null" \
    "test -s /usr/share/man/man1/sbx-run.1.gz && test -s /usr/share/bash-completion/completions/sbx" \
    "test -s /etc/apparmor.d/sbx && test -s /usr/share/zsh/vendor-completions/_sbx"; do
    if (cd "$home" && runuser -u "$TEST_USER" -- env -i PATH=/usr/bin:/bin HOME="$home" \
      USER="$TEST_USER" sh -c "$check") >/dev/null 2>&1; then
      echo "test package: $check ... ok"
      passed=$((passed + 1))
    else
      echo "test package: $check ... FAILED"
      failed_checks=$((failed_checks + 1))
    fi
  done
  DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq sbx >/dev/null
  local status=ok
  [ $failed_checks = 0 ] || status=FAILED
  echo "test result: $status. $passed passed; $failed_checks failed; 0 ignored; 0 measured; 0 filtered out"
  [ $failed_checks = 0 ]
}

# The tests whose outcome depends on the kernel (seccomp, Landlock's ABI, mount API), on the
# oldest kernel sbx supports: one VM, the binaries one after another.
vm_kernel_tier() {
  local out="$stage/vm-kernel.out" script="" want=0 name
  for name in escape hostile isolation; do
    # etc_shadow: the guest sees the host's files over 9p, where /etc/shadow reads as
    # readable to the test user, so that test's premise does not hold there.
    mapfile -t names < <(select_tests "$stage/tests/$name" "" "nosubuid_ cgroup_ crossuser_ asroot_ etc_shadow")
    [ ${#names[@]} -gt 0 ] || continue
    want=$((want + ${#names[@]}))
    script+="$stage/tests/$name --test-threads=2 --exact ${names[*]}; "
  done
  if [ $want = 0 ]; then
    [ -n "$filter" ] || failed+=("vm-kernel tier: no test")
    return 0
  fi
  # Software emulation: every deadline of the tests five times longer, two tests at a time.
  SBX_BIN="$stage/sbx" SBX_TEST_DATA="$stage/tests/data" SBX_TEST_STRICT="$strict" \
    SBX_TEST_TIME_SCALE=5 SBX_VM_TIMEOUT=2400 bash ci/vm-test.sh --kernel -- sh -c "uname -r; rc=0; ${script//; / || rc=1; }exit \$rc" \
    2>&1 | tee "$out" | count || failed+=("kernel-sensitive tests in the vm-kernel tier")
  local ran
  ran=$(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed.*/\1/p' "$out" | awk '{ s += $1 } END { print s + 0 }')
  if [ "${ran:-0}" != "$want" ]; then
    echo "ci/test.sh: the vm-kernel tier passed ${ran:-0} of $want tests" >&2
    failed+=("vm-kernel tier: ${ran:-0} of $want tests passed")
  fi
}
if [ "$(id -u)" -eq 0 ]; then
  echo "== cgroup v2 tests in a VM as $TEST_USER"
  vm_tier vm
  # Nothing delegated but a systemd user manager runs (a login session, as after ssh): sbx
  # reruns itself in a scope with Delegate=yes.
  echo "== cgroup v2 tests in a VM booting systemd, as $TEST_USER in a login session"
  vm_tier vm-systemd --systemd
  if [ -z "$filter" ] || [[ package == *"$filter"* ]]; then
    echo "== the Debian package, installed and used as $TEST_USER"
    package_tier 2>&1 | count || failed+=("the Debian package")
  fi
  echo "== kernel-sensitive tests in a VM on the distribution's stock kernel, as $TEST_USER"
  vm_kernel_tier
else
  tier_not_run package "installing a package needs root"
  tier_not_run vm-kernel "ci/vm-test.sh needs root to boot its VM"
  tier_not_run vm "ci/vm-test.sh needs root to boot its VM"
  tier_not_run vm-systemd "ci/vm-test.sh needs root to boot its VM"
fi

if [ -s "$skips" ]; then
  echo "== skipped tests"
  sort -u "$skips"
fi
# The sum of what ran: libtest's lines, the skips it swallowed, and tiers not run; then the
# documentation examples (those that ran are among the passed and failed) on their own.
python3 - "$results" "$skips" "$notrun" <<'PY'
import re, sys
passed = failed = skipped = 0
docs = "not run"
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", line)
    if m:
        passed += int(m[1]); failed += int(m[2]); skipped += int(m[3])
    m = re.match(r"documentation examples: (\d+) ran \(.*\), (\d+) not runnable, (\d+) pending", line)
    if m:
        docs = f"{m[1]} ran, {m[2]} not runnable, {m[3]} pending"
skipped += len(set(open(sys.argv[2], errors="replace").read().splitlines()))
skipped += len(open(sys.argv[3], errors="replace").read().splitlines())
print(f"total: {passed} passed, {failed} failed, {skipped} skipped; documentation examples: {docs}")
PY
if [ ${#failed[@]} -gt 0 ]; then
  printf 'ci/test.sh: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
