//! What a run measured ([`Report`]) and its two renderings: the human-readable table
//! and the JSON object (`--json`; tests/load.rs and tests/cli.rs read its field names).

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::sequence::{Ends, Tally};
use super::topics::TopicTally;
use super::worker::{Scenario, Stats};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

impl Percentiles {
    pub(super) fn of(h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Reconnect timing after a server restart or the load generator's own cut (`storm`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Storm {
    /// Connections the load generator cut itself (`--cut-after`).
    pub cut: u64,
    /// Of those, back open before the run ended.
    pub cut_reconnected: u64,
    /// The cut to the last of its sockets closed, in milliseconds: the load generator's
    /// own share of the storm.
    pub cut_closed_ms: Option<u64>,
    /// Connections dropped by the server or the network (not by the cut).
    pub disconnected: u64,
    /// Successful reconnects, whatever ended the connection before.
    pub reconnected: u64,
    /// Connection attempts after the cut (or the first disconnect without one), per
    /// 100 ms bucket since it.
    pub attempts_per_100ms: Vec<u64>,
    /// The busiest bucket, as attempts per second.
    pub peak_attempts_per_sec: u64,
    /// The cut (or the first disconnect) to the last successful reconnect, in
    /// milliseconds.
    pub all_back_ms: Option<u64>,
    /// Socket creation to handshake completion, reconnects only: the server's
    /// handshake latency during the storm.
    pub handshake_us: Percentiles,
}

/// Event streams: did every subscriber get every event exactly once, across its
/// reconnects (`Last-Event-ID`)? See [`sequence`](super::sequence).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Exactness {
    /// What the checks counted over all subscribers.
    #[serde(flatten)]
    pub tally: Tally,
    /// Where the subscribers stood at the end.
    #[serde(flatten)]
    pub ends: Ends,
}

/// One publish-rate step of a broadcast (`--publish-rate A,B,C`; one rate or none is
/// one step): `--duration` of publishing at its rate, then a drain.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Step {
    /// The rate asked for, publishes per second (`None`: as fast as the window allows).
    pub publish_rate: Option<f64>,
    /// Publishing time, seconds.
    pub secs: f64,
    /// The drain after it (publishing paused until what was in flight arrived, at most
    /// 60 s or 1 s without progress), seconds.
    pub drain_secs: f64,
    /// Publishes sent during the step.
    pub published: u64,
    /// Publishes per second achieved.
    pub published_per_sec: f64,
    /// Deliveries during the step and its drain.
    pub delivered: u64,
    /// Deliveries per second, over the step and its drain.
    pub received_per_sec: f64,
    /// Publish-to-delivery latency of the step's deliveries.
    pub latency_us: Percentiles,
    /// Deliveries the step's publishes should have made (each to every subscriber of
    /// its topic) that had not arrived at the end of its drain.
    pub missing: u64,
    /// The server's CPU time over the step and its drain, seconds (one URL only).
    pub server_cpu_secs: Option<f64>,
    /// The load generator's own CPU time over the step and its drain, seconds.
    pub load_cpu_secs: Option<f64>,
}

/// One `--url`'s share of the connections. Summed over the URLs, `connected` and
/// `open_at_end` are the run's (the publisher counts on the first URL, where it starts).
#[derive(Debug, Clone, serde::Serialize)]
pub struct UrlCounts {
    /// The URL.
    pub url: String,
    /// Connections open on it when the connect phase ended.
    pub connected: u64,
    /// Reconnects that landed on it: connections open before (on any URL) that came
    /// back here after a disconnect or a cut.
    pub reconnected: u64,
    /// Connections open on it at the end of the run.
    pub open_at_end: u64,
    /// The server's PID, if it runs on this host and was found by its listening port.
    pub server_pid: Option<u32>,
    /// That server's resident memory growth per connection open on it at the end, in
    /// bytes.
    pub server_rss_per_conn: Option<f64>,
}

