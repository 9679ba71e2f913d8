//! `agentrun explain`: the profile as agentrun resolves it: the child's environment names,
//! the secrets' sources, the sandbox policy and isolation, the redaction rules, the audit
//! sink and limits. Nothing is fetched; a credential written into `[vault]` is never shown.

use super::{Fail, plan};
use crate::cli::ExplainArgs;
use crate::launch;
use crate::sandbox;
use crate::secrets;
use serde_json::json;

/// Print the profile as agentrun resolves it (TOML, or JSON with `--json`).
pub fn explain(args: &ExplainArgs) -> Result<u8, Fail> {
    let ctx = plan::context()?;
    let profile = plan::load_profile(&args.profile, &ctx)?;
    let inputs = secrets::credential_inputs(&profile, &ctx);
    let policy = plan::sandbox_policy(&profile, &ctx, &inputs)?;
    let denied = sandbox::denied_syscalls(&policy);
    let log =
        plan::audit_sinks(&profile, None, &ctx).map_or_else(|_| profile.audit.clone(), |s| s.log);
    let keep = plan::startup_inputs(&profile, &ctx, &log);
    let isolation = sandbox::isolation_report(&policy, &keep, &ctx.cwd)
        .map_err(|e| Fail::setup(e.to_string()))?;
    let base = launch::env::base(&profile, &ctx.env, &inputs.env_names);
    let mut env_names: Vec<String> = base
        .vars
        .keys()
        .map(|k| k.to_string_lossy().into_owned())
        .collect();
    env_names.extend(profile.secrets.iter().map(|s| s.name.clone()));
    env_names.sort();
    let secrets: Vec<_> = profile
        .secrets
        .iter()
        .map(|s| {
            json!({
                "name": s.name, "from": s.source_text, "source": s.source, "as": s.inject, "required": s.required,
                "verify": s.verify.section,
                "broker": s.broker,
            })
        })
        .collect();
    let doc = json!({
        "profile": profile.path,
        "sha256": profile.sha256,
        "description": profile.description,
        "env": {"pass": profile.pass, "set": profile.set.keys().collect::<Vec<_>>(), "child_names": env_names, "dropped": base.dropped},
        "secrets": secrets,
        "sandbox": {"policy": policy, "denied_syscalls": denied, "isolation": isolation},
        "redact": {
            "replacement": profile.redact.replacement,
            "rules": profile.redact.rules,
            "patterns": profile.redact.patterns,
            "builtin_rules": crate::redact::builtin_rules().iter().map(|(id, what)| json!({"id": id, "what": what})).collect::<Vec<_>>(),
        },
        "audit": profile.audit,
        "audit_journald": profile.audit_journald,
        "limits": profile.limits,
        "vault": vault_shown(profile.vault.as_ref()),
        "aws": profile.aws,
        "broker": profile.broker.as_ref().map(|b| json!({
            "allow": b.allow,
            "ca_cert": b.ca_cert,
            "rate": b.rate,
            "ttl_s": b.ttl.map(|d| d.as_secs()),
            "refresh_s": b.refresh.map(|d| d.as_secs()),
            "child_gets": "a placeholder in each brokered variable; HTTPS_PROXY, HTTP_PROXY, ALL_PROXY (and lower case) to the broker on the child's own loopback; NO_PROXY for loopback unless a loopback host is named; SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, PIP_CERT, GIT_SSL_CAINFO, NODE_EXTRA_CA_CERTS to the run's trust bundle; NODE_USE_ENV_PROXY=1; AGENTRUN_BROKER",
            "network": "a network namespace of the child's own with loopback only; the broker's port is its only way out",
            "not_brokered": "AWS access keys cannot be brokered (SigV4 signs with the secret)",
        })),
    });
    // No `user:pass@` of an address or endpoint.
    let mut doc = doc;
    crate::scrub::strip_userinfo_json(&mut doc);
    // A credential pasted into a key explain shows (an address, a region) is shown as the
    // built-in rules redact it.
    let out = |text: String| print!("{}", super::known_tokens_out(&text));
    if args.json {
        out(serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n");
    } else {
        // As TOML, the profile's own language; TOML has no null, so unset keys are left out.
        let doc = without_nulls(doc);
        match toml::to_string_pretty(&doc) {
            Ok(text) => out(text),
            Err(_) => out(serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"),
        }
    }
    Ok(0)
}

fn without_nulls(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// `[vault]` for `explain`: the keys that carry a credential (`token`, `role_id`,
/// `secret_id`, `jwt`) show only that they are set and their source's kind, never the text
/// (it may be a credential pasted in the wrong place).
fn vault_shown(vault: Option<&crate::profile::VaultSection>) -> serde_json::Value {
    let Some(v) = vault else {
        return serde_json::Value::Null;
    };
    let mut doc = json!(v);
    if let Some(m) = doc.as_object_mut() {
        for key in ["token", "role_id", "secret_id", "jwt"] {
            if let Some(serde_json::Value::String(text)) = m.get(key) {
                let shown = credential_shown(text);
                m.insert(key.into(), json!(shown));
            }
        }
    }
    doc
}

/// "set" and the kind of source a credential key names; never its text.
fn credential_shown(text: &str) -> String {
    let kind = match text.split_once(':') {
        Some((scheme, _))
            if crate::profile::SourceKind::from_scheme(scheme).is_some_and(|k| !k.is_remote()) =>
        {
            format!("a {scheme}: source")
        }
        _ if text.starts_with(['/', '~', '.']) => "a file path".to_string(),
        _ => "not a source (a literal value?)".to_string(),
    };
    format!("(set: {kind}; not shown)")
}
