//! The owner side: the topics one shard owns, their numbering and history, and who
//! subscribes to them. Bus messages in ([`Owner::handle`]), bus messages out.
//!
//! # Numbering across a topic's lives
//!
//! A topic can be forgotten (`--history-ttl`, or the memory budget below) while clients
//! still hold ids from it. If it were created again and numbered 1, 2, 3, ... again, an
//! old id would name a position in the new numbering and its client would silently skip
//! events. So a new topic's numbering starts after `ms * 2^20`, `ms` being the
//! milliseconds since the shard started: every number of a new life is above every
//! number of an earlier one (unless a topic took a million publishes in one
//! millisecond), so an old id is "older than the history" and gets `event: reset`.
//!
//! # The memory budget (`--history-memory`)
//!
//! Retained events and the topics themselves count against this shard's share of the
//! budget ([`history::event_cost`], [`TOPIC_OVERHEAD`]). Past it, the owner evicts, in
//! this order, until it is under again:
//!
//! 1. topics with no subscriber and nothing retained, least recently active first (only
//!    their numbering goes: a client that comes back gets a reset and nothing is lost);
//! 2. the oldest event of the topics without subscribers (a topic emptied so goes as in
//!    1 if the budget is still exceeded);
//! 3. the oldest event of all.
//!
//! A client whose position was evicted gets `event: reset`, then what is retained: never
//! a wrong replay. Subscribed topics themselves are never dropped.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use super::history::{Gap, RecentKeys, TopicLog};
use super::{BusMsg, Published};
use crate::proto::http::Topic;

/// Memory one owned topic costs beyond its name, for the budget: its entries in the
/// name index and the slab, its log and its index entries.
pub const TOPIC_OVERHEAD: usize = 320;

/// How the owner keeps history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerConfig {
    /// Events kept per topic (`--history`).
    pub history: usize,
    /// Forget a topic with no subscriber and no activity this long (`--history-ttl`).
    pub ttl: Option<Duration>,
    /// This shard's share of `--history-memory`, in bytes.
    pub memory: usize,
}

/// What the owner holds and has let go, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnerStats {
    /// Topics owned.
    pub topics: usize,
    /// Bytes counted against the budget (topics and retained events).
    pub bytes: usize,
    /// Events retained.
    pub events: usize,
    /// Topics forgotten after `--history-ttl`.
    pub expired: u64,
    /// Events evicted by the budget.
    pub evicted_events: u64,
    /// Topics evicted by the budget.
    pub evicted_topics: u64,
}

/// A topic this shard owns.
#[derive(Debug)]
struct Owned {
    name: Topic,
    /// Shards with local subscribers.
    shards: Vec<usize>,
    log: TopicLog,
    /// Recent publishes' `Idempotency-Key`s, once one came.
    keys: Option<Box<RecentKeys>>,
    /// The last publish, subscribe, unsubscribe or sync.
    active: Instant,
}

/// Where a topic stands in the eviction and expiry indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Keys {
    idle: bool,
    active: Instant,
    oldest: Option<u64>,
}

/// The topics one shard owns.
#[derive(Debug)]
pub struct Owner {
    cfg: OwnerConfig,
    /// When this shard started: the base of new topics' numbering.
    started: Instant,
    ids: HashMap<Topic, usize>,
    topics: Slab<Owned>,
    /// Topics without subscribing shards, least recently active first (expiry; budget
    /// step 1 looks among them for empty ones).
    idle: BTreeSet<(Instant, usize)>,
    /// Idle topics with nothing retained, least recently active first (budget step 1).
    idle_empty: BTreeSet<(Instant, usize)>,
    /// Topics without subscribers that retain events, by their oldest event's publish
    /// order (budget step 2).
    idle_oldest: BTreeSet<(u64, usize)>,
    /// Subscribed topics that retain events, the same way (budget step 3).
    busy_oldest: BTreeSet<(u64, usize)>,
    /// Publishes numbered so far, across topics: events' publish order.
    order: u64,
    stats: OwnerStats,
}

impl Owner {
    /// No topics yet; numbering is based on `started`.
    pub fn new(cfg: OwnerConfig, started: Instant) -> Owner {
        Owner {
            cfg,
            started,
            ids: HashMap::new(),
            topics: Slab::new(),
            idle: BTreeSet::new(),
            idle_empty: BTreeSet::new(),
            idle_oldest: BTreeSet::new(),
            busy_oldest: BTreeSet::new(),
            order: 0,
            stats: OwnerStats::default(),
        }
    }

    /// What the owner holds and has let go.
    pub fn stats(&self) -> OwnerStats {
        self.stats
    }

