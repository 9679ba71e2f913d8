//! The broker's core end to end, through its library API, with real clients and real TLS.
//!
//! The broker runs on the host's 127.0.0.1 (the lead moves it into the child's namespace
//! later). The upstream is `tests/fixtures/broker/upstream.py`: Python's `http.server` behind
//! `ssl`, with its own test CA (made here with rcgen and passed to the broker as an extra
//! root); it records every request it receives as a JSON line. Clients: curl, Python
//! `requests`, `httpx` and `urllib` (from `.venv`, made by `.ci/install-test-servers`), and
//! raw sockets for what no client would send. Node here is v20, which ignores proxy
//! variables: Node's `fetch` is not tested (it needs Node 22.21+ with `NODE_USE_ENV_PROXY`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentrun::broker::{
    self, Config, Control, HeaderTemplate, HostPattern, Limits, Parts, Secret,
    events::{Collect, Event},
};
use secrecy::SecretString;

const OPENAI_VALUE: &str = "sk-proj-R3alValueOfTheKeyR3alValueOfTheKey0123";
const SHORT_VALUE: &str = "hunter2hunter2";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let p = root().join(".venv/bin/python");
    let ok = p.exists()
        && Command::new(&p)
            .args(["-c", "import requests, httpx"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the broker tests need requests and httpx in .venv: run .ci/install-test-servers"
    );
    p
}

/// A test CA and a leaf for 127.0.0.1 and localhost, as PEM files in `dir`.
pub(crate) fn upstream_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "agentrun test upstream CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(p, ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut lp =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    lp.use_authority_key_identifier_extension = true;
    let leaf = lp.signed_by(&key, &ca).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("up-ca.pem"),
        dir.join("up-cert.pem"),
        dir.join("up-key.pem"),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca_path, cert_path, key_path)
}

struct Upstream {
    child: Child,
    port: u16,
    log: PathBuf,
    ca: PathBuf,
    dir: tempfile::TempDir,
}

impl Upstream {
    fn start() -> Upstream {
        let script = root().join("tests/fixtures/broker/upstream.py");
        Upstream::start_with(&[script.as_os_str()])
    }

