//! seccomp: the policy -> a BPF deny-list program, compiled in the parent.
//!
//! The only importer of `seccompiler`. Style (see FIELD-NOTES): default allow, `EPERM` for the
//! denied calls, so arbitrary programs keep working; `clone3` answers `ENOSYS` so that libc
//! falls back to `clone`, whose flags a filter can read; a foreign syscall ABI (32-bit
//! `int 0x80`, x32) kills the process, because the deny-list is written in x86_64 numbers.
//! Arguments that are C `int`s (socket family/type/protocol, ioctl request, clone flags) are
//! compared on their low 32 bits only, as the kernel reads them.
//!
//! The program is a small hand-written prelude (arch, x32 and `clone3` checks) followed by the
//! seccompiler-built deny-list.

use std::collections::BTreeMap;

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

use super::{GiveBack, Policy, SandboxError};

/// Syscalls denied outright, unless a [`GiveBack`] names them.
const DENY: &[(&str, libc::c_long, Option<GiveBack>)] = &[
    // Cross-process theft.
    ("ptrace", libc::SYS_ptrace, Some(GiveBack::Ptrace)),
    (
        "process_vm_readv",
        libc::SYS_process_vm_readv,
        Some(GiveBack::ProcessVmReadv),
    ),
    (
        "process_vm_writev",
        libc::SYS_process_vm_writev,
        Some(GiveBack::ProcessVmWritev),
    ),
    ("pidfd_getfd", libc::SYS_pidfd_getfd, None),
    ("kcmp", libc::SYS_kcmp, None),
    ("process_madvise", libc::SYS_process_madvise, None),
    // Namespaces (clone is filtered by flags below; clone3 answers ENOSYS in the prelude).
    ("unshare", libc::SYS_unshare, None),
    ("setns", libc::SYS_setns, None),
    // Mounts and the root directory.
    ("mount", libc::SYS_mount, None),
    ("umount2", libc::SYS_umount2, None),
    ("fsopen", libc::SYS_fsopen, None),
    ("fsmount", libc::SYS_fsmount, None),
    ("fsconfig", libc::SYS_fsconfig, None),
    ("move_mount", libc::SYS_move_mount, None),
    ("open_tree", libc::SYS_open_tree, None),
    ("open_tree_attr", SYS_OPEN_TREE_ATTR, None),
    ("fspick", libc::SYS_fspick, None),
    ("mount_setattr", libc::SYS_mount_setattr, None),
    ("pivot_root", libc::SYS_pivot_root, None),
    ("chroot", libc::SYS_chroot, None),
    // Kernel attack surface.
    ("bpf", libc::SYS_bpf, None),
    (
        "perf_event_open",
        libc::SYS_perf_event_open,
        Some(GiveBack::PerfEventOpen),
    ),
    ("userfaultfd", libc::SYS_userfaultfd, None),
    (
        "io_uring_setup",
        libc::SYS_io_uring_setup,
        Some(GiveBack::IoUring),
    ),
    (
        "io_uring_enter",
        libc::SYS_io_uring_enter,
        Some(GiveBack::IoUring),
    ),
    (
        "io_uring_register",
        libc::SYS_io_uring_register,
        Some(GiveBack::IoUring),
    ),
    ("keyctl", libc::SYS_keyctl, None),
    ("add_key", libc::SYS_add_key, None),
    ("request_key", libc::SYS_request_key, None),
    ("kexec_load", libc::SYS_kexec_load, None),
    ("kexec_file_load", libc::SYS_kexec_file_load, None),
    ("init_module", libc::SYS_init_module, None),
    ("finit_module", libc::SYS_finit_module, None),
    ("delete_module", libc::SYS_delete_module, None),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl, None),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm, None),
    #[cfg(target_arch = "x86_64")]
    ("uselib", libc::SYS_uselib, None),
    ("acct", libc::SYS_acct, None),
    ("swapon", libc::SYS_swapon, None),
    ("swapoff", libc::SYS_swapoff, None),
    ("reboot", libc::SYS_reboot, None),
    ("open_by_handle_at", libc::SYS_open_by_handle_at, None),
    ("name_to_handle_at", libc::SYS_name_to_handle_at, None),
    ("syslog", libc::SYS_syslog, None),
    ("quotactl", libc::SYS_quotactl, None),
    ("quotactl_fd", libc::SYS_quotactl_fd, None),
    ("lookup_dcookie", libc::SYS_lookup_dcookie, None),
    ("vhangup", libc::SYS_vhangup, None),
];

