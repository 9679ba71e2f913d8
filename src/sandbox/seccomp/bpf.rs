//! A tiny classic-BPF assembler for seccomp programs: instructions, labels resolved to forward
//! jump offsets, the architecture check, and a dispatch on the syscall number.
//!
//! It knows the kernel's seccomp ABI (`struct seccomp_data`, the return values, the audit
//! arch) and nothing of agentrun's policy: what is denied lives in `tables`, and the numbers
//! in `syscalls`. The architecture is a parameter, so every host builds (and tests) the
//! program for every architecture.
//!
//! Imports nothing of the crate but the error type; never the policy or the tables.

use super::super::SandboxError;

pub(super) const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub(super) const RET_ERRNO: u32 = 0x0005_0000;
pub(super) const RET_ALLOW: u32 = 0x7fff_0000;

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
pub(super) const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const fn data_arg(i: u8) -> u32 {
    16 + 8 * i as u32
}

/// A jump destination, placed with [`Asm::bind`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Label(usize);

/// The instruction after a conditional jump, for the side that does not jump.
pub(super) const NEXT: Option<Label> = None;

/// A tiny classic-BPF assembler: jumps name labels, resolved to offsets by [`Asm::finish`].
#[derive(Default)]
pub(super) struct Asm {
    /// The instructions, each with the labels its `jt` and `jf` stand for.
    code: Vec<(libc::sock_filter, Option<Label>, Option<Label>)>,
    /// Where each label was bound, as an instruction index.
    at: Vec<Option<usize>>,
}

impl Asm {
    pub(super) fn label(&mut self) -> Label {
        self.at.push(None);
        Label(self.at.len() - 1)
    }

    /// Places `l` at the next instruction emitted.
    pub(super) fn bind(&mut self, l: Label) {
        self.at[l.0] = Some(self.code.len());
    }

    pub(super) fn load(&mut self, offset: u32) {
        self.emit(BPF_LD_W_ABS, offset, NEXT, NEXT);
    }

    /// Loads the low 32 bits of syscall argument `i` (the whole of a C `int`).
    pub(super) fn load_arg(&mut self, i: u8) {
        self.load(data_arg(i));
    }

    pub(super) fn and(&mut self, k: u32) {
        self.emit(BPF_AND_K, k, NEXT, NEXT);
    }

    pub(super) fn ret(&mut self, k: u32) {
        self.emit(BPF_RET_K, k, NEXT, NEXT);
    }

    /// `acc == k`: jump to `t`, else to `f`.
    pub(super) fn jeq(&mut self, k: u32, t: impl Into<Option<Label>>, f: impl Into<Option<Label>>) {
        self.emit(BPF_JEQ_K, k, t.into(), f.into());
    }

    /// `acc > k`: jump to `t`, else to `f`.
    pub(super) fn jgt(&mut self, k: u32, t: impl Into<Option<Label>>, f: impl Into<Option<Label>>) {
        self.emit(BPF_JGT_K, k, t.into(), f.into());
    }

    /// `acc >= k`: jump to `t`, else to `f`.
    pub(super) fn jge(&mut self, k: u32, t: impl Into<Option<Label>>, f: impl Into<Option<Label>>) {
        self.emit(BPF_JGE_K, k, t.into(), f.into());
    }

    /// `acc & k != 0`: jump to `t`, else to `f`.
    pub(super) fn jset(
        &mut self,
        k: u32,
        t: impl Into<Option<Label>>,
        f: impl Into<Option<Label>>,
    ) {
        self.emit(BPF_JSET_K, k, t.into(), f.into());
    }

    /// `acc` is one of `ks` (tested in turn): jump to `hit`, else to `miss`.
    pub(super) fn jeq_any(
        &mut self,
        ks: &[u32],
        hit: Label,
        miss: Option<Label>,
    ) -> Result<(), SandboxError> {
        let Some((&last, rest)) = ks.split_last() else {
            return Err(SandboxError::Seccomp(
                "a value test with no values".to_string(),
            ));
        };
        for &k in rest {
            self.jeq(k, hit, NEXT);
        }
        self.jeq(last, hit, miss);
        Ok(())
    }