/// Everything a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// The target URL (the first, with several).
    pub url: String,
    /// Every target URL with the connections it got, in `--url` order.
    pub urls: Vec<UrlCounts>,
    /// Connections asked for.
    pub connections: usize,
    /// A publisher connection ran besides them (broadcast; a storm with a publish rate).
    pub publisher: bool,
    /// Publisher connections: one WebSocket, or over several topics the HTTP ones.
    pub publishers: usize,
    /// Topics the broadcast's subscribers spread over (`--topics`).
    pub topics: u64,
    /// Worker threads.
    pub threads: usize,
    /// Source addresses used.
    pub source_addrs: usize,
    /// Connections open when the connect phase ended.
    pub connected: u64,
    /// Length of the connect phase, in seconds.
    pub connect_secs: f64,
    /// Socket creation to handshake completion.
    pub handshake_us: Percentiles,
    /// The server process's CPU time during the connect phase per connection opened,
    /// microseconds (one URL only): what a handshake (TCP, TLS, HTTP upgrade) costs it.
    pub server_cpu_us_per_handshake: Option<f64>,
    /// TLS handshakes that resumed a session (`--tls-resume`), reconnects included.
    pub tls_resumed: u64,
    /// Failed attempts and disconnects, by reason.
    pub errors: Vec<(String, u64)>,
    /// Length of the run phase, in seconds.
    pub run_secs: f64,
    /// Messages sent during the run.
    pub sent: u64,
    /// Messages received during the run.
    pub received: u64,
    /// Received messages per second.
    pub received_per_sec: f64,
    /// Received payload, MiB per second.
    pub received_mib_per_sec: f64,
    /// Socket bytes (both directions, all framing) per received message, run phase.
    pub wire_bytes_per_message: f64,
    /// The server process's CPU time (user + system) during the run phase, seconds
    /// (one URL only).
    pub server_cpu_secs: Option<f64>,
    /// Server CPU per received message, microseconds.
    pub server_cpu_us_per_message: Option<f64>,
    /// Echo round trip, or publish-to-delivery for broadcast.
    pub latency_us: Percentiles,
    /// Broadcast: messages published, and deliveries expected (published x subscribers).
    pub published: u64,
    /// Broadcast: deliveries expected (every publish to every subscriber of its topic).
    pub expected_deliveries: u64,
    /// Broadcast over several topics: HTTP publishes the server answered with 2xx (the
    /// others are among the errors).
    pub publish_answered: Option<u64>,
    /// Broadcast (payloads of 30 bytes or more): each subscriber's messages checked
    /// against its topic.
    pub topic_check: Option<TopicTally>,
    /// Broadcast: one entry per publish-rate step.
    pub steps: Vec<Step>,
    /// The server's PID, if it runs on this host and was found by its listening port
    /// (one URL only; with several, each URL's is in `urls`).
    pub server_pid: Option<u32>,
    /// Server resident memory growth per open connection, in bytes (one URL only).
    pub server_rss_per_conn: Option<f64>,
    /// Kernel slab growth per open connection (both ends when the server is local).
    pub kernel_slab_per_conn: Option<f64>,
    /// Connections still open at the end of the run.
    pub open_at_end: u64,
    /// Reconnect timing (storm, or any run with disconnects).
    pub storm: Option<Storm>,
    /// Event streams (an `http://.../sse/...` URL): the exactness of every subscriber's
    /// sequence of events over its whole life.
    pub sse: Option<Exactness>,
    /// `--leave close`: from the close frames to the last connection closed by the
    /// server, in seconds.
    pub leave_secs: Option<f64>,
    /// `--leave close`: connections the server had not closed after 30 s.
    pub leave_left: Option<u64>,
}

pub(super) fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Idle => "idle",
        Scenario::Echo => "echo",
        Scenario::Broadcast => "broadcast",
        Scenario::Storm => "storm",
    }
}

pub(super) fn storm_report(stats: &Stats) -> Option<Storm> {
    // From the cut if there was one: a stray disconnect before it is not the storm.
    let first = stats
        .cut_at
        .or_else(|| stats.disconnect_times.iter().min().copied())?;
    let bucket = Duration::from_millis(100);
    let mut buckets: Vec<u64> = Vec::new();
    for t in &stats.retry_times {
        if *t < first {
            continue;
        }
        let i = ((*t - first).as_nanos() / bucket.as_nanos()) as usize;
        if buckets.len() <= i {
            buckets.resize(i + 1, 0);
        }
        buckets[i] += 1;
    }
    let last_back = stats.reconnect_times.iter().filter(|t| **t >= first).max();
    Some(Storm {
        cut: stats.cuts,
        cut_reconnected: stats.cut_back,
        cut_closed_ms: stats
            .cut_at
            .zip(stats.cut_closed_at)
            .map(|(a, b)| b.saturating_sub(a).as_millis() as u64),
        disconnected: stats.disconnects,
        reconnected: stats.reconnects,
        peak_attempts_per_sec: buckets.iter().max().copied().unwrap_or(0) * 10,
        attempts_per_100ms: buckets,
        all_back_ms: last_back.map(|t| (*t - first).as_millis() as u64),
        handshake_us: Percentiles::of(&stats.reconnect_handshake_us),
    })
}

