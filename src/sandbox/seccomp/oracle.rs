//! The independent oracle: the same tables compiled a second time, by seccompiler, and both
//! programs run over the same generated cases on x86_64 and aarch64. The expected verdicts
//! come from seccompiler's compiler (and its syscall-number tables), not from ours, so a wrong
//! constant or jump in the assembler, or a wrong number in `syscalls`, fails here.
//!
//! How the tables map onto seccompiler, which has one match action per filter and rules that
//! are ORs of ANDs of conditions on one argument each:
//!
//! - one seccompiler filter per verdict other than allow (`EPERM`, `ENOSYS`, kill), each
//!   "allow unless a rule matches"; the kernel runs every installed filter and keeps the most
//!   severe answer, and so does [`verdict`] here;
//! - a check tree becomes its paths (the conditions on the way to each verdict); each path is
//!   one `SeccompRule`, and a path without conditions is "match on the number alone";
//! - every comparison is `Dword` (the low 32 bits, as the kernel reads a C `int`);
//! - "any bit of `mask` set" (`AnyBit`) is one rule per bit `b` of the mask, "`b` set and the
//!   mask's lower bits clear" (`MaskedEq(mask & (b | b - 1)) == b`), and its other side
//!   `MaskedEq(mask) == 0`;
//! - `arg & mask` one of the values is `MaskedEq(mask) == value` per value; its other side
//!   (seccompiler has no masked "not equal") is `MaskedEq(mask) == w` for every other value `w`
//!   the mask lets through (16 for the socket type's `0xf`);
//! - an unmasked "none of the values" is one rule of `Ne` conditions;
//! - the x32 check (on x86_64 every number from `__X32_SYSCALL_BIT` up is killed) has no
//!   seccompiler form: its filters are keyed by syscall number, so the kill filter lists every
//!   number of the sample from that bit up.
//!
//! A tree with a case that an earlier case already holds drops it (first match wins, as in
//! the assembler's program).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::bpf::exec::run;
use super::syscalls::{self, Arch};
use super::tables::{self, Check, Verdict};
use super::tests::policies;
use crate::sandbox::Policy;

/// One seccompiler condition on the low 32 bits of an argument (kept as our own value so the
/// tests can evaluate it too).
#[derive(Clone, Copy, Debug)]
struct Cond {
    arg: u8,
    op: Op,
    value: u32,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Eq,
    Ne,
    MaskedEq(u32),
}

impl Cond {
    fn seccompiler(self) -> SeccompCondition {
        let op = match self.op {
            Op::Eq => SeccompCmpOp::Eq,
            Op::Ne => SeccompCmpOp::Ne,
            Op::MaskedEq(m) => SeccompCmpOp::MaskedEq(m.into()),
        };
        SeccompCondition::new(self.arg, SeccompCmpArgLen::Dword, op, self.value.into()).unwrap()
    }

    /// Whether it holds, as seccompiler documents its operators.
    fn holds(self, args: &[u64; 6]) -> bool {
        let x = args[usize::from(self.arg)] as u32;
        match self.op {
            Op::Eq => x == self.value,
            Op::Ne => x != self.value,
            Op::MaskedEq(m) => x & m == self.value & m,
        }
    }
}

/// A path through a check: the conditions that lead to a verdict.
type Path = (Vec<Cond>, Verdict);

fn cond(arg: u8, op: Op, value: u32) -> Cond {
    Cond { arg, op, value }
}

fn bits(mask: u32) -> impl Iterator<Item = u32> {
    (0..32).map(|b| 1u32 << b).filter(move |b| mask & b != 0)
}

/// Every value `x` with `x & !mask == 0`.
fn submasks(mask: u32) -> Vec<u32> {
    assert!(
        mask.count_ones() <= 8,
        "mask {mask:#x} has too many values to list"
    );
    (0u32..1 << mask.count_ones())
        .map(|i| {
            bits(mask)
                .enumerate()
                .filter(|(j, _)| i & 1 << j != 0)
                .fold(0, |w, (_, b)| w | b)
        })
        .collect()
}

/// The paths of `check`; exactly one holds for any arguments.
fn paths(check: &Check) -> Vec<Path> {
    match check {
        Check::Is(v) => vec![(vec![], *v)],
        &Check::AnyBit {
            arg,
            mask,
            set,
            clear,
        } => {
            // Bit `b` set and every lower bit of the mask clear: one path per bit, exclusive.
            let mut out: Vec<Path> = bits(mask)
                .map(|b| {
                    let upto = mask & (b | (b - 1));
                    (vec![cond(arg, Op::MaskedEq(upto), b)], set)
                })
                .collect();
            out.push((vec![cond(arg, Op::MaskedEq(mask), 0)], clear));
            out
        }
        Check::OneOf {
            arg,
            mask,
            cases,
            otherwise,
        } => {
            let arg = *arg;
            let eq = |v| match mask {
                Some(m) => cond(arg, Op::MaskedEq(*m), v),
                None => cond(arg, Op::Eq, v),
            };
            let mut seen: Vec<u32> = Vec::new();
            let mut out = Vec::new();
            for (values, sub) in cases {
                for &v in values {
                    if seen.contains(&v) || mask.is_some_and(|m| v & !m != 0) {
                        continue; // an earlier case holds it, or the mask never lets it through
                    }
                    seen.push(v);
                    for (mut conds, verdict) in paths(sub) {
                        conds.insert(0, eq(v));
                        out.push((conds, verdict));
                    }
                }
            }
            match mask {
                None => out.push((
                    seen.iter().map(|&v| cond(arg, Op::Ne, v)).collect(),
                    *otherwise,
                )),
                Some(m) => out.extend(
                    submasks(*m)
                        .into_iter()
                        .filter(|w| !seen.contains(w))
                        .map(|w| (vec![eq(w)], *otherwise)),
                ),
            }
            out
        }
    }
}