    /// The architecture check: a foreign `arch` kills the process, and so does a number with
    /// `x32_bit` set (the x32 ABI runs under the x86_64 audit arch). Leaves the syscall number
    /// in the accumulator.
    pub(super) fn arch_check(&mut self, audit_arch: u32, x32_bit: Option<u32>, kill: Label) {
        self.load(DATA_ARCH);
        self.jeq(audit_arch, NEXT, kill);
        self.load(DATA_NR);
        if let Some(bit) = x32_bit {
            self.jge(bit, kill, NEXT);
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
    pub(super) fn finish(self) -> Result<Vec<libc::sock_filter>, SandboxError> {
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

/// Consecutive syscall numbers `first..=last` that go to one place.
pub(super) struct Range {
    first: u32,
    last: u32,
    to: Label,
}

/// Sorts the routes and merges runs of consecutive numbers with one destination.
pub(super) fn ranges(mut routes: Vec<(u32, Label)>) -> Result<Vec<Range>, SandboxError> {
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
pub(super) fn dispatch(a: &mut Asm, ranges: &[Range], allow: Label) {
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

/// A classic-BPF interpreter for the subset that our assembler and seccompiler emit, so a
/// program's decisions can be checked without installing it. It only executes; what a
/// program should answer comes from elsewhere (a model, or seccompiler's program).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) mod exec {
    /// The verdict of `prog` for one syscall.
    pub(crate) fn run(prog: &[libc::sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        trace(prog, arch, nr, args).0
    }

    /// [`run`], and whether the verdict needed an argument (not only `nr` and `arch`).
    pub(crate) fn trace(
        prog: &[libc::sock_filter],
        arch: u32,
        nr: i64,
        args: [u64; 6],
    ) -> (u32, bool) {
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
                0x54 => acc &= i.k,         // ALU AND K
                0x05 => pc += i.k as usize, // JMP JA (seccompiler)
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::exec::run;
    use super::*;
    use proptest::prelude::*;

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

    /// Labels resolve to the right offsets, on both sides of a jump, and `jeq_any` tests
    /// its values in turn.
    #[test]
    fn labels_resolve_to_offsets() {
        let mut a = Asm::default();
        let [hit, miss] = [(); 2].map(|()| a.label());
        a.load_arg(2);
        a.jeq_any(&[7, 9], hit, Some(miss)).unwrap();
        a.ret(0);
        a.bind(hit);
        a.ret(1);
        a.bind(miss);
        a.ret(2);
        let p = a.finish().unwrap();
        let got: Vec<_> = p.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect();
        assert_eq!(
            got,
            [
                (BPF_LD_W_ABS, 0, 0, 32),
                (BPF_JEQ_K, 2, 0, 7),
                (BPF_JEQ_K, 1, 2, 9),
                (BPF_RET_K, 0, 0, 0),
                (BPF_RET_K, 0, 0, 1),
                (BPF_RET_K, 0, 0, 2),
            ]
        );
        for (arg, want) in [(7, 1), (9, 1), (8, 2), (7 | 1 << 32, 1)] {
            assert_eq!(run(&p, 0, 0, [0, 0, arg, 0, 0, 0]), want, "{arg:#x}");
        }
        assert!(Asm::default().jeq_any(&[], hit, NEXT).is_err());
    }

    /// The arch check: the audit arch, then the x32 bit where the arch has one.
    #[test]
    fn arch_check_kills_foreign_arch_and_alias_bit() {
        for x32 in [None, Some(0x4000_0000)] {
            let mut a = Asm::default();
            let kill = a.label();
            a.arch_check(0xc000_003e, x32, kill);
            a.ret(5);
            a.bind(kill);
            a.ret(RET_KILL_PROCESS);
            let p = a.finish().unwrap();
            assert_eq!(run(&p, 0xc000_003e, 1, [0; 6]), 5);
            assert_eq!(run(&p, 0x4000_0003, 1, [0; 6]), RET_KILL_PROCESS);
            let alias = run(&p, 0xc000_003e, 0x4000_0001, [0; 6]);
            assert_eq!(alias == RET_KILL_PROCESS, x32.is_some());
        }
    }

    /// More than the kernel's 4096 instructions is refused.
    #[test]
    fn too_long_a_program_is_refused() {
        let mut a = Asm::default();
        for _ in 0..BPF_MAXINSNS {
            a.ret(0);
        }
        assert!(Asm { ..a }.finish().is_ok());
        let mut a = Asm::default();
        for _ in 0..=BPF_MAXINSNS {
            a.ret(0);
        }
        assert!(a.finish().is_err());
    }
}
