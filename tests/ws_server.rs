//! The WebSocket server end to end: the real binary, real sockets on 127.0.0.1, a raw
//! client that sends exact bytes. Every rule of DESIGN.md's "WebSocket rules".

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Server, Ws, http, read_head, tcp_from, upgrade_request};
use ringpush::proto::frame::OpCode;

#[test]
fn echo_every_size_and_opcode() {
    let Some(srv) = Server::start(&["--shards", "2"]) else {
        return;
    };
    let mut ws = Ws::connect(srv.addr, "/echo");
    for size in [0usize, 1, 125, 126, 127, 65535, 65536, 300_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        ws.send(true, OpCode::Binary, &payload);
        let f = ws.recv().unwrap();
        assert_eq!(
            (f.fin, f.opcode, f.payload.len()),
            (true, OpCode::Binary, size)
        );
        assert_eq!(f.payload, payload, "size {size}");
    }
    ws.send(true, OpCode::Text, "héllo".as_bytes());
    assert_eq!(ws.recv().unwrap().payload, "héllo".as_bytes());
}

#[test]
fn fragments_ping_and_close() {
    let Some(srv) = Server::start(&[]) else {
        return;
    };
    let mut ws = Ws::connect(srv.addr, "/echo");
    // A fragmented text message with a ping between its fragments.
    ws.send(false, OpCode::Text, b"frag");
    ws.send(true, OpCode::Ping, b"still there?");
    ws.send(false, OpCode::Continuation, b"men");
    ws.send(true, OpCode::Continuation, b"ted");
    let pong = ws.recv().unwrap();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (OpCode::Pong, &b"still there?"[..])
    );
    let msg = ws.recv().unwrap();
    assert_eq!(
        (msg.opcode, msg.payload.as_slice()),
        (OpCode::Text, &b"fragmented"[..])
    );
    // The close handshake echoes our code; then the server closes TCP.
    ws.send(true, OpCode::Close, b"\x0f\xa0bye"); // 4000
    let f = ws.recv().unwrap();
    assert_eq!(
        (f.opcode, f.payload.as_slice()),
        (OpCode::Close, &b"\x0f\xa0"[..])
    );
    assert_eq!(ws.recv(), None);
}

