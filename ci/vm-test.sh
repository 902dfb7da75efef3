#!/usr/bin/env bash
# Runs a command in a VM with full cgroup v2, as the unprivileged test user: by default inside
# a cgroup subtree delegated to that user the way systemd's Delegate=yes does it; with
# --systemd, in a login session of a VM whose PID 1 is systemd, with the user's systemd user
# manager running.
#
#   sudo ci/vm-test.sh -- /tmp/sbx-ci.X/tests/limits --test-threads=1 cgroup_
#   sudo ci/vm-test.sh --selftest             # checks the VM and the delegation, without sbx
#   sudo ci/vm-test.sh --systemd [--selftest | -- CMD...]
#   sudo ci/vm-test.sh --kernel -- CMD...     # on the distribution's own stock kernel, named
#
# The hosts that build sbx have only cgroup v1 controllers (shared/TEST_HOSTS.md), so the
# cgroup tests run here: virtme-ng boots Debian's stock kernel under qemu with software
# emulation (TCG; /dev/kvm is not usable for it). One boot per call.
#
# Default mode (a boot costs about 20 s on an idle 2-core host: the command starts 11-20 s in,
# and every exec in the guest takes 0.1-0.3 s):
# the guest's root is the host's own filesystem over 9p, read-only with throw-away overlays
# on /etc /home /tmp /usr /var ... (so the guest sees the staging dir ci/test.sh makes under
# /tmp). Inside the VM, as root, before the command runs:
#   - cgroup2 at /sys/fs/cgroup with "cpuset cpu io memory pids" in the root's
#     cgroup.subtree_control and in that of every cgroup down to the delegated one;
#   - the delegated cgroup $SBX_VM_CGROUP (user.slice/user-UID.slice/user@UID.service, as
#     systemd names a user manager's) owned by the test user: the directory and the files
#     the kernel lists in /sys/kernel/cgroup/delegate (cgroup.procs, cgroup.threads,
#     cgroup.subtree_control, memory.oom.group, memory.reclaim), its limit files (memory.max,
#     ...) staying root's;
#   - inside it, the leaf shell.scope, owned by the user, into which the command's process is
#     moved (by root: the user may not move a process in from outside the subtree), and the
#     same controllers in the delegated cgroup's cgroup.subtree_control, as the user manager
#     enables them for its units, so that sbx can create its leaf beside shell.scope;
#   - /run/user/UID (XDG_RUNTIME_DIR), as logind makes it.
# Then the command runs as the test user (setpriv: unlike runuser it leaves no root process
# in the user's cgroup), in the user's home, with stdin from /dev/null and the environment
#   PATH HOME USER LOGNAME LANG TERM XDG_RUNTIME_DIR RUST_BACKTRACE; TMPDIR=/var/tmp, a tmpfs
#   (/tmp is an overlay on the host's /tmp over 9p: slow, and no overlay's upper layer);
#   every SBX_* variable of the caller (SBX_BIN, SBX_TEST_DATA, SBX_TEST_STRICT, ...);
#   SBX_VM=delegated and SBX_VM_CGROUP=/sys/fs/cgroup/<the delegated cgroup>.
#
# --systemd (a boot costs about 40 s; the command starts about 31 s in): the guest boots a small Debian image (debootstrap, built
# once into $SBX_VM_IMAGE_DIR, about 2 minutes; rebuilt when its recipe changes) with
# systemd as PID 1, its disk in qemu's snapshot mode (every boot starts from the same image,
# nothing is written back). The test user exists there with the host's uid, gid, home and
# subordinate ids, and lingers, so its user manager (user@UID.service, Delegate=pids memory
# cpu, as Debian ships it) runs. The command runs through su, so in a logind session
# (user-UID.slice/session-N.scope, not delegated), as after an ssh login: the way to limits
# is to ask the user manager for a scope. Its environment is as above (TMPDIR=/var/tmp, a
# tmpfs: virtme-ng puts an overlay on /tmp here too), plus DBUS_SESSION_BUS_ADDRESS, and
# SBX_VM=systemd.
# The image has what sbx runs with (uidmap, fuse-overlayfs, slirp4netns, busybox, python3,
# iproute2) and podman (for sbx-oci's tests with its systemd cgroup manager), not the
# host's files: the directories of the command, SBX_BIN and
# SBX_TEST_DATA (for one under /tmp, its top directory there, such as ci/test.sh's staging
# dir) and those in SBX_VM_SHARE (colon-separated) are shared read-only at the same paths.
#
# Either way the command's stdout and stderr come out as this script's, and its exit code is
# this script's. Exit codes of the script itself: 2 bad usage or missing tools, 3 the VM setup
# failed, 4 the VM gave no exit code (did not boot, crashed, or was killed after
# SBX_VM_TIMEOUT).
#
# As root it first installs what it needs, skipping what is there: qemu-system-x86,
# linux-image-amd64, busybox-static (and debootstrap for --systemd) from Debian, virtme-ng
# from PyPI in a venv at $SBX_VM_VENV, and the test users (ci/setup-host.sh) when missing.
# Not as root it installs nothing and needs all that already; the guest still runs as root.
#
# Environment: SBX_TEST_USER (sbxtest), SBX_VM_CPUS (2), SBX_VM_MEMORY (2G),
#   SBX_VM_TIMEOUT (seconds for the whole VM run, 900), SBX_VM_KERNEL (a vmlinuz; default
#   the newest /boot/vmlinuz-* with modules), SBX_VM_VENV (/opt/sbx-virtme-ng),
#   SBX_VM_IMAGE_DIR (/var/cache/sbx-vm), SBX_VM_SHARE, SBX_VM_VERBOSE=1 (show the guest's
#   boot console).
set -euo pipefail

