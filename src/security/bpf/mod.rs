//! A seccomp policy compiled to one classic BPF program that finds the system call by
//! binary search.
//!
//! Why not one rule after another, as generic compilers emit: the kernel runs the filter
//! on every system call the sandbox makes, so a linear scan of ~90 denied calls costs each
//! allowed call ~90 comparisons; here it is ~7. The program is also a fraction of the
//! length, which makes installing it (the kernel checks and JIT-compiles it) cheaper.
//!
//! Layout:
//! ```text
//!   ld arch;  jeq ARCH_1 ? (ja code_1) : next ... ret BAD_ARCH   (one entry per section)
//!   code:     ld nr;  jset X32_BIT ? (ja x32 code, or BAD_ARCH) : next  (x86_64 only)
//!             jgt LAST ? ret ENOSYS : next                     (when the policy asks)
//!   search:   jge first[mid] ? (ja right) : left  (runs of numbers treated alike)
//!   leaf:     jgt last ? next : body ... body    (a run's body: its rules or DEFAULT)
//!   body:     each rule's conditions; all hold -> ret its action; no rule -> ret DEFAULT
//! ```
//! Conditional jumps only ever skip a few instructions; a branch to a far subtree is an
//! unconditional `ja`, whose offset has 32 bits.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use seccompiler::{sock_filter, BpfProgram};

/// A condition on one argument of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// The argument's low 32 bits equal `value` (as the kernel reads an `int`).
    Low32Eq { arg: u8, value: u32 },
    /// The argument's low 32 bits differ from `value`.
    Low32Ne { arg: u8, value: u32 },
    /// Any bit of `mask` is set in the full 64-bit argument.
    AnyBit { arg: u8, mask: u64 },
    /// libseccomp's comparison: `arg op value` on the whole 64-bit argument in a wide
    /// section, on the low 32 bits (with `value` truncated, as libseccomp does) in a
    /// 32-bit one.
    Cmp { arg: u8, op: CmpOp, value: u64 },
}

/// The runtime-spec's `SCMP_CMP_*` operators, unsigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `arg & mask == value & mask`.
    MaskedEq(u64),
}

/// Applies when every condition holds (none: always).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub when: Vec<Cond>,
    pub action: u32,
}

/// What each listed system call gets; every other call gets `default`. For one call the
/// first rule that applies decides, and none applying means `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub rules: BTreeMap<u32, Vec<Rule>>,
    pub default: u32,
    /// Calls numbered above this fail with ENOSYS (runc's answer for calls newer than
    /// the profile, so that libc falls back instead of seeing EPERM).
    pub enosys_above: Option<u32>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            rules: BTreeMap::new(),
            default: ALLOW,
            enosys_above: None,
        }
    }
}

/// The policy for the calls of one architecture (AUDIT_ARCH_*) and numbering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub arch: u32,
    /// x32: the calls of AUDIT_ARCH_X86_64 with X32_BIT set in their number.
    pub x32: bool,
    /// Arguments are 64 bits wide (false on 32-bit ABIs: i386, arm).
    pub wide: bool,
    pub policy: Policy,
}

/// Sections for several architectures; calls of any other get `bad_arch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub sections: Vec<Section>,
    pub bad_arch: u32,
}

pub const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
pub const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

pub fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

// Classic BPF opcodes.
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const JA: u16 = 0x05;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;

// `struct seccomp_data`: nr, arch, instruction_pointer, args[6] (little endian here).
const NR: u32 = 0;
const ARCH: u32 = 4;
fn arg_low(arg: u8) -> u32 {
    16 + 8 * u32::from(arg)
}
fn arg_high(arg: u8) -> u32 {
    arg_low(arg) + 4
}

#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xc000_00b7;
#[cfg(target_arch = "x86_64")]
pub const X32_BIT: Option<u32> = Some(0x4000_0000);
#[cfg(not(target_arch = "x86_64"))]
pub const X32_BIT: Option<u32> = None;

