#!/usr/bin/env bash
# Runs a command in a VM with full cgroup v2, as the unprivileged test user, inside a cgroup
# subtree delegated to that user the way systemd's Delegate=yes does it.
#
#   sudo ci/vm-test.sh -- /tmp/sbx-ci.X/tests/limits --test-threads=1 cgroup_
#   sudo ci/vm-test.sh --selftest        # checks the VM and the delegation, without sbx
#
# The hosts that build sbx have only cgroup v1 controllers (shared/TEST_HOSTS.md), so the
# cgroup tests run here: virtme-ng boots Debian's stock kernel under qemu with software
# emulation (TCG; /dev/kvm is not usable for it), with the host's own filesystem as the
# guest's root (read-only, with throw-away overlays on /etc /home /tmp /usr /var ...; so the
# guest sees the staging dir ci/test.sh makes under /tmp). One boot per call: 30-60 s.
#
# Inside the VM, as root, before the command runs:
#   - cgroup2 at /sys/fs/cgroup with "cpuset cpu io memory pids" in the root's
#     cgroup.subtree_control and in that of every cgroup down to the delegated one;
#   - the delegated cgroup $SBX_VM_CGROUP (user.slice/user-UID.slice/user@UID.service, as
#     systemd names a user manager's) owned by the test user: the directory and the files
#     the kernel lists in /sys/kernel/cgroup/delegate (cgroup.procs, cgroup.threads,
#     cgroup.subtree_control, memory.oom.group, memory.reclaim), its limit files (memory.max,
#     ...) staying root's;
#   - inside it, the leaf shell.scope, owned by the user, into which the command's process is
#     moved (by root: the user may not move a process in from outside the subtree); then the
#     user, as its user manager would, enables the same controllers in the delegated cgroup's
#     cgroup.subtree_control, so that sbx can create its leaf beside shell.scope;
#   - /run/user/UID (XDG_RUNTIME_DIR), as logind makes it.
# Then the command runs as the test user (setpriv: unlike runuser it leaves no root process
# in the user's cgroup), in the user's home, with stdin from /dev/null and the environment
#   PATH HOME USER LOGNAME LANG TERM XDG_RUNTIME_DIR RUST_BACKTRACE, TMPDIR=/var/tmp (a tmpfs:
#   /tmp is an overlay over the host's, over 9p, useless as an overlay's upper layer and
#   slow), every SBX_* variable of
#   the caller (SBX_BIN, SBX_TEST_DATA, SBX_TEST_STRICT, ...), SBX_VM=1 and
#   SBX_VM_CGROUP=/sys/fs/cgroup/<the delegated cgroup>.
# Its stdout and stderr come out as this script's; its exit code is this script's. Exit codes
# of the script itself: 2 bad usage or missing tools, 3 the VM setup failed, 4 the VM gave no
# exit code (did not boot, crashed, or was killed after SBX_VM_TIMEOUT).
#
# As root it first installs what it needs, skipping what is there: qemu-system-x86,
# linux-image-amd64 and busybox-static (Debian), virtme-ng (PyPI, in a venv at
# $SBX_VM_VENV), and the test users (ci/setup-host.sh) when missing. Not as root it installs
# nothing and needs those already; the guest still runs as root (vng --user root).
#
# Environment: SBX_TEST_USER (sbxtest), SBX_VM_CPUS (2), SBX_VM_MEMORY (2G),
#   SBX_VM_TIMEOUT (seconds for the whole VM run, 2400), SBX_VM_KERNEL (a vmlinuz; default
#   the newest /boot/vmlinuz-* with modules), SBX_VM_VENV (/opt/sbx-virtme-ng),
#   SBX_VM_VERBOSE=1 (show the guest's boot console).
set -euo pipefail

CONTROLLERS="cpuset cpu io memory pids"
VIRTME_NG_VERSION=1.42

