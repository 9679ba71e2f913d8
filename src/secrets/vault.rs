//! HashiCorp Vault / OpenBao KV source: `vault:MOUNT/PATH#FIELD` (`?kv=1`, `?version=N`).
//!
//! Owns the `[vault]` table, authentication (token, AppRole, Kubernetes) and KV reads through
//! `vaultrs`. Every setting is passed to `vaultrs` explicitly from the profile and agentrun's
//! environment snapshot ([`Context`]): its builder would otherwise read `VAULT_ADDR`,
//! `VAULT_TOKEN`, `VAULT_CACERT`, `VAULT_SKIP_VERIFY` and client-certificate variables from the
//! process by itself. Its settings and auth responses print the token in `Debug`: nothing here
//! ever formats a `vaultrs` value, and errors are turned into [`VaultError`], whose messages name
//! the address, the API path and the fix, never a token or a value.

use crate::context::Context;
use crate::profile::VaultSection;
use crate::profile::{DurationKind, Source, VaultRef, parse_duration, resolve_path};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

/// Per-request time limit when `[vault].timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries (after the first try) on connection errors, 5xx and 429 when `[vault].retries` is not set.
pub const DEFAULT_RETRIES: u32 = 2;
/// The service-account token file a pod gets, the default `jwt` for Kubernetes auth.
pub const DEFAULT_K8S_JWT: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Why a Vault read failed. Clone: one failed login is reported for every secret that needed it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VaultError {
    #[error("[vault] {0}")]
    Config(String),
    #[error(
        "no Vault token: set [vault].token to a source (e.g. \"file:/run/vault-token\"), export VAULT_TOKEN, \
         log in so that ~/.vault-token exists, or use auth = \"approle\" / \"kubernetes\""
    )]
    NoToken,
    #[error("[vault] cannot read the {what}: {msg}")]
    Credential { what: String, msg: String },
    #[error(
        "vault at {addr}: {path} has no field `{field}` (fields there: {available}): fix the `#FIELD` part of the source"
    )]
    MissingField {
        addr: String,
        path: String,
        field: String,
        available: String,
    },
    #[error("vault at {addr}: no secret at {path}{hint}")]
    NotFound {
        addr: String,
        path: String,
        hint: String,
    },
    #[error(
        "vault at {addr} returned 403 for {path}: the token ({origin}) lacks read on that path; \
         grant `read` on it in the token's policy"
    )]
    Forbidden {
        addr: String,
        path: String,
        origin: String,
    },
    #[error(
        "vault at {addr} rejected the token ({origin}) reading {path}: it is invalid, expired or revoked; \
         log in again or fix where the token comes from"
    )]
    BadToken {
        addr: String,
        path: String,
        origin: String,
    },
    #[error(
        "vault at {addr} is sealed (reading {path}): unseal it (`bao operator unseal` / `vault operator unseal`)"
    )]
    Sealed { addr: String, path: String },
    #[error(
        "cannot connect to vault at {addr} (reading {path}): {reason}; is the server running and \
         [vault].address or $VAULT_ADDR right?"
    )]
    Unreachable {
        addr: String,
        path: String,
        reason: String,
    },
    #[error(
        "TLS with vault at {addr} failed (reading {path}): {reason}; set [vault].ca_cert (or $VAULT_CACERT) \
         to the PEM of the CA that signed the server's certificate"
    )]
    Tls {
        addr: String,
        path: String,
        reason: String,
    },
    #[error(
        "vault at {addr} did not answer within {secs}s reading {path}: check the server, or raise [vault].timeout"
    )]
    Timeout {
        addr: String,
        path: String,
        secs: f64,
    },
    #[error("{method} login to vault at {addr} (auth/{mount}/login) failed: {detail}")]
    Login {
        addr: String,
        method: &'static str,
        mount: String,
        detail: String,
    },
    #[error("vault at {addr} returned HTTP {code} for {path}{detail}")]
    Status {
        addr: String,
        path: String,
        code: u16,
        detail: String,
    },
    #[error("vault at {addr}: {path}: {msg}")]
    Other {
        addr: String,
        path: String,
        msg: String,
    },
}

