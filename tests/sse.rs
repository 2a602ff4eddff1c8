//! Event streams, HTTP publish, polling and metrics over raw sockets against the real
//! server: every SSE rule of DESIGN.md, exact replay after a disconnect while events keep
//! flowing, resets, multi-topic replay, long-poll release, access control, the
//! slow-consumer policy for streams, and the Prometheus text.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, Ws, http, read_head, tcp_from};
use ringpush::proto::frame::OpCode;
use ringpush::proto::sse::{EventParser, ParsedEvent};

/// An event-stream client that parses what it reads with the spec-exact parser.
struct Stream {
    s: TcpStream,
    head: String,
    parser: EventParser,
    raw: Vec<u8>,
}

impl Stream {
    fn open(addr: SocketAddr, path: &str, extra: &str) -> Stream {
        Stream::open_from(addr, path, extra, 1)
    }

    fn open_from(addr: SocketAddr, path: &str, extra: &str, src: u8) -> Stream {
        Stream::open_with(tcp_from(addr, src), path, extra)
    }

    /// Over a connection made by the caller (with socket options set before connecting).
    fn open_with(mut s: TcpStream, path: &str, extra: &str) -> Stream {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n").unwrap();
        let (head, rest) = read_head(&mut s);
        let mut parser = EventParser::new();
        parser.feed(&rest);
        Stream {
            s,
            head,
            parser,
            raw: rest,
        }
    }