impl Report {
    /// The human-readable table.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let p = |p: &Percentiles| {
            format!(
                "p50 {}  p99 {}  p99.9 {}  max {}  (n={})",
                us(p.p50),
                us(p.p99),
                us(p.p999),
                us(p.max),
                p.count
            )
        };
        if self.urls.len() > 1 {
            let _ = writeln!(
                s,
                "ringpush load: {} against {} URLs (below)",
                self.scenario,
                self.urls.len()
            );
        } else {
            let _ = writeln!(s, "ringpush load: {} against {}", self.scenario, self.url);
        }
        let _ = writeln!(
            s,
            "  workers {}, source addresses {}",
            self.threads, self.source_addrs
        );
        let _ = writeln!(
            s,
            "  connected       {} of {} in {:.2}s ({:.0}/s)",
            self.connected,
            self.connections + self.publishers,
            self.connect_secs,
            self.connected as f64 / self.connect_secs.max(1e-9)
        );
        let _ = write!(s, "  handshake       {}", p(&self.handshake_us));
        if let Some(us) = self.server_cpu_us_per_handshake {
            let _ = write!(s, "; server CPU {us:.0} us each");
        }
        if self.tls_resumed > 0 {
            let _ = write!(s, "; {} TLS sessions resumed", self.tls_resumed);
        }
        s.push('\n');
        if self.scenario == "echo" || self.scenario == "broadcast" {
            let _ = writeln!(
                s,
                "  run             {:.2}s: {} sent, {} received, {:.0} msg/s, {:.1} MiB/s",
                self.run_secs,
                self.sent,
                self.received,
                self.received_per_sec,
                self.received_mib_per_sec
            );
            let what = if self.scenario == "echo" {
                "round trip"
            } else {
                "delivery"
            };
            let _ = writeln!(s, "  {what:<15} {}", p(&self.latency_us));
        }
        if self.received > 0 {
            let _ = write!(
                s,
                "  cost            {:.0} wire bytes per message",
                self.wire_bytes_per_message
            );
            if let (Some(cpu), Some(per)) = (self.server_cpu_secs, self.server_cpu_us_per_message) {
                let _ = write!(s, "; server CPU {cpu:.2}s, {per:.2} us per message");
            }
            s.push('\n');
        }
        if self.scenario == "broadcast" && self.topics > 1 {
            let _ = writeln!(
                s,
                "  broadcast       {} published over {} topics to {} subscribers = {} expected, {} delivered ({:.2}%)",
                self.published,
                self.topics,
                self.connections,
                self.expected_deliveries,
                self.received,
                100.0 * self.received as f64 / self.expected_deliveries.max(1) as f64
            );
        } else if self.scenario == "broadcast" {
            let _ = writeln!(
                s,
                "  broadcast       {} published x {} subscribers = {} expected, {} delivered ({:.2}%)",
                self.published,
                self.connections,
                self.expected_deliveries,
                self.received,
                100.0 * self.received as f64 / self.expected_deliveries.max(1) as f64
            );
        }
        if let Some(t) = &self.topic_check {
            let _ = writeln!(
                s,
                "  per subscriber  {} of {} exact (every message of its topic, once, in order); {} short, {} over, {} of another topic, {} gaps, {} out of order",
                t.exact, t.subscribers, t.short, t.over, t.wrong_topic, t.gaps, t.out_of_order
            );
        }
        if self.steps.len() > 1 {
            s.push_str(&steps_table(&self.steps));
        }
        if let Some(pid) = self.server_pid {
            let _ = write!(s, "  server pid {pid}");
            if let Some(b) = self.server_rss_per_conn {
                let _ = write!(s, ": RSS +{b:.0} B per connection");
            }
            if let Some(b) = self.kernel_slab_per_conn {
                let _ = write!(s, "; kernel slab +{b:.0} B per connection (both ends)");
            }
            s.push('\n');
        }
        let _ = writeln!(s, "  open at end     {}", self.open_at_end);
        for u in &self.urls {
            let _ = write!(
                s,
                "  url             {}: {} connected, {} reconnected here, {} open at end",
                u.url, u.connected, u.reconnected, u.open_at_end
            );
            if let (Some(pid), true) = (u.server_pid, self.urls.len() > 1) {
                let _ = write!(s, "; server pid {pid}");
                if let Some(b) = u.server_rss_per_conn {
                    let _ = write!(s, ", RSS +{b:.0} B per connection");
                }
            }
            s.push('\n');
        }
        if let (Some(secs), Some(left)) = (self.leave_secs, self.leave_left) {
            let _ = writeln!(
                s,
                "  leave           all closed by the server in {secs:.2} s ({left} still open)"
            );
        }
        if self.scenario == "storm" && self.publisher {
            let _ = writeln!(
                s,
                "  published       {} messages through the storm",
                self.published
            );
        }
        if let Some(st) = &self.storm {
            if st.cut > 0 {
                let _ = writeln!(
                    s,
                    "  cut             {} connections cut at once (all closed within {} ms), {} back",
                    st.cut,
                    st.cut_closed_ms.unwrap_or(0),
                    st.cut_reconnected
                );
            }
            let _ = writeln!(
                s,
                "  reconnects      {} dropped by the server, {} back{}; peak {} attempts/s (100 ms buckets)",
                st.disconnected,
                st.reconnected,
                st.all_back_ms
                    .map_or_else(String::new, |ms| format!(", all within {ms} ms")),
                st.peak_attempts_per_sec
            );
            let _ = writeln!(s, "  handshake again {}", p(&st.handshake_us));
            let since = if st.cut > 0 {
                "the cut"
            } else {
                "the first disconnect"
            };
            s.push_str(&spread_chart(&st.attempts_per_100ms, since));
        }
        if let Some(x) = &self.sse {
            let (t, e) = (&x.tally, &x.ends);
            let _ = writeln!(
                s,
                "  sse resume      {} events to {} streams: {} gaps ({} events missed), {} duplicates, {} resets, {} epoch changes{}",
                t.events,
                e.clients,
                t.gaps,
                t.missed,
                t.duplicates,
                t.resets,
                t.epoch_changes,
                if t.unparsed > 0 {
                    format!(", {} ids not EPOCH-SEQ (unchecked)", t.unparsed)
                } else {
                    String::new()
                }
            );
            let _ = writeln!(
                s,
                "                  {} of {} exact up to the last event{}; {} behind, {} without events",
                e.exact,
                e.clients,
                e.last_seq
                    .map_or_else(String::new, |q| format!(" (sequence number {q})")),
                e.behind,
                e.silent
            );
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "  errors:");
            for (k, v) in self.errors.iter().take(8) {
                let _ = writeln!(s, "    {v:>10}  {k}");
            }
        }
        s
    }

    /// The report as one JSON object.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data serialises")
    }
}

