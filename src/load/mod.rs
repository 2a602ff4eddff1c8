//! `ringpush load`: the load generator.
//!
//! Client connections run on the same io_uring driver as the server: each worker thread
//! has its own rings and fixed-file tables, and creates sockets as direct descriptors
//! (`IORING_OP_SOCKET` → `SETSOCKOPT` → `BIND` → `CONNECT`, linked), so one process
//! holds far more connections than RLIMIT_NOFILE. Sources are spread over 127.0.0.x
//! addresses: each address has its own ephemeral port range toward the server's one
//! port. The WebSocket, SSE and polling clients themselves are sans-IO, in
//! [`crate::proto::client`]; over TLS (`wss://`, `https://`) a
//! [`crate::proto::tls::Tls`] session sits between a connection's socket and its client.
//!
//! The coordinating thread (the caller of [`run`]) moves the workers through phases, one
//! function each: connect (at `--rate` per second, at most 2048 TCP connects in flight
//! per worker), run (the scenario's traffic, for `--duration`), drain (what is in flight
//! arrives), leave (`--leave close` only), stop; then it merges their statistics into a
//! [`Report`] (`report.rs`). In a storm with `--cut-after` it also tells the workers,
//! once, to cut every subscriber at the same moment.
//!
//! Several `--url`s (the nodes of a cluster, all serving the same path): connection `i`
//! starts on URL `i mod n`, the publisher on the first, and each reconnect goes to the
//! next URL in the list; the report counts the connections per URL.

pub mod backoff;
pub mod publish;
mod report;
pub mod sequence;
mod steps;
mod sysinfo;
pub mod topics;
mod worker;

use std::io::IsTerminal as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;

pub use crate::proto::client::Transport;
pub use backoff::Backoff;
pub use report::{Exactness, Percentiles, Report, Step, Storm, UrlCounts};
pub use sequence::{Ends, Tally};
pub use topics::{TopicTally, Topics};
pub use worker::Scenario;
use worker::{
    HTTP_PUBLISHERS, ORDINAL_DIGITS, PHASE_DRAIN, PHASE_LEAVE, PHASE_RUN, PHASE_STOP, Plan, Shared,
    Stats, TS_DIGITS, Target,
};

/// What to run; built by the CLI.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `ws://HOST:PORT/PATH` or `http://HOST:PORT/sse/TOPIC` (`wss://`, `https://`
    /// over TLS), at least one. Several are the nodes of a cluster: the same scheme
    /// and path on each (see
    /// [`check_urls`]); connection `i` starts on `urls[i % n]`, the publisher on
    /// `urls[0]`, and a reconnect goes to the next one.
    pub urls: Vec<String>,
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
    /// Broadcast: publish at most this many messages per second (empty: as fast as the
    /// window of 8 in flight allows); several are steps, each for `duration`, one after
    /// the other on the same connections. Storm: a publisher on `/ws/{topic}` publishes
    /// at this rate (one) whoever is connected (empty: no publisher).
    pub publish_rates: Vec<f64>,
    /// Broadcast: subscriber `i` subscribes to `{topic}-{i mod topics}`, and the
    /// publishers publish round-robin over them over HTTP; 1: every subscriber on the
    /// URL's topic, one WebSocket publisher (see [`topics`]).
    pub topics: usize,
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
    /// WebSockets offer permessage-deflate.
    pub compression: bool,
    /// Payloads are JSON text after the timestamp, not `x` repeated.
    pub json_payload: bool,
    /// Print a progress line every second to stderr.
    pub progress: bool,
    /// At the end, leave together with close frames (`true`), or just exit (the kernel
    /// closes the sockets as the process ends).
    pub leave: bool,
    /// TLS (`wss://`, `https://`): the PEM certificates to trust.
    pub tls_ca: Option<PathBuf>,
    /// TLS: accept any server certificate (benchmarks against a self-signed server).
    pub tls_insecure: bool,
    /// TLS: resume sessions with the tickets earlier connections received, instead of
    /// a full handshake per connection.
    pub tls_resume: bool,
}

