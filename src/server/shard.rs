//! One shard: a thread pinned to a CPU, its io_uring ring, its SO_REUSEPORT listener,
//! its connections and its timers. Nothing here is shared with other shards except the
//! bus channels.
//!
//! # Where things live
//!
//! - `shard.rs` (this file): the [`Shard`] and its connections' state ([`Conn`]), the
//!   event loop, the dispatch of completions by token kind, and each connection's
//!   `pump`: acting on what its state machine produced.
//! - [`accept`]: the listeners' accepts into the fixed-file tables, admission control,
//!   opening a connection.
//! - [`io`]: receiving, sending (corked per turn), backpressure, and closing a connection
//!   once none of its operations is in the kernel.
//! - [`timers`]: the tick, each connection's deadlines on the timer wheel, the
//!   once-a-second housekeeping, and shutting down (draining).
//! - [`bus`]: pub/sub, the topics' owner and local side, and the other shards.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

use slab::Slab;

mod accept;
mod bus;
mod io;
mod timers;

use self::io::{BGID, EXTRA_CQ_ENTRIES, EXTRA_RECV_BUFFERS, RECV_BUFFER_SIZE, RECV_BUFFERS};
use self::timers::TICK;

use super::outbox::{Chunk, Outbox};
use super::timer::{At, Entry, TimerWheel};
use crate::config::Config;
use crate::metrics::{ShardMetrics, Transport};
use crate::proto::close::CloseCode;
use crate::proto::conn::{CloseReason, ConnConfig, Connection, Event, WsKind};
use crate::proto::http::{Route, Status};
use crate::proto::tls::Tls;
use crate::pubsub::BusMsg;
use crate::pubsub::OwnerSide;
use crate::pubsub::local::Local;
use crate::pubsub::mirror::Mirror;
use crate::pubsub::owner::{Owner, OwnerConfig};
use crate::uring::op;
use crate::uring::table::{self, Completion, TableSpec, Tables};
use crate::uring::token::{InFlight, Kind, SHUTDOWN_POLL, Token};

/// Fixed-file slots per table held back from admission, so a client refused at the
/// connection cap still gets a slot to be told 503 on.
pub const RESERVE: u32 = 64;
/// Listen backlog per shard. It bounds how many connections one multishot accept can
/// install at once, so it sets how far from full a table switches to single-shot
/// accepts. 4096 (the kernel's default `somaxconn`) absorbs a reconnect burst of that
/// many per shard; beyond it clients retry their SYN, nothing is lost.
pub const BACKLOG: u32 = 4096;
/// Deferred completions a shard's ring runs per extra enter when the kernel leaves some
/// (`uring::Ring::set_deferred_per_enter`): after a mass disconnect, EOFs are taken
/// 1,024 per enter instead of 20 per loop turn.
const DEFERRED_PER_ENTER: u32 = 1024;
/// The demo page served at `GET /` (chat over WebSocket, live feed over EventSource).
const DEMO_PAGE: &str = include_str!("demo.html");

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
    /// `--tls-cert` / `--tls-key`: the listener speaks TLS only.
    pub certs: Option<Arc<super::tls::Certs>>,
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
    /// Cluster mode: the node's link to Redis.
    pub link: Option<crate::cluster::link::Link>,
    /// Cluster mode: the link's counters.
    pub cluster_metrics: Option<Arc<crate::metrics::ClusterMetrics>>,
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
    /// The table (and ring) holding the descriptor (an index into `io`; `u32`, so that
    /// it packs with `file_slot`).
    table: u32,
    /// The descriptor's slot in that table (what operations name; the kernel picked it).
    file_slot: u32,
    /// The slab key's generation, in every token (see `uring::token`).
    generation: u32,
    proto: Connection,
    out: Outbox,
    /// The multishot receive (see "Reading and backpressure" in `io`).
    recv: Recv,
    /// Operations in the kernel (see "Operation lifetimes" in `io`): a send (the driver
    /// holds its chunks), the receive, cancels, the shutdown, the close.
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
    /// The wheel entry that counts.
    timer_at: Option<At>,
    /// For the connection gauges.
    transport: Transport,
    /// The deadlines few connections have (token expiry, long poll, close, slow
    /// consumer): 8 bytes, not 32.
    late: LateDeadlines,
    /// `--access-log` only: who is at the other end. Boxed, so that without the log a
    /// connection pays 8 bytes for it, not 96.
    addrs: Option<Box<Addrs>>,
    /// TLS (`--tls-cert`): ciphertext on the socket, plaintext to and from `proto` (see
    /// "TLS" in `io`). Boxed: a plain connection pays 8 bytes.
    tls: Option<Box<Tls>>,
}

