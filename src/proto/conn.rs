//! The per-connection state machine: one request head, then HTTP, a WebSocket or an
//! event stream.
//!
//! ```text
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

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::close::{CloseCode, close_payload};
use super::frame::{OpCode, Role, write_frame};
use super::handshake::{self, HandshakeError};
use super::http::{self, HttpError, Method, RequestHead, Route, Status, Topic};
use super::limits::Limits;
use super::message::{Decoder, Message, WsError};
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
    /// If set, `POST /publish` requires `Authorization: Bearer <token>`.
    pub publish_token: Option<String>,
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
        }
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
    /// A complete text or binary message from the peer.
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
}

#[derive(Debug)]
enum State {
    /// Reading a request head. `idle`: at least one request was served (keep-alive).
    Head { deadline: Instant, idle: bool },
    /// Reading a publish body.
    Body {
        deadline: Instant,
        route: Route,
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
    /// A ping is out; at the deadline (`pong_timeout` after it) the peer is dead.
    PingSent,
    /// We sent a close frame; at the deadline we stop waiting for the peer's.
    Closing(CloseReason),
}

/// One client connection, from its first byte to its close.
#[derive(Debug)]
pub struct Connection {
    state: State,
    /// Unparsed input: a partial request head or bytes pipelined behind a request.
    inbuf: Vec<u8>,
    /// Bytes to send, produced by this state machine.
    out: Vec<u8>,
    events: VecDeque<Event>,
    /// Per-connection randomness for the SSE retry jitter.
    seed: u32,
}

/// The SSE heartbeat line. A comment: clients ignore it, proxies see traffic.
const HEARTBEAT: &str = "hb";

impl Connection {
    /// A new connection accepted at `now`. `seed` is any per-connection random value.
    pub fn new(now: Instant, cfg: &ConnConfig, seed: u32) -> Connection {
        Connection {
            state: State::Head {
                deadline: now + cfg.handshake_timeout,
                idle: false,
            },
            inbuf: Vec::new(),
            out: Vec::new(),
            events: VecDeque::new(),
            seed,
        }
    }

    /// Bytes received from the peer.
    pub fn handle_bytes(&mut self, now: Instant, cfg: &ConnConfig, data: &[u8]) {
        match self.state {
            State::Ws { .. } => self.ws_input(now, cfg, data),
            State::Head { .. } | State::Body { .. } | State::Waiting { .. } => {
                if self.inbuf.is_empty() {
                    let used = self.http_input(now, cfg, data);
                    self.keep_unparsed(&data[used..], cfg);
                } else {
                    let mut buf = std::mem::take(&mut self.inbuf);
                    buf.extend_from_slice(data);
                    let used = self.http_input(now, cfg, &buf);
                    buf.drain(..used);
                    self.keep_unparsed(&buf, cfg);
                }
            }
            // Event-stream clients send nothing after the request; lingering and closed
            // connections discard input by design.
            State::Sse { .. } | State::Linger { .. } | State::Closed => {}
        }
    }

    /// The peer closed its sending side (a zero-length read) or the socket failed.
    pub fn handle_eof(&mut self, _now: Instant) {
        let reason = match &self.state {
            State::Closed => return,
            State::Linger { reason, .. }
            | State::Ws {
                phase: WsPhase::Closing(reason),
                ..
            } => *reason,
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
            State::Body { deadline, .. } if now >= *deadline => {
                self.finish(CloseReason::HandshakeTimeout)
            }
            State::Ws {
                deadline, phase, ..
            } if now >= *deadline => match phase {
                WsPhase::Open => {
                    *phase = WsPhase::PingSent;
                    *deadline = now + cfg.pong_timeout;
                    write_frame(&mut self.out, true, OpCode::Ping, b"");
                }
                WsPhase::PingSent => self.finish(CloseReason::PongTimeout),
                WsPhase::Closing(_) => self.finish(CloseReason::CloseTimeout),
            },
            State::Sse { next_heartbeat } if now >= *next_heartbeat => {
                *next_heartbeat = now + cfg.sse_heartbeat;
                sse::encode_comment(&mut self.out, HEARTBEAT);
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
            State::Head { deadline, .. }
            | State::Body { deadline, .. }
            | State::Linger { deadline, .. }
            | State::Ws { deadline, .. } => Some(*deadline),
            State::Sse { next_heartbeat } => Some(*next_heartbeat),
            State::Waiting { .. } | State::Closed => None,
        }
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front();
        if ev.is_none() && self.events.capacity() > 0 {
            // An idle connection keeps no event buffer: ~350 bytes each, which at a
            // million connections is most of the per-connection budget.
            self.events = VecDeque::new();
        }
        ev
    }

    /// Bytes this state machine wants sent, in order, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.out))
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
    pub fn can_send(&self) -> bool {
        matches!(
            self.state,
            State::Ws {
                phase: WsPhase::Open | WsPhase::PingSent,
                ..
            } | State::Sse { .. }
        )
    }

    /// Queues a WebSocket message (echo); returns false if the connection cannot send.
    /// Published messages bypass this: the driver queues one shared encoded frame to
    /// every subscriber after checking [`Connection::can_send`].
    pub fn send_message(&mut self, text: bool, payload: &[u8]) -> bool {
        if !self.can_send() || matches!(self.state, State::Sse { .. }) {
            return false;
        }
        write_frame(
            &mut self.out,
            true,
            if text { OpCode::Text } else { OpCode::Binary },
            payload,
        );
        true
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
            &mut self.out,
            status,
            headers,
            content_type,
            body,
            keep_alive,
            head_only,
        );
        self.next_request(now, cfg, keep_alive);
        if !self.inbuf.is_empty() && matches!(self.state, State::Head { .. }) {
            // Requests pipelined behind this one.
            let buf = std::mem::take(&mut self.inbuf);
            let used = self.http_input(now, cfg, &buf);
            self.keep_unparsed(&buf[used..], cfg);
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
                *phase = WsPhase::Closing(CloseReason::ServerClosed(code));
                *deadline = now + cfg.close_timeout;
                write_frame(
                    &mut self.out,
                    true,
                    OpCode::Close,
                    &close_payload(Some(code), reason),
                );
            }
            State::Ws { .. } | State::Closed => {}
            _ => self.finish(CloseReason::ServerClosed(code)),
        }
    }

