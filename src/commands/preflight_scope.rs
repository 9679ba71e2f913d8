//! `permissions.scoped`, the checklist's "scoped IAM role / fine-grained token; no admin": ask
//! each credential agentrun holds what it may do, through the live lookups the backends have.
//!
//! - a secret with a `github` probe: one `GET` to the probe's URL, whose `X-OAuth-Scopes`
//!   says classic (with its scopes) or fine-grained ([`verify::github_token_kind`]);
//! - the Vault token agentrun uses, when a secret comes from `vault:`: its policies
//!   (`auth/token/lookup-self`, [`vault::token_policies`]);
//! - the AWS identity agentrun uses, when a secret comes from `aws-sm:`: its ARN
//!   (`sts:GetCallerIdentity`, [`crate::secrets::aws::caller_arn`]), once per `?region=`.
//!
//! The lookups are network calls, so they live here, in the orchestrator: `preflight` gets
//! the finished [`Check`]. Findings name secrets, rules and scope names, never a value, a
//! token, an account number or an ARN.

use super::fetch::Got;
use crate::context::Context;
use crate::preflight::{Check, Finding, Status};
use crate::profile::{AwsRef, Profile, Source, SsmRef};
use crate::secrets::vault;
use crate::verify::{self, GithubToken, ProbeKind};
use std::collections::BTreeMap;

pub const ID: &str = "permissions.scoped";

/// What to do about a finding, per kind of credential.
const FIX_GITHUB: &str = "GitHub: replace a classic token with a fine-grained one (Settings > Developer settings > Fine-grained tokens) limited to the repositories and permissions the agent needs";
const FIX_VAULT: &str = "Vault: give agentrun a token of a policy that grants `read` on the agent's paths only (`bao token create -policy=agent`, or an AppRole whose token_policies name it), never the root token";
const FIX_AWS: &str = "AWS: use an IAM role or user whose policy allows secretsmanager:GetSecretValue on the agent's secrets only, never the account root's keys";

/// Classic GitHub scopes that make a token an administrator's: `admin:*`, `delete_repo`,
/// `site_admin`.
pub fn admin_scopes(scopes: &[String]) -> Vec<&str> {
    scopes
        .iter()
        .map(String::as_str)
        .filter(|s| s.starts_with("admin:") || *s == "delete_repo" || *s == "site_admin")
        .collect()
}

/// True for an account root's ARN, `arn:PARTITION:iam::ACCOUNT:root` (what
/// `GetCallerIdentity` answers for the root user's keys).
pub fn is_account_root(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    matches!(
        parts.as_slice(),
        ["arn", partition, "iam", "", account, "root"]
            if !partition.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
    )
}

/// One credential to look at, and the secrets that depend on it.
enum Target<'a> {
    Github {
        secret: &'a str,
        url: reqwest::Url,
        timeout: std::time::Duration,
        value: Option<&'a Got>,
    },
    Vault {
        secrets: Vec<&'a str>,
    },
    Aws {
        region: Option<String>,
        secrets: Vec<&'a str>,
    },
}

