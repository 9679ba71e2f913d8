//! seccomp: the policy -> a BPF deny-list program, assembled in the parent.
//!
//! Style (see FIELD-NOTES): default allow, `EPERM` for the denied calls, so arbitrary programs
//! keep working; `clone3` answers `ENOSYS` so that libc falls back to `clone`, whose flags a
//! filter can read; a foreign syscall ABI (32-bit `int 0x80`, x32) kills the process, because
//! the deny-list is written in x86_64 numbers. Arguments that are C `int`s (socket
//! family/type/protocol, ioctl request, clone flags, personality) are compared on their low 32
//! bits only, as the kernel reads them.
//!
//! The program is written with a tiny assembler (labels, forward jumps) rather than generated
//! by a seccomp library, because every child pays for each instruction at start-up: the kernel
//! checks, converts and JITs the whole program when the filter is installed. Its shape:
//!
//! 1. the arch and x32 checks;
//! 2. a dispatch on the syscall number: `JGE` halves the sorted list of numbers that are not
//!    simply allowed until a short run is left, tested in turn (consecutive numbers with one
//!    verdict are one range test); every other number goes to `allow`;
//! 3. one small block per syscall whose arguments matter (`socket`, `clone`, `ioctl`,
//!    `personality`);
//! 4. the shared returns.
//!
//! Arguments are read only in those blocks, so the kernel's per-filter cache (Linux 5.11+ on
//! x86_64) sees every other allowed syscall as allowed by its number alone and skips the filter
//! for it. To fill that cache the kernel runs the program once per syscall number at install
//! time, which is why the dispatch halves instead of testing the numbers in one long chain:
//! measured here, a 68-instruction chain installed slower than the 75-instruction halving.

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
    // Per-process segment descriptors: a classic kernel attack surface no agent needs.
    #[cfg(target_arch = "x86_64")]
    ("modify_ldt", libc::SYS_modify_ldt, None),
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
const CLONE_NS_FLAGS: [u32; 7] = [
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
const PERSONALITY_OK: [u32; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Terminal input injection and the Linux console ioctl (same on x86 and arm).
const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541c;
const IPPROTO_TCP: u32 = 6;
/// `sendto`/`sendmsg`/`sendmmsg` flag that connects on the way (TCP Fast Open): the
/// implicit connect never reaches Landlock's port check.
const MSG_FASTOPEN: u32 = 0x2000_0000;
/// `setsockopt(IPPROTO_TCP, TCP_FASTOPEN_CONNECT)`: defers the connect to the first write.
const TCP_FASTOPEN_CONNECT: u32 = 30;
const IPPROTO_UDP: u32 = 17;
const SOCK_TYPE_MASK: u32 = 0xf;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;

/// The x32 ABI marks its syscall numbers with this bit, under the x86_64 audit arch.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

/// The `DENY` entries this policy does not give back.
fn denied(
    policy: &Policy,
) -> impl Iterator<Item = &'static (&'static str, libc::c_long, Option<GiveBack>)> + '_ {
    DENY.iter()
        .filter(|(_, _, g)| g.is_none_or(|g| !policy.allows(g)))
}

/// Whether `listen` is refused: without `bind` ports it would autobind an ephemeral port that
/// Landlock never sees. A policy without any ports runs in its own network namespace, where
/// a listener only reaches the child's own loopback, so it may listen there (unix sockets
/// too).
fn denies_listen(policy: &Policy) -> bool {
    policy.bind.is_empty() && !super::wants_own_network(policy)
}

/// The names the filter denies for this policy (for `explain`).
pub fn denied_names(policy: &Policy) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = denied(policy).map(|(n, _, _)| *n).collect();
    v.extend([
        "clone3 (ENOSYS)",
        "clone with namespace flags",
        "ioctl TIOCSTI/TIOCLINUX",
        "sendto/sendmsg/sendmmsg with MSG_FASTOPEN",
        "setsockopt TCP_FASTOPEN_CONNECT",
    ]);
    if denies_listen(policy) {
        v.push("listen (no bind ports: it would autobind one)");
    }
    if !policy.allows(GiveBack::Personality) {
        v.push("personality (other than PER_LINUX/PER_LINUX32/UNAME26/query)");
    }
    v
}

