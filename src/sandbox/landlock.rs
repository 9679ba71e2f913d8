//! Landlock: the file-system plan, TCP ports and scopes -> a ruleset fd, built in the parent.
//!
//! The only importer of the `landlock` crate. The ABI is pinned here ([`PINNED_ABI`]), never
//! derived from the running kernel: the handled rights are those of ABI 6 (file system with
//! truncate and device ioctl, TCP bind/connect, abstract-socket and signal scopes). ABI 7 only
//! adds audit-log flags, which agentrun does not use. In enforce mode every right is a
//! `HardRequirement`; in best-effort mode the crate drops what the kernel lacks and
//! [`coverage`] says what that was.

use std::fs;
use std::os::fd::OwnedFd;

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope,
};

use super::fsplan::{FsAccess, FsPlan};
use super::{Level, Policy, SandboxError};

/// The Landlock ABI agentrun is written and tested against.
const PINNED: ABI = ABI::V6;
/// [`PINNED`] as a number, for reports.
pub const PINNED_ABI: u32 = 6;

/// What the running kernel offers: `Ok(abi)` or why there is no Landlock.
pub(crate) fn kernel_abi() -> Result<u32, &'static str> {
    match crate::sys::landlock_abi_version() {
        Ok(v) => Ok(u32::try_from(v).unwrap_or(0)),
        Err(libc::EOPNOTSUPP) => Err(
            "Landlock is built in but disabled at boot (add `landlock` to the lsm= kernel parameter)",
        ),
        Err(_) => Err("the kernel has no Landlock (Linux 5.13+ with CONFIG_SECURITY_LANDLOCK)"),
    }
}

/// How much of each Landlock area a kernel with ABI `abi` (0 = none) enforces, and what is
/// missing, as operator-facing phrases.
pub(crate) fn coverage(abi: u32) -> (Level, Level, Level, Vec<String>) {
    let mut missing = Vec::new();
    let fs = match abi {
        0 => {
            missing.push("file-system rules (Landlock, Linux 5.13+)".into());
            Level::Not
        }
        1..=4 => {
            if abi < 2 {
                missing.push(
                    "cross-directory rename/link control (Landlock ABI 2, Linux 5.19+)".into(),
                );
            }
            if abi < 3 {
                missing.push("truncate control (Landlock ABI 3, Linux 6.2+)".into());
            }
            missing.push("device ioctl control (Landlock ABI 5, Linux 6.10+)".into());
            Level::Partially
        }
        _ => Level::Fully,
    };
    let net = if abi >= 4 {
        Level::Fully
    } else {
        missing.push("TCP port rules (Landlock ABI 4, Linux 6.7+)".into());
        Level::Not
    };
    let scope = if abi >= 6 {
        Level::Fully
    } else {
        missing.push("abstract-socket and signal scoping (Landlock ABI 6, Linux 6.12+)".into());
        Level::Not
    };
    (fs, net, scope, missing)
}

/// Landlock rights for an agentrun access, restricted to what a non-directory can carry.
fn rights(a: FsAccess, is_dir: bool) -> BitFlags<AccessFs> {
    let mut r = BitFlags::EMPTY;
    if a.read {
        r |= AccessFs::ReadFile | AccessFs::ReadDir;
    }
    if a.exec {
        r |= AccessFs::Execute;
    }
    if a.write {
        // Everything but creating device nodes.
        r |= AccessFs::WriteFile
            | AccessFs::RemoveDir
            | AccessFs::RemoveFile
            | AccessFs::MakeDir
            | AccessFs::MakeReg
            | AccessFs::MakeSock
            | AccessFs::MakeFifo
            | AccessFs::MakeSym
            | AccessFs::Refer
            | AccessFs::Truncate;
    }
    if a.ioctl {
        r |= AccessFs::IoctlDev;
    }
    let r = r & AccessFs::from_all(PINNED);
    if is_dir {
        r
    } else {
        r & AccessFs::from_file(PINNED)
    }
}

fn err(step: &'static str, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Landlock {
        step,
        detail: e.to_string(),
    }
}

/// Builds the ruleset and returns its fd (`None` when best effort found no Landlock at all).
pub(crate) fn build(
    plan: &FsPlan,
    policy: &Policy,
    best_effort: bool,
) -> Result<Option<OwnedFd>, SandboxError> {
    let level = if best_effort {
        CompatLevel::BestEffort
    } else {
        CompatLevel::HardRequirement
    };
    let ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(PINNED))
        .map_err(|e| err("handle file-system access", e))?
        .handle_access(AccessNet::from_all(PINNED))
        .map_err(|e| err("handle TCP access", e))?
        .scope(Scope::from_all(PINNED))
        .map_err(|e| err("scope abstract sockets and signals", e))?;
    // restrict_self (and no_new_privs) happen in the child, by raw syscall.
    let mut created = ruleset.create().map_err(|e| err("create the ruleset", e))?;

    for g in &plan.grants {
        let fd = match PathFd::new(&g.path) {
            Ok(fd) => fd,
            // Vanished since planning: nothing to grant.
            Err(_) if fs::metadata(&g.path).is_err() => continue,
            Err(e) => {
                return Err(SandboxError::Landlock {
                    step: "open a rule path",
                    detail: format!("{}: {e}", g.path.display()),
                });
            }
        };
        // The type of what was opened, not of what the path named a moment before.
        let st = nix::sys::stat::fstat(&fd).map_err(|e| SandboxError::Landlock {
            step: "stat a rule path",
            detail: format!("{}: {e}", g.path.display()),
        })?;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        created = created
            .add_rule(PathBeneath::new(fd, rights(g.access, is_dir)))
            .map_err(|e| SandboxError::Landlock {
                step: "add a file-system rule",
                detail: format!("{}: {e}", g.path.display()),
            })?;
    }
    for &port in policy.connect.iter().chain(&policy.broker_port) {
        created = created
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(|e| err("add a TCP connect rule", e))?;
    }
    for &port in &policy.bind {
        created = created
            .add_rule(NetPort::new(port, AccessNet::BindTcp))
            .map_err(|e| err("add a TCP bind rule", e))?;
    }
    Ok(created.into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn file_rights_drop_directory_only_bits() {
        let d = rights(FsAccess::READ_WRITE, true);
        assert!(d.contains(AccessFs::MakeReg | AccessFs::ReadDir | AccessFs::Truncate));
        assert!(!d.contains(AccessFs::Execute));
        assert!(!d.intersects(AccessFs::MakeChar | AccessFs::MakeBlock));
        let f = rights(FsAccess::READ_WRITE, false);
        assert_eq!(
            f,
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate
        );
        assert_eq!(
            rights(FsAccess::READ_EXEC, false),
            AccessFs::ReadFile | AccessFs::Execute
        );
    }

    #[test]
    fn coverage_names_what_an_old_kernel_lacks() {
        let (fs, net, scope, missing) = coverage(7);
        assert_eq!((fs, net, scope), (Level::Fully, Level::Fully, Level::Fully));
        assert!(missing.is_empty());
        let (fs, net, scope, missing) = coverage(4);
        assert_eq!(
            (fs, net, scope),
            (Level::Partially, Level::Fully, Level::Not)
        );
        assert!(missing.iter().any(|m| m.contains("scoping")), "{missing:?}");
        let (fs, _, _, missing) = coverage(0);
        assert_eq!(fs, Level::Not);
        assert_eq!(missing.len(), 3);
    }
}
