//! The Azure SDK side of `azure-kv:`: built only with the `azure` feature.
//!
//! One credential per run, chosen from agentrun's environment snapshot ([`Context`]), never
//! from the process environment where the SDK lets us say so:
//! - a client secret (`[azure].client_secret`, a local source) with `tenant_id` and
//!   `client_id`: `ClientSecretCredential` against `authority_host`;
//! - else, when `AZURE_FEDERATED_TOKEN_FILE` is set: `WorkloadIdentityCredential` with the
//!   token file, tenant and client id given explicitly;
//! - else managed identity, then the Azure CLI ([`Fallback`]: azure_identity 1.0 has no
//!   `DefaultAzureCredential` or chain type; its `DeveloperToolsCredential` covers only the
//!   CLI and azd). These two read the process environment (`IDENTITY_ENDPOINT`, `PATH`): the
//!   SDK offers no way to hand them ours.
//!
//! Every pipeline (the vault's and the token endpoint's) goes through one reqwest client built
//! here: rustls with the system roots plus `[azure].ca_cert`, no redirects, `[azure].timeout`
//! on connect and request. The SDK's retry policy (connection and I/O errors, 408, 429, 5xx)
//! gets `retries` and `timeout` as its total; a `tokio::time::timeout` of `timeout` over each
//! read (token included) is the limit that holds (the policy starts its clock only after the
//! first try).

