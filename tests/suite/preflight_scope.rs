//! `permissions.scoped` through the library API, against real servers: OpenBao with the root
//! token and with a token of a non-root policy, moto's STS (`GetCallerIdentity`), and a
//! local https server standing in for the GitHub API.
//!
//! The GitHub stand-in is a hand-written double, not GitHub: no GitHub API server installs
//! here. It is Python's `http.server` behind `ssl`, with a test CA made by rcgen (as the
//! broker tests make theirs), trusted through `SSL_CERT_FILE` in agentrun's snapshot. It
//! answers `GET /classic-admin` with `X-OAuth-Scopes: repo, admin:org`, `GET /classic` with
//! `X-OAuth-Scopes: repo`, and `GET /fine` with no such header (what GitHub answers for a
//! fine-grained token), each 200 when a bearer token came, else 401.
//!
//! moto cannot answer with an account root's ARN: `GetCallerIdentity` returns the IAM user
//! that owns the access key (`arn:aws:iam::ACCOUNT:user/NAME`), an assumed role, or its
//! default `arn:aws:sts::ACCOUNT:user/moto`; none is `:root`. So moto shows the PASS side
//! (its default identity, and an IAM user named `root`, which is not the account root), and
//! the root-ARN rule is unit-tested in `commands::preflight_scope`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::broker_core::upstream_certs;
use crate::servers::{Bao, Moto, ctx, profile, venv_bin};
use agentrun::commands::fetch::{Got, fetch_and_verify};
use agentrun::commands::preflight_scope::scoped;
use agentrun::preflight::{Check, Status};
use agentrun::profile::Profile;
use secrecy::SecretString;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// The check's findings as (rule, message), and everything it would print, for the
/// no-value greps.
fn shown(c: &Check) -> (Vec<(String, String)>, String) {
    let rules = c
        .findings
        .iter()
        .map(|f| (f.rule.clone(), f.message.clone()))
        .collect();
    let all = format!("{}\n{}", serde_json::to_string(c).unwrap(), c.summary);
    (rules, all)
}

fn assert_hides(c: &Check, values: &[&str]) {
    let (_, all) = shown(c);
    for v in values {
        assert!(!all.contains(v), "a value is in the check's output: {all}");
    }
}

fn every_finding_at_the_profile(c: &Check, p: &Profile) {
    for f in &c.findings {
        assert_eq!(f.file, p.path.display().to_string());
        assert_eq!(f.line, 1);
    }
}

// ---- Vault -----------------------------------------------------------------------------

fn vault_profile(dir: &Path, bao: &Bao) -> Profile {
    profile(
        dir,
        &format!(
            "version = 1\n[vault]\naddress = \"{}\"\n[secrets]\nDB_PASSWORD = \"vault:secret/agent#password\"\n",
            bao.addr
        ),
    )
}

#[test]
fn vault_root_token_fails_and_a_policy_token_passes() {
    let bao = Bao::start();
    bao.cli(&["kv", "put", "secret/agent", "password=pw-in-vault-0123"]);
    bao.policy(
        "agent",
        "path \"secret/data/agent\" { capabilities = [\"read\"] }\n",
    );
    let agent_token = bao.cli(&["token", "create", "-policy=agent", "-field=token"]);
    let dir = tempfile::tempdir().unwrap();
    let p = vault_profile(dir.path(), &bao);

    // The root token: policies ["root"].
    let c = ctx(dir.path(), &[("VAULT_TOKEN", &bao.token)]);
    let got = fetch_and_verify(&p, &c, None).got;
    assert_eq!(got.len(), 1, "the fetch with the root token works");
    let check = scoped(&p, &c, &got);
    assert_eq!(check.id, "permissions.scoped");
    assert_eq!(check.status, Status::Fail, "{check:?}");
    let (rules, _) = shown(&check);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].0, "vault.root-policy");
    assert!(rules[0].1.contains("DB_PASSWORD"), "{}", rules[0].1);
    assert!(check.fix.contains("Vault"), "{}", check.fix);
    every_finding_at_the_profile(&check, &p);
    assert_hides(&check, &[&bao.token, "pw-in-vault-0123"]);

    // A token of the `agent` policy (and `default`): PASS.
    let c = ctx(dir.path(), &[("VAULT_TOKEN", &agent_token)]);
    let got = fetch_and_verify(&p, &c, None).got;
    assert_eq!(got.len(), 1, "the fetch with the agent token works");
    let check = scoped(&p, &c, &got);
    assert_eq!(check.status, Status::Pass, "{check:?}");
    assert!(check.findings.is_empty());
    assert_hides(&check, &[&agent_token, "pw-in-vault-0123"]);

    // The same lookup, asked directly.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut policies = rt
        .block_on(agentrun::secrets::vault::token_policies(
            p.vault.as_ref(),
            &c,
        ))
        .unwrap();
    policies.sort();
    assert_eq!(policies, ["agent", "default"]);

    // A revoked token: the lookup cannot be made, WARN naming it, never the token.
    bao.cli(&["token", "revoke", &agent_token]);
    let check = scoped(&p, &c, &got);
    assert_eq!(check.status, Status::Warn, "{check:?}");
    let (rules, _) = shown(&check);
    assert_eq!(rules[0].0, "vault.lookup-failed", "{rules:?}");
    assert!(
        rules[0].1.contains("auth/token/lookup-self"),
        "{}",
        rules[0].1
    );
    assert_hides(&check, &[&agent_token]);
}

