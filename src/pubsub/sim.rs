//! A simulated server of shards, each an [`Owner`] and a [`Local`], wired by a bus of
//! first-in-first-out queues (one per pair of shards, as the mpsc channels are), under
//! random interleavings of publishes, event streams opening, closing and resuming
//! with their last id, and message deliveries. The property: every stream sees, per
//! topic, exactly the events after its position, in order, without duplicates, or a
//! reset followed by a contiguous run again; a stream still open at the end has every
//! event.
//!
//! The same for cluster mode: several nodes, each of shards with a [`Mirror`] and a
//! [`Local`], and a model of Redis and of each node's link (`crate::cluster::link`):
//! appends numbered with holes, trimmed to the history, announced to the links
//! subscribed to the topic; a link's announcements and read replies arrive in one
//! order (one connection); a link may be cut (what was in flight is lost, publishes
//! are refused) and come back (it subscribes and reads every topic again). Streams
//! resume on any node.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::local::{Delivery, Local, Member, Synced};
use super::mirror::Mirror;
use super::owner::{Owner, OwnerConfig};
use super::{BusMsg, ConnRef, Life, OwnerSide, Published, owner};
use crate::proto::http::Topic;
use crate::proto::sse::Cursor;

const EPOCH: u32 = 0x5eed;

/// What a stream received, per topic, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Event(u64, Vec<u8>),
    /// A reset whose id put the topic at this position.
    Reset(u64),
}

#[derive(Debug)]
struct Stream {
    shard: usize,
    key: u32,
    generation: u32,
    topics: Vec<Topic>,
    /// Where the stream started, per topic (`None`: live only or from the start).
    start: Vec<Option<u64>>,
    seen: Vec<Vec<Seen>>,
    /// The last id the client saw (its `Last-Event-ID` on reconnect).
    last_id: Option<Cursor>,
    open: bool,
}

#[derive(Debug, Clone)]
enum Op {
    /// Publish on topic `t` from shard `s` (an HTTP publish, acknowledged).
    Publish { s: usize, t: usize },
    /// Open a stream of the topics in `mask` on shard `s`; `resume`: reconnect a closed
    /// stream (the `resume`-th one) with its last id instead.
    Open {
        s: usize,
        mask: u8,
        resume: Option<usize>,
    },
    /// Close the `i`-th open stream.
    Close { i: usize },
    /// Deliver up to `n` messages, picking queues by `pick`.
    Step { n: usize, pick: usize },
    /// Cluster mode: node `n`'s link loses Redis.
    Cut { n: usize },
    /// Cluster mode: node `n`'s link connects again.
    Reconnect { n: usize },
}

fn op(shards: usize, topics: usize) -> impl Strategy<Value = Op> {
    let t_mask = (1u8 << topics) - 1;
    prop_oneof![
        4 => (0..shards, 0..topics).prop_map(|(s, t)| Op::Publish { s, t }),
        2 => (0..shards, 1..=t_mask, proptest::option::of(0usize..8))
            .prop_map(|(s, mask, resume)| Op::Open { s, mask, resume }),
        1 => (0usize..8).prop_map(|i| Op::Close { i }),
        4 => (1usize..12, 0usize..64).prop_map(|(n, pick)| Op::Step { n, pick }),
    ]
}

/// Redis, as the cluster sees it: per topic the retained events, the last trimmed id
/// and the life's first id.
#[derive(Debug, Default)]
struct Redis {
    streams: HashMap<Topic, VecDeque<(u64, Arc<Published>)>>,
    trimmed: HashMap<Topic, u64>,
    born: HashMap<Topic, u64>,
    last: u64,
    history: usize,
}

impl Redis {
    fn append(&mut self, msg: Arc<Published>) -> u64 {
        // Ids with holes, as stream ids are (ms << 20 | seq).
        self.last += 3;
        let id = self.last;
        self.born.entry(msg.topic.clone()).or_insert(id);
        let topic = msg.topic.clone();
        let s = self.streams.entry(topic.clone()).or_default();
        s.push_back((id, msg));
        while s.len() > self.history {
            let (gone, _) = s.pop_front().unwrap();
            self.trimmed.insert(topic.clone(), gone);
        }
        id
    }

