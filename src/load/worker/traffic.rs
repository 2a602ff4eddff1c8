//! What flows once a connection is open: echo round trips, the broadcast publisher and
//! its pacing, deliveries and their latency, event-stream checks, poll requests.

use std::cmp::Reverse;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::conn::{Cut, Role, Stage};
use super::{
    BROADCAST_WINDOW, HTTP_PIPELINE, HTTP_PUBLISHERS, PHASE_DRAIN, PHASE_RUN, Scenario, Worker,
};
use crate::proto::client::{ClientEvent, CloseKind};

/// Echo loops started per loop turn when the run begins. Starting a million in one
/// turn queued a million sends before the worker read anything: it spent the first
/// 17-24 s sending while the echoes piled up unread in its sockets (the kernel's
/// send path, 98.7 % of its time), so the rate measured the client. A turn's worth
/// at a time lets replies be read, and loops restart, from the first turns.
const ECHO_STARTS_PER_TURN: usize = 4096;
use crate::proto::sse::ParsedEvent;

/// A broadcast payload starts with its send time: nanoseconds since the run's epoch in
/// 20 decimal digits, text so that it reads the same in a WebSocket frame and an SSE
/// `data:` line.
pub const TS_DIGITS: usize = 20;

/// After the send time, the publisher's count of the message (its ordinal), 10 decimal
/// digits, when the payload has room (`--message-bytes` 30 or more): event streams check
/// they missed none by it where event ids are not consecutive (a cluster's), and over
/// many topics it says the message's topic (publish `p` goes to topic `p mod N`).
pub const ORDINAL_DIGITS: usize = 10;

/// The publisher's ordinal a broadcast payload carries, if it does.
fn ordinal(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload.get(TS_DIGITS..TS_DIGITS + ORDINAL_DIGITS)?)
        .ok()?
        .parse()
        .ok()
}

/// The send time a broadcast payload starts with, if it does.
fn timestamp(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload.get(..TS_DIGITS)?)
        .ok()?
        .parse()
        .ok()
}

