//! The cluster tests' parts: `ringpush` nodes in cluster mode, subscribers over both
//! transports read alike, the warm-up that tells when a subscriber is live on its node,
//! the exact-delivery assertion, and the HTTP calls (publish, poll, metrics).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ringpush::proto::frame::OpCode;
use ringpush::proto::sse::EventParser;

use crate::common::redis::Redis;
use crate::common::{Server, Ws, http, read_head, tcp_from};

// --- nodes ---------------------------------------------------------------------------

/// A `ringpush serve --redis URL --node-id NAME --shards 2` process, SIGKILLed when
/// dropped (by [`Server`]); its stderr is kept and printed when the test fails.
pub struct Node {
    srv: Server,
    pub name: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts a node and waits (at most 20 s) for its "listening on" line. `None`, after
    /// a skip line, where io_uring is unavailable.
    pub fn start(name: &str, redis_url: &str, extra: &[&str]) -> Option<Node> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringpush"))
            .args(["serve", "--listen", "127.0.0.1:0", "--shards", "2"])
            .args(["--redis", redis_url, "--node-id", name])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringpush");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    log.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let addr = line
                        .strip_prefix("ringpush: listening on ")
                        .and_then(|r| r.split(' ').next());
                    if let Some(addr) = addr {
                        let addr = addr.parse().expect("address");
                        return Some(Node {
                            srv: Server {
                                child,
                                addr,
                                log: log.clone(),
                            },
                            name: name.to_owned(),
                            log,
                        });
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().unwrap();
                    let text = log.lock().unwrap().join("\n");
                    if text.contains("io_uring") {
                        println!("SKIP: io_uring unavailable: {text}");
                        return None;
                    }
                    panic!("node {name} did not start ({status}):\n{text}");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let text = log.lock().unwrap().join("\n");
                    panic!("node {name}: no \"listening on\" line within 20 s:\n{text}");
                }
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.srv.addr
    }

    /// SIGKILL, and reaps the process.
    pub fn kill(&mut self) {
        // SAFETY: plain kill(2) on our own child, which has not been reaped.
        unsafe { libc::kill(self.srv.pid(), libc::SIGKILL) };
        let _ = self.srv.child.wait();
    }

    pub fn metrics(&self) -> String {
        let m = http(self.addr(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(m.starts_with("HTTP/1.1 200 "), "{m}");
        m
    }

    /// The sum of a metric's lines (a counter's value, whatever its labels).
    pub fn counter(&self, name: &str) -> f64 {
        let m = self.metrics();
        let values = values(&m, name);
        assert!(
            !values.is_empty(),
            "{name} is missing from the metrics of node {}:\n{m}",
            self.name
        );
        values.iter().sum()
    }

    /// Whether `ringpush_cluster_link_up` says up (every line 1) or down (every line 0).
    pub fn link_is(&self, up: bool) -> bool {
        let m = self.metrics();
        let values = values(&m, "ringpush_cluster_link_up");
        assert!(
            !values.is_empty(),
            "ringpush_cluster_link_up is missing from the metrics of node {}:\n{m}",
            self.name
        );
        let want = if up { 1.0 } else { 0.0 };
        values.iter().all(|v| *v == want)
    }

    /// Waits (at most `within`) until the link to Redis is up, or down.
    pub fn wait_link(&self, up: bool, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.link_is(up) {
            assert!(
                Instant::now() < deadline,
                "node {}: the link to Redis not {} within {within:?}",
                self.name,
                if up { "up" } else { "down" }
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most `within`) until a counter satisfies `ok`; returns its value.
    pub fn wait_counter(&self, name: &str, within: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let v = self.counter(name);
            if ok(v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "node {}: {name} still {v} after {within:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            let from = log.len().saturating_sub(40);
            eprintln!(
                "--- node {} ({}), last lines of its log:",
                self.name,
                self.addr()
            );
            for line in &log[from..] {
                eprintln!("    {line}");
            }
        }
    }
}

/// The values of every line of a Prometheus text that is a sample of `name` (with or
/// without labels).
pub fn values(metrics: &str, name: &str) -> Vec<f64> {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("metric line {l:?}"))
        })
        .collect()
}

/// Nodes `n0`, `n1`, ... one per URL, each with its link to Redis up.
pub fn start_nodes_on(urls: &[String], extra: &[&str]) -> Option<Vec<Node>> {
    let mut nodes = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        nodes.push(Node::start(&format!("n{i}"), url, extra)?);
    }
    for n in &nodes {
        n.wait_link(true, Duration::from_secs(15));
    }
    Some(nodes)
}