    fn read(&self, topic: &Topic) -> BusMsg {
        let life = self.born.get(topic).map(|&born| Life {
            born,
            floor: self.trimmed.get(topic).copied().unwrap_or(0).max(born - 1),
        });
        let events = self
            .streams
            .get(topic)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        BusMsg::Fetched {
            topic: topic.clone(),
            life,
            events,
        }
    }
}

/// A node's link: its subscriptions in Redis and its connection's incoming stream
/// (announcements and read replies, in one order).
#[derive(Debug, Default)]
struct LinkSim {
    interest: BTreeSet<Topic>,
    subscribed: BTreeSet<Topic>,
    incoming: VecDeque<BusMsg>,
    up: bool,
}

struct Cluster {
    owners: Vec<OwnerSide>,
    locals: Vec<Local>,
    /// Shards per node (all of them when not in cluster mode).
    per_node: usize,
    /// Cluster mode: one link per node, and Redis.
    links: Vec<LinkSim>,
    redis: Redis,
    /// (from, to) -> messages in flight.
    queues: BTreeMap<(usize, usize), VecDeque<BusMsg>>,
    streams: Vec<Stream>,
    /// Per shard, the generation of each key in use (keys are never reused here).
    next_key: Vec<u32>,
    /// Ground truth from the acks: topic -> seq -> payload.
    truth: HashMap<Topic, BTreeMap<u64, Vec<u8>>>,
    /// Publish payloads waiting for their ack: (shard, key) -> (topic, payload).
    pending: HashMap<(usize, u32), (Topic, Vec<u8>)>,
    now: Instant,
    published: u32,
}

impl Cluster {
    fn new(shards: usize, history: usize, memory: usize) -> Cluster {
        let now = Instant::now();
        let cfg = OwnerConfig {
            history,
            ttl: None,
            memory,
        };
        Cluster {
            owners: (0..shards)
                .map(|_| OwnerSide::Node(Box::new(Owner::new(cfg, now))))
                .collect(),
            locals: (0..shards).map(|s| Local::new(s, shards, EPOCH)).collect(),
            per_node: shards,
            links: Vec::new(),
            redis: Redis::default(),
            queues: BTreeMap::new(),
            streams: Vec::new(),
            next_key: vec![0; shards],
            truth: HashMap::new(),
            pending: HashMap::new(),
            now,
            published: 0,
        }
    }

    /// `nodes` nodes of `per_node` shards over one Redis keeping `history` events.
    fn over_redis(nodes: usize, per_node: usize, history: usize) -> Cluster {
        let mut c = Cluster::new(nodes * per_node, history, 1 << 30);
        c.per_node = per_node;
        c.owners = (0..nodes * per_node)
            .map(|_| OwnerSide::Cluster(Mirror::new(history, per_node)))
            .collect();
        c.locals = (0..nodes * per_node)
            .map(|g| Local::new(g % per_node, per_node, EPOCH))
            .collect();
        c.links = (0..nodes)
            .map(|_| LinkSim {
                up: true,
                ..LinkSim::default()
            })
            .collect();
        c.redis.history = history;
        c
    }

    /// The queue id of node `n`'s link (after every shard's).
    fn link_id(&self, n: usize) -> usize {
        self.owners.len() + n
    }

    /// Queues what shard `from` produced; targets are shard indexes within its node
    /// (`per_node`: its link).
    fn send(&mut self, from: usize, out: &mut Vec<(usize, BusMsg)>) {
        let node = from / self.per_node;
        for (to, msg) in out.drain(..) {
            let to = if to == self.per_node {
                self.link_id(node)
            } else {
                node * self.per_node + to
            };
            self.queues.entry((from, to)).or_default().push_back(msg);
        }
    }

