//! The remote backends' tables, `[vault]` and `[aws]`, as the profile holds them: strings and
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
