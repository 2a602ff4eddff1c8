//! permessage-deflate (RFC 7692) over real sockets against the real binary: negotiation,
//! compressed echo and broadcast (one shared compressed frame for every subscriber that
//! agreed, the plain frame for the others), `--compression off`, and the limits: a
//! deflate bomb closes 1009 without the server's memory growing by what it would
//! inflate to, corrupt data 1007, RSV1 without the extension 1002.

mod common;

use std::time::Duration;

use common::{Frame, Server, Ws, http};
use ringpush::proto::deflate::{Deflater, inflate};
use ringpush::proto::frame::OpCode;

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
const ANSWER: &str = "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n";

/// A 1 KB JSON message, like a market-data or chat push.
fn json_message(n: usize) -> Vec<u8> {
    let mut s = String::from("{\"events\":[");
    let mut i = 0;
    while s.len() < n - 40 {
        s.push_str(&format!(
            "{{\"id\":{},\"sym\":\"ACME{}\",\"bid\":{}.{:02},\"qty\":{}}},",
            1000 + i * 7,
            i % 5,
            100 + i % 13,
            (i * 37) % 100,
            (i * 131) % 1000
        ));
        i += 1;
    }
    s.push_str("{}]}");
    s.into_bytes()
}

fn compress(payload: &[u8]) -> Vec<u8> {
    let mut z = Vec::new();
    Deflater::new(6, 15).compress(payload, &mut z);
    z
}

/// The payload of a data frame, inflated when RSV1 is set.
fn payload(f: &Frame) -> Vec<u8> {
    if f.rsv1 {
        inflate(&f.payload, 1 << 24).expect("valid deflate from the server")
    } else {
        f.payload.clone()
    }
}

fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn negotiated_and_echoed_compressed() {
    let Some(srv) = Server::start(&["--shards", "1"]) else {
        return;
    };
    let (mut ws, head) = Ws::connect_head(srv.addr, "/echo", OFFER);
    assert!(head.contains(ANSWER), "{head}");
    // A compressed message comes back compressed, the same bytes once inflated.
    let msg = json_message(1024);
    ws.send_rsv1(true, true, OpCode::Text, &compress(&msg));
    let f = ws.recv().unwrap();
    assert!(f.rsv1 && f.fin && f.opcode == OpCode::Text, "{f:?}");
    assert!(f.payload.len() < msg.len() / 2, "{} bytes", f.payload.len());
    assert_eq!(payload(&f), msg);
    // An uncompressed one (RSV1 is per message) comes back compressed too.
    ws.send(true, OpCode::Binary, &msg);
    let f = ws.recv().unwrap();
    assert!(f.rsv1 && f.opcode == OpCode::Binary);
    assert_eq!(payload(&f), msg);
    // Under --compression-min-bytes (128): plain.
    ws.send_rsv1(true, true, OpCode::Text, &compress(b"short"));
    let f = ws.recv().unwrap();
    assert!(!f.rsv1);
    assert_eq!(f.payload, b"short");
    // A fragmented compressed message: RSV1 on the first frame only.
    let z = compress(&msg);
    let (a, b) = z.split_at(10);
    ws.send_rsv1(false, true, OpCode::Text, a);
    ws.send(true, OpCode::Ping, b"between");
    ws.send(true, OpCode::Continuation, b);
    let pong = ws.recv().unwrap();
    assert_eq!(
        (pong.opcode, pong.payload),
        (OpCode::Pong, b"between".to_vec())
    );
    assert_eq!(payload(&ws.recv().unwrap()), msg);
    ws.send(true, OpCode::Close, &1000u16.to_be_bytes());
    ws.expect_close(1000);
}

