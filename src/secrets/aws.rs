//! AWS Secrets Manager source: `aws-sm:SECRET_ID[#KEY]` (`?stage=`, `?version_id=`, `?region=`).
//!
//! Owns the `[aws]` table and `GetSecretValue`. AWS configuration (files, IMDS, SSO) is loaded
//! only when a profile uses `aws-sm:`, and only once per region. Credentials come from the
//! standard chain; static keys in agentrun's environment snapshot ([`Context`]) are used as the
//! chain's first link would use them, so what agentrun reads is what its snapshot holds.
//! Errors become [`AwsError`], whose messages name the secret id, the region or endpoint and the
//! fix, never a value.

use crate::context::Context;
use crate::profile::AwsSection;
use crate::profile::{AwsRef, DurationKind, parse_duration};
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::config::{Credentials, Region};
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use secrecy::SecretString;
use std::time::Duration;

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

/// Why an AWS Secrets Manager read failed. Clone: one failed set-up is reported per secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsError {
    #[error("[aws] {0}")]
    Config(String),
    #[error(
        "aws-sm {secret_id} ({place}): not found{what}: check the secret id, the region and the stage"
    )]
    NotFound {
        secret_id: String,
        place: String,
        what: String,
    },
    #[error(
        "aws-sm {secret_id} ({place}): access denied: the caller's IAM policy lacks \
         secretsmanager:GetSecretValue on this secret{detail}"
    )]
    AccessDenied {
        secret_id: String,
        place: String,
        detail: String,
    },
    #[error(
        "aws-sm {secret_id} ({place}): Secrets Manager cannot decrypt the secret: the caller needs \
         kms:Decrypt on the secret's KMS key{detail}"
    )]
    Decryption {
        secret_id: String,
        place: String,
        detail: String,
    },
    #[error(
        "aws-sm {secret_id} ({place}): throttled by AWS after {attempts} tries: retry later, or raise [aws].retries"
    )]
    Throttled {
        secret_id: String,
        place: String,
        attempts: u32,
    },
    #[error(
        "aws-sm {secret_id} ({place}): the AWS credentials were rejected{detail}: refresh them \
         (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, [aws].profile, `aws sso login`)"
    )]
    BadCredentials {
        secret_id: String,
        place: String,
        detail: String,
    },
    #[error(
        "aws-sm {secret_id} ({place}): no answer within {secs}s: check the network, or raise [aws].timeout"
    )]
    Timeout {
        secret_id: String,
        place: String,
        secs: f64,
    },
    #[error("aws-sm {secret_id} ({place}): cannot connect: {reason}")]
    Unreachable {
        secret_id: String,
        place: String,
        reason: String,
    },
    #[error("aws-sm {secret_id} ({place}): {msg}")]
    Other {
        secret_id: String,
        place: String,
        msg: String,
    },
}

/// A loaded client for one region.
#[derive(Clone)]
pub(crate) struct Aws {
    client: Client,
    place: String,
    settings: AwsSettings,
}

/// Load the AWS configuration for one region (`None`: the chain's region).
pub(crate) async fn connect(settings: &AwsSettings, region: Option<&str>, ctx: &Context) -> Aws {
    let (conf, place) = load(settings, region, ctx).await;
    Aws {
        client: Client::new(&conf),
        place,
        settings: settings.clone(),
    }
}

/// The shared configuration every AWS client of a run is built from (`[aws]`, the chain,
/// the endpoint), and where it points, for messages.
async fn load(
    settings: &AwsSettings,
    region: Option<&str>,
    ctx: &Context,
) -> (aws_config::SdkConfig, String) {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    let region = region.or(settings.region.as_deref());
    if let Some(r) = region {
        loader = loader.region(Region::new(r.to_string()));
    }
    if let Some(p) = &settings.profile {
        loader = loader.profile_name(p);
    }
    if let Some(e) = &settings.endpoint {
        loader = loader.endpoint_url(e);
    }
    // The chain's first link, read from the snapshot. An explicit profile takes precedence.
    if settings.profile.is_none()
        && let (Some(id), Some(key)) = (
            ctx.var_str("AWS_ACCESS_KEY_ID").filter(|v| !v.is_empty()),
            ctx.var_str("AWS_SECRET_ACCESS_KEY")
                .filter(|v| !v.is_empty()),
        )
    {
        let session = ctx
            .var_str("AWS_SESSION_TOKEN")
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        loader = loader.credentials_provider(Credentials::new(
            id,
            key,
            session,
            None,
            "agentrun-environment",
        ));
    }
    let t = settings.timeout;
    loader = loader
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(t)
                .operation_attempt_timeout(t)
                .operation_timeout(t)
                .build(),
        )
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(settings.retries.saturating_add(1))
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(1)),
        );
    let conf = loader.load().await;
    let endpoint = settings
        .endpoint
        .as_deref()
        .map(|e| crate::scrub::strip_userinfo(e).into_owned());
    let place = match (&endpoint, conf.region()) {
        (Some(e), Some(r)) => format!("{r} at {e}"),
        (Some(e), None) => e.clone(),
        (None, Some(r)) => format!("region {r}"),
        (None, None) => "no region".to_string(),
    };
    (conf, place)
}