fn target(arch: &Arch) -> TargetArch {
    TargetArch::try_from(arch.name).unwrap()
}

/// seccompiler's own number for `name` on `arch`, from its JSON front end; `None` if its
/// tables do not know the name.
fn seccompiler_nr(arch: &Arch, name: &str) -> Option<u32> {
    let json = format!(
        r#"{{"f": {{"mismatch_action": "allow", "match_action": "trap",
                    "filter": [{{"syscall": "{name}"}}]}}}}"#
    );
    let map = seccompiler::compile_from_json(json.as_bytes(), target(arch)).ok()?;
    let prog = &map["f"];
    // The arch check (3), the load of the number, then `JEQ nr`.
    assert_eq!((prog[3].code, prog[4].code), (0x20, 0x15), "{prog:?}");
    Some(prog[4].k)
}

/// The names seccompiler's tables (Linux 6.12) do not have yet.
const NEWER_THAN_SECCOMPILER: [&str; 1] = ["open_tree_attr"];

/// Our numbers, checked against seccompiler's for every name both know.
fn numbers(arch: &Arch) -> HashMap<&'static str, u32> {
    arch.numbers()
        .iter()
        .map(|&(name, ours)| {
            match seccompiler_nr(arch, name) {
                Some(theirs) => assert_eq!(ours, theirs, "{} {name}", arch.name),
                None => assert!(NEWER_THAN_SECCOMPILER.contains(&name), "{name}"),
            }
            (name, ours)
        })
        .collect()
}

