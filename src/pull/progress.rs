//! Download progress on stderr: one line redrawn in place on a terminal (blob, bytes,
//! rate), plain lines otherwise (one when a blob starts, one when it is done).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::image::byte_size as bytes;

pub struct Progress {
    terminal: bool,
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    drawn: Option<Instant>,
    /// A terminal line is drawn and not yet ended.
    open: bool,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            label: String::new(),
            total: 0,
            done: 0,
            started: Instant::now(),
            drawn: None,
            open: false,
        }
    }

    /// A blob starts: `label` says which ("layer 2/3 sha256:0123abcd").
    pub fn start(&mut self, label: String, total: u64) {
        self.label = label;
        self.total = total;
        self.done = 0;
        self.started = Instant::now();
        self.drawn = None;
        if !self.terminal {
            eprintln!("sbx: fetching {} ({})", self.label, bytes(total));
        }
    }

    pub fn advance(&mut self, n: u64) {
        self.done += n;
        let due = self
            .drawn
            .map_or(true, |t| t.elapsed() >= Duration::from_millis(100));
        if self.terminal && due {
            self.draw();
        }
    }

    pub fn finish(&mut self) {
        let secs = self.started.elapsed().as_secs_f64();
        if self.terminal {
            self.draw();
            eprintln!();
            self.open = false;
        } else {
            eprintln!(
                "sbx: fetched {}: {} in {secs:.1} s ({}/s)",
                self.label,
                bytes(self.done),
                bytes(rate(self.done, secs))
            );
        }
    }

    fn draw(&mut self) {
        let secs = self.started.elapsed().as_secs_f64();
        let mut err = std::io::stderr().lock();
        // \r and clear to the end of the line: the line is redrawn in place.
        let _ = write!(
            err,
            "\r\x1b[Ksbx: {}  {} / {}  {}/s",
            self.label,
            bytes(self.done),
            bytes(self.total),
            bytes(rate(self.done, secs))
        );
        let _ = err.flush();
        self.drawn = Some(Instant::now());
        self.open = true;
    }
}

impl Drop for Progress {
    /// A download that failed half-way: its error goes on a line of its own.
    fn drop(&mut self) {
        if self.open {
            self.draw();
            eprintln!();
        }
    }
}

fn rate(done: u64, secs: f64) -> u64 {
    if secs > 0.0 {
        (done as f64 / secs) as u64
    } else {
        0
    }
}