    /// The next event, or `None` at EOF or after `within` without one.
    fn next_within(&mut self, within: Duration) -> Option<ParsedEvent> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(ev) = self.parser.next_event() {
                return Some(ev);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut buf = [0u8; 65536];
            match self.s.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => {
                    self.raw.extend_from_slice(&buf[..n]);
                    self.parser.feed(&buf[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn next(&mut self) -> ParsedEvent {
        self.next_within(Duration::from_secs(5))
            .expect("an event within 5 s")
    }
}

/// `POST /publish/{topic}`: the id from `{"id":"..."}`.
fn publish(addr: SocketAddr, topic: &str, body: &str) -> String {
    let resp = http(
        addr,
        &format!(
            "POST /publish/{topic} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 200 "), "{resp}");
    let json = resp.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

fn body_of(resp: &str) -> serde_json::Value {
    serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

#[test]
fn stream_head_retry_framing_and_heartbeat() {
    let Some(srv) = Server::start(&[
        "--shards",
        "2",
        "--sse-heartbeat",
        "1s",
        "--sse-retry",
        "2s",
    ]) else {
        return;
    };
    let mut st = Stream::open(srv.addr, "/sse/news", "");
    for h in [
        "HTTP/1.1 200 OK\r\n",
        "Content-Type: text/event-stream\r\n",
        "Cache-Control: no-cache\r\n",
        "X-Accel-Buffering: no\r\n",
    ] {
        assert!(st.head.contains(h), "{h:?} in {}", st.head);
    }
    assert!(!st.head.contains("Content-Length"), "{}", st.head);
    // The body opens with `retry:`, jittered within [base/2, base*3/2).
    std::thread::sleep(Duration::from_millis(200));
    let first = publish(srv.addr, "news", "one");
    let ev = st.next();
    let retry = st.parser.retry().expect("a retry: line first");
    assert!((1000..3000).contains(&retry), "retry {retry}");
    assert!(String::from_utf8_lossy(&st.raw).starts_with("retry: "));
    assert_eq!(
        (ev.id.as_deref(), ev.event.as_str(), ev.data.as_str()),
        (Some(first.as_str()), "message", "one")
    );
    // A named event; a payload with CRLF, CR and LF line breaks: one data line each.
    let body = "a\r\nb\rc\nd";
    let resp = http(
        srv.addr,
        &format!(
            "POST /publish/news?event=update HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 200 "), "{resp}");
    let ev = st.next();
    assert_eq!(
        (ev.event.as_str(), ev.data.as_str()),
        ("update", "a\nb\nc\nd")
    );
    let text = String::from_utf8_lossy(&st.raw).into_owned();
    assert!(
        text.contains("event: update\ndata: a\ndata: b\ndata: c\ndata: d\n\n"),
        "{text}"
    );
    assert!(
        !text.contains("event: message"),
        "the default name is omitted"
    );
    // Comment heartbeats while quiet.
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(st.next_within(Duration::from_millis(500)), None);
    assert!(
        String::from_utf8_lossy(&st.raw).contains("\n: hb\n"),
        "{:?}",
        String::from_utf8_lossy(&st.raw)
    );
}

/// A subscriber reads part of a stream of 300 events published without pause, drops the
/// connection at an arbitrary point, and resumes with its last id, twice: together it
/// sees every event exactly once, in order. Four shards, so owner, publisher and
/// subscriber sit on different shards.
#[test]
fn replay_after_disconnect_while_publishing() {
    let Some(srv) = Server::start(&["--shards", "4", "--history", "1000"]) else {
        return;
    };
    let addr = srv.addr;
    let mut st = Stream::open(addr, "/sse/flow", "");
    std::thread::sleep(Duration::from_millis(100));
    let done = Arc::new(AtomicBool::new(false));
    let published = Arc::new(Mutex::new(Vec::new()));
    let publisher = {
        let (done, published) = (done.clone(), published.clone());
        std::thread::spawn(move || {
            for i in 0..300 {
                let id = publish(addr, "flow", &format!("event {i}"));
                published.lock().unwrap().push((id, format!("event {i}")));
                if i % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut seen: Vec<(String, String)> = Vec::new();
    for (round, cut_after) in [(0, 40), (1, 90), (2, usize::MAX)] {
        loop {
            let Some(ev) = st.next_within(Duration::from_secs(2)) else {
                assert!(
                    done.load(Ordering::Acquire),
                    "stream stalled in round {round}"
                );
                break;
            };
            seen.push((ev.id.clone().unwrap(), ev.data));
            if seen.len() >= cut_after.saturating_add(40 * round) {
                break;
            }
            if done.load(Ordering::Acquire) && seen.len() == 300 {
                break;
            }
        }
        if cut_after == usize::MAX {
            break;
        }
        let last = seen.last().unwrap().0.clone();
        drop(st);
        std::thread::sleep(Duration::from_millis(30));
        st = Stream::open(addr, "/sse/flow", &format!("Last-Event-ID: {last}\r\n"));
    }
    publisher.join().unwrap();
    let published = published.lock().unwrap().clone();
    assert_eq!(published.len(), 300);
    assert_eq!(
        seen, published,
        "every event exactly once, in order, with its publish id"
    );
}

/// A position older than the history, or from another epoch, starts with `event: reset`
/// (data: the topic) carrying the id just before what is retained; the retained events
/// follow, then live ones. `Last-Event-ID: 0` asks for everything retained, no reset.
#[test]
fn reset_when_the_position_is_lost() {
    let Some(srv) = Server::start(&["--shards", "2", "--history", "5"]) else {
        return;
    };
    let ids: Vec<String> = (0..20)
        .map(|i| publish(srv.addr, "r", &format!("{i}")))
        .collect();
    // Still in history: the events after it, exactly.
    let mut st = Stream::open(
        srv.addr,
        "/sse/r",
        &format!("Last-Event-ID: {}\r\n", ids[16]),
    );
    for (i, id) in ids.iter().enumerate().skip(17) {
        let ev = st.next();
        assert_eq!(
            (ev.id.as_deref(), ev.data.as_str()),
            (Some(id.as_str()), i.to_string().as_str())
        );
    }
    // The query form works like the header.
    let mut st = Stream::open(srv.addr, &format!("/sse/r?lastEventId={}", ids[18]), "");
    assert_eq!(st.next().data, "19");
    // Gone from history, another epoch, not ours: a reset, then the 5 retained events
    // (the last 5 published), then live ones.
    let mut published: Vec<(String, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i.to_string()))
        .collect();
    for (round, stale) in [
        ids[2].clone(),
        "0badbeef-3".to_owned(),
        "not-an-id".to_owned(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut st = Stream::open(srv.addr, "/sse/r", &format!("Last-Event-ID: {stale}\r\n"));
        let ev = st.next();
        assert_eq!(
            (ev.event.as_str(), ev.data.as_str()),
            ("reset", "r"),
            "after {stale}"
        );
        let retained = &published[published.len() - 5..];
        let before = &published[published.len() - 6].0;
        assert_eq!(
            ev.id.as_deref(),
            Some(before.as_str()),
            "the id before them"
        );
        for (id, data) in retained {
            let ev = st.next();
            assert_eq!(
                (ev.id.as_deref(), ev.data.as_str()),
                (Some(id.as_str()), data.as_str())
            );
        }
        let live = format!("live{round}");
        let id = publish(srv.addr, "r", &live);
        let ev = st.next();
        assert_eq!(
            (ev.id.as_deref(), ev.data.as_str()),
            (Some(id.as_str()), live.as_str())
        );
        published.push((id, live));
    }
    // Everything retained, asked for with 0: no reset.
    let mut st = Stream::open(srv.addr, "/sse/r", "Last-Event-ID: 0\r\n");
    for (id, data) in &published[published.len() - 5..] {
        let ev = st.next();
        assert_eq!(
            (ev.event.as_str(), ev.id.as_deref(), ev.data.as_str()),
            ("message", Some(id.as_str()), data.as_str())
        );
    }
    // And by a poll with since=0.
    let resp = http(srv.addr, "GET /poll/r?since=0 HTTP/1.1\r\nHost: x\r\n\r\n");
    let v = body_of(&resp);
    let got: Vec<(&str, &str)> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e["data"].as_str().unwrap()))
        .collect();
    let want: Vec<(&str, &str)> = published[published.len() - 5..]
        .iter()
        .map(|(i, d)| (i.as_str(), d.as_str()))
        .collect();
    assert_eq!(got, want);
    assert!(v.get("reset").is_none());
    // A poll whose position was lost: reset, and the retained events.
    let resp = http(
        srv.addr,
        &format!("GET /poll/r?since={} HTTP/1.1\r\nHost: x\r\n\r\n", ids[1]),
    );
    let v = body_of(&resp);
    assert_eq!(v["reset"], true);
    assert_eq!(v["events"].as_array().unwrap().len(), 5);
    assert_eq!(
        v["next"].as_str(),
        Some(published.last().unwrap().0.as_str())
    );
}

/// The sum of the values of every line of a metrics text that starts with `prefix`.
fn sum_lines(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The sum over shards of a metric from `GET /metrics`.
fn metric(addr: SocketAddr, name: &str) -> u64 {
    let m = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    sum_lines(&m, &format!("{name}{{"))
}

/// `--history-ttl`: a topic with no subscriber and no publish for the TTL is forgotten
/// (the metrics say so); an id from its previous life gets `event: reset`, even once the
/// new life has published more events than the old one had; a topic with a subscriber is
/// kept and resumes exactly.
#[test]
fn history_ttl_forgets_idle_topics() {
    let Some(srv) = Server::start(&["--shards", "2", "--history-ttl", "2s"]) else {
        return;
    };
    let old: Vec<String> = (0..3)
        .map(|i| publish(srv.addr, "gone", &format!("old{i}")))
        .collect();
    let mut kept = Stream::open(srv.addr, "/sse/kept", "");
    std::thread::sleep(Duration::from_millis(100));
    let k1 = publish(srv.addr, "kept", "k1");
    assert_eq!(kept.next().data, "k1");
    assert_eq!(metric(srv.addr, "ringpush_topics"), 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(srv.addr, "ringpush_topics_expired_total") == 0 {
        assert!(Instant::now() < deadline, "no topic forgotten within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        metric(srv.addr, "ringpush_topics"),
        1,
        "`kept` has a subscriber"
    );
    // A new life of `gone`, numbered past the old one's ids.
    for i in 0..5 {
        publish(srv.addr, "gone", &format!("new{i}"));
    }
    for stale in &old {
        let mut st = Stream::open(
            srv.addr,
            "/sse/gone",
            &format!("Last-Event-ID: {stale}\r\n"),
        );
        let ev = st.next();
        assert_eq!(
            (ev.event.as_str(), ev.data.as_str()),
            ("reset", "gone"),
            "an id from the forgotten life ({stale})"
        );
    }
    // `kept` was subscribed all along: its numbering went on.
    drop(kept);
    let k2 = publish(srv.addr, "kept", "k2");
    let mut st = Stream::open(srv.addr, "/sse/kept", &format!("Last-Event-ID: {k1}\r\n"));
    let ev = st.next();
    assert_eq!(
        (ev.id.as_deref(), ev.data.as_str()),
        (Some(k2.as_str()), "k2")
    );
}

/// One stream on two topics: ids carry both positions; after a disconnect, the missed
/// events of both topics are replayed once each, each topic in order.
#[test]
fn multi_topic_replay() {
    let Some(srv) = Server::start(&["--shards", "4"]) else {
        return;
    };
    let mut st = Stream::open(srv.addr, "/sse?topic=ta&topic=tb", "");
    std::thread::sleep(Duration::from_millis(100));
    let ia = publish(srv.addr, "ta", "a1");
    let ib = publish(srv.addr, "tb", "b1");
    let got = [st.next(), st.next()];
    let mut data = [got[0].data.as_str(), got[1].data.as_str()];
    data.sort();
    assert_eq!(data, ["a1", "b1"]);
    // The second event's id carries both positions: each topic's publish id.
    let (epoch, sa) = ia.split_once('-').unwrap();
    let sb = ib.split_once('-').unwrap().1;
    let last = got[1].id.clone().unwrap();
    assert_eq!(
        last,
        format!("{epoch}-{sa}.{sb}"),
        "both positions in the id"
    );
    drop(st);
    for i in 2..5 {
        publish(srv.addr, "ta", &format!("a{i}"));
        publish(srv.addr, "tb", &format!("b{i}"));
    }
    let mut st = Stream::open(
        srv.addr,
        "/sse?topic=ta&topic=tb",
        &format!("Last-Event-ID: {last}\r\n"),
    );
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..6 {
        let ev = st.next();
        if ev.data.starts_with('a') {
            a.push(ev.data)
        } else {
            b.push(ev.data)
        }
    }
    assert_eq!(a, ["a2", "a3", "a4"]);
    assert_eq!(b, ["b2", "b3", "b4"]);
    assert_eq!(
        st.next_within(Duration::from_millis(300)),
        None,
        "nothing twice"
    );
}

/// Publishes reach WebSocket subscribers (text frames; binary bodies as binary) and
/// event streams on every shard; a WebSocket's binary message reaches streams as
/// `event: binary` with base64 data.
#[test]
fn publish_reaches_every_transport_on_every_shard() {
    let Some(srv) = Server::start(&["--shards", "4"]) else {
        return;
    };
    let mut wss: Vec<Ws> = (1..=8)
        .map(|src| Ws::connect_from(srv.addr, "/ws/mix", src))
        .collect();
    let mut sts: Vec<Stream> = (11..=18)
        .map(|src| Stream::open_from(srv.addr, "/sse/mix", "", src))
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    let id = publish(srv.addr, "mix", "hello all");
    for ws in &mut wss {
        let f = ws.recv().unwrap();
        assert_eq!(
            (f.opcode, f.payload.as_slice()),
            (OpCode::Text, &b"hello all"[..])
        );
    }
    for st in &mut sts {
        let ev = st.next();
        assert_eq!(
            (ev.id.as_deref(), ev.data.as_str()),
            (Some(id.as_str()), "hello all")
        );
    }
    wss[0].send(true, OpCode::Binary, &[0, 1, 2, 254, 255]);
    for st in &mut sts {
        let ev = st.next();
        assert_eq!(
            (ev.event.as_str(), ev.data.as_str()),
            ("binary", "AAEC/v8=")
        );
    }
    for ws in &mut wss[1..] {
        assert_eq!(ws.recv().unwrap().payload, [0, 1, 2, 254, 255]);
    }
}

#[test]
fn publish_limits_and_token() {
    let Some(srv) = Server::start(&["--max-message-bytes", "16", "--publish-token", "s3cret"])
    else {
        return;
    };
    let post = |auth: &str, body: &str| {
        http(
            srv.addr,
            &format!(
                "POST /publish/t HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    assert!(post("", "x").starts_with("HTTP/1.1 401 "));
    assert!(post("Authorization: Bearer wrong\r\n", "x").starts_with("HTTP/1.1 401 "));
    assert!(post("Authorization: Bearer s3cret\r\n", &"y".repeat(17)).starts_with("HTTP/1.1 413 "));
    let ok = post("Authorization: Bearer s3cret\r\n", "fits");
    assert!(ok.starts_with("HTTP/1.1 200 "), "{ok}");
    let id = body_of(&ok)["id"].as_str().unwrap().to_owned();
    let (epoch, seq) = id.split_once('-').unwrap();
    assert!(epoch.len() == 8 && seq.parse::<u64>().is_ok(), "{id}");
}

/// Polling answers at once; long polling is released by the next event, well before
/// its wait, or answers empty when the wait passes.
#[test]
fn polling_and_long_polling() {
    let Some(srv) = Server::start(&["--shards", "2"]) else {
        return;
    };
    let get = |path: &str| http(srv.addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
    let v = body_of(&get("/poll/p"));
    assert_eq!(v["events"], serde_json::json!([]));
    let start = v["next"].as_str().unwrap().to_owned();
    let id1 = publish(srv.addr, "p", "first");
    let id2 = publish(srv.addr, "p", "second");
    let v = body_of(&get(&format!("/poll/p?since={start}")));
    assert_eq!(v["events"][0]["id"], id1.as_str());
    assert_eq!(v["events"][1]["data"], "second");
    assert_eq!(v["events"][1]["event"], "message");
    assert_eq!(v["next"], id2.as_str());
    // Long poll: released by a publish 300 ms in.
    let addr = srv.addr;
    let since = id2.clone();
    let waiter = std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = http(
            addr,
            &format!("GET /poll/p?since={since}&wait=10s HTTP/1.1\r\nHost: x\r\n\r\n"),
        );
        (t0.elapsed(), r)
    });
    std::thread::sleep(Duration::from_millis(300));
    let id3 = publish(srv.addr, "p", "third");
    let (took, r) = waiter.join().unwrap();
    assert!(
        took < Duration::from_secs(3),
        "released by the event, not the wait: {took:?}"
    );
    let v = body_of(&r);
    assert_eq!(
        (v["events"][0]["id"].as_str(), v["next"].as_str()),
        (Some(id3.as_str()), Some(id3.as_str()))
    );
    // Nothing new: empty after the wait.
    let t0 = Instant::now();
    let v = body_of(&get(&format!("/poll/p?since={id3}&wait=500ms")));
    assert!(
        t0.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        (v["events"].as_array().unwrap().len(), v["next"].as_str()),
        (0, Some(id3.as_str()))
    );
    // A lost position is flagged.
    let v = body_of(&get("/poll/p?since=00000000-1"));
    assert_eq!(v["reset"], true);
}

#[test]
fn origins_and_oversized_heads() {
    let Some(srv) = Server::start(&["--allowed-origin", "https://ok.example"]) else {
        return;
    };
    let st = Stream::open(srv.addr, "/sse/o", "Origin: https://evil.example\r\n");
    assert!(st.head.starts_with("HTTP/1.1 403 "), "{}", st.head);
    let st = Stream::open(srv.addr, "/sse/o", "Origin: https://ok.example\r\n");
    assert!(st.head.starts_with("HTTP/1.1 200 "), "{}", st.head);
    assert!(
        st.head
            .contains("Access-Control-Allow-Origin: https://ok.example\r\n")
    );
    let big = format!("X-Fill: {}\r\n", "a".repeat(9000));
    let st = Stream::open(srv.addr, "/sse/o", &big);
    assert!(st.head.starts_with("HTTP/1.1 431 "), "{}", st.head);
}

/// A stream that stops reading is cut off at the outbox cap, and loses nothing: it
/// resumes from the last event it got and receives the rest.
#[test]
fn slow_stream_is_cut_and_resumes_without_loss() {
    let Some(srv) = Server::start(&["--max-outbox-bytes", "65536", "--history", "1000"]) else {
        return;
    };
    // A small receive buffer (set before connecting, as a real client's would be), so
    // the server's side fills up quickly.
    let mut st = Stream::open_with(
        common::tcp_with(srv.addr, 1, Some(16 * 1024)),
        "/sse/slow",
        "",
    );
    std::thread::sleep(Duration::from_millis(100));
    let payload = "z".repeat(8000);
    let n = 1000; // 8 MB: past the socket buffers plus the 64 KiB cap
    for i in 0..n {
        publish(srv.addr, "slow", &format!("{i:04}{payload}"));
    }
    let mut got = Vec::new();
    while let Some(ev) = st.next_within(Duration::from_secs(3)) {
        got.push(ev);
    }
    assert!(
        got.len() < n,
        "the stream was cut before the end ({} events)",
        got.len()
    );
    // Each reconnect resumes where the last cut left off; a replay larger than the cap
    // is cut too, so it may take several, each making progress.
    let mut reconnects = 0;
    while got.len() < n {
        let last = got
            .last()
            .map(|e| e.id.clone().unwrap())
            .expect("some events first");
        let mut st = Stream::open(srv.addr, "/sse/slow", &format!("Last-Event-ID: {last}\r\n"));
        let before = got.len();
        while let Some(ev) = st.next_within(Duration::from_secs(2)) {
            got.push(ev);
            if got.len() == n {
                break;
            }
        }
        assert!(got.len() > before, "a resumed stream makes progress");
        reconnects += 1;
        assert!(reconnects < 200);
    }
    for (i, ev) in got.iter().enumerate() {
        assert_eq!(&ev.data[..4], format!("{i:04}"), "event {i}");
    }
    let metrics = http(srv.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let drops: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("ringpush_slow_consumer_drops_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(drops >= 1, "{metrics}");
}

#[test]
fn metrics_text() {
    let Some(srv) = Server::start(&["--shards", "2"]) else {
        return;
    };
    let _ws = Ws::connect(srv.addr, "/ws/m");
    let mut st = Stream::open(srv.addr, "/sse/m", "");
    std::thread::sleep(Duration::from_millis(100));
    let id = publish(srv.addr, "m", "x");
    st.next();
    let _resumed = Stream::open(srv.addr, "/sse/m", &format!("Last-Event-ID: {id}\r\n"));
    let bad = http(srv.addr, "GET /ws/bad%20topic HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
    // A WebSocket that goes away without a close frame.
    drop(Ws::connect(srv.addr, "/ws/gone"));
    std::thread::sleep(Duration::from_millis(100));
    let m = http(srv.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(m.contains("Content-Type: text/plain; version=0.0.4"), "{m}");
    let sum = |prefix: &str| sum_lines(&m, prefix);
    assert_eq!(
        sum("ringpush_connections{shard=\"0\",transport=\"ws\"}")
            + sum("ringpush_connections{shard=\"1\",transport=\"ws\"}"),
        1,
        "{m}"
    );
    assert!(sum("ringpush_connections{") >= 3);
    assert!(sum("ringpush_messages_in_total{") >= 1);
    assert!(sum("ringpush_messages_out_total{") >= 2, "{m}");
    assert_eq!(sum("ringpush_replay_resumes_total{"), 1);
    assert!(sum("ringpush_handshake_failures_total{") >= 1, "{m}");
    assert!(m.contains("reason=\"bad_topic\""), "{m}");
    let peer_eof: u64 = (0..2)
        .map(|i| {
            sum(&format!(
                "ringpush_disconnects_total{{shard=\"{i}\",reason=\"peer_eof\"}}"
            ))
        })
        .sum();
    assert!(peer_eof >= 1, "{m}");
    assert_eq!(
        sum("ringpush_disconnects_total{shard=\"0\",reason=\"pong_timeout\"}"),
        0
    );
}

/// `--history-memory`: retention stays within the budget however events and topics come
/// (big events on one topic; thousands of topics by publishing to random names), the
/// evictions show in the metrics, and a client whose position was evicted gets a reset
/// and then what is retained.
#[test]
fn history_memory_bounds_retention() {
    const BUDGET: u64 = 2 << 20;
    let Some(srv) = Server::start(&[
        "--shards",
        "2",
        "--history-memory",
        &BUDGET.to_string(),
        "--max-message-bytes",
        "300000",
    ]) else {
        return;
    };
    let before = common::rss_kib(srv.pid());
    // 40 events of 200 KB on one topic: 8 MB published, a quarter of the budget kept.
    let big: Vec<(String, Vec<u8>)> = (0..40u8)
        .map(|i| ("big".to_owned(), vec![b'a' + i % 26; 200_000]))
        .collect();
    let ids = common::publish_pipelined(srv.addr, &big);
    let kept = metric(srv.addr, "ringpush_history_bytes");
    assert!(kept <= BUDGET, "{kept} bytes kept");
    assert!(metric(srv.addr, "ringpush_history_evictions_total") > 0);
    // The first event was evicted: its client gets a reset, then the retained tail.
    let mut st = Stream::open(
        srv.addr,
        "/sse/big",
        &format!("Last-Event-ID: {}\r\n", ids[0]),
    );
    let ev = st.next();
    assert_eq!((ev.event.as_str(), ev.data.as_str()), ("reset", "big"));
    let mut tail = Vec::new();
    while let Some(ev) = st.next_within(Duration::from_millis(500)) {
        tail.push(ev.id.unwrap());
    }
    assert!(
        !tail.is_empty() && tail.len() < ids.len(),
        "{} retained",
        tail.len()
    );
    assert_eq!(tail, ids[ids.len() - tail.len()..], "the newest, in order");
    drop(st);
    // 10,000 topics created by publishing to random names.
    let many: Vec<(String, Vec<u8>)> = (0..10_000u32)
        .map(|i| {
            (
                format!("rnd-{:08x}", i.wrapping_mul(2_654_435_761)),
                b"x".to_vec(),
            )
        })
        .collect();
    common::publish_pipelined(srv.addr, &many);
    let topics = metric(srv.addr, "ringpush_topics");
    let kept = metric(srv.addr, "ringpush_history_bytes");
    assert!(kept <= BUDGET, "{kept} bytes kept");
    assert!(topics < 10_000, "{topics} topics kept");
    let grew = common::rss_kib(srv.pid()).saturating_sub(before);
    println!("{topics} topics and {kept} bytes kept; server RSS +{grew} KiB");
    // A liveness bound on the process: the budget plus the publish traffic's buffers.
    assert!(grew < 64 * 1024, "RSS grew {grew} KiB");
}