/// The ARN of the identity agentrun's AWS credentials stand for: `sts:GetCallerIdentity`
/// with the `[aws]` settings (`endpoint` included) and the credential chain, as a fetch
/// loads them. `region`: a source's `?region=` (`None`: `[aws].region` or the chain's).
/// Messages name the endpoint or region and the fix, never a key.
pub async fn caller_arn(
    section: Option<&AwsSection>,
    region: Option<&str>,
    ctx: &Context,
) -> Result<String, String> {
    let settings = AwsSettings::from_section(section).map_err(|e| e.to_string())?;
    let (conf, place) = load(&settings, region, ctx).await;
    let client = aws_sdk_sts::Client::new(&conf);
    let who = format!("sts:GetCallerIdentity ({place})");
    let limit = settings.timeout + Duration::from_secs(1);
    let out = match tokio::time::timeout(limit, client.get_caller_identity().send()).await {
        Err(_) => {
            return Err(format!(
                "{who}: no answer within {}s: check the network, or raise [aws].timeout",
                settings.timeout.as_secs_f64()
            ));
        }
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            let detail = match &e {
                SdkError::ServiceError(se) => {
                    let err = se.err();
                    let code = err.code().unwrap_or("service error");
                    let msg = err
                        .message()
                        .map(|m| format!(" ({})", m.replace(['\n', '\r'], " ")))
                        .unwrap_or_default();
                    format!("{code}{msg}")
                }
                SdkError::DispatchFailure(df) if df.is_io() => {
                    format!("cannot connect: {}", root_cause(&e))
                }
                _ => hint(DisplayErrorContext(&e).to_string()),
            };
            return Err(format!("{who}: {detail}"));
        }
    };
    out.arn()
        .map(str::to_string)
        .ok_or_else(|| format!("{who}: the answer has no Arn"))
}

impl Aws {
    /// `GetSecretValue`, always with an explicit stage (AWSCURRENT by default) unless a version
    /// id is pinned. Always a fresh call: nothing is cached.
    pub(crate) async fn read(&self, r: &AwsRef) -> Result<SecretString, AwsError> {
        let id = r.secret_id.clone();
        let place = self.place.clone();
        let mut req = self.client.get_secret_value().secret_id(&r.secret_id);
        let stage = match (&r.stage, &r.version_id) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(_)) => None,
            (None, None) => Some("AWSCURRENT".to_string()),
        };
        if let Some(s) = &stage {
            req = req.version_stage(s);
        }
        if let Some(v) = &r.version_id {
            req = req.version_id(v);
        }
        let what = match (&stage, &r.version_id) {
            (Some(s), Some(v)) => format!(" (stage {s}, version {v})"),
            (Some(s), None) => format!(" (stage {s})"),
            (None, Some(v)) => format!(" (version {v})"),
            (None, None) => String::new(),
        };
        // The SDK's own operation timeout ends the call; this is the backstop.
        let limit = self.settings.timeout + Duration::from_secs(1);
        let out = match tokio::time::timeout(limit, req.send()).await {
            Err(_) => {
                return Err(AwsError::Timeout {
                    secret_id: id,
                    place,
                    secs: self.settings.timeout.as_secs_f64(),
                });
            }
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(self.error(e, id, what)),
        };
        let text = match (out.secret_string(), out.secret_binary()) {
            (Some(s), _) => s.to_string(),
            (None, Some(b)) => {
                String::from_utf8(b.as_ref().to_vec()).map_err(|_| AwsError::Other {
                    secret_id: id.clone(),
                    place: place.clone(),
                    msg: "the binary secret is not UTF-8 text: agentrun passes text only".into(),
                })?
            }
            (None, None) => {
                return Err(AwsError::Other {
                    secret_id: id,
                    place,
                    msg: "the secret version has no value".into(),
                });
            }
        };
        let text = match &r.key {
            None => text,
            Some(key) => json_field(&text, key).map_err(|msg| AwsError::Other {
                secret_id: id.clone(),
                place: place.clone(),
                msg,
            })?,
        };
        if text.is_empty() {
            return Err(AwsError::Other {
                secret_id: id,
                place,
                msg: "the value is empty: an empty credential is never valid".into(),
            });
        }
        Ok(SecretString::from(text))
    }

    fn error(
        &self,
        e: SdkError<GetSecretValueError, HttpResponse>,
        secret_id: String,
        what: String,
    ) -> AwsError {
        let place = self.place.clone();
        let secs = self.settings.timeout.as_secs_f64();
        match &e {
            SdkError::ServiceError(se) => {
                let err = se.err();
                // Some endpoints (moto's IAM enforcement, some proxies) answer a JSON-protocol
                // call with a query-protocol XML error, which the SDK cannot classify.
                let body = se
                    .raw()
                    .body()
                    .bytes()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                let code = err
                    .code()
                    .map(str::to_string)
                    .or_else(|| xml_element(&body, "Code"))
                    .unwrap_or_default();
                let code = code.as_str();
                let detail = err
                    .message()
                    .map(str::to_string)
                    .or_else(|| xml_element(&body, "Message"))
                    .map(|m| format!(" ({})", m.replace(['\n', '\r'], " ")))
                    .unwrap_or_default();
                match code {
                    "ResourceNotFoundException" => AwsError::NotFound {
                        secret_id,
                        place,
                        what,
                    },
                    "AccessDeniedException" | "AccessDenied" => AwsError::AccessDenied {
                        secret_id,
                        place,
                        detail,
                    },
                    "DecryptionFailure" | "KMSAccessDeniedException" => AwsError::Decryption {
                        secret_id,
                        place,
                        detail,
                    },
                    "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" => {
                        AwsError::Throttled {
                            secret_id,
                            place,
                            attempts: self.settings.retries + 1,
                        }
                    }
                    "UnrecognizedClientException"
                    | "InvalidClientTokenId"
                    | "InvalidSignatureException"
                    | "SignatureDoesNotMatch"
                    | "ExpiredTokenException"
                    | "ExpiredToken" => AwsError::BadCredentials {
                        secret_id,
                        place,
                        detail,
                    },
                    _ => AwsError::Other {
                        secret_id,
                        place,
                        msg: format!(
                            "{}{detail}",
                            if code.is_empty() {
                                "service error"
                            } else {
                                code
                            }
                        ),
                    },
                }
            }
            SdkError::TimeoutError(_) => AwsError::Timeout {
                secret_id,
                place,
                secs,
            },
            SdkError::DispatchFailure(df) => {
                if df.is_timeout() {
                    AwsError::Timeout {
                        secret_id,
                        place,
                        secs,
                    }
                } else if df.is_io() {
                    AwsError::Unreachable {
                        secret_id,
                        place,
                        reason: root_cause(&e),
                    }
                } else {
                    AwsError::Other {
                        secret_id,
                        place,
                        msg: hint(DisplayErrorContext(&e).to_string()),
                    }
                }
            }
            _ => AwsError::Other {
                secret_id,
                place,
                msg: hint(DisplayErrorContext(&e).to_string()),
            },
        }
    }
}