#[test]
fn vault_approle_login_is_looked_up_as_a_fetch_logs_in() {
    let bao = Bao::start();
    bao.cli(&["kv", "put", "secret/agent", "password=pw-approle-0123"]);
    bao.policy(
        "agent",
        "path \"secret/data/agent\" { capabilities = [\"read\"] }\n",
    );
    bao.cli(&["auth", "enable", "approle"]);
    bao.cli(&["write", "auth/approle/role/agent", "token_policies=agent"]);
    let role_id = bao.cli(&["read", "-field=role_id", "auth/approle/role/agent/role-id"]);
    let secret_id = bao.cli(&[
        "write",
        "-f",
        "-field=secret_id",
        "auth/approle/role/agent/secret-id",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let p = profile(
        dir.path(),
        &format!(
            "version = 1\n[vault]\naddress = \"{}\"\nauth = \"approle\"\nrole_id = \"env:ROLE_ID\"\nsecret_id = \"env:SECRET_ID\"\n[secrets]\nDB_PASSWORD = \"vault:secret/agent#password\"\n",
            bao.addr
        ),
    );
    let c = ctx(
        dir.path(),
        &[("ROLE_ID", &role_id), ("SECRET_ID", &secret_id)],
    );
    let got = fetch_and_verify(&p, &c, None).got;
    assert_eq!(got.len(), 1);
    let check = scoped(&p, &c, &got);
    assert_eq!(check.status, Status::Pass, "{check:?}");
    assert_hides(&check, &[&role_id, &secret_id, "pw-approle-0123"]);
}

// ---- AWS (moto) --------------------------------------------------------------------------

fn aws_profile(dir: &Path, moto: &Moto) -> Profile {
    profile(
        dir,
        &format!(
            "version = 1\n[aws]\nendpoint = \"{}\"\nregion = \"us-east-1\"\n[secrets]\nAPI_KEY = \"aws-sm:agent/api#key\"\n",
            moto.endpoint
        ),
    )
}

#[test]
fn aws_identity_from_moto_sts_is_not_root() {
    let moto = Moto::start(&[]);
    // An IAM user named `root` and its keys: `arn:aws:iam::ACCOUNT:user/root`, not the
    // account root.
    let keys = moto.py(
        "sm = client('secretsmanager')\n\
         sm.create_secret(Name='agent/api', SecretString=json.dumps({'key': 'aws-value-0123456789'}))\n\
         iam = client('iam')\n\
         iam.create_user(UserName='root')\n\
         k = iam.create_access_key(UserName='root')['AccessKey']\n\
         print(k['AccessKeyId'], k['SecretAccessKey'])\n",
    );
    let (key_id, key_secret) = keys.lines().last().unwrap().split_once(' ').unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = aws_profile(dir.path(), &moto);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // moto's default identity (keys it does not know).
    let c = ctx(
        dir.path(),
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing-secret-0123"),
        ],
    );
    let arn = rt
        .block_on(agentrun::secrets::aws::caller_arn(p.aws.as_ref(), None, &c))
        .unwrap();
    assert!(arn.ends_with(":user/moto"), "{arn}");
    let got = fetch_and_verify(&p, &c, None).got;
    assert_eq!(got.len(), 1);
    let check = scoped(&p, &c, &got);
    assert_eq!(check.status, Status::Pass, "{check:?}");
    assert_hides(&check, &["testing-secret-0123", "aws-value-0123456789"]);

    // The IAM user called `root`.
    let c = ctx(
        dir.path(),
        &[
            ("AWS_ACCESS_KEY_ID", key_id),
            ("AWS_SECRET_ACCESS_KEY", key_secret),
        ],
    );
    let arn = rt
        .block_on(agentrun::secrets::aws::caller_arn(p.aws.as_ref(), None, &c))
        .unwrap();
    assert!(
        arn.starts_with("arn:aws:iam::") && arn.ends_with(":user/root"),
        "{arn}"
    );
    let check = scoped(&p, &c, &got);
    assert_eq!(check.status, Status::Pass, "{check:?}");
    assert_hides(&check, &[key_id, key_secret]);
}

#[test]
fn aws_lookup_that_cannot_be_made_warns() {
    let moto = Moto::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let p = aws_profile(dir.path(), &moto);
    let c = ctx(
        dir.path(),
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing-secret-0123"),
        ],
    );
    // The endpoint goes away: the lookup fails, WARN naming it.
    drop(moto);
    let check = scoped(&p, &c, &[]);
    assert_eq!(check.status, Status::Warn, "{check:?}");
    let (rules, _) = shown(&check);
    assert_eq!(rules[0].0, "aws.lookup-failed", "{rules:?}");
    assert!(
        rules[0].1.contains("API_KEY") && rules[0].1.contains("GetCallerIdentity"),
        "{}",
        rules[0].1
    );
    assert_hides(&check, &["testing-secret-0123"]);
}

