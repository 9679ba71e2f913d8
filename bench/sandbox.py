#!/usr/bin/env python3
"""What confinement costs: start-up and per-syscall, side by side with the baselines.

1. Start-up, every row running `/bin/true`: bare exec, `agentrun --unconfined`, agentrun with
   full confinement (Landlock + seccomp + capability drop + PID namespace), and bubblewrap
   (`bwrap --ro-bind / / --dev /dev --proc /proc`, Debian's `bubblewrap` package).
2. A syscall-heavy child (200k `os.stat` + 200k `os.getppid` in /usr/bin/python3) confined vs
   unconfined: what the seccomp filter adds per syscall; and the same child under a
   one-instruction allow-all filter it installs itself, the cost of any seccomp filter.

Commands are interleaved (A B C A B C ...) so the noise of a shared machine hits them alike;
the script prints medians, the p25-p75 range and ratios to the baseline.

    cargo build --release --locked
    bench/sandbox.py [--runs N] [--heavy-runs N] [--binary PATH]

Without bwrap on PATH its row is left out (`apt-get install -y bubblewrap` to get it).
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
HEAVY = (
    "import os\n"
    "for _ in range(200000):\n"
    "    os.stat('.')\n"
    "    os.getppid()\n"
)
# The same child, first installing a one-instruction seccomp filter that allows everything:
# what any seccomp filter costs a syscall on this kernel (its entry path), to tell apart
# from what agentrun's filter and Landlock add.
SECCOMP_NR = {"x86_64": 317, "aarch64": 277}.get(os.uname().machine, 317)
ALLOW_ALL = (
    "import ctypes, struct\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "assert libc.prctl(38, 1, 0, 0, 0) == 0\n"  # PR_SET_NO_NEW_PRIVS
    "insn = ctypes.create_string_buffer(struct.pack('HBBI', 0x06, 0, 0, 0x7fff0000))\n"  # ret ALLOW
    "prog = ctypes.create_string_buffer(struct.pack('HxxxxxxQ', 1, ctypes.addressof(insn)))\n"
    f"assert libc.syscall({SECCOMP_NR}, 1, 0, prog) == 0, ctypes.get_errno()\n"  # SET_MODE_FILTER
    "assert 'Seccomp:\\t2' in open('/proc/self/status').read()\n"
) + HEAVY


def measure(cmds, runs, cwd, env, warmup=5):
    times = {name: [] for name, _ in cmds}
    for _ in range(warmup):
        for name, argv in cmds:
            r = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if r.returncode != 0:
                sys.exit(f"{name} failed with {r.returncode}: {argv}\n{r.stderr.decode()}")
    for _ in range(runs):
        for name, argv in cmds:
            t0 = time.perf_counter_ns()
            r = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
            t1 = time.perf_counter_ns()
            if r.returncode != 0:
                sys.exit(f"{name} failed with {r.returncode}: {argv}")
            times[name].append((t1 - t0) / 1e6)
    return times


def report(title, cmds, times, base_name):
    base = statistics.median(times[base_name])
    print(f"\n{title}")
    print(f"  {'':<52} {'median':>9}  {'p25-p75':>17}  {'added':>8}  ratio")
    for name, _ in cmds:
        t = times[name]
        med = statistics.median(t)
        q = statistics.quantiles(t, n=4)
        print(
            f"  {name:<52} {med:8.3f}  ({q[0]:7.3f}-{q[2]:7.3f})  {med - base:+8.3f}  {med / base:5.2f}x"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300, help="start-up runs per command")
    ap.add_argument("--heavy-runs", type=int, default=15, help="syscall-heavy runs per command")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/agentrun"))
    ap.add_argument("--compare", metavar="PATH", help="another agentrun build to add rows for (e.g. before a change)")
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} missing: run `cargo build --release --locked` first")
    python = "/usr/bin/python3"

    work = tempfile.mkdtemp(prefix="agentrun-bench-sandbox-")
    # $HOME outside every write root, as on a real machine: a home under /tmp would make
    # the sandbox grant /tmp entry by entry around its credential stores.
    home = tempfile.mkdtemp(prefix="agentrun-bench-home-", dir="/var/tmp")
    profile = os.path.join(work, "bench.toml")
    with open(profile, "w") as f:
        f.write('version = 1\n[audit]\nlog = "audit.jsonl"\n')
    os.chmod(profile, 0o600)
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8"}
    a = [args.binary, "--profile", profile, "-q"]

    check = subprocess.run([args.binary, "check", "--profile", profile, "--json"], cwd=work, env=env, capture_output=True, text=True)
    print(f"agentrun check: exit {check.returncode}")
    for line in check.stdout.splitlines():
        if '"landlock_abi"' in line or '"how"' in line:
            print("  " + line.strip())

    startup = [
        ("bare /bin/true", ["/bin/true"]),
        ("agentrun --unconfined -- /bin/true", [*a, "--unconfined", "--", "/bin/true"]),
        ("agentrun -- /bin/true (confined)", [*a, "--", "/bin/true"]),
    ]
    if args.compare:
        c = [args.compare, "--profile", profile, "-q"]
        startup.append(("compare: --unconfined -- /bin/true", [*c, "--unconfined", "--", "/bin/true"]))
        startup.append(("compare: -- /bin/true (confined)", [*c, "--", "/bin/true"]))
    bwrap = shutil.which("bwrap")
    if bwrap:
        startup.append(
            ("bwrap --ro-bind / / --dev /dev --proc /proc /bin/true",
             [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "/bin/true"])
        )
    else:
        print("bwrap not found: its row is left out (apt-get install -y bubblewrap)")
    times = measure(startup, args.runs, work, env)
    report(f"start-up, {args.runs} interleaved runs each, wall ms", startup, times, "bare /bin/true")
    conf = statistics.median(times["agentrun -- /bin/true (confined)"])
    unconf = statistics.median(times["agentrun --unconfined -- /bin/true"])
    print(f"  confinement set-up (confined - unconfined median): {conf - unconf:+.3f} ms")
    if bwrap:
        bw = statistics.median(times["bwrap --ro-bind / / --dev /dev --proc /proc /bin/true"])
        print(f"  agentrun confined / bwrap: {conf / bw:.2f}x")

    heavy = [
        ("python3 bare (200k stat + 200k getppid)", [python, "-c", HEAVY]),
        ("agentrun --unconfined -- python3 ...", [*a, "--unconfined", "--", python, "-c", HEAVY]),
        ("agentrun -- python3 ... (confined)", [*a, "--", python, "-c", HEAVY]),
        ("agentrun --unconfined -- python3 (allow-all filter)", [*a, "--unconfined", "--", python, "-c", ALLOW_ALL]),
    ]
    times = measure(heavy, args.heavy_runs, work, env, warmup=1)
    report(f"syscall-heavy child, {args.heavy_runs} interleaved runs each, wall ms", heavy, times,
           "python3 bare (200k stat + 200k getppid)")
    conf = statistics.median(times["agentrun -- python3 ... (confined)"])
    unconf = statistics.median(times["agentrun --unconfined -- python3 ..."])
    allow = statistics.median(times["agentrun --unconfined -- python3 (allow-all filter)"])
    print(f"  seccomp + Landlock per syscall (confined - unconfined, 400k calls): {(conf - unconf) * 1e6 / 400000:+.1f} ns")
    print(f"    of which any seccomp filter costs (allow-all - unconfined): {(allow - unconf) * 1e6 / 400000:+.1f} ns")
    print(f"    and agentrun's filter and Landlock beyond that (confined - allow-all): {(conf - allow) * 1e6 / 400000:+.1f} ns")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