/// Three nodes on one Redis, their links up.
pub fn start_nodes(redis: &Redis, extra: &[&str]) -> Option<Vec<Node>> {
    start_nodes_on(&vec![redis.url(); 3], extra)
}

pub fn addrs(nodes: &[Node]) -> Vec<SocketAddr> {
    nodes.iter().map(Node::addr).collect()
}

// --- clients -------------------------------------------------------------------------

/// A message as a subscriber sees it: a WebSocket text message is `message` with its
/// text, a binary one `binary` with the base64 of its bytes (as event streams and polls
/// carry binary payloads), and has no id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// An acknowledged publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pub {
    pub id: String,
    pub data: String,
}

pub enum Next {
    Msg(Msg),
    /// Nothing within the time given.
    Quiet,
    /// EOF or reset: the server went away.
    Gone,
}

/// Spreads clients over source addresses 127.0.0.2 to .201.
pub fn next_src() -> u8 {
    static SRC: AtomicU8 = AtomicU8::new(0);
    2 + SRC.fetch_add(1, Ordering::Relaxed) % 200
}

/// An event stream parsed with the spec-exact parser.
pub struct Stream {
    s: TcpStream,
    parser: EventParser,
    gone: bool,
}

impl Stream {
    /// `GET /sse/{topic}`, with `Last-Event-ID: {last}` if given.
    pub fn open(addr: SocketAddr, topic: &str, last: Option<&str>) -> Stream {
        let extra = last
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        Stream::open_path(addr, &format!("/sse/{topic}"), &extra)
    }

    pub fn open_path(addr: SocketAddr, path: &str, extra: &str) -> Stream {
        let mut s = tcp_from(addr, next_src());
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n").unwrap();
        let (head, rest) = read_head(&mut s);
        assert!(
            head.starts_with("HTTP/1.1 200 ") && head.contains("text/event-stream"),
            "GET {path} on {addr}: {head}"
        );
        let mut parser = EventParser::new();
        parser.feed(&rest);
        Stream {
            s,
            parser,
            gone: false,
        }
    }

