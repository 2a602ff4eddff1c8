//! The local side: which connections of this shard listen to which topics (WebSockets,
//! event streams, waiting polls), where each event stream and poll stands in each topic,
//! and what each must be sent: live events ([`Local::deliver`]), and after the owner's
//! answer to a `Sync`, a replay or a reset ([`Local::synced`]).
//!
//! # The subscriber index
//!
//! Each topic with local subscribers keeps a dense list of members; each connection
//! keeps, per topic, its position in that list. Leaving swaps the last member into the
//! freed place and fixes that member's position: O(1), so 200,000 subscribers of one
//! topic leaving at once cost 200,000 steps, not 200,000² / 2 (the `Vec::retain` this
//! replaced took 10 s to drain them). A delivery walks the dense list.
//!
//! # Positions and resets
//!
//! An event stream's position is one sequence number per topic, sent to the client as
//! the event id ([`Cursor`]). A client that comes back with `Last-Event-ID` resumes
//! each topic after its number. `Last-Event-ID: 0` (and a poll's `since=0`) asks for
//! everything still retained. A position that cannot be honoured (evicted, another
//! epoch, not one of ours) gets `event: reset` (a poll: `"reset":true`), followed by
//! what is retained, so the client loses as little as possible.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use slab::Slab;

use super::{After, BusMsg, ConnRef, Published, owner};
use crate::proto::http::Topic;
use crate::proto::sse::Cursor;

/// A connection's key in its shard's slab.
pub type Key = u32;

/// A subscriber, as the driver knows it: its key and the key's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The connection's key.
    pub key: Key,
    /// The key's generation when it subscribed (the driver checks it is still the one).
    pub generation: u32,
}

/// What one subscriber is to be sent for a delivered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery<'a> {
    /// A WebSocket: the message as a frame.
    Ws,
    /// A single-topic event stream: the event with the topic's sequence number as id.
    SseSingle,
    /// A stream of several topics: the event with this id (the stream's new position).
    SseMulti(&'a Cursor),
    /// A poll waiting for this event: answer it with the event ([`Local::leave`] then).
    Poll,
}

/// What to do once a topic's owner answered where a stream or poll stands.
#[derive(Debug)]
pub enum Synced {
    /// An event stream: write the reset notice (with this id) if any, then the events,
    /// each with its id; live events follow.
    Stream {
        /// The id for an `event: reset` to write first, if the position was lost.
        reset: Option<Cursor>,
        /// The replayed events, oldest first, each with the stream's id after it.
        events: Vec<(Cursor, Arc<Published>)>,
    },
    /// A poll to answer now ([`Local::leave`] then).
    Answer(PollAnswer),
    /// A long poll that waits for an event or until this long has passed.
    Wait(Duration),
    /// Nothing to do (the connection left, or this topic is synced already).
    Nothing,
}

/// A poll's answer: `{"events":[...],"next":ID}` plus `"reset":true`.
#[derive(Debug, Clone)]
pub struct PollAnswer {
    /// The events, oldest first.
    pub events: Vec<(u64, Arc<Published>)>,
    /// The position after them.
    pub next: u64,
    /// The client's position was lost.
    pub reset: bool,
}

/// How an event stream started, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// With a valid `Last-Event-ID` of ours.
    pub resume: bool,
    /// With one that is not ours (it gets resets).
    pub unknown: bool,
}

/// A topic with members on this shard.
#[derive(Debug)]
struct LocalTopic {
    name: Topic,
    members: Vec<Member>,
}

/// One topic of a stream: where it stands.
#[derive(Debug, Clone, Copy)]
struct StreamTopic {
    topic: u32,
    /// This connection's place in the topic's member list.
    pos: u32,
    /// The last sequence number written.
    seq: u64,
    /// The owner's answer to `Sync` has arrived.
    synced: bool,
}

