//! The shard's side of pub/sub: local subscribers (WebSockets, event streams, waiting
//! polls), the topics this shard owns (their numbered logs and subscriber shards), and
//! the bus between shards.
//!
//! # Exact replay without a gap
//!
//! An event stream (or a poll) first subscribes its shard to the topic, then asks the
//! owner for its position (`Sync`, with the client's last sequence number if it sent a
//! valid `Last-Event-ID`). The owner answers with the events after that position and
//! `upto`, its last sequence number. Messages between two shards arrive in the order
//! they were sent, so every `Deliver` the owner sends before the answer carries a
//! sequence number at most `upto` (covered by the answer) and every one after it more
//! than `upto`. The stream ignores live events of a topic until the answer arrives,
//! writes the replayed ones, then takes live events whose number is above the last it
//! wrote: nothing missed, nothing twice.
//!
//! # Forgetting topics (`--history-ttl`)
//!
//! Without a TTL an owned topic lives as long as the server. With one, the owner drops a
//! topic that has had no subscribing shard and no publish for the TTL (swept once a
//! second). A client may still hold an id from it; if the topic is created again and
//! numbered 1, 2, 3, ... again, that id would name a position in the new numbering and
//! the client would silently skip events. So with a TTL a new topic's numbering starts
//! after `ms * 2^20`, `ms` being the milliseconds since the shard started: every number of
//! a new life is above every number of the previous one (unless a topic took a million
//! publishes in one millisecond), so an old id is "older than the history" and gets
//! `event: reset`.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Conn, Shard, Sub};
use crate::proto::close::CloseCode;
use crate::proto::frame::{OpCode, write_frame};
use crate::proto::http::{Status, Topic};
use crate::proto::sse::Cursor;
use crate::pubsub::history::TopicLog;
use crate::pubsub::{self, BusMsg, Published, Waiter};
use crate::server::feed;
use crate::server::outbox::{Chunk, Push};

/// A topic this shard owns.
#[derive(Debug)]
pub(super) struct Owned {
    /// Shards with local subscribers.
    shards: Vec<usize>,
    log: TopicLog,
    /// The last publish, subscribe, unsubscribe or sync (for `--history-ttl`).
    active: Instant,
}

/// How often the owner looks for topics past `--history-ttl`.
pub(super) const TOPIC_SWEEP: Duration = Duration::from_secs(1);

/// An event stream's state.
#[derive(Debug)]
pub(super) struct SseSub {
    topics: Vec<Topic>,
    /// The last sequence number written, per topic.
    seqs: Vec<u64>,
    /// The owner's answer to `Sync` has arrived, per topic.
    synced: Vec<bool>,
    /// The client's `Last-Event-ID` was not one of ours (another epoch, another topic
    /// list, garbage): every topic starts with `event: reset`.
    reset: bool,
}

/// A poll waiting for the owner's answer or, when long polling, for an event.
#[derive(Debug)]
pub(super) struct PollSub {
    topic: Topic,
    /// The position to answer from (`None`: the current one, once known).
    after: Option<u64>,
    reset: bool,
    wait: Option<Duration>,
    synced: bool,
}

const JSON: &str = "application/json";

impl Shard {
    fn waiter(&self, key: usize) -> Waiter {
        Waiter {
            shard: self.id,
            key,
            generation: self.conns[key].generation,
        }
    }

    /// The connection a waiter names, if it is still there.
    fn waiting(&self, w: Waiter) -> Option<usize> {
        self.conns
            .get(w.key)
            .filter(|c| c.generation == w.generation)
            .map(|_| w.key)
    }

    pub(super) fn subscribe(&mut self, now: Instant, key: usize, topic: &Topic) {
        let generation = self.conns[key].generation;
        let list = self.subs.entry(topic.clone()).or_default();
        list.push((key, generation));
        if list.len() == 1 {
            let owner = pubsub::owner(topic, self.peers.len());
            let msg = BusMsg::Subscribe {
                topic: topic.clone(),
                shard: self.id,
            };
            self.send_bus(now, owner, msg);
        }
    }

