//! Verification before the spawn: format checks (`pattern`, `min_length`) and live probes,
//! one value at a time.
//!
//! A probe sends the value to exactly one configured URL, in one header, and follows no
//! redirect (a redirect could carry the credential to another host). What a `verify` table
//! asks for is validated data in `profile::verify`; this module runs it. Refetching a value
//! that failed (it may have been rotated) is the orchestrator's loop
//! (`commands::fetch::verify_all`); this module only describes its attempts. What it
//! reports ([`Verification`], [`SecretCheck`]) holds names, outcomes and durations, never a
//! value.
//!
//! Imports `profile` and `secrets` (fetch outcomes for the report); neither imports it.

use crate::profile::SecretSpec;
use crate::secrets::{FetchError, Fetched};
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, Serializer};
use std::time::Duration;

pub use crate::profile::verify::{
    ANTHROPIC_VERSION, DEFAULT_HEADER, DEFAULT_PROBE_TIMEOUT, HeaderTemplate, Probe, ProbeKind,
    Verify, VerifySection,
};

/// The offline checks. The message never contains the value.
pub fn check_format(v: &Verify, value: &SecretString) -> Result<(), String> {
    let value = value.expose_secret();
    if let Some(min) = v.min_length {
        let len = value.chars().count();
        if len < min {
            return Err(format!(
                "the value has {len} characters, fewer than min_length = {min}"
            ));
        }
    }
    if let (Some(re), Some(text)) = (&v.pattern, &v.pattern_text)
        && !re.is_match(value)
    {
        return Err(format!("the value does not match pattern '{text}'"));
    }
    Ok(())
}

/// Format checks, then the probe if there is one.
pub async fn check_value(v: &Verify, value: &SecretString) -> Result<(), String> {
    check_format(v, value)?;
    match &v.probe {
        Some(p) => probe(p, value).await,
        None => Ok(()),
    }
}

/// Send the probe. `Err` says why the credential is not accepted, without the value.
/// The HTTP client every request carrying a credential uses: no redirects (one could carry
/// the credential to another host), no proxy (it would see a plain-http loopback request's
/// credential), the timeout on the connect and the whole request.
fn credential_client(
    timeout: std::time::Duration,
    extra_roots: Vec<reqwest::Certificate>,
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .tls_certs_merge(extra_roots)
        .user_agent(concat!("agentrun/", env!("CARGO_PKG_VERSION")))
        .build()
}