#[derive(Debug)]
struct Stream {
    topics: Vec<StreamTopic>,
    /// The client's `Last-Event-ID` was not one of ours (another epoch, another topic
    /// list, garbage): every topic starts with `event: reset`.
    reset: bool,
}

#[derive(Debug)]
struct Poll {
    topic: u32,
    pos: u32,
    /// The position to answer from (`None`: the current one, once known).
    after: Option<u64>,
    reset: bool,
    wait: Option<Duration>,
    synced: bool,
}

/// What a connection is subscribed to.
#[derive(Debug)]
enum Client {
    None,
    Ws { topic: u32, pos: u32 },
    Sse(Box<Stream>),
    Poll(Box<Poll>),
}

/// The subscribers of one shard.
#[derive(Debug)]
pub struct Local {
    shard: usize,
    shards: usize,
    epoch: u32,
    ids: HashMap<Topic, u32>,
    topics: Slab<LocalTopic>,
    /// By connection key.
    clients: Vec<Client>,
}

impl Local {
    /// No subscribers yet, on shard `shard` of `shards`, ids in `epoch`.
    pub fn new(shard: usize, shards: usize, epoch: u32) -> Local {
        Local {
            shard,
            shards,
            epoch,
            ids: HashMap::new(),
            topics: Slab::new(),
            clients: Vec::new(),
        }
    }

    /// The WebSocket topic of connection `key`, if it is one (`/ws/{topic}`).
    pub fn ws_topic(&self, key: Key) -> Option<&Topic> {
        match self.clients.get(key as usize) {
            Some(Client::Ws { topic, .. }) => Some(&self.topics[*topic as usize].name),
            _ => None,
        }
    }

    /// `GET /ws/{topic}`: the connection gets every message published to `topic`.
    pub fn open_ws(&mut self, m: Member, topic: Topic, out: &mut Vec<(usize, BusMsg)>) {
        let (topic, pos) = self.join(m, topic, out);
        *self.client(m.key) = Client::Ws { topic, pos };
    }

    /// An event stream of `topics`, resuming from `last_event_id`: subscribes to each
    /// topic, then asks each owner where the stream stands (`Sync`).
    pub fn open_sse(
        &mut self,
        m: Member,
        topics: Vec<Topic>,
        last_event_id: Option<&str>,
        out: &mut Vec<(usize, BusMsg)>,
    ) -> Opened {
        let n = topics.len();
        debug_assert!(
            topics
                .iter()
                .enumerate()
                .all(|(i, t)| !topics[..i].contains(t)),
            "a stream's topics are distinct"
        );
        // Where each topic resumes, and whether the stream starts with resets.
        let (afters, reset): (Vec<After>, bool) = match last_event_id {
            None => (vec![After::Now; n], false),
            Some("0") => (vec![After::Start; n], false),
            Some(id) => match Cursor::parse(id) {
                Some(c) if c.epoch == self.epoch && c.seqs.len() == n => {
                    (c.seqs.into_iter().map(After::Seq).collect(), false)
                }
                _ => (vec![After::Start; n], true),
            },
        };
        let opened = Opened {
            resume: afters.iter().any(|a| matches!(a, After::Seq(_))),
            unknown: reset,
        };
        let mut stream = Stream {
            topics: Vec::with_capacity(n),
            reset,
        };
        let waiter = self.waiter(m);
        for (name, after) in topics.into_iter().zip(afters) {
            let (topic, pos) = self.join(m, name.clone(), out);
            let seq = match after {
                After::Seq(s) => s,
                After::Now | After::Start => 0,
            };
            stream.topics.push(StreamTopic {
                topic,
                pos,
                seq,
                synced: false,
            });
            let owner = owner(&name, self.shards);
            out.push((
                owner,
                BusMsg::Sync {
                    topic: name,
                    after,
                    waiter,
                },
            ));
        }
        *self.client(m.key) = Client::Sse(Box::new(stream));
        opened
    }

