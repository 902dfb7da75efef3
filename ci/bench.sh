#!/usr/bin/env bash
# Start-up benchmark: `sbx run -- /bin/true` against bubblewrap doing the same work
# (all namespaces, read-only host root, fresh /proc, minimal /dev, private /tmp), in the
# same run, alternating the two so machine noise hits both alike. Prints medians and the
# ratio; then the extra start-up time of --net slirp4netns and, with iperf3 installed, TCP
# throughput from the sandbox to the host's loopback through slirp4netns against the host.
# Then images: start-up on an image root (kernel overlayfs and fuse-overlayfs) against bwrap
# on the same directory, and a metadata-heavy workload (unpack a source tarball, walk it,
# delete it) on kernel overlayfs, fuse-overlayfs and the bare host directory, with ratios.
# The image is built from /bin/busybox by tests/data/mkimage.py and imported into a store of
# its own. As root it runs the measurement as the unprivileged test user (ci/setup-host.sh).
#
#   sudo ci/bench.sh [ROUNDS [BASELINE]]   # default 300 rounds of each
#
# BASELINE: another sbx binary (say, a release build of main before a change), timed in the
# same alternating run as the current build; the line "ratio sbx/base" is the change's cost.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-300}
baseline=()
TEST_USER=${SBX_TEST_USER:-sbxtest}

cargo build --release --quiet
stage=$(mktemp -d /tmp/sbx-bench.XXXXXX)
trap 'rm -rf "$stage"' EXIT
cp target/release/sbx "$stage/sbx"
cp ci/bench.py tests/data/mkimage.py "$stage/"
if [ -n "${2:-}" ]; then
  cp "$2" "$stage/sbx-base"
  baseline=(--baseline "$stage/sbx-base")
fi
chmod -R a+rX "$stage"

as_user=()
if [ "$(id -u)" -eq 0 ]; then
  bash ci/setup-host.sh >/dev/null
  home=$(getent passwd "$TEST_USER" | cut -d: -f6)
  cd "$home"
  as_user=(runuser -u "$TEST_USER" -- env -i PATH=/usr/bin:/bin HOME="$home" USER="$TEST_USER")
fi
iperf=()
command -v iperf3 >/dev/null && iperf=(--iperf)
"${as_user[@]}" python3 "$stage/bench.py" --rounds "$rounds" --sbx "$stage/sbx" "${iperf[@]}" "${baseline[@]}"

# Images, in a store and a scratch directory of the measuring user's own.
work=$stage/images
mkdir -p "$work"
[ "$(id -u)" -eq 0 ] && chown "$TEST_USER:" "$work"
images=(env XDG_DATA_HOME="$work/data")
"${as_user[@]}" "${images[@]}" sh -euc '
  cd "$1"
  python3 ../mkimage.py rootfs image.tar
  python3 ../mkimage.py source-tree src.tar 3000
  ../sbx image import bench image.tar >/dev/null 2>&1
  python3 ../bench.py --rounds "$2" --sbx ../sbx --image bench --source-tar "$1/src.tar" --scratch "$1/scratch"
  ../sbx run --uid 0 --bind "$1:/tmp/w" -- rm -rf /tmp/w/scratch
  ../sbx image rm bench >/dev/null 2>&1' sh "$work" "$rounds"
