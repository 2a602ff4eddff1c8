//! A topic's numbered log, kept by its owner shard: the last `--history` events with
//! their sequence numbers, for `Last-Event-ID` replay and polling, and what they cost in
//! memory, for the `--history-memory` budget (`owner.rs`).
//!
//! A single node numbers a topic's events itself, 1 apart ([`TopicLog::push`]); a
//! cluster node mirrors numbers Redis gave, which only increase
//! ([`TopicLog::insert`]). Either way a position can be replayed exactly when it is
//! not below the log's floor: the number of the last event it let go (or, before any,
//! the position its numbering started after).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::{After, Published};
use crate::proto::limits::{IDEMPOTENCY_WINDOW, MAX_IDEMPOTENCY_KEYS_PER_TOPIC};

/// Memory one retained event costs beyond its payload, its event name and its topic's
/// name: the `Published` (about 130 bytes), its `Arc` header, its slot in the log and
/// the allocator's rounding. An estimate on the safe side, for the budget.
pub const EVENT_OVERHEAD: usize = 224;

/// What `msg` costs while retained.
pub fn event_cost(msg: &Published) -> usize {
    EVENT_OVERHEAD
        + msg.payload.len()
        + msg.event.as_ref().map_or(0, String::len)
        + msg.topic.as_str().len()
}

/// A retained event.
#[derive(Debug, Clone)]
struct Retained {
    seq: u64,
    /// The owner's publish counter when it was kept: comparable across topics, so the
    /// owner can find the oldest event of all.
    order: u64,
    msg: Arc<Published>,
}

/// A topic's sequence counter and its retained events.
#[derive(Debug)]
pub struct TopicLog {
    /// The last sequence number assigned (the topic's first event gets `last + 1`).
    last: u64,
    /// Positions below this lost events after them: the last dropped event's number, or
    /// where the numbering started.
    floor: u64,
    events: VecDeque<Retained>,
    cap: usize,
    /// The [`event_cost`] of the retained events.
    bytes: usize,
}

/// What a position asks for is no longer (or never was) in the log: the client must
/// resynchronise (`event: reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap;

impl TopicLog {
    /// An empty log that keeps at most `cap` events, whose first event gets number
    /// `last + 1`. It allocates nothing until the first event: a topic with no history
    /// costs no event slots.
    pub fn starting_after(cap: usize, last: u64) -> TopicLog {
        TopicLog {
            last,
            floor: last,
            events: VecDeque::new(),
            cap,
            bytes: 0,
        }
    }

    /// The last sequence number assigned.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The retained events' cost.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many events are retained.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Nothing retained?
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The publish order of the oldest retained event.
    pub fn oldest_order(&self) -> Option<u64> {
        self.events.front().map(|e| e.order)
    }

    /// Numbers `msg` (the next sequence number) and keeps it, dropping the oldest past
    /// the cap. Returns the number and the bytes the dropped event had cost (0 if none).
    pub fn push(&mut self, msg: Arc<Published>, order: u64) -> (u64, usize) {
        let seq = self.last + 1;
        (seq, self.insert(seq, msg, order))
    }

    /// Keeps `msg` as event `seq`, numbered elsewhere (above [`TopicLog::last`]),
    /// dropping the oldest past the cap. Returns the bytes the dropped event had cost.
    pub fn insert(&mut self, seq: u64, msg: Arc<Published>, order: u64) -> usize {
        debug_assert!(seq > self.last, "{seq} after {}", self.last);
        self.last = seq;
        if self.cap == 0 {
            self.floor = seq;
            return 0;
        }
        let freed = if self.events.len() == self.cap {
            self.pop_oldest().unwrap_or(0)
        } else {
            0
        };
        self.bytes += event_cost(&msg);
        self.events.push_back(Retained { seq, order, msg });
        freed
    }

