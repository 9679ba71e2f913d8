//! The credential broker end to end, through the real binary: a local HTTPS upstream with its
//! own test CA (`tests/fixtures/broker/upstream.py`, Python's `http.server` + `ssl`) records
//! what it receives; inside the sandbox, real clients (curl, Python's urllib) use it with no
//! flags, as root and as nobody. The child must hold only the placeholder, the upstream must
//! get the value, and nothing else on the network may be reachable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::broker_core::upstream_certs;
use crate::harness::*;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const VALUE: &str = "sk-proj-brokered0123456789abcdefghijKLMNOP";

struct Upstream {
    child: Child,
    port: u16,
    log: PathBuf,
    ca: String,
    _dir: tempfile::TempDir,
}

impl Upstream {
    fn start() -> Upstream {
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

    fn received(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the child does: records what it holds and what it got back, in files of its own.
fn child_script(port: u16) -> String {
    format!(
        r#"printf '%s' "$API_KEY" > seen_env
tr '\0' '\n' < /proc/self/environ > seen_proc
curl -sS https://127.0.0.1:{port}/echo -H "Authorization: Bearer $API_KEY" > seen_curl 2>&1
python3 -c 'import os, urllib.request
r = urllib.request.Request("https://127.0.0.1:{port}/echo?key=" + os.environ["API_KEY"], headers={{"x-api-key": os.environ["API_KEY"]}})
open("seen_urllib", "wb").write(urllib.request.urlopen(r, timeout=10).read())' 2> urllib_err
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
    let s = Scratch::new();
    s.file("up-ca.pem", &up.ca);
    s.profile(
        "b",
        &format!(
            "version = 1\n[secrets.API_KEY]\nfrom = \"env:API_KEY\"\nbroker = \"127.0.0.1:{}\"\n[broker]\nca_cert = \"up-ca.pem\"\n[sandbox]\nwrite = [\".\"]\n",
            up.port
        ),
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
    for f in [
        "seen_env",
        "seen_proc",
        "seen_curl",
        "seen_urllib",
        "proxy_env",
    ] {
        assert!(
            !read(f).contains(VALUE),
            "{who:?}: the value reached the child in {f}"
        );
    }
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
        2,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"broker.denied"), "{kinds:?}");
    let exit = events.iter().find(|e| e["event"] == "exit").unwrap();
    assert_eq!(exit["broker"]["requests"], 2, "{exit}");
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

/// Keys of broker control are refused, not ignored, until they are served; and a broker next
/// to `connect` ports is refused.
#[test]
fn broker_keys_not_served_yet_are_refused() {
    let s = Scratch::new();
    for (text, want) in [
        (
            "[secrets.K]\nfrom = \"env:K\"\nbroker = { hosts = [\"a.example\"], rate = \"5/min\" }\n",
            "secrets.K.broker.rate",
        ),
        ("[broker]\nttl = \"1h\"\n", "broker.ttl"),
        (
            "[secrets.K]\nfrom = \"env:K\"\nbroker = \"no such host/\"\n",
            "secrets.K.broker.hosts",
        ),
        (
            "[broker]\nallow = [\"a.example\"]\n[sandbox]\nconnect = [443]\n",
            "sandbox.connect",
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
