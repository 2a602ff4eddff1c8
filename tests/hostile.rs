//! Hostile clients over real sockets: a client that sends and never reads cannot grow the
//! server's memory (every queued byte counts against `--max-outbox-bytes`, and over the
//! cap the server stops reading), and an ordinary client beside them keeps its echo.

mod common;

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Server, Ws};
use ringpush::proto::frame::{OpCode, write_masked_frame};

/// `--max-outbox-bytes` and `--max-message-bytes` of the server under attack.
const CAP: usize = 64 * 1024;
const MAX_MESSAGE: usize = 64 * 1024;
/// Hostile connections of each kind.
const PER_KIND: usize = 100;
/// How long they attack.
const ATTACK: Duration = Duration::from_secs(3);

/// The README's worst case for one connection: outbox cap, one processing step past it
/// (16 KiB of input echoed, plus one completed message), the input held back while
/// paused (one receive's limit, 64 KiB, plus a receive buffer), a partial message, and
/// the fixed state (under 1 KiB).
const PER_CONNECTION: usize = CAP + (16 << 10) + MAX_MESSAGE + 14 + (68 << 10) + MAX_MESSAGE + 1024;

fn rss(pid: i32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

fn metric(addr: SocketAddr, name: &str) -> u64 {
    let text = common::http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Waits (a few seconds at most) until `n` connections were cut as slow consumers.
fn wait_for_drops(addr: SocketAddr, n: u64) {
    let start = Instant::now();
    loop {
        let drops = metric(addr, "ringpush_slow_consumer_drops_total");
        if drops == n {
            return;
        }
        assert!(
            drops < n && start.elapsed() < Duration::from_secs(5),
            "{drops} cut, expected {n}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until neither `ringpush_input_paused_total` nor the slow-consumer drops
/// changed for `quiet` (a liveness bound of 30 s): every stall clock started has fired.
fn settled(addr: SocketAddr, quiet: Duration) {
    let start = Instant::now();
    let counts = || {
        (
            metric(addr, "ringpush_input_paused_total"),
            metric(addr, "ringpush_slow_consumer_drops_total"),
        )
    };
    let (mut last, mut since) = (counts(), Instant::now());
    while since.elapsed() < quiet {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still pausing or cutting"
        );
        std::thread::sleep(Duration::from_millis(100));
        let now = counts();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

fn masked(op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_masked_frame(&mut out, true, op, payload, [1, 2, 3, 4]);
    out
}

/// One kind of attacker: `PER_KIND` connections that write `chunk` over and over
/// (never reading) until `stop`. Returns the bytes the kernel took from them, and the
/// connections, still open and unread.
fn attack(
    addr: SocketAddr,
    path: Option<&str>,
    chunk: &[u8],
    ready: &Barrier,
    stop: &AtomicBool,
) -> (u64, Vec<TcpStream>) {
    let mut socks: Vec<(TcpStream, usize)> = (0..PER_KIND)
        .map(|i| {
            // A small receive window: the kernel holds little of what we never read,
            // so the server's outbox fills within the attack.
            let mut s = common::tcp_with(addr, 2 + i as u8, Some(4096));
            if let Some(p) = path {
                s.write_all(common::upgrade_request(p, "").as_bytes())
                    .unwrap();
                let (head, _) = common::read_head(&mut s);
                assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
            }
            s.set_nonblocking(true).unwrap();
            (s, 0)
        })
        .collect();
    ready.wait();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && !chunk.is_empty() {
        let mut progress = false;
        for (s, off) in &mut socks {
            // An error: full (the server stopped reading), or cut by the server.
            if let Ok(n) = s.write(&chunk[*off..]) {
                sent += n as u64;
                *off = (*off + n) % chunk.len();
                progress = true;
            }
        }
        if !progress {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(5));
    }
    (sent, socks.into_iter().map(|(s, _)| s).collect())
}

/// Reads `s` to its end (EOF or reset) within `within`.
fn ended(mut s: TcpStream, within: Duration) -> Result<(), String> {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(()),
            Err(_) if start.elapsed() < within => {}
            Err(e) => return Err(format!("not ended after {within:?}: {e}")),
        }
    }
}

#[test]
fn hostile_clients_cannot_grow_memory() {
    let cap = CAP.to_string();
    let max_message = MAX_MESSAGE.to_string();
    let Some(server) = Server::start(&[
        "--shards",
        "2",
        "--max-outbox-bytes",
        &cap,
        "--max-message-bytes",
        &max_message,
        "--outbox-timeout",
        "2s",
    ]) else {
        return;
    };
    let addr = server.addr;
    let rss_before = rss(server.pid());
    let stop = Arc::new(AtomicBool::new(false));
    // Name, path (None: plain HTTP), what each connection writes, whether the server
    // must have ended it.
    let kinds: Vec<(&str, Option<&str>, Vec<u8>, bool)> = vec![
        // Pings as fast as the server reads them: a pong is owed, never read. Pongs
        // are coalesced, so the outbox never fills: such a client is not cut.
        (
            "ping flood",
            Some("/echo"),
            masked(OpCode::Ping, &[b'p'; 125]).repeat(200),
            false,
        ),
        // Messages to echo, never reading the echoes: paused, then cut (with a 1008
        // that such a client never reads: the next test reads it).
        (
            "echo flood",
            Some("/echo"),
            masked(OpCode::Binary, &vec![b'e'; MAX_MESSAGE - 1000]),
            true,
        ),
        // Pipelined requests whose answers (a few KiB each) are never read: paused,
        // then the connection is ended.
        (
            "pipelined requests",
            None,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(100),
            true,
        ),
        // Subscribers that never read, while the publisher below fills their outboxes.
        ("never reading", Some("/ws/hot"), Vec::new(), false),
    ];
    // Every attacker connects first; the attack starts together.
    let ready = Arc::new(Barrier::new(kinds.len() + 3));
    let mut threads = Vec::new();
    for (name, path, chunk, end) in kinds {
        let (stop, ready) = (stop.clone(), ready.clone());
        let t = std::thread::spawn(move || attack(addr, path, &chunk, &ready, &stop));
        threads.push((name, end, t));
    }
    let publisher = {
        let (stop, ready) = (stop.clone(), ready.clone());
        std::thread::spawn(move || {
            let mut p = Ws::connect_from(addr, "/ws/hot", 250);
            ready.wait();
            let frame = masked(OpCode::Binary, &vec![b'h'; 32 * 1024]);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                p.send_raw(&frame);
                n += 1;
            }
            n
        })
    };
    let ordinary = {
        let (stop, ready) = (stop.clone(), ready.clone());
        std::thread::spawn(move || {
            let mut c = Ws::connect_from(addr, "/echo", 251);
            ready.wait();
            let mut rtts = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let msg = format!("hello {i}");
                let t = Instant::now();
                c.send(true, OpCode::Text, msg.as_bytes());
                let f = c.recv().expect("the ordinary client's echo");
                assert_eq!(f.payload, msg.as_bytes());
                rtts.push(t.elapsed());
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            rtts
        })
    };

    ready.wait();
    let start = Instant::now();
    let mut peak = 0;
    // The attack, then (attackers still connected, still not reading) past
    // --outbox-timeout, sampling the server's memory all along.
    while start.elapsed() < ATTACK + Duration::from_secs(3) {
        if start.elapsed() >= ATTACK {
            stop.store(true, Ordering::Relaxed);
        }
        peak = peak.max(rss(server.pid()));
        std::thread::sleep(Duration::from_millis(25));
    }
    let mut rtts = ordinary.join().unwrap();
    let published = publisher.join().unwrap();
    let mut ends = Vec::new();
    for (name, end, t) in threads {
        let (sent, socks) = t.join().unwrap();
        println!(
            "{name}: {:.1} MB sent by {PER_KIND} connections",
            sent as f64 / 1e6
        );
        ends.push((name, end, socks));
    }
    let hostile = 4 * PER_KIND;
    let bound = hostile * PER_CONNECTION;
    let grew = peak.saturating_sub(rss_before);
    rtts.sort();
    let p50 = rtts[rtts.len() / 2];
    let max = *rtts.last().unwrap();
    println!(
        "server RSS {:.1} MB before, peak {:.1} MB: +{:.1} MB for {hostile} hostile \
         connections (bound {:.1} MB, {:.0} KiB each); {published} messages published; \
         ordinary echo: {} round trips, p50 {p50:?}, max {max:?}",
        rss_before as f64 / 1e6,
        peak as f64 / 1e6,
        grew as f64 / 1e6,
        bound as f64 / 1e6,
        PER_CONNECTION as f64 / 1024.0,
        rtts.len(),
    );
    assert!(
        grew <= bound,
        "RSS grew {grew} bytes, over the bound {bound}"
    );
    // A liveness bound, not a benchmark: the ordinary client was answered throughout.
    assert!(rtts.len() >= 5, "only {} echoes", rtts.len());
    assert!(max < Duration::from_secs(5), "an echo took {max:?}");
    // Those whose outbox reached its cap and did not drain are cut --outbox-timeout
    // later. On a busy host the last ones reach it late, reading after the attack what
    // their kernels still held: reading them before they are cut would make them
    // readers, which are not cut. So first the server settles (nothing paused or cut
    // for longer than --outbox-timeout and a tick).
    settled(addr, Duration::from_secs(3));
    assert!(metric(addr, "ringpush_input_paused_total") >= 2 * PER_KIND as u64);
    for (name, must_end, socks) in ends {
        if !must_end {
            continue;
        }
        for s in socks {
            if let Err(e) = ended(s, Duration::from_secs(15)) {
                panic!("{name}: {e}");
            }
        }
    }
}

/// A client that writes requests and never reads their answers is paused, then cut
/// after `--outbox-timeout`: a WebSocket with close 1008 (behind the megabytes the
/// kernel already holds for it, so the client sees the frame only if it reads them
/// before the close handshake times out; the drop shows in the metrics either way).
#[test]
fn full_outbox_past_the_timeout_is_cut() {
    let Some(server) = Server::start(&[
        "--shards",
        "1",
        "--max-outbox-bytes",
        "16384",
        "--max-message-bytes",
        "16384",
        "--outbox-timeout",
        "1s",
    ]) else {
        return;
    };
    let mut ws = Ws::connect(server.addr, "/echo");
    let frame = masked(OpCode::Binary, &[7u8; 16000]);
    ws.s.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        if ws.s.write_all(&frame).is_err() {
            break;
        }
    }
    // Still not reading, past the timeout.
    wait_for_drops(server.addr, 1);
    // Then the echoes the kernel held, and the end: a close frame, if it comes in
    // time, says 1008.
    ws.s.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut echoes = 0;
    while let Some(f) = ws.recv() {
        match f.opcode {
            OpCode::Binary => echoes += 1,
            OpCode::Close => {
                assert_eq!(u16::from_be_bytes([f.payload[0], f.payload[1]]), 1008);
                break;
            }
            op => panic!("unexpected {op:?}"),
        }
    }
    assert!(echoes > 0);
    // Pipelined HTTP requests, never read: the connection ends.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let reqs = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) && s.write_all(&reqs).is_ok() {}
    wait_for_drops(server.addr, 2);
    if let Err(e) = ended(s, Duration::from_secs(10)) {
        panic!("pipelined requests: {e}");
    }
}
