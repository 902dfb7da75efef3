#!/usr/bin/env bash
# Developer shortcut: build, then run one integration test binary as the test user.
#
#   ci/quick.sh TEST_BINARY [cargo-test args...]      e.g. ci/quick.sh run exit_code
#
# Needs ci/setup-host.sh to have run once (as root). Stages into /tmp like ci/test.sh does,
# since the checkout may sit where the test user cannot read.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; shift
cargo build --quiet
# Static builds land under target/<host tuple>/ (.cargo/config.toml).
out=target/$(rustc --print host-tuple)
exe=$(cargo test --no-run --message-format=json --quiet --test "$name" 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m.get("profile", {}).get("test"):
        print(m["executable"])' | tail -1)
stage=$(mktemp -d /tmp/sbx-quick.XXXXXX)
trap 'rm -rf "$stage"' EXIT
cp "$out"/debug/sbx "$out"/debug/sbx-pull "$out"/debug/sbx-oci "$stage/"
cp "$exe" "$stage/$name"
cp -r tests/data "$stage/data"
chmod -R a+rX "$stage"
user=${SBX_TEST_USER:-sbxtest}
if [ "$(id -u)" -eq 0 ]; then
  home=$(getent passwd "$user" | cut -d: -f6)
  cd "$home"
  runuser -u "$user" -- env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME="$home" USER="$user" LANG=C.UTF-8 TERM="${TERM:-dumb}" SBX_BIN="$stage/sbx" \
    SBX_TEST_DATA="$stage/data" SBX_TEST_STRICT="${SBX_TEST_STRICT:-}" SBX_TEST_ROOT_HELPER=1 SBX_USERNS="${SBX_USERNS:-}" \
    RUST_BACKTRACE=1 "$stage/$name" "$@"
else
  SBX_BIN="$stage/sbx" SBX_TEST_DATA="$stage/data" "$stage/$name" "$@"
fi
