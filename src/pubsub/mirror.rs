//! The owner side in cluster mode: Redis numbers and keeps every topic's events, and a
//! topic's owner shard on each node mirrors the topics this node has subscribers of.
//! Bus messages in ([`Mirror::handle`]), bus messages out, as [`super::owner::Owner`].
//!
//! ```text
//!   shard ──Publish──► Redis link ──(script: XADD + PUBLISH, one step)──► Redis
//!   Redis ──PUBLISH──► Redis link ──Announced──► mirror ──Deliver──► shards
//! ```
//!
//! # One order, exact replay on any node
//!
//! Redis numbers a topic's events when it appends them to the topic's stream and
//! announces each in the same script, so every node receives a topic's events in the
//! order of their numbers. A mirror asks the link to subscribe when the first shard of
//! this node subscribes to the topic (`Interest`), and the link answers with the
//! topic's life and retained events (`Fetched`), read after the subscription was in
//! place: every event later than the answer arrives as `Announced`, and those that
//! arrive before it are held and merged by number. Until then, `Sync`s wait.
//!
//! A position above what the mirror has seen may come from a client that was on a node
//! ahead of this one; the mirror fetches again before it answers, and only a position
//! still ahead after that is a gap. A position below the topic's floor (before its
//! life, or trimmed from the stream) is a gap: `event: reset`, never a wrong replay.
//! When the link comes back after losing Redis it fetches every topic again: events
//! above the mirror's last are delivered (they were missed), and a new life (Redis
//! restarted empty) replaces the old one.
//!
//! A topic without subscribers here is kept for [`LINGER`] before the link
//! unsubscribes, so a poll loop does not subscribe and fetch on every request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::history::{Gap, TopicLog};
use super::{After, BusMsg, ConnRef, Life, Published};
use crate::proto::http::Topic;

/// How long a mirrored topic outlives its last local subscriber.
pub const LINGER: Duration = Duration::from_secs(5);

/// What the mirrors hold, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MirrorStats {
    /// Topics mirrored (subscribed in Redis by this shard's link requests).
    pub topics: usize,
    /// Events retained in the mirrors.
    pub events: usize,
    /// Bytes of retained events.
    pub bytes: usize,
}

#[derive(Debug)]
struct Mirrored {
    /// Shards of this node with subscribers.
    shards: Vec<usize>,
    /// `None` until the first `Fetched`.
    log: Option<TopicLog>,
    /// The life the log mirrors; `None`: Redis holds nothing of the topic.
    life: Option<Life>,
    /// Events announced before the first `Fetched`.
    early: Vec<(u64, Arc<Published>)>,
    /// `Sync`s waiting for a `Fetched`.
    waiting: Vec<(After, ConnRef)>,
    /// A `Fetch` (or the first one, after `Interest`) is outstanding.
    fetching: bool,
    /// Since when no shard subscribes.
    idle_since: Option<Instant>,
}

/// The topics one shard mirrors.
#[derive(Debug)]
pub struct Mirror {
    history: usize,
    /// The bus target of the node's Redis link.
    link: usize,
    topics: HashMap<Topic, Mirrored>,
    order: u64,
}

impl Mirror {
    /// No topics yet; `history` events kept per topic (as Redis keeps), requests for
    /// Redis go to bus target `link`.
    pub fn new(history: usize, link: usize) -> Mirror {
        Mirror {
            history,
            link,
            topics: HashMap::new(),
            order: 0,
        }
    }

    /// What the mirrors hold.
    pub fn stats(&self) -> MirrorStats {
        let mut s = MirrorStats {
            topics: self.topics.len(),
            ..MirrorStats::default()
        };
        for m in self.topics.values() {
            if let Some(log) = &m.log {
                s.events += log.len();
                s.bytes += log.bytes();
            }
        }
        s
    }

