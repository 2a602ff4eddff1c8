//! One shard: a thread pinned to a CPU, its io_uring ring, its SO_REUSEPORT listener,
//! its connections and its timers. Nothing here is shared with other shards except the
//! bus channels.
//!
//! # Operation lifetimes
//!
//! Memory is not the concern here: the driver holds what an operation names until it
//! completes (a send's chunks come back with its completion, see `uring::op`). Slots
//! are: each connection counts its operations in the kernel (`uring::token::InFlight`),
//! its close is submitted only when none is left (receive, send, shutdown, cancel) and
//! its slab entry is removed only once the close completed, so no late operation lands
//! on its fixed-file slot's next occupant.
//! This is not theoretical: `IORING_OP_SHUTDOWN` always runs in an io-wq worker, which looks the
//! fixed slot up when it runs; closing the slot first let a delayed `SHUT_WR` hit the
//! next connection accepted into it (a bare FIN before its response, seen under load).
//! Completions carry a generation: one that arrives for a slot since reused is ignored
//! (its receive buffer still goes back).
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
//! - An outbox still over its cap `--outbox-timeout` later is cut as a slow consumer
//!   (WebSocket close 1008).
//!
//! # Fair reading
//!
//! Receive buffers are shared by every connection of a table (1024 of 4 KiB), and an
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
//! each. A broadcast whose
//! publishes arrive several per turn thus costs the kernel (and the subscriber) one send
//! and one segment per subscriber, not one per message.
//!
//! # Accepting into tables
//!
//! A shard owns one or more fixed-file tables (see `uring::table`), each at most
//! RLIMIT_NOFILE slots, and accepts into one of them at a time. An accept into a full
//! table is not refused by the kernel but dropped: the kernel has already taken the
//! connection off the listen queue when installing it fails with `ENFILE`, and the client
//! sees a reset (seen in tests with 256-slot tables). And one multishot accept takes the
//! whole listen queue in one go. So:
//!
//! - while the table has more free slots than a full listen queue ([`BACKLOG`] plus the
//!   reserve), one multishot accept serves it;
//! - past that, up to [`SINGLE_ACCEPTS`] single-shot accepts, never more than the free
//!   slots, so no accepted connection can miss a slot; connections wait in the listen
//!   queue instead;
//! - when admission slots run out ([`RESERVE`] stay free for 503 answers), accepting moves
//!   to the first table with room, or to a new table while the shard is under its cap.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use slab::Slab;

mod bus;

use super::outbox::{Chunk, Outbox};
use super::timer::{Entry, TimerWheel};
use crate::config::Config;
use crate::metrics::{ShardMetrics, Transport};
use crate::proto::close::CloseCode;
use crate::proto::conn::{CloseReason, ConnConfig, Connection, Event, WsKind};
use crate::proto::http::{Route, Status};
use crate::pubsub::BusMsg;
use crate::pubsub::local::Local;
use crate::pubsub::owner::{Owner, OwnerConfig};
use crate::uring::op::{self, Held};
use crate::uring::table::{self, Completion, TableSpec, Tables};
use crate::uring::token::{InFlight, Kind, SHUTDOWN_POLL, Token};

