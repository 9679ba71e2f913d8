//! Broker control through the real binary (docs/contract.md, "Broker control"): `agentrun
//! revoke` and `agentrun runs` from another process against a running agent, `[broker].ttl`,
//! and rate limits at exact counts. The upstream is the local HTTPS one of `broker.rs`; the
//! child loops on requests with Python's `http.client` (one keep-alive connection through the
//! proxy), writing each answer's status and time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::broker::{Upstream, VALUE};
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

struct Brokered {
    s: Scratch,
    up: Upstream,
    runtime: std::path::PathBuf,
}

fn brokered(extra: &str, secret_extra: &str) -> Brokered {
    let up = Upstream::start();
    let s = Scratch::new();
    s.file("up-ca.pem", &up.ca);
    s.profile(
        "b",
        &format!(
            "version = 1\n[secrets.API_KEY]\nfrom = \"env:API_KEY\"\nbroker = {{ hosts = [\"127.0.0.1:{}\"]{secret_extra} }}\n[secrets.OTHER_KEY]\nfrom = \"env:OTHER_KEY\"\nbroker = \"other.example\"\n[broker]\nca_cert = \"up-ca.pem\"\n{extra}\n[sandbox]\nwrite = [\".\"]\n",
            up.port
        ),
    );
    // A runtime directory of this test's own: `revoke` without `--run` must not reach the
    // runs of tests beside it.
    let runtime = s.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    Brokered { s, up, runtime }
}

impl Brokered {
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
    let o =
        b.s.agentrun()
            .env("XDG_RUNTIME_DIR", &b.runtime)
            .as_nobody()
            .args(["revoke", "--run", &child.id().to_string(), "--all"])
            .run();
    std::fs::write(b.s.path().join("stop"), "").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("may not control this run"), "{o:?}");
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