    pub fn poll(&mut self, within: Duration) -> Next {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 65536];
        loop {
            if let Some(ev) = self.parser.next_event() {
                return Next::Msg(Msg {
                    id: ev.id,
                    event: ev.event,
                    data: ev.data,
                });
            }
            if self.gone {
                return Next::Gone;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Next::Quiet;
            };
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.s.read(&mut buf) {
                Ok(0) => self.gone = true,
                Ok(n) => self.parser.feed(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Next::Quiet;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    self.gone = true
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

/// A subscriber: a WebSocket on `/ws/{topic}` or an event stream on `/sse/{topic}`.
pub enum Sub {
    Ws(Ws),
    Sse(Stream),
}

impl Sub {
    pub fn ws(addr: SocketAddr, topic: &str) -> Sub {
        Sub::Ws(Ws::connect_from(addr, &format!("/ws/{topic}"), next_src()))
    }

    pub fn sse(addr: SocketAddr, topic: &str, last: Option<&str>) -> Sub {
        Sub::Sse(Stream::open(addr, topic, last))
    }

    pub fn poll(&mut self, within: Duration) -> Next {
        let ws = match self {
            Sub::Sse(st) => return st.poll(within),
            Sub::Ws(ws) => ws,
        };
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match ws.recv_within(left) {
                Ok(Some(f)) => {
                    assert!(f.fin, "a whole message per frame: {f:?}");
                    let (event, data) = match f.opcode {
                        OpCode::Text => {
                            ("message", String::from_utf8(f.payload).expect("UTF-8 text"))
                        }
                        OpCode::Binary => (
                            "binary",
                            base64::engine::general_purpose::STANDARD.encode(&f.payload),
                        ),
                        OpCode::Close => return Next::Gone,
                        _ => continue,
                    };
                    return Next::Msg(Msg {
                        id: None,
                        event: event.to_owned(),
                        data,
                    });
                }
                Ok(None) => return Next::Quiet,
                Err(_) => return Next::Gone,
            }
        }
    }

    /// The next message within `within`, `None` if none came; the connection ending
    /// fails the test.
    pub fn next_within(&mut self, within: Duration) -> Option<Msg> {
        match self.poll(within) {
            Next::Msg(m) => Some(m),
            Next::Quiet => None,
            Next::Gone => panic!("the server ended the connection"),
        }
    }
}

pub fn is_warm(m: &Msg) -> bool {
    m.data.starts_with("warm-")
}

/// What [`warm_up`] found.
pub struct Warm {
    /// The id of the last warm-up publish: every later event is owed to each subscriber.
    pub last_id: String,
    /// What else each subscriber got while warming up.
    pub strays: Vec<Vec<Msg>>,
}

impl Warm {
    pub fn assert_no_strays(&self) {
        for (i, s) in self.strays.iter().enumerate() {
            assert!(s.is_empty(), "subscriber {i} got {s:?} while warming up");
        }
    }
}

/// Publishes `warm-K` to `topic` on `via` until every subscriber has received one (at
/// most 15 s), so that each is known to be live on its node. Warm-up messages still on
/// their way are dropped later (they precede everything published after this returns).
pub fn warm_up(via: SocketAddr, topic: &str, subs: &mut [&mut Sub]) -> Warm {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = vec![false; subs.len()];
    let mut strays = vec![Vec::new(); subs.len()];
    for k in 0.. {
        let last_id = publish(via, topic, &format!("warm-{k}"));
        let round_end = Instant::now() + Duration::from_millis(100);
        for (i, sub) in subs.iter_mut().enumerate() {
            while !seen[i] {
                let left = round_end.saturating_duration_since(Instant::now());
                match sub.next_within(left.max(Duration::from_millis(1))) {
                    Some(m) if is_warm(&m) => seen[i] = true,
                    Some(m) => strays[i].push(m),
                    None => break,
                }
            }
        }
        if seen.iter().all(|s| *s) {
            return Warm { last_id, strays };
        }
        let late: Vec<usize> = (0..seen.len()).filter(|i| !seen[*i]).collect();
        assert!(
            Instant::now() < deadline,
            "subscribers {late:?} of {topic} not live within 15 s"
        );
    }
    unreachable!()
}

/// Reads until `n` messages for which `counts` holds arrived (at most 20 s); returns
/// every non-warm-up message read, in order.
pub fn take_counting(
    sub: &mut Sub,
    n: usize,
    who: &str,
    counts: impl Fn(&Msg) -> bool,
) -> Vec<Msg> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    let mut counted = 0;
    while counted < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.next_within(left.max(Duration::from_millis(1))) {
            Some(m) if is_warm(&m) => {}
            Some(m) => {
                counted += usize::from(counts(&m));
                got.push(m);
            }
            None => panic!(
                "{who}: {counted} of {n} messages within 20 s: {:?}",
                got.iter().map(|m: &Msg| &m.data).collect::<Vec<_>>()
            ),
        }
    }
    got
}

/// Reads `n` messages other than warm-ups.
pub fn take(sub: &mut Sub, n: usize, who: &str) -> Vec<Msg> {
    take_counting(sub, n, who, |_| true)
}

/// After a pause for stragglers, what each subscriber still has to read (warm-ups left
/// out): nothing, from a server that delivers each event once.
pub fn leftovers(subs: &mut [&mut Sub]) -> Vec<Vec<Msg>> {
    std::thread::sleep(Duration::from_millis(300));
    subs.iter_mut()
        .map(|s| {
            let mut more = Vec::new();
            while let Some(m) = s.next_within(Duration::from_millis(20)) {
                if !is_warm(&m) {
                    more.push(m);
                }
            }
            more
        })
        .collect()
}

pub fn assert_quiet(subs: &mut [&mut Sub], who: &str) {
    for (i, more) in leftovers(subs).into_iter().enumerate() {
        assert!(more.is_empty(), "{who} {i}: nothing twice, got {more:?}");
    }
}

/// `got` holds every acknowledged publish exactly once and in order (with its id, for
/// an event stream), and besides them only messages whose data is in `maybe` (publishes
/// that were refused, which may or may not have been carried out), each at most once.
pub fn assert_delivery(who: &str, got: &[Msg], acked: &[Pub], maybe: &[String]) {
    let mut maybe_seen = HashSet::new();
    let mut real = Vec::new();
    for m in got {
        if maybe.contains(&m.data) {
            assert!(
                maybe_seen.insert(m.data.clone()),
                "{who}: {:?} twice",
                m.data
            );
        } else {
            real.push(m);
        }
    }
    let got_data: Vec<&str> = real.iter().map(|m| m.data.as_str()).collect();
    let want: Vec<&str> = acked.iter().map(|p| p.data.as_str()).collect();
    assert_eq!(
        got_data, want,
        "{who}: every acknowledged publish once, in order"
    );
    for (m, p) in real.iter().zip(acked) {
        assert_eq!(m.event, "message", "{who}: {m:?}");
        if m.id.is_some() {
            assert_eq!(
                m.id.as_deref(),
                Some(p.id.as_str()),
                "{who}: the id of {:?} is the one its publisher got",
                p.data
            );
        }
    }
}

// --- HTTP ----------------------------------------------------------------------------

/// An HTTP answer: status, head, body.
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Answer {
    answer(http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
    ))
}

