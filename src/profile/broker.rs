//! The broker's keys, as plain data: `broker = ...` on a secret and the `[broker]` table
//! (docs/contract.md, "The credential broker").
//!
//! Structure and syntax are checked here (a leaf: it imports nothing of the crate). Host
//! patterns and path globs are the broker's own grammar: the command that loads a profile
//! checks them with `broker::rules` before anything runs.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::duration::{DurationKind, parse_duration};

/// Where a placeholder is replaced in a request by default.
pub const DEFAULT_PARTS: &[&str] = &["header", "path", "query"];
/// Every part a placeholder can be replaced in.
pub const PARTS: &[&str] = &["header", "path", "query", "body"];
/// The methods `methods` may name.
pub const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

/// The proxy variables a broker sets to itself.
pub const PROXY_VARS: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];
/// The variables a broker sets to the run's trust bundle.
pub const BUNDLE_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "PIP_CERT",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
];
/// The broker's other variables.
pub const OTHER_VARS: &[&str] = &[
    "NO_PROXY",
    "no_proxy",
    "NODE_USE_ENV_PROXY",
    "AGENTRUN_BROKER",
];

/// Whether the broker sets `name` in the child's environment: naming one in `[env].set` or
/// `[secrets]` next to a broker is a profile error (it would be overridden silently).
pub fn reserved(name: &str) -> bool {
    [PROXY_VARS, BUNDLE_VARS, OTHER_VARS]
        .iter()
        .any(|l| l.contains(&name))
}

/// `N/s`, `N/min` or `N/h`: a token bucket of `count` tokens refilled over `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rate {
    pub count: u32,
    #[serde(serialize_with = "secs")]
    pub per: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

impl Rate {
    pub fn parse(text: &str) -> Result<Rate, String> {
        let bad = || {
            format!("rate = \"{text}\" is not a rate: write e.g. \"60/min\" (N/s, N/min or N/h)")
        };
        let (n, unit) = text.split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(format!(
                "rate = \"{text}\": a rate of 0 refuses every request; remove the secret's `broker` instead"
            ));
        }
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Rate { count, per })
    }
}

/// `base_url = { env = "...", upstream = "https://..." }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BaseUrl {
    pub env: String,
    pub upstream: String,
}

/// The long form of a secret's `broker`, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecretBroker {
    hosts: Vec<String>,
    header: Option<String>,
    #[serde(rename = "in")]
    parts: Option<Vec<String>>,
    methods: Option<Vec<String>>,
    paths: Option<Vec<String>>,
    rate: Option<String>,
    base_url: Option<BaseUrl>,
}

/// A brokered secret's rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretBroker {
    /// Hosts that may receive the value (the broker's host-pattern syntax).
    pub hosts: Vec<String>,
    /// A header line with `{value}`, set on every request to these hosts (auth-slot mode).
    pub header: Option<String>,
    /// Where the placeholder is replaced: a subset of [`PARTS`].
    #[serde(rename = "in")]
    pub parts: Vec<String>,
    /// Allowed methods (upper case), if limited.
    pub methods: Option<Vec<String>>,
    /// Allowed path globs, if limited.
    pub paths: Option<Vec<String>>,
    /// This secret's rate, if not the `[broker]` default.
    pub rate: Option<Rate>,
    pub base_url: Option<BaseUrl>,
}

impl SecretBroker {
    /// `broker = "host"`, `broker = ["a", "b"]` or `broker = { hosts = [...], ... }`.
    pub fn parse(v: toml::Value) -> Result<SecretBroker, String> {
        let raw = match v {
            toml::Value::String(h) => RawSecretBroker {
                hosts: vec![h],
                ..RawSecretBroker::default()
            },
            toml::Value::Array(a) => RawSecretBroker {
                hosts: a
                    .into_iter()
                    .map(|h| match h {
                        toml::Value::String(s) => Ok(s),
                        other => Err(format!(
                            "a host is a string like \"api.openai.com\", found {}",
                            other.type_str()
                        )),
                    })
                    .collect::<Result<_, _>>()?,
                ..RawSecretBroker::default()
            },
            v @ toml::Value::Table(_) => {
                RawSecretBroker::deserialize(v).map_err(|e| e.message().to_string())?
            }
            other => {
                return Err(format!(
                    "expected a host (\"api.openai.com\"), a list of hosts or a table with `hosts`, found {}",
                    other.type_str()
                ));
            }
        };
        if raw.hosts.is_empty() {
            return Err("`hosts` is empty: name the hosts that may receive the value".into());
        }
        if let Some(h) = &raw.header {
            let Some((name, rest)) = h.split_once(':') else {
                return Err(format!(
                    "header = \"{h}\" is not a header line: write e.g. \"Authorization: Bearer {{value}}\""
                ));
            };
            if name.trim().is_empty() || !rest.contains("{value}") {
                return Err(format!(
                    "header = \"{h}\" has no `{{value}}`: write e.g. \"Authorization: Bearer {{value}}\""
                ));
            }
        }
        let parts = match raw.parts {
            None => DEFAULT_PARTS.iter().map(|p| (*p).to_owned()).collect(),
            Some(p) => {
                if p.is_empty() {
                    return Err(format!(
                        "`in` is empty: name where the placeholder is replaced, of {}",
                        PARTS.join(", ")
                    ));
                }
                for x in &p {
                    if !PARTS.contains(&x.as_str()) {
                        return Err(format!(
                            "in = [\"{x}\"]: unknown part; the parts are {}",
                            PARTS.join(", ")
                        ));
                    }
                }
                p
            }
        };
        if let Some(m) = &raw.methods {
            if m.is_empty() {
                return Err("`methods` is empty: it would refuse every request; remove it or name the methods".into());
            }
            for x in m {
                if !METHODS.contains(&x.as_str()) {
                    return Err(format!(
                        "methods = [\"{x}\"]: not a method; write them upper case, of {}",
                        METHODS.join(", ")
                    ));
                }
            }
        }
        if let Some(p) = &raw.paths {
            if p.is_empty() {
                return Err(
                    "`paths` is empty: it would refuse every request; remove it or name the paths"
                        .into(),
                );
            }
            for x in p {
                if !x.starts_with('/') {
                    return Err(format!("paths = [\"{x}\"]: a path glob starts with `/`"));
                }
            }
        }
        let rate = raw.rate.as_deref().map(Rate::parse).transpose()?;
        Ok(SecretBroker {
            hosts: raw.hosts,
            header: raw.header,
            parts,
            methods: raw.methods,
            paths: raw.paths,
            rate,
            base_url: raw.base_url,
        })
    }
}

