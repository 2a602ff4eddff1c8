//! Time in the shard: the tick that drives the timer wheel, each connection's earliest
//! deadline on the wheel (pings, pong, handshake, close, long-poll, slow-consumer and
//! token-expiry deadlines), the once-a-second housekeeping, and shutting down: the
//! drain, and dropping what is left at its deadline.
//!
//! A connection has at most one wheel entry that counts (see `server::timer`); when it
//! fires, [`Shard::fire_timer`] acts on every deadline passed and `pump` puts the next
//! one on the wheel.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::bus::TOPIC_SWEEP;
use super::{Late, Multishot, Phase, Shard};
use crate::proto::close::CloseCode;
use crate::server::timer::At;
use crate::server::timer::Entry;
use crate::uring::op;
use crate::uring::token::{Kind, NO_KEY, SHUTDOWN_POLL, Token};

/// Timer resolution: pings, pong and handshake timeouts fire within 50 ms of their due time.
pub(super) const TICK: Duration = Duration::from_millis(50);
/// Timer expirations handled per loop turn; the rest wait for the next turn.
const TIMERS_PER_TURN: usize = 4096;
/// Timers wait while this many operations wait for room in the submission queues.
const TIMER_BACKLOG: usize = 1024;

impl Shard {
    pub(super) fn arm_tick(&mut self) {
        self.io
            .timeout(0, TICK, Token::new(Kind::Tick, 0, 0).encode());
    }

    pub(super) fn arm_shutdown_poll(&mut self) {
        let e = op::poll_in(self.shutdown.as_raw_fd(), false).user_data(SHUTDOWN_POLL);
        self.push(0, e);
    }

    pub(super) fn begin_shutdown(&mut self, now: Instant) {
        if self.draining() {
            return;
        }
        self.phase = Phase::Draining {
            deadline: now + self.config.drain_timeout,
        };
        // Stop accepting: cancel every accept; the listener closes when the last ends.
        if let Some(l) = &self.listener {
            let fd = l.as_raw_fd();
            for t in 0..self.tables.len() {
                if self.tables[t].multishot != Multishot::Off || self.tables[t].singles > 0 {
                    let e =
                        op::cancel_fd(fd).user_data(Token::new(Kind::Cancel, 0, NO_KEY).encode());
                    self.push(t, e);
                }
            }
        }
        if let Some(l) = &self.admin_listener {
            if self.admin_armed {
                let e = op::cancel_fd(l.as_raw_fd())
                    .user_data(Token::new(Kind::Cancel, 0, NO_KEY).encode());
                self.push(self.accept_on, e);
            }
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let c = &mut self.conns[key];
            c.proto.close(
                now,
                &self.conn_cfg,
                CloseCode::GOING_AWAY,
                "server shutting down",
            );
            self.pump(now, key);
        }
    }

    pub(super) fn fire_timer(&mut self, now: Instant, e: Entry) {
        let key = e.key as usize;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.generation != e.generation || c.timer_at != Some(e.when) {
            return;
        }
        c.timer_at = None;
        if c.late.get(Late::Hard).is_some_and(|d| d.reached(now)) {
            return self.abort(key);
        }
        if c.late.get(Late::Auth).is_some_and(|d| d.reached(now)) {
            c.late.set(Late::Auth, None);
            // The client reconnects with a fresh token.
            self.metrics.auth_refused("token_expired_in_session");
            let c = &mut self.conns[key];
            c.proto.close(
                now,
                &self.conn_cfg,
                CloseCode::POLICY_VIOLATION,
                "token expired",
            );
        }
        let c = &mut self.conns[key];
        if c.late.get(Late::Stall).is_some_and(|d| d.reached(now)) {
            c.late.set(Late::Stall, None);
            if !c.out.drained() {
                Self::cut_slow(c, now, &self.conn_cfg);
                self.metrics.drop_slow();
            }
        }
        if c.late.get(Late::Poll).is_some_and(|d| d.reached(now)) {
            self.poll_timed_out(now, key);
        }
        let c = &mut self.conns[key];
        c.proto.handle_timeout(now, &self.conn_cfg);
        self.pump(now, key);
    }

    /// Puts the connection's earliest deadline on the wheel, unless an entry at or
    /// before it is there already (a late entry is harmless: firing early does nothing).
    pub(super) fn schedule(&mut self, key: usize) {
        let c = &mut self.conns[key];
        let next = [
            c.proto.poll_timeout(),
            c.late.get(Late::Hard).map(At::instant),
            c.late.get(Late::Poll).map(At::instant),
            c.late.get(Late::Stall).map(At::instant),
            c.late.get(Late::Auth).map(At::instant),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(when) = next {
            let when = At::new(when);
            if c.timer_at.is_none_or(|t| when < t) {
                c.timer_at = Some(when);
                self.wheel.schedule(Entry {
                    key: u32::try_from(key).expect("slab keys fit the connection limit"),
                    generation: c.generation,
                    when,
                });
            }
        }
    }

    /// Fires the timers due, a bounded share per turn, and none while operations already
    /// wait for room in a submission queue: when a million pings come due in the same
    /// second (or time out, everyone's client having died at once), their sends and
    /// closes would queue ahead of everything else, and a new request (a `/healthz`)
    /// would wait behind them for seconds. Late heartbeats are the price; they are
    /// housekeeping.
    pub(super) fn fire_timers(&mut self, now: Instant, expired: &mut Vec<Entry>) {
        self.wheel.expire(now, expired);
        self.due.extend(expired.drain(..));
        if self.io.backlog() < TIMER_BACKLOG {
            for _ in 0..self.due.len().min(TIMERS_PER_TURN) {
                let e = self.due.pop_front().expect("counted");
                self.fire_timer(now, e);
            }
        }
        // After a burst (a million pings due in one second), the queues go back to small.
        if self.due.is_empty() && self.due.capacity() > TIMERS_PER_TURN {
            self.due = VecDeque::new();
        }
        if expired.capacity() > TIMERS_PER_TURN {
            *expired = Vec::new();
        }
    }

    /// Once a [`TOPIC_SWEEP`]: forgets topics past `--history-ttl` and
    /// refreshes the wall clock tokens' `exp` is checked against.
    pub(super) fn housekeeping(&mut self, now: Instant) {
        if now >= self.next_sweep {
            self.next_sweep = now + TOPIC_SWEEP;
            self.expire_topics(now);
            self.conn_cfg.clock = crate::proto::conn::WallClock::now();
        }
    }

    /// While shutting down: drops the connections left at the drain deadline, and says
    /// whether the shard is done (no connection left).
    pub(super) fn drained(&mut self, now: Instant) -> bool {
        if self.draining() && self.conns.is_empty() {
            return true;
        }
        if let Phase::Draining { deadline } = self.phase {
            if now >= deadline {
                let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                for k in keys {
                    self.abort(k);
                }
                self.phase = Phase::Aborted;
            }
        }
        false
    }
}
