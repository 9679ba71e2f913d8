//! Remote secrets against real servers: OpenBao (`bao server -dev`) and moto (AWS Secrets
//! Manager), started by each test on a free loopback port and stopped when it ends.
//! Needs `.ci/install-test-servers` (fails, never skips, without it).

use crate::servers::{Bao, Moto, ProbeServer, Silent, ctx, profile};
use agentrun::secrets::{Fetched, Fetcher};
use agentrun::verify::{self, Outcome};
use secrecy::ExposeSecret;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn by_name(fetched: Vec<Fetched>) -> BTreeMap<String, Result<String, String>> {
    fetched
        .into_iter()
        .map(|f| {
            (
                f.name,
                f.value
                    .map(|v| v.expose_secret().to_string())
                    .map_err(|e| e.to_string()),
            )
        })
        .collect()
}

fn ok(m: &BTreeMap<String, Result<String, String>>, name: &str) -> String {
    match &m[name] {
        Ok(v) => v.clone(),
        Err(e) => panic!("{name} failed: {e}"),
    }
}

fn err(m: &BTreeMap<String, Result<String, String>>, name: &str) -> String {
    match &m[name] {
        Ok(_) => panic!("{name} was fetched but should have failed"),
        Err(e) => e.clone(),
    }
}

#[test]
fn vault_kv2_kv1_version_field_and_missing() {
    let bao = Bao::start();
    bao.cli(&[
        "kv",
        "put",
        "secret/app",
        "api_key=first-value",
        "user=agent",
    ]);
    bao.cli(&[
        "kv",
        "put",
        "secret/app",
        "api_key=second-value",
        "user=agent",
    ]);
    bao.cli(&["secrets", "enable", "-path=kv1", "-version=1", "kv"]);
    bao.cli(&["kv", "put", "kv1/app", "key=v1-value"]);
    let dir = tempfile::tempdir().unwrap();
    let p = profile(
        dir.path(),
        &format!(
            r#"version = 1
[vault]
address = "{addr}"
[secrets]
LATEST = "vault:secret/app#api_key"
PINNED = "vault:secret/app?version=1#api_key"
FIELD = "vault:secret/app#user"
V1 = "vault:kv1/app?kv=1#key"
NO_PATH = "vault:secret/nothing-here#api_key"
NO_FIELD = "vault:secret/app#password"
"#,
            addr = bao.addr
        ),
    );
    let c = ctx(dir.path(), &[("VAULT_TOKEN", &bao.token)]);
    let m = by_name(Fetcher::new(&p, &c).fetch_all(&p.secrets));
    assert_eq!(ok(&m, "LATEST"), "second-value");
    assert_eq!(ok(&m, "PINNED"), "first-value");
    assert_eq!(ok(&m, "FIELD"), "agent");
    assert_eq!(ok(&m, "V1"), "v1-value");

    let e = err(&m, "NO_PATH");
    assert!(
        e.contains("no secret at secret/data/nothing-here") && e.contains(&bao.addr),
        "{e}"
    );
    let e = err(&m, "NO_FIELD");
    assert!(
        e.contains("has no field `password`") && e.contains("api_key, user"),
        "{e}"
    );
    assert!(
        !e.contains("second-value"),
        "an error message shows a value: {e}"
    );

    // The token can also come from a source, or from ~/.vault-token.
    std::fs::write(dir.path().join("tok"), format!("{}\n", bao.token)).unwrap();
    let p = profile(
        dir.path(),
        &format!(
            "version = 1\n[vault]\naddress = \"{}\"\ntoken = \"file:tok\"\n[secrets]\nA = \"vault:secret/app#user\"\n",
            bao.addr
        ),
    );
    let m = by_name(Fetcher::new(&p, &ctx(dir.path(), &[])).fetch_all(&p.secrets));
    assert_eq!(ok(&m, "A"), "agent");
    std::fs::write(dir.path().join(".vault-token"), &bao.token).unwrap();
    let p = profile(
        dir.path(),
        "version = 1\n[secrets]\nA = \"vault:secret/app#user\"\n",
    );
    let c = ctx(dir.path(), &[("VAULT_ADDR", &bao.addr)]);
    let m = by_name(Fetcher::new(&p, &c).fetch_all(&p.secrets));
    assert_eq!(ok(&m, "A"), "agent");
}