    /// An upstream started by `.venv`'s Python with `program` (a script, or `-c CODE`), then
    /// upstream.py's arguments; it prints its port.
    fn start_with<S: AsRef<std::ffi::OsStr>>(program: &[S]) -> Upstream {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = upstream_certs(dir.path());
        let log = dir.path().join("requests.jsonl");
        std::fs::write(&log, "").unwrap();
        let mut child = Command::new(python())
            .args(program)
            .args([&cert, &key, &log])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("upstream port");
        Upstream {
            child,
            port,
            log,
            ca,
            dir,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn header<'a>(req: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    req["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .and_then(|h| h[1].as_str())
}

struct SecretSpec {
    name: &'static str,
    value: &'static str,
    hosts: Vec<String>,
    header: Option<&'static str>,
    /// `in = [.., "body"]`.
    body: bool,
}

fn spec(name: &'static str, value: &'static str, hosts: &[String]) -> SecretSpec {
    SecretSpec {
        name,
        value,
        hosts: hosts.to_vec(),
        header: None,
        body: false,
    }
}

struct Run {
    handle: Option<broker::Handle>,
    events: Collect,
    control: Arc<Control>,
    placeholders: Vec<(String, String, String)>, // name, value, placeholder
    bundle: PathBuf,
    _dir: tempfile::TempDir,
}

impl Run {
    fn start(
        secrets: Vec<SecretSpec>,
        allow: &[&str],
        up: Option<&Upstream>,
        limits: Limits,
    ) -> Run {
        let ca = Arc::new(broker::Ca::new().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.pem");
        broker::write_bundle(&ca, &bundle).unwrap();
        let mut placeholders = Vec::new();
        let secrets = secrets
            .into_iter()
            .map(|s| {
                let value = SecretString::from(s.value.to_string());
                let ph = broker::placeholder(&value, &mut rand::rng());
                placeholders.push((s.name.to_string(), s.value.to_string(), ph.clone()));
                Secret {
                    name: s.name.into(),
                    value,
                    placeholder: ph,
                    hosts: s
                        .hosts
                        .iter()
                        .map(|h| HostPattern::parse(h).unwrap())
                        .collect(),
                    header: s.header.map(|h| HeaderTemplate::parse(h).unwrap()),
                    parts: Parts {
                        body: s.body,
                        ..Parts::default()
                    },
                    methods: None,
                    paths: None,
                }
            })
            .collect();
        let config = Config {
            secrets,
            routes: Vec::new(),
            allow: allow
                .iter()
                .map(|h| HostPattern::parse(h).unwrap())
                .collect(),
            extra_roots: up
                .map(|u| vec![std::fs::read(&u.ca).unwrap()])
                .unwrap_or_default(),
            limits,
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let events = Collect::default();
        let control = Arc::new(Control::new());
        let handle = broker::serve(config, ca, listener, events.clone(), control.clone()).unwrap();
        Run {
            handle: Some(handle),
            events,
            control,
            placeholders,
            bundle,
            _dir: dir,
        }
    }

    fn port(&self) -> u16 {
        self.handle.as_ref().unwrap().local_addr().port()
    }

    fn proxy(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    fn ph(&self, name: &str) -> &str {
        &self.placeholders.iter().find(|p| p.0 == name).unwrap().2
    }

    /// A client command with the environment the child will have.
    fn client(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        for v in [
            "HTTPS_PROXY",
            "HTTP_PROXY",
            "ALL_PROXY",
            "https_proxy",
            "http_proxy",
            "all_proxy",
        ] {
            c.env(v, self.proxy());
        }
        for v in ["NO_PROXY", "no_proxy", "CURL_HOME"] {
            c.env_remove(v);
        }
        for v in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"] {
            c.env(v, &self.bundle);
        }
        c
    }

    /// Serialise every event so far and check that no value and no placeholder is in them.
    fn checked_events(&self) -> Vec<serde_json::Value> {
        let events: Vec<Event> = self.events.0.lock().unwrap().clone();
        let mut out = Vec::new();
        for e in &events {
            let text = serde_json::to_string(e).unwrap();
            for (name, value, ph) in &self.placeholders {
                assert!(
                    !text.contains(value.as_str()),
                    "{name}'s value in an event: {text}"
                );
                assert!(
                    !text.contains(ph.as_str()),
                    "{name}'s placeholder in an event: {text}"
                );
            }
            out.push(serde_json::from_str(&text).unwrap());
        }
        out
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop();
        }
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One raw exchange with the proxy: send `request`, read the answer's head (and what
/// follows, up to a short timeout).
fn raw(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
        }
    }
    String::from_utf8_lossy(&buf).to_ascii_lowercase()
}

const PY_CLIENTS: &str = r#"
import sys, json, base64
which, url, ph = sys.argv[1:4]
headers = {"Authorization": "Bearer " + ph, "x-api-key": ph}
if which == "requests":
    import requests
    r = requests.get(url, headers=headers, timeout=20)
    r2 = requests.get(url, auth=("x-access-token", ph), timeout=20)
    print(r.status_code, r2.status_code)
elif which == "httpx":
    import httpx
    with httpx.Client(timeout=20) as c:
        r = c.get(url, headers=headers)
        r2 = c.get(url, auth=("x-access-token", ph))
    print(r.status_code, r2.status_code)
elif which == "urllib":
    import urllib.request
    r = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=20)
    b = base64.b64encode(("x-access-token:" + ph).encode()).decode()
    r2 = urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Basic " + b}), timeout=20)
    print(r.status, r2.status)
"#;

#[test]
fn values_reach_the_upstream_in_every_place_with_every_client() {
    let up = Upstream::start();
    let run = Run::start(
        vec![spec("OPENAI_API_KEY", OPENAI_VALUE, &[up.host()])],
        &[],
        Some(&up),
        Limits::default(),
    );
    let ph = run.ph("OPENAI_API_KEY").to_string();
    assert!(ph.starts_with("sk-proj-") && ph.len() == OPENAI_VALUE.len());
    let url = |client: &str| {
        format!(
            "https://127.0.0.1:{}/v1/{client}/{ph}/items?key={ph}&other=1",
            up.port
        )
    };

    // curl: Bearer + x-api-key, then Basic auth the way git sends it.
    let out = run_ok(run.client("curl").args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Authorization: Bearer {ph}"),
        "-H",
        &format!("x-api-key: {ph}"),
        &url("curl"),
    ]));
    assert_eq!(out, "200");
    let out = run_ok(run.client("curl").args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-u",
        &format!("x-access-token:{ph}"),
        &url("curl"),
    ]));
    assert_eq!(out, "200");
    for which in ["requests", "httpx", "urllib"] {
        let out = run_ok(
            run.client(python())
                .args(["-c", PY_CLIENTS, which, &url(which), &ph]),
        );
        assert_eq!(out.trim(), "200 200", "{which}");
    }

    let reqs = up.requests();
    assert_eq!(reqs.len(), 8, "{reqs:#?}");
    let basic = format!(
        "Basic {}",
        base64_encode(format!("x-access-token:{OPENAI_VALUE}").as_bytes())
    );
    for which in ["curl", "requests", "httpx", "urllib"] {
        let mine: Vec<_> = reqs
            .iter()
            .filter(|r| {
                r["path"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("/v1/{which}/"))
            })
            .collect();
        assert_eq!(mine.len(), 2, "{which}");
        for r in &mine {
            let path = r["path"].as_str().unwrap();
            assert_eq!(
                path,
                format!("/v1/{which}/{OPENAI_VALUE}/items?key={OPENAI_VALUE}&other=1"),
                "{which}"
            );
            assert!(
                !r.to_string().contains(&ph),
                "{which}: placeholder upstream: {r}"
            );
            assert_eq!(header(r, "accept-encoding"), Some("identity"));
        }
        assert_eq!(
            header(mine[0], "authorization"),
            Some(format!("Bearer {OPENAI_VALUE}").as_str()),
            "{which}"
        );
        assert_eq!(header(mine[0], "x-api-key"), Some(OPENAI_VALUE), "{which}");
        assert_eq!(
            header(mine[1], "authorization"),
            Some(basic.as_str()),
            "{which} basic"
        );
    }

    let events = run.checked_events();
    let requests: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "broker.request")
        .collect();
    assert_eq!(requests.len(), 8, "{events:#?}");
    for e in requests {
        assert_eq!(e["names"], serde_json::json!(["OPENAI_API_KEY"]));
        assert_eq!(e["status"], 200);
        assert_eq!(e["port"], up.port);
        assert!(
            e["path"].as_str().unwrap().contains("{OPENAI_API_KEY}"),
            "{e}"
        );
        assert!(e.get("mismatch").is_none());
    }
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn header_template_injects_the_value_and_responses_get_the_placeholder_back() {
    let up = Upstream::start();
    let mut injected = spec("TOKEN", SHORT_VALUE, &[up.host()]);
    injected.header = Some("x-api-key: {value}");
    let run = Run::start(
        vec![injected, spec("OPENAI_API_KEY", OPENAI_VALUE, &[up.host()])],
        &[],
        Some(&up),
        Limits::default(),
    );
    let ph = run.ph("OPENAI_API_KEY").to_string();
    let short_ph = run.ph("TOKEN").to_string();
    assert_eq!(short_ph.len(), 24);
    // The client sends no x-api-key; the broker sets it. The upstream echoes both values;
    // the client sees placeholders only (the short one changes the length: the broker
    // drops Content-Length and streams).
    let out = run_ok(run.client("curl").args([
        "-sS",
        "-D",
        "-",
        "-H",
        &format!("Authorization: Bearer {ph}"),
        &format!("https://127.0.0.1:{}/echo", up.port),
    ]));
    assert!(
        !out.contains(OPENAI_VALUE) && !out.contains(SHORT_VALUE),
        "{out}"
    );
    assert!(
        out.contains(&format!("\"authorization\": \"Bearer {ph}\"")),
        "{out}"
    );
    assert!(
        out.contains(&format!("\"x-api-key\": \"{short_ph}\"")),
        "{out}"
    );
    assert!(
        out.to_ascii_lowercase()
            .contains(&format!("x-echo: bearer {}", ph.to_ascii_lowercase())),
        "{out}"
    );
    let reqs = up.requests();
    assert_eq!(header(&reqs[0], "x-api-key"), Some(SHORT_VALUE));
    let events = run.checked_events();
    let e = events
        .iter()
        .find(|e| e["event"] == "broker.request")
        .unwrap();
    let mut names: Vec<_> = e["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["OPENAI_API_KEY", "TOKEN"]);
}

#[test]
fn a_placeholder_to_a_host_it_does_not_name_goes_as_it_is() {
    let up = Upstream::start();
    // The secret names another host; the upstream is reachable only as an allowed, tunnelled
    // host... which the broker cannot read. Use plain tunnelling for the check that the
    // request arrives, and a second secret that names the upstream for the mismatch.
    let run = Run::start(
        vec![
            spec("OTHER", OPENAI_VALUE, &["api.example.com".to_string()]),
            spec("MINE", SHORT_VALUE, &[up.host()]),
        ],
        &[],
        Some(&up),
        Limits::default(),
    );
    let other_ph = run.ph("OTHER").to_string();
    let out = run_ok(run.client("curl").args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Authorization: Bearer {other_ph}"),
        &format!("https://127.0.0.1:{}/x", up.port),
    ]));
    assert_eq!(out, "200");
    let reqs = up.requests();
    assert_eq!(
        header(&reqs[0], "authorization"),
        Some(format!("Bearer {other_ph}").as_str())
    );
    let events = run.checked_events();
    let e = events
        .iter()
        .find(|e| e["event"] == "broker.request")
        .unwrap();
    assert_eq!(e["mismatch"], serde_json::json!(["OTHER"]));
    assert_eq!(e["names"], serde_json::json!([]));
}

