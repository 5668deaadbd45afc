//! Exponential backoff: the delay before the n-th attempt after consecutive
//! failures, and a failure streak that keeps its count until a success.

use std::time::{Duration, Instant};

/// Delay after the n-th consecutive failure (n ≥ 1): initial · 2^(n−1), at most
/// `max`. n = 0 is treated as 1.
pub fn doubling(initial: Duration, max: Duration, n: u32) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(20);
    initial.saturating_mul(factor).min(max)
}

/// Consecutive failures of one thing (a bank the pusher sends batches to): it
/// waits after each, longer each time. Only a success ends the streak — a pause
/// that has elapsed does not, or the delay would never grow past its first step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streak {
    until: Instant,
    failures: u32,
}

impl Streak {
    /// A failure at `now`, after `before` (the streak so far, if any): the new
    /// streak and how long it waits.
    pub fn failed(
        before: Option<Streak>,
        now: Instant,
        initial: Duration,
        max: Duration,
    ) -> (Streak, Duration) {
        let failures = before.map_or(0, |s| s.failures).saturating_add(1);
        let delay = doubling(initial, max, failures);
        (
            Streak {
                until: now + delay,
                failures,
            },
            delay,
        )
    }

    /// Still waiting at `now`.
    pub fn waits(&self, now: Instant) -> bool {
        self.until > now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap() {
        let delays: Vec<u128> = (1..=6)
            .map(|n| doubling(100 * MS, 1000 * MS, n).as_millis())
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(doubling(100 * MS, 1000 * MS, 0), 100 * MS);
        // Far past the exponent's bound: capped, no overflow.
        assert_eq!(doubling(MS, Duration::MAX, u32::MAX), MS * (1 << 20));
    }

    #[test]
    fn a_streak_grows_after_its_pause_has_elapsed() {
        let start = Instant::now();
        let (first, d1) = Streak::failed(None, start, 100 * MS, 1000 * MS);
        assert_eq!(d1, 100 * MS);
        assert!(first.waits(start + 99 * MS));
        assert!(!first.waits(start + 100 * MS));
        // The next failure comes long after the pause: the delay still doubles.
        let later = start + 10_000 * MS;
        let (second, d2) = Streak::failed(Some(first), later, 100 * MS, 1000 * MS);
        assert_eq!(d2, 200 * MS);
        assert!(second.waits(later + 199 * MS));
        let (third, d3) = Streak::failed(Some(second), later, 100 * MS, 1000 * MS);
        assert_eq!((d3, third.failures), (400 * MS, 3));
    }
}