/// Each protocol violation gets its close code, and the server closes the connection.
#[test]
fn violations_get_close_codes() {
    let Some(srv) = Server::start(&["--max-message-bytes", "1000"]) else {
        return;
    };
    let masked = |b0: u8, payload: &[u8]| {
        let mut f = vec![b0, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked frame", vec![0x81, 0x02, b'h', b'i'], 1002),
        ("RSV1 without extension", masked(0xc1, b"x"), 1002),
        ("reserved opcode 3", masked(0x83, b""), 1002),
        ("fragmented ping", masked(0x09, b""), 1002),
        (
            "126-byte ping",
            [vec![0x89, 0xfe, 0, 126, 0, 0, 0, 0], vec![0; 126]].concat(),
            1002,
        ),
        ("continuation without start", masked(0x80, b"x"), 1002),
        (
            "text inside fragmented",
            [masked(0x01, b"a"), masked(0x81, b"b")].concat(),
            1002,
        ),
        ("1-byte close", masked(0x88, b"\x03"), 1002),
        ("close code 1005", masked(0x88, b"\x03\xed"), 1002),
        ("close code 999", masked(0x88, b"\x03\xe7"), 1002),
        ("invalid UTF-8 text", masked(0x81, b"\xce\xba\xff"), 1007),
        (
            "invalid UTF-8 close reason",
            masked(0x88, b"\x03\xe8\xff"),
            1007,
        ),
        (
            "message over the limit, from the header",
            vec![0x82, 0xfe, 0x03, 0xe9],
            1009,
        ),
        (
            "fragments over the limit",
            [
                vec![0x02, 0xfe, 0x01, 0xf4, 0, 0, 0, 0],
                vec![0; 500],
                vec![0x80, 0xfe, 0x01, 0xf5, 0, 0, 0, 0],
            ]
            .concat(),
            1009,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut ws = Ws::connect(srv.addr, "/echo");
        ws.send_raw(&bytes);
        let f = ws
            .recv()
            .unwrap_or_else(|| panic!("{what}: no close frame"));
        assert_eq!(f.opcode, OpCode::Close, "{what}");
        assert_eq!(
            u16::from_be_bytes([f.payload[0], f.payload[1]]),
            code,
            "{what}"
        );
        // The server half-closes after its close frame: EOF follows promptly.
        let t = Instant::now();
        assert_eq!(ws.recv(), None, "{what}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{what}: EOF took {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn handshake_errors() {
    let Some(srv) = Server::start(&["--allowed-origin", "https://ok.example"]) else {
        return;
    };
    let r = http(
        srv.addr,
        &upgrade_request("/echo", "").replace("Version: 13", "Version: 8"),
    );
    assert!(
        r.starts_with("HTTP/1.1 426 ") && r.contains("Sec-WebSocket-Version: 13\r\n"),
        "{r}"
    );
    let r = http(
        srv.addr,
        &upgrade_request("/echo", "")
            .replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
    );
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    let r = http(
        srv.addr,
        &upgrade_request("/echo", "").replace("Upgrade: websocket\r\n", ""),
    );
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    let r = http(
        srv.addr,
        &upgrade_request("/echo", "Origin: https://evil.example\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 403 "), "{r}");
    let r = http(srv.addr, &upgrade_request("/ws/bad topic", ""));
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    let r = http(srv.addr, &upgrade_request("/nowhere", ""));
    assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
    let r = http(
        srv.addr,
        &format!("GET /healthz HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000)),
    );
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    let r = http(srv.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 ") && r.ends_with("ok\n"), "{r}");
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.write_all(upgrade_request("/echo", "Origin: https://ok.example\r\n").as_bytes())
        .unwrap();
    assert!(read_head(&mut s).0.starts_with("HTTP/1.1 101 "));
}

/// With 4 shards, subscribers from 16 source addresses land on different shards; one
/// publish reaches all of them, unchanged and with its opcode, and not the sender.
#[test]
fn pubsub_across_shards_excludes_sender() {
    let Some(srv) = Server::start(&["--shards", "4"]) else {
        return;
    };
    let mut subs: Vec<Ws> = (0..16)
        .map(|i| Ws::connect_from(srv.addr, "/ws/room:1", 10 + i))
        .collect();
    let mut other = Ws::connect_from(srv.addr, "/ws/room:2", 40);
    let mut publisher = Ws::connect_from(srv.addr, "/ws/room:1", 50);
    publisher.send(true, OpCode::Binary, &[0, 1, 2, 255]);
    publisher.send(true, OpCode::Text, b"second");
    for (i, s) in subs.iter_mut().enumerate() {
        let f = s.recv().unwrap();
        assert_eq!(
            (f.opcode, f.payload.as_slice()),
            (OpCode::Binary, &[0u8, 1, 2, 255][..]),
            "subscriber {i}"
        );
        let f = s.recv().unwrap();
        assert_eq!(
            (f.opcode, f.payload.as_slice()),
            (OpCode::Text, &b"second"[..]),
            "subscriber {i}, in order"
        );
    }
    // Neither the sender nor another topic's subscriber got anything: a ping round trip
    // proves their queues are empty (the pong would come after any queued message).
    for ws in [&mut publisher, &mut other] {
        ws.send(true, OpCode::Ping, b"probe");
        let f = ws.recv().unwrap();
        assert_eq!(
            (f.opcode, f.payload.as_slice()),
            (OpCode::Pong, &b"probe"[..])
        );
    }
    // A subscriber that leaves stops receiving; the others still do.
    let mut gone = subs.pop().unwrap();
    gone.send(true, OpCode::Close, b"\x03\xe8");
    assert_eq!(gone.recv().unwrap().opcode, OpCode::Close);
    publisher.send(true, OpCode::Text, b"third");
    for s in subs.iter_mut() {
        assert_eq!(s.recv().unwrap().payload, b"third");
    }
}

/// A silent peer is pinged after the interval and dropped after the pong timeout; a
/// peer that answers survives.
#[test]
fn heartbeats_drop_dead_peers() {
    let Some(srv) = Server::start(&["--ping-interval", "500ms", "--pong-timeout", "500ms"]) else {
        return;
    };
    let mut silent = Ws::connect(srv.addr, "/echo");
    let mut live = Ws::connect(srv.addr, "/echo");
    // The live peer answers every ping, from the start, for 3 intervals + timeouts.
    let live = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_millis(3000);
        let mut pings = 0;
        while Instant::now() < until {
            live.s
                .set_read_timeout(Some(
                    until
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                ))
                .unwrap();
            match live.try_recv() {
                Some(f) if f.opcode == OpCode::Ping => {
                    pings += 1;
                    live.send(true, OpCode::Pong, &f.payload);
                }
                Some(f) => panic!("unexpected {f:?}"),
                None => {}
            }
        }
        live.s
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        live.send(true, OpCode::Text, b"alive");
        (pings, live.recv().map(|f| f.payload))
    });
    let t0 = Instant::now();
    let ping = silent.recv().unwrap();
    assert_eq!(ping.opcode, OpCode::Ping);
    assert_eq!(silent.recv(), None, "dropped without a pong");
    let dropped_after = t0.elapsed();
    assert!(
        dropped_after >= Duration::from_millis(900) && dropped_after < Duration::from_secs(3),
        "{dropped_after:?}"
    );
    let (pings, echo) = live.join().unwrap();
    assert!(pings >= 2, "{pings} pings");
    assert_eq!(
        echo.as_deref(),
        Some(&b"alive"[..]),
        "the live peer survives"
    );
}

/// Over --max-connections a new connection gets 503 with Retry-After; the existing ones
/// are unaffected.
#[test]
fn admission_control() {
    let Some(srv) = Server::start(&["--shards", "1", "--max-connections", "2"]) else {
        return;
    };
    let mut a = Ws::connect(srv.addr, "/echo");
    let mut b = Ws::connect(srv.addr, "/echo");
    let r = http(srv.addr, &upgrade_request("/echo", ""));
    assert!(
        r.starts_with("HTTP/1.1 503 ") && r.contains("Retry-After: "),
        "{r}"
    );
    for ws in [&mut a, &mut b] {
        ws.send(true, OpCode::Text, b"still here");
        assert_eq!(ws.recv().unwrap().payload, b"still here");
    }
    drop(a);
    // A slot frees when the old connection is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = http(srv.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        if r.starts_with("HTTP/1.1 200 ") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed: {r}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn handshake_timeout_closes() {
    let Some(srv) = Server::start(&["--handshake-timeout", "300ms"]) else {
        return;
    };
    let mut s = tcp_from(srv.addr, 1);
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without a response");
    assert!(
        t0.elapsed() >= Duration::from_millis(250) && t0.elapsed() < Duration::from_secs(3),
        "{:?}",
        t0.elapsed()
    );
}

/// SIGTERM: every WebSocket gets close 1001, the server drains and exits 0.
#[test]
fn graceful_shutdown() {
    let Some(mut srv) = Server::start(&["--shards", "2", "--drain-timeout", "3s"]) else {
        return;
    };
    let mut clients: Vec<Ws> = (0..6)
        .map(|i| Ws::connect_from(srv.addr, "/echo", 60 + i))
        .collect();
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(srv.pid(), libc::SIGTERM) };
    for ws in clients.iter_mut() {
        ws.expect_close(1001);
    }
    let status = srv.terminate(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
}

/// Connections live in fixed-file tables, not the process fd table.
#[test]
fn connections_do_not_use_process_fds() {
    let Some(srv) = Server::start(&["--shards", "2"]) else {
        return;
    };
    let before = srv.fd_count();
    let mut conns: Vec<Ws> = (0..2000)
        .map(|i| Ws::connect_from(srv.addr, "/echo", 2 + (i % 200) as u8))
        .collect();
    let during = srv.fd_count();
    assert!(
        during < 100 && during <= before + 2,
        "server fds: {before} before, {during} with 2000 connections"
    );
    conns[1999].send(true, OpCode::Text, b"last");
    assert_eq!(conns[1999].recv().unwrap().payload, b"last");
}