usage() {
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------------------------------
# Guest side: ci/vm-test.sh --in-vm DIR, run by virtme-ng as root inside the VM. DIR is shared
# read-write with the host and holds argv, env, and (written here) status.
# ---------------------------------------------------------------------------------------
in_vm() {
  local dir=$1 user uid gid home cg deleg leaf c p
  # The status file says how far the guest got: setup, running, then "rc N".
  echo setup >"$dir/status"
  user=$(cat "$dir/user")
  uid=$(id -u "$user")
  gid=$(id -g "$user")
  home=$(getent passwd "$user" | cut -d: -f6)

  cg=/sys/fs/cgroup
  if [ "$(stat -f -c %T "$cg")" != cgroup2fs ]; then
    mountpoint -q "$cg" && umount -R "$cg"
    mount -t cgroup2 -o nsdelegate cgroup2 "$cg"
  fi
  for c in $CONTROLLERS; do
    if ! grep -qw "$c" "$cg/cgroup.controllers"; then
      echo "vm-test: the guest kernel has no cgroup2 controller $c" \
        "(it has: $(cat "$cg/cgroup.controllers"))" >&2
      false
    fi
  done

  # The delegated cgroup where systemd puts a user manager, with the controllers enabled all
  # the way down to it.
  deleg=user.slice/user-$uid.slice/user@$uid.service
  p=$cg
  for part in ${deleg//\// }; do
    for c in $CONTROLLERS; do echo "+$c" >"$p/cgroup.subtree_control"; done
    p=$p/$part
    mkdir -p "$p"
  done
  chown "$uid:$gid" "$p"
  while read -r f; do
    [ -e "$p/$f" ] && chown "$uid:$gid" "$p/$f"
  done </sys/kernel/cgroup/delegate
  deleg=$p
  leaf=$deleg/shell.scope
  mkdir -p "$leaf"
  chown -R "$uid:$gid" "$leaf"

  # A tmpfs for TMPDIR: /tmp here is an overlay on the host's /tmp over 9p, which cannot be
  # an overlay's upper layer (sbx's overlays in user namespaces need one).
  [ "$(stat -f -c %T /var/tmp)" = tmpfs ] || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
  mkdir -p "/run/user/$uid"
  chown "$uid:$gid" "/run/user/$uid"
  chmod 700 "/run/user/$uid"
  # Device modes an ordinary distribution has, as ci/setup-host.sh does on the host.
  modprobe tun 2>/dev/null || true
  for f in /dev/fuse /dev/net/tun; do
    [ -e "$f" ] && chmod 666 "$f"
  done

  # The command's environment: a clean one, plus what the caller passed (env, NUL-separated).
  local -a envv argv
  envv=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    HOME="$home" USER="$user" LOGNAME="$user" LANG=C.UTF-8 TERM=dumb
    XDG_RUNTIME_DIR="/run/user/$uid" TMPDIR=/var/tmp RUST_BACKTRACE=1)
  mapfile -d '' -t -O ${#envv[@]} envv <"$dir/env"
  envv+=(SBX_VM=1 SBX_VM_CGROUP="$deleg")
  mapfile -d '' -t argv <"$dir/argv"

  # Move the process that becomes the command into the leaf (root must: the user may move
  # processes only between cgroups inside the subtree), then, as the user, enable the
  # controllers in the delegated cgroup as a user manager does for its children.
  echo "ci/vm-test.sh: guest up after $(cut -d' ' -f1 /proc/uptime) s; cgroups delegated; running the command" >&2
  echo running >"$dir/status"
  set +e
  (
    set -e
    echo "$BASHPID" >"$leaf/cgroup.procs"
    cd "$home"
    exec setpriv --reuid="$uid" --regid="$gid" --init-groups -- env -i "${envv[@]}" \
      /bin/sh -c '
        for c in '"$CONTROLLERS"'; do echo "+$c" >"$SBX_VM_CGROUP/cgroup.subtree_control"; done
        exec "$@"' sh "${argv[@]}"
  ) </dev/null
  local rc=$?
  set -e
  echo "rc $rc" >"$dir/status"
  exit "$rc"
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
echo "== cat cgroup.subtree_control (of the delegated cgroup)"
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
sh -c 'echo $$ >"$1/cgroup.procs"; python3 -c "b = bytearray(256 << 20); print(\"not killed\")"
  echo "  python3 exit code $? (137: SIGKILL)"' sh "$t" 2>&1
echo "  memory.events: $(grep -E '^(max|oom|oom_kill) ' "$t/memory.events" | tr '\n' ' ')"
rmdir "$t"
echo "== removed $t"
echo "== unshare -Ur (user namespaces): $(unshare -Ur id -u)"
echo "selftest: ok"
EOF
}

# ---------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------
if [ "${1:-}" = "--in-vm" ]; then
  in_vm "$2"
fi

selftest=0
cmd=()
while [ $# -gt 0 ]; do
  case $1 in
    --selftest) selftest=1; shift ;;
    --) shift; cmd=("$@"); break ;;
    -h | --help) usage ;;
    *) echo "ci/vm-test.sh: unknown argument $1" >&2; usage ;;
  esac
