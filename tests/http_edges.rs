//! The edges of HTTP/1.1 over real sockets against the real server (issue 11, "smaller
//! points"): the challenge of a 401, request targets in absolute and asterisk form,
//! other HTTP versions, and over-long event ids, which must reset like any unknown id.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Server, http, read_head, tcp_from};
use ringpush::proto::limits::MAX_EVENT_ID_LEN;
use ringpush::proto::sse::{EventParser, ParsedEvent};

/// The status line of a response.
fn status_line(resp: &str) -> &str {
    resp.lines().next().unwrap_or_default()
}

/// `POST /publish/{topic}` (no token): the id from `{"id":"..."}`.
fn publish(addr: SocketAddr, topic: &str, body: &str) -> String {
    let resp = http(
        addr,
        &format!(
            "POST /publish/{topic} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 200 "), "{resp}");
    let v: serde_json::Value =
        serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// Opens an event stream with `request` (a whole head) and returns the first event.
fn first_event(addr: SocketAddr, request: &str) -> ParsedEvent {
    let mut s = tcp_from(addr, 1);
    s.write_all(request.as_bytes()).unwrap();
    let (head, rest) = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.contains("Content-Type: text/event-stream\r\n"),
        "{head}"
    );
    let mut parser = EventParser::new();
    parser.feed(&rest);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(ev) = parser.next_event() {
            return ev;
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("an event within 5 s");
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("an event within 5 s");
        assert!(n > 0, "EOF before an event");
        parser.feed(&buf[..n]);
    }
}

/// RFC 9110 §11.6.1: "A server generating a 401 (Unauthorized) response MUST send a
/// WWW-Authenticate header field containing at least one challenge."
#[test]
fn unauthorized_carries_a_bearer_challenge() {
    let Some(srv) = Server::start(&["--publish-token", "s3cret"]) else {
        return;
    };
    for auth in [
        "",
        "Authorization: Bearer wrong\r\n",
        "Authorization: Basic czNjcmV0\r\n",
    ] {
        let resp = http(
            srv.addr,
            &format!("POST /publish/t HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\n\r\n"),
        );
        assert_eq!(status_line(&resp), "HTTP/1.1 401 Unauthorized", "{auth:?}");
        assert!(
            resp.contains("\r\nWWW-Authenticate: Bearer realm=\"ringpush\"\r\n"),
            "{resp}"
        );
    }
    let ok = http(
        srv.addr,
        "POST /publish/t HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 1\r\n\r\nx",
    );
    assert!(ok.starts_with("HTTP/1.1 200 "), "{ok}");
    assert!(!ok.contains("WWW-Authenticate"), "{ok}");
    let other = http(srv.addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(other.starts_with("HTTP/1.1 404 "), "{other}");
    assert!(
        !other.contains("WWW-Authenticate"),
        "only a 401 has it: {other}"
    );
}

/// RFC 9112 §3.2.2: "A server MUST accept the absolute-form in requests"; it is routed
/// by its path and query. §3.2: Host is still required in HTTP/1.1. Only http and https
/// name a resource here; asterisk-form is for OPTIONS only (§3.2.4).
#[test]
fn request_target_forms() {
    let Some(srv) = Server::start(&["--shards", "2"]) else {
        return;
    };
    let ask = |req: &str| http(srv.addr, req);
    for req in [
        "GET http://localhost/healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "GET HTTPS://example.com:8443/healthz?x=1 HTTP/1.1\r\nHost: other\r\n\r\n",
        "GET http://127.0.0.1/healthz HTTP/1.0\r\n\r\n",
    ] {
        let resp = ask(req);
        assert_eq!(status_line(&resp), "HTTP/1.1 200 OK", "{req:?}: {resp}");
    }
    assert!(ask("GET http://h/healthz HTTP/1.1\r\nHost: h\r\n\r\n").ends_with("\r\n\r\nok\n"));
    // HEAD too (its response has a length but no body, so read the head alone).
    let mut s = tcp_from(srv.addr, 1);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"HEAD http://h/healthz HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let (head, _) = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    // Routed by the path: the query of an absolute-form poll is read too.
    let id = publish(srv.addr, "abs", "one");
    let resp = ask(&format!(
        "GET http://h/poll/abs?since={id} HTTP/1.1\r\nHost: h\r\n\r\n"
    ));
    assert!(resp.starts_with("HTTP/1.1 200 "), "{resp}");
    assert!(resp.contains(&format!("\"next\":\"{id}\"")), "{resp}");
    let resp = ask("GET http://h/nope HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 404 "), "{resp}");
    for req in [
        "GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET ws://x/echo HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET http:///healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET http://user@x/healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET http://x/healthz HTTP/1.1\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
    ] {
        let resp = ask(req);
        assert_eq!(status_line(&resp), "HTTP/1.1 400 Bad Request", "{req:?}");
        assert!(resp.contains("\r\nConnection: close\r\n"), "{resp}");
    }
    // OPTIONS * (server-wide options): no such resource here, a clear 404, not a crash.
    let resp = ask("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_line(&resp), "HTTP/1.1 404 Not Found", "{resp}");
    // The server is fine afterwards.
    assert!(ask("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 200 "));
}

/// RFC 9110 §15.6.6: another major version is 505; HTTP/1.0 and 1.1 work as before; a
/// higher minor version is served as HTTP/1.1 (§6.2). The refusals are counted.
#[test]
fn other_http_versions() {
    let Some(srv) = Server::start(&[]) else {
        return;
    };
    let ask = |req: &str| http(srv.addr, req);
    for req in [
        "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n",
        "GET /healthz HTTP/3.0\r\nHost: x\r\n\r\n",
        "GET /healthz HTTP/2.0\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let resp = ask(req);
        assert_eq!(
            status_line(&resp),
            "HTTP/1.1 505 HTTP Version Not Supported",
            "{req:?}"
        );
        assert!(
            resp.ends_with("\r\n\r\nonly HTTP/1.0 and HTTP/1.1 are supported\n"),
            "{resp}"
        );
    }
    for req in [
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /healthz HTTP/1.0\r\n\r\n",
        "GET /healthz HTTP/1.2\r\nHost: x\r\n\r\n",
    ] {
        let resp = ask(req);
        assert_eq!(status_line(&resp), "HTTP/1.1 200 OK", "{req:?}");
    }
    for req in [
        "GET /healthz HTTP/2\r\nHost: x\r\n\r\n",
        "GET /healthz HTTP/1.1.1\r\nHost: x\r\n\r\n",
        "GET /healthz http/1.1\r\nHost: x\r\n\r\n",
    ] {
        let resp = ask(req);
        assert_eq!(status_line(&resp), "HTTP/1.1 400 Bad Request", "{req:?}");
    }
    // Sent a byte at a time, the request line alone does not decide: the head does.
    let mut s = tcp_from(srv.addr, 2);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for b in b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n" {
        s.write_all(&[*b]).unwrap();
    }
    let (head, _) = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 505 "), "{head}");
    let m = ask("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(m.contains("reason=\"version_not_supported\""), "{m}");
}