    /// Refuses the connection at admission: `503` with `Retry-After`, then the usual
    /// linger so the response is not lost to a reset. Call right after [`Connection::new`].
    pub fn reject_overloaded(&mut self, now: Instant, cfg: &ConnConfig, retry_after_secs: u32) {
        http::write_service_unavailable(&mut self.out, retry_after_secs);
        self.linger(now, cfg, CloseReason::Overloaded);
    }

    fn finish(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.inbuf = Vec::new();
        self.events.push_back(Event::Closed(reason));
    }

    fn linger(&mut self, now: Instant, cfg: &ConnConfig, reason: CloseReason) {
        self.state = State::Linger {
            deadline: now + cfg.close_timeout,
            reason,
        };
        self.inbuf = Vec::new();
    }

    /// Keeps input that could not be used yet, bounded: more than a request head's worth
    /// queued behind a request that is still being served is refused.
    fn keep_unparsed(&mut self, rest: &[u8], cfg: &ConnConfig) {
        if !matches!(
            self.state,
            State::Head { .. } | State::Body { .. } | State::Waiting { .. }
        ) {
            return;
        }
        if self.inbuf.len() + rest.len() > cfg.limits.max_head_bytes {
            self.finish(CloseReason::Rejected(Reject::Http(HttpError::HeadTooLarge)));
            return;
        }
        self.inbuf.extend_from_slice(rest);
    }