    /// A link's message to shard `local` of its node.
    fn link_to_shard(&mut self, n: usize, local: usize, msg: BusMsg) {
        let (from, to) = (self.link_id(n), n * self.per_node + local);
        self.queues.entry((from, to)).or_default().push_back(msg);
    }

    /// The link of node `n` takes a shard's request.
    fn link_request(&mut self, n: usize, msg: BusMsg) {
        match msg {
            BusMsg::Publish(msg) => {
                let w = msg.ack.expect("the sim publishes over HTTP");
                if !self.links[n].up {
                    self.link_to_shard(n, w.shard, BusMsg::Refused { waiter: w });
                    return;
                }
                let seq = self.redis.append(msg.clone());
                for l in &mut self.links {
                    if l.up && l.subscribed.contains(&msg.topic) {
                        l.incoming.push_back(BusMsg::Announced {
                            seq,
                            msg: msg.clone(),
                        });
                    }
                }
                self.link_to_shard(n, w.shard, BusMsg::Ack { waiter: w, seq });
            }
            BusMsg::Interest { topic, on } => {
                let l = &mut self.links[n];
                if on {
                    l.interest.insert(topic.clone());
                    if l.up {
                        l.subscribed.insert(topic.clone());
                        let read = self.redis.read(&topic);
                        self.links[n].incoming.push_back(read);
                    }
                } else {
                    l.interest.remove(&topic);
                    l.subscribed.remove(&topic);
                }
            }
            BusMsg::Fetch { topic } => {
                if self.links[n].up {
                    let read = self.redis.read(&topic);
                    self.links[n].incoming.push_back(read);
                }
            }
            other => unreachable!("a link got {other:?}"),
        }
    }

    /// The link of node `n` passes on what its connection brought. With `early`, a read's
    /// answer waits for the announcements that came after it (the real link passes on
    /// every announcement it has before a read's answer, also those that arrived after).
    fn link_incoming(&mut self, n: usize, early: bool) -> bool {
        let front_is_read = matches!(self.links[n].incoming.front(), Some(BusMsg::Fetched { .. }));
        if early && front_is_read {
            let later = self.links[n]
                .incoming
                .iter()
                .skip(1)
                .take_while(|m| matches!(m, BusMsg::Announced { .. }))
                .count();
            if later > 0 {
                let read = self.links[n].incoming.pop_front().unwrap();
                self.links[n].incoming.insert(later, read);
            }
        }
        let Some(msg) = self.links[n].incoming.pop_front() else {
            return false;
        };
        let topic = match &msg {
            BusMsg::Announced { msg, .. } => msg.topic.clone(),
            BusMsg::Fetched { topic, .. } => topic.clone(),
            other => unreachable!("incoming {other:?}"),
        };
        let local = owner(&topic, self.per_node);
        self.link_to_shard(n, local, msg);
        true
    }

    /// Node `n`'s link loses Redis: subscriptions and whatever was in flight go.
    fn cut(&mut self, n: usize) {
        let l = &mut self.links[n];
        l.up = false;
        l.subscribed.clear();
        l.incoming.clear();
    }

    /// Node `n`'s link is back: it subscribes to every topic of interest and reads it.
    fn reconnect(&mut self, n: usize) {
        if self.links[n].up {
            return;
        }
        let l = &mut self.links[n];
        l.up = true;
        l.subscribed = l.interest.clone();
        let topics: Vec<Topic> = l.interest.iter().cloned().collect();
        for t in &topics {
            let local = owner(t, self.per_node);
            self.link_to_shard(n, local, BusMsg::Reading { topic: t.clone() });
        }
        for t in topics {
            let read = self.redis.read(&t);
            self.links[n].incoming.push_back(read);
        }
    }

    fn tick(&mut self) {
        self.now += Duration::from_millis(1);
    }