/// Which of a connection's [`LateDeadlines`].
#[derive(Debug, Clone, Copy)]
enum Late {
    /// When the client's token expires (authorization on): the connection ends then.
    Auth,
    /// A long poll's deadline.
    Poll,
    /// When the connection must be gone even if its outbox has not drained.
    Hard,
    /// The outbox reached its cap and reading stopped: not drained by this instant (see
    /// `outbox`), the connection is cut as a slow consumer (`--outbox-timeout`).
    Stall,
}

/// The deadlines an idle WebSocket or event stream does not have, allocated while one
/// is set (with authorization on, each connection's token expiry).
#[derive(Debug, Default)]
struct LateDeadlines(Option<Box<[Option<At>; 4]>>);

impl LateDeadlines {
    fn get(&self, which: Late) -> Option<At> {
        self.0.as_ref().and_then(|d| d[which as usize])
    }

    fn set(&mut self, which: Late, at: Option<At>) {
        match (&mut self.0, at) {
            (None, None) => {}
            (None, Some(_)) => {
                let mut d = [None; 4];
                d[which as usize] = at;
                self.0 = Some(Box::new(d));
            }
            (Some(d), _) => {
                d[which as usize] = at;
                if d.iter().all(Option::is_none) {
                    self.0 = None;
                }
            }
        }
    }
}

/// A connection's addresses, for the access log.
#[derive(Debug, Default)]
struct Addrs {
    /// The TCP peer (the proxy, behind one); `None` until known, or if unknowable.
    peer: Option<SocketAddr>,
    /// The client as the PROXY header says (`--proxy-protocol`); `None`: the peer.
    proxied: Option<SocketAddr>,
    /// The client of the current request as a trusted proxy's X-Forwarded-For says
    /// (port 0: the header has none); `None`: as above.
    client: Option<SocketAddr>,
}

impl Addrs {
    /// ` client=IP[:PORT] peer=IP:PORT` for a log line.
    fn write(&self, s: &mut String) {
        use std::fmt::Write as _;
        match self.client.or(self.proxied).or(self.peer) {
            Some(c) if c.port() == 0 => _ = write!(s, " client={}", c.ip()),
            Some(c) => _ = write!(s, " client={c}"),
            None => s.push_str(" client=-"),
        }
        match self.peer {
            Some(p) => _ = write!(s, " peer={p}"),
            None => s.push_str(" peer=-"),
        }
    }
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
    /// The cluster link's counters, in cluster mode.
    cluster: Option<Arc<crate::metrics::ClusterMetrics>>,
}

impl std::ops::Deref for Metrics {
    type Target = ShardMetrics;
    fn deref(&self) -> &ShardMetrics {
        &self.all[self.id]
    }
}

impl Conn {
    /// Nothing left to send: the outbox is empty and TLS has no records waiting.
    fn all_sent(&self) -> bool {
        self.out.is_empty() && self.tls.as_ref().is_none_or(|t| !t.has_output())
    }

    /// Something to send: queued bytes, a control frame, TLS records.
    fn has_sendable(&self) -> bool {
        self.out.has_waiting()
            || self.proto.has_control()
            || self.tls.as_ref().is_some_and(|t| t.has_output())
    }

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
    rng: crate::proto::rand::Rng,
    inbox: Receiver<BusMsg>,
    peers: Vec<Sender<BusMsg>>,
    ring_fds: Arc<std::sync::OnceLock<Vec<i32>>>,
    wake: Vec<bool>,
    /// The subscribers on this shard (see `crate::pubsub::local`).
    local: Local,
    /// The topics this shard owns (see `crate::pubsub::owner`), or mirrors in cluster
    /// mode (`crate::pubsub::mirror`).
    owner: OwnerSide,
    /// Cluster mode: the node's link to Redis, bus target `peers.len()`.
    link: Option<crate::cluster::link::Link>,
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
    /// starved ones (see "Fair reading" in `io`).
    rearm_busy: Vec<(usize, u32)>,
    /// Timer entries due and not handled yet (see `timers::TIMERS_PER_TURN`).
    due: VecDeque<Entry>,
    /// Connections with bytes queued this turn (slab key, generation); see "Corked
    /// sends" in `io`.
    to_flush: Vec<(usize, u32)>,
    /// `--access-log` lines of this turn, written to stderr with one call at its end.
    log: String,
    /// `--tls-cert`: the settings new connections get.
    certs: Option<super::tls::ShardCerts>,
    /// TLS scratch: received records deciphered in place, small pieces gathered into
    /// one record.
    tls_in: Vec<u8>,
    tls_gather: Vec<u8>,
}