    /// Advances the HTTP states over `buf`; returns how many bytes were used. Bytes
    /// after a WebSocket handshake go to the WebSocket at once.
    fn http_input(&mut self, now: Instant, cfg: &ConnConfig, buf: &[u8]) -> usize {
        let mut pos = 0;
        loop {
            match &mut self.state {
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
                    self.events.push_back(Event::Request { route, body });
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
    fn dispatch(&mut self, now: Instant, cfg: &ConnConfig, head: RequestHead) {
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
        match route {
            Route::Echo | Route::Ws { .. } => {
                match handshake::validate(&head, &cfg.allowed_origins) {
                    Ok(accept) => {
                        handshake::write_accept(&mut self.out, &accept);
                        self.state = State::Ws {
                            dec: Decoder::new(Role::Server),
                            deadline: now + cfg.ping_interval,
                            phase: WsPhase::Open,
                        };
                        let kind = match route {
                            Route::Ws { topic } => WsKind::Topic(topic),
                            _ => WsKind::Echo,
                        };
                        self.events.push_back(Event::WsOpen(kind));
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
                http::write_head(&mut self.out, Status::Ok, &headers);
                sse::encode_retry(
                    &mut self.out,
                    sse::jittered_retry_ms(cfg.sse_retry, u64::from(self.seed)),
                );
                self.state = State::Sse {
                    next_heartbeat: now + cfg.sse_heartbeat,
                };
                self.events.push_back(Event::SseOpen {
                    topics,
                    last_event_id,
                });
            }
            Route::Healthz => {
                http::write_response(
                    &mut self.out,
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
                if let Some(token) = &cfg.publish_token {
                    if !http::bearer_matches(&head, token) {
                        return self.reject(now, cfg, Reject::Http(HttpError::Unauthorized));
                    }
                }
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
                    route,
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
            Reject::Http(e) => http::write_error(&mut self.out, e),
            Reject::Handshake(e) => handshake::write_error(&mut self.out, e),
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
                    // code, stop reading frames.
                    write_frame(
                        &mut self.out,
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

    fn ws_message(&mut self, _now: Instant, _cfg: &ConnConfig, msg: Message) {
        let State::Ws { phase, .. } = &self.state else {
            return;
        };
        let closing = match phase {
            WsPhase::Closing(reason) => Some(*reason),
            _ => None,
        };
        match msg {
            // After our close frame, data is dropped (§5.5.1: the peer may still be
            // sending; we no longer process it) and pings are not answered.
            Message::Text(_) | Message::Binary(_) | Message::Ping(_) if closing.is_some() => {}
            Message::Text(payload) => self.events.push_back(Event::Message {
                text: true,
                payload,
            }),
            Message::Binary(payload) => self.events.push_back(Event::Message {
                text: false,
                payload,
            }),
            Message::Ping(payload) => write_frame(&mut self.out, true, OpCode::Pong, &payload),
            Message::Pong(_) => {}
            Message::Close(peer) => match closing {
                // The peer answered our close: the handshake is complete.
                Some(reason) => self.finish(reason),
                // §5.5.1: answer with a close frame, echoing the code; the server then
                // closes the TCP connection first (§7.1.1).
                None => {
                    let code = peer.as_ref().map(|(code, _)| *code);
                    write_frame(&mut self.out, true, OpCode::Close, &close_payload(code, ""));
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
    use crate::proto::message::tests::{session, xorshift};

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

    /// Everything a connection produced: events and transmitted bytes.
    #[derive(Debug, Default, PartialEq)]
    struct Output {
        events: Vec<Event>,
        sent: Vec<u8>,
    }

    fn drain(c: &mut Connection, o: &mut Output) {
        while let Some(e) = c.poll_event() {
            o.events.push(e);
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
            drain(&mut c, &mut o);
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
            server_frame(OpCode::Pong, b"p"),
            server_frame(OpCode::Close, b"\x03\xe8"),
        ]
        .concat();
        assert_eq!(
            &o.sent[head_len..],
            &frames[..],
            "pong, then the close echoing 1000"
        );
        assert_eq!(
            o.events,
            [
                Event::WsOpen(WsKind::Echo),
                Event::Message {
                    text: true,
                    payload: b"hi".to_vec()
                },
                Event::Closed(CloseReason::PeerClosed(Some(CloseCode::NORMAL))),
            ]
        );
        assert!(c.is_closed());
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
        assert!(c.send_message(false, b"\x00\x01"));
        assert_eq!(
            c.poll_transmit(),
            Some(server_frame(OpCode::Binary, b"\x00\x01"))
        );
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
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(feed(now, &cfg, &bytes).1, whole);
        let mut rng = 42u64;
        for _ in 0..100 {
            let mut pieces = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let n = ((xorshift(&mut rng) % 300) as usize + 1).min(rest.len());
                pieces.push(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(feed(now, &cfg, &pieces).1, whole);
        }
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
        assert_eq!(c.poll_transmit(), None, "not yet");
        let t1 = t0 + cfg.ping_interval;
        c.handle_timeout(t1, &cfg);
        assert_eq!(c.poll_transmit(), Some(server_frame(OpCode::Ping, b"")));
        assert_eq!(c.poll_timeout(), Some(t1 + cfg.pong_timeout));
        // Any frame answers: a pong 5 s later resets the clock.
        let t2 = t1 + Duration::from_secs(5);
        c.handle_bytes(t2, &cfg, &frame(true, OpCode::Pong, b""));
        assert_eq!(c.poll_timeout(), Some(t2 + cfg.ping_interval));
        c.handle_timeout(t1 + cfg.pong_timeout, &cfg);
        assert!(!c.is_closed(), "a live peer survives");
        // A silent peer: ping, then dropped after the pong timeout.
        let t3 = t2 + cfg.ping_interval;
        c.handle_timeout(t3, &cfg);
        assert_eq!(c.poll_transmit(), Some(server_frame(OpCode::Ping, b"")));
        c.handle_timeout(t3 + cfg.pong_timeout - Duration::from_millis(1), &cfg);
        assert!(!c.is_closed());
        c.handle_timeout(t3 + cfg.pong_timeout, &cfg);
        assert!(c.is_closed());
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
        assert!(!c.can_send() && !c.send_message(true, b"late"));
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
        drain(&mut c, &mut o);
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
                    event: Some("update".into())
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

    /// A connection is small: 1,000,000 of them must fit the 1 KiB-per-connection budget
    /// with room for the driver's own per-connection state.
    #[test]
    fn connection_is_small() {
        let size = std::mem::size_of::<Connection>();
        assert!(size <= 240, "Connection is {size} bytes");
    }
}