    fn publish(&mut self, s: usize, topic: Topic) {
        self.tick();
        self.published += 1;
        let key = 1_000_000 + self.published;
        let payload = self.published.to_be_bytes().to_vec();
        self.pending
            .insert((s, key), (topic.clone(), payload.clone()));
        let msg = Published {
            topic: topic.clone(),
            text: false,
            payload,
            event: None,
            origin: None,
            ack: Some(ConnRef {
                shard: s,
                key,
                generation: 0,
            }),
            idempotency_key: None,
        };
        let target = if self.links.is_empty() {
            owner(&topic, self.per_node)
        } else {
            self.per_node // the node's link
        };
        let mut msg = msg;
        if let Some(a) = &mut msg.ack {
            a.shard = s % self.per_node;
        }
        let mut out = vec![(target, BusMsg::Publish(Arc::new(msg)))];
        self.send(s, &mut out);
    }

    fn open(&mut self, s: usize, topics: Vec<Topic>, last_id: Option<Cursor>) {
        self.tick();
        let key = self.next_key[s];
        self.next_key[s] += 1;
        let m = Member { key, generation: 7 };
        // Local addresses its node's shards by their index in the node.
        let id_text = last_id.as_ref().map(Cursor::to_string);
        let mut out = Vec::new();
        self.locals[s].open_sse(m, topics.clone(), id_text.as_deref(), &mut out);
        self.send(s, &mut out);
        let n = topics.len();
        self.streams.push(Stream {
            shard: s,
            key,
            generation: 7,
            start: match &last_id {
                Some(c) => c.seqs.iter().map(|&q| Some(q)).collect(),
                None => vec![None; n],
            },
            topics,
            seen: vec![Vec::new(); n],
            last_id,
            open: true,
        });
    }

    fn close(&mut self, i: usize) {
        let st = &mut self.streams[i];
        st.open = false;
        let (s, key) = (st.shard, st.key);
        let mut out = Vec::new();
        self.locals[s].leave(key, &mut out);
        self.send(s, &mut out);
    }

