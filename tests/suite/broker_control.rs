//! Broker control through the real binary (docs/contract.md, "Broker control"): `agentrun
//! revoke` and `agentrun runs` from another process against a running agent, `[broker].ttl`,
//! and rate limits at exact counts. The upstream is the local HTTPS one of `broker.rs`; the
//! child loops on requests with Python's `http.client` (one keep-alive connection through the
//! proxy), writing each answer's status and time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::broker::{Brokered, Upstream, VALUE, brokered_scratch, venv_read};
use crate::harness::*;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A child that sends `n` requests (0: until stopped) `gap_ms` apart, and writes
/// `status time` lines to `statuses`; then exits 7.
fn looping_child(port: u16, n: u32, gap_ms: u32) -> String {
    format!(
        r#"import http.client, os, ssl, sys, time
ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
proxy = os.environ["HTTPS_PROXY"].rsplit(":", 1)[1]
def conn():
    c = http.client.HTTPSConnection("127.0.0.1", int(proxy), context=ctx, timeout=10)
    c.set_tunnel("127.0.0.1", {port})
    return c
c = conn()
out = open("statuses", "w", buffering=1)
i = 0
while {n} == 0 or i < {n}:
    i += 1
    try:
        c.request("GET", "/echo", headers={{"Authorization": "Bearer " + os.environ["API_KEY"]}})
        r = c.getresponse()
        r.read()
        out.write("%d %.6f %s\n" % (r.status, time.time(), r.getheader("Retry-After") or "-"))
        if r.getheader("Connection", "").lower() == "close":
            c.close(); c = conn()
    except Exception as e:
        out.write("err %.6f %s\n" % (time.time(), type(e).__name__))
        c.close(); c = conn()
    if os.path.exists("stop"):
        break
    time.sleep({gap_ms} / 1000)
sys.exit(7)
"#
    )
}

/// A brokered run's scratch directory, its upstream and its own runtime directory.
struct Control {
    s: Scratch,
    up: Upstream,
    runtime: std::path::PathBuf,
}

fn brokered(extra: &str, secret_extra: &str) -> Control {
    let up = Upstream::start();
    let s = brokered_scratch(
        &up.ca,
        Brokered {
            broker: format!(
                "{{ hosts = [\"127.0.0.1:{}\"]{secret_extra} }}\n[secrets.OTHER_KEY]\nfrom = \"env:OTHER_KEY\"\nbroker = \"other.example\"",
                up.port
            ),
            broker_extra: extra,
            ..Brokered::default()
        },
    );
    // A runtime directory of this test's own: `revoke` without `--run` must not reach the
    // runs of tests beside it.
    let runtime = s.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    Control { s, up, runtime }
}

impl Control {
    fn child(&self, n: u32, gap_ms: u32) -> std::process::Child {
        self.s
            .file("child.py", &looping_child(self.up.port, n, gap_ms));
        self.s
            .agentrun()
            .env("API_KEY", VALUE)
            .env("OTHER_KEY", "other-value-0123456789abcdef")
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .args(["-p", "b", "--", "python3", "child.py"])
            .spawn()
    }

    fn control(&self, args: &[&str]) -> Out {
        self.s
            .agentrun()
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .args(args)
            .run()
    }

    fn statuses(&self) -> Vec<(String, f64)> {
        std::fs::read_to_string(self.s.path().join("statuses"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut w = l.split(' ');
                Some((w.next()?.to_string(), w.next()?.parse().ok()?))
            })
            .collect()
    }
}

/// Run `child.py` in `s` with the test venv's Python under profile `b`, `API_KEY` = `value`,
/// with a runtime directory of its own.
fn run_venv_child(s: &Scratch, value: &str) -> Out {
    let runtime = s.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    s.agentrun()
        .env("API_KEY", value)
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["-p", "b", "--"])
        .arg(super::servers::venv_bin("python"))
        .arg("child.py")
        .run()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `revoke` from another process while the child loops: `runs` lists the run; the first
