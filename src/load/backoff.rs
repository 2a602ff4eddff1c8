//! Reconnect delays: exponential backoff with full jitter.
//!
//! Attempt `n` (0 for the first retry) waits a uniformly random time in
//! `[0, min(cap, base * 2^n))` ("full jitter", as in the AWS architecture blog's
//! comparison of backoff schemes): after a server restart, N clients spread their retries
//! over the whole window instead of arriving together. Without jitter every client waits
//! exactly `min(cap, base * 2^n)`, and they all come back in the same instant: the
//! thundering herd that `ringpush load --scenario storm --no-jitter` makes visible.

use std::time::Duration;

/// A backoff policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first window.
    pub base: Duration,
    /// The largest window.
    pub cap: Duration,
    /// Full jitter (true) or the exact window (false).
    pub jitter: bool,
}

impl Backoff {
    /// The window of attempt `attempt`: `min(cap, base * 2^attempt)`.
    pub fn window(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before retry number `attempt`, `rand` a uniformly random u64.
    pub fn delay(&self, attempt: u32, rand: u64) -> Duration {
        let window = self.window(attempt);
        if !self.jitter {
            return window;
        }
        // rand / 2^64 of the window, in nanoseconds (u128: no overflow for any window).
        let nanos = (window.as_nanos() * u128::from(rand)) >> 64;
        Duration::from_nanos(nanos as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::rand::Rng;

    const POLICY: Backoff = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(5),
        jitter: true,
    };

    #[test]
    fn windows_double_up_to_the_cap() {
        let ms = |a| POLICY.window(a).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(5), ms(6), ms(40)],
            [100, 200, 400, 3200, 5000, 5000]
        );
        let exact = Backoff {
            jitter: false,
            ..POLICY
        };
        assert_eq!(exact.delay(3, 12345), Duration::from_millis(800));
        assert_eq!(
            exact.delay(3, 999),
            exact.delay(3, 1),
            "no jitter: every client the same"
        );
    }

    /// 100,000 draws of the jittered delay for one attempt: all inside the window, their
    /// mean at half of it, and spread evenly over it (each tenth of the window gets
    /// 10% of the draws, within 0.5 percentage points).
    #[test]
    fn jitter_is_uniform_over_the_window() {
        let mut rng = Rng::new(7);
        let n = 100_000;
        let window = POLICY.window(4).as_secs_f64();
        let mut deciles = [0u32; 10];
        let mut sum = 0.0;
        for _ in 0..n {
            let d = POLICY.delay(4, rng.next_u64()).as_secs_f64();
            assert!((0.0..window).contains(&d));
            sum += d;
            deciles[((d / window) * 10.0) as usize] += 1;
        }
        let mean = sum / f64::from(n);
        assert!(
            (mean / window - 0.5).abs() < 0.01,
            "mean {mean} of window {window}"
        );
        for (i, &c) in deciles.iter().enumerate() {
            let share = f64::from(c) / f64::from(n);
            assert!((share - 0.1).abs() < 0.005, "decile {i}: {share}");
        }
    }

    /// The herd: 10,000 clients retrying at once land in one millisecond without jitter
    /// and in no millisecond more than 1% of them with it.
    #[test]
    fn jitter_flattens_the_peak() {
        let mut rng = Rng::new(11);
        let peak = |policy: Backoff, rng: &mut Rng| {
            let mut per_ms = std::collections::HashMap::new();
            for _ in 0..10_000 {
                *per_ms
                    .entry(policy.delay(3, rng.next_u64()).as_millis())
                    .or_insert(0u32) += 1;
            }
            per_ms.into_values().max().unwrap()
        };
        assert_eq!(
            peak(
                Backoff {
                    jitter: false,
                    ..POLICY
                },
                &mut rng
            ),
            10_000
        );
        assert!(peak(POLICY, &mut rng) < 100);
    }
}
