#!/usr/bin/env bash
# Start-up benchmark: `sbx run -- /bin/true` against bubblewrap doing the same work
# (all namespaces, read-only host root, fresh /proc, minimal /dev, private /tmp, a tmpfs on
# the home directory), in the same run, alternating them so machine noise hits all alike.
# sbx runs three ways: with the whole subordinate range nested in the kept user namespace
# (the default), with the range mapped by newuidmap/newgidmap every run (SBX_USERNS=per-run),
# and with a single-id map as bwrap makes (without the helpers). Prints medians and the
# ratios; then the extra start-up time of --net slirp4netns and, with iperf3 installed, TCP
# throughput from the sandbox to the host's loopback through slirp4netns against the host.
# Then images: start-up on an image root (kernel overlayfs and fuse-overlayfs) against bwrap
# on the same directory, and a metadata-heavy workload (unpack a source tarball, walk it,
# delete it) on kernel overlayfs, fuse-overlayfs and the bare host directory, with ratios.
# The image is built from /bin/busybox by tests/data/mkimage.py and imported into a store of
# its own. Last, the OCI runtime: rootless `podman run --rm` (cgroupfs) of the same busybox
# image with runc and with sbx-oci, alternated, ROUNDS/6 rounds (at least 30, at most 50:
# each round is a whole podman run). As root it runs the measurement as the unprivileged test
# user (ci/setup-host.sh).
#
#   sudo ci/bench.sh [ROUNDS [BASELINE]]   # default 300 rounds of each
#   sudo ci/bench.sh --podman-only [ROUNDS] # the podman comparison alone
#
# BASELINE: another sbx binary (say, a release build of main before a change), timed in the
# same alternating run as the current build; the line "ratio sbx/base" is the change's cost.
set -euo pipefail
cd "$(dirname "$0")/.."
podman_only=0
if [ "${1:-}" = --podman-only ]; then podman_only=1; shift; fi
rounds=${1:-300}
baseline=()
TEST_USER=${SBX_TEST_USER:-sbxtest}

cargo build --release --quiet
# Static builds land under target/<host tuple>/ (.cargo/config.toml).
out=target/$(rustc --print host-tuple)
stage=$(mktemp -d /tmp/sbx-bench.XXXXXX)
trap 'rm -rf "$stage"' EXIT
cp "$out"/release/sbx "$out"/release/sbx-oci "$stage/"
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

# podman with runc against podman with sbx-oci, on a busybox image in the user's own store.
podman_bench() {
  local uid podman_rounds=$((rounds / 6))
  [ $podman_rounds -lt 30 ] && podman_rounds=30
  [ $podman_rounds -gt 50 ] && podman_rounds=50
  uid=$("${as_user[@]}" id -u)
  "${as_user[@]}" env XDG_RUNTIME_DIR="/run/user/$uid" sh -euc '
    image=localhost/sbx-bench-busybox
    tmp=$(mktemp -d)
    trap "podman rmi -f $image >/dev/null 2>&1 || true; rm -rf $tmp" EXIT
    python3 "$1/mkimage.py" rootfs "$tmp/image.tar"
    podman import -q "$tmp/image.tar" "$image" >/dev/null
    python3 "$1/bench.py" --rounds "$2" --sbx "$1/sbx" --podman-image "$image" --sbx-oci "$1/sbx-oci"
  ' sh "$stage" "$podman_rounds"
}
if [ $podman_only = 1 ]; then
  podman_bench
  exit 0
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

podman_bench
