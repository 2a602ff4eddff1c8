//! The shard's side of pub/sub: it moves requests from its connections into
//! [`Local`](crate::pubsub::local::Local), bus messages between shards and into
//! [`Owner`](crate::pubsub::owner::Owner) or `Local`, and the deliveries they decide into
//! the connections' outboxes, encoded once per form for all of this shard's subscribers.
//! Every decision is in `crate::pubsub`; this file only moves and encodes.
//!
//! A message for this shard itself goes through a queue like one for another shard, and
//! the queue is drained in the event loop ([`Shard::drain_bus`]), never re-entrantly: a
//! subscription is in place before the `Sync` that follows it is answered because the
//! queue is first in, first out.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Conn, Late, Shard};
use crate::proto::close::CloseCode;
use crate::proto::deflate;
use crate::proto::frame::{OpCode, write_frame};
use crate::proto::http::{Status, Topic};
use crate::pubsub::local::{Delivery, Member, PollAnswer, Synced};
use crate::pubsub::{BusMsg, ConnRef, OwnerSide, Published};
use crate::server::feed;
use crate::server::outbox::{Chunk, Push};
use crate::server::timer::At;
use crate::uring::op;
use crate::uring::token::{Kind, Token};

/// How often the owner looks for topics past `--history-ttl`.
pub(super) const TOPIC_SWEEP: Duration = Duration::from_secs(1);

const JSON: &str = "application/json";

impl Shard {
    /// Connection `key` as a subscriber.
    fn member(&self, key: usize) -> Member {
        Member {
            key: key as u32,
            generation: self.conns[key].generation,
        }
    }

    /// Connection `key` as others address it.
    fn conn_ref(&self, key: usize) -> ConnRef {
        ConnRef {
            shard: self.id,
            key: key as u32,
            generation: self.conns[key].generation,
        }
    }

    /// The connection a reference names, if it is still there.
    fn referenced(&self, r: ConnRef) -> Option<usize> {
        let key = r.key as usize;
        self.conns
            .get(key)
            .filter(|c| c.generation == r.generation)
            .map(|_| key)
    }

    /// Sends what `Local` or `Owner` produced.
    fn route(&mut self, out: &mut Vec<(usize, BusMsg)>) {
        for (target, msg) in out.drain(..) {
            self.send_bus(target, msg);
        }
    }

    /// Queues a message for a shard (this one included) and marks it for a wake-up; in
    /// cluster mode, target `peers.len()` is the node's link to Redis.
    pub(super) fn send_bus(&mut self, target: usize, msg: BusMsg) {
        if target == self.peers.len() {
            if let Some(link) = &self.link {
                link.send(msg);
            }
        } else if target == self.id {
            self.own_queue.push_back(msg);
        } else if self.peers[target].send(msg).is_ok() {
            self.wake[target] = true;
        }
    }

    /// Handles every bus message waiting, from other shards and from this one, and the
    /// ones that handling produces for this shard, until none is left.
    pub(super) fn drain_bus(&mut self, now: Instant) {
        loop {
            let msg = match self.own_queue.pop_front() {
                Some(msg) => msg,
                None => match self.inbox.try_recv() {
                    Ok(msg) => msg,
                    Err(_) => return,
                },
            };
            self.on_bus(now, msg);
        }
    }

    fn on_bus(&mut self, now: Instant, msg: BusMsg) {
        if msg.is_for_owner() {
            let mut out = std::mem::take(&mut self.bus_out);
            self.owner.handle(now, msg, &mut out);
            self.route(&mut out);
            self.bus_out = out;
            if let OwnerSide::Node(o) = &self.owner {
                // O(1) here; a cluster mirror's figures are summed once a sweep.
                self.metrics.history(&o.stats());
            }
            return;
        }
        match msg {
            BusMsg::Deliver { seq, msg } => self.deliver(now, seq, &msg),
            BusMsg::Synced {
                topic,
                waiter,
                upto,
                events,
                gap,
            } => self.on_synced(now, waiter, &topic, upto, events, gap),
            BusMsg::Ack { waiter, seq } => {
                if let Some(key) = self.referenced(waiter) {
                    let body = format!("{{\"id\":\"{}\"}}\n", feed::id_text(self.epoch, seq));
                    let c = &mut self.conns[key];
                    c.proto
                        .respond(now, &self.conn_cfg, Status::Ok, JSON, &[], body.as_bytes());
                    self.pump(now, key);
                }
            }
            BusMsg::Refused { waiter } => {
                if let Some(key) = self.referenced(waiter) {
                    let body = b"Redis is unreachable: the publish was not ordered; retry\n";
                    let c = &mut self.conns[key];
                    c.proto.respond(
                        now,
                        &self.conn_cfg,
                        Status::ServiceUnavailable,
                        "text/plain",
                        &[("Retry-After", "1")],
                        body,
                    );
                    self.pump(now, key);
                }
            }
            BusMsg::Lost { topic, floor } => self.lost(now, &topic, floor),
            // Only the link takes these.
            BusMsg::Interest { .. } | BusMsg::Fetch { .. } => {}
            BusMsg::Subscribe { .. }
            | BusMsg::Unsubscribe { .. }
            | BusMsg::Publish(_)
            | BusMsg::Sync { .. }
            | BusMsg::Reading { .. }
            | BusMsg::Announced { .. }
            | BusMsg::Fetched { .. } => unreachable!("handled by the owner above"),
        }
    }