/// Provided receive buffers per table: 1024 x 4 KiB = 4 MiB of receive memory whatever the
/// connection count (about 200 bytes per connection at 20,000 per table); only connections
/// with bytes in flight hold one. Traffic cycles through all of them (the ring is FIFO), so
/// all become resident: 4096 per table cost 800 bytes per connection at 20,000 idle ones,
/// and echo at 10,000 connections ran no faster with 4096 or 16384 than with 1024 (a
/// multishot receive that finds none ends with ENOBUFS and is re-armed once buffers are
/// back).
const RECV_BUFFERS: u16 = 1024;
const RECV_BUFFER_SIZE: u32 = 4096;
/// Input one armed receive may take before it ends by itself and is re-armed: 64 KiB.
/// It bounds the input held unprocessed for a connection whose outbox is full (see
/// "Reading and backpressure"); a client sending at 1 GB/s costs 16,000 re-arms a
/// second, a few microseconds each.
const RECV_LIMIT: u32 = 64 * 1024;
const BGID: u16 = 0;
/// Fixed-file slots per table held back from admission, so a client refused at the
/// connection cap still gets a slot to be told 503 on.
pub const RESERVE: u32 = 64;
/// Listen backlog per shard. It bounds how many connections one multishot accept can
/// install at once, so it sets how far from full a table switches to single-shot
/// accepts. 4096 (the kernel's default `somaxconn`) absorbs a reconnect burst of that
/// many per shard; beyond it clients retry their SYN, nothing is lost.
pub const BACKLOG: u32 = 4096;
/// Single-shot accepts kept in flight on a nearly full table.
const SINGLE_ACCEPTS: u32 = 16;
/// Timer resolution: pings, pong and handshake timeouts fire within 50 ms of their due time.
const TICK: Duration = Duration::from_millis(50);
/// The demo page served at `GET /` (chat over WebSocket, live feed over EventSource).
const DEMO_PAGE: &str = include_str!("demo.html");
/// Timer expirations handled per loop turn; the rest wait for the next turn.
const TIMERS_PER_TURN: usize = 4096;
/// Timers wait while this many operations wait for room in the submission queues.
const TIMER_BACKLOG: usize = 1024;

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
    /// This shard's admin listener (`--admin-listen`), if any.
    pub admin_listener: Option<OwnedFd>,
    /// Client tokens' checker, when authorization is on.
    pub auth: Option<Arc<crate::proto::auth::Authorizer>>,
    /// Readable when the server should shut down.
    pub shutdown: Arc<OwnedFd>,
    /// Fixed-file slots per table (at most RLIMIT_NOFILE).
    pub table_size: u32,
    /// Connection cap for this shard.
    pub max_conns: usize,
    /// Bus receiver for this shard.
    pub inbox: Receiver<BusMsg>,
    /// Bus senders to every shard (including this one), by index.
    pub peers: Vec<Sender<BusMsg>>,
    /// Ring fds of every shard, for MSG_RING wake-ups; filled before any message flows.
    pub ring_fds: Arc<std::sync::OnceLock<Vec<i32>>>,
    /// The server epoch (event ids).
    pub epoch: u32,
    /// Every shard's counters, by shard index.
    pub metrics: Arc<[ShardMetrics]>,
    /// Reports this shard's ring fd once set up (or the setup error).
    pub ready: Sender<Result<(usize, i32), String>>,
}

impl std::fmt::Debug for ShardInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardInit").field("id", &self.id).finish()
    }
}

struct Conn {
    /// The table (and ring) holding the descriptor.
    table: usize,
    /// The descriptor's slot in that table (what operations name; the kernel picked it).
    file_slot: u32,
    /// The slab key's generation, in every token (see `uring::token`).
    generation: u32,
    proto: Connection,
    out: Outbox,
    /// The multishot receive (see "Reading and backpressure").
    recv: Recv,
    /// Operations in the kernel (see "Operation lifetimes"): a send (the driver holds its
    /// chunks), the receive, cancels, the shutdown, the close.
    ops: InFlight,
    /// The driver's id of the send in flight, to cancel it by key.
    send_id: u32,
    /// In the shard's `to_flush` list.
    flush_queued: bool,
    /// Closing: our operations are being cancelled; nothing new starts.
    cancelled: bool,
    /// Write side shut down (FIN sent) while lingering.
    shut_wr: bool,
    /// A WebSocket or event stream whose peer closed TCP without a goodbye: it is
    /// closed with a reset (`op::ResetClose`), not a FIN.
    peer_gone: bool,
    /// A `/ws/{topic}` client may publish (its token allows it, or authorization is off).
    may_publish: bool,
    /// When the client's token expires (authorization on): the connection ends then.
    auth_expires: Option<Instant>,
    /// The wheel entry that counts.
    timer_at: Option<Instant>,
    /// A long poll's deadline.
    poll_deadline: Option<Instant>,
    /// For the connection gauges.
    transport: Transport,
    /// When the connection must be gone even if its outbox has not drained.
    hard_deadline: Option<Instant>,
    /// The outbox reached its cap and reading stopped: still at its cap at this instant,
    /// the connection is cut as a slow consumer (`--outbox-timeout`).
    stall_deadline: Option<Instant>,
}

/// The state of a connection's multishot receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    /// Not armed: the peer's side ended, the connection is closing, or reading is
    /// paused (outbox over its cap, or a request head's worth of input pending).
    Off,
    /// Armed, until its final completion (the one without `IORING_CQE_F_MORE`).
    Armed,
    /// A cancel by its key was submitted (reading paused); the final completion has
    /// not arrived.
    Cancelling,
    /// Ended for lack of provided buffers (`ENOBUFS`) or at its byte limit: re-armed
    /// once the buffers of this batch are back.
    Waiting,
}

/// Where the shard is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepting and serving.
    Serving,
    /// Shutting down: accepts cancelled, every connection told to go; at `deadline`
    /// (`--drain-timeout`) the ones left are dropped.
    Draining { deadline: Instant },
    /// The drain deadline passed and every connection left was dropped; the shard ends
    /// once their closes complete.
    Aborted,
}

