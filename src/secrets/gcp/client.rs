//! The Google Cloud client side of `gcp-sm:`: built only with the `gcp` feature.
//!
//! One `SecretManagerService` client per run (REST), built in [`Gcp::connect`], which only
//! `Fetcher::fetch_remote` calls: a profile without `gcp-sm:` never builds it. Credentials
//! come from the settings and agentrun's environment snapshot ([`Context`]), not the process
//! environment: a credentials file (`[gcp].credentials`, `GOOGLE_APPLICATION_CREDENTIALS`, the
//! gcloud ADC file under the snapshot's home) is read by agentrun itself, with the checks of a
//! local source (no link into another store, owner, size), and handed to the SDK as JSON.
//! What the SDK still reads from the process environment: `GCE_METADATA_HOST` (it wins over
//! the endpoint agentrun gives the metadata-server credentials), `GOOGLE_CLOUD_UNIVERSE_DOMAIN`
//! and `GOOGLE_CLOUD_RUST_LOGGING`; `external_account` files with an executable source also
//! need `GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES` there.

use super::{GcpCredentials, GcpError, GcpSettings};
use crate::context::Context;
use crate::profile::{GcpRef, resolve_path};
use crate::secrets::value::json_field;
use google_cloud_auth::credentials::{
    Credentials, anonymous, external_account, impersonated, mds, service_account, user_account,
};
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::retry_policy::{RetryPolicy, RetryPolicyExt};
use google_cloud_gax::retry_result::RetryResult;
use google_cloud_gax::retry_state::RetryState;
use google_cloud_secretmanager_v1::client::SecretManagerService;
use secrecy::SecretString;
use std::path::Path;
use std::time::Duration;

/// The Secret Manager client of a run, with its settings (for messages and limits).
pub(crate) struct Gcp {
    client: SecretManagerService,
    settings: GcpSettings,
    place: String,
}

