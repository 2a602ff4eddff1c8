//! `--tls-cert` / `--tls-key` against the real server with a rustls client and a CA
//! made for each test: WebSocket, SSE with Last-Event-ID and HTTP over TLS, data that
//! only gets through in many short writes, SIGHUP reloads (good and bad files) with
//! connections kept, refusals at start, plaintext and stalled clients on the TLS port,
//! a 503 at admission after the handshake, and the memory an idle TLS connection holds.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use common::tls::{Pki, TlsStream, connect, https, ws};
use ringpush::proto::frame::OpCode;
use ringpush::proto::sse::{EventParser, ParsedEvent};

/// `POST /publish/{topic}` over TLS: the id from `{"id":"..."}`.
fn publish(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>, topic: &str, body: &str) -> String {
    let resp = https(
        addr,
        cfg.clone(),
        &format!(
            "POST /publish/{topic} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 200 "), "{resp}");
    let json = resp.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// An event stream over TLS.
struct Stream {
    s: TlsStream,
    parser: EventParser,
}

impl Stream {
    fn open(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>, path: &str, extra: &str) -> Stream {
        let mut s = connect(addr, cfg.clone()).expect("TLS handshake");
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n").unwrap();
        let (head, rest) = common::read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert!(head.contains("text/event-stream"), "{head}");
        let mut parser = EventParser::new();
        parser.feed(&rest);
        Stream { s, parser }
    }

    fn next(&mut self) -> ParsedEvent {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(ev) = self.parser.next_event() {
                return ev;
            }
            assert!(Instant::now() < deadline, "no event within 10 s");
            let mut buf = [0u8; 16384];
            let n = self.s.read(&mut buf).expect("read");
            assert!(n > 0, "EOF");
            self.parser.feed(&buf[..n]);
        }
    }
}

/// WebSocket echo (small and 300 KB) and pub/sub, HTTPS publish, and an event stream
/// that reconnects with Last-Event-ID and gets exactly the events it missed.
#[test]
fn websocket_sse_and_http_over_tls() {
    let pki = Pki::new("basics");
    let Some(server) = common::tls::server(&pki, &["--shards", "2"]) else {
        return;
    };
    let cfg = pki.client_config();
    let health = https(
        server.addr,
        cfg.clone(),
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(health.starts_with("HTTP/1.1 200 "), "{health}");

    let mut echo = ws(server.addr, cfg.clone(), "/echo");
    echo.send(true, OpCode::Text, b"hello over TLS");
    assert_eq!(echo.recv().unwrap().payload, b"hello over TLS");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    echo.send(true, OpCode::Binary, &big);
    assert_eq!(echo.recv().unwrap().payload, big);

    let mut a = ws(server.addr, cfg.clone(), "/ws/room");
    let mut b = ws(server.addr, cfg.clone(), "/ws/room");
    std::thread::sleep(Duration::from_millis(200));
    a.send(true, OpCode::Text, b"from a");
    assert_eq!(b.recv().unwrap().payload, b"from a");
    publish(server.addr, &cfg, "room", "from http");
    assert_eq!(a.recv().unwrap().payload, b"from http");
    assert_eq!(b.recv().unwrap().payload, b"from http");

    let mut stream = Stream::open(server.addr, &cfg, "/sse/feed", "");
    std::thread::sleep(Duration::from_millis(100));
    let ids: Vec<String> = (0..3)
        .map(|i| publish(server.addr, &cfg, "feed", &format!("e{i}")))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let ev = stream.next();
        assert_eq!(
            (ev.id.as_deref(), ev.data.as_str()),
            (Some(id.as_str()), format!("e{i}").as_str())
        );
    }
    drop(stream);
    let missed: Vec<String> = (3..6)
        .map(|i| publish(server.addr, &cfg, "feed", &format!("e{i}")))
        .collect();
    let mut again = Stream::open(
        server.addr,
        &cfg,
        "/sse/feed",
        &format!("Last-Event-ID: {}\r\n", ids[2]),
    );
    for (i, id) in missed.iter().enumerate() {
        let ev = again.next();
        assert_eq!(ev.id.as_deref(), Some(id.as_str()));
        assert_eq!(ev.data, format!("e{}", i + 3));
    }
}