/// The state of a table's multishot accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Multishot {
    Off,
    Armed,
    /// Cancel submitted; the final completion has not arrived.
    Cancelling,
}

/// How the shard uses one table.
struct TableUse {
    /// Slots holding a descriptor (accepted, not yet closed).
    live: u32,
    /// The multishot accept on this table's ring.
    multishot: Multishot,
    /// Single-shot accepts in flight on this table's ring; each may take a slot.
    singles: u32,
}

/// This shard's counters among every shard's (a scrape on any shard reads them all).
#[derive(Debug)]
struct Metrics {
    all: Arc<[ShardMetrics]>,
    id: usize,
}

impl std::ops::Deref for Metrics {
    type Target = ShardMetrics;
    fn deref(&self) -> &ShardMetrics {
        &self.all[self.id]
    }
}

impl Conn {
    /// Moves what the state machine has queued into the outbox, so that bytes written to
    /// the outbox directly (published events) come after it. Replies are never refused:
    /// they count against the cap, and over it the shard stops reading instead.
    fn take_transmit(&mut self) {
        while let Some(bytes) = self.proto.poll_transmit() {
            self.out.push(Chunk::Owned(bytes), usize::MAX);
        }
    }
}

struct Shard {
    // Field order is drop order: the rings (and with them every registration) go first,
    // then the memory they referenced.
    io: Tables,
    /// Per table, by index into `io`.
    tables: Vec<TableUse>,
    /// The table new connections are accepted into.
    accept_on: usize,
    id: usize,
    config: Arc<Config>,
    conn_cfg: ConnConfig,
    listener: Option<OwnedFd>,
    /// The admin listener (`--admin-listen`) and whether its accept is armed.
    admin_listener: Option<OwnedFd>,
    admin_armed: bool,
    shutdown: Arc<OwnedFd>,
    phase: Phase,
    conns: Slab<Conn>,
    next_generation: u32,
    max_conns: usize,
    wheel: TimerWheel,
    rng: u64,
    inbox: Receiver<BusMsg>,
    peers: Vec<Sender<BusMsg>>,
    ring_fds: Arc<std::sync::OnceLock<Vec<i32>>>,
    wake: Vec<bool>,
    /// The subscribers on this shard (see `crate::pubsub::local`).
    local: Local,
    /// The topics this shard owns (see `crate::pubsub::owner`).
    owner: Owner,
    /// Bus messages from this shard to itself, handled in `drain_bus` like the others.
    own_queue: VecDeque<BusMsg>,
    /// Scratch for the bus messages `local` and `owner` produce.
    bus_out: Vec<(usize, BusMsg)>,
    /// Scratch for the connections a delivery queued bytes to.
    touched: Vec<usize>,
    /// The server epoch, in every event id.
    epoch: u32,
    /// The next look for topics past `--history-ttl`.
    next_sweep: Instant,
    metrics: Metrics,
    /// Connections whose receive ran out of buffers this batch (slab key, generation):
    /// re-armed first, after the buffers are back.
    rearm_starved: Vec<(usize, u32)>,
    /// Connections whose receive took its byte limit this batch: re-armed after the
    /// starved ones (see "Fair reading").
    rearm_busy: Vec<(usize, u32)>,
    /// Timer entries due and not handled yet (see `TIMERS_PER_TURN`).
    due: VecDeque<Entry>,
    /// Connections with bytes queued this turn (slab key, generation); see "Corked sends".
    to_flush: Vec<(usize, u32)>,
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
    let _ = ready.send(Ok((shard.id, shard.io.get(0).ring.fd())));
    drop(ready);
    if let Err(e) = shard.run() {
        eprintln!("ringpush: shard {}: {e}", shard.id);
        std::process::exit(1);
    }
}

