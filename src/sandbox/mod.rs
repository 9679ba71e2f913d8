//! Landlock + seccomp confinement (issue 3). Placeholder types until the sandbox lands.

use serde::{Deserialize, Serialize};

/// The `[sandbox]` table.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    pub read: Option<Vec<String>>,
    pub write: Option<Vec<String>>,
    pub exec: Option<Vec<String>>,
    #[serde(default)]
    pub connect: Vec<u16>,
    #[serde(default)]
    pub bind: Vec<u16>,
    #[serde(default)]
    pub udp: bool,
    #[serde(default)]
    pub unix_sockets: bool,
    #[serde(default)]
    pub allow_syscalls: Vec<String>,
}