use super::{AzureError, AzureSettings};
use crate::context::Context;
use crate::profile::AzureRef;
use crate::secrets::value::json_field;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use azure_identity::{
    AzureCliCredential, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// The Key Vault credential of a run (one for every vault), its settings, and one
/// `SecretClient` per vault URL, created on first use.
pub(crate) struct Azure {
    settings: AzureSettings,
    credential: Arc<dyn TokenCredential>,
    /// Which login this is, and how to renew it: for messages (never the secret).
    login: String,
    authority: String,
    http: reqwest::Client,
    clients: Mutex<HashMap<String, Arc<SecretClient>>>,
}

impl Azure {
    /// Build the credential (client secret, workload identity, managed identity, Azure CLI).
    /// No network yet: the first read gets the vault's challenge, then a token.
    pub(crate) async fn connect(
        settings: &AzureSettings,
        ctx: &Context,
    ) -> Result<Azure, AzureError> {
        let http = http_client(settings)?;
        let options = client_options(settings, &http);
        let authority = settings
            .authority_host
            .clone()
            .unwrap_or_else(|| "https://login.microsoftonline.com".to_string());
        let (credential, login) = credential(settings, ctx, options)?;
        Ok(Azure {
            settings: settings.clone(),
            credential,
            login,
            authority: crate::scrub::strip_userinfo(&authority).into_owned(),
            http,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// `GetSecret`. Always a fresh call: nothing is cached.
    pub(crate) async fn read(&self, r: &AzureRef) -> Result<SecretString, AzureError> {
        let place = crate::scrub::strip_userinfo(&self.settings.vault_url(&r.vault)).into_owned();
        let call = Call {
            secret: match &r.version {
                Some(v) => format!("{}/{}/{v}", r.vault, r.name),
                None => format!("{}/{}", r.vault, r.name),
            },
            place,
            az: self,
            r,
        };
        let client = self.client(&r.vault).map_err(|e| call.error(&e))?;
        let options = SecretClientGetSecretOptions {
            secret_version: r.version.clone(),
            ..Default::default()
        };
        let get = async {
            client
                .get_secret(&r.name, Some(options))
                .await?
                .into_model()
        };
        // The SDK's retry policy counts its total from the end of the first try, so it can
        // run past `timeout`: this limit is the one that holds, exactly `[azure].timeout`.
        let secret = match tokio::time::timeout(self.settings.timeout, get).await {
            Err(_) => return Err(call.timeout()),
            Ok(Err(e)) => return Err(call.error(&e)),
            Ok(Ok(s)) => s,
        };
        if secret.attributes.as_ref().and_then(|a| a.enabled) == Some(false) {
            return Err(AzureError::Disabled {
                secret: call.secret,
                place: call.place,
            });
        }
        let Some(text) = secret.value else {
            return Err(call.other("the answer has no value"));
        };
        let text = match &r.key {
            None => text,
            Some(key) => json_field(&text, key).map_err(|m| call.other(m))?,
        };
        if text.is_empty() {
            return Err(call.other("the value is empty: an empty credential is never valid"));
        }
        Ok(SecretString::from(text))
    }

    /// The vault's client, created on first use and kept for the run.
    fn client(&self, vault: &str) -> azure_core::Result<Arc<SecretClient>> {
        let url = self.settings.vault_url(vault);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&url) {
            return Ok(c.clone());
        }
        // With `vault_url` the SDK's resource check is off: the guard keeps the scope Key
        // Vault's whatever the host's challenge names (review 15, F4).
        let credential: Arc<dyn TokenCredential> = match self.settings.vault_url {
            Some(_) => Arc::new(KeyVaultOnly {
                inner: self.credential.clone(),
            }),
            None => self.credential.clone(),
        };
        let c = Arc::new(SecretClient::new(
            &url,
            credential,
            Some(secret_client_options(&self.settings, &self.http)),
        )?);
        clients.insert(url, c.clone());
        Ok(c)
    }
}

/// The options of every `SecretClient`: our transport, retries and limits. With
/// `[azure].vault_url` the operator named the host, so the challenge's resource need not be
/// under it (contract §4.3); otherwise the SDK's check stays on.
fn secret_client_options(settings: &AzureSettings, http: &reqwest::Client) -> SecretClientOptions {
    SecretClientOptions {
        client_options: client_options(settings, http),
        verify_challenge_resource: Some(settings.vault_url.is_none()),
        ..Default::default()
    }
}

/// Transport, retries and the cloud (authority host) for every Azure pipeline of a run.
fn client_options(settings: &AzureSettings, http: &reqwest::Client) -> ClientOptions {
    let total = azure_core::time::Duration::try_from(settings.timeout)
        .unwrap_or(azure_core::time::Duration::seconds(10));
    let cloud = match &settings.authority_host {
        Some(host) => {
            let mut custom = CustomConfiguration::default();
            custom.authority_host = host.trim_end_matches('/').to_string();
            CloudConfiguration::Custom(custom)
        }
        // Explicitly: without it the SDK reads $AZURE_AUTHORITY_HOST from the process.
        None => CloudConfiguration::AzurePublic,
    };
    ClientOptions {
        transport: Some(Transport::new(Arc::new(http.clone()))),
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(100),
            max_retries: settings.retries,
            max_total_elapsed: total,
            max_delay: azure_core::time::Duration::seconds(1),
        }),
        cloud: Some(Arc::new(cloud)),
        ..Default::default()
    }
}

/// The HTTP client under every Azure pipeline: the system roots plus `[azure].ca_cert`, no
/// redirects, the timeout on the connect and the whole request.
fn http_client(settings: &AzureSettings) -> Result<reqwest::Client, AzureError> {
    http_client_with(settings, settings.timeout)
}

/// [`http_client`] with its own connect limit (managed identity's: IMDS on a machine that
/// is not an Azure VM takes no connection, and the Azure CLI must keep time to answer).
fn http_client_with(
    settings: &AzureSettings,
    connect: std::time::Duration,
) -> Result<reqwest::Client, AzureError> {
    let mut roots = Vec::new();
    if let Some(ca) = &settings.ca_cert {
        let pem = std::fs::read(ca).map_err(|e| {
            AzureError::Config(format!("ca_cert = {}: cannot read it ({e})", ca.display()))
        })?;
        roots = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                AzureError::Config(format!(
                    "ca_cert = {}: not a PEM certificate bundle",
                    ca.display()
                ))
            })?;
    }
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .connect_timeout(connect)
        .tls_certs_merge(roots)
        .user_agent(concat!("agentrun/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| AzureError::Config(format!("cannot build the HTTP client: {e}")))
}

/// The run's one credential, and how messages name it.
fn credential(
    settings: &AzureSettings,
    ctx: &Context,
    options: ClientOptions,
) -> Result<(Arc<dyn TokenCredential>, String), AzureError> {
    let var = |name: &str| ctx.var_str(name).filter(|v| !v.is_empty());
    let need = |what: Option<&String>, key: &str, env: &str, by: &str| {
        what.cloned().ok_or_else(|| {
            AzureError::Config(format!("{by} needs {key}: set [azure].{key} or ${env}"))
        })
    };
    let sdk = |e: azure_core::Error| AzureError::Config(one_line(&e.to_string()));
    if let Some(source) = &settings.client_secret {
        let tenant = need(
            settings.tenant_id.as_ref(),
            "tenant_id",
            "AZURE_TENANT_ID",
            "a client secret",
        )?;
        let client = need(
            settings.client_id.as_ref(),
            "client_id",
            "AZURE_CLIENT_ID",
            "a client secret",
        )?;
        let value = crate::secrets::fetch_local(source, ctx)
            .map_err(|e| AzureError::Config(format!("client_secret: {e}")))?;
        let cred = ClientSecretCredential::new(
            &tenant,
            client.clone(),
            Secret::new(value.expose_secret().to_string()),
            Some(ClientSecretCredentialOptions {
                client_options: options,
            }),
        )
        .map_err(sdk)?;
        let fix = format!(
            "the client secret of client id {client} in tenant {tenant} is wrong or expired: \
             set a current one ([azure].client_secret, default $AZURE_CLIENT_SECRET)"
        );
        return Ok((cred, fix));
    }
    if let Some(file) = var("AZURE_FEDERATED_TOKEN_FILE") {
        let by = "workload identity (AZURE_FEDERATED_TOKEN_FILE)";
        let tenant = need(
            settings.tenant_id.as_ref(),
            "tenant_id",
            "AZURE_TENANT_ID",
            by,
        )?;
        let client = need(
            settings.client_id.as_ref(),
            "client_id",
            "AZURE_CLIENT_ID",
            by,
        )?;
        let path = crate::profile::resolve_path(file, &ctx.cwd, ctx.home.as_deref());
        let cred = WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions {
                client_options: options,
            },
            client_id: Some(client.clone()),
            tenant_id: Some(tenant.clone()),
            token_file_path: Some(path.clone()),
        }))
        .map_err(sdk)?;
        let fix = format!(
            "the federated token in {} was refused for client id {client} in tenant {tenant}: \
             check the identity's federated credential and that the token is current",
            path.display()
        );
        return Ok((cred, fix));
    }
    let imds = http_client_with(
        settings,
        settings.timeout.min(std::time::Duration::from_secs(1)),
    )?;
    let managed = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        client_options: client_options(settings, &imds),
        ..Default::default()
    }))
    .map_err(sdk)?;
    let cli = AzureCliCredential::new(None).map_err(sdk)?;
    let fallback: Arc<dyn TokenCredential> = Arc::new(Fallback {
        sources: vec![managed, cli],
        chosen: Mutex::new(None),
    });
    Ok((
        fallback,
        "no client secret and no workload identity; managed identity and the Azure CLI \
         (`az login`) gave no usable token: set [azure].client_secret, tenant_id and client_id"
            .to_string(),
    ))
}