/// `403 revoked` comes within 100 ms; the child keeps running and its exit code is its own;
/// the audit log says who revoked what; unknown names and runs get exit 1.
#[test]
fn revoke_from_another_process_cuts_the_child_off_within_100ms() {
    let b = brokered("", "");
    let mut child = b.child(0, 5);
    assert!(
        eventually(Duration::from_secs(20), || b
            .statuses()
            .iter()
            .filter(|(s, _)| s == "200")
            .count()
            >= 5),
        "the child's requests never went through: {:?}",
        b.statuses()
    );
    let runs = b.control(&["runs", "--json"]);
    assert_eq!(runs.code, 0, "{runs:?}");
    let listed: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(listed[0]["pid"], child.id(), "{listed}");
    assert_eq!(
        listed[0]["names"],
        serde_json::json!(["API_KEY", "OTHER_KEY"])
    );
    assert!(listed[0]["requests"].as_u64().unwrap() >= 5, "{listed}");
    assert_eq!(listed[0]["revoked"], serde_json::json!([]));

    let unknown = b.control(&["revoke", "NO_SUCH_KEY"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("NO_SUCH_KEY"), "{unknown:?}");
    let no_run = b.control(&["revoke", "--run", "999999", "--all"]);
    assert_eq!(no_run.code, 1, "{no_run:?}");
    assert!(no_run.stderr.contains("999999"), "{no_run:?}");

    let asked = now();
    let o = b.control(&["revoke", "API_KEY"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("revoked API_KEY"), "{o:?}");
    assert!(
        eventually(Duration::from_secs(10), || b
            .statuses()
            .iter()
            .any(|(s, t)| s == "403" && *t > asked)),
        "no 403 after the revoke: {:?}",
        b.statuses()
    );
    let first = b
        .statuses()
        .iter()
        .find(|(s, t)| s == "403" && *t > asked)
        .unwrap()
        .1;
    let late = b.statuses().iter().any(|(s, t)| s == "200" && *t > first);
    std::fs::write(b.s.path().join("stop"), "").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(7), "the child's own exit code");
    assert!(
        first - asked < 0.1,
        "first 403 {:.1} ms after revoke began",
        (first - asked) * 1000.0
    );
    assert!(!late, "a 200 after the first 403: {:?}", b.statuses());
    let events = b.s.audit();
    let rev = events
        .iter()
        .find(|e| e["event"] == "broker.revoked")
        .unwrap();
    assert_eq!(rev["names"], serde_json::json!(["API_KEY"]));
    assert_eq!(rev["by"], "control");
    assert_eq!(rev["uid"], 0);
    assert!(rev["pid"].as_i64().unwrap() > 0, "{rev}");
    let exit = events.iter().find(|e| e["event"] == "exit").unwrap();
    assert_eq!(exit["broker"]["revoked"], serde_json::json!(["API_KEY"]));
    // The run's socket is gone with it.
    assert_eq!(
        std::fs::read_dir(b.runtime.join("agentrun"))
            .unwrap()
            .count(),
        0
    );
    let after = b.control(&["revoke", "--all"]);
    assert_eq!(after.code, 1, "no run left: {after:?}");
}

/// Another uid is refused by the socket (`SO_PEERCRED`), and nothing is revoked.
#[test]
fn revoke_as_another_uid_is_refused() {
    let b = brokered("", "");
    let mut child = b.child(0, 20);
    assert!(
        eventually(Duration::from_secs(20), || !b.statuses().is_empty()),
        "{:?}",
        b.statuses()
    );
    // nobody can reach the socket only if the directories let it: open them up, so that
    // the refusal tested is the socket's own.
    use std::os::unix::fs::PermissionsExt;
    let dir = b.runtime.join("agentrun");
    for p in [b.s.path(), &b.runtime, &dir] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    // Straight to the socket (agentrun's own client would not even look in another
    // uid's directory): the server refuses by SO_PEERCRED.
    let sock = dir.join(format!("{}.sock", child.id()));
    let o = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
        ])
        .arg(
            "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n\
             s.sendall(b'{\"op\":\"revoke\"}\\n')\nprint(s.makefile().readline())",
        )
        .arg(&sock)
        .output()
        .unwrap();
    let o = Out::from(o);
    std::fs::write(b.s.path().join("stop"), "").unwrap();
    let status = child.wait().unwrap();
    assert!(o.stdout.contains("may not control this run"), "{o:?}");
    assert_eq!(status.code(), Some(7));
    assert!(
        b.statuses().iter().all(|(s, _)| s == "200"),
        "{:?}",
        b.statuses()
    );
    assert!(!b.s.audit().iter().any(|e| e["event"] == "broker.revoked"));
}

