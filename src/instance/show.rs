//! What `sbx ps`, `sbx inspect` and `sbx logs` show: read-only views of named sandboxes.

use std::io::{IsTerminal, Read, Seek, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::cmd::{find, load_state};
use super::state::{Liveness, Record, State};
use super::termsafe::TerminalSafe;
use super::{read_json, Dirs, LOG, RECORD};
use crate::cli::{InspectArgs, LogsArgs, PsArgs};

/// `sbx ps [-a] [--json]`.
pub fn ps(args: &PsArgs) -> Result<i32> {
    let dirs = Dirs::from_env()?;
    let mut rows = Vec::new();
    for name in dirs.names()? {
        let paths = dirs.paths(&name);
        let record = match read_json::<Record>(&paths.data.join(RECORD)) {
            Ok(record) => record,
            Err(e) => {
                // A record cut short (a full disk, a crash) still shows, so that it can be
                // found and removed; only -a lists it, since it cannot be running.
                if args.all {
                    eprintln!("sbx: warning: sandbox {name}: {e:#}; `sbx rm -f {name}` removes it");
                    rows.push(broken(&name));
                }
                continue;
            }
        };
        let state = load_state(&paths);
        let live = state.as_ref().map(State::liveness);
        if !args.all && live != Some(Liveness::Running) {
            continue;
        }
        rows.push(summary(&record, state.as_ref()));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    let mut out = String::from("NAME\tSTATE\tPID\tPROFILE\tCOMMAND\tSTARTED\tEXIT\n");
    for r in &rows {
        let field = |k: &str| match &r[k] {
            serde_json::Value::Null => "-".to_string(),
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let started = r["started"].as_u64().map_or("-".into(), format_time);
        out += &format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            field("name"),
            field("state"),
            field("pid"),
            field("profile"),
            shorten(&field("command"), 40),
            started,
            field("exit_code"),
        );
    }
    print!("{}", align(&out));
    Ok(0)
}

/// A sandbox whose record cannot be read.
fn broken(name: &str) -> serde_json::Value {
    json!({
        "name": name,
        "state": "broken",
        "pid": null,
        "profile": null,
        "command": null,
        "created": null,
        "started": null,
        "exit_code": null,
    })
}

fn summary(record: &Record, state: Option<&State>) -> serde_json::Value {
    let live = state.map(State::liveness);
    let running = live == Some(Liveness::Running);
    json!({
        "name": record.name,
        "state": match live {
            Some(Liveness::Running) => "running",
            Some(Liveness::Exited) | Some(Liveness::Vanished) => "exited",
            None => "created",
        },
        "pid": if running { state.map(|s| s.pid) } else { None },
        "profile": record.profile,
        "command": record.overrides.command.join(" "),
        "created": record.created,
        "started": state.map(|s| s.started),
        "exit_code": if running { None } else { state.and_then(|s| s.exit_code) },
    })
}

/// `sbx inspect NAME`.
pub fn inspect(args: &InspectArgs) -> Result<i32> {
    let dirs = Dirs::from_env()?;
    let (paths, record) = find(&dirs, &args.name)?;
    let state = load_state(&paths);
    let mut out = summary(&record, state.as_ref());
    let running = out["state"] == "running";
    let plan = record_plan(&record);
    out["profile_origin"] = json!(record.profile_origin);
    out["resolved_profile"] = serde_json::to_value(&record.resolved)?;
    out["argv"] = json!(record.overrides.command);
    if let Some(s) = &state {
        out["finished"] = json!(s.finished);
        out["signal"] = json!(s.signal);
        out["namespaces"] = json!(s.namespaces);
        if let Some(t) = &s.tracking {
            out["detached"] = json!(t.detached);
            out["cgroup"] = json!(t.cgroup);
            if running {
                out["supervisor_pid"] = json!(t.supervisor.pid);
                out["command_pid"] = json!(s.command_pid);
            }
        }
        if s.liveness() == Liveness::Vanished {
            out["note"] = json!("its processes ended without sbx recording how");
        }
    }
    match plan {
        Ok(plan) => {
            out["hostname"] = json!(plan.hostname);
            out["workdir"] = json!(plan.workdir);
            out["rootfs"] = json!(format!("{:?}", plan.rootfs));
            out["mounts"] = plan.mounts.iter().map(mount_json).collect();
            out["network"] = json!(crate::network::describe(&plan.network));
        }
        Err(e) => out["plan_error"] = json!(format!("{e:#}")),
    }
    out["data_dir"] = json!(paths.data);
    out["runtime_dir"] = json!(paths.runtime);
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}

/// The Plan the record builds today (read only: nothing is prepared for it).
fn record_plan(record: &super::state::Record) -> Result<crate::plan::Plan> {
    let host = super::host_facts(&record.overrides)?;
    let (loaded, caller) = (record.loaded(), record.caller(false));
    let plan = crate::planner::build(&crate::planner::Request {
        loaded: &loaded,
        overrides: &record.overrides,
        caller: &caller,
        host: &host,
        instance: None,
    })?;
    if let Some(warning) = crate::planner::limits::not_enforced_warning(&plan.limits) {
        eprintln!("sbx: warning: {warning}");
    }
    Ok(plan)
}

fn mount_json(m: &crate::plan::Mount) -> serde_json::Value {
    match m {
        crate::plan::Mount::Bind {
            source,
            destination,
            readonly,
            noexec,
            ..
        } => json!({"type": "bind", "source": source, "destination": destination,
                    "readonly": readonly, "noexec": noexec}),
        crate::plan::Mount::Tmpfs {
            destination,
            size,
            readonly,
            noexec,
            ..
        } => json!({"type": "tmpfs", "destination": destination, "size": size,
                    "readonly": readonly, "noexec": noexec}),
    }
}

/// `sbx logs [-f] NAME`.
pub fn logs(args: &LogsArgs) -> Result<i32> {
    let dirs = Dirs::from_env()?;
    let (paths, record) = find(&dirs, &args.name)?;
    let log = paths.data.join(LOG);
    if !log.exists() {
        if record.detached || load_state(&paths).is_none() {
            return Ok(0);
        }
        bail!(
            "sandbox {} ran in the foreground: its output went to the terminal that ran it \
             (`sbx run -d` and `sbx start` keep a log)",
            args.name
        );
    }
    // Onto a terminal, the sandbox's escape sequences are shown, not obeyed.
    let tty = std::io::stdout().is_terminal();
    let mut out = TerminalSafe::new(std::io::stdout().lock(), tty);
    if let Ok(old) = std::fs::read(log.with_extension("1")) {
        out.write_all(&old)?;
    }
    let mut file = std::fs::File::open(&log).with_context(|| format!("open {}", log.display()))?;
    std::io::copy(&mut file, &mut out)?;
    out.flush()?;
    if !args.follow {
        out.finish()?;
        return Ok(0);
    }
    // Follow: new bytes as they come, across a rotation, until the sandbox has ended.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let live = load_state(&paths).map(|s| s.liveness()) == Some(Liveness::Running);
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
        }
        out.flush()?;
        let rotated = std::fs::metadata(&log)
            .map(|m| m.len() < file.stream_position().unwrap_or(0))
            .unwrap_or(false);
        if rotated {
            file = std::fs::File::open(&log)?;
            continue;
        }
        if !live {
            out.finish()?;
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// UTC, `YYYY-MM-DD HH:MM:SS`.
fn format_time(secs: u64) -> String {
    let c = crate::clock::civil(i64::try_from(secs).unwrap_or(i64::MAX));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// Tab-separated rows as aligned columns.
fn align(text: &str) -> String {
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let mut widths = Vec::new();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            if widths.len() <= i {
                widths.push(w);
            } else {
                widths[i] = widths[i].max(w);
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out += cell;
            if i < last {
                out += &" ".repeat(widths[i] - cell.chars().count() + 2);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(1_795_671_188), "2026-11-26 05:33:08");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00");
    }

    #[test]
    fn columns_align() {
        assert_eq!(align("A\tBB\nccc\td\n"), "A    BB\nccc  d\n");
    }
}