/// `permissions.scoped` for `profile`, whose accepted secrets are `got`.
pub fn scoped(profile: &Profile, ctx: &Context, got: &[Got]) -> Check {
    let targets = targets(profile, got);
    if targets.is_empty() {
        return Check::new(
            ID,
            Status::Skip,
            "nothing to look at: no secret has a github probe or comes from vault: or aws-sm:",
            format!("{FIX_GITHUB}; {FIX_VAULT}; {FIX_AWS}"),
        );
    }
    let file = profile.path.display().to_string();
    let finding = |rule: &str, message: String| Finding {
        file: file.clone(),
        line: 1,
        rule: rule.to_string(),
        message,
    };
    let mut fixes: Vec<&str> = Vec::new();
    let mut findings: Vec<(Status, Finding)> = Vec::new();
    let outcomes = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(look(&targets, profile, ctx)),
        Err(e) => {
            let mut c = Check::new(
                ID,
                Status::Warn,
                "the lookups could not be made",
                format!("{FIX_GITHUB}; {FIX_VAULT}; {FIX_AWS}"),
            );
            c.findings.push(finding(
                "lookup-failed",
                format!("cannot start the async runtime for the lookups: {e}"),
            ));
            return c;
        }
    };
    let mut looked = Vec::new();
    for (target, outcome) in targets.iter().zip(outcomes) {
        match (target, outcome) {
            (Target::Github { secret, .. }, Outcome::Github(r)) => {
                looked.push(format!("the GitHub token of {secret}"));
                push_fix(&mut fixes, FIX_GITHUB);
                findings
                    .extend(github_finding(secret, r).map(|(s, rule, m)| (s, finding(rule, m))));
            }
            (Target::Vault { secrets }, Outcome::Vault(r)) => {
                looked.push("the Vault token".to_string());
                push_fix(&mut fixes, FIX_VAULT);
                let names = secrets.join(", ");
                match r {
                    Ok(p) if p.iter().any(|p| p == "root") => findings.push((
                        Status::Fail,
                        finding(
                            "vault.root-policy",
                            format!(
                                "the Vault token agentrun uses for {names} has the root policy: it may do anything in Vault"
                            ),
                        ),
                    )),
                    Ok(_) => {}
                    Err(e) => findings.push((
                        Status::Warn,
                        finding(
                            "vault.lookup-failed",
                            format!(
                                "the policies of the Vault token agentrun uses for {names} could not be looked up: {e}"
                            ),
                        ),
                    )),
                }
            }
            (Target::Aws { secrets, region }, Outcome::Aws(r)) => {
                looked.push(match region {
                    Some(r) => format!("the AWS identity (region {r})"),
                    None => "the AWS identity".to_string(),
                });
                push_fix(&mut fixes, FIX_AWS);
                let names = secrets.join(", ");
                match r {
                    Ok(arn) if is_account_root(&arn) => findings.push((
                        Status::Fail,
                        finding(
                            "aws.root-identity",
                            format!(
                                "the AWS identity agentrun uses for {names} is an account root (arn:aws:iam::ACCOUNT:root): its keys may do anything in the account"
                            ),
                        ),
                    )),
                    Ok(_) => {}
                    Err(e) => findings.push((
                        Status::Warn,
                        finding(
                            "aws.lookup-failed",
                            format!(
                                "the identity of the AWS credentials agentrun uses for {names} could not be looked up: {e}"
                            ),
                        ),
                    )),
                }
            }
            // `look` answers each target with its own kind, in order.
            _ => {}
        }
    }
    let status = if findings.iter().any(|(s, _)| *s == Status::Fail) {
        Status::Fail
    } else if findings.iter().any(|(s, _)| *s == Status::Warn) {
        Status::Warn
    } else {
        Status::Pass
    };
    let mut c = Check::new(
        ID,
        status,
        format!("looked at {}", looked.join(", ")),
        fixes.join("; "),
    );
    c.findings = findings.into_iter().map(|(_, f)| f).collect();
    c
}

fn push_fix<'a>(fixes: &mut Vec<&'a str>, fix: &'a str) {
    if !fixes.contains(&fix) {
        fixes.push(fix);
    }
}

/// The GitHub finding for one secret, if any: (status, rule, message).
fn github_finding(
    secret: &str,
    r: Result<GithubToken, String>,
) -> Option<(Status, &'static str, String)> {
    match r {
        Ok(GithubToken::FineGrained) => None,
        Ok(GithubToken::Classic(scopes)) => {
            let admin = admin_scopes(&scopes);
            if admin.is_empty() {
                Some((
                    Status::Warn,
                    "github.classic",
                    format!(
                        "secret {secret}: a classic GitHub token{}: prefer a fine-grained token, limited to chosen repositories and permissions",
                        if scopes.is_empty() {
                            " (no scopes)".to_string()
                        } else {
                            format!(" (scopes: {})", scopes.join(", "))
                        }
                    ),
                ))
            } else {
                Some((
                    Status::Fail,
                    "github.classic-admin",
                    format!(
                        "secret {secret}: a classic GitHub token with administrator scopes ({})",
                        admin.join(", ")
                    ),
                ))
            }
        }
        Err(e) => Some((
            Status::Warn,
            "github.lookup-failed",
            format!("secret {secret}: what kind of GitHub token it is could not be looked up: {e}"),
        )),
    }
}

/// Every credential to look at: each secret with a github probe, the Vault token when a
/// secret comes from `vault:`, the AWS identity once per `?region=` when one comes from
/// `aws-sm:`.
fn targets<'a>(profile: &'a Profile, got: &'a [Got]) -> Vec<Target<'a>> {
    let mut out = Vec::new();
    let mut vault_secrets = Vec::new();
    let mut aws_secrets: BTreeMap<Option<String>, Vec<&str>> = BTreeMap::new();
    for spec in &profile.secrets {
        if let Some(p) = spec
            .verify
            .probe
            .as_ref()
            .filter(|p| p.kind == ProbeKind::GitHub)
        {
            out.push(Target::Github {
                secret: &spec.name,
                url: p.url.clone(),
                timeout: p.timeout,
                value: got.iter().find(|g| g.name == spec.name),
            });
        }
        match &spec.source {
            Source::Vault(_) => vault_secrets.push(spec.name.as_str()),
            Source::AwsSm(AwsRef { region, .. }) | Source::AwsSsm(SsmRef { region, .. }) => {
                aws_secrets
                    .entry(region.clone())
                    .or_default()
                    .push(spec.name.as_str())
            }
            // No scope lookup for these yet (docs/contract.md §11 lists what is probed).
            Source::GcpSm(_) | Source::AzureKv(_) => {}
            Source::Env { .. }
            | Source::Dotenv { .. }
            | Source::File { .. }
            | Source::Systemd { .. } => {}
        }
    }
    if !vault_secrets.is_empty() {
        out.push(Target::Vault {
            secrets: vault_secrets,
        });
    }
    for (region, secrets) in aws_secrets {
        out.push(Target::Aws { region, secrets });
    }
    out
}