/// Managed identity, then the Azure CLI: the first that gives a token is kept for the run.
#[derive(Debug)]
struct Fallback {
    sources: Vec<Arc<dyn TokenCredential>>,
    chosen: Mutex<Option<usize>>,
}

impl Fallback {
    async fn token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let chosen = *self.chosen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = chosen
            && let Some(s) = self.sources.get(i)
        {
            return s.get_token(scopes, options).await;
        }
        let mut failures = Vec::new();
        for (i, s) in self.sources.iter().enumerate() {
            match s.get_token(scopes, options.clone()).await {
                Ok(t) => {
                    *self.chosen.lock().unwrap_or_else(|e| e.into_inner()) = Some(i);
                    return Ok(t);
                }
                Err(e) => failures.push(one_line(&e.to_string())),
            }
        }
        Err(azure_core::Error::with_message(
            ErrorKind::Credential,
            failures.join("; "),
        ))
    }
}

// `TokenCredential` is an `async_trait`; this is the signature the macro generates.
impl TokenCredential for Fallback {
    fn get_token<'life0, 'life1, 'life2, 'life3, 'async_trait>(
        &'life0 self,
        scopes: &'life1 [&'life2 str],
        options: Option<TokenRequestOptions<'life3>>,
    ) -> Pin<Box<dyn Future<Output = azure_core::Result<AccessToken>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        'life3: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.token(scopes, options))
    }
}

/// The Key Vault resources of the public and sovereign clouds: the only token audiences a
/// vault's challenge may ask for.
const KEY_VAULT_RESOURCES: [&str; 4] = [
    "https://vault.azure.net",
    "https://vault.azure.cn",
    "https://vault.usgovcloudapi.net",
    "https://vault.microsoftazure.de",
];

/// Whether a token scope (`RESOURCE/.default`) is Key Vault's.
fn is_key_vault_scope(scope: &str) -> bool {
    let resource = scope.strip_suffix("/.default").unwrap_or(scope);
    let resource = resource.trim_end_matches('/');
    KEY_VAULT_RESOURCES
        .iter()
        .any(|r| r.eq_ignore_ascii_case(resource))
}

