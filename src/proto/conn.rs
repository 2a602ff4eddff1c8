//! The per-connection state machine: one request head, then HTTP, a WebSocket or an
//! event stream; behind `--proxy-protocol`, a PROXY header first.
//!
//! ```text
//!   Proxy ──► (PROXY header parsed, `--proxy-protocol` only; malformed: Closed)
//!    │
//!    ▼
//!            head parsed                 101 sent
//!   Head ───────────────┬──────────────────────────► Ws ──┐ close sent by us:
//!    ▲                  │ POST body      body read        │ wait for the peer's close
//!    │ keep-alive       ├──────────► Body ─────────┐      ▼
//!    │                  │                          ▼    Closed ◄── peer's close echoed,
//!    └──── respond() ◄──┴── GET /poll, /metrics ─ Waiting          EOF, timeout
//!                       │ 200 stream head
//!                       └────────────────────────► Sse ──► Closed
//!   any error: response or close frame sent ──► Linger (discard input until EOF) ──► Closed
//! ```
//!
//! # Call order
//!
//! The driver owns the socket and the clock:
//! 1. [`Connection::new`] when a connection is accepted.
//! 2. [`Connection::handle_bytes`] with each chunk received, [`Connection::handle_eof`]
//!    when the peer has closed its side, [`Connection::handle_timeout`] when the instant
//!    from [`Connection::poll_timeout`] has passed (early calls are harmless).
//! 3. After each of those: drain [`Connection::poll_event`] (acting on each: subscribe,
//!    publish, answer a request with [`Connection::respond`]), then drain
//!    [`Connection::poll_transmit`] into the socket's outbox, then re-arm the timer from
//!    [`Connection::poll_timeout`].
//! 4. Once [`Connection::is_closed`] and the outbox is flushed, close the socket.
//!
//! The configuration is passed by reference into each call rather than stored, so a
//! connection costs only its own state (see `size_of` in the tests).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::auth::{Authorizer, Grant, TokenError};
use super::close::{CloseCode, close_payload};
use super::deflate::{self, CompressionMode};
use super::extension::{self, Deflate};
use super::frame::{OpCode, Role, write_frame};
use super::handshake::{self, HandshakeError};
use super::http::{self, HttpError, Method, RequestHead, Route, Status, Topic};
use super::lazy::LazyDeque;
use super::limits::Limits;
use super::message::{Decoder, Message, WsError};
use super::proxy::{self, Cidr, ProxyError};
use super::{Parsed, sse};

/// Settings shared by every connection of a shard.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Size limits.
    pub limits: Limits,
    /// A request head (and a publish body) must be complete this long after the
    /// connection opened or its previous response; also the keep-alive idle timeout.
    pub handshake_timeout: Duration,
    /// A WebSocket silent this long gets a ping.
    pub ping_interval: Duration,
    /// After a ping, silence this long closes the connection.
    pub pong_timeout: Duration,
    /// Period of SSE comment heartbeats.
    pub sse_heartbeat: Duration,
    /// Base of the SSE `retry:` hint (jittered per client).
    pub sse_retry: Duration,
    /// How long we wait for the peer after our close frame or final response before
    /// dropping the connection: long enough for an honest peer to answer, short enough
    /// that a hostile one cannot hold the slot.
    pub close_timeout: Duration,
    /// `Origin` allowlist for WebSocket and SSE; empty = any.
    pub allowed_origins: Vec<String>,
    /// If set, `POST /publish` requires `Authorization: Bearer <token>` with it (an
    /// admin token), or a client token that may publish there.
    pub publish_token: Option<String>,
    /// If set, every topic needs a client token that allows it (see `auth`).
    pub auth: Option<Arc<Authorizer>>,
    /// The wall clock as of some `Instant`, for tokens' `exp` (the state machine reads no
    /// clock; the driver refreshes this).
    pub clock: WallClock,
    /// `/metrics` and `/healthz` live on an admin listener of their own
    /// (`--admin-listen`): 404 on the others, and only they on it.
    pub admin_split: bool,
    /// Every connection (but the admin listener's) starts with a PROXY protocol header
    /// (`--proxy-protocol`, see `proxy`); without a valid one it is closed.
    pub proxy_protocol: bool,
    /// Peers whose `X-Forwarded-For` is believed (`--trusted-proxy`); when non-empty,
    /// every request head yields [`Event::ForwardedFor`].
    pub trusted_proxies: Vec<Cidr>,
    /// permessage-deflate negotiation (`--compression`).
    pub compression: CompressionMode,
    /// Messages shorter than this go out uncompressed (`--compression-min-bytes`).
    pub compression_min_bytes: usize,
}

/// Seconds since the Unix epoch at a known `Instant`, so that `now: Instant` gives the
/// wall-clock time without reading a clock.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// The instant.
    pub at: Instant,
    /// The time since the Unix epoch at `at`.
    pub unix: Duration,
}

impl WallClock {
    /// Reads both clocks (for the driver; the state machine only uses [`WallClock::unix_secs`]).
    pub fn now() -> WallClock {
        WallClock {
            at: Instant::now(),
            unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    /// Seconds since the Unix epoch at `now`.
    pub fn unix_secs(&self, now: Instant) -> u64 {
        (self.unix + now.saturating_duration_since(self.at)).as_secs()
    }
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            limits: Limits::default(),
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(10),
            sse_heartbeat: Duration::from_secs(15),
            sse_retry: Duration::from_secs(3),
            close_timeout: Duration::from_secs(2),
            allowed_origins: Vec::new(),
            publish_token: None,
            auth: None,
            clock: WallClock::now(),
            admin_split: false,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            compression: CompressionMode::Shared,
            compression_min_bytes: deflate::DEFAULT_MIN_BYTES,
        }
    }
}

/// The request's authorization: `Ok(None)` when it needs none (authorization off, or an
/// endpoint without a topic), the token's grant when it allows the request's topics, or
/// the refusal. `POST /publish` also takes the `--publish-token` admin token.
fn authorize(
    cfg: &ConnConfig,
    head: &RequestHead,
    route: &Route,
    now: Instant,
) -> Result<Option<Grant>, HttpError> {
    let topics: &[Topic] = match route {
        Route::Ws { topic } | Route::Poll { topic, .. } | Route::Publish { topic, .. } => {
            std::slice::from_ref(topic)
        }
        Route::Sse { topics, .. } => topics,
        Route::Index | Route::Healthz | Route::Metrics | Route::Echo => return Ok(None),
    };
    let publish = matches!(route, Route::Publish { .. });
    if publish {
        if let Some(admin) = &cfg.publish_token {
            if http::bearer_matches(head, admin) {
                return Ok(None);
            }
            if cfg.auth.is_none() {
                return Err(HttpError::Unauthorized);
            }
        }
    }
    let Some(auth) = &cfg.auth else {
        return Ok(None);
    };
    let token = http::bearer_token(head).ok_or(HttpError::TokenMissing)?;
    let grant = auth
        .verify(&token, cfg.clock.unix_secs(now))
        .map_err(|e| match e {
            TokenError::Missing => HttpError::TokenMissing,
            TokenError::Invalid => HttpError::TokenInvalid,
            TokenError::Expired => HttpError::TokenExpired,
        })?;
    let allowed = |t: &Topic| {
        if publish {
            grant.may_publish(t)
        } else {
            grant.may_subscribe(t)
        }
    };
    if topics.iter().all(allowed) {
        Ok(Some(grant))
    } else {
        Err(HttpError::TopicForbidden)
    }
}

/// What a WebSocket was opened for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsKind {
    /// `GET /echo`: every message back to the sender.
    Echo,
    /// `GET /ws/{topic}`: subscribed to the topic, messages published to it.
    Topic(Topic),
}

/// Something the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The WebSocket handshake was accepted and the 101 queued.
    WsOpen(WsKind),
    /// Messages on `/echo` were echoed (already queued, in order with every other
    /// frame); counted together until the driver polls.
    Echoed {
        /// How many messages.
        messages: u32,
        /// Their payload bytes.
        bytes: u64,
    },
    /// A complete text or binary message from the peer on `/ws/{topic}`.
    Message {
        /// Text (valid UTF-8) or binary.
        text: bool,
        /// The payload, unmasked.
        payload: Vec<u8>,
    },
    /// An event stream was accepted: the response head and `retry:` line are queued.
    /// Subscribe to `topics`, replaying from `last_event_id` if given.
    SseOpen {
        /// The stream's topics, in request order.
        topics: Vec<Topic>,
        /// The client's `Last-Event-ID` (header or query), unparsed.
        last_event_id: Option<String>,
    },
    /// A request the driver answers with [`Connection::respond`], now or later (long
    /// polling): `/`, `/metrics`, `/poll/..`, and `/publish/..` with its body.
    Request {
        /// The route.
        route: Route,
        /// The request body (publish only; empty otherwise).
        body: Vec<u8>,
    },
    /// With authorization on, after [`Event::WsOpen`] or [`Event::SseOpen`]: what the
    /// token allows beyond the subscription checked at the handshake. The driver
    /// closes a WebSocket that publishes without `may_publish` (1008), and the
    /// connection when the token expires (WebSocket 1008 "token expired").
    Authorized {
        /// A `/ws/{topic}` client may publish to its topic.
        may_publish: bool,
        /// How long until the token expires.
        valid_for: Duration,
    },
    /// The PROXY header (`--proxy-protocol`) was read: the client's address, or
    /// `None` when the header names none (a proxy's health check) and the TCP peer's
    /// stands. Comes before any other event.
    Proxied(Option<std::net::SocketAddr>),
    /// With trusted proxies configured ([`ConnConfig::trusted_proxies`]): a request
    /// head's `X-Forwarded-For` (field lines joined), before the request's other
    /// events. The driver resolves the client with [`proxy::forwarded_client`]; on a
    /// keep-alive connection from a proxy each request may come from another client.
    ForwardedFor(Option<String>),
    /// The connection is over; close the socket once the outbox is flushed.
    Closed(CloseReason),
}

/// Why a request was refused with an error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// A malformed or refused HTTP request.
    Http(HttpError),
    /// A refused WebSocket handshake.
    Handshake(HandshakeError),
}

