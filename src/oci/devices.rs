//! `linux.resources.devices` as cgroup v2 enforces them: a BPF_PROG_TYPE_CGROUP_DEVICE
//! program attached to the container's leaf, which the kernel asks at every mknod, open
//! of a device node and so on. Only a process privileged in the initial user namespace
//! may load and attach one: sbx-oci as root, under containerd or rootful podman.
//!
//! The rules are runc's: the config's, then runc's own defaults (mknod of any device, and
//! null, zero, full, random, urandom, tty, console, ptmx, pts and tun in full), then each
//! of `linux.devices`; the last rule that matches a request decides, and none matching
//! means denied. `program` is pure; `attach` loads and attaches it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

/// One rule, as the program tests it: None is any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    /// BPF_DEVCG_DEV_BLOCK (1) or BPF_DEVCG_DEV_CHAR (2); None for `a`.
    pub kind: Option<u32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// BPF_DEVCG_ACC_MKNOD (1) | READ (2) | WRITE (4).
    pub access: u32,
}

const BLOCK: u32 = 1;
const CHAR: u32 = 2;
const ALL: u32 = 7;

fn access_bits(access: Option<&str>) -> u32 {
    let Some(access) = access.filter(|a| !a.is_empty()) else {
        return ALL;
    };
    access.chars().fold(0, |bits, c| {
        bits | match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => 0,
        }
    })
}

fn number(n: Option<i64>) -> Option<u32> {
    n.filter(|n| *n >= 0).and_then(|n| u32::try_from(n).ok())
}

/// The rules in the order they apply: config, runc's defaults, `linux.devices`.
pub fn rules(config: &[LinuxDeviceCgroup], devices: &[LinuxDevice]) -> Vec<Rule> {
    let mut out: Vec<Rule> = config
        .iter()
        .map(|r| Rule {
            allow: r.allow(),
            kind: match r.typ() {
                Some(LinuxDeviceType::B) => Some(BLOCK),
                Some(LinuxDeviceType::C | LinuxDeviceType::U) => Some(CHAR),
                _ => None,
            },
            major: number(r.major()),
            minor: number(r.minor()),
            access: access_bits(r.access().as_deref()),
        })
        .collect();
    let allow = |kind, major, minor, access| Rule {
        allow: true,
        kind: Some(kind),
        major,
        minor,
        access,
    };
    out.push(allow(CHAR, None, None, 1));
    out.push(allow(BLOCK, None, None, 1));
    for (major, minor) in [
        (1, Some(3)),
        (1, Some(8)),
        (1, Some(7)),
        (5, Some(0)),
        (1, Some(5)),
        (1, Some(9)),
        (5, Some(1)),
        (136, None),
        (5, Some(2)),
        (10, Some(200)),
    ] {
        out.push(allow(CHAR, Some(major), minor, ALL));
    }
    for d in devices {
        let kind = if d.typ() == LinuxDeviceType::B {
            BLOCK
        } else {
            CHAR
        };
        out.push(allow(
            kind,
            number(Some(d.major())),
            number(Some(d.minor())),
            ALL,
        ));
    }
    out
}

/// The rules as cgroup v1 takes them: (file, line) to write after `devices.deny` `a`
/// (deny everything, no exceptions), in order. A rule of every type, number and access
/// is the line `a`, which resets the default; one of every type with a number or partial
/// access is that rule for `c` and for `b`.
pub fn v1_lines(rules: &[Rule]) -> Vec<(&'static str, String)> {
    let mut out = vec![("devices.deny", "a".to_string())];
    for r in rules {
        let file = if r.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        let all = r.major.is_none() && r.minor.is_none() && r.access & ALL == ALL;
        let kinds: &[char] = match r.kind {
            None if all => {
                out.push((file, "a".into()));
                continue;
            }
            None => &['c', 'b'],
            Some(BLOCK) => &['b'],
            Some(_) => &['c'],
        };
        let n = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        let access: String = [(2, 'r'), (4, 'w'), (1, 'm')]
            .iter()
            .filter(|(bit, _)| r.access & bit != 0)
            .map(|(_, c)| *c)
            .collect();
        for kind in kinds {
            out.push((
                file,
                format!("{kind} {}:{} {access}", n(r.major), n(r.minor)),
            ));
        }
    }
    out
}