/// An id longer than MAX_EVENT_ID_LEN is not ours, so the client's position is unknown:
/// `event: reset` (SSE) or `"reset":true` (poll), as for any unknown id, never the
/// silence of a client that sent no id.
#[test]
fn over_long_event_ids_reset() {
    let Some(srv) = Server::start(&["--shards", "2"]) else {
        return;
    };
    let current = publish(srv.addr, "t", "before");
    let long = format!("{current}{}", "0".repeat(MAX_EVENT_ID_LEN));
    for (what, request) in [
        (
            "Last-Event-ID header",
            format!("GET /sse/t HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {long}\r\n\r\n"),
        ),
        (
            "lastEventId query",
            format!("GET /sse/t?lastEventId={long} HTTP/1.1\r\nHost: x\r\n\r\n"),
        ),
        (
            "several topics",
            format!(
                "GET /sse?topic=t&topic=u HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {long}\r\n\r\n"
            ),
        ),
    ] {
        let ev = first_event(srv.addr, &request);
        assert_eq!(ev.event, "reset", "{what}: {ev:?}");
        assert!(["t", "u"].contains(&ev.data.as_str()), "{what}: {ev:?}");
    }
    // Just at the limit, an id that is not ours resets too (the old behaviour, kept).
    let at_limit = "x".repeat(MAX_EVENT_ID_LEN);
    let ev = first_event(
        srv.addr,
        &format!("GET /sse/t HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {at_limit}\r\n\r\n"),
    );
    assert_eq!(ev.event, "reset");

    let poll = |since: &str| {
        let resp = http(
            srv.addr,
            &format!("GET /poll/t?since={since} HTTP/1.1\r\nHost: x\r\n\r\n"),
        );
        assert!(resp.starts_with("HTTP/1.1 200 "), "{resp}");
        let v: serde_json::Value =
            serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        v
    };
    let v = poll(&long);
    assert_eq!(v["reset"], true, "{v}");
    let v = poll(&current);
    assert_ne!(v["reset"], true, "a good id does not reset: {v}");
}

