//! The client side of a connection, sans-IO like [`conn`](super::conn): bytes in
//! ([`Client::handle_bytes`]), bytes to send and events out. No sockets, no clock. The
//! load generator (`crate::load`) drives one per connection.
//!
//! WebSocket: sends the RFC 6455 §4.1 opening handshake, checks the 101 and its
//! `Sec-WebSocket-Accept`, decodes the server's (unmasked) frames with the same
//! [`Decoder`] the server uses, answers pings and close frames, and masks what it sends.
//! With `deflate`, it offers permessage-deflate as browsers do
//! (`permessage-deflate; client_max_window_bits`) and, when the server agrees, inflates
//! compressed messages (it sends its own uncompressed, which RFC 7692 §6 allows).
//! SSE: sends `GET` with `Accept: text/event-stream` (and `Last-Event-ID` when resuming),
//! checks the 200 and content type, de-chunks the body if the server chunked it, and parses
//! events with the spec-exact [`EventParser`].

use super::close::{CloseCode, close_payload};
use super::frame::{OpCode, Role, write_masked_frame};
use super::handshake::accept_key;
use super::message::{Decoder, Message};
use super::rand::Rng;
use super::sse::{EventParser, ParsedEvent};

/// Largest response head we accept; a server sending more is broken.
const MAX_HEAD: usize = 16 * 1024;
/// Largest message we accept from the server (the server's own default limit).
const MAX_MESSAGE: usize = 1 << 20;

/// Which protocol the connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket.
    Ws,
    /// Server-Sent Events.
    Sse,
    /// Polling (`GET /poll/{topic}?since=..[&wait=..]`), one request after another on a
    /// keep-alive connection.
    Poll,
}

