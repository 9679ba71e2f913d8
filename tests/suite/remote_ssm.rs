//! `aws-ssm:` (AWS Systems Manager Parameter Store) against moto, started per test on a free
//! loopback port. moto models `GetParameter` with `WithDecryption` (a `SecureString` is
//! stored encrypted under the account's default `alias/aws/ssm` key and decrypted on read),
//! numbered versions, labels, `ParameterNotFound`/`ParameterVersionNotFound`, and IAM
//! enforcement when asked (`INITIAL_NO_AUTH_ACTION_COUNT`). It does not model KMS key
//! policies (a `SecureString` whose key the caller may not use), so the decryption failure
//! message is not tested against it.
#![allow(clippy::unwrap_used)]

use crate::harness::*;
use crate::servers::{Moto, ProbeServer, ctx, profile};
use agentrun::secrets::{Fetched, Fetcher};
use agentrun::verify::{self, Outcome};
use secrecy::ExposeSecret;
use std::collections::BTreeMap;

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

const TEST_KEYS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
];

#[test]
fn ssm_string_securestring_versions_labels_json_and_not_found() {
    let moto = Moto::start(&[]);
    moto.py(
        "ssm = client('ssm')\n\
         ssm.put_parameter(Name='/agents/plain', Value='plain-param-value', Type='String')\n\
         ssm.put_parameter(Name='/agents/secure', Value='secure-param-v1', Type='SecureString')\n\
         ssm.put_parameter(Name='/agents/secure', Value='secure-param-v2', Type='SecureString', Overwrite=True)\n\
         ssm.label_parameter_version(Name='/agents/secure', ParameterVersion=1, Labels=['prod'])\n\
         ssm.put_parameter(Name='/agents/json', Value=json.dumps({'api_key': 'json-param-key', 'user': 'u'}), Type='SecureString')\n\
         ssm.put_parameter(Name='/agents/empty-json', Value=json.dumps({'api_key': ''}), Type='String')\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let p = profile(
        dir.path(),
        &format!(
            r#"version = 1
[aws]
endpoint = "{ep}"
region = "us-east-1"
[secrets]
PLAIN = "aws-ssm:/agents/plain"
SECURE = "aws-ssm:/agents/secure"
V1 = "aws-ssm:/agents/secure?version=1"
LABELLED = "aws-ssm:/agents/secure?label=prod"
JSON_KEY = "aws-ssm:/agents/json#api_key"
NO_KEY = "aws-ssm:/agents/json#password"
EMPTY = "aws-ssm:/agents/empty-json#api_key"
MISSING = "aws-ssm:/agents/none"
NO_VERSION = "aws-ssm:/agents/secure?version=9"
NO_LABEL = "aws-ssm:/agents/secure?label=staging"
"#,
            ep = moto.endpoint
        ),
    );
    let c = ctx(dir.path(), &TEST_KEYS);
    let m = by_name(Fetcher::new(&p, &c).fetch_all(&p.secrets));
    assert_eq!(ok(&m, "PLAIN"), "plain-param-value");
    // WithDecryption: the SecureString's text, not its ciphertext.
    assert_eq!(ok(&m, "SECURE"), "secure-param-v2");
    assert_eq!(ok(&m, "V1"), "secure-param-v1");
    assert_eq!(ok(&m, "LABELLED"), "secure-param-v1");
    assert_eq!(ok(&m, "JSON_KEY"), "json-param-key");
    let e = err(&m, "NO_KEY");
    assert!(
        e.contains("aws-ssm /agents/json")
            && e.contains("no key `password`")
            && e.contains("api_key, user"),
        "{e}"
    );
    assert!(!e.contains("json-param-key"), "{e}");
    let e = err(&m, "EMPTY");
    assert!(e.contains("empty"), "{e}");
    let e = err(&m, "MISSING");
    assert!(
        e.contains("aws-ssm /agents/none")
            && e.contains("not found")
            && e.contains("us-east-1")
            && e.contains("parameter name"),
        "{e}"
    );
    let e = err(&m, "NO_VERSION");
    assert!(e.contains("not found (version 9)"), "{e}");
    let e = err(&m, "NO_LABEL");
    assert!(e.contains("not found (label staging)"), "{e}");
    for (_, v) in m
        .iter()
        .filter_map(|(k, v)| v.as_ref().err().map(|e| (k, e)))
    {
        for value in ["secure-param-v1", "secure-param-v2", "plain-param-value"] {
            assert!(!v.contains(value), "{v}");
        }
    }
}