/// `[broker].ttl`: every brokered secret is revoked when it runs out (by "ttl").
#[test]
fn ttl_revokes_every_secret_when_it_runs_out() {
    let b = brokered("ttl = \"1s\"", "");
    let start = Instant::now();
    let mut child = b.child(0, 50);
    assert!(
        eventually(Duration::from_secs(20), || b
            .statuses()
            .iter()
            .any(|(s, _)| s == "403")),
        "{:?}",
        b.statuses()
    );
    std::fs::write(b.s.path().join("stop"), "").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(7));
    assert!(start.elapsed() >= Duration::from_secs(1));
    let st = b.statuses();
    let first403 = st.iter().position(|(s, _)| s == "403").unwrap();
    assert!(first403 > 0, "some went through first: {st:?}");
    assert!(st[first403..].iter().all(|(s, _)| s == "403"), "{st:?}");
    let rev =
        b.s.audit()
            .into_iter()
            .find(|e| e["event"] == "broker.revoked")
            .unwrap();
    assert_eq!(rev["by"], "ttl");
    assert_eq!(rev["names"], serde_json::json!(["API_KEY", "OTHER_KEY"]));
}

/// `rate = "5/min"`: five at once, then 429 with a Retry-After of about 12 s. The audit log
/// has one `broker.denied` for the first refusal, not one per refusal; `exit` counts them.
#[test]
fn rate_limits_hold_at_exact_counts() {
    let b = brokered("", ", rate = \"5/min\"");
    let mut child = b.child(9, 0);
    assert_eq!(child.wait().unwrap().code(), Some(7));
    let text = std::fs::read_to_string(b.s.path().join("statuses")).unwrap();
    let codes: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        codes,
        [
            "200", "200", "200", "200", "200", "429", "429", "429", "429"
        ],
        "{text}"
    );
    let retry: u64 = text
        .lines()
        .nth(5)
        .unwrap()
        .split(' ')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!((10..=12).contains(&retry), "Retry-After {retry}");
    let events = b.s.audit();
    let denied: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "broker.denied")
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["reason"], "rate");
    let exit = events.iter().find(|e| e["event"] == "exit").unwrap();
    assert_eq!(exit["broker"]["rate_limited"], 4, "{exit}");
    assert_eq!(exit["broker"]["requests"], 5, "{exit}");
    let _ = Path::new("");
}

/// A child that sends `n` requests to `/auth`, `gap_ms` apart, and writes each status.
fn auth_child(port: u16, n: u32, gap_ms: u32) -> String {
    looping_child(port, n, gap_ms).replace("\"/echo\"", "\"/auth\"")
}

/// Rotation mid-run: the provider starts rejecting the old key (401) while the child loops;
/// the broker refetches from the source, sends the request again with the new key, and the
/// child only ever sees 200. `source` is the profile's source table and the secret's `from`;
/// `rotate` puts the new value at the source.
fn rotation_mid_run(backend: &str, from: &str, env: &[(&str, String)], rotate: &dyn Fn(&str)) {
    const OLD: &str = "sk-proj-OldKeyOldKeyOldKey0123456789";
    const NEW: &str = "sk-proj-NewKeyNewKeyNewKey9876543210";
    let up = Upstream::start();
    up.accept(OLD);
    let s = brokered_scratch(
        &up.ca,
        Brokered {
            head: backend,
            from,
            broker: format!("\"127.0.0.1:{}\"", up.port),
            ..Brokered::default()
        },
    );
    s.file("child.py", &auth_child(up.port, 0, 20));
    let runtime = s.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    let mut run = s.agentrun().env("XDG_RUNTIME_DIR", &runtime);
    for (k, v) in env {
        run = run.env(k, v);
    }
    let mut child = run.args(["-p", "b", "--", "python3", "child.py"]).spawn();
    let statuses = || -> Vec<String> {
        std::fs::read_to_string(s.path().join("statuses"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(20), || statuses().len() >= 5),
        "{:?}",
        statuses()
    );
    rotate(NEW);
    up.accept(NEW);
    let before = statuses().len();
    assert!(
        eventually(Duration::from_secs(20), || statuses().len() >= before + 10),
        "{:?}",
        statuses()
    );
    std::fs::write(s.path().join("stop"), "").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(7));
    let st = statuses();
    assert!(st.iter().all(|c| c == "200"), "the child saw: {st:?}");
    let got = up.received();
    assert!(got.contains(&format!("Bearer {NEW}")), "{got}");
    let events = s.audit();
    let refresh: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "broker.refresh")
        .collect();
    assert_eq!(
        refresh.len(),
        1,
        "one refresh for however many 401s: {refresh:?}"
    );
    assert_eq!(refresh[0]["changed"], true);
    assert_eq!(refresh[0]["why"], "401");
    assert_eq!(refresh[0]["outcome"], "ok");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "broker.request" && e["resent"] == true && e["status"] == 200),
        "{events:#?}"
    );
    let exit = events.iter().find(|e| e["event"] == "exit").unwrap();
    assert_eq!(exit["broker"]["refreshed"], 1, "{exit}");
    let text = std::fs::read_to_string(s.path().join("audit.jsonl")).unwrap();
    assert!(
        !text.contains(OLD) && !text.contains(NEW),
        "a value in the log"
    );
}

