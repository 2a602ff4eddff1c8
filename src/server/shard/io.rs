//! A connection's input and output: its multishot receive, its sends, and closing it.
//!
//! # Operation lifetimes
//!
//! Memory is not the concern here: the driver holds what an operation names until it
//! completes (a send's chunks come back with its completion, see `uring::op`). Slots
//! are: each connection counts its operations in the kernel (`uring::token::InFlight`),
//! its close is submitted only when none is left (receive, send, shutdown, cancel) and
//! its slab entry is removed only once the close completed, so no late operation lands
//! on its fixed-file slot's next occupant. This is not theoretical: `IORING_OP_SHUTDOWN`
//! always runs in an io-wq worker, which looks the fixed slot up when it runs; closing
//! the slot first let a delayed `SHUT_WR` hit the next connection accepted into it (a
//! bare FIN before its response, seen under load). Completions carry the slab key's
//! generation: one that arrives for a key since reused is ignored (its receive buffer
//! still goes back).
//!
//! # Reading and backpressure
//!
//! Every byte queued for a connection counts against `--max-outbox-bytes` (see
//! `outbox`). Replies to what a client sends (echoes, HTTP answers) are never refused;
//! instead, while the outbox is at its cap, the shard stops reading from the connection,
//! so a client that sends and never reads is pushed back on by TCP instead of growing
//! our memory:
//!
//! - A multishot receive cannot be paused, only cancelled, by its key (a cancel by
//!   descriptor makes the kernel match every armed request of the ring: quadratic when a
//!   million connections close at once). Bytes the kernel had already received when the
//!   cancel lands are kept unprocessed in the state machine (`defer_bytes`); each
//!   receive is armed with a byte limit ([`RECV_LIMIT`], `IORING_RECV_MSHOT_LIM`), which
//!   bounds them.
//! - Reading resumes when the outbox is under its cap again: the deferred input is
//!   processed step by step (`resume`), each step's output moved to the outbox before the
//!   next, so the outbox passes its cap by at most one step.
//! - A connection with a request head's worth of pipelined requests waiting behind one
//!   being served (a publish waiting for its owner shard) is paused the same way: a
//!   pipeline is backpressure, never an error.
//! - An outbox that has not drained `--outbox-timeout` after it reached its cap is cut
//!   as a slow consumer (WebSocket close 1008). Drained means a cap's worth sent since,
//!   or everything queued: not a dip under the cap, after which reading resumes and the
//!   next reply fills it again (see "Draining" in `outbox`). So a client that sends and
//!   never reads is cut within `--outbox-timeout` (and a timer tick) of its outbox
//!   reaching the cap, whatever its kernel still absorbs and whatever the buffer sizes.
//!
//! # Fair reading
//!
//! Receive buffers are shared by every connection of a table (2048 of 1 KiB), and an
//! armed receive takes them as data arrives, up to its byte limit. Clients that send
//! without pause would take them all, turn after turn, and a connection whose receive
//! found none (`ENOBUFS`) could wait behind them for seconds. So a receive that ended,
//! starved or at its limit, is re-armed only once this turn's buffers are back, and the
//! starved ones first: an armed receive with data waiting takes its buffers when it is
//! submitted, so submission order is priority.
//!
//! WebSocket pings and pongs do not wait behind queued data: the state machine holds
//! them (one ping, the pong for the latest ping: a ping flood costs one pong) and the
//! shard takes them when it starts a send, ahead of the data.
//!
//! # Corked sends
//!
//! Bytes for a connection are queued in its outbox during a loop turn and sent once, at
//! the end of the turn: every publish, pong and echo produced by one batch of completions
//! leaves in one send (a `writev` for several chunks) per connection instead of one
//! each. A broadcast whose publishes arrive several per turn thus costs the kernel (and
//! the subscriber) one send and one segment per subscriber, not one per message.
//!
//! # TLS
//!
//! With `--tls-cert`, the socket carries ciphertext and everything above it is
//! unchanged: received bytes go through the connection's [`Tls`](crate::proto::tls::Tls)
//! (deciphered in the shard's scratch, `tls_in`) and the plaintext to the state machine;
//! the outbox still queues plaintext (shared frames stay shared across subscribers) and
//! a send seals what is waiting into one buffer of records at the moment it starts
//! (`take_sealed`), so a turn's frames for a connection cost one record, one AEAD pass
//! and one send. The handshake's records go first; plaintext queued during the
//! handshake (a 503 at admission) waits for it. Ciphertext, once made, cannot be
//! dropped (the records are numbered), so a short write's rest goes back to the front of
//! the outbox as kept bytes and is sent alone next ([`Outbox::take_sealed_rest`]). While
//! handshaking, the receive stays armed whatever the state machine wants. An idle TLS
//! connection holds rustls' state and no buffer.
//!
//! [`Outbox::take_sealed_rest`]: crate::server::outbox::Outbox::take_sealed_rest

