#!/usr/bin/env python3
"""`agentrun preflight` on a generated project tree, side by side with `detect-secrets scan`.

The tree (made once, deterministic, under /var/tmp/agentrun-bench-preflight/tree: outside
this repository, whose own work tree would otherwise contain it): N files (default
50,000) of about M MiB in all (default 500): text of mixed sizes (a few hundred bytes to
64 KiB, code-like lines), 2% binaries (a NUL in the first bytes), 20 files over 1 MiB, and
a few planted keys: the profile's declared values (raw in a Python file, in a YAML config,
base64 in a blob) and built-in-rule tokens (GitHub, AWS, Slack, Stripe). It is committed to
git (`git add -A`, one commit) and also timed as a plain directory (its `.git` moved aside
for those runs).

Rows, interleaved A B C A B C ... (after one warm-up round), medians of --runs:
  A  agentrun preflight --profile P --json TREE        (git: the tracked files)
  B  detect-secrets scan (in TREE)                     (git: the tracked files)
  C  agentrun preflight --profile P --json TREE        (not a git work tree: the ignore walk)
For each: files per second (files in the tree / time), findings, and whether every planted
key was found (at its file and line).

gitleaks is not a row: no pinned gitleaks installs from the registries here (the npm and
PyPI wrappers download the Go binary from GitHub at install time, or are rebundles of an
unknown publisher's build).

detect-secrets 1.5.0 comes from bench/requirements-preflight.txt (exact versions with
hashes), installed into target/bench-venv-preflight on the first run.

    cargo build --release --locked
    bench/preflight.py [--files N] [--mib M] [--runs R] [--peer-files N] [--binary PATH] [--no-detect-secrets]
"""

import argparse
import base64
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Not under this checkout: preflight (like git) finds the nearest `.git` above a directory,
# and the plain-directory rows must not be inside agentrun's own work tree.
WORK = os.path.join("/var/tmp", "agentrun-bench-preflight")
VENV = os.path.join(ROOT, "target", "bench-venv-preflight")

# The profile's declared values (no built-in rule knows them: only agentrun, which fetched
# them, can find them).
DECLARED = {
    "API_KEY": "Pf7QmZ4tXw9RkLp2VnB8cYdHs3Ja6Ue1",
    "DB_PASSWORD": "q3Vt8LmZr2Xw6KpN9sYb4HcJ",
    "WEBHOOK_SECRET": "wh7Rk2Pq9ZtL4mXv8NcB3sYd6HjG1fQe",
}
# Built-in-rule tokens (shapes every scanner knows).
TOKENS = {
    "github": "ghp_R8kT2mWq9ZxV4bN7cLp3Hs6Jd1Fg5Ya0Ue2i",
    "aws": "AKIAQ7ZX4MNB2VCR8TLP",
    "slack": "xoxb-2048193756-5829301746-Rk8mQz2Xv9LpT4wN7cYb3Hs6",
    "stripe": "sk_live_51Hq8ZtLr2Xw6KpN9sYb4HcJmQv7Rk2Pq9Zt",
}

WORDS = (
    "def return import class self value index count result request response config "
    "path name item data list dict print for while if else elif try except with as "
    "lambda yield async await true false none the of to and in is it that this function "
    "module package build test check parse write read open close start stop handle error"
).split()


def planted_files():
    """(relative path, text, line of the key, what) for each planted key."""
    b64 = base64.b64encode(f'{{"auth": "Bearer {DECLARED["WEBHOOK_SECRET"]}"}}'.encode()).decode()
    return [
        ("src/app/settings.py", f'import os\n\nDEBUG = False\nAPI_KEY = "{DECLARED["API_KEY"]}"\n', 4, "declared API_KEY (python)"),
        ("deploy/config/db.yaml", f'database:\n  host: db.internal\n  password: {DECLARED["DB_PASSWORD"]}\n', 3, "declared DB_PASSWORD (yaml)"),
        ("deploy/blob.txt", f"# deploy credentials\ndata: {b64}\n", 2, "declared WEBHOOK_SECRET (base64)"),
        ("scripts/release.sh", f"#!/bin/sh\necho {TOKENS['github']} | gh auth login --with-token\n", 2, "github token"),
        ("infra/aws.env.sh", f"export AWS_ACCESS_KEY_ID={TOKENS['aws']}\n", 1, "aws access key id"),
        ("notify/slack.py", f'SLACK = "{TOKENS["slack"]}"\n', 1, "slack bot token"),
        ("billing/stripe.js", f'const stripe = require("stripe")("{TOKENS["stripe"]}");\n', 1, "stripe live key"),
    ]