/// One instruction, as `struct bpf_insn` lays it out (little-endian registers nibbles).
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst | (src << 4)) << 8)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

const LDX_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const AND32_K: u8 = 0x54;
const RSH32_K: u8 = 0x74;
const MOV32_X: u8 = 0xbc;
const MOV64_K: u8 = 0xb7;
const JNE_K: u8 = 0x55;
const JEQ_K: u8 = 0x15;
const EXIT: u8 = 0x95;

/// The program: r2 the type, r3 the access asked, r4 the major, r5 the minor; then each
/// rule from the last, returning its verdict at the first that matches; then deny.
pub fn program(rules: &[Rule]) -> Vec<u64> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        // Each test jumps past the rest of the block when it fails.
        let mut tests: Vec<Vec<u64>> = Vec::new();
        if let Some(kind) = rule.kind {
            tests.push(vec![insn(JNE_K, 2, 0, 0, kind as i32)]);
        }
        if rule.access & ALL != ALL {
            // An allow rule matches a request it grants in full; a deny rule one that
            // asks for any access it denies.
            tests.push(if rule.allow {
                vec![
                    insn(MOV32_X, 1, 3, 0, 0),
                    insn(AND32_K, 1, 0, 0, (!rule.access & ALL) as i32),
                    insn(JNE_K, 1, 0, 0, 0),
                ]
            } else {
                vec![
                    insn(MOV32_X, 1, 3, 0, 0),
                    insn(AND32_K, 1, 0, 0, rule.access as i32),
                    insn(JEQ_K, 1, 0, 0, 0),
                ]
            });
        }
        if let Some(major) = rule.major {
            tests.push(vec![insn(JNE_K, 4, 0, 0, major as i32)]);
        }
        if let Some(minor) = rule.minor {
            tests.push(vec![insn(JNE_K, 5, 0, 0, minor as i32)]);
        }
        let verdict = [
            insn(MOV64_K, 0, 0, 0, i32::from(rule.allow)),
            insn(EXIT, 0, 0, 0, 0),
        ];
        if tests.is_empty() {
            // Matches every request: what comes after could never run, and the kernel's
            // verifier refuses unreachable instructions.
            p.extend_from_slice(&verdict);
            return p;
        }
        let mut left: usize = tests.iter().map(Vec::len).sum::<usize>() + verdict.len();
        for test in tests {
            left -= test.len();
            let (jump, rest) = test.split_last().expect("a test ends in its jump");
            p.extend_from_slice(rest);
            // The jump's offset counts from the instruction after it.
            p.push(*jump | (u64::from(left as u16) << 16));
        }
        p.extend_from_slice(&verdict);
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to the fields used; the rest zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    pad: [u64; 8],
}

/// `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    pad: [u32; 7],
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// Loads the rules' program and attaches it to `cgroup` (the leaf, before the container
/// process joins it). It stays attached until the cgroup is removed.
pub fn attach(cgroup: &Path, rules: &[Rule]) -> Result<()> {
    let insns = program(rules);
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 16 * 1024];
    let mut name = [0u8; 16];
    name[..7].copy_from_slice(b"sbx_dev");
    let load = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(insns.len()).context("too many device rules")?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        ..ProgLoad::default()
    };
    // SAFETY: `load` is a valid bpf_attr for BPF_PROG_LOAD whose pointers (instructions,
    // license, log buffer) outlive the call; the kernel writes only into the log buffer,
    // within log_size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &load as *const ProgLoad,
            std::mem::size_of::<ProgLoad>(),
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        let log = String::from_utf8_lossy(&log);
        let log = log.trim_end_matches('\0').trim();
        return Err(e).with_context(|| {
            format!("load the device cgroup program for linux.resources.devices ({log})")
        });
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let dir =
        std::fs::File::open(cgroup).with_context(|| format!("open cgroup {}", cgroup.display()))?;
    let attach = ProgAttach {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..ProgAttach::default()
    };
    // SAFETY: `attach` is a valid bpf_attr for BPF_PROG_ATTACH naming two open descriptors.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attach as *const ProgAttach,
            std::mem::size_of::<ProgAttach>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "attach the device cgroup program for linux.resources.devices to {}",
                cgroup.display()
            )
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