/// A credential that gives tokens for Key Vault only: with `[azure].vault_url` the host's
/// challenge names the resource, and a host that named another (Azure Resource Manager)
/// would get a token for it.
#[derive(Debug)]
struct KeyVaultOnly {
    inner: Arc<dyn TokenCredential>,
}

impl KeyVaultOnly {
    async fn token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if let Some(other) = scopes.iter().find(|s| !is_key_vault_scope(s)) {
            return Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                format!(
                    "the vault's challenge asked for a token for {}, not for Key Vault: refused \
                     (a host at [azure].vault_url gets Key Vault tokens only)",
                    crate::scrub::printable(other)
                ),
            ));
        }
        self.inner.get_token(scopes, options).await
    }
}

// `TokenCredential` is an `async_trait`; this is the signature the macro generates.
impl TokenCredential for KeyVaultOnly {
    fn get_token<'life0, 'life1, 'life2, 'life3, 'async_trait>(
        &'life0 self,
        scopes: &'life1 [&'life2 str],
        options: Option<TokenRequestOptions<'life3>>,
    ) -> Pin<Box<dyn Future<Output = azure_core::Result<AccessToken>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        'life3: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.token(scopes, options))
    }
}

/// One read's context, for its messages.
struct Call<'a> {
    secret: String,
    place: String,
    az: &'a Azure,
    r: &'a AzureRef,
}

impl Call<'_> {
    fn other(&self, msg: impl Into<String>) -> AzureError {
        AzureError::Other {
            secret: self.secret.clone(),
            place: self.place.clone(),
            msg: msg.into(),
        }
    }

    fn timeout(&self) -> AzureError {
        AzureError::Timeout {
            secret: self.secret.clone(),
            place: self.place.clone(),
            secs: self.az.settings.timeout.as_secs_f64(),
        }
    }

    /// Classify an SDK error: the vault's answer, the token endpoint's, or the network.
    fn error(&self, e: &azure_core::Error) -> AzureError {
        let secret = self.secret.clone();
        let place = self.place.clone();
        // A token failure: the credential wraps the token endpoint's answer or the network's.
        if matches!(e.kind(), ErrorKind::Credential) {
            if let Some(net) = network(e) {
                return match net {
                    Net::Timeout => self.timeout(),
                    Net::Connect(reason) => AzureError::Unreachable {
                        secret,
                        place,
                        to: format!(" to the authority {}", self.az.authority),
                        reason,
                    },
                };
            }
            if let Some((status, code)) = inner_http(e) {
                let detail = match code {
                    Some(c) => format!(" (token endpoint: HTTP {status}, AADSTS{c})"),
                    None => format!(" (token endpoint: HTTP {status})"),
                };
                return AzureError::BadCredentials {
                    secret,
                    place,
                    detail,
                    fix: self.az.login.clone(),
                };
            }
            // The innermost error says why (the retry policy's context only that it gave up).
            return self.other(format!(
                "cannot get a token ({}): {}",
                root_cause(e),
                self.az.login
            ));
        }
        if let ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } = e.kind()
        {
            let body: serde_json::Value = raw_response
                .as_ref()
                .and_then(|r| serde_json::from_slice(r.body().as_ref()).ok())
                .unwrap_or_default();
            let message = body["error"]["message"].as_str().map(one_line);
            let inner = body["error"]["innererror"]["code"].as_str();
            let code = error_code.as_deref().unwrap_or("");
            return match u16::from(*status) {
                404 => AzureError::NotFound {
                    secret,
                    place,
                    what: match &self.r.version {
                        Some(v) => format!(
                            "the secret {} has no version {v} in vault {}: check the version \
                             (`az keyvault secret list-versions`)",
                            self.r.name, self.r.vault
                        ),
                        None => format!(
                            "no secret {} in vault {}: check the name and the vault",
                            self.r.name, self.r.vault
                        ),
                    },
                },
                403 if inner == Some("SecretDisabled") => AzureError::Disabled { secret, place },
                403 => AzureError::Forbidden {
                    secret,
                    place,
                    detail: match (inner, message) {
                        (Some(i), Some(m)) => format!(" ({code}/{i}: {m})"),
                        (None, Some(m)) => format!(" ({code}: {m})"),
                        (_, None) => format!(" ({code})"),
                    },
                },
                401 => AzureError::BadCredentials {
                    secret,
                    place,
                    detail: format!(" (the vault refused the token: HTTP 401 {code})"),
                    fix: self.az.login.clone(),
                },
                s => self.other(format!(
                    "HTTP {s} {code}{}",
                    message.map(|m| format!(": {m}")).unwrap_or_default()
                )),
            };
        }
        match network(e) {
            Some(Net::Timeout) => self.timeout(),
            Some(Net::Connect(reason)) => AzureError::Unreachable {
                secret,
                place,
                to: String::new(),
                reason,
            },
            None => self.other(one_line(&e.to_string())),
        }
    }
}

