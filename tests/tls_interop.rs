//! Real clients over TLS (`serve --tls-cert --tls-key`) against an authority made by the
//! test (tests/common/tls.rs): Python `websockets` and `httpx-sse`, Node `ws` and
//! `eventsource`, and Chromium loading the demo page over https. Each runs the same script
//! as the plain interop tests (tests/interop.rs, tests/sse_interop.rs, tests/browser.rs)
//! with `--ca FILE`, which makes it use wss:// and https:// and trust that authority
//! (Chromium: `--ignore-certificate-errors`, with the page's certificate checked to be the
//! authority's). Also: a plain-HTTP client on the TLS port gets no HTTP answer and a
//! closed connection, at once, and the server goes on serving the others.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::tls::{self, Pki};
use common::{Server, run_peer};

const CHROMIUM: &str = "/usr/bin/chromium";

/// `program script ADDR [extra...] --ca CA` (see `run_peer`).
fn run_tls_peer(program: &str, script: &str, srv: &Server, pki: &Pki, extra: &[&str]) {
    let (addr, ca) = (srv.addr.to_string(), pki.ca());
    let mut args = vec![addr.as_str()];
    args.extend_from_slice(extra);
    args.extend(["--ca", ca.to_str().unwrap()]);
    run_peer(program, script, &args);
}

/// Python `websockets` over wss: text and binary echo up to 500 KB (fragmented messages,
/// ping/pong, the close handshake), pub/sub between two clients, 1009 past the limit.
#[test]
fn python_websockets_over_wss() {
    let pki = Pki::new("py-wss");
    let Some(srv) = tls::server(&pki, &["--shards", "2"]) else {
        return;
    };
    run_tls_peer("python3", "tests/interop/ws_client.py", &srv, &pki, &[]);
}

/// Node `ws` over wss, trusting the authority through its `ca` option: the same echo and
/// pub/sub checks.
#[test]
fn node_ws_over_wss() {
    let pki = Pki::new("node-wss");
    let Some(srv) = tls::server(&pki, &["--shards", "2"]) else {
        return;
    };
    run_tls_peer("node", "tests/interop/ws_client.mjs", &srv, &pki, &[]);
}

/// Python `httpx-sse` over https: events in order with their ids, binary messages from a
/// wss client, resume with Last-Event-ID (header and query) giving exactly the missed
/// events, two topics on a stream, `event: reset` past a 32-event history.
#[test]
fn python_httpx_sse_over_https() {
    let pki = Pki::new("py-https");
    let Some(srv) = tls::server(
        &pki,
        &["--shards", "2", "--sse-heartbeat", "1s", "--history", "32"],
    ) else {
        return;
    };
    run_tls_peer(
        "python3",
        "tests/interop/sse_client.py",
        &srv,
        &pki,
        &["32"],
    );
}

/// Node `eventsource` over https (Node's fetch trusting the authority through
/// NODE_EXTRA_CA_CERTS): the stream is cut at a TCP proxy that passes TLS through, and
/// the library's own reconnect (a new handshake) resumes with Last-Event-ID and gets
/// exactly the events published meanwhile.
#[test]
fn node_eventsource_over_https() {
    let pki = Pki::new("node-https");
    let Some(srv) = tls::server(
        &pki,
        &[
            "--shards",
            "2",
            "--sse-heartbeat",
            "1s",
            "--sse-retry",
            "500ms",
        ],
    ) else {
        return;
    };
    run_tls_peer("node", "tests/interop/sse_client.mjs", &srv, &pki, &[]);
}

/// The demo page at https://127.0.0.1:PORT/ in Chromium: its wss:// chat with a Node
/// `ws` peer, its EventSource feed, and after the connections are cut at a proxy the
/// browser's own EventSource reconnect (a new TLS handshake) carries Last-Event-ID and
/// the feed shows every event exactly once, in order.
#[test]
fn demo_page_over_https_in_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: scripts/test.sh installs it (apt-get install chromium)"
    );
    let pki = Pki::new("chromium");
    let Some(srv) = tls::server(&pki, &["--shards", "2", "--sse-retry", "500ms"]) else {
        return;
    };
    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/demo-tls-screenshot.png");
    let _ = std::fs::remove_file(&screenshot);
    run_tls_peer("node", "tests/browser/demo.mjs", &srv, &pki, &[]);
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
}

/// Reads an HTTP head and then until `needle` shows up in the body.
fn read_until(s: &mut impl Read, needle: &str) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = s
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("waiting for {needle:?}: {e}"));
        assert!(n > 0, "the stream ended before {needle:?}");
        got.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Plain HTTP (a GET, a WebSocket upgrade, a publish) on the TLS port: no HTTP answer, at
/// most a TLS alert, and the connection closed at once rather than left waiting for a
/// handshake. Meanwhile an event stream opened over TLS before them keeps streaming, and
/// new TLS clients are served.
#[test]
fn plain_http_on_the_tls_port_is_closed() {
    let pki = Pki::new("plain");
    let Some(srv) = tls::server(&pki, &["--shards", "2"]) else {
        return;
    };
    let config = pki.client_config();
    let publish = |body: &str| {
        let answer = tls::https(
            srv.addr,
            config.clone(),
            &format!(
                "POST /publish/plain HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let id = answer
            .split("\"id\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        id.unwrap_or_else(|| panic!("no id in {answer}")).to_owned()
    };
    // The stream resumes after a first event, so it gets whatever is published next.
    let first = publish("first");
    let mut stream = tls::connect(srv.addr, config.clone()).expect("TLS handshake");
    write!(
        stream,
        "GET /sse/plain HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {first}\r\n\r\n"
    )
    .unwrap();
    let head = read_until(&mut stream, "\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let requests = [
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        common::upgrade_request("/ws/plain", ""),
        "POST /publish/plain HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".to_owned(),
    ];
    for request in &requests {
        let t0 = Instant::now();
        let mut plain = TcpStream::connect(srv.addr).unwrap();
        // A generous bound: the server must close, not wait for the client to give up.
        plain
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        plain.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let end = plain.read_to_end(&mut answer);
        let first = request.lines().next().unwrap();
        match end {
            Ok(_) => {}
            // A reset (the server closed with our bytes unread) is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("{first}: no close within {:?}: {e}", t0.elapsed()),
        }
        // Nothing but TLS records (an alert: content type 21) may come back.
        assert!(
            answer.is_empty() || answer[0] == 21,
            "{first}: answered {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
        eprintln!(
            "{first}: {} bytes back, closed after {:?}",
            answer.len(),
            t0.elapsed()
        );
    }

    // The plain publish reached nobody; one over TLS reaches the stream opened before.
    publish("over TLS only");
    let events = read_until(&mut stream, "data: over TLS only\n");
    assert!(!events.contains("hello"), "{events}");
    let page = tls::https(
        srv.addr,
        config,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
}