    /// Delivers one message of the `pick`-th non-empty queue (a link's connection is
    /// one of them); false if none.
    fn step(&mut self, pick: usize) -> bool {
        let mut busy: Vec<(usize, usize)> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| *k)
            .collect();
        for (n, l) in self.links.iter().enumerate() {
            if !l.incoming.is_empty() {
                busy.push((usize::MAX, n));
            }
        }
        if busy.is_empty() {
            return false;
        }
        let (from, to) = busy[pick % busy.len()];
        if from == usize::MAX {
            return self.link_incoming(to, pick % 2 == 1);
        }
        let msg = self
            .queues
            .get_mut(&(from, to))
            .unwrap()
            .pop_front()
            .unwrap();
        let _ = from;
        self.tick();
        if to >= self.owners.len() {
            self.link_request(to - self.owners.len(), msg);
            return true;
        }
        if msg.is_for_owner() {
            let mut out = Vec::new();
            self.owners[to].handle(self.now, msg, &mut out);
            self.send(to, &mut out);
            return true;
        }
        match msg {
            BusMsg::Ack { waiter, seq } => {
                let (topic, payload) = self.pending.remove(&(to, waiter.key)).unwrap();
                let prev = self.truth.entry(topic).or_default().insert(seq, payload);
                assert!(prev.is_none(), "seq {seq} numbered twice");
            }
            BusMsg::Lost { topic, floor } => {
                // The shard sends each live stream of the topic a reset.
                let (streams, polls) = self.locals[to].lost(&topic, floor);
                assert!(polls.is_empty(), "the sim has no polls");
                for (m, cursor) in streams {
                    let st = self
                        .streams
                        .iter_mut()
                        .find(|st| st.shard == to && st.key == m.key && st.open)
                        .expect("a live stream");
                    let i = st.topics.iter().position(|t| *t == topic).unwrap();
                    st.seen[i].push(Seen::Reset(cursor.seqs[i]));
                    st.last_id = Some(cursor);
                }
            }
            BusMsg::Refused { waiter } => {
                // Never numbered: not part of any topic.
                self.pending.remove(&(to, waiter.key)).unwrap();
            }
            BusMsg::Deliver { seq, msg } => {
                let streams = &mut self.streams;
                self.locals[to].deliver(seq, &msg, |m, d| {
                    let st = streams
                        .iter_mut()
                        .find(|st| st.shard == to && st.key == m.key && st.open)
                        .expect("deliveries go to open streams");
                    let i = st.topics.iter().position(|t| *t == msg.topic).unwrap();
                    st.seen[i].push(Seen::Event(seq, msg.payload.clone()));
                    let cursor = match d {
                        Delivery::SseSingle => Cursor {
                            epoch: EPOCH,
                            seqs: vec![seq],
                        },
                        Delivery::SseMulti(c) => c.clone(),
                        Delivery::Ws | Delivery::Poll => unreachable!("streams only"),
                    };
                    assert_eq!(cursor.seqs[i], seq);
                    st.last_id = Some(cursor);
                });
            }
            BusMsg::Synced {
                topic,
                waiter,
                upto,
                events,
                gap,
            } => {
                let Some(st) = self
                    .streams
                    .iter_mut()
                    .find(|st| st.shard == to && st.key == waiter.key && st.open)
                else {
                    return true; // the stream closed meanwhile
                };
                assert_eq!(waiter.generation, st.generation);
                let i = st.topics.iter().position(|t| *t == topic).unwrap();
                match self.locals[to].synced(st.key, &topic, upto, events, gap) {
                    Synced::Stream { reset, events } => {
                        if let Some(c) = reset {
                            st.seen[i].push(Seen::Reset(c.seqs[i]));
                            st.last_id = Some(c);
                        }
                        for (c, msg) in events {
                            st.seen[i].push(Seen::Event(c.seqs[i], msg.payload.clone()));
                            st.last_id = Some(c);
                        }
                    }
                    other => panic!("a stream got {other:?}"),
                }
            }
            _ => unreachable!(),
        }
        true
    }

    fn drain(&mut self) {
        for n in 0..self.links.len() {
            self.reconnect(n);
        }
        while self.step(0) {}
    }

    /// The property, for every stream.
    fn check(&self) {
        for (n, st) in self.streams.iter().enumerate() {
            for (i, topic) in st.topics.iter().enumerate() {
                let empty = BTreeMap::new();
                let truth = self.truth.get(topic).unwrap_or(&empty);
                let seen = &st.seen[i];
                // Where the next event must be: after the start position, if resumed.
                let mut expect_after: Option<u64> = st.start[i];
                let mut first = true;
                for s in seen {
                    match s {
                        Seen::Reset(p) => {
                            expect_after = Some(*p);
                            first = false;
                        }
                        Seen::Event(seq, payload) => {
                            assert_eq!(
                                truth.get(seq),
                                Some(payload),
                                "stream {n} topic {topic:?}: event {seq} is not what was published"
                            );
                            match expect_after {
                                Some(a) => {
                                    let next = truth.range(a + 1..).next().map(|(k, _)| *k);
                                    assert_eq!(
                                        Some(*seq),
                                        next,
                                        "stream {n} topic {topic:?}: after {a} came {seq} ({seen:?})"
                                    );
                                }
                                None => assert!(first, "a stream always knows its position"),
                            }
                            expect_after = Some(*seq);
                            first = false;
                        }
                    }
                }
                if st.open {
                    // Drained: an open stream has everything.
                    let last = truth.keys().next_back().copied();
                    let got = seen.iter().rev().find_map(|s| match s {
                        Seen::Event(q, _) => Some(*q),
                        Seen::Reset(_) => None,
                    });
                    if let (Some(last), Some(after)) = (last, expect_after) {
                        assert!(
                            after >= last,
                            "stream {n} topic {topic:?} ends at {got:?}, the topic at {last}"
                        );
                    }
                }
            }
        }
    }
}