/// The publisher's WebSocket path for a broadcast to subscribers on `path`:
/// `/ws/{topic}` for `/ws/{topic}` and `/sse/{topic}`, the first topic of
/// `/sse?topic=..`; empty when there is none.
fn publish_path(path: &str) -> String {
    let topic = if let Some(t) = topics::topic_of_path(path) {
        t
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

/// A target URL, split (not resolved): `ws://` and `http://`, or over TLS `wss://` and
/// `https://` (port 443 when none is given).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url<'a> {
    transport: Transport,
    tls: bool,
    /// `HOST[:PORT]` as written: the `Host` value.
    host: &'a str,
    /// Path and query (`/` when there is none).
    path: String,
}

/// Splits a target URL, without resolving its host.
fn split_url(url: &str) -> Result<Url<'_>, String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (ws, tls) = match scheme {
        "ws" => (true, false),
        "wss" => (true, true),
        "http" => (false, false),
        "https" => (false, true),
        _ => {
            return Err(format!(
                "--url {url}: expected ws[s]://HOST:PORT/PATH or http[s]://HOST:PORT/sse/TOPIC"
            ));
        }
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, path) = rest.split_at(split);
    let path = if path.is_empty() {
        "/".to_owned()
    } else {
        path.to_owned()
    };
    let transport = if ws {
        Transport::Ws
    } else if path.starts_with("/poll/") {
        Transport::Poll
    } else {
        Transport::Sse
    };
    Ok(Url {
        transport,
        tls,
        host,
        path,
    })
}

/// A target URL, parsed and resolved.
#[derive(Debug, Clone)]
pub struct ParsedTarget {
    /// WebSocket, SSE or polling.
    pub transport: Transport,
    /// `HOST[:PORT]` as written: the `Host` header's value.
    pub host: String,
    /// `wss://` or `https://`: the host name (without the port) the server's
    /// certificate must be valid for, also sent as SNI.
    pub tls_name: Option<String>,
    /// The first IPv4 address of the host.
    pub addr: SocketAddrV4,
    /// Path and query.
    pub path: String,
}

