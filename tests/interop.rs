//! Interop with real peer clients nobody here wrote: Python `websockets` and Node `ws`
//! (installed by scripts/test.sh), with and without permessage-deflate, plus 30,000 concurrent connections from Python
//! processes on many 127.0.x.y source addresses.

mod common;

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, Ws, run_peer};
use ringpush::proto::frame::OpCode;

#[test]
fn python_websockets_client() {
    let Some(srv) = Server::start(&["--shards", "2"]) else {
        return;
    };
    run_peer(
        "python3",
        "tests/interop/ws_client.py",
        &[&srv.addr.to_string()],
    );
}

#[test]
fn node_ws_client() {
    let Some(srv) = Server::start(&["--shards", "2"]) else {
        return;
    };
    run_peer(
        "node",
        "tests/interop/ws_client.mjs",
        &[&srv.addr.to_string()],
    );
}

/// permessage-deflate with Python `websockets` (it offers the extension by default):
/// negotiated, messages small and large round-trip both ways, a compressing and a plain
/// subscriber get the same broadcast, 1009 past the limit once inflated.
#[test]
fn python_websockets_deflate() {
    let Some(srv) = Server::start(&["--shards", "2"]) else {
        return;
    };
    run_peer(
        "python3",
        "tests/interop/ws_deflate.py",
        &[&srv.addr.to_string()],
    );
}

/// The same with Node `ws` (its default offer, every message compressed).
#[test]
fn node_ws_deflate() {
    let Some(srv) = Server::start(&["--shards", "2"]) else {
        return;
    };
    run_peer(
        "node",
        "tests/interop/ws_deflate.mjs",
        &[&srv.addr.to_string()],
    );
}

/// Starts one `many_clients.py` process per source prefix, each holding `per_process`
/// connections to `/ws/{topic}`, and waits until all are open.
fn open_many(
    srv: &Server,
    topic: &str,
    prefixes: &[&str],
    per_process: usize,
) -> Vec<(Child, Lines<BufReader<ChildStdout>>)> {
    let mut clients: Vec<_> = prefixes
        .iter()
        .map(|prefix| {
            let mut child = Command::new("python3")
                .args([
                    "tests/interop/many_clients.py",
                    &srv.addr.to_string(),
                    topic,
                    &per_process.to_string(),
                    prefix,
                ])
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3");
            let lines = BufReader::new(child.stdout.take().unwrap()).lines();
            (child, lines)
        })
        .collect();
    for (_, lines) in clients.iter_mut() {
        let line = lines.next().expect("client output").unwrap();
        assert_eq!(line, format!("ready {per_process}"));
    }
    clients
}

/// Publishes one message to `topic` and checks every client process received it.
fn broadcast_reaches_all(
    srv: &Server,
    topic: &str,
    clients: &mut [(Child, Lines<BufReader<ChildStdout>>)],
    per_process: usize,
) {
    let mut publisher = Ws::connect(srv.addr, &format!("/ws/{topic}"));
    publisher.send(true, OpCode::Text, b"broadcast to everyone");
    for (child, lines) in clients.iter_mut() {
        let line = lines.next().expect("client output").unwrap();
        assert_eq!(line, format!("received {per_process}"));
        assert!(child.wait().unwrap().success());
    }
}

/// 30,000 concurrent WebSockets to one server process with ONE shard, more than its
/// RLIMIT_NOFILE (20,000 here) lets one fixed-file table hold, so the shard must add a
/// table (two client processes, 40 source addresses): every one receives a broadcast,
/// and the server's fd count stays under 100.
#[test]
fn thirty_thousand_connections_on_one_shard() {
    let Some(srv) = Server::start(&["--shards", "1"]) else {
        return;
    };
    let t0 = Instant::now();
    let mut clients = open_many(&srv, "big", &["127.0.1", "127.0.2"], 15_000);
    eprintln!("30,000 connections open in {:?}", t0.elapsed());
    let fds = srv.fd_count();
    assert!(
        fds < 100,
        "server has {fds} open fds with 30,000 connections"
    );
    let t1 = Instant::now();
    broadcast_reaches_all(&srv, "big", &mut clients, 15_000);
    eprintln!("broadcast reached 30,000 in {:?}", t1.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(120));
}

/// With RLIMIT_NOFILE at 256, a table holds at most 256 descriptors: 3,000 connections
/// on one shard need a dozen tables. All are served (handshake, broadcast), the fd
/// count stays small, and a graceful shutdown drains every table and exits 0.
#[test]
fn many_tables_when_rlimit_is_small() {
    let Some(mut srv) = Server::start_limited(&["--shards", "1"], Some(256)) else {
        return;
    };
    let mut clients = open_many(&srv, "tables", &["127.0.3", "127.0.4"], 1_500);
    let fds = srv.fd_count();
    assert!(fds < 60, "server has {fds} open fds with 3,000 connections");
    // An echo on a connection in the newest table works too.
    let mut ws = Ws::connect(srv.addr, "/echo");
    ws.send(true, OpCode::Text, b"late");
    let f = ws.recv().expect("echo");
    assert_eq!((f.opcode, &f.payload[..]), (OpCode::Text, &b"late"[..]));
    broadcast_reaches_all(&srv, "tables", &mut clients, 1_500);
    assert!(srv.terminate(Duration::from_secs(15)).success());
}
