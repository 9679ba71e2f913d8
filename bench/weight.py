#!/usr/bin/env python3
"""Binary weight of the cloud backends (issue 15): the release build with every backend (the
default features `aws`, `gcp`, `azure`) against the build with none (`--no-default-features`),
side by side in one run: file size, and the start-up of a profile that uses no cloud backend
(4 local secrets, confined), interleaved in a fresh random order each round.

    cargo build --release --locked
    CARGO_TARGET_DIR=target/nofeat cargo build --release --locked --no-default-features
    bench/weight.py [--runs N] [--all PATH] [--none PATH]
"""

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup import ROOT, measure  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--all", default=os.path.join(ROOT, "target/release/agentrun"))
    ap.add_argument("--none", default=os.path.join(ROOT, "target/nofeat/release/agentrun"))
    args = ap.parse_args()
    for b in (args.all, args.none):
        if not os.path.exists(b):
            sys.exit(f"{b} missing: see the build commands at the top of this script")

    work = tempfile.mkdtemp(prefix="agentrun-bench-weight-")
    with open(os.path.join(work, ".env"), "w") as f:
        f.write("A=sk-bench-0123456789abcdefghij\nB=second-secret-value-0123456789\n")
    profile = os.path.join(work, "local.toml")
    with open(profile, "w") as f:
        f.write('version = 1\n[secrets]\nA = "dotenv:.env#A"\nB = "dotenv:.env#B"\nC = "env:BENCH_SECRET"\n')
    os.chmod(profile, 0o600)
    home = tempfile.mkdtemp(prefix="agentrun-bench-home-", dir="/var/tmp")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": home,
        "BENCH_SECRET": "env-secret-value-0123456789",
        "AGENTRUN_AUDIT_LOG": os.path.join(work, "audit.jsonl"),
    }
    cmds = [
        ("bare /bin/true", ["/bin/true"]),
        ("all backends (aws, gcp, azure)", [args.all, "--profile", profile, "--", "/bin/true"]),
        ("no cloud backend", [args.none, "--profile", profile, "--", "/bin/true"]),
    ]
    times = measure(cmds, args.runs, work, env)
    size = {cmds[1][0]: os.path.getsize(args.all), cmds[2][0]: os.path.getsize(args.none)}
    med = {name: statistics.median(times[name]) for name, _ in cmds}
    print(f"{args.runs} interleaved runs each of `agentrun --profile local -- /bin/true` (3 local secrets, confined)")
    print("  build                            size (MiB)   start-up ms (median, p25-p75)")
    for name, _ in cmds:
        q = statistics.quantiles(times[name], n=4)
        mib = f"{size[name] / 2**20:10.2f}" if name in size else " " * 10
        print(f"  {name:<32} {mib}   {med[name]:7.3f} ({q[0]:.3f}-{q[2]:.3f})")
    a, n = cmds[1][0], cmds[2][0]
    print(f"  size ratio all/none: {size[a] / size[n]:.2f}x; start-up difference all - none: "
          f"{med[a] - med[n]:+.3f} ms ({med[a] / med[n]:.3f}x)")
    print(f"  load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
