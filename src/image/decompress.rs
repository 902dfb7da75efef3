//! Layer streams: compression sniffed from magic bytes, and digests computed over exactly
//! the bytes read (compressed and uncompressed), so a layer is verified as it is unpacked.

use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use sha2::{Digest, Sha256};

const GZIP: &[u8] = &[0x1f, 0x8b];
const XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

pub fn is_compressed(magic: &[u8]) -> bool {
    [GZIP, XZ, ZSTD].iter().any(|m| magic.starts_with(m))
}

/// A digest and a byte count that a `Hashing` reader updates as it is read.
#[derive(Clone, Default)]
pub struct Tally(Rc<RefCell<(Sha256, u64)>>);

impl Tally {
    pub fn bytes(&self) -> u64 {
        self.0.borrow().1
    }

    pub fn digest(&self) -> String {
        let hash = self.0.borrow().0.clone().finalize();
        format!("sha256:{}", hex(&hash))
    }
}

pub struct Hashing<R> {
    inner: R,
    tally: Tally,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R, tally: Tally) -> Self {
        Hashing { inner, tally }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut t = self.tally.0.borrow_mut();
        t.0.update(&buf[..n]);
        t.1 += n as u64;
        Ok(n)
    }
}

/// Bytes in lowercase hexadecimal, as digests spell them.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The uncompressed stream of `input`, whatever its compression.
pub fn decompressed<'a>(input: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(256 << 10, input);
    let magic = buffered.fill_buf()?.to_vec();
    Ok(if magic.starts_with(GZIP) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if magic.starts_with(XZ) {
        Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(buffered))
    } else if magic.starts_with(ZSTD) {
        Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?)
    } else {
        Box::new(buffered)
    })
}