    fn unsubscribe(&mut self, now: Instant, key: usize, topic: &Topic) {
        let Some(list) = self.subs.get_mut(topic) else {
            return;
        };
        list.retain(|&(k, _)| k != key);
        if list.is_empty() {
            self.subs.remove(topic);
            let owner = pubsub::owner(topic, self.peers.len());
            let msg = BusMsg::Unsubscribe {
                topic: topic.clone(),
                shard: self.id,
            };
            self.send_bus(now, owner, msg);
        }
    }

    /// Drops every subscription of a connection that ended or finished its poll.
    pub(super) fn unsubscribe_all(&mut self, now: Instant, key: usize) {
        match std::mem::replace(&mut self.conns[key].sub, Sub::None) {
            Sub::None => {}
            Sub::Ws(topic) => self.unsubscribe(now, key, &topic),
            Sub::Sse(s) => {
                for topic in &s.topics {
                    self.unsubscribe(now, key, topic);
                }
            }
            Sub::Poll(p) => {
                self.conns[key].poll_deadline = None;
                self.unsubscribe(now, key, &p.topic);
            }
        }
    }

    /// A WebSocket on `/ws/{topic}`.
    pub(super) fn open_ws(&mut self, now: Instant, key: usize, topic: Topic) {
        self.subscribe(now, key, &topic);
        self.conns[key].sub = Sub::Ws(topic);
    }

    /// An event stream: subscribe to every topic, then ask each owner for the position.
    pub(super) fn open_sse(
        &mut self,
        now: Instant,
        key: usize,
        topics: Vec<Topic>,
        last_event_id: Option<String>,
    ) {
        let n = topics.len();
        let cursor = last_event_id.as_deref().map(Cursor::parse);
        let (seqs, resume, reset) = match cursor {
            None => (vec![0; n], false, false),
            Some(Some(c)) if c.epoch == self.epoch && c.seqs.len() == n => (c.seqs, true, false),
            Some(_) => (vec![0; n], false, true),
        };
        self.metrics.sse_opened(resume, reset);
        let waiter = self.waiter(key);
        let asks: Vec<(Topic, Option<u64>)> = topics
            .iter()
            .zip(&seqs)
            .map(|(t, &s)| (t.clone(), resume.then_some(s)))
            .collect();
        // The subscription first: a local owner answers `Sync` before `send_bus` returns.
        self.conns[key].sub = Sub::Sse(Box::new(SseSub {
            topics,
            seqs,
            synced: vec![false; n],
            reset,
        }));
        for (topic, after) in asks {
            self.subscribe(now, key, &topic);
            let owner = pubsub::owner(&topic, self.peers.len());
            let msg = BusMsg::Sync {
                topic,
                after,
                waiter,
            };
            self.send_bus(now, owner, msg);
        }
    }

    /// `GET /poll/{topic}?since=ID&wait=D`.
    pub(super) fn open_poll(
        &mut self,
        now: Instant,
        key: usize,
        topic: Topic,
        since: Option<String>,
        wait: Option<Duration>,
    ) {
        let (after, reset) = match since.as_deref().map(Cursor::parse) {
            None => (None, false),
            Some(Some(c)) if c.epoch == self.epoch && c.seqs.len() == 1 => (Some(c.seqs[0]), false),
            Some(_) => (None, true),
        };
        self.subscribe(now, key, &topic);
        let owner = pubsub::owner(&topic, self.peers.len());
        let msg = BusMsg::Sync {
            topic: topic.clone(),
            after,
            waiter: self.waiter(key),
        };
        self.conns[key].sub = Sub::Poll(Box::new(PollSub {
            topic,
            after,
            reset,
            wait,
            synced: false,
        }));
        self.send_bus(now, owner, msg);
    }

    /// Answers a poll and ends it (the connection goes on to its next request).
    fn answer_poll(
        &mut self,
        now: Instant,
        key: usize,
        events: &[(u64, &Published)],
        next: u64,
        reset: bool,
    ) {
        let body = feed::poll_json(self.epoch, events, next, reset);
        self.unsubscribe_all(now, key);
        let c = &mut self.conns[key];
        c.proto.respond(
            now,
            &self.conn_cfg,
            Status::Ok,
            JSON,
            &[("Cache-Control", "no-store")],
            &body,
        );
        self.pump(now, key);
    }

    /// A long poll's time is up: answer with no events.
    pub(super) fn poll_timed_out(&mut self, now: Instant, key: usize) {
        let Sub::Poll(p) = &self.conns[key].sub else {
            return;
        };
        let next = p.after.unwrap_or(0);
        self.answer_poll(now, key, &[], next, false);
    }

