//! The filter against a model of the tables written in plain Rust, the shape of the program,
//! and a record of the x86_64 program (it must not change in a refactor).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::bpf::exec::{run, trace};
use super::bpf::{RET_ALLOW, RET_ERRNO, RET_KILL_PROCESS};
use super::tables::{
    CLONE_NS_FLAGS, DENY_LIST, IPPROTO_TCP, MSG_FASTOPEN, PERSONALITY_OK, TCP_FASTOPEN_CONNECT,
    TIOCLINUX, TIOCSTI,
};
use super::*;
use crate::sandbox::{GiveBack, SandboxSection};
use std::path::Path;

const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;
const ALLOW: u32 = RET_ALLOW;
const AUDIT_ARCH: u32 = syscalls::NATIVE.audit;

/// The native number of `name` (it must have one).
fn nr(name: &str) -> i64 {
    i64::from(syscalls::NATIVE.nr(name).unwrap().unwrap())
}

/// The deny-list with its native numbers.
fn deny_list() -> impl Iterator<Item = (&'static str, i64, Option<GiveBack>)> {
    DENY_LIST.iter().filter_map(|&(name, g)| {
        let nr = syscalls::NATIVE.nr(name).unwrap()?;
        Some((name, i64::from(nr), g))
    })
}

pub(super) fn policy(s: SandboxSection) -> Policy {
    Policy::resolve(Some(&s), Path::new("/w"), None, None).unwrap()
}

fn check(prog: &[libc::sock_filter], nr: i64, args: [u64; 6]) -> u32 {
    run(prog, AUDIT_ARCH, nr, args)
}

/// What the filter must answer, written from the tables in plain Rust.
fn expected(p: &Policy, nr: u32, args: [u64; 6]) -> u32 {
    if syscalls::NATIVE.x32_bit.is_some_and(|bit| nr >= bit) {
        return RET_KILL_PROCESS;
    }
    // The kernel reads these arguments as C ints: only the low 32 bits count.
    let int = |i: usize| args[i] as u32;
    let denied = deny_list().any(|(_, n, g)| n == i64::from(nr) && g.is_none_or(|g| !p.allows(g)));
    match i64::from(nr) {
        libc::SYS_clone3 => ENOSYS,
        libc::SYS_socket => expected_socket(p, int(0) as i32, int(1) as i32, int(2) as i32),
        libc::SYS_clone if CLONE_NS_FLAGS.iter().any(|&f| int(0) & f != 0) => EPERM,
        libc::SYS_ioctl if [TIOCSTI, TIOCLINUX].contains(&int(1)) => EPERM,
        libc::SYS_sendto | libc::SYS_sendmmsg if int(3) & MSG_FASTOPEN != 0 => EPERM,
        libc::SYS_sendmsg if int(2) & MSG_FASTOPEN != 0 => EPERM,
        libc::SYS_setsockopt if int(1) == IPPROTO_TCP && int(2) == TCP_FASTOPEN_CONNECT => EPERM,
        libc::SYS_listen if p.bind.is_empty() && !crate::sandbox::wants_own_network(p) => EPERM,
        libc::SYS_personality
            if !p.allows(GiveBack::Personality) && !PERSONALITY_OK.contains(&int(0)) =>
        {
            EPERM
        }
        _ if denied => EPERM,
        _ => ALLOW,
    }
}