enum Net {
    Timeout,
    Connect(String),
}

/// A transport failure anywhere in the error's chain: a timeout, or why the connection failed
/// (with the fix for an unknown certificate authority).
fn network(e: &azure_core::Error) -> Option<Net> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut saw_connection = false;
    while let Some(err) = cur {
        if let Some(re) = err.downcast_ref::<reqwest::Error>() {
            if re.is_timeout() {
                return Some(Net::Timeout);
            }
            saw_connection = true;
        }
        if let Some(ae) = err.downcast_ref::<azure_core::Error>()
            && matches!(ae.kind(), ErrorKind::Connection | ErrorKind::Io)
        {
            saw_connection = true;
        }
        cur = err.source();
    }
    if !saw_connection {
        return None;
    }
    let root = root_cause(e);
    let reason =
        if root.to_ascii_lowercase().contains("certificate") || root.contains("UnknownIssuer") {
            format!(
                "{root}: the server's certificate is not trusted; set [azure].ca_cert to the CA \
             that signed it"
            )
        } else {
            root
        };
    Some(Net::Connect(reason))
}

/// The token endpoint's HTTP status and AADSTS code, from inside a credential error.
fn inner_http(e: &azure_core::Error) -> Option<(u16, Option<String>)> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(ae) = err.downcast_ref::<azure_core::Error>()
            && let ErrorKind::HttpResponse {
                status, error_code, ..
            } = ae.kind()
        {
            return Some((u16::from(*status), error_code.clone()));
        }
        cur = err.source();
    }
    None
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    one_line(&cur.to_string())
}

/// The first line, short: SDK messages append troubleshooting links on further lines.
fn one_line(text: &str) -> String {
    let first = text.lines().next().unwrap_or("").trim();
    first.chars().take(300).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::profile::AzureSection;
    use std::collections::BTreeMap;

    fn settings(text: &str) -> AzureSettings {
        let section: AzureSection = toml::from_str(text).unwrap();
        let ctx = Context {
            env: BTreeMap::new(),
            cwd: std::path::PathBuf::from("/tmp"),
            home: None,
        };
        AzureSettings::from_section(Some(&section), &ctx).unwrap()
    }

    /// With `vault_url` the challenge's resource may name another host; without it the
    /// SDK's check stays on.
    #[test]
    fn challenge_check_is_off_only_with_an_explicit_vault_url() {
        let http = reqwest::Client::new();
        let explicit = settings("vault_url = \"https://127.0.0.1:8443\"");
        assert_eq!(
            secret_client_options(&explicit, &http).verify_challenge_resource,
            Some(false)
        );
        let default = settings("");
        assert_eq!(
            secret_client_options(&default, &http).verify_challenge_resource,
            Some(true)
        );
    }

    #[test]
    fn a_client_secret_needs_tenant_and_client_id() {
        let ctx = Context {
            env: [("AZURE_CLIENT_SECRET".into(), "s3cr3t-value".into())]
                .into_iter()
                .collect(),
            cwd: std::path::PathBuf::from("/tmp"),
            home: None,
        };
        let s = AzureSettings::from_section(None, &ctx).unwrap();
        let http = reqwest::Client::new();
        let Err(e) = credential(&s, &ctx, client_options(&s, &http)) else {
            panic!("accepted a client secret without a tenant");
        };
        let m = e.to_string();
        assert!(
            m.contains("tenant_id") && m.contains("$AZURE_TENANT_ID"),
            "{m}"
        );
        assert!(!m.contains("s3cr3t-value"), "{m}");
    }

    #[test]
    fn a_missing_or_bad_ca_cert_is_named() {
        let t = tempfile::tempdir().unwrap();
        let bad = t.path().join("ca.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let mut s = settings("");
        s.ca_cert = Some(bad);
        let m = http_client(&s).err().unwrap().to_string();
        assert!(m.contains("ca_cert") && m.contains("not a PEM"), "{m}");
        s.ca_cert = Some(t.path().join("absent.pem"));
        let m = http_client(&s).err().unwrap().to_string();
        assert!(m.contains("cannot read"), "{m}");
    }
}
