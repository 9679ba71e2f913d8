//! Verification before the spawn: format checks (`pattern`, `min_length`), live probes, and
//! refetch-on-failure.
//!
//! A probe sends the value to exactly one configured URL, in one header, and follows no
//! redirect (a redirect could carry the credential to another host). When a check fails the
//! secret is fetched once more from its source, bypassing any cache (it may have been
//! rotated), and checked again. What this module reports ([`Verification`], [`SecretCheck`])
//! holds names, outcomes and durations, never a value.

use crate::profile::{DurationKind, SecretSpec};
use crate::secrets::{FetchError, Fetched, Fetcher};
use regex::Regex;
use reqwest::header::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use std::time::{Duration, Instant};

/// Probe time limit when `verify.timeout` is not set.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The header a `probe = "http"` sends when `verify.header` is not set.
pub const DEFAULT_HEADER: &str = "Authorization: Bearer {value}";
/// The `anthropic-version` the Anthropic probe sends.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// `verify = { ... }` of a long-form secret.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySection {
    pub pattern: Option<String>,
    pub min_length: Option<usize>,
    pub probe: Option<String>,
    pub url: Option<String>,
    pub header: Option<String>,
    pub method: Option<String>,
    pub expect_status: Option<u16>,
    pub timeout: Option<String>,
}

/// Which live check a probe is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// `GET https://api.openai.com/v1/models` with `Authorization: Bearer`.
    OpenAi,
    /// `GET https://api.anthropic.com/v1/models` with `x-api-key` and `anthropic-version`.
    Anthropic,
    /// `GET https://api.github.com/user` with `Authorization: Bearer` and a User-Agent.
    GitHub,
    /// Any endpoint: `url`, `method`, `header`, `expect_status`.
    Http,
}

impl ProbeKind {
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::OpenAi => "openai",
            ProbeKind::Anthropic => "anthropic",
            ProbeKind::GitHub => "github",
            ProbeKind::Http => "http",
        }
    }

    fn default_url(self) -> Option<&'static str> {
        match self {
            ProbeKind::OpenAi => Some("https://api.openai.com/v1/models"),
            ProbeKind::Anthropic => Some("https://api.anthropic.com/v1/models"),
            ProbeKind::GitHub => Some("https://api.github.com/user"),
            ProbeKind::Http => None,
        }
    }
}

/// The one header that carries the value: `name: before{value}after`.
#[derive(Debug, Clone)]
pub struct HeaderTemplate {
    pub name: HeaderName,
    before: String,
    after: String,
}

impl HeaderTemplate {
    /// Parse `Name: text with {value}`; `{value}` appears exactly once, in the value part.
    pub fn parse(line: &str) -> Result<HeaderTemplate, String> {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!(
                "header = \"{line}\" is not a header line: write e.g. \"{DEFAULT_HEADER}\""
            ));
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
            format!(
                "header = \"{line}\": `{}` is not a header name",
                name.trim()
            )
        })?;
        let value = value.trim_start();
        let Some((before, after)) = value.split_once("{value}") else {
            return Err(format!(
                "header = \"{line}\" has no `{{value}}`: the probe would not send the credential; write e.g. \"{DEFAULT_HEADER}\""
            ));
        };
        if after.contains("{value}") {
            return Err(format!("header = \"{line}\": `{{value}}` may appear once"));
        }
        if HeaderValue::from_str(before).is_err() || HeaderValue::from_str(after).is_err() {
            return Err(format!(
                "header = \"{line}\" has characters a header cannot hold"
            ));
        }
        Ok(HeaderTemplate {
            name,
            before: before.to_string(),
            after: after.to_string(),
        })
    }
}

