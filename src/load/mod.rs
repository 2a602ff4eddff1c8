//! `ringpush load`: the load generator.
//!
//! Client connections run on the same io_uring driver as the server: each worker thread
//! has its own rings and fixed-file tables, and creates sockets as direct descriptors
//! (`IORING_OP_SOCKET` → `BIND` → `CONNECT`, linked), so one process holds far more
//! connections than RLIMIT_NOFILE. Sources are spread over 127.0.0.x addresses: each
//! address has its own ephemeral port range toward the server's one port.
//!
//! The coordinating thread (the caller of [`run`]) moves the workers through phases:
//! connect (at `--rate` per second, at most 2048 handshakes in flight per worker), run
//! (the scenario's traffic, for `--duration`), stop; then it merges their statistics into
//! a [`Report`]. In a storm with `--cut-after` it also tells the workers, once, to cut
//! every subscriber at the same moment.

pub mod backoff;
pub mod sequence;
mod sysinfo;
mod worker;

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub use crate::proto::client::Transport;
pub use backoff::Backoff;
pub use sequence::{Ends, Tally};
pub use worker::Scenario;
use worker::{PHASE_DRAIN, PHASE_LEAVE, PHASE_RUN, PHASE_STOP, Plan, Shared, Stats};

/// What to run; built by the CLI.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `ws://HOST:PORT/PATH` or `http://HOST:PORT/sse/TOPIC`.
    pub url: String,
    /// The scenario.
    pub scenario: Scenario,
    /// Connections (subscribers for broadcast).
    pub connections: usize,
    /// Connection attempts per second.
    pub rate: usize,
    /// How long the run phase lasts.
    pub duration: Duration,
    /// Payload bytes per message.
    pub message_bytes: usize,
    /// Broadcast: stop publishing after this many messages (`None`: for `duration`).
    pub messages: Option<u64>,
    /// Short polling (`/poll/{topic}` without `wait`): pause between requests.
    pub poll_interval: Duration,
    /// Broadcast: publish at most this many messages per second (`None`: as fast as the
    /// window of 8 in flight allows). Storm: a publisher on `/ws/{topic}` publishes at
    /// this rate whoever is connected (`None`: no publisher).
    pub publish_rate: Option<f64>,
    /// Storm: this long into the run phase, the load generator cuts every open
    /// subscriber at once (a network blip) and each reconnects after its backoff delay
    /// (`None`: the storm comes from outside, a server restart).
    pub cut_after: Option<Duration>,
    /// Source addresses 127.0.0.1..=N; `None`: as many as the port range requires.
    pub source_addrs: Option<usize>,
    /// Reconnect policy.
    pub backoff: Backoff,
    /// Worker threads; `None`: one per CPU in the affinity mask.
    pub threads: Option<usize>,
    /// Print a progress line every second to stderr.
    pub progress: bool,
    /// At the end, leave together with close frames (`true`), or just exit (the kernel
    /// closes the sockets as the process ends).
    pub leave: bool,
}

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
    fn of(h: &Histogram<u64>) -> Percentiles {
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
/// reconnects (`Last-Event-ID`)? See [`sequence`].
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Exactness {
    /// What the checks counted over all subscribers.
    #[serde(flatten)]
    pub tally: Tally,
    /// Where the subscribers stood at the end.
    #[serde(flatten)]
    pub ends: Ends,
}

/// Everything a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// The target URL.
    pub url: String,
    /// Connections asked for.
    pub connections: usize,
    /// A publisher connection ran besides them (broadcast; a storm with a publish rate).
    pub publisher: bool,
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
    /// The server process's CPU time (user + system) during the run phase, seconds.
    pub server_cpu_secs: Option<f64>,
    /// Server CPU per received message, microseconds.
    pub server_cpu_us_per_message: Option<f64>,
    /// Echo round trip, or publish-to-delivery for broadcast.
    pub latency_us: Percentiles,
    /// Broadcast: messages published, and deliveries expected (published x subscribers).
    pub published: u64,
    /// Broadcast: deliveries expected.
    pub expected_deliveries: u64,
    /// The server's PID, if it runs on this host and was found by its listening port.
    pub server_pid: Option<u32>,
    /// Server resident memory growth per open connection, in bytes.
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

/// The publisher's WebSocket path for a broadcast to subscribers on `path`:
/// `/ws/{topic}` for `/ws/{topic}` and `/sse/{topic}`, the first topic of
/// `/sse?topic=..`; empty when there is none.
fn publish_path(path: &str) -> String {
    let topic = if let Some(t) = path
        .strip_prefix("/ws/")
        .or_else(|| path.strip_prefix("/sse/"))
        .or_else(|| path.strip_prefix("/poll/"))
    {
        t.split(['?', '#']).next().unwrap_or("")
    } else if let Some(q) = path.strip_prefix("/sse?") {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("topic="))
            .unwrap_or("")
    } else {
        ""
    };
    if topic.is_empty() {
        String::new()
    } else {
        format!("/ws/{topic}")
    }
}