/// Why a connection ended (for metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// An HTTP exchange finished normally (client closed, or idle keep-alive expired).
    Done,
    /// The peer closed TCP without a close handshake (WebSocket: 1006) or mid-request.
    PeerEof,
    /// No complete request head (or body) within the handshake timeout.
    HandshakeTimeout,
    /// A ping went unanswered (no frame at all) for the pong timeout.
    PongTimeout,
    /// We sent a close frame and the peer never answered.
    CloseTimeout,
    /// The request was refused with an HTTP error response.
    Rejected(Reject),
    /// The peer started the close handshake with this code (`None`: no code).
    PeerClosed(Option<CloseCode>),
    /// We started the close handshake with this code (shutdown, slow consumer).
    ServerClosed(CloseCode),
    /// The peer broke the WebSocket protocol; we sent the matching close code.
    ProtocolError(WsError),
    /// Refused at admission (connection limit or full table) with 503.
    Overloaded,
    /// `--proxy-protocol`: the connection did not start with a valid PROXY header;
    /// closed without a reply.
    BadProxyHeader(ProxyError),
    /// The TLS layer under the connection failed (a bad handshake or record); closed
    /// after TLS's alert, nothing else sent.
    TlsFailed,
}

#[derive(Debug)]
enum State {
    /// `--proxy-protocol`: reading the PROXY header, which must be complete by
    /// `deadline` (the handshake timeout covers it and the request head together).
    Proxy { deadline: Instant },
    /// Reading a request head. `idle`: at least one request was served (keep-alive).
    Head { deadline: Instant, idle: bool },
    /// Reading a publish body.
    Body {
        deadline: Instant,
        /// Boxed: a `Route` is 72 bytes, and this state makes the size of every one.
        route: Box<Route>,
        keep_alive: bool,
        remaining: usize,
        body: Vec<u8>,
    },
    /// A request was handed to the driver; waiting for [`Connection::respond`].
    Waiting { keep_alive: bool, head_only: bool },
    /// An open WebSocket; `deadline` is when `phase` next needs attention.
    Ws {
        dec: Decoder,
        deadline: Instant,
        phase: WsPhase,
        /// `/echo`: each message goes back from here, in order with every other frame.
        echo: bool,
        /// permessage-deflate was agreed: the window we compress with.
        deflate: Option<Deflate>,
        /// Pongs owed, encoded, waiting in the control lane until the driver takes
        /// them (`Some` only while there are: 8 bytes where a `Vec` takes 24). Each
        /// ping gets its pong while they fit in [`PENDING_PONG_BYTES`]; past that only
        /// the latest ping is answered (RFC 6455 §5.5.3 allows it), so a ping flood
        /// costs one pong per send, not one per ping.
        #[allow(clippy::box_collection)]
        pongs: Option<Box<Vec<u8>>>,
    },
    /// An open event stream.
    Sse { next_heartbeat: Instant },
    /// Our last bytes are queued; input is discarded until EOF or the deadline, so
    /// closing with unread input cannot turn our final bytes into a TCP reset.
    Linger {
        deadline: Instant,
        reason: CloseReason,
    },
    /// Over: close the socket after flushing.
    Closed,
}

/// What an open WebSocket's single deadline means. One deadline instead of three
/// timestamps keeps [`Connection`] small (a million of them must fit in 1 KiB each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WsPhase {
    /// Receiving; at the deadline (`ping_interval` after the last byte) we ping.
    Open,
    /// A ping waits in the control lane for the driver to take it
    /// ([`Connection::poll_control`]). At the deadline (`ping_interval` after it was
    /// due) the peer is dead too: its connection could not take a 2-byte frame for that
    /// long.
    PingDue,
    /// A ping is out; at the deadline (`pong_timeout` after it left) the peer is dead.
    PingSent,
    /// We sent a close frame with this code; at the deadline we stop waiting for the
    /// peer's. (A code, not a [`CloseReason`]: that is 24 bytes, this is 2.)
    Closing(CloseCode),
}

/// Events for the driver, in order, held only while there are some (an idle connection
/// keeps none: ~400 bytes on the heap after its first event otherwise).
type Events = LazyDeque<Event>;

/// Bytes held for a while (input not processed yet, output not taken yet). 8 bytes: the
/// buffer is allocated while it holds something and given back when taken or cleared,
/// where a `Vec` costs 24 bytes inline on every idle connection.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // on purpose: 8 bytes inline instead of 24
struct Bytes(Option<Box<Vec<u8>>>);

impl Bytes {
    /// The buffer, allocated if it was not.
    fn get(&mut self) -> &mut Vec<u8> {
        self.0.get_or_insert_default()
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |b| b.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn extend_from_slice(&mut self, data: &[u8]) {
        if !data.is_empty() {
            self.get().extend_from_slice(data);
        }
    }

    /// The bytes; nothing is held after.
    fn take(&mut self) -> Vec<u8> {
        self.0.take().map_or_else(Vec::new, |b| *b)
    }

    /// Holds `bytes` (what [`Bytes::take`] gave, maybe partly used).
    fn put(&mut self, bytes: Vec<u8>) {
        self.0 = (!bytes.is_empty()).then(|| Box::new(bytes));
    }

    fn clear(&mut self) {
        self.0 = None;
    }
}

/// One client connection, from its first byte to its close.
#[derive(Debug)]
pub struct Connection {
    state: State,
    /// Input not processed yet: a partial request head, requests pipelined behind one
    /// being served, or bytes the driver deferred ([`Connection::defer_bytes`]).
    inbuf: Bytes,
    /// Bytes to send, produced by this state machine.
    out: Bytes,
    events: Events,
    /// Per-connection randomness for the SSE retry jitter.
    seed: u32,
    /// Accepted on the admin listener (`--admin-listen`).
    admin: bool,
}

/// The SSE heartbeat line. A comment: clients ignore it, proxies see traffic.
const HEARTBEAT: &str = "hb";

/// Pongs owed to one connection before older ones give way to the newest: 1 KiB, ten
/// pongs of the largest control payload (Autobahn 2.10 expects ten pongs for ten pings
/// sent at once), two bytes for each empty one.
pub const PENDING_PONG_BYTES: usize = 1024;

/// Pending WebSocket input processed per [`Connection::resume`] step: 16 KiB. An echo
/// of it is at most as long (server frames carry no mask), so one step adds at most
/// this much (plus one completed message) to an outbox the driver found under its cap.
pub const RESUME_SLICE: usize = 16 * 1024;

/// Answers to pipelined HTTP requests queued per step before parsing stops until the
/// driver has moved them to the outbox: 16 KiB. A request line of 30 bytes can ask for
/// a page of 10 KB, so without a stop a few KiB of pipelined requests would queue
/// megabytes in one call.
pub const OUTPUT_SLICE: usize = 16 * 1024;

impl Connection {
    /// The permessage-deflate agreement of an open WebSocket (`None`: not agreed, or not
    /// a WebSocket): the driver sends it compressed frames of published messages.
    pub fn deflate(&self) -> Option<Deflate> {
        match &self.state {
            State::Ws { deflate, .. } => *deflate,
            _ => None,
        }
    }

    /// A new connection accepted at `now`. `seed` is any per-connection random value.
    pub fn new(now: Instant, cfg: &ConnConfig, seed: u32) -> Connection {
        let deadline = now + cfg.handshake_timeout;
        Connection {
            state: if cfg.proxy_protocol {
                State::Proxy { deadline }
            } else {
                State::Head {
                    deadline,
                    idle: false,
                }
            },
            inbuf: Bytes::default(),
            out: Bytes::default(),
            events: Events::default(),
            seed,
            admin: false,
        }
    }

    /// This connection came in on the admin listener: it may ask only for `/metrics`
    /// and `/healthz` (see [`ConnConfig::admin_split`]).
    pub fn admin(mut self) -> Connection {
        self.admin = true;
        // The admin listener is not behind the proxy: no PROXY header there.
        if let State::Proxy { deadline } = self.state {
            self.state = State::Head {
                deadline,
                idle: false,
            };
        }
        self
    }

    /// Still waiting for the PROXY header (`--proxy-protocol`)?
    pub fn awaits_proxy_header(&self) -> bool {
        matches!(self.state, State::Proxy { .. })
    }

    /// Under TLS the PROXY header comes first, in the clear, and the TLS handshake after
    /// it: takes the header's bytes only and returns how many of `data` it used (all of
    /// them while the header is incomplete, kept until its rest arrives); the driver
    /// gives the rest to TLS, whose plaintext then goes to [`Connection::handle_bytes`].
    pub fn take_proxy_header(&mut self, data: &[u8]) -> usize {
        let State::Proxy { deadline } = self.state else {
            return 0;
        };
        let held = self.inbuf.len();
        let mut buf = self.inbuf.take();
        buf.extend_from_slice(data);
        match proxy::parse(&buf) {
            Ok(Parsed::Partial) => {
                self.inbuf.put(buf);
                data.len()
            }
            Ok(Parsed::Complete { value, consumed }) => {
                self.events.push_back(Event::Proxied(value.source));
                self.state = State::Head {
                    deadline,
                    idle: false,
                };
                consumed - held
            }
            Err(e) => {
                self.finish(CloseReason::BadProxyHeader(e));
                data.len()
            }
        }
    }

    /// Bytes received from the peer. Input already pending goes first: then `data` is
    /// queued behind it and one step is processed, as by [`Connection::resume`].
    pub fn handle_bytes(&mut self, now: Instant, cfg: &ConnConfig, data: &[u8]) {
        if !self.inbuf.is_empty() {
            self.defer_bytes(data);
            self.resume(now, cfg);
            return;
        }
        match self.state {
            State::Ws { .. } => self.ws_input(now, cfg, data),
            State::Proxy { .. }
            | State::Head { .. }
            | State::Body { .. }
            | State::Waiting { .. } => {
                let used = self.http_input(now, cfg, data);
                self.keep_unparsed(&data[used..]);
            }
            // Event-stream clients send nothing after the request; lingering and closed
            // connections discard input by design.
            State::Sse { .. } | State::Linger { .. } | State::Closed => {}
        }
    }

