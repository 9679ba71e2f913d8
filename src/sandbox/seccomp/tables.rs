//! The seccomp policy as plain data: which syscalls are denied, which are checked on their
//! arguments and how, for a given [`Policy`]. Names only; the numbers are in `syscalls`, and
//! this module knows nothing of BPF (the parent module compiles it with the `bpf` assembler,
//! and the tests compile it a second time with seccompiler).
//!
//! Imports only the sandbox's policy (`Policy`, `GiveBack`, `wants_own_network`); never `bpf`
//! or `syscalls`.
//!
//! Style (see FIELD-NOTES): default allow, `EPERM` for the denied calls, so arbitrary programs
//! keep working; `clone3` answers `ENOSYS` so that libc falls back to `clone`, whose flags a
//! filter can read. Arguments that are C `int`s (socket family/type/protocol, ioctl request,
//! clone flags, personality, flags, setsockopt level and name) are compared on their low 32
//! bits only, as the kernel reads them.

use super::super::{GiveBack, Policy};
use Verdict::Allow;

/// What the filter answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    /// Fail the call with this errno.
    Errno(i32),
    KillProcess,
}

pub(crate) const DENY: Verdict = Verdict::Errno(libc::EPERM);
pub(crate) const ENOSYS: Verdict = Verdict::Errno(libc::ENOSYS);

/// How a syscall is decided: at once, or by a small decision tree over the low 32 bits of
/// its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    Is(Verdict),
    /// `arg & mask != 0`: `set`, else `clear`.
    AnyBit {
        arg: u8,
        mask: u32,
        set: Verdict,
        clear: Verdict,
    },
    /// `arg` (after `& mask`, if any) against each case's values in turn; the first case
    /// holding it decides, and `otherwise` when none does.
    OneOf {
        arg: u8,
        mask: Option<u32>,
        cases: Vec<(Vec<u32>, Check)>,
        otherwise: Verdict,
    },
}

/// How a rule shows in `explain`'s list of denied syscalls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Explain {
    /// Each syscall's name.
    Names,
    /// One line for the rule; it starts with the rule's names joined by `/`.
    Line(&'static str),
    /// Not listed (the socket filter, which `explain` shows as the network rules).
    Unlisted,
}

/// Some syscalls and how each is decided.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub(crate) syscalls: Vec<(&'static str, Check)>,
    pub(crate) explain: Explain,
}

/// Syscalls denied outright, unless a [`GiveBack`] names them.
pub(crate) const DENY_LIST: &[(&str, Option<GiveBack>)] = &[
    // Cross-process theft.
    ("ptrace", Some(GiveBack::Ptrace)),
    ("process_vm_readv", Some(GiveBack::ProcessVmReadv)),
    ("process_vm_writev", Some(GiveBack::ProcessVmWritev)),
    ("pidfd_getfd", None),
    ("kcmp", None),
    ("process_madvise", None),
    // Namespaces (clone is filtered by flags below; clone3 answers ENOSYS).
    ("unshare", None),
    ("setns", None),
    // Mounts and the root directory.
    ("mount", None),
    ("umount2", None),
    ("fsopen", None),
    ("fsmount", None),
    ("fsconfig", None),
    ("move_mount", None),
    ("open_tree", None),
    ("open_tree_attr", None),
    ("fspick", None),
    ("mount_setattr", None),
    ("pivot_root", None),
    ("chroot", None),
    // Kernel attack surface.
    ("bpf", None),
    ("perf_event_open", Some(GiveBack::PerfEventOpen)),
    ("userfaultfd", None),
    ("io_uring_setup", Some(GiveBack::IoUring)),
    ("io_uring_enter", Some(GiveBack::IoUring)),
    ("io_uring_register", Some(GiveBack::IoUring)),
    ("keyctl", None),
    ("add_key", None),
    ("request_key", None),
    ("kexec_load", None),
    ("kexec_file_load", None),
    ("init_module", None),
    ("finit_module", None),
    ("delete_module", None),
    // x86 only.
    ("iopl", None),
    ("ioperm", None),
    ("uselib", None),
    // Per-process segment descriptors: a classic kernel attack surface no agent needs.
    ("modify_ldt", None),
    ("acct", None),
    ("swapon", None),
    ("swapoff", None),
    ("reboot", None),
    ("open_by_handle_at", None),
    ("name_to_handle_at", None),
    ("syslog", None),
    ("quotactl", None),
    ("quotactl_fd", None),
    ("lookup_dcookie", None),
    ("vhangup", None),
];