/// Parses the target URL: transport, `Host` value, address, path.
pub fn parse_target(url: &str) -> Result<(Transport, String, SocketAddrV4, String), String> {
    let (transport, rest) = if let Some(r) = url.strip_prefix("ws://") {
        (Transport::Ws, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        let poll = r.find('/').is_some_and(|i| r[i..].starts_with("/poll/"));
        (
            if poll {
                Transport::Poll
            } else {
                Transport::Sse
            },
            r,
        )
    } else {
        return Err(format!(
            "--url {url}: expected ws://HOST:PORT/PATH or http://HOST:PORT/sse/TOPIC"
        ));
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, path) = rest.split_at(split);
    let path = if path.is_empty() {
        "/".to_owned()
    } else {
        path.to_owned()
    };
    let with_port = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("--url {url}: cannot resolve {host}: {e}"))?
        .find_map(|a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .ok_or_else(|| format!("--url {url}: {host} has no IPv4 address"))?;
    Ok((transport, host.to_owned(), addr, path))
}

/// Source addresses for `connections` toward a loopback target. Each address has the
/// ephemeral port range toward the server's port, but only half of it is fast: connect
/// picks ports of one parity first (the other is left to bind), and past that half about
/// one connect in ten took a full second (measured: 16,000 connections from one address
/// with the default 28,232-port range, p99 handshake 1.06 s; from four addresses, 0.3 ms).
pub fn source_count(connections: usize, requested: Option<usize>) -> Result<usize, String> {
    let (lo, hi) = sysinfo::port_range().unwrap_or((32768, 60999));
    let ports = (hi.saturating_sub(lo) + 1).max(1);
    let usable = ports / 2;
    let needed = connections.div_ceil(usable.max(1)).max(1);
    match requested {
        Some(n) if n * ports < connections => Err(format!(
            "--source-addrs {n}: {n} addresses x {ports} ports (ip_local_port_range {lo}-{hi}) cannot hold {connections} connections; use at least {needed}"
        )),
        Some(n) => Ok(n),
        None if needed > 254 => Err(format!(
            "{connections} connections need {needed} source addresses at {ports} ports each (ip_local_port_range {lo}-{hi}), more than 254; widen the range: sysctl -w net.ipv4.ip_local_port_range=\"10000 65535\" (tuning/99-ringpush.conf)"
        )),
        None => Ok(needed),
    }
}

/// Runs the load and returns what it measured.
pub fn run(cfg: &LoadConfig) -> Result<Report, String> {
    let (transport, host, target, path) = parse_target(&cfg.url)?;
    if cfg.scenario == Scenario::Broadcast && publish_path(&path).is_empty() {
        return Err(format!(
            "--scenario broadcast: the URL must be ws://HOST:PORT/ws/TOPIC or http://HOST:PORT/sse/TOPIC, got path {path}"
        ));
    }
    if cfg.scenario == Scenario::Echo && transport != Transport::Ws {
        return Err("--scenario echo: SSE and polling are one-way; use a ws:// URL".into());
    }
    if let Some(cut) = cfg.cut_after {
        if cfg.scenario != Scenario::Storm {
            return Err("--cut-after: only with --scenario storm".into());
        }
        if cut >= cfg.duration {
            return Err(format!(
                "--cut-after {}: must come before the end of --duration ({}), with time left to reconnect",
                crate::config::format_duration(cut),
                crate::config::format_duration(cfg.duration)
            ));
        }
    }
    // A storm's publisher is asked for with --publish-rate.
    let publisher = match cfg.scenario {
        Scenario::Broadcast => true,
        Scenario::Storm if cfg.publish_rate.is_some() => {
            if publish_path(&path).is_empty() {
                return Err(format!(
                    "--scenario storm --publish-rate: the URL must name a topic (ws://HOST:PORT/ws/TOPIC or http://HOST:PORT/sse/TOPIC), got path {path}"
                ));
            }
            true
        }
        _ => false,
    };
    let loopback = target.ip().is_loopback();
    let sources: Vec<Ipv4Addr> = if loopback {
        let n = source_count(cfg.connections + 1, cfg.source_addrs)?;
        (1..=n as u8).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect()
    } else {
        Vec::new()
    };
    let threads = cfg
        .threads
        .unwrap_or_else(|| crate::uring::allowed_cpus().len())
        .clamp(1, cfg.connections.max(1));
    let table_slots = crate::uring::raise_nofile_limit().min(1 << 20) as u32;
    if table_slots < 64 {
        return Err(format!(
            "RLIMIT_NOFILE is {table_slots}; the load generator needs at least 64 (ulimit -n)"
        ));
    }
    let plan = Arc::new(Plan {
        scenario: cfg.scenario,
        transport,
        target,
        host,
        path: path.clone(),
        sources,
        connections: cfg.connections,
        rate: cfg.rate,
        message_bytes: cfg.message_bytes,
        messages: cfg.messages,
        poll_interval: cfg.poll_interval,
        publish_rate: cfg.publish_rate,
        publish_path: publish_path(&path),
        publisher,
        backoff: cfg.backoff,
        threads,
        table_slots,
    });
    let shared = Arc::new(Shared::new());
    let server_pid = if loopback {
        sysinfo::listener_pid(target.port())
    } else {
        None
    };
    let rss_before = server_pid.and_then(sysinfo::rss_bytes);
    let slab_before = sysinfo::slab_bytes();

    let mut handles = Vec::with_capacity(threads);
    for id in 0..threads {
        let (plan, shared) = (plan.clone(), shared.clone());
        let h = std::thread::Builder::new()
            .name(format!("load-{id}"))
            .spawn(move || {
                let r = worker::run(id, &plan, &shared);
                if r.is_err() {
                    // Let the others and the coordinator stop too.
                    shared.phase.store(PHASE_STOP, Ordering::Release);
                }
                r
            })
            .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        handles.push(h);
    }

    let total = cfg.connections as u64 + u64::from(publisher);
    let mut progress = Progress::new(cfg.progress);
    // Connect phase: until all are open, or no progress for 15 s (a server at capacity),
    // or nothing opens at all while every connection has failed once (a wrong address).
    let t0 = Instant::now();
    let mut last = (0, t0);
    let mut unreachable = false;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let open = shared.open.load(Ordering::Relaxed);
        let now = Instant::now();
        if open != last.0 {
            last = (open, now);
        }
        progress.line(|| {
            format!(
                "connecting: {open}/{total} open, {} failed attempts, {:.1}s",
                shared.failed.load(Ordering::Relaxed),
                t0.elapsed().as_secs_f64()
            )
        });
        if open == 0
            && shared.failed.load(Ordering::Relaxed) >= total
            && t0.elapsed() > Duration::from_secs(1)
        {
            unreachable = true;
            shared.phase.store(PHASE_STOP, Ordering::Release);
            break;
        }
        if open >= total
            || now.duration_since(last.1) > Duration::from_secs(15)
            || shared.phase.load(Ordering::Acquire) == PHASE_STOP
        {
            break;
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let connected = shared.open.load(Ordering::Relaxed);
    if unreachable {
        progress.finish();
        let stats = join_all(handles)?;
        let (reason, n) = stats
            .errors
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or(("unknown".into(), 0), |(k, n)| (k.clone(), *n));
        return Err(format!(
            "no connection to {} could be opened: {reason} ({n} of {} attempts)",
            cfg.url,
            shared.failed.load(Ordering::Relaxed)
        ));
    }

    shared.phase.store(PHASE_RUN, Ordering::Release);
    let t1 = Instant::now();
    let cpu_before = server_pid.and_then(sysinfo::cpu_secs);
    let mut cut_pending = cfg.cut_after;
    while t1.elapsed() < cfg.duration && shared.phase.load(Ordering::Acquire) == PHASE_RUN {
        let mut nap = Duration::from_millis(20).min(cfg.duration);
        if let Some(cut) = cut_pending {
            let elapsed = t1.elapsed();
            if elapsed >= cut {
                shared.cut.store(true, Ordering::Release);
                cut_pending = None;
            } else {
                nap = nap.min(cut - elapsed);
            }
        }
        std::thread::sleep(nap);
        progress.line(|| {
            format!(
                "running: {} open, {} received, {:.1}s of {:.1}s",
                shared.open.load(Ordering::Relaxed),
                shared.received.load(Ordering::Relaxed),
                t1.elapsed().as_secs_f64(),
                cfg.duration.as_secs_f64()
            )
        });
    }
    // Drain: no new messages; wait for those in flight (echo replies, broadcast
    // deliveries to every subscriber), at most 60 s or 1 s without progress.
    shared.phase.store(PHASE_DRAIN, Ordering::Release);
    let drain_start = Instant::now();
    let mut last = (u64::MAX, drain_start);
    loop {
        let received = shared.received.load(Ordering::Relaxed);
        let want = match cfg.scenario {
            Scenario::Echo => shared.sent.load(Ordering::Relaxed),
            Scenario::Broadcast | Scenario::Storm => {
                shared.published.load(Ordering::Relaxed) * cfg.connections as u64
            }
            Scenario::Idle => 0,
        };
        let now = Instant::now();
        if received != last.0 {
            last = (received, now);
        }
        if received >= want
            || now.duration_since(last.1) > Duration::from_secs(1)
            || now.duration_since(drain_start) > Duration::from_secs(60)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let run_secs = t1.elapsed().as_secs_f64();
    // Memory while every connection is still open.
    let rss_after = server_pid.and_then(sysinfo::rss_bytes);
    let server_cpu_secs = match (cpu_before, server_pid.and_then(sysinfo::cpu_secs)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let slab_after = sysinfo::slab_bytes();
    let open_at_end = shared.open.load(Ordering::Relaxed);
    // Everyone leaves at once (the scale test's way down), if asked.
    let (leave_secs, leave_left) = if cfg.leave {
        shared.phase.store(PHASE_LEAVE, Ordering::Release);
        let t = Instant::now();
        while shared.open.load(Ordering::Relaxed) > 0 && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(1));
            progress.line(|| format!("leaving: {} open", shared.open.load(Ordering::Relaxed)));
        }
        (
            Some(t.elapsed().as_secs_f64()),
            Some(shared.open.load(Ordering::Relaxed)),
        )
    } else {
        (None, None)
    };
    shared.phase.store(PHASE_STOP, Ordering::Release);
    progress.finish();

    let stats = join_all(handles)?;
    let per_conn = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) if open_at_end > 0 => Some((a as f64 - b as f64) / open_at_end as f64),
        _ => None,
    };
    let mut errors: Vec<(String, u64)> =
        stats.errors.iter().map(|(k, v)| (k.clone(), *v)).collect();
    errors.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let published = shared.published.load(Ordering::Relaxed);
    let storm = storm_report(&stats);
    let sse = (transport == Transport::Sse).then(|| Exactness {
        tally: stats.sse,
        ends: Ends::of(&stats.sse_ends),
    });
    Ok(Report {
        scenario: scenario_name(cfg.scenario),
        url: cfg.url.clone(),
        connections: cfg.connections,
        publisher,
        threads,
        source_addrs: plan.sources.len(),
        connected,
        connect_secs,
        handshake_us: Percentiles::of(&stats.handshake_us),
        errors,
        run_secs,
        sent: stats.sent,
        received: stats.received,
        received_per_sec: stats.received as f64 / run_secs,
        received_mib_per_sec: stats.received_bytes as f64 / run_secs / (1 << 20) as f64,
        wire_bytes_per_message: (stats.wire_in + stats.wire_out) as f64
            / stats.received.max(1) as f64,
        server_cpu_secs,
        server_cpu_us_per_message: server_cpu_secs
            .filter(|_| stats.received > 0)
            .map(|c| c * 1e6 / stats.received as f64),
        latency_us: Percentiles::of(&stats.latency_us),
        published,
        expected_deliveries: published * cfg.connections as u64,
        server_pid,
        server_rss_per_conn: per_conn(rss_before, rss_after),
        kernel_slab_per_conn: per_conn(slab_before, slab_after),
        open_at_end,
        storm,
        sse,
        leave_secs,
        leave_left,
    })
}

