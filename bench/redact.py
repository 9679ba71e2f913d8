#!/usr/bin/env python3
"""Redaction throughput, memory and latency of agentrun, side by side with its baselines.

Generates a realistic log corpus (~200 MiB by default: timestamps, HTTP access logs, JSON,
git SHAs, UUIDs, stack traces, compiler output, colour codes, and now and then a line that
carries one of the secrets or an auth header) and a profile with 10 secrets (7 from a dotenv
file, 3 from the environment) and the default rules, then measures, interleaved (A B C D A B
C D ...) so that the noise of a shared machine hits every row alike:

  cat big | cat > /dev/null                        the pipe baseline
  agentrun -p P --no-redact -- cat big > /dev/null the launcher's pump without the redactor
  agentrun -p P -- cat big > /dev/null             the pump through the redactor
  dotenvx run --redact -f .env -- cat big          the same secrets through dotenvx, if found

Wall time per run (median, p25-p75, MiB/s), user+sys CPU of the whole process tree (wait4),
peak RSS (`/usr/bin/time -f %M`, the largest of the command and its children; `cat` stays
near 2 MiB; wait4 from here would report this Python process's size, which the child had
before its exec), also for an output five times the corpus, and latency: a child that writes
a timestamped line every few milliseconds, read directly and through agentrun (median, p90).

    cargo build --release --locked
    npm install --prefix /tmp/dotenvx @dotenvx/dotenvx@2.38.2     # optional
    bench/redact.py [--size-mib 200] [--runs 5] [--dotenvx PATH] [--also BINARY]
    bench/redact.py --build-only [--also BINARY]     # only the large-secret build cost

Also measures what one large `file:` secret (60 KiB, and 200 KiB when the build accepts a
source that large) costs at every start: `agentrun redact` over one line, wall time and peak
RSS (median of the runs), for `--binary` and `--also` side by side.

Prints a Markdown table for the README.
"""

import argparse
import os
import random
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOTENVX_DEFAULT = "/tmp/dotenvx/node_modules/.bin/dotenvx"
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def rand_str(rng, n, alphabet=ALNUM):
    return "".join(rng.choice(alphabet) for _ in range(n))


def make_secrets(rng):
    """Ten secret values shaped like real ones, assembled at run time (nothing in this file
    looks like a credential to a scanner)."""
    return {
        "OPENAI_API_KEY": "sk" + "-proj-" + rand_str(rng, 48, ALNUM + "_-"),
        "ANTHROPIC_API_KEY": "sk" + "-ant-api03-" + rand_str(rng, 80, ALNUM + "_-"),
        "GITHUB_TOKEN": "gh" + "p_" + rand_str(rng, 36),
        "AWS_SECRET_ACCESS_KEY": rand_str(rng, 40, ALNUM + "/+"),
        "STRIPE_KEY": "sk" + "_live_" + rand_str(rng, 24),
        "DATABASE_PASSWORD": rand_str(rng, 20, ALNUM + "!#%"),
        "SLACK_TOKEN": "xo" + "xb-" + "-".join(rand_str(rng, k, "0123456789") for k in (12, 13)) + "-" + rand_str(rng, 24),
        "SESSION_SECRET": rand_str(rng, 64, "0123456789abcdef"),
        "WEBHOOK_SECRET": rand_str(rng, 32, ALNUM),
        "API_PASSWORD": "correct-horse-" + rand_str(rng, 10, "abcdefghijklmnopqrstuvwxyz"),
    }


