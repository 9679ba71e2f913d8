#!/usr/bin/env python3
"""Start-up overhead of agentrun, measured side by side with its baselines.

Runs each command N times, interleaved (each round A B C in a fresh random order) so that
the noise of this shared machine and the after-effects of one run on the next hit all of
them alike, and prints the median and quartiles of the wall time of
fork+exec+wait as seen from here. Every row runs `/bin/true` as the child.

    bench/startup.py [--runs N] [--binary PATH] [--compare OLD_BINARY]

With --compare, an older build's two rows run interleaved with the others, so a change is
measured against its baseline under the same load (this machine is shared and noisy).
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(cmds, runs, cwd, env):
    times = {name: [] for name, _ in cmds}
    for _ in range(5):  # warm caches
        for _, argv in cmds:
            subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    # Each round in a fresh random order: a run leaves the kernel deferred work (freeing a PID
    # namespace, a seccomp filter, a Landlock ruleset) that the next command pays for, so a
    # fixed order would favour whichever row follows the bare baseline.
    order = random.Random(1)
    for _ in range(runs):
        for name, argv in order.sample(cmds, len(cmds)):
            t0 = time.perf_counter_ns()
            r = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t1 = time.perf_counter_ns()
            if r.returncode != 0:
                sys.exit(f"{name} failed with {r.returncode}: {argv}")
            times[name].append((t1 - t0) / 1e6)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/agentrun"))
    ap.add_argument("--compare", metavar="PATH", help="another agentrun build to add rows for (e.g. before a change)")
    ap.add_argument("--broker", action="store_true", help="add a row with one secret brokered (builds with the broker)")
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} missing: run `cargo build --release --locked` first")

    work = tempfile.mkdtemp(prefix="agentrun-bench-")
    with open(os.path.join(work, ".env"), "w") as f:
        f.write("A=sk-bench-0123456789abcdefghij\nB=second-secret-value-0123456789\n")
    with open(os.path.join(work, "k"), "w") as f:
        f.write("file-secret-value-0123456789\n")
    profile = os.path.join(work, "local.toml")
    with open(profile, "w") as f:
        f.write(
            'version = 1\n[secrets]\nA = "dotenv:.env#A"\nB = "dotenv:.env#B"\n'
            'C = "env:BENCH_SECRET"\n[secrets.D]\nfrom = "file:k"\nas = "file"\n'
            '[audit]\nlog = "audit.jsonl"\n'
        )
    os.chmod(profile, 0o600)
    # $HOME outside every write root, as on a real machine: a home under /tmp would make
    # the sandbox grant /tmp entry by entry around its credential stores.
    home = tempfile.mkdtemp(prefix="agentrun-bench-home-", dir="/var/tmp")
    # The profile's own `log` is for builds before issue 9; since then a profile may keep its
    # log only under the state directory, and the operator's AGENTRUN_AUDIT_LOG (which those
    # builds ignore) puts it beside the work, where the child's mount namespace keeps it
    # read-only: the run pays for that too.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": home,
        "BENCH_SECRET": "env-secret-value-0123456789",
        "AGENTRUN_AUDIT_LOG": os.path.join(work, "audit-operator.jsonl"),
    }

    cmds = [
        ("bare /bin/true", ["/bin/true"]),
        ("agentrun --unconfined (4 local secrets)", [args.binary, "--unconfined", "--profile", profile, "--", "/bin/true"]),
        ("agentrun confined (4 local secrets)", [args.binary, "--profile", profile, "--", "/bin/true"]),
    ]
    if args.compare:
        cmds.append(("compare: --unconfined (4 local secrets)", [args.compare, "--unconfined", "--profile", profile, "--", "/bin/true"]))
        cmds.append(("compare: confined (4 local secrets)", [args.compare, "--profile", profile, "--", "/bin/true"]))
    if args.broker:
        # The same profile with one secret brokered: the run's CA, its trust bundle, the
        # listener made in the child's namespace and the proxy's runtime (nothing is asked of it).
        brokered = os.path.join(work, "brokered.toml")
        with open(profile) as f:
            text = f.read()
        with open(brokered, "w") as f:
            f.write(text.replace('C = "env:BENCH_SECRET"\n', "") + '[secrets.C]\nfrom = "env:BENCH_SECRET"\nbroker = "api.example.com"\n')
        os.chmod(brokered, 0o600)
        cmds.append(("agentrun confined, 1 of 4 secrets brokered", [args.binary, "--profile", brokered, "--", "/bin/true"]))
    extra = os.environ.get("BENCH_EXTRA_FLAGS")
    if extra:
        cmds.append((f"agentrun {extra}", [args.binary, *extra.split(), "--profile", profile, "--", "/bin/true"]))
    bwrap = shutil.which("bwrap")
    if bwrap:
        # The same isolation agentrun gives a policy without ports: its own PID and network
        # namespaces (the row after it, the last, is the one the ratios are taken against).
        cmds.append(("bwrap ... --unshare-pid --unshare-net", [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "--unshare-net", "/bin/true"]))
        cmds.append(("bwrap --ro-bind / / --dev /dev --proc /proc", [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "/bin/true"]))

    times = measure(cmds, args.runs, work, env)
    base = statistics.median(times["bare /bin/true"])
    bw = statistics.median(times[cmds[-1][0]]) if bwrap else None
    print(f"{args.runs} interleaved runs each, wall time in ms (median, p25-p75), added = median - bare median")
    for name, _ in cmds:
        t = sorted(times[name])
        med = statistics.median(t)
        q = statistics.quantiles(t, n=4)
        vs = f"  {med / bw:.2f}x bwrap" if bw else ""
        print(f"  {name:<46} {med:7.3f}  ({q[0]:.3f}-{q[2]:.3f})  added {med - base:+.3f}  ratio {med / base:.2f}x{vs}")
    print(f"  load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
