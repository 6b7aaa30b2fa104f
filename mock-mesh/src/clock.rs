//! The server's idea of "now": the system clock, or a manual clock that tests move forward to
//! exercise the 5-day inbox expiry (`mesh-protocol.md` §11) and the ±2 h token window (§3.1).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};

/// A cheap-to-clone clock handle. Clones share the same offset, so a test can keep one and
/// advance the clock of a running server.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Offset added to the system time, in microseconds.
    offset_us: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that starts at `start` and then runs at real speed.
    pub fn starting_at(start: DateTime<Utc>) -> Clock {
        let c = Clock::default();
        c.set(start);
        c
    }

    /// Current time.
    pub fn now(&self) -> DateTime<Utc> {
        let real = Utc::now();
        let off = self.offset_us.load(Ordering::Relaxed);
        real + chrono::Duration::microseconds(off)
    }

    /// Moves the clock forward (or back, with a negative duration).
    pub fn advance(&self, by: chrono::Duration) {
        let us = by.num_microseconds().unwrap_or(i64::MAX / 2);
        self.offset_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Sets the clock to `at` (it keeps running from there).
    pub fn set(&self, at: DateTime<Utc>) {
        let off = (at - Utc::now()).num_microseconds().unwrap_or(0);
        self.offset_us.store(off, Ordering::Relaxed);
    }
}

/// Microseconds since the epoch of a time (the store's persisted time format).
pub(crate) fn to_us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Inverse of [`to_us`].
pub(crate) fn from_us(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_is_shared_between_clones() {
        let c = Clock::system();
        let d = c.clone();
        let before = d.now();
        c.advance(chrono::Duration::days(5));
        assert!(d.now() - before >= chrono::Duration::days(5));
        assert_eq!(to_us(from_us(to_us(before))), to_us(before));
    }
}