/// `open_tree_attr` (Linux 6.15), not yet in `libc`; same number on every architecture.
const SYS_OPEN_TREE_ATTR: libc::c_long = 467;

/// Namespace flags of `clone(2)` (`CLONE_NEWTIME` overlaps the exit signal there).
const CLONE_NS_FLAGS: [u64; 7] = [
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
const PERSONALITY_OK: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Terminal input injection and the Linux console ioctl (same on x86 and arm).
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541c;
const IPPROTO_TCP: u64 = 6;
const IPPROTO_UDP: u64 = 17;
const SOCK_TYPE_MASK: u64 = 0xf;

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;

/// The x32 ABI marks its syscall numbers with this bit, under the x86_64 audit arch.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SandboxError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(compile_err)
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, SandboxError> {
    SeccompRule::new(conds).map_err(compile_err)
}

fn compile_err(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Seccomp(e.to_string())
}

/// The names the filter denies for this policy (for `explain`).
pub fn denied_names(policy: &Policy) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = DENY
        .iter()
        .filter(|(_, _, g)| g.is_none_or(|g| !policy.allows(g)))
        .map(|(n, _, _)| *n)
        .collect();
    v.extend([
        "clone3 (ENOSYS)",
        "clone with namespace flags",
        "ioctl TIOCSTI/TIOCLINUX",
    ]);
    if !policy.allows(GiveBack::Personality) {
        v.push("personality (other than PER_LINUX/PER_LINUX32/UNAME26/query)");
    }
    v
}