/// `[broker]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBrokerSection {
    #[serde(default)]
    allow: Vec<String>,
    ca_cert: Option<String>,
    rate: Option<String>,
    ttl: Option<String>,
    refresh: Option<String>,
}

/// `[broker]`, parsed (paths still as written: the profile resolves them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BrokerSection {
    /// Hosts reachable without a credential: tunnelled, not read.
    pub allow: Vec<String>,
    /// More roots to trust for upstreams (PEM file).
    pub ca_cert: Option<std::path::PathBuf>,
    /// The default rate of each brokered secret.
    pub rate: Option<Rate>,
    /// Brokered secrets are revoked this long after the start.
    #[serde(serialize_with = "opt_secs")]
    pub ttl: Option<Duration>,
    /// Brokered secrets are refetched this often.
    #[serde(serialize_with = "opt_secs")]
    pub refresh: Option<Duration>,
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs()),
        None => s.serialize_none(),
    }
}

impl RawBrokerSection {
    pub(super) fn parse(
        self,
        resolve: impl Fn(&str) -> std::path::PathBuf,
    ) -> Result<BrokerSection, String> {
        let dur = |key: &str, v: &Option<String>| {
            v.as_deref()
                .map(|t| parse_duration(&format!("broker.{key}"), t, DurationKind::Probe))
                .transpose()
        };
        Ok(BrokerSection {
            allow: self.allow,
            ca_cert: match self.ca_cert.as_deref() {
                Some("") => {
                    return Err("broker.ca_cert is empty: give a PEM file, or remove it".into());
                }
                Some(p) => Some(resolve(p)),
                None => None,
            },
            rate: self
                .rate
                .as_deref()
                .map(Rate::parse)
                .transpose()
                .map_err(|e| format!("broker.{e}"))?,
            ttl: dur("ttl", &self.ttl)?,
            refresh: dur("refresh", &self.refresh)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(t: &str) -> toml::Value {
        toml::from_str::<toml::Table>(&format!("b = {t}")).unwrap()["b"].clone()
    }

    #[test]
    fn short_and_long_forms() {
        let b = SecretBroker::parse(table("\"api.openai.com\"")).unwrap();
        assert_eq!(b.hosts, ["api.openai.com"]);
        assert_eq!(b.parts, DEFAULT_PARTS);
        let b = SecretBroker::parse(table("[\"a.example\", \"b.example:8443\"]")).unwrap();
        assert_eq!(b.hosts.len(), 2);
        let b = SecretBroker::parse(table(
            "{ hosts = [\"api.github.com\"], methods = [\"GET\"], paths = [\"/repos/**\"], rate = \"60/min\", header = \"Authorization: Bearer {value}\", in = [\"header\", \"body\"] }",
        ))
        .unwrap();
        assert_eq!(
            b.rate,
            Some(Rate {
                count: 60,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(b.methods.as_deref(), Some(&["GET".to_owned()][..]));
    }

    #[test]
    fn bad_input_says_the_fix() {
        let cases = [
            ("[]", "`hosts` is empty"),
            ("{ hosts = [] }", "`hosts` is empty"),
            ("3", "expected a host"),
            (
                "{ hosts = [\"a\"], header = \"Authorization: Bearer\" }",
                "has no `{value}`",
            ),
            (
                "{ hosts = [\"a\"], header = \"{value}\" }",
                "not a header line",
            ),
            ("{ hosts = [\"a\"], in = [\"cookie\"] }", "unknown part"),
            ("{ hosts = [\"a\"], methods = [\"get\"] }", "upper case"),
            (
                "{ hosts = [\"a\"], paths = [\"repos\"] }",
                "starts with `/`",
            ),
            (
                "{ hosts = [\"a\"], rate = \"60 per minute\" }",
                "not a rate",
            ),
            (
                "{ hosts = [\"a\"], rate = \"0/s\" }",
                "refuses every request",
            ),
            ("{ hosts = [\"a\"], nope = 1 }", "unknown field"),
        ];
        for (t, want) in cases {
            let e = SecretBroker::parse(table(t)).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
    }

    #[test]
    fn section_durations_and_rates() {
        let raw = RawBrokerSection {
            allow: vec!["en.wikipedia.org".into()],
            ca_cert: Some("ca.pem".into()),
            rate: Some("600/min".into()),
            ttl: Some("8h".into()),
            refresh: Some("15m".into()),
        };
        let s = raw
            .parse(|p| std::path::PathBuf::from("/w").join(p))
            .unwrap();
        assert_eq!(s.ttl, Some(Duration::from_secs(8 * 3600)));
        assert_eq!(
            s.ca_cert.as_deref(),
            Some(std::path::Path::new("/w/ca.pem"))
        );
        let bad = RawBrokerSection {
            ttl: Some("soon".into()),
            ..RawBrokerSection::default()
        };
        assert!(bad.parse(|p| p.into()).unwrap_err().contains("broker.ttl"));
    }
}
