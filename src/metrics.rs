//! Counters for `GET /metrics` (Prometheus text format 0.0.4).
//!
//! Each shard writes only its own [`ShardMetrics`] and any shard reads them all to
//! answer a scrape. One writer per counter means an update is a relaxed load and store
//! (a plain `mov` on x86), not a locked read-modify-write: no cost on the per-message
//! path beyond the add itself. A scrape may see one shard's counters a few updates
//! apart from another's, which Prometheus tolerates by design.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::proto::conn::{CloseReason, Reject};
use crate::pubsub::owner::OwnerStats;

/// A connection's transport, for the connection gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain HTTP (publish, poll, pages), or not yet upgraded.
    Http = 0,
    /// WebSocket.
    Ws = 1,
    /// Server-Sent Events.
    Sse = 2,
}

const TRANSPORTS: [&str; 3] = ["http", "ws", "sse"];

/// Why connections that got past their request ended (`ringpush_disconnects_total`).
const DISCONNECTS: [&str; 7] = [
    "done",
    "peer_eof",
    "peer_close",
    "server_close",
    "pong_timeout",
    "close_timeout",
    "protocol_error",
];

/// One shard's counters.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    connections: [AtomicI64; 3],
    accepted: AtomicU64,
    overloaded: AtomicU64,
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
    drops_slow: AtomicU64,
    deflate_messages: AtomicU64,
    deflate_bytes_in: AtomicU64,
    deflate_bytes_out: AtomicU64,
    input_paused: AtomicU64,
    replay_resumes: AtomicU64,
    replay_events: AtomicU64,
    replay_resets: AtomicU64,
    topics: AtomicI64,
    topics_expired: AtomicU64,
    history_bytes: AtomicU64,
    history_events: AtomicU64,
    evicted_events: AtomicU64,
    evicted_topics: AtomicU64,
    disconnects: [AtomicU64; DISCONNECTS.len()],
    /// Refused requests and handshakes by reason; touched only on failures.
    failures: Mutex<Vec<(&'static str, u64)>>,
}

fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl ShardMetrics {
    /// A connection was accepted (it counts as HTTP until it upgrades).
    pub fn accepted(&self) {
        add(&self.accepted, 1);
        self.gauge(Transport::Http, 1);
    }

    /// What this shard's topics hold and have let go (totals, from the owner).
    pub fn history(&self, s: &OwnerStats) {
        self.topics.store(s.topics as i64, Ordering::Relaxed);
        self.topics_expired.store(s.expired, Ordering::Relaxed);
        self.history_bytes.store(s.bytes as u64, Ordering::Relaxed);
        self.history_events
            .store(s.events as u64, Ordering::Relaxed);
        self.evicted_events
            .store(s.evicted_events, Ordering::Relaxed);
        self.evicted_topics
            .store(s.evicted_topics, Ordering::Relaxed);
    }

    /// A connection was refused at admission with 503.
    pub fn overloaded(&self) {
        add(&self.overloaded, 1);
    }

    /// A connection changed transport (upgrade) or ended (`to` = None).
    pub fn moved(&self, from: Transport, to: Option<Transport>) {
        self.gauge(from, -1);
        if let Some(t) = to {
            self.gauge(t, 1);
        }
    }

    fn gauge(&self, t: Transport, d: i64) {
        let g = &self.connections[t as usize];
        g.store(g.load(Ordering::Relaxed) + d, Ordering::Relaxed);
    }

    /// A message or publish body arrived from a client.
    pub fn message_in(&self, bytes: usize) {
        add(&self.messages_in, 1);
        add(&self.bytes_in, bytes as u64);
    }

    /// A message was queued to a subscriber.
    pub fn message_out(&self, bytes: usize) {
        add(&self.messages_out, 1);
        add(&self.bytes_out, bytes as u64);
    }

    /// A published message was compressed for this shard's permessage-deflate
    /// subscribers: `payload` bytes in, a frame of `frame` bytes out (`None`: it did not
    /// get shorter and goes out plain).
    pub fn deflated(&self, payload: usize, frame: Option<usize>) {
        add(&self.deflate_messages, 1);
        add(&self.deflate_bytes_in, payload as u64);
        add(&self.deflate_bytes_out, frame.unwrap_or(payload) as u64);
    }

    /// `n` messages of `bytes` in all arrived from clients (an echo batch).
    pub fn messages_in(&self, n: u64, bytes: u64) {
        add(&self.messages_in, n);
        add(&self.bytes_in, bytes);
    }

    /// `n` messages of `bytes` in all were queued to clients (an echo batch).
    pub fn messages_out(&self, n: u64, bytes: u64) {
        add(&self.messages_out, n);
        add(&self.bytes_out, bytes);
    }

    /// Reading from a connection stopped: its outbox was over its cap, or it had a
    /// request head's worth of pipelined input pending.
    pub fn input_paused(&self) {
        add(&self.input_paused, 1);
    }

    /// A connection was refused or cut for authorization after its handshake (`reason`
    /// joins `ringpush_handshake_failures_total`'s labels: `ws_publish_forbidden`,
    /// `token_expired_in_session`).
    pub fn auth_refused(&self, reason: &'static str) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match f.iter_mut().find(|(l, _)| *l == reason) {
            Some((_, n)) => *n += 1,
            None => f.push((reason, 1)),
        }
    }

    /// A slow consumer was cut off.
    pub fn drop_slow(&self) {
        add(&self.drops_slow, 1);
    }

    /// An event stream opened; `resume`: with a valid `Last-Event-ID`; `unknown`: with one
    /// that is not ours (it will get resets).
    pub fn sse_opened(&self, resume: bool, unknown: bool) {
        let _ = unknown;
        if resume {
            add(&self.replay_resumes, 1);
        }
    }

    /// `n` events replayed to a resuming stream.
    pub fn replay_hit(&self, n: u64) {
        add(&self.replay_events, n);
    }

    /// A stream's position was lost: `event: reset`.
    pub fn replay_reset(&self) {
        add(&self.replay_resets, 1);
    }

    /// A connection ended; refused requests are counted by reason.
    pub fn closed(&self, reason: &CloseReason) {
        let label = match reason {
            CloseReason::Rejected(Reject::Http(e)) => http_label(e),
            CloseReason::Rejected(Reject::Handshake(e)) => handshake_label(e),
            CloseReason::HandshakeTimeout => "timeout",
            CloseReason::BadProxyHeader(_) => "proxy_header",
            CloseReason::TlsFailed => "tls",
            CloseReason::Overloaded => return,
            other => {
                let i = match other {
                    CloseReason::PeerEof => 1,
                    CloseReason::PeerClosed(_) => 2,
                    CloseReason::ServerClosed(_) => 3,
                    CloseReason::PongTimeout => 4,
                    CloseReason::CloseTimeout => 5,
                    CloseReason::ProtocolError(_) => 6,
                    _ => 0,
                };
                return add(&self.disconnects[i], 1);
            }
        };
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match f.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => f.push((label, 1)),
        }
    }
}

