//! One load-generator thread: its own rings and fixed-file tables (client sockets are
//! direct descriptors created with `IORING_OP_SOCKET`, so a worker holds far more than
//! RLIMIT_NOFILE connections), its share of the connections, and its statistics.
//!
//! A connection's life: `Socket` into a slot we chose, linked to a `setsockopt` of
//! `IP_BIND_ADDRESS_NO_PORT`, `Bind` (its 127.0.0.x source address) and `Connect`; then the request is sent and a multishot receive
//! armed; bytes go through [`Client`]. When it ends, its operations are cancelled, the
//! slot is closed once none is in flight, and the connection is retried after a backoff
//! delay (if the run is still going). An event stream resumes with `Last-Event-ID` (the
//! last id it received, as a browser's `EventSource` does), and what it receives over
//! its whole life goes through a [`Sequence`] check.
//!
//! The cut (`--cut-after`): when the coordinator raises [`Shared::cut`], every open
//! subscriber ends at once (its receive cancelled by key, its slot closed with a reset),
//! as if the network had dropped them all, and comes back after its backoff delay.
//!
//! Memory rules as in the server: every buffer an operation names (send bytes, socket
//! addresses) is owned by the connection or the worker and outlives the operation.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::uring::op::{self, Chunk, Held, SendBuf};
use crate::uring::table::Completion;
use hdrhistogram::Histogram;
use slab::Slab;

use super::backoff::Backoff;
use super::sequence::{End, Sequence, Tally};
use crate::proto::client::{Client, ClientEvent, CloseKind, Transport};
use crate::proto::rand::Rng;
use crate::proto::sse::ParsedEvent;
use crate::uring::table::{TableSpec, Tables};
use crate::uring::token::{Kind, Token};

/// Run phases, set by the coordinating thread.
pub const PHASE_CONNECT: u8 = 0;
/// Measuring: echo and broadcast traffic flows.
pub const PHASE_RUN: u8 = 1;
/// Stop sending; keep counting what is still in flight.
pub const PHASE_DRAIN: u8 = 2;
/// Return the statistics.
pub const PHASE_STOP: u8 = 3;
/// Everyone leaves at once: each WebSocket sends a close frame (1001, going away) and
/// waits for the server to close; event streams and polls close their socket. No
/// connection is retried.
pub const PHASE_LEAVE: u8 = 4;

/// Handshakes in flight per worker: beyond this, new connects wait. Keeps the listen
/// queue and SYN backlog of the server from overflowing (a dropped SYN costs the client a
/// one-second retransmit and spoils the connect-time figure).
const MAX_CONNECTING: usize = 2048;
/// Broadcast messages in flight (published, not yet seen by every subscriber).
pub const BROADCAST_WINDOW: u64 = 8;
const BGID: u16 = 0;
const TICK: Duration = Duration::from_millis(1);
/// A broadcast payload starts with its send time: nanoseconds since the run's epoch in
/// 20 decimal digits, text so that it reads the same in a WebSocket frame and an SSE
/// `data:` line.
const TS_DIGITS: usize = 20;

/// The send time a broadcast payload starts with, if it does.
fn timestamp(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload.get(..TS_DIGITS)?)
        .ok()?
        .parse()
        .ok()
}

/// What the load generator does once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Hold connections open.
    Idle,
    /// Each connection sends a message and waits for its echo, repeatedly.
    Echo,
    /// Subscribers only receive; one publisher connection sends.
    Broadcast,
    /// Hold connections; when the server goes away (or the load generator cuts them all,
    /// `--cut-after`), reconnect with backoff and record when each reconnect happens.
    Storm,
}