/// Below this many calls a range is tested one by one.
const LINEAR: usize = 4;

/// The native architecture's calls get `policy`; all others are killed.
pub fn compile(policy: &Policy) -> Result<BpfProgram> {
    compile_filter(&Filter {
        sections: vec![Section {
            arch: AUDIT_ARCH,
            x32: false,
            wide: true,
            policy: policy.clone(),
        }],
        bad_arch: KILL,
    })
}

pub fn compile_filter(filter: &Filter) -> Result<BpfProgram> {
    let mut arches: Vec<u32> = Vec::new();
    for s in &filter.sections {
        if s.x32 && (X32_BIT.is_none() || s.arch != AUDIT_ARCH) {
            bail!("seccomp compiler: x32 calls exist only on x86_64");
        }
        if filter
            .sections
            .iter()
            .filter(|o| (o.arch, o.x32) == (s.arch, s.x32))
            .count()
            > 1
        {
            bail!(
                "seccomp compiler: two sections for architecture {:#x}",
                s.arch
            );
        }
        if !arches.contains(&s.arch) {
            arches.push(s.arch);
        }
    }
    let mut asm = Asm::default();
    asm.ld(ARCH);
    let labels: Vec<Label> = arches.iter().map(|_| Label::new(&mut asm)).collect();
    for (arch, label) in arches.iter().zip(&labels) {
        asm.jump(JEQ_K, *arch, Target::Next, Target::Skip(1));
        asm.ja(*label);
    }
    asm.ret(filter.bad_arch);
    for (arch, label) in arches.iter().zip(labels) {
        asm.place(label);
        let find = |x32: bool| {
            filter
                .sections
                .iter()
                .find(|s| s.arch == *arch && s.x32 == x32)
        };
        asm.ld(NR);
        if let (Some(bit), true) = (X32_BIT, *arch == AUDIT_ARCH) {
            // The kernel takes a call with this bit for x32 whatever else is set.
            let x32 = Label::new(&mut asm);
            asm.jump(JSET_K, bit, Target::Next, Target::Skip(1));
            asm.ja(x32);
            match find(false) {
                Some(s) => section(&mut asm, s),
                None => asm.ret(filter.bad_arch),
            }
            asm.place(x32);
            match find(true) {
                Some(s) => section(&mut asm, s),
                None => asm.ret(filter.bad_arch),
            }
        } else if let Some(s) = find(false) {
            section(&mut asm, s);
        }
    }
    asm.finish()
}

/// One section's code; the accumulator holds the call's number.
fn section(asm: &mut Asm, s: &Section) {
    if let Some(last) = s.policy.enosys_above {
        asm.jump(JGT_K, last, Target::Next, Target::Skip(1));
        asm.ret(errno(libc::ENOSYS));
    }
    search(asm, &runs(&s.policy), s.wide, s.policy.default);
}

/// Consecutive numbers that get the same rules (None: the default).
#[derive(Debug, Clone, Copy)]
struct Run<'a> {
    first: u32,
    last: u32,
    rules: Option<&'a [Rule]>,
}

/// The whole range of numbers as runs: allow-lists name long stretches of calls alike,
/// and one run costs one comparison however many calls it holds.
fn runs(policy: &Policy) -> Vec<Run<'_>> {
    let mut out: Vec<Run> = Vec::new();
    let mut next = 0u32;
    for (&nr, rules) in &policy.rules {
        if nr > next {
            out.push(Run {
                first: next,
                last: nr - 1,
                rules: None,
            });
        }
        match out.last_mut() {
            Some(run) if run.last + 1 == nr && run.rules == Some(rules.as_slice()) => run.last = nr,
            _ => out.push(Run {
                first: nr,
                last: nr,
                rules: Some(rules),
            }),
        }
        next = match nr.checked_add(1) {
            Some(n) => n,
            None => return out,
        };
    }
    out.push(Run {
        first: next,
        last: u32::MAX,
        rules: None,
    });
    out
}