/// Reconnect attempts over time after the cut or first disconnect (`since`), as text
/// bars: the herd without jitter is one tall bar, the jittered schedule a low, wide
/// block. Buckets are merged in pairs until at most 40 rows remain.
fn spread_chart(buckets: &[u64], since: &str) -> String {
    let mut rows: Vec<u64> = buckets.to_vec();
    let mut width_ms = 100;
    while rows.len() > 40 {
        rows = rows.chunks(2).map(|c| c.iter().sum()).collect();
        width_ms *= 2;
    }
    let peak = rows.iter().copied().max().unwrap_or(0).max(1);
    let mut s = format!("  reconnect attempts per {width_ms} ms after {since}:\n");
    for (i, n) in rows.iter().enumerate() {
        let bar = "#".repeat(((n * 50).div_ceil(peak)) as usize);
        let _ = writeln!(
            s,
            "    {:>6.1}s {n:>8} {bar}",
            (i * width_ms) as f64 / 1000.0
        );
    }
    s
}

/// The steps of a stepped run, one line each.
fn steps_table(steps: &[Step]) -> String {
    let mut s = String::from(
        "  steps           rate/s  published/s  deliveries/s       p50       p99       max  missing  server CPU  load CPU\n",
    );
    let share = |cpu: Option<f64>, st: &Step| {
        cpu.map_or_else(
            || "-".into(),
            |c| format!("{:.0}%", 100.0 * c / (st.secs + st.drain_secs).max(1e-9)),
        )
    };
    for st in steps {
        let rate = st
            .publish_rate
            .map_or_else(|| "max".into(), |r| format!("{r:.0}"));
        let _ = writeln!(
            s,
            "                {rate:>8} {:>12.0} {:>13.0} {:>9} {:>9} {:>9} {:>8} {:>11} {:>9}",
            st.published_per_sec,
            st.received_per_sec,
            us(st.latency_us.p50),
            us(st.latency_us.p99),
            us(st.latency_us.max),
            st.missing,
            share(st.server_cpu_secs, st),
            share(st.load_cpu_secs, st),
        );
    }
    s
}

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1}ms", v as f64 / 1000.0)
    } else {
        format!("{v}us")
    }
}
