//! The `[sandbox]` table of a profile, as plain data. Turning it into a policy (paths
//! resolved, defaults filled in, syscall names checked) belongs to `crate::sandbox`.
//!
//! Imports nothing of the crate (see `profile`).

use serde::{Deserialize, Serialize};

/// The `[sandbox]` table of a profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    /// Read-only roots.
    pub read: Option<Vec<String>>,
    /// Read-write roots.
    pub write: Option<Vec<String>>,
    /// Read-and-execute roots.
    pub exec: Option<Vec<String>>,
    /// TCP ports the child may connect to.
    #[serde(default)]
    pub connect: Vec<u16>,
    /// TCP ports the child may listen on.
    #[serde(default)]
    pub bind: Vec<u16>,
    /// UDP to any address (Landlock cannot filter UDP by port before ABI 10).
    #[serde(default)]
    pub udp: bool,
    /// `socket(AF_UNIX)` (pathname and abstract sockets; abstract ones stay scoped).
    #[serde(default)]
    pub unix_sockets: bool,
    /// Names given back from the deny-list; see [`GiveBack`].
    #[serde(default)]
    pub allow_syscalls: Vec<String>,
}