fn expected_socket(p: &Policy, family: i32, ty: i32, protocol: i32) -> u32 {
    let inet = family == libc::AF_INET || family == libc::AF_INET6;
    let ok = match (ty & 0xf, protocol) {
        _ if family == libc::AF_UNIX => p.unix_sockets,
        (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => inet,
        (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => inet && p.udp,
        _ => false,
    };
    if ok { ALLOW } else { EPERM }
}

/// The default policy, each give-back alone, all of them, and the socket switches.
pub(super) fn policies() -> Vec<Policy> {
    let all: Vec<String> = GiveBack::ALL.iter().map(|g| g.name().into()).collect();
    let mut v = vec![policy(SandboxSection::default())];
    for (connect, bind) in [
        (vec![443], vec![]),
        (vec![], vec![8080]),
        (vec![443], vec![8080]),
    ] {
        v.push(policy(SandboxSection {
            connect,
            bind,
            ..Default::default()
        }));
    }
    for g in GiveBack::ALL {
        v.push(policy(SandboxSection {
            allow_syscalls: vec![g.name().into()],
            ..Default::default()
        }));
    }
    for (udp, unix_sockets) in [(false, false), (true, false), (false, true), (true, true)] {
        for allow_syscalls in [vec![], all.clone()] {
            v.push(policy(SandboxSection {
                allow_syscalls,
                udp,
                unix_sockets,
                ..Default::default()
            }));
        }
    }
    v
}

/// Every instruction costs the child start-up time (the old seccompiler program had 341).
#[test]
fn filter_is_short() {
    let default = build(&policy(SandboxSection::default())).unwrap();
    assert!(default.len() < 120, "{} instructions", default.len());
    for p in policies() {
        for arch in syscalls::ALL {
            let n = compile(&p, arch).unwrap().len();
            assert!(n < 120, "{n} {} instructions for {p:?}", arch.name);
        }
    }
}

#[test]
fn every_syscall_number_gets_the_tables_verdict() {
    let args = [
        [0; 6],
        [u64::MAX; 6],
        [1 << 32; 6],
        // Namespace flag and TIOCSTI in the high halves only.
        [0x0002_0000_0000_0000, 0x5412_0000_0000, 0, 0, 0, 0],
    ];
    let mut numbers: Vec<u32> = (0..=600).collect();
    numbers.extend([0x3fff_ffff, 0x4000_0000, 0x4000_0065, 0x8000_0000, u32::MAX]);
    for p in policies() {
        let prog = build(&p).unwrap();
        for &nr in &numbers {
            for a in args {
                let got = check(&prog, i64::from(nr as i32), a);
                assert_eq!(got, expected(&p, nr, a), "nr {nr} args {a:x?} {p:?}");
            }
        }
    }
}

#[test]
fn argument_checks_get_the_tables_verdict() {
    let bits = (0..64).map(|b| 1u64 << b);
    let clone_flags = CLONE_NS_FLAGS
        .iter()
        .map(|&f| u64::from(f) | 17)
        .chain([0x0120_0011, 0x003d_0f00, 0x0001_0000_0000, 0])
        .chain(bits.clone());
    let requests = [TIOCSTI, TIOCLINUX, 0x5401, 0x5411, 0x5413, 0x541b, 0x541d]
        .map(u64::from)
        .into_iter()
        .flat_map(|r| [r, r | 1 << 32]);
    let personas = PERSONALITY_OK
        .map(u64::from)
        .into_iter()
        .chain([0x40_0000, 0x1, 0x9, 0x2_0001, 0xffff_fffe, 0x1_0000_0000])
        .chain(bits)
        .flat_map(|v| [v, v | 1 << 32]);
    let mut calls: Vec<(i64, [u64; 6])> = Vec::new();
    calls.extend(clone_flags.map(|f| (libc::SYS_clone, [f, 0, 0, 0, 0, 0])));
    calls.extend(requests.map(|r| (libc::SYS_ioctl, [3, r, 0, 0, 0, 0])));
    calls.extend(personas.map(|v| (libc::SYS_personality, [v, 0, 0, 0, 0, 0])));
    for flags in [
        0,
        0x4000,
        0x2000_0000,
        0x2000_4040,
        0x1_0000_0000,
        0x1_2000_0000,
    ] {
        calls.push((libc::SYS_sendto, [3, 0, 1, flags, 0, 0]));
        calls.push((libc::SYS_sendmmsg, [3, 0, 1, flags, 0, 0]));
        calls.push((libc::SYS_sendmsg, [3, 0, flags, 0, 0, 0]));
    }
    for (level, name) in [
        (6, 30),
        (6, 23),
        (1, 30),
        (6, 1),
        (1 << 32 | 6, 30),
        (6, 1 << 32 | 30),
    ] {
        calls.push((libc::SYS_setsockopt, [3, level, name, 0, 0, 0]));
    }
    let types = (0..=10).flat_map(|t| {
        [0, libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC].map(|f| u64::from((t | f) as u32))
    });
    for family in 0..=46u64 {
        for ty in types.clone().chain([1 << 32 | 1]) {
            for protocol in [0, 1, 6, 17, 132, 255, 262, 1 << 32 | 6, 1 << 32 | 7] {
                calls.push((libc::SYS_socket, [family, ty, protocol, 0, 0, 0]));
            }
        }
    }
    for p in policies() {
        let prog = build(&p).unwrap();
        for &(nr, a) in &calls {
            let want = expected(&p, nr as u32, a);
            assert_eq!(check(&prog, nr, a), want, "nr {nr} args {a:x?} {p:?}");
        }
    }
}

/// The kernel caches "allowed" per syscall number for filters that decide it from `nr`
/// and `arch` alone; only the calls whose arguments matter may read them.
#[test]
fn only_argument_checks_read_arguments() {
    for p in policies() {
        let with_args: Vec<i64> = tables::rules(&p)
            .into_iter()
            .flat_map(|r| r.syscalls)
            .filter(|(_, c)| !matches!(c, Check::Is(_)))
            .map(|(name, _)| nr(name))
            .collect();
        let prog = build(&p).unwrap();
        for nr in 0..=600 {
            let (_, read) = trace(&prog, AUDIT_ARCH, nr, [0; 6]);
            assert_eq!(read, with_args.contains(&nr), "nr {nr} {p:?}");
        }
    }
}

#[test]
fn denied_names_match_the_filter() {
    for p in policies() {
        let prog = build(&p).unwrap();
        let names = denied_names(&p);
        for (name, nr, _) in deny_list() {
            let listed = names.contains(&name);
            assert_eq!(listed, check(&prog, nr, [0; 6]) == EPERM, "{name} {p:?}");
        }
        let personality = names.iter().any(|n| n.starts_with("personality"));
        let odd = check(&prog, libc::SYS_personality, [0x40_0000, 0, 0, 0, 0, 0]);
        assert_eq!(personality, odd == EPERM, "{p:?}");
    }
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
    if let Some(bit) = syscalls::NATIVE.x32_bit {
        assert_eq!(
            check(&p, i64::from(bit) | libc::SYS_ptrace, [0; 6]),
            RET_KILL_PROCESS
        );
    }
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
        assert_eq!(
            check(&p, libc::SYS_clone, [u64::from(f) | 17, 0, 0, 0, 0, 0]),
            EPERM
        );
    }
    let tiocsti = u64::from(TIOCSTI);
    assert_eq!(check(&p, libc::SYS_ioctl, [0, tiocsti, 0, 0, 0, 0]), EPERM);
    // The kernel reads the request as a 32-bit int: high bits do not help.
    assert_eq!(
        check(&p, libc::SYS_ioctl, [0, tiocsti | 1 << 32, 0, 0, 0, 0]),
        EPERM
    );
    assert_eq!(
        check(&p, libc::SYS_ioctl, [0, u64::from(TIOCLINUX), 0, 0, 0, 0]),
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

/// The x86_64 programs of every test policy, as they were before the seccomp module was split
/// (assembler, tables, numbers): a refactor must not change a byte. Built on every host. A
/// change of policy or layout made on purpose updates the digests (and the README's count).
#[test]
fn x86_64_program_is_unchanged() {
    use sha2::Digest;
    // Each instruction as code, jt, jf, k (little-endian); a "|" after each program of a list.
    let digest = |progs: &[Vec<libc::sock_filter>], sep: &[u8]| {
        let mut h = sha2::Sha256::new();
        for prog in progs {
            for i in prog {
                h.update(i.code.to_le_bytes());
                h.update([i.jt, i.jf]);
                h.update(i.k.to_le_bytes());
            }
            h.update(sep);
        }
        hex::encode(h.finalize())
    };
    let all: Vec<_> = policies()
        .iter()
        .map(|p| compile(p, &syscalls::X86_64).unwrap())
        .collect();
    assert_eq!(all[0].len(), 87, "instructions of the default policy");
    assert_eq!(
        digest(&all[..1], b""),
        "3812160b5174a1588c6f10f66bcfbc554008b5bd11c7ba476d2c1249b0469fee"
    );
    assert_eq!(
        digest(&all, b"|"),
        "bdb4f15f23029de8fb9d20d9621517e98a5e195d14720470c85ddcb25d155a14"
    );
}

/// `explain` lines name the syscalls of their rule, in the rule's order.
#[test]
fn explain_lines_start_with_their_syscalls() {
    let all: Vec<String> = GiveBack::ALL.iter().map(|g| g.name().into()).collect();
    for p in [
        policy(SandboxSection::default()),
        policy(SandboxSection {
            allow_syscalls: all,
            ..Default::default()
        }),
    ] {
        for rule in tables::rules(&p) {
            let names: Vec<&str> = rule.syscalls.iter().map(|(n, _)| *n).collect();
            if let Explain::Line(line) = rule.explain {
                let rest = line.strip_prefix(&*names.join("/"));
                assert!(rest.is_some_and(|r| r.starts_with(' ')), "{line}");
            }
        }
    }
}

/// The profile error lists the give-backs from [`GiveBack::ALL`]; its text is unchanged.
#[test]
fn give_back_error_lists_the_table() {
    let e = crate::sandbox::SandboxError::Syscall {
        key: "sandbox.allow_syscalls".into(),
        name: "bpf".into(),
    };
    assert_eq!(
        e.to_string(),
        "sandbox.allow_syscalls: `bpf` cannot be given back; allow_syscalls takes only ptrace, \
         process_vm_readv, process_vm_writev, perf_event_open, personality, io_uring"
    );
}

/// Every give-back changes the program on every architecture: it names a deny-list entry or
/// (for `personality`) an argument check.
#[test]
fn every_give_back_opens_a_rule() {
    let base = policy(SandboxSection::default());
    for g in GiveBack::ALL {
        let given = policy(SandboxSection {
            allow_syscalls: vec![g.name().into()],
            ..Default::default()
        });
        for arch in syscalls::ALL {
            let a = compile(&base, arch).unwrap();
            let b = compile(&given, arch).unwrap();
            let same = a.len() == b.len()
                && a.iter()
                    .zip(&b)
                    .all(|(x, y)| (x.code, x.jt, x.jf, x.k) == (y.code, y.jt, y.jf, y.k));
            assert!(!same, "{} {}", g.name(), arch.name);
        }
    }
}

/// The documents that list what the tables hold say the same: the give-backs (in the
/// contract and the threat model) and every syscall named by an argument rule.
#[test]
fn docs_name_what_the_tables_hold() {
    let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let contract = flat(include_str!("../../../docs/contract.md"));
    let threats = flat(include_str!("../../../docs/threat-model.md"));
    let give_backs = GiveBack::ALL.map(|g| format!("`{}`", g.name())).join(", ");
    assert!(contract.contains(&give_backs), "contract.md: {give_backs}");
    assert!(
        threats.contains(&give_backs),
        "threat-model.md: {give_backs}"
    );
    let p = policy(SandboxSection::default());
    for rule in tables::rules(&p) {
        if let Explain::Line(_) = rule.explain {
            for (name, _) in rule.syscalls {
                assert!(
                    threats.contains(name),
                    "threat-model.md does not name {name}"
                );
            }
        }
    }
}

/// `explain`'s list of denied syscalls for every test policy, as it was before the tables
/// were split out (names and lines in the same order, byte for byte). The list is the native
/// architecture's (x86_64 has four more names).
#[cfg(target_arch = "x86_64")]
#[test]
fn denied_names_are_unchanged() {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in policies() {
        h.update(denied_names(&p).join("\n"));
        h.update(b"|");
    }
    assert_eq!(
        hex::encode(h.finalize()),
        "bf6130ca45898f00164d77a30db28b3c95efc127d0326b55f54055291f0c1c1b"
    );
}