enum Outcome {
    Github(Result<GithubToken, String>),
    Vault(Result<Vec<String>, String>),
    Aws(Result<String, String>),
}

/// All lookups at once; the answers in the order of `targets`.
async fn look(targets: &[Target<'_>], profile: &Profile, ctx: &Context) -> Vec<Outcome> {
    let roots = extra_roots(ctx);
    futures_util::future::join_all(targets.iter().map(|t| {
        let roots = roots.clone();
        async move {
            match t {
                Target::Github {
                    url,
                    timeout,
                    value,
                    ..
                } => Outcome::Github(match (value, roots) {
                    (None, _) => Err(
                        "the secret was not fetched or not accepted, so its token could not be asked"
                            .to_string(),
                    ),
                    (_, Err(e)) => Err(e),
                    (Some(g), Ok(roots)) => {
                        verify::github_token_kind_trusting(url, &g.value, *timeout, roots).await
                    }
                }),
                Target::Vault { .. } => {
                    Outcome::Vault(vault::token_policies(profile.vault.as_ref(), ctx).await)
                }
                Target::Aws { region, .. } => Outcome::Aws(caller_arn(profile, region, ctx).await),
            }
        }
    }))
    .await
}

#[cfg(feature = "aws")]
async fn caller_arn(
    profile: &Profile,
    region: &Option<String>,
    ctx: &Context,
) -> Result<String, String> {
    crate::secrets::aws::caller_arn(profile.aws.as_ref(), region.as_deref(), ctx).await
}

#[cfg(not(feature = "aws"))]
async fn caller_arn(_: &Profile, _: &Option<String>, _: &Context) -> Result<String, String> {
    Err(crate::secrets::NotBuilt(crate::profile::SourceKind::AwsSm).to_string())
}

/// The CA bundle `SSL_CERT_FILE` names in agentrun's snapshot, trusted besides the system's
/// roots. The probes' TLS verifier reads the process's own `SSL_CERT_FILE` (the same
/// variable when agentrun starts); reading the snapshot keeps what is trusted what
/// [`Context`] holds.
fn extra_roots(ctx: &Context) -> Result<Vec<reqwest::Certificate>, String> {
    let Some(path) = ctx.var("SSL_CERT_FILE").filter(|p| !p.is_empty()) else {
        return Ok(Vec::new());
    };
    let shown = std::path::Path::new(path).display().to_string();
    let pem = std::fs::read(path).map_err(|e| format!("SSL_CERT_FILE={shown}: {e}"))?;
    reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("SSL_CERT_FILE={shown} is not a PEM bundle: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_root_arns() {
        assert!(is_account_root("arn:aws:iam::123456789012:root"));
        assert!(is_account_root("arn:aws-cn:iam::123456789012:root"));
        assert!(is_account_root("arn:aws-us-gov:iam::123456789012:root"));
        for not in [
            "arn:aws:iam::123456789012:user/root",
            "arn:aws:sts::123456789012:user/moto",
            "arn:aws:sts::123456789012:assumed-role/root/session",
            "arn:aws:iam::123456789012:role/root",
            "arn:aws:iam::12345678901:root",
            "arn:aws:iam::12345678901x:root",
            "arn:aws:iam:us-east-1:123456789012:root",
            "arn::iam::123456789012:root",
            "arn:aws:iam::123456789012:root:extra",
            "",
        ] {
            assert!(!is_account_root(not), "{not}");
        }
    }

    #[test]
    fn admin_scopes_are_found_by_name() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            admin_scopes(&s(&["repo", "admin:org", "delete_repo", "site_admin"])),
            ["admin:org", "delete_repo", "site_admin"]
        );
        assert!(admin_scopes(&s(&["repo", "read:org", "workflow", "administer"])).is_empty());
        let (st, rule, msg) = github_finding("GH", Ok(GithubToken::Classic(s(&["repo"])))).unwrap();
        assert_eq!((st, rule), (Status::Warn, "github.classic"));
        assert!(msg.contains("secret GH") && msg.contains("repo"), "{msg}");
        let (st, rule, _) =
            github_finding("GH", Ok(GithubToken::Classic(s(&["repo", "admin:org"])))).unwrap();
        assert_eq!((st, rule), (Status::Fail, "github.classic-admin"));
        assert!(github_finding("GH", Ok(GithubToken::FineGrained)).is_none());
    }
}
