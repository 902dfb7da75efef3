"""Alternating start-up timing of sbx and bwrap; called by ci/bench.sh."""
import argparse
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
    args = ap.parse_args()
    cases = {
        "sbx": [args.sbx, "run", "--", "/bin/true"],
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


if __name__ == "__main__":
    main()