    /// Acts on a message for a topic's owner ([`BusMsg::is_for_owner`]); the answers and
    /// forwards go to `out` with the shard each is for. Other messages are ignored.
    pub fn handle(&mut self, now: Instant, msg: BusMsg, out: &mut Vec<(usize, BusMsg)>) {
        match msg {
            BusMsg::Subscribe { topic, shard } => {
                let id = self.topic(now, &topic);
                self.change(id, |o| {
                    o.active = now;
                    if !o.shards.contains(&shard) {
                        o.shards.push(shard);
                    }
                });
            }
            BusMsg::Unsubscribe { topic, shard } => {
                if let Some(&id) = self.ids.get(&topic) {
                    self.change(id, |o| {
                        o.active = now;
                        o.shards.retain(|&s| s != shard);
                    });
                }
            }
            BusMsg::Publish(msg) => self.publish(now, msg, out),
            BusMsg::Sync {
                topic,
                after,
                waiter,
            } => {
                let id = self.topic(now, &topic);
                self.change(id, |o| o.active = now);
                let log = &self.topics[id].log;
                let upto = log.last();
                let (events, gap) = match log.since(after) {
                    Ok(events) => (events, false),
                    // The position is lost: what is retained follows the reset.
                    Err(Gap) => (log.retained(), true),
                };
                let reply = BusMsg::Synced {
                    topic,
                    waiter,
                    upto,
                    events,
                    gap,
                };
                out.push((waiter.shard, reply));
            }
            // The cluster's messages go to a mirror (mirror.rs), never to this owner.
            BusMsg::Deliver { .. }
            | BusMsg::Synced { .. }
            | BusMsg::Ack { .. }
            | BusMsg::Interest { .. }
            | BusMsg::Fetch { .. }
            | BusMsg::Reading { .. }
            | BusMsg::Announced { .. }
            | BusMsg::Fetched { .. }
            | BusMsg::Lost { .. }
            | BusMsg::Refused { .. } => {}
        }
        self.enforce_budget();
    }

    fn publish(&mut self, now: Instant, msg: Arc<Published>, out: &mut Vec<(usize, BusMsg)>) {
        let id = self.topic(now, &msg.topic);
        if let Some(key) = &msg.idempotency_key {
            let keys = self.topics[id].keys.get_or_insert_with(Box::default);
            let before = keys.bytes();
            let seen = keys.get(now, key);
            self.stats.bytes = self.stats.bytes + keys.bytes() - before;
            if let Some(seq) = seen {
                // A retry: answered with the first publish's id, not published again.
                if let Some(w) = msg.ack {
                    out.push((w.shard, BusMsg::Ack { waiter: w, seq }));
                }
                return;
            }
        }
        self.order += 1;
        let order = self.order;
        let mut seq = 0;
        let mut delta: isize = 0;
        self.change(id, |o| {
            o.active = now;
            let before = o.log.bytes();
            seq = o.log.push(msg.clone(), order).0;
            delta = o.log.bytes() as isize - before as isize;
        });
        self.stats.bytes = self.stats.bytes.saturating_add_signed(delta);
        if let (Some(key), Some(keys)) = (&msg.idempotency_key, &mut self.topics[id].keys) {
            let before = keys.bytes();
            keys.insert(now, key.clone(), seq);
            self.stats.bytes = self.stats.bytes + keys.bytes() - before;
        }
        if let Some(w) = msg.ack {
            out.push((w.shard, BusMsg::Ack { waiter: w, seq }));
        }
        for &shard in &self.topics[id].shards {
            out.push((
                shard,
                BusMsg::Deliver {
                    seq,
                    msg: msg.clone(),
                },
            ));
        }
    }

    /// The topic's id, created (numbered from now, see the module docs) on first use.
    fn topic(&mut self, now: Instant, name: &Topic) -> usize {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let first = (now.duration_since(self.started).as_millis() as u64) << 20;
        let id = self.topics.insert(Owned {
            name: name.clone(),
            shards: Vec::new(),
            log: TopicLog::starting_after(self.cfg.history, first),
            keys: None,
            active: now,
        });
        self.ids.insert(name.clone(), id);
        self.stats.topics += 1;
        self.stats.bytes += TOPIC_OVERHEAD + name.as_str().len();
        self.index(id);
        id
    }

    fn keys(&self, id: usize) -> Keys {
        let o = &self.topics[id];
        Keys {
            idle: o.shards.is_empty(),
            active: o.active,
            oldest: o.log.oldest_order(),
        }
    }

    fn index(&mut self, id: usize) {
        let k = self.keys(id);
        if k.idle {
            self.idle.insert((k.active, id));
        }
        match (k.idle, k.oldest) {
            (true, None) => _ = self.idle_empty.insert((k.active, id)),
            (true, Some(o)) => _ = self.idle_oldest.insert((o, id)),
            (false, Some(o)) => _ = self.busy_oldest.insert((o, id)),
            (false, None) => {}
        }
    }

