//! The publisher of a broadcast over many topics: `POST /publish/{topic}` requests on
//! one keep-alive HTTP/1.1 connection, pipelined, sans-IO like
//! [`Client`](crate::proto::client::Client): requests out, bytes in, answers counted.
//!
//! Why HTTP and not a WebSocket: a WebSocket on `/ws/{topic}` publishes to its own topic
//! only, so 10,000 topics would need 10,000 publisher connections; one HTTP connection
//! publishes to any topic, its requests pipelined (the load generator bounds
//! [`Publisher::in_flight`] per connection). The server answers them one at a time,
//! so a few hundred connections carry tens of thousands of publishes per second (see
//! `worker::HTTP_PUBLISHERS`).
//!
//! HTTP has no handshake: the connection counts as open once TCP (and TLS) is up; an
//! answer that is not HTTP ends it.
#![forbid(unsafe_code)]

use crate::proto::client::{ClientEvent, CloseKind};

/// Largest answer head we accept; a server sending more is broken.
const MAX_HEAD: usize = 16 * 1024;
/// Largest answer body (a publish answers `{"id":"..."}`).
const MAX_BODY: usize = 64 * 1024;

/// One publishing connection's protocol state.
#[derive(Debug)]
pub struct Publisher {
    host: String,
    /// Received bytes not yet parsed into a whole answer.
    buf: Vec<u8>,
    /// Requests sent and not answered: what is lost if the connection ends now.
    in_flight: u32,
    /// The stream ended or broke the protocol: bytes are ignored.
    done: bool,
    /// Publishes answered 2xx since the last [`Publisher::take_answers`].
    ok: u64,
    /// The statuses of publishes answered otherwise.
    failed: Vec<u16>,
}

impl Publisher {
    /// A connection to `host` (the `Host` value of its requests).
    pub fn new(host: &str) -> Publisher {
        Publisher {
            host: host.to_owned(),
            buf: Vec::new(),
            in_flight: 0,
            done: false,
            ok: 0,
            failed: Vec::new(),
        }
    }

    /// Requests sent and not answered yet.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Appends `POST /publish/{topic}` with `payload` as its body to `out`.
    pub fn publish(&mut self, topic: &str, payload: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(b"POST /publish/");
        out.extend_from_slice(topic.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(self.host.as_bytes());
        out.extend_from_slice(b"\r\nContent-Length: ");
        out.extend_from_slice(payload.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(payload);
        self.in_flight += 1;
    }

    /// Publishes answered since the last call: how many with 2xx, and the other
    /// statuses.
    pub fn take_answers(&mut self) -> (u64, Vec<u16>) {
        (
            std::mem::take(&mut self.ok),
            std::mem::take(&mut self.failed),
        )
    }

    /// The end of the byte stream.
    pub fn handle_eof(&mut self, events: &mut Vec<ClientEvent>) {
        if !self.done {
            self.done = true;
            events.push(ClientEvent::Closed(CloseKind::Eof));
        }
    }

    /// Feeds received bytes: each whole answer is counted; an answer that is not HTTP
    /// ends the connection ([`ClientEvent::Closed`]).
    pub fn handle_bytes(&mut self, data: &[u8], events: &mut Vec<ClientEvent>) {
        if self.done {
            return;
        }
        self.buf.extend_from_slice(data);
        let mut at = 0;
        while let Some(answer) = answer(&self.buf[at..]) {
            match answer {
                Ok((used, status)) => {
                    at += used;
                    self.in_flight = self.in_flight.saturating_sub(1);
                    if (200..300).contains(&status) {
                        self.ok += 1;
                    } else {
                        self.failed.push(status);
                    }
                }
                Err(kind) => {
                    self.done = true;
                    self.buf = Vec::new();
                    events.push(ClientEvent::Closed(kind));
                    return;
                }
            }
        }
        self.buf.drain(..at);
    }
}

/// The answer at the start of `data`: its length and status, `None` while it is
/// incomplete.
fn answer(data: &[u8]) -> Option<Result<(usize, u16), CloseKind>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if data.len() <= MAX_HEAD => return None,
        Ok(httparse::Status::Partial) => {
            return Some(Err(CloseKind::BadHandshake("answer head too large")));
        }
        Err(_) => return Some(Err(CloseKind::BadHandshake("malformed answer head"))),
    };
    let length = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let Some(length) = length.filter(|n| *n <= MAX_BODY) else {
        return Some(Err(CloseKind::BadHandshake(
            "answer without a usable Content-Length",
        )));
    };
    let status = resp.code.unwrap_or(0);
    (data.len() >= head + length).then_some(Ok((head + length, status)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn requests() {
        let mut out = Vec::new();
        let mut p = Publisher::new("127.0.0.1:9");
        p.publish("room-7", b"hello", &mut out);
        assert_eq!(
            out,
            b"POST /publish/room-7 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nContent-Length: 5\r\n\r\nhello"
        );
        assert_eq!(p.in_flight(), 1);
    }

    /// Two 200s around a 503 and another 200, fed whole, then one byte at a time and at
    /// every split point: the same count each way.
    #[test]
    fn answers_in_any_chunking() {
        let stream = [
            answer("200 OK", r#"{"id":"1a2b3c4d-1"}"#),
            answer("503 Service Unavailable", "busy\n"),
            answer("200 OK", r#"{"id":"1a2b3c4d-2"}"#),
        ]
        .concat();
        let feed = |chunks: &[&[u8]]| {
            let mut out = Vec::new();
            let mut p = Publisher::new("h");
            for _ in 0..4 {
                p.publish("t", b"x", &mut out);
            }
            let mut events = Vec::new();
            for c in chunks {
                p.handle_bytes(c, &mut events);
            }
            (events, p.take_answers(), p.in_flight())
        };
        let whole = feed(&[&stream]);
        assert_eq!(whole, (vec![], (2, vec![503]), 1));
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(feed(&bytes), whole);
        for split in 0..=stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(feed(&[a, b]), whole, "split at {split}");
        }
    }

    #[test]
    fn garbage_and_eof_end_it() {
        let ok = answer("200 OK", "{}");
        let mut p = Publisher::new("h");
        let mut events = Vec::new();
        p.handle_bytes(b"SSH-2.0-OpenSSH\r\n\r\n", &mut events);
        assert!(matches!(events[..], [ClientEvent::Closed(_)]), "{events:?}");
        p.handle_bytes(&ok, &mut events);
        assert_eq!(events.len(), 1, "nothing after the end");
        let mut p = Publisher::new("h");
        let mut events = Vec::new();
        p.handle_bytes(b"HTTP/1.1 200 OK\r\n\r\n", &mut events);
        assert!(matches!(events[..], [ClientEvent::Closed(_)]), "no length");
        let mut p = Publisher::new("h");
        let mut events = Vec::new();
        p.handle_bytes(&ok[..10], &mut events);
        p.handle_eof(&mut events);
        p.handle_eof(&mut events);
        assert_eq!(events, vec![ClientEvent::Closed(CloseKind::Eof)]);
    }
}