use std::time::Instant;

use super::{Late, Recv, Shard};
use crate::proto::conn::Event;
use crate::server::outbox::Chunk;
use crate::server::timer::At;
use crate::uring::op::{self, Held, SendBuf};
use crate::uring::table::Completion;
use crate::uring::token::{Kind, Token};

/// Provided receive buffers per table: 2048 x 1 KiB = 2 MiB of receive memory whatever the
/// connection count (about 100 bytes per connection at 20,000 per table); only connections
/// with bytes in flight hold one. Traffic cycles through all of them (the ring is FIFO), so
/// all become resident. Their number matters more than their size: a multishot receive
/// that finds none ends with ENOBUFS and is re-armed once buffers are back, and most
/// client input (frames, request heads) is small. Measured 2026-12-02 (one shard, echo at
/// 10,000 connections, server CPU per message, A/B pairs on a busy host): 1024 x 4 KiB
/// 18.0-21.4 us, 2048 x 1 KiB 14.0-18.2 us, 512 x 2 KiB 31-34 us (ENOBUFS churn), 4096 x
/// 512 B 14.1-14.8 us; echo of 16 KiB messages at 100 connections the same with 4 KiB and
/// 1 KiB buffers (39-44 us). Earlier, 4096 x 4 KiB cost 800 bytes per idle connection
/// at 20,000.
pub(super) const RECV_BUFFERS: u16 = 2048;
pub(super) const RECV_BUFFER_SIZE: u32 = 1024;
/// Receive buffers of each table after the first (a shard holding more connections
/// than RLIMIT_NOFILE; 50 tables at a million here): half the first's. The ring of
/// provided buffers is FIFO, so every buffer of a table becomes resident; at a million
/// the 2,048 of every table cost 100 bytes per connection.
pub(super) const EXTRA_RECV_BUFFERS: u16 = 1024;
/// Completion entries of each table after the first: 16,384 (256 KiB), not the 65,536
/// a 20,000-slot table gets, which become resident as the queue wraps (1 MiB a table).
/// An extra table's submission queue is 1,024, so sends and closes complete at most that
/// many per submission; a burst of receives past the queue waits in the kernel's
/// overflow list (completions are never dropped), see `Ring::new`.
pub(super) const EXTRA_CQ_ENTRIES: u32 = 16_384;
/// Input one armed receive may take before it ends by itself and is re-armed: 64 KiB.
/// It bounds the input held unprocessed for a connection whose outbox is full (see
/// "Reading and backpressure"); a client sending at 1 GB/s costs 16,000 re-arms a
/// second, a few microseconds each.
const RECV_LIMIT: u32 = 64 * 1024;
pub(super) const BGID: u16 = 0;