/// A compressing and a non-compressing subscriber of one topic get the same message; the
/// first as one compressed frame, the second plain; the metrics count one compression.
#[test]
fn broadcast_to_compressing_and_plain_subscribers() {
    let Some(srv) = Server::start(&["--shards", "1"]) else {
        return;
    };
    let mut z1 = Ws::connect_with(srv.addr, "/ws/mixed", OFFER);
    let mut z2 = Ws::connect_with(srv.addr, "/ws/mixed", OFFER);
    let mut plain = Ws::connect(srv.addr, "/ws/mixed");
    let mut publisher = Ws::connect(srv.addr, "/ws/mixed");
    std::thread::sleep(Duration::from_millis(100));
    let msg = json_message(1024);
    publisher.send(true, OpCode::Text, &msg);
    let (a, b, p) = (
        z1.recv().unwrap(),
        z2.recv().unwrap(),
        plain.recv().unwrap(),
    );
    assert!(a.rsv1 && b.rsv1 && !p.rsv1);
    assert_eq!(a.payload, b.payload, "one compressed frame, shared");
    assert_eq!(payload(&a), msg);
    assert_eq!(p.payload, msg);
    // Small messages are plain for everyone.
    publisher.send(true, OpCode::Text, b"{\"tiny\":1}");
    assert!(!z1.recv().unwrap().rsv1);
    assert_eq!(plain.recv().unwrap().payload, b"{\"tiny\":1}");
    let metrics = http(srv.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("ringpush_deflate_messages_total"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(
        line.ends_with(" 1"),
        "compressed once for two subscribers: {line}"
    );
}

#[test]
fn compression_off_declines() {
    let Some(srv) = Server::start(&["--shards", "1", "--compression", "off"]) else {
        return;
    };
    let (mut ws, head) = Ws::connect_head(srv.addr, "/echo", OFFER);
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    let msg = json_message(1024);
    ws.send(true, OpCode::Text, &msg);
    let f = ws.recv().unwrap();
    assert!(!f.rsv1);
    assert_eq!(f.payload, msg);
    // RSV1 without the extension: 1002.
    ws.send_rsv1(true, true, OpCode::Text, &compress(&msg));
    ws.expect_close(1002);
}

/// Bad or unusable offers are declined, never a failed handshake; the first acceptable
/// offer of several (over several header lines) is taken.
#[test]
fn offers() {
    let Some(srv) = Server::start(&["--shards", "1"]) else {
        return;
    };
    for bad in [
        "Sec-WebSocket-Extensions: permessage-deflate; nonsense\r\n",
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8\r\n",
        "Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n",
        "Sec-WebSocket-Extensions: ;;;,,\"\r\n",
    ] {
        let (mut ws, head) = Ws::connect_head(srv.addr, "/echo", bad);
        assert!(!head.contains("Sec-WebSocket-Extensions"), "{bad}: {head}");
        ws.send_rsv1(true, true, OpCode::Text, &compress(b"x"));
        ws.expect_close(1002);
    }
    let two_lines = "Sec-WebSocket-Extensions: permessage-deflate; bogus\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n";
    let (_, head) = Ws::connect_head(srv.addr, "/echo", two_lines);
    assert!(
        head.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10\r\n"),
        "{head}"
    );
}

/// A deflate bomb: 64 KB that inflate to 64 MiB, on four connections at once, against
/// the default 1 MiB limit. Each closes 1009 and the server's peak RSS grows by far less
/// than one bomb's inflated size (the inflate stops at the limit).
#[test]
fn bomb_closes_1009_with_bounded_memory() {
    let Some(srv) = Server::start(&["--shards", "1"]) else {
        return;
    };
    let mut bomb = Vec::new();
    Deflater::new(9, 15).compress(&vec![b'a'; 64 << 20], &mut bomb);
    assert!(bomb.len() < 100 * 1024, "{}", bomb.len());
    let mut conns: Vec<Ws> = (0..4)
        .map(|_| Ws::connect_with(srv.addr, "/echo", OFFER))
        .collect();
    let before = peak_rss_kib(srv.pid());
    for ws in &mut conns {
        ws.send_rsv1(true, true, OpCode::Binary, &bomb);
    }
    for ws in &mut conns {
        ws.expect_close(1009);
    }
    let grown_mib = (peak_rss_kib(srv.pid()) - before) / 1024;
    assert!(grown_mib < 24, "peak RSS grew {grown_mib} MiB");
    // Exactly at the limit is fine.
    let mut ws = Ws::connect_with(srv.addr, "/echo", OFFER);
    let full = vec![b'b'; 1 << 20];
    ws.send_rsv1(true, true, OpCode::Binary, &compress(&full));
    assert_eq!(payload(&ws.recv().unwrap()), full);
    let mut over = full;
    over.push(b'b');
    ws.send_rsv1(true, true, OpCode::Binary, &compress(&over));
    ws.expect_close(1009);
}

#[test]
fn corrupt_and_misplaced_rsv1() {
    let Some(srv) = Server::start(&["--shards", "1"]) else {
        return;
    };
    // Not deflate data (a reserved block type): 1007.
    let mut ws = Ws::connect_with(srv.addr, "/echo", OFFER);
    ws.send_rsv1(true, true, OpCode::Binary, &[0xff, 0xff, 0xff, 0xff]);
    ws.expect_close(1007);
    // Valid deflate, invalid UTF-8 in a text message: 1007.
    let mut ws = Ws::connect_with(srv.addr, "/echo", OFFER);
    ws.send_rsv1(true, true, OpCode::Text, &compress(b"\xff\xfe\xfd"));
    ws.expect_close(1007);
    // RSV1 on a control frame or a continuation: 1002 (RFC 7692 §6.1).
    let mut ws = Ws::connect_with(srv.addr, "/echo", OFFER);
    ws.send_rsv1(true, true, OpCode::Ping, b"");
    ws.expect_close(1002);
    let mut ws = Ws::connect_with(srv.addr, "/echo", OFFER);
    ws.send(false, OpCode::Text, b"a");
    ws.send_rsv1(true, true, OpCode::Continuation, b"b");
    ws.expect_close(1002);
    // Without negotiation: 1002.
    let mut ws = Ws::connect(srv.addr, "/echo");
    ws.send_rsv1(true, true, OpCode::Text, &compress(b"hello"));
    ws.expect_close(1002);
}

#[test]
fn dedicated_is_refused_with_one_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringpush"))
        .args(["serve", "--compression", "dedicated", "--check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not supported yet"), "{err}");
    assert!(err.contains("--compression"), "{err}");
}
