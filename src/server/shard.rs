//! One shard: a thread pinned to a CPU, its io_uring ring, its SO_REUSEPORT listener,
//! its connections and its timers. Nothing here is shared with other shards except the
//! bus channels.
//!
//! # Operation lifetimes
//!
//! A connection's slab entry owns everything its in-flight operations point to (the
//! iovec array and the queued chunks of its `writev`). It is removed only after its
//! close completed, and close is submitted only when no operation on its fixed-file slot
//! is in flight (receive, send, shutdown, cancel), so the kernel never sees freed memory
//! and no late operation lands on the slot's next occupant. The last point is not
//! theoretical: `IORING_OP_SHUTDOWN` always runs in an io-wq worker, which looks the
//! fixed slot up when it runs; closing the slot first let a delayed `SHUT_WR` hit the
//! next connection accepted into it (a bare FIN before its response, seen under load). Completions carry a generation: one that
//! arrives for a slot since reused is ignored (its receive buffer still goes back).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types};
use slab::Slab;

use super::outbox::{Chunk, Outbox, Push};
use super::timer::{Entry, TimerWheel};
use crate::config::Config;
use crate::proto::close::CloseCode;
use crate::proto::conn::{CloseReason, ConnConfig, Connection, Event, WsKind};
use crate::proto::frame::{OpCode, write_frame};
use crate::proto::http::{Route, Status, Topic};
use crate::pubsub::{self, BusMsg, Published};
use crate::uring::bufring::BufRing;
use crate::uring::token::{Kind, Token};
use crate::uring::{Ring, SetupError};

/// Provided receive buffers per shard: 4096 x 4 KiB = 16 MiB of receive memory whatever
/// the connection count; only connections with bytes in flight use one.
const RECV_BUFFERS: u16 = 4096;
const RECV_BUFFER_SIZE: u32 = 4096;
const BGID: u16 = 0;
/// Timer resolution: pings, pong and handshake timeouts fire within 50 ms of their due time.
const TICK: Duration = Duration::from_millis(50);
/// Sentinels for the shard's own operations.
const SHUTDOWN_POLL: u64 = u64::MAX - 1;

/// Everything a shard thread starts from.
pub struct ShardInit {
    /// Shard index.
    pub id: usize,
    /// CPU to pin to, if any.
    pub cpu: Option<usize>,
    /// Shared configuration.
    pub config: Arc<Config>,
    /// This shard's listener.
    pub listener: OwnedFd,
    /// Readable when the server should shut down.
    pub shutdown: Arc<OwnedFd>,
    /// Fixed-file table size.
    pub table_size: u32,
    /// Connection cap for this shard.
    pub max_conns: usize,
    /// Bus receiver for this shard.
    pub inbox: Receiver<BusMsg>,
    /// Bus senders to every shard (including this one), by index.
    pub peers: Vec<Sender<BusMsg>>,
    /// Ring fds of every shard, for MSG_RING wake-ups; filled before any message flows.
    pub ring_fds: Arc<std::sync::OnceLock<Vec<i32>>>,
    /// Reports this shard's ring fd once set up (or the setup error).
    pub ready: Sender<Result<(usize, i32), String>>,
}

impl std::fmt::Debug for ShardInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardInit").field("id", &self.id).finish()
    }
}

struct Conn {
    fixed: u32,
    generation: u32,
    proto: Connection,
    out: Outbox,
    /// Multishot receive armed (until its final completion).
    recv: bool,
    /// The iovecs of the `writev` in flight, and how many chunks it covers.
    send: Option<(Box<[libc::iovec]>, usize)>,
    /// Cancel of our operations submitted (closing).
    cancelled: bool,
    /// That cancel's own completion has not arrived yet.
    cancel_pending: bool,
    /// A shutdown is in flight.
    shut_pending: bool,
    /// Close of the descriptor submitted.
    closing: bool,
    /// Write side shut down (FIN sent) while lingering.
    shut_wr: bool,
    /// The wheel entry that counts.
    timer_at: Option<Instant>,
    /// Subscribed topic (WebSocket `/ws/{topic}`).
    topic: Option<Topic>,
    /// When the connection must be gone even if its outbox has not drained.
    hard_deadline: Option<Instant>,
}