CONTROLLERS="cpuset cpu io memory pids"
VIRTME_NG_VERSION=1.42
# The --systemd image: what it holds, and the units it does not start (they cost seconds
# under TCG and do nothing for the tests). Changing either rebuilds it.
IMAGE_RECIPE=2
IMAGE_PACKAGES=(systemd systemd-sysv dbus dbus-user-session libpam-systemd udev kmod procps
  uidmap fuse-overlayfs slirp4netns busybox-static python3 iproute2)
# Installed by apt-get in the image after debootstrap, whose own dependency resolution is
# too simple for them: podman, for sbx-oci as its runtime with the systemd cgroup manager.
IMAGE_APT=(podman)
IMAGE_MASKED=(e2scrub_reap.service e2scrub_all.timer apt-daily.timer apt-daily-upgrade.timer
  dpkg-db-backup.timer fstrim.timer getty@tty1.service systemd-pstore.service
  modprobe@dm_mod.service modprobe@drm.service modprobe@efi_pstore.service
  modprobe@loop.service modprobe@configfs.service sys-kernel-debug.mount
  sys-kernel-tracing.mount dev-hugepages.mount proc-sys-fs-binfmt_misc.automount
  systemd-binfmt.service)

usage() {
  sed -n '7,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------------------------------
# Guest side, run by virtme-ng inside the VM. DIR is shared read-write with the host and
# holds user, argv and env (NUL-separated), and status, written here: setup, running, then
# "rc N".
# ---------------------------------------------------------------------------------------

# Fills ENVV, the command's environment, and ARGV. Every exec costs 0.1-0.3 s under TCG: the
# guest side uses builtins where it can.
command_env() {
  local dir=$1 user=$2 uid=$3 home=$4
  shift 4
  ENVV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    HOME="$home" USER="$user" LOGNAME="$user" LANG=C.UTF-8 TERM=dumb
    XDG_RUNTIME_DIR="/run/user/$uid" RUST_BACKTRACE=1)
  mapfile -d '' -t -O ${#ENVV[@]} ENVV <"$dir/env"
  ENVV+=("$@")
  mapfile -d '' -t ARGV <"$dir/argv"
}

# ci/vm-test.sh --in-vm DIR: the default mode, as root in the guest.
in_vm() {
  local dir=$1 user uid gid home cg deleg leaf c p have f up0 up _
  read -r up0 _ </proc/uptime
  echo setup >"$dir/status"
  read -r user <"$dir/user"
  IFS=: read -r _ _ uid gid _ home _ < <(getent passwd "$user")

  cg=/sys/fs/cgroup
  if [ ! -e "$cg/cgroup.controllers" ]; then
    umount -R "$cg" 2>/dev/null || true
    mount -t cgroup2 -o nsdelegate cgroup2 "$cg"
  fi
  read -r have <"$cg/cgroup.controllers"
  for c in $CONTROLLERS; do
    case " $have " in
      *" $c "*) ;;
      *) echo "ci/vm-test.sh: the guest kernel has no cgroup2 controller $c (it has: $have)" >&2
         return 1 ;;
    esac
  done

  # The delegated cgroup where systemd puts a user manager, with the controllers enabled all
  # the way down to it; the user owns it and the files the kernel lists as delegatable.
  deleg=$cg/user.slice/user-$uid.slice/user@$uid.service
  leaf=$deleg/shell.scope
  mkdir -p "$leaf"
  for p in "$cg" "$cg/user.slice" "$cg/user.slice/user-$uid.slice"; do
    for c in $CONTROLLERS; do echo "+$c" >"$p/cgroup.subtree_control"; done
  done
  local -a owned=("$deleg")
  while read -r f; do
    [ -e "$deleg/$f" ] && owned+=("$deleg/$f")
  done </sys/kernel/cgroup/delegate
  # The leaf, as the user manager would have made it: all the user's.
  owned+=("$leaf" "$leaf"/*)

  # A tmpfs for TMPDIR: /tmp here is an overlay on the host's /tmp over 9p, which cannot be
  # an overlay's upper layer (sbx's overlays in user namespaces need one). virtme-ng mounts
  # one on /var/tmp.
  local tmpfs=0
  while read -r _ p f _; do
    [ "$p" = /var/tmp ] && [ "$f" = tmpfs ] && tmpfs=1
  done </proc/self/mounts
  [ $tmpfs = 1 ] || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
  # XDG_RUNTIME_DIR, as logind makes it.
  # shellcheck disable=SC2174 # only /run/user/UID is the user's (0700)
  mkdir -p -m 700 "/run/user/$uid"
  owned+=("/run/user/$uid")
  chown "$uid:$gid" "${owned[@]}"
  # /dev/net/tun, as a distribution has it (devtmpfs makes it and /dev/fuse 0666 here).
  modprobe tun 2>/dev/null || true
  # As the user manager does for its units (the user may: the file is theirs).
  for c in $CONTROLLERS; do echo "+$c" >"$deleg/cgroup.subtree_control"; done

  command_env "$dir" "$user" "$uid" "$home" TMPDIR=/var/tmp SBX_VM=delegated SBX_VM_CGROUP="$deleg"
  read -r up _ </proc/uptime
  echo "ci/vm-test.sh: guest up after $up0 s, cgroups delegated after $up s; running the command" >&2
  echo running >"$dir/status"
  set +e
  (
    set -e
    # Root moves the process that becomes the command into the leaf: the user may move
    # processes only between cgroups inside the subtree.
    echo "$BASHPID" >"$leaf/cgroup.procs"
    cd "$home"
    exec setpriv --reuid="$uid" --regid="$gid" --init-groups -- env -i "${ENVV[@]}" "${ARGV[@]}"
  ) </dev/null
  local rc=$?
  set -e
  echo "rc $rc" >"$dir/status"
  exit "$rc"
}

# ci/vm-test.sh --in-vm-systemd DIR: the --systemd mode, as root in the guest (in the unit
# serial-getty@ttyS0.service, where virtme-ng runs it).
in_vm_systemd() {
  local dir=$1 user uid up0 up _
  read -r up0 _ </proc/uptime
  echo setup >"$dir/status"
  read -r user <"$dir/user"
  uid=$(id -u "$user")
  # The user lingers, so its manager starts at boot; this waits until it has.
  systemctl start "user@$uid.service"
  modprobe tun 2>/dev/null || true
  # virtme-ng puts a throw-away overlay on /tmp even here, its top 0755.
  chmod 1777 /tmp
  read -r up _ </proc/uptime
  echo "ci/vm-test.sh: guest up after $up0 s, user manager up after $up s; running the command" >&2
  echo running >"$dir/status"
  set +e
  # su opens a logind session (pam_systemd), as a login would.
  su -s /bin/bash -c "exec /bin/bash $dir/vm-test.sh --as-user $dir" "$user" </dev/null
  local rc=$?
  set -e
  echo "rc $rc" >"$dir/status"
  exit "$rc"
}

# ci/vm-test.sh --as-user DIR: the --systemd mode, as the user in their session.
as_user() {
  local dir=$1 uid
  uid=$(id -u)
  command_env "$dir" "$(id -un)" "$uid" "$HOME" \
    DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/$uid/bus" TMPDIR=/var/tmp SBX_VM=systemd
  cd "$HOME"
  exec env -i "${ENVV[@]}" "${ARGV[@]}"
}

# The commands --selftest runs inside the VM, as the test user.
selftest_script() {
  cat <<'EOF'
set -eu
cg=/sys/fs/cgroup
echo "== whoami: $(id)"
echo "== cat /proc/self/cgroup"
cat /proc/self/cgroup
echo "== delegated cgroup (SBX_VM_CGROUP): $SBX_VM_CGROUP"
echo "== our leaf: $cg$(sed -n 's/^0:://p' /proc/self/cgroup)"
echo "== ls -l of the delegated cgroup (owned files)"
ls -l "$SBX_VM_CGROUP" | awk -v u="$(id -un)" '$3 == u'
echo "== cat cgroup.controllers (of the delegated cgroup)"
cat "$SBX_VM_CGROUP/cgroup.controllers"
echo "+memory +pids" >"$SBX_VM_CGROUP/cgroup.subtree_control"
echo "== cat cgroup.subtree_control (of the delegated cgroup; the user can write it)"
cat "$SBX_VM_CGROUP/cgroup.subtree_control"
t=$SBX_VM_CGROUP/selftest
echo "== mkdir $t, set limits, move a process in"
mkdir "$t"
echo "controllers: $(cat "$t/cgroup.controllers")"
echo 64M >"$t/memory.max"
echo 16 >"$t/pids.max"
echo "50000 100000" >"$t/cpu.max"
echo 50 >"$t/io.weight" 2>/dev/null || echo "(io.weight: not writable here: no io scheduler weight)"
echo "memory.max=$(cat "$t/memory.max") pids.max=$(cat "$t/pids.max") cpu.max=$(cat "$t/cpu.max") io.weight=$(cat "$t/io.weight" 2>/dev/null | head -1)"
sh -c 'echo $$ >"$1/cgroup.procs"; echo "a process moved in: $(cat /proc/self/cgroup)"' sh "$t"
echo "fork bomb under pids.max=16:"
sh -c 'echo $$ >"$1/cgroup.procs"; while :; do sleep 60 & done' sh "$t" 2>&1 | head -1 | sed 's/^/  /' &
i=0
until grep -q '^max [1-9]' "$t/pids.events" || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done
echo "  pids.current=$(cat "$t/pids.current") pids.events: $(tr '\n' ' ' <"$t/pids.events")"
echo 1 >"$t/cgroup.kill"
wait
while [ -s "$t/cgroup.procs" ]; do sleep 0.1; done
echo "memory hog under memory.max=64M:"
sh -c 'echo $$ >"$1/cgroup.procs"; tail /dev/zero; echo "  tail /dev/zero: exit code $? (137: SIGKILL)"' sh "$t" 2>&1
echo "  memory.events: $(grep -E '^(max|oom|oom_kill) ' "$t/memory.events" | tr '\n' ' ')"
rmdir "$t"
echo "== removed $t"
echo "== unshare -Ur (user namespaces): $(unshare -Ur id -u)"
echo "selftest: ok"
EOF
}

# The same for --systemd: the way to limits is a transient scope of the user manager.
selftest_systemd_script() {
  cat <<'EOF'
set -eu
echo "== whoami: $(id)"
echo "== cat /proc/self/cgroup (a logind session: not delegated)"
cat /proc/self/cgroup
echo "== the session scope: $(ls -ld /sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup) | awk '{print $1, $3, $4}')"
echo "== systemctl --user is-system-running: $(systemctl --user is-system-running)"
echo "== user@$(id -u).service's cgroup.subtree_control (Delegate=): $(cat /sys/fs/cgroup/user.slice/user-$(id -u).slice/user@$(id -u).service/cgroup.subtree_control)"
echo "== systemd-run --user --scope -p Delegate=yes:"
systemd-run --user --scope -p Delegate=yes --quiet sh -c '
  s=/sys/fs/cgroup$(sed -n "s/^0:://p" /proc/self/cgroup)
  echo "  our scope: $s"
  echo "  owner: $(stat -c %U "$s"), cgroup.controllers: $(cat "$s/cgroup.controllers")"
  mkdir "$s/self" "$s/limited"
  echo $$ >"$s/self/cgroup.procs"
  echo "+memory +pids +cpu" >"$s/cgroup.subtree_control"
  echo 64M >"$s/limited/memory.max"
  echo 16 >"$s/limited/pids.max"
  echo "  leaf limited: memory.max=$(cat "$s/limited/memory.max") pids.max=$(cat "$s/limited/pids.max")"
  sh -c "echo \$\$ >$s/limited/cgroup.procs; tail /dev/zero" 2>/dev/null || echo "  tail /dev/zero in it: exit code $? (137: SIGKILL)"
  echo "  memory.events: $(grep -E "^(max|oom_kill) " "$s/limited/memory.events" | tr "\n" " ")"
  rmdir "$s/limited"'
echo "== unshare -Ur (user namespaces): $(unshare -Ur id -u)"
echo "selftest: ok"
EOF
}

# ---------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------
case ${1:-} in
  --in-vm) in_vm "$2" ;;
  --in-vm-systemd) in_vm_systemd "$2" ;;
  --as-user) as_user "$2" ;;
esac

selftest=0
systemd=0
stock=0
cmd=()
while [ $# -gt 0 ]; do
  case $1 in
    --selftest) selftest=1; shift ;;
    --systemd) systemd=1; shift ;;
    --kernel) stock=1; shift ;;
    --) shift; cmd=("$@"); break ;;
    -h | --help) usage ;;
    *) echo "ci/vm-test.sh: unknown argument $1" >&2; usage ;;
  esac
done
if [ $selftest = 1 ]; then
  [ ${#cmd[@]} -eq 0 ] || usage
  if [ $systemd = 1 ]; then
    cmd=(/bin/sh -c "$(selftest_systemd_script)")
  else
    cmd=(/bin/sh -c "$(selftest_script)")
  fi
fi
[ ${#cmd[@]} -gt 0 ] || usage

self=$(readlink -f "$0")
cd "$(dirname "$self")/.."
TEST_USER=${SBX_TEST_USER:-sbxtest}
VENV=${SBX_VM_VENV:-/opt/sbx-virtme-ng}
IMAGE_DIR=${SBX_VM_IMAGE_DIR:-/var/cache/sbx-vm}
vng=$VENV/bin/vng

apt_install() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "ci/vm-test.sh: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# The distribution's own stock kernel, which the guest boots.
# shellcheck source=/dev/null
distro=$(. /etc/os-release && echo "$ID")
case $distro in
  debian) kernel_package=linux-image-amd64 ;;
  ubuntu) kernel_package=linux-image-generic ;;
  *) kernel_package= ;;
esac
if [ -z "$kernel_package" ] && [ -z "${SBX_VM_KERNEL:-}" ]; then
  echo "ci/vm-test.sh: no stock kernel package known for $distro; install a kernel with" \
    "modules and set SBX_VM_KERNEL=/boot/vmlinuz-VERSION" >&2
  exit 2
fi

if [ "$(id -u)" -eq 0 ]; then
  apt_install qemu-system-x86 ${kernel_package:+"$kernel_package"} busybox-static
  # On Debian's python3 (not one under /root, such as pyenv's): other users can run it too.
  if ! compgen -G "$VENV/lib/python3*/site-packages/virtme_ng-$VIRTME_NG_VERSION.dist-info" >/dev/null ||
    ! grep -qx 'home = /usr/bin' "$VENV/pyvenv.cfg"; then
    echo "ci/vm-test.sh: installing virtme-ng $VIRTME_NG_VERSION in $VENV" >&2
    apt_install python3 python3-venv
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "virtme-ng==$VIRTME_NG_VERSION"
  fi
  id "$TEST_USER" >/dev/null 2>&1 || bash ci/setup-host.sh >&2
fi

if [ ! -x "$vng" ]; then
  vng=$(command -v vng) || {
    echo "ci/vm-test.sh: virtme-ng is not installed; run this script as root once" >&2
    exit 2
  }
fi
if ! id "$TEST_USER" >/dev/null 2>&1; then
  echo "ci/vm-test.sh: no user $TEST_USER; run ci/setup-host.sh (as root)" >&2
  exit 2
fi
kernel=${SBX_VM_KERNEL:-}
if [ $stock = 1 ]; then
  # --kernel: exactly the kernel the stock package depends on (Debian 12: 6.1).
  image=$(dpkg-query -W -f='${Depends}' "$kernel_package" 2>/dev/null | tr ',|' '\n\n' |
    sed -n 's/^ *\(linux-image-[^ ]*\).*/\1/p' | head -1)
  kernel=$(dpkg -L "$image" 2>/dev/null | grep '^/boot/vmlinuz-' | head -1 || true)
  if [ -z "$kernel" ]; then
    echo "ci/vm-test.sh: --kernel: no vmlinuz from $kernel_package ($image) installed" >&2
    exit 2
  fi
  echo "ci/vm-test.sh: --kernel: the stock kernel of $kernel_package: $(basename "$kernel")" >&2
elif [ -z "$kernel" ]; then
  while read -r k; do
    if [ -d "/lib/modules/${k#/boot/vmlinuz-}" ]; then kernel=$k; fi
  done < <(compgen -G '/boot/vmlinuz-*' | sort -V)
fi
if [ -z "$kernel" ] || [ ! -r "$kernel" ]; then
  echo "ci/vm-test.sh: no readable guest kernel (/boot/vmlinuz-*); apt-get install linux-image-amd64" >&2
  exit 2
fi

# The --systemd image, built when missing or made from another recipe, test user or suite.
systemd_image() {
  local img=$IMAGE_DIR/systemd.img suite name uid gid home want tree mirror u
  # shellcheck source=/dev/null
  suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
  IFS=: read -r name _ uid gid _ home _ < <(getent passwd "$TEST_USER")
  want="$IMAGE_RECIPE $suite ${IMAGE_PACKAGES[*]} ${IMAGE_APT[*]} ${IMAGE_MASKED[*]} $name:$uid:$gid:$home"
  want+=" $(grep "^$name:" /etc/subuid || true) $(grep "^$name:" /etc/subgid || true)"
  if [ -f "$img" ] && [ "$(cat "$IMAGE_DIR/systemd.recipe" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "ci/vm-test.sh: no up-to-date $img; run this script as root once" >&2
    exit 2
  fi
  apt_install debootstrap e2fsprogs
  # The host's own Debian mirror, as apt knows it.
  mirror=$(apt-cache policy | awk -v s=" $suite/main " 'index($0, s) && $2 ~ /^https?:/ { print $2; exit }')
  if [ -z "$mirror" ]; then
    echo "ci/vm-test.sh: no Debian mirror for $suite/main in apt's sources" >&2
    exit 2
  fi
  echo "ci/vm-test.sh: building $img (debootstrap $suite, once)" >&2
  mkdir -p "$IMAGE_DIR"
  tree=$(mktemp -d "$IMAGE_DIR/tree.XXXXXX")
  if ! debootstrap --variant=minbase --include="$(IFS=,; echo "${IMAGE_PACKAGES[*]}")" \
    "$suite" "$tree" "$mirror" >"$IMAGE_DIR/debootstrap.log" 2>&1; then
    tail -20 "$IMAGE_DIR/debootstrap.log" >&2
    rm -rf "$tree"
    echo "ci/vm-test.sh: debootstrap failed (log: $IMAGE_DIR/debootstrap.log)" >&2
    exit 2
  fi
  if ! chroot "$tree" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends "${IMAGE_APT[@]}" >>"$IMAGE_DIR/debootstrap.log" 2>&1; then
    tail -20 "$IMAGE_DIR/debootstrap.log" >&2
    rm -rf "$tree"
    echo "ci/vm-test.sh: apt-get install ${IMAGE_APT[*]} in the image failed (log: $IMAGE_DIR/debootstrap.log)" >&2
    exit 2
  fi
  chroot "$tree" apt-get clean
  # The test user as on the host, lingering (so user@UID.service starts at boot).
  chroot "$tree" getent group "$gid" >/dev/null ||
    chroot "$tree" groupadd -g "$gid" "$(getent group "$gid" | cut -d: -f1)"
  chroot "$tree" useradd -u "$uid" -g "$gid" -d "$home" -m -s /bin/bash "$name"
  for u in subuid subgid; do
    touch "$tree/etc/$u"
    sed -i "/^$name:/d" "$tree/etc/$u"
    grep "^$name:" "/etc/$u" >>"$tree/etc/$u" || true
  done
  mkdir -p "$tree/var/lib/systemd/linger"
  touch "$tree/var/lib/systemd/linger/$name"
  for u in "${IMAGE_MASKED[@]}"; do ln -sf /dev/null "$tree/etc/systemd/system/$u"; done
  echo sbx-vm >"$tree/etc/hostname"
  mkfs.ext4 -q -F -d "$tree" -L sbx-vm "$img.new" 4G >/dev/null
  rm -rf "$tree"
  mv "$img.new" "$img"
  echo "$want" >"$IMAGE_DIR/systemd.recipe"
}

# What the guest reads (argv, env, user, this script) and writes (status), shared read-write.
dir=$(mktemp -d /tmp/sbx-vm.XXXXXX)
trap 'rm -rf "$dir"' EXIT
chmod 755 "$dir"
cp "$self" "$dir/vm-test.sh"
printf '%s\n' "$TEST_USER" >"$dir/user"
printf '%s\0' "${cmd[@]}" >"$dir/argv"
: >"$dir/env"
while IFS= read -r -d '' kv; do
  case $kv in SBX_VM_*) ;; SBX_*=* | RUST_BACKTRACE=* | RUST_LOG=*) printf '%s\0' "$kv" >>"$dir/env" ;; esac