#[test]
fn openbao_rotation_mid_run_is_invisible_to_the_child() {
    let bao = crate::servers::Bao::start();
    bao.cli(&[
        "kv",
        "put",
        "secret/k",
        "key=sk-proj-OldKeyOldKeyOldKey0123456789",
    ]);
    rotation_mid_run(
        &format!("[vault]\naddress = \"{}\"", bao.addr),
        "vault:secret/k#key",
        &[("VAULT_TOKEN", bao.token.clone())],
        &|new| {
            bao.cli(&["kv", "put", "secret/k", &format!("key={new}")]);
        },
    );
}

#[test]
fn aws_rotation_mid_run_is_invisible_to_the_child() {
    let moto = crate::servers::Moto::start(&[]);
    moto.py(
        "sm = client('secretsmanager')\nsm.create_secret(Name='k', SecretString='sk-proj-OldKeyOldKeyOldKey0123456789')\n",
    );
    rotation_mid_run(
        &format!(
            "[aws]\nendpoint = \"{}\"\nregion = \"us-east-1\"",
            moto.endpoint
        ),
        "aws-sm:k",
        &[
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ],
        &|new| {
            moto.py(&format!(
                "sm = client('secretsmanager')\nsm.put_secret_value(SecretId='k', SecretString='{new}')\n"
            ));
        },
    );
}