/// How agentrun authenticates, with the credential sources parsed (never their values).
#[derive(Debug, Clone)]
enum Auth {
    /// `origin` says where the token comes from, for messages.
    Token,
    AppRole {
        role_id: Source,
        secret_id: Source,
    },
    Kubernetes {
        role: String,
        jwt: Source,
    },
}

/// `[vault]` validated against agentrun's environment: what a client needs, no secret yet.
#[derive(Debug, Clone)]
pub struct VaultSettings {
    pub address: String,
    pub namespace: Option<String>,
    auth: Auth,
    token_source: Option<Source>,
    pub auth_mount: String,
    pub ca_cert: Option<PathBuf>,
    /// When `ca_cert` was written relative: that it was resolved against the working
    /// directory (for the message when the file is missing).
    pub ca_cert_note: Option<String>,
    pub timeout: Duration,
    pub retries: u32,
}

/// A credential source inside `[vault]`: a local source (the value is never a `vault:` itself).
fn local_source(key: &str, text: &str, ctx: &Context) -> Result<Source, String> {
    let s =
        Source::parse(text, &ctx.cwd, ctx.home.as_deref()).map_err(|m| format!("{key}: {m}"))?;
    if s.is_remote() {
        return Err(format!(
            "{key} = \"{text}\": the {} credential must come from a local source (env:, file:, dotenv:, systemd:)",
            key
        ));
    }
    Ok(s)
}

impl VaultSettings {
    /// Validate `[vault]` (absent table = all defaults). Reads only the environment snapshot.
    pub fn from_section(section: Option<&VaultSection>, ctx: &Context) -> Result<Self, VaultError> {
        let default = VaultSection::default();
        let s = section.unwrap_or(&default);
        let cfg = VaultError::Config;
        let address = match (&s.address, ctx.var_str("VAULT_ADDR")) {
            (Some(a), _) => a.clone(),
            (None, Some(a)) if !a.is_empty() => a.to_string(),
            _ => {
                return Err(cfg(
                    "no Vault address: set [vault].address or export VAULT_ADDR (e.g. https://vault.internal:8200)"
                        .into(),
                ));
            }
        };
        // Messages never quote a `user:pass@` in the address.
        let shown = crate::scrub::strip_userinfo(&address).into_owned();
        let url = reqwest::Url::parse(&address)
            .map_err(|e| cfg(format!("address = \"{shown}\" is not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(cfg(format!(
                "address = \"{shown}\": write http(s)://HOST:PORT"
            )));
        }
        let address = address.trim_end_matches('/').to_string();
        let namespace = s
            .namespace
            .clone()
            .or_else(|| ctx.var_str("VAULT_NAMESPACE").map(str::to_string))
            .filter(|n| !n.is_empty());
        if let Some(ns) = &namespace
            && !ns.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(cfg(format!(
                "namespace = \"{ns}\" has spaces or control characters"
            )));
        }
        let method = s.auth.as_deref().unwrap_or("token");
        let needs = |key: &str, v: &Option<String>| -> Result<String, VaultError> {
            v.clone()
                .ok_or_else(|| cfg(format!("auth = \"{method}\" needs `{key}`")))
        };
        let mut unused: Vec<&str> = Vec::new();
        let auth = match method {
            "token" => {
                for (k, v) in [
                    ("role_id", &s.role_id),
                    ("secret_id", &s.secret_id),
                    ("role", &s.role),
                    ("jwt", &s.jwt),
                ] {
                    if v.is_some() {
                        unused.push(k);
                    }
                }
                Auth::Token
            }
            "approle" => {
                for (k, v) in [("token", &s.token), ("role", &s.role), ("jwt", &s.jwt)] {
                    if v.is_some() {
                        unused.push(k);
                    }
                }
                Auth::AppRole {
                    role_id: local_source("role_id", &needs("role_id", &s.role_id)?, ctx)
                        .map_err(cfg)?,
                    secret_id: local_source("secret_id", &needs("secret_id", &s.secret_id)?, ctx)
                        .map_err(cfg)?,
                }
            }
            "kubernetes" => {
                for (k, v) in [
                    ("token", &s.token),
                    ("role_id", &s.role_id),
                    ("secret_id", &s.secret_id),
                ] {
                    if v.is_some() {
                        unused.push(k);
                    }
                }
                let jwt = s.jwt.clone().unwrap_or_else(|| DEFAULT_K8S_JWT.to_string());
                // A bare path is a file: `jwt = "/var/run/..."` reads like `file:/var/run/...`.
                let jwt = if jwt.starts_with('/') || jwt.starts_with('~') || jwt.starts_with('.') {
                    format!("file:{jwt}")
                } else {
                    jwt
                };
                Auth::Kubernetes {
                    role: needs("role", &s.role)?,
                    jwt: local_source("jwt", &jwt, ctx).map_err(cfg)?,
                }
            }
            other => {
                return Err(cfg(format!(
                    "auth = \"{other}\" is not supported (known: token, approle, kubernetes)"
                )));
            }
        };
        if !unused.is_empty() {
            return Err(cfg(format!(
                "{} not used with auth = \"{method}\": remove {} or change `auth`",
                unused.join(", "),
                if unused.len() == 1 { "it" } else { "them" }
            )));
        }
        let token_source = match &s.token {
            Some(t) => Some(local_source("token", t, ctx).map_err(cfg)?),
            None => None,
        };
        let auth_mount = s
            .auth_mount
            .clone()
            .unwrap_or_else(|| method.to_string())
            .trim_matches('/')
            .to_string();
        if auth_mount.is_empty() {
            return Err(cfg("auth_mount is empty".into()));
        }
        let ca_written = s
            .ca_cert
            .clone()
            .or_else(|| ctx.var_str("VAULT_CACERT").map(str::to_string))
            .filter(|c| !c.is_empty());
        let ca_cert = ca_written
            .as_deref()
            .map(|c| resolve_path(c, &ctx.cwd, ctx.home.as_deref()));
        let ca_cert_note = ca_written
            .as_deref()
            .and_then(|c| crate::profile::source::relative_note(c, &ctx.cwd));
        let timeout = match &s.timeout {
            Some(t) => parse_duration("timeout", t, DurationKind::Request).map_err(cfg)?,
            None => DEFAULT_TIMEOUT,
        };
        Ok(VaultSettings {
            address,
            namespace,
            auth,
            token_source,
            auth_mount,
            ca_cert,
            ca_cert_note,
            timeout,
            retries: s.retries.unwrap_or(DEFAULT_RETRIES),
        })
    }

    /// The auth method's name, for messages and `check`.
    pub fn auth_method(&self) -> &'static str {
        match self.auth {
            Auth::Token => "token",
            Auth::AppRole { .. } => "approle",
            Auth::Kubernetes { .. } => "kubernetes",
        }
    }
}

