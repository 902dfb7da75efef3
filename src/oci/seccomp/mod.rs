//! The runtime-spec's seccomp profile (`linux.seccomp` in config.json), compiled by sbx's
//! own BPF compiler (`security::bpf`) with the meaning runc gives it through libseccomp:
//!
//! - each name of an entry is a rule of its own; a name this architecture does not have
//!   is skipped; an entry whose action is the default action is skipped (libseccomp
//!   refuses such rules, runc leaves them out);
//! - the conditions of an entry are ANDed, unless two of them test the same argument:
//!   then each condition is a rule of its own, ORed (runc's fallback, as libseccomp
//!   allows one comparison per argument and rule); entries for one call are ORed;
//! - comparisons are unsigned on the whole 64-bit argument (the low 32 bits on 32-bit
//!   ABIs), `SCMP_CMP_MASKED_EQ` is `arg & value == valueTwo & value`;
//! - a call with an entry without conditions gets the first such entry's action, and its
//!   conditional entries are dropped (libseccomp's rule database does the same);
//! - when conditional entries with different actions all match one call, libseccomp's
//!   outcome follows the shape of its decision tree (the entry whose first test is on the
//!   higher argument wins, whatever the actions). sbx takes the most restrictive action
//!   (the kernel's order: kill process, kill thread, trap, errno, trace, log, allow), so
//!   it is never more permissive than an entry that matches. Entries with the same
//!   conditions and different actions are refused, as libseccomp refuses them;
//! - with a default action that denies, calls numbered above every call the profile
//!   names fail with ENOSYS (runc's patch for calls newer than the profile).
//!
//! `SCMP_ACT_NOTIFY` (a seccomp agent on `listenerPath`) is refused.

mod arch;

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction as Action, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator as Op,
};
use seccompiler::BpfProgram;

pub use self::arch::Abi;
use crate::security::bpf::{self, CmpOp, Cond, Filter, Policy, Rule, Section};

const RET_KILL_THREAD: u32 = libc::SECCOMP_RET_KILL_THREAD;
const RET_TRAP: u32 = libc::SECCOMP_RET_TRAP;
const RET_TRACE: u32 = libc::SECCOMP_RET_TRACE;
const RET_LOG: u32 = libc::SECCOMP_RET_LOG;
/// The largest errno the kernel passes on (MAX_ERRNO).
const MAX_ERRNO: u32 = 4095;

/// The BPF program for `spec`, with a section for each architecture it lists that this
/// machine runs; calls of any other architecture kill the process.
pub fn compile(spec: &LinuxSeccomp) -> Result<BpfProgram> {
    let default = action(
        spec.default_action(),
        spec.default_errno_ret(),
        "defaultAction",
    )?;
    let entries = entries(spec)?;
    let mut sections = Vec::new();
    for abi in arch::abis(spec.architectures().as_ref())? {
        sections.push(Section {
            arch: abi.audit_arch(),
            x32: abi == Abi::X32,
            wide: abi.wide(),
            policy: policy(abi, default, &entries)?,
        });
    }
    bpf::compile_filter(&Filter {
        sections,
        bad_arch: bpf::KILL,
    })
    .context("compile linux.seccomp")
}

/// The `SECCOMP_FILTER_FLAG_*` bits for `spec.flags`.
pub fn flags(spec: &LinuxSeccomp) -> Result<u32> {
    flag_bits(spec.flags().as_deref().unwrap_or_default())
}

fn flag_bits(flags: &[LinuxSeccompFilterFlag]) -> Result<u32> {
    let mut bits = 0;
    for flag in flags {
        bits |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => bail!(
                "linux.seccomp.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV applies to \
                 seccomp agents (SCMP_ACT_NOTIFY), which sbx-oci does not support; remove it"
            ),
        } as u32;
    }
    Ok(bits)
}

/// The actions `compile` takes: all but `SCMP_ACT_NOTIFY`.
const ACTIONS: &[Action] = &[
    Action::ScmpActAllow,
    Action::ScmpActErrno,
    Action::ScmpActKill,
    Action::ScmpActKillProcess,
    Action::ScmpActKillThread,
    Action::ScmpActLog,
    Action::ScmpActTrace,
    Action::ScmpActTrap,
];

const OPERATORS: &[Op] = &[
    Op::ScmpCmpEq,
    Op::ScmpCmpGe,
    Op::ScmpCmpGt,
    Op::ScmpCmpLe,
    Op::ScmpCmpLt,
    Op::ScmpCmpMaskedEq,
    Op::ScmpCmpNe,
];

/// The flags `flags` knows; the last is refused (it serves seccomp agents).
const KNOWN_FLAGS: &[LinuxSeccompFilterFlag] = &[
    LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
    LinuxSeccompFilterFlag::SeccompFilterFlagLog,
    LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
    LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
];