// ---- GitHub (a hand-written https double) ------------------------------------------------

/// The https stand-in for the GitHub API; see the module's doc.
const GITHUB_DOUBLE: &str = r#"
import http.server, ssl, sys
cert, key = sys.argv[1], sys.argv[2]
SCOPES = {"/classic-admin": "repo, admin:org", "/classic": "repo"}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or len(auth) < 12:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        if self.path in SCOPES:
            self.send_header("X-OAuth-Scopes", SCOPES[self.path])
        body = b'{"login": "agent"}'
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

struct GithubDouble {
    child: std::process::Child,
    port: u16,
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl GithubDouble {
    fn start() -> GithubDouble {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = upstream_certs(dir.path());
        let mut child = Command::new(venv_bin("python"))
            .arg("-c")
            .arg(GITHUB_DOUBLE)
            .arg(&cert)
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the GitHub double did not start: {line:?}"));
        GithubDouble {
            child,
            port,
            ca,
            _dir: dir,
        }
    }
}

impl Drop for GithubDouble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const GH_VALUE: &str = "ghp_TestValueOfTheTokenTestValue0123456";

/// A profile whose `GH_TOKEN` has a github probe at `url`, and the accepted secret.
fn github(dir: &Path, url: &str) -> (Profile, Vec<Got>) {
    let p = profile(
        dir,
        &format!(
            "version = 1\n[secrets.GH_TOKEN]\nfrom = \"env:GH_TOKEN\"\nverify = {{ probe = \"github\", url = \"{url}\", timeout = \"5s\" }}\n"
        ),
    );
    let got = vec![Got {
        name: "GH_TOKEN".into(),
        inject: p.secrets[0].inject,
        value: SecretString::from(GH_VALUE),
    }];
    (p, got)
}

#[test]
fn github_classic_admin_fails_classic_warns_fine_grained_passes() {
    let gh = GithubDouble::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = gh.ca.display().to_string();
    let c = ctx(
        dir.path(),
        &[("GH_TOKEN", GH_VALUE), ("SSL_CERT_FILE", ca.as_str())],
    );
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", gh.port);

    let (p, got) = github(dir.path(), &url("/classic-admin"));
    let check = scoped(&p, &c, &got);
    assert_eq!(check.status, Status::Fail, "{check:?}");
    let (rules, _) = shown(&check);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].0, "github.classic-admin");
    assert!(
        rules[0].1.contains("GH_TOKEN") && rules[0].1.contains("admin:org"),
        "{}",
        rules[0].1
    );
    assert!(check.fix.contains("fine-grained"), "{}", check.fix);
    every_finding_at_the_profile(&check, &p);
    assert_hides(
        &check,
        &[GH_VALUE, &GH_VALUE[..12], &GH_VALUE[GH_VALUE.len() - 12..]],
    );

    let (p, got) = github(dir.path(), &url("/classic"));
    let check = scoped(&p, &c, &got);
    assert_eq!(check.status, Status::Warn, "{check:?}");
    let (rules, _) = shown(&check);
    assert_eq!(rules[0].0, "github.classic", "{rules:?}");
    assert!(rules[0].1.contains("fine-grained"), "{}", rules[0].1);
    assert_hides(&check, &[GH_VALUE]);

    let (p, got) = github(dir.path(), &url("/fine"));
    let check = scoped(&p, &c, &got);
    assert_eq!(check.status, Status::Pass, "{check:?}");
    assert!(check.findings.is_empty());

    // The same lookups, asked directly.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let roots = reqwest::Certificate::from_pem_bundle(&std::fs::read(&gh.ca).unwrap()).unwrap();
    let kind = |path: &str| {
        rt.block_on(agentrun::verify::github_token_kind_trusting(
            &url(path).parse().unwrap(),
            &SecretString::from(GH_VALUE),
            std::time::Duration::from_secs(5),
            roots.clone(),
        ))
    };
    use agentrun::verify::GithubToken;
    assert_eq!(
        kind("/classic-admin").unwrap(),
        GithubToken::Classic(vec!["repo".into(), "admin:org".into()])
    );
    assert_eq!(
        kind("/classic").unwrap(),
        GithubToken::Classic(vec!["repo".into()])
    );
    assert_eq!(kind("/fine").unwrap(), GithubToken::FineGrained);
}

