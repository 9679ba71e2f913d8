#!/usr/bin/env python3
"""What `agentrun learn`'s observation costs, side by side with the same command unobserved.

`learn` traces with ptrace, but a seccomp `SECCOMP_RET_TRACE` filter stops the command only at
the syscalls that use a path or an address (open, exec, connect, ...): everything else runs at
full speed. The peer is `strace -f` (when installed), which stops at every syscall. Rows:

1. a Python start importing a few dozen modules (`json`, `email`, `http.client`, `asyncio`):
   bare, `agentrun --unconfined`, `agentrun learn`, `strace -f -o /dev/null`;
2. a file-heavy child (20k open/close of one file + 200k `os.getppid`): the same four rows,
   so the cost per traced syscall and the cost of the untraced ones show apart.

Commands are interleaved (A B C D A B C D ...); the script prints medians, the p25-p75 range
and ratios to the bare run.

    cargo build --release --locked
    bench/learn.py [--runs N] [--heavy-runs N] [--binary PATH]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPORTS = "import json, email.parser, http.client, asyncio, urllib.request\n"
HEAVY = (
    "import os\n"
    "for _ in range(20000):\n"
    "    os.close(os.open('/etc/hostname', os.O_RDONLY))\n"
    "for _ in range(200000):\n"
    "    os.getppid()\n"
)


def measure(cmds, runs, cwd, env, warmup=3):
    times = {name: [] for name, _ in cmds}
    for _ in range(warmup):
        for name, argv in cmds:
            r = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if r.returncode != 0:
                sys.exit(f"{name} failed with {r.returncode}: {argv}\n{r.stderr.decode()}")
    for _ in range(runs):
        for name, argv in cmds:
            t0 = time.perf_counter_ns()
            subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append((time.perf_counter_ns() - t0) / 1e6)
    return times


def report(title, cmds, times, base_name):
    base = statistics.median(times[base_name])
    print(f"\n{title}")
    print(f"  {'':<40} {'median':>9}  {'p25-p75':>17}  {'added':>9}  ratio")
    for name, _ in cmds:
        t = times[name]
        med = statistics.median(t)
        q = statistics.quantiles(t, n=4)
        print(f"  {name:<40} {med:8.2f}  ({q[0]:7.2f}-{q[2]:7.2f})  {med - base:+9.2f}  {med / base:5.2f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--heavy-runs", type=int, default=10)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/agentrun"))
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} missing: run `cargo build --release --locked` first")
    python = "/usr/bin/python3"
    work = tempfile.mkdtemp(prefix="agentrun-bench-learn-")
    home = tempfile.mkdtemp(prefix="agentrun-bench-home-", dir="/var/tmp")
    profile = os.path.join(work, "bench.toml")
    with open(profile, "w") as f:
        f.write("version = 1\n")
    os.chmod(profile, 0o600)
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8",
           "AGENTRUN_AUDIT_LOG": os.path.join(work, "audit.jsonl")}
    strace = shutil.which("strace")
    if not strace:
        print("strace not found: its rows are left out (apt-get install -y strace)")
    for title, code, runs in [
        (f"Python start with imports, {args.runs} interleaved runs each, wall ms", IMPORTS, args.runs),
        (f"20k open/close + 200k getppid, {args.heavy_runs} interleaved runs each, wall ms", HEAVY, args.heavy_runs),
    ]:
        child = [python, "-c", code]
        cmds = [
            ("bare", child),
            ("agentrun --unconfined", [args.binary, "-q", "--profile", profile, "--unconfined", "--", *child]),
            ("agentrun learn", [args.binary, "learn", "-q", "--profile", profile, "--", *child]),
        ]
        if strace:
            cmds.append(("strace -f -o /dev/null", [strace, "-f", "-o", "/dev/null", *child]))
        times = measure(cmds, runs, work, env)
        report(title, cmds, times, "bare")
        learn = statistics.median(times["agentrun learn"])
        unc = statistics.median(times["agentrun --unconfined"])
        print(f"  learn / --unconfined: {learn / unc:.2f}x")
        if strace:
            print(f"  learn / strace -f: {learn / statistics.median(times['strace -f -o /dev/null']):.2f}x")


if __name__ == "__main__":
    main()