    /// `GET /poll/{topic}?since=ID&wait=D`: subscribes (to catch the next event while
    /// waiting) and asks the owner where `since` stands.
    pub fn open_poll(
        &mut self,
        m: Member,
        topic: Topic,
        since: Option<&str>,
        wait: Option<Duration>,
        out: &mut Vec<(usize, BusMsg)>,
    ) {
        let (after, reset) = match since {
            None => (After::Now, false),
            Some("0") => (After::Start, false),
            Some(id) => match Cursor::parse(id) {
                Some(c) if c.epoch == self.epoch && c.seqs.len() == 1 => {
                    (After::Seq(c.seqs[0]), false)
                }
                _ => (After::Start, true),
            },
        };
        let (id, pos) = self.join(m, topic.clone(), out);
        *self.client(m.key) = Client::Poll(Box::new(Poll {
            topic: id,
            pos,
            after: match after {
                After::Seq(s) => Some(s),
                After::Now | After::Start => None,
            },
            reset,
            wait,
            synced: false,
        }));
        let owner = owner(&topic, self.shards);
        let waiter = self.waiter(m);
        out.push((
            owner,
            BusMsg::Sync {
                topic,
                after,
                waiter,
            },
        ));
    }

    /// The connection ended (or its poll was answered): it leaves every topic; a topic
    /// with no member left here is unsubscribed at its owner.
    pub fn leave(&mut self, key: Key, out: &mut Vec<(usize, BusMsg)>) {
        let Some(client) = self.clients.get_mut(key as usize) else {
            return;
        };
        match std::mem::replace(client, Client::None) {
            Client::None => {}
            Client::Ws { topic, pos } => self.part(topic, pos, out),
            Client::Sse(s) => {
                // A stream's topics are distinct (routing drops duplicates), so parting
                // one moves no other member of this stream.
                for t in s.topics {
                    self.part(t.topic, t.pos, out);
                }
            }
            Client::Poll(p) => self.part(p.topic, p.pos, out),
        }
    }