    /// Keeps `data` unprocessed, behind any input already pending: the driver holds
    /// this connection's input back while its outbox is over the cap (bytes the kernel
    /// had already received when reading stopped). Process it later with
    /// [`Connection::resume`].
    pub fn defer_bytes(&mut self, data: &[u8]) {
        if self.keeps_input() {
            self.inbuf.extend_from_slice(data);
        }
    }

    /// Processes one step of the pending input: up to [`RESUME_SLICE`] bytes of
    /// WebSocket frames, or HTTP requests up to one the driver must answer (or until
    /// [`OUTPUT_SLICE`] bytes of answers are queued). Returns whether it made progress;
    /// the driver calls it again, draining events and output in between, while its
    /// outbox has room.
    pub fn resume(&mut self, now: Instant, cfg: &ConnConfig) -> bool {
        if self.inbuf.is_empty() {
            return false;
        }
        let mut buf = self.inbuf.take();
        let used = match self.state {
            State::Ws { .. } => {
                let n = buf.len().min(RESUME_SLICE);
                self.ws_input(now, cfg, &buf[..n]);
                n
            }
            State::Proxy { .. }
            | State::Head { .. }
            | State::Body { .. }
            | State::Waiting { .. } => self.http_input(now, cfg, &buf),
            State::Sse { .. } | State::Linger { .. } | State::Closed => buf.len(),
        };
        if self.keeps_input() && used < buf.len() {
            buf.drain(..used);
            // Nothing was added meanwhile: only this function and `defer_bytes` add.
            debug_assert!(self.inbuf.is_empty());
            self.inbuf.put(buf);
        }
        used > 0
    }

    /// Input received and not processed yet (deferred, or pipelined behind a request).
    pub fn pending_input(&self) -> usize {
        self.inbuf.len()
    }

    /// Does the connection want more input now? False while a request head's worth of
    /// input ([`Limits::max_head_bytes`]) is pending: pipelined requests behind one that
    /// is still being served, or bytes deferred by the driver. The driver then stops
    /// reading, so TCP pushes back on the sender, instead of buffering without bound or
    /// refusing a well-formed pipeline.
    pub fn wants_input(&self, cfg: &ConnConfig) -> bool {
        self.inbuf.len() < cfg.limits.max_head_bytes
    }

    /// Does this state keep input for later (rather than process or discard it)?
    fn keeps_input(&self) -> bool {
        matches!(
            self.state,
            State::Proxy { .. }
                | State::Head { .. }
                | State::Body { .. }
                | State::Waiting { .. }
                | State::Ws { .. }
        )
    }

    /// The peer closed its sending side (a zero-length read) or the socket failed.
    pub fn handle_eof(&mut self, _now: Instant) {
        let reason = match &self.state {
            State::Closed => return,
            State::Linger { reason, .. } => *reason,
            State::Ws {
                phase: WsPhase::Closing(code),
                ..
            } => CloseReason::ServerClosed(*code),
            State::Head { idle: true, .. } if self.inbuf.is_empty() => CloseReason::Done,
            _ => CloseReason::PeerEof,
        };
        self.finish(reason);
    }

    /// The timer from [`Connection::poll_timeout`] fired (or any time: early calls do
    /// nothing).
    pub fn handle_timeout(&mut self, now: Instant, cfg: &ConnConfig) {
        match &mut self.state {
            State::Head { deadline, idle } if now >= *deadline => {
                let reason = if *idle && self.inbuf.is_empty() {
                    CloseReason::Done
                } else {
                    CloseReason::HandshakeTimeout
                };
                self.finish(reason);
            }
            State::Proxy { deadline } | State::Body { deadline, .. } if now >= *deadline => {
                self.finish(CloseReason::HandshakeTimeout)
            }
            State::Ws {
                deadline, phase, ..
            } if now >= *deadline => match phase {
                WsPhase::Open => {
                    // The ping itself waits in the control lane (`poll_control`), behind
                    // the send in flight: a broadcast to a million takes seconds to
                    // complete every send. The pong timeout starts when it leaves.
                    *phase = WsPhase::PingDue;
                    *deadline = now + cfg.ping_interval;
                }
                WsPhase::PingDue | WsPhase::PingSent => self.finish(CloseReason::PongTimeout),
                WsPhase::Closing(_) => self.finish(CloseReason::CloseTimeout),
            },
            State::Sse { next_heartbeat } if now >= *next_heartbeat => {
                *next_heartbeat = now + cfg.sse_heartbeat;
                sse::encode_comment(self.out.get(), HEARTBEAT);
            }
            State::Linger { deadline, reason } if now >= *deadline => {
                let reason = *reason;
                self.finish(reason);
            }
            _ => {}
        }
    }

