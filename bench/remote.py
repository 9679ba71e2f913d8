#!/usr/bin/env python3
"""Fetch time from real secret servers: 1 vs 10 secrets from a local OpenBao, 10 from moto.

Starts `bao server -dev` and moto from .venv (run .ci/install-test-servers first) on
loopback, then times `agentrun --profile P -- /bin/true` for each profile, interleaved,
and reports medians and the 10/1 ratio (all secrets are fetched at once, so it should stay
under 2).

    bench/remote.py [--runs N] [--binary PATH]
"""

import argparse
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
            f"sm = boto3.client('secretsmanager', endpoint_url='{ep}', region_name='us-east-1', "
            "aws_access_key_id='testing', aws_secret_access_key='testing')\n"
            "for i in range(10):\n    sm.create_secret(Name=f'bench/s{i}', SecretString=f'aws-secret-{i}-0123456789')\n"
        )
        subprocess.run([os.path.join(VENV, "python"), "-c", script], check=True)

        def profile(name, body):
            p = os.path.join(work, f"{name}.toml")
            with open(p, "w") as f:
                f.write(f'version = 1\n[vault]\naddress = "{addr}"\n[aws]\nendpoint = "{ep}"\nregion = "us-east-1"\n'
                        f'[audit]\nlog = "audit.jsonl"\n[secrets]\n{body}')
            os.chmod(p, 0o600)
            return p

        profiles = {
            "1 secret from OpenBao": profile("v1", 'S0 = "vault:secret/bench/s0#value"\n'),
            "10 secrets from OpenBao": profile("v10", "".join(f'S{i} = "vault:secret/bench/s{i}#value"\n' for i in range(10))),
            "1 secret from moto": profile("a1", 'S0 = "aws-sm:bench/s0"\n'),
            "10 secrets from moto": profile("a10", "".join(f'S{i} = "aws-sm:bench/s{i}"\n' for i in range(10))),
        }
        os.mkdir(os.path.join(work, "home"))
        # $HOME outside every write root, as on a real machine: a home under /tmp would make
        # the sandbox grant /tmp entry by entry around its credential stores.
        home = tempfile.mkdtemp(prefix="agentrun-bench-home-", dir="/var/tmp")
        env = {"PATH": "/usr/bin:/bin", "HOME": home, "VAULT_TOKEN": token,
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
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
            print(f"  {name:<26} {med[name]:8.2f}  ({q[0]:.2f}-{q[2]:.2f})")
        print(f"  ratio 10/1 OpenBao: {med['10 secrets from OpenBao'] / med['1 secret from OpenBao']:.2f}")
        print(f"  ratio 10/1 moto:    {med['10 secrets from moto'] / med['1 secret from moto']:.2f}")
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
