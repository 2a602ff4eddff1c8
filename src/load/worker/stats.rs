//! One worker's measurements, merged over all workers by the coordinator.

use std::collections::HashMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::load::sequence::{End, Tally};
use crate::load::topics::TopicTally;

/// One worker's measurements.
#[derive(Debug)]
pub struct Stats {
    /// Socket creation to handshake completion, microseconds.
    pub handshake_us: Histogram<u64>,
    /// Of the handshakes, the TLS ones that resumed a session (`--tls-resume`).
    pub tls_resumed: u64,
    /// Echo round trip, or publish-to-delivery for broadcast, microseconds.
    pub latency_us: Histogram<u64>,
    /// Messages sent during the run phase.
    pub sent: u64,
    /// Messages received during the run phase.
    pub received: u64,
    /// Payload bytes received during the run phase.
    pub received_bytes: u64,
    /// Bytes read from sockets during the run phase (headers, framing, payloads: what
    /// polling costs on the wire compared with a stream).
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
    /// Broadcast: every subscriber's messages against its topic.
    pub topics: TopicTally,
    /// Broadcast: publish-to-delivery latency per publish-rate step, microseconds.
    pub step_latency_us: Vec<Histogram<u64>>,
    /// HTTP publishes answered 2xx.
    pub publish_ok: u64,
    /// Event streams: where each subscriber stood at the end, with its topic.
    pub sse_ends: Vec<(u32, End)>,
    /// Successful handshakes after the first one of a connection.
    pub reconnects: u64,
    /// Of those, the ones on each target (indexed like `Plan::targets`).
    pub reconnects_on: Vec<u64>,
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
    /// An empty set for a run over `targets` targets and `steps` publish-rate steps, to
    /// record into or merge into.
    pub fn new(targets: usize, steps: usize) -> Stats {
        Stats {
            handshake_us: histogram(),
            tls_resumed: 0,
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
            topics: TopicTally::default(),
            step_latency_us: (0..steps).map(|_| histogram()).collect(),
            publish_ok: 0,
            sse_ends: Vec::new(),
            reconnects: 0,
            reconnects_on: vec![0; targets],
            retry_times: Vec::new(),
            reconnect_times: Vec::new(),
            disconnect_times: Vec::new(),
        }
    }

    /// Adds another worker's numbers to these.
    pub fn merge(&mut self, other: Stats) {
        let _ = self.handshake_us.add(&other.handshake_us);
        self.tls_resumed += other.tls_resumed;
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
        self.topics.merge(&other.topics);
        for (a, b) in self.step_latency_us.iter_mut().zip(&other.step_latency_us) {
            let _ = a.add(b);
        }
        self.publish_ok += other.publish_ok;
        self.sse_ends.extend(other.sse_ends);
        self.reconnects += other.reconnects;
        if self.reconnects_on.len() < other.reconnects_on.len() {
            self.reconnects_on.resize(other.reconnects_on.len(), 0);
        }
        for (a, b) in self.reconnects_on.iter_mut().zip(other.reconnects_on) {
            *a += b;
        }
        self.retry_times.extend(other.retry_times);
        self.reconnect_times.extend(other.reconnect_times);
        self.disconnect_times.extend(other.disconnect_times);
    }
}
