#!/usr/bin/env bash
# Prepares a fresh Debian/Ubuntu machine to build and test sbx. Run as root.
#
# Installs the packages the tests use, creates the unprivileged test users and opens the
# devices an ordinary distribution leaves open (docs/testing.md lists what these
# machines lack). Idempotent: safe to run again.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "ci/setup-host.sh: run as root (it installs packages and creates test users)" >&2
  exit 1
fi

TEST_USER=${SBX_TEST_USER:-sbxtest}
NOSUB_USER=${SBX_TEST_NOSUB_USER:-sbxnosub}

packages=(uidmap bubblewrap busybox-static slirp4netns fuse-overlayfs python3 zstd util-linux procps iproute2 hyperfine iperf3 git
  docker-registry skopeo apache2-utils openssl make podman runc containerd)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ci/setup-host.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The pull tests start their own registries on 127.0.0.1; the packaged service (port 5000
# on every interface) is not wanted.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled docker-registry >/dev/null 2>&1; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

# The test user, with a subordinate id range; useradd adds one once /etc/subuid exists.
touch /etc/subuid /etc/subgid
if ! id "$TEST_USER" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$TEST_USER"
fi
grep -q "^$TEST_USER:" /etc/subuid || usermod --add-subuids 200000-265535 "$TEST_USER"
grep -q "^$TEST_USER:" /etc/subgid || usermod --add-subgids 200000-265535 "$TEST_USER"

# A second user with no subordinate range, for the single-id fallback and for
# "users cannot see each other's sandboxes" tests.
if ! id "$NOSUB_USER" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$NOSUB_USER"
fi
sed -i "/^$NOSUB_USER:/d" /etc/subuid /etc/subgid

# The test user's runtime directory, as systemd-logind makes it at login: agents and
# session buses listen there, and the tests check that no sandbox reaches them.
test_uid=$(id -u "$TEST_USER")
mkdir -p /run/user
install -d -m 0700 -o "$TEST_USER" -g "$TEST_USER" "/run/user/$test_uid"

# Ubuntu 23.10 and later restrict unprivileged user namespaces through AppArmor; sbx then
# needs its AppArmor profile (docs: contrib/apparmor). For the test run the restriction is
# lifted, and said so; a host where it cannot be lifted fails here, not in 400 tests.
restrict=/proc/sys/kernel/apparmor_restrict_unprivileged_userns
if [ -r "$restrict" ] && [ "$(cat "$restrict")" = 1 ]; then
  echo "ci/setup-host.sh: kernel.apparmor_restrict_unprivileged_userns=1 here; setting it to 0" \
    "for the tests (sysctl -w kernel.apparmor_restrict_unprivileged_userns=0)"
  if ! sysctl -qw kernel.apparmor_restrict_unprivileged_userns=0; then
    echo "ci/setup-host.sh: cannot lift the AppArmor user namespace restriction; install sbx's" \
      "AppArmor profile or set kernel.apparmor_restrict_unprivileged_userns=0" >&2
    exit 1
  fi
fi
userns_max=/proc/sys/user/max_user_namespaces
if [ -r "$userns_max" ] && [ "$(cat "$userns_max")" = 0 ]; then
  echo "ci/setup-host.sh: user.max_user_namespaces=0 here: unprivileged user namespaces are" \
    "off; set it (sysctl -w user.max_user_namespaces=15000) and run again" >&2
  exit 1
fi

# A shared root filesystem that belongs to root, as under /var/lib/machines: the test users
# can read it but not write it (busybox, and no /home).
shared_rootfs=/var/lib/sbx-test/rootfs
if [ ! -x "$shared_rootfs/bin/busybox" ]; then
  mkdir -p "$shared_rootfs"/{bin,etc,proc,dev,tmp,sys,usr/bin}
  cp /bin/busybox "$shared_rootfs/bin/busybox"
  for tool in sh ls cat echo id pwd true test stat; do ln -sf busybox "$shared_rootfs/bin/$tool"; done
  echo "root:x:0:0:root:/root:/bin/sh" >"$shared_rootfs/etc/passwd"
  chmod -R a+rX,go-w "$shared_rootfs"
fi

# Device modes an ordinary distribution has (these machines ship them 0600).
for dev in /dev/fuse /dev/net/tun; do
  [ -e "$dev" ] && chmod 666 "$dev"
done

echo "ci/setup-host.sh: ready (test users $TEST_USER and $NOSUB_USER)"