/// A subscriber that reads slowly through a small receive buffer makes the server's
/// sends short: every rest of sealed records must go out whole and in order (a lost or
/// repeated byte breaks the record layer). 4 MB in 400 messages, all intact.
#[test]
fn short_writes_keep_the_record_stream_intact() {
    let pki = Pki::new("short");
    let Some(server) =
        common::tls::server(&pki, &["--shards", "1", "--max-outbox-bytes", "8388608"])
    else {
        return;
    };
    let cfg = pki.client_config();
    let tcp = common::tcp_with(server.addr, 1, Some(4096));
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ClientConnection::new(cfg.clone(), "localhost".try_into().unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    write!(s, "{}", common::upgrade_request("/ws/bulk", "")).unwrap();
    let (head, rest) = common::read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut sub = common::Ws::over(s, rest);
    let mut publisher = ws(server.addr, cfg, "/ws/bulk");
    std::thread::sleep(Duration::from_millis(200));
    let sender = std::thread::spawn(move || {
        for i in 0..400u32 {
            let msg: Vec<u8> = (0..10_000u32).map(|j| ((i + j) % 253) as u8).collect();
            publisher.send(true, OpCode::Binary, &msg);
        }
        publisher
    });
    for i in 0..400u32 {
        if i % 40 == 0 {
            // Let the socket buffers fill so that sends come back short.
            std::thread::sleep(Duration::from_millis(50));
        }
        let f = sub.recv().expect("a message");
        let want: Vec<u8> = (0..10_000u32).map(|j| ((i + j) % 253) as u8).collect();
        assert!(f.payload == want, "message {i} differs");
    }
    sender.join().unwrap();
}

/// SIGHUP: a new pair is used by new handshakes while open connections go on; a bad
/// file is logged and the pair in use kept.
#[test]
fn sighup_reloads_the_certificate_and_keeps_connections() {
    let pki = Pki::new("reload");
    let Some(server) = common::tls::server(&pki, &[]) else {
        return;
    };
    let old_cfg = pki.client_config();
    // Trusts the old CA and has never connected: no session to resume.
    let old_fresh = pki.client_config();
    let mut open = ws(server.addr, old_cfg.clone(), "/echo");
    open.send(true, OpCode::Text, b"before");
    assert_eq!(open.recv().unwrap().payload, b"before");

    pki.issue("renewed");
    let new_cfg = pki.client_config();
    let hup = |server: &Server| {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(server.pid(), libc::SIGHUP) };
    };
    hup(&server);
    let log_has = |server: &Server, needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if server
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no log line with {needle:?}: {:?}",
            server.log.lock().unwrap()
        );
    };
    log_has(&server, "TLS certificate reloaded");
    let mut fresh = ws(server.addr, new_cfg.clone(), "/echo");
    fresh.send(true, OpCode::Text, b"new pair");
    assert_eq!(fresh.recv().unwrap().payload, b"new pair");
    let e = connect(server.addr, old_fresh).expect_err("the old CA no longer fits");
    assert!(e.to_string().contains("certificate"), "{e}");
    // The ticket keys outlive a reload: a client with a session resumes it.
    let resumed = connect(server.addr, old_cfg).expect("resumption");
    assert_eq!(
        resumed.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    open.send(true, OpCode::Text, b"still here");
    assert_eq!(open.recv().unwrap().payload, b"still here");

    std::fs::write(pki.cert(), "not a certificate\n").unwrap();
    hup(&server);
    log_has(&server, "keeping the previous certificate");
    let mut after = ws(server.addr, new_cfg, "/echo");
    after.send(true, OpCode::Text, b"kept");
    assert_eq!(after.recv().unwrap().payload, b"kept");
    fresh.send(true, OpCode::Text, b"alive");
    assert_eq!(fresh.recv().unwrap().payload, b"alive");
}

