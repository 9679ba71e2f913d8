//! The cloud backends' settings as `explain` shows them: effective values with defaults
//! filled in, whether this build has the backend, and never a credential's text.
#![allow(clippy::unwrap_used)]

use crate::harness::*;

#[test]
fn explain_shows_each_backends_effective_settings_and_no_credential() {
    let mut s = Scratch::new();
    s.env
        .insert("AZURE_TENANT_ID".into(), "tenant-from-env".into());
    s.env
        .insert("MY_AZ_SECRET".into(), "azure-client-secret-value".into());
    s.profile(
        "p",
        "version = 1\n\
         [gcp]\nproject = \"proj-1\"\ncredentials = \"none\"\nendpoint = \"http://127.0.0.1:9\"\n\
         [azure]\nclient_id = \"cid\"\nclient_secret = \"env:MY_AZ_SECRET\"\ntimeout = \"3s\"\n\
         [secrets]\nA = \"aws-ssm:/x\"\nG = \"gcp-sm:s\"\nZ = \"azure-kv:v1/n\"\n",
    );
    let o = s.run(&["explain", "-p", "p", "--json"]);
    assert_eq!(o.code, 0, "{o:?}");
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(doc["aws"]["retries"], 2);
    assert_eq!(doc["aws"]["built"], true);
    assert_eq!(doc["gcp"]["project"], "proj-1");
    assert_eq!(doc["gcp"]["endpoint"], "http://127.0.0.1:9");
    assert!(
        doc["gcp"]["credentials"]
            .as_str()
            .unwrap()
            .contains("anonymous")
    );
    assert_eq!(doc["azure"]["tenant_id"], "tenant-from-env");
    assert_eq!(doc["azure"]["client_id"], "cid");
    assert_eq!(doc["azure"]["timeout_s"], 3.0);
    assert_eq!(doc["azure"]["vault_url"], "https://VAULT.vault.azure.net");
    assert_eq!(doc["azure"]["challenge_resource_checked"], true);
    assert!(
        doc["azure"]["credential"]
            .as_str()
            .unwrap()
            .contains("`env:` source; not shown"),
        "{}",
        doc["azure"]
    );
    assert!(!o.stdout.contains("azure-client-secret-value"));
    // A backend the profile does not use is not shown.
    s.profile("local", "version = 1\n[secrets]\nA = \"env:A\"\n");
    let o = s.run(&["explain", "-p", "local", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert!(doc["gcp"].is_null() && doc["azure"].is_null() && doc["aws"].is_null());
}

/// A short-form `gcp-sm:SECRET` without `[gcp].project`, and a remote `client_secret`, are
/// refused before anything is fetched (125), each with one message naming the fix.
#[test]
fn bad_cloud_tables_stop_the_run_before_any_fetch() {
    let s = Scratch::new();
    s.profile("g", "version = 1\n[secrets]\nG = \"gcp-sm:api-key\"\n");
    let o = s.run(&["-p", "g", "--", "true"]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains("[gcp].project") && o.stderr.contains("projects/PROJECT/secrets/api-key"),
        "{o:?}"
    );
    s.profile(
        "a",
        "version = 1\n[azure]\nclient_secret = \"vault:secret/x#y\"\n[secrets]\nZ = \"azure-kv:v1/n\"\n",
    );
    let o = s.run(&["-p", "a", "--", "true"]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains("client_secret") && o.stderr.contains("local"),
        "{o:?}"
    );
}

/// Review 15 F7 and 15b: a server's error text with terminal escapes, C1 controls and
/// invisible format characters (here a fixed-answer server standing in for Secret Manager)
/// reaches no output raw: not stderr, not `check`'s text or JSON, not the audit log.
#[test]
fn a_servers_escape_sequences_reach_no_output_raw() {
    let hostile = crate::servers::FixedAnswer::google_error(
        403,
        "Forbidden",
        "PERMISSION_DENIED",
        r"denied \u001b[2J\u001b]0;PWNED\u0007 \u009b2J \u202eevil \u2067iso\u2069 \u200bzw",
    );
    let s = Scratch::new();
    s.profile(
        "h",
        &format!(
            "version = 1\n[gcp]\nendpoint = \"{}\"\ncredentials = \"none\"\nretries = 0\n\
             [secrets]\nS = \"gcp-sm:projects/p/secrets/s\"\n",
            hostile.endpoint
        ),
    );
    let raw = [
        '\u{1b}', '\u{7}', '\u{9b}', '\u{202e}', '\u{2067}', '\u{200b}',
    ];
    let clean = |what: &str, text: &str| {
        assert!(!text.contains(raw), "{what} holds a raw control: {text:?}");
    };
    let o = s.run(&["-p", "h", "--", "true"]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains("PWNED") && o.stderr.contains("\\u{1b}"),
        "{o:?}"
    );
    clean("stderr", &o.stderr);
    let o = s.run(&["check", "-p", "h"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stdout.contains("PWNED"), "{o:?}");
    clean("check", &o.stdout);
    clean("check stderr", &o.stderr);
    let o = s.run(&["check", "-p", "h", "--json"]);
    clean("check --json", &o.stdout);
    assert!(!o.stdout.contains("\\u001b"), "{}", o.stdout);
    let audit = std::fs::read_to_string(s.path().join("audit.jsonl")).unwrap();
    clean("the audit log", &audit);
    assert!(!audit.contains("\\u001b"), "{audit}");
}
