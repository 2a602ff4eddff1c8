//! One load-generator thread: its own rings and fixed-file tables (client sockets are
//! direct descriptors created with `IORING_OP_SOCKET`, so a worker holds far more than
//! RLIMIT_NOFILE connections), its share of the connections, and its statistics.
//!
//! A connection's life (`lifecycle.rs`): `Socket` into a slot we chose, then (with a
//! source address) a `setsockopt` of `IP_BIND_ADDRESS_NO_PORT` and a `Bind` to its
//! 127.0.0.x address, then `Connect`, all linked; then the request is sent and a
//! multishot receive armed; bytes go through [`Client`](crate::proto::client::Client)
//! (`completion.rs`), over TLS through the connection's
//! [`Tls`](crate::proto::tls::Tls) first: its hello is sent before anything, the request
//! waits in `out` until the handshake completes, then `flush` seals what is queued. When it ends, its operations are cancelled, the slot is closed
//! once none is in flight, and the connection is retried after a backoff delay (if the
//! run is still going). An event stream resumes with `Last-Event-ID` (the last id it
//! received, as a browser's `EventSource` does), and what it receives over its whole
//! life goes through a [`Sequence`](super::sequence::Sequence) check. What flows once
//! open (echo, the publisher, deliveries, polls) is in `traffic.rs`; the per-connection
//! state in `conn.rs`; the measurements in `stats.rs`.
//!
//! Many topics (`--topics N`, see [`topics`](super::topics)): subscriber `i` takes topic
//! `i mod N`; worker 0 runs up to 256 HTTP publishers (`POST /publish/{topic}`, pipelined,
//! [`Publisher`](super::publish::Publisher)) instead of the one WebSocket publisher, each
//! topic always on the same one; every subscriber's messages are checked against its
//! topic ([`Seen`](super::topics::Seen)).
//!
//! Stepped rates (`--publish-rate A,B,C`): the coordinator moves [`Shared::step`] on
//! and pauses publishing between steps ([`Shared::paused`]) while what is in flight
//! arrives; deliveries are recorded in the current step's histogram.
//!
//! Several targets (`--url` repeated, the nodes of a cluster): connection `i` starts on
//! target `i mod n`, the publisher on the first, and every retry goes to the next target
//! in the list, so the clients of a node that died end up on the others.
//!
//! The cut (`--cut-after`): when the coordinator raises [`Shared::cut`], every open
//! subscriber ends at once (its receive cancelled by key, its slot closed with a reset),
//! as if the network had dropped them all, and comes back after its backoff delay.
//!
//! Buffer ownership: the memory an operation names (the send buffer, the connect
//! chain's socket addresses, the reset-close's linger option, the tick's timespec) is
//! handed to the driver ([`Tables`]), which keeps it until the operation's completion;
//! a send's buffer comes back in [`Completion::held`](crate::uring::table::Completion)
//! and the connection keeps it between sends for its capacity. Nothing the kernel reads
//! lives in a `Conn`.

mod completion;
mod conn;
mod lifecycle;
mod stats;
mod traffic;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use slab::Slab;

use super::backoff::Backoff;
use crate::proto::client::{ClientEvent, Transport};
use crate::proto::rand::Rng;
use crate::uring::table::{TableSpec, Tables};
use crate::uring::token::{InFlight, Kind, Token};
use conn::{Conn, Cut, Role, Slots, Stage};
pub use stats::Stats;
pub use traffic::{ORDINAL_DIGITS, TS_DIGITS};

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

/// TCP connects in flight per worker (counted until the connect completes, not through
/// the HTTP or TLS handshake that follows): beyond this, new connects wait. Keeps the listen
/// queue and SYN backlog of the server from overflowing (a dropped SYN costs the client a
/// one-second retransmit and spoils the connect-time figure).
const MAX_CONNECTING: usize = 2048;
/// Broadcast messages in flight (published, not yet seen by every subscriber); over
/// many topics, the same number of deliveries (8 x subscribers).
const BROADCAST_WINDOW: u64 = 8;
/// HTTP publishers over many topics (one per topic with fewer topics). The server
/// answers a connection's requests one after the other, each once the topic's owner
/// has numbered it: a round trip through its shards that took 5.5 ms (p50; p99 57 ms)
/// with 100,000 subscribers receiving 40,000 messages/s, which held 4 pipelined
/// connections to ~500 publishes/s in all, whatever the rate asked. 256 of them carry
/// 20,000/s with room to spare.
pub const HTTP_PUBLISHERS: usize = 256;
/// Publishes sent and not answered, per HTTP publisher: 256 x 16 is 200 ms at
/// 20,000/s, enough to ride out a server's pause without an unbounded queue.
const HTTP_PIPELINE: u32 = 16;
const BGID: u16 = 0;
const TICK: Duration = Duration::from_millis(1);

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