#[test]
fn vault_403_and_wrong_token_are_told_apart() {
    let bao = Bao::start();
    bao.cli(&["kv", "put", "secret/allowed", "k=fine"]);
    bao.cli(&["kv", "put", "secret/private", "k=hidden"]);
    bao.policy(
        "limited",
        "path \"secret/data/allowed\" { capabilities = [\"read\"] }\n\
         path \"secret/data/private\" { capabilities = [\"deny\"] }\n",
    );
    let limited = bao.cli(&["token", "create", "-policy=limited", "-field=token"]);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "version = 1\n[vault]\naddress = \"{}\"\n[secrets]\nOK = \"vault:secret/allowed#k\"\nDENIED = \"vault:secret/private#k\"\n",
        bao.addr
    );
    let p = profile(dir.path(), &text);
    let m = by_name(
        Fetcher::new(&p, &ctx(dir.path(), &[("VAULT_TOKEN", &limited)])).fetch_all(&p.secrets),
    );
    assert_eq!(ok(&m, "OK"), "fine");
    let e = err(&m, "DENIED");
    assert!(
        e.contains("403")
            && e.contains("lacks read")
            && e.contains("secret/data/private")
            && e.contains(&bao.addr)
            && e.contains("$VAULT_TOKEN"),
        "{e}"
    );
    assert!(
        !e.contains(&limited),
        "the token leaked into a message: {e}"
    );

    let wrong = "s.this-token-does-not-exist";
    let m = by_name(
        Fetcher::new(&p, &ctx(dir.path(), &[("VAULT_TOKEN", wrong)])).fetch_all(&p.secrets),
    );
    for name in ["OK", "DENIED"] {
        let e = err(&m, name);
        assert!(
            e.contains("rejected the token") && e.contains("invalid, expired or revoked"),
            "{e}"
        );
        assert!(!e.contains(wrong), "the token leaked into a message: {e}");
    }

    // No token anywhere.
    let m = by_name(Fetcher::new(&p, &ctx(dir.path(), &[])).fetch_all(&p.secrets));
    assert!(
        err(&m, "OK").contains("no Vault token"),
        "{}",
        err(&m, "OK")
    );
}

#[test]
fn vault_approle_login() {
    let bao = Bao::start();
    bao.cli(&["kv", "put", "secret/agent", "api_key=from-approle"]);
    bao.policy(
        "agent",
        "path \"secret/data/agent\" { capabilities = [\"read\"] }\n",
    );
    bao.cli(&["auth", "enable", "approle"]);
    bao.cli(&[
        "write",
        "auth/approle/role/agent",
        "token_policies=agent",
        "token_ttl=5m",
    ]);
    let role_id = bao.cli(&["read", "-field=role_id", "auth/approle/role/agent/role-id"]);
    let secret_id = bao.cli(&[
        "write",
        "-f",
        "-field=secret_id",
        "auth/approle/role/agent/secret-id",
    ]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("role-id"), format!("{role_id}\n")).unwrap();
    let p = profile(
        dir.path(),
        &format!(
            r#"version = 1
[vault]
address = "{}"
auth = "approle"
role_id = "file:role-id"
secret_id = "env:APPROLE_SECRET_ID"
[secrets]
KEY = "vault:secret/agent#api_key"
"#,
            bao.addr
        ),
    );
    // $VAULT_TOKEN is ignored with AppRole: the login's token is used.
    let c = ctx(
        dir.path(),
        &[
            ("APPROLE_SECRET_ID", &secret_id),
            ("VAULT_TOKEN", "s.ignored"),
        ],
    );
    let m = by_name(Fetcher::new(&p, &c).fetch_all(&p.secrets));
    assert_eq!(ok(&m, "KEY"), "from-approle");

    let c = ctx(dir.path(), &[("APPROLE_SECRET_ID", "not-the-secret-id")]);
    let m = by_name(Fetcher::new(&p, &c).fetch_all(&p.secrets));
    let e = err(&m, "KEY");
    assert!(
        e.contains("AppRole login") && e.contains("auth/approle/login") && e.contains(&bao.addr),
        "{e}"
    );
    assert!(!e.contains("not-the-secret-id"), "{e}");
}