pub async fn probe(p: &Probe, value: &SecretString) -> Result<(), String> {
    let who = format!("probe {} ({})", p.kind.name(), p.target());
    let mut header_value = HeaderValue::from_str(&format!(
        "{}{}{}",
        p.header.before,
        value.expose_secret(),
        p.header.after
    ))
    .map_err(|_| {
        format!(
            "{who}: the value has characters a header cannot hold (a newline or control character)"
        )
    })?;
    header_value.set_sensitive(true);
    let client = credential_client(p.timeout, Vec::new())
        .map_err(|e| format!("{who}: cannot build the HTTP client: {e}"))?;
    let mut req = client
        .request(p.method.clone(), p.url.clone())
        .header(p.header.name.clone(), header_value);
    for (k, v) in &p.extra {
        req = req.header(*k, *v);
    }
    let sent = tokio::time::timeout(p.timeout + Duration::from_secs(1), req.send()).await;
    let resp = match sent {
        Err(_) => {
            return Err(format!(
                "{who}: no answer within {}s",
                p.timeout.as_secs_f64()
            ));
        }
        Ok(Err(e)) if e.is_timeout() => {
            return Err(format!(
                "{who}: no answer within {}s",
                p.timeout.as_secs_f64()
            ));
        }
        Ok(Err(e)) => {
            let mut cur: &(dyn std::error::Error + 'static) = &e;
            while let Some(next) = cur.source() {
                cur = next;
            }
            return Err(format!("{who}: the request failed: {cur}"));
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    drop(resp);
    if status == p.expect_status {
        return Ok(());
    }
    Err(match status {
        401 | 403 => format!("{who} answered HTTP {status}: the credential was rejected"),
        300..=399 => format!(
            "{who} answered HTTP {status} (a redirect): agentrun does not follow redirects with a credential; point `url` at the final endpoint"
        ),
        _ => format!("{who} answered HTTP {status}, expected {}", p.expect_status),
    })
}

/// What kind of GitHub token a value is, as the API's `X-OAuth-Scopes` header tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GithubToken {
    /// A classic token (personal access or OAuth): the header is present, with its scopes
    /// (possibly none). Scope names say what the token may do, never what it is.
    Classic(Vec<String>),
    /// No `X-OAuth-Scopes`: a fine-grained token (or an app's), scoped per repository.
    FineGrained,
}

/// Ask the GitHub API what kind of token `token` is: one `GET url` (the github probe's, by
/// default `https://api.github.com/user`) with the probe's header, then read
/// `X-OAuth-Scopes`. Same transport as [`probe`]: no redirect, no proxy, `timeout`.
pub async fn github_token_kind(
    url: &reqwest::Url,
    token: &SecretString,
    timeout: Duration,
) -> Result<GithubToken, String> {
    github_token_kind_trusting(url, token, timeout, Vec::new()).await
}

/// [`github_token_kind`], trusting `extra_roots` besides the system's (a bundle named by
/// `SSL_CERT_FILE` in agentrun's snapshot, say).
pub async fn github_token_kind_trusting(
    url: &reqwest::Url,
    token: &SecretString,
    timeout: Duration,
    extra_roots: Vec<reqwest::Certificate>,
) -> Result<GithubToken, String> {
    let host = url.host_str().unwrap_or_default();
    let who = match url.port() {
        Some(port) => format!("GitHub API at {}://{host}:{port}", url.scheme()),
        None => format!("GitHub API at {}://{host}", url.scheme()),
    };
    let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
        .map_err(|_| {
            format!(
                "{who}: the value has characters a header cannot hold (a newline or control character)"
            )
        })?;
    auth.set_sensitive(true);
    let client = credential_client(timeout, extra_roots)
        .map_err(|e| format!("{who}: cannot build the HTTP client: {e}"))?;
    let req = client
        .get(url.clone())
        .header(reqwest::header::AUTHORIZATION, auth)
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28");
    let resp = match tokio::time::timeout(timeout + Duration::from_secs(1), req.send()).await {
        Err(_) => {
            return Err(format!(
                "{who}: no answer within {}s",
                timeout.as_secs_f64()
            ));
        }
        Ok(Err(e)) if e.is_timeout() => {
            return Err(format!(
                "{who}: no answer within {}s",
                timeout.as_secs_f64()
            ));
        }
        Ok(Err(e)) => {
            let mut cur: &(dyn std::error::Error + 'static) = &e;
            while let Some(next) = cur.source() {
                cur = next;
            }
            return Err(format!("{who}: the request failed: {cur}"));
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    // Only an accepted token's answer says what the token is: a 401 has no scopes either.
    if !(200..300).contains(&status) {
        return Err(match status {
            401 | 403 => format!("{who} answered HTTP {status}: the token was rejected"),
            300..=399 => format!(
                "{who} answered HTTP {status} (a redirect): agentrun does not follow redirects with a credential; point `url` at the final endpoint"
            ),
            _ => format!("{who} answered HTTP {status}"),
        });
    }
    let scopes = resp.headers().get("x-oauth-scopes").map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    });
    drop(resp);
    Ok(match scopes {
        Some(s) => GithubToken::Classic(s),
        None => GithubToken::FineGrained,
    })
}

/// The outcome of one step, as the audit log and `check --json` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Failed(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    pub fn from_result(r: Result<(), String>) -> Outcome {
        match r {
            Ok(()) => Outcome::Ok,
            Err(e) => Outcome::Failed(e),
        }
    }
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3)
}

/// One verification attempt: attempt 1 checks the fetched value; attempt 2 follows a refetch.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub attempt: u32,
    /// For attempt 2: how the refetch went and how long it took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refetch: Option<RefetchReport>,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Time of the checks (format and probe), without the refetch.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct RefetchReport {
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    /// The source returned the same value as the first time (it was not rotated).
    pub same_value: bool,
}

/// The verification of one secret: its attempts, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub name: String,
    pub required: bool,
    pub attempts: Vec<Attempt>,
}