/// A failure of one HTTP exchange, before it is phrased for the user.
enum Failure {
    Status { code: u16, errors: Vec<String> },
    Connect(String),
    Timeout,
    Other(String),
}

impl Failure {
    fn retryable(&self) -> bool {
        match self {
            Failure::Status { code, .. } => *code == 429 || *code >= 500,
            Failure::Connect(_) => true,
            // A hung server costs the timeout once, not once per retry.
            Failure::Timeout | Failure::Other(_) => false,
        }
    }
}

/// The innermost message of an error chain (e.g. "Connection refused (os error 111)").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The message for a response agentrun cannot read. Never quotes the response.
const UNEXPECTED: &str = "the server's response has an unexpected shape (is this a Vault/OpenBao KV endpoint, and is `?kv=` right?)";

fn classify(err: ClientError) -> Failure {
    match err {
        ClientError::APIError { code, errors } => Failure::Status { code, errors },
        ClientError::RestClientError { source } => {
            if let vaultrs_rest::ServerResponseError { code, .. } = source {
                // The body is not kept: it may hold anything the server echoed.
                return Failure::Status {
                    code,
                    errors: Vec::new(),
                };
            }
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&source);
            while let Some(e) = cur {
                if let Some(re) = e.downcast_ref::<reqwest::Error>() {
                    if re.is_timeout() {
                        return Failure::Timeout;
                    }
                    if re.is_connect() {
                        return Failure::Connect(root_cause(re));
                    }
                    if re.is_request() || re.is_builder() {
                        return Failure::Other(root_cause(re));
                    }
                    break;
                }
                cur = e.source();
            }
            // Anything else (a response that does not parse, a body the client could not
            // convert) may quote what the server sent, values included: say only what kind
            // of failure it was.
            Failure::Other(UNEXPECTED.into())
        }
        ClientError::JsonParseError { .. } | ClientError::ResponseDataEmptyError => {
            Failure::Other("the response is not what a KV read returns".into())
        }
        _ => Failure::Other(UNEXPECTED.into()),
    }
}