/// Parses and resolves a target URL.
pub fn parse_target(url: &str) -> Result<ParsedTarget, String> {
    let Url {
        transport,
        tls,
        host,
        path,
    } = split_url(url)?;
    let default_port = if tls { 443 } else { 80 };
    let (name, with_port) = match host.rsplit_once(':') {
        Some((name, _)) => (name, host.to_owned()),
        None => (host, format!("{host}:{default_port}")),
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("--url {url}: cannot resolve {host}: {e}"))?
        .find_map(|a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .ok_or_else(|| format!("--url {url}: {host} has no IPv4 address"))?;
    Ok(ParsedTarget {
        transport,
        host: host.to_owned(),
        tls_name: tls.then(|| name.to_owned()),
        addr,
        path,
    })
}

/// The client TLS settings for a run over `urls`: `None` for `ws://` and `http://`;
/// for `wss://` and `https://`, trusting the PEM certificates in `ca`, or with
/// `insecure` any certificate. Without `resume`, every connection makes a full
/// handshake (as many distinct clients would); with it, connections resume sessions
/// from tickets earlier ones received.
pub fn client_tls(
    urls: &[String],
    ca: Option<&Path>,
    insecure: bool,
    resume: bool,
) -> Result<Option<Arc<ClientConfig>>, String> {
    let tls = match urls.first().map(|u| split_url(u)).transpose()? {
        Some(url) => url.tls,
        None => false,
    };
    if !tls {
        let flag = if ca.is_some() {
            "--tls-ca"
        } else if insecure {
            "--tls-insecure"
        } else if resume {
            "--tls-resume"
        } else {
            return Ok(None);
        };
        return Err(format!("{flag}: only with wss:// or https:// URLs"));
    }
    if ca.is_some() && insecure {
        return Err("--tls-ca and --tls-insecure: one or the other".into());
    }
    let mut config = crate::proto::tls::client_config(ca, insecure)?;
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Ok(Some(Arc::new(config)))
}

/// Checks a run's URLs without resolving them: at least one, and every one with the
/// scheme and path (topic, query) of the first, since a connection moves from one
/// to the next when it reconnects, and an event stream's `Last-Event-ID` only means
/// something on the same topic (on a cluster's nodes, whose ids are cluster-wide).
pub fn check_urls(urls: &[String]) -> Result<(), String> {
    let Some(first) = urls.first() else {
        return Err("--url: at least one is needed".into());
    };
    let first_url = split_url(first)?;
    for url in &urls[1..] {
        let u = split_url(url)?;
        if (u.transport, u.tls, &u.path) != (first_url.transport, first_url.tls, &first_url.path) {
            return Err(format!(
                "--url {url}: every --url must have the scheme and path of the first ({first}); a connection moves between them"
            ));
        }
    }
    Ok(())
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

/// Runs the load and returns what it measured: plan, start the workers, then the phases
/// (connect, run, drain, leave), then the report.
pub fn run(cfg: &LoadConfig) -> Result<Report, String> {
    let plan = Arc::new(plan(cfg)?);
    let shared = Arc::new(Shared::new(plan.targets.len()));
    // The server behind each local target, found by its listening port. With one
    // target, the run's server figures are its own; with several, each target's memory
    // is charged to the connections open on it.
    let pids: Vec<Option<u32>> = plan
        .targets
        .iter()
        .map(|t| {
            let local = t.addr.ip().is_loopback();
            local
                .then(|| sysinfo::listener_pid(t.addr.port()))
                .flatten()
        })
        .collect();
    let server_pid = if pids.len() == 1 { pids[0] } else { None };
    let before = Footprint::of(server_pid);
    let rss_before: Vec<Option<u64>> = pids
        .iter()
        .map(|p| p.and_then(sysinfo::rss_bytes))
        .collect();
    let cpu_at_start = server_pid.and_then(sysinfo::cpu_secs);
    let handles = start_workers(&plan, &shared)?;
    let mut progress = Progress::new(cfg.progress);
    let connect = connect_phase(cfg, &plan, &shared, &mut progress);
    let cpu_after_connect = server_pid.and_then(sysinfo::cpu_secs);
    if connect.unreachable {
        progress.finish();
        let stats = join_all(handles, plan.targets.len(), plan.steps())?;
        let (reason, n) = stats
            .errors
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or(("unknown".into(), 0), |(k, n)| (k.clone(), *n));
        return Err(format!(
            "no connection to {} could be opened: {reason} ({n} of {} attempts)",
            cfg.urls.join(" or "),
            shared.failed.load(Ordering::Relaxed)
        ));
    }
    shared.phase.store(PHASE_RUN, Ordering::Release);
    let t1 = Instant::now();
    let cpu_before = cpu_after_connect;
    let marks = steps::run(cfg, &plan, &shared, server_pid, &mut progress);
    let run_secs = t1.elapsed().as_secs_f64();
    // Memory while every connection is still open.
    let after = Footprint::of(server_pid);
    let rss_after: Vec<Option<u64>> = pids
        .iter()
        .map(|p| p.and_then(sysinfo::rss_bytes))
        .collect();
    let server_cpu_secs = match (cpu_before, server_pid.and_then(sysinfo::cpu_secs)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let open_at_end = shared.open.load(Ordering::Relaxed);
    let open_on_at_end = loads(&shared.open_on);
    let (leave_secs, leave_left) = if cfg.leave {
        let (secs, left) = leave_phase(&shared, &mut progress);
        (Some(secs), Some(left))
    } else {
        (None, None)
    };
    shared.phase.store(PHASE_STOP, Ordering::Release);
    progress.finish();

    let stats = join_all(handles, plan.targets.len(), plan.steps())?;
    let urls = cfg
        .urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            // Two URLs may name one server (127.0.0.1 and localhost): its memory is
            // charged to the connections on both.
            let on_server: u64 = (pids.iter().zip(&open_on_at_end))
                .filter(|(p, _)| p.is_some() && **p == pids[i])
                .map(|(_, n)| n)
                .sum();
            UrlCounts {
                url: url.clone(),
                connected: connect.open_on[i],
                reconnected: stats.reconnects_on[i],
                open_at_end: open_on_at_end[i],
                server_pid: pids[i],
                server_rss_per_conn: growth_per(rss_before[i], rss_after[i], on_server),
            }
        })
        .collect();
    let per_conn = |before, after| growth_per(before, after, open_at_end);
    let mut errors: Vec<(String, u64)> =
        stats.errors.iter().map(|(k, v)| (k.clone(), *v)).collect();
    errors.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let published = shared.published.load(Ordering::Relaxed);
    let storm = report::storm_report(&stats);
    let sse = (plan.transport == Transport::Sse).then(|| Exactness {
        tally: stats.sse,
        ends: Ends::per_topic(stats.sse_ends.clone()),
    });
    Ok(Report {
        scenario: report::scenario_name(cfg.scenario),
        url: cfg.urls[0].clone(),
        urls,
        connections: cfg.connections,
        publisher: plan.publishers > 0,
        publishers: plan.publishers,
        topics: plan.topics.n,
        threads: plan.threads,
        source_addrs: plan.sources.len(),
        connected: connect.open,
        connect_secs: connect.secs,
        handshake_us: Percentiles::of(&stats.handshake_us),
        server_cpu_us_per_handshake: match (cpu_at_start, cpu_after_connect) {
            (Some(a), Some(b)) if connect.open > 0 => Some((b - a) * 1e6 / connect.open as f64),
            _ => None,
        },
        tls_resumed: stats.tls_resumed,
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
        expected_deliveries: plan.topics.expected(published, cfg.connections as u64),
        publish_answered: plan.http_publish().then_some(stats.publish_ok),
        topic_check: plan.check_topics.then_some(stats.topics),
        steps: if cfg.scenario == Scenario::Broadcast {
            steps::report(&plan, &marks, &stats)
        } else {
            Vec::new()
        },
        server_pid,
        server_rss_per_conn: per_conn(before.rss, after.rss),
        kernel_slab_per_conn: per_conn(before.slab, after.slab),
        open_at_end,
        storm,
        sse,
        leave_secs,
        leave_left,
    })
}

/// Bytes grown from `before` to `after`, per one of `n` connections.
fn growth_per(before: Option<u64>, after: Option<u64>, n: u64) -> Option<f64> {
    match (before, after) {
        (Some(b), Some(a)) if n > 0 => Some((a as f64 - b as f64) / n as f64),
        _ => None,
    }
}

fn loads(counters: &[std::sync::atomic::AtomicU64]) -> Vec<u64> {
    counters.iter().map(|n| n.load(Ordering::Relaxed)).collect()
}

/// Checks the configuration against the URLs and the host, and sizes the run: what
/// every worker reads.
fn plan(cfg: &LoadConfig) -> Result<Plan, String> {
    check_urls(&cfg.urls)?;
    let tls = client_tls(
        &cfg.urls,
        cfg.tls_ca.as_deref(),
        cfg.tls_insecure,
        cfg.tls_resume,
    )?;
    let parsed = (cfg.urls.iter().map(|u| parse_target(u))).collect::<Result<Vec<_>, _>>()?;
    // check_urls: every URL has the first one's scheme and path.
    let (transport, path) = (parsed[0].transport, parsed[0].path.clone());
    let targets = parsed
        .into_iter()
        .map(|t| {
            let tls_name = t
                .tls_name
                .map(|name| {
                    ServerName::try_from(name.clone())
                        .map_err(|e| format!("--url: {name} is not a TLS server name: {e}"))
                })
                .transpose()?;
            Ok(Target {
                addr: t.addr,
                host: t.host,
                tls_name,
            })
        })
        .collect::<Result<Vec<Target>, String>>()?;
    if let (Some(config), Some(name)) = (&tls, targets.iter().find_map(|t| t.tls_name.clone())) {
        // The first TLS session of a process takes ~100 ms more than the next ones
        // (measured here: the first connections' handshakes 105 ms, the rest under 1 ms;
        // aws-lc's one-time setup): paid here, not in the first handshakes' latency.
        crate::proto::tls::Tls::client(Arc::clone(config), name)
            .map_err(|e| format!("TLS: {e}"))?;
    }
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
    if cfg.topics > 1 && cfg.scenario != Scenario::Broadcast {
        return Err("--topics: only with --scenario broadcast".into());
    }
    if cfg.publish_rates.len() > 1 && cfg.scenario != Scenario::Broadcast {
        return Err("--publish-rate: several rates (steps) only with --scenario broadcast".into());
    }
    let topics = Topics::new(
        topics::topic_of_path(&path).unwrap_or(""),
        cfg.topics as u64,
    )?;
    if cfg.topics > 1 {
        if topics::topic_of_path(&path).is_none() {
            return Err(format!(
                "--topics {}: the URL must name one topic (ws://HOST:PORT/ws/TOPIC, http://HOST:PORT/sse/TOPIC or /poll/TOPIC), got path {path}",
                cfg.topics
            ));
        }
        if cfg.message_bytes < TS_DIGITS + ORDINAL_DIGITS {
            return Err(format!(
                "--topics {}: --message-bytes must be at least {} (the send time and the publish's number, which says its topic), got {}",
                cfg.topics,
                TS_DIGITS + ORDINAL_DIGITS,
                cfg.message_bytes
            ));
        }
    }
    // A storm's publisher is asked for with --publish-rate.
    let publisher = match cfg.scenario {
        Scenario::Broadcast => true,
        Scenario::Storm if !cfg.publish_rates.is_empty() => {
            if publish_path(&path).is_empty() {
                return Err(format!(
                    "--scenario storm --publish-rate: the URL must name a topic (ws://HOST:PORT/ws/TOPIC or http://HOST:PORT/sse/TOPIC), got path {path}"
                ));
            }
            true
        }
        _ => false,
    };
    // One topic: a WebSocket publisher on it; several: HTTP publishers, each topic
    // always on the same one (its publishes stay in order).
    let publishers = match (publisher, cfg.topics > 1) {
        (false, _) => 0,
        (true, false) => 1,
        (true, true) => HTTP_PUBLISHERS.min(cfg.topics),
    };
    let loopback = targets.iter().any(|t| t.addr.ip().is_loopback());
    let sources: Vec<Ipv4Addr> = if loopback {
        let n = source_count(cfg.connections + publishers, cfg.source_addrs)?;
        (1..=n as u8).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect()
    } else {
        Vec::new()
    };
    let threads = cfg
        .threads
        .unwrap_or_else(crate::config::available_cpus)
        .clamp(1, cfg.connections.max(1));
    let table_slots =
        crate::sys::raise_nofile_limit().min(u64::from(crate::uring::table::MAX_SLOTS)) as u32;
    if table_slots < 64 {
        return Err(format!(
            "RLIMIT_NOFILE is {table_slots}; the load generator needs at least 64 (ulimit -n)"
        ));
    }
    Ok(Plan {
        scenario: cfg.scenario,
        transport,
        targets,
        path: path.clone(),
        sources,
        connections: cfg.connections,
        rate: cfg.rate,
        message_bytes: cfg.message_bytes,
        messages: cfg.messages,
        poll_interval: cfg.poll_interval,
        publish_rates: cfg.publish_rates.clone(),
        publish_path: publish_path(&path),
        publishers,
        topics,
        check_topics: cfg.scenario == Scenario::Broadcast
            && cfg.message_bytes >= TS_DIGITS + ORDINAL_DIGITS,
        backoff: cfg.backoff,
        threads,
        table_slots,
        compression: cfg.compression,
        json_payload: cfg.json_payload,
        tls,
    })
}

/// Memory the run is charged for: the server's resident set and the kernel's slab.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    rss: Option<u64>,
    slab: Option<u64>,
}

