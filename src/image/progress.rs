//! Progress of an import on stderr: one line redrawn in place on a terminal (layer, bytes,
//! rate), plain lines at the start and end of each layer otherwise.

use std::io::{self, IsTerminal, Read, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    tty: bool,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            tty: io::stderr().is_terminal(),
        }
    }

    pub fn line(&self, text: &str) {
        let clear = if self.tty { "\r\x1b[K" } else { "" };
        eprintln!("{clear}{text}");
    }

    /// Wraps a layer's input stream so reading it redraws the progress line.
    pub fn reader<R: Read>(&self, inner: R, label: String, total: u64) -> Ticker<R> {
        if !self.tty {
            self.line(&format!("{label}: reading {} as stored", size(total)));
        }
        Ticker {
            inner,
            tty: self.tty,
            label,
            total,
            read: 0,
            start: Instant::now(),
            last: Instant::now(),
        }
    }
}

pub struct Ticker<R> {
    inner: R,
    tty: bool,
    label: String,
    total: u64,
    read: u64,
    start: Instant,
    last: Instant,
}

impl<R: Read> Read for Ticker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.tty && (self.last.elapsed() > Duration::from_millis(100) || n == 0) {
            self.last = Instant::now();
            let secs = self.start.elapsed().as_secs_f64().max(0.001);
            let mut err = io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[K{}: {} / {} as stored ({}/s)",
                self.label,
                size(self.read),
                size(self.total),
                size((self.read as f64 / secs) as u64)
            );
            let _ = err.flush();
        }
        Ok(n)
    }
}

/// 1536 -> "1.5 KiB".
pub fn size(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::size(12), "12 B");
        assert_eq!(super::size(1536), "1.5 KiB");
        assert_eq!(super::size(3 << 30), "3.0 GiB");
    }
}