impl Shard {
    /// Arms or pauses the connection's receive, as its outbox and its pending input
    /// allow (see "Reading and backpressure" in the module docs), and keeps the
    /// deadline of an outbox that reached its cap and has not drained.
    pub(super) fn flow(&mut self, now: Instant, key: usize) {
        let cap = self.config.max_outbox_bytes;
        let c = &mut self.conns[key];
        // Reading stops at the cap and resumes below it; the receive's byte limit
        // (the room left, at least one buffer) keeps a slow reader near its cap from
        // costing a cancel per send.
        let over = c.out.len() >= cap;
        // The stall clock starts when the outbox reaches its cap and stops once the
        // outbox has drained (a cap's worth sent since, or everything), not at a dip
        // under the cap (see "Draining" in `outbox`).
        if c.late.get(Late::Stall).is_some() && c.out.drained() {
            c.late.set(Late::Stall, None);
        }
        let stalled = over && c.late.get(Late::Stall).is_none();
        if stalled {
            c.late
                .set(Late::Stall, Some(At::new(now + self.config.outbox_timeout)));
            c.out.reached_cap(cap);
        }
        // Counted when the clock starts, and when it stops an armed receive again.
        if over && (stalled || c.recv == Recv::Armed) {
            self.metrics.input_paused();
        }
        let open = !(c.cancelled || c.ops.has(Kind::Close) || c.proto.is_closed());
        // A TLS handshake reads whatever the state machine wants (it may be refusing
        // the connection with a 503 that can only be sent once the handshake is done).
        let wants =
            c.proto.wants_input(&self.conn_cfg) || c.tls.as_ref().is_some_and(|t| t.wants_input());
        // `--access-log`: the peer's address comes first, so that the first request is
        // read knowing who sent it (whether its X-Forwarded-For is to be believed).
        let resume = !over && wants && !c.ops.has(Kind::PeerAddr);
        let token = Token::new(Kind::Recv, c.generation, key as u32).encode();
        match c.recv {
            Recv::Off if open && resume => {
                c.recv = Recv::Armed;
                c.ops.start(Kind::Recv);
                // What arrives after the outbox fills up and before the pause takes
                // effect is bounded by this limit (see "Reading and backpressure").
                let limit = cap
                    .saturating_sub(c.out.len())
                    .clamp(RECV_BUFFER_SIZE as usize, RECV_LIMIT as usize);
                let e = op::recv_multi(c.file_slot, BGID, limit as u32).user_data(token);
                let t = c.table as usize;
                self.push(t, e);
            }
            Recv::Armed if open && (over || !wants) => {
                // By key: the kernel finds it in its hash of armed polls. A cancel by
                // descriptor is matched against every armed request of the ring.
                c.recv = Recv::Cancelling;
                c.ops.start(Kind::Cancel);
                let e = op::cancel(token)
                    .user_data(Token::new(Kind::Cancel, c.generation, key as u32).encode());
                let t = c.table as usize;
                self.push(t, e);
                if !over {
                    // A pipeline's worth of requests waiting (counted above otherwise).
                    self.metrics.input_paused();
                }
            }
            _ => {}
        }
        if stalled {
            // `flow` also runs outside `pump` (re-arming after a batch).
            self.schedule(key);
        }
    }

    pub(super) fn on_recv(&mut self, now: Instant, t: usize, token: Token, cqe: &Completion) {
        let res = cqe.result;
        let bid = cqe.buffer();
        let more = cqe.more();
        let Some(key) = self.conn_for(token) else {
            if let Some(bid) = bid {
                self.io.get_mut(t).bufs.recycle(bid);
            }
            return;
        };
        if let Some(bid) = bid {
            let bufs = &mut self.io.get_mut(t).bufs;
            let data = bufs.get(bid, res.max(0) as usize);
            let c = &mut self.conns[key];
            let mut data = data;
            if c.tls.is_some() && c.proto.awaits_proxy_header() {
                // A PROXY header comes before the TLS handshake, in the clear.
                data = &data[c.proto.take_proxy_header(data)..];
            }
            // Received before the pause took effect: kept, not processed, so no more
            // replies are queued (see "Reading and backpressure").
            let defer = c.out.len() >= self.config.max_outbox_bytes;
            let proto = &mut c.proto;
            let mut take = |plain: &[u8]| {
                if defer {
                    proto.defer_bytes(plain);
                } else {
                    proto.handle_bytes(now, &self.conn_cfg, plain);
                }
            };
            match c.tls.as_deref_mut() {
                None => take(data),
                Some(tls) => match tls.receive(data, &mut self.tls_in, take) {
                    Ok(r) if r.peer_closed => c.proto.handle_eof(now),
                    Ok(_) => {}
                    // Its alert is in the TLS output; nothing else goes out.
                    Err(_) => c.proto.fail_tls(),
                },
            }
            bufs.recycle(bid);
        } else if res == 0 || (res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED) {
            self.conns[key].proto.handle_eof(now);
        }
        if !more {
            let c = &mut self.conns[key];
            c.ops.end(Kind::Recv);
            if c.recv == Recv::Armed && (res == -libc::ENOBUFS || res > 0) {
                // Out of buffers, or its byte limit taken: re-armed once this batch's
                // buffers are back, the starved first (see "Fair reading").
                c.recv = Recv::Waiting;
                let list = if res > 0 {
                    &mut self.rearm_busy
                } else {
                    &mut self.rearm_starved
                };
                list.push((key, c.generation));
            } else {
                // Ended by EOF or an error (the connection is closed), or by our cancel
                // (paused): `pump` re-arms it if it should be.
                c.recv = Recv::Off;
            }
        }
        self.pump(now, key);
    }

