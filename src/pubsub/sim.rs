//! A simulated cluster of shards, each an [`Owner`] and a [`Local`], wired by a bus of
//! first-in-first-out queues (one per pair of shards, as the mpsc channels are), under
//! random interleavings of publishes, event streams opening, closing and resuming
//! with their last id, and message deliveries. The property: every stream sees, per
//! topic, exactly the events after its position, in order, without duplicates, or a
//! reset followed by a contiguous run again; a stream still open at the end has every
//! event.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::local::{Delivery, Local, Member, Synced};
use super::owner::{Owner, OwnerConfig};
use super::{BusMsg, ConnRef, Published, owner};
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

struct Cluster {
    owners: Vec<Owner>,
    locals: Vec<Local>,
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
            owners: (0..shards).map(|_| Owner::new(cfg, now)).collect(),
            locals: (0..shards).map(|s| Local::new(s, shards, EPOCH)).collect(),
            queues: BTreeMap::new(),
            streams: Vec::new(),
            next_key: vec![0; shards],
            truth: HashMap::new(),
            pending: HashMap::new(),
            now,
            published: 0,
        }
    }

    fn send(&mut self, from: usize, out: &mut Vec<(usize, BusMsg)>) {
        for (to, msg) in out.drain(..) {
            self.queues.entry((from, to)).or_default().push_back(msg);
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
        };
        let shards = self.owners.len();
        let mut out = vec![(owner(&topic, shards), BusMsg::Publish(Arc::new(msg)))];
        self.send(s, &mut out);
    }

    fn open(&mut self, s: usize, topics: Vec<Topic>, last_id: Option<Cursor>) {
        self.tick();
        let key = self.next_key[s];
        self.next_key[s] += 1;
        let m = Member { key, generation: 7 };
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

    /// Delivers one message of the `pick`-th non-empty queue; false if none.
    fn step(&mut self, pick: usize) -> bool {
        let busy: Vec<(usize, usize)> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if busy.is_empty() {
            return false;
        }
        let (from, to) = busy[pick % busy.len()];
        let msg = self
            .queues
            .get_mut(&(from, to))
            .unwrap()
            .pop_front()
            .unwrap();
        let _ = from;
        self.tick();
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

fn run(shards: usize, topics: usize, history: usize, memory: usize, ops: Vec<Op>) {
    let names: Vec<Topic> = (0..topics)
        .map(|t| Topic::new(&format!("t{t}")).unwrap())
        .collect();
    let mut c = Cluster::new(shards, history, memory);
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