pub fn post(addr: SocketAddr, topic: &str, body: &str) -> Answer {
    answer(http(
        addr,
        &format!(
            "POST /publish/{topic} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    ))
}

pub fn answer(resp: String) -> Answer {
    let (head, body) = resp.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line of {head:?}"));
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// `POST /publish/{topic}` that must succeed: the id from `{"id":"..."}`.
pub fn publish(addr: SocketAddr, topic: &str, body: &str) -> String {
    let a = post(addr, topic, body);
    assert_eq!(
        a.status, 200,
        "publish {body:?} on {addr}: {}{}",
        a.head, a.body
    );
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let id = v["id"].as_str().unwrap_or_else(|| panic!("{}", a.body));
    assert!(!id.is_empty());
    id.to_owned()
}

pub fn publish_pub(addr: SocketAddr, topic: &str, data: &str) -> Pub {
    Pub {
        id: publish(addr, topic, data),
        data: data.to_owned(),
    }
}

/// Publishes `{data}#{attempt}` until one is acknowledged (at most 20 s); a refusal must
/// be a 503 with `Retry-After`. Returns the acknowledged one and the refused ones.
pub fn publish_until_ok(addr: SocketAddr, topic: &str, data: &str) -> (Pub, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut refused = Vec::new();
    for attempt in 0.. {
        let body = format!("{data}#{attempt}");
        let a = post(addr, topic, &body);
        if a.status == 200 {
            let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
            let id = v["id"].as_str().unwrap().to_owned();
            return (Pub { id, data: body }, refused);
        }
        assert_eq!(a.status, 503, "{}{}", a.head, a.body);
        assert!(a.header("Retry-After").is_some(), "{}", a.head);
        refused.push(body);
        assert!(
            Instant::now() < deadline,
            "publishes on {addr} still refused after 20 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    unreachable!()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `GET /poll/{topic}?since=ID`: the JSON answer.
pub fn poll(addr: SocketAddr, topic: &str, since: &str) -> serde_json::Value {
    let a = get(addr, &format!("/poll/{topic}?since={}", pct(since)));
    assert_eq!(a.status, 200, "{}{}", a.head, a.body);
    serde_json::from_str(&a.body).unwrap()
}

pub fn poll_events(v: &serde_json::Value) -> Vec<Msg> {
    v["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|e| Msg {
            id: Some(e["id"].as_str().unwrap().to_owned()),
            event: e["event"].as_str().unwrap().to_owned(),
            data: e["data"].as_str().unwrap().to_owned(),
        })
        .filter(|m| !is_warm(m))
        .collect()
}

pub fn as_msgs(pubs: &[Pub]) -> Vec<Msg> {
    pubs.iter()
        .map(|p| Msg {
            id: Some(p.id.clone()),
            event: "message".into(),
            data: p.data.clone(),
        })
        .collect()
}

pub fn datas(msgs: &[Msg]) -> Vec<&str> {
    msgs.iter().map(|m| m.data.as_str()).collect()
}

/// The `(event, data)` of each message: what every transport shows alike.
pub fn shown(msgs: &[Msg]) -> Vec<(&str, &str)> {
    msgs.iter()
        .map(|m| (m.event.as_str(), m.data.as_str()))
        .collect()
}

/// Pub/sub channels in Redis whose name contains `{topic}` (the topic's hash tag),
/// by `PUBSUB CHANNELS *` (or `PUBSUB SHARDCHANNELS *` on a cluster master).
pub fn channels_of(redis: &Redis, kind: &str, topic: &str) -> Vec<String> {
    let tag = format!("{{{topic}}}");
    redis
        .cmd(&["PUBSUB", kind, "*"])
        .lines()
        .filter(|c| c.contains(&tag))
        .map(str::to_owned)
        .collect()
}