/// Ops for `nodes` nodes of `per_node` shards: shard numbers are global.
fn op_cluster(nodes: usize, per_node: usize, topics: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => op(nodes * per_node, topics),
        1 => (0..nodes).prop_map(|n| Op::Cut { n }),
        1 => (0..nodes).prop_map(|n| Op::Reconnect { n }),
    ]
}

fn run(shards: usize, topics: usize, history: usize, memory: usize, ops: Vec<Op>) {
    run_on(Cluster::new(shards, history, memory), topics, ops);
}

fn run_on(mut c: Cluster, topics: usize, ops: Vec<Op>) {
    let names: Vec<Topic> = (0..topics)
        .map(|t| Topic::new(&format!("t{t}")).unwrap())
        .collect();
    for op in ops {
        match op {
            Op::Publish { s, t } => c.publish(s, names[t].clone()),
            Op::Open { s, mask, resume } => {
                let closed: Vec<usize> = (0..c.streams.len())
                    .filter(|&i| !c.streams[i].open && c.streams[i].last_id.is_some())
                    .collect();
                match resume.filter(|_| !closed.is_empty()) {
                    Some(r) => {
                        let old = &c.streams[closed[r % closed.len()]];
                        let (topics, last) = (old.topics.clone(), old.last_id.clone());
                        c.open(s, topics, last);
                    }
                    None => {
                        let ts: Vec<Topic> = (0..topics)
                            .filter(|t| mask & (1 << t) != 0)
                            .map(|t| names[t].clone())
                            .collect();
                        c.open(s, ts, None);
                    }
                }
            }
            Op::Close { i } => {
                let open: Vec<usize> = (0..c.streams.len())
                    .filter(|&i| c.streams[i].open)
                    .collect();
                if !open.is_empty() {
                    c.close(open[i % open.len()]);
                }
            }
            Op::Step { n, pick } => {
                for k in 0..n {
                    if !c.step(pick + k) {
                        break;
                    }
                }
            }
            Op::Cut { n } => c.cut(n),
            Op::Reconnect { n } => c.reconnect(n),
        }
    }
    c.drain();
    c.check();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Enough history: every resume is exact.
    #[test]
    fn streams_see_every_event_once_in_order(
        shards in 1usize..=3,
        ops in proptest::collection::vec(op(3, 3), 1..80),
    ) {
        let ops = ops.into_iter().map(|o| clamp(o, shards)).collect();
        run(shards, 3, 1024, 1 << 30, ops);
    }

    /// Little history and a tight memory budget: positions get lost; a stream then gets
    /// a reset and a contiguous run again, never a wrong or repeated event.
    #[test]
    fn lost_positions_reset_never_replay_wrong(
        shards in 1usize..=3,
        history in 0usize..4,
        ops in proptest::collection::vec(op(3, 3), 1..80),
    ) {
        let ops = ops.into_iter().map(|o| clamp(o, shards)).collect();
        run(shards, 3, history, 2_000, ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Cluster mode, 3 nodes of 2 shards: streams resume on any node, links get cut
    /// and come back; every resume is exact.
    #[test]
    fn cluster_streams_see_every_event_once_in_order(
        ops in proptest::collection::vec(op_cluster(3, 2, 3), 1..100),
    ) {
        run_on(Cluster::over_redis(3, 2, 1024), 3, ops);
    }

    /// Cluster mode with little history: lost positions reset, never replay wrong.
    #[test]
    fn cluster_lost_positions_reset_never_replay_wrong(
        history in 0usize..4,
        ops in proptest::collection::vec(op_cluster(2, 2, 2), 1..100),
    ) {
        run_on(Cluster::over_redis(2, 2, history), 2, ops);
    }
}

/// Shard numbers drawn for 3 shards, folded into `shards`.
fn clamp(op: Op, shards: usize) -> Op {
    match op {
        Op::Publish { s, t } => Op::Publish { s: s % shards, t },
        Op::Open { s, mask, resume } => Op::Open {
            s: s % shards,
            mask,
            resume,
        },
        other => other,
    }
}