/// A refresh that fails (the source is down) leaves the old value in place, says so in the
/// audit log, and the 401 goes back to the child; the broker keeps serving.
#[test]
fn a_failed_refresh_keeps_the_old_value_and_the_broker_serving() {
    let mut bao = crate::servers::Bao::start();
    bao.cli(&[
        "kv",
        "put",
        "secret/k",
        "key=sk-proj-OldKeyOldKeyOldKey0123456789",
    ]);
    let up = Upstream::start();
    up.accept("sk-proj-OldKeyOldKeyOldKey0123456789");
    let head = format!("[vault]\naddress = \"{}\"", bao.addr);
    let s = brokered_scratch(
        &up.ca,
        Brokered {
            head: &head,
            from: "vault:secret/k#key",
            broker: format!("\"127.0.0.1:{}\"", up.port),
            ..Brokered::default()
        },
    );
    s.file("child.py", &auth_child(up.port, 0, 20));
    let runtime = s.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    let mut child = s
        .agentrun()
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("VAULT_TOKEN", bao.token.clone())
        .args(["-p", "b", "--", "python3", "child.py"])
        .spawn();
    let statuses = || -> Vec<String> {
        std::fs::read_to_string(s.path().join("statuses"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    };
    assert!(eventually(Duration::from_secs(20), || statuses().len() >= 3));
    bao.proc.stop();
    up.accept("sk-proj-SomeOtherKeySomeOtherKey000000");
    assert!(
        eventually(Duration::from_secs(20), || statuses()
            .iter()
            .filter(|c| *c == "401")
            .count()
            >= 3),
        "{:?}",
        statuses()
    );
    // The old value still works once the provider takes it back: nothing was swapped.
    up.accept("sk-proj-OldKeyOldKeyOldKey0123456789");
    let n = statuses().len();
    assert!(eventually(Duration::from_secs(20), || statuses()[n..]
        .iter()
        .any(|c| c == "200")));
    std::fs::write(s.path().join("stop"), "").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(7));
    let refresh: Vec<_> = s
        .audit()
        .into_iter()
        .filter(|e| e["event"] == "broker.refresh")
        .collect();
    assert_eq!(refresh.len(), 1, "{refresh:?}");
    assert_eq!(refresh[0]["outcome"], "failed");
    assert_eq!(refresh[0]["changed"], false);
    assert!(refresh[0]["error"].as_str().is_some_and(|e| !e.is_empty()));
}

/// Base-URL mode: a client that ignores proxy settings and trust bundles (`httpx` with
/// `trust_env=False`) reaches the upstream through `http://127.0.0.1:PORT/<id>` in its own
/// namespace; the broker goes on over TLS with the value. Bad `base_url`s are refused.
#[test]
fn base_url_mode_serves_clients_that_ignore_proxies() {
    let up = Upstream::start();
    let s = brokered_scratch(
        &up.ca,
        Brokered {
            broker: format!(
                "{{ hosts = [\"127.0.0.1:{p}\"], base_url = {{ env = \"UP_BASE_URL\", upstream = \"https://127.0.0.1:{p}/\" }} }}",
                p = up.port
            ),
            sandbox_extra: venv_read(),
            ..Brokered::default()
        },
    );
    s.file(
        "child.py",
        r#"import os, httpx
base = os.environ["UP_BASE_URL"]
auth = {"Authorization": "Bearer " + os.environ["API_KEY"]}
with httpx.Client(trust_env=False, timeout=10) as c:
    r = c.get(base + "/echo?from=base-url", headers=auth)
    open("seen", "w").write(str(r.status_code) + " " + base + " " + r.text)
"#,
    );
    let o = run_venv_child(&s, VALUE);
    assert_eq!(o.code, 0, "{o:?}");
    let seen = std::fs::read_to_string(s.path().join("seen")).unwrap();
    assert!(seen.starts_with("200 http://127.0.0.1:"), "{seen}");
    assert!(!seen.contains(VALUE) && seen.contains("sk-proj-"), "{seen}");
    assert!(
        up.received().contains(&format!("Bearer {VALUE}"))
            && up.received().contains("/echo?from=base-url"),
        "{}",
        up.received()
    );

    for (base_url, want) in [
        (
            format!(
                "{{ env = \"B\", upstream = \"http://127.0.0.1:{}/\" }}",
                up.port
            ),
            "https only",
        ),
        (
            "{ env = \"B\", upstream = \"https://elsewhere.example/v1\" }".to_string(),
            "not one of this secret's hosts",
        ),
        (
            format!(
                "{{ env = \"HTTPS_PROXY\", upstream = \"https://127.0.0.1:{}/\" }}",
                up.port
            ),
            "already set",
        ),
    ] {
        let o = s
            .agentrun()
            .profile(&format!(
                "version = 1\n[secrets.K]\nfrom = \"env:K\"\nbroker = {{ hosts = [\"127.0.0.1:{}\"], base_url = {base_url} }}\n",
                up.port
            ))
            .env("K", "k-value-0123456789")
            .args(["--", "true"])
            .run();
        assert_eq!(o.code, 125, "{base_url}: {o:?}");
        assert!(
            o.stderr.contains("secrets.K.broker.base_url") && o.stderr.contains(want),
            "{base_url}: {o:?}"
        );
    }
}

/// A WebSocket upgrade to an intercepted host: the value goes into the upgrade request, then
/// frames pass through both ways; the child (Python `websockets`, through the proxy from the
/// environment) holds only the placeholder. The upstream is `websockets` too.
#[test]
fn websocket_upgrade_is_substituted_and_frames_pass() {
    use super::broker_core::upstream_certs;
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = upstream_certs(dir.path());
    let log = dir.path().join("ws.jsonl");
    let venv = super::servers::venv_bin("python");
    let mut up = std::process::Command::new(&venv)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/broker/ws_upstream.py"))
        .args([&cert, &key, &log])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(up.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the ws upstream's port");
    let s = brokered_scratch(
        &std::fs::read_to_string(&ca).unwrap(),
        Brokered {
            broker: format!("\"127.0.0.1:{port}\""),
            sandbox_extra: venv_read(),
            ..Brokered::default()
        },
    );
    s.file(
        "child.py",
        &format!(
            r#"import os, ssl
from websockets.sync.client import connect
ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
key = os.environ["API_KEY"]
with connect("wss://127.0.0.1:{port}/ws", ssl=ctx, additional_headers={{"Authorization": "Bearer " + key}}, open_timeout=10) as ws:
    got = []
    for m in ["one", "two " + key, os.urandom(50000).hex()]:
        ws.send(m)
        got.append(ws.recv(timeout=10))
    open("seen", "w").write("|".join(g[:40] for g in got))
    open("ready", "w").close()
    import time
    for i in range(400):
        try:
            ws.send("ping"); ws.recv(timeout=5)
        except Exception as e:
            open("closed", "w").write(type(e).__name__)
            break
        time.sleep(0.025)
"#
        ),
    );
    let runtime = s.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    let mut child = s
        .agentrun()
        .env("API_KEY", VALUE)
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["-p", "b", "--"])
        .arg(&venv)
        .arg("child.py")
        .spawn();
    if !eventually(Duration::from_secs(20), || s.path().join("ready").exists()) {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "the stream never opened: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // `revoke` closes the open stream too (review 11e, E3).
    let asked = Instant::now();
    let r = s
        .agentrun()
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["revoke", "API_KEY"])
        .run();
    let closed = eventually(Duration::from_secs(5), || s.path().join("closed").exists());
    let took = asked.elapsed();
    let status = child.wait().unwrap();
    let _ = up.kill();
    let _ = up.wait();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(closed, "the stream outlived the revocation");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(status.code(), Some(0));
    let got = std::fs::read_to_string(&log).unwrap();
    assert!(got.contains(&format!("Bearer {VALUE}")), "{got}");
    let seen = std::fs::read_to_string(s.path().join("seen")).unwrap();
    assert!(seen.starts_with("one|two sk-proj-"), "{seen}");
    assert!(!seen.contains(VALUE), "{seen}");
    let req = s
        .audit()
        .into_iter()
        .find(|e| e["event"] == "broker.request")
        .unwrap();
    assert_eq!(req["status"], 101, "{req}");
    assert!(req["bytes_up"].as_u64().unwrap() > 40_000, "{req}");
}

/// `in = ["body"]` through the binary: `requests` posts JSON and a form with the placeholder;
/// the upstream gets the value escaped to fit each, with a correct Content-Length (the
/// value is longer than the placeholder once escaped).
#[test]
fn body_substitution_in_json_and_form_bodies() {
    const ODD: &str = "sk-proj-odd\"value&with+chars/0123456789";
    let up = Upstream::start();
    let s = brokered_scratch(
        &up.ca,
        Brokered {
            broker: format!(
                "{{ hosts = [\"127.0.0.1:{}\"], in = [\"header\", \"body\"] }}",
                up.port
            ),
            sandbox_extra: venv_read(),
            ..Brokered::default()
        },
    );
    s.file(
        "child.py",
        &format!(
            r#"import os, requests
k = os.environ["API_KEY"]
u = "https://127.0.0.1:{}/record"
a = requests.post(u + "?as=json", json={{"api_key": k, "n": 1}}, timeout=10)
b = requests.post(u + "?as=form", data={{"key": k, "x": "1"}}, timeout=10)
open("seen", "w").write("%d %d %s" % (a.status_code, b.status_code, k))
"#,
            up.port
        ),
    );
    let o = run_venv_child(&s, ODD);
    assert_eq!(o.code, 0, "{o:?}");
    let seen = std::fs::read_to_string(s.path().join("seen")).unwrap();
    assert!(
        seen.starts_with("200 200 ") && !seen.contains(ODD),
        "{seen}"
    );
    let lines: Vec<serde_json::Value> = up
        .received()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let body_of = |q: &str| {
        lines
            .iter()
            .find(|l| l["path"].as_str().unwrap().ends_with(q))
            .unwrap_or_else(|| panic!("no {q}: {lines:?}"))
            .clone()
    };
    let json = body_of("as=json");
    let parsed: serde_json::Value = serde_json::from_str(json["body"].as_str().unwrap()).unwrap();
    assert_eq!(parsed["api_key"], ODD, "{json}");
    assert_eq!(
        json["content_length"].as_u64().unwrap() as usize,
        json["body"].as_str().unwrap().len()
    );
    let form = body_of("as=form");
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(form["body"].as_str().unwrap().as_bytes())
            .into_owned()
            .collect();
    assert!(pairs.contains(&("key".into(), ODD.into())), "{form}");
}

/// The control sockets' directory inside the child's write root (here `XDG_RUNTIME_DIR` in
/// its working directory): the child sees an empty directory there and can neither hide its
/// run's socket nor stand in for it, so the operator's revoke still cuts it off (review 11d,
/// B).
#[test]
fn the_child_cannot_hide_or_impersonate_its_control_socket() {
    let b = brokered("", "");
    b.s.file(
        "tamper.sh",
        "ls -A runtime/agentrun > seen_dir 2>&1; for f in runtime/agentrun/*.sock; do mv \"$f\" runtime/hidden.sock; done 2> mv_err; exec python3 child.py",
    );
    b.s.file("child.py", &looping_child(b.up.port, 0, 5));
    let mut child =
        b.s.agentrun()
            .env("API_KEY", VALUE)
            .env("OTHER_KEY", "other-value-0123456789abcdef")
            .env("XDG_RUNTIME_DIR", &b.runtime)
            .args(["-p", "b", "--", "sh", "tamper.sh"])
            .spawn();
    assert!(
        eventually(Duration::from_secs(20), || b.statuses().len() >= 3),
        "{:?}",
        b.statuses()
    );
    let seen = std::fs::read_to_string(b.s.path().join("seen_dir")).unwrap();
    let listed = b.control(&["runs", "--json"]);
    let o = b.control(&["revoke", "API_KEY"]);
    let got_403 = eventually(Duration::from_secs(10), || {
        b.statuses().iter().any(|(s, _)| s == "403")
    });
    std::fs::write(b.s.path().join("stop"), "").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(7));
    assert_eq!(seen.trim(), "", "the child saw the sockets: {seen}");
    assert!(listed.stdout.contains("API_KEY"), "{listed:?}");
    assert_eq!(o.code, 0, "{o:?}");
    assert!(got_403, "{:?}", b.statuses());
}