    /// `POST /publish/{topic}`: to the owner, which answers with the id.
    pub(super) fn publish_http(
        &mut self,
        now: Instant,
        key: usize,
        topic: Topic,
        event: Option<String>,
        body: Vec<u8>,
    ) {
        let text = std::str::from_utf8(&body).is_ok();
        let ack = Some(self.waiter(key));
        self.metrics.message_in(body.len());
        self.publish(
            now,
            Arc::new(Published {
                topic,
                text,
                payload: body,
                event,
                origin: None,
                ack,
            }),
        );
    }

    /// A message from a `/ws/{topic}` client.
    pub(super) fn publish_ws(&mut self, now: Instant, key: usize, text: bool, payload: Vec<u8>) {
        let Sub::Ws(topic) = &self.conns[key].sub else {
            return;
        };
        let msg = Published {
            topic: topic.clone(),
            text,
            payload,
            event: None,
            origin: Some((self.id, key, self.conns[key].generation)),
            ack: None,
        };
        self.publish(now, Arc::new(msg));
    }

    fn publish(&mut self, now: Instant, msg: Arc<Published>) {
        let owner = pubsub::owner(&msg.topic, self.peers.len());
        self.send_bus(now, owner, BusMsg::Publish(msg));
    }

    /// Sends to a shard's inbox (and marks it for a wake-up), or acts at once when the
    /// target is this shard, so a local subscription is in place before the next publish.
    pub(super) fn send_bus(&mut self, now: Instant, target: usize, msg: BusMsg) {
        if target == self.id {
            return self.on_bus(now, msg);
        }
        if self.peers[target].send(msg).is_ok() {
            self.wake[target] = true;
        }
    }

    pub(super) fn drain_inbox(&mut self, now: Instant) {
        while let Ok(msg) = self.inbox.try_recv() {
            self.on_bus(now, msg);
        }
    }

    /// The topic's state at its owner (this shard), created on first use; marks it
    /// active at `now`.
    fn owned(&mut self, now: Instant, topic: &Topic) -> &mut Owned {
        let (history, ttl, started) = (self.config.history, self.config.history_ttl, self.started);
        let count = self.owned.len() + 1;
        let mut created = false;
        let o = self.owned.entry(topic.clone()).or_insert_with(|| {
            created = true;
            // See "Forgetting topics" in the module docs.
            let first = match ttl {
                Some(_) => (now.duration_since(started).as_millis() as u64) << 20,
                None => 0,
            };
            Owned {
                shards: Vec::new(),
                log: TopicLog::starting_after(history, first),
                active: now,
            }
        });
        o.active = now;
        if created {
            self.metrics.topics(count);
        }
        o
    }

    /// Drops owned topics with no subscribing shard, idle for `--history-ttl`.
    pub(super) fn expire_topics(&mut self, now: Instant) {
        let Some(ttl) = self.config.history_ttl else {
            return;
        };
        let before = self.owned.len();
        self.owned
            .retain(|_, o| !o.shards.is_empty() || now.duration_since(o.active) < ttl);
        if self.owned.len() != before {
            self.metrics
                .topics_expired((before - self.owned.len()) as u64);
            self.metrics.topics(self.owned.len());
        }
        if self.owned.capacity() > 64 && self.owned.len() < self.owned.capacity() / 4 {
            self.owned.shrink_to_fit();
        }
    }