    /// Decides what each local subscriber of `msg.topic` is sent for event `seq`, and
    /// tells `sink`: each WebSocket but the publisher, each stream synced and behind
    /// `seq`, each waiting poll. The sink queues bytes; it must not call back into
    /// `Local` (connections it cuts leave afterwards).
    pub fn deliver(
        &mut self,
        seq: u64,
        msg: &Published,
        mut sink: impl FnMut(Member, Delivery<'_>),
    ) {
        let Some(&topic) = self.ids.get(&msg.topic) else {
            return;
        };
        let mut cursor = Cursor {
            epoch: self.epoch,
            seqs: Vec::new(),
        };
        for &m in &self.topics[topic as usize].members {
            match &mut self.clients[m.key as usize] {
                Client::Ws { .. } => {
                    let own = msg.origin.is_some_and(|o| {
                        o.shard == self.shard && o.key == m.key && o.generation == m.generation
                    });
                    if !own {
                        sink(m, Delivery::Ws);
                    }
                }
                Client::Sse(s) => {
                    let Some(i) = s.topics.iter().position(|t| t.topic == topic) else {
                        continue;
                    };
                    if !s.topics[i].synced || seq <= s.topics[i].seq {
                        continue;
                    }
                    s.topics[i].seq = seq;
                    if s.topics.len() == 1 {
                        sink(m, Delivery::SseSingle);
                    } else {
                        cursor.seqs.clear();
                        cursor.seqs.extend(s.topics.iter().map(|t| t.seq));
                        sink(m, Delivery::SseMulti(&cursor));
                    }
                }
                Client::Poll(p) => {
                    if p.synced && p.after.is_some_and(|a| seq > a) {
                        // Answered once: further events wait for its next poll.
                        p.synced = false;
                        sink(m, Delivery::Poll);
                    }
                }
                Client::None => {}
            }
        }
    }

    /// The owner's answer to a `Sync` of connection `key` (whose generation the caller
    /// checked) for `topic`.
    pub fn synced(
        &mut self,
        key: Key,
        topic: &Topic,
        upto: u64,
        events: Vec<(u64, Arc<Published>)>,
        gap: bool,
    ) -> Synced {
        let Some(&id) = self.ids.get(topic) else {
            return Synced::Nothing;
        };
        let epoch = self.epoch;
        match self.clients.get_mut(key as usize) {
            Some(Client::Sse(s)) => {
                let Some(i) = s.topics.iter().position(|t| t.topic == id) else {
                    return Synced::Nothing;
                };
                if s.topics[i].synced {
                    return Synced::Nothing;
                }
                s.topics[i].synced = true;
                let cursor = |s: &Stream| Cursor {
                    epoch,
                    seqs: s.topics.iter().map(|t| t.seq).collect(),
                };
                let reset = if s.reset || gap {
                    // The notice's id: just before what is retained, so a reconnect
                    // right after it resumes from there.
                    s.topics[i].seq = events.first().map_or(upto, |e| e.0 - 1);
                    Some(cursor(s))
                } else {
                    None
                };
                let mut replay = Vec::with_capacity(events.len());
                for (seq, msg) in events {
                    if seq <= s.topics[i].seq {
                        continue;
                    }
                    s.topics[i].seq = seq;
                    replay.push((cursor(s), msg));
                }
                s.topics[i].seq = s.topics[i].seq.max(upto);
                Synced::Stream {
                    reset,
                    events: replay,
                }
            }
            Some(Client::Poll(p)) => {
                if p.synced || p.topic != id {
                    return Synced::Nothing;
                }
                p.synced = true;
                if gap || p.reset {
                    let next = events.last().map_or(upto, |e| e.0);
                    return Synced::Answer(PollAnswer {
                        events,
                        next,
                        reset: true,
                    });
                }
                if let Some(&(last, _)) = events.last() {
                    return Synced::Answer(PollAnswer {
                        events,
                        next: last,
                        reset: false,
                    });
                }
                let after = *p.after.get_or_insert(upto);
                match p.wait {
                    Some(wait) => Synced::Wait(wait),
                    None => Synced::Answer(PollAnswer {
                        events: Vec::new(),
                        next: after,
                        reset: false,
                    }),
                }
            }
            _ => Synced::Nothing,
        }
    }

    /// Cluster mode: events of `topic` after some live subscribers' positions were lost
    /// (the link was away longer than the history lasts, or Redis lost the topic);
    /// what is retained starts after `floor`. Each event stream live on the topic moves
    /// there and is to be sent `event: reset` with the returned id (then the retained
    /// events and live ones reach it as deliveries); each poll waiting on it gets the
    /// returned answer (a reset). WebSockets carry no position: they go on with what
    /// comes.
    #[allow(clippy::type_complexity)]
    pub fn lost(
        &mut self,
        topic: &Topic,
        floor: u64,
    ) -> (Vec<(Member, Cursor)>, Vec<(Member, PollAnswer)>) {
        let (mut streams, mut polls) = (Vec::new(), Vec::new());
        let Some(&id) = self.ids.get(topic) else {
            return (streams, polls);
        };
        let epoch = self.epoch;
        for &m in &self.topics[id as usize].members {
            match &mut self.clients[m.key as usize] {
                Client::Sse(s) => {
                    let Some(i) = s.topics.iter().position(|t| t.topic == id && t.synced) else {
                        continue;
                    };
                    s.topics[i].seq = floor;
                    let cursor = Cursor {
                        epoch,
                        seqs: s.topics.iter().map(|t| t.seq).collect(),
                    };
                    streams.push((m, cursor));
                }
                Client::Poll(p) if p.synced && p.after.is_some() => {
                    p.synced = false;
                    let answer = PollAnswer {
                        events: Vec::new(),
                        next: floor,
                        reset: true,
                    };
                    polls.push((m, answer));
                }
                _ => {}
            }
        }
        (streams, polls)
    }

    /// A long poll's time is up: its (empty) answer.
    pub fn poll_timed_out(&self, key: Key) -> Option<PollAnswer> {
        match self.clients.get(key as usize) {
            Some(Client::Poll(p)) => Some(PollAnswer {
                events: Vec::new(),
                next: p.after.unwrap_or(0),
                reset: false,
            }),
            _ => None,
        }
    }

    /// Local subscribers of `topic` (for tests and metrics).
    pub fn members(&self, topic: &Topic) -> usize {
        self.ids
            .get(topic)
            .map_or(0, |&id| self.topics[id as usize].members.len())
    }

    fn waiter(&self, m: Member) -> ConnRef {
        ConnRef {
            shard: self.shard,
            key: m.key,
            generation: m.generation,
        }
    }

    fn client(&mut self, key: Key) -> &mut Client {
        let i = key as usize;
        if i >= self.clients.len() {
            self.clients.resize_with(i + 1, || Client::None);
        }
        &mut self.clients[i]
    }

    /// Adds `m` to `name`'s members (subscribing this shard at the owner if it is the
    /// first); returns the topic's id and `m`'s place.
    fn join(&mut self, m: Member, name: Topic, out: &mut Vec<(usize, BusMsg)>) -> (u32, u32) {
        let id = match self.ids.get(&name) {
            Some(&id) => id,
            None => {
                let owner = owner(&name, self.shards);
                out.push((
                    owner,
                    BusMsg::Subscribe {
                        topic: name.clone(),
                        shard: self.shard,
                    },
                ));
                let id = self.topics.insert(LocalTopic {
                    name: name.clone(),
                    members: Vec::new(),
                }) as u32;
                self.ids.insert(name, id);
                id
            }
        };
        let members = &mut self.topics[id as usize].members;
        members.push(m);
        (id, (members.len() - 1) as u32)
    }

    /// Removes the member at `pos` of `topic`: the last member takes its place, and
    /// learns its new one.
    fn part(&mut self, topic: u32, pos: u32, out: &mut Vec<(usize, BusMsg)>) {
        let t = &mut self.topics[topic as usize];
        let last = (t.members.len() - 1) as u32;
        t.members.swap_remove(pos as usize);
        if pos != last {
            let moved = t.members[pos as usize].key;
            self.set_pos(moved, topic, last, pos);
        }
        if self.topics[topic as usize].members.is_empty() {
            let t = self.topics.remove(topic as usize);
            self.ids.remove(&t.name);
            let owner = owner(&t.name, self.shards);
            out.push((
                owner,
                BusMsg::Unsubscribe {
                    topic: t.name,
                    shard: self.shard,
                },
            ));
        }
    }

    /// The member `key` of `topic` that was at `from` is now at `to`.
    fn set_pos(&mut self, key: Key, topic: u32, from: u32, to: u32) {
        match &mut self.clients[key as usize] {
            Client::Ws { topic: t, pos } if *t == topic && *pos == from => *pos = to,
            Client::Poll(p) if p.topic == topic && p.pos == from => p.pos = to,
            Client::Sse(s) => {
                if let Some(t) = s
                    .topics
                    .iter_mut()
                    .find(|t| t.topic == topic && t.pos == from)
                {
                    t.pos = to;
                }
            }
            c => unreachable!("member {key} of topic {topic} at {from} is {c:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(s: &str) -> Topic {
        Topic::new(s).unwrap()
    }

    fn m(key: Key) -> Member {
        Member { key, generation: 1 }
    }

    fn msg(t: &str, origin: Option<ConnRef>) -> Published {
        Published {
            topic: topic(t),
            text: true,
            payload: b"p".to_vec(),
            event: None,
            origin,
            ack: None,
            idempotency_key: None,
        }
    }

    /// Who gets event `seq` of `t`, and how.
    fn deliveries(l: &mut Local, seq: u64, msg: &Published) -> Vec<(Key, String)> {
        let mut got = Vec::new();
        l.deliver(seq, msg, |m, d| {
            let what = match d {
                Delivery::SseMulti(c) => format!("multi {c}"),
                d => format!("{d:?}"),
            };
            got.push((m.key, what));
        });
        got.sort();
        got
    }

    /// Every member's recorded place is where it stands.
    fn consistent(l: &Local) {
        for (id, t) in &l.topics {
            for (pos, mem) in t.members.iter().enumerate() {
                let ok = match &l.clients[mem.key as usize] {
                    Client::Ws { topic, pos: p } => *topic == id as u32 && *p == pos as u32,
                    Client::Poll(p) => p.topic == id as u32 && p.pos == pos as u32,
                    Client::Sse(s) => s
                        .topics
                        .iter()
                        .any(|t| t.topic == id as u32 && t.pos == pos as u32),
                    Client::None => false,
                };
                assert!(ok, "member {mem:?} of {} at {pos}", t.name.as_str());
            }
        }
    }

    #[test]
    fn first_and_last_member_subscribe_and_unsubscribe_the_shard() {
        let mut l = Local::new(1, 4, 7);
        let mut out = Vec::new();
        l.open_ws(m(0), topic("a"), &mut out);
        l.open_ws(m(1), topic("a"), &mut out);
        assert_eq!(out.len(), 1);
        assert!(
            matches!(&out[0], (o, BusMsg::Subscribe { shard: 1, .. }) if *o == owner(&topic("a"), 4))
        );
        out.clear();
        l.leave(0, &mut out);
        assert!(out.is_empty());
        l.leave(1, &mut out);
        assert!(matches!(
            &out[..],
            [(_, BusMsg::Unsubscribe { shard: 1, .. })]
        ));
        assert_eq!(l.members(&topic("a")), 0);
        l.leave(1, &mut out);
        assert_eq!(out.len(), 1, "leaving twice is harmless");
    }

    #[test]
    fn leaving_is_constant_time_and_keeps_places_right() {
        let mut l = Local::new(0, 1, 7);
        let mut out = Vec::new();
        let n = 2000u32;
        for k in 0..n {
            match k % 3 {
                0 => l.open_ws(m(k), topic("a"), &mut out),
                1 => {
                    l.open_sse(m(k), vec![topic("a"), topic("b")], None, &mut out);
                }
                _ => l.open_poll(m(k), topic("a"), None, None, &mut out),
            }
        }
        consistent(&l);
        // Leave in a scrambled order; check the places as members move.
        let mut k = 0u32;
        for i in 0..n {
            k = (k + 1237) % n;
            l.leave(k, &mut out);
            if i % 97 == 0 {
                consistent(&l);
            }
        }
        assert_eq!(l.members(&topic("a")) + l.members(&topic("b")), 0);
        assert!(l.topics.is_empty() && l.ids.is_empty());
    }

    #[test]
    fn deliveries_by_kind() {
        let mut l = Local::new(0, 1, 7);
        let mut out = Vec::new();
        l.open_ws(m(0), topic("a"), &mut out);
        l.open_ws(m(1), topic("a"), &mut out);
        l.open_sse(m(2), vec![topic("a")], None, &mut out);
        l.open_sse(m(3), vec![topic("b"), topic("a")], None, &mut out);
        l.open_poll(
            m(4),
            topic("a"),
            None,
            Some(Duration::from_secs(9)),
            &mut out,
        );
        let from_0 = ConnRef {
            shard: 0,
            key: 0,
            generation: 1,
        };
        // Streams and polls wait for their owner's answer: only WebSockets so far, and
        // never the publisher.
        assert_eq!(
            deliveries(&mut l, 5, &msg("a", Some(from_0))),
            [(1, "Ws".into())]
        );
        assert!(
            matches!(l.synced(2, &topic("a"), 5, vec![], false), Synced::Stream { reset: None, ref events } if events.is_empty())
        );
        assert!(matches!(
            l.synced(3, &topic("a"), 5, vec![], false),
            Synced::Stream { .. }
        ));
        assert!(matches!(
            l.synced(4, &topic("a"), 5, vec![], false),
            Synced::Wait(_)
        ));
        assert!(
            matches!(l.synced(4, &topic("a"), 5, vec![], false), Synced::Nothing),
            "once"
        );
        assert_eq!(
            deliveries(&mut l, 6, &msg("a", None)),
            [
                (0, "Ws".into()),
                (1, "Ws".into()),
                (2, "SseSingle".into()),
                (3, "multi 00000007-0.6".into()),
                (4, "Poll".into()),
            ]
        );
        // Not twice: the streams are at 6, the poll was answered.
        assert_eq!(
            deliveries(&mut l, 6, &msg("a", None)),
            [(0, "Ws".into()), (1, "Ws".into())]
        );
    }

    #[test]
    fn positions_resume_reset_and_start() {
        let mut l = Local::new(0, 1, 7);
        let mut out = Vec::new();
        let p = |_seq: u64| Arc::new(msg("a", None));
        // Resumed with one of our ids: Sync asks for the events after it.
        let o = l.open_sse(m(0), vec![topic("a")], Some("00000007-4"), &mut out);
        assert_eq!(
            o,
            Opened {
                resume: true,
                unknown: false
            }
        );
        assert!(out.iter().any(|(_, b)| matches!(
            b,
            BusMsg::Sync {
                after: After::Seq(4),
                ..
            }
        )));
        let Synced::Stream { reset, events } =
            l.synced(0, &topic("a"), 6, vec![(5, p(5)), (6, p(6))], false)
        else {
            panic!()
        };
        assert!(reset.is_none());
        assert_eq!(
            events
                .iter()
                .map(|(c, _)| c.to_string())
                .collect::<Vec<_>>(),
            ["00000007-5", "00000007-6"]
        );
        // Another epoch: a reset (its id just before what is retained), then that.
        out.clear();
        let o = l.open_sse(m(1), vec![topic("a")], Some("00000008-4"), &mut out);
        assert_eq!(
            o,
            Opened {
                resume: false,
                unknown: true
            }
        );
        assert!(out.iter().any(|(_, b)| matches!(
            b,
            BusMsg::Sync {
                after: After::Start,
                ..
            }
        )));
        let Synced::Stream { reset, events } =
            l.synced(1, &topic("a"), 6, vec![(5, p(5)), (6, p(6))], false)
        else {
            panic!()
        };
        assert_eq!(reset.unwrap().to_string(), "00000007-4");
        assert_eq!(events.len(), 2);
        // 0: everything retained, no reset.
        out.clear();
        l.open_sse(m(2), vec![topic("a")], Some("0"), &mut out);
        assert!(out.iter().any(|(_, b)| matches!(
            b,
            BusMsg::Sync {
                after: After::Start,
                ..
            }
        )));
        // A poll whose position was lost: reset with the retained events.
        l.open_poll(m(3), topic("a"), Some("00000007-1"), None, &mut out);
        let Synced::Answer(a) = l.synced(3, &topic("a"), 6, vec![(5, p(5)), (6, p(6))], true)
        else {
            panic!()
        };
        assert!(a.reset && a.next == 6 && a.events.len() == 2);
        // A poll with nothing new and no wait: answered at once with its position.
        l.open_poll(m(4), topic("a"), Some("00000007-6"), None, &mut out);
        let Synced::Answer(a) = l.synced(4, &topic("a"), 6, vec![], false) else {
            panic!()
        };
        assert!(!a.reset && a.next == 6 && a.events.is_empty());
    }
}
