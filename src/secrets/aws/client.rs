//! The AWS SDK side of `aws-sm:` (and the configuration `aws-ssm:` and preflight's
//! `sts:GetCallerIdentity` share): built only with the `aws` feature.

use super::{AwsError, AwsService, AwsSettings};
use crate::context::Context;
use crate::profile::{AwsRef, AwsSection};
use crate::secrets::value::json_field;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::config::{Credentials, Region};
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use secrecy::SecretString;
use std::time::Duration;

/// A loaded configuration for one region, with its Secrets Manager and Parameter Store
/// clients (building a client does no I/O).
#[derive(Clone)]
pub(crate) struct Aws {
    client: Client,
    /// Parameter Store, from the same configuration (`aws-ssm:`; see `ssm.rs`).
    pub(super) ssm: aws_sdk_ssm::Client,
    pub(super) place: String,
    pub(super) settings: AwsSettings,
}

/// Load the AWS configuration for one region (`None`: the chain's region).
pub(crate) async fn connect(settings: &AwsSettings, region: Option<&str>, ctx: &Context) -> Aws {
    let (conf, place) = load(settings, region, ctx).await;
    Aws {
        client: Client::new(&conf),
        ssm: aws_sdk_ssm::Client::new(&conf),
        place,
        settings: settings.clone(),
    }
}

/// The shared configuration every AWS client of a run is built from (`[aws]`, the chain,
/// the endpoint), and where it points, for messages.
pub(super) async fn load(
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
        let call = Call {
            secret: format!("aws-sm {}", r.secret_id),
            place: &self.place,
            settings: &self.settings,
            service: AwsService::SecretsManager,
        };
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
        let out = call.send(req.send(), &what).await?;
        let text = match (out.secret_string(), out.secret_binary()) {
            (Some(s), _) => s.to_string(),
            (None, Some(b)) => String::from_utf8(b.as_ref().to_vec()).map_err(|_| {
                call.other("the binary secret is not UTF-8 text: agentrun passes text only")
            })?,
            (None, None) => return Err(call.other("the secret version has no value")),
        };
        call.finish(text, r.key.as_deref())
    }
}

/// One read's context, for its messages: the source as messages name it, where it went, and
/// the settings its limits came from.
pub(super) struct Call<'a> {
    pub(super) secret: String,
    pub(super) place: &'a str,
    pub(super) settings: &'a AwsSettings,
    pub(super) service: AwsService,
}

impl Call<'_> {
    /// Send under the backstop limit (the SDK's own operation timeout ends the call first),
    /// each failure classified.
    pub(super) async fn send<T, E>(
        &self,
        fut: impl std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        what: &str,
    ) -> Result<T, AwsError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let limit = self.settings.timeout + Duration::from_secs(1);
        match tokio::time::timeout(limit, fut).await {
            Err(_) => Err(AwsError::Timeout {
                secret: self.secret.clone(),
                place: self.place.to_string(),
                secs: self.settings.timeout.as_secs_f64(),
            }),
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(self.error(e, what)),
        }
    }

    pub(super) fn other(&self, msg: impl Into<String>) -> AwsError {
        AwsError::Other {
            secret: self.secret.clone(),
            place: self.place.to_string(),
            msg: msg.into(),
        }
    }

    /// The value: its `#KEY` when the source names one, never empty.
    pub(super) fn finish(&self, text: String, key: Option<&str>) -> Result<SecretString, AwsError> {
        let text = match key {
            None => text,
            Some(key) => json_field(&text, key).map_err(|msg| self.other(msg))?,
        };
        if text.is_empty() {
            return Err(self.other("the value is empty: an empty credential is never valid"));
        }
        Ok(SecretString::from(text))
    }

    fn error<E>(&self, e: SdkError<E, HttpResponse>, what: &str) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let secret = self.secret.clone();
        let place = self.place.to_string();
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
                    "ResourceNotFoundException"
                    | "ParameterNotFound"
                    | "ParameterVersionNotFound"
                    | "ParameterVersionLabelNotFound" => AwsError::NotFound {
                        secret,
                        place,
                        what: what.to_string(),
                        fix: self.service.not_found_fix(),
                    },
                    "AccessDeniedException" | "AccessDenied" => AwsError::AccessDenied {
                        secret,
                        place,
                        action: self.service.action(),
                        detail,
                    },
                    "DecryptionFailure" | "KMSAccessDeniedException" | "InvalidKeyId" => {
                        AwsError::Decryption {
                            secret,
                            place,
                            detail,
                        }
                    }
                    "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" => {
                        AwsError::Throttled {
                            secret,
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
                        secret,
                        place,
                        detail,
                    },
                    _ => AwsError::Other {
                        secret,
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
                secret,
                place,
                secs,
            },
            SdkError::DispatchFailure(df) => {
                if df.is_timeout() {
                    AwsError::Timeout {
                        secret,
                        place,
                        secs,
                    }
                } else if df.is_io() {
                    AwsError::Unreachable {
                        secret,
                        place,
                        reason: root_cause(&e),
                    }
                } else {
                    AwsError::Other {
                        secret,
                        place,
                        msg: hint(DisplayErrorContext(&e).to_string()),
                    }
                }
            }
            _ => AwsError::Other {
                secret,
                place,
                msg: hint(DisplayErrorContext(&e).to_string()),
            },
        }
    }
}

/// The text of the first `<name>...</name>` element, short and on one line.
pub(super) fn xml_element(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = body.find(&open)? + open.len();
    let len = body[start..].find(&close)?;
    let text: String = body[start..start + len].chars().take(200).collect();
    Some(text).filter(|t| !t.is_empty())
}

/// Add the fix to the SDK's most common set-up failures.
pub(super) fn hint(msg: String) -> String {
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

pub(super) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