done
if [ $selftest = 1 ]; then
  [ ${#cmd[@]} -eq 0 ] || usage
  cmd=(/bin/sh -c "$(selftest_script)")
fi
[ ${#cmd[@]} -gt 0 ] || usage

cd "$(dirname "$0")/.."
TEST_USER=${SBX_TEST_USER:-sbxtest}
VENV=${SBX_VM_VENV:-/opt/sbx-virtme-ng}
vng=$VENV/bin/vng

if [ "$(id -u)" -eq 0 ]; then
  packages=(qemu-system-x86 linux-image-amd64 busybox-static)
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "ci/vm-test.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
  if ! compgen -G "$VENV/lib/python3*/site-packages/virtme_ng-$VIRTME_NG_VERSION.dist-info" >/dev/null; then
    echo "ci/vm-test.sh: installing virtme-ng $VIRTME_NG_VERSION in $VENV" >&2
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      # Debian's own python3 needs python3-venv for this.
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3-venv >/dev/null
      rm -rf "$VENV"
      /usr/bin/python3 -m venv "$VENV"
    fi
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
if [ -z "$kernel" ]; then
  for k in $(ls -v /boot/vmlinuz-* 2>/dev/null); do
    [ -d "/lib/modules/${k#/boot/vmlinuz-}" ] && kernel=$k
  done
fi
if [ -z "$kernel" ] || [ ! -r "$kernel" ]; then
  echo "ci/vm-test.sh: no readable guest kernel (/boot/vmlinuz-*); apt-get install linux-image-amd64" >&2
  exit 2
fi

# What the guest reads (argv, env, user, this script) and writes (status), shared read-write.
dir=$(mktemp -d /tmp/sbx-vm.XXXXXX)
trap 'rm -rf "$dir"' EXIT
chmod 755 "$dir"
cp "$0" "$dir/vm-test.sh"
printf '%s\n' "$TEST_USER" >"$dir/user"
printf '%s\0' "${cmd[@]}" >"$dir/argv"
: >"$dir/env"
while IFS= read -r -d '' kv; do
  case $kv in SBX_VM_*) ;; SBX_*=* | RUST_BACKTRACE=* | RUST_LOG=*) printf '%s\0' "$kv" >>"$dir/env" ;; esac
done < <(env -0)

vng_args=(-r "$kernel" --disable-kvm --force-9p --cpus "${SBX_VM_CPUS:-2}" --memory "${SBX_VM_MEMORY:-2G}"
  --rwdir "$dir"
  # --force-9p: Debian 12's qemu ships the old C virtiofsd, which vng cannot start: it would
  # wait 3 s for it, then fall back to 9p anyway.
  # udev's coldplug loads every module the emulated q35 machine matches, slowly under TCG
  # (and kvm_amd, for the emulated SVM): none is needed.
  --append "modprobe.blacklist=kvm,kvm_amd,kvm_intel,ccp,ahci,libahci,libata,sr_mod,cdrom,sg,psmouse,pcspkr,i2c_i801,lpc_ich,iTCO_wdt,i6300esb,evdev,serio_raw,aesni_intel,ghash_clmulni_intel,sha512_ssse3,sha256_ssse3,sha1_ssse3,crc32_pclmul,crct10dif_pclmul,powernow_k8,qemu_fw_cfg,button,joydev"
  --exec "exec /bin/bash $dir/vm-test.sh --in-vm $dir")
[ "$(id -u)" -eq 0 ] || vng_args+=(--user root)
[ "${SBX_VM_VERBOSE:-}" = 1 ] && vng_args+=(--verbose)

echo "ci/vm-test.sh: booting $(basename "$kernel") under qemu (TCG, ${SBX_VM_CPUS:-2} CPUs, ${SBX_VM_MEMORY:-2G})" >&2
start=$SECONDS
set +e
# vng runs qemu in the same process group, so timeout stops both. stdin is not the terminal:
# qemu would be stopped reading it from the background group timeout puts it in. stdout and
# stderr are pipes: qemu reopens them through /proc/self/fd with O_TRUNC, which would empty
# a log file that this script's caller sends its output to.
PATH=$(dirname "$vng"):$PATH timeout -k 10 "${SBX_VM_TIMEOUT:-2400}" "$vng" "${vng_args[@]}" \
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
  124:*) echo "ci/vm-test.sh: timed out after ${SBX_VM_TIMEOUT:-2400} s (${status:-booting})" >&2 ;;
  *:setup) echo "ci/vm-test.sh: the cgroup setup in the VM failed (see above)" >&2; exit 3 ;;
  *:running) echo "ci/vm-test.sh: the VM stopped while the command ran (crash? killed?)" >&2 ;;
  *) echo "ci/vm-test.sh: the VM reported no exit code (did it boot? SBX_VM_VERBOSE=1 shows)" >&2 ;;
esac
exit 4
