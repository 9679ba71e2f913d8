//! `azure-kv:` through the real binary, against a fake Key Vault
//! (`tests/fixtures/azure/fake_keyvault.py`, see [`AzureKv`]): HTTPS with a CA made for the
//! run, Entra ID's client-credentials token endpoint, Key Vault's 401 challenge, `GetSecret`
//! with and without a version, and Key Vault's error bodies. No Key Vault emulator installs
//! here; what the fake does not model is listed in its header (and per test below).
//! Needs `.ci/install-test-servers` (the venv's python with `cryptography`).
#![allow(clippy::unwrap_used)]

use crate::harness::*;
use crate::servers::{
    AZURE_CLIENT, AZURE_SECRET, AZURE_TENANT, AzureKv, ProbeServer, Silent, free_port,
};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A scratch directory whose environment holds the fake's tenant, client id and secret.
fn scratch() -> Scratch {
    let mut s = Scratch::new();
    s.env.insert("AZURE_TENANT_ID".into(), AZURE_TENANT.into());
    s.env.insert("AZURE_CLIENT_ID".into(), AZURE_CLIENT.into());
    s.env
        .insert("AZURE_CLIENT_SECRET".into(), AZURE_SECRET.into());
    s
}

fn version(id: &str, value: &str) -> serde_json::Value {
    json!({"id": id, "value": value, "enabled": true})
}

