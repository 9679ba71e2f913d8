//! The steps of the child's set-up between fork and exec, as one `#[repr(u8)]` type, and the
//! one way a failed step is reported: the child writes `(step as u8, errno)` on a
//! close-on-exec pipe, and the parent decodes it with [`Step::try_from`]; a byte that is no
//! step fails closed (the run ends with 125, as for any set-up failure).
//!
//! The variants are declared once, each with the text the operator reads
//! ("setting up the child failed at {message}: {errno}"); their numbers follow the order of
//! declaration and travel only between a parent and its own child, so adding a step anywhere
//! changes no message.

use std::os::fd::RawFd;

macro_rules! steps {
    ($($(#[$doc:meta])* $name:ident => $message:literal,)*) => {
        /// A step of the child's set-up, in the order the child takes them.
        #[repr(u8)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Step {
            $($(#[$doc])* $name,)*
        }

        impl Step {
            /// Every step, in declaration order (`ALL[n] as u8 == n`).
            pub const ALL: &[Step] = &[$(Step::$name,)*];

            /// What the operator reads: "setting up the child failed at {message}: ...".
            pub fn message(self) -> &'static str {
                match self {
                    $(Step::$name => $message,)*
                }
            }
        }
    };
}

steps! {
    // The launcher's own steps (`launch::spawn`), in every child.
    ParentDeath => "the parent-death signal",
    Session => "a new session",
    ControllingTty => "the controlling terminal",
    Rlimits => "resource limits",
    CloseFds => "closing inherited descriptors",
    SignalMask => "the signal mask",
    // The PID namespace (`launch::pidns`): its unshare (and the signal mask of its init),
    // the user namespace's maps, the fork or clone of the init and the command.
    PidNamespace => "a PID namespace",
    UserMaps => "the user namespace's id maps",
    PidInit => "the PID namespace's init",
    // The child's own namespaces (`sandbox::isolate`).
    Loopback => "the network namespace's loopback interface",
    BrokerListener => "the broker's listening socket",
    ReadOnlyMounts => "the read-only mounts of the files later runs read",
    MemfdNoexec => "vm.memfd_noexec in the PID namespace",
    // The confinement (`sandbox::Prepared::apply_in_child`), last before the exec.
    BoundingSet => "drop the capability bounding set",
    Securebits => "lock securebits",
    Ambient => "clear ambient capabilities",
    Capabilities => "clear capabilities",
    NoNewPrivs => "set no_new_privs",
    Landlock => "enforce the Landlock ruleset",
    Seccomp => "install the seccomp filter",
    /// The command's own `execve` failed (reported by a command started inside a PID
    /// namespace; the parent reads the errno as an exec error, not a set-up step).
    Exec => "executing the command",
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// A byte on the report pipe that names no [`Step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown child set-up step {0}")]
pub struct UnknownStep(pub u8);

impl TryFrom<u8> for Step {
    type Error = UnknownStep;
    fn try_from(b: u8) -> Result<Step, UnknownStep> {
        Step::ALL.get(usize::from(b)).copied().ok_or(UnknownStep(b))
    }
}

/// The length of one report: the step's byte, then the errno (native endian).
pub const REPORT_LEN: usize = 5;

impl Step {
    /// `(self, errno)` as the child writes it.
    pub fn encode(self, errno: i32) -> [u8; REPORT_LEN] {
        let e = errno.to_ne_bytes();
        [self as u8, e[0], e[1], e[2], e[3]]
    }

    /// What the parent read back; `Err` when the step byte names no step.
    pub fn decode(report: [u8; REPORT_LEN]) -> Result<(Step, i32), UnknownStep> {
        let step = Step::try_from(report[0])?;
        let errno = i32::from_ne_bytes([report[1], report[2], report[3], report[4]]);
        Ok((step, errno))
    }
}

/// In the child: report that `step` failed with `errno` on the pipe `fd` (one write, under
/// `PIPE_BUF` so atomic; best effort). Async-signal-safe.
pub fn report_step(fd: RawFd, step: Step, errno: i32) {
    super::fd::write_best_effort(fd, &step.encode(errno));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_round_trips() {
        for (n, &s) in Step::ALL.iter().enumerate() {
            assert_eq!(s as u8 as usize, n, "{s:?} is not at its number in ALL");
            assert_eq!(Step::try_from(s as u8), Ok(s));
            for errno in [0, libc::EPERM, libc::EINVAL, libc::ENOSYS, i32::MAX, -1] {
                assert_eq!(Step::decode(s.encode(errno)), Ok((s, errno)));
            }
        }
    }

    #[test]
    fn an_unknown_byte_is_an_error() {
        let first_unknown = u8::try_from(Step::ALL.len()).unwrap_or(u8::MAX);
        for b in first_unknown..=u8::MAX {
            assert_eq!(Step::try_from(b), Err(UnknownStep(b)));
            assert_eq!(
                Step::decode([b, 1, 0, 0, 0]),
                Err(UnknownStep(b)),
                "byte {b}"
            );
        }
    }

    /// The texts the operator reads, byte for byte as before the steps became one type
    /// (launcher `STEPS`, then the sandbox's `STEPS`).
    #[test]
    fn messages_are_unchanged() {
        let want = [
            (Step::ParentDeath, "the parent-death signal"),
            (Step::Session, "a new session"),
            (Step::ControllingTty, "the controlling terminal"),
            (Step::Rlimits, "resource limits"),
            (Step::CloseFds, "closing inherited descriptors"),
            (Step::SignalMask, "the signal mask"),
            (Step::PidNamespace, "a PID namespace"),
            (Step::UserMaps, "the user namespace's id maps"),
            (Step::PidInit, "the PID namespace's init"),
            (Step::Loopback, "the network namespace's loopback interface"),
            (Step::BrokerListener, "the broker's listening socket"),
            (
                Step::ReadOnlyMounts,
                "the read-only mounts of the files later runs read",
            ),
            (Step::MemfdNoexec, "vm.memfd_noexec in the PID namespace"),
            (Step::BoundingSet, "drop the capability bounding set"),
            (Step::Securebits, "lock securebits"),
            (Step::Ambient, "clear ambient capabilities"),
            (Step::Capabilities, "clear capabilities"),
            (Step::NoNewPrivs, "set no_new_privs"),
            (Step::Landlock, "enforce the Landlock ruleset"),
            (Step::Seccomp, "install the seccomp filter"),
        ];
        for (s, m) in want {
            assert_eq!(s.message(), m);
            assert_eq!(s.to_string(), m);
        }
        // Every step but the exec (never shown as a step) is listed above.
        assert_eq!(want.len() + 1, Step::ALL.len());
    }
}
