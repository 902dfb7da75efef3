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
            AND_K => acc &= i.k,
            JEQ_K => pc += cond(acc == i.k),
            JGT_K => pc += cond(acc > i.k),
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
            Cond::Cmp { arg, op, value } => holds(op, args[usize::from(arg)], value),
        });
        if holds {
            return rule.action;
        }
    }
    policy.default
}

/// libseccomp's meaning of each operator, on 64 bits.
fn holds(op: CmpOp, arg: u64, value: u64) -> bool {
    match op {
        CmpOp::Eq => arg == value,
        CmpOp::Ne => arg != value,
        CmpOp::Lt => arg < value,
        CmpOp::Le => arg <= value,
        CmpOp::Gt => arg > value,
        CmpOp::Ge => arg >= value,
        CmpOp::MaskedEq(mask) => arg & mask == value & mask,
    }
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

/// Values at the edges of both words, and negative numbers as the kernel sees them.
const EDGES: [u64; 14] = [
    0,
    1,
    5,
    0x7fff_ffff,
    0x8000_0000,
    u32::MAX as u64 - 1,
    u32::MAX as u64,
    1 << 32,
    (1 << 32) + 5,
    0x1_ffff_ffff,
    0x8000_0000_0000_0000,
    -2i64 as u64,
    -1i64 as u64,
    0xdead_beef_0000_0005,
];

const OPS: [CmpOp; 8] = [
    CmpOp::Eq,
    CmpOp::Ne,
    CmpOp::Lt,
    CmpOp::Le,
    CmpOp::Gt,
    CmpOp::Ge,
    CmpOp::MaskedEq(0xff),
    CmpOp::MaskedEq(0xffff_0000_0000_00f0),
];

/// Every operator against every edge value, both ways round, on the whole 64 bits.
#[test]
fn comparisons_are_on_the_whole_64_bit_argument() {
    for op in OPS {
        for value in EDGES {
            let mut policy = Policy {
                default: errno(99),
                ..Policy::default()
            };
            let rule = |arg| Rule {
                when: vec![Cond::Cmp { arg, op, value }],
                action: errno(1),
            };
            policy.rules.insert(7, vec![rule(0)]);
            policy.rules.insert(8, vec![rule(5)]);
            let prog = compile(&policy).unwrap();
            for arg in EDGES {
                let want = if holds(op, arg, value) {
                    errno(1)
                } else {
                    errno(99)
                };
                let mut args = [0u64; 6];
                args[0] = arg;
                assert_eq!(
                    run(&prog, &data(AUDIT_ARCH, 7, args)),
                    want,
                    "{arg:#x} {op:?} {value:#x}"
                );
                args = [0, 0, 0, 0, 0, arg];
                assert_eq!(run(&prog, &data(AUDIT_ARCH, 8, args)), want);
                assert_eq!(policy.rules[&8][0], rule(5));
            }
        }
    }
}

/// 32-bit ABIs: libseccomp compares the low words, with the value cut to 32 bits.
#[test]
fn narrow_sections_compare_the_low_word() {
    const I386: u32 = 0x4000_0003;
    for op in OPS {
        for value in EDGES {
            let mut policy = Policy::default();
            policy.rules.insert(
                1,
                vec![Rule {
                    when: vec![Cond::Cmp { arg: 1, op, value }],
                    action: errno(1),
                }],
            );
            let filter = Filter {
                sections: vec![Section {
                    arch: I386,
                    x32: false,
                    wide: false,
                    policy,
                }],
                bad_arch: KILL,
            };
            let prog = compile_filter(&filter).unwrap();
            for arg in EDGES.map(|a| a & 0xffff_ffff) {
                let op32 = match op {
                    CmpOp::MaskedEq(m) => CmpOp::MaskedEq(m & 0xffff_ffff),
                    other => other,
                };
                let want = holds(op32, arg, value & 0xffff_ffff);
                let got = run(&prog, &data(I386, 1, [0, arg, 0, 0, 0, 0]));
                assert_eq!(got == errno(1), want, "{arg:#x} {op:?} {value:#x}");
            }
        }
    }
}

#[test]
fn the_default_action_and_enosys_above_the_last_call() {
    let mut policy = Policy {
        default: libc::SECCOMP_RET_TRAP,
        enosys_above: Some(300),
        ..Policy::default()
    };
    policy.rules.insert(
        2,
        vec![Rule {
            when: vec![],
            action: ALLOW,
        }],
    );
    let prog = compile(&policy).unwrap();
    let at = |nr| run(&prog, &data(AUDIT_ARCH, nr, [0; 6]));
    assert_eq!(at(2), ALLOW);
    assert_eq!(at(3), libc::SECCOMP_RET_TRAP);
    assert_eq!(at(300), libc::SECCOMP_RET_TRAP);
    assert_eq!(at(301), errno(libc::ENOSYS));
}

/// Each architecture's calls meet their own section; unlisted ones, and x32 without
/// a section of its own, get `bad_arch`.
#[test]
fn sections_per_architecture() {
    let only = |nr: u32, action: u32| {
        let mut p = Policy {
            default: errno(99),
            ..Policy::default()
        };
        p.rules.insert(
            nr,
            vec![Rule {
                when: vec![],
                action,
            }],
        );
        p
    };
    let mut sections = vec![
        Section {
            arch: AUDIT_ARCH,
            x32: false,
            wide: true,
            policy: only(1, errno(1)),
        },
        Section {
            arch: 0x4000_0003,
            x32: false,
            wide: false,
            policy: only(1, errno(2)),
        },
    ];
    let prog = compile_filter(&Filter {
        sections: sections.clone(),
        bad_arch: libc::SECCOMP_RET_KILL_THREAD,
    })
    .unwrap();
    assert_eq!(run(&prog, &data(AUDIT_ARCH, 1, [0; 6])), errno(1));
    assert_eq!(run(&prog, &data(AUDIT_ARCH, 2, [0; 6])), errno(99));
    assert_eq!(run(&prog, &data(0x4000_0003, 1, [0; 6])), errno(2));
    assert_eq!(run(&prog, &data(0x4000_0003, 2, [0; 6])), errno(99));
    assert_eq!(run(&prog, &data(0xc000_00b6, 1, [0; 6])), 0);
    let Some(bit) = X32_BIT else { return };
    assert_eq!(run(&prog, &data(AUDIT_ARCH, bit | 1, [0; 6])), 0);
    sections.push(Section {
        arch: AUDIT_ARCH,
        x32: true,
        wide: true,
        policy: only(bit | 1, errno(3)),
    });
    let prog = compile_filter(&Filter {
        sections,
        bad_arch: KILL,
    })
    .unwrap();
    assert_eq!(run(&prog, &data(AUDIT_ARCH, bit | 1, [0; 6])), errno(3));
    assert_eq!(run(&prog, &data(AUDIT_ARCH, bit | 2, [0; 6])), errno(99));
    assert_eq!(run(&prog, &data(AUDIT_ARCH, 1, [0; 6])), errno(1));
}

/// A call with more rules than a conditional jump can cross.
#[test]
fn long_bodies_compile() {
    let mut policy = Policy::default();
    for nr in [3, 4, 5] {
        let rules = (0..100)
            .map(|v| Rule {
                when: vec![Cond::Cmp {
                    arg: 0,
                    op: CmpOp::Eq,
                    value: v,
                }],
                action: errno(1),
            })
            .collect();
        policy.rules.insert(nr, rules);
    }
    let prog = compile(&policy).unwrap();
    for nr in 2..7 {
        for arg in [0, 99, 100] {
            let args = [arg, 0, 0, 0, 0, 0];
            assert_eq!(
                run(&prog, &data(AUDIT_ARCH, nr, args)),
                expected(&policy, nr, args)
            );
        }
    }
}
