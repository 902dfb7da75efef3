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
//!   ld arch;  jeq AUDIT_ARCH ? next : KILL        (foreign architectures, i386 int 0x80)
//!   ld nr;    jge X32_BIT    ? KILL : next        (x86_64 only: x32 calls share its arch)
//!   search:   jge nr[mid] ? (ja right) : left     (ranges of the sorted numbers)
//!   leaf:     jeq nr ? body : next ... ret ALLOW
//!   body:     each rule's conditions; all hold -> ret its action; no rule -> ret ALLOW
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
}

/// Applies when every condition holds (none: always).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub when: Vec<Cond>,
    pub action: u32,
}

/// What each listed system call gets; every other call is allowed. For one call the first
/// rule that applies decides, and none applying means allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub rules: BTreeMap<u32, Vec<Rule>>,
}

pub const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
pub const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

pub fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

// Classic BPF opcodes.
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const JA: u16 = 0x05;
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
const X32_BIT: Option<u32> = Some(0x4000_0000);
#[cfg(not(target_arch = "x86_64"))]
const X32_BIT: Option<u32> = None;

/// Below this many calls a range is tested one by one.
const LINEAR: usize = 4;

pub fn compile(policy: &Policy) -> Result<BpfProgram> {
    let mut asm = Asm::default();
    asm.ld(ARCH);
    asm.jump(JEQ_K, AUDIT_ARCH, Target::Skip(1), Target::Next);
    asm.ret(KILL);
    asm.ld(NR);
    if let Some(bit) = X32_BIT {
        asm.jump(JGE_K, bit, Target::Next, Target::Skip(1));
        asm.ret(KILL);
    }
    let calls: Vec<(&u32, &Vec<Rule>)> = policy.rules.iter().collect();
    search(&mut asm, &calls);
    asm.finish()
}

/// Code for the calls in `calls` (sorted); the accumulator holds the call's number.
fn search(asm: &mut Asm, calls: &[(&u32, &Vec<Rule>)]) {
    if calls.len() <= LINEAR {
        for (nr, rules) in calls {
            let skip = Label::new(asm);
            asm.jump(JEQ_K, **nr, Target::Next, Target::Label(skip));
            body(asm, rules);
            asm.place(skip);
        }
        asm.ret(ALLOW);
        return;
    }
    let mid = calls.len() / 2;
    let right = Label::new(asm);
    asm.jump(JGE_K, *calls[mid].0, Target::Next, Target::Skip(1));
    asm.ja(right);
    search(asm, &calls[..mid]);
    asm.place(right);
    search(asm, &calls[mid..]);
}