/// Assembles the filter for `policy` (see the module doc for its shape).
pub(crate) fn build(policy: &Policy) -> Result<Vec<libc::sock_filter>, SandboxError> {
    let mut a = Asm::default();
    let [allow, deny, enosys, kill] = [(); 4].map(|()| a.label());
    let [socket, clone, ioctl, personality] = [(); 4].map(|()| a.label());
    let [send_a2, send_a3, setsockopt] = [(); 3].map(|()| a.label());
    let check_personality = !policy.allows(GiveBack::Personality);

    // Where each syscall number goes; every number not listed is allowed.
    let mut routes: Vec<(u32, Label)> = denied(policy)
        .map(|&(_, nr, _)| (nr as u32, deny))
        .collect();
    routes.extend([
        (libc::SYS_clone3 as u32, enosys),
        (libc::SYS_socket as u32, socket),
        (libc::SYS_clone as u32, clone),
        (libc::SYS_ioctl as u32, ioctl),
        (libc::SYS_sendto as u32, send_a3),
        (libc::SYS_sendmmsg as u32, send_a3),
        (libc::SYS_sendmsg as u32, send_a2),
        (libc::SYS_setsockopt as u32, setsockopt),
    ]);
    if denies_listen(policy) {
        routes.push((libc::SYS_listen as u32, deny));
    }
    if check_personality {
        routes.push((libc::SYS_personality as u32, personality));
    }

    a.load(DATA_ARCH);
    a.jeq(AUDIT_ARCH, NEXT, kill);
    a.load(DATA_NR);
    #[cfg(target_arch = "x86_64")]
    a.jge(X32_SYSCALL_BIT, kill, NEXT);
    dispatch(&mut a, &ranges(routes)?, allow);

    a.bind(socket);
    socket_block(&mut a, policy, allow, deny);
    // clone(flags, ...)
    a.bind(clone);
    a.load(data_arg(0));
    a.jset(CLONE_NS_FLAGS.iter().fold(0, |m, f| m | f), deny, allow);
    // ioctl(fd, request, ...)
    a.bind(ioctl);
    a.load(data_arg(1));
    a.jeq_any([TIOCSTI, TIOCLINUX], deny, allow);
    // sendto(fd, buf, len, flags, ...), sendmmsg(fd, vec, vlen, flags)
    a.bind(send_a3);
    a.load(data_arg(3));
    a.jset(MSG_FASTOPEN, deny, allow);
    // sendmsg(fd, msg, flags)
    a.bind(send_a2);
    a.load(data_arg(2));
    a.jset(MSG_FASTOPEN, deny, allow);
    // setsockopt(fd, level, optname, ...)
    a.bind(setsockopt);
    a.load(data_arg(1));
    a.jeq(IPPROTO_TCP, NEXT, allow);
    a.load(data_arg(2));
    a.jeq(TCP_FASTOPEN_CONNECT, deny, allow);
    if check_personality {
        // personality(persona)
        a.bind(personality);
        a.load(data_arg(0));
        a.jeq_any(PERSONALITY_OK, allow, deny);
    }

    a.bind(allow);
    a.ret(RET_ALLOW);
    a.bind(deny);
    a.ret(RET_ERRNO | libc::EPERM as u32);
    a.bind(enosys);
    a.ret(RET_ERRNO | libc::ENOSYS as u32);
    a.bind(kill);
    a.ret(RET_KILL_PROCESS);
    a.finish()
}

/// `socket(domain, type, protocol)`: INET/INET6 only as plain TCP (and plain UDP with `udp`),
/// UNIX only with `unix_sockets`; everything else (MPTCP, SCTP, raw, ICMP, packet, netlink,
/// vsock, ...) EPERM.
fn socket_block(a: &mut Asm, policy: &Policy, allow: Label, deny: Label) {
    let [inet, dgram] = [(); 2].map(|()| a.label());
    a.load(data_arg(0));
    if policy.unix_sockets {
        a.jeq(libc::AF_UNIX as u32, allow, NEXT);
    }
    a.jeq_any([libc::AF_INET as u32, libc::AF_INET6 as u32], inet, deny);
    a.bind(inet);
    a.load(data_arg(1));
    a.and(SOCK_TYPE_MASK);
    if policy.udp {
        a.jeq(libc::SOCK_DGRAM as u32, dgram, NEXT);
    }
    a.jeq(libc::SOCK_STREAM as u32, NEXT, deny);
    a.load(data_arg(2));
    a.jeq_any([0, IPPROTO_TCP], allow, deny);
    if policy.udp {
        a.bind(dgram);
        a.load(data_arg(2));
        a.jeq_any([0, IPPROTO_UDP], allow, deny);
    }
}

/// Consecutive syscall numbers `first..=last` that go to one place.
struct Range {
    first: u32,
    last: u32,
    to: Label,
}