/// A file that cannot be used stops the server at start with one line naming it.
#[test]
fn unusable_files_are_refused_at_start() {
    let pki = Pki::new("refused");
    let other = Pki::new("refused-other");
    let missing = pki.dir.join("missing.pem");
    let run = |args: &[&std::path::Path], flags: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringpush"));
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        for (flag, path) in flags.iter().zip(args) {
            cmd.arg(flag).arg(path);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        err
    };
    let both = ["--tls-cert", "--tls-key"];
    let e = run(&[&missing, &pki.key()], &both);
    assert!(e.contains("--tls-cert") && e.contains("missing.pem"), "{e}");
    let e = run(&[&pki.cert(), &missing], &both);
    assert!(e.contains("--tls-key") && e.contains("missing.pem"), "{e}");
    let e = run(&[&pki.cert(), &other.key()], &both);
    assert!(e.contains("does not fit"), "{e}");
    let e = run(&[&pki.key(), &pki.key()], &both);
    assert!(e.contains("--tls-cert") && e.contains("CERTIFICATE"), "{e}");
    let e = run(&[&pki.cert()], &["--tls-cert"]);
    assert!(e.contains("needs --tls-key"), "{e}");
}

/// Plain HTTP on the TLS port and a client that never finishes its handshake are both
/// closed (the second at --handshake-timeout); TLS clients are served meanwhile, and the
/// failures are counted.
#[test]
fn plaintext_and_stalled_clients_are_closed() {
    let pki = Pki::new("plain");
    let Some(server) = common::tls::server(&pki, &["--handshake-timeout", "3s"]) else {
        return;
    };
    let cfg = pki.client_config();
    let closed_within = |mut s: TcpStream, within: Duration| {
        s.set_read_timeout(Some(within)).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return start.elapsed(),
                // A TLS alert, maybe: not an HTTP answer.
                Ok(n) => assert!(!buf[..n].starts_with(b"HTTP/"), "plaintext answer"),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return start.elapsed();
                }
                Err(e) => panic!("not closed within {within:?}: {e}"),
            }
        }
    };
    let mut plain = TcpStream::connect(server.addr).unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let took = closed_within(plain, Duration::from_secs(5));
    // Long before --handshake-timeout.
    assert!(
        took < Duration::from_secs(2),
        "plaintext closed after {took:?}"
    );

    let stalled = TcpStream::connect(server.addr).unwrap();
    // Half a ClientHello's record header, then nothing.
    (&stalled).write_all(&[0x16, 0x03]).unwrap();
    let mut echo = ws(server.addr, cfg.clone(), "/echo");
    echo.send(true, OpCode::Text, b"served meanwhile");
    assert_eq!(echo.recv().unwrap().payload, b"served meanwhile");
    let took = closed_within(stalled, Duration::from_secs(9));
    assert!(
        took < Duration::from_secs(7),
        "stalled closed after {took:?}"
    );

    let metrics = https(
        server.addr,
        cfg,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics.contains("reason=\"tls\"} 1") || metrics.contains("reason=\"tls\"} 2"),
        "{metrics}"
    );
}

