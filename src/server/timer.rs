//! A hashed timer wheel: O(1) to schedule, and each tick touches only the entries of
//! its own bucket.
//!
//! Connections are scheduled lazily: a connection has at most one entry that counts
//! (the one whose instant it remembers); when activity pushes its deadline later, the
//! entry is left alone and, when it fires, the connection finds it has nothing to do
//! and reschedules itself. An idle connection thus costs one entry visit per deadline
//! (per 30 s ping interval by default), however many ticks pass.

use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// An instant in 8 bytes, for the deadlines a connection keeps (`Instant` takes 16, and
/// a connection has five): nanoseconds since the process first made one, plus one (so
/// that `Option<At>` is 8 bytes too). Exact both ways; 584 years of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct At(NonZeroU64);

/// The origin of every [`At`]: set by [`At::start`] (or the first one made). Instants
/// before it would read as it; `At`s are deadlines, later than the server's start.
static BASE: OnceLock<Instant> = OnceLock::new();

impl At {
    /// Fixes the origin now (the server does before its shards start), so that every
    /// instant taken later converts exactly.
    pub fn start() {
        BASE.get_or_init(Instant::now);
    }

    /// `t` in 8 bytes.
    pub fn new(t: Instant) -> At {
        let base = *BASE.get_or_init(Instant::now);
        let nanos = t.saturating_duration_since(base).as_nanos();
        At(NonZeroU64::new(u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1).expect("plus one"))
    }

    /// The instant again.
    pub fn instant(self) -> Instant {
        let base = *BASE.get().expect("made by At::new");
        base + Duration::from_nanos(self.0.get() - 1)
    }

    /// Has `now` reached it?
    pub fn reached(self, now: Instant) -> bool {
        now >= self.instant()
    }
}

/// One scheduled wake-up: a connection's slab key and generation, and the instant asked
/// for. 16 bytes: a million connections keep a million of them on the wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Slab key of the connection.
    pub key: u32,
    /// Its generation when scheduled.
    pub generation: u32,
    /// The instant asked for.
    pub when: At,
}

/// The wheel. `buckets.len()` ticks make one revolution; entries further out wait in
/// their bucket for later revolutions.
///
/// A bucket gives its memory back once its entries have gone: the deadlines of a million
/// connections crowd the few hundred buckets one ping interval covers, and that crowd
/// moves around the wheel, so buckets that kept their peak capacity would, after one
/// revolution, hold the crowd's size in every bucket (measured: 1.4 KB per connection
/// at 100,000 with 2 s pings, more than the connections themselves).
#[derive(Debug)]
pub struct TimerWheel {
    buckets: Vec<Vec<Entry>>,
    tick: Duration,
    origin: Instant,
    /// The next tick index to process.
    next: u64,
}

impl TimerWheel {
    /// A wheel of `buckets` buckets of `tick` each, starting at `now`.
    pub fn new(now: Instant, tick: Duration, buckets: usize) -> TimerWheel {
        TimerWheel {
            buckets: vec![Vec::new(); buckets],
            tick,
            origin: now,
            next: 0,
        }
    }