    /// Acts on a message for a topic's owner; answers and forwards go to `out`.
    pub fn handle(&mut self, now: Instant, msg: BusMsg, out: &mut Vec<(usize, BusMsg)>) {
        match msg {
            BusMsg::Subscribe { topic, shard } => {
                let m = self.topic(&topic, out);
                m.idle_since = None;
                if !m.shards.contains(&shard) {
                    m.shards.push(shard);
                }
            }
            BusMsg::Unsubscribe { topic, shard } => {
                if let Some(m) = self.topics.get_mut(&topic) {
                    m.shards.retain(|&s| s != shard);
                    if m.shards.is_empty() {
                        m.idle_since = Some(now);
                    }
                }
            }
            BusMsg::Sync {
                topic,
                after,
                waiter,
            } => {
                let link = self.link;
                let m = self.topic(&topic, out);
                match (&m.log, after) {
                    (Some(log), After::Seq(x)) if x > log.last() && !m.fetching => {
                        // Maybe ahead of us: look again before calling it a gap.
                        m.fetching = true;
                        m.waiting.push((after, waiter));
                        out.push((link, BusMsg::Fetch { topic }));
                    }
                    (Some(_), _) if !m.fetching => {
                        let reply = answer(m, &topic, after, waiter);
                        out.push((waiter.shard, reply));
                    }
                    _ => m.waiting.push((after, waiter)),
                }
            }
            BusMsg::Announced { seq, msg } => {
                self.order += 1;
                let order = self.order;
                let Some(m) = self.topics.get_mut(&msg.topic) else {
                    return;
                };
                if m.log.is_none() || m.fetching {
                    // A read is under way: merged with its answer by number.
                    m.early.push((seq, msg));
                    return;
                }
                keep(m, self.history, seq, msg, order, out);
            }
            BusMsg::Fetched {
                topic,
                life,
                events,
            } => self.fetched(&topic, life, events, out),
            BusMsg::Reading { topic } => {
                if let Some(m) = self.topics.get_mut(&topic) {
                    m.fetching = true;
                }
            }
            // Publishes go to the link (the shard sends them there), never to a mirror;
            // the rest are for a subscriber's shard.
            BusMsg::Publish(_)
            | BusMsg::Deliver { .. }
            | BusMsg::Synced { .. }
            | BusMsg::Ack { .. }
            | BusMsg::Interest { .. }
            | BusMsg::Fetch { .. }
            | BusMsg::Lost { .. }
            | BusMsg::Refused { .. } => {}
        }
    }

    /// The topic's entry, created with an `Interest` to the link on first use.
    fn topic(&mut self, topic: &Topic, out: &mut Vec<(usize, BusMsg)>) -> &mut Mirrored {
        let link = self.link;
        self.topics.entry(topic.clone()).or_insert_with(|| {
            out.push((
                link,
                BusMsg::Interest {
                    topic: topic.clone(),
                    on: true,
                },
            ));
            Mirrored {
                shards: Vec::new(),
                log: None,
                life: None,
                early: Vec::new(),
                waiting: Vec::new(),
                fetching: true,
                idle_since: None,
            }
        })
    }

    fn fetched(
        &mut self,
        topic: &Topic,
        life: Option<Life>,
        events: Vec<(u64, Arc<Published>)>,
        out: &mut Vec<(usize, BusMsg)>,
    ) {
        let history = self.history;
        let Some(m) = self.topics.get_mut(topic) else {
            return;
        };
        m.fetching = false;
        let had_log = m.log.is_some();
        let born = |l: Option<Life>| l.map(|l| l.born);
        let new_life = born(m.life) != born(life);
        if let Some(log) = &mut m.log {
            // Live subscribers here are at `last` at most. Redis trimmed events after
            // `last` before we could read them (the link was away longer than the
            // history lasts), or lost the life we mirrored: their streams must resync.
            let lost = match (m.life, life) {
                (_, Some(l)) if !new_life => l.floor > log.last(),
                (None, Some(l)) => l.floor >= l.born,
                (None, None) => false,
                (Some(_), _) => true,
            };
            if lost {
                let floor = life.map_or(0, |l| l.floor);
                if !new_life {
                    log.advance_to(floor);
                }
                for &shard in &m.shards {
                    let topic = topic.clone();
                    out.push((shard, BusMsg::Lost { topic, floor }));
                }
            }
        }
        if !had_log || new_life {
            // First sight of the topic, or another life since: the log mirrors Redis as
            // it is now. Clients in the old life get resets.
            m.log = Some(TopicLog::starting_after(
                history,
                life.map_or(0, |l| l.floor),
            ));
        }
        m.life = life;
        // What the read found, then what was announced meanwhile (some of it may be in
        // both, and an announcement may have come before or after the answer): in order.
        let mut all = events;
        all.append(&mut m.early);
        all.sort_by_key(|(seq, _)| *seq);
        all.dedup_by_key(|(seq, _)| *seq);
        for (seq, msg) in all {
            self.order += 1;
            if had_log {
                // Missed while the link was down: the subscribers get them now.
                keep(m, history, seq, msg, self.order, out);
            } else {
                // A first look: subscribers resume from their own positions (Sync).
                if m.life.is_none() {
                    // Redis held nothing when read, so this event, announced after the
                    // read (the link passes on announcements before a read's answer,
                    // also those that came after it), is the first of the topic's life.
                    let life = Life {
                        born: seq,
                        floor: seq - 1,
                    };
                    m.life = Some(life);
                    m.log = Some(TopicLog::starting_after(history, life.floor));
                }
                let log = m.log.as_mut().expect("just set");
                if seq > log.last() {
                    log.insert(seq, msg, self.order);
                }
            }
        }
        for (after, waiter) in std::mem::take(&mut m.waiting) {
            let reply = answer(m, topic, after, waiter);
            out.push((waiter.shard, reply));
        }
    }