/// rustify's error type, as vaultrs wraps it (named here once).
mod vaultrs_rest {
    pub(super) use rustify::errors::ClientError::ServerResponseError;
}

/// A logged-in client. Holds the token inside `vaultrs`; never formatted.
pub(crate) struct Vault {
    client: VaultClient,
    addr: String,
    origin: String,
    timeout: Duration,
    retries: u32,
}

impl Vault {
    /// Build a client and log in (AppRole, Kubernetes) or load the token.
    pub(crate) async fn connect(
        settings: &VaultSettings,
        ctx: &Context,
    ) -> Result<Vault, VaultError> {
        let addr = vault_addr(settings);
        let cred_err = |what: &str, e: super::FetchError| VaultError::Credential {
            what: what.into(),
            msg: e.to_string(),
        };
        let (token, origin) = match &settings.auth {
            Auth::Token => match &settings.token_source {
                Some(src) => (
                    super::fetch_local(src, ctx).map_err(|e| cred_err("token", e))?,
                    format!("from [vault].token = {}:{}", src.kind(), src.location()),
                ),
                None => match ctx.var_str("VAULT_TOKEN").filter(|t| !t.is_empty()) {
                    Some(t) => (
                        SecretString::from(t.to_string()),
                        "from $VAULT_TOKEN".into(),
                    ),
                    None => {
                        let file = ctx.home.as_ref().map(|h| h.join(".vault-token"));
                        match file {
                            Some(f) if f.exists() => (
                                super::fetch_local(&Source::File { path: f }, ctx)
                                    .map_err(|e| cred_err("token in ~/.vault-token", e))?,
                                "from ~/.vault-token".into(),
                            ),
                            _ => return Err(VaultError::NoToken),
                        }
                    }
                },
            },
            // Logged in below with an empty token.
            _ => (SecretString::from(String::new()), String::new()),
        };
        check_header_safe(&token, "token")?;
        let client = build_client(settings, token.expose_secret())?;
        let mut vault = Vault {
            client,
            addr,
            origin,
            timeout: settings.timeout,
            retries: settings.retries,
        };
        let mount = settings.auth_mount.clone();
        let login = |method: &'static str, f: Failure| VaultError::Login {
            addr: vault_addr(settings),
            method,
            mount: mount.clone(),
            detail: login_detail(f, settings.timeout),
        };
        match &settings.auth {
            Auth::Token => {}
            Auth::AppRole { role_id, secret_id } => {
                let role_id =
                    super::fetch_local(role_id, ctx).map_err(|e| cred_err("AppRole role_id", e))?;
                let secret_id = super::fetch_local(secret_id, ctx)
                    .map_err(|e| cred_err("AppRole secret_id", e))?;
                let auth = vault
                    .retrying(|c| {
                        vaultrs::auth::approle::login(
                            c,
                            &mount,
                            role_id.expose_secret(),
                            secret_id.expose_secret(),
                        )
                    })
                    .await
                    .map_err(|f| login("AppRole", f))?;
                let token = SecretString::from(auth.client_token);
                check_header_safe(&token, "token returned by the AppRole login")?;
                vaultrs::client::Client::set_token(&mut vault.client, token.expose_secret());
                vault.origin = format!("from the AppRole login at auth/{mount}");
            }
            Auth::Kubernetes { role, jwt } => {
                let jwt = super::fetch_local(jwt, ctx)
                    .map_err(|e| cred_err("Kubernetes service-account JWT", e))?;
                let auth = vault
                    .retrying(|c| {
                        vaultrs::auth::kubernetes::login(c, &mount, role, jwt.expose_secret())
                    })
                    .await
                    .map_err(|f| login("Kubernetes", f))?;
                let token = SecretString::from(auth.client_token);
                check_header_safe(&token, "token returned by the Kubernetes login")?;
                vaultrs::client::Client::set_token(&mut vault.client, token.expose_secret());
                vault.origin = format!("from the Kubernetes login at auth/{mount} as role {role}");
            }
        }
        Ok(vault)
    }

    /// One request with the per-request timeout, retried on connection errors, 5xx and 429.
    async fn retrying<'a, T, F, Fut>(&'a self, op: F) -> Result<T, Failure>
    where
        F: Fn(&'a VaultClient) -> Fut,
        Fut: Future<Output = Result<T, ClientError>> + 'a,
    {
        let mut attempt = 0u32;
        loop {
            let failure = match tokio::time::timeout(self.timeout, op(&self.client)).await {
                Err(_) => Failure::Timeout,
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => classify(e),
            };
            if attempt >= self.retries || !failure.retryable() {
                return Err(failure);
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
            attempt += 1;
        }
    }

    /// Read one field. Always a fresh read: nothing is cached.
    pub(crate) async fn read(&self, r: &VaultRef) -> Result<SecretString, VaultError> {
        let api_path = match r.kv {
            1 => format!("{}/{}", r.mount, r.path),
            _ => format!("{}/data/{}", r.mount, r.path),
        };
        let shown = match r.version {
            Some(v) => format!("{api_path} (version {v})"),
            None => api_path.clone(),
        };
        type Data = BTreeMap<String, serde_json::Value>;
        let result: Result<Data, Failure> = match (r.kv, r.version) {
            (1, _) => {
                self.retrying(|c| vaultrs::kv1::get::<Data>(c, &r.mount, &r.path))
                    .await
            }
            (_, Some(v)) => {
                self.retrying(|c| vaultrs::kv2::read_version::<Data>(c, &r.mount, &r.path, v))
                    .await
            }
            _ => {
                self.retrying(|c| vaultrs::kv2::read::<Data>(c, &r.mount, &r.path))
                    .await
            }
        };
        let data = match result {
            Ok(d) => d,
            Err(f) => return Err(self.read_error(f, r, &shown).await),
        };
        let Some(value) = data.get(&r.field) else {
            let mut names: Vec<&str> = data.keys().map(String::as_str).take(20).collect();
            if names.is_empty() {
                names.push("none");
            }
            return Err(VaultError::MissingField {
                addr: self.addr.clone(),
                path: shown,
                field: r.field.clone(),
                available: names.join(", "),
            });
        };
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            // A nested object or a number: its JSON text (e.g. a service-account key for `as = "file"`).
            other => other.to_string(),
        };
        if text.is_empty() {
            return Err(VaultError::Other {
                addr: self.addr.clone(),
                path: shown,
                msg: format!(
                    "field `{}` is empty: an empty credential is never valid",
                    r.field
                ),
            });
        }
        Ok(SecretString::from(text))
    }

    async fn read_error(&self, f: Failure, r: &VaultRef, shown: &str) -> VaultError {
        let addr = self.addr.clone();
        let path = shown.to_string();
        match f {
            Failure::Timeout => VaultError::Timeout {
                addr,
                path,
                secs: self.timeout.as_secs_f64(),
            },
            Failure::Connect(reason) if reason.contains("certificate") => {
                VaultError::Tls { addr, path, reason }
            }
            Failure::Connect(reason) => VaultError::Unreachable { addr, path, reason },
            Failure::Other(msg) => VaultError::Other { addr, path, msg },
            Failure::Status { code: 404, .. } => {
                let hint = match (r.kv, r.version) {
                    (1, _) => format!(
                        " (read as KV v1; if {} is a KV v2 mount drop `?kv=1`)",
                        r.mount
                    ),
                    (_, Some(v)) => format!(
                        ": version {v} does not exist or was deleted; check `bao kv metadata get {}/{}`",
                        r.mount, r.path
                    ),
                    _ => format!(
                        ": check the path (`bao kv get {}/{}`); if {} is a KV v1 mount add `?kv=1`",
                        r.mount, r.path, r.mount
                    ),
                };
                VaultError::NotFound { addr, path, hint }
            }
            Failure::Status { code: 403, .. } => {
                // A bad token and a token without read both get 403: ask the token about itself.
                let origin = self.origin.clone();
                match self.retrying(vaultrs::token::lookup_self).await {
                    Err(Failure::Status { code: 403, .. }) => {
                        VaultError::BadToken { addr, path, origin }
                    }
                    _ => VaultError::Forbidden { addr, path, origin },
                }
            }
            Failure::Status { code: 503, errors }
                if errors.iter().any(|e| e.contains("sealed")) =>
            {
                VaultError::Sealed { addr, path }
            }
            Failure::Status { code, errors } => VaultError::Status {
                addr,
                path,
                code,
                detail: server_errors(&errors),
            },
        }
    }
}