/// Issue 11, point 2: publishes pipelined behind one that waits for its topic's owner
/// shard are backpressure, not an error. 200 pipelined publishes on one connection get
/// 200 answers, in order, and the topic holds each event once, in that order.
#[test]
fn pipelined_publishes_are_all_answered_in_order() {
    for shards in ["2", "4"] {
        let Some(server) = Server::start(&["--shards", shards]) else {
            return;
        };
        let addr = server.addr;
        // Topics owned by every shard in turn, whichever shard takes the connection.
        for topic in ["pipe-a", "pipe-b", "pipe-c", "pipe-d"] {
            let before = poll_next(addr, topic);
            let bodies: Vec<String> = (0..200).map(|i| format!("{i:03}")).collect();
            // All at once from one connection: 200 x 65 bytes, far more than one request
            // head's 8 KiB, most of it queued behind a publish waiting for its owner.
            let items: Vec<(String, Vec<u8>)> = bodies
                .iter()
                .map(|b| (topic.to_owned(), b.clone().into_bytes()))
                .collect();
            let ids = common::publish_pipelined(addr, &items);
            // Stored once each, in order, with the ids the answers gave.
            let resp = http(
                addr,
                &format!("GET /poll/{topic}?since={before} HTTP/1.1\r\nHost: x\r\n\r\n"),
            );
            let v: serde_json::Value =
                serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
            let events = v["events"].as_array().unwrap();
            let got: Vec<(&str, &str)> = events
                .iter()
                .map(|e| (e["id"].as_str().unwrap(), e["data"].as_str().unwrap()))
                .collect();
            let want: Vec<(&str, &str)> = ids
                .iter()
                .map(String::as_str)
                .zip(bodies.iter().map(String::as_str))
                .collect();
            assert_eq!(got, want, "{topic} on {shards} shards");
        }
    }
}

/// The topic's current position (`next` of an immediate poll).
fn poll_next(addr: SocketAddr, topic: &str) -> String {
    let resp = http(
        addr,
        &format!("GET /poll/{topic} HTTP/1.1\r\nHost: x\r\n\r\n"),
    );
    let v: serde_json::Value =
        serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    v["next"].as_str().unwrap().to_owned()
}

/// `POST /publish/{topic}` with `Idempotency-Key`: a retry with the same key (as after
/// a timeout whose outcome is unknown) gets the first publish's id and is not published
/// again; another key, or another topic, publishes; a bad key is 400. The poll shows what
/// was really published.
#[test]
fn idempotent_publish_retries() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let addr = server.addr;
    let post = |topic: &str, key: &str, body: &str| {
        http(
            addr,
            &format!(
                "POST /publish/{topic} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let id_of = |resp: &str| -> String {
        assert!(resp.starts_with("HTTP/1.1 200 "), "{resp}");
        let v: serde_json::Value =
            serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        v["id"].as_str().unwrap().to_owned()
    };
    let first = id_of(&post("idem", "order-17", "one"));
    let again = id_of(&post("idem", "order-17", "one, retried"));
    assert_eq!(first, again, "a retry gets the first id");
    let other = id_of(&post("idem", "order-18", "two"));
    assert_ne!(other, first);
    // Keys are per topic: the same key on another topic publishes there (ids are per
    // topic too, so only that topic's own log can tell).
    id_of(&post("idem-2", "order-17", "three"));
    let resp = http(addr, "GET /poll/idem-2?since=0 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        resp.contains(r#""data":"three""#),
        "keys are per topic: {resp}"
    );
    let plain = publish(addr, "idem", "four");
    assert_ne!(plain, other);
    let resp = http(addr, "GET /poll/idem?since=0 HTTP/1.1\r\nHost: x\r\n\r\n");
    let v: serde_json::Value =
        serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let datas: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].as_str().unwrap())
        .collect();
    assert_eq!(datas, ["one", "two", "four"], "{v}");
    for bad in ["", "has space", &"k".repeat(65)] {
        let resp = post("idem", bad, "x");
        assert_eq!(
            status_line(&resp),
            "HTTP/1.1 400 Bad Request",
            "{bad:?}: {resp}"
        );
    }
}