impl Gcp {
    /// Build the client: credentials from the settings and the snapshot, the endpoint, the
    /// retry policy (`[gcp].retries` more tries on connection errors, 5xx and 429), the
    /// per-try and overall limit (`[gcp].timeout`).
    pub(crate) async fn connect(settings: &GcpSettings, ctx: &Context) -> Result<Gcp, GcpError> {
        let credentials = credentials(settings, ctx)?;
        let t = settings.timeout;
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_delay(Duration::from_millis(100))
            .with_maximum_delay(Duration::from_secs(1))
            .build()
            .map_err(|e| GcpError::Config(format!("internal: backoff policy: {e}")))?;
        let mut builder = SecretManagerService::builder()
            .with_credentials(credentials)
            .with_retry_policy(
                Transient
                    .with_attempt_limit(settings.retries.saturating_add(1))
                    .with_time_limit(t),
            )
            .with_backoff_policy(backoff)
            .with_attempt_timeout(t);
        if let Some(e) = &settings.endpoint {
            builder = builder.with_endpoint(e.trim_end_matches('/'));
        }
        let place = settings.place();
        let client = match tokio::time::timeout(t, builder.build()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(GcpError::Config(format!(
                    "cannot build the Secret Manager client for {place}: {}",
                    one_line(&e.to_string())
                )));
            }
            Err(_) => {
                return Err(GcpError::Config(format!(
                    "building the Secret Manager client for {place} took more than {}s",
                    t.as_secs_f64()
                )));
            }
        };
        Ok(Gcp {
            client,
            settings: settings.clone(),
            place,
        })
    }

    /// `AccessSecretVersion`. Always a fresh call: nothing is cached.
    pub(crate) async fn read(&self, r: &GcpRef) -> Result<SecretString, GcpError> {
        self.settings.check_refs(std::iter::once(r))?;
        let project = self.settings.project.as_deref().unwrap_or_default();
        let secret = r.resource(project);
        let other = |msg: &str| GcpError::Other {
            secret: secret.clone(),
            place: self.place.clone(),
            msg: msg.to_string(),
        };
        // The SDK's overall limit ends the call first; this is the backstop.
        let limit = self.settings.timeout + Duration::from_secs(1);
        let call = self.client.access_secret_version().set_name(&secret).send();
        let out = match tokio::time::timeout(limit, call).await {
            Err(_) => return Err(self.timeout(&secret)),
            Ok(Err(e)) => return Err(self.error(&secret, &e)),
            Ok(Ok(out)) => out,
        };
        let payload = out
            .payload
            .ok_or_else(|| other("the answer has no payload"))?;
        if let Some(sum) = payload.data_crc32c
            && i64::from(crc32c(&payload.data)) != sum
        {
            return Err(other(
                "the payload does not match its data_crc32c checksum: it was corrupted on the \
                 way; try again, and check any proxy between agentrun and the endpoint",
            ));
        }
        let text = String::from_utf8(payload.data.to_vec()).map_err(|_| {
            other("the secret is binary, not UTF-8 text: agentrun passes text only; store it as text (base64 if need be)")
        })?;
        let text = match &r.key {
            None => text,
            Some(key) => json_field(&text, key).map_err(|m| other(&m))?,
        };
        if text.is_empty() {
            return Err(other(
                "the value is empty: an empty credential is never valid",
            ));
        }
        Ok(SecretString::from(text))
    }

    fn timeout(&self, secret: &str) -> GcpError {
        GcpError::Timeout {
            secret: secret.to_string(),
            place: self.place.clone(),
            secs: self.settings.timeout.as_secs_f64(),
        }
    }

    /// One message per failure, from the HTTP status and Google's error status.
    fn error(&self, secret: &str, e: &GaxError) -> GcpError {
        let secret = secret.to_string();
        let place = self.place.clone();
        if e.is_timeout() {
            return self.timeout(&secret);
        }
        if e.is_authentication() {
            return GcpError::Unauthenticated {
                secret,
                place,
                detail: format!(" ({})", one_line(&root_cause(e))),
            };
        }
        if let Some(status) = e.status() {
            use google_cloud_gax::error::rpc::Code;
            let http = e.http_status_code();
            let detail = match status.message.trim() {
                "" => String::new(),
                m => format!(" ({})", one_line(m)),
            };
            return match (status.code, http) {
                (Code::NotFound, _) | (_, Some(404)) => GcpError::NotFound {
                    secret,
                    place,
                    detail,
                },
                (Code::FailedPrecondition, _) => {
                    GcpError::version_state(secret, place, &status.message)
                }
                (Code::PermissionDenied, _) | (_, Some(403)) => GcpError::PermissionDenied {
                    secret,
                    place,
                    detail,
                },
                (Code::Unauthenticated, _) | (_, Some(401)) => GcpError::Unauthenticated {
                    secret,
                    place,
                    detail,
                },
                (code, http) => GcpError::Other {
                    secret,
                    place,
                    msg: format!(
                        "{}{}{detail}{}",
                        code.name(),
                        http.map(|h| format!(" (HTTP {h})")).unwrap_or_default(),
                        match http {
                            Some(h) if h == 429 || h >= 500 => format!(
                                ", after {} tries: Secret Manager is failing or throttling; \
                                 retry later, or raise [gcp].retries",
                                self.settings.retries.saturating_add(1)
                            ),
                            _ => String::new(),
                        }
                    ),
                },
            };
        }
        if let Some(code) = e.http_status_code() {
            let msg = match code {
                404 => {
                    return GcpError::NotFound {
                        secret,
                        place,
                        detail: String::new(),
                    };
                }
                403 => {
                    return GcpError::PermissionDenied {
                        secret,
                        place,
                        detail: String::new(),
                    };
                }
                401 => {
                    return GcpError::Unauthenticated {
                        secret,
                        place,
                        detail: String::new(),
                    };
                }
                c => format!(
                    "HTTP {c} without a Google error body: is [gcp].endpoint Secret Manager?"
                ),
            };
            return GcpError::Other { secret, place, msg };
        }
        if e.is_connect() || e.is_io() {
            return GcpError::Unreachable {
                secret,
                place,
                reason: one_line(&root_cause(e)),
            };
        }
        GcpError::Other {
            secret,
            place,
            msg: one_line(&root_cause(e)),
        }
    }
}