/// The policy as seccompiler filters, one per verdict other than allow (see the module doc),
/// with `kill` numbers killed outright (the x32 sample).
fn seccompiler_filters(
    policy: &Policy,
    arch: &Arch,
    nrs: &HashMap<&str, u32>,
    kill: &[u32],
) -> Vec<BpfProgram> {
    let mut by_verdict: BTreeMap<u32, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
    let key = |v: Verdict| super::ret_value(v);
    for rule in tables::rules(policy) {
        for (name, check) in rule.syscalls {
            if arch.nr(name).unwrap().is_none() {
                continue;
            }
            let nr = i64::from(nrs[name]);
            for (conds, verdict) in paths(&check) {
                if verdict == Verdict::Allow {
                    continue;
                }
                let rules = by_verdict.entry(key(verdict)).or_default();
                if conds.is_empty() {
                    rules.insert(nr, vec![]); // on the number alone
                } else {
                    let r = rules.entry(nr).or_default();
                    r.push(
                        SeccompRule::new(conds.iter().map(|c| c.seccompiler()).collect()).unwrap(),
                    );
                }
            }
        }
    }
    let kills = by_verdict.entry(key(Verdict::KillProcess)).or_default();
    kills.extend(kill.iter().map(|&nr| (i64::from(nr), vec![])));
    let action = |ret: u32| match ret {
        r if r == key(Verdict::KillProcess) => SeccompAction::KillProcess,
        r => SeccompAction::Errno(r & 0xffff),
    };
    by_verdict
        .into_iter()
        .map(|(ret, rules)| {
            SeccompFilter::new(rules, SeccompAction::Allow, action(ret), target(arch))
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect()
}

fn to_libc(p: BpfProgram) -> Vec<libc::sock_filter> {
    p.into_iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect()
}

/// What the kernel answers with several filters installed: the most severe action (the lowest
/// action value read as signed), as `seccomp_run_filters` does.
fn verdict(progs: &[Vec<libc::sock_filter>], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
    progs
        .iter()
        .map(|p| run(p, arch, nr, args))
        .min_by_key(|r| (r & 0xffff_0000) as i32)
        .unwrap()
}

/// Argument values on both sides of every comparison `check` makes, per argument.
fn edges(check: &Check, out: &mut BTreeMap<u8, BTreeSet<u64>>) {
    let mut add = |arg: u8, vs: &[u32], mask: Option<u32>| {
        let set = out.entry(arg).or_default();
        set.extend([0, u64::from(u32::MAX), u64::MAX]);
        for &v in vs {
            let v64 = u64::from(v);
            set.extend([v64, v64 | 1 << 32, v64 << 32]);
            set.extend([v.wrapping_add(1), v.wrapping_sub(1)].map(u64::from));
            if let Some(m) = mask {
                set.insert(u64::from(v | !m));
                set.extend(bits(m).map(u64::from));
            }
        }
    };
    match check {
        Check::Is(_) => {}
        &Check::AnyBit { arg, mask, .. } => {
            let vs: Vec<u32> = bits(mask).chain([mask, !mask]).collect();
            add(arg, &vs, None);
        }
        Check::OneOf {
            arg, mask, cases, ..
        } => {
            let vs: Vec<u32> = cases.iter().flat_map(|(v, _)| v.iter().copied()).collect();
            add(*arg, &vs, *mask);
            for (_, sub) in cases {
                edges(sub, out);
            }
        }
    }
}

/// Every combination of the per-argument values (the other arguments are 0).
fn cases(check: &Check) -> Vec<[u64; 6]> {
    let mut per_arg = BTreeMap::new();
    edges(check, &mut per_arg);
    let mut out = vec![[0u64; 6]];
    for (arg, values) in per_arg {
        out = out
            .iter()
            .flat_map(|c| {
                values.iter().map(move |&v| {
                    let mut c = *c;
                    c[usize::from(arg)] = v;
                    c
                })
            })
            .collect();
    }
    out
}

/// Both programs over the same cases: every number in the tables and a sample of the others
/// with plain arguments, and the arguments around every rule of every argument check.
fn compare(arch: &Arch) -> usize {
    let nrs = numbers(arch);
    let mut sample: BTreeSet<u32> = (0..=600).collect();
    sample.extend(nrs.values());
    sample.extend([0x3fff_ffff, 0x4000_0000, 0x8000_0000, u32::MAX]);
    if let Some(bit) = arch.x32_bit {
        sample.extend(nrs.values().map(|nr| nr | bit));
        sample.extend([bit | 0x65, bit | 0x3fff_ffff]);
    }
    let x32: Vec<u32> = sample
        .iter()
        .copied()
        .filter(|&nr| arch.x32_bit.is_some_and(|bit| nr >= bit))
        .collect();
    let foreign = [0x4000_0003, syscalls::X86_64.audit, syscalls::AARCH64.audit]
        .into_iter()
        .filter(|&a| a != arch.audit);
    let plain = [[0; 6], [u64::MAX; 6], [1 << 32; 6]];
    let mut compared = 0;
    for policy in policies() {
        let ours = super::compile(&policy, arch).unwrap();
        let theirs: Vec<_> = seccompiler_filters(&policy, arch, &nrs, &x32)
            .into_iter()
            .map(to_libc)
            .collect();
        let mut same = |nr: u32, args: [u64; 6], audit: u32| {
            let nr = i64::from(nr as i32);
            let want = verdict(&theirs, audit, nr, args);
            let got = run(&ours, audit, nr, args);
            assert_eq!(
                got, want,
                "{} nr {nr:#x} args {args:x?} arch {audit:#x} {policy:?}",
                arch.name
            );
            compared += 1;
        };
        for &nr in &sample {
            for args in plain {
                same(nr, args, arch.audit);
            }
        }
        for audit in foreign.clone() {
            for &nr in &sample {
                same(nr, [0; 6], audit);
            }
        }
        for rule in tables::rules(&policy) {
            for (name, check) in rule.syscalls {
                let Some(nr) = arch.nr(name).unwrap() else {
                    continue;
                };
                for args in cases(&check) {
                    same(nr, args, arch.audit);
                }
            }
        }
    }
    compared
}

#[test]
fn x86_64_filter_agrees_with_seccompiler() {
    let n = compare(&syscalls::X86_64);
    assert!(n > 50_000, "{n} cases");
}

#[test]
fn aarch64_filter_agrees_with_seccompiler() {
    let n = compare(&syscalls::AARCH64);
    assert!(n > 50_000, "{n} cases");
}

/// The names `syscalls` says an architecture lacks are unknown to seccompiler's table too.
#[test]
fn absent_names_are_absent_in_seccompiler() {
    for arch in syscalls::ALL {
        for (name, _) in tables::DENY_LIST {
            if arch.nr(name).unwrap().is_none() {
                assert_eq!(seccompiler_nr(arch, name), None, "{} {name}", arch.name);
            }
        }
    }
}

/// The check trees' paths really are exclusive and exhaustive (else the mapping above would be
/// wrong, not the filter): exactly one path holds for every generated case.
#[test]
fn paths_partition_the_cases() {
    for policy in policies() {
        for rule in tables::rules(&policy) {
            for (name, check) in rule.syscalls {
                let paths = paths(&check);
                for args in cases(&check) {
                    let n = paths
                        .iter()
                        .filter(|(conds, _)| conds.iter().all(|c| c.holds(&args)))
                        .count();
                    assert_eq!(n, 1, "{name} {args:x?}");
                }
            }
        }
    }
}
