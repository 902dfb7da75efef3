"""Alternating start-up timing of sbx and bwrap; called by ci/bench.sh."""
import argparse
import json
import os
import statistics
import subprocess
import time


PER_RUN = dict(os.environ, SBX_USERNS="per-run")
# Without the id-map helpers sbx maps only the caller's own uid and gid, as bwrap does: the
# single-id case (the same path as a user with no subordinate range).
SINGLE_ID = dict(os.environ, SBX_NEWUIDMAP="/nonexistent", SBX_NEWGIDMAP="/nonexistent")


def timed(cmd):
    # A case whose first element is a dict runs with that environment.
    env = None
    if isinstance(cmd[0], dict):
        env, cmd = cmd[0], cmd[1:]
    start = time.perf_counter_ns()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter_ns() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.decode()}")
    return elapsed / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--sbx", required=True)
    ap.add_argument("--iperf", action="store_true", help="also measure TCP throughput")
    ap.add_argument("--baseline", help="another sbx binary (an older build) timed in the same "
                    "alternating run: the regression check of a change")
    ap.add_argument("--image", help="an imported image: start-up on it against bwrap on its "
                    "layer, and the metadata workload on each overlay")
    ap.add_argument("--source-tar", help="the tarball the metadata workload unpacks")
    ap.add_argument("--scratch", help="a directory of ours for upper layers and the bare run")
    ap.add_argument("--podman-image", help="an image in the caller's podman store: "
                    "`podman run --rm` of it with runc against sbx-oci (--sbx-oci)")
    ap.add_argument("--sbx-oci", help="the sbx-oci binary, for --podman-image")
    ap.add_argument("--runc", default="/usr/sbin/runc", help="runc, for --podman-image")
    args = ap.parse_args()
    if args.podman_image:
        podman(args)
        return
    if args.image:
        images(args)
        return
    cases = {
        "sbx": [args.sbx, "run", "--", "/bin/true"],
        "sbx-per-run": [PER_RUN, args.sbx, "run", "--", "/bin/true"],
        "sbx-single": [SINGLE_ID, args.sbx, "run", "--", "/bin/true"],
        "sbx-slirp": [args.sbx, "run", "--net", "slirp4netns", "--", "/bin/true"],
        # The yardstick: sbx's default profile hides the home directory with a tmpfs
        # too.
        "bwrap": ["bwrap", "--unshare-all", "--die-with-parent", "--new-session",
                  "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
                  "--tmpfs", "/tmp", "--tmpfs", os.path.expanduser("~"), "/bin/true"],
    }
    if args.baseline:
        cases["base"] = [args.baseline, "run", "--", "/bin/true"]
    for cmd in cases.values():  # warm caches
        for _ in range(10):
            timed(cmd)
    times = {name: [] for name in cases}
    for i in range(args.rounds):
        order = list(cases.items()) if i % 2 == 0 else list(reversed(cases.items()))
        for name, cmd in order:
            times[name].append(timed(cmd))
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        q = statistics.quantiles(t, n=10)
        print(f"{name:11} median {med[name]:6.2f} ms   p10 {q[0]:6.2f}   p90 {q[-1]:6.2f}   "
              f"({len(t)} runs)")
    print(f"ratio sbx/bwrap (medians): {med['sbx'] / med['bwrap']:.2f}x "
          "(full range, nested in the kept user namespace)")
    print(f"ratio sbx-per-run/bwrap (medians): {med['sbx-per-run'] / med['bwrap']:.2f}x "
          "(full range, newuidmap/newgidmap every run)")
    print(f"ratio sbx-single/bwrap (medians): {med['sbx-single'] / med['bwrap']:.2f}x "
          "(single-id map, as bwrap's)")
    if args.baseline:
        print(f"ratio sbx/base (medians): {med['sbx'] / med['base']:.3f}x "
              f"(base: {args.baseline})")
    print(f"networking start-up cost (slirp4netns): +{med['sbx-slirp'] - med['sbx']:.2f} ms")
    if args.iperf:
        throughput(args.sbx)


def alternate(cases, rounds, warm=3):
    """Runs every case `rounds` times, alternating the order; returns the medians."""
    for cmd in cases.values():
        for _ in range(warm):
            timed(cmd)
    times = {name: [] for name in cases}
    for i in range(rounds):
        order = list(cases.items()) if i % 2 == 0 else list(reversed(cases.items()))
        for name, cmd in order:
            times[name].append(timed(cmd))
    med = {}
    for name, t in times.items():
        med[name] = statistics.median(t)
        print(f"{name:22} median {med[name]:8.2f} ms   min {min(t):8.2f}   max {max(t):8.2f}   "
              f"({len(t)} runs)")
    return med


