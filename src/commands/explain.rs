//! `agentrun explain`: the profile as agentrun resolves it: the child's environment names,
//! the secrets' sources, the sandbox policy and isolation, the redaction rules, the audit
//! sink and limits. Nothing is fetched; a credential written into `[vault]` is never shown.

use super::{Fail, plan};
use crate::cli::ExplainArgs;
use crate::launch;
use crate::profile::SourceKind;
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
        "aws": aws_shown(&profile),
        "gcp": gcp_shown(&profile, &ctx),
        "azure": azure_shown(&profile, &ctx),
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
    // Control and format characters a profile's string held are shown as escapes.
    let out = |text: String| {
        print!(
            "{}",
            crate::scrub::controls_escaped(&super::known_tokens_out(&text))
        )
    };
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

/// Whether the profile has a backend's table or a source of one of its kinds.
fn uses(profile: &crate::profile::Profile, kinds: &[SourceKind], table: bool) -> bool {
    table
        || profile
            .secrets
            .iter()
            .any(|s| kinds.contains(&s.source.kind()))
}

/// A backend's effective settings as a fetch would use them (defaults filled in), whether
/// this build has it, or why its table is refused. `null` when the profile does not use it.
fn backend_shown<S>(
    used: bool,
    kind: SourceKind,
    settings: Result<S, String>,
    show: impl FnOnce(S) -> serde_json::Value,
) -> serde_json::Value {
    if !used {
        return serde_json::Value::Null;
    }
    let mut doc = match settings {
        Ok(s) => show(s),
        Err(e) => json!({"error": e}),
    };
    if let Some(m) = doc.as_object_mut() {
        m.insert("built".into(), json!(secrets::is_built(kind)));
        if let Some(f) = secrets::feature_of(kind) {
            m.insert("feature".into(), json!(f));
        }
    }
    doc
}

fn aws_shown(profile: &crate::profile::Profile) -> serde_json::Value {
    let used = uses(
        profile,
        &[SourceKind::AwsSm, SourceKind::AwsSsm],
        profile.aws.is_some(),
    );
    let settings =
        secrets::AwsSettings::from_section(profile.aws.as_ref()).map_err(|e| e.to_string());
    backend_shown(used, SourceKind::AwsSm, settings, |s| {
        json!({
            "region": s.region.as_deref().unwrap_or("(the SDK's: AWS_REGION, the profile's config)"),
            "profile": s.profile,
            "endpoint": s.endpoint.as_deref().unwrap_or("(the SDK's: AWS_ENDPOINT_URL_*, the public endpoint)"),
            "credentials": "the AWS chain (agentrun's AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, [aws].profile, SSO, web identity, IMDS)",
            "timeout_s": s.timeout.as_secs_f64(),
            "retries": s.retries,
        })
    })
}

fn gcp_shown(
    profile: &crate::profile::Profile,
    ctx: &crate::context::Context,
) -> serde_json::Value {
    let used = uses(profile, &[SourceKind::GcpSm], profile.gcp.is_some());
    let settings =
        secrets::GcpSettings::from_section(profile.gcp.as_ref(), ctx).map_err(|e| e.to_string());
    backend_shown(used, SourceKind::GcpSm, settings, |s| {
        let credentials = match &s.credentials {
            secrets::gcp::GcpCredentials::Default => {
                "Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, the gcloud ADC file, the metadata server)".to_string()
            }
            secrets::gcp::GcpCredentials::File(p) => format!("the credentials file {}", p.display()),
            secrets::gcp::GcpCredentials::Anonymous => "none (anonymous: emulators only)".to_string(),
        };
        json!({
            "project": s.project,
            "endpoint": s.place(),
            "credentials": credentials,
            "timeout_s": s.timeout.as_secs_f64(),
            "retries": s.retries,
        })
    })
}

fn azure_shown(
    profile: &crate::profile::Profile,
    ctx: &crate::context::Context,
) -> serde_json::Value {
    let used = uses(profile, &[SourceKind::AzureKv], profile.azure.is_some());
    let settings = secrets::AzureSettings::from_section(profile.azure.as_ref(), ctx)
        .map_err(|e| e.to_string());
    backend_shown(used, SourceKind::AzureKv, settings, |s| {
        let credential = match &s.client_secret {
            Some(src) => format!("client secret (set: `{}:` source; not shown)", src.kind()),
            None => "workload identity (AZURE_FEDERATED_TOKEN_FILE), then managed identity, then the Azure CLI".to_string(),
        };
        json!({
            "vault_url": s.vault_url.as_deref().unwrap_or("https://VAULT.vault.azure.net"),
            "challenge_resource_checked": s.vault_url.is_none(),
            "tenant_id": s.tenant_id,
            "client_id": s.client_id,
            "credential": credential,
            "authority_host": s.authority_host.as_deref().unwrap_or("https://login.microsoftonline.com"),
            "ca_cert": s.ca_cert,
            "timeout_s": s.timeout.as_secs_f64(),
            "retries": s.retries,
        })
    })
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
