//! Host unix sockets: a read-only mount does not stop `connect()` on a pathname socket, so
//! a sandbox that can see one (the session bus, ssh-agent, a database's socket in /run)
//! can talk to the process behind it, whatever its network namespace. The planner lists
//! the pathname sockets bound in the host's network namespace (`/proc/net/unix`); the child
//! covers each one it can still see in the new root with `/dev/null`, except where a bind
//! the profile or command line asked for shows it (the project directory, an explicitly
//! bound agent socket).

use std::path::{Path, PathBuf};

/// Pathname sockets bound in this network namespace: listening ones and bound datagram
/// ones (both take connections or messages). Relative names cannot be placed and are left
/// out; so is everything when /proc/net/unix cannot be read.
pub fn host_sockets() -> Vec<PathBuf> {
    match std::fs::read("/proc/net/unix") {
        Ok(text) => parse(&String::from_utf8_lossy(&text)),
        Err(_) => Vec::new(),
    }
}

/// `Num RefCount Protocol Flags Type St Inode Path`, hexadecimal fields.
fn parse(text: &str) -> Vec<PathBuf> {
    const ACCEPTCON: u32 = 0x0001_0000;
    const SOCK_DGRAM: u32 = 2;
    let mut out: Vec<PathBuf> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
            let kind = u32::from_str_radix(fields.get(4)?, 16).ok()?;
            // A path with spaces spans the remaining fields.
            let path = fields.get(7..)?.join(" ");
            let takes = flags & ACCEPTCON != 0 || kind == SOCK_DGRAM;
            let placed = path.starts_with('/') && !path.starts_with("/proc/");
            (takes && placed).then(|| PathBuf::from(path))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether `path` lies at or below one of `destinations` (component-wise).
pub fn under_any(path: &Path, destinations: &[&Path]) -> bool {
    destinations.iter().any(|d| path.starts_with(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_and_datagram_pathname_sockets() {
        let text = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 1001 /run/user/1000/bus
0000000000000000: 00000002 00000000 00000000 0001 03 1002 /run/user/1000/bus
0000000000000000: 00000002 00000000 00000000 0002 01 1003 /run/systemd/journal/socket
0000000000000000: 00000002 00000000 00010000 0001 01 1004 @/tmp/.X11-unix/X0
0000000000000000: 00000002 00000000 00010000 0001 01 1005 relative.sock
0000000000000000: 00000002 00000000 00000000 0001 03 1006
0000000000000000: 00000002 00000000 00010000 0001 01 1007 /srv/my app/s.sock
0000000000000000: 00000002 00000000 00010000 0001 01 1008 /proc/self/fd/6/ctl.sock
";
        assert_eq!(
            parse(text),
            [
                PathBuf::from("/run/systemd/journal/socket"),
                PathBuf::from("/run/user/1000/bus"),
                PathBuf::from("/srv/my app/s.sock"),
            ]
        );
    }
}