/// moto enforces IAM only when told to (`INITIAL_NO_AUTH_ACTION_COUNT`): the first three
/// calls create an admin user; after that every call is authorised against IAM policies. The
/// denied user's policy lacks `ssm:GetParameter` altogether (moto does not match parameter
/// ARNs in policies).
#[test]
fn ssm_access_denied_and_bad_credentials() {
    let moto = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    let out = moto.py(
        "iam = client('iam')\n\
         iam.create_user(UserName='admin')\n\
         iam.put_user_policy(UserName='admin', PolicyName='all', PolicyDocument=json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}]}))\n\
         a = iam.create_access_key(UserName='admin')['AccessKey']\n\
         ssm = client('ssm', a['AccessKeyId'], a['SecretAccessKey'])\n\
         ssm.put_parameter(Name='/guarded', Value='guarded-param', Type='SecureString')\n\
         iam = client('iam', a['AccessKeyId'], a['SecretAccessKey'])\n\
         iam.create_user(UserName='lister')\n\
         iam.put_user_policy(UserName='lister', PolicyName='l', PolicyDocument=json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': 'ssm:DescribeParameters', 'Resource': '*'}]}))\n\
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
            "version = 1\n[aws]\nendpoint = \"{}\"\nregion = \"us-east-1\"\n[secrets]\nG = \"aws-ssm:/guarded\"\n",
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
    assert_eq!(ok(&fetch(admin[0], admin[1]), "G"), "guarded-param");
    let e = err(&fetch(lister[0], lister[1]), "G");
    assert!(
        e.contains("aws-ssm /guarded")
            && e.contains("access denied")
            && e.contains("ssm:GetParameter"),
        "{e}"
    );
    assert!(!e.contains(lister[1]), "{e}");
    let e = err(&fetch("AKIANOSUCHKEY000000", "wrong-secret-key"), "G");
    assert!(e.contains("credentials were rejected"), "{e}");
    assert!(!e.contains("wrong-secret-key"), "{e}");
}

/// The probe (a local HTTP server) rejects the first value; a new version of the parameter
/// appears meanwhile; the refetch gets it and verification passes.
#[test]
fn ssm_rotation_passes_on_refetch() {
    let moto = Moto::start(&[]);
    moto.py(
        "client('ssm').put_parameter(Name='/rot', Value='stale-ssm-key', Type='SecureString')\n",
    );
    let probe = ProbeServer::start("fresh-ssm-key");
    let dir = tempfile::tempdir().unwrap();
    let p = profile(
        dir.path(),
        &format!(
            r#"version = 1
[aws]
endpoint = "{ep}"
region = "us-east-1"
[secrets.ROT]
from = "aws-ssm:/rot"
verify = {{ probe = "http", url = "{url}", timeout = "5s" }}
"#,
            ep = moto.endpoint,
            url = probe.url
        ),
    );
    let c = ctx(dir.path(), &TEST_KEYS);
    let fetcher = Fetcher::new(&p, &c);
    let mut fetched = fetcher.fetch_all(&p.secrets);
    assert_eq!(
        fetched[0].value.as_ref().unwrap().expose_secret(),
        "stale-ssm-key"
    );
    moto.py("client('ssm').put_parameter(Name='/rot', Value='fresh-ssm-key', Type='SecureString', Overwrite=True)\n");
    let verifications = agentrun::commands::fetch::verify_all(&fetcher, &p.secrets, &mut fetched);
    assert!(verify::refusal(&verifications).is_none());
    let v = &verifications[0];
    assert_eq!(v.attempts.len(), 2, "{v:?}");
    assert!(
        matches!(&v.attempts[0].outcome, Outcome::Failed(_)),
        "{v:?}"
    );
    assert!(!v.attempts[1].refetch.as_ref().unwrap().same_value, "{v:?}");
    assert_eq!(
        fetched[0].value.as_ref().unwrap().expose_secret(),
        "fresh-ssm-key"
    );
}

/// Through the real binary: the child gets the decrypted parameter; a missing one stops the
/// run before the child starts (125), naming the parameter and the region; `check --json`
/// reports each secret's outcome.
#[test]
fn ssm_through_the_binary() {
    let moto = Moto::start(&[]);
    moto.py("client('ssm').put_parameter(Name='/agents/key', Value='ssm-child-value', Type='SecureString')\n");
    let mut s = Scratch::new();
    for (k, v) in TEST_KEYS {
        s.env.insert(k.into(), v.into());
    }
    s.profile(
        "ok",
        &format!(
            "version = 1\n[env]\npass = [\"PATH\"]\n[aws]\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
             [secrets]\nKEY = \"aws-ssm:/agents/key\"\n",
            moto.endpoint
        ),
    );
    let o = s.run(&[
        "-p",
        "ok",
        "--",
        "sh",
        "-c",
        "printf '%s' \"$KEY\" | sha256sum",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout
            .starts_with(&hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                b"ssm-child-value"
            ))),
        "{o:?}"
    );
    s.profile(
        "missing",
        &format!(
            "version = 1\n[env]\npass = [\"PATH\"]\n[aws]\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
             [secrets]\nKEY = \"aws-ssm:/agents/key\"\nGONE = \"aws-ssm:/agents/gone\"\n",
            moto.endpoint
        ),
    );
    let marker = s.path().join("started");
    let o = s.run(&["-p", "missing", "--", "touch", marker.to_str().unwrap()]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(!marker.exists(), "the child started");
    assert!(
        o.stderr.contains("aws-ssm /agents/gone") && o.stderr.contains("not found"),
        "{o:?}"
    );
    assert!(!o.stderr.contains("ssm-child-value"), "{o:?}");
    let o = s.run(&["check", "-p", "missing", "--json"]);
    assert_eq!(o.code, 1, "{o:?}");
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let outcome: BTreeMap<&str, bool> = doc["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["ok"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(outcome.get("KEY"), Some(&true), "{}", o.stdout);
    assert_eq!(outcome.get("GONE"), Some(&false), "{}", o.stdout);
    assert!(!o.stdout.contains("ssm-child-value"));
}

/// Review 15, F3: a hostile endpoint that quotes the credentials it was sent in its error
/// text (a fixed-answer server standing in for Parameter Store; no real service does this)
/// gets the values agentrun holds (here its AWS session token) scrubbed from every message:
/// stderr, `check --json`, the audit log.
#[test]
fn a_server_echoing_a_held_credential_gets_it_scrubbed() {
    let session = "IQoJb3JpZ2luX2VjEHeldSessionToken0123456789abcdef";
    let echo = crate::servers::FixedAnswer::start(
        "400 Bad Request",
        &format!(
            r#"{{"__type":"AccessDeniedException","message":"denied for session {session}"}}"#
        ),
    );
    let mut s = Scratch::new();
    s.env
        .insert("AWS_ACCESS_KEY_ID".into(), "AKIAIOSFODNN7EXAMPLE".into());
    s.env
        .insert("AWS_SECRET_ACCESS_KEY".into(), "testing-secret-key".into());
    s.env.insert("AWS_SESSION_TOKEN".into(), session.into());
    s.profile(
        "echo",
        &format!(
            "version = 1\n[aws]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nretries = 0\n\
             [secrets]\nA = \"aws-ssm:/x\"\n",
            echo.endpoint
        ),
    );
    let o = s.run(&["-p", "echo", "--", "true"]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("aws-ssm /x"), "{}", o.stderr);
    assert!(!o.stderr.contains(session), "{}", o.stderr);
    let audit = std::fs::read_to_string(s.path().join("audit.jsonl")).unwrap_or_default();
    assert!(!audit.contains(session), "{audit}");
    let o = s.run(&["check", "-p", "echo", "--json"]);
    assert!(
        !o.stdout.contains(session) && !o.stderr.contains(session),
        "{o:?}"
    );
    assert!(
        o.stdout.contains("a credential agentrun holds"),
        "the echo was not recognised: {}",
        o.stdout
    );
}
