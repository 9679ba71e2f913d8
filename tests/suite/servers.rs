//! Real servers for the remote-secret tests: OpenBao (`bao server -dev`) and moto, both from
//! `.venv` (created by `.ci/install-test-servers`), on free loopback ports, stopped on drop.
//! Plus two tiny in-test servers: an HTTP probe endpoint and a listener that never answers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use agentrun::context::Context;
use agentrun::profile::{Profile, Resolve};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A program from `.venv/bin`. Missing servers fail the test loudly: never a silent skip.
pub(crate) fn venv_bin(name: &str) -> PathBuf {
    let p = repo().join(".venv/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `.ci/install-test-servers` to install the pinned OpenBao and moto test servers",
        p.display()
    );
    p
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One raw HTTP/1.0 GET; returns the status code.
pub(crate) fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace().nth(1)?.parse().ok()
}

static BAO_START: Mutex<()> = Mutex::new(());

/// A free port whose successor is free too.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let p = free_port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two adjacent free loopback ports");
}

fn wait_until(
    what: &str,
    child: &mut Child,
    limit: Duration,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} exited before it was ready: {status}\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    panic!("{what} was not ready within {limit:?}\n{tail}");
}

/// A child process killed and reaped on drop.
pub(crate) struct Proc(Child);

impl Proc {
    pub(crate) fn id(&self) -> u32 {
        self.0.id()
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `bao server -dev` on a free port with a known root token.
pub(crate) struct Bao {
    pub proc: Proc,
    pub port: u16,
    pub addr: String,
    pub token: String,
    pub home: tempfile::TempDir,
    /// With `start_tls`: the CA that signed the server's certificate.
    pub ca: Option<PathBuf>,
}

impl Bao {
    pub(crate) fn start() -> Bao {
        Self::start_with(false)
    }

    /// `-dev-tls`: HTTPS with a certificate from a CA the dev server writes to its HOME.
    pub(crate) fn start_tls() -> Bao {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Bao {
        let bin = venv_bin("bao");
        // Dev servers started at once would race for ports (each also takes PORT+1 for its
        // cluster listener): start them one at a time, on a port whose neighbour is free too.
        let _one_at_a_time = BAO_START.lock().unwrap_or_else(|e| e.into_inner());
        let port = free_port_pair();
        // OpenBao refuses a custom root token id that looks like a service token ("s.").
        let token = format!("root-test-{port}");
        // The dev server writes ~/.vault-token: give it its own HOME.
        let home = tempfile::tempdir().expect("tempdir");
        let log = home.path().join("bao.log");
        let mut args = vec![
            "server".to_string(),
            "-dev".to_string(),
            format!("-dev-listen-address=127.0.0.1:{port}"),
            format!("-dev-root-token-id={token}"),
        ];
        let ca = tls.then(|| home.path().join("vault-ca.pem"));
        if tls {
            args.push("-dev-tls".into());
            args.push(format!("-dev-tls-cert-dir={}", home.path().display()));
        }
        let child = Command::new(&bin)
            .args(&args)
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(home.path().join("bao.out")).expect("log file"))
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start bao");
        let mut proc = Proc(child);
        wait_until(
            "bao server -dev",
            &mut proc.0,
            Duration::from_secs(20),
            &log,
            || match &ca {
                None => http_status(port, "/v1/sys/health") == Some(200),
                Some(ca) => {
                    // The TLS listener is up once the CA is written and the port accepts.
                    ca.exists() && TcpStream::connect(("127.0.0.1", port)).is_ok()
                }
            },
        );
        let scheme = if tls { "https" } else { "http" };
        let bao = Bao {
            proc,
            port,
            addr: format!("{scheme}://127.0.0.1:{port}"),
            token,
            home,
            ca,
        };
        if tls {
            // Unsealed and serving: the CLI over TLS answers.
            let start = Instant::now();
            while !bao.try_cli(&["status"]).0 {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "bao -dev-tls not ready"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        bao
    }

    /// Run the `bao` CLI against this server as root; panics on failure; returns stdout.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        self.cli_with(args, &self.token)
    }

    pub(crate) fn cli_with(&self, args: &[&str], token: &str) -> String {
        let (ok, stdout, stderr) = self.run_cli(args, token);
        assert!(ok, "bao {args:?} failed: {stderr}");
        stdout
    }

    fn try_cli(&self, args: &[&str]) -> (bool, String) {
        let (ok, stdout, _) = self.run_cli(args, &self.token);
        (ok, stdout)
    }

    fn run_cli(&self, args: &[&str], token: &str) -> (bool, String, String) {
        let mut cmd = Command::new(venv_bin("bao"));
        cmd.args(args)
            .env("BAO_ADDR", &self.addr)
            .env("VAULT_ADDR", &self.addr)
            .env("BAO_TOKEN", token)
            .env("VAULT_TOKEN", token)
            .env("HOME", self.home.path())
            .stdin(Stdio::null());
        if let Some(ca) = &self.ca {
            cmd.env("BAO_CACERT", ca).env("VAULT_CACERT", ca);
        }
        let out = cmd.output().expect("run bao");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    }

    /// Write a policy from HCL text.
    pub(crate) fn policy(&self, name: &str, hcl: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("p.hcl");
        std::fs::write(&file, hcl).expect("write policy");
        self.cli(&["policy", "write", name, &file.display().to_string()]);
    }
}

/// moto's server (AWS APIs) on a free port.
pub(crate) struct Moto {
    _logs: tempfile::TempDir,
    pub proc: Proc,
    pub endpoint: String,
}

impl Moto {
    /// `extra_env`: e.g. `INITIAL_NO_AUTH_ACTION_COUNT` to make moto enforce IAM.
    pub(crate) fn start(extra_env: &[(&str, &str)]) -> Moto {
        let python = venv_bin("python");
        let port = free_port();
        let logs = tempfile::tempdir().expect("tempdir");
        let log = logs.path().join("moto.log");
        let mut cmd = Command::new(&python);
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut proc = Proc(cmd.spawn().expect("start moto"));
        wait_until(
            "moto server",
            &mut proc.0,
            Duration::from_secs(30),
            &log,
            || http_status(port, "/moto-api/").is_some(),
        );
        Moto {
            _logs: logs,
            proc,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Run a boto3 script against this server; `ep` and `client(service, **keys)` are defined.
    /// Returns stdout.
    pub(crate) fn py(&self, script: &str) -> String {
        let prelude = format!(
            "import boto3, json\nep = {:?}\n\
             def client(svc, key='testing', secret='testing'):\n    \
             return boto3.client(svc, endpoint_url=ep, region_name='us-east-1', \
             aws_access_key_id=key, aws_secret_access_key=secret)\n",
            self.endpoint
        );
        let out = Command::new(venv_bin("python"))
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::null())
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "boto3 script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// agentrun's environment snapshot for a test: only `vars`, `home` as `$HOME`.
pub(crate) fn ctx(dir: &Path, vars: &[(&str, &str)]) -> Context {
    Context {
        env: vars
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect::<BTreeMap<_, _>>(),
        cwd: dir.to_path_buf(),
        home: Some(dir.to_path_buf()),
    }
}

/// Parse a profile the way agentrun does, relative to `dir`.
pub(crate) fn profile(dir: &Path, text: &str) -> Profile {
    match Profile::parse(
        &dir.join("test.toml"),
        text,
        &Resolve {
            cwd: dir,
            home: Some(dir),
            xdg_state_home: None,
        },
    ) {
        Ok(p) => p,
        Err(e) => panic!("profile does not parse: {e}\n{text}"),
    }
}

/// A background accept loop, stopped and joined on drop.
struct Acceptor {
    stop: Arc<AtomicBool>,
    port: u16,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    fn start(mut handle: impl FnMut(TcpStream) + Send + 'static) -> Acceptor {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for s in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = s {
                    handle(s);
                }
            }
        });
        Acceptor {
            stop,
            port,
            thread: Some(thread),
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A tiny HTTP endpoint for `probe = "http"`: 200 when the Authorization header is
/// `Bearer <accepted>`, else 401. Counts requests.
pub(crate) struct ProbeServer {
    acceptor: Acceptor,
    pub hits: Arc<AtomicUsize>,
    pub url: String,
}

impl ProbeServer {
    pub(crate) fn start(accepted: &str) -> ProbeServer {
        Self::start_with(accepted, || {})
    }

    /// Like [`ProbeServer::start`], and runs `on_reject` before answering a rejected
    /// request (e.g. to rotate the credential at its source, as an operator would).
    pub(crate) fn start_with(
        accepted: &str,
        on_reject: impl Fn() + Send + Sync + 'static,
    ) -> ProbeServer {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let expected = format!("authorization: bearer {}", accepted.to_ascii_lowercase());
        let acceptor = Acceptor::start(move |mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
            let ok = text.lines().any(|l| l.trim_end() == expected);
            if !ok {
                on_reject();
            }
            let status = if ok { "200 OK" } else { "401 Unauthorized" };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = s.shutdown(Shutdown::Both);
        });
        let url = format!("http://127.0.0.1:{}/check", acceptor.port);
        ProbeServer {
            acceptor,
            hits,
            url,
        }
    }
}

/// A server that accepts connections and never answers (holds them open until dropped).
pub(crate) struct Silent {
    acceptor: Acceptor,
    held: Arc<Mutex<Vec<TcpStream>>>,
    pub addr: String,
}

impl Silent {
    pub(crate) fn start() -> Silent {
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        let acceptor = Acceptor::start(move |s| {
            if let Ok(mut v) = keep.lock() {
                v.push(s);
            }
        });
        let addr = format!("http://127.0.0.1:{}", acceptor.port);
        Silent {
            acceptor,
            held,
            addr,
        }
    }
}

// ---- GCP Secret Manager (tests/suite/remote_gcp.rs) -------------------------------------

/// drongo (`drongo server`, "the moto for GCP", from `.venv`) on a free loopback port: the
/// Secret Manager REST API over plain http, seeded with `curl` through that same API.
pub(crate) struct Drongo {
    _logs: tempfile::TempDir,
    pub proc: Proc,
    pub port: u16,
    pub endpoint: String,
}

impl Drongo {
    pub(crate) fn start() -> Drongo {
        let bin = venv_bin("drongo");
        let port = free_port();
        let logs = tempfile::tempdir().expect("tempdir");
        let log = logs.path().join("drongo.log");
        let child = Command::new(&bin)
            .args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start drongo");
        let mut proc = Proc(child);
        wait_until(
            "drongo server",
            &mut proc.0,
            Duration::from_secs(30),
            &log,
            || http_status(port, "/drongo/health") == Some(200),
        );
        Drongo {
            _logs: logs,
            proc,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// One call to the REST API with `curl`; panics unless it answers 2xx. Returns the body.
    pub(crate) fn call(&self, method: &str, path: &str, body: &str) -> String {
        gcp_curl(&self.endpoint, method, path, body)
    }

    /// `secrets.create` (automatic replication).
    pub(crate) fn create(&self, project: &str, secret: &str) {
        self.call(
            "POST",
            &format!("/v1/projects/{project}/secrets?secretId={secret}"),
            r#"{"replication":{"automatic":{}}}"#,
        );
    }

    /// `secrets.addVersion` with these bytes; versions are numbered 1, 2, ...
    pub(crate) fn add(&self, project: &str, secret: &str, data: &[u8]) {
        gcp_add_version(&self.endpoint, project, secret, data);
    }

    /// `versions.disable` / `versions.destroy` / `versions.enable`.
    pub(crate) fn set_state(&self, project: &str, secret: &str, version: u32, action: &str) {
        self.call(
            "POST",
            &format!("/v1/projects/{project}/secrets/{secret}/versions/{version}:{action}"),
            "{}",
        );
    }
}

/// `secrets.addVersion` against `endpoint` (usable from a hook thread).
pub(crate) fn gcp_add_version(endpoint: &str, project: &str, secret: &str, data: &[u8]) {
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD.encode(data);
    gcp_curl(
        endpoint,
        "POST",
        &format!("/v1/projects/{project}/secrets/{secret}:addVersion"),
        &format!(r#"{{"payload":{{"data":"{data}"}}}}"#),
    );
}

fn gcp_curl(endpoint: &str, method: &str, path: &str, body: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "-X", method])
        .args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ])
        .arg(format!("{endpoint}{path}"))
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{method} {path} failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// An HTTP/1.1 server that answers every request with one fixed status and JSON body (and
/// `Connection: close`), counting requests: for the answers drongo does not model (Google's
/// 401/403 error bodies, a payload whose checksum does not match, a 503).
pub(crate) struct FixedAnswer {
    acceptor: Acceptor,
    pub hits: Arc<AtomicUsize>,
    pub endpoint: String,
}

impl FixedAnswer {
    /// `status`: e.g. `"403 Forbidden"`; `body`: the JSON text.
    pub(crate) fn start(status: &str, body: &str) -> FixedAnswer {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let (status, body) = (status.to_string(), body.to_string());
        let acceptor = Acceptor::start(move |mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.flush();
            let _ = s.shutdown(Shutdown::Both);
        });
        let endpoint = format!("http://127.0.0.1:{}", acceptor.port);
        FixedAnswer {
            acceptor,
            hits,
            endpoint,
        }
    }

    /// Google's error envelope, as Secret Manager sends it.
    pub(crate) fn google_error(
        code: u16,
        reason: &str,
        status: &str,
        message: &str,
    ) -> FixedAnswer {
        let body =
            format!(r#"{{"error":{{"code":{code},"message":"{message}","status":"{status}"}}}}"#);
        FixedAnswer::start(&format!("{code} {reason}"), &body)
    }
}

// ---- Azure Key Vault: the fake (tests/fixtures/azure/fake_keyvault.py) ----

/// The tenant, client id and client secret the fake Key Vault's token endpoint accepts.
pub(crate) const AZURE_TENANT: &str = "00000000-0000-4000-8000-00000000a2ee";
pub(crate) const AZURE_CLIENT: &str = "11111111-1111-4111-8111-11111111c1d0";
pub(crate) const AZURE_SECRET: &str = "test-client-secret-Q8-azure";

/// The fake Key Vault and its token endpoint on one HTTPS port of loopback, with a CA made
/// for this run (`ca`). Its contents are `state.json` in its directory, re-read on every
/// request: [`AzureKv::set`] rewrites it (a rotation, a disabled version). See the fake's
/// header for what it models of the real service and what it does not.
pub(crate) struct AzureKv {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    /// `https://127.0.0.1:PORT`: both `[azure].vault_url` and `authority_host`.
    pub url: String,
    pub ca: PathBuf,
}

impl AzureKv {
    /// `secrets`: `{"NAME": {"versions": [{"id", "value", "enabled"}], "forbidden": bool}}`;
    /// the last version is the current one.
    pub(crate) fn start(secrets: serde_json::Value) -> AzureKv {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = dir.path().join("fake.log");
        let kv_state = |secrets| {
            serde_json::json!({
                "tenant": AZURE_TENANT,
                "client_id": AZURE_CLIENT,
                "client_secret": AZURE_SECRET,
                "secrets": secrets,
            })
        };
        std::fs::write(dir.path().join("state.json"), kv_state(secrets).to_string())
            .expect("state");
        let child = Command::new(venv_bin("python"))
            .arg(repo().join("tests/fixtures/azure/fake_keyvault.py"))
            .args(["--port", &port.to_string(), "--dir"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start the fake Key Vault");
        let mut proc = Proc(child);
        let ca = dir.path().join("ca.pem");
        wait_until(
            "fake Key Vault",
            &mut proc.0,
            Duration::from_secs(20),
            &log,
            || ca.exists(),
        );
        AzureKv {
            proc,
            dir,
            url: format!("https://127.0.0.1:{port}"),
            ca,
        }
    }

    /// Replace the vault's secrets (atomically: the fake never reads half a file).
    pub(crate) fn set(&self, secrets: serde_json::Value) {
        self.set_state(|s| s["secrets"] = secrets);
    }

    /// Change the fake's state, e.g. `reject_tokens`.
    pub(crate) fn set_state(&self, change: impl FnOnce(&mut serde_json::Value)) {
        let path = self.dir.path().join("state.json");
        let mut state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("state")).expect("json");
        change(&mut state);
        let tmp = self.dir.path().join("state.json.tmp");
        std::fs::write(&tmp, state.to_string()).expect("write state");
        std::fs::rename(&tmp, &path).expect("rename state");
    }

    /// The fake's request log (request lines and statuses; never a header or a body).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fake.log")).unwrap_or_default()
    }

    /// An `[azure]` table for this fake; `extra` lines are appended.
    pub(crate) fn table(&self, extra: &str) -> String {
        format!(
            "[azure]\nvault_url = \"{url}\"\nauthority_host = \"{url}\"\nca_cert = \"{ca}\"\n{extra}",
            url = self.url,
            ca = self.ca.display()
        )
    }
}