    fn on_bus(&mut self, now: Instant, msg: BusMsg) {
        match msg {
            BusMsg::Subscribe { topic, shard } => {
                let o = self.owned(now, &topic);
                if !o.shards.contains(&shard) {
                    o.shards.push(shard);
                }
            }
            BusMsg::Unsubscribe { topic, shard } => {
                if let Some(o) = self.owned.get_mut(&topic) {
                    o.shards.retain(|&s| s != shard);
                    o.active = now;
                }
            }
            BusMsg::Publish(msg) => {
                let o = self.owned(now, &msg.topic);
                let seq = o.log.push(msg.clone());
                let targets = o.shards.clone();
                if let Some(w) = msg.ack {
                    let ack = BusMsg::Ack {
                        waiter: w,
                        topic: msg.topic.clone(),
                        seq,
                    };
                    self.send_bus(now, w.shard, ack);
                }
                for shard in targets {
                    let deliver = BusMsg::Deliver {
                        seq,
                        msg: msg.clone(),
                    };
                    self.send_bus(now, shard, deliver);
                }
            }
            BusMsg::Deliver { seq, msg } => self.deliver(now, seq, &msg),
            BusMsg::Sync {
                topic,
                after,
                waiter,
            } => {
                let o = self.owned(now, &topic);
                let upto = o.log.last();
                let (events, gap) = match after.map(|a| o.log.since(a)) {
                    None => (Vec::new(), false),
                    Some(Ok(events)) => (events, false),
                    Some(Err(_)) => (Vec::new(), true),
                };
                let reply = BusMsg::Synced {
                    topic,
                    waiter,
                    upto,
                    events,
                    gap,
                };
                self.send_bus(now, waiter.shard, reply);
            }
            BusMsg::Synced {
                topic,
                waiter,
                upto,
                events,
                gap,
            } => self.on_synced(now, waiter, &topic, upto, &events, gap),
            BusMsg::Ack { waiter, topic, seq } => {
                if let Some(key) = self.waiting(waiter) {
                    let _ = topic;
                    let body = format!("{{\"id\":\"{}\"}}\n", feed::id_text(self.epoch, seq));
                    let c = &mut self.conns[key];
                    c.proto
                        .respond(now, &self.conn_cfg, Status::Ok, JSON, &[], body.as_bytes());
                    self.pump(now, key);
                }
            }
        }
    }

    /// The owner's answer for one topic of a stream or poll.
    fn on_synced(
        &mut self,
        now: Instant,
        waiter: Waiter,
        topic: &Topic,
        upto: u64,
        events: &[(u64, Arc<Published>)],
        gap: bool,
    ) {
        let Some(key) = self.waiting(waiter) else {
            return;
        };
        let cap = self.config.max_outbox_bytes;
        let c = &mut self.conns[key];
        // What the state machine queued (the response head) goes first.
        c.take_transmit();
        match &mut c.sub {
            Sub::Sse(s) => {
                let Some(i) = s.topics.iter().position(|t| t == topic) else {
                    return;
                };
                if s.synced[i] {
                    return;
                }
                s.synced[i] = true;
                if s.reset || gap {
                    s.seqs[i] = upto;
                    let id = feed::id_line(&Cursor {
                        epoch: self.epoch,
                        seqs: s.seqs.clone(),
                    });
                    c.out.push(Chunk::Owned(id), usize::MAX);
                    c.out
                        .push(Chunk::Owned(feed::reset_body(topic.as_str())), usize::MAX);
                    self.metrics.replay_reset();
                } else {
                    let mut n = 0;
                    let mut truncated = false;
                    for (seq, msg) in events {
                        if *seq <= s.seqs[i] {
                            continue;
                        }
                        let mut cursor = Cursor {
                            epoch: self.epoch,
                            seqs: s.seqs.clone(),
                        };
                        cursor.seqs[i] = *seq;
                        let mut event = feed::id_line(&cursor);
                        event.extend_from_slice(&feed::sse_body(msg));
                        if c.out.push(Chunk::Owned(event), cap) == Push::Overflow {
                            truncated = true;
                            break;
                        }
                        s.seqs[i] = *seq;
                        n += 1;
                    }
                    if n > 0 {
                        self.metrics.replay_hit(n);
                    }
                    if truncated {
                        // The replay alone passes the outbox cap. What is queued are
                        // whole events: send them, then end the stream; the client
                        // resumes from the last one (each reconnect makes progress).
                        c.proto
                            .close(now, &self.conn_cfg, CloseCode::POLICY_VIOLATION, "");
                    } else {
                        s.seqs[i] = s.seqs[i].max(upto);
                    }
                }
                self.pump(now, key);
            }
            Sub::Poll(p) => {
                if p.synced || &p.topic != topic {
                    return;
                }
                p.synced = true;
                if gap || p.reset {
                    return self.answer_poll(now, key, &[], upto, true);
                }
                let fresh: Vec<(u64, &Published)> =
                    events.iter().map(|(s, m)| (*s, &**m)).collect();
                if let Some(&(last, _)) = fresh.last() {
                    return self.answer_poll(now, key, &fresh, last, false);
                }
                let after = *p.after.get_or_insert(upto);
                match p.wait {
                    Some(wait) => {
                        c.poll_deadline = Some(now + wait);
                        self.pump(now, key);
                    }
                    None => self.answer_poll(now, key, &[], after, false),
                }
            }
            Sub::None | Sub::Ws(_) => {}
        }
    }

