//! The `verify = { ... }` table of a secret, as validated data: format checks and a live
//! probe's request (kind, URL, method, the one header as a template). Parsing and validation
//! only: sending a probe and checking a value belong to `crate::verify`.
//!
//! Imports nothing of the crate (see `profile`).

use regex::Regex;
use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use std::time::Duration;

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
    /// The text before `{value}`.
    pub before: String,
    /// The text after `{value}`.
    pub after: String,
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
            Some(t) => super::parse_duration("timeout", t, super::DurationKind::Probe)?,
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
}