/// What every worker needs to know, read-only.
#[derive(Debug)]
pub struct Plan {
    /// The scenario.
    pub scenario: Scenario,
    /// WebSocket or SSE.
    pub transport: Transport,
    /// The server.
    pub target: SocketAddrV4,
    /// `Host` header value.
    pub host: String,
    /// Request path (with query).
    pub path: String,
    /// Source addresses to bind (empty: let the kernel choose).
    pub sources: Vec<Ipv4Addr>,
    /// Connections in total (subscribers for broadcast, not counting the publisher).
    pub connections: usize,
    /// Connection attempts per second, all workers together.
    pub rate: usize,
    /// Payload bytes per message.
    pub message_bytes: usize,
    /// Broadcast: stop publishing after this many messages.
    pub messages: Option<u64>,
    /// Short polling: the pause between a poll's answer and the next request.
    pub poll_interval: Duration,
    /// Broadcast: publish at most this many messages per second.
    pub publish_rate: Option<f64>,
    /// Broadcast: the publisher's WebSocket path (`/ws/{topic}`), whatever the
    /// subscribers' transport.
    pub publish_path: String,
    /// Worker 0 runs a publisher on `publish_path` (broadcast; a storm with a publish
    /// rate).
    pub publisher: bool,
    /// Reconnect policy.
    pub backoff: Backoff,
    /// Worker threads.
    pub threads: usize,
    /// Fixed-file slots per table (RLIMIT_NOFILE).
    pub table_slots: u32,
}

/// Counters every worker updates and the coordinator reads.
#[derive(Debug)]
pub struct Shared {
    /// Time zero of the run (message timestamps are nanoseconds since it).
    pub epoch: Instant,
    /// One of the `PHASE_*` values.
    pub phase: AtomicU8,
    /// Connections currently open (handshake done).
    pub open: AtomicU64,
    /// Connection attempts that failed (any reason).
    pub failed: AtomicU64,
    /// Broadcast messages published.
    pub published: AtomicU64,
    /// Broadcast messages received, over all subscribers.
    pub delivered: AtomicU64,
    /// Messages received by all workers.
    pub received: AtomicU64,
    /// Messages sent by all workers (echo and publish).
    pub sent: AtomicU64,
    /// Raised once by the coordinator (`--cut-after`): every worker cuts its open
    /// subscribers.
    pub cut: AtomicBool,
}

impl Shared {
    /// Counters at zero, phase connect.
    pub fn new() -> Shared {
        Shared {
            epoch: Instant::now(),
            phase: AtomicU8::new(PHASE_CONNECT),
            open: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            cut: AtomicBool::new(false),
        }
    }
}

impl Default for Shared {
    fn default() -> Shared {
        Shared::new()
    }
}

/// One worker's measurements.
#[derive(Debug)]
pub struct Stats {
    /// Socket creation to handshake completion, microseconds.
    pub handshake_us: Histogram<u64>,
    /// Echo round trip, or publish-to-delivery for broadcast, microseconds.
    pub latency_us: Histogram<u64>,
    /// Messages sent during the run phase.
    pub sent: u64,
    /// Messages received during the run phase.
    pub received: u64,
    /// Payload bytes received during the run phase.
    pub received_bytes: u64,
    /// Bytes read from and written to sockets during the run phase (headers, framing,
    /// payloads: what polling costs on the wire compared with a stream).
    pub wire_in: u64,
    /// Bytes written to sockets during the run phase.
    pub wire_out: u64,
    /// Failed attempts by reason.
    pub errors: HashMap<String, u64>,
    /// Open connections that ended (server close, EOF, error), not counting cuts.
    pub disconnects: u64,
    /// Open connections this worker cut (`--cut-after`).
    pub cuts: u64,
    /// Of those, back open before the run ended.
    pub cut_back: u64,
    /// When this worker cut its connections, since the epoch.
    pub cut_at: Option<Duration>,
    /// When the last socket it cut was closed, since the epoch: the cut's own cost.
    pub cut_closed_at: Option<Duration>,
    /// Socket creation to handshake completion, reconnects only (the storm's handshakes).
    pub reconnect_handshake_us: Histogram<u64>,
    /// Event streams: what the exactness check counted.
    pub sse: Tally,
    /// Event streams: where each subscriber stood at the end.
    pub sse_ends: Vec<End>,
    /// Successful handshakes after the first one of a connection.
    pub reconnects: u64,
    /// Time of each connection attempt after a disconnect, since the epoch.
    pub retry_times: Vec<Duration>,
    /// Time of each reconnect that succeeded, since the epoch.
    pub reconnect_times: Vec<Duration>,
    /// Time each disconnect was noticed, since the epoch.
    pub disconnect_times: Vec<Duration>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 hour at 3 significant digits: ~30 KB per histogram.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

impl Stats {
    fn new() -> Stats {
        Stats {
            handshake_us: histogram(),
            latency_us: histogram(),
            sent: 0,
            received: 0,
            received_bytes: 0,
            wire_in: 0,
            wire_out: 0,
            errors: HashMap::new(),
            disconnects: 0,
            cuts: 0,
            cut_back: 0,
            cut_at: None,
            cut_closed_at: None,
            reconnect_handshake_us: histogram(),
            sse: Tally::default(),
            sse_ends: Vec::new(),
            reconnects: 0,
            retry_times: Vec::new(),
            reconnect_times: Vec::new(),
            disconnect_times: Vec::new(),
        }
    }