/// Retry what may pass on a second try: connection errors, 5xx, 429. Never a timeout (the
/// overall limit is `[gcp].timeout`), never a 4xx answer.
#[derive(Debug)]
struct Transient;

impl RetryPolicy for Transient {
    fn on_error(&self, _state: &RetryState, error: GaxError) -> RetryResult {
        let status = error.http_status_code();
        if error.is_transient_and_before_rpc()
            || (!error.is_timeout() && (error.is_connect() || error.is_io()))
            || status.is_some_and(|c| c == 429 || (500..600).contains(&c))
        {
            RetryResult::Continue(error)
        } else {
            RetryResult::Permanent(error)
        }
    }
}

/// The credentials `[gcp].credentials` names, or Application Default Credentials from the
/// snapshot: `GOOGLE_APPLICATION_CREDENTIALS`, then the gcloud ADC file under the home, then
/// the metadata server.
fn credentials(settings: &GcpSettings, ctx: &Context) -> Result<Credentials, GcpError> {
    match &settings.credentials {
        GcpCredentials::Anonymous => Ok(anonymous::Builder::new().build()),
        GcpCredentials::File(path) => from_file(path, "[gcp].credentials", ctx),
        GcpCredentials::Default => {
            if let Some(v) = ctx
                .var_str("GOOGLE_APPLICATION_CREDENTIALS")
                .filter(|v| !v.is_empty())
            {
                let path = resolve_path(v, &ctx.cwd, ctx.home.as_deref());
                return from_file(&path, "GOOGLE_APPLICATION_CREDENTIALS", ctx);
            }
            if let Some(home) = &ctx.home {
                let adc = home.join(".config/gcloud/application_default_credentials.json");
                if adc.symlink_metadata().is_ok() {
                    return from_file(&adc, "the gcloud ADC file", ctx);
                }
            }
            let mut b = mds::Builder::default();
            if let Some(host) = ctx.var_str("GCE_METADATA_HOST").filter(|v| !v.is_empty()) {
                b = b.with_endpoint(format!("http://{host}"));
            }
            if let Some(q) = quota_project(ctx) {
                b = b.with_quota_project_id(q);
            }
            b.build().map_err(|e| {
                GcpError::Config(format!(
                    "no credentials file, and the metadata-server credentials failed: {}: \
                     run `gcloud auth application-default login`, set [gcp].credentials, or run on Google Cloud",
                    one_line(&e.to_string())
                ))
            })
        }
    }
}