done < <(env -0)

vng_args=(-r "$kernel" --disable-kvm --force-9p --cpus "${SBX_VM_CPUS:-2}" --memory "${SBX_VM_MEMORY:-2G}"
  --rwdir "$dir=$dir"
  # --force-9p: Debian 12's qemu ships the old C virtiofsd, which vng cannot start: it would
  # wait 3 s for it, then fall back to 9p anyway.
  # udev's coldplug loads every module the emulated q35 machine matches, slowly under TCG
  # (and kvm_amd, for the emulated SVM): none is needed.
  --append "modprobe.blacklist=kvm,kvm_amd,kvm_intel,ccp,ahci,libahci,libata,sr_mod,cdrom,sg,psmouse,pcspkr,i2c_i801,lpc_ich,iTCO_wdt,i6300esb,evdev,serio_raw,aesni_intel,ghash_clmulni_intel,sha512_ssse3,sha256_ssse3,sha1_ssse3,crc32_pclmul,crct10dif_pclmul,powernow_k8,qemu_fw_cfg,button,joydev")
if [ $systemd = 1 ]; then
  systemd_image
  # The root disk read-write for the guest, its writes thrown away (-snapshot).
  vng_args+=(--root-disk "$IMAGE_DIR/systemd.img" --root-fstype ext4 --systemd --rw
    --qemu-opts=-snapshot --exec "exec /bin/bash $dir/vm-test.sh --in-vm-systemd $dir")
  # The host directories the command needs, read-only at the same paths.
  declare -A shared=()
  IFS=: read -r -a extra <<<"${SBX_VM_SHARE:-}"
  for p in "${cmd[0]}" "${SBX_BIN:-}" "${SBX_TEST_DATA:-}" "${extra[@]}"; do
    if [[ $p != /* ]] || [ ! -e "$p" ]; then continue; fi
    [ -d "$p" ] || p=$(dirname "$p")
    case $p in
      /tmp/*) p=${p#/tmp/}; p=/tmp/${p%%/*} ;;
      /usr | /usr/* | /bin | /bin/* | /sbin | /sbin/* | /lib* | /etc | /etc/* | /) continue ;;
    esac
    [ -n "${shared[$p]:-}" ] || vng_args+=(--rodir "$p=$p")
    shared[$p]=1
  done
  what="$(basename "$kernel") and systemd in $IMAGE_DIR/systemd.img"
else
  vng_args+=(--exec "exec /bin/bash $dir/vm-test.sh --in-vm $dir")
  what=$(basename "$kernel")
fi
[ "$(id -u)" -eq 0 ] || vng_args+=(--user root)
[ "${SBX_VM_VERBOSE:-}" = 1 ] && vng_args+=(--verbose)

echo "ci/vm-test.sh: booting $what under qemu (TCG, ${SBX_VM_CPUS:-2} CPUs, ${SBX_VM_MEMORY:-2G})" >&2
start=$SECONDS
set +e
# vng runs qemu in the same process group, so timeout stops both. stdin is not the terminal:
# qemu would be stopped reading it from the background group timeout puts it in. stdout and
# stderr are pipes: qemu reopens them through /proc/self/fd with O_TRUNC, which would empty
# a log file that this script's caller sends its output to.
PATH=$(dirname "$vng"):$PATH timeout -k 10 "${SBX_VM_TIMEOUT:-900}" "$vng" "${vng_args[@]}" \
  </dev/null > >(cat) 2> >(cat >&2) &
pid=$!
# timeout passes a signal on to the VM (Ctrl-C does not reach its process group).
trap 'kill -TERM "$pid" 2>/dev/null' INT TERM
vng_rc=0
while kill -0 "$pid" 2>/dev/null; do
  wait "$pid"
  vng_rc=$?
done
trap - INT TERM
wait # for the output's cats
set -e
status=$(cat "$dir/status" 2>/dev/null || true)
echo "ci/vm-test.sh: VM done in $((SECONDS - start)) s; ${status:-no status} (vng exit $vng_rc)" >&2
case $vng_rc:$status in
  *:"rc "*) exit "${status#rc }" ;;
  124:*) echo "ci/vm-test.sh: timed out after ${SBX_VM_TIMEOUT:-900} s (${status:-booting})" >&2 ;;
  *:setup) echo "ci/vm-test.sh: the setup in the VM failed (see above)" >&2; exit 3 ;;
  *:running) echo "ci/vm-test.sh: the VM stopped while the command ran (crash? killed?)" >&2 ;;
  *) echo "ci/vm-test.sh: the VM reported no exit code (did it boot? SBX_VM_VERBOSE=1 shows)" >&2 ;;
esac
exit 4