    /// Changes a topic, keeping the indexes and the event count in step.
    fn change(&mut self, id: usize, f: impl FnOnce(&mut Owned)) {
        let before = self.keys(id);
        let len = self.topics[id].log.len();
        f(&mut self.topics[id]);
        self.stats.events = self.stats.events + self.topics[id].log.len() - len;
        if self.keys(id) != before {
            self.remove_keys(id, before);
            self.index(id);
        }
    }

    fn unindex(&mut self, id: usize) {
        self.remove_keys(id, self.keys(id));
    }

    fn remove_keys(&mut self, id: usize, k: Keys) {
        self.idle.remove(&(k.active, id));
        self.idle_empty.remove(&(k.active, id));
        if let Some(o) = k.oldest {
            self.idle_oldest.remove(&(o, id));
            self.busy_oldest.remove(&(o, id));
        }
    }

    /// Forgets a topic.
    fn drop_topic(&mut self, id: usize) {
        self.unindex(id);
        let o = self.topics.remove(id);
        self.ids.remove(&o.name);
        self.stats.topics -= 1;
        self.stats.events -= o.log.len();
        let keys = o.keys.as_ref().map_or(0, |k| k.bytes());
        self.stats.bytes -= TOPIC_OVERHEAD + o.name.as_str().len() + o.log.bytes() + keys;
        if self.topics.is_empty() && self.topics.capacity() > 64 {
            self.topics = Slab::new();
        }
    }

    /// Evicts as the module docs say until the budget holds (or nothing is left to
    /// evict but subscribed topics).
    fn enforce_budget(&mut self) {
        while self.stats.bytes > self.cfg.memory {
            if let Some(&(_, id)) = self.idle_empty.first() {
                self.drop_topic(id);
                self.stats.evicted_topics += 1;
            } else if let Some(&(_, id)) = self
                .idle_oldest
                .first()
                .or_else(|| self.busy_oldest.first())
            {
                let mut freed = 0;
                self.change(id, |o| freed = o.log.pop_oldest().unwrap_or(0));
                self.stats.bytes -= freed;
                self.stats.evicted_events += 1;
            } else {
                break;
            }
        }
    }

