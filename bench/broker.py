#!/usr/bin/env python3
"""The broker's overhead, side by side in one run: direct HTTPS, through agentrun's broker,
and through mitmproxy 12.x with a header-injection addon.

    bench/broker.py [--requests N] [--mib M] [--no-mitmproxy]

- latency: N keep-alive GETs on one connection (Python http.client), p50 and p99 per request;
- throughput: an M MiB download with curl.

Upstream: tests/fixtures/broker/upstream.py (Python http.server + ssl) with a test CA made
here with openssl. Broker: the `broker_child` helper of tests/suite/broker_core.rs, started through
the library API exactly as the tests do (so the figures are those of the profile that binary
was built with: debug unless you run `cargo test --release --test suite --no-run` first
and pass --release). mitmproxy: installed from bench/requirements-mitmproxy.txt (pinned,
hashed) into target/bench-venv-mitm with Python >= 3.12; skipped with the reason when that fails.
Needs .venv (.ci/install-test-servers) for the upstream.
"""
import argparse, glob, http.client, json, os, shutil, socket, ssl, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALUE = "sk-proj-R3alValueOfTheKeyR3alValueOfTheKey0123"


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def make_certs(d):
    ca_key, ca, key, csr, cert = (os.path.join(d, n) for n in ("ca.key", "ca.pem", "up.key", "up.csr", "up.pem"))
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=bench upstream CA",
       "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nauthorityKeyIdentifier=keyid\n"
                "subjectKeyIdentifier=hash\nextendedKeyUsage=serverAuth\n")
    sh("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
       "-out", cert, "-days", "2", "-extfile", ext)
    return ca, cert, key


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d never opened" % port)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def test_binary(release):
    args = ["cargo", "test", "--locked", "--test", "suite", "--no-run", "--message-format=json"]
    if release:
        args.insert(2, "--release")
    out = subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = json.loads(line)
        if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "suite" and m.get("executable"):
            return m["executable"]
    raise RuntimeError("no suite test binary")


def latency(n, proxy, ca, up_port, auth):
    ctx = ssl.create_default_context(cafile=ca)
    if proxy:
        c = http.client.HTTPSConnection("127.0.0.1", proxy, context=ctx)
        c.set_tunnel("127.0.0.1", up_port)
    else:
        c = http.client.HTTPSConnection("127.0.0.1", up_port, context=ctx)
    times = []
    for i in range(n + 20):
        t = time.perf_counter()
        c.request("GET", "/bench", headers={"Authorization": "Bearer " + auth})
        r = c.getresponse()
        assert r.status == 200, r.status
        r.read()
        if i >= 20:  # warm-up: handshakes, leaf, caches
            times.append((time.perf_counter() - t) * 1000)
    c.close()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def download(mib, proxy, ca, up_port):
    args = ["curl", "-sS", "-o", "/dev/null", "--cacert", ca, "-w", "%{size_download}"]
    if proxy:
        args += ["-x", "http://127.0.0.1:%d" % proxy]
    n = mib << 20
    t = time.perf_counter()
    got = sh(*args, "https://127.0.0.1:%d/big?n=%d" % (up_port, n), env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()})
    dt = time.perf_counter() - t
    assert int(got) == n, got
    return n / dt / 1e6


MITM_ADDON = '''
from mitmproxy import http
PH, VALUE = %r, %r
def request(flow: http.HTTPFlow) -> None:
    a = flow.request.headers.get("authorization")
    if a and PH in a:
        flow.request.headers["authorization"] = a.replace(PH, VALUE)
'''