/// One call's rules, then ALLOW.
fn body(asm: &mut Asm, rules: &[Rule]) {
    for rule in rules {
        let next_rule = Label::new(asm);
        for cond in &rule.when {
            match *cond {
                Cond::Low32Eq { arg, value } => {
                    asm.ld(arg_low(arg));
                    asm.jump(JEQ_K, value, Target::Next, Target::Label(next_rule));
                }
                Cond::Low32Ne { arg, value } => {
                    asm.ld(arg_low(arg));
                    asm.jump(JEQ_K, value, Target::Label(next_rule), Target::Next);
                }
                Cond::AnyBit { arg, mask } => {
                    // Low word has one of the bits: holds; else the high word decides.
                    let holds = Label::new(asm);
                    asm.ld(arg_low(arg));
                    asm.jump(JSET_K, mask as u32, Target::Label(holds), Target::Next);
                    asm.ld(arg_high(arg));
                    asm.jump(
                        JSET_K,
                        (mask >> 32) as u32,
                        Target::Next,
                        Target::Label(next_rule),
                    );
                    asm.place(holds);
                }
            }
        }
        asm.ret(rule.action);
        asm.place(next_rule);
    }
    asm.ret(ALLOW);
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
pub mod tests {
    use super::*;

    /// The kernel's classic BPF semantics, for the instructions we emit.
    pub fn run(prog: &[sock_filter], data: &[u8; 64]) -> u32 {
        let word = |off: u32| {
            let o = off as usize;
            u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]])
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = prog[pc].clone();
            pc += 1;
            let cond = |hit: bool| {
                if hit {
                    usize::from(i.jt)
                } else {
                    usize::from(i.jf)
                }
            };
            match i.code {
                LD_W_ABS => acc = word(i.k),
                JEQ_K => pc += cond(acc == i.k),
                JGE_K => pc += cond(acc >= i.k),
                JSET_K => pc += cond(acc & i.k != 0),
                JA => pc += i.k as usize,
                RET_K => return i.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    pub fn data(arch: u32, nr: u32, args: [u64; 6]) -> [u8; 64] {
        let mut d = [0u8; 64];
        d[0..4].copy_from_slice(&nr.to_le_bytes());
        d[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            d[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        d
    }

    /// What the policy says, read directly.
    fn expected(policy: &Policy, nr: u32, args: [u64; 6]) -> u32 {
        let Some(rules) = policy.rules.get(&nr) else {
            return ALLOW;
        };
        for rule in rules {
            let holds = rule.when.iter().all(|c| match *c {
                Cond::Low32Eq { arg, value } => args[usize::from(arg)] as u32 == value,
                Cond::Low32Ne { arg, value } => args[usize::from(arg)] as u32 != value,
                Cond::AnyBit { arg, mask } => args[usize::from(arg)] & mask != 0,
            });
            if holds {
                return rule.action;
            }
        }
        ALLOW
    }

    fn sample_policy() -> Policy {
        let mut p = Policy::default();
        // Many unconditional denials, spread out, to force a deep search tree.
        for nr in (3..400).step_by(5) {
            p.rules.insert(
                nr,
                vec![Rule {
                    when: vec![],
                    action: errno(libc::EPERM),
                }],
            );
        }
        p.rules.insert(
            56,
            vec![Rule {
                when: vec![Cond::AnyBit {
                    arg: 0,
                    mask: 0x7e02_0000 | (1 << 40),
                }],
                action: errno(libc::EPERM),
            }],
        );
        p.rules.insert(
            16,
            vec![
                Rule {
                    when: vec![Cond::Low32Eq {
                        arg: 1,
                        value: 0x5412,
                    }],
                    action: errno(1),
                },
                Rule {
                    when: vec![Cond::Low32Eq {
                        arg: 1,
                        value: 0x541c,
                    }],
                    action: errno(2),
                },
            ],
        );
        p.rules.insert(
            135,
            vec![Rule {
                when: vec![
                    Cond::Low32Ne { arg: 0, value: 0 },
                    Cond::Low32Ne { arg: 0, value: 8 },
                ],
                action: errno(3),
            }],
        );
        p.rules.insert(
            435,
            vec![Rule {
                when: vec![],
                action: errno(libc::ENOSYS),
            }],
        );
        p
    }

    #[test]
    fn every_call_gets_what_the_policy_says() {
        let policy = sample_policy();
        let prog = compile(&policy).unwrap();
        let arg_values = [
            0u64,
            8,
            0x5412,
            0x541c,
            0xdead_beef_0000_5412,
            0x2_0000,
            1 << 40,
            1 << 30,
        ];
        for nr in 0..500u32 {
            for &a in &arg_values {
                for args in [[a, 0, 0, 0, 0, 0], [0, a, 0, 0, 0, 0]] {
                    assert_eq!(
                        run(&prog, &data(AUDIT_ARCH, nr, args)),
                        expected(&policy, nr, args),
                        "nr {nr} args {args:x?}"
                    );
                }
            }
        }
    }

    #[test]
    fn foreign_architectures_and_x32_are_killed() {
        let prog = compile(&sample_policy()).unwrap();
        assert_eq!(run(&prog, &data(0x4000_0003, 1, [0; 6])), KILL);
        if let Some(bit) = X32_BIT {
            assert_eq!(run(&prog, &data(AUDIT_ARCH, bit | 1, [0; 6])), KILL);
        }
    }

    #[test]
    fn an_empty_policy_allows_everything() {
        let prog = compile(&Policy::default()).unwrap();
        assert_eq!(run(&prog, &data(AUDIT_ARCH, 1, [0; 6])), ALLOW);
    }
}
