//! HashiCorp Vault / OpenBao KV source (issue 5).

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