#[test]
fn refusals_are_403_with_the_broker_header() {
    let up = Upstream::start();
    let run = Run::start(
        vec![spec("OPENAI_API_KEY", OPENAI_VALUE, &[up.host()])],
        &[
            "169.254.169.254:80",
            "169.254.169.254",
            "[fd00:ec2::254]:443",
        ],
        Some(&up),
        Limits::default(),
    );
    let p = run.port();
    // A host nobody named, over CONNECT and over plain http.
    let r = raw(
        p,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    );
    assert!(r.starts_with("http/1.1 403"), "{r}");
    assert!(r.contains("x-agentrun-broker: denied"), "{r}");
    let r = raw(
        p,
        b"GET http://example.com/x?y=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    );
    assert!(
        r.starts_with("http/1.1 403") && r.contains("x-agentrun-broker: denied"),
        "{r}"
    );
    // A private address nobody named.
    let r = raw(
        p,
        b"CONNECT 10.1.2.3:443 HTTP/1.1\r\nHost: 10.1.2.3:443\r\n\r\n",
    );
    assert!(r.starts_with("http/1.1 403"), "{r}");
    // Metadata addresses: refused even when named exactly.
    for req in [
        &b"CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: 169.254.169.254:80\r\n\r\n"[..],
        b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
        b"CONNECT 169.254.169.254:443 HTTP/1.1\r\nHost: 169.254.169.254:443\r\n\r\n",
        b"CONNECT [fd00:ec2::254]:443 HTTP/1.1\r\nHost: [fd00:ec2::254]:443\r\n\r\n",
    ] {
        let r = raw(p, req);
        assert!(
            r.starts_with("http/1.1 403") && r.contains("x-agentrun-broker: denied"),
            "{r}"
        );
        assert!(r.contains("address"), "{r}");
    }
    // curl sees the refusal as a failed CONNECT.
    let out = run
        .client("curl")
        .args(["-sS", "https://example.com/"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{out:?}"
    );

    let events = run.checked_events();
    let reasons: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "broker.denied")
        .map(|e| {
            (
                e["host"].as_str().unwrap().to_string(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        reasons.contains(&("example.com".into(), "host".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("10.1.2.3".into(), "host".into())),
        "{reasons:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| r.1 == "address").count(),
        4,
        "{reasons:?}"
    );
    let plain = events
        .iter()
        .find(|e| e["method"] == "GET" && e["host"] == "example.com")
        .unwrap();
    assert_eq!(plain["path"], "/x");
}

#[test]
fn host_header_and_sni_must_name_the_connect_target() {
    let up = Upstream::start();
    let run = Run::start(
        vec![spec("OPENAI_API_KEY", OPENAI_VALUE, &[up.host()])],
        &[],
        Some(&up),
        Limits::default(),
    );
    let ph = run.ph("OPENAI_API_KEY").to_string();
    let out = run_ok(run.client("curl").args([
        "-sS",
        "-D",
        "-",
        "-H",
        "Host: api.evil.example",
        "-H",
        &format!("Authorization: Bearer {ph}"),
        &format!("https://127.0.0.1:{}/x", up.port),
    ]));
    let lower = out.to_ascii_lowercase();
    assert!(lower.contains("\r\nhttp/1.1 421"), "{out}");
    assert!(lower.contains("x-agentrun-broker: denied"), "{out}");
    // A TLS client that names another server in its SNI gets no certificate.
    let code = format!(
        r#"
import socket, ssl, sys
s = socket.create_connection(("127.0.0.1", {p}))
s.sendall(b"CONNECT 127.0.0.1:{u} HTTP/1.1\r\nHost: 127.0.0.1:{u}\r\n\r\n")
assert s.recv(1000).startswith(b"HTTP/1.1 200")
ctx = ssl.create_default_context(cafile="{b}")
try:
    ctx.wrap_socket(s, server_hostname="api.evil.example")
    print("handshake")
except (ssl.SSLError, OSError) as e:
    print("refused")
"#,
        p = run.port(),
        u = up.port,
        b = run.bundle.display()
    );
    let out = run_ok(Command::new(python()).args(["-c", &code]));
    assert_eq!(out.trim(), "refused");
    assert!(up.requests().is_empty(), "nothing may reach the upstream");
    let events = run.checked_events();
    assert_eq!(denied_for(&events, "host-header"), 2, "{events:#?}");
}

/// How many `broker.denied` events give `reason`.
fn denied_for(events: &[serde_json::Value], reason: &str) -> usize {
    events.iter().filter(|e| e["reason"] == reason).count()
}

#[test]
fn allowed_hosts_are_tunnelled_unread() {
    let up = Upstream::start();
    let run = Run::start(vec![], &[&up.host()], None, Limits::default());
    // The broker does not terminate TLS here: the client verifies the upstream's own CA.
    let out = run_ok(run.client("curl").args([
        "-sS",
        "--cacert",
        up.ca.to_str().unwrap(),
        &format!("https://127.0.0.1:{}/tunnelled", up.port),
    ]));
    assert_eq!(out, "ok");
    let mut tunnels = Vec::new();
    for _ in 0..50 {
        tunnels = run
            .checked_events()
            .into_iter()
            .filter(|e| e["event"] == "broker.tunnel")
            .collect();
        if !tunnels.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(tunnels.len(), 1);
    assert!(tunnels[0]["bytes_down"].as_u64().unwrap() > 0);
    assert_eq!(run.handle.as_ref().unwrap().counts().tunnels, 1);
}

/// The broker's own 502s are refusals too, each with its line (review 11c, F2): an allowed
/// host that refuses the connection, one that does not resolve, and a brokered host that
/// does not resolve.
#[test]
fn unreachable_hosts_are_logged_as_refusals() {
    let up = Upstream::start();
    let run = Run::start(
        vec![spec(
            "OPENAI_API_KEY",
            OPENAI_VALUE,
            &["*.brokered.invalid".to_string()],
        )],
        &["127.0.0.1:1", "*.allowed.invalid"],
        Some(&up),
        Limits::default(),
    );
    for url in [
        "https://127.0.0.1:1/x",
        "https://a.allowed.invalid/x",
        "https://b.brokered.invalid/x",
    ] {
        let out = run
            .client("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_connect}", url])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "502",
            "{url}: {out:?}"
        );
    }
    let mut denied = Vec::new();
    for _ in 0..50 {
        denied = run
            .checked_events()
            .into_iter()
            .filter(|e| e["event"] == "broker.denied" && e["reason"] == "unreachable")
            .collect();
        if denied.len() == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(denied.len(), 3, "{denied:?}");
    assert_eq!(run.handle.as_ref().unwrap().counts().denied, 3);
}

/// `in = ["body"]` to a named loopback host over plain http: the value goes only in the
/// body, and an echo of that body comes back restored (review 11e, E2: a request whose head
/// carried nothing got no restorer over plain http).
#[test]
fn a_body_only_value_is_restored_over_plain_http() {
    const PLAIN_ECHO: &str = r#"
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        b = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200); self.send_header("Content-Length", str(len(b))); self.end_headers()
        self.wfile.write(b)
srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
import threading; threading.Thread(target=srv.serve_forever, daemon=True).start()
sys.stdin.read()
"#;
    let up = Upstream::start_script(PLAIN_ECHO);
    let mut s = spec("OPENAI_API_KEY", OPENAI_VALUE, &[up.host()]);
    s.body = true;
    let run = Run::start(vec![s], &[], None, Limits::default());
    let ph = run.ph("OPENAI_API_KEY").to_string();
    let out = run_ok(run.client("curl").args([
        "-sS",
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        &format!("key={ph}"),
        &format!("http://127.0.0.1:{}/echo", up.port),
    ]));
    assert!(!carries(&out, OPENAI_VALUE), "the value came back: {out}");
    assert_eq!(out, format!("key={ph}"));
    // The line names the secret the body carried.
    let mut names = serde_json::Value::Null;
    for _ in 0..50 {
        if let Some(e) = run
            .checked_events()
            .into_iter()
            .find(|e| e["event"] == "broker.request")
        {
            names = e["names"].clone();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(names, serde_json::json!(["OPENAI_API_KEY"]));
}

#[test]
fn a_revoked_secret_gets_403_revoked() {
    let up = Upstream::start();
    let run = Run::start(
        vec![spec("OPENAI_API_KEY", OPENAI_VALUE, &[up.host()])],
        &[],
        Some(&up),
        Limits::default(),
    );
    let ph = run.ph("OPENAI_API_KEY").to_string();
    run.control.revoke("OPENAI_API_KEY");
    let out = run_ok(run.client("curl").args([
        "-sS",
        "-D",
        "-",
        "-H",
        &format!("Authorization: Bearer {ph}"),
        &format!("https://127.0.0.1:{}/x", up.port),
    ]));
    let lower = out.to_ascii_lowercase();
    assert!(
        lower.contains("http/1.1 403") && lower.contains("x-agentrun-broker: revoked"),
        "{out}"
    );
    assert!(up.requests().is_empty());
    let counts = run.handle.as_ref().unwrap().counts();
    assert_eq!(counts.revoked, ["OPENAI_API_KEY"]);
    assert_eq!(counts.denied, 1);
}

#[test]
fn keep_alive_100_requests_on_one_connection() {
    let up = Upstream::start();
    let run = Run::start(
        vec![spec("OPENAI_API_KEY", OPENAI_VALUE, &[up.host()])],
        &[],
        Some(&up),
        Limits::default(),
    );
    let code = format!(
        r#"
import http.client, ssl
ctx = ssl.create_default_context(cafile="{b}")
c = http.client.HTTPSConnection("127.0.0.1", {p}, context=ctx)
c.set_tunnel("127.0.0.1", {u})
for i in range(100):
    c.request("GET", "/ka/%d" % i, headers={{"Authorization": "Bearer {ph}"}})
    r = c.getresponse()
    assert r.status == 200 and r.read() == b"ok", r.status
print(c.sock.getsockname()[1])
"#,
        b = run.bundle.display(),
        p = run.port(),
        u = up.port,
        ph = run.ph("OPENAI_API_KEY"),
    );
    run_ok(Command::new(python()).args(["-c", &code]));
    let reqs = up.requests();
    assert_eq!(reqs.len(), 100);
    let ports: std::collections::HashSet<_> =
        reqs.iter().map(|r| r["client_port"].as_u64()).collect();
    assert_eq!(ports.len(), 1, "the broker kept one upstream connection");
    assert!(
        reqs.iter()
            .all(|r| header(r, "authorization") == Some(&format!("Bearer {OPENAI_VALUE}")))
    );
}

/// Median latency (ms) of server-sent events, direct and through the broker.
#[test]
fn sse_events_arrive_within_5ms_of_direct() {
    let up = Upstream::start();
    let run = Run::start(
        vec![spec("OPENAI_API_KEY", OPENAI_VALUE, &[up.host()])],
        &[],
        Some(&up),
        Limits::default(),
    );
    let code = format!(
        r#"
import http.client, ssl, time, statistics
def lat(proxied):
    if proxied:
        ctx = ssl.create_default_context(cafile="{b}")
        c = http.client.HTTPSConnection("127.0.0.1", {p}, context=ctx)
        c.set_tunnel("127.0.0.1", {u})
    else:
        ctx = ssl.create_default_context(cafile="{ca}")
        c = http.client.HTTPSConnection("127.0.0.1", {u}, context=ctx)
    c.request("GET", "/sse?n=20")
    r = c.getresponse()
    out = []
    while True:
        line = r.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            out.append((time.time() - float(line[6:])) * 1000)
    assert len(out) == 20, out
    return statistics.median(out)
d = lat(False); b = lat(True)
print("%.3f %.3f" % (d, b))
"#,
        b = run.bundle.display(),
        ca = up.ca.display(),
        p = run.port(),
        u = up.port,
    );
    let out = run_ok(Command::new(python()).args(["-c", &code]));
    let v: Vec<f64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    eprintln!(
        "SSE median latency: direct {:.3} ms, through the broker {:.3} ms",
        v[0], v[1]
    );
    assert!(v[1] - v[0] < 5.0, "direct {} ms, broker {} ms", v[0], v[1]);
}

#[test]
fn malformed_requests_get_400_and_the_broker_keeps_serving() {
    let up = Upstream::start();
    let run = Run::start(
        vec![spec("OPENAI_API_KEY", OPENAI_VALUE, &[up.host()])],
        &[],
        Some(&up),
        Limits::default(),
    );
    let p = run.port();
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"CONNECT / HTTP/1.1\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET http://a/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    ] {
        let r = raw(p, bad);
        assert!(
            r.is_empty() || r.starts_with("http/1.1 400"),
            "{:?} -> {r}",
            String::from_utf8_lossy(bad)
        );
    }
    let big = format!(
        "GET http://a/ HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let r = raw(p, big.as_bytes());
    assert!(r.is_empty() || r.starts_with("http/1.1 4"), "{r}");
    // Malformed inside an intercepted TLS connection.
    let code = format!(
        r#"
import socket, ssl
s = socket.create_connection(("127.0.0.1", {p}))
s.sendall(b"CONNECT 127.0.0.1:{u} HTTP/1.1\r\nHost: 127.0.0.1:{u}\r\n\r\n")
assert s.recv(1000).startswith(b"HTTP/1.1 200")
t = ssl.create_default_context(cafile="{b}").wrap_socket(s, server_hostname="127.0.0.1")
t.sendall(b"GET / HTTP/1.1\r\nthis is not a header\r\n\r\n")
print(t.recv(1000).split(b"\r\n")[0].decode())
"#,
        p = p,
        u = up.port,
        b = run.bundle.display()
    );
    let out = run_ok(Command::new(python()).args(["-c", &code]));
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // Still serving.
    let out = run_ok(
        run.client("curl")
            .args(["-sS", &format!("https://127.0.0.1:{}/after", up.port)]),
    );
    assert_eq!(out, "ok");
}

#[test]
fn slowloris_and_a_1000_connection_flood_are_survived() {
    let up = Upstream::start();
    let limits = Limits {
        max_connections: 64,
        header_read_timeout: Duration::from_millis(800),
        ..Limits::default()
    };
    let run = Run::start(
        vec![spec("OPENAI_API_KEY", OPENAI_VALUE, &[up.host()])],
        &[],
        Some(&up),
        limits,
    );
    let p = run.port();
    // Slowloris: a header byte every 100 ms, never finished.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", p)).unwrap();
        s.write_all(b"GET http://a/ HTTP/1.1\r\nX-Slow: ").unwrap();
        slow.push(s);
    }
    // Flood: 1,000 connections that send nothing.
    let mut flood = Vec::new();
    for _ in 0..1000 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", p)) {
            flood.push(s);
        }
    }
    let started = Instant::now();
    let mut closed = 0;
    while started.elapsed() < Duration::from_secs(3) {
        for s in &mut slow {
            let _ = s.write_all(b"a");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 512];
        loop {
            match s.read(&mut b) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(_) => continue, // a 408 before the close
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(_) => {
                    closed += 1;
                    break;
                }
            }
        }
    }
    assert_eq!(
        closed,
        slow.len(),
        "the header timeout closes slowloris connections"
    );
    drop(flood);
    drop(slow);
    std::thread::sleep(Duration::from_millis(1000));
    let out = run_ok(run.client("curl").args([
        "-sS",
        "--max-time",
        "10",
        &format!("https://127.0.0.1:{}/after-flood", up.port),
    ]));
    assert_eq!(out, "ok");
}

// ---- a broker in a child process: RSS of big transfers ----

/// Not a test: the body of the child process `big_transfers_stream_in_bounded_memory`
/// starts. Serves a broker for the upstream named in the environment until stdin closes.
#[test]
#[ignore = "helper: run by big_transfers_stream_in_bounded_memory in a child process"]
fn broker_child() {
    let Ok(port) = std::env::var("BROKER_CHILD_UPSTREAM_PORT") else {
        return;
    };
    let ca_pem = std::fs::read(std::env::var("BROKER_CHILD_UPSTREAM_CA").unwrap()).unwrap();
    let bundle = PathBuf::from(std::env::var("BROKER_CHILD_BUNDLE").unwrap());
    let ca = Arc::new(broker::Ca::new().unwrap());
    broker::write_bundle(&ca, &bundle).unwrap();
    let value = SecretString::from(OPENAI_VALUE.to_string());
    let ph = std::env::var("BROKER_CHILD_PLACEHOLDER")
        .unwrap_or_else(|_| broker::placeholder(&value, &mut rand::rng()));
    let config = Config {
        routes: Vec::new(),
        secrets: vec![Secret {
            name: "OPENAI_API_KEY".into(),
            value,
            placeholder: ph,
            hosts: vec![HostPattern::parse(&format!("127.0.0.1:{port}")).unwrap()],
            header: None,
            parts: Parts::default(),
            methods: None,
            paths: None,
        }],
        allow: vec![],
        extra_roots: vec![ca_pem],
        limits: Limits::default(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let h = broker::serve(
        config,
        ca,
        listener,
        broker::events::NoEvents,
        Arc::new(Control::new()),
    )
    .unwrap();
    let port_file = std::env::var("BROKER_CHILD_PORT_FILE").unwrap();
    std::fs::write(format!("{port_file}.tmp"), port.to_string()).unwrap();
    std::fs::rename(format!("{port_file}.tmp"), port_file).unwrap();
    let mut s = String::new();
    let _ = std::io::stdin().read_to_string(&mut s);
    h.stop();
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[test]
fn big_transfers_stream_in_bounded_memory() {
    let up = Upstream::start();
    let bundle = up.dir.path().join("child-bundle.pem");
    let port_file = up.dir.path().join("child-port");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "broker_core::broker_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("BROKER_CHILD_UPSTREAM_PORT", up.port.to_string())
        .env("BROKER_CHILD_UPSTREAM_CA", &up.ca)
        .env("BROKER_CHILD_BUNDLE", &bundle)
        .env("BROKER_CHILD_PORT_FILE", &port_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let port: u16 = loop {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            break p.parse().unwrap();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the broker child ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let base_kib = vm_hwm_kib(child.id());
    let proxy = format!("http://127.0.0.1:{port}");
    let mib = |var: &str, default: u64| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    // 200 MiB down.
    let n = mib("BROKER_TEST_DOWN_MIB", 200) << 20;
    let started = Instant::now();
    let out = run_ok(Command::new("curl").args([
        "-sS",
        "-x",
        &proxy,
        "--cacert",
        bundle.to_str().unwrap(),
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        &format!("https://127.0.0.1:{}/big?n={n}", up.port),
    ]));
    assert_eq!(out, n.to_string());
    eprintln!(
        "{} MiB down through the broker in {:?}",
        n >> 20,
        started.elapsed()
    );
    // 1 GiB up, chunked from a pipe.
    let up_mib = mib("BROKER_TEST_UP_MIB", 1024);
    let started = Instant::now();
    let mut curl = Command::new("curl")
        .args([
            "-sS",
            "-x",
            &proxy,
            "--cacert",
            bundle.to_str().unwrap(),
            "-X",
            "POST",
            "-T",
            "-",
            &format!("https://127.0.0.1:{}/upload", up.port),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = curl.stdin.take().unwrap();
        let block = vec![b'u'; 1 << 20];
        for _ in 0..up_mib {
            stdin.write_all(&block).unwrap();
        }
    }
    let out = curl.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        (up_mib << 20).to_string()
    );
    eprintln!(
        "{up_mib} MiB up through the broker in {:?}",
        started.elapsed()
    );
    let hwm = vm_hwm_kib(child.id());
    eprintln!("broker child peak RSS: {base_kib} KiB at start, {hwm} KiB after");
    drop(child.stdin.take());
    let _ = child.wait();
    assert!(
        hwm < base_kib + 64 * 1024,
        "peak RSS grew from {base_kib} to {hwm} KiB"
    );
}

// Review 11 (hostile review of the broker): F1 F2 F4 F8 F9 F11 F12.

/// A value with the characters percent-encoding and base64 treat specially.
const ODD_VALUE: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY+x=";

/// An upstream that puts the request's Authorization where a polite one would not: in the
/// reason phrase (`/reason`), in a header name (`/hdrname`). Same arguments as upstream.py.
const HOSTILE_UPSTREAM: &str = r#"
import socket, ssl, sys, threading, json
cert, key, log = sys.argv[1:4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(64)
print(ls.getsockname()[1], flush=True)
stored = []
def handle(c):
    try:
        t = ctx.wrap_socket(c, server_side=True)
        f = t.makefile("rb")
        while True:
            line = f.readline()
            if not line: return
            path = line.split()[1].decode()
            hdrs = {}
            while True:
                h = f.readline()
                if h in (b"\r\n", b""): break
                k, v = h.decode().split(":", 1); hdrs[k.strip().lower()] = v.strip()
            open(log, "a").write(json.dumps({"path": path, "headers": list(hdrs.items())}) + "\n")
            a = hdrs.get("authorization", "")
            if path.startswith("/reason"):
                t.sendall(("HTTP/1.1 200 %s\r\nContent-Length: 2\r\n\r\nok" % a).encode())
            elif path.startswith("/hdrname"):
                t.sendall(("HTTP/1.1 200 OK\r\nX-%s: 1\r\nContent-Length: 2\r\n\r\nok" % a.split()[-1]).encode())
            elif path.startswith("/range"):
                # An echo that honours Range, as a file server would.
                body = ("token=" + a.split()[-1]).encode()
                r = hdrs.get("range", "")
                if r.startswith("bytes="):
                    lo, hi = r[6:].split("-"); part = body[int(lo):int(hi) + 1]
                    t.sendall(b"HTTP/1.1 206 Partial Content\r\nContent-Length: %d\r\n\r\n" % len(part) + part)
                else:
                    t.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            elif path.startswith("/stored"):
                # What an earlier request stored, served in pieces whatever was asked.
                body = ("token=" + (stored[-1] if stored else "")).encode()
                part = body[int(path.split("=")[-1]):][:12]
                t.sendall(b"HTTP/1.1 206 Partial Content\r\nContent-Length: %d\r\n\r\n" % len(part) + part)
            elif path.startswith("/store?") or path == "/store":
                stored.append(a.split()[-1]); t.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            elif path.startswith("/gz2"):
                # Two Content-Encoding headers, the first harmless (review 11g, G4).
                import gzip
                body = gzip.compress(a.encode())
                t.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            elif path.startswith("/gz"):
                import gzip
                body = gzip.compress(a.encode())
                t.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            else:
                t.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    except Exception:
        pass
def loop():
    while True:
        c, _ = ls.accept(); threading.Thread(target=handle, args=(c,), daemon=True).start()
threading.Thread(target=loop, daemon=True).start()
sys.stdin.read()
"#;

impl Upstream {
    /// An upstream from Python `code` taking upstream.py's arguments and printing its port.
    fn start_script(code: &str) -> Upstream {
        Upstream::start_with(&["-c", code])
    }
}

impl Run {
    /// [`Run::start`] with one secret whose rules `tweak` sets (methods, paths, parts).
    fn start_tweaked(one: SecretSpec, up: &Upstream, tweak: impl Fn(&mut Secret)) -> Run {
        let ca = Arc::new(broker::Ca::new().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.pem");
        broker::write_bundle(&ca, &bundle).unwrap();
        let value = SecretString::from(one.value.to_string());
        let ph = broker::placeholder(&value, &mut rand::rng());
        let placeholders = vec![(one.name.to_string(), one.value.to_string(), ph.clone())];
        let mut secret = Secret {
            name: one.name.into(),
            value,
            placeholder: ph,
            hosts: one
                .hosts
                .iter()
                .map(|h| HostPattern::parse(h).unwrap())
                .collect(),
            header: one.header.map(|h| HeaderTemplate::parse(h).unwrap()),
            parts: Parts::default(),
            methods: None,
            paths: None,
        };
        tweak(&mut secret);
        let config = Config {
            secrets: vec![secret],
            routes: Vec::new(),
            allow: Vec::new(),
            extra_roots: vec![std::fs::read(&up.ca).unwrap()],
            limits: Limits::default(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let events = Collect::default();
        let control = Arc::new(Control::new());
        let handle = broker::serve(config, ca, listener, events.clone(), control.clone()).unwrap();
        Run {
            handle: Some(handle),
            events,
            control,
            placeholders,
            bundle,
            _dir: dir,
        }
    }

    /// One request, written as it is, inside an intercepted TLS connection to the upstream.
    fn tls_raw(&self, up: &Upstream, request: &str) -> String {
        const CODE: &str = r#"
import socket, ssl, sys
port, up, bundle, req = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (up, up))
assert s.recv(4096).startswith(b"HTTP/1.1 200")
t = ssl.create_default_context(cafile=bundle).wrap_socket(s, server_hostname="127.0.0.1")
t.sendall(req.encode())
out = b""
try:
    while True:
        d = t.recv(65536)
        if not d: break
        out += d
except Exception:
    pass
sys.stdout.write(out.decode("latin-1"))
"#;
        run_ok(Command::new(python()).args([
            "-c",
            CODE,
            &self.port().to_string(),
            &up.port.to_string(),
            &self.bundle.display().to_string(),
            request,
        ]))
    }
}

/// Does `text` carry `value`: as it is (any case), percent-decoded, or base64-decoded at
/// any offset?
fn carries(text: &str, value: &str) -> bool {
    use base64::Engine;
    let has = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .to_ascii_lowercase()
            .contains(&value.to_ascii_lowercase())
    };
    if has(text.as_bytes())
        || has(&percent_encoding::percent_decode_str(&text.replace('+', " ")).collect::<Vec<_>>())
    {
        return true;
    }
    let b64 = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/'))
        .any(|run| {
            (0..4.min(run.len())).any(|off| {
                (0..3.min(run.len() - off)).any(|cut| {
                    b64.decode(&run[off..run.len() - cut])
                        .is_ok_and(|d| has(&d))
                })
            })
        })
}

#[test]
fn encoded_values_come_back_to_the_child_as_placeholders() {
    use base64::Engine;
    let up = Upstream::start();
    let run = Run::start(
        vec![spec("AWS_SECRET", ODD_VALUE, &[up.host()])],
        &[],
        Some(&up),
        Limits::default(),
    );
    let ph = run.ph("AWS_SECRET").to_string();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x:{ph}"))
    );
    let out = run_ok(run.client("curl").args([
        "-sS",
        "-D",
        "-",
        "-H",
        &format!("Authorization: {basic}"),
        &format!("https://127.0.0.1:{}/echo?k={ph}&v=1", up.port),
    ]));
    // The upstream got the value, base64-encoded and percent-encoded by the broker...
    let reqs = up.requests();
    let sent = header(&reqs[0], "authorization").unwrap();
    assert!(carries(sent, ODD_VALUE), "{sent}");
    assert!(carries(reqs[0]["path"].as_str().unwrap(), ODD_VALUE));
    // ... and echoed both back: the child sees its own Basic credential and placeholder.
    assert!(!carries(&out, ODD_VALUE), "{out}");
    assert!(
        out.contains(&format!("\"authorization\": \"{basic}\"")),
        "{out}"
    );
    assert!(out.contains(&format!("/echo?k={ph}&v=1")), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains(&format!("x-echo: {}", basic.to_ascii_lowercase())),
        "{out}"
    );
    run.checked_events();
}

#[test]
fn the_host_header_is_one_without_userinfo_naming_the_target() {
    let up = Upstream::start();
    let run = Run::start(
        vec![spec("OPENAI_API_KEY", OPENAI_VALUE, &[up.host()])],
        &[],
        Some(&up),
        Limits::default(),
    );
    let ph = run.ph("OPENAI_API_KEY").to_string();
    let h = up.host();
    for req in [
        format!(
            "GET /echo HTTP/1.1\r\nHost: {h}\r\nHost: evil.example.com\r\nAuthorization: Bearer {ph}\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "GET /echo HTTP/1.1\r\nHost: evil.example.com\r\nHost: {h}\r\nAuthorization: Bearer {ph}\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "GET /echo HTTP/1.1\r\nHost: evil.example.com@{h}\r\nAuthorization: Bearer {ph}\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "GET https://evil.example.com/echo HTTP/1.1\r\nHost: {h}\r\nAuthorization: Bearer {ph}\r\nConnection: close\r\n\r\n"
        ),
    ] {
        let out = run.tls_raw(&up, &req);
        assert!(out.starts_with("HTTP/1.1 421"), "{req:?}: {out}");
    }
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    // Still served when the Host is right.
    let out = run.tls_raw(
        &up,
        &format!("GET /x HTTP/1.1\r\nHost: {h}\r\nAuthorization: Bearer {ph}\r\nConnection: close\r\n\r\n"),
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // Plain http: userinfo in the absolute-form target is refused too.
    let r = raw(
        run.port(),
        format!("GET http://evil.example.com@{h}/x HTTP/1.1\r\nHost: {h}\r\n\r\n").as_bytes(),
    );
    assert!(r.starts_with("http/1.1 421"), "{r}");
    let events = run.checked_events();
    assert_eq!(denied_for(&events, "host-header"), 5, "{events:#?}");
}

#[test]
fn paths_and_methods_allow_lists_cannot_be_sidestepped() {
    let up = Upstream::start();
    let run = Run::start_tweaked(
        spec("OPENAI_API_KEY", OPENAI_VALUE, &[up.host()]),
        &up,
        |s| {
            s.methods = Some(vec!["GET".into()]);
            s.paths = Some(vec![broker::PathGlob::parse("/allowed/**").unwrap()]);
        },
    );
    let ph = run.ph("OPENAI_API_KEY").to_string();
    let code = |p: &str| {
        run_ok(run.client("curl").args([
            "-sS",
            "--path-as-is",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Authorization: Bearer {ph}"),
            &format!("https://127.0.0.1:{}{p}", up.port),
        ]))
    };
    assert_eq!(code("/allowed/x"), "200");
    for p in [
        "/secret",
        "/allowed/../secret",
        "/allowed/%2e%2e/secret",
        "/allowed/%2E%2E/secret",
        "/allowed/..%2fsecret",
        "/allowed/x/../../echo",
        "/allowed/./x",
        "/allowed;/../echo",
        "/allowed/x%5c..%5c..%5cecho",
    ] {
        assert_eq!(code(p), "403", "{p}");
    }
    let h = up.host();
    let out = run.tls_raw(
        &up,
        &format!("get /allowed/x HTTP/1.1\r\nHost: {h}\r\nAuthorization: Bearer {ph}\r\nConnection: close\r\n\r\n"),
    );
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    let paths: Vec<_> = up
        .requests()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, ["/allowed/x"]);
}

#[test]
fn the_upstreams_reason_phrase_and_header_names_never_carry_a_value() {
    let up = Upstream::start_script(HOSTILE_UPSTREAM);
    let run = Run::start(
        vec![spec("OPENAI_API_KEY", OPENAI_VALUE, &[up.host()])],
        &[],
        Some(&up),
        Limits::default(),
    );
    let ph = run.ph("OPENAI_API_KEY").to_string();
    for p in ["/reason", "/hdrname"] {
        let out = run_ok(run.client("curl").args([
            "-sS",
            "-D",
            "-",
            "-H",
            &format!("Authorization: Bearer {ph}"),
            &format!("https://127.0.0.1:{}{p}", up.port),
        ]));
        assert!(!carries(&out, OPENAI_VALUE), "{p}: {out}");
        // The last status line: curl prints the CONNECT answer's first.
        let status = out.lines().rfind(|l| l.starts_with("HTTP/1.1 ")).unwrap();
        assert_eq!(status.trim_end(), "HTTP/1.1 200 OK", "{p}: {out}");
    }
    assert_eq!(up.requests().len(), 2);
}

#[test]
fn events_carry_no_placeholder_in_host_or_method_and_bounded_paths() {
    let up = Upstream::start();
    let run = Run::start(
        vec![spec("OPENAI_API_KEY", OPENAI_VALUE, &[up.host()])],
        &[],
        Some(&up),
        Limits::default(),
    );
    let ph = run.ph("OPENAI_API_KEY").to_string();
    let p = run.port();
    raw(
        p,
        format!("{ph} http://evil.example.com/x HTTP/1.1\r\nHost: evil.example.com\r\n\r\n")
            .as_bytes(),
    );
    let lower = ph.to_ascii_lowercase();
    raw(
        p,
        format!("CONNECT {lower}.evil.example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    );
    let h = up.host();
    run.tls_raw(
        &up,
        &format!("{ph} /echo HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"),
    );
    let long = "a".repeat(20_000);
    raw(
        p,
        format!("GET http://evil.example.com/{long} HTTP/1.1\r\nHost: evil.example.com\r\n\r\n")
            .as_bytes(),
    );
    let events = run.checked_events();
    assert!(events.len() >= 4, "{events:#?}");
    for e in &events {
        let text = e.to_string();
        assert!(!text.to_ascii_lowercase().contains(&lower), "{text}");
        assert!(e["path"].as_str().unwrap().len() <= 512, "{}", text.len());
    }
    assert!(
        events
            .iter()
            .any(|e| e["host"] == "{OPENAI_API_KEY}.evil.example.com"),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .filter(|e| e["method"] == "{OPENAI_API_KEY}")
            .count()
            >= 2,
        "{events:#?}"
    );
}

/// Send a CONNECT on a fresh connection and read the answer's head: `Some(stream)` if it was
/// a 200, `None` if the broker refused or closed the connection.
fn connect_raw(port: u16, target: &str) -> Option<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    head.starts_with(b"HTTP/1.1 200").then_some(s)
}

/// A plain TCP upstream for tunnels: reads `hello`, answers `world`, then holds the
/// connection open until the peer closes it.
fn hold_upstream() -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let mut got = [0u8; 5];
        if s.read_exact(&mut got).is_ok() && &got == b"hello" {
            let _ = s.write_all(b"world");
        }
        let mut rest = [0u8; 64];
        while let Ok(n) = s.read(&mut rest) {
            if n == 0 {
                break;
            }
        }
    });
    (port, h)
}

/// A TCP upstream that accepts every connection and holds it until the peer closes it (no
/// TLS, no backlog limit).
struct AcceptAll {
    port: u16,
    done: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AcceptAll {
    fn start() -> AcceptAll {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        std::thread::spawn(move || {
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                            let mut b = [0u8; 1024];
                            while matches!(s.read(&mut b), Ok(n) if n > 0) {}
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        AcceptAll {
            port,
            done,
            thread: Some(thread),
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for AcceptAll {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Review F6: the cap holds for a connection's whole life, CONNECT tunnels and intercepts
/// included (the permit was released when hyper handed the upgraded connection off).
#[test]
fn the_connection_cap_holds_for_tunnels_and_intercepts() {
    const CAP: usize = 8;
    let up = Upstream::start();
    let tunnelled = AcceptAll::start();
    let limits = Limits {
        max_connections: CAP,
        ..Limits::default()
    };
    let run = Run::start(
        vec![spec("OPENAI_API_KEY", OPENAI_VALUE, &[up.host()])],
        &[&tunnelled.host()],
        Some(&up),
        limits,
    );
    let p = run.port();
    // Tunnels (an allowed host) and intercepts (a brokered host), each N + 50 held.
    for target in [tunnelled.host(), up.host()] {
        let mut held = Vec::new();
        for _ in 0..CAP + 50 {
            if let Some(s) = connect_raw(p, &target) {
                held.push(s);
            }
        }
        assert!(
            held.len() <= CAP,
            "{} CONNECTs to {target} open at once with a cap of {CAP}",
            held.len()
        );
        assert!(!held.is_empty(), "no CONNECT to {target} was served");
        drop(held);
        // The slots come back when the tunnels close: the broker serves again.
        let mut ok = false;
        let started = Instant::now();
        while !ok && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(100));
            let out = run
                .client("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "5",
                    &format!("https://127.0.0.1:{}/after-cap", up.port),
                ])
                .output()
                .unwrap();
            ok = out.status.success() && out.stdout == b"ok";
        }
        assert!(
            ok,
            "the broker serves a request after the {target} CONNECTs close"
        );
    }
}

/// Review F7: tunnels still open at stop emit their `broker.tunnel` (bytes so far and
/// duration) before `stop` returns; so does an intercepted response still streaming.
#[test]
fn stop_emits_the_events_of_connections_still_open() {
    let up = Upstream::start();
    let (hold_port, hold) = hold_upstream();
    let hold_host = format!("127.0.0.1:{hold_port}");
    let mut run = Run::start(
        vec![spec("OPENAI_API_KEY", OPENAI_VALUE, &[up.host()])],
        &[&hold_host],
        Some(&up),
        Limits::default(),
    );
    let p = run.port();
    // A tunnel, 5 bytes each way, left open.
    let mut tunnel = connect_raw(p, &hold_host).expect("the tunnel opens");
    tunnel.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    tunnel.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"world");
    // An intercepted server-sent-event stream (10 s long), read for a while.
    let code = format!(
        r#"
import http.client, ssl, sys
ctx = ssl.create_default_context(cafile="{b}")
c = http.client.HTTPSConnection("127.0.0.1", {p}, context=ctx)
c.set_tunnel("127.0.0.1", {u})
c.request("GET", "/sse?n=200")
r = c.getresponse()
for _ in range(3):
    r.readline(); r.readline()
print("streaming", flush=True)
try:
    while r.readline():
        pass
except Exception:
    pass
"#,
        b = run.bundle.display(),
        p = p,
        u = up.port,
    );
    let mut sse = Command::new(python())
        .args(["-c", &code])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sse.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "streaming");
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let counts = run.handle.take().unwrap().stop();
    let stop_took = started.elapsed();
    let events = run.checked_events();
    let _ = sse.kill();
    let _ = sse.wait();
    drop(tunnel);
    let _ = hold.join();

    assert_eq!(counts.tunnels, 1);
    let tunnels: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "broker.tunnel")
        .collect();
    assert_eq!(tunnels.len(), 1, "{events:#?}");
    assert_eq!(tunnels[0]["port"], hold_port);
    assert_eq!(tunnels[0]["bytes_up"], 5);
    assert_eq!(tunnels[0]["bytes_down"], 5);
    assert!(
        tunnels[0]["ms"].as_u64().unwrap() >= 300,
        "{:?}",
        tunnels[0]
    );
    let streams: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "broker.request" && e["path"] == "/sse")
        .collect();
    assert_eq!(streams.len(), 1, "{events:#?}");
    assert!(streams[0]["bytes_down"].as_u64().unwrap() > 0);
    assert!(
        stop_took < Duration::from_secs(2),
        "stop took {stop_took:?} with connections open"
    );
}

/// Review 11b, N1 and N2: the child cannot have an echo of its credential cut into pieces
/// (`Range` is taken off a request that carries a value, and a partial answer refused), nor
/// read it in a body the restorer cannot read (a `Content-Encoding` is refused with 502).
#[test]
fn ranges_and_encoded_bodies_never_carry_a_value_back() {
    let up = Upstream::start_script(HOSTILE_UPSTREAM);
    let run = Run::start(
        vec![spec("OPENAI_API_KEY", OPENAI_VALUE, &[up.host()])],
        &[],
        Some(&up),
        Limits::default(),
    );
    let ph = run.ph("OPENAI_API_KEY").to_string();
    let get = |path: &str, extra: &[&str]| {
        let mut c = run.client("curl");
        c.args([
            "-sS",
            "-D",
            "-",
            "-H",
            &format!("Authorization: Bearer {ph}"),
        ]);
        c.args(extra);
        c.arg(format!("https://127.0.0.1:{}{path}", up.port));
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    let mut pieces = String::new();
    for range in ["bytes=0-25", "bytes=26-60"] {
        let out = get("/range", &["-H", &format!("Range: {range}")]);
        assert!(!carries(&out, OPENAI_VALUE), "{out}");
        pieces.push_str(out.rsplit("\r\n\r\n").next().unwrap_or(""));
    }
    assert!(
        !pieces.contains(&OPENAI_VALUE[6..30]),
        "the pieces hold the value: {pieces}"
    );
    for r in up.requests() {
        let h = r["headers"].to_string().to_ascii_lowercase();
        assert!(!h.contains("\"range\""), "Range reached the upstream: {h}");
    }
    for path in ["/gz", "/gz2"] {
        let out = get(path, &["--compressed"]);
        assert!(
            out.contains("502") && out.contains("upstream-error"),
            "{path}: {out}"
        );
        assert!(!carries(&out, OPENAI_VALUE), "{path}: {out}");
    }
    // A value stored upstream by one request, read back in pieces by requests that carry
    // nothing (review 11e, E1): no Range goes there, and a 206 from a named host is refused.
    get("/store", &[]);
    for at in [0, 12, 24, 36] {
        let mut c = run.client("curl");
        c.args(["-sS", "-D", "-", "-H", "Range: bytes=0-11"]);
        c.arg(format!("https://127.0.0.1:{}/stored?at={at}", up.port));
        let out = String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned();
        assert!(out.contains("502"), "a piece came back: {out}");
        assert!(
            !out.contains(&OPENAI_VALUE[at.min(20)..at.min(20) + 8]),
            "{out}"
        );
    }
    for r in up.requests() {
        let h = r["headers"].to_string().to_ascii_lowercase();
        assert!(!h.contains("\"range\""), "Range reached the upstream: {h}");
    }
}