    /// The slow-consumer policy (see outbox.rs): drop what is unsent, then close (1008
    /// for a WebSocket; an event stream just ends, and its client resumes with
    /// `Last-Event-ID`).
    pub(super) fn cut_slow(c: &mut Conn, now: Instant, cfg: &crate::proto::conn::ConnConfig) {
        c.out.clear_unsent();
        c.proto
            .close(now, cfg, CloseCode::POLICY_VIOLATION, "slow consumer");
    }

    /// Encodes the event once per form (WebSocket frame, SSE body, whole single-topic
    /// SSE event) and queues the same bytes to every local subscriber.
    fn deliver(&mut self, now: Instant, seq: u64, msg: &Published) {
        let Some(list) = self.subs.remove(&msg.topic) else {
            return;
        };
        let cap = self.config.max_outbox_bytes;
        let mut ws_frame: Option<Rc<[u8]>> = None;
        let mut sse_body: Option<Rc<[u8]>> = None;
        let mut sse_single: Option<Rc<[u8]>> = None;
        let mut touched = Vec::new();
        let mut polls = Vec::new();
        for &(key, generation) in &list {
            let Some(c) = self
                .conns
                .get_mut(key)
                .filter(|c| c.generation == generation)
            else {
                continue;
            };
            if !c.proto.can_send() && !matches!(c.sub, Sub::Poll(_)) {
                continue;
            }
            c.take_transmit();
            let push = match &mut c.sub {
                Sub::Ws(_) => {
                    if msg.origin == Some((self.id, key, generation)) {
                        continue;
                    }
                    let frame = ws_frame.get_or_insert_with(|| {
                        let op = if msg.text {
                            OpCode::Text
                        } else {
                            OpCode::Binary
                        };
                        let mut f = Vec::with_capacity(msg.payload.len() + 10);
                        write_frame(&mut f, true, op, &msg.payload);
                        f.into()
                    });
                    c.out.push(Chunk::Shared(frame.clone()), cap)
                }
                Sub::Sse(s) => {
                    let Some(i) = s.topics.iter().position(|t| *t == msg.topic) else {
                        continue;
                    };
                    if !s.synced[i] || seq <= s.seqs[i] {
                        continue;
                    }
                    s.seqs[i] = seq;
                    if s.topics.len() == 1 {
                        let whole = sse_single.get_or_insert_with(|| {
                            let mut w = feed::id_line(&Cursor {
                                epoch: self.epoch,
                                seqs: vec![seq],
                            });
                            w.extend_from_slice(&feed::sse_body(msg));
                            w.into()
                        });
                        c.out.push(Chunk::Shared(whole.clone()), cap)
                    } else {
                        let body = sse_body.get_or_insert_with(|| feed::sse_body(msg).into());
                        let id = feed::id_line(&Cursor {
                            epoch: self.epoch,
                            seqs: s.seqs.clone(),
                        });
                        let a = c.out.push(Chunk::Owned(id), cap);
                        let b = c.out.push(Chunk::Shared(body.clone()), cap);
                        if a == Push::Overflow { a } else { b }
                    }
                }
                Sub::Poll(p) => {
                    if p.synced && p.after.is_some_and(|a| seq > a) {
                        polls.push(key);
                    }
                    continue;
                }
                Sub::None => continue,
            };
            self.metrics.message_out(msg.payload.len());
            if push == Push::Overflow {
                Self::cut_slow(c, now, &self.conn_cfg);
                self.metrics.drop_slow();
            }
            touched.push(key);
        }
        // Put the list back before anything below can unsubscribe.
        match self.subs.get_mut(&msg.topic) {
            Some(added) => added.extend(list),
            None => {
                self.subs.insert(msg.topic.clone(), list);
            }
        }
        for key in polls {
            self.answer_poll(now, key, &[(seq, msg)], seq, false);
            self.pump(now, key);
        }
        for key in touched {
            self.pump(now, key);
        }
    }
}