/// What `sbx-oci features` says under `linux.seccomp` (runtime-spec features.md): the
/// actions, operators, architectures and flags a profile may use. The kernels sbx runs
/// on (5.12 and later, for the new mount API) have every action and supported flag
/// (TSYNC since 3.17, LOG and KILL_PROCESS since 4.14, SPEC_ALLOW since 4.17).
pub fn features() -> serde_json::Value {
    let supported: Vec<_> = KNOWN_FLAGS
        .iter()
        .filter(|f| flag_bits(std::slice::from_ref(*f)).is_ok())
        .collect();
    serde_json::json!({
        "enabled": true,
        "actions": ACTIONS,
        "operators": OPERATORS,
        "archs": arch::runnable(),
        "knownFlags": KNOWN_FLAGS,
        "supportedFlags": supported,
    })
}

/// Installs `program` on the calling thread (all threads with TSYNC in `flags`). Unlike
/// `security::seccomp::apply` it does not set no_new_privs: the config decides that
/// (`process.noNewPrivileges`); without it the caller needs CAP_SYS_ADMIN in its user
/// namespace.
pub fn install(program: &BpfProgram, flags: u32) -> Result<()> {
    crate::security::seccomp::install(program, flags)
}

/// One entry of `syscalls`, its conditions split as runc splits them.
struct Entry<'a> {
    names: &'a [String],
    action: u32,
    /// ORed; each ANDs its conditions. Empty: the entry has no conditions.
    alternatives: Vec<Vec<Cond>>,
}

fn entries(spec: &LinuxSeccomp) -> Result<Vec<Entry<'_>>> {
    if spec.default_action() == Action::ScmpActNotify
        || spec
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == Action::ScmpActNotify)
    {
        bail!(
            "linux.seccomp: SCMP_ACT_NOTIFY hands calls to a seccomp agent on listenerPath, \
             which sbx-oci does not support; use another action"
        );
    }
    let mut out = Vec::new();
    for (i, call) in spec.syscalls().iter().flatten().enumerate() {
        let what = format!("linux.seccomp.syscalls[{i}]");
        if call.names().iter().any(String::is_empty) {
            bail!("{what}: an empty system call name");
        }
        let action = action(call.action(), call.errno_ret(), &what)?;
        let args = call.args().as_deref().unwrap_or_default();
        let conds = args
            .iter()
            .map(|a| condition(a, &what))
            .collect::<Result<Vec<_>>>()?;
        let mut seen = [false; 6];
        let shared = args
            .iter()
            .any(|a| std::mem::replace(&mut seen[a.index()], true));
        let alternatives = match (conds.is_empty(), shared) {
            (true, _) => vec![],
            (false, true) => conds.into_iter().map(|c| vec![c]).collect(),
            (false, false) => vec![conds],
        };
        out.push(Entry {
            names: call.names(),
            action,
            alternatives,
        });
    }
    Ok(out)
}

/// The action's SECCOMP_RET_* value.
fn action(action: Action, errno_ret: Option<u32>, what: &str) -> Result<u32> {
    if errno_ret.is_some() && !matches!(action, Action::ScmpActErrno | Action::ScmpActTrace) {
        bail!("{what}: an errno return code needs SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {action}");
    }
    let data = errno_ret.unwrap_or(libc::EPERM as u32);
    Ok(match action {
        Action::ScmpActKill | Action::ScmpActKillThread => RET_KILL_THREAD,
        Action::ScmpActKillProcess => bpf::KILL,
        Action::ScmpActTrap => RET_TRAP,
        Action::ScmpActErrno if data <= MAX_ERRNO => bpf::errno(data as i32),
        Action::ScmpActErrno => bail!("{what}: errno {data} is above {MAX_ERRNO}"),
        Action::ScmpActTrace if data <= 0xffff => RET_TRACE | data,
        Action::ScmpActTrace => bail!("{what}: the SCMP_ACT_TRACE value {data} is above 65535"),
        Action::ScmpActLog => RET_LOG,
        Action::ScmpActAllow => bpf::ALLOW,
        Action::ScmpActNotify => bail!("{what}: SCMP_ACT_NOTIFY is not supported"),
    })
}

fn condition(arg: &LinuxSeccompArg, what: &str) -> Result<Cond> {
    let index = arg.index();
    if index > 5 {
        bail!("{what}: argument index {index}: system calls have arguments 0 to 5");
    }
    let (op, value) = match arg.op() {
        Op::ScmpCmpEq => (CmpOp::Eq, arg.value()),
        Op::ScmpCmpNe => (CmpOp::Ne, arg.value()),
        Op::ScmpCmpLt => (CmpOp::Lt, arg.value()),
        Op::ScmpCmpLe => (CmpOp::Le, arg.value()),
        Op::ScmpCmpGt => (CmpOp::Gt, arg.value()),
        Op::ScmpCmpGe => (CmpOp::Ge, arg.value()),
        // libseccomp's order: the mask first, then the value.
        Op::ScmpCmpMaskedEq => (CmpOp::MaskedEq(arg.value()), arg.value_two().unwrap_or(0)),
    };
    Ok(Cond::Cmp {
        arg: index as u8,
        op,
        value,
    })
}

