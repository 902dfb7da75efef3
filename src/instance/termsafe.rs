//! `sbx logs` onto a terminal: what a sandbox printed is data, not instructions for the
//! user's terminal. Control characters other than newline and tab (C0, DEL, and the C1
//! range U+0080-U+009F, which some terminals obey as 8-bit escapes) and bytes that are not
//! UTF-8 are shown as `\xNN`, one per byte; everything else passes unchanged. An escape
//! sequence such as `ESC ] 0 ; title BEL` (set the window title) or `ESC [ 2 J` (clear the
//! screen) thus shows as text. Onto a pipe or file, `logs` copies bytes unchanged.

use std::io::{self, Write};

/// A writer that escapes control characters when `escape` is set. A UTF-8 sequence cut by
/// the end of one write is completed by the next; `finish` shows a cut that stayed cut.
pub struct TerminalSafe<W: Write> {
    inner: W,
    escape: bool,
    /// The start of a UTF-8 sequence the last write ended in.
    carry: Vec<u8>,
}

impl<W: Write> TerminalSafe<W> {
    pub fn new(inner: W, escape: bool) -> TerminalSafe<W> {
        TerminalSafe {
            inner,
            escape,
            carry: Vec::new(),
        }
    }

    /// Writes out a sequence left incomplete at the end, escaped, and flushes.
    pub fn finish(&mut self) -> io::Result<()> {
        let rest: String = std::mem::take(&mut self.carry)
            .into_iter()
            .map(hex)
            .collect();
        self.inner.write_all(rest.as_bytes())?;
        self.inner.flush()
    }
}

impl<W: Write> Write for TerminalSafe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.escape {
            return self.inner.write(buf);
        }
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(buf);
        let (shown, cut) = escape(&data);
        self.carry = data[cut..].to_vec();
        self.inner.write_all(&shown)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The escaped form of `data`, and where an incomplete UTF-8 sequence at its end starts
/// (`data.len()` when there is none).
fn escape(data: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if b < 0x80 {
            if b == b'\n' || b == b'\t' || (0x20..0x7f).contains(&b) {
                out.push(b);
            } else {
                out.extend_from_slice(hex(b).as_bytes());
            }
            i += 1;
            continue;
        }
        let len = match b {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => 0,
        };
        let end = i + len;
        if len > 0 && end > data.len() {
            let continued = data[i + 1..].iter().all(|&c| c & 0xc0 == 0x80);
            if continued {
                return (out, i);
            }
        }
        match data.get(i..end).map(std::str::from_utf8) {
            Some(Ok(s)) if len > 0 => {
                let c = s.chars().next().unwrap_or('\0');
                if ('\u{80}'..='\u{9f}').contains(&c) {
                    for &byte in s.as_bytes() {
                        out.extend_from_slice(hex(byte).as_bytes());
                    }
                } else {
                    out.extend_from_slice(s.as_bytes());
                }
                i = end;
            }
            _ => {
                out.extend_from_slice(hex(b).as_bytes());
                i += 1;
            }
        }
    }
    (out, data.len())
}

fn hex(b: u8) -> String {
    format!("\\x{b:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(chunks: &[&[u8]]) -> String {
        let mut w = TerminalSafe::new(Vec::new(), true);
        for c in chunks {
            w.write_all(c).unwrap();
        }
        w.finish().unwrap();
        String::from_utf8(w.inner).unwrap()
    }

    #[test]
    fn escape_sequences_become_text() {
        assert_eq!(
            shown(&[b"a\x1b]0;pwned\x07b\x1b[2J\r\n\tz\x7f"]),
            "a\\x1b]0;pwned\\x07b\\x1b[2J\\x0d\n\tz\\x7f"
        );
    }

    #[test]
    fn utf8_passes_and_c1_controls_do_not() {
        assert_eq!(shown(&["héllo ✓ 😀\n".as_bytes()]), "héllo ✓ 😀\n");
        // U+009B, the 8-bit CSI, in UTF-8; then a lone continuation byte and a bad lead.
        assert_eq!(shown(&[b"\xc2\x9b2J\x80\xff"]), "\\xc2\\x9b2J\\x80\\xff");
    }

    #[test]
    fn a_sequence_cut_between_writes_is_joined() {
        let check = "✓".as_bytes();
        assert_eq!(shown(&[&check[..1], &check[1..2], &check[2..]]), "✓");
        assert_eq!(shown(&[b"\xc2", b"\x9b"]), "\\xc2\\x9b");
        // Cut and never completed: shown escaped at the end.
        assert_eq!(shown(&[b"x\xe2\x9c"]), "x\\xe2\\x9c");
    }

    #[test]
    fn off_means_unchanged() {
        let mut w = TerminalSafe::new(Vec::new(), false);
        w.write_all(b"\x1b[2J\xff").unwrap();
        w.finish().unwrap();
        assert_eq!(w.inner, b"\x1b[2J\xff");
    }
}