    /// Adds another worker's numbers to these.
    pub fn merge(&mut self, other: Stats) {
        let _ = self.handshake_us.add(&other.handshake_us);
        let _ = self.latency_us.add(&other.latency_us);
        self.sent += other.sent;
        self.received += other.received;
        self.received_bytes += other.received_bytes;
        self.wire_in += other.wire_in;
        self.wire_out += other.wire_out;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.disconnects += other.disconnects;
        self.cuts += other.cuts;
        self.cut_back += other.cut_back;
        self.cut_at = match (self.cut_at, other.cut_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.cut_closed_at = self.cut_closed_at.max(other.cut_closed_at);
        let _ = self
            .reconnect_handshake_us
            .add(&other.reconnect_handshake_us);
        self.sse.merge(&other.sse);
        self.sse_ends.extend(other.sse_ends);
        self.reconnects += other.reconnects;
        self.retry_times.extend(other.retry_times);
        self.reconnect_times.extend(other.reconnect_times);
        self.disconnect_times.extend(other.disconnect_times);
    }

    /// An empty set, to merge into.
    pub fn empty() -> Stats {
        Stats::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Echo sender, idle holder or broadcast subscriber.
    Plain,
    /// The broadcast publisher.
    Publisher,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for its (re)connect turn.
    Waiting,
    /// Socket, bind, connect in flight.
    Connecting,
    /// Connected, request sent, waiting for the response head.
    Handshake,
    Open,
    /// Over: cancelling and closing.
    Closing,
}

/// Where a connection is with respect to the load generator's own cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Not cut (or back since).
    No,
    /// Cut: its receive is being cancelled and its slot closed.
    Closing,
    /// Cut and closed: waiting for its backoff delay, or reconnecting.
    Away,
}

/// An event stream's memory across its connections.
#[derive(Debug, Default)]
struct Stream {
    /// The last event id received: sent as `Last-Event-ID` on reconnect.
    last_event_id: Option<String>,
    /// The exactness check.
    seq: Sequence,
}

#[derive(Debug)]
struct Conn {
    role: Role,
    stage: Stage,
    generation: u32,
    table: usize,
    slot: u32,
    /// The socket op succeeded: the slot holds a descriptor to close.
    has_socket: bool,
    /// Operations in flight on the slot.
    ops: u32,
    recv: bool,
    cancelled: bool,
    client: Option<Client>,
    /// Bytes waiting to be sent.
    out: Vec<u8>,
    /// Bytes being sent: in the driver while `send_busy`, else empty (kept for its
    /// capacity).
    sending: Vec<u8>,
    /// A send is in flight.
    send_busy: bool,
    started: Instant,
    /// Echo: when the message in flight was sent.
    sent_at: Option<Instant>,
    /// Failed attempts since the last success.
    attempt: u32,
    /// Has been open at least once.
    was_open: bool,
    /// The current attempt reached the open state.
    opened: bool,
    /// Index into the plan's sources.
    source: usize,
    error: Option<String>,
    cut: Cut,
    /// Event-stream subscribers only (boxed: a million WebSockets do not pay for it).
    stream: Option<Box<Stream>>,
}

/// A table's slot allocator: fresh slots in order, then freed ones.
#[derive(Debug, Default)]
struct Slots {
    next: u32,
    free: Vec<u32>,
}

struct Worker<'a> {
    io: Tables,
    slots: Vec<Slots>,
    table_slots: u32,
    plan: &'a Plan,
    shared: &'a Shared,
    id: usize,
    conns: Slab<Conn>,
    next_generation: u32,
    /// Connections ready to (re)connect, in order.
    ready: VecDeque<usize>,
    /// Backoff timers: (due, key).
    retries: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Short polling: when each connection sends its next request.
    polls: BinaryHeap<Reverse<(Instant, usize)>>,
    connecting: usize,
    /// Connection attempts started so far (rate limit).
    launched: u64,
    rate_start: Instant,
    rate_per_sec: f64,
    srcs: Box<[SocketAddrV4]>,
    dst: SocketAddrV4,
    rng: Rng,
    stats: Stats,
    events: Vec<ClientEvent>,
    phase: u8,
    /// Echo started on every open connection.
    echo_started: bool,
    payload: Vec<u8>,
    /// Locally counted deliveries and sends not yet added to the shared counters.
    delivered_local: u64,
    sent_local: u64,
    publisher: Option<usize>,
    last_progress: (u64, Instant),
    /// When this worker saw the run phase begin.
    run_started: Option<Instant>,
}

/// Runs worker `id` until the phase becomes [`PHASE_STOP`]; returns its statistics.
pub fn run(id: usize, plan: &Plan, shared: &Shared) -> Result<Stats, String> {
    let spec = TableSpec {
        slots: plan.table_slots,
        sq_entries: 4096,
        cq_entries: (plan.table_slots.max(4096) * 2)
            .next_power_of_two()
            .min(1 << 19),
        recv_buffers: 2048,
        recv_buffer_size: 4096,
        bgid: BGID,
    };
    let io = Tables::new(
        &spec,
        TableSpec {
            recv_buffers: 512,
            sq_entries: 1024,
            ..spec
        },
    )?;
    let mine = (plan.connections + plan.threads - 1 - id) / plan.threads;
    let now = Instant::now();
    let mut w = Worker {
        io,
        slots: vec![Slots::default()],
        table_slots: plan.table_slots,
        plan,
        shared,
        id,
        conns: Slab::with_capacity(mine + 1),
        next_generation: 1,
        ready: VecDeque::with_capacity(mine + 1),
        retries: BinaryHeap::new(),
        polls: BinaryHeap::new(),
        connecting: 0,
        launched: 0,
        rate_start: now,
        rate_per_sec: plan.rate as f64 / plan.threads as f64,
        srcs: plan
            .sources
            .iter()
            .map(|ip| SocketAddrV4::new(*ip, 0))
            .collect(),
        dst: plan.target,
        rng: Rng::new(0x5eed ^ (id as u64) << 32),
        stats: Stats::new(),
        events: Vec::new(),
        phase: PHASE_CONNECT,
        echo_started: false,
        payload: vec![b'x'; plan.message_bytes.max(TS_DIGITS)],
        delivered_local: 0,
        sent_local: 0,
        publisher: None,
        last_progress: (0, now),
        run_started: None,
    };
    for i in 0..mine {
        let key = w.add_conn(Role::Plain, id + i * plan.threads);
        w.ready.push_back(key);
    }
    if id == 0 && plan.publisher {
        let key = w.add_conn(Role::Publisher, plan.connections);
        w.publisher = Some(key);
        w.ready.push_front(key);
    }
    w.run()?;
    w.stats.sse_ends = w
        .conns
        .iter()
        .filter_map(|(_, c)| c.stream.as_ref().map(|s| s.seq.end()))
        .collect();
    Ok(w.stats)
}

impl Worker<'_> {
    fn add_conn(&mut self, role: Role, index: usize) -> usize {
        let source = if self.srcs.is_empty() {
            0
        } else {
            index % self.srcs.len()
        };
        let stream =
            (role == Role::Plain && self.plan.transport == Transport::Sse).then(Box::default);
        self.conns.insert(Conn {
            role,
            stage: Stage::Waiting,
            generation: 0,
            table: 0,
            slot: 0,
            has_socket: false,
            ops: 0,
            recv: false,
            cancelled: false,
            client: None,
            out: Vec::new(),
            sending: Vec::new(),
            send_busy: false,
            started: Instant::now(),
            sent_at: None,
            attempt: 0,
            was_open: false,
            opened: false,
            source,
            error: None,
            cut: Cut::No,
            stream,
        })
    }