    /// Forgets topics with no subscribing shard and no activity for `--history-ttl`.
    pub fn expire(&mut self, now: Instant) {
        let Some(ttl) = self.cfg.ttl else { return };
        while let Some(&(active, id)) = self.idle.first() {
            if now.duration_since(active) < ttl {
                break;
            }
            self.drop_topic(id);
            self.stats.expired += 1;
        }
        if self.ids.capacity() > 64 && self.ids.len() < self.ids.capacity() / 4 {
            self.ids.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::{After, ConnRef};

    fn topic(s: &str) -> Topic {
        Topic::new(s).unwrap()
    }

    fn publish(
        o: &mut Owner,
        now: Instant,
        t: &str,
        payload: usize,
        ack: bool,
    ) -> Vec<(usize, BusMsg)> {
        let msg = Published {
            topic: topic(t),
            text: true,
            payload: vec![b'x'; payload],
            event: None,
            origin: None,
            ack: ack.then_some(ConnRef {
                shard: 3,
                key: 9,
                generation: 1,
            }),
            idempotency_key: None,
        };
        let mut out = Vec::new();
        o.handle(now, BusMsg::Publish(Arc::new(msg)), &mut out);
        out
    }

    fn sync(o: &mut Owner, now: Instant, t: &str, after: After) -> (u64, Vec<u64>, bool) {
        let mut out = Vec::new();
        let waiter = ConnRef {
            shard: 1,
            key: 2,
            generation: 3,
        };
        o.handle(
            now,
            BusMsg::Sync {
                topic: topic(t),
                after,
                waiter,
            },
            &mut out,
        );
        match out.pop() {
            Some((
                1,
                BusMsg::Synced {
                    upto, events, gap, ..
                },
            )) => (upto, events.iter().map(|e| e.0).collect(), gap),
            other => panic!("{other:?}"),
        }
    }

    fn subscribe(o: &mut Owner, now: Instant, t: &str, shard: usize) {
        o.handle(
            now,
            BusMsg::Subscribe {
                topic: topic(t),
                shard,
            },
            &mut Vec::new(),
        );
    }

    fn cfg(history: usize, memory: usize) -> OwnerConfig {
        OwnerConfig {
            history,
            ttl: None,
            memory,
        }
    }

    #[test]
    fn numbers_acks_and_forwards_to_subscribed_shards() {
        let t0 = Instant::now();
        let mut o = Owner::new(cfg(10, 1 << 30), t0);
        subscribe(&mut o, t0, "a", 0);
        subscribe(&mut o, t0, "a", 2);
        subscribe(&mut o, t0, "a", 2);
        let out = publish(&mut o, t0, "a", 3, true);
        let targets: Vec<usize> = out.iter().map(|(s, _)| *s).collect();
        assert_eq!(targets, [3, 0, 2], "the ack, then each shard once");
        let (BusMsg::Ack { seq, .. }, BusMsg::Deliver { seq: d, .. }) = (&out[0].1, &out[1].1)
        else {
            panic!("{out:?}");
        };
        assert_eq!(seq, d);
        // Numbers of a topic's first life start from the shard's clock (here: 0 ms).
        assert_eq!(*seq, 1);
        let (upto, events, gap) = sync(&mut o, t0, "a", After::Seq(0));
        assert_eq!((upto, events, gap), (1, vec![1], false));
        assert_eq!(sync(&mut o, t0, "a", After::Now), (1, vec![], false));
        assert_eq!(sync(&mut o, t0, "a", After::Start), (1, vec![1], false));
        // A position from the future is not ours: a gap, with what is retained.
        assert_eq!(sync(&mut o, t0, "a", After::Seq(7)), (1, vec![1], true));
        o.handle(
            t0,
            BusMsg::Unsubscribe {
                topic: topic("a"),
                shard: 0,
            },
            &mut Vec::new(),
        );
        let out = publish(&mut o, t0, "a", 3, false);
        assert_eq!(out.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_topic_created_again_numbers_above_its_past() {
        let t0 = Instant::now();
        let mut o = Owner::new(
            OwnerConfig {
                history: 10,
                ttl: Some(Duration::from_secs(5)),
                memory: 1 << 30,
            },
            t0,
        );
        for _ in 0..3 {
            publish(&mut o, t0, "a", 1, false);
        }
        assert_eq!(sync(&mut o, t0, "a", After::Now).0, 3);
        o.expire(t0 + Duration::from_secs(4));
        assert_eq!(o.stats().topics, 1, "not yet");
        let t1 = t0 + Duration::from_secs(10);
        o.expire(t1);
        assert_eq!((o.stats().topics, o.stats().expired), (0, 1));
        publish(&mut o, t1, "a", 1, false);
        let (upto, _, _) = sync(&mut o, t1, "a", After::Now);
        assert_eq!(upto, (10_000 << 20) + 1);
        // An id of the old life is older than the history: a gap.
        assert!(sync(&mut o, t1, "a", After::Seq(2)).2);
    }

    #[test]
    fn the_budget_evicts_empty_idle_topics_then_idle_events_then_any() {
        let t0 = Instant::now();
        let one = TOPIC_OVERHEAD + 2 + crate::pubsub::history::EVENT_OVERHEAD + 100 + 2;
        let mut o = Owner::new(cfg(100, 10 * one), t0);
        // A subscribed topic with 3 events, and idle topics with one event each.
        subscribe(&mut o, t0, "s0", 0);
        for _ in 0..3 {
            publish(&mut o, t0, "s0", 100, false);
        }
        for i in 1..=20 {
            let now = t0 + Duration::from_millis(i);
            publish(&mut o, now, &format!("i{i}"), 100, false);
            assert!(o.stats().bytes <= 10 * one, "{:?}", o.stats());
        }
        let s = o.stats();
        assert!(s.evicted_events > 0 && s.evicted_topics > 0, "{s:?}");
        // The subscribed topic kept all of its events; the newest idle ones survived.
        assert_eq!(sync(&mut o, t0, "s0", After::Seq(0)).1.len(), 3);
        assert_eq!(sync(&mut o, t0, "i20", After::Start).1.len(), 1);
        // An evicted idle topic was forgotten: created again, it has nothing, and an
        // old position of it is a gap.
        let (_, events, gap) = sync(&mut o, t0 + Duration::from_millis(30), "i1", After::Seq(1));
        assert!(events.is_empty() && gap);
        // Nothing idle left to evict: the oldest events of subscribed topics go.
        let mut o = Owner::new(cfg(100, 3 * one), t0);
        subscribe(&mut o, t0, "s0", 0);
        for _ in 0..10 {
            publish(&mut o, t0, "s0", 100, false);
        }
        let (upto, events, _) = sync(&mut o, t0, "s0", After::Start);
        assert!(
            events.len() < 10 && events.last() == Some(&upto),
            "{events:?}"
        );
        assert!(
            sync(&mut o, t0, "s0", After::Seq(1)).2,
            "event 2 was evicted"
        );
        assert!(o.stats().bytes <= 3 * one);
    }
}