fn http_label(e: &crate::proto::http::HttpError) -> &'static str {
    use crate::proto::http::HttpError as E;
    match e {
        E::Malformed => "malformed",
        E::VersionNotSupported => "version_not_supported",
        E::HeadTooLarge => "head_too_large",
        E::TooManyHeaders => "too_many_headers",
        E::BadTopic => "bad_topic",
        E::BadQuery => "bad_query",
        E::BadEventName => "bad_event_name",
        E::BadIdempotencyKey => "bad_idempotency_key",
        E::NotFound => "not_found",
        E::MethodNotAllowed { .. } => "method_not_allowed",
        E::LengthRequired => "length_required",
        E::PayloadTooLarge => "payload_too_large",
        E::Unauthorized => "unauthorized",
        E::ForbiddenOrigin => "forbidden_origin",
        E::TokenMissing => "token_missing",
        E::TokenInvalid => "token_invalid",
        E::TokenExpired => "token_expired",
        E::TopicForbidden => "topic_forbidden",
    }
}

fn handshake_label(e: &crate::proto::handshake::HandshakeError) -> &'static str {
    use crate::proto::handshake::HandshakeError as E;
    match e {
        E::NotGet => "ws_not_get",
        E::Http10 => "ws_http10",
        E::MissingUpgrade => "ws_missing_upgrade",
        E::MissingConnectionUpgrade => "ws_missing_connection_upgrade",
        E::MissingKey => "ws_missing_key",
        E::BadKey => "ws_bad_key",
        E::BadVersion => "ws_bad_version",
        E::ForbiddenOrigin => "forbidden_origin",
    }
}

/// The cluster link's counters (one writer: the link's thread).
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// This node's `--node-id`.
    pub node: String,
    up: AtomicU64,
    reconnects: AtomicU64,
    published: AtomicU64,
    refused: AtomicU64,
    topics: AtomicU64,
    received: AtomicU64,
}

impl ClusterMetrics {
    /// Counters for node `node`, link down.
    pub fn new(node: &str) -> ClusterMetrics {
        ClusterMetrics {
            node: node.to_string(),
            ..ClusterMetrics::default()
        }
    }

    /// The link to Redis is up (or down).
    pub fn link_up(&self, up: bool) {
        self.up.store(u64::from(up), Ordering::Relaxed);
    }