impl Shard {
    fn new(init: ShardInit) -> Result<Shard, String> {
        let spec = TableSpec {
            slots: init.table_size,
            sq_entries: 4096,
            cq_entries: table::cq_entries(init.table_size),
            recv_buffers: RECV_BUFFERS,
            recv_buffer_size: RECV_BUFFER_SIZE,
            bgid: BGID,
        };
        let io = Tables::new(
            &spec,
            TableSpec {
                sq_entries: 1024,
                recv_buffers: RECV_BUFFERS,
                ..spec
            },
        )?;
        let now = Instant::now();
        let mut conn_cfg = init.config.conn_config();
        conn_cfg.auth = init.auth.clone();
        conn_cfg.admin_split = init.admin_listener.is_some();
        let shards = init.peers.len();
        let owner = Owner::new(
            OwnerConfig {
                history: init.config.history,
                ttl: init.config.history_ttl,
                memory: init.config.history_memory / shards,
            },
            now,
        );
        Ok(Shard {
            io,
            tables: vec![TableUse {
                live: 0,
                multishot: Multishot::Off,
                singles: 0,
            }],
            accept_on: 0,
            id: init.id,
            conn_cfg,
            config: init.config,
            listener: Some(init.listener),
            admin_listener: init.admin_listener,
            admin_armed: false,
            shutdown: init.shutdown,
            phase: Phase::Serving,
            // Reserved, not touched: pages are committed as connections arrive, and the
            // slab never doubles-and-copies on the way to its cap (up to a million).
            conns: Slab::with_capacity(
                (init.max_conns + RESERVE as usize).min(table::MAX_SLOTS as usize),
            ),
            next_generation: 1,
            max_conns: init.max_conns,
            wheel: TimerWheel::new(now, TICK, 4096),
            rng: 0x9e37_79b9_7f4a_7c15 ^ (init.id as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9),
            inbox: init.inbox,
            wake: vec![false; init.peers.len()],
            peers: init.peers,
            ring_fds: init.ring_fds,
            local: Local::new(init.id, shards, init.epoch),
            owner,
            own_queue: VecDeque::new(),
            bus_out: Vec::new(),
            touched: Vec::new(),
            epoch: init.epoch,
            next_sweep: now + bus::TOPIC_SWEEP,
            metrics: Metrics {
                all: init.metrics,
                id: init.id,
            },
            rearm_starved: Vec::new(),
            rearm_busy: Vec::new(),
            to_flush: Vec::new(),
            due: VecDeque::new(),
        })
    }

    /// Shutting down (draining or aborted): no new accepts, new connections told 503.
    fn draining(&self) -> bool {
        self.phase != Phase::Serving
    }

    /// Queues an operation on table `table`'s ring.
    fn push(&mut self, table: usize, sqe: op::Sqe) {
        self.io.push(table, sqe);
    }

    /// Keeps accepts armed on the accepting table as the module docs describe: moves to
    /// another table when this one has no admission room, then arms one multishot accept
    /// or tops up the single-shot ones.
    fn arm_accept(&mut self) {
        if self.draining() || self.listener.is_none() {
            return;
        }
        if !self.has_room(self.accept_on) {
            self.move_accept();
        }
        let t = self.accept_on;
        let fd = self.listener.as_ref().map_or(-1, |l| l.as_raw_fd());
        let tab = &self.tables[t];
        let free = self
            .io
            .get(t)
            .slots()
            .saturating_sub(tab.live + tab.singles);
        if free > BACKLOG + RESERVE {
            if tab.multishot == Multishot::Off {
                self.tables[t].multishot = Multishot::Armed;
                let e =
                    op::accept_multi(fd).user_data(Token::new(Kind::Accept, 0, t as u32).encode());
                self.push(t, e);
            }
            return;
        }
        if tab.multishot == Multishot::Armed {
            self.cancel_multishot_accept(t);
        }
        let want = SINGLE_ACCEPTS
            .min(free)
            .saturating_sub(self.tables[t].singles);
        for _ in 0..want {
            self.tables[t].singles += 1;
            let e = op::accept(fd).user_data(Token::new(Kind::AcceptOnce, 0, t as u32).encode());
            self.push(t, e);
        }
    }

    /// Ends the multishot accept on table `t` (its final completion clears the state).
    fn cancel_multishot_accept(&mut self, t: usize) {
        self.tables[t].multishot = Multishot::Cancelling;
        let e = op::cancel(Token::new(Kind::Accept, 0, t as u32).encode())
            .user_data(Token::new(Kind::Cancel, 0, u32::MAX).encode());
        self.push(t, e);
    }

    /// Whether table `t` may take another admitted connection.
    fn has_room(&self, t: usize) -> bool {
        let tab = &self.tables[t];
        tab.live + tab.singles + RESERVE < self.io.get(t).slots()
    }