/// The policies of the token agentrun uses with `[vault]`: log in as a fetch does (token,
/// AppRole, Kubernetes), then `GET /v1/auth/token/lookup-self` and return `data.policies`.
/// The lookup's answer holds the token itself: only the policy names leave this function,
/// and no message names the token.
pub async fn token_policies(
    section: Option<&VaultSection>,
    ctx: &Context,
) -> Result<Vec<String>, String> {
    let settings = VaultSettings::from_section(section, ctx).map_err(|e| e.to_string())?;
    let vault = Vault::connect(&settings, ctx)
        .await
        .map_err(|e| e.to_string())?;
    vault.policies().await.map_err(|e| e.to_string())
}

impl Vault {
    /// `data.policies` of `auth/token/lookup-self`.
    async fn policies(&self) -> Result<Vec<String>, VaultError> {
        const PATH: &str = "auth/token/lookup-self";
        let addr = self.addr.clone();
        let path = PATH.to_string();
        match self.retrying(vaultrs::token::lookup_self).await {
            Ok(info) => Ok(info.policies),
            Err(Failure::Timeout) => Err(VaultError::Timeout {
                addr,
                path,
                secs: self.timeout.as_secs_f64(),
            }),
            Err(Failure::Connect(reason)) if reason.contains("certificate") => {
                Err(VaultError::Tls { addr, path, reason })
            }
            Err(Failure::Connect(reason)) => Err(VaultError::Unreachable { addr, path, reason }),
            Err(Failure::Status { code: 403, .. }) => Err(VaultError::Other {
                addr,
                path,
                msg: format!(
                    "HTTP 403: the token ({}) is invalid, expired or revoked, or lacks `read` on {PATH} (the `default` policy grants it)",
                    self.origin
                ),
            }),
            Err(Failure::Status { code, errors }) => Err(VaultError::Status {
                addr,
                path,
                code,
                detail: server_errors(&errors),
            }),
            Err(Failure::Other(_)) => Err(VaultError::Other {
                addr,
                path,
                msg: "the answer is not what a token lookup returns".into(),
            }),
        }
    }
}