#[test]
fn vault_stopped_sealed_and_hung_servers() {
    let dir = tempfile::tempdir().unwrap();
    let text = |addr: &str, n: usize| {
        let mut t =
            format!("version = 1\n[vault]\naddress = \"{addr}\"\ntimeout = \"1s\"\n[secrets]\n");
        for i in 0..n {
            t.push_str(&format!("S{i} = \"vault:secret/app{i}#k\"\n"));
        }
        t
    };
    let c = ctx(dir.path(), &[("VAULT_TOKEN", "s.whatever")]);

    // A stopped server: connection refused, retried, then a clear message.
    let mut bao = Bao::start();
    let addr = bao.addr.clone();
    bao.proc.stop();
    let p = profile(dir.path(), &text(&addr, 1));
    let start = Instant::now();
    let m = by_name(Fetcher::new(&p, &c).fetch_all(&p.secrets));
    let e = err(&m, "S0");
    assert!(
        e.contains("cannot connect to vault at") && e.contains(&addr),
        "{e}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

    // A server that accepts connections and never answers (a listener inside this test):
    // the per-request timeout ends every fetch, and all of them at once, not one after another.
    let silent = Silent::start();
    let p = profile(dir.path(), &text(&silent.addr, 4));
    let start = Instant::now();
    let m = by_name(Fetcher::new(&p, &c).fetch_all(&p.secrets));
    let took = start.elapsed();
    for i in 0..4 {
        let e = err(&m, &format!("S{i}"));
        assert!(e.contains("did not answer within 1s"), "{e}");
    }
    assert!(
        took < Duration::from_millis(3000),
        "4 hung fetches took {took:?}: not concurrent"
    );

    // A sealed server.
    let bao = Bao::start();
    bao.cli(&["operator", "seal"]);
    let p = profile(dir.path(), &text(&bao.addr, 1));
    let m = by_name(Fetcher::new(&p, &c).fetch_all(&p.secrets));
    let e = err(&m, "S0");
    assert!(e.contains("is sealed") && e.contains(&bao.addr), "{e}");
}

#[test]
fn vault_fetches_run_concurrently() {
    let bao = Bao::start();
    let mut text = format!(
        "version = 1\n[vault]\naddress = \"{}\"\n[secrets]\n",
        bao.addr
    );
    for i in 0..10 {
        bao.cli(&[
            "kv",
            "put",
            &format!("secret/s{i}"),
            &format!("k=value-{i}"),
        ]);
        text.push_str(&format!("S{i} = \"vault:secret/s{i}#k\"\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let p = profile(dir.path(), &text);
    let c = ctx(dir.path(), &[("VAULT_TOKEN", &bao.token)]);
    let fetcher = Fetcher::new(&p, &c);
    let m = by_name(fetcher.fetch_all(&p.secrets));
    for i in 0..10 {
        assert_eq!(ok(&m, &format!("S{i}")), format!("value-{i}"));
    }
    // A refetch reads the source again (no value cache).
    bao.cli(&["kv", "put", "secret/s3", "k=changed"]);
    let again = fetcher.refetch(&p.secrets[3]);
    assert_eq!(again.value.unwrap().expose_secret(), "changed");
}

#[test]
fn aws_json_key_stage_version_binary_and_not_found() {
    let moto = Moto::start(&[]);
    let out = moto.py(
        "sm = client('secretsmanager')\n\
         sm.create_secret(Name='prod/app', SecretString=json.dumps({'api_key': 'current-key', 'user': 'u1'}))\n\
         v = sm.put_secret_value(SecretId='prod/app', SecretString=json.dumps({'api_key': 'pending-key'}), VersionStages=['AWSPENDING'])\n\
         sm.create_secret(Name='plain', SecretString='plain-value')\n\
         sm.create_secret(Name='bin', SecretBinary=b'binary-value')\n\
         sm.create_secret(Name='badbin', SecretBinary=b'\\xff\\xfe')\n\
         print(v['VersionId'])\n",
    );
    let pending_version = out.lines().last().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let p = profile(
        dir.path(),
        &format!(
            r#"version = 1
[aws]
endpoint = "{ep}"
region = "us-east-1"
[secrets]
KEY = "aws-sm:prod/app#api_key"
PENDING = "aws-sm:prod/app?stage=AWSPENDING#api_key"
BY_VERSION = "aws-sm:prod/app?version_id={pending_version}#api_key"
WHOLE = "aws-sm:plain"
BINARY = "aws-sm:bin"
BAD_BINARY = "aws-sm:badbin"
MISSING = "aws-sm:no/such/secret"
NO_KEY = "aws-sm:prod/app#password"
NOT_JSON = "aws-sm:plain#key"
"#,
            ep = moto.endpoint
        ),
    );
    let c = ctx(
        dir.path(),
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );
    let m = by_name(Fetcher::new(&p, &c).fetch_all(&p.secrets));
    assert_eq!(ok(&m, "KEY"), "current-key");
    assert_eq!(ok(&m, "PENDING"), "pending-key");
    assert_eq!(ok(&m, "BY_VERSION"), "pending-key");
    assert_eq!(ok(&m, "WHOLE"), "plain-value");
    assert_eq!(ok(&m, "BINARY"), "binary-value");
    let e = err(&m, "BAD_BINARY");
    assert!(e.contains("not UTF-8"), "{e}");
    let e = err(&m, "MISSING");
    assert!(
        e.contains("aws-sm no/such/secret") && e.contains("not found") && e.contains("AWSCURRENT"),
        "{e}"
    );
    let e = err(&m, "NO_KEY");
    assert!(
        e.contains("no key `password`") && e.contains("api_key, user"),
        "{e}"
    );
    assert!(!e.contains("current-key"), "{e}");
    let e = err(&m, "NOT_JSON");
    assert!(e.contains("not JSON") && !e.contains("plain-value"), "{e}");
}

/// moto enforces IAM only when told to (`INITIAL_NO_AUTH_ACTION_COUNT`): the first three
/// calls create an admin user; after that every call is authorised against IAM policies.
/// moto does not match Secrets Manager resource ARNs in policies, so "denied" here is a user
/// whose policy lacks `secretsmanager:GetSecretValue` altogether.
#[test]
fn aws_access_denied_and_bad_credentials() {
    let moto = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    let out = moto.py(
        "iam = client('iam')\n\
         iam.create_user(UserName='admin')\n\
         iam.put_user_policy(UserName='admin', PolicyName='all', PolicyDocument=json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}]}))\n\
         a = iam.create_access_key(UserName='admin')['AccessKey']\n\
         sm = client('secretsmanager', a['AccessKeyId'], a['SecretAccessKey'])\n\
         sm.create_secret(Name='guarded', SecretString='guarded-value')\n\
         iam = client('iam', a['AccessKeyId'], a['SecretAccessKey'])\n\
         iam.create_user(UserName='lister')\n\
         iam.put_user_policy(UserName='lister', PolicyName='l', PolicyDocument=json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': 'secretsmanager:ListSecrets', 'Resource': '*'}]}))\n\
         k = iam.create_access_key(UserName='lister')['AccessKey']\n\
         print(a['AccessKeyId'], a['SecretAccessKey'])\n\
         print(k['AccessKeyId'], k['SecretAccessKey'])\n",
    );
    let keys: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (admin, lister) = (&keys[0], &keys[1]);
    let dir = tempfile::tempdir().unwrap();
    let p = profile(
        dir.path(),
        &format!(
            "version = 1\n[aws]\nendpoint = \"{}\"\nregion = \"us-east-1\"\n[secrets]\nG = \"aws-sm:guarded\"\n",
            moto.endpoint
        ),
    );
    let fetch = |id: &str, key: &str| {
        let c = ctx(
            dir.path(),
            &[("AWS_ACCESS_KEY_ID", id), ("AWS_SECRET_ACCESS_KEY", key)],
        );
        by_name(Fetcher::new(&p, &c).fetch_all(&p.secrets))
    };
    assert_eq!(ok(&fetch(admin[0], admin[1]), "G"), "guarded-value");
    let e = err(&fetch(lister[0], lister[1]), "G");
    assert!(
        e.contains("aws-sm guarded") && e.contains("access denied"),
        "{e}"
    );
    let e = err(&fetch("AKIANOSUCHKEY000000", "wrong"), "G");
    assert!(e.contains("credentials were rejected"), "{e}");
    assert!(!e.contains("wrong"), "{e}");
}

/// The probe (a local HTTP server in this test) rejects the first value; the backend has
/// meanwhile been rotated; verification passes on the refetch, and both attempts are reported.
#[test]
fn rotation_vault_and_aws_pass_on_refetch() {
    let bao = Bao::start();
    bao.cli(&["kv", "put", "secret/rot", "key=stale-vault-key"]);
    let moto = Moto::start(&[]);
    let old_version = moto.py("sm = client('secretsmanager')\n\
         print(sm.create_secret(Name='rot', SecretString='stale-aws-key')['VersionId'])\n");
    let vault_probe = ProbeServer::start("fresh-vault-key");
    let aws_probe = ProbeServer::start("fresh-aws-key");
    let dir = tempfile::tempdir().unwrap();
    let p = profile(
        dir.path(),
        &format!(
            r#"version = 1
[vault]
address = "{addr}"
[aws]
endpoint = "{ep}"
region = "us-east-1"
[secrets.FROM_VAULT]
from = "vault:secret/rot#key"
verify = {{ probe = "http", url = "{vurl}", min_length = 8 }}
[secrets.FROM_AWS]
from = "aws-sm:rot"
verify = {{ probe = "http", url = "{aurl}", timeout = "5s" }}
"#,
            addr = bao.addr,
            ep = moto.endpoint,
            vurl = vault_probe.url,
            aurl = aws_probe.url
        ),
    );
    let c = ctx(
        dir.path(),
        &[
            ("VAULT_TOKEN", &bao.token),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );
    let fetcher = Fetcher::new(&p, &c);
    let mut fetched = fetcher.fetch_all(&p.secrets);
    let value = |fetched: &[Fetched], name: &str| {
        let f = fetched.iter().find(|f| f.name == name).unwrap();
        f.value.as_ref().unwrap().expose_secret().to_string()
    };
    assert_eq!(value(&fetched, "FROM_VAULT"), "stale-vault-key");
    assert_eq!(value(&fetched, "FROM_AWS"), "stale-aws-key");

    // Rotate both backends after the first fetch.
    bao.cli(&["kv", "put", "secret/rot", "key=fresh-vault-key"]);
    moto.py(&format!(
        "sm = client('secretsmanager')\n\
         v = sm.put_secret_value(SecretId='rot', SecretString='fresh-aws-key', VersionStages=['AWSPENDING'])['VersionId']\n\
         sm.update_secret_version_stage(SecretId='rot', VersionStage='AWSCURRENT', MoveToVersionId=v, RemoveFromVersionId='{old_version}')\n"
    ));

    let verifications = agentrun::commands::fetch::verify_all(&fetcher, &p.secrets, &mut fetched);
    assert!(
        verify::refusal(&verifications).is_none(),
        "{:?}",
        verify::refusal(&verifications)
    );
    for v in &verifications {
        assert!(v.passed(), "{v:?}");
        assert_eq!(v.attempts.len(), 2, "{v:?}");
        assert!(
            matches!(&v.attempts[0].outcome, Outcome::Failed(r) if r.contains("HTTP 401") && r.contains("rejected")),
            "{v:?}"
        );
        let refetch = v.attempts[1].refetch.as_ref().unwrap();
        assert!(refetch.outcome.is_ok() && !refetch.same_value, "{v:?}");
    }
    // The child gets the rotated values.
    assert_eq!(value(&fetched, "FROM_VAULT"), "fresh-vault-key");
    assert_eq!(value(&fetched, "FROM_AWS"), "fresh-aws-key");
    assert_eq!(vault_probe.hits.load(Ordering::SeqCst), 2);
    assert_eq!(aws_probe.hits.load(Ordering::SeqCst), 2);
    // What the audit log and `check --json` get: names and outcomes, never a value.
    let json = serde_json::to_string(&verifications).unwrap();
    assert!(
        json.contains("\"attempt\":2") && json.contains("FROM_VAULT"),
        "{json}"
    );
    assert!(
        !json.contains("fresh-") && !json.contains("stale-"),
        "{json}"
    );
}

#[test]
fn verification_failing_twice_refuses_to_start() {
    let bao = Bao::start();
    bao.cli(&["kv", "put", "secret/bad", "key=never-accepted"]);
    let probe = ProbeServer::start("something-else");
    let dir = tempfile::tempdir().unwrap();
    let p = profile(
        dir.path(),
        &format!(
            r#"version = 1
[vault]
address = "{}"
[secrets.API_KEY]
from = "vault:secret/bad#key"
verify = {{ probe = "http", url = "{}" }}
[secrets.OPTIONAL]
from = "env:OPT"
required = false
verify = {{ pattern = "^ok-.*" }}
"#,
            bao.addr, probe.url
        ),
    );
    let c = ctx(
        dir.path(),
        &[("VAULT_TOKEN", &bao.token), ("OPT", "not-matching")],
    );
    let fetcher = Fetcher::new(&p, &c);
    let mut fetched = fetcher.fetch_all(&p.secrets);
    let verifications = agentrun::commands::fetch::verify_all(&fetcher, &p.secrets, &mut fetched);
    let refusal = verify::refusal(&verifications).expect("a refusal");
    let msg = refusal.to_string();
    assert!(
        msg.starts_with("all credentials invalid, refusing to start: secret API_KEY:"),
        "{msg}"
    );
    assert!(
        msg.contains("HTTP 401") && msg.contains("the source returned the same value"),
        "{msg}"
    );
    assert!(!msg.contains("never-accepted"), "{msg}");
    assert_eq!(probe.hits.load(Ordering::SeqCst), 2);
    // The optional secret failed too, but does not stop the run.
    let opt = verifications.iter().find(|v| v.name == "OPTIONAL").unwrap();
    assert!(!opt.passed() && !opt.required);

    // `check` reports the same per secret, as data.
    let report = agentrun::commands::fetch::check(&fetcher, &p.secrets);
    assert!(!report.ok);
    let api = &report.secrets[0];
    assert_eq!((api.name.as_str(), api.kind), ("API_KEY", "vault"));
    assert!(api.fetch.is_ok() && !api.ok);
    assert!(report.secrets[1].ok, "an optional secret never blocks");
    let json = serde_json::to_string(&report).unwrap();
    assert!(
        !json.contains("never-accepted") && !json.contains("not-matching"),
        "{json}"
    );
}

/// AWS against a server that accepts connections and never answers (a listener inside this
/// test): the `[aws].timeout` ends the call, retries included.
#[test]
fn aws_hung_endpoint_times_out() {
    let silent = Silent::start();
    let dir = tempfile::tempdir().unwrap();
    let p = profile(
        dir.path(),
        &format!(
            "version = 1\n[aws]\nendpoint = \"{}\"\nregion = \"us-east-1\"\ntimeout = \"1s\"\n[secrets]\nA = \"aws-sm:a\"\nB = \"aws-sm:b\"\n",
            silent.addr
        ),
    );
    let c = ctx(
        dir.path(),
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );
    let start = Instant::now();
    let m = by_name(Fetcher::new(&p, &c).fetch_all(&p.secrets));
    let took = start.elapsed();
    for name in ["A", "B"] {
        let e = err(&m, name);
        assert!(e.contains("no answer within 1s"), "{e}");
    }
    assert!(took < Duration::from_millis(3500), "took {took:?}");
}

/// HTTPS with a private CA: trusted through `[vault].ca_cert`, refused without it.
#[test]
fn vault_tls_with_custom_ca() {
    let bao = Bao::start_tls();
    bao.cli(&["kv", "put", "secret/tls", "k=over-tls"]);
    let ca = bao.ca.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = ctx(dir.path(), &[("VAULT_TOKEN", &bao.token)]);
    let p = profile(
        dir.path(),
        &format!(
            "version = 1\n[vault]\naddress = \"{}\"\nca_cert = \"{}\"\n[secrets]\nK = \"vault:secret/tls#k\"\n",
            bao.addr,
            ca.display()
        ),
    );
    let m = by_name(Fetcher::new(&p, &c).fetch_all(&p.secrets));
    assert_eq!(ok(&m, "K"), "over-tls");

    let p = profile(
        dir.path(),
        &format!(
            "version = 1\n[vault]\naddress = \"{}\"\n[secrets]\nK = \"vault:secret/tls#k\"\n",
            bao.addr
        ),
    );
    let m = by_name(Fetcher::new(&p, &c).fetch_all(&p.secrets));
    let e = err(&m, "K");
    assert!(
        e.contains("TLS with vault at") && e.contains(&bao.addr) && e.contains("ca_cert"),
        "{e}"
    );
}

/// OpenBao namespaces: `[vault].namespace` (or `$VAULT_NAMESPACE`) selects the namespace.
#[test]
fn vault_namespace() {
    let bao = Bao::start();
    bao.cli(&["namespace", "create", "team"]);
    bao.cli(&[
        "secrets",
        "enable",
        "-namespace=team",
        "-path=kv",
        "-version=2",
        "kv",
    ]);
    bao.cli(&["kv", "put", "-namespace=team", "kv/app", "k=in-namespace"]);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "version = 1\n[vault]\naddress = \"{}\"\n[secrets]\nK = \"vault:kv/app#k\"\n",
        bao.addr
    );
    let p = profile(dir.path(), &text);
    let c = ctx(
        dir.path(),
        &[("VAULT_TOKEN", &bao.token), ("VAULT_NAMESPACE", "team")],
    );
    let m = by_name(Fetcher::new(&p, &c).fetch_all(&p.secrets));
    assert_eq!(ok(&m, "K"), "in-namespace");
    // Without the namespace, the path is not there.
    let c = ctx(dir.path(), &[("VAULT_TOKEN", &bao.token)]);
    let m = by_name(Fetcher::new(&p, &c).fetch_all(&p.secrets));
    let e = err(&m, "K");
    assert!(e.contains("kv/data/app"), "{e}");
}