/// The text of the first `<name>...</name>` element, short and on one line.
fn xml_element(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = body.find(&open)? + open.len();
    let len = body[start..].find(&close)?;
    let text: String = body[start..start + len].chars().take(200).collect();
    Some(text).filter(|t| !t.is_empty())
}

/// Add the fix to the SDK's most common set-up failures.
fn hint(msg: String) -> String {
    let msg = msg.replace(['\n', '\r'], " ");
    if msg.contains("no credentials") || msg.contains("credentials provider") {
        format!(
            "{msg}: no AWS credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, [aws].profile, or run where a role is available"
        )
    } else if msg.to_ascii_lowercase().contains("region") {
        format!("{msg}: set [aws].region, `?region=` on the source, or AWS_REGION")
    } else {
        msg
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// `#KEY` of a JSON object secret. A string field is taken as is; any other JSON value as its
/// JSON text. Messages list key names (never values).
fn json_field(text: &str, key: &str) -> Result<String, String> {
    let parsed: serde_json::Value = serde_json::from_str(text).map_err(|_| {
        format!("the secret is not JSON, so `#{key}` cannot pick a field: drop `#{key}` to take the whole value")
    })?;
    let serde_json::Value::Object(map) = parsed else {
        return Err(format!(
            "the secret is JSON but not an object, so `#{key}` cannot pick a field"
        ));
    };
    match map.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => {
            let names: Vec<&str> = map.keys().map(String::as_str).take(20).collect();
            Err(format!(
                "the JSON secret has no key `{key}` (keys there: {}): fix the `#KEY` part of the source",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys() {
        assert_eq!(json_field(r#"{"a":"x","n":3}"#, "a").unwrap(), "x");
        assert_eq!(json_field(r#"{"a":"x","n":3}"#, "n").unwrap(), "3");
        let e = json_field(r#"{"a":"secret-value"}"#, "b").unwrap_err();
        assert!(
            e.contains("no key `b`") && e.contains("keys there: a"),
            "{e}"
        );
        assert!(!e.contains("secret-value"));
        let e = json_field("plain-secret", "b").unwrap_err();
        assert!(e.contains("not JSON") && !e.contains("plain-secret"), "{e}");
    }

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