fn quota_project(ctx: &Context) -> Option<String> {
    ctx.var_str("GOOGLE_CLOUD_QUOTA_PROJECT")
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// A credentials JSON read by agentrun (the checks of a local source), then built by its
/// `type`. Messages name the file and the fix, never its contents.
fn from_file(path: &Path, named_by: &str, ctx: &Context) -> Result<Credentials, GcpError> {
    let shown = path.display();
    let bytes = crate::secrets::local::read_source(path, ctx)
        .map_err(|e| GcpError::Config(format!("credentials file (from {named_by}): {e}")))?;
    let bad = |why: String| {
        GcpError::Config(format!(
            "{shown} (from {named_by}) is not a usable Google credentials JSON: {why}: \
             download a service-account key, or run `gcloud auth application-default login`"
        ))
    };
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        // serde_json's message is a position, never the text.
        .map_err(|e| bad(e.to_string()))?;
    let kind = json
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_string();
    let quota = quota_project(ctx);
    let built = match kind.as_str() {
        "service_account" => {
            let mut b = service_account::Builder::new(json);
            if let Some(q) = quota {
                b = b.with_quota_project_id(q);
            }
            b.build()
        }
        "authorized_user" => {
            let mut b = user_account::Builder::new(json);
            if let Some(q) = quota {
                b = b.with_quota_project_id(q);
            }
            b.build()
        }
        "impersonated_service_account" => {
            let mut b = impersonated::Builder::new(json);
            if let Some(q) = quota {
                b = b.with_quota_project_id(q);
            }
            b.build()
        }
        "external_account" => {
            let mut b = external_account::Builder::new(json);
            if let Some(q) = quota {
                b = b.with_quota_project_id(q);
            }
            b.build()
        }
        "" => return Err(bad("it has no \"type\"".into())),
        other => {
            return Err(bad(format!(
                "type \"{}\" is not one agentrun reads (service_account, authorized_user, \
                 impersonated_service_account, external_account)",
                one_line(other)
            )));
        }
    };
    built.map_err(|e| bad(one_line(&e.to_string())))
}

/// CRC-32C (Castagnoli), as Secret Manager's `data_crc32c`.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// On one line and short: error texts come from the server or the SDK.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ").chars().take(300).collect()
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    let mut text = cur.to_string();
    while let Some(next) = cur.source() {
        cur = next;
        text = cur.to_string();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // RFC 3720 B.4 / the CRC catalogue's check value for "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    /// Application Default Credentials come from the snapshot: its
    /// `GOOGLE_APPLICATION_CREDENTIALS` first, then the gcloud ADC file under its home.
    #[test]
    fn adc_reads_the_snapshot_not_the_process_environment() {
        let t = tempfile::tempdir().unwrap();
        let settings = GcpSettings::from_section(
            None,
            &Context {
                env: Default::default(),
                cwd: t.path().to_path_buf(),
                home: None,
            },
        )
        .unwrap();
        let missing = t.path().join("missing.json");
        let ctx = Context {
            env: [(
                "GOOGLE_APPLICATION_CREDENTIALS".into(),
                missing.clone().into_os_string(),
            )]
            .into_iter()
            .collect(),
            cwd: t.path().to_path_buf(),
            home: Some(t.path().to_path_buf()),
        };
        let e = credentials(&settings, &ctx).err().unwrap().to_string();
        assert!(e.contains("from GOOGLE_APPLICATION_CREDENTIALS"), "{e}");
        assert!(e.contains(&missing.display().to_string()), "{e}");
        let adc = t
            .path()
            .join(".config/gcloud/application_default_credentials.json");
        std::fs::create_dir_all(adc.parent().unwrap()).unwrap();
        std::fs::write(&adc, r#"{"type":"nonsense"}"#).unwrap();
        let ctx = Context {
            env: Default::default(),
            ..ctx
        };
        let e = credentials(&settings, &ctx).err().unwrap().to_string();
        assert!(e.contains("from the gcloud ADC file"), "{e}");
        assert!(e.contains(&adc.display().to_string()), "{e}");
    }

    #[test]
    fn credentials_files_are_checked_and_never_quoted() {
        let t = tempfile::tempdir().unwrap();
        let ctx = Context {
            env: Default::default(),
            cwd: t.path().to_path_buf(),
            home: None,
        };
        let f = t.path().join("sa.json");
        std::fs::write(&f, r#"{"type":"nonsense","private_key":"SEKRIT-KEY"}"#).unwrap();
        let e = from_file(&f, "[gcp].credentials", &ctx)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("\"nonsense\" is not one agentrun reads"), "{e}");
        assert!(!e.contains("SEKRIT"), "{e}");
        std::fs::write(&f, "{\"private_key\": \"SEKRIT-KEY\"").unwrap();
        let e = from_file(&f, "[gcp].credentials", &ctx)
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("SEKRIT"), "{e}");
        let link = t.path().join("link.json");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        let e = from_file(&link, "[gcp].credentials", &ctx)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }
}
