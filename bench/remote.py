#!/usr/bin/env python3
"""Fetch time from real or emulated secret servers, 1 against 10 secrets per backend, and
10 secrets spread over every backend at once.

Starts `bao server -dev` (OpenBao), moto (AWS Secrets Manager and Parameter Store), drongo
(GCP Secret Manager) and the Azure Key Vault fake of the tests (HTTPS with a test CA, the
401 challenge, a token endpoint) from .venv (run .ci/install-test-servers first) on
loopback, then times `agentrun --profile P -- /bin/true` for each profile, interleaved,
and reports medians, each backend's 10/1 ratio (all secrets are fetched at once, so it
should stay under 2), and the mixed profile against the slowest backend's single fetch
(every backend's set-up and reads run at once, so it should be close to 1).

    bench/remote.py [--runs N] [--binary PATH]
"""

import argparse
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv", "bin")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, limit=30):
    end = time.time() + limit
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{url} did not come up")


def post(url, doc):
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/agentrun"))
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} missing: run `cargo build --release --locked` first")
    if not os.path.exists(os.path.join(VENV, "bao")):
        sys.exit("no .venv: run .ci/install-test-servers first")

    work = tempfile.mkdtemp(prefix="agentrun-bench-remote-")
    procs = []
    try:
        bao_port = free_port()
        token = "root-bench"
        bao_env = dict(os.environ, HOME=work)
        procs.append(subprocess.Popen(
            [os.path.join(VENV, "bao"), "server", "-dev", f"-dev-listen-address=127.0.0.1:{bao_port}",
             f"-dev-root-token-id={token}"],
            env=bao_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        addr = f"http://127.0.0.1:{bao_port}"
        wait_http(f"{addr}/v1/sys/health")
        cli_env = dict(bao_env, VAULT_ADDR=addr, VAULT_TOKEN=token, BAO_ADDR=addr, BAO_TOKEN=token)
        for i in range(10):
            subprocess.run([os.path.join(VENV, "bao"), "kv", "put", f"secret/bench/s{i}", f"value=bench-secret-{i}-0123456789"],
                           env=cli_env, check=True, stdout=subprocess.DEVNULL)

        moto_port = free_port()
        procs.append(subprocess.Popen([os.path.join(VENV, "python"), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        ep = f"http://127.0.0.1:{moto_port}"
        wait_http(f"{ep}/moto-api/")
        script = (
            "import boto3\n"
            f"kw = dict(endpoint_url='{ep}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\n"
            "sm = boto3.client('secretsmanager', **kw)\nssm = boto3.client('ssm', **kw)\n"
            "for i in range(10):\n"
            "    sm.create_secret(Name=f'bench/s{i}', SecretString=f'aws-secret-{i}-0123456789')\n"
            "    ssm.put_parameter(Name=f'/bench/s{i}', Value=f'ssm-secret-{i}-0123456789', Type='SecureString')\n"
        )
        subprocess.run([os.path.join(VENV, "python"), "-c", script], check=True)

        # GCP Secret Manager: drongo, REST over plain http, anonymous (emulators only).
        gcp_port = free_port()
        procs.append(subprocess.Popen([os.path.join(VENV, "drongo"), "server", "--host", "127.0.0.1", "--port", str(gcp_port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        gcp = f"http://127.0.0.1:{gcp_port}"
        wait_http(f"{gcp}/drongo/health")
        for i in range(10):
            base = f"{gcp}/v1/projects/bench/secrets"
            post(f"{base}?secretId=s{i}", {"replication": {"automatic": {}}})
            data = base64.b64encode(f"gcp-secret-{i}-0123456789".encode()).decode()
            post(f"{base}/s{i}:addVersion", {"payload": {"data": data}})

        # Azure Key Vault: the tests' fake (HTTPS with a per-run CA, the token endpoint, the
        # 401 challenge); no emulator installs here.
        az_port = free_port()
        az_dir = os.path.join(work, "azure")
        os.mkdir(az_dir)
        with open(os.path.join(az_dir, "state.json"), "w") as f:
            json.dump({"tenant": "bench-tenant", "client_id": "bench-client", "client_secret": "bench-client-secret",
                       "secrets": {f"s{i}": {"versions": [{"id": "v1", "value": f"azure-secret-{i}-0123456789", "enabled": True}]}
                                   for i in range(10)}}, f)
        procs.append(subprocess.Popen(
            [os.path.join(VENV, "python"), os.path.join(ROOT, "tests/fixtures/azure/fake_keyvault.py"),
             "--port", str(az_port), "--dir", az_dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        az = f"https://127.0.0.1:{az_port}"
        deadline = time.time() + 20
        while not os.path.exists(os.path.join(az_dir, "ca.pem")):  # renamed into place once it listens
            if time.time() > deadline:
                sys.exit("the fake Key Vault did not start")
            time.sleep(0.05)

        tables = (f'[vault]\naddress = "{addr}"\n[aws]\nendpoint = "{ep}"\nregion = "us-east-1"\n'
                  f'[gcp]\nendpoint = "{gcp}"\ncredentials = "none"\n'
                  f'[azure]\nvault_url = "{az}"\nauthority_host = "{az}"\nca_cert = "{az_dir}/ca.pem"\n')

        def profile(name, body):
            p = os.path.join(work, f"{name}.toml")
            with open(p, "w") as f:
                f.write(f'version = 1\n{tables}[audit]\nlog = "audit.jsonl"\n[secrets]\n{body}')
            os.chmod(p, 0o600)
            return p

        source = {
            "OpenBao": lambda i: f"vault:secret/bench/s{i}#value",
            "AWS Secrets Manager (moto)": lambda i: f"aws-sm:bench/s{i}",
            "AWS Parameter Store (moto)": lambda i: f"aws-ssm:/bench/s{i}",
            "GCP Secret Manager (drongo)": lambda i: f"gcp-sm:projects/bench/secrets/s{i}",
            "Azure Key Vault (fake)": lambda i: f"azure-kv:bench/s{i}",
        }
        profiles = {}
        for n, (backend, src) in enumerate(source.items()):
            profiles[f"1 from {backend}"] = profile(f"b{n}-1", f'S0 = "{src(0)}"\n')
            profiles[f"10 from {backend}"] = profile(f"b{n}-10", "".join(f'S{i} = "{src(i)}"\n' for i in range(10)))
        # Ten secrets over every backend: two from each of the five.
        mixed = "".join(f'M{n}_{i} = "{src(i)}"\n' for n, src in enumerate(source.values()) for i in range(2))
        profiles["10 over all 5 backends"] = profile("mixed", mixed)
        os.mkdir(os.path.join(work, "home"))
        # $HOME outside every write root, as on a real machine: a home under /tmp would make
        # the sandbox grant /tmp entry by entry around its credential stores.
        home = tempfile.mkdtemp(prefix="agentrun-bench-home-", dir="/var/tmp")
        env = {"PATH": "/usr/bin:/bin", "HOME": home, "VAULT_TOKEN": token,
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AZURE_TENANT_ID": "bench-tenant", "AZURE_CLIENT_ID": "bench-client",
               "AZURE_CLIENT_SECRET": "bench-client-secret"}
        times = {k: [] for k in profiles}
        for _ in range(3):
            for p in profiles.values():
                subprocess.run([args.binary, "-p", p, "--", "/bin/true"], cwd=work, env=env, check=True)
        for _ in range(args.runs):
            for name, p in profiles.items():
                t0 = time.perf_counter_ns()
                r = subprocess.run([args.binary, "-p", p, "--", "/bin/true"], cwd=work, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                t1 = time.perf_counter_ns()
                if r.returncode != 0:
                    sys.exit(f"{name}: exit {r.returncode}: {r.stderr.decode()}")
                times[name].append((t1 - t0) / 1e6)
        print(f"{args.runs} interleaved runs each of `agentrun -p P -- /bin/true`, wall ms (median, p25-p75)")
        med = {}
        for name in profiles:
            t = times[name]
            med[name] = statistics.median(t)
            q = statistics.quantiles(t, n=4)
            print(f"  {name:<42} {med[name]:8.2f}  ({q[0]:.2f}-{q[2]:.2f})")
        for backend in source:
            print(f"  ratio 10/1 {backend:<31} {med[f'10 from {backend}'] / med[f'1 from {backend}']:.2f}")
        slowest = max(source, key=lambda b: med[f"1 from {b}"])
        print(f"  10 over all 5 backends / slowest single fetch ({slowest}): "
              f"{med['10 over all 5 backends'] / med[f'1 from {slowest}']:.2f}")
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