/// The contents most tests use: `api` with two versions, `conf` a JSON value, `empty`.
fn vault() -> AzureKv {
    AzureKv::start(json!({
        "api": {"versions": [version("v1old", "first-api-value"), version("v2cur", "second-api-value")]},
        "conf": {"versions": [version("c1", r#"{"user":"agent","token":"json-field-value"}"#)]},
        "empty": {"versions": [version("e1", "")]},
    }))
}

/// Stdout and stderr and the audit log hold none of `values`, nor the client secret.
fn assert_no_leak(s: &Scratch, o: &Out, values: &[&str]) {
    let audit = std::fs::read_to_string(s.path().join("audit.jsonl")).unwrap_or_default();
    for v in values.iter().chain([&AZURE_SECRET]) {
        assert!(!o.stderr.contains(v), "stderr holds {v}: {o:?}");
        assert!(!audit.contains(v), "the audit log holds {v}: {audit}");
    }
    assert!(
        !o.stderr.contains("fake-kv-token-") && !audit.contains("fake-kv-token-"),
        "a bearer token leaked: {o:?}"
    );
}

/// Models: the challenge (resource `https://vault.azure.net` while the vault is at
/// 127.0.0.1, accepted because `vault_url` is set), the client-credentials token, the
/// current version, a pinned version, a JSON value. Not modelled: token expiry, tags.
#[test]
fn current_pinned_and_json_field_reach_the_child() {
    let kv = vault();
    let s = scratch();
    s.profile(
        "az",
        &format!(
            "version = 1\n[env]\npass = [\"PATH\"]\n{}\n[secrets]\nCUR = \"azure-kv:kv1/api\"\n\
             PINNED = \"azure-kv:kv1/api/v1old\"\nFIELD = \"azure-kv:kv1/conf#token\"\n",
            kv.table("")
        ),
    );
    let start = Instant::now();
    let o = s.run(&[
        "-p",
        "az",
        "--no-redact",
        "--",
        "sh",
        "-c",
        "printf '%s|%s|%s|%s' \"$CUR\" \"$PINNED\" \"$FIELD\" \"${AZURE_CLIENT_SECRET-none}\"",
    ]);
    let took = start.elapsed();
    assert_eq!(o.code, 0, "{o:?}\n{}", kv.log());
    assert_eq!(
        o.stdout,
        "second-api-value|first-api-value|json-field-value|none"
    );
    eprintln!("three azure-kv secrets, one run of the debug binary: {took:?}");
    // The version was asked for by its path, the current one without.
    let log = kv.log();
    assert!(log.contains("GET /secrets/api/v1old?api-version="), "{log}");
    assert!(log.contains("GET /secrets/api/?api-version="), "{log}");
    assert!(
        log.contains("POST /") && log.contains("/oauth2/v2.0/token"),
        "{log}"
    );
    assert_no_leak(&s, &o, &[]);
    let audit = std::fs::read_to_string(s.path().join("audit.jsonl")).unwrap();
    assert!(
        !audit.contains("second-api-value") && !audit.contains("json-field-value"),
        "{audit}"
    );
}

/// Models: `SecretNotFound` (404) for a missing secret and for a missing version,
/// `Forbidden`/`AccessDenied` (403, no access policy or RBAC role), `Forbidden`/
/// `SecretDisabled` (403, a disabled version), a JSON field missing, an empty value.
/// Each stops the run (125) with its own message naming the secret and the vault.
#[test]
fn each_failure_has_its_own_message_and_stops_the_run() {
    let kv = vault();
    kv.set(json!({
        "api": {"versions": [version("v1old", "first-api-value")]},
        "locked": {"versions": [version("l1", "locked-value-never-read")], "forbidden": true},
        "off": {"versions": [{"id": "o1", "value": "disabled-value", "enabled": false}]},
        "conf": {"versions": [version("c1", r#"{"user":"agent"}"#)]},
        "empty": {"versions": [version("e1", "")]},
    }));
    let s = scratch();
    let cases = [
        (
            "azure-kv:kv1/nothing",
            "not found: no secret nothing in vault kv1",
        ),
        (
            "azure-kv:kv1/api/v9",
            "the secret api has no version v9 in vault kv1",
        ),
        ("azure-kv:kv1/locked", "access denied"),
        ("azure-kv:kv1/off", "the secret version is disabled"),
        ("azure-kv:kv1/conf#token", "token"),
        ("azure-kv:kv1/empty", "the value is empty"),
    ];
    for (i, (source, expected)) in cases.iter().enumerate() {
        let name = format!("p{i}");
        s.profile(
            &name,
            &format!(
                "version = 1\n{}\n[secrets]\nK = \"{source}\"\n",
                kv.table("")
            ),
        );
        let marker = s.path().join("started");
        let o = s.run(&["-p", &name, "--", "touch", marker.to_str().unwrap()]);
        assert_eq!(o.code, 125, "{source}: {o:?}");
        eprintln!("{source}: {}", o.stderr.trim());
        assert!(!marker.exists(), "{source}: the child started");
        let place = source.trim_start_matches("azure-kv:");
        let place = place.split('#').next().unwrap();
        assert!(
            o.stderr.contains(&format!("azure-kv {place} ({})", kv.url)),
            "{source}: {}",
            o.stderr
        );
        assert!(o.stderr.contains(expected), "{source}: {}", o.stderr);
        assert_no_leak(&s, &o, &["locked-value-never-read", "disabled-value"]);
    }
}

/// Models: the token endpoint's `invalid_client` answer (401, AADSTS7000215) to a wrong
/// client secret, and a vault that refuses an issued token (401 after the token).
#[test]
fn wrong_client_secret_or_refused_token_is_bad_credentials() {
    let kv = vault();
    let mut s = scratch();
    s.env
        .insert("AZURE_CLIENT_SECRET".into(), "wrong-secret-9f8e7d".into());
    s.profile(
        "bad",
        &format!(
            "version = 1\n{}\n[secrets]\nK = \"azure-kv:kv1/api\"\n",
            kv.table("")
        ),
    );
    let o = s.run(&["-p", "bad", "--", "true"]);
    eprintln!("{}", o.stderr.trim());
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains("the Azure credentials were rejected")
            && o.stderr.contains("7000215")
            && o.stderr.contains(AZURE_CLIENT)
            && o.stderr.contains(AZURE_TENANT),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("wrong-secret-9f8e7d"), "{}", o.stderr);
    assert_no_leak(&s, &o, &["wrong-secret-9f8e7d"]);

    let s = scratch();
    kv.set_state(|st| st["reject_tokens"] = json!(true));
    s.profile(
        "refused",
        &format!(
            "version = 1\n{}\n[secrets]\nK = \"azure-kv:kv1/api\"\n",
            kv.table("")
        ),
    );
    let o = s.run(&["-p", "refused", "--", "true"]);
    eprintln!("{}", o.stderr.trim());
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains("the vault refused the token: HTTP 401"),
        "{}",
        o.stderr
    );
    assert_no_leak(&s, &o, &["second-api-value"]);
}

/// A client secret without a tenant is a configuration error naming the key and its
/// variable, before any request.
#[test]
fn client_secret_without_tenant_is_refused() {
    let kv = vault();
    let mut s = scratch();
    s.env.remove("AZURE_TENANT_ID");
    s.profile(
        "nt",
        &format!(
            "version = 1\n{}\n[secrets]\nK = \"azure-kv:kv1/api\"\n",
            kv.table("")
        ),
    );
    let o = s.run(&["-p", "nt", "--", "true"]);
    eprintln!("{}", o.stderr.trim());
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains("tenant_id") && o.stderr.contains("$AZURE_TENANT_ID"),
        "{}",
        o.stderr
    );
    assert!(!kv.log().contains("GET /secrets"), "{}", kv.log());
}

/// Rotation: the probe rejects the first value and, as an operator would, a new version is
/// added to the vault meanwhile; the refetch gets the new current version and the child
/// starts with it. Models: a new version becoming current. Not modelled: the vault's
/// `SetSecret` call (the test rewrites the fake's state).
#[test]
fn rotated_secret_is_picked_up_by_the_refetch() {
    let kv = vault();
    kv.set(json!({"rot": {"versions": [version("r1", "stale-azure-key-000")]}}));
    let state = kv.dir.path().join("state.json");
    let probe = ProbeServer::start_with("fresh-azure-key-111", move || {
        let mut st: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
        st["secrets"]["rot"]["versions"]
            .as_array_mut()
            .unwrap()
            .push(version("r2", "fresh-azure-key-111"));
        let tmp = state.with_extension("tmp");
        std::fs::write(&tmp, st.to_string()).unwrap();
        std::fs::rename(&tmp, &state).unwrap();
    });
    let s = scratch();
    s.profile(
        "rot",
        &format!(
            "version = 1\n{}\n[secrets.KEY]\nfrom = \"azure-kv:kv1/rot\"\n\
             verify = {{ probe = \"http\", url = \"{}\" }}\n",
            kv.table(""),
            probe.url
        ),
    );
    let o = s.run(&[
        "-p",
        "rot",
        "--no-redact",
        "--",
        "sh",
        "-c",
        "printf %s \"$KEY\"",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout, "fresh-azure-key-111");
    assert_eq!(probe.hits.load(Ordering::SeqCst), 2);
    let verify = o
        .audit_events()
        .into_iter()
        .find(|e| e["event"] == "verify")
        .unwrap();
    assert_eq!(verify["attempts"][0]["outcome"], "failed", "{verify}");
    assert_eq!(verify["attempts"][1]["outcome"], "ok", "{verify}");
    assert_eq!(
        verify["attempts"][1]["refetch"]["same_value"], false,
        "{verify}"
    );
    assert_no_leak(&s, &o, &["stale-azure-key-000", "fresh-azure-key-111"]);
}

/// Hung: a server that accepts and never answers (not even the TLS handshake). The whole
/// read, retries included, ends at `[azure].timeout`.
#[test]
fn hung_vault_times_out() {
    let kv = vault();
    let silent = Silent::start();
    let url = silent.addr.replace("http://", "https://");
    let s = scratch();
    s.profile(
        "hung",
        &format!(
            "version = 1\n[azure]\nvault_url = \"{url}\"\nauthority_host = \"{}\"\nca_cert = \"{}\"\n\
             timeout = \"1s\"\n[secrets]\nK = \"azure-kv:kv1/api\"\n",
            kv.url,
            kv.ca.display()
        ),
    );
    let start = Instant::now();
    let o = s.run(&["-p", "hung", "--", "true"]);
    eprintln!("{}", o.stderr.trim());
    let took = start.elapsed();
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains(&format!("azure-kv kv1/api ({url})"))
            && o.stderr.contains("no answer within 1s")
            && o.stderr.contains("[azure].timeout"),
        "{}",
        o.stderr
    );
    // `[azure].timeout` bounds the whole read, retries included (plus the binary's start).
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

/// Unreachable: a closed port on loopback (connection refused), retried, then reported.
#[test]
fn closed_port_is_unreachable() {
    let kv = vault();
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let s = scratch();
    s.profile(
        "down",
        &format!(
            "version = 1\n[azure]\nvault_url = \"{url}\"\nauthority_host = \"{}\"\nca_cert = \"{}\"\n\
             timeout = \"2s\"\n[secrets]\nK = \"azure-kv:kv1/api\"\n",
            kv.url,
            kv.ca.display()
        ),
    );
    let o = s.run(&["-p", "down", "--", "true"]);
    eprintln!("{}", o.stderr.trim());
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr
            .contains(&format!("azure-kv kv1/api ({url}): cannot connect")),
        "{}",
        o.stderr
    );
}

/// Without `ca_cert` the test CA is not trusted: the TLS failure names the fix.
#[test]
fn untrusted_certificate_names_ca_cert() {
    let kv = vault();
    let s = scratch();
    s.profile(
        "noca",
        &format!(
            "version = 1\n[azure]\nvault_url = \"{url}\"\nauthority_host = \"{url}\"\n\
             timeout = \"2s\"\nretries = 0\n[secrets]\nK = \"azure-kv:kv1/api\"\n",
            url = kv.url
        ),
    );
    let o = s.run(&["-p", "noca", "--", "true"]);
    eprintln!("{}", o.stderr.trim());
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("[azure].ca_cert"), "{}", o.stderr);
}

/// agentrun's own client secret never reaches the child: `pass = ["*"]` skips it, and a
/// profile naming it exactly in `pass` is refused before anything runs.
#[test]
fn client_secret_is_withheld_from_the_child() {
    let kv = vault();
    let s = scratch();
    s.profile(
        "all",
        &format!(
            "version = 1\n[env]\npass = [\"*\"]\n{}\n[secrets]\nK = \"azure-kv:kv1/api\"\n",
            kv.table("")
        ),
    );
    let o = s.run(&[
        "-p",
        "all",
        "--no-redact",
        "--",
        "sh",
        "-c",
        "printf '%s|' \"${AZURE_CLIENT_SECRET-none}\"; env | grep -c test-client-secret || true",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout, "none|0\n", "{o:?}");
    assert_no_leak(&s, &o, &["second-api-value"]);

    s.profile(
        "exact",
        &format!(
            "version = 1\n[env]\npass = [\"PATH\", \"AZURE_CLIENT_SECRET\"]\n{}\n[secrets]\nK = \"azure-kv:kv1/api\"\n",
            kv.table("")
        ),
    );
    let marker = s.path().join("started");
    let o = s.run(&["-p", "exact", "--", "touch", marker.to_str().unwrap()]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr
            .contains("`AZURE_CLIENT_SECRET` looks like a credential"),
        "{}",
        o.stderr
    );
    assert!(!marker.exists());
    assert_no_leak(&s, &o, &[]);
}

/// A client secret read from a file (`[azure].client_secret = "file:..."`) is a login file:
/// the child cannot read it; read from a variable (`env:SP_SECRET`), the variable does not
/// reach the child even with `pass = ["*"]`.
#[test]
fn client_secret_file_and_variable_are_kept_from_the_child() {
    let kv = vault();
    let mut s = scratch();
    s.env.remove("AZURE_CLIENT_SECRET");
    s.env.insert("SP_SECRET".into(), AZURE_SECRET.into());
    let file = s.file("login/sp-secret.txt", AZURE_SECRET);
    let cases = [
        (
            "file",
            format!("file:{}", file.display()),
            format!("cat {} 2>/dev/null || printf unreadable", file.display()),
            "unreadable",
        ),
        (
            "env",
            "env:SP_SECRET".to_string(),
            format!("printf %s \"${{SP_SECRET-none}}\"; env | grep -c {AZURE_SECRET} || true"),
            "none0\n",
        ),
    ];
    for (name, source, probe, expected) in cases {
        s.profile(
            name,
            &format!(
                "version = 1\n[env]\npass = [\"*\"]\n{}\n[secrets]\nK = \"azure-kv:kv1/api\"\n",
                kv.table(&format!("client_secret = \"{source}\"\n"))
            ),
        );
        let o = s.run(&[
            "-p",
            name,
            "--no-redact",
            "--",
            "sh",
            "-c",
            &format!("printf '%s|' \"$K\"; {probe}"),
        ]);
        assert_eq!(o.code, 0, "{name}: {o:?}");
        assert_eq!(
            o.stdout,
            format!("second-api-value|{expected}"),
            "{name}: {o:?}"
        );
        assert_no_leak(&s, &o, &[]);
    }
}

/// Without a client secret, `AZURE_FEDERATED_TOKEN_FILE` selects workload identity: the
/// token file's contents go to the token endpoint as a client assertion. Models: the
/// client-assertion grant (the assertion compared as text). Not modelled: the JWT's checks.
#[test]
fn workload_identity_reads_the_federated_token_file() {
    let kv = vault();
    kv.set_state(|st| st["federated_token"] = json!("federated-jwt-for-test"));
    let mut s = scratch();
    s.env.remove("AZURE_CLIENT_SECRET");
    let token = s.file("sa/token", "federated-jwt-for-test");
    s.env.insert(
        "AZURE_FEDERATED_TOKEN_FILE".into(),
        token.display().to_string(),
    );
    s.profile(
        "wi",
        &format!(
            "version = 1\n[env]\npass = [\"*\"]\n{}\n[secrets]\nK = \"azure-kv:kv1/api\"\n",
            kv.table("")
        ),
    );
    let o = s.run(&[
        "-p",
        "wi",
        "--no-redact",
        "--",
        "sh",
        "-c",
        &format!(
            "printf '%s|%s|' \"$K\" \"${{AZURE_FEDERATED_TOKEN_FILE-none}}\"; cat {} 2>/dev/null || printf unreadable",
            token.display()
        ),
    ]);
    assert_eq!(o.code, 0, "{o:?}\n{}", kv.log());
    // The token file is a credential store: the child reads neither it nor its variable.
    assert_eq!(o.stdout, "second-api-value|none|unreadable");
    assert_no_leak(&s, &o, &["federated-jwt-for-test"]);

    // A token the identity does not match: the credentials are rejected, naming the file.
    kv.set_state(|st| st["federated_token"] = json!("another-token"));
    let o = s.run(&["-p", "wi", "--", "true"]);
    eprintln!("{}", o.stderr.trim());
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains("the Azure credentials were rejected")
            && o.stderr.contains("700211")
            && o.stderr.contains(&token.display().to_string()),
        "{}",
        o.stderr
    );
    assert_no_leak(&s, &o, &["federated-jwt-for-test"]);
}

/// Ten secrets of one vault are read at once, on one credential: one token for the run.
/// Models: concurrent `GetSecret` calls, each first answered by the challenge. Not
/// modelled: throttling.
#[test]
fn ten_secrets_share_one_token() {
    let versions: serde_json::Map<String, serde_json::Value> = (0..10)
        .map(|i| {
            (
                format!("s{i}"),
                json!({"versions": [version("v1", &format!("value-{i}-abcdef"))]}),
            )
        })
        .collect();
    let kv = AzureKv::start(serde_json::Value::Object(versions));
    let s = scratch();
    let secrets: String = (0..10)
        .map(|i| format!("S{i} = \"azure-kv:kv1/s{i}\"\n"))
        .collect();
    s.profile(
        "ten",
        &format!("version = 1\n{}\n[secrets]\n{secrets}", kv.table("")),
    );
    let start = Instant::now();
    let o = s.run(&[
        "-p",
        "ten",
        "--no-redact",
        "--",
        "sh",
        "-c",
        "printf %s \"$S0$S9\"",
    ]);
    let took = start.elapsed();
    assert_eq!(o.code, 0, "{o:?}\n{}", kv.log());
    assert_eq!(o.stdout, "value-0-abcdefvalue-9-abcdef");
    eprintln!("ten azure-kv secrets, one run of the debug binary: {took:?}");
    let log = kv.log();
    assert_eq!(log.matches("/oauth2/v2.0/token").count(), 1, "{log}");
    assert_eq!(log.matches("\" 200 ").count(), 11, "{log}");
}

/// No client secret, no workload identity: managed identity (no IMDS on this machine) and
/// the Azure CLI (not installed) give no token; the run stops, saying what was tried and
/// what to set, within the time limit.
#[test]
fn no_credential_at_all_says_what_to_set() {
    let kv = vault();
    let mut s = scratch();
    s.env.remove("AZURE_CLIENT_SECRET");
    s.profile(
        "none",
        &format!(
            "version = 1\n{}\n[secrets]\nK = \"azure-kv:kv1/api\"\n",
            kv.table("timeout = \"3s\"\n")
        ),
    );
    let start = Instant::now();
    let o = s.run(&["-p", "none", "--", "true"]);
    eprintln!("{:?}: {}", start.elapsed(), o.stderr.trim());
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains("azure-kv kv1/api")
            && o.stderr
                .contains("set [azure].client_secret, tenant_id and client_id"),
        "{}",
        o.stderr
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// Review 15, F4: with `[azure].vault_url` set the SDK's resource check is off, so a hostile
/// vault host's challenge could name another resource (Azure Resource Manager) and get a
/// token for it. The guard refuses any scope but Key Vault's: no token is asked for.
#[test]
fn a_challenge_for_another_resource_gets_no_token() {
    let kv = vault();
    kv.set_state(|st| st["challenge_resource"] = json!("https://management.azure.com"));
    let s = scratch();
    s.profile(
        "arm",
        &format!(
            "version = 1\n{}\n[secrets]\nK = \"azure-kv:kv1/api\"\n",
            kv.table("")
        ),
    );
    let o = s.run(&["-p", "arm", "--", "true"]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains("management.azure.com") && o.stderr.contains("not for Key Vault"),
        "{}",
        o.stderr
    );
    let log = kv.log();
    assert!(log.contains("GET /secrets/api"), "{log}");
    assert!(!log.contains("oauth2"), "a token was asked for: {log}");
    assert_no_leak(&s, &o, &["second-api-value"]);
}