impl Footprint {
    fn of(server_pid: Option<u32>) -> Footprint {
        Footprint {
            rss: server_pid.and_then(sysinfo::rss_bytes),
            slab: sysinfo::slab_bytes(),
        }
    }
}

/// One thread per worker; a worker that fails stops the others and the coordinator.
fn start_workers(
    plan: &Arc<Plan>,
    shared: &Arc<Shared>,
) -> Result<Vec<std::thread::JoinHandle<Result<Stats, String>>>, String> {
    let mut handles = Vec::with_capacity(plan.threads);
    for id in 0..plan.threads {
        let (plan, shared) = (Arc::clone(plan), Arc::clone(shared));
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
    Ok(handles)
}

/// How the connect phase ended.
struct Connected {
    /// Its length, in seconds.
    secs: f64,
    /// Connections open at its end.
    open: u64,
    /// Of those, the ones open on each target.
    open_on: Vec<u64>,
    /// Nothing opened while every connection failed once: a wrong address.
    unreachable: bool,
}

/// Connect phase: until all are open, or no progress for 15 s (a server at capacity),
/// or nothing opens at all while every connection has failed once (a wrong address).
fn connect_phase(
    cfg: &LoadConfig,
    plan: &Plan,
    shared: &Shared,
    progress: &mut Progress,
) -> Connected {
    let total = (cfg.connections + plan.publishers) as u64;
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
    Connected {
        secs: t0.elapsed().as_secs_f64(),
        open: shared.open.load(Ordering::Relaxed),
        open_on: loads(&shared.open_on),
        unreachable,
    }
}

/// Run phase (one step of it, with several publish rates): the scenario's traffic for
/// `--duration` (or until a worker fails); with `--cut-after`, the cut is raised once,
/// on time.
fn run_phase(cfg: &LoadConfig, shared: &Shared, t1: Instant, progress: &mut Progress) {
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
}

/// Drain: no new messages; wait for those in flight (echo replies, broadcast
/// deliveries to every subscriber), at most 60 s or 1 s without progress.
fn drain_phase(cfg: &LoadConfig, plan: &Plan, shared: &Shared) {
    shared.phase.store(PHASE_DRAIN, Ordering::Release);
    wait_for_deliveries(cfg, plan, shared);
}

/// Until what is in flight has arrived, at most 60 s or 1 s without progress.
fn wait_for_deliveries(cfg: &LoadConfig, plan: &Plan, shared: &Shared) {
    let drain_start = Instant::now();
    let mut last = (u64::MAX, drain_start);
    loop {
        let received = shared.received.load(Ordering::Relaxed);
        let want = match cfg.scenario {
            Scenario::Echo => shared.sent.load(Ordering::Relaxed),
            Scenario::Broadcast | Scenario::Storm => plan.topics.expected(
                shared.published.load(Ordering::Relaxed),
                cfg.connections as u64,
            ),
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
}

/// Everyone leaves at once (the scale test's way down): how long until the server had
/// closed every connection (at most 30 s), and how many it had not.
fn leave_phase(shared: &Shared, progress: &mut Progress) -> (f64, u64) {
    shared.phase.store(PHASE_LEAVE, Ordering::Release);
    let t = Instant::now();
    while shared.open.load(Ordering::Relaxed) > 0 && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(1));
        progress.line(|| format!("leaving: {} open", shared.open.load(Ordering::Relaxed)));
    }
    (
        t.elapsed().as_secs_f64(),
        shared.open.load(Ordering::Relaxed),
    )
}

/// Waits for every worker and merges their statistics; the first failure wins.
fn join_all(
    handles: Vec<std::thread::JoinHandle<Result<Stats, String>>>,
    targets: usize,
    steps: usize,
) -> Result<Stats, String> {
    let mut stats = Stats::new(targets, steps);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("ws://127.0.0.1:9000/ws/room?x=1").unwrap();
        assert_eq!(
            (
                t.transport,
                t.host.as_str(),
                t.addr.port(),
                t.path.as_str(),
                t.tls_name
            ),
            (Transport::Ws, "127.0.0.1:9000", 9000, "/ws/room?x=1", None)
        );
        let t = parse_target("http://localhost:8080/sse/a").unwrap();
        assert_eq!(
            (t.transport, t.addr.ip().is_loopback(), t.path.as_str()),
            (Transport::Sse, true, "/sse/a")
        );
        let t = parse_target("ws://127.0.0.1").unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (80, "/"));
        assert_eq!(
            parse_target("http://127.0.0.1:1/poll/t?wait=1s")
                .unwrap()
                .transport,
            Transport::Poll
        );
        assert!(parse_target("ftp://x/").is_err());
        assert_eq!(publish_path("/sse/news"), "/ws/news");
        assert_eq!(publish_path("/sse?topic=a&topic=b"), "/ws/a");
        assert_eq!(publish_path("/ws/room?x=1"), "/ws/room");
        assert_eq!(publish_path("/echo"), "");
    }

    /// `wss://` and `https://`: port 443 unless given, the host without its port is
    /// the certificate's name, the `Host` value stays as written.
    #[test]
    fn tls_targets() {
        let t = parse_target("wss://localhost/ws/t").unwrap();
        assert_eq!(
            (
                t.transport,
                t.host.as_str(),
                t.addr.port(),
                t.tls_name.as_deref()
            ),
            (Transport::Ws, "localhost", 443, Some("localhost"))
        );
        let t = parse_target("https://127.0.0.1:8443/sse/news").unwrap();
        assert_eq!(
            (
                t.transport,
                t.host.as_str(),
                t.addr.port(),
                t.tls_name.as_deref()
            ),
            (Transport::Sse, "127.0.0.1:8443", 8443, Some("127.0.0.1"))
        );
        let t = parse_target("https://localhost:8443/poll/news").unwrap();
        assert_eq!(t.transport, Transport::Poll);
    }

    #[test]
    fn tls_settings_follow_the_urls() {
        let urls = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let plain = urls(&["ws://127.0.0.1:1/ws/t"]);
        assert!(client_tls(&plain, None, false, false).unwrap().is_none());
        for (ca, insecure, resume, flag) in [
            (Some(Path::new("ca.pem")), false, false, "--tls-ca"),
            (None, true, false, "--tls-insecure"),
            (None, false, true, "--tls-resume"),
        ] {
            let err = client_tls(&plain, ca, insecure, resume).unwrap_err();
            assert_eq!(err, format!("{flag}: only with wss:// or https:// URLs"));
        }
        let tls = urls(&["wss://127.0.0.1:1/ws/t"]);
        let err = client_tls(&tls, None, false, false).unwrap_err();
        assert!(
            err.contains("--tls-ca") && err.contains("--tls-insecure"),
            "{err}"
        );
        let err =
            client_tls(&tls, Some(Path::new("/nonexistent/ca.pem")), false, false).unwrap_err();
        assert!(err.starts_with("--tls-ca /nonexistent/ca.pem: "), "{err}");
        let err = client_tls(&tls, Some(Path::new("ca.pem")), true, false).unwrap_err();
        assert!(err.contains("one or the other"), "{err}");
        let config = client_tls(&tls, None, true, false).unwrap().unwrap();
        assert!(config.alpn_protocols == [b"http/1.1".to_vec()]);
        assert!(client_tls(&tls, None, true, true).unwrap().is_some());
    }

    #[test]
    fn urls_agree_on_transport_and_path() {
        let urls = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_urls(&urls(&["ws://127.0.0.1:1/ws/t"])).is_ok());
        assert!(check_urls(&urls(&["ws://127.0.0.1:1/ws/t", "ws://localhost:2/ws/t"])).is_ok());
        assert!(check_urls(&urls(&["http://a:1/sse/t?x=1", "http://b:2/sse/t?x=1"])).is_ok());
        for (a, b) in [
            ("ws://a:1/ws/t", "ws://b:2/ws/u"),
            ("ws://a:1/ws/t", "http://b:2/ws/t"),
            ("http://a:1/sse/t", "http://b:2/sse/t?x=1"),
            ("http://a:1/poll/t", "http://b:2/sse/t"),
        ] {
            let err = check_urls(&urls(&[a, b])).unwrap_err();
            assert!(err.starts_with(&format!("--url {b}: ")), "{err}");
            assert!(err.contains(a), "{err}");
        }
        assert!(check_urls(&[]).unwrap_err().contains("--url"));
        assert!(check_urls(&urls(&["wss://a:1/ws/t", "wss://b/ws/t"])).is_ok());
        assert!(check_urls(&urls(&["ws://a:1/ws/t", "wss://b/ws/t"])).is_err());
        assert!(check_urls(&urls(&["https://a:1/sse/t", "http://b/sse/t"])).is_err());
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