/// Sorts the routes and merges runs of consecutive numbers with one destination.
fn ranges(mut routes: Vec<(u32, Label)>) -> Result<Vec<Range>, SandboxError> {
    routes.sort_by_key(|&(nr, _)| nr);
    let mut out: Vec<Range> = Vec::with_capacity(routes.len());
    for (nr, to) in routes {
        match out.last_mut() {
            Some(r) if r.last == nr => {
                return Err(SandboxError::Seccomp(format!(
                    "syscall {nr} has two routes in the filter"
                )));
            }
            Some(r) if r.last + 1 == nr && r.to == to => r.last = nr,
            _ => out.push(Range {
                first: nr,
                last: nr,
                to,
            }),
        }
    }
    Ok(out)
}

/// The longest run of ranges [`dispatch`] tests one after another instead of halving.
const RUN: usize = 6;

/// Sends the syscall number in the accumulator to the destination of the range it falls in,
/// or to `allow`: `JGE` halves the sorted `ranges` until at most [`RUN`] are left, which are
/// tested in turn. Every path ends in a jump, except through an empty list.
fn dispatch(a: &mut Asm, ranges: &[Range], allow: Label) {
    if ranges.len() > RUN {
        let (low, high) = ranges.split_at(ranges.len() / 2);
        let upper = a.label();
        a.jge(high[0].first, upper, NEXT);
        dispatch(a, low, allow);
        a.bind(upper);
        dispatch(a, high, allow);
        return;
    }
    for (i, r) in ranges.iter().enumerate() {
        let next = a.label();
        let miss = if i + 1 == ranges.len() { allow } else { next };
        if r.first == r.last {
            a.jeq(r.first, r.to, miss);
        } else {
            a.jge(r.first, NEXT, miss);
            a.jgt(r.last, miss, r.to);
        }
        a.bind(next);
    }
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_AND_K: u16 = 0x54;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGT_K: u16 = 0x25;
const BPF_JGE_K: u16 = 0x35;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;
/// The kernel's limit on one classic-BPF program.
const BPF_MAXINSNS: usize = 4096;

/// Offsets in `struct seccomp_data` (little-endian: an argument's low 32 bits come first).
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const fn data_arg(i: u32) -> u32 {
    16 + 8 * i
}

/// A jump destination, placed with [`Asm::bind`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Label(usize);

/// The instruction after a conditional jump, for the side that does not jump.
const NEXT: Option<Label> = None;

/// A tiny classic-BPF assembler: jumps name labels, resolved to offsets by [`Asm::finish`].
#[derive(Default)]
struct Asm {
    /// The instructions, each with the labels its `jt` and `jf` stand for.
    code: Vec<(libc::sock_filter, Option<Label>, Option<Label>)>,
    /// Where each label was bound, as an instruction index.
    at: Vec<Option<usize>>,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.at.push(None);
        Label(self.at.len() - 1)
    }

    /// Places `l` at the next instruction emitted.
    fn bind(&mut self, l: Label) {
        self.at[l.0] = Some(self.code.len());
    }

    fn load(&mut self, offset: u32) {
        self.emit(BPF_LD_W_ABS, offset, NEXT, NEXT);
    }

    fn and(&mut self, k: u32) {
        self.emit(BPF_AND_K, k, NEXT, NEXT);
    }

    fn ret(&mut self, k: u32) {
        self.emit(BPF_RET_K, k, NEXT, NEXT);
    }

    /// `acc == k`: jump to `t`, else to `f`.
    fn jeq(&mut self, k: u32, t: impl Into<Option<Label>>, f: impl Into<Option<Label>>) {
        self.emit(BPF_JEQ_K, k, t.into(), f.into());
    }

    /// `acc > k`: jump to `t`, else to `f`.
    fn jgt(&mut self, k: u32, t: impl Into<Option<Label>>, f: impl Into<Option<Label>>) {
        self.emit(BPF_JGT_K, k, t.into(), f.into());
    }

    /// `acc >= k`: jump to `t`, else to `f`.
    fn jge(&mut self, k: u32, t: impl Into<Option<Label>>, f: impl Into<Option<Label>>) {
        self.emit(BPF_JGE_K, k, t.into(), f.into());
    }

    /// `acc & k != 0`: jump to `t`, else to `f`.
    fn jset(&mut self, k: u32, t: impl Into<Option<Label>>, f: impl Into<Option<Label>>) {
        self.emit(BPF_JSET_K, k, t.into(), f.into());
    }

    /// `acc` is one of `ks`: jump to `hit`, else to `miss`.
    fn jeq_any<const N: usize>(&mut self, ks: [u32; N], hit: Label, miss: Label) {
        const { assert!(N > 0, "jeq_any needs at least one value") };
        for (i, k) in ks.into_iter().enumerate() {
            self.jeq(k, hit, if i + 1 == N { Some(miss) } else { NEXT });
        }
    }

    fn emit(&mut self, code: u16, k: u32, t: Option<Label>, f: Option<Label>) {
        let insn = libc::sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        };
        self.code.push((insn, t, f));
    }

    /// The program, with every label turned into a jump offset.
    fn finish(self) -> Result<Vec<libc::sock_filter>, SandboxError> {
        if self.code.len() > BPF_MAXINSNS {
            return Err(SandboxError::Seccomp(format!(
                "the filter has {} instructions, more than the kernel's {BPF_MAXINSNS}",
                self.code.len()
            )));
        }
        self.code
            .iter()
            .enumerate()
            .map(|(pc, &(insn, t, f))| {
                Ok(libc::sock_filter {
                    jt: self.offset(pc, t)?,
                    jf: self.offset(pc, f)?,
                    ..insn
                })
            })
            .collect()
    }

    /// How far the jump at `pc` to `to` skips: BPF jumps go forward only, at most 255
    /// instructions, and must land on an instruction.
    fn offset(&self, pc: usize, to: Option<Label>) -> Result<u8, SandboxError> {
        let Some(l) = to else { return Ok(0) };
        self.at[l.0]
            .filter(|&at| at < self.code.len())
            .and_then(|at| at.checked_sub(pc + 1))
            .and_then(|skip| u8::try_from(skip).ok())
            .ok_or_else(|| {
                SandboxError::Seccomp(format!(
                    "instruction {pc}: the jump to label {} goes backward, past the end or \
                     more than 255 instructions ahead",
                    l.0
                ))
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use crate::sandbox::SandboxSection;
    use proptest::prelude::*;
    use std::path::Path;

    /// A classic-BPF interpreter for the instructions the assembler emits, so the filter's
    /// decisions can be checked without installing it.
    pub(crate) fn run(prog: &[libc::sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        trace(prog, arch, nr, args).0
    }

    /// [`run`], and whether the verdict needed an argument (not only `nr` and `arch`).
    fn trace(prog: &[libc::sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> (u32, bool) {
        let mut data = Vec::new();
        data.extend((nr as i32).to_le_bytes());
        data.extend(arch.to_le_bytes());
        data.extend(0u64.to_le_bytes()); // instruction_pointer
        for a in args {
            data.extend(a.to_le_bytes());
        }
        let (mut acc, mut pc, mut read_args) = (0u32, 0usize, false);
        loop {
            let i = &prog[pc];
            pc += 1;
            match i.code {
                0x20 => {
                    let o = i.k as usize;
                    assert!(
                        o.is_multiple_of(4) && o + 4 <= data.len(),
                        "bad load at {}",
                        pc - 1
                    );
                    read_args |= o >= 16;
                    acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                }
                0x54 => acc &= i.k, // ALU AND K
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let taken = match i.code {
                        0x15 => acc == i.k,
                        0x25 => acc > i.k,
                        0x35 => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                0x06 => return (i.k, read_args),
                c => panic!("unexpected BPF opcode {c:#x} at {}", pc - 1),
            }
        }
    }

    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;
    const ALLOW: u32 = RET_ALLOW;

    fn policy(s: SandboxSection) -> Policy {
        Policy::resolve(Some(&s), Path::new("/w"), None, None).unwrap()
    }

    fn check(prog: &[libc::sock_filter], nr: i64, args: [u64; 6]) -> u32 {
        run(prog, AUDIT_ARCH, nr, args)
    }

    /// What the filter must answer, written from the tables in plain Rust.
    fn expected(p: &Policy, nr: u32, args: [u64; 6]) -> u32 {
        #[cfg(target_arch = "x86_64")]
        if nr >= X32_SYSCALL_BIT {
            return RET_KILL_PROCESS;
        }
        // The kernel reads these arguments as C ints: only the low 32 bits count.
        let int = |i: usize| args[i] as u32;
        let denied = DENY
            .iter()
            .any(|&(_, n, g)| n == i64::from(nr) && g.is_none_or(|g| !p.allows(g)));
        match i64::from(nr) {
            libc::SYS_clone3 => ENOSYS,
            libc::SYS_socket => expected_socket(p, int(0) as i32, int(1) as i32, int(2) as i32),
            libc::SYS_clone if CLONE_NS_FLAGS.iter().any(|&f| int(0) & f != 0) => EPERM,
            libc::SYS_ioctl if [TIOCSTI, TIOCLINUX].contains(&int(1)) => EPERM,
            libc::SYS_sendto | libc::SYS_sendmmsg if int(3) & MSG_FASTOPEN != 0 => EPERM,
            libc::SYS_sendmsg if int(2) & MSG_FASTOPEN != 0 => EPERM,
            libc::SYS_setsockopt if int(1) == IPPROTO_TCP && int(2) == TCP_FASTOPEN_CONNECT => {
                EPERM
            }
            libc::SYS_listen if p.bind.is_empty() && !super::super::wants_own_network(p) => EPERM,
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
    fn policies() -> Vec<Policy> {
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
            let n = build(&p).unwrap().len();
            assert!(n < 120, "{n} instructions for {p:?}");
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
        let with_args = [
            libc::SYS_socket,
            libc::SYS_clone,
            libc::SYS_ioctl,
            libc::SYS_personality,
            libc::SYS_sendto,
            libc::SYS_sendmsg,
            libc::SYS_sendmmsg,
            libc::SYS_setsockopt,
        ];
        for p in policies() {
            let prog = build(&p).unwrap();
            for nr in 0..=600 {
                let (_, read) = trace(&prog, AUDIT_ARCH, nr, [0; 6]);
                let may = with_args.contains(&nr)
                    && (nr != libc::SYS_personality || !p.allows(GiveBack::Personality));
                assert_eq!(read, may, "nr {nr} {p:?}");
            }
        }
    }

    #[test]
    fn denied_names_match_the_filter() {
        for p in policies() {
            let prog = build(&p).unwrap();
            let names = denied_names(&p);
            for &(name, nr, _) in DENY {
                let listed = names.contains(&name);
                assert_eq!(listed, check(&prog, nr, [0; 6]) == EPERM, "{name} {p:?}");
            }
            let personality = names.iter().any(|n| n.starts_with("personality"));
            let odd = check(&prog, libc::SYS_personality, [0x40_0000, 0, 0, 0, 0, 0]);
            assert_eq!(personality, odd == EPERM, "{p:?}");
        }
    }

    proptest! {
        /// The dispatch sends every number to its route, for any set of routes: runs,
        /// ranges, and halvings at every size.
        #[test]
        fn dispatch_follows_the_routes(
            routes in proptest::collection::btree_map(0u32..160, 0usize..3, 0..100),
        ) {
            let mut a = Asm::default();
            let allow = a.label();
            let to = [(); 3].map(|()| a.label());
            a.load(DATA_NR);
            let list = routes.iter().map(|(&nr, &t)| (nr, to[t])).collect();
            dispatch(&mut a, &ranges(list).unwrap(), allow);
            a.bind(allow);
            a.ret(1000);
            for (t, l) in to.into_iter().enumerate() {
                a.bind(l);
                a.ret(t as u32);
            }
            let prog = a.finish().unwrap();
            for nr in 0..170u32 {
                let want = routes.get(&nr).map_or(1000, |&t| t as u32);
                prop_assert_eq!(run(&prog, 0, i64::from(nr), [0; 6]), want, "nr {}", nr);
            }
        }
    }

    #[test]
    fn ranges_merge_runs_and_refuse_a_number_twice() {
        let mut a = Asm::default();
        let [x, y] = [(); 2].map(|()| a.label());
        let r = ranges(vec![(5, x), (3, x), (4, x), (6, y), (8, y), (7, y)]).unwrap();
        let got: Vec<_> = r.iter().map(|r| (r.first, r.last, r.to)).collect();
        assert_eq!(got, [(3, 5, x), (6, 8, y)]);
        assert!(ranges(vec![(3, x), (3, y)]).is_err());
    }

    #[test]
    fn assembler_refuses_bad_jumps() {
        let far = |n: usize| {
            let mut a = Asm::default();
            let end = a.label();
            a.jeq(0, end, NEXT);
            for _ in 0..n {
                a.ret(0);
            }
            a.bind(end);
            a.ret(1);
            a.finish()
        };
        assert!(far(255).is_ok());
        assert!(far(256).is_err());

        let mut a = Asm::default();
        let back = a.label();
        a.bind(back);
        a.load(DATA_NR);
        a.jeq(0, back, NEXT);
        a.ret(0);
        assert!(a.finish().is_err(), "backward jump");

        let mut a = Asm::default();
        let nowhere = a.label();
        a.jeq(0, nowhere, NEXT);
        a.ret(0);
        assert!(a.finish().is_err(), "unbound label");

        let mut a = Asm::default();
        let end = a.label();
        a.jeq(0, end, NEXT);
        a.ret(0);
        a.bind(end);
        assert!(a.finish().is_err(), "label past the end");
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
}