def make_corpus(path, size, secrets, rng):
    """Mixed log lines until `size` bytes; about one line in 2000 carries a secret."""
    values = list(secrets.values())
    hexd = "0123456789abcdef"
    paths = ["/api/v1/users/{}", "/api/v1/orders/{}/items", "/static/js/app.{}.js", "/healthz", "/v2/models/{}/infer", "/login", "/search?q=term{}&page=2"]
    agents = ["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36", "curl/8.5.0", "python-requests/2.31.0", "Go-http-client/1.1"]
    levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]
    frames = [
        '  File "/usr/lib/python3.11/site-packages/requests/sessions.py", line {}, in request',
        '  File "/srv/app/worker/tasks.py", line {}, in run_job',
        "    at Object.<anonymous> (/srv/app/node_modules/express/lib/router/index.js:{}:15)",
        "\tat org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:{})",
        "   {}: std::panicking::begin_panic_handler at /rustc/library/std/src/panicking.rs:665:5",
    ]

    def uuid():
        h = "%032x" % rng.getrandbits(128)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def ts():
        return f"2025-03-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z"

    def line():
        k = rng.randint(0, 99)
        n = rng.randint(1, 99999)
        if k < 25:
            ip = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            return f'{ip} - - [04/Mar/2025:10:{n % 60:02d}:{n % 59:02d} +0000] "GET {rng.choice(paths).format(n)} HTTP/1.1" {rng.choice((200, 200, 200, 304, 404, 500))} {n} "-" "{rng.choice(agents)}"'
        if k < 45:
            return f"{ts()} {rng.choice(levels):5} request_id={uuid()} method=POST path={rng.choice(paths).format(n)} status=200 duration_ms={n % 900}"
        if k < 60:
            return f'{{"level":"info","ts":1709547721.{n},"caller":"server/main.go:{n % 400}","msg":"request completed","trace_id":"{uuid()}","bytes":{n},"tokens_used":{n % 4096}}}'
        if k < 66:
            return f"commit {rng.getrandbits(160):040x}"
        if k < 69:
            return "Author: Jane Developer <jane@example.com>"
        if k < 75:
            return rng.choice(frames).format(n)
        if k < 80:
            return f"\x1b[32m   Compiling\x1b[0m serde v1.0.{n % 300}"
        if k < 84:
            return f' checksum = "{rng.getrandbits(256):064x}"'
        if k < 88:
            return f"test auth::tests::refresh_token_before_expiry_{n} ... ok"
        if k < 92:
            return f"{ts()} DEBUG cache key=session:{uuid()} miss; fetching https://api.example.com:8443/v1/objects/{n}?page=2&per_page=50"
        if k < 95:
            return f"> GET /v1/models HTTP/1.1\n> Host: localhost:{8000 + n % 1000}\n< HTTP/1.1 200 OK"
        return f"{ts()} INFO  worker {n % 16} processed batch of {n % 500} items in {n % 3000} ms; queue depth {n % 120}"

    def secret_line():
        v = rng.choice(values)
        return rng.choice([
            f"> Authorization: Bearer {v}",
            f"export SOME_SECRET={v}",
            f'{{"level":"debug","msg":"config loaded","api_key":"{v}"}}',
            f"{ts()} DEBUG connecting to postgres://app:{v}@db.internal:5432/app",
            f"{ts()} WARN  retrying with key {v[: len(v) // 2]}",
        ])

    written = 0
    with open(path, "w", buffering=1 << 20) as f:
        while written < size:
            block = [secret_line() if rng.randint(0, 1999) == 0 else line() for _ in range(4096)]
            s = "\n".join(block) + "\n"
            f.write(s)
            written += len(s)
    return os.path.getsize(path)


def run_timed(argv, env, cwd, stdin=None, shell=False):
    """Run to completion with stdout to /dev/null; wall seconds, CPU seconds of the process
    tree (wait4), and wait4's peak RSS in KiB (not used: see peak_rss)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=stdin or subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, shell=shell)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if p.returncode != 0:
        sys.exit(f"{argv} failed with {p.returncode}: {err[-2000:]}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss


def peak_rss(argv, env, cwd):
    """Peak RSS in KiB of `argv` and its children, from /usr/bin/time (None without it)."""
    gnu_time = "/usr/bin/time"
    if not os.path.exists(gnu_time):
        return None
    with tempfile.NamedTemporaryFile("r") as f:
        subprocess.run([gnu_time, "-f", "%M", "-o", f.name, *argv], env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        return int(f.read().split()[-1])


LATENCY_CHILD = r"""
import os, sys, time
n, gap = int(sys.argv[1]), float(sys.argv[2])
for i in range(n):
    time.sleep(gap)
    os.write(1, b"%d line %d of the latency probe, no secret here\n" % (time.monotonic_ns(), i))