    /// Unsubscribes (through the link) topics idle for [`LINGER`].
    pub fn sweep(&mut self, now: Instant, out: &mut Vec<(usize, BusMsg)>) {
        let link = self.link;
        self.topics.retain(|topic, m| {
            let gone = m.waiting.is_empty()
                && m.idle_since
                    .is_some_and(|t| now.duration_since(t) >= LINGER);
            if gone {
                out.push((
                    link,
                    BusMsg::Interest {
                        topic: topic.clone(),
                        on: false,
                    },
                ));
            }
            !gone
        });
    }
}

/// Keeps a live event if it is new and forwards it to the subscribing shards.
fn keep(
    m: &mut Mirrored,
    history: usize,
    seq: u64,
    msg: Arc<Published>,
    order: u64,
    out: &mut Vec<(usize, BusMsg)>,
) {
    let log = m
        .log
        .get_or_insert_with(|| TopicLog::starting_after(history, 0));
    if seq <= log.last() {
        return; // announced and fetched both
    }
    if m.life.is_none() {
        // The topic's first event since Redis held nothing of it: its life starts.
        let life = Life {
            born: seq,
            floor: seq - 1,
        };
        m.life = Some(life);
        *log = TopicLog::starting_after(history, life.floor);
    }
    log.insert(seq, msg.clone(), order);
    for &shard in &m.shards {
        out.push((
            shard,
            BusMsg::Deliver {
                seq,
                msg: msg.clone(),
            },
        ));
    }
}