/// Compiles the filter for `policy`.
pub(crate) fn build(policy: &Policy) -> Result<Vec<libc::sock_filter>, SandboxError> {
    use SeccompCmpOp::{Eq, MaskedEq, Ne};
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &(_, nr, give_back) in DENY {
        if give_back.is_none_or(|g| !policy.allows(g)) {
            rules.insert(nr, Vec::new());
        }
    }
    let clone_rules = CLONE_NS_FLAGS
        .iter()
        .map(|&f| rule(vec![cond(0, MaskedEq(f), f)?]))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    rules.insert(
        libc::SYS_ioctl,
        vec![
            rule(vec![cond(1, Eq, TIOCSTI)?])?,
            rule(vec![cond(1, Eq, TIOCLINUX)?])?,
        ],
    );
    if !policy.allows(GiveBack::Personality) {
        let conds = PERSONALITY_OK
            .iter()
            .map(|&v| cond(0, Ne, v))
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(libc::SYS_personality, vec![rule(conds)?]);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        ARCH,
    )
    .map_err(compile_err)?;
    let body: seccompiler::BpfProgram = filter.try_into().map_err(compile_err)?;

    let mut prog = prelude(policy)?;
    prog.extend(body.into_iter().map(|i| libc::sock_filter {
        code: i.code,
        jt: i.jt,
        jf: i.jf,
        k: i.k,
    }));
    if prog.len() > 4096 {
        return Err(SandboxError::Seccomp(format!(
            "the filter has {} instructions, more than the kernel's 4096",
            prog.len()
        )));
    }
    Ok(prog)
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
#[cfg(target_arch = "x86_64")]
const BPF_JGE_K: u16 = 0x35;
const BPF_AND_K: u16 = 0x54;
const BPF_RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;

/// Offsets in `struct seccomp_data` (little-endian: an argument's low 32 bits come first).
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const fn data_arg(i: u32) -> u32 {
    16 + 8 * i
}

/// A tiny assembler for the hand-written part: jumps name labels, resolved to offsets.
enum Asm {
    Stmt(u16, u32),
    /// `acc == k` -> jump to the first label, else to the second (`None`: next instruction).
    Jeq(u32, Option<&'static str>, Option<&'static str>),
    #[cfg(target_arch = "x86_64")]
    Jge(u32, Option<&'static str>, Option<&'static str>),
    Label(&'static str),
}

fn assemble(code: &[Asm]) -> Result<Vec<libc::sock_filter>, SandboxError> {
    let mut labels = std::collections::HashMap::new();
    let mut pc = 0usize;
    for a in code {
        match a {
            Asm::Label(l) => {
                labels.insert(*l, pc);
            }
            _ => pc += 1,
        }
    }
    let mut out = Vec::with_capacity(pc);
    // BPF jumps go forward only, at most 255 instructions.
    let offset = |from: usize, to: Option<&'static str>| -> Result<u8, SandboxError> {
        let Some(l) = to else { return Ok(0) };
        labels
            .get(l)
            .and_then(|&at| at.checked_sub(from + 1))
            .and_then(|d| u8::try_from(d).ok())
            .ok_or_else(|| SandboxError::Seccomp(format!("prelude: bad jump to {l}")))
    };
    for a in code {
        let pc = out.len();
        match *a {
            Asm::Stmt(code, k) => out.push(stmt(code, k)),
            Asm::Jeq(k, t, f) => out.push(jump(BPF_JEQ_K, k, offset(pc, t)?, offset(pc, f)?)),
            #[cfg(target_arch = "x86_64")]
            Asm::Jge(k, t, f) => out.push(jump(BPF_JGE_K, k, offset(pc, t)?, offset(pc, f)?)),
            Asm::Label(_) => {}
        }
    }
    Ok(out)
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Foreign arch -> kill; x32 numbers -> kill; clone3 -> ENOSYS; `socket()` by family, type and
/// protocol: INET/INET6 only as plain TCP (and plain UDP with `udp`), UNIX only with
/// `unix_sockets`; everything else (MPTCP, SCTP, raw, ICMP, packet, netlink, vsock, ...) EPERM.
/// Falls through to the deny-list for every other syscall, with the number in the accumulator.
fn prelude(policy: &Policy) -> Result<Vec<libc::sock_filter>, SandboxError> {
    use Asm::*;
    let eperm = RET_ERRNO | libc::EPERM as u32;
    let mut a = vec![
        Stmt(BPF_LD_W_ABS, DATA_ARCH),
        Jeq(AUDIT_ARCH, Some("native"), None),
        Stmt(BPF_RET_K, RET_KILL_PROCESS),
        Label("native"),
        Stmt(BPF_LD_W_ABS, DATA_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    a.extend([
        Jge(X32_SYSCALL_BIT, None, Some("native_nr")),
        Stmt(BPF_RET_K, RET_KILL_PROCESS),
        Label("native_nr"),
    ]);
    a.extend([
        Jeq(libc::SYS_clone3 as u32, None, Some("not_clone3")),
        Stmt(BPF_RET_K, RET_ERRNO | libc::ENOSYS as u32),
        Label("not_clone3"),
        Jeq(libc::SYS_socket as u32, None, Some("rest")),
        // socket(domain, type, protocol)
        Stmt(BPF_LD_W_ABS, data_arg(0)),
        Jeq(libc::AF_INET as u32, Some("inet"), None),
        Jeq(libc::AF_INET6 as u32, Some("inet"), None),
        Jeq(
            libc::AF_UNIX as u32,
            Some(if policy.unix_sockets { "allow" } else { "deny" }),
            Some("deny"),
        ),
        Label("inet"),
        Stmt(BPF_LD_W_ABS, data_arg(1)),
        Stmt(BPF_AND_K, SOCK_TYPE_MASK as u32),
        Jeq(libc::SOCK_STREAM as u32, Some("stream"), None),
        Jeq(
            libc::SOCK_DGRAM as u32,
            Some(if policy.udp { "dgram" } else { "deny" }),
            Some("deny"),
        ),
        Label("stream"),
        Stmt(BPF_LD_W_ABS, data_arg(2)),
        Jeq(0, Some("allow"), None),
        Jeq(IPPROTO_TCP as u32, Some("allow"), Some("deny")),
        Label("dgram"),
        Stmt(BPF_LD_W_ABS, data_arg(2)),
        Jeq(0, Some("allow"), None),
        Jeq(IPPROTO_UDP as u32, Some("allow"), Some("deny")),
        Label("allow"),
        Stmt(BPF_RET_K, RET_ALLOW),
        Label("deny"),
        Stmt(BPF_RET_K, eperm),
        Label("rest"),
    ]);
    assemble(&a)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use crate::sandbox::SandboxSection;
    use std::path::Path;

    /// A classic-BPF interpreter for the instructions seccompiler and the prelude emit, so the
    /// filter's decisions can be checked without installing it.
    pub(crate) fn run(prog: &[libc::sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend((nr as i32).to_le_bytes());
        data.extend(arch.to_le_bytes());
        data.extend(0u64.to_le_bytes());
        for a in args {
            data.extend(a.to_le_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = &prog[pc];
            pc += 1;
            match i.code {
                0x20 => {
                    let o = i.k as usize;
                    acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                }
                0x54 => acc &= i.k,         // ALU AND K
                0x05 => pc += i.k as usize, // JA
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let t = match i.code {
                        0x15 => acc == i.k,
                        0x25 => acc > i.k,
                        0x35 => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += usize::from(if t { i.jt } else { i.jf });
                }
                0x06 => return i.k,
                c => panic!("unexpected BPF opcode {c:#x} at {}", pc - 1),
            }
        }
    }

    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
    const ALLOW: u32 = RET_ALLOW;

    fn policy(s: SandboxSection) -> Policy {
        Policy::resolve(Some(&s), Path::new("/w"), None, None).unwrap()
    }

    fn check(prog: &[libc::sock_filter], nr: i64, args: [u64; 6]) -> u32 {
        run(prog, AUDIT_ARCH, nr, args)
    }

    #[test]
    fn filter_compiles_small() {
        let p = build(&policy(SandboxSection::default())).unwrap();
        assert!(p.len() < 1024, "{} instructions", p.len());
    }

    #[test]
    fn deny_list_and_give_backs() {
        let p = build(&policy(SandboxSection::default())).unwrap();
        for nr in [
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_unshare,
            libc::SYS_mount,
            libc::SYS_bpf,
            libc::SYS_io_uring_setup,
            libc::SYS_keyctl,
            libc::SYS_setns,
            libc::SYS_open_by_handle_at,
        ] {
            assert_eq!(check(&p, nr, [0; 6]), EPERM, "nr {nr}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_socketpair,
        ] {
            assert_eq!(check(&p, nr, [0; 6]), ALLOW, "nr {nr}");
        }
        assert_eq!(
            check(&p, libc::SYS_clone3, [0; 6]),
            RET_ERRNO | libc::ENOSYS as u32
        );
        let given = build(&policy(SandboxSection {
            allow_syscalls: vec!["ptrace".into(), "io_uring".into(), "personality".into()],
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(check(&given, libc::SYS_ptrace, [0; 6]), ALLOW);
        assert_eq!(check(&given, libc::SYS_io_uring_enter, [0; 6]), ALLOW);
        assert_eq!(
            check(&given, libc::SYS_personality, [0x40_0000, 0, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(check(&given, libc::SYS_process_vm_readv, [0; 6]), EPERM);
        assert_eq!(check(&given, libc::SYS_bpf, [0; 6]), EPERM);
    }

    #[test]
    fn foreign_arch_and_x32_are_killed() {
        let p = build(&policy(SandboxSection::default())).unwrap();
        const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
        assert_eq!(run(&p, AUDIT_ARCH_I386, 0, [0; 6]), RET_KILL_PROCESS);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            check(&p, 0x4000_0000 | libc::SYS_ptrace, [0; 6]),
            RET_KILL_PROCESS
        );
    }

    #[test]
    fn clone_ioctl_personality_args() {
        let p = build(&policy(SandboxSection::default())).unwrap();
        let fork_flags = 0x0120_0011; // CLONE_CHILD_SETTID|CLONE_CHILD_CLEARTID|SIGCHLD
        assert_eq!(
            check(&p, libc::SYS_clone, [fork_flags, 0, 0, 0, 0, 0]),
            ALLOW
        );
        let threads = 0x3d0f00;
        assert_eq!(check(&p, libc::SYS_clone, [threads, 0, 0, 0, 0, 0]), ALLOW);
        for f in CLONE_NS_FLAGS {
            assert_eq!(check(&p, libc::SYS_clone, [f | 17, 0, 0, 0, 0, 0]), EPERM);
        }
        let tiocsti = TIOCSTI;
        assert_eq!(check(&p, libc::SYS_ioctl, [0, tiocsti, 0, 0, 0, 0]), EPERM);
        // The kernel reads the request as a 32-bit int: high bits do not help.
        assert_eq!(
            check(&p, libc::SYS_ioctl, [0, tiocsti | 1 << 32, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(
            check(&p, libc::SYS_ioctl, [0, TIOCLINUX, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(check(&p, libc::SYS_ioctl, [0, 0x5401, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            check(&p, libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            check(&p, libc::SYS_personality, [0x40_0000, 0, 0, 0, 0, 0]),
            EPERM
        );
    }

    #[test]
    fn sockets_by_family_type_and_protocol() {
        let sock = |p: &[libc::sock_filter], d: i32, t: i32, pr: i32| {
            check(
                p,
                libc::SYS_socket,
                [d as u64, t as u64, pr as u64, 0, 0, 0],
            )
        };
        let nb = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        let def = build(&policy(SandboxSection::default())).unwrap();
        for d in [libc::AF_INET, libc::AF_INET6] {
            assert_eq!(sock(&def, d, libc::SOCK_STREAM, 0), ALLOW);
            assert_eq!(
                sock(&def, d, libc::SOCK_STREAM | nb, libc::IPPROTO_TCP),
                ALLOW
            );
            assert_eq!(sock(&def, d, libc::SOCK_STREAM, libc::IPPROTO_MPTCP), EPERM);
            assert_eq!(sock(&def, d, libc::SOCK_STREAM, libc::IPPROTO_SCTP), EPERM);
            assert_eq!(sock(&def, d, libc::SOCK_DGRAM, 0), EPERM);
            assert_eq!(
                sock(&def, d, libc::SOCK_DGRAM | nb, libc::IPPROTO_ICMP),
                EPERM
            );
            assert_eq!(sock(&def, d, libc::SOCK_RAW, libc::IPPROTO_RAW), EPERM);
            assert_eq!(sock(&def, d, libc::SOCK_SEQPACKET, 0), EPERM);
        }
        for d in [
            libc::AF_UNIX,
            libc::AF_NETLINK,
            libc::AF_PACKET,
            libc::AF_VSOCK,
            libc::AF_ALG,
        ] {
            assert_eq!(sock(&def, d, libc::SOCK_STREAM, 0), EPERM, "family {d}");
        }
        let open = build(&policy(SandboxSection {
            udp: true,
            unix_sockets: true,
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(sock(&open, libc::AF_INET, libc::SOCK_DGRAM | nb, 0), ALLOW);
        assert_eq!(
            sock(&open, libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP),
            ALLOW
        );
        assert_eq!(
            sock(&open, libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
            EPERM
        );
        assert_eq!(
            sock(&open, libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_MPTCP),
            EPERM
        );
        assert_eq!(sock(&open, libc::AF_UNIX, libc::SOCK_STREAM, 0), ALLOW);
        assert_eq!(sock(&open, libc::AF_NETLINK, libc::SOCK_RAW, 0), EPERM);
    }
}