impl Worker<'_> {
    pub(super) fn on_event(&mut self, now: Instant, key: usize, ev: ClientEvent) {
        // Replies to what was sent in the run still count while draining. The shared
        // phase, not this worker's copy: a message published just after the switch can
        // reach this worker before its loop has seen it (one delivery short, observed).
        let phase = self.shared.phase.load(Ordering::Acquire);
        let running = phase == PHASE_RUN || phase == PHASE_DRAIN;
        let c = &mut self.conns[key];
        match ev {
            ClientEvent::Open => {
                c.stage = Stage::Open;
                let us = now.duration_since(c.started).as_micros() as u64;
                self.stats.handshake_us.saturating_record(us);
                if c.tls.as_ref().is_some_and(|t| t.is_resumed()) {
                    self.stats.tls_resumed += 1;
                }
                if c.was_open {
                    self.stats.reconnects += 1;
                    self.stats.reconnects_on[c.target as usize] += 1;
                    self.stats.reconnect_handshake_us.saturating_record(us);
                    self.stats
                        .reconnect_times
                        .push(now.duration_since(self.shared.epoch));
                }
                if c.cut == Cut::Away {
                    c.cut = Cut::No;
                    self.stats.cut_back += 1;
                }
                c.was_open = true;
                c.opened = true;
                c.attempt = 0;
                self.shared.open.fetch_add(1, Ordering::Relaxed);
                self.shared.open_on[c.target as usize].fetch_add(1, Ordering::Relaxed);
                if running && self.plan.scenario == Scenario::Echo {
                    self.send_echo(now, key);
                }
            }
            ClientEvent::Message { payload, .. } => {
                if !running {
                    return;
                }
                self.stats.received += 1;
                self.stats.received_bytes += payload.len() as u64;
                match self.plan.scenario {
                    Scenario::Echo => {
                        if let Some(at) = c.sent_at.take() {
                            self.stats
                                .latency_us
                                .saturating_record(now.duration_since(at).as_micros() as u64);
                        }
                        self.send_echo(now, key);
                        self.delivered_local += 1;
                    }
                    Scenario::Broadcast | Scenario::Storm => {
                        self.check_topic(key, &payload);
                        self.record_delivery(now, &payload);
                    }
                    Scenario::Idle => {}
                }
            }
            ClientEvent::Event(ParsedEvent { id, event, data }) => {
                // Every event of the stream's life is checked, whatever the phase.
                if let Some(s) = &mut c.stream {
                    // The stream's own count: over N topics, publish p is its topic's
                    // (p / N)th.
                    let ord = ordinal(data.as_bytes()).map(|p| p / self.plan.topics.n);
                    s.seq
                        .observe(&event, id.as_deref(), ord, &mut self.stats.sse);
                    if id.is_some() {
                        s.last_event_id = id;
                    }
                }
                if running && event == "message" {
                    self.stats.received += 1;
                    self.stats.received_bytes += data.len() as u64;
                    self.check_topic(key, data.as_bytes());
                    self.record_delivery(now, data.as_bytes());
                }
            }
            ClientEvent::PollDone => {
                if self.plan.path.contains("wait=") {
                    // Long polling: the next request at once; the server holds it.
                    self.poll_again(key);
                } else {
                    self.polls
                        .push(Reverse((now + self.plan.poll_interval, key)));
                }
            }
            ClientEvent::Closed(kind) => {
                let reason = match kind {
                    CloseKind::Refused(code) => format!("http {code}"),
                    CloseKind::BadHandshake(why) => format!("handshake: {why}"),
                    CloseKind::Closed(code) => format!("closed {code}"),
                    CloseKind::Protocol(why) => format!("protocol: {why}"),
                    CloseKind::Eof => "eof".into(),
                };
                c.error.get_or_insert(reason);
            }
        }
    }

    /// A broadcast message reached a subscriber: its latency from the timestamp it
    /// starts with, in the run's histogram and the current step's.
    pub(super) fn record_delivery(&mut self, now: Instant, payload: &[u8]) {
        if let Some(sent) = timestamp(payload) {
            let at = now.duration_since(self.shared.epoch).as_nanos() as u64;
            let us = at.saturating_sub(sent) / 1000;
            self.stats.latency_us.saturating_record(us);
            let step = self.shared.step.load(Ordering::Relaxed);
            if let Some(h) = self.stats.step_latency_us.get_mut(step) {
                h.saturating_record(us);
            }
        }
        self.delivered_local += 1;
    }

    /// A broadcast subscriber's message, against its topic (by the publish's number).
    fn check_topic(&mut self, key: usize, payload: &[u8]) {
        if !self.plan.check_topics || self.plan.scenario != Scenario::Broadcast {
            return;
        }
        let c = &mut self.conns[key];
        if let (Role::Plain, Some(p)) = (c.role, ordinal(payload)) {
            let k = u64::from(c.topic);
            c.seen
                .observe(&self.plan.topics, k, p, &mut self.stats.topics);
        }
    }

    /// Sends a polling connection's next request.
    pub(super) fn poll_again(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.stage != Stage::Open || c.error.is_some() {
            return;
        }
        if let Some(client) = &mut c.client {
            client.poll_again(&mut c.out);
        }
        self.flush(key);
    }

    pub(super) fn send_echo(&mut self, now: Instant, key: usize) {
        let c = &mut self.conns[key];
        if c.role != Role::Plain || c.stage != Stage::Open || self.phase != PHASE_RUN {
            return;
        }
        if let Some(client) = &mut c.client {
            client.send_message(false, &self.payload, &mut c.out);
            c.sent_at = Some(now);
            self.stats.sent += 1;
            self.sent_local += 1;
        }
    }

    /// The run phase's own work: start echo loops, and pace the broadcast publishers.
    pub(super) fn drive(&mut self, now: Instant) {
        if self.plan.scenario == Scenario::Echo && !self.echo_started {
            if self.echo_pending.is_empty() {
                self.echo_pending = self.conns.iter().map(|(k, _)| k).collect();
            }
            let from = self.echo_pending.len().saturating_sub(ECHO_STARTS_PER_TURN);
            for key in self.echo_pending.split_off(from) {
                // A connection that opened since (a reconnect) has its loop going.
                if self.conns.get(key).is_none_or(|c| c.sent_at.is_some()) {
                    continue;
                }
                self.send_echo(now, key);
                self.flush(key);
            }
            self.echo_started = self.echo_pending.is_empty();
        }
        if self.publishers.is_empty() {
            return;
        }
        // A step is paced from the moment this worker first saw it.
        let published = self.shared.published.load(Ordering::Relaxed);
        let step = self.shared.step.load(Ordering::Acquire);
        if self.step.is_none_or(|(s, ..)| s != step) {
            self.step = Some((step, now, published));
        }
        if self.plan.http_publish() {
            let budget = self.publish_budget(now);
            self.publish_http(now, budget);
            return;
        }
        let key = self.publishers[0];
        if self.conns[key].stage != Stage::Open || self.publish_budget(now) == 0 {
            return;
        }
        self.stamp(now, published);
        let c = &mut self.conns[key];
        if !c.out.is_empty() {
            return;
        }
        if let Some(client) = &mut c.client {
            client.send_message(true, &self.payload, &mut c.out);
            self.stats.sent += 1;
            self.shared.published.fetch_add(1, Ordering::Relaxed);
        }
        self.flush(key);
    }

    /// How many publishes may go now: none between steps, past `--messages`, ahead of
    /// the step's rate, or (broadcast) with 8 messages' worth of deliveries in flight
    /// (8 x subscribers, over however many topics).
    fn publish_budget(&mut self, now: Instant) -> u64 {
        if self.shared.paused.load(Ordering::Acquire) {
            return 0;
        }
        let published = self.shared.published.load(Ordering::Relaxed);
        let mut budget = u64::MAX;
        // A storm's publisher goes at its rate whoever is connected: subscribers that
        // are away must find the events they missed when they come back.
        if self.plan.scenario == Scenario::Broadcast {
            let subscribers = self
                .shared
                .open
                .load(Ordering::Relaxed)
                .saturating_sub(self.publishers.len() as u64)
                .max(1);
            let delivered = self.shared.delivered.load(Ordering::Relaxed);
            // Progress stalls if a subscriber vanished mid-message: after 1 s, go on
            // anyway.
            if delivered != self.last_progress.0 {
                self.last_progress = (delivered, now);
            }
            let n = self.plan.topics.n;
            // Messages every subscriber of their topic has (with one topic, exactly).
            let complete = delivered * n / subscribers;
            let stalled = now.duration_since(self.last_progress.1) > Duration::from_secs(1);
            budget = (complete + BROADCAST_WINDOW * n).saturating_sub(published);
            if stalled {
                self.last_progress = (delivered, now);
                budget = budget.max(1);
            }
        }
        if let Some(max) = self.plan.messages {
            budget = budget.min(max.saturating_sub(published));
        }
        if let Some((step, t0, base)) = self.step {
            if let Some(rate) = self.plan.publish_rates.get(step) {
                // Publish p goes once p < elapsed x rate + 1.
                let allowed = (now.duration_since(t0).as_secs_f64() * rate + 1.0).ceil() as u64;
                budget = budget.min(allowed.saturating_sub(published - base));
            }
        }
        budget
    }

    /// Writes a broadcast payload's send time and its publish's number `p`.
    fn stamp(&mut self, now: Instant, p: u64) {
        let ts = now.duration_since(self.shared.epoch).as_nanos() as u64;
        let digits = format!("{ts:0TS_DIGITS$}");
        self.payload[..TS_DIGITS].copy_from_slice(digits.as_bytes());
        if self.payload.len() >= TS_DIGITS + ORDINAL_DIGITS {
            let digits = format!("{:0ORDINAL_DIGITS$}", p % 10u64.pow(ORDINAL_DIGITS as u32));
            self.payload[TS_DIGITS..TS_DIGITS + ORDINAL_DIGITS].copy_from_slice(digits.as_bytes());
        }
    }

    /// Up to `budget` publishes over the HTTP publishers, round-robin over the topics:
    /// publish `p` to topic `p mod N`, always on publisher `(p mod N) mod C`, so that
    /// each topic's publishes stay in order. Stops at a publisher that is not open or
    /// has [`HTTP_PIPELINE`] unanswered (the next publish must go there).
    fn publish_http(&mut self, now: Instant, budget: u64) {
        let n = self.plan.topics.n;
        let mut touched = [false; HTTP_PUBLISHERS];
        for _ in 0..budget {
            let p = self.shared.published.load(Ordering::Relaxed);
            let k = p % n;
            let j = (k % self.publishers.len() as u64) as usize;
            let key = self.publishers[j];
            let c = &self.conns[key];
            let ready = c.stage == Stage::Open
                && c.error.is_none()
                && c.http
                    .as_ref()
                    .is_some_and(|h| h.in_flight() < HTTP_PIPELINE);
            if !ready {
                break;
            }
            self.stamp(now, p);
            let topic = self.plan.topics.name(k);
            let c = &mut self.conns[key];
            if let Some(http) = &mut c.http {
                http.publish(&topic, &self.payload, &mut c.out);
            }
            self.stats.sent += 1;
            self.shared.published.fetch_add(1, Ordering::Relaxed);
            touched[j] = true;
        }
        for (j, _) in touched.iter().enumerate().filter(|(_, t)| **t) {
            self.flush(self.publishers[j]);
        }
    }
}