/// One server (a node of a cluster) the connections are spread over.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its address.
    pub addr: SocketAddrV4,
    /// `Host` header value.
    pub host: String,
    /// Over TLS: the name its certificate must be valid for (also the SNI).
    pub tls_name: Option<ServerName<'static>>,
}

/// What every worker needs to know, read-only.
#[derive(Debug)]
pub struct Plan {
    /// The scenario.
    pub scenario: Scenario,
    /// WebSocket, SSE or polling (the subscribers'; the publisher speaks WebSocket).
    pub transport: Transport,
    /// The servers, at least one; all serve `path`.
    pub targets: Vec<Target>,
    /// Request path (with query), the same on every target.
    pub path: String,
    /// Source addresses to bind toward loopback targets (empty, or another target:
    /// let the kernel choose).
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
    /// Broadcast: publish at most this many messages per second, one rate per step;
    /// storm: publish at it. Empty: no rate.
    pub publish_rates: Vec<f64>,
    /// The publisher's WebSocket path (`/ws/{topic}`), whatever the
    /// subscribers' transport.
    pub publish_path: String,
    /// Publisher connections worker 0 runs: none, one WebSocket on `publish_path`
    /// (broadcast over one topic; a storm with a publish rate), or HTTP publishers
    /// (broadcast over several topics).
    pub publishers: usize,
    /// The topics subscribers spread over.
    pub topics: super::topics::Topics,
    /// Broadcast payloads carry their publish's number: each subscriber's messages are
    /// checked against its topic.
    pub check_topics: bool,
    /// Reconnect policy.
    pub backoff: Backoff,
    /// Worker threads.
    pub threads: usize,
    /// Fixed-file slots per table (RLIMIT_NOFILE).
    pub table_slots: u32,
    /// WebSockets offer permessage-deflate.
    pub compression: bool,
    /// Payloads are JSON text after the timestamp.
    pub json_payload: bool,
    /// Client TLS settings for targets with a [`Target::tls_name`].
    pub tls: Option<Arc<ClientConfig>>,
}

impl Plan {
    /// Publish-rate steps: one per rate, one without a rate.
    pub fn steps(&self) -> usize {
        self.publish_rates.len().max(1)
    }

    /// HTTP publishers (many topics) rather than one WebSocket publisher.
    pub fn http_publish(&self) -> bool {
        self.topics.n > 1
    }
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
    /// Of those, the ones open on each target (indexed like [`Plan::targets`]).
    pub open_on: Box<[AtomicU64]>,
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
    /// The publish-rate step running (an index into [`Plan::publish_rates`]).
    pub step: AtomicUsize,
    /// Between steps: no publishing while what is in flight arrives.
    pub paused: AtomicBool,
}

impl Shared {
    /// Counters at zero for `targets` targets, phase connect.
    pub fn new(targets: usize) -> Shared {
        Shared {
            epoch: Instant::now(),
            phase: AtomicU8::new(PHASE_CONNECT),
            open: AtomicU64::new(0),
            open_on: (0..targets).map(|_| AtomicU64::new(0)).collect(),
            failed: AtomicU64::new(0),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            cut: AtomicBool::new(false),
            step: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
        }
    }
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
    /// Source addresses, for loopback targets (empty: let the kernel choose).
    srcs: Box<[SocketAddrV4]>,
    rng: Rng,
    stats: Stats,
    events: Vec<ClientEvent>,
    phase: u8,
    /// Echo started on every open connection.
    echo_started: bool,
    /// Connections whose echo loop has not started yet (see `ECHO_STARTS_PER_TURN`).
    echo_pending: Vec<usize>,
    payload: Vec<u8>,
    /// Locally counted deliveries and sends not yet added to the shared counters.
    delivered_local: u64,
    sent_local: u64,
    /// The publisher connections (worker 0 only): one WebSocket, or the HTTP ones.
    publishers: Vec<usize>,
    last_progress: (u64, Instant),
    /// The step the publisher paces for, when it began and the publishes before it.
    step: Option<(usize, Instant, u64)>,
    /// TLS: received records are deciphered here, and small pieces gathered here
    /// before they are sealed into one record (one buffer each for the whole worker).
    tls_in: Vec<u8>,
    tls_seal: Vec<u8>,
}