/// Namespace flags of `clone(2)` (`CLONE_NEWTIME` overlaps the exit signal there).
pub(crate) const CLONE_NS_FLAGS: [u32; 7] = [
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

/// `personality(2)` values that change nothing dangerous (as Docker's default profile):
/// PER_LINUX, PER_LINUX32, UNAME26, PER_LINUX32|UNAME26, and the query 0xffffffff.
pub(crate) const PERSONALITY_OK: [u32; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Terminal input injection and the Linux console ioctl (same on x86 and arm).
pub(crate) const TIOCSTI: u32 = 0x5412;
pub(crate) const TIOCLINUX: u32 = 0x541c;
pub(crate) const IPPROTO_TCP: u32 = 6;
/// `sendto`/`sendmsg`/`sendmmsg` flag that connects on the way (TCP Fast Open): the
/// implicit connect never reaches Landlock's port check.
pub(crate) const MSG_FASTOPEN: u32 = 0x2000_0000;
/// `setsockopt(IPPROTO_TCP, TCP_FASTOPEN_CONNECT)`: defers the connect to the first write.
pub(crate) const TCP_FASTOPEN_CONNECT: u32 = 30;
pub(crate) const IPPROTO_UDP: u32 = 17;
pub(crate) const SOCK_TYPE_MASK: u32 = 0xf;

/// Whether `listen` is refused: without `bind` ports it would autobind an ephemeral port that
/// Landlock never sees. A policy without any ports runs in its own network namespace, where
/// a listener only reaches the child's own loopback, so it may listen there (unix sockets
/// too).
pub(crate) fn denies_listen(policy: &Policy) -> bool {
    policy.bind.is_empty() && !super::super::wants_own_network(policy)
}

/// The policy's rules. Every syscall not named is allowed. The order is `explain`'s, and the
/// order in which the argument checks are laid out in the program.
pub(crate) fn rules(policy: &Policy) -> Vec<Rule> {
    let mut v: Vec<Rule> = DENY_LIST
        .iter()
        .filter(|(_, g)| g.is_none_or(|g| !policy.allows(g)))
        .map(|&(name, _)| Rule {
            syscalls: vec![(name, Check::Is(DENY))],
            explain: Explain::Names,
        })
        .collect();
    let one = |name, check, explain| Rule {
        syscalls: vec![(name, check)],
        explain,
    };
    let flag = |arg, mask| Check::AnyBit {
        arg,
        mask,
        set: DENY,
        clear: Allow,
    };
    v.extend([
        one(
            "clone3",
            Check::Is(ENOSYS),
            Explain::Line("clone3 (ENOSYS)"),
        ),
        one("socket", socket(policy), Explain::Unlisted),
        // clone(flags, ...)
        one(
            "clone",
            flag(0, CLONE_NS_FLAGS.iter().fold(0, |m, f| m | f)),
            Explain::Line("clone with namespace flags"),
        ),
        // ioctl(fd, request, ...)
        one(
            "ioctl",
            Check::OneOf {
                arg: 1,
                mask: None,
                cases: vec![(vec![TIOCSTI, TIOCLINUX], Check::Is(DENY))],
                otherwise: Allow,
            },
            Explain::Line("ioctl TIOCSTI/TIOCLINUX"),
        ),
        // sendto(fd, buf, len, flags, ...), sendmsg(fd, msg, flags), sendmmsg(fd, vec, vlen, flags)
        Rule {
            syscalls: vec![
                ("sendto", flag(3, MSG_FASTOPEN)),
                ("sendmsg", flag(2, MSG_FASTOPEN)),
                ("sendmmsg", flag(3, MSG_FASTOPEN)),
            ],
            explain: Explain::Line("sendto/sendmsg/sendmmsg with MSG_FASTOPEN"),
        },
        // setsockopt(fd, level, optname, ...)
        one(
            "setsockopt",
            Check::OneOf {
                arg: 1,
                mask: None,
                cases: vec![(
                    vec![IPPROTO_TCP],
                    Check::OneOf {
                        arg: 2,
                        mask: None,
                        cases: vec![(vec![TCP_FASTOPEN_CONNECT], Check::Is(DENY))],
                        otherwise: Allow,
                    },
                )],
                otherwise: Allow,
            },
            Explain::Line("setsockopt TCP_FASTOPEN_CONNECT"),
        ),
    ]);
    if denies_listen(policy) {
        v.push(one(
            "listen",
            Check::Is(DENY),
            Explain::Line("listen (no bind ports: it would autobind one)"),
        ));
    }
    if !policy.allows(GiveBack::Personality) {
        // personality(persona)
        v.push(one(
            "personality",
            Check::OneOf {
                arg: 0,
                mask: None,
                cases: vec![(PERSONALITY_OK.to_vec(), Check::Is(Allow))],
                otherwise: DENY,
            },
            Explain::Line("personality (other than PER_LINUX/PER_LINUX32/UNAME26/query)"),
        ));
    }
    v
}

/// `socket(domain, type, protocol)`: INET/INET6 only as plain TCP (and plain UDP with `udp`),
/// UNIX only with `unix_sockets`; everything else (MPTCP, SCTP, raw, ICMP, packet, netlink,
/// vsock, ...) EPERM.
fn socket(policy: &Policy) -> Check {
    let protocol = |ok: Vec<u32>| Check::OneOf {
        arg: 2,
        mask: None,
        cases: vec![(ok, Check::Is(Allow))],
        otherwise: DENY,
    };
    let mut types = Vec::new();
    if policy.udp {
        types.push((
            vec![libc::SOCK_DGRAM as u32],
            protocol(vec![0, IPPROTO_UDP]),
        ));
    }
    types.push((
        vec![libc::SOCK_STREAM as u32],
        protocol(vec![0, IPPROTO_TCP]),
    ));
    let mut families = Vec::new();
    if policy.unix_sockets {
        families.push((vec![libc::AF_UNIX as u32], Check::Is(Allow)));
    }
    families.push((
        vec![libc::AF_INET as u32, libc::AF_INET6 as u32],
        Check::OneOf {
            arg: 1,
            mask: Some(SOCK_TYPE_MASK),
            cases: types,
            otherwise: DENY,
        },
    ));
    Check::OneOf {
        arg: 0,
        mask: None,
        cases: families,
        otherwise: DENY,
    }
}