/// The address as messages show it: without any `user:pass@`.
fn vault_addr(s: &VaultSettings) -> String {
    crate::scrub::strip_userinfo(&s.address).into_owned()
}

fn login_detail(f: Failure, timeout: Duration) -> String {
    match f {
        Failure::Timeout => format!("no answer within {}s", timeout.as_secs_f64()),
        Failure::Connect(reason) => format!("cannot connect: {reason}"),
        Failure::Other(msg) => msg,
        Failure::Status { code: 503, errors } if errors.iter().any(|e| e.contains("sealed")) => {
            "the server is sealed: unseal it".into()
        }
        Failure::Status { code, errors } => format!(
            "HTTP {code}{}; check the role and its credentials, and that the auth method is mounted there (auth_mount)",
            server_errors(&errors)
        ),
    }
}

/// Vault's own error strings (they name paths and reasons, not secrets), shortened.
fn server_errors(errors: &[String]) -> String {
    let joined: String = errors
        .iter()
        .map(|e| e.replace(['\n', '\r'], " "))
        .collect::<Vec<_>>()
        .join("; ");
    if joined.is_empty() {
        String::new()
    } else {
        let short: String = joined.chars().take(200).collect();
        format!(": {short}")
    }
}

/// `vaultrs` puts the token in a header and panics if it cannot: refuse such a token first.
fn check_header_safe(token: &SecretString, what: &str) -> Result<(), VaultError> {
    if token.expose_secret().bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(VaultError::Config(format!(
            "the {what} contains spaces or control characters and cannot be sent in a header"
        )))
    }
}