struct Shard {
    // Field order is drop order: the ring (and with it every registration) goes first,
    // then the memory it referenced.
    ring: Ring,
    bufs: BufRing,
    tick_ts: Box<types::Timespec>,
    id: usize,
    config: Arc<Config>,
    conn_cfg: ConnConfig,
    listener: Option<OwnedFd>,
    accept_armed: bool,
    shutdown: Arc<OwnedFd>,
    draining: Option<Instant>,
    conns: Slab<Conn>,
    next_generation: u32,
    max_conns: usize,
    wheel: TimerWheel,
    rng: u64,
    inbox: Receiver<BusMsg>,
    peers: Vec<Sender<BusMsg>>,
    ring_fds: Arc<std::sync::OnceLock<Vec<i32>>>,
    wake: Vec<bool>,
    /// Local subscribers per topic: slab key and generation.
    subs: HashMap<Topic, Vec<(usize, u32)>>,
    /// Owned topics: the shards with subscribers.
    owned: HashMap<Topic, Vec<usize>>,
    rearm_recv: Vec<usize>,
}

/// Runs a shard until shutdown completes.
pub fn run(init: ShardInit) {
    if let Some(cpu) = init.cpu {
        // Best effort: a cpuset may forbid it; the shard still works unpinned.
        let _ = crate::uring::pin_to_cpu(cpu);
    }
    let ready = init.ready.clone();
    let mut shard = match Shard::new(init) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok((shard.id, shard.ring.fd())));
    drop(ready);
    if let Err(e) = shard.run() {
        eprintln!("ringpush: shard {}: {e}", shard.id);
        std::process::exit(1);
    }
}

impl Shard {
    fn new(init: ShardInit) -> Result<Shard, String> {
        let cq = (init.table_size.max(1024) * 2)
            .next_power_of_two()
            .min(1 << 19);
        let ring = Ring::new(4096, cq).map_err(|e: SetupError| e.to_string())?;
        ring.submitter()
            .register_files_sparse(init.table_size)
            .map_err(|e| {
                format!(
                    "cannot register a fixed-file table of {} slots: {e} (RLIMIT_NOFILE too low?)",
                    init.table_size
                )
            })?;
        let bufs = BufRing::new(&ring.submitter(), BGID, RECV_BUFFERS, RECV_BUFFER_SIZE)
            .map_err(|e| format!("cannot register the receive buffer ring: {e}"))?;
        let now = Instant::now();
        let conn_cfg = init.config.conn_config();
        Ok(Shard {
            ring,
            bufs,
            tick_ts: Box::new(types::Timespec::from(TICK)),
            id: init.id,
            conn_cfg,
            config: init.config,
            listener: Some(init.listener),
            accept_armed: false,
            shutdown: init.shutdown,
            draining: None,
            // Reserved, not touched: pages are committed as connections arrive, and the
            // slab never doubles-and-copies on the way to a full table.
            conns: Slab::with_capacity(init.max_conns + 64),
            next_generation: 1,
            max_conns: init.max_conns,
            wheel: TimerWheel::new(now, TICK, 4096),
            rng: 0x9e37_79b9_7f4a_7c15 ^ (init.id as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9),
            inbox: init.inbox,
            wake: vec![false; init.peers.len()],
            peers: init.peers,
            ring_fds: init.ring_fds,
            subs: HashMap::new(),
            owned: HashMap::new(),
            rearm_recv: Vec::new(),
        })
    }

    fn push(&mut self, entry: io_uring::squeue::Entry) {
        // SAFETY: every entry built in this file points only at memory owned by the
        // shard (timespec, shutdown buffer) or by a connection that outlives the
        // operation (see the module docs on operation lifetimes).
        unsafe { self.ring.push(entry) };
    }

    fn arm_accept(&mut self) {
        if let Some(l) = &self.listener {
            let e = opcode::AcceptMulti::new(types::Fd(l.as_raw_fd()))
                .allocate_file_index(true)
                .build()
                .user_data(Token::new(Kind::Accept, 0, 0).encode());
            self.accept_armed = true;
            self.push(e);
        }
    }