/// Runs worker `id` until the phase becomes [`PHASE_STOP`]; returns its statistics.
pub fn run(id: usize, plan: &Plan, shared: &Shared) -> Result<Stats, String> {
    let spec = TableSpec {
        slots: plan.table_slots,
        sq_entries: 4096,
        cq_entries: crate::uring::table::cq_entries(plan.table_slots),
        recv_buffers: 2048,
        recv_buffer_size: 4096,
        bgid: BGID,
        // The client takes completions as they come (see the server's setting).
        deferred_per_enter: 0,
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
        rng: Rng::new(0x5eed ^ (id as u64) << 32),
        stats: Stats::new(plan.targets.len(), plan.steps()),
        events: Vec::new(),
        phase: PHASE_CONNECT,
        echo_started: false,
        echo_pending: Vec::new(),
        payload: payload(plan, id),
        delivered_local: 0,
        sent_local: 0,
        publishers: Vec::new(),
        last_progress: (0, now),
        step: None,
        tls_in: Vec::new(),
        tls_seal: Vec::new(),
    };
    for i in 0..mine {
        let key = w.add_conn(Role::Plain, id + i * plan.threads);
        w.ready.push_back(key);
    }
    if id == 0 {
        for j in 0..plan.publishers {
            let key = w.add_conn(Role::Publisher, plan.connections + j);
            w.publishers.push(key);
            if plan.http_publish() {
                // Last: the server closes a keep-alive connection idle for its
                // --handshake-timeout (10 s), and the connect phase of a million takes
                // minutes (180 of 256 publishers opened first were closed so at 100,000).
                w.ready.push_back(key);
            } else {
                w.ready.push_front(key);
            }
        }
    }
    w.run()?;
    if plan.check_topics {
        let published = shared.published.load(Ordering::Relaxed);
        for (_, c) in w.conns.iter().filter(|(_, c)| c.role == Role::Plain) {
            let k = u64::from(c.topic);
            c.seen.end(&plan.topics, k, published, &mut w.stats.topics);
        }
    }
    w.stats.sse_ends = w
        .conns
        .iter()
        .filter_map(|(_, c)| c.stream.as_ref().map(|s| (c.topic, s.seq.end())))
        .collect();
    Ok(w.stats)
}

/// A message's bytes before its timestamp goes in: `x` repeated, or with `json_payload`
/// JSON text (objects of an id, a symbol and prices from the one PRNG, cut to length),
/// which compresses about as a real feed does (3-5x), unlike `x`.
fn payload(plan: &Plan, id: usize) -> Vec<u8> {
    let len = plan.message_bytes.max(TS_DIGITS);
    if !plan.json_payload {
        return vec![b'x'; len];
    }
    let mut rng = Rng::new(0x150_u64 ^ id as u64);
    const SYMBOLS: [&str; 8] = [
        "ACME", "GLOBX", "INITech", "UMBR", "WAYNE", "STARK", "OSCP", "TYRL",
    ];
    let mut s = String::from(":[");
    while s.len() < len {
        let r = rng.next_u64();
        s.push_str(&format!(
            "{{\"id\":{},\"sym\":\"{}\",\"bid\":{}.{:02},\"ask\":{}.{:02},\"vol\":{}}},",
            r % 1_000_000,
            SYMBOLS[(r >> 20) as usize % SYMBOLS.len()],
            (r >> 24) % 500,
            (r >> 33) % 100,
            (r >> 40) % 500,
            (r >> 49) % 100,
            (r >> 8) % 10_000
        ));
    }
    let mut v = s.into_bytes();
    v.truncate(len);
    v
}

impl Worker<'_> {
    /// Adds connection number `index` of the run: its source address and its first
    /// target follow from it (the publisher's: the first target).
    fn add_conn(&mut self, role: Role, index: usize) -> usize {
        let source = if self.srcs.is_empty() {
            0
        } else {
            index % self.srcs.len()
        };
        let target = match role {
            Role::Plain => (index % self.plan.targets.len()) as u32,
            Role::Publisher => 0,
        };
        let stream =
            (role == Role::Plain && self.plan.transport == Transport::Sse).then(Box::default);
        let topic = self.plan.topics.of(index as u64) as u32;
        self.conns.insert(Conn {
            role,
            stage: Stage::Waiting,
            generation: 0,
            table: 0,
            slot: 0,
            has_socket: false,
            ops: InFlight::default(),
            cancelled: false,
            client: None,
            http: None,
            tls: None,
            out: Vec::new(),
            sending: Vec::new(),
            send_busy: false,
            started: Instant::now(),
            sent_at: None,
            attempt: 0,
            was_open: false,
            opened: false,
            source,
            target,
            error: None,
            cut: Cut::No,
            stream,
            topic,
            seen: Default::default(),
        })
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
}

fn errno_name(op: &str, res: i32) -> String {
    format!("{op}: {}", std::io::Error::from_raw_os_error(-res))
}