/// Waits for every worker and merges their statistics; the first failure wins.
fn join_all(handles: Vec<std::thread::JoinHandle<Result<Stats, String>>>) -> Result<Stats, String> {
    let mut stats = Stats::empty();
    let mut first_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => stats.merge(s),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert("a worker thread panicked".into());
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Idle => "idle",
        Scenario::Echo => "echo",
        Scenario::Broadcast => "broadcast",
        Scenario::Storm => "storm",
    }
}

fn storm_report(stats: &Stats) -> Option<Storm> {
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

/// A progress line on stderr, at most once a second: rewritten in place on a terminal,
/// one line per second otherwise.
struct Progress {
    enabled: bool,
    tty: bool,
    last: Option<Instant>,
    wrote: bool,
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            tty: std::io::stderr().is_terminal(),
            last: None,
            wrote: false,
        }
    }

    fn line(&mut self, text: impl FnOnce() -> String) {
        if !self.enabled
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        if self.last.is_none() {
            self.last = Some(Instant::now());
            return;
        }
        self.last = Some(Instant::now());
        if self.tty {
            eprint!("\r\x1b[2K{}", text());
        } else {
            eprintln!("{}", text());
        }
        self.wrote = true;
    }

    fn finish(&mut self) {
        if self.tty && self.wrote {
            eprintln!();
        }
    }
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
        let _ = writeln!(s, "ringpush load: {} against {}", self.scenario, self.url);
        let _ = writeln!(
            s,
            "  workers {}, source addresses {}",
            self.threads, self.source_addrs
        );
        let _ = writeln!(
            s,
            "  connected       {} of {} in {:.2}s ({:.0}/s)",
            self.connected,
            self.connections + usize::from(self.publisher),
            self.connect_secs,
            self.connected as f64 / self.connect_secs.max(1e-9)
        );
        let _ = writeln!(s, "  handshake       {}", p(&self.handshake_us));
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
        if self.scenario == "broadcast" {
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

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1}ms", v as f64 / 1000.0)
    } else {
        format!("{v}us")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let (t, host, addr, path) = parse_target("ws://127.0.0.1:9000/ws/room?x=1").unwrap();
        assert_eq!(
            (t, host.as_str(), addr.port(), path.as_str()),
            (Transport::Ws, "127.0.0.1:9000", 9000, "/ws/room?x=1")
        );
        let (t, _, addr, path) = parse_target("http://localhost:8080/sse/a").unwrap();
        assert_eq!(
            (t, addr.ip().is_loopback(), path.as_str()),
            (Transport::Sse, true, "/sse/a")
        );
        let (_, _, addr, path) = parse_target("ws://127.0.0.1").unwrap();
        assert_eq!((addr.port(), path.as_str()), (80, "/"));
        assert!(parse_target("wss://x/").is_err());
        assert_eq!(publish_path("/sse/news"), "/ws/news");
        assert_eq!(publish_path("/sse?topic=a&topic=b"), "/ws/a");
        assert_eq!(publish_path("/ws/room?x=1"), "/ws/room");
        assert_eq!(publish_path("/echo"), "");
    }

    #[test]
    fn source_addresses_follow_the_port_range() {
        let (lo, hi) = sysinfo::port_range().unwrap_or((32768, 60999));
        let ports = hi - lo + 1;
        let usable = ports / 2;
        assert_eq!(source_count(10, None).unwrap(), 1);
        assert_eq!(source_count(usable + 1, None).unwrap(), 2);
        assert_eq!(source_count(1_000_000, Some(200)).unwrap(), 200);
        assert!(
            source_count(1_000_000, Some(1))
                .unwrap_err()
                .contains("use at least")
        );
    }
}