def images(args):
    """Start-up on an image root against bwrap on the same (single-layer) directory, and a
    metadata-heavy workload (unpack a source tarball, walk it, delete it) on kernel
    overlayfs, on fuse-overlayfs and on the bare host directory."""
    sbx, image = args.sbx, args.image
    info = json.loads(subprocess.run([sbx, "image", "inspect", image], capture_output=True,
                                     text=True, check=True).stdout)
    layer = info["layer_paths"][-1]
    print(f"image {image}: {len(info['layer_paths'])} layer(s); bwrap gets {layer}")
    start = {
        "sbx --image (kernel)": [sbx, "run", "--image", image, "-w", "/", "--", "/bin/true"],
        "sbx --image (fuse)": [sbx, "run", "--image", image, "--overlay", "fuse", "-w", "/",
                               "--", "/bin/true"],
        "bwrap on DIR": ["bwrap", "--unshare-all", "--die-with-parent", "--new-session",
                         "--ro-bind", layer, "/", "--proc", "/proc", "--dev", "/dev",
                         "--tmpfs", "/tmp", "/bin/true"],
    }
    med = alternate(start, args.rounds)
    print(f"ratio sbx --image/bwrap (medians): "
          f"{med['sbx --image (kernel)'] / med['bwrap on DIR']:.2f}x (kernel overlay), "
          f"{med['sbx --image (fuse)'] / med['bwrap on DIR']:.2f}x (fuse-overlayfs)")

    scratch, src = args.scratch, args.source_tar
    work = "mkdir -p /t/w && cd /t/w && tar -xf /src/src.tar && find . | wc -l >/dev/null " \
           "&& du -s . >/dev/null && find . -type f | xargs cat >/dev/null && cd / && rm -rf /t/w"
    common = ["--uid", "0", "--ro-bind", f"{src}:/src/src.tar", "-w", "/"]
    for d in ("upper-kernel", "upper-fuse", "bare"):
        os.makedirs(os.path.join(scratch, d), exist_ok=True)
    meta = {
        "kernel overlayfs": [sbx, "run", "--image", image, "--overlay", "kernel", "--upper",
                             f"{scratch}/upper-kernel", *common, "--", "sh", "-c", work],
        "fuse-overlayfs": [sbx, "run", "--image", image, "--overlay", "fuse", "--upper",
                           f"{scratch}/upper-fuse", *common, "--", "sh", "-c", work],
        "bare host directory": [sbx, "run", "--image", image, "--bind", f"{scratch}/bare:/t",
                                *common, "--", "sh", "-c", work],
    }
    files = subprocess.run(["tar", "-tf", src], capture_output=True, text=True).stdout.count("\n")
    print(f"metadata workload: unpack {files} files, find, du, read them all, delete "
          f"(upper layers on the same filesystem as the bare directory)")
    med = alternate(meta, max(3, args.rounds // 30), warm=1)
    bare = med["bare host directory"]
    print(f"ratio kernel overlayfs/bare: {med['kernel overlayfs'] / bare:.2f}x, "
          f"fuse-overlayfs/bare: {med['fuse-overlayfs'] / bare:.2f}x")


def podman(args):
    """`podman run --rm IMAGE /bin/true`, rootless with cgroupfs, with runc and with
    sbx-oci as the runtime: the whole engine's start-up and teardown, alternated."""
    def run(runtime):
        return ["podman", "--runtime", runtime, "--cgroup-manager", "cgroupfs", "run", "--rm",
                args.podman_image, "/bin/true"]
    med = alternate({"podman + runc": run(args.runc), "podman + sbx-oci": run(args.sbx_oci)},
                    args.rounds, warm=2)
    print(f"ratio podman sbx-oci/runc (medians): "
          f"{med['podman + sbx-oci'] / med['podman + runc']:.2f}x")


def iperf_client(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def throughput(sbx):
    """TCP from the sandbox to the host's loopback through slirp4netns, against the same
    transfer on the host; iperf3 servers on 127.0.0.1 only."""
    port = 15201
    results = {}
    for name, client in {
        "host": ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", "3", "-J"],
        "sbx slirp4netns": [sbx, "run", "--net", "slirp4netns", "--allow-host-loopback", "--",
                            "iperf3", "-c", "10.0.2.2", "-p", str(port), "-t", "3", "-J"],
    }.items():
        server = subprocess.Popen(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        try:
            results[name] = iperf_client(client)
        finally:
            server.wait(timeout=10)
    for name, gbps in results.items():
        print(f"TCP throughput {name:16} {gbps:6.2f} Gbit/s")
    print(f"ratio slirp4netns/host: {results['sbx slirp4netns'] / results['host']:.2f}")


if __name__ == "__main__":
    main()