"""


def latency(argv, env, cwd, lines):
    """Delay (ms) from the child's write to the line's arrival here, per line."""
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    fd = p.stdout.fileno()
    buf = b""
    delays = []
    while True:
        r, _, _ = select.select([fd], [], [], 10)
        if not r:
            p.kill()
            sys.exit(f"latency probe stalled: {argv}")
        chunk = os.read(fd, 65536)
        now = time.monotonic_ns()
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            ln, buf = buf.split(b"\n", 1)
            sent = int(ln.split(b" ", 1)[0])
            delays.append((now - sent) / 1e6)
    p.wait()
    if len(delays) != lines:
        sys.exit(f"latency probe: {len(delays)} of {lines} lines arrived through {argv}")
    return delays


def q(xs):
    xs = sorted(xs)
    qs = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0], xs[0], xs[0]]
    return statistics.median(xs), qs[0], qs[2]


def build_cost(binaries, runs):
    """Start-up cost of a large declared secret: `agentrun redact` over one line, per binary,
    with a random 60 KiB and 200 KiB `file:` secret (wall s and peak RSS, medians)."""
    rng = random.Random(13)
    work = tempfile.mkdtemp(prefix="agentrun-build-bench-")
    home = tempfile.mkdtemp(prefix="agentrun-bench-home-", dir="/var/tmp")
    # Since issue 9 a profile may keep its audit log only under the state directory: the
    # operator's variable puts it beside the work (older builds ignore it).
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "AGENTRUN_AUDIT_LOG": os.path.join(work, "audit-operator.jsonl")}
    alphabet = ALNUM + "+/"
    line = os.path.join(work, "line")
    with open(line, "w") as f:
        f.write("one ordinary line\n")
    rows = []
    for kib in (60, 200):
        secret = os.path.join(work, f"s{kib}")
        with open(secret, "w") as f:
            f.write(rand_str(rng, kib * 1024, alphabet))
        os.chmod(secret, 0o600)
        profile = os.path.join(work, f"p{kib}.toml")
        with open(profile, "w") as f:
            f.write(f'version = 1\n[secrets]\nBIG = "file:{secret}"\n[audit]\nlog = "audit.jsonl"\n')
        os.chmod(profile, 0o600)
        for label, binary in binaries:
            walls, rss, refused = [], [], None
            for _ in range(runs):
                with open(line) as stdin, tempfile.NamedTemporaryFile("r") as t:
                    p = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", t.name, binary, "redact", "-p", profile],
                                       env=env, cwd=work, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                    if p.returncode != 0:
                        refused = p.stderr.decode(errors="replace").strip().splitlines()[-1:]
                        break
                    wall, kb = t.read().split()[-2:]
                    walls.append(float(wall))
                    rss.append(int(kb))
            if refused is not None:
                rows.append((kib, label, None, None, refused[0] if refused else "refused"))
            else:
                rows.append((kib, label, statistics.median(walls), statistics.median(rss) / 1024, ""))
    shutil.rmtree(work)
    shutil.rmtree(home)
    print(f"\nstart-up cost of one large `file:` secret (`agentrun redact` over one line, median of {runs}):\n")
    print("| secret | build | wall s | peak RSS |")
    print("|---|---|---|---|")
    for kib, label, wall, rss, note in rows:
        if wall is None:
            print(f"| {kib} KiB | `{label}` | refused: {note} | |")
        else:
            print(f"| {kib} KiB | `{label}` | {wall:.2f} | {rss:.1f} MiB |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/agentrun"))
    ap.add_argument("--dotenvx", default=os.environ.get("DOTENVX", DOTENVX_DEFAULT))
    ap.add_argument("--latency-lines", type=int, default=200)
    ap.add_argument("--also", metavar="BINARY", help="another agentrun build to time alongside (e.g. main's)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (corpus, profile)")
    ap.add_argument("--build-only", action="store_true", help="only the large-secret start-up cost")
    ap.add_argument("--build-runs", type=int, default=3)
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} missing: run `cargo build --release --locked` first")
    binaries = [("--binary " + os.path.relpath(args.binary, ROOT), args.binary)]
    if args.also:
        binaries.append(("--also " + args.also, args.also))
    if args.build_only:
        build_cost(binaries, args.build_runs)
        return
    dotenvx = args.dotenvx if os.path.exists(args.dotenvx) else shutil.which("dotenvx")

    rng = random.Random(20250304)
    work = tempfile.mkdtemp(prefix="agentrun-redact-bench-")
    secrets = make_secrets(rng)
    names = list(secrets)
    t = time.perf_counter()
    big = os.path.join(work, "big.log")
    size = make_corpus(big, args.size_mib << 20, secrets, rng)
    print(f"corpus: {size / (1 << 20):.0f} MiB in {time.perf_counter() - t:.1f} s ({work})", file=sys.stderr)

    with open(os.path.join(work, ".env"), "w") as f:
        for k in names:
            f.write(f'{k}="{secrets[k]}"\n')
    profile = os.path.join(work, "bench.toml")
    with open(profile, "w") as f:
        f.write("version = 1\n[secrets]\n")
        for k in names[:7]:
            f.write(f'{k} = "dotenv:.env#{k}"\n')
        for k in names[7:]:
            f.write(f'{k} = "env:BENCH_{k}"\n')
        f.write('[redact]\nrules = ["default"]\n[audit]\nlog = "audit.jsonl"\n')
    os.chmod(profile, 0o600)
    os.chmod(os.path.join(work, ".env"), 0o600)
    os.mkdir(os.path.join(work, "home"))
    # $HOME outside every write root, as on a real machine: a home under /tmp would make
    # the sandbox grant /tmp entry by entry around its credential stores.
    home = tempfile.mkdtemp(prefix="agentrun-bench-home-", dir="/var/tmp")
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "AGENTRUN_AUDIT_LOG": os.path.join(work, "audit-operator.jsonl")}
    env.update({f"BENCH_{k}": secrets[k] for k in names[7:]})

    # The redacting run must really redact: check once, outside the timing.
    out = subprocess.run([args.binary, "-p", profile, "--", "cat", big], env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True).stdout
    leaked = [k for k, v in secrets.items() if v.encode() in out]
    if leaked:
        sys.exit(f"agentrun leaked {leaked}")
    redactions = out.count(b"[REDACTED:")
    del out

    rows = [
        ("cat big | cat", "cat big.log | cat > /dev/null", True),
        ("agentrun --no-redact", [args.binary, "-p", profile, "--no-redact", "--", "cat", big], False),
        ("agentrun (10 secrets + default rules)", [args.binary, "-p", profile, "--", "cat", big], False),
    ]
    if args.also:
        rows.append(("agentrun --also (10 secrets + default rules)", [args.also, "-p", profile, "--", "cat", big], False))
    if dotenvx:
        version = subprocess.run([dotenvx, "--version"], capture_output=True, text=True).stdout.strip()
        denv = dict(env, PATH=os.path.dirname(os.path.realpath(shutil.which("node") or "/usr/bin/node")) + ":/usr/bin:/bin", DOTENVX_NO_UPDATE="1")
        rows.append((f"dotenvx {version} run --redact", [dotenvx, "run", "--redact", "--quiet", "-f", os.path.join(work, ".env"), "--", "cat", big], denv))
    else:
        print(f"dotenvx not found (looked at {args.dotenvx} and PATH): row skipped", file=sys.stderr)

    def cmd_env(row):
        return row[2] if isinstance(row[2], dict) else env

    results = {name: [] for name, _, _ in rows}
    for i in range(args.runs + 1):
        for row in rows:
            name, argv, shell = row
            r = run_timed(argv, cmd_env(row), work, shell=shell is True)
            if i > 0:  # the first round warms the page cache
                results[name].append(r)

    # Peak RSS, and with five times the output (whatever the size, it must stay flat).
    rss = {name: peak_rss(["sh", "-c", argv] if shell is True else argv, cmd_env((name, argv, shell)), work) for name, argv, shell in rows}
    five = "for i in 1 2 3 4 5; do cat big.log; done"
    rss5 = peak_rss([args.binary, "-p", profile, "--", "sh", "-c", five], env, work)

    # Latency, interleaved.
    gap = 0.005
    probe = ["/usr/bin/python3", "-c", LATENCY_CHILD, str(args.latency_lines), str(gap)]
    lat = {"direct": [], "agentrun": []}
    for _ in range(3):
        lat["direct"] += latency(probe, env, work, args.latency_lines)
        lat["agentrun"] += latency([args.binary, "-p", profile, "--", *probe], env, work, args.latency_lines)

    mib = size / (1 << 20)
    base = statistics.median(w for w, _, _ in results["cat big | cat"])
    print(f"\n{size / (1 << 20):.0f} MiB log corpus, {args.runs} interleaved runs each (after one warm-up round); "
          f"10 secrets (7 dotenv, 3 env) + default rules; {redactions} replacements in the output; {os.cpu_count()} CPUs\n")
    print("| command | wall s (p25-p75) | MiB/s | vs cat\\|cat | CPU s | peak RSS |")
    print("|---|---|---|---|---|---|")
    for name, _, _ in rows:
        walls = [w for w, _, _ in results[name]]
        cpus = [c for _, c, _ in results[name]]
        med, p25, p75 = q(walls)
        rss_s = "-" if rss[name] is None else f"{rss[name] / 1024:.1f} MiB"
        label = name.replace("|", "\\|")
        print(f"| `{label}` | {med:.3f} ({p25:.3f}-{p75:.3f}) | {mib / med:.0f} | {base / med:.2f} | {statistics.median(cpus):.2f} | {rss_s} |")
    if rss5 is not None:
        print(f"\npeak RSS of agentrun redacting {5 * mib:.0f} MiB (5x the corpus): {rss5 / 1024:.1f} MiB")
    if dotenvx:
        ours = statistics.median(w for w, _, _ in results["agentrun (10 secrets + default rules)"])
        theirs = statistics.median(w for w, _, _ in results[rows[-1][0]])
        print(f"agentrun redacting is {theirs / ours:.1f}x the throughput of dotenvx --redact (which matches the 10 values only: no encodings, fragments or rules)")
    print(f"\nlatency, child write -> line read here, a line every {gap * 1e3:.0f} ms, {3 * args.latency_lines} lines each:\n")
    print("| path | median ms | p90 ms |")
    print("|---|---|---|")
    for name, d in lat.items():
        d = sorted(d)
        print(f"| {name} | {statistics.median(d):.3f} | {statistics.quantiles(d, n=10)[-1]:.3f} |")
    build_cost(binaries, args.build_runs)
    if args.keep:
        print(f"\nkept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
