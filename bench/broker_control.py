#!/usr/bin/env python3
"""Broker control, measured through the real binary, side by side in one run:

    bench/broker_control.py [--bin target/release/agentrun] [--pairs 5] [--requests 500] [--revokes 15]

- per-request overhead: a child in the sandbox sends N keep-alive requests through the broker
  to a local HTTPS upstream and reports its median per-request time. Profile A brokers one
  secret with no rate; profile B brokers ten secrets (same host) with a rate on each (high
  enough never to refuse: the check is what is measured). A and B alternate, pair by pair;
  the figure is the median of B/A. Goal: within 10% (ratio <= 1.10).
- revocation: a child loops on requests as fast as it can; `agentrun revoke` is started from
  outside; the time from that start to the child's first 403. Each trial is its own run
  (revocation is final for a run). Goal: p99 under 100 ms.

Upstream: tests/fixtures/broker/upstream.py with a test CA made here with openssl. Needs .venv
(.ci/install-test-servers) and a built binary (cargo build --release --locked).
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from broker import make_certs  # noqa: E402

VALUE = "sk-proj-R3alValueOfTheKeyR3alValueOfTheKey0123"

CHILD = r'''
import http.client, os, ssl, statistics, sys, time
n, port, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
proxy = int(os.environ["HTTPS_PROXY"].rsplit(":", 1)[1])
def conn():
    c = http.client.HTTPSConnection("127.0.0.1", proxy, context=ctx, timeout=10)
    c.set_tunnel("127.0.0.1", port)
    return c
c = conn()
auth = {"Authorization": "Bearer " + os.environ["API_KEY"]}
if mode == "latency":
    times = []
    for i in range(n + 20):
        t = time.perf_counter()
        c.request("GET", "/bench", headers=auth)
        r = c.getresponse(); r.read()
        assert r.status == 200, r.status
        if i >= 20:
            times.append(time.perf_counter() - t)
    print(statistics.median(times) * 1000)
else:
    out = open("statuses", "w", buffering=1)
    while not os.path.exists("stop"):
        c.request("GET", "/bench", headers=auth)
        r = c.getresponse(); r.read()
        out.write("%d %.6f\n" % (r.status, time.time()))
        if r.status == 403:
            break
'''


def profile(port, names, rate):
    lines = ["version = 1"]
    for n in names:
        extra = ', rate = "%s"' % rate if rate else ""
        lines += ["[secrets.%s]" % n, 'from = "env:%s"' % n,
                  'broker = { hosts = ["127.0.0.1:%d"]%s }' % (port, extra)]
    lines += ["[broker]", 'ca_cert = "up-ca.pem"', "[sandbox]", 'write = ["."]']
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "agentrun"))
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--revokes", type=int, default=15)
    a = ap.parse_args()
    py = os.path.join(ROOT, ".venv", "bin", "python")
    if not os.path.exists(py) or not os.path.exists(a.bin):
        sys.exit("bench/broker_control.py: needs .venv (.ci/install-test-servers) and %s" % a.bin)
    d = tempfile.mkdtemp(prefix="agentrun-bench-control-")
    up_ca, up_cert, up_key = make_certs(d)
    up = subprocess.Popen([py, os.path.join(ROOT, "tests/fixtures/broker/upstream.py"), up_cert, up_key,
                           os.path.join(d, "log")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(up.stdout.readline())
        work = os.path.join(d, "work")
        os.makedirs(os.path.join(work, "runtime"))
        with open(os.path.join(work, "up-ca.pem"), "w") as f:
            f.write(open(up_ca).read())
        with open(os.path.join(work, "child.py"), "w") as f:
            f.write(CHILD)
        names = ["API_KEY"] + ["KEY_%d" % i for i in range(1, 10)]
        with open(os.path.join(work, "one.toml"), "w") as f:
            f.write(profile(port, names[:1], None))
        with open(os.path.join(work, "ten.toml"), "w") as f:
            f.write(profile(port, names, "1000000/s"))
        env = {"PATH": "/usr/bin:/bin", "HOME": d, "XDG_RUNTIME_DIR": os.path.join(work, "runtime"),
               "AGENTRUN_AUDIT_LOG": os.path.join(d, "audit.jsonl")}
        for i, n in enumerate(names):
            env[n] = VALUE[:-2] + "%02d" % i

        def latency(prof):
            out = subprocess.run([a.bin, "-p", prof, "--", "/usr/bin/python3", "child.py", str(a.requests),
                                  str(port), "latency"], cwd=work, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit("run failed: %s" % out.stderr[-500:])
            return float(out.stdout.strip())

        one, ten, ratios = [], [], []
        latency("one.toml")  # warm-up
        for _ in range(a.pairs):
            x, y = latency("one.toml"), latency("ten.toml")
            one.append(x)
            ten.append(y)
            ratios.append(y / x)

        waits = []
        for _ in range(a.revokes):
            for f in ("statuses", "stop"):
                try:
                    os.remove(os.path.join(work, f))
                except FileNotFoundError:
                    pass
            run = subprocess.Popen([a.bin, "-p", "one.toml", "--", "/usr/bin/python3", "child.py", "0", str(port),
                                    "loop"], cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            sp = os.path.join(work, "statuses")
            while not (os.path.exists(sp) and len(open(sp).read().splitlines()) >= 20):
                time.sleep(0.01)
            t0 = time.time()
            subprocess.run([a.bin, "revoke", "--run", str(run.pid), "API_KEY"], cwd=work, env=env,
                           check=True, capture_output=True)
            first = None
            while first is None:
                for line in open(sp).read().splitlines():
                    code, ts = line.split()
                    if code == "403":
                        first = float(ts)
                time.sleep(0.005)
            open(os.path.join(work, "stop"), "w").close()
            run.wait()
            waits.append((first - t0) * 1000)
        waits.sort()
        print("broker control bench (%s, %d pairs of %d keep-alive requests, %d revocations)" %
              (os.path.relpath(a.bin, ROOT), a.pairs, a.requests, a.revokes))
        print("per request, 1 secret, no rate      median %.3f ms" % statistics.median(one))
        print("per request, 10 secrets + a rate    median %.3f ms" % statistics.median(ten))
        print("ratio (10 secrets + rate) / (1)     median %.3f (min %.3f, max %.3f)  goal <= 1.10" %
              (statistics.median(ratios), min(ratios), max(ratios)))
        p99 = waits[max(0, int(round(len(waits) * 0.99)) - 1)]
        print("revoke -> first 403                 p50 %.1f ms, p99 %.1f ms (max of %d)  goal p99 < 100 ms" %
              (statistics.median(waits), p99, len(waits)))
    finally:
        up.kill()


if __name__ == "__main__":
    main()