/// Code for `runs` (sorted, adjacent); the accumulator holds the call's number, known to
/// lie within them.
fn search(asm: &mut Asm, runs: &[Run], wide: bool, default: u32) {
    if runs.len() <= LINEAR {
        for (i, run) in runs.iter().enumerate() {
            let later = Label::new(asm);
            if i + 1 < runs.len() {
                // A conditional jump reaches 255 instructions; past a long body, `ja`.
                let long = run.rules.map_or(0, |r| r.len() * (1 + 7 * 6)) > 200;
                if long {
                    asm.jump(JGT_K, run.last, Target::Next, Target::Skip(1));
                    asm.ja(later);
                } else {
                    asm.jump(JGT_K, run.last, Target::Label(later), Target::Next);
                }
            }
            match run.rules {
                Some(rules) => body(asm, rules, wide, default),
                None => asm.ret(default),
            }
            asm.place(later);
        }
        return;
    }
    let mid = runs.len() / 2;
    let right = Label::new(asm);
    asm.jump(JGE_K, runs[mid].first, Target::Next, Target::Skip(1));
    asm.ja(right);
    search(asm, &runs[..mid], wide, default);
    asm.place(right);
    search(asm, &runs[mid..], wide, default);
}

/// One call's rules, then the default (unless a rule without conditions ends them).
fn body(asm: &mut Asm, rules: &[Rule], wide: bool, default: u32) {
    for rule in rules {
        let next_rule = Label::new(asm);
        for cond in &rule.when {
            condition(asm, *cond, wide, next_rule);
        }
        asm.ret(rule.action);
        asm.place(next_rule);
        if rule.when.is_empty() {
            return;
        }
    }
    asm.ret(default);
}

/// Falls through when `cond` holds, jumps to `fail` when not.
fn condition(asm: &mut Asm, cond: Cond, wide: bool, fail: Label) {
    let fail = Target::Label(fail);
    match cond {
        Cond::Low32Eq { arg, value } => {
            asm.ld(arg_low(arg));
            asm.jump(JEQ_K, value, Target::Next, fail);
        }
        Cond::Low32Ne { arg, value } => {
            asm.ld(arg_low(arg));
            asm.jump(JEQ_K, value, fail, Target::Next);
        }
        Cond::AnyBit { arg, mask } => {
            // Low word has one of the bits: holds; else the high word decides.
            let holds = Label::new(asm);
            asm.ld(arg_low(arg));
            asm.jump(JSET_K, mask as u32, Target::Label(holds), Target::Next);
            asm.ld(arg_high(arg));
            asm.jump(JSET_K, (mask >> 32) as u32, Target::Next, fail);
            asm.place(holds);
        }
        Cond::Cmp { arg, op, value } => compare(asm, arg, op, value, wide, fail),
    }
}