/// The answer to a `Sync` from a fetched mirror.
fn answer(m: &Mirrored, topic: &Topic, after: After, waiter: ConnRef) -> BusMsg {
    let log = m.log.as_ref().expect("answered only once fetched");
    let lifeless = m.life.is_none() && matches!(after, After::Seq(_));
    let (events, gap) = match log.since(after) {
        Ok(events) if !lifeless => (events, false),
        Ok(_) | Err(Gap) => (log.retained(), true),
    };
    BusMsg::Synced {
        topic: topic.clone(),
        waiter,
        upto: log.last(),
        events,
        gap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINK: usize = 9;

    fn topic(s: &str) -> Topic {
        Topic::new(s).unwrap()
    }

    fn ev(t: &str, i: u8) -> Arc<Published> {
        Arc::new(Published {
            topic: topic(t),
            text: true,
            payload: vec![i],
            event: None,
            origin: None,
            ack: None,
            idempotency_key: None,
        })
    }

    fn waiter(key: u32) -> ConnRef {
        ConnRef {
            shard: 1,
            key,
            generation: 0,
        }
    }

    fn sync(m: &mut Mirror, now: Instant, after: After, key: u32) -> Vec<(usize, BusMsg)> {
        let mut out = Vec::new();
        m.handle(
            now,
            BusMsg::Sync {
                topic: topic("t"),
                after,
                waiter: waiter(key),
            },
            &mut out,
        );
        out
    }

    fn synced(out: &[(usize, BusMsg)]) -> Vec<(u32, Vec<u64>, bool, u64)> {
        out.iter()
            .filter_map(|(_, msg)| match msg {
                BusMsg::Synced {
                    waiter,
                    events,
                    gap,
                    upto,
                    ..
                } => Some((
                    waiter.key,
                    events.iter().map(|e| e.0).collect(),
                    *gap,
                    *upto,
                )),
                _ => None,
            })
            .collect()
    }

    fn delivered(out: &[(usize, BusMsg)]) -> Vec<(usize, u64)> {
        out.iter()
            .filter_map(|(to, msg)| match msg {
                BusMsg::Deliver { seq, .. } => Some((*to, *seq)),
                _ => None,
            })
            .collect()
    }

    fn fetched(life: Option<(u64, u64)>, seqs: &[u64]) -> BusMsg {
        BusMsg::Fetched {
            topic: topic("t"),
            life: life.map(|(born, floor)| Life { born, floor }),
            events: seqs.iter().map(|&s| (s, ev("t", s as u8))).collect(),
        }
    }

    fn subscribe(m: &mut Mirror, now: Instant, shard: usize, out: &mut Vec<(usize, BusMsg)>) {
        let topic = topic("t");
        m.handle(now, BusMsg::Subscribe { topic, shard }, out);
    }

    fn announced(seq: u64) -> BusMsg {
        BusMsg::Announced {
            seq,
            msg: ev("t", seq as u8),
        }
    }

    #[test]
    fn subscribes_once_holds_syncs_and_merges_early_events() {
        let now = Instant::now();
        let mut m = Mirror::new(10, LINK);
        let mut out = Vec::new();
        subscribe(&mut m, now, 0, &mut out);
        subscribe(&mut m, now, 1, &mut out);
        let interests = out
            .iter()
            .filter(|(to, msg)| *to == LINK && matches!(msg, BusMsg::Interest { on: true, .. }))
            .count();
        assert_eq!(interests, 1);
        assert!(
            synced(&sync(&mut m, now, After::Seq(20), 1)).is_empty(),
            "waits"
        );
        out.clear();
        m.handle(now, announced(40), &mut out);
        assert!(delivered(&out).is_empty(), "held until fetched");
        m.handle(now, fetched(Some((10, 9)), &[10, 20, 30, 40]), &mut out);
        assert_eq!(synced(&out), vec![(1, vec![30, 40], false, 40)]);
        assert!(delivered(&out).is_empty(), "40 came with the fetch");
        out.clear();
        m.handle(now, announced(50), &mut out);
        assert_eq!(delivered(&out), vec![(0, 50), (1, 50)]);
    }

    #[test]
    fn ahead_fetches_again_then_gap() {
        let now = Instant::now();
        let mut m = Mirror::new(10, LINK);
        sync(&mut m, now, After::Now, 1);
        let mut out = Vec::new();
        m.handle(now, fetched(Some((10, 9)), &[10, 20]), &mut out);
        assert_eq!(synced(&out), vec![(1, vec![], false, 20)]);
        // A client from a node that saw 30 already.
        let out = sync(&mut m, now, After::Seq(30), 2);
        assert!(matches!(&out[..], [(LINK, BusMsg::Fetch { .. })]));
        let mut out = Vec::new();
        m.handle(now, fetched(Some((10, 9)), &[10, 20, 30, 40]), &mut out);
        assert_eq!(synced(&out), vec![(2, vec![40], false, 40)]);
        // Still ahead after looking again: a position never given out.
        sync(&mut m, now, After::Seq(99), 3);
        let mut out = Vec::new();
        m.handle(now, fetched(Some((10, 9)), &[10, 20, 30, 40]), &mut out);
        assert_eq!(synced(&out), vec![(3, vec![10, 20, 30, 40], true, 40)]);
    }

    #[test]
    fn trimmed_or_lost_positions_reset() {
        let now = Instant::now();
        let mut m = Mirror::new(2, LINK);
        sync(&mut m, now, After::Now, 1);
        let mut out = Vec::new();
        m.handle(now, fetched(Some((10, 20)), &[30, 40]), &mut out);
        let out = sync(&mut m, now, After::Seq(10), 2);
        assert_eq!(synced(&out), vec![(2, vec![30, 40], true, 40)], "trimmed");
        let out = sync(&mut m, now, After::Seq(20), 3);
        assert_eq!(synced(&out), vec![(3, vec![30, 40], false, 40)]);
        // Redis restarted empty: the link comes back and fetches a topic without life.
        let mut out = Vec::new();
        m.handle(now, fetched(None, &[]), &mut out);
        let out = sync(&mut m, now, After::Seq(40), 4);
        let mut out2 = Vec::new();
        if out
            .iter()
            .any(|(_, msg)| matches!(msg, BusMsg::Fetch { .. }))
        {
            m.handle(now, fetched(None, &[]), &mut out2);
        }
        assert_eq!(synced(&out2), vec![(4, vec![], true, 0)], "old life: reset");
        // The new life's first event; old positions still get resets.
        let mut out = Vec::new();
        m.handle(now, announced(100), &mut out);
        assert_eq!(delivered(&out), vec![]);
        let out = sync(&mut m, now, After::Seq(40), 5);
        assert_eq!(synced(&out), vec![(5, vec![100], true, 100)]);
        let out = sync(&mut m, now, After::Seq(99), 6);
        assert_eq!(synced(&out), vec![(6, vec![100], false, 100)]);
    }

    #[test]
    fn missed_while_down_are_delivered_and_idle_topics_go() {
        let now = Instant::now();
        let mut m = Mirror::new(10, LINK);
        let mut out = Vec::new();
        subscribe(&mut m, now, 0, &mut out);
        m.handle(now, fetched(Some((10, 9)), &[10]), &mut out);
        out.clear();
        // The link came back: what Redis took meanwhile reaches the subscribers.
        m.handle(now, fetched(Some((10, 9)), &[10, 20, 30]), &mut out);
        assert_eq!(delivered(&out), vec![(0, 20), (0, 30)]);
        out.clear();
        m.handle(
            now,
            BusMsg::Unsubscribe {
                topic: topic("t"),
                shard: 0,
            },
            &mut out,
        );
        m.sweep(now + LINGER / 2, &mut out);
        assert!(out.is_empty());
        m.sweep(now + LINGER, &mut out);
        assert!(matches!(
            &out[..],
            [(LINK, BusMsg::Interest { on: false, .. })]
        ));
        assert_eq!(m.stats().topics, 0);
    }
}