    /// Points accepting at the first table with admission room, adding a table when
    /// every one is (nearly) full and the shard is under its cap. When none can be had,
    /// accepting stays where it is: the reserve slots then carry 503 answers.
    fn move_accept(&mut self) {
        let target = match (0..self.tables.len()).find(|&t| self.has_room(t)) {
            Some(t) => t,
            None if self.conns.len() < self.max_conns => match self.add_table() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("ringpush: shard {}: {e}", self.id);
                    return;
                }
            },
            None => return,
        };
        let from = self.accept_on;
        if target != from && self.tables[from].multishot == Multishot::Armed {
            self.cancel_multishot_accept(from);
        }
        // Single-shot accepts left on the old table each have a slot; they finish there.
        self.accept_on = target;
    }

    /// Sets up one more table.
    fn add_table(&mut self) -> Result<usize, String> {
        let t = self.io.add()?;
        self.tables.push(TableUse {
            live: 0,
            multishot: Multishot::Off,
            singles: 0,
        });
        Ok(t)
    }

    fn arm_tick(&mut self) {
        self.io
            .timeout(0, TICK, Token::new(Kind::Tick, 0, 0).encode());
    }

    fn arm_shutdown_poll(&mut self) {
        let e = op::poll_in(self.shutdown.as_raw_fd(), false).user_data(SHUTDOWN_POLL);
        self.push(0, e);
    }

    fn run(&mut self) -> std::io::Result<()> {
        self.arm_accept();
        self.arm_admin_accept();
        self.arm_tick();
        self.arm_shutdown_poll();
        let mut cqes = Vec::with_capacity(4096);
        let mut expired = Vec::new();
        loop {
            // Timers left from the last turn are due already: do not sleep on them.
            self.io.submit_and_reap(&mut cqes, self.due.is_empty())?;
            let now = Instant::now();
            for cqe in cqes.drain(..) {
                self.complete(now, cqe);
            }
            self.io.publish_buffers();
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
            self.drain_bus(now);
            self.wheel.expire(now, &mut expired);
            self.due.extend(expired.drain(..));
            // A bounded share per turn, and none while operations already wait for room
            // in a submission queue: when a million pings come due in the same second
            // (or time out, everyone's client having died at once), their sends and
            // closes would queue ahead of everything else, and a new request (a
            // `/healthz`) would wait behind them for seconds. Late heartbeats are the
            // price; they are housekeeping.
            if self.io.backlog() < TIMER_BACKLOG {
                for _ in 0..self.due.len().min(TIMERS_PER_TURN) {
                    let e = self.due.pop_front().expect("counted");
                    self.fire_timer(now, e);
                }
            }
            if now >= self.next_sweep {
                self.next_sweep = now + bus::TOPIC_SWEEP;
                self.expire_topics(now);
                // Tokens' `exp` is wall-clock time; keep the mapping fresh.
                self.conn_cfg.clock = crate::proto::conn::WallClock::now();
            }
            self.flush_sends(now);
            self.send_wakes();
            if self.draining() && self.conns.is_empty() {
                return Ok(());
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
        }
    }

    /// Acts on one completion from table `t`'s ring.
    fn complete(&mut self, now: Instant, cqe: Completion) {
        if cqe.user_data == SHUTDOWN_POLL {
            return self.begin_shutdown(now);
        }
        let Some(token) = Token::decode(cqe.user_data) else {
            return;
        };
        let t = cqe.table;
        match token.kind {
            Kind::Accept | Kind::AcceptOnce => self.on_accept(now, t, token, &cqe),
            Kind::AdminAccept => self.on_admin_accept(now, t, &cqe),
            Kind::Recv => self.on_recv(now, t, token, &cqe),
            Kind::Send => self.on_send(now, token, cqe),
            Kind::Close => self.on_descriptor_closed(token),
            Kind::Shutdown => self.on_op_done(now, token, Kind::Shutdown),
            Kind::Cancel => self.on_op_done(now, token, Kind::Cancel),
            Kind::SockOpt => {
                // A reset close's `SO_LINGER`; its close follows (hard-linked).
                if let Some(key) = self.conn_for(token) {
                    self.conns[key].ops.end(Kind::SockOpt);
                }
            }
            Kind::Tick => self.arm_tick(),
            Kind::Wake | Kind::Socket | Kind::Connect | Kind::Bind => {}
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
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
                        op::cancel_fd(fd).user_data(Token::new(Kind::Cancel, 0, u32::MAX).encode());
                    self.push(t, e);
                }
            }
        }
        if let Some(l) = &self.admin_listener {
            if self.admin_armed {
                let e = op::cancel_fd(l.as_raw_fd())
                    .user_data(Token::new(Kind::Cancel, 0, u32::MAX).encode());
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

    fn on_accept(&mut self, now: Instant, t: usize, token: Token, cqe: &Completion) {
        let res = cqe.result;
        if token.kind == Kind::AcceptOnce {
            self.tables[t].singles -= 1;
        } else if !cqe.more() {
            self.tables[t].multishot = Multishot::Off;
        }
        if res >= 0 {
            self.tables[t].live += 1;
        }
        if self.draining() {
            if self
                .tables
                .iter()
                .all(|tab| tab.multishot == Multishot::Off && tab.singles == 0)
            {
                self.listener = None;
            }
        } else {
            // Cheap when nothing changes; otherwise tops up, switches mode or moves.
            self.arm_accept();
        }
        if res < 0 {
            // ECANCELED ends a moved accept; other errors (ECONNABORTED) concern one
            // connection; ENFILE cannot happen by construction (module docs).
            return;
        }
        self.open_conn(now, t, res as u32, false);
    }

    /// A connection on the admin listener (`--admin-listen`): `/metrics` and `/healthz`.
    fn on_admin_accept(&mut self, now: Instant, t: usize, cqe: &Completion) {
        if !cqe.more() {
            self.admin_armed = false;
            if self.draining() {
                self.admin_listener = None;
            } else {
                self.arm_admin_accept();
            }
        }
        if cqe.result >= 0 {
            self.tables[t].live += 1;
            self.open_conn(now, t, cqe.result as u32, true);
        }
    }

    /// Keeps one multishot accept armed on the admin listener, if there is one. Admin
    /// traffic is a scrape now and then: it takes a slot of whichever table accepts.
    fn arm_admin_accept(&mut self) {
        let Some(l) = &self.admin_listener else {
            return;
        };
        if self.admin_armed || self.draining() {
            return;
        }
        self.admin_armed = true;
        let t = self.accept_on;
        let e = op::accept_multi(l.as_raw_fd())
            .user_data(Token::new(Kind::AdminAccept, 0, t as u32).encode());
        self.push(t, e);
    }

    /// A new connection in slot `file_slot` of table `t`.
    fn open_conn(&mut self, now: Instant, t: usize, file_slot: u32, admin: bool) {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1) & 0x00ff_ffff;
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let mut proto = Connection::new(now, &self.conn_cfg, self.rng as u32);
        if admin {
            proto = proto.admin();
        }
        // Admission control: over the cap (or shutting down) the client is told 503.
        let over = self.conns.len() >= self.max_conns || self.draining();
        self.metrics.accepted();
        if over {
            let retry = if self.draining() { 5 } else { 1 };
            proto.reject_overloaded(now, &self.conn_cfg, retry);
            self.metrics.overloaded();
        }
        let key = self.conns.insert(Conn {
            table: t,
            file_slot,
            generation,
            proto,
            out: Outbox::default(),
            recv: Recv::Off,
            ops: InFlight::default(),
            send_id: 0,
            flush_queued: false,
            cancelled: false,
            shut_wr: false,
            peer_gone: false,
            may_publish: true,
            auth_expires: None,
            timer_at: None,
            poll_deadline: None,
            transport: Transport::Http,
            hard_deadline: None,
            stall_deadline: None,
        });
        // `pump` arms the receive.
        self.pump(now, key);
    }

    /// Arms or pauses the connection's receive, as its outbox and its pending input
    /// allow (see "Reading and backpressure" in the module docs), and keeps the
    /// deadline of an outbox stuck over its cap.
    fn flow(&mut self, now: Instant, key: usize) {
        let cap = self.config.max_outbox_bytes;
        let c = &mut self.conns[key];
        // Reading stops at the cap and resumes below it; the receive's byte limit
        // (the room left, at least one buffer) keeps a slow reader near its cap from
        // costing a cancel per send.
        let over = c.out.len() >= cap;
        // The stall clock runs while reading is stopped by the outbox.
        let stalled = over && c.stall_deadline.is_none();
        if stalled {
            c.stall_deadline = Some(now + self.config.outbox_timeout);
            self.metrics.input_paused();
        } else if !over {
            c.stall_deadline = None;
        }
        let open = !(c.cancelled || c.ops.has(Kind::Close) || c.proto.is_closed());
        let resume = !over && c.proto.wants_input(&self.conn_cfg);
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
                let t = c.table;
                self.push(t, e);
            }
            Recv::Armed if open && (over || !c.proto.wants_input(&self.conn_cfg)) => {
                // By key: the kernel finds it in its hash of armed polls. A cancel by
                // descriptor is matched against every armed request of the ring.
                c.recv = Recv::Cancelling;
                c.ops.start(Kind::Cancel);
                let e = op::cancel(token)
                    .user_data(Token::new(Kind::Cancel, c.generation, key as u32).encode());
                let t = c.table;
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

    fn conn_for(&mut self, token: Token) -> Option<usize> {
        let key = token.slot as usize;
        self.conns
            .get(key)
            .filter(|c| c.generation == token.generation)
            .map(|_| key)
    }

    fn on_recv(&mut self, now: Instant, t: usize, token: Token, cqe: &Completion) {
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
            if c.out.len() >= self.config.max_outbox_bytes {
                // Received before the pause took effect: kept, not processed, so no
                // more replies are queued (see "Reading and backpressure").
                c.proto.defer_bytes(data);
            } else {
                c.proto.handle_bytes(now, &self.conn_cfg, data);
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

    fn on_send(&mut self, now: Instant, token: Token, cqe: Completion) {
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
        } else {
            c.out.sent(buf, cqe.result as usize);
        }
        self.pump(now, key);
    }

    /// A shutdown or cancel on a connection completed; it may now be closed.
    fn on_op_done(&mut self, now: Instant, token: Token, kind: Kind) {
        if let Some(key) = self.conn_for(token) {
            self.conns[key].ops.end(kind);
            self.pump(now, key);
        }
    }

    /// The connection's descriptor is closed, its last operation: its slab key is free.
    fn on_descriptor_closed(&mut self, token: Token) {
        if let Some(key) = self.conn_for(token) {
            let mut c = self.conns.remove(key);
            c.ops.end(Kind::Close);
            debug_assert!(c.ops.is_empty(), "{:?} in flight after the close", c.ops);
            self.tables[c.table].live -= 1;
            self.metrics.moved(c.transport, None);
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
        if c.auth_expires.is_some_and(|d| now >= d) {
            c.auth_expires = None;
            // The client reconnects with a fresh token.
            self.metrics.auth_refused("token_expired_in_session");
            let c = &mut self.conns[e.key];
            c.proto.close(
                now,
                &self.conn_cfg,
                CloseCode::POLICY_VIOLATION,
                "token expired",
            );
        }
        let c = &mut self.conns[e.key];
        if c.stall_deadline.is_some_and(|d| now >= d) {
            c.stall_deadline = None;
            if c.out.len() >= self.config.max_outbox_bytes {
                Self::cut_slow(c, now, &self.conn_cfg);
                self.metrics.drop_slow();
            }
        }
        if c.poll_deadline.is_some_and(|d| now >= d) {
            self.poll_timed_out(now, e.key);
        }
        let c = &mut self.conns[e.key];
        c.proto.handle_timeout(now, &self.conn_cfg);
        self.pump(now, e.key);
    }

    /// Acts on everything the connection's state machine produced, processes pending
    /// input while the outbox has room, flushes its bytes, arms or pauses its receive,
    /// re-arms its timer, and starts closing it when it is over.
    fn pump(&mut self, now: Instant, key: usize) {
        loop {
            while let Some(ev) = self.conns[key].proto.poll_event() {
                self.on_event(now, key, ev);
            }
            let c = &mut self.conns[key];
            c.take_transmit();
            if c.out.len() >= self.config.max_outbox_bytes || !c.proto.resume(now, &self.conn_cfg) {
                break;
            }
        }
        let c = &mut self.conns[key];
        if !c.flush_queued
            && !c.ops.has(Kind::Send)
            && (c.out.has_waiting() || c.proto.has_control())
        {
            c.flush_queued = true;
            self.to_flush.push((key, c.generation));
        }
        self.flow(now, key);
        let c = &mut self.conns[key];
        if c.proto.is_lingering() && !c.shut_wr && c.out.is_empty() {
            c.shut_wr = true;
            c.ops.start(Kind::Shutdown);
            let e = op::shutdown(c.file_slot, libc::SHUT_WR)
                .user_data(Token::new(Kind::Shutdown, c.generation, key as u32).encode());
            let t = c.table;
            self.push(t, e);
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
        self.schedule(key);
    }

    /// Puts the connection's earliest deadline on the wheel, unless an entry at or
    /// before it is there already (a late entry is harmless: firing early does nothing).
    fn schedule(&mut self, key: usize) {
        let c = &mut self.conns[key];
        let next = [
            c.proto.poll_timeout(),
            c.hard_deadline,
            c.poll_deadline,
            c.stall_deadline,
            c.auth_expires,
        ]
        .into_iter()
        .flatten()
        .min();
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
            Event::WsOpen(kind) => {
                let c = &mut self.conns[key];
                // The 101 goes out even if the first messages cut the connection.
                c.take_transmit();
                c.out.keep_queued();
                c.transport = Transport::Ws;
                self.metrics.moved(Transport::Http, Some(Transport::Ws));
                if let WsKind::Topic(topic) = kind {
                    self.open_ws(key, topic);
                }
            }
            Event::Message { text, payload } => {
                self.metrics.message_in(payload.len());
                if self.conns[key].may_publish {
                    self.publish_ws(key, text, payload);
                } else {
                    // Its token does not allow publishing to its topic.
                    self.metrics.auth_refused("ws_publish_forbidden");
                    let c = &mut self.conns[key];
                    c.proto.close(
                        now,
                        &self.conn_cfg,
                        CloseCode::POLICY_VIOLATION,
                        "not allowed to publish",
                    );
                }
            }
            Event::Authorized {
                may_publish,
                valid_for,
            } => {
                let c = &mut self.conns[key];
                c.may_publish = may_publish;
                c.auth_expires = Some(now + valid_for);
            }
            Event::Echoed { messages, bytes } => {
                self.metrics.messages_in(u64::from(messages), bytes);
                self.metrics.messages_out(u64::from(messages), bytes);
            }
            Event::SseOpen {
                topics,
                last_event_id,
            } => {
                let c = &mut self.conns[key];
                c.take_transmit();
                c.out.keep_queued();
                c.transport = Transport::Sse;
                self.metrics.moved(Transport::Http, Some(Transport::Sse));
                self.open_sse(key, topics, last_event_id);
            }
            Event::Request { route, body } => match route {
                Route::Publish { topic, event } => self.publish_http(key, topic, event, body),
                Route::Poll { topic, since, wait } => self.open_poll(key, topic, since, wait),
                Route::Index => {
                    let c = &mut self.conns[key];
                    let page = DEMO_PAGE.as_bytes();
                    c.proto.respond(
                        now,
                        &self.conn_cfg,
                        Status::Ok,
                        "text/html; charset=utf-8",
                        &[],
                        page,
                    );
                }
                Route::Metrics => {
                    let text = crate::metrics::render(&self.metrics.all);
                    let c = &mut self.conns[key];
                    let ctype = "text/plain; version=0.0.4; charset=utf-8";
                    c.proto
                        .respond(now, &self.conn_cfg, Status::Ok, ctype, &[], text.as_bytes());
                }
                // The state machine answers these itself.
                Route::Healthz | Route::Echo | Route::Ws { .. } | Route::Sse { .. } => {}
            },
            Event::Closed(reason) => self.on_conn_ended(key, reason),
        }
    }

    /// The state machine says the connection is over (`Event::Closed`): counted, taken
    /// out of its topics, and its bytes flushed before `finish` closes the descriptor.
    fn on_conn_ended(&mut self, key: usize, reason: CloseReason) {
        self.metrics.closed(&reason);
        let c = &mut self.conns[key];
        // A peer that left or stopped answering reads nothing more. Plain HTTP is left
        // out: a client that half-closes after its request still reads the answer,
        // which a reset could cut.
        c.peer_gone = matches!(
            reason,
            CloseReason::PeerEof | CloseReason::PongTimeout | CloseReason::CloseTimeout
        ) && c.transport != Transport::Http;
        self.leave(key);
    }

    /// Starts the sends queued this turn.
    fn flush_sends(&mut self, now: Instant) {
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
    fn start_send(&mut self, now: Instant, key: usize) {
        let c = &mut self.conns[key];
        if c.ops.has(Kind::Send) || c.ops.has(Kind::Close) || c.cancelled {
            return;
        }
        let control = c.proto.poll_control(now, &self.conn_cfg);
        if control.is_none() && !c.out.has_waiting() {
            return;
        }
        let buf = c.out.take_send(control.map(Chunk::Owned));
        c.ops.start(Kind::Send);
        let data = Token::new(Kind::Send, c.generation, key as u32).encode();
        c.send_id = self.io.send(c.table, c.file_slot, buf, data);
        // Its deadline may have moved (a ping left).
        self.schedule(key);
    }

    /// The connection is over: once no receive or send is in flight, close its slot.
    fn finish(&mut self, key: usize) {
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
                let t = c.table;
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
        c.ops.start(Kind::Close);
        let close_data = Token::new(Kind::Close, c.generation, key as u32).encode();
        let t = c.table;
        if c.peer_gone {
            // See `op::ResetClose`: the peer has gone and reads nothing more.
            c.ops.start(Kind::SockOpt);
            let close = op::ResetClose {
                slot: c.file_slot,
                sockopt_data: Token::new(Kind::SockOpt, c.generation, key as u32).encode(),
                close_data,
            };
            self.io.close_reset(t, &close);
        } else {
            let e = op::close(c.file_slot).user_data(close_data);
            self.push(t, e);
        }
    }

    /// Drops a connection now: queued bytes are discarded.
    fn abort(&mut self, key: usize) {
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

    // --- pub/sub: see topics.rs ------------------------------------------------------

    fn send_wakes(&mut self) {
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