    /// The next instant at which [`Connection::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Proxy { deadline }
            | State::Head { deadline, .. }
            | State::Body { deadline, .. }
            | State::Linger { deadline, .. }
            | State::Ws { deadline, .. } => Some(*deadline),
            State::Sse { next_heartbeat } => Some(*next_heartbeat),
            State::Waiting { .. } | State::Closed => None,
        }
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front();
        self.events.release();
        e
    }

    /// Bytes this state machine wants sent, in order, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            None
        } else {
            Some(self.out.take())
        }
    }

    /// Is the connection over (close the socket once flushed)?
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Is the connection only waiting for the peer to go (error response or close frame
    /// sent, input discarded)? The driver should half-close (`shutdown(SHUT_WR)`) once
    /// its bytes are flushed: the FIN tells the peer we are done, so it closes at once
    /// instead of waiting for us.
    pub fn is_lingering(&self) -> bool {
        matches!(self.state, State::Linger { .. })
    }

    /// May the driver queue data (WebSocket frames or SSE events) to this connection?
    /// False before the handshake, after a close frame was sent, and for HTTP.
    /// Published messages are queued by the driver directly: one shared encoded frame
    /// for every subscriber.
    pub fn can_send(&self) -> bool {
        matches!(
            self.state,
            State::Ws {
                phase: WsPhase::Open | WsPhase::PingDue | WsPhase::PingSent,
                ..
            } | State::Sse { .. }
        )
    }

    /// Is a control frame (ping or pong) waiting for [`Connection::poll_control`]?
    pub fn has_control(&self) -> bool {
        matches!(
            &self.state,
            State::Ws {
                phase: WsPhase::PingDue,
                ..
            }
        ) || matches!(&self.state, State::Ws { pongs: Some(_), .. })
    }

    /// The control frames (a ping, the pongs owed) to send now, ahead of any queued
    /// data (RFC 6455 §5.4 lets control frames go between data frames). The driver
    /// takes them when it starts a send, not before, so pongs owed to a ping flood are
    /// coalesced while a send is in flight, and the pong deadline counts from `now`,
    /// when the ping really leaves, not from when it was due behind a burst of data.
    pub fn poll_control(&mut self, now: Instant, cfg: &ConnConfig) -> Option<Vec<u8>> {
        let State::Ws {
            deadline,
            phase,
            pongs,
            ..
        } = &mut self.state
        else {
            return None;
        };
        let mut out = pongs.take().map_or_else(Vec::new, |p| *p);
        if *phase == WsPhase::PingDue {
            *phase = WsPhase::PingSent;
            *deadline = now + cfg.pong_timeout;
            write_frame(&mut out, true, OpCode::Ping, b"");
        }
        (!out.is_empty()).then_some(out)
    }

    /// Answers the request of the last [`Event::Request`]. Returns false (and sends
    /// nothing) if there is no request waiting, e.g. the client has gone.
    pub fn respond(
        &mut self,
        now: Instant,
        cfg: &ConnConfig,
        status: Status,
        content_type: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> bool {
        let State::Waiting {
            keep_alive,
            head_only,
        } = self.state
        else {
            return false;
        };
        http::write_response(
            self.out.get(),
            status,
            headers,
            content_type,
            body,
            keep_alive,
            head_only,
        );
        self.next_request(now, cfg, keep_alive);
        if matches!(self.state, State::Head { .. }) {
            // Requests pipelined behind this one (one step; the driver asks for more).
            self.resume(now, cfg);
        }
        true
    }

    /// Starts closing: a WebSocket gets a close frame with `code` and waits up to
    /// `close_timeout` for the peer's; anything else is closed at once. Used for
    /// graceful shutdown (1001) and the slow-consumer policy.
    pub fn close(&mut self, now: Instant, cfg: &ConnConfig, code: CloseCode, reason: &str) {
        match &mut self.state {
            State::Ws {
                deadline,
                phase: phase @ (WsPhase::Open | WsPhase::PingSent),
                ..
            } => {
                *phase = WsPhase::Closing(code);
                *deadline = now + cfg.close_timeout;
                write_frame(
                    self.out.get(),
                    true,
                    OpCode::Close,
                    &close_payload(Some(code), reason),
                );
            }
            State::Ws { .. } | State::Closed => {}
            _ => self.finish(CloseReason::ServerClosed(code)),
        }
    }

    /// The TLS layer under the connection failed: the connection is over, and nothing
    /// it had queued may be sent.
    pub fn fail_tls(&mut self) {
        if !self.is_closed() {
            self.out.clear();
            self.finish(CloseReason::TlsFailed);
        }
    }

    /// Refuses the connection at admission: `503` with `Retry-After`, then the usual
    /// linger so the response is not lost to a reset. Call right after [`Connection::new`].
    pub fn reject_overloaded(&mut self, now: Instant, cfg: &ConnConfig, retry_after_secs: u32) {
        http::write_service_unavailable(self.out.get(), retry_after_secs);
        self.linger(now, cfg, CloseReason::Overloaded);
    }

    fn finish(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.inbuf.clear();
        self.events.push_back(Event::Closed(reason));
    }

    fn linger(&mut self, now: Instant, cfg: &ConnConfig, reason: CloseReason) {
        self.state = State::Linger {
            deadline: now + cfg.close_timeout,
            reason,
        };
        self.inbuf.clear();
    }

    /// Keeps input that could not be used yet. Its size is bounded by the driver, which
    /// stops reading when [`Connection::wants_input`] says so; a partial head alone is
    /// bounded by the parser ([`HttpError::HeadTooLarge`]).
    fn keep_unparsed(&mut self, rest: &[u8]) {
        if !rest.is_empty() && self.keeps_input() {
            self.inbuf.extend_from_slice(rest);
        }
    }

    /// Advances the HTTP states over `buf`; returns how many bytes were used. Bytes
    /// after a WebSocket handshake go to the WebSocket at once.
    fn http_input(&mut self, now: Instant, cfg: &ConnConfig, buf: &[u8]) -> usize {
        let mut pos = 0;
        loop {
            match &mut self.state {
                // Pipelined requests answered here (`/healthz`) or by the driver stop
                // once an output slice is queued: the driver moves it to the outbox,
                // which may be full, before asking for more.
                State::Proxy { deadline } => match proxy::parse(&buf[pos..]) {
                    Ok(Parsed::Partial) => return pos,
                    Ok(Parsed::Complete { value, consumed }) => {
                        pos += consumed;
                        self.events.push_back(Event::Proxied(value.source));
                        self.state = State::Head {
                            deadline: *deadline,
                            idle: false,
                        };
                    }
                    Err(e) => {
                        // Not a proxy, or a broken one: nothing to answer.
                        self.finish(CloseReason::BadProxyHeader(e));
                        return buf.len();
                    }
                },
                State::Head { .. } if self.out.len() >= OUTPUT_SLICE => return pos,
                State::Head { .. } => match http::parse_request_head(&buf[pos..], &cfg.limits) {
                    Ok(Parsed::Partial) => return pos,
                    Ok(Parsed::Complete { value, consumed }) => {
                        pos += consumed;
                        self.dispatch(now, cfg, value);
                    }
                    Err(e) => {
                        self.reject(now, cfg, Reject::Http(e));
                        return buf.len();
                    }
                },
                State::Body {
                    remaining, body, ..
                } => {
                    let take = (*remaining).min(buf.len() - pos);
                    body.extend_from_slice(&buf[pos..pos + take]);
                    *remaining -= take;
                    pos += take;
                    if *remaining > 0 {
                        return pos;
                    }
                    let State::Body {
                        route,
                        keep_alive,
                        body,
                        ..
                    } = std::mem::replace(&mut self.state, State::Closed)
                    else {
                        unreachable!("in Body state")
                    };
                    self.state = State::Waiting {
                        keep_alive,
                        head_only: false,
                    };
                    self.events.push_back(Event::Request {
                        route: *route,
                        body,
                    });
                }
                State::Waiting { .. } => return pos,
                State::Ws { .. } => {
                    self.ws_input(now, cfg, &buf[pos..]);
                    return buf.len();
                }
                State::Sse { .. } | State::Linger { .. } | State::Closed => return buf.len(),
            }
        }
    }

    /// Acts on a complete request head.
    fn dispatch(&mut self, now: Instant, cfg: &ConnConfig, mut head: RequestHead) {
        if !cfg.trusted_proxies.is_empty() {
            let xff = head.x_forwarded_for.take();
            self.events.push_back(Event::ForwardedFor(xff));
        }
        let route = match http::route(&head) {
            Ok(route) => route,
            Err(e) => return self.reject(now, cfg, Reject::Http(e)),
        };
        let keep_alive = http::keep_alive(&head);
        let head_only = head.method == Method::Head;
        let has_body =
            head.content_length.is_some_and(|n| n > 0) || head.transfer_encoding.is_some();
        if has_body && !matches!(route, Route::Publish { .. }) {
            // We would have to skip the body to find the next request; no endpoint but
            // publish takes one, so refuse rather than guess.
            return self.reject(now, cfg, Reject::Http(HttpError::Malformed));
        }
        if cfg.admin_split && matches!(route, Route::Metrics | Route::Healthz) != self.admin {
            // `--admin-listen`: they live there, and nothing else does.
            return self.reject(now, cfg, Reject::Http(HttpError::NotFound));
        }
        // Authorization (`auth`): the topics of the request against the token's rights.
        let grant = match authorize(cfg, &head, &route, now) {
            Ok(grant) => grant,
            Err(e) => return self.reject(now, cfg, Reject::Http(e)),
        };
        let unix_now = cfg.clock.unix_secs(now);
        match route {
            Route::Echo | Route::Ws { .. } => {
                match handshake::validate(&head, &cfg.allowed_origins) {
                    Ok(accept) => {
                        let deflate = match cfg.compression {
                            CompressionMode::Off => None,
                            CompressionMode::Shared => head
                                .sec_websocket_extensions
                                .as_deref()
                                .and_then(extension::negotiate),
                        };
                        handshake::write_accept(self.out.get(), &accept, deflate.as_ref());
                        let mut dec = Decoder::new(Role::Server);
                        if deflate.is_some() {
                            dec.enable_deflate();
                        }
                        self.state = State::Ws {
                            dec,
                            deadline: now + cfg.ping_interval,
                            phase: WsPhase::Open,
                            echo: matches!(route, Route::Echo),
                            deflate,
                            pongs: None,
                        };
                        let kind = match route {
                            Route::Ws { topic } => WsKind::Topic(topic),
                            _ => WsKind::Echo,
                        };
                        let may_publish = match (&grant, &kind) {
                            (Some(g), WsKind::Topic(t)) => g.may_publish(t),
                            _ => true,
                        };
                        self.events.push_back(Event::WsOpen(kind));
                        if let Some(g) = grant {
                            self.events.push_back(Event::Authorized {
                                may_publish,
                                valid_for: g.valid_for(unix_now),
                            });
                        }
                    }
                    Err(e) => self.reject(now, cfg, Reject::Handshake(e)),
                }
            }
            Route::Sse {
                topics,
                last_event_id,
            } => {
                if !http::origin_allowed(&head, &cfg.allowed_origins) {
                    return self.reject(now, cfg, Reject::Http(HttpError::ForbiddenOrigin));
                }
                let mut headers = vec![
                    ("Content-Type", "text/event-stream"),
                    ("Cache-Control", "no-cache"),
                    ("X-Accel-Buffering", "no"),
                ];
                // EventSource across origins needs CORS; the Origin already passed the allowlist.
                if let Some(origin) = head.origin.as_deref() {
                    headers.extend([("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]);
                }
                http::write_head(self.out.get(), Status::Ok, &headers);
                sse::encode_retry(
                    self.out.get(),
                    sse::jittered_retry_ms(cfg.sse_retry, u64::from(self.seed)),
                );
                self.state = State::Sse {
                    next_heartbeat: now + cfg.sse_heartbeat,
                };
                self.events.push_back(Event::SseOpen {
                    topics,
                    last_event_id,
                });
                if let Some(g) = grant {
                    self.events.push_back(Event::Authorized {
                        may_publish: false,
                        valid_for: g.valid_for(unix_now),
                    });
                }
            }
            Route::Healthz => {
                http::write_response(
                    self.out.get(),
                    Status::Ok,
                    &[],
                    "text/plain",
                    b"ok\n",
                    keep_alive,
                    head_only,
                );
                self.next_request(now, cfg, keep_alive);
            }
            Route::Publish { .. } => {
                if head.transfer_encoding.is_some() {
                    return self.reject(now, cfg, Reject::Http(HttpError::LengthRequired));
                }
                let len = head.content_length.unwrap_or(0);
                if len > cfg.limits.max_message_bytes as u64 {
                    // From the header alone: the body is never read.
                    return self.reject(now, cfg, Reject::Http(HttpError::PayloadTooLarge));
                }
                if len > 0
                    && head
                        .expect
                        .as_deref()
                        .is_some_and(|e| http::has_token(e, "100-continue"))
                {
                    // RFC 9110 §10.1.1: the client waits for this before sending the body
                    // (curl does for bodies over 1 MiB).
                    self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                let deadline = now + cfg.handshake_timeout;
                self.state = State::Body {
                    deadline,
                    route: Box::new(route),
                    keep_alive,
                    remaining: len as usize,
                    body: Vec::with_capacity(len as usize),
                };
            }
            Route::Index | Route::Metrics | Route::Poll { .. } => {
                self.state = State::Waiting {
                    keep_alive,
                    head_only,
                };
                self.events.push_back(Event::Request {
                    route,
                    body: Vec::new(),
                });
            }
        }
    }

    fn next_request(&mut self, now: Instant, cfg: &ConnConfig, keep_alive: bool) {
        if keep_alive {
            self.state = State::Head {
                deadline: now + cfg.handshake_timeout,
                idle: true,
            };
        } else {
            self.linger(now, cfg, CloseReason::Done);
        }
    }

    fn reject(&mut self, now: Instant, cfg: &ConnConfig, reject: Reject) {
        match &reject {
            Reject::Http(e) => http::write_error(self.out.get(), e),
            Reject::Handshake(e) => handshake::write_error(self.out.get(), e),
        }
        self.linger(now, cfg, CloseReason::Rejected(reject));
    }

    fn ws_input(&mut self, now: Instant, cfg: &ConnConfig, mut input: &[u8]) {
        while let State::Ws {
            dec,
            deadline,
            phase,
            ..
        } = &mut self.state
        {
            // Any byte from the peer proves it alive (DESIGN.md: "no pong (or any frame)").
            if !matches!(phase, WsPhase::Closing(_)) {
                *phase = WsPhase::Open;
                *deadline = now + cfg.ping_interval;
            }
            if input.is_empty() {
                return;
            }
            match dec.decode(input, cfg.limits.max_message_bytes) {
                Ok((used, msg)) => {
                    input = &input[used..];
                    if let Some(msg) = msg {
                        self.ws_message(now, cfg, msg);
                    }
                }
                Err(e) => {
                    // RFC 6455 §7.1.7 "Fail the WebSocket Connection": send the close
                    // code, stop reading frames. Everything owed for the frames before
                    // the bad one (echoes, close answers) is already in `out`, ahead of
                    // this close frame, and goes out first.
                    self.pong_before_close();
                    write_frame(
                        self.out.get(),
                        true,
                        OpCode::Close,
                        &close_payload(Some(e.close_code()), &e.to_string()),
                    );
                    self.linger(now, cfg, CloseReason::ProtocolError(e));
                    return;
                }
            }
        }
    }

    /// `/echo`: the message goes back at once, in order with every frame before and
    /// after it (a close frame for a protocol error that follows in the same read
    /// included), compressed on its own when permessage-deflate was agreed. Counted for
    /// the metrics in one event per batch.
    fn echo(&mut self, cfg: &ConnConfig, op: OpCode, payload: &[u8]) {
        let bits = self.deflate().map(|d| d.server_window_bits);
        deflate::write_message(
            self.out.get(),
            op,
            payload,
            deflate::PER_CONNECTION_LEVEL,
            bits,
            cfg.compression_min_bytes,
        );
        if let Some(Event::Echoed { messages, bytes }) = self.events.back_mut() {
            *messages += 1;
            *bytes += payload.len() as u64;
        } else {
            self.events.push_back(Event::Echoed {
                messages: 1,
                bytes: payload.len() as u64,
            });
        }
    }

    /// The connection is leaving the WebSocket state: a pong still waiting in the
    /// control lane goes out with the data, ahead of the close frame about to follow.
    fn pong_before_close(&mut self) {
        if let State::Ws { pongs, .. } = &mut self.state
            && let Some(owed) = pongs.take()
        {
            self.out.extend_from_slice(&owed);
        }
    }

    fn ws_message(&mut self, _now: Instant, cfg: &ConnConfig, msg: Message) {
        let State::Ws {
            phase, echo, pongs, ..
        } = &mut self.state
        else {
            return;
        };
        let closing = match phase {
            WsPhase::Closing(code) => Some(CloseReason::ServerClosed(*code)),
            _ => None,
        };
        let echo = *echo;
        match msg {
            // After our close frame, data is dropped (§5.5.1: the peer may still be
            // sending; we no longer process it) and pings are not answered.
            Message::Text(_) | Message::Binary(_) | Message::Ping(_) if closing.is_some() => {}
            Message::Text(payload) if echo => self.echo(cfg, OpCode::Text, &payload),
            Message::Binary(payload) if echo => self.echo(cfg, OpCode::Binary, &payload),
            Message::Text(payload) => self.events.push_back(Event::Message {
                text: true,
                payload,
            }),
            Message::Binary(payload) => self.events.push_back(Event::Message {
                text: false,
                payload,
            }),
            // Replaces an unanswered older one (§5.5.3).
            Message::Ping(payload) => {
                let owed = pongs.get_or_insert_default();
                if owed.len() + payload.len() + 2 > PENDING_PONG_BYTES {
                    // Older pongs give way to the newest (§5.5.3).
                    owed.clear();
                }
                write_frame(owed, true, OpCode::Pong, &payload);
            }
            Message::Pong(_) => {}
            Message::Close(peer) => match closing {
                // The peer answered our close: the handshake is complete.
                Some(reason) => self.finish(reason),
                // §5.5.1: answer with a close frame, echoing the code; the server then
                // closes the TCP connection first (§7.1.1).
                None => {
                    self.pong_before_close();
                    let code = peer.as_ref().map(|(code, _)| *code);
                    write_frame(
                        self.out.get(),
                        true,
                        OpCode::Close,
                        &close_payload(code, ""),
                    );
                    self.finish(CloseReason::PeerClosed(code));
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::write_masked_frame;
    use crate::proto::message::tests::session;
    use crate::proto::rand::Rng;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn upgrade(path: &str) -> Vec<u8> {
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes()
    }

    fn frame(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_masked_frame(&mut out, fin, op, payload, [1, 2, 3, 4]);
        out
    }

    /// Everything a connection produced: events and transmitted bytes (control frames
    /// included, each send's first), and the control frames alone.
    #[derive(Debug, Default, PartialEq)]
    struct Output {
        events: Vec<Event>,
        sent: Vec<u8>,
        control: Vec<u8>,
    }

    /// What the driver does after each input while its outbox has room: take the
    /// events, then pending input step by step; then send, control frames first.
    fn drain(now: Instant, cfg: &ConnConfig, c: &mut Connection, o: &mut Output) {
        loop {
            while let Some(e) = c.poll_event() {
                o.events.push(e);
            }
            if !c.resume(now, cfg) {
                break;
            }
        }
        if let Some(ctrl) = c.poll_control(now, cfg) {
            o.sent.extend_from_slice(&ctrl);
            o.control.extend_from_slice(&ctrl);
        }
        while let Some(t) = c.poll_transmit() {
            o.sent.extend_from_slice(&t);
        }
    }

    fn feed(now: Instant, cfg: &ConnConfig, pieces: &[&[u8]]) -> (Connection, Output) {
        let mut c = Connection::new(now, cfg, 7);
        let mut o = Output::default();
        for p in pieces {
            c.handle_bytes(now, cfg, p);
            drain(now, cfg, &mut c, &mut o);
        }
        (c, o)
    }

    fn text(o: &Output) -> String {
        String::from_utf8_lossy(&o.sent).into_owned()
    }

    fn server_frame(op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, true, op, payload);
        out
    }

    fn upgrade_with(path: &str, extensions: &str) -> Vec<u8> {
        let mut u = upgrade(path);
        u.truncate(u.len() - 2);
        u.extend_from_slice(format!("Sec-WebSocket-Extensions: {extensions}\r\n\r\n").as_bytes());
        u
    }

    /// permessage-deflate: agreed on `/echo` and `/ws/..` when offered and allowed; a
    /// compressed message comes back compressed, a short one plain; `off` and bad offers
    /// are declined, never refused.
    #[test]
    fn permessage_deflate() {
        let now = Instant::now();
        let cfg = ConnConfig::default();
        let answer = "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n";
        let long = "{\"symbol\":\"ACME\",\"bid\":101.25,\"ask\":101.5} ".repeat(8);
        let mut z = Vec::new();
        deflate::Deflater::new(1, 15).compress(long.as_bytes(), &mut z);
        let mut input = upgrade_with("/echo", "permessage-deflate; client_max_window_bits");
        crate::proto::frame::write_masked_frame_rsv1(
            &mut input,
            true,
            true,
            OpCode::Text,
            &z,
            [5, 6, 7, 8],
        );
        input.extend(frame(true, OpCode::Text, b"short"));
        let (c, o) = feed(now, &cfg, &[&input]);
        let sent = text(&o);
        assert!(sent.contains(answer), "{sent}");
        assert_eq!(c.deflate().map(|d| d.server_window_bits), Some(15));
        let head_len = sent.find("\r\n\r\n").unwrap() + 4;
        let frames = &o.sent[head_len..];
        assert_eq!(frames[0], 0xc1, "compressed echo: RSV1");
        let mut dec = Decoder::new(Role::Client);
        dec.enable_deflate();
        let (n, first) = dec.decode(frames, usize::MAX).unwrap();
        assert_eq!(first, Some(Message::Text(long.into_bytes())));
        assert_eq!(frames[n], 0x81, "under --compression-min-bytes: plain");
        assert_eq!(
            dec.decode(&frames[n..], usize::MAX).unwrap().1,
            Some(Message::Text(b"short".to_vec()))
        );

        // Declined: --compression off, a bad offer, another extension. Still a 101.
        let off = ConnConfig {
            compression: CompressionMode::Off,
            ..ConnConfig::default()
        };
        for (cfg, offer) in [
            (&off, "permessage-deflate"),
            (&cfg, "permessage-deflate; bogus"),
            (&cfg, "x-webkit-deflate-frame"),
        ] {
            let (c, o) = feed(now, cfg, &[&upgrade_with("/ws/t", offer)]);
            let sent = text(&o);
            assert!(sent.starts_with("HTTP/1.1 101 "), "{sent}");
            assert!(
                !sent.contains("Sec-WebSocket-Extensions"),
                "{offer}: {sent}"
            );
            assert_eq!(c.deflate(), None);
        }
        // Not agreed: RSV1 is a protocol error (1002).
        let mut input = upgrade("/echo");
        crate::proto::frame::write_masked_frame_rsv1(
            &mut input,
            true,
            true,
            OpCode::Text,
            &z,
            [5, 6, 7, 8],
        );
        let (_, o) = feed(now, &cfg, &[&input]);
        let head_len = text(&o).find("\r\n\r\n").unwrap() + 4;
        assert_eq!(&o.sent[head_len..head_len + 4], &[0x88, 0x13, 0x03, 0xea]);
    }

    #[test]
    fn websocket_session() {
        let cfg = ConnConfig::default();
        let now = Instant::now();
        let input = [
            upgrade("/echo"),
            frame(true, OpCode::Text, b"hi"),
            frame(true, OpCode::Ping, b"p"),
            frame(true, OpCode::Close, b"\x03\xe8"),
        ]
        .concat();
        let (c, o) = feed(now, &cfg, &[&input]);
        let sent = text(&o);
        assert!(
            sent.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{sent}"
        );
        assert!(
            sent.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")),
            "{sent}"
        );
        let head_len = sent.find("\r\n\r\n").unwrap() + 4;
        let frames = [
            server_frame(OpCode::Text, b"hi"),
            server_frame(OpCode::Pong, b"p"),
            server_frame(OpCode::Close, b"\x03\xe8"),
        ]
        .concat();
        assert_eq!(
            &o.sent[head_len..],
            &frames[..],
            "the echo, the pong (moved ahead of the close), then the close echoing 1000"
        );
        assert_eq!(
            o.events,
            [
                Event::WsOpen(WsKind::Echo),
                Event::Echoed {
                    messages: 1,
                    bytes: 2
                },
                Event::Closed(CloseReason::PeerClosed(Some(CloseCode::NORMAL))),
            ]
        );
        assert!(c.is_closed());
    }

    /// Autobahn 3.2, 4.1.3, 5.15 and kin: a valid message and a protocol error (or a
    /// close frame) in the same read. The echo owed for the message goes out before
    /// the close frame, whatever the split of the input.
    #[test]
    fn output_owed_before_a_failure_is_sent_first() {
        let cfg = ConnConfig::default();
        let now = Instant::now();
        let bad_rsv = frame(true, OpCode::Text, b"bad")
            .iter()
            .enumerate()
            .map(|(i, b)| if i == 0 { b | 0x40 } else { *b })
            .collect::<Vec<u8>>();
        let cases: [(Vec<u8>, Vec<u8>); 3] = [
            // 3.2: a message, then a frame with a reserved bit.
            (
                [frame(true, OpCode::Text, b"Hello, world!"), bad_rsv.clone()].concat(),
                server_frame(
                    OpCode::Close,
                    &close_payload(
                        Some(CloseCode::PROTOCOL_ERROR),
                        &WsError::Frame(crate::proto::frame::FrameError::ReservedBits).to_string(),
                    ),
                ),
            ),
            // 4.1.3: a message, then a reserved opcode.
            (
                [
                    frame(true, OpCode::Text, b"Hello"),
                    vec![0x83, 0x80, 0, 0, 0, 0],
                ]
                .concat(),
                Vec::new(),
            ),
            // A message, then the peer's close: the close answer follows the echo.
            (
                [
                    frame(true, OpCode::Binary, b"\x01\x02"),
                    frame(true, OpCode::Close, b"\x03\xe8"),
                ]
                .concat(),
                server_frame(OpCode::Close, b"\x03\xe8"),
            ),
        ];
        for (input, close) in cases {
            let whole = [upgrade("/echo"), input.clone()].concat();
            let (_, o) = feed(now, &cfg, &[&whole]);
            let head_len = text(&o).find("\r\n\r\n").unwrap() + 4;
            let after = &o.sent[head_len..];
            let first = Decoder::new(Role::Client)
                .decode(after, usize::MAX)
                .unwrap();
            assert!(
                matches!(first.1, Some(Message::Text(_) | Message::Binary(_))),
                "the echo comes first: {after:02x?}"
            );
            let second = Decoder::new(Role::Client)
                .decode(&after[first.0..], usize::MAX)
                .unwrap();
            assert!(
                matches!(second.1, Some(Message::Close(_))),
                "then the close: {after:02x?}"
            );
            if !close.is_empty() {
                assert_eq!(&after[first.0..], &close[..]);
            }
            // The same at every split point.
            for cut in 1..whole.len() {
                let (_, split) = feed(now, &cfg, &[&whole[..cut], &whole[cut..]]);
                assert_eq!(split.sent, o.sent, "split at {cut}");
            }
        }
    }

    /// Ten pings get ten pongs; a ping flood costs one pong per send: past
    /// `PENDING_PONG_BYTES` older pongs give way to the newest (RFC 6455 §5.5.3), and
    /// the driver takes them only when it sends.
    #[test]
    fn pongs_are_coalesced_to_the_latest_ping() {
        let cfg = ConnConfig::default();
        let now = Instant::now();
        let (mut c, _) = feed(now, &cfg, &[&upgrade("/echo")]);
        let pings = |n: u32| -> Vec<u8> {
            (0..n)
                .flat_map(|i| frame(true, OpCode::Ping, &i.to_be_bytes()))
                .collect()
        };
        let pongs = |bytes: Vec<u8>| -> Vec<u32> {
            bytes
                .chunks(6)
                .map(|f| {
                    assert_eq!(&f[..2], &[0x8a, 4]);
                    u32::from_be_bytes(f[2..].try_into().unwrap())
                })
                .collect()
        };
        c.handle_bytes(now, &cfg, &pings(10));
        assert_eq!(c.poll_transmit(), None, "no pong queued with the data");
        assert!(c.has_control());
        let ten = pongs(c.poll_control(now, &cfg).unwrap());
        assert_eq!(ten, (0..10).collect::<Vec<_>>(), "ten pings, ten pongs");
        assert_eq!(c.poll_control(now, &cfg), None);
        c.handle_bytes(now, &cfg, &pings(1000));
        let owed = c.poll_control(now, &cfg).unwrap();
        assert!(owed.len() <= PENDING_PONG_BYTES);
        let tail = pongs(owed);
        assert_eq!(tail.last(), Some(&999), "the latest ping is answered");
        assert!(tail.windows(2).all(|w| w[1] == w[0] + 1), "in order");
    }

    /// Pipelined requests behind one being served are kept, not refused, however many:
    /// the driver is told to stop reading, and they are answered in order.
    #[test]
    fn pipelined_requests_are_backpressure_not_an_error() {
        let cfg = ConnConfig::default();
        let now = Instant::now();
        let one = "POST /publish/t HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
        let many = one.repeat(300);
        let mut c = Connection::new(now, &cfg, 1);
        c.handle_bytes(now, &cfg, many.as_bytes());
        assert!(!c.wants_input(&cfg), "{} bytes pending", c.pending_input());
        let mut answered = 0;
        let mut sent = Vec::new();
        loop {
            // As the driver does: take the output, then ask for more.
            while let Some(t) = c.poll_transmit() {
                sent.extend(t);
            }
            while c.resume(now, &cfg) {}
            match c.poll_event() {
                Some(Event::Request { body, .. }) => {
                    assert_eq!(body, b"abc");
                    assert!(c.respond(now, &cfg, Status::Ok, "application/json", &[], b"{}"));
                    answered += 1;
                }
                None if c.pending_input() == 0 => break,
                None => {}
                Some(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(answered, 300);
        assert!(c.wants_input(&cfg));
        while let Some(t) = c.poll_transmit() {
            sent.extend(t);
        }
        let sent = String::from_utf8(sent).unwrap();
        assert_eq!(sent.matches("HTTP/1.1 200 OK").count(), 300);
    }

    /// Answers to pipelined requests stop after an output slice, so the driver can put
    /// them in the outbox (and stop at its cap) before more are parsed.
    #[test]
    fn pipelined_answers_stop_at_an_output_slice() {
        let cfg = ConnConfig::default();
        let now = Instant::now();
        let many = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
        let mut c = Connection::new(now, &cfg, 1);
        c.defer_bytes(many.as_bytes());
        let mut steps = 0;
        let mut total = 0;
        while c.resume(now, &cfg) {
            steps += 1;
            let out = c.poll_transmit().unwrap_or_default();
            assert!(
                out.len() < OUTPUT_SLICE + 200,
                "one step queued {}",
                out.len()
            );
            total += String::from_utf8(out).unwrap().matches(" 200 OK").count();
        }
        assert_eq!(total, 2000);
        assert!(steps > 2, "{steps} steps");
    }

    #[test]
    fn topic_socket_and_echo_send() {
        let cfg = ConnConfig::default();
        let now = Instant::now();
        let (mut c, o) = feed(now, &cfg, &[&upgrade("/ws/chat:room-1")]);
        assert_eq!(
            o.events,
            [Event::WsOpen(WsKind::Topic(
                Topic::new("chat:room-1").unwrap()
            ))]
        );
        assert!(c.can_send());
        c.handle_bytes(now, &cfg, &frame(true, OpCode::Binary, b"\x00\x01"));
        assert_eq!(
            c.poll_event(),
            Some(Event::Message {
                text: false,
                payload: b"\x00\x01".to_vec()
            }),
            "a topic socket's message goes to the driver, not back"
        );
        assert_eq!(c.poll_transmit(), None);
    }

    /// A whole recorded session (upgrade + every frame kind) fed one byte at a time and
    /// at random split points gives the same events and bytes as one shot.
    #[test]
    fn chunking_equals_one_shot() {
        let cfg = ConnConfig::default();
        let now = Instant::now();
        let input = [upgrade("/ws/t"), session()].concat();
        let (_, whole) = feed(now, &cfg, &[&input]);
        assert_eq!(
            whole.events.len(),
            1 + 5 + 1,
            "open, five data messages, closed"
        );
        // Pongs depend on the split (a newer ping replaces an unanswered one, §5.5.3);
        // everything else, and the pong for the last ping, must not.
        let same = |o: Output| {
            assert_eq!(o.events, whole.events);
            assert_eq!(without_pongs(&o.sent), without_pongs(&whole.sent));
            assert_eq!(last_pong(&o.sent), last_pong(&whole.sent));
        };
        assert!(last_pong(&whole.sent).is_some());
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        same(feed(now, &cfg, &bytes).1);
        let mut rng = Rng::new(42);
        for _ in 0..100 {
            let mut pieces = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let n = ((rng.next_u64() % 300) as usize + 1).min(rest.len());
                pieces.push(&rest[..n]);
                rest = &rest[n..];
            }
            same(feed(now, &cfg, &pieces).1);
        }
    }

    /// The server's frames after the 101 head, decoded.
    fn server_messages(sent: &[u8]) -> Vec<Message> {
        let head = sent.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut rest = &sent[head..];
        let mut dec = Decoder::new(Role::Client);
        let mut out = Vec::new();
        while !rest.is_empty() {
            let (used, msg) = dec.decode(rest, usize::MAX).unwrap();
            rest = &rest[used..];
            out.extend(msg);
        }
        out
    }

    fn without_pongs(sent: &[u8]) -> Vec<Message> {
        server_messages(sent)
            .into_iter()
            .filter(|m| !matches!(m, Message::Pong(_)))
            .collect()
    }

    fn last_pong(sent: &[u8]) -> Option<Message> {
        server_messages(sent)
            .into_iter()
            .rfind(|m| matches!(m, Message::Pong(_)))
    }

    /// Each violation gets its close code in a close frame, then the connection lingers
    /// (input discarded) until EOF.
    #[test]
    fn protocol_violations_get_close_codes() {
        let cfg = ConnConfig {
            limits: Limits {
                max_message_bytes: 100,
                ..Limits::default()
            },
            ..ConnConfig::default()
        };
        let now = Instant::now();
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (vec![0x81, 0x02, b'h', b'i'], 1002), // unmasked
            (
                frame(true, OpCode::Text, b"x")
                    .iter()
                    .enumerate()
                    .map(|(i, b)| if i == 0 { b | 0x40 } else { *b })
                    .collect(),
                1002,
            ), // RSV1
            (vec![0x83, 0x80, 0, 0, 0, 0], 1002), // opcode 3
            (frame(false, OpCode::Ping, b""), 1002), // fragmented control
            (vec![0x89, 0xfe, 0, 126, 0, 0, 0, 0], 1002), // 126-byte ping
            (frame(true, OpCode::Continuation, b"x"), 1002), // continuation without start
            (
                [
                    frame(false, OpCode::Text, b"a"),
                    frame(true, OpCode::Text, b"b"),
                ]
                .concat(),
                1002,
            ),
            (frame(true, OpCode::Close, b"\x03"), 1002), // 1-byte close
            (frame(true, OpCode::Close, b"\x03\xee"), 1002), // code 1006
            (frame(true, OpCode::Text, b"\xff"), 1007),
            (frame(true, OpCode::Close, b"\x03\xe8\xff"), 1007), // bad reason
            (frame(true, OpCode::Binary, &[0; 101]), 1009),
            (
                [
                    frame(false, OpCode::Binary, &[0; 60]),
                    frame(true, OpCode::Continuation, &[0; 41]),
                ]
                .concat(),
                1009,
            ),
        ];
        for (bad, code) in cases {
            let (mut c, o) = feed(
                now,
                &cfg,
                &[&upgrade("/echo"), &bad, b"ignored after the error"],
            );
            let head_len = text(&o).find("\r\n\r\n").unwrap() + 4;
            let close = &o.sent[head_len..];
            assert_eq!(&close[..1], &[0x88], "close frame for {bad:02x?}");
            assert_eq!(
                u16::from_be_bytes([close[2], close[3]]),
                code,
                "code for {bad:02x?}"
            );
            assert!(
                !c.is_closed() && !c.can_send(),
                "lingers for the peer's EOF"
            );
            c.handle_eof(now);
            assert!(
                matches!(c.poll_event(), Some(Event::Closed(CloseReason::ProtocolError(e))) if e.close_code().0 == code)
            );
            assert!(c.is_closed());
        }
    }

    #[test]
    fn heartbeats() {
        let cfg = ConnConfig::default();
        let t0 = Instant::now();
        let (mut c, _) = feed(t0, &cfg, &[&upgrade("/echo")]);
        assert_eq!(c.poll_timeout(), Some(t0 + cfg.ping_interval));
        c.handle_timeout(t0 + Duration::from_secs(29), &cfg);
        assert!(!c.has_control(), "not yet");
        let t1 = t0 + cfg.ping_interval;
        c.handle_timeout(t1, &cfg);
        assert_eq!(c.poll_transmit(), None, "pings go in the control lane");
        // Due at t1, but taken by the driver (sent) only 3 s later, behind a burst: the
        // pong deadline counts from then.
        let sent = t1 + Duration::from_secs(3);
        assert_eq!(
            c.poll_control(sent, &cfg),
            Some(server_frame(OpCode::Ping, b""))
        );
        assert_eq!(c.poll_timeout(), Some(sent + cfg.pong_timeout));
        // Any frame answers: a pong 5 s later resets the clock.
        let t2 = t1 + Duration::from_secs(5);
        c.handle_bytes(t2, &cfg, &frame(true, OpCode::Pong, b""));
        assert_eq!(c.poll_timeout(), Some(t2 + cfg.ping_interval));
        c.handle_timeout(t1 + cfg.pong_timeout, &cfg);
        assert!(!c.is_closed(), "a live peer survives");
        // A silent peer: ping, then dropped after the pong timeout.
        let t3 = t2 + cfg.ping_interval;
        c.handle_timeout(t3, &cfg);
        assert_eq!(
            c.poll_control(t3, &cfg),
            Some(server_frame(OpCode::Ping, b""))
        );
        c.handle_timeout(t3 + cfg.pong_timeout - Duration::from_millis(1), &cfg);
        assert!(!c.is_closed());
        c.handle_timeout(t3 + cfg.pong_timeout, &cfg);
        assert!(c.is_closed());
        assert_eq!(
            c.poll_event(),
            Some(Event::Closed(CloseReason::PongTimeout))
        );
        // A ping that cannot leave (the connection's send is stuck) ends it too, after
        // a ping interval: not the pong timeout, which a long burst ahead of the ping
        // (a broadcast to a million) must not eat.
        let (mut c, _) = feed(t0, &cfg, &[&upgrade("/echo")]);
        c.handle_timeout(t1, &cfg);
        c.handle_timeout(t1 + cfg.pong_timeout, &cfg);
        assert!(!c.is_closed(), "still waiting to send its ping");
        c.handle_timeout(t1 + cfg.ping_interval, &cfg);
        assert_eq!(
            c.poll_event(),
            Some(Event::Closed(CloseReason::PongTimeout))
        );
    }

    #[test]
    fn handshake_timeout() {
        let cfg = ConnConfig::default();
        let t0 = Instant::now();
        let (mut c, _) = feed(t0, &cfg, &[b"GET /echo HTTP/1.1\r\nHost: x\r\n"]);
        assert_eq!(c.poll_timeout(), Some(t0 + cfg.handshake_timeout));
        // Trickling bytes does not extend the deadline (slowloris).
        c.handle_bytes(t0 + Duration::from_secs(9), &cfg, b"X-A: b\r\n");
        c.handle_timeout(t0 + cfg.handshake_timeout, &cfg);
        assert_eq!(
            c.poll_event(),
            Some(Event::Closed(CloseReason::HandshakeTimeout))
        );
    }

    #[test]
    fn server_close_handshake() {
        let cfg = ConnConfig::default();
        let t0 = Instant::now();
        let (mut c, _) = feed(t0, &cfg, &[&upgrade("/echo")]);
        c.close(t0, &cfg, CloseCode::GOING_AWAY, "shutting down");
        let mut expected = Vec::new();
        write_frame(&mut expected, true, OpCode::Close, b"\x03\xe9shutting down");
        assert_eq!(c.poll_transmit(), Some(expected));
        assert!(!c.can_send());
        // Data still in flight from the peer is dropped; its close completes the handshake.
        c.handle_bytes(
            t0,
            &cfg,
            &[
                frame(true, OpCode::Text, b"late"),
                frame(true, OpCode::Close, b"\x03\xe9"),
            ]
            .concat(),
        );
        assert_eq!(
            c.poll_event(),
            Some(Event::Closed(CloseReason::ServerClosed(
                CloseCode::GOING_AWAY
            )))
        );
        assert_eq!(c.poll_transmit(), None, "no second close frame");
        // A peer that never answers is dropped after close_timeout.
        let (mut c, _) = feed(t0, &cfg, &[&upgrade("/echo")]);
        c.close(t0, &cfg, CloseCode::GOING_AWAY, "");
        c.handle_timeout(t0 + cfg.close_timeout, &cfg);
        assert_eq!(
            c.poll_event(),
            Some(Event::Closed(CloseReason::CloseTimeout))
        );
    }

    #[test]
    fn handshake_failures_get_http_errors() {
        let cfg = ConnConfig {
            allowed_origins: vec!["https://ok.example".into()],
            ..ConnConfig::default()
        };
        let now = Instant::now();
        let req = |extra: &str, version: &str| {
            format!(
                "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: {version}\r\n{extra}\r\n"
            )
        };
        let cases = [
            (req("", "8"), "426", Some("Sec-WebSocket-Version: 13")),
            (req("Origin: https://evil.example\r\n", "13"), "403", None),
            (
                "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
                "400",
                None,
            ),
            (
                "GET /ws/bad%20topic HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
                "400",
                None,
            ),
            (
                "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
                "404",
                None,
            ),
        ];
        for (input, status, header) in cases {
            let (mut c, o) = feed(now, &cfg, &[input.as_bytes()]);
            let sent = text(&o);
            assert!(
                sent.starts_with(&format!("HTTP/1.1 {status} ")),
                "{input:?} -> {sent}"
            );
            if let Some(h) = header {
                assert!(sent.contains(h), "{sent}");
            }
            c.handle_eof(now);
            assert!(matches!(
                c.poll_event(),
                Some(Event::Closed(CloseReason::Rejected(_)))
            ));
        }
        let (_, o) = feed(
            now,
            &cfg,
            &[req("Origin: https://OK.example\r\n", "13").as_bytes()],
        );
        assert!(text(&o).starts_with("HTTP/1.1 101 "));
    }

    #[test]
    fn oversized_head_gets_431() {
        let cfg = ConnConfig::default();
        let now = Instant::now();
        let big = format!(
            "GET /healthz HTTP/1.1\r\nHost: h\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(9000)
        );
        let pieces: Vec<&[u8]> = big.as_bytes().chunks(1000).collect();
        let (_, o) = feed(now, &cfg, &pieces);
        assert!(text(&o).starts_with("HTTP/1.1 431 "), "{}", text(&o));
    }

    #[test]
    fn keep_alive_and_pipelining() {
        let cfg = ConnConfig::default();
        let now = Instant::now();
        let two = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let (mut c, o) = feed(now, &cfg, &[two]);
        assert_eq!(
            text(&o).matches("HTTP/1.1 200 OK").count(),
            1,
            "healthz answered; metrics waits"
        );
        assert_eq!(
            o.events,
            [Event::Request {
                route: Route::Metrics,
                body: vec![]
            }]
        );
        assert!(c.respond(now, &cfg, Status::Ok, "text/plain", &[], b"m 1\n"));
        let mut o = Output::default();
        drain(now, &cfg, &mut c, &mut o);
        let sent = text(&o);
        assert!(
            sent.contains("m 1\n") && sent.ends_with("ok\n") && sent.contains("Connection: close"),
            "{sent}"
        );
        assert!(
            !c.respond(now, &cfg, Status::Ok, "text/plain", &[], b""),
            "nothing waiting"
        );
        c.handle_eof(now);
        assert_eq!(c.poll_event(), Some(Event::Closed(CloseReason::Done)));
    }

    #[test]
    fn publish_body() {
        let cfg = ConnConfig {
            publish_token: Some("s3cret".into()),
            ..ConnConfig::default()
        };
        let now = Instant::now();
        let req = b"POST /publish/news?event=update HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 11\r\n\r\nhello world";
        let pieces: Vec<&[u8]> = req.chunks(7).collect();
        let (mut c, o) = feed(now, &cfg, &pieces);
        let topic = Topic::new("news").unwrap();
        assert_eq!(
            o.events,
            [Event::Request {
                route: Route::Publish {
                    topic,
                    event: Some("update".into()),
                    idempotency_key: None,
                },
                body: b"hello world".to_vec()
            }]
        );
        assert!(c.respond(
            now,
            &cfg,
            Status::Ok,
            "application/json",
            &[],
            b"{\"id\":\"x\"}"
        ));
        // Expect: 100-continue gets its interim response before the body.
        let (_, o) = feed(
            now,
            &ConnConfig::default(),
            &[b"POST /publish/news HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"],
        );
        assert_eq!(text(&o), "HTTP/1.1 100 Continue\r\n\r\n");
        // The field is a list (RFC 9110 §10.1.1): repeated lines are joined, case ignored.
        let (_, o) = feed(
            now,
            &ConnConfig::default(),
            &[b"POST /publish/news HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nexpect: 100-continue\r\nContent-Length: 2\r\n\r\n"],
        );
        assert_eq!(text(&o), "HTTP/1.1 100 Continue\r\n\r\n");
        // Without the token: 401; over the limit: 413 before any body byte is read.
        let (_, o) = feed(
            now,
            &cfg,
            &[b"POST /publish/news HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx"],
        );
        assert!(text(&o).starts_with("HTTP/1.1 401 "));
        let small = ConnConfig {
            limits: Limits {
                max_message_bytes: 10,
                ..Limits::default()
            },
            ..ConnConfig::default()
        };
        let (_, o) = feed(
            now,
            &small,
            &[b"POST /publish/news HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n"],
        );
        assert!(text(&o).starts_with("HTTP/1.1 413 "));
        assert!(o.events.is_empty());
    }

    #[test]
    fn event_stream() {
        let cfg = ConnConfig::default();
        let t0 = Instant::now();
        let (mut c, o) = feed(t0, &cfg, &[b"GET /sse?topic=a&topic=b HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 0a0b0c0d-3.4\r\n\r\n"]);
        let sent = text(&o);
        assert!(sent.starts_with("HTTP/1.1 200 OK\r\n"), "{sent}");
        for h in [
            "Content-Type: text/event-stream\r\n",
            "Cache-Control: no-cache\r\n",
            "X-Accel-Buffering: no\r\n",
        ] {
            assert!(sent.contains(h), "{h} in {sent}");
        }
        let body = &sent[sent.find("\r\n\r\n").unwrap() + 4..];
        let retry: u64 = body
            .strip_prefix("retry: ")
            .and_then(|r| r.strip_suffix("\n\n"))
            .unwrap()
            .parse()
            .unwrap();
        assert!((1500..4500).contains(&retry), "{retry}");
        let topics = vec![Topic::new("a").unwrap(), Topic::new("b").unwrap()];
        assert_eq!(
            o.events,
            [Event::SseOpen {
                topics,
                last_event_id: Some("0a0b0c0d-3.4".into())
            }]
        );
        assert!(c.can_send());
        c.handle_timeout(t0 + cfg.sse_heartbeat, &cfg);
        assert_eq!(c.poll_transmit(), Some(b": hb\n\n".to_vec()));
        assert_eq!(c.poll_timeout(), Some(t0 + 2 * cfg.sse_heartbeat));
    }

    #[test]
    fn overloaded_gets_503_and_lingers() {
        let cfg = ConnConfig::default();
        let now = Instant::now();
        let mut c = Connection::new(now, &cfg, 1);
        c.reject_overloaded(now, &cfg, 3);
        let sent = String::from_utf8(c.poll_transmit().unwrap()).unwrap();
        assert!(
            sent.starts_with("HTTP/1.1 503 ") && sent.contains("Retry-After: 3\r\n"),
            "{sent}"
        );
        c.handle_bytes(now, &cfg, &upgrade("/echo"));
        assert_eq!(
            c.poll_transmit(),
            None,
            "the request behind it is discarded"
        );
        c.handle_timeout(now + cfg.close_timeout, &cfg);
        assert_eq!(c.poll_event(), Some(Event::Closed(CloseReason::Overloaded)));
    }

    /// Under TLS the driver takes the PROXY header alone: cut anywhere, it uses the
    /// header's bytes and gives back exactly the bytes after it (the TLS hello).
    #[test]
    fn proxy_header_before_tls() {
        let now = Instant::now();
        let cfg = ConnConfig {
            proxy_protocol: true,
            ..ConnConfig::default()
        };
        let header = b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 8080\r\n";
        let mut input = header.to_vec();
        input.extend_from_slice(b"\x16\x03\x01hello");
        for cut in 1..input.len() {
            let mut c = Connection::new(now, &cfg, 1);
            assert!(c.awaits_proxy_header());
            let (a, b) = input.split_at(cut);
            let mut rest = Vec::new();
            for piece in [a, b] {
                if c.awaits_proxy_header() {
                    let used = c.take_proxy_header(piece);
                    rest.extend_from_slice(&piece[used..]);
                } else {
                    rest.extend_from_slice(piece);
                }
            }
            assert_eq!(rest, b"\x16\x03\x01hello", "cut at {cut}");
            assert!(!c.awaits_proxy_header());
            let client = Some("192.0.2.7:4711".parse().unwrap());
            assert_eq!(c.poll_event(), Some(Event::Proxied(client)));
        }
        let mut c = Connection::new(now, &cfg, 1);
        let hello = b"\x16\x03\x01 a TLS hello, no header";
        assert_eq!(c.take_proxy_header(hello), hello.len());
        assert!(matches!(
            c.poll_event(),
            Some(Event::Closed(CloseReason::BadProxyHeader(_)))
        ));
    }

    /// `--proxy-protocol`: the header comes first, whole or a byte at a time, and the
    /// request behind it (in the same segment or not) is served as usual.
    #[test]
    fn proxy_header_then_request() {
        let now = Instant::now();
        let cfg = ConnConfig {
            proxy_protocol: true,
            ..ConnConfig::default()
        };
        let mut v2 = crate::proto::proxy::V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 7, 127, 0, 0, 1, 0x12, 0x67, 0x1f, 0x90,
        ]);
        let mut input = v2.clone();
        input.extend_from_slice(&upgrade("/echo"));
        input.extend_from_slice(&frame(true, OpCode::Text, b"hi"));
        let (c, whole) = feed(now, &cfg, &[&input]);
        let client = Some("192.0.2.7:4711".parse().unwrap());
        assert_eq!(whole.events[0], Event::Proxied(client));
        assert_eq!(whole.events[1], Event::WsOpen(WsKind::Echo));
        assert!(text(&whole).starts_with("HTTP/1.1 101"));
        assert!(whole.sent.ends_with(&server_frame(OpCode::Text, b"hi")));
        assert!(!c.is_closed());
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let (_, split) = feed(now, &cfg, &bytes);
        assert_eq!(split.sent, whole.sent, "a byte at a time");
        assert_eq!(split.events[..2], whole.events[..2]);

        // v1, and the admin listener, which expects none.
        let mut v1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 8080\r\n".to_vec();
        v1.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let (_, o) = feed(now, &cfg, &[&v1]);
        assert_eq!(o.events, [Event::Proxied(client)]);
        assert!(text(&o).starts_with("HTTP/1.1 200"));
        let mut admin = Connection::new(now, &cfg, 7).admin();
        admin.handle_bytes(now, &cfg, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            String::from_utf8(admin.poll_transmit().unwrap())
                .unwrap()
                .starts_with("HTTP/1.1 200")
        );
    }

    /// Without a valid header the connection is closed with no reply: an HTTP client on
    /// a PROXY port, garbage, or a header that never completes.
    #[test]
    fn proxy_header_refusals() {
        let now = Instant::now();
        let cfg = ConnConfig {
            proxy_protocol: true,
            ..ConnConfig::default()
        };
        let (c, o) = feed(now, &cfg, &[b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"]);
        assert!(c.is_closed());
        assert!(o.sent.is_empty());
        assert_eq!(
            o.events,
            [Event::Closed(CloseReason::BadProxyHeader(
                ProxyError::Signature
            ))]
        );
        let (c, o) = feed(now, &cfg, &[b"PROXY TCP4 1.2.3.4", b" x 1 2\r\n"]);
        assert!(c.is_closed() && o.sent.is_empty());
        // Slowloris on the header: the handshake timeout covers it.
        let (mut c, _) = feed(now, &cfg, &[b"PROXY TCP4 "]);
        assert_eq!(c.poll_timeout(), Some(now + cfg.handshake_timeout));
        c.handle_timeout(now + cfg.handshake_timeout, &cfg);
        assert_eq!(
            c.poll_event(),
            Some(Event::Closed(CloseReason::HandshakeTimeout))
        );
    }

    /// With trusted proxies, every request head says what its X-Forwarded-For was,
    /// before its other events; without, nothing does.
    #[test]
    fn forwarded_for_events() {
        let now = Instant::now();
        let cfg = ConnConfig {
            trusted_proxies: vec![Cidr::parse("10.0.0.0/8").unwrap()],
            ..ConnConfig::default()
        };
        let reqs = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 10.0.0.9\r\n\r\n\
                     GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        let (_, o) = feed(now, &cfg, &[reqs]);
        assert_eq!(
            o.events,
            [
                Event::ForwardedFor(Some("1.2.3.4, 10.0.0.9".into())),
                Event::ForwardedFor(None),
                Event::Request {
                    route: Route::Metrics,
                    body: Vec::new()
                },
            ]
        );
        let (_, o) = feed(now, &ConnConfig::default(), &[reqs]);
        assert!(!o.events.iter().any(|e| matches!(e, Event::ForwardedFor(_))));
    }

    /// A connection is small: 1,000,000 of them must fit the 1 KiB-per-connection budget
    /// with room for the driver's own per-connection state.
    #[test]
    fn connection_is_small() {
        let size = std::mem::size_of::<Connection>();
        assert!(size <= 112, "Connection is {size} bytes");
    }
}