/// Over the connection cap, a TLS client completes its handshake and then reads 503
/// with Retry-After (the answer cannot go out before the handshake).
#[test]
fn over_the_cap_the_503_follows_the_handshake() {
    let pki = Pki::new("cap");
    let Some(server) = common::tls::server(&pki, &["--shards", "1", "--max-connections", "1"])
    else {
        return;
    };
    let cfg = pki.client_config();
    let mut first = ws(server.addr, cfg.clone(), "/echo");
    let resp = https(
        server.addr,
        cfg,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 503 "), "{resp}");
    assert!(resp.contains("Retry-After: "), "{resp}");
    first.send(true, OpCode::Text, b"first still served");
    assert_eq!(first.recv().unwrap().payload, b"first still served");
}

/// 2,000 idle TLS WebSockets, each after a message both ways: the server's memory per
/// connection stays small (no TLS buffers kept per connection; the benchmark at 100,000
/// is in benches/RESULTS.md). A generous bound: 8 KiB each, where keeping rustls'
/// buffered reader alone would cost 4 KiB more.
#[test]
fn idle_tls_connections_hold_no_buffers() {
    let pki = Pki::new("idle");
    let Some(server) = common::tls::server(&pki, &["--shards", "1"]) else {
        return;
    };
    let cfg = pki.client_config();
    // Warm up: the first connections allocate the shard's scratch and pools.
    let warm: Vec<_> = (0..200)
        .map(|_| ws(server.addr, cfg.clone(), "/ws/idle"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = common::rss_kib(server.pid());
    let n = 2000;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = ws(server.addr, cfg.clone(), "/echo");
        c.send(true, OpCode::Text, b"0123456789");
        assert_eq!(c.recv().unwrap().payload, b"0123456789");
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = common::rss_kib(server.pid());
    let per_conn = (after.saturating_sub(before)) * 1024 / n as u64;
    println!("server RSS {before} KiB -> {after} KiB: {per_conn} B per idle TLS WebSocket");
    assert!(per_conn < 8192, "{per_conn} B per idle TLS connection");
    drop(warm);
}

/// TLS 1.3 KeyUpdate after the handshake (RFC 8446 §4.6.3): the client refreshes its
/// keys and asks the server to do the same, three times; the server follows (its
/// record layer after the handshake is its own) and messages keep flowing both ways.
/// TLS 1.2 stays on rustls' record layer: a 1.2-only client is served too.
#[test]
fn key_updates_and_tls12() {
    let pki = Pki::new("keyupdate");
    let Some(server) = common::tls::server(&pki, &[]) else {
        return;
    };
    let mut echo = ws(server.addr, pki.client_config(), "/echo");
    assert_eq!(
        echo.s.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    for i in 0..3 {
        echo.s.conn.refresh_traffic_keys().unwrap();
        let msg = format!("after key update {i}");
        echo.send(true, OpCode::Text, msg.as_bytes());
        assert_eq!(echo.recv().unwrap().payload, msg.as_bytes());
    }

    let roots = {
        let mut r = rustls::RootCertStore::empty();
        for c in rustls::pki_types::pem::PemObject::pem_file_iter(pki.ca()).unwrap() {
            r.add(c.unwrap()).unwrap();
        }
        r
    };
    let tls12 = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut old = ws(server.addr, Arc::new(tls12), "/echo");
    assert_eq!(
        old.s.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let big = vec![7u8; 100_000];
    old.send(true, OpCode::Binary, &big);
    assert_eq!(old.recv().unwrap().payload, big);
}

/// A client that keeps asking for KeyUpdates and never reads the answers is cut once a
/// bounded number of them wait unsent (each would otherwise cost the server a record
/// for as long as the client likes); others are served meanwhile.
#[test]
fn a_key_update_flood_is_cut() {
    let pki = Pki::new("kuflood");
    let Some(server) = common::tls::server(&pki, &["--shards", "1"]) else {
        return;
    };
    let tcp = common::tcp_with(server.addr, 1, Some(4096));
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = "localhost".try_into().unwrap();
    let conn = rustls::ClientConnection::new(pki.client_config(), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // A WebSocket, so that no handshake timeout ends it.
    write!(s, "{}", common::upgrade_request("/echo", "")).unwrap();
    let (head, _) = common::read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let start = Instant::now();
    let mut cut = None;
    for _ in 0..2_000_000 {
        s.conn.refresh_traffic_keys().unwrap();
        if let Err(e) = s.conn.write_tls(&mut s.sock) {
            cut = Some(e);
            break;
        }
    }
    // Closed by the server (a reset: it had unread bytes), not a write stuck on a
    // server that stopped reading.
    let e = cut.expect("still accepted after 2,000,000 KeyUpdates");
    println!("cut after {:?}: {e}", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{e}"
    );
    let mut echo = ws(server.addr, pki.client_config(), "/echo");
    echo.send(true, OpCode::Text, b"served");
    assert_eq!(echo.recv().unwrap().payload, b"served");
}