#[test]
fn github_probe_that_cannot_be_made_warns() {
    let gh = GithubDouble::start();
    let dir = tempfile::tempdir().unwrap();
    let (p, got) = github(
        dir.path(),
        &format!("https://127.0.0.1:{}/classic-admin", gh.port),
    );

    // The double's CA is not trusted: TLS fails, WARN naming the secret and the lookup.
    let c = ctx(dir.path(), &[("GH_TOKEN", GH_VALUE)]);
    let check = scoped(&p, &c, &got);
    assert_eq!(check.status, Status::Warn, "{check:?}");
    let (rules, _) = shown(&check);
    assert_eq!(rules[0].0, "github.lookup-failed", "{rules:?}");
    assert!(
        rules[0].1.contains("GH_TOKEN") && rules[0].1.contains("127.0.0.1"),
        "{}",
        rules[0].1
    );
    assert_hides(&check, &[GH_VALUE]);

    // The secret was not accepted (no value): WARN, nothing sent.
    let ca = gh.ca.display().to_string();
    let c = ctx(dir.path(), &[("SSL_CERT_FILE", ca.as_str())]);
    let check = scoped(&p, &c, &[]);
    assert_eq!(check.status, Status::Warn, "{check:?}");
    assert_eq!(check.findings[0].rule, "github.lookup-failed");
}

#[test]
fn nothing_to_look_at_skips_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = profile(
        dir.path(),
        "version = 1\n[secrets.OPENAI_API_KEY]\nfrom = \"env:OPENAI_API_KEY\"\nverify = { probe = \"openai\" }\n",
    );
    let c = ctx(dir.path(), &[("OPENAI_API_KEY", "sk-whatever-0123456789")]);
    let check = scoped(&p, &c, &[]);
    assert_eq!(check.status, Status::Skip);
    assert!(
        check.summary.contains("nothing to look at"),
        "{}",
        check.summary
    );
    assert!(check.findings.is_empty());
}