/// What happened on a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// The handshake completed (101 for WebSocket, 200 event stream for SSE).
    Open,
    /// A WebSocket text or binary message.
    Message {
        /// Text (true) or binary.
        text: bool,
        /// The payload.
        payload: Vec<u8>,
    },
    /// An SSE event.
    Event(ParsedEvent),
    /// A poll answer is complete (its events came before this); send the next request
    /// with [`Client::poll_again`], now (long polling) or after an interval.
    PollDone,
    /// The connection is over (the reason, for error counts); close the socket.
    Closed(CloseKind),
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseKind {
    /// The server answered the handshake with this status (503 when over capacity).
    Refused(u16),
    /// The response was not HTTP, or not what the handshake requires.
    BadHandshake(&'static str),
    /// A WebSocket close frame with this code (1001 on server shutdown).
    Closed(u16),
    /// The server broke the WebSocket protocol.
    Protocol(String),
    /// The stream ended without a close frame.
    Eof,
}

#[derive(Debug)]
enum State {
    /// Waiting for the response head; what arrived so far.
    Head(Vec<u8>),
    Ws,
    Sse(Body),
    /// A poll answer's body: bytes still expected, and those read.
    PollBody(usize, Vec<u8>),
    /// Between poll answers (the next request not sent yet).
    PollIdle,
    Done,
}

/// How an SSE body is framed.
#[derive(Debug)]
enum Body {
    /// Until the connection closes.
    Raw,
    /// `Transfer-Encoding: chunked`: bytes left in the current chunk, or reading a size line.
    Chunked { left: usize, line: Vec<u8> },
}

/// One client connection's protocol state.
#[derive(Debug)]
pub struct Client {
    transport: Transport,
    key: [u8; 24],
    state: State,
    decoder: Decoder,
    sse: Option<Box<EventParser>>,
    /// Masks and the handshake key.
    rng: Rng,
    /// Polling: the request path without `since`, the `Host` value, and the position.
    poll: Option<Box<PollState>>,
    /// permessage-deflate was offered.
    offer_deflate: bool,
}

#[derive(Debug)]
struct PollState {
    path: String,
    host: String,
    since: Option<String>,
    opened: bool,
}

impl Client {
    /// A connection to `path` on `host`; appends the request to `out`. `seed` feeds the
    /// handshake key and the masks. `last_event_id` resumes an SSE stream. `deflate`:
    /// a WebSocket offers permessage-deflate.
    pub fn new(
        transport: Transport,
        host: &str,
        path: &str,
        seed: u64,
        last_event_id: Option<&str>,
        deflate: bool,
        out: &mut Vec<u8>,
    ) -> Client {
        let mut c = Client {
            transport,
            key: [0; 24],
            state: State::Head(Vec::new()),
            decoder: Decoder::new(Role::Client),
            sse: None,
            rng: Rng::new(seed),
            poll: None,
            offer_deflate: deflate && transport == Transport::Ws,
        };
        if transport == Transport::Poll {
            c.poll = Some(Box::new(PollState {
                path: path.to_owned(),
                host: host.to_owned(),
                since: None,
                opened: false,
            }));
            c.poll_again(out);
            return c;
        }
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(host.as_bytes());
        match transport {
            Transport::Ws => {
                use base64::Engine as _;
                let raw = [
                    c.rng.next_u64().to_le_bytes(),
                    c.rng.next_u64().to_le_bytes(),
                ]
                .concat();
                let n = base64::engine::general_purpose::STANDARD
                    .encode_slice(&raw, &mut c.key)
                    .expect("16 bytes encode to 24");
                debug_assert_eq!(n, 24);
                out.extend_from_slice(
                    b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ",
                );
                out.extend_from_slice(&c.key);
                if c.offer_deflate {
                    out.extend_from_slice(
                        b"\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
                    );
                }
            }
            Transport::Poll => {}
            Transport::Sse => {
                out.extend_from_slice(b"\r\nAccept: text/event-stream");
                if let Some(id) = last_event_id {
                    out.extend_from_slice(b"\r\nLast-Event-ID: ");
                    out.extend_from_slice(id.as_bytes());
                }
            }
        }
        out.extend_from_slice(b"\r\n\r\n");
        c
    }

    /// Polling: appends the next request (from the last answer's `next`) to `out`.
    pub fn poll_again(&mut self, out: &mut Vec<u8>) {
        let Some(p) = &self.poll else { return };
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(p.path.as_bytes());
        if let Some(since) = &p.since {
            out.push(if p.path.contains('?') { b'&' } else { b'?' });
            out.extend_from_slice(b"since=");
            out.extend_from_slice(since.as_bytes());
        }
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(p.host.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        self.state = State::Head(Vec::new());
    }

    /// A fresh mask for one frame sent (RFC 6455 §5.3).
    fn mask(&mut self) -> [u8; 4] {
        (self.rng.next_u64() as u32).to_ne_bytes()
    }

    /// Whether the handshake has completed and the connection is not over.
    pub fn is_open(&self) -> bool {
        matches!(
            self.state,
            State::Ws | State::Sse(_) | State::PollBody(..) | State::PollIdle
        ) || self
            .poll
            .as_ref()
            .is_some_and(|p| p.opened && !matches!(self.state, State::Done))
    }

    /// Appends a masked WebSocket message to `out`.
    pub fn send_message(&mut self, text: bool, payload: &[u8], out: &mut Vec<u8>) {
        let mask = self.mask();
        let op = if text { OpCode::Text } else { OpCode::Binary };
        write_masked_frame(out, true, op, payload, mask);
    }

    /// Appends a WebSocket close frame with `code` to `out`.
    pub fn send_close(&mut self, code: u16, out: &mut Vec<u8>) {
        let mask = self.mask();
        let payload = close_payload(Some(CloseCode(code)), "");
        write_masked_frame(out, true, OpCode::Close, &payload, mask);
    }

    /// The end of the byte stream.
    pub fn handle_eof(&mut self, events: &mut Vec<ClientEvent>) {
        if !matches!(self.state, State::Done) {
            self.state = State::Done;
            events.push(ClientEvent::Closed(CloseKind::Eof));
        }
    }

    /// Feeds received bytes. Replies (pongs, close echoes) are appended to `out`, events
    /// to `events`. After a `Closed` event, further bytes are ignored.
    pub fn handle_bytes(
        &mut self,
        mut data: &[u8],
        out: &mut Vec<u8>,
        events: &mut Vec<ClientEvent>,
    ) {
        if let State::Head(buf) = &mut self.state {
            let before = buf.len();
            buf.extend_from_slice(data);
            let Some(end) = find_head_end(buf) else {
                if buf.len() > MAX_HEAD {
                    self.fail(CloseKind::BadHandshake("response head too large"), events);
                }
                return;
            };
            let head = std::mem::take(buf);
            // What follows the head in this read (frames or body bytes).
            data = &data[end - before..];
            match self.parse_head(&head[..end]) {
                Ok(next) => {
                    self.state = next;
                    if self.transport == Transport::Sse {
                        self.sse = Some(Box::default());
                    }
                    match &mut self.poll {
                        Some(p) if p.opened => {}
                        Some(p) => {
                            p.opened = true;
                            events.push(ClientEvent::Open);
                        }
                        None => events.push(ClientEvent::Open),
                    }
                }
                Err(kind) => return self.fail(kind, events),
            }
        }
        match self.state {
            State::Ws => self.ws_bytes(data, out, events),
            State::Sse(_) => self.sse_bytes(data, events),
            State::PollBody(..) => self.poll_bytes(data, events),
            State::Head(_) | State::PollIdle | State::Done => {}
        }
    }

    fn poll_bytes(&mut self, data: &[u8], events: &mut Vec<ClientEvent>) {
        let State::PollBody(need, body) = &mut self.state else {
            return;
        };
        let take = (*need).min(data.len());
        body.extend_from_slice(&data[..take]);
        *need -= take;
        if *need > 0 {
            return;
        }
        let body = std::mem::take(body);
        self.state = State::PollIdle;
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return self.fail(
                CloseKind::Protocol("poll answer is not JSON".into()),
                events,
            );
        };
        for ev in v["events"].as_array().map_or(&[][..], Vec::as_slice) {
            events.push(ClientEvent::Event(ParsedEvent {
                id: ev["id"].as_str().map(str::to_owned),
                event: ev["event"].as_str().unwrap_or("message").to_owned(),
                data: ev["data"].as_str().unwrap_or_default().to_owned(),
            }));
        }
        if let (Some(p), Some(next)) = (&mut self.poll, v["next"].as_str()) {
            p.since = Some(next.to_owned());
        }
        events.push(ClientEvent::PollDone);
    }

    fn fail(&mut self, kind: CloseKind, events: &mut Vec<ClientEvent>) {
        self.state = State::Done;
        events.push(ClientEvent::Closed(kind));
    }

    fn parse_head(&mut self, head: &[u8]) -> Result<State, CloseKind> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(CloseKind::BadHandshake("malformed response head")),
        }
        let code = resp.code.unwrap_or(0);
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        match self.transport {
            Transport::Poll => {
                if code != 200 {
                    return Err(CloseKind::Refused(code));
                }
                let len = header("content-length")
                    .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
                    .ok_or(CloseKind::BadHandshake(
                        "poll answer without Content-Length",
                    ))?;
                Ok(State::PollBody(len, Vec::with_capacity(len)))
            }
            Transport::Ws => {
                if code != 101 {
                    return Err(CloseKind::Refused(code));
                }
                let want = accept_key(&self.key);
                if header("sec-websocket-accept") != Some(&want[..]) {
                    return Err(CloseKind::BadHandshake("wrong Sec-WebSocket-Accept"));
                }
                // RFC 6455 §4.1: an extension we did not offer fails the connection.
                if let Some(ext) = header("sec-websocket-extensions") {
                    let agreed = std::str::from_utf8(ext)
                        .ok()
                        .filter(|v| v.trim_start().starts_with("permessage-deflate"));
                    if agreed.is_none() || !self.offer_deflate {
                        return Err(CloseKind::BadHandshake("an extension we did not offer"));
                    }
                    self.decoder.enable_deflate();
                }
                Ok(State::Ws)
            }
            Transport::Sse => {
                if code != 200 {
                    return Err(CloseKind::Refused(code));
                }
                let ct = header("content-type").unwrap_or_default();
                if !ct.to_ascii_lowercase().starts_with(b"text/event-stream") {
                    return Err(CloseKind::BadHandshake("not text/event-stream"));
                }
                let chunked =
                    header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
                Ok(State::Sse(if chunked {
                    Body::Chunked {
                        left: 0,
                        line: Vec::new(),
                    }
                } else {
                    Body::Raw
                }))
            }
        }
    }

    fn ws_bytes(&mut self, mut data: &[u8], out: &mut Vec<u8>, events: &mut Vec<ClientEvent>) {
        while !data.is_empty() {
            let (used, msg) = match self.decoder.decode(data, MAX_MESSAGE) {
                Ok(r) => r,
                Err(e) => return self.fail(CloseKind::Protocol(e.to_string()), events),
            };
            data = &data[used..];
            match msg {
                None => {}
                Some(Message::Text(payload)) => events.push(ClientEvent::Message {
                    text: true,
                    payload,
                }),
                Some(Message::Binary(payload)) => events.push(ClientEvent::Message {
                    text: false,
                    payload,
                }),
                Some(Message::Ping(p)) => {
                    let mask = self.mask();
                    write_masked_frame(out, true, OpCode::Pong, &p, mask);
                }
                Some(Message::Pong(_)) => {}
                Some(Message::Close(c)) => {
                    let code = c.as_ref().map_or(1005, |(code, _)| code.0);
                    // Echo the code (§5.5.1), then the server closes TCP.
                    let mask = self.mask();
                    let payload = match &c {
                        Some((code, _)) => close_payload(Some(*code), ""),
                        None => Vec::new(),
                    };
                    write_masked_frame(out, true, OpCode::Close, &payload, mask);
                    return self.fail(CloseKind::Closed(code), events);
                }
            }
        }
    }

    fn sse_bytes(&mut self, mut data: &[u8], events: &mut Vec<ClientEvent>) {
        let State::Sse(body) = &mut self.state else {
            return;
        };
        let parser = self.sse.as_mut().expect("SSE parser exists once open");
        match body {
            Body::Raw => parser.feed(data),
            Body::Chunked { left, line } => {
                while !data.is_empty() {
                    if *left > 0 {
                        let n = (*left).min(data.len());
                        parser.feed(&data[..n]);
                        *left -= n;
                        data = &data[n..];
                        continue;
                    }
                    // A size line "HEX[;ext]\r\n", or the CRLF that ends a chunk.
                    let Some(nl) = data.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(data);
                        break;
                    };
                    line.extend_from_slice(&data[..nl]);
                    data = &data[nl + 1..];
                    let text = std::str::from_utf8(line).unwrap_or("").trim();
                    if !text.is_empty() {
                        let hex = text.split(';').next().unwrap_or("");
                        match usize::from_str_radix(hex, 16) {
                            Ok(0) => {
                                line.clear();
                                break;
                            }
                            Ok(n) => *left = n,
                            Err(_) => {
                                self.state = State::Done;
                                events.push(ClientEvent::Closed(CloseKind::Protocol(
                                    "bad chunk size".into(),
                                )));
                                return;
                            }
                        }
                    }
                    line.clear();
                }
            }
        }
        while let Some(ev) = parser.next_event() {
            events.push(ClientEvent::Event(ev));
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::write_frame;

    fn ws_client() -> (Client, Vec<u8>) {
        let mut req = Vec::new();
        let c = Client::new(Transport::Ws, "h:1", "/echo", 42, None, false, &mut req);
        (c, req)
    }

    fn response_for(req: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(req);
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let accept = accept_key(key.as_bytes());
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            std::str::from_utf8(&accept).unwrap()
        )
        .into_bytes()
    }

    #[test]
    fn ws_handshake_then_frames_in_any_split() {
        let (_, req) = ws_client();
        assert!(req.starts_with(b"GET /echo HTTP/1.1\r\nHost: h:1\r\n"));
        let mut stream = response_for(&req);
        write_frame(&mut stream, true, OpCode::Text, b"hello");
        write_frame(&mut stream, true, OpCode::Ping, b"p");
        write_frame(&mut stream, true, OpCode::Binary, &[0u8; 300]);
        for split in [1, 2, 7, 64, stream.len()] {
            let (mut c, _) = ws_client();
            let (mut out, mut events) = (Vec::new(), Vec::new());
            for chunk in stream.chunks(split) {
                c.handle_bytes(chunk, &mut out, &mut events);
            }
            assert_eq!(events.len(), 3, "split {split}: {events:?}");
            assert_eq!(events[0], ClientEvent::Open);
            assert_eq!(
                events[1],
                ClientEvent::Message {
                    text: true,
                    payload: b"hello".to_vec()
                }
            );
            assert!(
                matches!(&events[2], ClientEvent::Message { text: false, payload } if payload.len() == 300)
            );
            // The pong: masked, opcode 0xA, payload "p".
            assert_eq!(out[0], 0x8A);
            assert_eq!(out[1], 0x80 | 1);
            assert_eq!(out[6] ^ out[2], b'p');
        }
    }

    #[test]
    fn ws_rejections() {
        let (mut c, _) = ws_client();
        let mut events = Vec::new();
        c.handle_bytes(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\r\n",
            &mut Vec::new(),
            &mut events,
        );
        assert_eq!(events, [ClientEvent::Closed(CloseKind::Refused(503))]);

        let (mut c, _) = ws_client();
        let mut events = Vec::new();
        c.handle_bytes(
            b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
            &mut Vec::new(),
            &mut events,
        );
        assert!(matches!(
            events[..],
            [ClientEvent::Closed(CloseKind::BadHandshake(_))]
        ));
    }

    #[test]
    fn ws_close_is_echoed() {
        let (mut c, req) = ws_client();
        let mut stream = response_for(&req);
        write_frame(&mut stream, true, OpCode::Close, &[0x03, 0xE9]);
        let (mut out, mut events) = (Vec::new(), Vec::new());
        c.handle_bytes(&stream, &mut out, &mut events);
        assert_eq!(events[1], ClientEvent::Closed(CloseKind::Closed(1001)));
        assert_eq!(out[0], 0x88);
        assert!(!c.is_open());
    }

    #[test]
    fn ws_unmasked_only() {
        let (mut c, req) = ws_client();
        let mut stream = response_for(&req);
        write_masked_frame(&mut stream, true, OpCode::Text, b"x", [1, 2, 3, 4]);
        let mut events = Vec::new();
        c.handle_bytes(&stream, &mut Vec::new(), &mut events);
        assert!(matches!(
            events[1],
            ClientEvent::Closed(CloseKind::Protocol(_))
        ));
    }

    #[test]
    fn sse_raw_and_chunked() {
        let body = b"retry: 3000\n\nid: e-1\ndata: a\n\nid: e-2\nevent: x\ndata: b\ndata: c\n\n";
        let raw = [
            &b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"[..],
            body,
        ]
        .concat();
        let mut chunked =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        for part in body.chunks(7) {
            chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            chunked.extend_from_slice(part);
            chunked.extend_from_slice(b"\r\n");
        }
        for stream in [raw, chunked] {
            for split in [1, 3, stream.len()] {
                let mut req = Vec::new();
                let mut c = Client::new(
                    Transport::Sse,
                    "h",
                    "/sse/t",
                    1,
                    Some("e-0"),
                    false,
                    &mut req,
                );
                assert!(String::from_utf8_lossy(&req).contains("Last-Event-ID: e-0\r\n"));
                let mut events = Vec::new();
                for chunk in stream.chunks(split) {
                    c.handle_bytes(chunk, &mut Vec::new(), &mut events);
                }
                assert_eq!(events.len(), 3, "{events:?}");
                let ClientEvent::Event(ev) = &events[2] else {
                    panic!()
                };
                assert_eq!(
                    (ev.id.as_deref(), ev.event.as_str(), ev.data.as_str()),
                    (Some("e-2"), "x", "b\nc")
                );
            }
        }
    }

    #[test]
    fn polls_follow_next() {
        let mut out = Vec::new();
        let mut c = Client::new(
            Transport::Poll,
            "h",
            "/poll/t?wait=5s",
            1,
            None,
            false,
            &mut out,
        );
        assert_eq!(out, b"GET /poll/t?wait=5s HTTP/1.1\r\nHost: h\r\n\r\n");
        let body = br#"{"events":[{"id":"e-1","event":"message","data":"x"}],"next":"e-1"}"#;
        let resp = [
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
            &body[..],
        ]
        .concat();
        let mut events = Vec::new();
        for chunk in resp.chunks(5) {
            c.handle_bytes(chunk, &mut Vec::new(), &mut events);
        }
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0], ClientEvent::Open);
        assert!(matches!(&events[1], ClientEvent::Event(e) if e.data == "x"));
        assert_eq!(events[2], ClientEvent::PollDone);
        let mut out = Vec::new();
        c.poll_again(&mut out);
        assert_eq!(
            out,
            b"GET /poll/t?wait=5s&since=e-1 HTTP/1.1\r\nHost: h\r\n\r\n"
        );
        // The second answer does not open again.
        let mut events = Vec::new();
        c.handle_bytes(&resp, &mut Vec::new(), &mut events);
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn sse_wrong_type() {
        let mut c = Client::new(
            Transport::Sse,
            "h",
            "/sse/t",
            1,
            None,
            false,
            &mut Vec::new(),
        );
        let mut events = Vec::new();
        c.handle_bytes(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",
            &mut Vec::new(),
            &mut events,
        );
        assert!(matches!(
            events[..],
            [ClientEvent::Closed(CloseKind::BadHandshake(_))]
        ));
    }
}