/// `arg op value`, unsigned: the high words decide unless they are equal, then the low.
fn compare(asm: &mut Asm, arg: u8, op: CmpOp, value: u64, wide: bool, fail: Target) {
    let holds = Label::new(asm);
    let pass = Target::Label(holds);
    let (hi, lo) = ((value >> 32) as u32, value as u32);
    match op {
        CmpOp::Eq | CmpOp::Ne => {
            let (differ, same) = if op == CmpOp::Eq {
                (fail, Target::Next)
            } else {
                (pass, fail)
            };
            if wide {
                asm.ld(arg_high(arg));
                asm.jump(JEQ_K, hi, Target::Next, differ);
            }
            asm.ld(arg_low(arg));
            match same {
                Target::Next => asm.jump(JEQ_K, lo, Target::Next, differ),
                _ => asm.jump(JEQ_K, lo, same, Target::Next),
            }
        }
        CmpOp::MaskedEq(mask) => {
            let want = value & mask;
            if wide && mask >> 32 != 0 {
                asm.ld(arg_high(arg));
                asm.and((mask >> 32) as u32);
                asm.jump(JEQ_K, (want >> 32) as u32, Target::Next, fail);
            }
            asm.ld(arg_low(arg));
            asm.and(mask as u32);
            asm.jump(JEQ_K, want as u32, Target::Next, fail);
        }
        CmpOp::Gt | CmpOp::Ge | CmpOp::Lt | CmpOp::Le => {
            // Gt/Ge hold when the argument is above; Lt/Le are their negations.
            let above = matches!(op, CmpOp::Gt | CmpOp::Ge);
            let (yes, no) = if above { (pass, fail) } else { (fail, pass) };
            if wide {
                asm.ld(arg_high(arg));
                asm.jump(JGT_K, hi, yes, Target::Next);
                asm.jump(JEQ_K, hi, Target::Next, no);
            }
            asm.ld(arg_low(arg));
            let code = if matches!(op, CmpOp::Gt | CmpOp::Le) {
                JGT_K
            } else {
                JGE_K
            };
            asm.jump(code, lo, yes, no);
        }
    }
    asm.place(holds);
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Next,
    /// Skip this many following instructions.
    Skip(u8),
    Label(Label),
}

#[derive(Debug, Clone, Copy)]
struct Label(usize);

impl Label {
    fn new(asm: &mut Asm) -> Label {
        asm.labels.push(None);
        Label(asm.labels.len() - 1)
    }
}

#[derive(Debug)]
enum Op {
    Plain(sock_filter),
    Jump {
        code: u16,
        k: u32,
        jt: Target,
        jf: Target,
    },
    Ja(Label),
}

/// Instructions with forward labels, resolved at the end.
#[derive(Debug, Default)]
struct Asm {
    ops: Vec<Op>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn ld(&mut self, offset: u32) {
        self.ops.push(Op::Plain(insn(LD_W_ABS, 0, 0, offset)));
    }
    fn and(&mut self, mask: u32) {
        self.ops.push(Op::Plain(insn(AND_K, 0, 0, mask)));
    }
    fn ret(&mut self, action: u32) {
        self.ops.push(Op::Plain(insn(RET_K, 0, 0, action)));
    }
    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.ops.push(Op::Jump { code, k, jt, jf });
    }
    fn ja(&mut self, to: Label) {
        self.ops.push(Op::Ja(to));
    }
    fn place(&mut self, label: Label) {
        self.labels[label.0] = Some(self.ops.len());
    }

    fn finish(self) -> Result<BpfProgram> {
        let at = |label: Label| -> Result<usize> {
            match self.labels[label.0] {
                Some(pos) => Ok(pos),
                None => bail!("seccomp compiler: a label was never placed"),
            }
        };
        let mut out = Vec::with_capacity(self.ops.len());
        for (pos, op) in self.ops.iter().enumerate() {
            let offset = |t: Target| -> Result<u8> {
                let off = match t {
                    Target::Next => 0,
                    Target::Skip(n) => usize::from(n),
                    Target::Label(l) => at(l)?
                        .checked_sub(pos + 1)
                        .ok_or_else(|| anyhow::anyhow!("seccomp compiler: backward jump"))?,
                };
                u8::try_from(off)
                    .map_err(|_| anyhow::anyhow!("seccomp compiler: a jump of {off} is too far"))
            };
            out.push(match op {
                Op::Plain(i) => i.clone(),
                Op::Jump { code, k, jt, jf } => insn(*code, offset(*jt)?, offset(*jf)?, *k),
                Op::Ja(l) => {
                    let off = at(*l)?
                        .checked_sub(pos + 1)
                        .ok_or_else(|| anyhow::anyhow!("seccomp compiler: backward jump"))?;
                    insn(JA, 0, 0, off as u32)
                }
            });
        }
        if out.len() > usize::from(u16::MAX) {
            bail!("seccomp compiler: the program is too long");
        }
        Ok(out)
    }
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

#[cfg(test)]
pub mod tests;
