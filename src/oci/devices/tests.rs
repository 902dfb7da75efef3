use super::*;
use oci_spec::runtime::LinuxDeviceCgroupBuilder;

/// Runs the program as the kernel would on one request: the few instructions it uses.
fn verdict(p: &[u64], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
    let ctx = [(access << 16) | kind, major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0usize;
    loop {
        let i = p[pc];
        let (code, dst, src) = (
            i as u8,
            ((i >> 8) & 0xf) as usize,
            ((i >> 12) & 0xf) as usize,
        );
        let off = (i >> 16) as u16 as i16;
        let imm = (i >> 32) as u32;
        pc += 1;
        match code {
            LDX_W => {
                assert_eq!(src, 1, "loads only from the context");
                r[dst] = u64::from(ctx[off as usize / 4]);
            }
            AND32_K => r[dst] = u64::from(r[dst] as u32 & imm),
            RSH32_K => r[dst] = u64::from((r[dst] as u32) >> imm),
            MOV32_X => r[dst] = u64::from(r[src] as u32),
            MOV64_K => r[dst] = u64::from(imm),
            JNE_K | JEQ_K => {
                if (r[dst] != u64::from(imm)) == (code == JNE_K) {
                    pc = (pc as i64 + i64::from(off)) as usize;
                }
            }
            EXIT => return r[0],
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
}

fn rule(
    allow: bool,
    kind: Option<u32>,
    major: Option<u32>,
    minor: Option<u32>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut value = serde_json::json!({"allow": allow, "access": access});
    if let Some(k) = kind {
        value["type"] = (if k == BLOCK { "b" } else { "c" }).into();
    }
    if let Some(m) = major {
        value["major"] = m.into();
    }
    if let Some(m) = minor {
        value["minor"] = m.into();
    }
    serde_json::from_value(value).unwrap()
}

#[test]
fn the_engines_rules_allow_their_devices_and_deny_the_rest() {
    // containerd's: deny all, then null and the pts range.
    let config = [
        rule(false, None, None, None, "rwm"),
        rule(true, Some(CHAR), Some(1), Some(3), "rwm"),
        rule(true, Some(CHAR), Some(136), None, "rw"),
    ];
    let p = program(&rules(&config, &[]));
    let (m, r, w) = (1, 2, 4);
    assert_eq!(verdict(&p, CHAR, r | w, 1, 3), 1, "/dev/null");
    assert_eq!(verdict(&p, CHAR, r, 136, 7), 1, "a pts");
    assert_eq!(verdict(&p, BLOCK, r, 8, 0), 0, "a disk is not readable");
    assert_eq!(
        verdict(&p, BLOCK, m, 8, 0),
        1,
        "runc's default: mknod of anything"
    );
    assert_eq!(verdict(&p, CHAR, r, 1, 1), 0, "/dev/mem");
    assert_eq!(verdict(&p, CHAR, r | w, 10, 200), 1, "runc's default: tun");
}

#[test]
fn the_last_matching_rule_decides() {
    let config = [
        rule(true, None, None, None, "rwm"),
        rule(false, Some(BLOCK), Some(8), None, "w"),
    ];
    let p = program(&rules(&config, &[]));
    assert_eq!(verdict(&p, BLOCK, 2, 8, 1), 1, "read of a disk: allow-all");
    assert_eq!(verdict(&p, BLOCK, 4, 8, 1), 0, "write: the later deny");
    assert_eq!(
        verdict(&p, BLOCK, 6, 8, 1),
        0,
        "read and write: not all allowed"
    );
    assert_eq!(verdict(&p, CHAR, 4, 4, 1), 1);
    // No rule matches: denied.
    let p = program(&[]);
    assert_eq!(verdict(&p, CHAR, 2, 1, 3), 0);
}

#[test]
fn linux_devices_are_allowed() {
    let device: LinuxDevice = serde_json::from_value(serde_json::json!(
        {"path": "/dev/sdz", "type": "b", "major": 8, "minor": 16}
    ))
    .unwrap();
    let deny = [rule(false, None, None, None, "rwm")];
    let p = program(&rules(&deny, &[device]));
    assert_eq!(verdict(&p, BLOCK, 6, 8, 16), 1);
    assert_eq!(verdict(&p, BLOCK, 6, 8, 17), 0);
}

#[test]
fn nothing_follows_a_rule_that_matches_everything() {
    // The verifier refuses unreachable instructions: a program ends at such a rule.
    let config = [rule(false, None, None, None, "rwm")];
    let p = program(&rules(&config, &[]));
    assert_eq!(p[p.len() - 2], insn(MOV64_K, 0, 0, 0, 0));
    let ends = p.iter().filter(|i| **i == insn(EXIT, 0, 0, 0, 0)).count();
    let tail = program(&rules(&[], &[]));
    let tail_ends = tail
        .iter()
        .filter(|i| **i == insn(EXIT, 0, 0, 0, 0))
        .count();
    assert_eq!(
        ends, tail_ends,
        "the default deny is not added after the deny-all"
    );
}

#[test]
fn v1_lines_deny_all_then_each_rule_in_order() {
    let config = [
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap(),
        LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(10)
            .minor(229)
            .access("mwr")
            .build()
            .unwrap(),
        LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::B)
            .major(8)
            .access("r")
            .build()
            .unwrap(),
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .major(1)
            .minor(5)
            .access("w")
            .build()
            .unwrap(),
    ];
    let lines = v1_lines(&rules(&config, &[]));
    let text: Vec<String> = lines.iter().map(|(f, l)| format!("{f} {l}")).collect();
    assert_eq!(
        text[..7],
        [
            "devices.deny a",
            "devices.deny a",
            "devices.allow c 10:229 rwm",
            "devices.allow b 8:* r",
            "devices.deny c 1:5 w",
            "devices.deny b 1:5 w",
            // runc's defaults follow the config's rules.
            "devices.allow c *:* m",
        ]
    );
}