    /// Cluster mode: everything up to `floor` is gone (Redis trimmed events after our
    /// last before we read them): positions below it become gaps, and events up to it
    /// go. Returns the bytes they had cost.
    pub fn advance_to(&mut self, floor: u64) -> usize {
        let mut freed = 0;
        while self.events.front().is_some_and(|e| e.seq <= floor) {
            freed += self.pop_oldest().unwrap_or(0);
        }
        self.floor = self.floor.max(floor);
        self.last = self.last.max(floor);
        freed
    }

    /// Drops the oldest retained event; returns what it had cost.
    pub fn pop_oldest(&mut self) -> Option<usize> {
        let e = self.events.pop_front()?;
        self.floor = e.seq;
        let cost = event_cost(&e.msg);
        self.bytes -= cost;
        if self.events.is_empty() {
            // A log that emptied keeps no slots (it may stay empty for long).
            self.events = VecDeque::new();
        }
        Some(cost)
    }

    /// The events after `after`, oldest first. [`Gap`] when some of them are no longer
    /// kept, or `after` is beyond the last event (a position this log never gave).
    pub fn since(&self, after: After) -> Result<Vec<(u64, Arc<Published>)>, Gap> {
        let after = match after {
            After::Now => return Ok(Vec::new()),
            After::Start => return Ok(self.retained()),
            After::Seq(a) => a,
        };
        if after > self.last {
            return Err(Gap);
        }
        if after < self.floor {
            return Err(Gap);
        }
        let skip = self.events.partition_point(|e| e.seq <= after);
        Ok(self
            .events
            .range(skip..)
            .map(|e| (e.seq, e.msg.clone()))
            .collect())
    }

    /// Every retained event, oldest first.
    pub fn retained(&self) -> Vec<(u64, Arc<Published>)> {
        self.events.iter().map(|e| (e.seq, e.msg.clone())).collect()
    }
}

/// The `Idempotency-Key`s of a topic's recent publishes and the ids they got, for
/// [`IDEMPOTENCY_WINDOW`], at most [`MAX_IDEMPOTENCY_KEYS_PER_TOPIC`] (oldest first out).
#[derive(Debug, Default)]
pub struct RecentKeys {
    ids: HashMap<Box<str>, u64>,
    order: VecDeque<(Instant, Box<str>)>,
    bytes: usize,
}

/// What one remembered key costs: its text twice (map and queue), the entries, rounding.
fn key_cost(key: &str) -> usize {
    2 * key.len() + 96
}

impl RecentKeys {
    /// The id a publish with `key` got within the window, if any.
    pub fn get(&mut self, now: Instant, key: &str) -> Option<u64> {
        self.expire(now);
        self.ids.get(key).copied()
    }

    /// Remembers that a publish with `key` got `seq`.
    pub fn insert(&mut self, now: Instant, key: Box<str>, seq: u64) {
        self.expire(now);
        if self.order.len() >= MAX_IDEMPOTENCY_KEYS_PER_TOPIC {
            self.pop();
        }
        self.bytes += key_cost(&key);
        self.ids.insert(key.clone(), seq);
        self.order.push_back((now, key));
    }