    /// The link connected again after losing Redis.
    pub fn reconnected(&self) {
        add(&self.reconnects, 1);
    }

    /// Publishes Redis numbered (`ok`) or that were refused.
    pub fn publishes(&self, ok: u64, refused: u64) {
        add(&self.published, ok);
        add(&self.refused, refused);
    }

    /// Topics subscribed in Redis.
    pub fn topics(&self, n: usize) {
        self.topics.store(n as u64, Ordering::Relaxed);
    }

    /// Events Redis announced on channels this node subscribes to.
    pub fn announced(&self, n: u64) {
        add(&self.received, n);
    }

    fn render(&self, s: &mut String) {
        let node = &self.node;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, kind, help, v) in [
            (
                "ringpush_cluster_link_up",
                "gauge",
                "1 while the link to Redis is up.",
                load(&self.up),
            ),
            (
                "ringpush_cluster_link_reconnects_total",
                "counter",
                "Times the link to Redis connected again after losing it.",
                load(&self.reconnects),
            ),
            (
                "ringpush_cluster_publishes_total",
                "counter",
                "Publishes from this node that Redis numbered and kept.",
                load(&self.published),
            ),
            (
                "ringpush_cluster_publishes_refused_total",
                "counter",
                "Publishes from this node refused because Redis could not order them (HTTP 503).",
                load(&self.refused),
            ),
            (
                "ringpush_cluster_topics",
                "gauge",
                "Topics this node subscribes to in Redis (it has subscribers of them).",
                load(&self.topics),
            ),
            (
                "ringpush_cluster_events_received_total",
                "counter",
                "Events Redis announced on the channels this node subscribes to (topics it has subscribers of).",
                load(&self.received),
            ),
        ] {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{node=\"{node}\"}} {v}"
            );
        }
    }
}

