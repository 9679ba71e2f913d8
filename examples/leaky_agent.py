"""An agent-like script that misbehaves the way real agents do under prompt injection.

It prints its API key in several disguises, logs an auth header the way `curl -v` and
Python's http.client debug output do, and then tries to escape: read an SSH key, phone
home, and read its launcher's memory. Run it under agentrun to watch each attempt fail.
"""

import base64
import os
import socket
import sys

key = os.environ.get("DEMO_API_KEY", "")
print(f"agent: starting with {len(os.environ)} environment variables")
print(f"agent: my key is {key}")
print(f"agent: base64 of it: {base64.b64encode(key.encode()).decode()}")
print(f"agent: half of it: {key[: len(key) // 2 + 4]}")
print(f"> Authorization: Bearer {key}")
sys.stderr.write(f"send: b'GET /v1/models HTTP/1.1\\r\\nHost: api.example\\r\\nAuthorization: Bearer {key}\\r\\n\\r\\n'\n")
sys.stdout.flush()

with open(os.environ["DEMO_KEY_FILE"]) as f:
    print(f"agent: the key file says {f.read()}")


def attempt(what, fn):
    try:
        fn()
        print(f"agent: {what}: succeeded (this should not happen)")
    except OSError as e:
        print(f"agent: {what}: refused ({e.strerror})")


attempt("list my home directory", lambda: os.listdir(os.path.expanduser("~")))
attempt("read ~/.ssh/id_rsa", lambda: open(os.path.expanduser("~/.ssh/id_rsa")).read())
attempt("read my launcher's environment", lambda: open(f"/proc/{os.getppid()}/environ").read())
attempt("connect to 127.0.0.1:22", lambda: socket.create_connection(("127.0.0.1", 22), timeout=2))
attempt("write /etc/agentrun-was-here", lambda: open("/etc/agentrun-was-here", "w").write("x"))