    /// What the remembered keys cost, for the memory budget.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= IDEMPOTENCY_WINDOW)
        {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some((_, key)) = self.order.pop_front() {
            self.bytes -= key_cost(&key);
            self.ids.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::Topic;

    fn msg(i: u8) -> Arc<Published> {
        Arc::new(Published {
            topic: Topic::new("t").unwrap(),
            text: true,
            payload: vec![i],
            event: None,
            origin: None,
            ack: None,
            idempotency_key: None,
        })
    }

    fn seqs(r: Result<Vec<(u64, Arc<Published>)>, Gap>) -> Result<Vec<u64>, Gap> {
        r.map(|v| v.into_iter().map(|(s, _)| s).collect())
    }

    #[test]
    fn numbers_keeps_and_replays() {
        let mut log = TopicLog::starting_after(3, 0);
        assert_eq!(seqs(log.since(After::Seq(0))), Ok(vec![]));
        for i in 1..=5 {
            assert_eq!(log.push(msg(i), u64::from(i)).0, u64::from(i));
        }
        // Kept: 3, 4, 5.
        assert_eq!(seqs(log.since(After::Seq(2))), Ok(vec![3, 4, 5]));
        assert_eq!(seqs(log.since(After::Seq(4))), Ok(vec![5]));
        assert_eq!(seqs(log.since(After::Seq(5))), Ok(vec![]));
        assert_eq!(seqs(log.since(After::Seq(1))), Err(Gap), "event 2 is gone");
        assert_eq!(seqs(log.since(After::Seq(0))), Err(Gap));
        assert_eq!(seqs(log.since(After::Seq(6))), Err(Gap), "from the future");
        assert_eq!(seqs(log.since(After::Start)), Ok(vec![3, 4, 5]), "all kept");
        assert_eq!(seqs(log.since(After::Now)), Ok(vec![]));
        assert_eq!(log.since(After::Seq(3)).unwrap()[0].1.payload, vec![4]);
    }

    #[test]
    fn costs_are_accounted() {
        let mut log = TopicLog::starting_after(2, 100);
        let one = event_cost(&msg(0));
        assert_eq!(one, EVENT_OVERHEAD + 1 + 1);
        assert_eq!(log.push(msg(1), 7), (101, 0));
        assert_eq!(log.push(msg(2), 8), (102, 0));
        assert_eq!(log.bytes(), 2 * one);
        assert_eq!(log.push(msg(3), 9), (103, one), "the cap dropped 101");
        assert_eq!(log.oldest_order(), Some(8));
        assert_eq!(log.pop_oldest(), Some(one));
        assert_eq!(log.pop_oldest(), Some(one));
        assert_eq!(
            (log.bytes(), log.is_empty(), log.pop_oldest()),
            (0, true, None)
        );
        assert_eq!(seqs(log.since(After::Seq(101))), Err(Gap), "all evicted");
        assert_eq!(seqs(log.since(After::Seq(103))), Ok(vec![]), "up to date");
    }

    #[test]
    fn numbered_elsewhere() {
        // A cluster mirror: numbers with holes, the floor from where Redis stood.
        let mut log = TopicLog::starting_after(2, 99);
        assert_eq!(log.insert(120, msg(1), 1), 0);
        assert_eq!(log.insert(130, msg(2), 2), 0);
        assert_eq!(seqs(log.since(After::Seq(99))), Ok(vec![120, 130]));
        assert_eq!(seqs(log.since(After::Seq(125))), Ok(vec![130]));
        assert_eq!(seqs(log.since(After::Seq(98))), Err(Gap), "below the floor");
        assert!(log.insert(140, msg(3), 3) > 0, "the cap dropped 120");
        assert_eq!(seqs(log.since(After::Seq(120))), Ok(vec![130, 140]));
        assert_eq!(seqs(log.since(After::Seq(119))), Err(Gap), "120 is gone");
        assert_eq!(
            seqs(log.since(After::Seq(141))),
            Err(Gap),
            "from the future"
        );
    }

    #[test]
    fn recent_keys_expire_and_are_bounded() {
        let t0 = Instant::now();
        let mut r = RecentKeys::default();
        r.insert(t0, "a".into(), 7);
        assert_eq!(r.get(t0, "a"), Some(7));
        assert_eq!(r.get(t0, "b"), None);
        assert_eq!(r.get(t0 + IDEMPOTENCY_WINDOW, "a"), None, "expired");
        assert_eq!(r.bytes(), 0);
        for i in 0..=MAX_IDEMPOTENCY_KEYS_PER_TOPIC {
            r.insert(t0, i.to_string().into(), i as u64);
        }
        assert_eq!(r.get(t0, "0"), None, "the oldest went");
        assert_eq!(r.get(t0, "1"), Some(1));
    }

    #[test]
    fn no_history() {
        let mut log = TopicLog::starting_after(0, 0);
        log.push(msg(1), 1);
        log.push(msg(2), 2);
        assert_eq!(
            seqs(log.since(After::Seq(2))),
            Ok(vec![]),
            "up to date needs nothing"
        );
        assert_eq!(seqs(log.since(After::Seq(1))), Err(Gap));
        assert_eq!(log.bytes(), 0);
    }
}