    /// Queues an operation on table `t`.
    fn push(&mut self, t: usize, e: op::Sqe) {
        self.io.push(t, e);
    }

    fn arm_tick(&mut self) {
        self.io
            .timeout(0, TICK, Token::new(Kind::Tick, 0, 0).encode());
    }

    fn run(&mut self) -> Result<(), String> {
        self.arm_tick();
        let mut cqes = Vec::with_capacity(4096);
        loop {
            self.io
                .submit_and_reap(&mut cqes, true)
                .map_err(|e| format!("io_uring_enter: {e}"))?;
            let now = Instant::now();
            for cqe in cqes.drain(..) {
                self.complete(now, cqe);
            }
            self.io.publish_buffers();
            let phase = self.shared.phase.load(Ordering::Acquire);
            if phase != self.phase {
                self.phase = phase;
                if phase == PHASE_RUN {
                    self.run_started = Some(now);
                }
                if phase == PHASE_LEAVE {
                    self.leave_all(now);
                }
                if phase == PHASE_STOP {
                    return Ok(());
                }
            }
            if self.stats.cut_at.is_none() && self.shared.cut.load(Ordering::Acquire) {
                self.cut_all(now);
            }
            while let Some(Reverse((due, key))) = self.retries.peek().copied() {
                if due > now {
                    break;
                }
                self.retries.pop();
                self.ready.push_back(key);
            }
            while let Some(Reverse((due, key))) = self.polls.peek().copied() {
                if due > now {
                    break;
                }
                self.polls.pop();
                self.poll_again(key);
            }
            self.launch(now);
            if self.phase == PHASE_RUN {
                self.drive(now);
            }
            if self.delivered_local > 0 {
                self.shared
                    .delivered
                    .fetch_add(self.delivered_local, Ordering::Relaxed);
                self.shared
                    .received
                    .fetch_add(self.delivered_local, Ordering::Relaxed);
                self.delivered_local = 0;
            }
            if self.sent_local > 0 {
                self.shared
                    .sent
                    .fetch_add(self.sent_local, Ordering::Relaxed);
                self.sent_local = 0;
            }
        }
    }