    pub(super) fn on_send(&mut self, now: Instant, token: Token, cqe: Completion) {
        let Some(key) = self.conn_for(token) else {
            return;
        };
        let Some(Held::Send(buf)) = cqe.held else {
            unreachable!("a send's completion brings its buffers back");
        };
        let c = &mut self.conns[key];
        c.ops.end(Kind::Send);
        if cqe.result < 0 || c.cancelled {
            // EPIPE / ECONNRESET: the peer is gone; nothing queued can be delivered. Or
            // the connection is being dropped: nothing more will be sent.
            c.out.failed(buf);
            c.out.clear_unsent();
            c.proto.handle_eof(now);
        } else if c.tls.is_some() {
            c.out.sent_sealed(buf, cqe.result as usize);
        } else {
            c.out.sent(buf, cqe.result as usize);
        }
        self.pump(now, key);
    }

    /// A shutdown or cancel on a connection completed; it may now be closed.
    pub(super) fn on_op_done(&mut self, now: Instant, token: Token, kind: Kind) {
        if let Some(key) = self.conn_for(token) {
            self.conns[key].ops.end(kind);
            self.pump(now, key);
        }
    }

    /// The connection's descriptor is closed, its last operation: its slab key is free.
    pub(super) fn on_descriptor_closed(&mut self, token: Token) {
        if let Some(key) = self.conn_for(token) {
            let mut c = self.conns.remove(key);
            c.ops.end(Kind::Close);
            debug_assert!(c.ops.is_empty(), "{:?} in flight after the close", c.ops);
            self.tables[c.table as usize].live -= 1;
            self.metrics.moved(c.transport, None);
        }
    }

    /// Starts the sends queued this turn.
    pub(super) fn flush_sends(&mut self, now: Instant) {
        let mut queued = std::mem::take(&mut self.to_flush);
        for &(key, generation) in &queued {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if c.generation == generation {
                c.flush_queued = false;
                self.start_send(now, key);
            }
        }
        queued.clear();
        self.to_flush = queued;
    }

    /// Sends the control frames (taken now, so the freshest pong goes and a ping's
    /// deadline starts when it leaves) and then the queued data.
    pub(super) fn start_send(&mut self, now: Instant, key: usize) {
        let c = &mut self.conns[key];
        if c.ops.has(Kind::Send) || c.ops.has(Kind::Close) || c.cancelled {
            return;
        }
        let buf = if c.tls.is_some() {
            match self.take_sealed(now, key) {
                Some(buf) => buf,
                None => return,
            }
        } else {
            let control = c.proto.poll_control(now, &self.conn_cfg);
            if control.is_none() && !c.out.has_waiting() {
                return;
            }
            c.out.take_send(control.map(Chunk::Owned))
        };
        let c = &mut self.conns[key];
        c.ops.start(Kind::Send);
        let data = Token::new(Kind::Send, c.generation, key as u32).encode();
        c.send_id = self.io.send(c.table as usize, c.file_slot, buf, data);
        // Its deadline may have moved (a ping left).
        self.schedule(key);
    }