const OLD_KEY: &str = "sk-proj-OldKeyOldKeyOldKey0123456789";
const NEW_KEY: &str = "sk-proj-NewKeyNewKeyNewKey9876543210";

/// A run whose `API_KEY` comes from a file holding [`OLD_KEY`]; the upstream's `/auth`
/// accepts only `accept`. The child (`child(port)`) waits for a `go` file; the test then
/// writes `new` into the key file and lets it go, so its first brokered request gets a 401
/// and the broker refetches `new`. Returns the upstream, the scratch directory and
/// agentrun's output.
fn rotated_midway(
    accept: &str,
    new: &str,
    child: &dyn Fn(u16) -> String,
) -> (Upstream, Scratch, std::process::Output) {
    let up = Upstream::start();
    up.accept(accept);
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("key");
    std::fs::write(&key, OLD_KEY).unwrap();
    let from = format!("file:{}", key.display());
    let s = brokered_scratch(
        &up.ca,
        Brokered {
            from: &from,
            broker: format!("\"127.0.0.1:{}\"", up.port),
            ..Brokered::default()
        },
    );
    s.file(
        "child.sh",
        &format!("while [ ! -e go ]; do sleep 0.02; done\n{}", child(up.port)),
    );
    let runtime = s.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    let running = s
        .agentrun()
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["-p", "b", "--", "sh", "child.sh"])
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&key, new).unwrap();
    std::fs::write(s.path().join("go"), "").unwrap();
    let out = running.wait_with_output().unwrap();
    (up, s, out)
}

