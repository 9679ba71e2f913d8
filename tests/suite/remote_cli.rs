//! The remote backends through the real binary: a child gets what OpenBao and moto hold,
//! a denied read stops the run with 125, and a credential rotated at its source while the
//! first value is being rejected is picked up by the refetch.
#![allow(clippy::unwrap_used)]

use crate::harness::*;
use crate::servers::{Bao, Moto, ProbeServer};
use std::sync::atomic::Ordering;

fn with_aws(s: &mut Scratch) {
    s.env.insert("AWS_ACCESS_KEY_ID".into(), "testing".into());
    s.env
        .insert("AWS_SECRET_ACCESS_KEY".into(), "testing".into());
}

#[test]
fn child_gets_vault_and_aws_secrets() {
    let bao = Bao::start();
    bao.cli(&[
        "kv",
        "put",
        "secret/agent",
        "api_key=vault-value-123",
        "other=x",
    ]);
    let moto = Moto::start(&[]);
    moto.py("sm = client('secretsmanager')\nsm.create_secret(Name='prod/agent', SecretString='{\"json\": \"aws-value-456\"}')\n");
    let mut s = Scratch::new();
    with_aws(&mut s);
    s.env.insert("VAULT_TOKEN".into(), bao.token.clone());
    s.profile(
        "r",
        &format!(
            "version = 1\n[env]\npass = [\"PATH\"]\n[vault]\naddress = \"{}\"\n[aws]\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
             [secrets]\nFROM_VAULT = \"vault:secret/agent#api_key\"\nFROM_AWS = \"aws-sm:prod/agent#json\"\n",
            bao.addr, moto.endpoint
        ),
    );
    let o = s.run(&[
        "-p",
        "r",
        "--",
        "sh",
        "-c",
        "printf '%s|%s|%s' \"$FROM_VAULT\" \"$FROM_AWS\" \"${VAULT_TOKEN-none}\"",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    // agentrun's own credentials never reach the child.
    assert_eq!(
        o.stdout
            .replace("[REDACTED:FROM_VAULT]", "vault-value-123")
            .replace("[REDACTED:FROM_AWS]", "aws-value-456"),
        "vault-value-123|aws-value-456|none"
    );
    let text = std::fs::read_to_string(s.path().join("audit.jsonl")).unwrap();
    assert!(
        !text.contains("vault-value-123") && !text.contains(&bao.token),
        "audit log holds a value"
    );

    let o = s.run(&["check", "-p", "r", "--json"]);
    assert_eq!(o.code, 0, "{o:?}");
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let kinds: Vec<&str> = doc["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["aws-sm", "vault"]);
    assert!(!o.stdout.contains("vault-value-123"));
}

#[test]
fn denied_path_stops_the_run_with_a_clear_message() {
    let bao = Bao::start();
    bao.cli(&["kv", "put", "secret/locked", "k=v"]);
    bao.policy(
        "nothing",
        "path \"secret/data/other\" { capabilities = [\"read\"] }",
    );
    let token = bao.cli(&["token", "create", "-policy=nothing", "-field=token"]);
    let mut s = Scratch::new();
    s.env.insert("VAULT_TOKEN".into(), token.trim().into());
    s.profile(
        "d",
        &format!(
            "version = 1\n[vault]\naddress = \"{}\"\n[secrets]\nK = \"vault:secret/locked#k\"\n",
            bao.addr
        ),
    );
    let marker = s.path().join("started");
    let o = s.run(&["-p", "d", "--", "touch", marker.to_str().unwrap()]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains("secret K") && o.stderr.contains("403") && o.stderr.contains(&bao.addr),
        "{o:?}"
    );
    assert!(o.stderr.contains("secret/data/locked"), "{o:?}");
    assert!(!marker.exists());
    assert!(
        !o.stderr.contains(token.trim()),
        "the token leaked into a message"
    );
}

#[test]
fn rotated_credential_is_picked_up_by_the_refetch() {
    let bao = Bao::start();
    bao.cli(&["kv", "put", "secret/rot", "key=stale-key-000000"]);
    // The provider rejects the stale key; meanwhile the operator has rotated it.
    let (addr, token, home) = (
        bao.addr.clone(),
        bao.token.clone(),
        bao.home.path().to_path_buf(),
    );
    let bao_bin = crate::servers::venv_bin("bao");
    let probe = ProbeServer::start_with("fresh-key-111111", move || {
        let st = std::process::Command::new(&bao_bin)
            .args(["kv", "put", "secret/rot", "key=fresh-key-111111"])
            .env("VAULT_ADDR", &addr)
            .env("VAULT_TOKEN", &token)
            .env("HOME", &home)
            .output()
            .unwrap();
        assert!(st.status.success());
    });
    let mut s = Scratch::new();
    s.env.insert("VAULT_TOKEN".into(), bao.token.clone());
    s.profile(
        "rot",
        &format!(
            "version = 1\n[vault]\naddress = \"{}\"\n[secrets.KEY]\nfrom = \"vault:secret/rot#key\"\nverify = {{ probe = \"http\", url = \"{}\" }}\n",
            bao.addr, probe.url
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
    assert_eq!(o.stdout, "fresh-key-111111");
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
}

#[test]
fn failing_twice_refuses_to_start() {
    let bao = Bao::start();
    bao.cli(&["kv", "put", "secret/bad", "key=never-accepted-key"]);
    let probe = ProbeServer::start("something-else-entirely");
    let mut s = Scratch::new();
    s.env.insert("VAULT_TOKEN".into(), bao.token.clone());
    s.profile(
        "bad",
        &format!(
            "version = 1\n[vault]\naddress = \"{}\"\n[secrets.KEY]\nfrom = \"vault:secret/bad#key\"\nverify = {{ probe = \"http\", url = \"{}\" }}\n",
            bao.addr, probe.url
        ),
    );
    let o = s.run(&["-p", "bad", "--", "true"]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr
            .contains("all credentials invalid, refusing to start"),
        "{o:?}"
    );
    assert!(!o.stderr.contains("never-accepted-key"));
    let o = s.run(&["check", "-p", "bad"]);
    assert_eq!(o.code, 1, "{o:?}");
}