/// Runs a shard until shutdown completes.
pub fn run(init: ShardInit) {
    if let Some(cpu) = init.cpu {
        // Best effort: a cpuset may forbid it; the shard still works unpinned.
        let _ = crate::sys::pin_to_cpu(cpu);
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
            deferred_per_enter: DEFERRED_PER_ENTER,
        };
        let io = Tables::new(
            &spec,
            TableSpec {
                sq_entries: 1024,
                cq_entries: EXTRA_CQ_ENTRIES,
                recv_buffers: EXTRA_RECV_BUFFERS,
                ..spec
            },
        )?;
        let now = Instant::now();
        let mut conn_cfg = init.config.conn_config();
        conn_cfg.auth = init.auth.clone();
        conn_cfg.admin_split = init.admin_listener.is_some();
        let shards = init.peers.len();
        let owner = if init.link.is_some() {
            OwnerSide::Cluster(Mirror::new(init.config.history, shards))
        } else {
            OwnerSide::Node(Box::new(Owner::new(
                OwnerConfig {
                    history: init.config.history,
                    ttl: init.config.history_ttl,
                    memory: init.config.history_memory / shards,
                },
                now,
            )))
        };
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
            rng: crate::proto::rand::Rng::new(init.id as u64 + 1),
            inbox: init.inbox,
            wake: vec![false; init.peers.len()],
            peers: init.peers,
            ring_fds: init.ring_fds,
            local: Local::new(init.id, shards, init.epoch),
            owner,
            link: init.link,
            own_queue: VecDeque::new(),
            bus_out: Vec::new(),
            touched: Vec::new(),
            epoch: init.epoch,
            next_sweep: now + bus::TOPIC_SWEEP,
            metrics: Metrics {
                all: init.metrics,
                id: init.id,
                cluster: init.cluster_metrics,
            },
            rearm_starved: Vec::new(),
            rearm_busy: Vec::new(),
            to_flush: Vec::new(),
            due: VecDeque::new(),
            log: String::new(),
            certs: init.certs.map(super::tls::ShardCerts::new),
            tls_in: Vec::new(),
            tls_gather: Vec::new(),
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
            self.rearm_receives(now);
            self.drain_bus(now);
            self.fire_timers(now, &mut expired);
            self.housekeeping(now);
            self.flush_sends(now);
            self.send_wakes();
            self.write_log();
            if self.drained(now) {
                return Ok(());
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
            Kind::PeerAddr => self.on_peer_addr(now, token, &cqe),
            Kind::Wake | Kind::Socket | Kind::Connect | Kind::Bind => {}
        }
    }

    fn conn_for(&mut self, token: Token) -> Option<usize> {
        let key = token.key() as usize;
        self.conns
            .get(key)
            .filter(|c| c.generation == token.generation)
            .map(|_| key)
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
        if (c.proto.is_lingering() || c.proto.is_closed()) && c.out.is_empty() && !c.peer_gone {
            // Its last words said: TLS says it is the end (close_notify), once.
            if let Some(tls) = c.tls.as_deref_mut() {
                tls.close_notify();
            }
        }
        if !c.flush_queued && !c.ops.has(Kind::Send) && c.has_sendable() {
            c.flush_queued = true;
            self.to_flush.push((key, c.generation));
        }
        self.flow(now, key);
        let c = &mut self.conns[key];
        if c.proto.is_lingering() && !c.shut_wr && c.all_sent() {
            c.shut_wr = true;
            c.ops.start(Kind::Shutdown);
            let e = op::shutdown(c.file_slot, libc::SHUT_WR)
                .user_data(Token::new(Kind::Shutdown, c.generation, key as u32).encode());
            let t = c.table as usize;
            self.push(t, e);
        }
        let c = &mut self.conns[key];
        if c.proto.is_closed() {
            if c.late.get(Late::Hard).is_none() {
                c.late
                    .set(Late::Hard, Some(At::new(now + self.conn_cfg.close_timeout)));
            }
            if c.all_sent() {
                return self.finish(key);
            }
        }
        self.schedule(key);
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
                if self.conns[key].addrs.is_some() {
                    let what = match &kind {
                        WsKind::Topic(topic) => format!("ws open /ws/{topic}"),
                        WsKind::Echo => "ws open /echo".to_owned(),
                    };
                    self.log_line(key, &what);
                }
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
                c.late.set(Late::Auth, Some(At::new(now + valid_for)));
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
                if self.conns[key].addrs.is_some() {
                    let names: Vec<&str> = topics.iter().map(|t| t.as_str()).collect();
                    self.log_line(key, &format!("sse open {}", names.join(",")));
                }
                self.open_sse(key, topics, last_event_id);
            }
            Event::Request { route, body } => match route {
                Route::Publish {
                    topic,
                    event,
                    idempotency_key,
                } => self.publish_http(key, topic, event, idempotency_key, body),
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
                    let text =
                        crate::metrics::render(&self.metrics.all, self.metrics.cluster.as_deref());
                    let c = &mut self.conns[key];
                    let ctype = "text/plain; version=0.0.4; charset=utf-8";
                    c.proto
                        .respond(now, &self.conn_cfg, Status::Ok, ctype, &[], text.as_bytes());
                }
                // The state machine answers these itself.
                Route::Healthz | Route::Echo | Route::Ws { .. } | Route::Sse { .. } => {}
            },
            Event::Proxied(source) => {
                if let Some(a) = self.conns[key].addrs.as_deref_mut() {
                    a.proxied = source;
                }
            }
            Event::ForwardedFor(xff) => {
                if let Some(a) = self.conns[key].addrs.as_deref_mut() {
                    // Behind a PROXY header too, the header's client is the one that
                    // reached the trusted proxy; with neither, the TCP peer.
                    let from = a.proxied.or(a.peer);
                    a.client = from.map(|from| {
                        let ip = crate::proto::proxy::forwarded_client(
                            from.ip(),
                            xff.as_deref(),
                            &self.conn_cfg.trusted_proxies,
                        );
                        if ip == from.ip() {
                            from
                        } else {
                            SocketAddr::new(ip, 0)
                        }
                    });
                }
            }
            Event::Closed(reason) => self.on_conn_ended(key, reason),
        }
    }

    /// Adds an `--access-log` line about connection `key`, if it keeps its addresses.
    fn log_line(&mut self, key: usize, what: &str) {
        let Some(a) = self.conns[key].addrs.as_deref() else {
            return;
        };
        self.log.push_str("ringpush: access");
        a.write(&mut self.log);
        self.log.push(' ');
        self.log.push_str(what);
        self.log.push('\n');
    }

    /// Writes this turn's access log lines, one `write` for all of them. Best effort:
    /// a full or closed stderr loses lines rather than stopping the shard.
    fn write_log(&mut self) {
        if self.log.is_empty() {
            return;
        }
        use std::io::Write as _;
        let _ = std::io::stderr().lock().write_all(self.log.as_bytes());
        self.log.clear();
    }

    /// The state machine says the connection is over (`Event::Closed`): counted, taken
    /// out of its topics, and its bytes flushed before `finish` closes the descriptor.
    fn on_conn_ended(&mut self, key: usize, reason: CloseReason) {
        self.metrics.closed(&reason);
        if self.conns[key].addrs.is_some() {
            let line = match (self.conns[key].transport, reason) {
                (Transport::Ws, r) => Some(format!("ws close {r:?}")),
                (Transport::Sse, r) => Some(format!("sse close {r:?}")),
                (
                    _,
                    r @ (CloseReason::Rejected(_)
                    | CloseReason::BadProxyHeader(_)
                    | CloseReason::TlsFailed
                    | CloseReason::HandshakeTimeout),
                ) => Some(format!("refused {r:?}")),
                _ => None,
            };
            if let Some(line) = line {
                self.log_line(key, &line);
            }
        }
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
}

#[cfg(test)]
mod tests {
    /// What every connection costs in the slab, whatever it does; grows only on purpose
    /// (benches/RESULTS.md tracks memory per connection).
    #[test]
    fn conn_stays_small() {
        let size = std::mem::size_of::<super::Conn>();
        assert!(size <= 224, "Conn is {size} bytes");
    }
}
