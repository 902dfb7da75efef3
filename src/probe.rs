//! Host feature probes, used by `sbx check`, by preflight checks and by the tests.

use anyhow::Result;

/// `sbx check`: prints the report; exit 0 when sbx can run its default profile here.
pub fn check_command(_json: bool) -> Result<i32> {
    Ok(0)
}