/// A validated live probe.
#[derive(Debug, Clone)]
pub struct Probe {
    pub kind: ProbeKind,
    pub url: reqwest::Url,
    pub method: reqwest::Method,
    pub header: HeaderTemplate,
    /// Fixed headers the provider requires (never the value).
    pub extra: Vec<(&'static str, &'static str)>,
    pub expect_status: u16,
    pub timeout: Duration,
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl Probe {
    fn from_section(kind_name: &str, s: &VerifySection) -> Result<Probe, String> {
        let kind = match kind_name {
            "openai" => ProbeKind::OpenAi,
            "anthropic" => ProbeKind::Anthropic,
            "github" => ProbeKind::GitHub,
            "http" => ProbeKind::Http,
            other => {
                return Err(format!(
                    "probe = \"{other}\" is not known (known: openai, anthropic, github, http)"
                ));
            }
        };
        let url_text = match (&s.url, kind.default_url()) {
            (Some(u), _) => u.clone(),
            (None, Some(d)) => d.to_string(),
            (None, None) => {
                return Err(
                    "probe = \"http\" needs `url`, the endpoint that accepts the credential".into(),
                );
            }
        };
        let mut url = reqwest::Url::parse(&url_text)
            .map_err(|e| format!("url = \"{url_text}\" is not a URL ({e})"))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(format!(
                    "url = \"{url_text}\": the probe would send the credential unencrypted; use https (http is allowed for loopback only)"
                ));
            }
            other => {
                return Err(format!(
                    "url = \"{url_text}\": scheme `{other}` is not http(s)"
                ));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "url = \"{url_text}\": no user:password in a probe URL"
            ));
        }
        // A built-in probe given a bare base URL gets the provider's own path.
        if let (Some(d), true) = (kind.default_url(), url.path() == "/")
            && let Ok(default) = reqwest::Url::parse(d)
        {
            url.set_path(default.path());
        }
        if kind != ProbeKind::Http {
            for (key, set) in [
                ("header", s.header.is_some()),
                ("method", s.method.is_some()),
            ] {
                if set {
                    return Err(format!(
                        "`{key}` applies to probe = \"http\" only: probe = \"{kind_name}\" sends the provider's documented request"
                    ));
                }
            }
        }
        let method = match &s.method {
            None => reqwest::Method::GET,
            Some(m) => reqwest::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("method = \"{m}\" is not an HTTP method"))?,
        };
        let header = match kind {
            ProbeKind::Anthropic => HeaderTemplate::parse("x-api-key: {value}")?,
            ProbeKind::OpenAi | ProbeKind::GitHub => HeaderTemplate::parse(DEFAULT_HEADER)?,
            ProbeKind::Http => {
                HeaderTemplate::parse(s.header.as_deref().unwrap_or(DEFAULT_HEADER))?
            }
        };
        let extra = match kind {
            ProbeKind::Anthropic => vec![("anthropic-version", ANTHROPIC_VERSION)],
            ProbeKind::GitHub => vec![
                ("accept", "application/vnd.github+json"),
                ("x-github-api-version", "2022-11-28"),
            ],
            _ => Vec::new(),
        };
        let expect_status = s.expect_status.unwrap_or(200);
        if !(100..=599).contains(&expect_status) {
            return Err(format!(
                "expect_status = {expect_status} is not an HTTP status"
            ));
        }
        let timeout = match &s.timeout {
            None => DEFAULT_PROBE_TIMEOUT,
            Some(t) => crate::profile::parse_duration("timeout", t, DurationKind::Probe)?,
        };
        Ok(Probe {
            kind,
            url,
            method,
            header,
            extra,
            expect_status,
            timeout,
        })
    }

    /// Where the probe goes, for messages (no query string).
    pub fn target(&self) -> String {
        format!(
            "{} {}://{}{}",
            self.method,
            self.url.scheme(),
            self.url
                .host_str()
                .map(|h| match self.url.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                })
                .unwrap_or_default(),
            self.url.path()
        )
    }

    /// Send the probe. `Err` says why the credential is not accepted, without the value.
    pub async fn run(&self, value: &SecretString) -> Result<(), String> {
        let who = format!("probe {} ({})", self.kind.name(), self.target());
        let mut header_value = HeaderValue::from_str(&format!(
            "{}{}{}",
            self.header.before,
            value.expose_secret(),
            self.header.after
        ))
        .map_err(|_| {
            format!("{who}: the value has characters a header cannot hold (a newline or control character)")
        })?;
        header_value.set_sensitive(true);
        let client = reqwest::Client::builder()
            // A redirect could carry the credential to another host.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would see the credential of a plain-http (loopback) probe.
            .no_proxy()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .user_agent(concat!("agentrun/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("{who}: cannot build the HTTP client: {e}"))?;
        let mut req = client
            .request(self.method.clone(), self.url.clone())
            .header(self.header.name.clone(), header_value);
        for (k, v) in &self.extra {
            req = req.header(*k, *v);
        }
        let sent = tokio::time::timeout(self.timeout + Duration::from_secs(1), req.send()).await;
        let resp = match sent {
            Err(_) => {
                return Err(format!(
                    "{who}: no answer within {}s",
                    self.timeout.as_secs_f64()
                ));
            }
            Ok(Err(e)) if e.is_timeout() => {
                return Err(format!(
                    "{who}: no answer within {}s",
                    self.timeout.as_secs_f64()
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
        if status == self.expect_status {
            return Ok(());
        }
        Err(match status {
            401 | 403 => format!("{who} answered HTTP {status}: the credential was rejected"),
            300..=399 => format!(
                "{who} answered HTTP {status} (a redirect): agentrun does not follow redirects with a credential; point `url` at the final endpoint"
            ),
            _ => format!(
                "{who} answered HTTP {status}, expected {}",
                self.expect_status
            ),
        })
    }
}

/// A validated `verify` table: the pattern compiled, anchored to the whole value.
#[derive(Debug, Clone)]
pub struct Verify {
    pub pattern: Option<Regex>,
    pub pattern_text: Option<String>,
    pub min_length: Option<usize>,
    pub probe: Option<Probe>,
    pub section: VerifySection,
}

impl Verify {
    /// Validate at profile load. Errors are phrased for `secrets.NAME.verify.KEY`.
    pub fn from_section(section: &VerifySection) -> Result<Verify, String> {
        let pattern = match &section.pattern {
            None => None,
            Some(p) => Some(
                Regex::new(&format!("^(?:{p})$"))
                    .map_err(|e| format!("pattern is not a valid regex: {e}"))?,
            ),
        };
        let probe = match &section.probe {
            Some(name) => Some(Probe::from_section(name, section)?),
            None => {
                for (key, set) in [
                    ("url", section.url.is_some()),
                    ("header", section.header.is_some()),
                    ("method", section.method.is_some()),
                    ("expect_status", section.expect_status.is_some()),
                    ("timeout", section.timeout.is_some()),
                ] {
                    if set {
                        return Err(format!(
                            "`{key}` applies to a live probe only: add `probe = \"http\"` (or a built-in probe) or remove `{key}`"
                        ));
                    }
                }
                None
            }
        };
        Ok(Verify {
            pattern,
            pattern_text: section.pattern.clone(),
            min_length: section.min_length,
            probe,
            section: section.clone(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.pattern.is_none() && self.min_length.is_none() && self.probe.is_none()
    }

    /// The offline checks. The message never contains the value.
    pub fn check_format(&self, value: &SecretString) -> Result<(), String> {
        let v = value.expose_secret();
        if let Some(min) = self.min_length {
            let len = v.chars().count();
            if len < min {
                return Err(format!(
                    "the value has {len} characters, fewer than min_length = {min}"
                ));
            }
        }
        if let (Some(re), Some(text)) = (&self.pattern, &self.pattern_text)
            && !re.is_match(v)
        {
            return Err(format!("the value does not match pattern '{text}'"));
        }
        Ok(())
    }

    /// Format checks, then the probe if there is one.
    pub async fn check(&self, value: &SecretString) -> Result<(), String> {
        self.check_format(value)?;
        match &self.probe {
            Some(p) => p.run(value).await,
            None => Ok(()),
        }
    }
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

    fn from_result(r: Result<(), String>) -> Outcome {
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

/// Verify every fetched secret that has checks; on failure refetch it once and check again.
///
/// `fetched` is `fetcher.fetch_all(specs)` (same order). A value that passes after the refetch
/// replaces the first one in `fetched`, so the child gets the rotated credential. Secrets whose
/// fetch failed, or without checks, get no [`Verification`]. Probes run concurrently.
pub fn verify_all(
    fetcher: &Fetcher,
    specs: &[SecretSpec],
    fetched: &mut [Fetched],
) -> Vec<Verification> {
    let todo: Vec<usize> = specs
        .iter()
        .zip(fetched.iter())
        .enumerate()
        .filter(|(_, (spec, f))| !spec.verify.is_empty() && f.value.is_ok())
        .map(|(i, _)| i)
        .collect();
    if todo.is_empty() {
        return Vec::new();
    }
    let checks: Vec<(usize, SecretString)> = todo
        .iter()
        .filter_map(|&i| fetched[i].value.as_ref().ok().map(|v| (i, v.clone())))
        .collect();
    let first = run_checks(fetcher, specs, &checks);
    let mut verifications: Vec<Verification> = first
        .iter()
        .map(|(i, outcome, duration)| Verification {
            name: specs[*i].name.clone(),
            required: specs[*i].required,
            attempts: vec![Attempt {
                attempt: 1,
                refetch: None,
                outcome: outcome.clone(),
                duration: *duration,
            }],
        })
        .collect();

    // Refetch every failure at once, then check the new values at once.
    let failed: Vec<(usize, usize)> = first
        .iter()
        .enumerate()
        .filter(|(_, (_, o, _))| !o.is_ok())
        .map(|(k, (i, _, _))| (k, *i))
        .collect();
    if failed.is_empty() {
        return verifications;
    }
    let refetch_specs: Vec<&SecretSpec> = failed.iter().map(|(_, i)| &specs[*i]).collect();
    let refetched = fetcher.fetch_many(&refetch_specs);
    let mut second_checks = Vec::new();
    for ((k, i), f) in failed.iter().zip(refetched) {
        match f.value {
            Err(e) => verifications[*k].attempts.push(Attempt {
                attempt: 2,
                refetch: Some(RefetchReport {
                    outcome: Outcome::Failed(e.to_string()),
                    duration: f.duration,
                    same_value: false,
                }),
                outcome: Outcome::Failed(format!("refetch failed: {e}")),
                duration: Duration::ZERO,
            }),
            Ok(v) => {
                let same = fetched[*i]
                    .value
                    .as_ref()
                    .is_ok_and(|old| old.expose_secret() == v.expose_secret());
                second_checks.push((*k, *i, v, f.duration, same));
            }
        }
    }
    let pairs: Vec<(usize, SecretString)> = second_checks
        .iter()
        .map(|(_, i, v, _, _)| (*i, v.clone()))
        .collect();
    let second = run_checks(fetcher, specs, &pairs);
    for ((k, i, value, refetch_time, same), (_, outcome, duration)) in
        second_checks.into_iter().zip(second)
    {
        if outcome.is_ok() {
            fetched[i].value = Ok(value);
        }
        verifications[k].attempts.push(Attempt {
            attempt: 2,
            refetch: Some(RefetchReport {
                outcome: Outcome::Ok,
                duration: refetch_time,
                same_value: same,
            }),
            outcome,
            duration,
        });
    }
    verifications
}

/// Format checks and probes for `(index into specs, value)`, all probes at once.
fn run_checks(
    fetcher: &Fetcher,
    specs: &[SecretSpec],
    checks: &[(usize, SecretString)],
) -> Vec<(usize, Outcome, Duration)> {
    let needs_runtime = checks.iter().any(|(i, _)| specs[*i].verify.probe.is_some());
    if !needs_runtime {
        return checks
            .iter()
            .map(|(i, v)| {
                let start = Instant::now();
                let r = specs[*i].verify.check_format(v);
                (*i, Outcome::from_result(r), start.elapsed())
            })
            .collect();
    }
    let rt = match fetcher.runtime() {
        Ok(rt) => rt,
        Err(msg) => {
            return checks
                .iter()
                .map(|(i, _)| (*i, Outcome::Failed(msg.clone()), Duration::ZERO))
                .collect();
        }
    };
    rt.block_on(futures_util::future::join_all(checks.iter().map(
        |(i, v)| async move {
            let start = Instant::now();
            let r = specs[*i].verify.check(v).await;
            (*i, Outcome::from_result(r), start.elapsed())
        },
    )))
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

pub fn check(fetcher: &Fetcher, specs: &[SecretSpec]) -> SecretsCheck {
    let mut fetched = fetcher.fetch_all(specs);
    let verifications = verify_all(fetcher, specs, &mut fetched);
    summarize(specs, &fetched, &verifications)
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
    fn probes_are_validated_at_load() {
        let e = Verify::from_section(&section("probe = \"gitlab\"")).unwrap_err();
        assert!(e.contains("not known"), "{e}");
        let e = Verify::from_section(&section("probe = \"http\"")).unwrap_err();
        assert!(e.contains("needs `url`"), "{e}");
        let e = Verify::from_section(&section(
            "probe = \"http\"\nurl = \"https://x/y\"\nheader = \"Authorization: Bearer\"",
        ))
        .unwrap_err();
        assert!(e.contains("no `{value}`"), "{e}");
        let e = Verify::from_section(&section("probe = \"http\"\nurl = \"http://example.com/\""))
            .unwrap_err();
        assert!(e.contains("unencrypted"), "{e}");
        let e = Verify::from_section(&section("url = \"https://x/\"")).unwrap_err();
        assert!(e.contains("applies to a live probe only"), "{e}");
        let e = Verify::from_section(&section("probe = \"openai\"\nheader = \"A: {value}\""))
            .unwrap_err();
        assert!(e.contains("probe = \"http\" only"), "{e}");
    }

    #[test]
    fn builtin_probes_and_base_urls() {
        let v = Verify::from_section(&section("probe = \"openai\"")).unwrap();
        let p = v.probe.unwrap();
        assert_eq!(p.url.as_str(), "https://api.openai.com/v1/models");
        assert_eq!(p.header.name.as_str(), "authorization");
        let v = Verify::from_section(&section(
            "probe = \"anthropic\"\nurl = \"http://127.0.0.1:9\"",
        ))
        .unwrap();
        let p = v.probe.unwrap();
        assert_eq!(p.url.as_str(), "http://127.0.0.1:9/v1/models");
        assert_eq!(p.header.name.as_str(), "x-api-key");
        assert_eq!(p.extra, vec![("anthropic-version", ANTHROPIC_VERSION)]);
        let v = Verify::from_section(&section(
            "probe = \"http\"\nurl = \"https://h/check\"\nmethod = \"post\"\nheader = \"X-Key: k={value};\"\nexpect_status = 204\ntimeout = \"2s\"",
        ))
        .unwrap();
        let p = v.probe.unwrap();
        assert_eq!(p.method, reqwest::Method::POST);
        assert_eq!(
            (p.header.before.as_str(), p.header.after.as_str()),
            ("k=", ";")
        );
        assert_eq!(p.expect_status, 204);
        assert_eq!(p.timeout, Duration::from_secs(2));
        assert_eq!(p.target(), "POST https://h/check");
    }

    #[test]
    fn format_messages_hide_the_value() {
        let v = Verify::from_section(&section("pattern = 'sk-[a-z]+'\nmin_length = 4")).unwrap();
        assert!(v.check_format(&SecretString::from("sk-abc")).is_ok());
        let e = v
            .check_format(&SecretString::from("xx-ABCDEF"))
            .unwrap_err();
        assert!(!e.contains("ABCDEF"), "{e}");
    }
}
