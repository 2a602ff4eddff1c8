//! What flows once a connection is open: echo round trips, the broadcast publisher and
//! its pacing, deliveries and their latency, event-stream checks, poll requests.

use std::cmp::Reverse;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::conn::{Cut, Role, Stage};
use super::{BROADCAST_WINDOW, PHASE_DRAIN, PHASE_RUN, Scenario, Worker};
use crate::proto::client::{ClientEvent, CloseKind};
use crate::proto::sse::ParsedEvent;

/// A broadcast payload starts with its send time: nanoseconds since the run's epoch in
/// 20 decimal digits, text so that it reads the same in a WebSocket frame and an SSE
/// `data:` line.
pub(super) const TS_DIGITS: usize = 20;

/// After the send time, the publisher's count of the message (its ordinal), 10 decimal
/// digits, when the payload has room (`--message-bytes` 30 or more): event streams check
/// they missed none by it where event ids are not consecutive (a cluster's).
pub(super) const ORDINAL_DIGITS: usize = 10;

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
                    Scenario::Broadcast | Scenario::Storm => self.record_delivery(now, &payload),
                    Scenario::Idle => {}
                }
            }
            ClientEvent::Event(ParsedEvent { id, event, data }) => {
                // Every event of the stream's life is checked, whatever the phase.
                if let Some(s) = &mut c.stream {
                    let ord = ordinal(data.as_bytes());
                    s.seq
                        .observe(&event, id.as_deref(), ord, &mut self.stats.sse);
                    if id.is_some() {
                        s.last_event_id = id;
                    }
                }
                if running && event == "message" {
                    self.stats.received += 1;
                    self.stats.received_bytes += data.len() as u64;
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
    /// starts with.
    pub(super) fn record_delivery(&mut self, now: Instant, payload: &[u8]) {
        if let Some(sent) = timestamp(payload) {
            let at = now.duration_since(self.shared.epoch).as_nanos() as u64;
            self.stats
                .latency_us
                .saturating_record(at.saturating_sub(sent) / 1000);
        }
        self.delivered_local += 1;
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

    /// The run phase's own work: start echo loops, and pace the broadcast publisher.
    pub(super) fn drive(&mut self, now: Instant) {
        if self.plan.scenario == Scenario::Echo && !self.echo_started {
            self.echo_started = true;
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                self.send_echo(now, key);
                self.flush(key);
            }
        }
        let Some(key) = self.publisher else { return };
        if self.conns[key].stage != Stage::Open {
            return;
        }
        let published = self.shared.published.load(Ordering::Relaxed);
        // A storm's publisher goes at its rate whoever is connected: subscribers that
        // are away must find the events they missed when they come back.
        if self.plan.scenario == Scenario::Broadcast {
            let subscribers = self
                .shared
                .open
                .load(Ordering::Relaxed)
                .saturating_sub(1)
                .max(1);
            let delivered = self.shared.delivered.load(Ordering::Relaxed);
            // Progress stalls if a subscriber vanished mid-message: after 1 s, go on
            // anyway.
            if delivered != self.last_progress.0 {
                self.last_progress = (delivered, now);
            }
            let complete = delivered / subscribers;
            let stalled = now.duration_since(self.last_progress.1) > Duration::from_secs(1);
            if published >= complete + BROADCAST_WINDOW && !stalled {
                return;
            }
            if stalled {
                self.last_progress = (delivered, now);
            }
        }
        if self.plan.messages.is_some_and(|max| published >= max) {
            return;
        }
        if let (Some(rate), Some(t0)) = (self.plan.publish_rate, self.run_started) {
            if published as f64 >= now.duration_since(t0).as_secs_f64() * rate + 1.0 {
                return;
            }
        }
        let ts = now.duration_since(self.shared.epoch).as_nanos() as u64;
        let digits = format!("{ts:0TS_DIGITS$}");
        self.payload[..TS_DIGITS].copy_from_slice(digits.as_bytes());
        if self.payload.len() >= TS_DIGITS + ORDINAL_DIGITS {
            let n = self.shared.published.load(Ordering::Relaxed);
            let digits = format!("{:0ORDINAL_DIGITS$}", n % 10u64.pow(ORDINAL_DIGITS as u32));
            self.payload[TS_DIGITS..TS_DIGITS + ORDINAL_DIGITS].copy_from_slice(digits.as_bytes());
        }
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
}