/// What one call has collected.
#[derive(Default)]
struct Call {
    unconditional: Option<u32>,
    conditional: Vec<Rule>,
}

/// The rules for one ABI's numbers.
fn policy(abi: Abi, default: u32, entries: &[Entry]) -> Result<Policy> {
    let mut calls: BTreeMap<u32, Call> = BTreeMap::new();
    let mut last = None;
    for entry in entries {
        for name in entry.names {
            let Some(nr) = abi.number(name) else {
                continue;
            };
            last = last.max(Some(nr));
            if entry.action == default {
                continue;
            }
            let call = calls.entry(nr).or_default();
            if entry.alternatives.is_empty() {
                call.unconditional.get_or_insert(entry.action);
            }
            for when in &entry.alternatives {
                let rule = Rule {
                    when: when.clone(),
                    action: entry.action,
                };
                if let Some(other) = call.conditional.iter().find(|r| same_conditions(r, &rule)) {
                    if other.action != rule.action {
                        bail!(
                            "linux.seccomp: {name} has two entries with the same conditions and \
                             different actions ({:#x} and {:#x}); libseccomp refuses this too",
                            other.action,
                            rule.action
                        );
                    }
                    continue;
                }
                call.conditional.push(rule);
            }
        }
    }
    let mut policy = Policy {
        default,
        ..Policy::default()
    };
    if !allows(default) {
        policy.enosys_above = last;
    } else if abi == Abi::I386 {
        multiplexers(&mut calls, default);
    }
    for (nr, call) in calls {
        let rules = match call.unconditional {
            Some(action) => vec![Rule {
                when: vec![],
                action,
            }],
            None => {
                let mut rules = call.conditional;
                rules.sort_by_key(|r| precedence(r.action));
                rules
            }
        };
        policy.rules.insert(nr, rules);
    }
    Ok(policy)
}

fn same_conditions(a: &Rule, b: &Rule) -> bool {
    let key = |r: &Rule| {
        let mut v: Vec<String> = r.when.iter().map(|c| format!("{c:?}")).collect();
        v.sort();
        v
    };
    key(a) == key(b)
}

/// The kernel's order of actions: lower is more restrictive.
fn precedence(action: u32) -> i32 {
    (action & libc::SECCOMP_RET_ACTION_FULL) as i32
}

/// Actions runc counts as letting calls through (no ENOSYS patch for them).
fn allows(action: u32) -> bool {
    matches!(
        action & libc::SECCOMP_RET_ACTION_FULL,
        libc::SECCOMP_RET_ALLOW | RET_LOG | RET_TRACE
    )
}

/// i386 reaches the socket and SysV IPC calls also through `socketcall` and `ipc`, whose
/// arguments the filter cannot see. libseccomp rewrites rules into both forms; sbx does
/// not, so where a default that lets calls through would leave the multiplexer open
/// around a rule, the multiplexer fails with ENOSYS (libc then uses the direct calls,
/// which exist since Linux 4.3 and 5.1) unless the profile has a rule for it.
fn multiplexers(calls: &mut BTreeMap<u32, Call>, default: u32) {
    const SOCKET: &[&str] = &[
        "socket",
        "bind",
        "connect",
        "listen",
        "accept",
        "getsockname",
        "getpeername",
        "socketpair",
        "send",
        "recv",
        "sendto",
        "recvfrom",
        "shutdown",
        "setsockopt",
        "getsockopt",
        "sendmsg",
        "recvmsg",
        "accept4",
        "recvmmsg",
        "sendmmsg",
    ];
    const IPC: &[&str] = &[
        "semop",
        "semget",
        "semctl",
        "semtimedop",
        "msgsnd",
        "msgrcv",
        "msgget",
        "msgctl",
        "shmat",
        "shmdt",
        "shmget",
        "shmctl",
    ];
    for (mux, names) in [("socketcall", SOCKET), ("ipc", IPC)] {
        let restricted = names
            .iter()
            .filter_map(|n| Abi::I386.number(n))
            .any(|nr| calls.contains_key(&nr));
        let Some(mux) = Abi::I386.number(mux) else {
            continue;
        };
        if restricted && !calls.contains_key(&mux) && default != bpf::errno(libc::ENOSYS) {
            calls.entry(mux).or_default().unconditional = Some(bpf::errno(libc::ENOSYS));
        }
    }
}

#[cfg(test)]
mod tests;