/// The Prometheus text for every shard's counters, and the cluster link's if any.
pub fn render(shards: &[ShardMetrics], cluster: Option<&ClusterMetrics>) -> String {
    let mut s = String::with_capacity(4096);
    if let Some(c) = cluster {
        c.render(&mut s);
    }
    let counter = |s: &mut String, name: &str, help: &str, get: &dyn Fn(&ShardMetrics) -> u64| {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
        for (i, m) in shards.iter().enumerate() {
            let _ = writeln!(s, "{name}{{shard=\"{i}\"}} {}", get(m));
        }
    };
    let _ = writeln!(
        s,
        "# HELP ringpush_connections Open connections by transport.\n# TYPE ringpush_connections gauge"
    );
    for (i, m) in shards.iter().enumerate() {
        for (t, name) in TRANSPORTS.iter().enumerate() {
            let v = m.connections[t].load(Ordering::Relaxed).max(0);
            let _ = writeln!(
                s,
                "ringpush_connections{{shard=\"{i}\",transport=\"{name}\"}} {v}"
            );
        }
    }
    let _ = writeln!(
        s,
        "# HELP ringpush_topics Topics owned (numbered and kept) by each shard.\n# TYPE ringpush_topics gauge"
    );
    for (i, m) in shards.iter().enumerate() {
        let v = m.topics.load(Ordering::Relaxed).max(0);
        let _ = writeln!(s, "ringpush_topics{{shard=\"{i}\"}} {v}");
    }
    let _ = writeln!(
        s,
        "# HELP ringpush_history_bytes Memory counted against --history-memory (topics and retained events).\n# TYPE ringpush_history_bytes gauge"
    );
    for (i, m) in shards.iter().enumerate() {
        let v = m.history_bytes.load(Ordering::Relaxed);
        let _ = writeln!(s, "ringpush_history_bytes{{shard=\"{i}\"}} {v}");
    }
    let _ = writeln!(
        s,
        "# HELP ringpush_history_events Events retained for replay.\n# TYPE ringpush_history_events gauge"
    );
    for (i, m) in shards.iter().enumerate() {
        let v = m.history_events.load(Ordering::Relaxed);
        let _ = writeln!(s, "ringpush_history_events{{shard=\"{i}\"}} {v}");
    }
    let _ = writeln!(
        s,
        "# HELP ringpush_history_evictions_total Events and topics evicted to keep --history-memory.\n# TYPE ringpush_history_evictions_total counter"
    );
    for (i, m) in shards.iter().enumerate() {
        for (kind, c) in [("event", &m.evicted_events), ("topic", &m.evicted_topics)] {
            let v = c.load(Ordering::Relaxed);
            let _ = writeln!(
                s,
                "ringpush_history_evictions_total{{shard=\"{i}\",kind=\"{kind}\"}} {v}"
            );
        }
    }
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    counter(
        &mut s,
        "ringpush_accepted_total",
        "Connections accepted.",
        &|m| load(&m.accepted),
    );
    counter(
        &mut s,
        "ringpush_overloaded_total",
        "Connections refused with 503 at admission.",
        &|m| load(&m.overloaded),
    );
    counter(
        &mut s,
        "ringpush_messages_in_total",
        "Messages published by clients (WebSocket and HTTP).",
        &|m| load(&m.messages_in),
    );
    counter(
        &mut s,
        "ringpush_bytes_in_total",
        "Payload bytes published by clients.",
        &|m| load(&m.bytes_in),
    );
    counter(
        &mut s,
        "ringpush_messages_out_total",
        "Messages queued to subscribers.",
        &|m| load(&m.messages_out),
    );
    counter(
        &mut s,
        "ringpush_bytes_out_total",
        "Payload bytes queued to subscribers.",
        &|m| load(&m.bytes_out),
    );
    counter(
        &mut s,
        "ringpush_deflate_messages_total",
        "Published messages compressed (permessage-deflate), once per shard and window size.",
        &|m| load(&m.deflate_messages),
    );
    counter(
        &mut s,
        "ringpush_deflate_in_bytes_total",
        "Payload bytes given to the permessage-deflate compressor.",
        &|m| load(&m.deflate_bytes_in),
    );
    counter(
        &mut s,
        "ringpush_deflate_out_bytes_total",
        "Frame bytes the compressor gave back (the payload's when it did not shrink).",
        &|m| load(&m.deflate_bytes_out),
    );
    counter(
        &mut s,
        "ringpush_slow_consumer_drops_total",
        "Connections cut off by the outbox cap.",
        &|m| load(&m.drops_slow),
    );
    counter(
        &mut s,
        "ringpush_input_paused_total",
        "Times reading from a connection stopped: outbox over --max-outbox-bytes, or a request head's worth of pipelined input pending.",
        &|m| load(&m.input_paused),
    );
    counter(
        &mut s,
        "ringpush_replay_resumes_total",
        "Event streams resumed with a valid Last-Event-ID.",
        &|m| load(&m.replay_resumes),
    );
    counter(
        &mut s,
        "ringpush_replay_events_total",
        "Events replayed to resumed streams.",
        &|m| load(&m.replay_events),
    );
    counter(
        &mut s,
        "ringpush_replay_resets_total",
        "Stream positions lost (event: reset sent).",
        &|m| load(&m.replay_resets),
    );
    counter(
        &mut s,
        "ringpush_topics_expired_total",
        "Topics forgotten after --history-ttl without subscribers or publishes.",
        &|m| load(&m.topics_expired),
    );
    let _ = writeln!(
        s,
        "# HELP ringpush_disconnects_total Connections ended after their request, by reason.\n# TYPE ringpush_disconnects_total counter"
    );
    for (i, m) in shards.iter().enumerate() {
        for (r, name) in DISCONNECTS.iter().enumerate() {
            let v = load(&m.disconnects[r]);
            let _ = writeln!(
                s,
                "ringpush_disconnects_total{{shard=\"{i}\",reason=\"{name}\"}} {v}"
            );
        }
    }
    let _ = writeln!(
        s,
        "# HELP ringpush_handshake_failures_total Requests and handshakes refused, by reason.\n# TYPE ringpush_handshake_failures_total counter"
    );
    for (i, m) in shards.iter().enumerate() {
        let f = m.failures.lock().unwrap_or_else(|e| e.into_inner());
        for (label, n) in f.iter() {
            let _ = writeln!(
                s,
                "ringpush_handshake_failures_total{{shard=\"{i}\",reason=\"{label}\"}} {n}"
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::HttpError;

    #[test]
    fn renders_every_family() {
        let shards = [ShardMetrics::default(), ShardMetrics::default()];
        shards[0].accepted();
        shards[0].moved(Transport::Http, Some(Transport::Ws));
        shards[1].accepted();
        shards[1].message_in(5);
        shards[1].message_out(5);
        shards[1].message_out(5);
        shards[1].closed(&CloseReason::Rejected(Reject::Http(HttpError::BadTopic)));
        shards[1].closed(&CloseReason::Rejected(Reject::Http(HttpError::BadTopic)));
        let text = render(&shards, None);
        for line in [
            "ringpush_connections{shard=\"0\",transport=\"ws\"} 1",
            "ringpush_connections{shard=\"0\",transport=\"http\"} 0",
            "ringpush_connections{shard=\"1\",transport=\"http\"} 1",
            "ringpush_messages_out_total{shard=\"1\"} 2",
            "ringpush_bytes_out_total{shard=\"1\"} 10",
            "ringpush_handshake_failures_total{shard=\"1\",reason=\"bad_topic\"} 2",
            "# TYPE ringpush_replay_resets_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