    /// Forgets owned topics past `--history-ttl` (cluster mode: lets idle mirrors go).
    pub(super) fn expire_topics(&mut self, now: Instant) {
        let mut out = std::mem::take(&mut self.bus_out);
        self.owner.sweep(now, &mut out);
        self.route(&mut out);
        self.bus_out = out;
        self.metrics.history(&self.owner.stats());
    }

    /// A WebSocket on `/ws/{topic}`.
    pub(super) fn open_ws(&mut self, key: usize, topic: Topic) {
        let m = self.member(key);
        let mut out = std::mem::take(&mut self.bus_out);
        self.local.open_ws(m, topic, &mut out);
        self.route(&mut out);
        self.bus_out = out;
    }

    /// An event stream: `Local` subscribes it and asks each owner where it stands.
    pub(super) fn open_sse(
        &mut self,
        key: usize,
        topics: Vec<Topic>,
        last_event_id: Option<String>,
    ) {
        let m = self.member(key);
        let mut out = std::mem::take(&mut self.bus_out);
        let opened = self
            .local
            .open_sse(m, topics, last_event_id.as_deref(), &mut out);
        self.route(&mut out);
        self.bus_out = out;
        self.metrics.sse_opened(opened.resume, opened.unknown);
    }

    /// `GET /poll/{topic}?since=ID&wait=D`.
    pub(super) fn open_poll(
        &mut self,
        key: usize,
        topic: Topic,
        since: Option<String>,
        wait: Option<Duration>,
    ) {
        let m = self.member(key);
        let mut out = std::mem::take(&mut self.bus_out);
        self.local
            .open_poll(m, topic, since.as_deref(), wait, &mut out);
        self.route(&mut out);
        self.bus_out = out;
    }

    /// The connection ended (or its poll was answered): it leaves its topics.
    pub(super) fn leave(&mut self, key: usize) {
        self.conns[key].late.set(Late::Poll, None);
        let mut out = std::mem::take(&mut self.bus_out);
        self.local.leave(key as u32, &mut out);
        self.route(&mut out);
        self.bus_out = out;
    }

    /// Answers a poll and ends it (the connection goes on to its next request).
    fn answer_poll(&mut self, now: Instant, key: usize, a: &PollAnswer) {
        let events: Vec<(u64, &Published)> = a.events.iter().map(|(s, m)| (*s, &**m)).collect();
        if a.reset {
            self.metrics.replay_reset();
        }
        self.respond_poll(now, key, &events, a.next, a.reset);
    }