impl Verification {
    /// True when the last attempt passed.
    pub fn passed(&self) -> bool {
        self.attempts.last().is_some_and(|a| a.outcome.is_ok())
    }

    /// Why it failed: each attempt's reason.
    pub fn reason(&self) -> String {
        self.attempts
            .iter()
            .filter_map(|a| match (&a.outcome, &a.refetch) {
                (
                    _,
                    Some(RefetchReport {
                        outcome: Outcome::Failed(r),
                        ..
                    }),
                ) => Some(format!("refetch failed: {r}")),
                (
                    Outcome::Failed(r),
                    Some(RefetchReport {
                        same_value: true, ..
                    }),
                ) => Some(format!(
                    "after refetch (the source returned the same value): {r}"
                )),
                (Outcome::Failed(r), Some(_)) => Some(format!("after refetch: {r}")),
                (Outcome::Failed(r), None) => Some(r.clone()),
                (Outcome::Ok, _) => None,
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A required secret failed verification twice: the run must stop (exit 125).
#[derive(Debug, Clone, thiserror::Error)]
#[error("all credentials invalid, refusing to start: secret {name}: {reason}")]
pub struct VerifyError {
    pub name: String,
    pub reason: String,
}

/// The first required secret that failed verification, as the error that stops the run.
/// Optional secrets that fail are left out by the launcher, like missing ones.
pub fn refusal(verifications: &[Verification]) -> Option<VerifyError> {
    verifications
        .iter()
        .find(|v| v.required && !v.passed())
        .map(|v| VerifyError {
            name: v.name.clone(),
            reason: v.reason(),
        })
}

/// Per secret, what `check` reports: source, fetch outcome and time, verification.
#[derive(Debug, Clone, Serialize)]
pub struct SecretCheck {
    pub name: String,
    /// The scheme: env, dotenv, file, systemd, vault, aws-sm.
    pub kind: &'static str,
    /// The source as written in the profile.
    pub source: String,
    pub required: bool,
    pub fetch: Outcome,
    #[serde(rename = "fetch_ms", serialize_with = "millis")]
    pub fetch_time: Duration,
    /// `None` when the secret has no checks or its fetch failed.
    pub verify: Option<Verification>,
    /// True when a run would accept this secret (fetched and verified, or optional).
    pub ok: bool,
}

/// What `check` needs about the secrets: fetch everything, verify it, report, keep no value.
#[derive(Debug, Clone, Serialize)]
pub struct SecretsCheck {
    pub secrets: Vec<SecretCheck>,
    /// True when a run with the same profile would get past the secrets stage.
    pub ok: bool,
}

/// Per secret: how its fetch and verification went, and whether a run accepts it.
pub fn summarize(
    specs: &[SecretSpec],
    fetched: &[Fetched],
    verifications: &[Verification],
) -> SecretsCheck {
    let secrets: Vec<SecretCheck> = specs
        .iter()
        .zip(fetched)
        .map(|(spec, f)| {
            let verify = verifications.iter().find(|v| v.name == spec.name).cloned();
            let fetch = fetch_outcome(&f.value);
            let ok = !spec.required
                || (fetch.is_ok() && verify.as_ref().is_none_or(Verification::passed));
            SecretCheck {
                name: spec.name.clone(),
                kind: spec.source.kind().scheme(),
                source: spec.source_text.clone(),
                required: spec.required,
                fetch,
                fetch_time: f.duration,
                verify,
                ok,
            }
        })
        .collect();
    let ok = secrets.iter().all(|s| s.ok);
    SecretsCheck { secrets, ok }
}

/// A fetch error as `check` prints it (kept here so both outputs phrase it alike).
pub fn fetch_outcome(r: &Result<SecretString, FetchError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> VerifySection {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn format_messages_hide_the_value() {
        let v = Verify::from_section(&section("pattern = 'sk-[a-z]+'\nmin_length = 4")).unwrap();
        assert!(check_format(&v, &SecretString::from("sk-abc")).is_ok());
        let e = check_format(&v, &SecretString::from("xx-ABCDEF")).unwrap_err();
        assert!(!e.contains("ABCDEF"), "{e}");
    }
}
