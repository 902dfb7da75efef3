//! Each request's overall deadline, so that a registry trickling bytes cannot keep a
//! pull alive for ever (the read timeout alone starts again with every byte).

use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::image::byte_size;

/// How long one request may take in all: `floor + size / rate`, so a registry trickling
/// bytes cannot keep a pull alive for ever, while a large layer on a slow link still
/// arrives. `SBX_PULL_DEADLINE=FLOOR_SECONDS:RATE` (such as `60:64K`) overrides the
/// default of 60 s plus one second per 64 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub floor: Duration,
    /// Bytes per second that must arrive on average beyond the floor.
    pub rate: u64,
}

impl Deadlines {
    pub const VARIABLE: &'static str = "SBX_PULL_DEADLINE";

    pub fn from_env() -> Result<Deadlines> {
        match std::env::var(Self::VARIABLE) {
            Ok(text) if !text.trim().is_empty() => Self::parse(&text),
            _ => Ok(Deadlines {
                floor: Duration::from_secs(60),
                rate: 64 << 10,
            }),
        }
    }

    pub fn parse(text: &str) -> Result<Deadlines> {
        let bad = || {
            anyhow!(
                "{}={text:?}: expected FLOOR_SECONDS:MIN_RATE (bytes per second, K/M/G \
                 suffixes), such as 60:64K",
                Self::VARIABLE
            )
        };
        let (floor, rate) = text.trim().split_once(':').ok_or_else(bad)?;
        let floor: f64 = floor.trim().parse().map_err(|_| bad())?;
        let rate = crate::plan::parse_size(rate).map_err(|_| bad())?;
        if !(floor.is_finite() && floor >= 0.0) || rate == 0 {
            return Err(bad());
        }
        Ok(Deadlines {
            floor: Duration::from_secs_f64(floor),
            rate,
        })
    }

    /// The deadline of a request for `size` bytes.
    pub fn for_size(&self, size: u64) -> Duration {
        self.floor + Duration::from_secs_f64(size as f64 / self.rate as f64)
    }

    /// How the deadline came about, for the message when it passes.
    pub fn describe(&self, size: u64) -> String {
        format!(
            "{:.0} s: {:.0} s plus 1 s per {} of its {}; {} sets this as FLOOR_SECONDS:MIN_RATE",
            self.for_size(size).as_secs_f64(),
            self.floor.as_secs_f64(),
            byte_size(self.rate),
            byte_size(size),
            Self::VARIABLE
        )
    }
}

/// Runs `work` under `limit`; past it the error names `what` and how the limit came about.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    describe: &str,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(anyhow!(
            "{what} did not arrive within its deadline of {describe} (a stalled or hostile \
             registry?); nothing was imported"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_grow_with_the_size_from_a_floor() {
        let d = Deadlines::parse("60:64K").unwrap();
        assert_eq!(d.for_size(0), Duration::from_secs(60));
        assert_eq!(d.for_size(64 << 20), Duration::from_secs(60 + 1024));
        let quick = Deadlines::parse("2:1M").unwrap();
        assert_eq!(quick.for_size(4 << 20), Duration::from_secs(6));
        for bad in ["", "60", "x:64K", "60:0", "-1:64K", "60:fast"] {
            assert!(Deadlines::parse(bad).is_err(), "{bad}");
        }
    }
}
