//! Interop with real peer clients nobody here wrote: Python `websockets` and Node `ws`
//! (installed by scripts/test.sh), plus 30,000 concurrent connections from Python
//! processes on many 127.0.x.y source addresses.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, Ws};
use ringpush::proto::frame::OpCode;

fn run_client(program: &str, script: &str, addr: &str) {
    let out = Command::new(program)
        .arg(script)
        .arg(addr)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test.sh installs it)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "{program} {script}: {}\n{stdout}\n{stderr}",
        out.status
    );
}

#[test]
fn python_websockets_client() {
    let Some(srv) = Server::start(&["--shards", "2"]) else {
        return;
    };
    run_client(
        "python3",
        "tests/interop/ws_client.py",
        &srv.addr.to_string(),
    );
}

#[test]
fn node_ws_client() {
    let Some(srv) = Server::start(&["--shards", "2"]) else {
        return;
    };
    run_client("node", "tests/interop/ws_client.mjs", &srv.addr.to_string());
}

/// 30,000 concurrent WebSockets to one server process (two client processes, 40 source
/// addresses): every one receives a broadcast, and the server's fd count stays under 100.
#[test]
fn thirty_thousand_connections() {
    let Some(srv) = Server::start(&["--shards", "2"]) else {
        return;
    };
    let per_process = 15_000;
    let mut clients: Vec<_> = ["127.0.1", "127.0.2"]
        .iter()
        .map(|prefix| {
            let mut child = Command::new("python3")
                .args([
                    "tests/interop/many_clients.py",
                    &srv.addr.to_string(),
                    "big",
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
    let t0 = Instant::now();
    for (_, lines) in clients.iter_mut() {
        let line = lines.next().expect("client output").unwrap();
        assert_eq!(line, format!("ready {per_process}"));
    }
    eprintln!("30,000 connections open in {:?}", t0.elapsed());
    let fds = srv.fd_count();
    assert!(
        fds < 100,
        "server has {fds} open fds with 30,000 connections"
    );
    let mut publisher = Ws::connect(srv.addr, "/ws/big");
    let t1 = Instant::now();
    publisher.send(true, OpCode::Text, b"broadcast to 30k");
    for (child, lines) in clients.iter_mut() {
        let line = lines.next().expect("client output").unwrap();
        assert_eq!(line, format!("received {per_process}"));
        assert!(child.wait().unwrap().success());
    }
    eprintln!("broadcast reached 30,000 in {:?}", t1.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(120));
}
