#!/usr/bin/env bash
# Runs the whole sbx test suite.
#
#   sudo ci/test.sh            # on a fresh Debian/Ubuntu machine
#
# As root it first prepares the host (ci/setup-host.sh: packages, an unprivileged test user
# with a subuid/subgid range, device modes), then builds, runs the unit tests, and runs the
# integration tests in tests/ as that unprivileged user, the way sbx is meant to be used.
# Not as root, it runs everything as the current user (tests that need the second test user
# then skip, or fail under SBX_TEST_STRICT=1).
#
# Environment: SBX_TEST_STRICT=1 turns every skip into a failure (CI sets it).
#              SBX_TEST_FILTER=NAME runs only integration tests whose name contains NAME.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ "$(id -u)" -eq 0 ]; then
  bash ci/setup-host.sh
fi
TEST_USER=${SBX_TEST_USER:-sbxtest}
NOSUB_USER=${SBX_TEST_NOSUB_USER:-sbxnosub}

echo "== format and lints"
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings

echo "== build"
cargo build --quiet
# Test executables, built but not run yet: we run them as the test user below.
mapfile -t test_bins < <(cargo test --no-run --message-format=json --quiet 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["target"]["kind"][0] + " " + m["target"]["name"] + " " + m["executable"])')

# The checkout may sit where the test user cannot read (/root); stage what it runs.
stage=$(mktemp -d /tmp/sbx-ci.XXXXXX)
trap 'rm -rf "$stage"' EXIT

# Every test binary's output goes through here too, to add up one closing line.
results="$stage/results"
: >"$results"
chmod 666 "$results"
count() { tee -a "$results"; }

echo "== unit tests"
for entry in "${test_bins[@]}"; do
  read -r kind name exe <<<"$entry"
  if [ "$kind" = "lib" ] || [ "$kind" = "bin" ]; then "$exe" --quiet 2>&1 | count; fi
done

cp target/debug/sbx target/debug/sbx-pull "$stage/"
mkdir -p "$stage/tests"
cp -r tests/data "$stage/tests/" 2>/dev/null || true
for entry in "${test_bins[@]}"; do
  read -r kind name exe <<<"$entry"
  [ "$kind" = "test" ] && cp "$exe" "$stage/tests/$name"
done
chmod -R a+rX "$stage"

run_as() {
  local user=$1; shift
  if [ "$(id -u)" -eq 0 ]; then
    local home
    home=$(getent passwd "$user" | cut -d: -f6)
    (cd "$home" && runuser -u "$user" -- env -i \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME="$home" USER="$user" LANG=C.UTF-8 TERM="${TERM:-dumb}" \
      SBX_BIN="$stage/sbx" SBX_TEST_DATA="$stage/tests/data" \
      SBX_TEST_STRICT="${SBX_TEST_STRICT:-}" SBX_TEST_ROOT_HELPER=1 \
      RUST_BACKTRACE=1 "$@")
  else
    SBX_BIN="$stage/sbx" SBX_TEST_DATA="$root/tests/data" "$@"
  fi
}

filter=()
[ -n "${SBX_TEST_FILTER:-}" ] && filter=("$SBX_TEST_FILTER")


# Every binary runs even when an earlier one failed; the script fails at the end.
failed=()
echo "== integration tests as $TEST_USER"
for entry in "${test_bins[@]}"; do
  read -r kind name exe <<<"$entry"
  [ "$kind" = "test" ] || continue
  run_as "$TEST_USER" "$stage/tests/$name" --skip nosubuid_ --skip cgroup_ --skip crossuser_ --skip asroot_ \
    "${filter[@]}" 2>&1 | count ||
    failed+=("$name as $TEST_USER")
done

if [ "$(id -u)" -eq 0 ]; then
  echo "== integration tests as $NOSUB_USER (no subordinate ids)"
  for entry in "${test_bins[@]}"; do
    read -r kind name exe <<<"$entry"
    [ "$kind" = "test" ] || continue
    run_as "$NOSUB_USER" "$stage/tests/$name" nosubuid_ "${filter[@]}" 2>&1 | count ||
      failed+=("$name as $NOSUB_USER")
  done
fi
# Tests that need root to set the scene: what one user can do to another's sandboxes (root
# acts as both users through runuser), and host conditions no user can cause (asroot_).
if [ "$(id -u)" -eq 0 ]; then
  echo "== tests as root, acting as $TEST_USER and $NOSUB_USER"
  for entry in "${test_bins[@]}"; do
    read -r kind name exe <<<"$entry"
    [ "$kind" = "test" ] || continue
    SBX_BIN="$stage/sbx" SBX_TEST_DATA="$stage/tests/data" SBX_TEST_STRICT="${SBX_TEST_STRICT:-}" \
      SBX_TEST_USER="$TEST_USER" SBX_TEST_NOSUB_USER="$NOSUB_USER" \
      "$stage/tests/$name" crossuser_ asroot_ "${filter[@]}" 2>&1 | count || failed+=("$name (as root)")
  done
fi

# The cgroup v2 tests: these hosts have no cgroup v2 controllers, so a VM with full cgroup v2
# boots (once) and runs them as the test user in a delegated subtree (ci/vm-test.sh).
if [ "$(id -u)" -eq 0 ]; then
  echo "== cgroup v2 tests in a VM as $TEST_USER"
  SBX_BIN="$stage/sbx" SBX_TEST_DATA="$stage/tests/data" SBX_TEST_STRICT="${SBX_TEST_STRICT:-}" \
    bash ci/vm-test.sh -- "$stage/tests/limits" --test-threads=1 cgroup_ 2>&1 | count ||
    failed+=("limits (cgroup_) in the VM")
  # The same tests where nothing is delegated but a systemd user manager runs (a login
  # session, as after ssh): sbx reruns itself in a scope with Delegate=yes.
  echo "== cgroup v2 tests in a VM booting systemd, as $TEST_USER in a login session"
  SBX_BIN="$stage/sbx" SBX_TEST_DATA="$stage/tests/data" SBX_TEST_STRICT="${SBX_TEST_STRICT:-}" \
    bash ci/vm-test.sh --systemd -- "$stage/tests/limits" --test-threads=1 cgroup_ 2>&1 | count ||
    failed+=("limits (cgroup_) in the systemd VM")
else
  echo "SKIP cgroup v2 tests: ci/vm-test.sh needs root to boot its VM" | count
fi

# pipefail has stopped the script at any failing binary; this is the sum of what ran.
python3 - "$results" <<'PY'
import re, sys
passed = failed = skipped = 0
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", line)
    if m:
        passed += int(m[1]); failed += int(m[2]); skipped += int(m[3])
    if line.startswith("SKIP "):
        skipped += 1
print(f"total: {passed} passed, {failed} failed, {skipped} skipped")
PY
if [ ${#failed[@]} -gt 0 ]; then
  printf 'ci/test.sh: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