    fn tick_of(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.origin);
        // Round up: an entry must never fire before its instant.
        since.as_nanos().div_ceil(self.tick.as_nanos()) as u64
    }

    /// Schedules an entry.
    pub fn schedule(&mut self, entry: Entry) {
        let t = self.tick_of(entry.when.instant()).max(self.next);
        let n = self.buckets.len() as u64;
        self.buckets[(t % n) as usize].push(entry);
    }

    /// Moves every entry due at `now` into `due`.
    pub fn expire(&mut self, now: Instant, due: &mut Vec<Entry>) {
        let now_tick = now.saturating_duration_since(self.origin).as_nanos() as u64
            / self.tick.as_nanos() as u64;
        let n = self.buckets.len() as u64;
        // After a long stall, one revolution visits every bucket once.
        let first = self.next.max((now_tick + 1).saturating_sub(n));
        let now_at = At::new(now);
        for t in first..=now_tick {
            let bucket = &mut self.buckets[(t % n) as usize];
            let mut i = 0;
            while i < bucket.len() {
                if bucket[i].when <= now_at {
                    due.push(bucket.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            if bucket.is_empty() {
                *bucket = Vec::new();
            } else if bucket.capacity() > 4 * bucket.len() {
                bucket.shrink_to(2 * bucket.len());
            }
        }
        self.next = self.next.max(now_tick + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_on_time_never_early() {
        At::start();
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, Duration::from_millis(100), 8);
        let e = |key, ms| Entry {
            key,
            generation: 0,
            when: At::new(t0 + Duration::from_millis(ms)),
        };
        w.schedule(e(1, 250));
        w.schedule(e(2, 50));
        w.schedule(e(3, 2000)); // beyond one revolution (800 ms)
        let mut due = Vec::new();
        w.expire(t0 + Duration::from_millis(49), &mut due);
        assert!(due.is_empty());
        w.expire(t0 + Duration::from_millis(100), &mut due);
        assert_eq!(due.iter().map(|e| e.key).collect::<Vec<_>>(), [2]);
        due.clear();
        w.expire(t0 + Duration::from_millis(299), &mut due);
        assert!(
            due.is_empty(),
            "250 ms rounds up to the 300 ms tick: late by < 1 tick, never early"
        );
        w.expire(t0 + Duration::from_millis(300), &mut due);
        assert_eq!(due.iter().map(|e| e.key).collect::<Vec<_>>(), [1]);
        due.clear();
        w.expire(t0 + Duration::from_millis(1999), &mut due);
        assert!(due.is_empty(), "a later revolution's entry waits");
        w.expire(t0 + Duration::from_secs(5), &mut due);
        assert_eq!(due.iter().map(|e| e.key).collect::<Vec<_>>(), [3]);
        // Scheduling in the past fires at the next tick boundary.
        due.clear();
        w.schedule(e(4, 0));
        w.expire(t0 + Duration::from_millis(5001), &mut due);
        assert!(due.is_empty());
        w.expire(t0 + Duration::from_millis(5100), &mut due);
        assert_eq!(due.iter().map(|e| e.key).collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn at_is_eight_bytes_exact_and_ordered() {
        assert_eq!(std::mem::size_of::<Option<At>>(), 8);
        At::start();
        let now = Instant::now();
        let soon = now + Duration::from_nanos(1);
        let later = now + Duration::from_secs(86_400 * 365);
        for t in [now, soon, later] {
            assert_eq!(At::new(t).instant(), t, "round trip");
        }
        assert!(At::new(now) < At::new(soon) && At::new(soon) < At::new(later));
        assert!(At::new(soon).reached(soon) && !At::new(later).reached(soon));
    }

    /// A crowd of deadlines passing through a bucket leaves no memory behind it, and an
    /// entry is 16 bytes (a million connections keep a million).
    #[test]
    fn buckets_give_memory_back() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        At::start();
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, Duration::from_millis(50), 64);
        // 10,000 deadlines in one tick, one entry a revolution later in the same bucket.
        for key in 0..10_000 {
            w.schedule(Entry {
                key,
                generation: 0,
                when: At::new(t0 + Duration::from_millis(100)),
            });
        }
        let later = At::new(t0 + Duration::from_millis(100 + 64 * 50));
        w.schedule(Entry {
            key: 10_000,
            generation: 0,
            when: later,
        });
        let mut due = Vec::new();
        w.expire(t0 + Duration::from_millis(100), &mut due);
        assert_eq!(due.len(), 10_000);
        let held: usize = w.buckets.iter().map(Vec::capacity).sum();
        assert!(held <= 4, "the wheel kept room for {held} entries");
        due.clear();
        w.expire(t0 + Duration::from_millis(100 + 64 * 50), &mut due);
        assert_eq!(due.iter().map(|e| e.when).collect::<Vec<_>>(), [later]);
        assert_eq!(w.buckets.iter().map(Vec::capacity).sum::<usize>(), 0);
    }
}
