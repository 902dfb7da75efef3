//! What an import may write: `--max-size` (the image's total unpacked size) and a reserve
//! of free space on the store's filesystem that no import eats into, so a decompression
//! bomb (a few MB of gzip that expand to gigabytes of zeros) stops cleanly instead of
//! filling the disk. The reserve is `SBX_STORE_RESERVE` (a size; 0 turns it off), by
//! default the smaller of 1 GiB and 5% of the filesystem.
//!
//! Both are counted on the uncompressed stream as it is read, before it is written: the
//! size at once, the free space every [`CHECK_EVERY`] bytes.

use std::cell::RefCell;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{anyhow, Context, Result};

use super::progress::size;

/// How many bytes may pass between two looks at the free space.
pub const CHECK_EVERY: u64 = 8 << 20;
pub const RESERVE_VARIABLE: &str = "SBX_STORE_RESERVE";

/// The free space no write of the store's may eat into on the filesystem of `dir`:
/// `SBX_STORE_RESERVE`, else the smaller of 1 GiB and 5% of the filesystem.
pub fn reserve(dir: &Path) -> Result<u64> {
    match std::env::var(RESERVE_VARIABLE) {
        Ok(text) if !text.trim().is_empty() => {
            crate::plan::parse_size(&text).with_context(|| format!("{RESERVE_VARIABLE}={text:?}"))
        }
        _ => {
            let fs = nix::sys::statvfs::statvfs(dir)
                .with_context(|| format!("statvfs {}", dir.display()))?;
            let total = fs.blocks() as u64 * fs.fragment_size() as u64;
            Ok((total / 20).min(1 << 30))
        }
    }
}

/// The bytes an unprivileged writer may still use on the filesystem of `dir`.
pub fn free_space(dir: &Path) -> io::Result<u64> {
    let fs = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
    Ok(fs.blocks_available() as u64 * fs.fragment_size() as u64)
}

/// The limits of one import, shared by the readers of all its layers.
#[derive(Clone)]
pub struct Budget(Rc<RefCell<State>>);

struct State {
    image: String,
    /// The store's directory whose filesystem is watched.
    dir: PathBuf,
    max: Option<u64>,
    reserve: u64,
    used: u64,
    since_check: u64,
    /// Why the import was stopped, once it was.
    tripped: Option<String>,
}

impl Budget {
    /// Limits for importing `image` into the store whose `tmp/` is `dir`.
    pub fn new(image: &str, dir: &Path, max: Option<u64>) -> Result<Budget> {
        let reserve = reserve(dir)?;
        Ok(Budget(Rc::new(RefCell::new(State {
            image: image.to_string(),
            dir: dir.to_path_buf(),
            max,
            reserve,
            used: 0,
            since_check: CHECK_EVERY,
            tripped: None,
        }))))
    }

    /// Counts `bytes` of a layer already in the store against `--max-size`.
    pub fn add_existing(&self, bytes: u64, what: &str) -> Result<()> {
        let mut state = self.0.borrow_mut();
        state.used += bytes;
        match state.over_max(what) {
            Some(message) => Err(anyhow!(message)),
            None => Ok(()),
        }
    }

    /// `inner`, counted against the limits; `what` names the layer in messages.
    pub fn reader<R: Read>(&self, inner: R, what: &str) -> Metered<R> {
        Metered {
            inner,
            what: what.to_string(),
            budget: self.clone(),
        }
    }

    /// The reason the import was stopped, if a limit stopped it. Takes precedence over
    /// whatever error the reader's caller made of it.
    pub fn tripped(&self) -> Option<anyhow::Error> {
        self.0.borrow().tripped.as_ref().map(|m| anyhow!("{m}"))
    }
}

impl State {
    fn over_max(&self, what: &str) -> Option<String> {
        let max = self.max?;
        (self.used > max).then(|| {
            format!(
                "{} unpacks to more than --max-size {} (stopped in {what}); nothing was imported",
                self.image,
                size(max)
            )
        })
    }

    fn below_reserve(&self, what: &str) -> io::Result<Option<String>> {
        if self.reserve == 0 {
            return Ok(None);
        }
        let free = free_space(&self.dir)?;
        Ok((free < self.reserve).then(|| {
            format!(
                "the image store's filesystem ({}) is down to {} free, below the {} sbx keeps \
                 in reserve, after {} of {} unpacked (stopped in {what}: a decompression bomb, \
                 or a full disk); nothing was imported; free some space, or set \
                 {RESERVE_VARIABLE} to a smaller size",
                self.dir.display(),
                size(free),
                size(self.reserve),
                size(self.used),
                self.image
            )
        }))
    }
}

/// A reader that stops with an error once its budget is spent.
pub struct Metered<R> {
    inner: R,
    what: String,
    budget: Budget,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self.budget.0.borrow_mut();
        if let Some(message) = &state.tripped {
            return Err(io::Error::other(message.clone()));
        }
        if state.since_check >= CHECK_EVERY {
            state.since_check = 0;
            if let Some(message) = state.below_reserve(&self.what)? {
                state.tripped = Some(message.clone());
                return Err(io::Error::other(message));
            }
        }
        let n = self.inner.read(buf)?;
        state.used += n as u64;
        state.since_check += n as u64;
        if let Some(message) = state.over_max(&self.what) {
            state.tripped = Some(message.clone());
            return Err(io::Error::other(message));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_limit_stops_the_stream_and_says_why() {
        let budget = Budget::new("bomb:1", Path::new("/"), Some(1000)).unwrap();
        budget.0.borrow_mut().reserve = 0;
        let mut first = budget.reader(&[0u8; 600][..], "layer 1/2");
        io::copy(&mut first, &mut io::sink()).unwrap();
        let mut second = budget.reader(&[0u8; 600][..], "layer 2/2");
        assert!(io::copy(&mut second, &mut io::sink()).is_err());
        let why = budget.tripped().unwrap().to_string();
        assert!(why.contains("more than --max-size 1000 B"), "{why}");
        assert!(why.contains("layer 2/2"), "{why}");
    }

    #[test]
    fn the_reserve_stops_the_stream_when_free_space_is_short() {
        let budget = Budget::new("bomb:1", Path::new("/"), None).unwrap();
        budget.0.borrow_mut().reserve = u64::MAX;
        let mut reader = budget.reader(&[0u8; 10][..], "layer 1/1");
        assert!(io::copy(&mut reader, &mut io::sink()).is_err());
        let why = budget.tripped().unwrap().to_string();
        assert!(why.contains("in reserve"), "{why}");
    }
}
