//! Errors as runc reports them: on stderr, and appended to `--log` in its format, which
//! conmon and containerd read back (`{"level":"error","msg":"...","time":"..."}`).

use std::io::Write;
use std::path::Path;

use super::cli::LogFormat;

/// One log line in `format`.
pub fn line(format: LogFormat, level: &str, msg: &str, time: &str) -> String {
    match format {
        LogFormat::Json => {
            serde_json::json!({"level": level, "msg": msg, "time": time}).to_string() + "\n"
        }
        LogFormat::Text => format!(
            "time={} level={level} msg={}\n",
            serde_json::Value::from(time),
            serde_json::Value::from(msg)
        ),
    }
}

/// Reports `msg` at `level` on stderr and in the log file, if any.
pub fn report(log: Option<&Path>, format: LogFormat, level: &str, msg: &str) {
    eprintln!("sbx-oci: {level}: {msg}");
    let Some(path) = log else {
        return;
    };
    let text = line(format, level, msg, &super::state::now_rfc3339());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Ok(mut file) = file {
        let _ = file.write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_runcs() {
        let json = line(LogFormat::Json, "error", "a \"b\"", "T");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "a \"b\"");
        assert_eq!(v["time"], "T");
        assert_eq!(
            line(LogFormat::Text, "error", "no such thing", "T"),
            "time=\"T\" level=error msg=\"no such thing\"\n"
        );
    }
}