    /// Ends a poll with its JSON answer (the connection goes on to its next request).
    fn respond_poll(
        &mut self,
        now: Instant,
        key: usize,
        events: &[(u64, &Published)],
        next: u64,
        reset: bool,
    ) {
        let body = feed::poll_json(self.epoch, events, next, reset);
        self.leave(key);
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

    /// Cluster mode: live positions in `topic` are lost (see `Local::lost`): each event
    /// stream on it is sent `event: reset` (the retained events follow as deliveries),
    /// each waiting poll answered with a reset.
    fn lost(&mut self, now: Instant, topic: &Topic, floor: u64) {
        let (streams, polls) = self.local.lost(topic, floor);
        for (m, cursor) in streams {
            let key = m.key as usize;
            let Some(c) = self
                .conns
                .get_mut(key)
                .filter(|c| c.generation == m.generation)
            else {
                continue;
            };
            c.take_transmit();
            // A notice: counted, never refused (as a replay's reset).
            c.out.push(Chunk::Owned(feed::id_line(&cursor)), usize::MAX);
            c.out
                .push(Chunk::Owned(feed::reset_body(topic.as_str())), usize::MAX);
            self.metrics.replay_reset();
            self.pump(now, key);
        }
        for (m, answer) in polls {
            if self
                .conns
                .get(m.key as usize)
                .is_some_and(|c| c.generation == m.generation)
            {
                self.answer_poll(now, m.key as usize, &answer);
            }
        }
    }

    /// A long poll's time is up: answer with no events.
    pub(super) fn poll_timed_out(&mut self, now: Instant, key: usize) {
        if let Some(a) = self.local.poll_timed_out(key as u32) {
            self.answer_poll(now, key, &a);
        }
    }

    /// `POST /publish/{topic}`: to the owner, which answers with the id.
    pub(super) fn publish_http(
        &mut self,
        key: usize,
        topic: Topic,
        event: Option<String>,
        idempotency_key: Option<String>,
        body: Vec<u8>,
    ) {
        let text = std::str::from_utf8(&body).is_ok();
        self.metrics.message_in(body.len());
        let msg = Published {
            topic,
            text,
            payload: body,
            event,
            origin: None,
            ack: Some(self.conn_ref(key)),
            idempotency_key: idempotency_key.map(String::into_boxed_str),
        };
        self.publish(Arc::new(msg));
    }

    /// A message from a `/ws/{topic}` client.
    pub(super) fn publish_ws(&mut self, key: usize, text: bool, payload: Vec<u8>) {
        let Some(topic) = self.local.ws_topic(key as u32).cloned() else {
            return;
        };
        let msg = Published {
            topic,
            text,
            payload,
            event: None,
            origin: Some(self.conn_ref(key)),
            ack: None,
            idempotency_key: None,
        };
        self.publish(Arc::new(msg));
    }

    /// To the topic's owner, or in cluster mode to the link (Redis numbers it).
    fn publish(&mut self, msg: Arc<Published>) {
        let target = if self.link.is_some() {
            self.peers.len()
        } else {
            crate::pubsub::owner(&msg.topic, self.peers.len())
        };
        self.send_bus(target, BusMsg::Publish(msg));
    }

    /// The owner's answer for one topic of a stream or poll.
    fn on_synced(
        &mut self,
        now: Instant,
        waiter: ConnRef,
        topic: &Topic,
        upto: u64,
        events: Vec<(u64, Arc<Published>)>,
        gap: bool,
    ) {
        let Some(key) = self.referenced(waiter) else {
            return;
        };
        match self.local.synced(key as u32, topic, upto, events, gap) {
            Synced::Stream { reset, events } => {
                let cap = self.config.max_outbox_bytes;
                let c = &mut self.conns[key];
                // What the state machine queued (the response head) goes first.
                c.take_transmit();
                if let Some(id) = reset {
                    // A reply: counted, never refused.
                    c.out.push(Chunk::Owned(feed::id_line(&id)), usize::MAX);
                    c.out
                        .push(Chunk::Owned(feed::reset_body(topic.as_str())), usize::MAX);
                    self.metrics.replay_reset();
                }
                let mut n = 0;
                let mut truncated = false;
                for (id, msg) in &events {
                    let mut event = feed::id_line(id);
                    event.extend_from_slice(&feed::sse_body(msg));
                    if c.out.push(Chunk::Owned(event), cap) == Push::Overflow {
                        truncated = true;
                        break;
                    }
                    n += 1;
                }
                if n > 0 {
                    self.metrics.replay_hit(n);
                }
                if truncated {
                    // The replay alone passes the outbox cap. What is queued are whole
                    // events: send them, then end the stream; the client resumes from
                    // the last one (each reconnect makes progress).
                    c.proto
                        .close(now, &self.conn_cfg, CloseCode::POLICY_VIOLATION, "");
                }
                self.pump(now, key);
            }
            Synced::Answer(a) => self.answer_poll(now, key, &a),
            Synced::Wait(wait) => {
                self.conns[key]
                    .late
                    .set(Late::Poll, Some(At::new(now + wait)));
                self.pump(now, key);
            }
            Synced::Nothing => {}
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

    /// Event `seq` of a topic with subscribers here: `Local` says who gets what; each
    /// form (WebSocket frame, SSE body, whole single-topic SSE event) is encoded once and
    /// the same bytes queued to every subscriber that takes it.
    fn deliver(&mut self, now: Instant, seq: u64, msg: &Published) {
        let cap = self.config.max_outbox_bytes;
        let epoch = self.epoch;
        let mut ws_frame: Option<Rc<[u8]>> = None;
        // permessage-deflate: the message compressed once per window size a subscriber
        // asked for (almost always one: 15), shared like the plain frame.
        let mut ws_deflated: Vec<(u8, Rc<[u8]>)> = Vec::new();
        let mut sse_body: Option<Rc<[u8]>> = None;
        let mut sse_single: Option<Rc<[u8]>> = None;
        let mut touched = std::mem::take(&mut self.touched);
        let mut polls = Vec::new();
        let Shard {
            local,
            conns,
            metrics,
            conn_cfg,
            ..
        } = self;
        local.deliver(seq, msg, |m, d| {
            let key = m.key as usize;
            let Some(c) = conns.get_mut(key).filter(|c| c.generation == m.generation) else {
                return;
            };
            if d == Delivery::Poll {
                polls.push(key);
                return;
            }
            if !c.proto.can_send() {
                return;
            }
            c.take_transmit();
            let push = match d {
                Delivery::Ws => {
                    let op = if msg.text {
                        OpCode::Text
                    } else {
                        OpCode::Binary
                    };
                    let bits = c
                        .proto
                        .deflate()
                        .map(|d| d.server_window_bits)
                        .filter(|_| msg.payload.len() >= conn_cfg.compression_min_bytes);
                    let frame = match bits {
                        Some(bits) => match ws_deflated.iter().find(|(b, _)| *b == bits) {
                            Some((_, f)) => f,
                            None => {
                                let mut f = Vec::with_capacity(msg.payload.len() / 2 + 10);
                                let z = deflate::write_message(
                                    &mut f,
                                    op,
                                    &msg.payload,
                                    deflate::BROADCAST_LEVEL,
                                    Some(bits),
                                    0,
                                );
                                metrics.deflated(msg.payload.len(), z.then_some(f.len()));
                                ws_deflated.push((bits, f.into()));
                                &ws_deflated[ws_deflated.len() - 1].1
                            }
                        },
                        None => ws_frame.get_or_insert_with(|| {
                            let mut f = Vec::with_capacity(msg.payload.len() + 10);
                            write_frame(&mut f, true, op, &msg.payload);
                            f.into()
                        }),
                    };
                    c.out.push(Chunk::Shared(frame.clone()), cap)
                }
                Delivery::SseSingle => {
                    let whole = sse_single.get_or_insert_with(|| {
                        let mut w = feed::id_line(&crate::proto::sse::Cursor {
                            epoch,
                            seqs: vec![seq],
                        });
                        w.extend_from_slice(&feed::sse_body(msg));
                        w.into()
                    });
                    c.out.push(Chunk::Shared(whole.clone()), cap)
                }
                Delivery::SseMulti(cursor) => {
                    let body = sse_body.get_or_insert_with(|| feed::sse_body(msg).into());
                    let a = c.out.push(Chunk::Owned(feed::id_line(cursor)), cap);
                    let b = c.out.push(Chunk::Shared(body.clone()), cap);
                    if a == Push::Overflow { a } else { b }
                }
                Delivery::Poll => unreachable!("handled above"),
            };
            metrics.message_out(msg.payload.len());
            if push == Push::Overflow {
                Self::cut_slow(c, now, conn_cfg);
                metrics.drop_slow();
            }
            touched.push(key);
        });
        for key in polls {
            // The event itself: the one answer that needs no owner round trip.
            self.respond_poll(now, key, &[(seq, msg)], seq, false);
        }
        for &key in &touched {
            self.pump(now, key);
        }
        touched.clear();
        self.touched = touched;
    }
}

impl Shard {
    /// Wakes every shard sent a bus message this turn, once each: a `MSG_RING` posts a
    /// completion on its ring (key 0), so a shard blocked in its ring wakes and drains
    /// its inbox. Our own ring gets the send's completion (key 1); both are ignored.
    pub(super) fn send_wakes(&mut self) {
        let ring_fds = self.ring_fds.clone();
        let Some(fds) = ring_fds.get() else { return };
        for (target, &fd) in fds.iter().enumerate() {
            if std::mem::take(&mut self.wake[target]) {
                let e = op::msg_ring(fd, Token::new(Kind::Wake, 0, 0).encode())
                    .user_data(Token::new(Kind::Wake, 0, 1).encode());
                self.push(0, e);
            }
        }
    }
}