    /// Everyone leaves: a close frame from each WebSocket (the server answers and closes),
    /// a plain close for the others, and nothing is reconnected.
    fn leave_all(&mut self, now: Instant) {
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
    fn cut_all(&mut self, now: Instant) {
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

    /// Starts connection attempts, as the rate and the in-flight cap allow.
    fn launch(&mut self, now: Instant) {
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

    fn alloc_slot(&mut self) -> Result<(usize, u32), String> {
        for (t, s) in self.slots.iter_mut().enumerate() {
            if let Some(slot) = s.free.pop() {
                return Ok((t, slot));
            }
            if s.next < self.table_slots {
                s.next += 1;
                return Ok((t, s.next - 1));
            }
        }
        let t = self.io.add()?;
        self.slots.push(Slots {
            next: 1,
            free: Vec::new(),
        });
        Ok((t, 0))
    }

    fn start_connect(&mut self, now: Instant, key: usize) -> Result<(), String> {
        let (table, slot) = self.alloc_slot()?;
        let generation = self.next_generation;
        self.next_generation = (self.next_generation + 1) & 0x00ff_ffff;
        let bind = !self.srcs.is_empty();
        let c = &mut self.conns[key];
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
        c.recv = false;
        c.cancelled = false;
        c.ops = if bind { 4 } else { 2 };
        c.started = now;
        c.error = None;
        c.out.clear();
        c.client = None;
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
            dest: self.dst,
            socket_data: token(Kind::Socket),
            sockopt_data: token(Kind::SockOpt),
            bind_data: token(Kind::Bind),
            connect_data: token(Kind::Connect),
        };
        self.io.connect(table, &chain);
        self.connecting += 1;
        Ok(())
    }

    fn conn_for(&self, token: Token) -> Option<usize> {
        let key = token.slot as usize;
        self.conns
            .get(key)
            .filter(|c| c.generation == token.generation && c.stage != Stage::Waiting)
            .map(|_| key)
    }

    fn complete(&mut self, now: Instant, cqe: Completion) {
        let Some(token) = Token::decode(cqe.user_data) else {
            return;
        };
        if token.kind == Kind::Tick {
            return self.arm_tick();
        }
        let res = cqe.result;
        if token.kind == Kind::Recv {
            return self.on_recv(now, cqe.table, token, &cqe);
        }
        let Some(key) = self.conn_for(token) else {
            return;
        };
        let c = &mut self.conns[key];
        match token.kind {
            Kind::Socket => {
                c.ops -= 1;
                if res >= 0 {
                    c.has_socket = true;
                } else {
                    c.error.get_or_insert_with(|| errno_name("socket", res));
                }
            }
            Kind::SockOpt | Kind::Bind => {
                c.ops -= 1;
                if res < 0 && res != -libc::ECANCELED {
                    let op = if token.kind == Kind::Bind {
                        "bind"
                    } else {
                        "setsockopt"
                    };
                    c.error.get_or_insert_with(|| errno_name(op, res));
                }
            }
            Kind::Connect => {
                c.ops -= 1;
                self.connecting -= 1;
                if res < 0 {
                    // ECANCELED: the socket or bind before it failed and said why.
                    c.error.get_or_insert_with(|| errno_name("connect", res));
                } else if c.error.is_none() {
                    self.on_connected(key);
                    return;
                }
            }
            Kind::Send => {
                c.ops -= 1;
                c.send_busy = false;
                if let Some(Held::Send(buf)) = cqe.held {
                    if let Some(Chunk::Owned(v)) = buf.chunks.into_iter().next() {
                        c.sending = v;
                    }
                }
                if res < 0 {
                    c.sending.clear();
                    c.error.get_or_insert_with(|| errno_name("send", res));
                } else {
                    c.sending.drain(..res as usize);
                    if self.phase == PHASE_RUN || self.phase == PHASE_DRAIN {
                        self.stats.wire_out += res as u64;
                    }
                    if c.stage != Stage::Closing {
                        if c.sending.is_empty() {
                            self.flush(key);
                        } else {
                            self.submit_send(key);
                        }
                        return;
                    }
                }
            }
            Kind::Cancel => c.ops -= 1,
            Kind::Close => {
                c.ops -= 1;
                c.has_socket = false;
                let (table, slot) = (c.table, c.slot);
                self.slots[table].free.push(slot);
                return self.after_close(now, key);
            }
            _ => return,
        }
        self.check_over(now, key);
    }

    fn on_connected(&mut self, key: usize) {
        let plan = self.plan;
        let seed = self.rng.next_u64();
        let c = &mut self.conns[key];
        c.stage = Stage::Handshake;
        let (transport, path) = match c.role {
            Role::Publisher => (Transport::Ws, &plan.publish_path),
            Role::Plain => (plan.transport, &plan.path),
        };
        let last_event_id = c.stream.as_ref().and_then(|s| s.last_event_id.as_deref());
        let client = Client::new(transport, &plan.host, path, seed, last_event_id, &mut c.out);
        c.client = Some(client);
        c.recv = true;
        c.ops += 1;
        let e = op::recv_multi(c.slot, BGID, 0)
            .user_data(Token::new(Kind::Recv, c.generation, key as u32).encode());
        let t = c.table;
        self.push(t, e);
        self.flush(key);
    }

    /// Sends what is queued if no send is in flight.
    fn flush(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.send_busy || c.out.is_empty() || c.error.is_some() {
            return;
        }
        if c.stage == Stage::Closing {
            return;
        }
        std::mem::swap(&mut c.sending, &mut c.out);
        self.submit_send(key);
    }

    /// Submits a send of `sending` (all of it, or the rest after a short send).
    fn submit_send(&mut self, key: usize) {
        let c = &mut self.conns[key];
        c.ops += 1;
        c.send_busy = true;
        let buf = SendBuf::new(vec![Chunk::Owned(std::mem::take(&mut c.sending))], 0);
        let data = Token::new(Kind::Send, c.generation, key as u32).encode();
        self.io.send(c.table, c.slot, buf, data);
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
        let mut events = std::mem::take(&mut self.events);
        if let Some(bid) = bid {
            if self.phase == PHASE_RUN || self.phase == PHASE_DRAIN {
                self.stats.wire_in += res.max(0) as u64;
            }
            let bufs = &mut self.io.get_mut(t).bufs;
            let data = bufs.get(bid, res.max(0) as usize);
            let c = &mut self.conns[key];
            if let Some(client) = &mut c.client {
                client.handle_bytes(data, &mut c.out, &mut events);
            }
            bufs.recycle(bid);
        } else if res == 0 || (res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED) {
            let c = &mut self.conns[key];
            if let Some(client) = &mut c.client {
                client.handle_eof(&mut events);
            }
        }
        if !more {
            let c = &mut self.conns[key];
            c.recv = false;
            c.ops -= 1;
            // A multishot receive also ends when the buffers ran out (ENOBUFS) or the
            // completion queue overflowed (any result, without the MORE flag): re-arm
            // unless the stream ended. Not re-arming left connections deaf (no pongs,
            // no 101) at 970,000 connections.
            let ended = res == 0 || res == -libc::ECANCELED || (res < 0 && res != -libc::ENOBUFS);
            if !ended && c.stage != Stage::Closing && c.error.is_none() {
                c.recv = true;
                c.ops += 1;
                let e = op::recv_multi(c.slot, BGID, 0)
                    .user_data(Token::new(Kind::Recv, c.generation, key as u32).encode());
                self.push(t, e);
            }
        }
        for ev in events.drain(..) {
            self.on_event(now, key, ev);
        }
        self.events = events;
        self.flush(key);
        self.check_over(now, key);
    }

    fn on_event(&mut self, now: Instant, key: usize, ev: ClientEvent) {
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
                if c.was_open {
                    self.stats.reconnects += 1;
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
                    s.seq.observe(&event, id.as_deref(), &mut self.stats.sse);
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
    fn record_delivery(&mut self, now: Instant, payload: &[u8]) {
        if let Some(sent) = timestamp(payload) {
            let at = now.duration_since(self.shared.epoch).as_nanos() as u64;
            self.stats
                .latency_us
                .saturating_record(at.saturating_sub(sent) / 1000);
        }
        self.delivered_local += 1;
    }

    /// Sends a polling connection's next request.
    fn poll_again(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.stage != Stage::Open || c.error.is_some() {
            return;
        }
        if let Some(client) = &mut c.client {
            client.poll_again(&mut c.out);
        }
        self.flush(key);
    }

    fn send_echo(&mut self, now: Instant, key: usize) {
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
    fn drive(&mut self, now: Instant) {
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

    /// If the connection failed or ended, cancels what is in flight; once nothing is,
    /// closes its slot.
    fn check_over(&mut self, now: Instant, key: usize) {
        let c = &mut self.conns[key];
        if c.error.is_none() && c.stage != Stage::Closing {
            return;
        }
        if c.stage != Stage::Closing {
            if c.stage == Stage::Open {
                self.shared.open.fetch_sub(1, Ordering::Relaxed);
                if c.cut != Cut::Closing {
                    self.stats.disconnects += 1;
                    self.stats
                        .disconnect_times
                        .push(now.duration_since(self.shared.epoch));
                }
            }
            c.stage = Stage::Closing;
        }
        if c.ops > 0 {
            if c.recv && !c.cancelled {
                // By key, as the server does: a cancel by descriptor is matched against
                // every armed request of the ring (quadratic when everyone leaves).
                c.cancelled = true;
                c.ops += 1;
                let recv = Token::new(Kind::Recv, c.generation, key as u32).encode();
                let e = op::cancel(recv)
                    .user_data(Token::new(Kind::Cancel, c.generation, key as u32).encode());
                let t = c.table;
                self.push(t, e);
            }
            return;
        }
        if c.has_socket {
            let close_data = Token::new(Kind::Close, c.generation, key as u32).encode();
            let t = c.table;
            if c.cut == Cut::Closing {
                // An abortive close (`op::ResetClose`): the server gets a reset, as from a
                // link that died, and no port is left in TIME_WAIT to slow the
                // reconnects' connects from the same source addresses.
                c.ops += 2;
                let close = op::ResetClose {
                    slot: c.slot,
                    sockopt_data: Token::new(Kind::SockOpt, c.generation, key as u32).encode(),
                    close_data,
                };
                self.io.close_reset(t, &close);
            } else {
                c.ops += 1;
                let e = op::close(c.slot).user_data(close_data);
                self.push(t, e);
            }
            return;
        }
        let (table, slot) = (c.table, c.slot);
        self.slots[table].free.push(slot);
        self.after_close(now, key);
    }

    /// The slot is free again: count the failure and schedule the retry.
    fn after_close(&mut self, now: Instant, key: usize) {
        let c = &mut self.conns[key];
        let reason = c.error.take().unwrap_or_else(|| "closed".into());
        c.stage = Stage::Waiting;
        c.client = None;
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
        c.attempt = c.attempt.saturating_add(1);
        self.retries.push(Reverse((now + delay, key)));
    }
}

fn errno_name(op: &str, res: i32) -> String {
    format!("{op}: {}", std::io::Error::from_raw_os_error(-res))
}