def mitm_venv():
    venv = os.path.join(ROOT, "target", "bench-venv-mitm")  # target/ is ignored by git
    dump = os.path.join(venv, "bin", "mitmdump")
    if os.path.exists(dump):
        return dump, None
    cands = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3"))) + [
        shutil.which("python3.13"), shutil.which("python3.12"), shutil.which("python3")]
    pys = [p for p in cands if p and subprocess.run(
        [p, "-c", "import sys; assert sys.version_info >= (3, 12)"], capture_output=True).returncode == 0]
    if not pys:
        return None, "no Python >= 3.12 (mitmproxy 12 needs it)"
    try:
        sh(pys[0], "-m", "venv", venv)
        sh(os.path.join(venv, "bin", "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--require-hashes", "--only-binary=:all:", "-r", os.path.join(ROOT, "bench", "requirements-mitmproxy.txt"))
    except subprocess.CalledProcessError as e:
        shutil.rmtree(venv, ignore_errors=True)
        return None, "pip install failed: " + (e.stderr or "")[-300:]
    return dump, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--release", action="store_true")
    ap.add_argument("--no-mitmproxy", action="store_true")
    a = ap.parse_args()
    py = os.path.join(ROOT, ".venv", "bin", "python")
    if not os.path.exists(py):
        sys.exit("bench/broker.py: run .ci/install-test-servers first (.venv)")
    procs = []
    d = tempfile.mkdtemp(prefix="agentrun-bench-broker-")
    try:
        up_ca, up_cert, up_key = make_certs(d)
        up = subprocess.Popen([py, os.path.join(ROOT, "tests/fixtures/broker/upstream.py"), up_cert, up_key, os.path.join(d, "log")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(up)
        up_port = int(up.stdout.readline())

        # The placeholder the "child" holds; the broker (and the mitmproxy addon) put the
        # value in its place.
        auth = "sk-proj-" + "P" * (len(VALUE) - 8)
        exe = test_binary(a.release)
        bundle, port_file = os.path.join(d, "bundle.pem"), os.path.join(d, "port")
        env = dict(os.environ, BROKER_CHILD_UPSTREAM_PORT=str(up_port), BROKER_CHILD_UPSTREAM_CA=up_ca,
                   BROKER_CHILD_BUNDLE=bundle, BROKER_CHILD_PORT_FILE=port_file, BROKER_CHILD_PLACEHOLDER=auth)
        br = subprocess.Popen([exe, "--ignored", "--exact", "broker_core::broker_child", "--test-threads", "1"],
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        procs.append(br)
        while not os.path.exists(port_file):
            time.sleep(0.02)
        br_port = int(open(port_file).read())

        rows = [("direct HTTPS", None, up_ca), ("agentrun broker", br_port, bundle)]
        mitm_note = None
        if not a.no_mitmproxy:
            dump, mitm_note = mitm_venv()
            if dump:
                conf = os.path.join(d, "mitm")
                addon = os.path.join(d, "addon.py")
                with open(addon, "w") as f:
                    f.write(MITM_ADDON % (auth, VALUE))
                mp = free_port()
                m = subprocess.Popen([dump, "-q", "--listen-host", "127.0.0.1", "-p", str(mp), "--set", "confdir=" + conf,
                                      "--set", "ssl_verify_upstream_trusted_ca=" + up_ca, "--set", "stream_large_bodies=1m",
                                      "-s", addon], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.append(m)
                wait_port(mp)
                rows.append(("mitmproxy 12 + addon", mp, os.path.join(conf, "mitmproxy-ca-cert.pem")))

        results = []
        for name, proxy, ca in rows:
            p50, p99 = latency(a.requests, proxy, ca, up_port, auth)
            mbps = download(a.mib, proxy, ca, up_port)
            results.append((name, p50, p99, mbps))
        base = results[0]
        print("broker bench (%s build of the broker, %d keep-alive requests, %d MiB download)" %
              ("release" if a.release else "debug", a.requests, a.mib))
        print("%-22s %9s %9s %11s %11s %9s" % ("", "p50 ms", "p99 ms", "+p50 ms", "MB/s", "x direct"))
        for name, p50, p99, mbps in results:
            print("%-22s %9.3f %9.3f %11.3f %11.1f %9.2f" % (name, p50, p99, p50 - base[1], mbps, mbps / base[3]))
        if mitm_note:
            print("mitmproxy row skipped: " + mitm_note)
    finally:
        for p in procs:
            if p.stdin:
                try:
                    p.stdin.close()
                except OSError:
                    pass
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
