//! The remote backends' tables, `[vault]`, `[aws]`, `[gcp]` and `[azure]`, as the profile holds them: strings and
//! numbers, unvalidated against the environment. `secrets` validates them (with agentrun's
//! environment) and builds the clients; nothing here fetches. Imports nothing of the crate.

use serde::{Deserialize, Serialize};

/// The `[vault]` table. Sources (`token`, `role_id`, `secret_id`, `jwt`) are source strings.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSection {
    pub address: Option<String>,
    pub namespace: Option<String>,
    pub auth: Option<String>,
    pub token: Option<String>,
    pub role_id: Option<String>,
    pub secret_id: Option<String>,
    pub role: Option<String>,
    pub jwt: Option<String>,
    pub auth_mount: Option<String>,
    pub ca_cert: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
}

/// The `[aws]` table.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSection {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
}

/// The `[gcp]` table (Secret Manager).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GcpSection {
    /// The project of `gcp-sm:SECRET` (the short form).
    pub project: Option<String>,
    /// Replaces `https://secretmanager.googleapis.com` (emulators, private endpoints).
    pub endpoint: Option<String>,
    /// A credentials JSON file, or `"none"` for anonymous access (emulators only). Default:
    /// Application Default Credentials.
    pub credentials: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
}

/// The `[azure]` table (Key Vault). `client_secret` is a source string.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSection {
    /// Replaces `https://VAULT.vault.azure.net` for every `azure-kv:` source.
    pub vault_url: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub authority_host: Option<String>,
    pub ca_cert: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
}