def text_pool(rng, size):
    lines = []
    total = 0
    while total < size:
        indent = "    " * rng.randrange(0, 4)
        line = indent + " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 12))) + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


def generate(tree, n_files, mib):
    marker = tree + ".complete"
    want = f"{n_files} {mib}\n"
    if os.path.exists(marker) and open(marker).read() == want:
        return
    shutil.rmtree(tree, ignore_errors=True)
    os.makedirs(tree)
    rng = random.Random(14)
    pool = text_pool(rng, 8 << 20)
    planted = planted_files()
    n_large, n_binary = max(1, n_files // 2500), n_files // 50
    n_text = n_files - n_large - n_binary - len(planted) - 1
    large_bytes = n_large * (1536 << 10)
    binary_bytes = n_binary * (16 << 10)
    avg_text = max(256, ((mib << 20) - large_bytes - binary_bytes) // max(1, n_text))
    exts = [".py", ".js", ".md", ".txt", ".yaml", ".json", ".rs", ".go", ".html", ".cfg"]
    written = 0

    def put(rel, data):
        nonlocal written
        p = os.path.join(tree, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        written += len(data)

    def chunk(size):
        off = rng.randrange(0, len(pool) - size - 1)
        return pool[off:off + size]

    for i in range(n_text):
        d = f"pkg{i % 97:02d}/mod{(i // 97) % 53:02d}"
        # Sizes: mostly small, some up to 64 KiB; mean about avg_text.
        size = min(64 << 10, max(200, int(rng.expovariate(1.0 / avg_text))))
        put(f"{d}/file{i:05d}{exts[i % len(exts)]}", chunk(size))
    for i in range(n_binary):
        put(f"assets/bin{i % 31:02d}/blob{i:05d}.bin", b"\x00\x01" + rng.randbytes(16 << 10))
    for i in range(n_large):
        put(f"data/large{i:02d}.csv", chunk(1536 << 10))
    for rel, text, _, _ in planted:
        put(rel, text.encode())
    put(".gitignore", b"*.pyc\n__pycache__/\n")
    print(f"generated {n_files} files, {written / (1 << 20):.0f} MiB in {tree}", file=sys.stderr)
    # No automatic gc: a detached `gc --auto` after the commit would still be writing to .git
    # when the plain-directory rows move it aside.
    git = ["git", "-C", tree, "-c", "user.name=bench", "-c", "user.email=bench@example.com",
           "-c", "gc.auto=0", "-c", "maintenance.auto=false"]
    shutil.rmtree(os.path.join(tree, ".git"), ignore_errors=True)
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["config", "gc.auto", "0"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "bench tree"], check=True)
    with open(marker, "w") as f:
        f.write(want)


def detect_secrets_bin():
    exe = os.path.join(VENV, "bin", "detect-secrets")
    if os.path.exists(exe):
        return exe
    py = shutil.which("python3.11") or "/usr/bin/python3"
    subprocess.run([py, "-m", "venv", VENV], check=True)
    env = dict(os.environ, PIP_FIND_LINKS="")
    subprocess.run(
        [os.path.join(VENV, "bin", "pip"), "install", "--quiet", "--require-hashes", "--only-binary=:all:",
         "-r", os.path.join(ROOT, "bench", "requirements-preflight.txt")],
        check=True, env=env,
    )
    return exe


def run_agentrun(binary, profile, tree, env):
    r = subprocess.run([binary, "preflight", "--profile", profile, "--json", tree],
                       env=env, capture_output=True)
    if r.returncode not in (0, 1):
        sys.exit(f"agentrun preflight failed ({r.returncode}): {r.stderr.decode()}")
    doc = json.loads(r.stdout)
    hc = next(c for c in doc["checks"] if c["id"] == "secrets.hardcoded")
    return {(f["file"], f["line"]) for f in hc["findings"]}, doc


def run_detect_secrets(exe, tree, env):
    r = subprocess.run([exe, "scan"], cwd=tree, capture_output=True, env=env)
    if r.returncode != 0:
        sys.exit(f"detect-secrets failed ({r.returncode}): {r.stderr.decode()[:2000]}")
    doc = json.loads(r.stdout)
    return {(f, s["line_number"]) for f, secrets in doc["results"].items() for s in secrets}, doc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=50_000)
    ap.add_argument("--mib", type=int, default=500)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--binary")
    ap.add_argument("--no-detect-secrets", action="store_true")
    ap.add_argument("--peer-files", type=int, default=1000,
                    help="detect-secrets' tree (the same mix, scaled down); 0: the full tree")
    a = ap.parse_args()
    binary = a.binary or next(
        (b for b in (os.path.join(ROOT, "target", k, "agentrun") for k in ("release", "debug")) if os.path.exists(b)),
        None,
    )
    if not binary:
        sys.exit("no agentrun binary: cargo build --release --locked")
    print(f"agentrun: {binary}", file=sys.stderr)
    tree = os.path.join(WORK, "tree")
    if os.path.isdir(os.path.join(WORK, "git-aside")):
        # A run cut short while .git was moved aside: make the tree again.
        shutil.rmtree(os.path.join(WORK, "git-aside"))
        os.remove(tree + ".complete")
    generate(tree, a.files, a.mib)
    # detect-secrets reads about 0.3 MiB/s here (no size limit: the files over 1 MiB too), so
    # it runs on a tree of the same mix scaled down (--peer-files); files/s compares.
    peer = tree
    if a.peer_files and a.peer_files < a.files:
        peer = os.path.join(WORK, "peer")
        generate(peer, a.peer_files, max(1, a.mib * a.peer_files // a.files))
    profile = os.path.join(WORK, "profile.toml")
    with open(profile, "w") as f:
        f.write("version = 1\n[secrets]\n" + "".join(f'{k} = "env:{k}"\n' for k in DECLARED))
        f.write(f'[audit]\nlog = "{os.path.join(WORK, "audit.jsonl")}"\n')
    # The trees lie under this repository's target/: git must not find this repository
    # above them (the plain-directory rows would then be an ignored part of it).
    env = dict(os.environ, **DECLARED, AGENTRUN_AUDIT_LOG=os.path.join(WORK, "audit.jsonl"),
               GIT_CEILING_DIRECTORIES=WORK)
    ds = None if a.no_detect_secrets else detect_secrets_bin()

    def nongit(fn):
        os.rename(os.path.join(tree, ".git"), os.path.join(WORK, "git-aside"))
        try:
            return fn()
        finally:
            os.rename(os.path.join(WORK, "git-aside"), os.path.join(tree, ".git"))

    rows = [("A agentrun preflight (git)", lambda: run_agentrun(binary, profile, tree, env))]
    if ds:
        rows.append(("B detect-secrets scan (git)", lambda: run_detect_secrets(ds, peer, env)))
    rows.append(("C agentrun preflight (not git)", lambda: nongit(lambda: run_agentrun(binary, profile, tree, env))))
    times = {name: [] for name, _ in rows}
    found = {}
    for rnd in range(a.runs + 1):
        for name, fn in rows:
            t0 = time.perf_counter()
            f, doc = fn()
            dt = time.perf_counter() - t0
            if rnd > 0:
                times[name].append(dt)
            found[name] = (f, doc)
            print(f"  round {rnd} {name}: {dt:.2f} s", file=sys.stderr)
    planted = planted_files()
    print(f"\n{a.files} files, {a.mib} MiB; {a.runs} interleaved runs after a warm-up; medians")
    if ds and peer != tree:
        print(f"  (detect-secrets on {a.peer_files} files of the same mix, {max(1, a.mib * a.peer_files // a.files)} MiB)")
    print(f"  {'':<34} {'median s':>9} {'p25-p75':>15} {'files/s':>9} {'findings':>9}  planted found")
    for name, _ in rows:
        n_files = a.peer_files if name.startswith("B") and peer != tree else a.files
        t = sorted(times[name])
        med = statistics.median(t)
        q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0], t[0], t[0]]
        f, _ = found[name]
        hits = [what for rel, _, line, what in planted if (rel, line) in f]
        missed = [what for rel, _, line, what in planted if (rel, line) not in f]
        print(f"  {name:<34} {med:9.2f} {q[0]:7.2f}-{q[2]:<7.2f} {n_files / med:9.0f} {len(f):9d}  "
              f"{len(hits)}/{len(planted)}" + (f" (missed: {', '.join(missed)})" if missed else ""))
    _, doc = found[rows[0][0]]
    hc = next(c for c in doc["checks"] if c["id"] == "secrets.hardcoded")
    print(f"\nagentrun: {hc['summary']}")


if __name__ == "__main__":
    main()
