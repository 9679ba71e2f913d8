//! AWS Secrets Manager source (issue 5).

use serde::{Deserialize, Serialize};

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