    fn arm_tick(&mut self) {
        let e = opcode::Timeout::new(&*self.tick_ts)
            .build()
            .user_data(Token::new(Kind::Tick, 0, 0).encode());
        self.push(e);
    }

    fn arm_shutdown_poll(&mut self) {
        let e = opcode::PollAdd::new(types::Fd(self.shutdown.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(SHUTDOWN_POLL);
        self.push(e);
    }

    fn run(&mut self) -> std::io::Result<()> {
        self.arm_accept();
        self.arm_tick();
        self.arm_shutdown_poll();
        let mut cqes = Vec::with_capacity(4096);
        let mut due = Vec::new();
        loop {
            self.ring.submit_and_wait(1)?;
            self.ring.reap(&mut cqes);
            let now = Instant::now();
            for cqe in &cqes {
                self.complete(now, cqe);
            }
            self.bufs.publish();
            for key in std::mem::take(&mut self.rearm_recv) {
                self.arm_recv(key);
            }
            self.drain_inbox(now);
            self.wheel.expire(now, &mut due);
            for e in due.drain(..) {
                self.fire_timer(now, e);
            }
            self.send_wakes();
            if let Some(deadline) = self.draining {
                if self.conns.is_empty() {
                    return Ok(());
                }
                if now >= deadline {
                    let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                    for k in keys {
                        self.abort(k);
                    }
                    self.draining = Some(now + Duration::from_secs(3600));
                }
            }
        }
    }

    fn complete(&mut self, now: Instant, cqe: &cqueue::Entry) {
        if cqe.user_data() == SHUTDOWN_POLL {
            return self.begin_shutdown(now);
        }
        let Some(token) = Token::decode(cqe.user_data()) else {
            return;
        };
        match token.kind {
            Kind::Accept => self.on_accept(now, cqe),
            Kind::Recv => self.on_recv(now, token, cqe),
            Kind::Send => self.on_send(now, token, cqe),
            Kind::Close => self.on_close(token),
            Kind::Shutdown => self.on_op_done(now, token, |c| c.shut_pending = false),
            Kind::Cancel => self.on_op_done(now, token, |c| c.cancel_pending = false),
            Kind::Tick => self.arm_tick(),
            Kind::Wake | Kind::Socket | Kind::Connect => {}
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.draining.is_some() {
            return;
        }
        self.draining = Some(now + self.config.drain_timeout);
        // Stop accepting: closing the listener ends the multishot accept.
        if let Some(l) = &self.listener {
            let e =
                opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(l.as_raw_fd())).all())
                    .build()
                    .user_data(Token::new(Kind::Cancel, 0, u32::MAX).encode());
            self.push(e);
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

    fn on_accept(&mut self, now: Instant, cqe: &cqueue::Entry) {
        if !cqueue::more(cqe.flags()) {
            self.accept_armed = false;
            if self.draining.is_none() {
                self.arm_accept();
            } else {
                self.listener = None;
            }
        }
        let res = cqe.result();
        if res < 0 {
            // ENFILE: the table is full even with the reserve; the multishot ends and is
            // re-armed above. Other errors (ECONNABORTED) concern one connection.
            return;
        }
        let fixed = res as u32;
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1) & 0x00ff_ffff;
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let mut proto = Connection::new(now, &self.conn_cfg, self.rng as u32);
        // Admission control: over the cap (or shutting down) the client is told 503.
        let over = self.conns.len() >= self.max_conns || self.draining.is_some();
        if over {
            let retry = if self.draining.is_some() { 5 } else { 1 };
            proto.reject_overloaded(now, &self.conn_cfg, retry);
        }
        let key = self.conns.insert(Conn {
            fixed,
            generation,
            proto,
            out: Outbox::default(),
            recv: false,
            send: None,
            cancelled: false,
            cancel_pending: false,
            shut_pending: false,
            closing: false,
            shut_wr: false,
            timer_at: None,
            topic: None,
            hard_deadline: None,
        });
        self.arm_recv(key);
        self.pump(now, key);
    }

    fn arm_recv(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.recv || c.cancelled || c.closing {
            return;
        }
        c.recv = true;
        let e = opcode::RecvMulti::new(types::Fixed(c.fixed), BGID)
            .build()
            .user_data(Token::new(Kind::Recv, c.generation, key as u32).encode());
        self.push(e);
    }

    fn conn_for(&mut self, token: Token) -> Option<usize> {
        let key = token.slot as usize;
        self.conns
            .get(key)
            .filter(|c| c.generation == token.generation)
            .map(|_| key)
    }

    fn on_recv(&mut self, now: Instant, token: Token, cqe: &cqueue::Entry) {
        let res = cqe.result();
        let bid = cqueue::buffer_select(cqe.flags());
        let more = cqueue::more(cqe.flags());
        let Some(key) = self.conn_for(token) else {
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            return;
        };
        if let Some(bid) = bid {
            let data = self.bufs.get(bid, res.max(0) as usize);
            let c = &mut self.conns[key];
            c.proto.handle_bytes(now, &self.conn_cfg, data);
            self.bufs.recycle(bid);
        } else if res == 0 || (res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED) {
            self.conns[key].proto.handle_eof(now);
        }
        if !more {
            let c = &mut self.conns[key];
            c.recv = false;
            // Re-arm after this batch's buffers are back (ENOBUFS) or at once otherwise,
            // unless the stream ended.
            if res != 0 && !c.proto.is_closed() && res != -libc::ECANCELED {
                self.rearm_recv.push(key);
            }
        }
        self.pump(now, key);
    }

    fn on_send(&mut self, now: Instant, token: Token, cqe: &cqueue::Entry) {
        let Some(key) = self.conn_for(token) else {
            return;
        };
        let c = &mut self.conns[key];
        c.send = None;
        let res = cqe.result();
        if res < 0 {
            // EPIPE / ECONNRESET: the peer is gone; nothing queued can be delivered.
            c.out.clear_unsent(0);
            c.proto.handle_eof(now);
        } else {
            c.out.consume(res as usize);
        }
        self.pump(now, key);
    }

    /// A shutdown or cancel on a connection completed; it may now be closed.
    fn on_op_done(&mut self, now: Instant, token: Token, done: impl FnOnce(&mut Conn)) {
        if let Some(key) = self.conn_for(token) {
            done(&mut self.conns[key]);
            self.pump(now, key);
        }
    }

    fn on_close(&mut self, token: Token) {
        if let Some(key) = self.conn_for(token) {
            self.conns.remove(key);
        }
    }

    fn fire_timer(&mut self, now: Instant, e: Entry) {
        let Some(c) = self.conns.get_mut(e.key) else {
            return;
        };
        if c.generation != e.generation || c.timer_at != Some(e.when) {
            return;
        }
        c.timer_at = None;
        if c.hard_deadline.is_some_and(|d| now >= d) {
            return self.abort(e.key);
        }
        c.proto.handle_timeout(now, &self.conn_cfg);
        self.pump(now, e.key);
    }

    /// Acts on everything the connection's state machine produced, flushes its bytes,
    /// re-arms its timer, and starts closing it when it is over.
    fn pump(&mut self, now: Instant, key: usize) {
        while let Some(ev) = self.conns[key].proto.poll_event() {
            self.on_event(now, key, ev);
        }
        let c = &mut self.conns[key];
        while let Some(bytes) = c.proto.poll_transmit() {
            c.out.push(Chunk::Owned(bytes), usize::MAX);
        }
        self.start_send(key);
        let c = &mut self.conns[key];
        if c.proto.is_lingering() && !c.shut_wr && c.out.is_empty() && c.send.is_none() {
            c.shut_wr = true;
            c.shut_pending = true;
            let e = opcode::Shutdown::new(types::Fixed(c.fixed), libc::SHUT_WR)
                .build()
                .user_data(Token::new(Kind::Shutdown, c.generation, key as u32).encode());
            self.push(e);
        }
        let c = &mut self.conns[key];
        if c.proto.is_closed() {
            if c.hard_deadline.is_none() {
                c.hard_deadline = Some(now + self.conn_cfg.close_timeout);
            }
            if c.out.is_empty() {
                return self.finish(key);
            }
        }
        let next = match (c.proto.poll_timeout(), c.hard_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(when) = next {
            if c.timer_at.is_none_or(|t| when < t) {
                c.timer_at = Some(when);
                self.wheel.schedule(Entry {
                    key,
                    generation: c.generation,
                    when,
                });
            }
        }
    }

    fn on_event(&mut self, now: Instant, key: usize, ev: Event) {
        match ev {
            Event::WsOpen(WsKind::Echo) => {}
            Event::WsOpen(WsKind::Topic(topic)) => self.subscribe(now, key, topic),
            Event::Message { text, payload } => {
                let c = &mut self.conns[key];
                match c.topic.clone() {
                    None => {
                        c.proto.send_message(text, &payload);
                    }
                    Some(topic) => {
                        let origin = Some((self.id, key, c.generation));
                        self.publish(
                            now,
                            Arc::new(Published {
                                topic,
                                text,
                                payload,
                                origin,
                            }),
                        );
                    }
                }
            }
            Event::Request { route, body: _ } => {
                let c = &mut self.conns[key];
                let (status, body): (Status, &[u8]) = match route {
                    Route::Metrics => (Status::Ok, b"# metrics arrive with issue 4\n"),
                    _ => (Status::NotFound, b"not implemented yet\n"),
                };
                c.proto.respond(
                    now,
                    &self.conn_cfg,
                    status,
                    "text/plain; charset=utf-8",
                    &[],
                    body,
                );
            }
            Event::SseOpen { .. } => {
                self.conns[key]
                    .proto
                    .close(now, &self.conn_cfg, CloseCode::GOING_AWAY, "");
            }
            Event::Closed(reason) => self.on_closed(key, reason),
        }
    }

    fn on_closed(&mut self, key: usize, _reason: CloseReason) {
        if let Some(topic) = self.conns[key].topic.take() {
            self.unsubscribe(Instant::now(), key, topic);
        }
    }

    fn start_send(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.send.is_some() || c.out.is_empty() || c.closing || c.cancelled {
            return;
        }
        let iov = c.out.iovecs();
        let chunks = iov.len();
        let e = opcode::Writev::new(types::Fixed(c.fixed), iov.as_ptr(), iov.len() as u32)
            .build()
            .user_data(Token::new(Kind::Send, c.generation, key as u32).encode());
        c.send = Some((iov, chunks));
        self.push(e);
    }

    /// The connection is over: once no receive or send is in flight, close its slot.
    fn finish(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.closing {
            return;
        }
        if c.shut_pending || c.cancel_pending {
            // Wait for them: see "Operation lifetimes" in the module docs.
            return;
        }
        if c.recv || c.send.is_some() {
            if !c.cancelled {
                c.cancelled = true;
                c.cancel_pending = true;
                let e = opcode::AsyncCancel2::new(
                    types::CancelBuilder::fd(types::Fixed(c.fixed)).all(),
                )
                .build()
                .user_data(Token::new(Kind::Cancel, c.generation, key as u32).encode());
                self.push(e);
            }
            return;
        }
        c.closing = true;
        let e = opcode::Close::new(types::Fixed(c.fixed))
            .build()
            .user_data(Token::new(Kind::Close, c.generation, key as u32).encode());
        self.push(e);
    }

    /// Drops a connection now: queued bytes are discarded.
    fn abort(&mut self, key: usize) {
        let c = &mut self.conns[key];
        let in_flight = c.send.as_ref().map_or(0, |s| s.1);
        c.out.clear_unsent(in_flight);
        if !c.proto.is_closed() {
            c.proto.handle_eof(Instant::now());
            while let Some(ev) = self.conns[key].proto.poll_event() {
                if let Event::Closed(r) = ev {
                    self.on_closed(key, r);
                }
            }
        }
        let c = &mut self.conns[key];
        c.out.clear_unsent(in_flight);
        if c.send.is_none() {
            c.out.clear_unsent(0);
        }
        self.finish(key);
    }

    // --- pub/sub -----------------------------------------------------------------------

    fn subscribe(&mut self, now: Instant, key: usize, topic: Topic) {
        let generation = self.conns[key].generation;
        self.conns[key].topic = Some(topic.clone());
        let list = self.subs.entry(topic.clone()).or_default();
        list.push((key, generation));
        if list.len() == 1 {
            let owner = pubsub::owner(&topic, self.peers.len());
            self.send_bus(
                now,
                owner,
                BusMsg::Subscribe {
                    topic,
                    shard: self.id,
                },
            );
        }
    }

    fn unsubscribe(&mut self, now: Instant, key: usize, topic: Topic) {
        let Some(list) = self.subs.get_mut(&topic) else {
            return;
        };
        list.retain(|&(k, _)| k != key);
        if list.is_empty() {
            self.subs.remove(&topic);
            let owner = pubsub::owner(&topic, self.peers.len());
            self.send_bus(
                now,
                owner,
                BusMsg::Unsubscribe {
                    topic,
                    shard: self.id,
                },
            );
        }
    }

    fn publish(&mut self, now: Instant, msg: Arc<Published>) {
        let owner = pubsub::owner(&msg.topic, self.peers.len());
        self.send_bus(now, owner, BusMsg::Publish(msg));
    }

    /// Sends to a shard's inbox (and marks it for a wake-up), or acts at once when the
    /// target is this shard, so a local subscription is in place before the next publish.
    fn send_bus(&mut self, now: Instant, target: usize, msg: BusMsg) {
        if target == self.id {
            return self.on_bus(now, msg);
        }
        if self.peers[target].send(msg).is_ok() {
            self.wake[target] = true;
        }
    }

    fn send_wakes(&mut self) {
        let ring_fds = self.ring_fds.clone();
        let Some(fds) = ring_fds.get() else { return };
        for (target, &fd) in fds.iter().enumerate() {
            if std::mem::take(&mut self.wake[target]) {
                let e = opcode::MsgRingData::new(
                    types::Fd(fd),
                    0,
                    Token::new(Kind::Wake, 0, 0).encode(),
                    None,
                )
                .build()
                .user_data(Token::new(Kind::Wake, 0, 1).encode());
                self.push(e);
            }
        }
    }

    fn drain_inbox(&mut self, now: Instant) {
        while let Ok(msg) = self.inbox.try_recv() {
            self.on_bus(now, msg);
        }
    }

    fn on_bus(&mut self, now: Instant, msg: BusMsg) {
        match msg {
            BusMsg::Subscribe { topic, shard } => {
                let shards = self.owned.entry(topic).or_default();
                if !shards.contains(&shard) {
                    shards.push(shard);
                }
            }
            BusMsg::Unsubscribe { topic, shard } => {
                if let Some(shards) = self.owned.get_mut(&topic) {
                    shards.retain(|&s| s != shard);
                    if shards.is_empty() {
                        self.owned.remove(&topic);
                    }
                }
            }
            BusMsg::Publish(msg) => {
                let targets = self.owned.get(&msg.topic).cloned().unwrap_or_default();
                for shard in targets {
                    self.send_bus(now, shard, BusMsg::Deliver(msg.clone()));
                }
            }
            BusMsg::Deliver(msg) => self.deliver(now, &msg),
        }
    }

    /// Encodes the message once and queues the same bytes to every local subscriber.
    fn deliver(&mut self, now: Instant, msg: &Published) {
        let Some(list) = self.subs.get(&msg.topic) else {
            return;
        };
        let mut frame = Vec::with_capacity(msg.payload.len() + 10);
        write_frame(
            &mut frame,
            true,
            if msg.text {
                OpCode::Text
            } else {
                OpCode::Binary
            },
            &msg.payload,
        );
        let frame: Rc<[u8]> = frame.into();
        let cap = self.config.max_outbox_bytes;
        let targets: Vec<(usize, u32)> = list.clone();
        for (key, generation) in targets {
            if msg.origin == Some((self.id, key, generation)) {
                continue;
            }
            let Some(c) = self
                .conns
                .get_mut(key)
                .filter(|c| c.generation == generation)
            else {
                continue;
            };
            if !c.proto.can_send() {
                continue;
            }
            if c.out.push(Chunk::Shared(frame.clone()), cap) == Push::Overflow {
                // The slow-consumer policy (see outbox.rs): drop what is unsent, close 1008.
                let in_flight = c.send.as_ref().map_or(0, |s| s.1);
                c.out.clear_unsent(in_flight);
                c.proto.close(
                    now,
                    &self.conn_cfg,
                    CloseCode::POLICY_VIOLATION,
                    "slow consumer",
                );
            }
            self.pump(now, key);
        }
    }
}
