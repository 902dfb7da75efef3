"""Alternating start-up timing of sbx and bwrap; called by ci/bench.sh."""
import argparse
import json
import os
import statistics
import subprocess
import time


def timed(cmd):
    start = time.perf_counter_ns()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    elapsed = time.perf_counter_ns() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.decode()}")
    return elapsed / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--sbx", required=True)
    ap.add_argument("--iperf", action="store_true", help="also measure TCP throughput")
    args = ap.parse_args()
    cases = {
        "sbx": [args.sbx, "run", "--", "/bin/true"],
        "sbx-slirp": [args.sbx, "run", "--net", "slirp4netns", "--", "/bin/true"],
        "bwrap": ["bwrap", "--unshare-all", "--die-with-parent", "--new-session",
                  "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
                  "--tmpfs", "/tmp", "/bin/true"],
    }
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
        print(f"{name:6} median {med[name]:6.2f} ms   p10 {q[0]:6.2f}   p90 {q[-1]:6.2f}   "
              f"({len(t)} runs)")
    print(f"ratio sbx/bwrap (medians): {med['sbx'] / med['bwrap']:.2f}x")
    print(f"networking start-up cost (slirp4netns): +{med['sbx-slirp'] - med['sbx']:.2f} ms")
    if args.iperf:
        throughput(args.sbx)


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
