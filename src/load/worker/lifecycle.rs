//! Connecting and ending: the rate-limited launch of attempts, the linked connect chain,
//! cancelling and closing a connection that is over, the backoff before its retry, and
//! the two mass endings (the cut, the leave).

use std::cmp::Reverse;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::conn::{Cut, Role, Stage};
use super::{BGID, MAX_CONNECTING, PHASE_LEAVE, PHASE_STOP, Worker};
use crate::load::publish::Publisher;
use crate::proto::client::{Client, ClientEvent, Transport};
use crate::proto::tls::Tls;
use crate::uring::op;
use crate::uring::token::{InFlight, Kind, Token};

impl Worker<'_> {
    /// Starts connection attempts, as the rate and the in-flight cap allow.
    pub(super) fn launch(&mut self, now: Instant) {
        let allowed =
            (now.duration_since(self.rate_start).as_secs_f64() * self.rate_per_sec) as u64 + 1;
        while self.launched < allowed && self.connecting < MAX_CONNECTING {
            let Some(key) = self.ready.pop_front() else {
                // Idle time must not bank attempts for a later burst.
                if self.launched < allowed {
                    self.rate_start = now;
                    self.launched = 0;
                }
                return;
            };
            if let Err(e) = self.start_connect(now, key) {
                eprintln!("ringpush load: worker {}: {e}", self.id);
                self.ready.push_front(key);
                return;
            }
            self.launched += 1;
        }
    }

    pub(super) fn start_connect(&mut self, now: Instant, key: usize) -> Result<(), String> {
        let (table, slot) = self.alloc_slot()?;
        let generation = self.next_generation;
        self.next_generation = (self.next_generation + 1) & 0x00ff_ffff;
        let c = &mut self.conns[key];
        let dest = self.plan.targets[c.target as usize].addr;
        // Sources are 127.0.0.x: only toward a loopback target.
        let bind = !self.srcs.is_empty() && dest.ip().is_loopback();
        if c.was_open || c.attempt > 0 {
            self.stats
                .retry_times
                .push(now.duration_since(self.shared.epoch));
        }
        c.stage = Stage::Connecting;
        c.generation = generation;
        c.table = table;
        c.slot = slot;
        c.has_socket = false;
        c.cancelled = false;
        c.ops = InFlight::default();
        c.ops.start(Kind::Socket);
        if bind {
            c.ops.start(Kind::SockOpt);
            c.ops.start(Kind::Bind);
        }
        c.ops.start(Kind::Connect);
        c.started = now;
        c.error = None;
        c.out.clear();
        c.client = None;
        c.http = None;
        c.tls = None;
        c.opened = false;
        let token = |kind| Token::new(kind, generation, key as u32).encode();
        // The source address comes with IP_BIND_ADDRESS_NO_PORT: without it, bind(ip, 0)
        // picks the port at bind time, unique per address whatever the destination,
        // from a scan that slows to seconds past half the port range (bind prefers even
        // ports): measured at 16,000 connections from one address. With it, connect
        // picks the port per 4-tuple.
        let chain = op::ConnectChain {
            slot,
            source: bind.then(|| self.srcs[c.source]),
            dest,
            socket_data: token(Kind::Socket),
            sockopt_data: token(Kind::SockOpt),
            bind_data: token(Kind::Bind),
            connect_data: token(Kind::Connect),
        };
        self.io.connect(table, &chain);
        self.connecting += 1;
        Ok(())
    }

    pub(super) fn on_connected(&mut self, key: usize) {
        let plan = self.plan;
        let seed = self.rng.next_u64();
        let c = &mut self.conns[key];
        c.stage = Stage::Handshake;
        let (transport, path) = match c.role {
            Role::Publisher => (Transport::Ws, plan.publish_path.clone()),
            Role::Plain => (
                plan.transport,
                (plan.topics.path(&plan.path, u64::from(c.topic)))
                    .unwrap_or_else(|| plan.path.clone()),
            ),
        };
        let last_event_id = c.stream.as_ref().and_then(|s| s.last_event_id.as_deref());
        let target = &plan.targets[c.target as usize];
        let host = &target.host;
        // TLS: the client's hello goes first (flush sends the session's output); the
        // request below waits in `out` until the handshake completes.
        if let (Some(name), Some(config)) = (&target.tls_name, &plan.tls) {
            match Tls::client(Arc::clone(config), name.clone()) {
                Ok(tls) => c.tls = Some(Box::new(tls)),
                Err(e) => {
                    c.error.get_or_insert_with(|| format!("tls: {e}"));
                    return self.check_over(Instant::now(), key);
                }
            }
        }
        let http = c.role == Role::Publisher && plan.http_publish();
        if http {
            c.http = Some(Box::new(Publisher::new(host)));
        } else {
            let client = Client::new(
                transport,
                host,
                &path,
                seed,
                last_event_id,
                plan.compression,
                &mut c.out,
            );
            c.client = Some(client);
        }
        c.ops.start(Kind::Recv);
        let e = op::recv_multi(c.slot, BGID, 0)
            .user_data(Token::new(Kind::Recv, c.generation, key as u32).encode());
        let t = c.table;
        self.io.push(t, e);
        self.flush(key);
        if http {
            // No handshake: open once connected (over TLS, requests wait in `out` until
            // the session is up).
            self.on_event(Instant::now(), key, ClientEvent::Open);
        }
    }

    /// If the connection failed or ended, cancels what is in flight; once nothing is,
    /// closes its slot.
    pub(super) fn check_over(&mut self, now: Instant, key: usize) {
        let c = &mut self.conns[key];
        if c.error.is_none() && c.stage != Stage::Closing {
            return;
        }
        if c.stage != Stage::Closing {
            if c.stage == Stage::Open {
                self.shared.open.fetch_sub(1, Ordering::Relaxed);
                self.shared.open_on[c.target as usize].fetch_sub(1, Ordering::Relaxed);
                if c.cut != Cut::Closing {
                    self.stats.disconnects += 1;
                    self.stats
                        .disconnect_times
                        .push(now.duration_since(self.shared.epoch));
                }
            }
            c.stage = Stage::Closing;
        }
        if !c.ops.is_empty() {
            if c.ops.has(Kind::Recv) && !c.cancelled {
                // By key, as the server does: a cancel by descriptor is matched against
                // every armed request of the ring (quadratic when everyone leaves).
                c.cancelled = true;
                c.ops.start(Kind::Cancel);
                let recv = Token::new(Kind::Recv, c.generation, key as u32).encode();
                let e = op::cancel(recv)
                    .user_data(Token::new(Kind::Cancel, c.generation, key as u32).encode());
                let t = c.table;
                self.io.push(t, e);
            }
            return;
        }
        if c.has_socket {
            // A cut closes abortively: the server gets a reset, as from a link that
            // died, and no port is left in TIME_WAIT to slow the reconnects' connects
            // from the same source addresses.
            let (t, slot, reset) = (c.table, c.slot, c.cut == Cut::Closing);
            self.io
                .close_slot(t, slot, (c.generation, key as u32), reset, &mut c.ops);
            return;
        }
        let (table, slot) = (c.table, c.slot);
        self.slots[table].free.push(slot);
        self.after_close(now, key);
    }

    /// The slot is free again: count the failure and schedule the retry, on another
    /// target (a node that went away is left behind; with one target, the same one).
    pub(super) fn after_close(&mut self, now: Instant, key: usize) {
        let c = &mut self.conns[key];
        let reason = c.error.take().unwrap_or_else(|| "closed".into());
        c.stage = Stage::Waiting;
        c.client = None;
        if let Some(lost) = c.http.take().map(|p| p.in_flight()).filter(|n| *n > 0) {
            *self
                .stats
                .errors
                .entry("publish: unanswered when its connection ended".into())
                .or_default() += u64::from(lost);
        }
        c.tls = None;
        c.sent_at = None;
        c.sending = Vec::new();
        c.out = Vec::new();
        if c.cut == Cut::Closing {
            // Our own doing: not an error.
            c.cut = Cut::Away;
            self.stats.cut_closed_at = Some(now.duration_since(self.shared.epoch));
        } else if c.opened {
            *self
                .stats
                .errors
                .entry(format!("disconnected: {reason}"))
                .or_default() += 1;
        } else {
            *self.stats.errors.entry(reason).or_default() += 1;
            self.shared.failed.fetch_add(1, Ordering::Relaxed);
        }
        if self.phase == PHASE_STOP || self.phase == PHASE_LEAVE {
            return;
        }
        let delay = self.plan.backoff.delay(c.attempt, self.rng.next_u64());
        // The first retry after a loss skips 1 to n-1 targets ahead, by the connection's
        // key, so a dead node's clients spread over all the others; later retries walk
        // the list one by one, so every target is tried.
        let n = self.plan.targets.len() as u32;
        let step = if c.attempt == 0 && n > 2 {
            1 + key as u32 % (n - 1)
        } else {
            1
        };
        c.attempt = c.attempt.saturating_add(1);
        c.target = (c.target + step) % n;
        self.retries.push(Reverse((now + delay, key)));
    }

    /// Everyone leaves: a close frame from each WebSocket (the server answers and closes),
    /// a plain close for the others, and nothing is reconnected.
    pub(super) fn leave_all(&mut self, now: Instant) {
        self.ready.clear();
        self.retries.clear();
        self.polls.clear();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let c = &mut self.conns[key];
            if c.stage != Stage::Open {
                // Not open: whatever it is doing ends, without a retry.
                if matches!(c.stage, Stage::Connecting | Stage::Handshake) {
                    c.error.get_or_insert_with(|| "left".into());
                    self.check_over(now, key);
                }
                continue;
            }
            let ws = c.role == Role::Publisher || self.plan.transport == Transport::Ws;
            match &mut c.client {
                Some(client) if ws => {
                    client.send_close(1001, &mut c.out);
                    self.flush(key);
                }
                _ => {
                    c.error.get_or_insert_with(|| "left".into());
                    self.check_over(now, key);
                }
            }
        }
    }

    /// The cut: every open subscriber ends at once, as in a network blip. Each is closed
    /// like any other ending connection (receive cancelled by its key, never a cancel by
    /// descriptor, which the kernel matches against every armed request of the ring),
    /// but abortively (see [`Worker::check_over`]), and retried after its backoff delay.
    /// The publisher is spared: it keeps publishing through the storm.
    pub(super) fn cut_all(&mut self, now: Instant) {
        self.stats.cut_at = Some(now.duration_since(self.shared.epoch));
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.role == Role::Plain && c.stage == Stage::Open)
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            let c = &mut self.conns[key];
            c.cut = Cut::Closing;
            c.error.get_or_insert_with(|| "cut".into());
            self.stats.cuts += 1;
            self.check_over(now, key);
        }
    }
}