/// `curl` of `path` on the upstream with the placeholder and `extra` flags, its status code
/// into the file `status`.
fn curl_auth(port: u16, path: &str, extra: &str) -> String {
    format!(
        "curl -sS {extra} -w '%{{http_code}}' https://127.0.0.1:{port}{path} -H \"Authorization: Bearer $API_KEY\" > status"
    )
}

/// The answer to a request sent again after a refresh passes the same checks as any answer
/// (review 11f, F1): an upstream that gzips it, although the broker asked for identity, gets
/// a 502, not the new value in a body the restorer cannot read.
#[test]
fn a_resent_requests_answer_is_checked_like_any_other() {
    let (up, s, out) = rotated_midway(NEW_KEY, NEW_KEY, &|p| curl_auth(p, "/authgz", "-o body"));
    let status = std::fs::read_to_string(s.path().join("status")).unwrap_or_default();
    let body = std::fs::read(s.path().join("body")).unwrap_or_default();
    assert_eq!(status, "502", "{out:?}");
    assert!(
        !String::from_utf8_lossy(&body).contains(NEW_KEY),
        "the new value reached the child"
    );
    assert!(
        up.received().contains(&format!("Bearer {NEW_KEY}")),
        "not resent"
    );
}

/// A refreshed value reaches the output redactor before the broker uses it: an upstream that
/// echoes the new key in a form the broker does not restore (base64 wrapped over lines) has
/// it redacted on agentrun's output, not shown.
#[test]
fn a_refreshed_value_is_redacted_in_the_childs_output() {
    use base64::Engine;
    let (up, _s, out) = rotated_midway(NEW_KEY, NEW_KEY, &|p| {
        format!("curl -sS https://127.0.0.1:{p}/authwrap -H \"Authorization: Bearer $API_KEY\"")
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let b64 = base64::engine::general_purpose::STANDARD.encode(NEW_KEY);
    assert!(
        up.received().contains(&format!("Bearer {NEW_KEY}")),
        "not resent: {stdout}"
    );
    assert!(
        !stdout.replace('\n', "").contains(&b64[4..40]),
        "the new value reached the screen: {stdout}"
    );
    assert!(stdout.contains("[REDACTED:API_KEY]"), "{stdout}");
}

/// A request is sent again after a refresh only when its whole body was kept (at most
/// 1 MiB): a 2 MiB POST gets the 401 back and reaches the upstream once; a small one is
/// sent again and succeeds.
#[test]
fn only_a_kept_body_is_sent_twice() {
    for (size, want, posts) in [(2 << 20, "401", 1), (1000, "200", 2)] {
        let (up, s, out) = rotated_midway(NEW_KEY, NEW_KEY, &|p| {
            format!(
                "head -c {size} /dev/zero | tr '\\0' x > payload\n{}",
                curl_auth(p, "/auth", "-o /dev/null --data-binary @payload")
            )
        });
        let status = std::fs::read_to_string(s.path().join("status")).unwrap_or_default();
        assert_eq!(status, want, "{size}: {out:?}");
        let got = up.received();
        assert_eq!(
            got.lines().filter(|l| l.contains("\"POST\"")).count(),
            posts,
            "{size}: {got}"
        );
    }
}

/// The switch to a redactor that knows a refreshed value waits for a quiet point in each
/// stream (review 11g, G1, G2): a token, or an escape sequence the redactor drops, split
/// around a refresh, is still caught whole.
#[test]
fn a_redactor_switch_never_lets_a_split_match_through() {
    let up = Upstream::start();
    up.accept("sk-proj-SomeOtherKeyThanTheRunsOwn000");
    let s = brokered_scratch(
        &up.ca,
        Brokered {
            broker: format!("\"127.0.0.1:{}\"", up.port),
            ..Brokered::default()
        },
    );
    s.file(
        "child.sh",
        &format!(
            "printf 'tok: ghp_Q7wErTyU'\nprintf '\\033]52;c;' >&2\ncurl -s -o /dev/null https://127.0.0.1:{}/auth -H \"Authorization: Bearer $API_KEY\"\nsleep 0.3\nprintf 'iOpAsDfGhJkLzXcVbNmQwErTyUiOpZZ9 done\\n'\nprintf '?\\007 done\\n' >&2\n",
            up.port
        ),
    );
    let runtime = s.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    let o = s
        .agentrun()
        .env("API_KEY", VALUE)
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["-p", "b", "--", "sh", "child.sh"])
        .run();
    assert_eq!(o.code, 0, "{o:?}");
    // The 401 did refresh (and so built a second redactor).
    assert!(
        s.audit().iter().any(|e| e["event"] == "broker.refresh"),
        "no refresh: {o:?}"
    );
    assert!(
        o.stdout.contains("[REDACTED:github-token]") && !o.stdout.contains("ghp_Q7wE"),
        "{:?}",
        o.stdout
    );
    assert!(
        !o.stderr.contains("\x1b]52") && o.stderr.contains("done"),
        "{:?}",
        o.stderr
    );
}

/// A refreshed value too short to redact is refused like one at the start (review 11g, G3):
/// the old value stays, the 401 goes to the child, and the audit log says why.
#[test]
fn a_refreshed_value_too_short_to_redact_is_not_used() {
    let (up, s, out) = rotated_midway("abc", "abc", &|p| curl_auth(p, "/auth", "-o /dev/null"));
    assert_eq!(
        std::fs::read_to_string(s.path().join("status")).unwrap_or_default(),
        "401",
        "{out:?}"
    );
    assert!(!up.received().contains("Bearer abc"), "{}", up.received());
    let refresh = s
        .audit()
        .into_iter()
        .find(|e| e["event"] == "broker.refresh")
        .unwrap();
    assert_eq!(refresh["outcome"], "failed");
    assert!(
        refresh["error"].as_str().unwrap().contains("shorter"),
        "{refresh}"
    );
}