    /// A TLS connection's next send, all ciphertext (see "TLS" in the module docs):
    /// the rest a short write left, alone; or the handshake's records, then control
    /// frames and queued data sealed behind them. `None`: nothing to send.
    fn take_sealed(&mut self, now: Instant, key: usize) -> Option<SendBuf> {
        let c = &mut self.conns[key];
        let tls = c.tls.as_deref_mut()?;
        if c.out.has_sealed_rest() {
            return Some(c.out.take_sealed_rest());
        }
        let mut ciphertext = tls.take_output().unwrap_or_default();
        let mut plain = None;
        if tls.is_failed() {
            // Nothing more can be sealed: what waits is dropped (the alert goes alone).
            if c.out.has_waiting() {
                plain = Some(c.out.take_send(None));
            }
        } else if !tls.is_handshaking() {
            let control = c.proto.poll_control(now, &self.conn_cfg);
            if control.is_some() || c.out.has_waiting() {
                let p = c.out.take_send(control.map(Chunk::Owned));
                let pieces = p.chunks.iter().map(Chunk::bytes);
                if tls
                    .seal(pieces, &mut self.tls_gather, &mut ciphertext)
                    .is_err()
                {
                    // Out of sequence numbers (2^64 records): the connection is over.
                    c.proto.fail_tls();
                }
                plain = Some(p);
            }
        }
        // Handshaking: queued plaintext (a 503 at admission) waits for the handshake.
        if ciphertext.is_empty() {
            if let Some(p) = plain {
                c.out.failed(p);
            }
            return None;
        }
        Some(c.out.sealed(plain, ciphertext))
    }

    /// The connection is over: once no receive or send is in flight, close its slot.
    pub(super) fn finish(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.ops.has(Kind::Close) {
            return;
        }
        if c.ops.has(Kind::Shutdown) || c.ops.has(Kind::Cancel) || c.recv == Recv::Cancelling {
            // Wait for them: see "Operation lifetimes" in the module docs.
            return;
        }
        if !c.ops.is_empty() {
            // The receive or a send: cancelled, each by its key, never by descriptor
            // (see `flow`); their completions bring us back here.
            if !c.cancelled {
                c.cancelled = true;
                let t = c.table as usize;
                let done = Token::new(Kind::Cancel, c.generation, key as u32).encode();
                if c.recv == Recv::Armed {
                    c.recv = Recv::Cancelling;
                    c.ops.start(Kind::Cancel);
                    let recv = Token::new(Kind::Recv, c.generation, key as u32).encode();
                    self.io.push(t, op::cancel(recv).user_data(done));
                }
                let c = &mut self.conns[key];
                if c.ops.has(Kind::Send) {
                    c.ops.start(Kind::Cancel);
                    let id = c.send_id;
                    self.io.cancel_send(t, id, done);
                }
            }
            return;
        }
        // A peer that has gone reads nothing more: closed with a reset.
        let (t, slot, reset) = (c.table as usize, c.file_slot, c.peer_gone);
        self.io
            .close_slot(t, slot, (c.generation, key as u32), reset, &mut c.ops);
    }

    /// Drops a connection now: queued bytes are discarded.
    pub(super) fn abort(&mut self, key: usize) {
        let c = &mut self.conns[key];
        c.out.clear_unsent();
        if !c.proto.is_closed() {
            c.proto.handle_eof(Instant::now());
            while let Some(ev) = self.conns[key].proto.poll_event() {
                if let Event::Closed(r) = ev {
                    self.on_conn_ended(key, r);
                }
            }
        }
        self.conns[key].out.clear_unsent();
        self.finish(key);
    }

    /// Re-arms the receives that ended this batch, the starved first (see "Fair
    /// reading"), now that the batch's buffers are back.
    pub(super) fn rearm_receives(&mut self, now: Instant) {
        let mut busy = std::mem::take(&mut self.rearm_busy);
        for (key, generation) in std::mem::take(&mut self.rearm_starved)
            .into_iter()
            .chain(busy.drain(..))
        {
            if let Some(c) = self
                .conns
                .get_mut(key)
                .filter(|c| c.generation == generation)
            {
                if c.recv == Recv::Waiting {
                    c.recv = Recv::Off;
                    self.flow(now, key);
                }
            }
        }
        self.rearm_busy = busy;
    }
}