fn build_client(settings: &VaultSettings, token: &str) -> Result<VaultClient, VaultError> {
    let mut b = VaultClientSettingsBuilder::default();
    // Every field set explicitly: the builder's defaults read the process environment.
    b.address(&settings.address)
        .token(token)
        .ca_certs(
            settings
                .ca_cert
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        )
        .identity(None)
        .timeout(Some(settings.timeout))
        .verify(true)
        .version(1)
        .wrapping(false)
        .namespace(settings.namespace.clone());
    if let Some(ca) = &settings.ca_cert {
        // vaultrs would report a missing file without saying which setting named it.
        if !ca.is_file() {
            let note = settings
                .ca_cert_note
                .as_ref()
                .map(|n| format!("; {n}"))
                .unwrap_or_default();
            return Err(VaultError::Config(format!(
                "ca_cert = {}: no such file (a PEM bundle of the CA that signed the server's certificate){note}",
                ca.display()
            )));
        }
    }
    let s = b
        .build()
        .map_err(|e| VaultError::Config(format!("invalid settings: {e}")))?;
    VaultClient::new(s).map_err(|e| {
        let detail = match &e {
            ClientError::ParseCertificateError { path, .. } => {
                format!("ca_cert = {path} is not a PEM certificate bundle")
            }
            ClientError::FileReadError { path, source } => format!("cannot read {path}: {source}"),
            other => other.to_string(),
        };
        VaultError::Config(detail)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ctx(vars: &[(&str, &str)]) -> Context {
        Context {
            env: vars
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect::<BTreeMap<_, _>>(),
            cwd: "/w".into(),
            home: Some("/h".into()),
        }
    }

    fn section(toml_text: &str) -> VaultSection {
        toml::from_str(toml_text).unwrap()
    }

    /// The message lists the local schemes in its own order (kept byte for byte); it must
    /// name exactly the local rows of the scheme table.
    #[test]
    fn the_local_source_message_names_every_local_scheme() {
        let e = local_source("token", "vault:x/y#z", &ctx(&[])).unwrap_err();
        assert_eq!(
            e,
            "token = \"vault:x/y#z\": the token credential must come from a local source (env:, file:, dotenv:, systemd:)"
        );
        let (_, listed) = e.rsplit_once('(').unwrap();
        let mut listed: Vec<&str> = listed
            .trim_end_matches(')')
            .split(", ")
            .map(|s| s.trim_end_matches(':'))
            .collect();
        listed.sort_unstable();
        let mut local: Vec<&str> = crate::profile::SCHEMES
            .iter()
            .filter(|s| !s.remote)
            .map(|s| s.name)
            .collect();
        local.sort_unstable();
        assert_eq!(listed, local);
    }

    #[test]
    fn address_from_section_or_env() {
        let s =
            VaultSettings::from_section(None, &ctx(&[("VAULT_ADDR", "http://127.0.0.1:8200/")]))
                .unwrap();
        assert_eq!(s.address, "http://127.0.0.1:8200");
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert_eq!(s.retries, DEFAULT_RETRIES);
        assert_eq!(s.auth_method(), "token");
        let e = VaultSettings::from_section(None, &ctx(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no Vault address"), "{e}");
        let e = VaultSettings::from_section(Some(&section("address = \"ftp://x\"")), &ctx(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("http(s)://"), "{e}");
    }

    #[test]
    fn auth_methods_need_their_keys() {
        let c = ctx(&[("VAULT_ADDR", "http://v:8200")]);
        let e = VaultSettings::from_section(Some(&section("auth = \"approle\"")), &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs `role_id`"), "{e}");
        let s = VaultSettings::from_section(
            Some(&section(
                "auth = \"approle\"\nrole_id = \"file:r\"\nsecret_id = \"env:S\"",
            )),
            &c,
        )
        .unwrap();
        assert_eq!(s.auth_mount, "approle");
        let s = VaultSettings::from_section(
            Some(&section(
                "auth = \"kubernetes\"\nrole = \"agent\"\nauth_mount = \"k8s/\"",
            )),
            &c,
        )
        .unwrap();
        assert_eq!(s.auth_mount, "k8s");
        let e = VaultSettings::from_section(Some(&section("auth = \"ldap\"")), &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not supported"), "{e}");
        let e = VaultSettings::from_section(Some(&section("role = \"x\"")), &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not used with auth = \"token\""), "{e}");
        let e = VaultSettings::from_section(Some(&section("token = \"vault:a/b#c\"")), &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("local source"), "{e}");
        let e = VaultSettings::from_section(Some(&section("timeout = \"soon\"")), &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a duration"), "{e}");
    }
}
