//! AWS Secrets Manager source: `aws-sm:SECRET_ID[#KEY]` (`?stage=`, `?version_id=`, `?region=`).
//!
//! Owns the `[aws]` table and `GetSecretValue`. AWS configuration (files, IMDS, SSO) is loaded
//! only when a profile uses `aws-sm:`, and only once per region. Credentials come from the
//! standard chain; static keys in agentrun's environment snapshot ([`Context`]) are used as the
//! chain's first link would use them, so what agentrun reads is what its snapshot holds.
//! Errors become [`AwsError`], whose messages name the secret id, the region or endpoint and the
//! fix, never a value.

use crate::profile::AwsSection;
use crate::profile::{DurationKind, parse_duration};
use std::time::Duration;

#[cfg(feature = "aws")]
mod client;
#[cfg(feature = "aws")]
mod ssm;
#[cfg(feature = "aws")]
pub use client::caller_arn;
#[cfg(feature = "aws")]
pub(crate) use client::{Aws, connect};
#[cfg(feature = "aws")]
pub(crate) use ssm::Ssm;

/// Time limit when `[aws].timeout` is not set (one limit for the whole call, retries included).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries after the first try (connection errors, 5xx, throttling) when `[aws].retries` is not set.
pub const DEFAULT_RETRIES: u32 = 2;

/// `[aws]` validated; nothing loaded yet.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint: Option<String>,
    pub timeout: Duration,
    pub retries: u32,
}

impl AwsSettings {
    pub fn from_section(section: Option<&AwsSection>) -> Result<Self, AwsError> {
        let default = AwsSection::default();
        let s = section.unwrap_or(&default);
        let cfg = AwsError::Config;
        if let Some(e) = &s.endpoint {
            // Messages never quote a `user:pass@` in the endpoint.
            let e = &crate::scrub::strip_userinfo(e);
            let url = reqwest::Url::parse(e)
                .map_err(|err| cfg(format!("endpoint = \"{e}\" is not a URL ({err})")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(cfg(format!(
                    "endpoint = \"{e}\": write http(s)://HOST[:PORT]"
                )));
            }
        }
        for (key, v) in [("region", &s.region), ("profile", &s.profile)] {
            if v.as_deref().is_some_and(str::is_empty) {
                return Err(cfg(format!("{key} is empty: remove it or give a value")));
            }
        }
        let timeout = match &s.timeout {
            Some(t) => parse_duration("timeout", t, DurationKind::Request).map_err(cfg)?,
            None => DEFAULT_TIMEOUT,
        };
        Ok(AwsSettings {
            region: s.region.clone(),
            profile: s.profile.clone(),
            endpoint: s.endpoint.clone(),
            timeout,
            retries: s.retries.unwrap_or(DEFAULT_RETRIES),
        })
    }
}

/// Which AWS service a read went to: what messages call the source, the IAM action a read
/// needs, and what to check when it is not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsService {
    SecretsManager,
    ParameterStore,
}

impl AwsService {
    pub fn scheme(self) -> &'static str {
        match self {
            AwsService::SecretsManager => "aws-sm",
            AwsService::ParameterStore => "aws-ssm",
        }
    }

    pub fn action(self) -> &'static str {
        match self {
            AwsService::SecretsManager => "secretsmanager:GetSecretValue",
            AwsService::ParameterStore => "ssm:GetParameter",
        }
    }

    pub fn not_found_fix(self) -> &'static str {
        match self {
            AwsService::SecretsManager => "check the secret id, the region and the stage",
            AwsService::ParameterStore => {
                "check the parameter name (with its leading `/`), the region and the version or label"
            }
        }
    }
}

/// Why an AWS read (Secrets Manager or Parameter Store) failed. `secret` is the source as
/// messages name it (`aws-sm ID`, `aws-ssm NAME`). Clone: one failed set-up is reported per
/// secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsError {
    #[error("[aws] {0}")]
    Config(String),
    #[error("{secret} ({place}): not found{what}: {fix}")]
    NotFound {
        secret: String,
        place: String,
        what: String,
        fix: &'static str,
    },
    #[error(
        "{secret} ({place}): access denied: the caller's IAM policy lacks {action} on it{detail}"
    )]
    AccessDenied {
        secret: String,
        place: String,
        action: &'static str,
        detail: String,
    },
    #[error(
        "{secret} ({place}): AWS cannot decrypt the value: the caller needs kms:Decrypt on its \
         KMS key{detail}"
    )]
    Decryption {
        secret: String,
        place: String,
        detail: String,
    },
    #[error(
        "{secret} ({place}): throttled by AWS after {attempts} tries: retry later, or raise [aws].retries"
    )]
    Throttled {
        secret: String,
        place: String,
        attempts: u32,
    },
    #[error(
        "{secret} ({place}): the AWS credentials were rejected{detail}: refresh them \
         (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, [aws].profile, `aws sso login`)"
    )]
    BadCredentials {
        secret: String,
        place: String,
        detail: String,
    },
    #[error(
        "{secret} ({place}): no answer within {secs}s: check the network, or raise [aws].timeout"
    )]
    Timeout {
        secret: String,
        place: String,
        secs: f64,
    },
    #[error("{secret} ({place}): cannot connect: {reason}")]
    Unreachable {
        secret: String,
        place: String,
        reason: String,
    },
    #[error("{secret} ({place}): {msg}")]
    Other {
        secret: String,
        place: String,
        msg: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings() {
        let s = AwsSettings::from_section(None).unwrap();
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        let bad: AwsSection = toml::from_str("endpoint = \"nope\"").unwrap();
        assert!(AwsSettings::from_section(Some(&bad)).is_err());
        let bad: AwsSection = toml::from_str("timeout = \"0s\"").unwrap();
        assert!(AwsSettings::from_section(Some(&bad)).is_err());
    }
}
