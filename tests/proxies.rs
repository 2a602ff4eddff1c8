//! ringpush behind real reverse proxies: Debian's nginx and HAProxy, started here on
//! free loopback ports from the shipped samples `tuning/nginx.conf`,
//! `tuning/nginx-stream.conf` and `tuning/haproxy.cfg`, so what is proven is what users
//! copy.
//!
//! The samples are changed only where a test must: listen and upstream addresses,
//! log and pid paths, the idle timeouts tied to ringpush's heartbeats (60 s there, 2 s
//! here, so that a cut shows within the test), and sizing knobs that would make each
//! test proxy allocate for a million connections (nginx `worker_connections`,
//! `worker_processes`; HAProxy `maxconn`). For the PROXY protocol the HAProxy sample's
//! own commented `default-server send-proxy-v2` line is switched on (v2), and
//! nginx-stream.conf sends v1.
//!
//! The client always connects from 127.0.0.77, outside the proxies' source addresses
//! (127.0.0.1-41), and ringpush trusts 127.0.0.0/26: the access log must show
//! 127.0.0.77, which only the proxy can have told it.
//!
//! Where nginx or haproxy is not installed the tests print a skip line and pass,
//! except under scripts/test.sh (`RINGPUSH_REQUIRE_PROXIES=1`), which installs both
//! and fails a test that cannot find them.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, Ws, read_head, tcp_from};
use ringpush::proto::frame::OpCode;

/// The client's source address (last octet): not a proxy's.
const CLIENT: u8 = 77;
/// What ringpush trusts: every source address the samples' proxies use.
const TRUSTED: &str = "127.0.0.0/26";
/// The proxies' idle timeout in these tests.
const PROXY_TIMEOUT: Duration = Duration::from_secs(2);
/// ringpush's heartbeats when they are on: half the proxies' timeout.
const HEARTBEATS_ON: [&str; 6] = [
    "--ping-interval",
    "1s",
    "--pong-timeout",
    "5s",
    "--sse-heartbeat",
    "1s",
];
/// ... and when they are "off": far slower than the timeout.
const HEARTBEATS_OFF: [&str; 4] = ["--ping-interval", "60s", "--sse-heartbeat", "60s"];

// --- the proxies -------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nginx,
    Haproxy,
    /// HAProxy with `send-proxy-v2`: ringpush runs with `--proxy-protocol`.
    HaproxyV2,
    /// nginx's stream module with `proxy_protocol on` (v1): `--proxy-protocol` too.
    NginxStream,
}

/// Where Debian's libnginx-mod-stream puts the module nginx-stream.conf loads.
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

impl Kind {
    fn program(self) -> &'static str {
        match self {
            Kind::Nginx | Kind::NginxStream => "nginx",
            Kind::Haproxy | Kind::HaproxyV2 => "haproxy",
        }
    }

    /// ringpush expects a PROXY header from this proxy.
    fn proxy_protocol(self) -> bool {
        matches!(self, Kind::HaproxyV2 | Kind::NginxStream)
    }
}

/// `name` on PATH or in /usr/sbin (not on every user's PATH).
fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The proxy's binary, or `None` after a skip line (a failure under scripts/test.sh).
fn binary(kind: Kind) -> Option<PathBuf> {
    let name = kind.program();
    let found =
        find(name).filter(|_| kind != Kind::NginxStream || Path::new(STREAM_MODULE).exists());
    if found.is_none() {
        assert!(
            std::env::var_os("RINGPUSH_REQUIRE_PROXIES").is_none(),
            "{name} (or its stream module) is not installed, and scripts/test.sh should have installed it"
        );
        println!(
            "SKIP: {name} (or its stream module) is not installed (scripts/test.sh installs it)"
        );
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Replaces `from` with `to`, insisting it is there: a sample that changed under the
/// test must fail it, not be silently tested unchanged.
fn sub(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the sample no longer has {from:?}");
    text.replace(from, to)
}

fn sample(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tuning")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An nginx sample with what both nginx tests change: the listen port in the sample
/// (`sample_port`) and the upstream, the error log and pid file (`run`: their names in
/// the sample) moved into `dir`, one worker sized for a test.
fn nginx_sample(
    name: &str,
    sample_port: u16,
    run: &str,
    dir: &Path,
    port: u16,
    upstream: SocketAddr,
) -> String {
    let mut c = sample(name);
    c = sub(
        &c,
        &format!("listen {sample_port} "),
        &format!("listen 127.0.0.1:{port} "),
    );
    c = sub(&c, "server 127.0.0.1:8080;", &format!("server {upstream};"));
    c = sub(
        &c,
        &format!("/var/log/nginx/{run}-error.log"),
        &dir.join("error.log").display().to_string(),
    );
    c = sub(
        &c,
        &format!("/run/nginx-{run}.pid"),
        &dir.join("nginx.pid").display().to_string(),
    );
    c = sub(&c, "worker_processes auto;", "worker_processes 1;");
    c = sub(
        &c,
        "worker_connections 1000000;",
        "worker_connections 1024;",
    );
    sub(
        &c,
        "worker_rlimit_nofile 1048576;",
        "worker_rlimit_nofile 4096;",
    )
}

/// tuning/nginx.conf, adapted as the module docs say.
fn nginx_conf(dir: &Path, port: u16, upstream: SocketAddr) -> String {
    let mut c = nginx_sample("nginx.conf", 8081, "ringpush", dir, port, upstream);
    // The WebSocket and event-stream timeouts, each "60s" in the sample.
    c = sub(&c, "proxy_read_timeout 60s;", "proxy_read_timeout 2s;");
    c = sub(&c, "proxy_send_timeout 60s;", "proxy_send_timeout 2s;");
    // Temporary files where this user may write them (nginx's compiled-in paths are
    // under /var/lib/nginx); nothing in these tests is large enough to use them.
    let temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .map(|t| format!("    {t}_temp_path {};\n", dir.join(t).display()))
        .concat();
    sub(&c, "http {\n", &format!("http {{\n{temp}"))
}

/// tuning/nginx-stream.conf, adapted as the module docs say.
fn nginx_stream_conf(dir: &Path, port: u16, upstream: SocketAddr) -> String {
    let c = nginx_sample(
        "nginx-stream.conf",
        8082,
        "ringpush-stream",
        dir,
        port,
        upstream,
    );
    sub(&c, "proxy_timeout 60s;", "proxy_timeout 2s;")
}

/// tuning/haproxy.cfg, adapted as the module docs say.
fn haproxy_cfg(port: u16, upstream: SocketAddr, proxy_v2: bool) -> String {
    let mut c = sample("haproxy.cfg");
    c = sub(&c, "bind :8081", &format!("bind 127.0.0.1:{port}"));
    c = sub(&c, "127.0.0.1:8080", &upstream.to_string());
    c = sub(&c, "maxconn 500000", "maxconn 1024");
    for t in ["client", "server", "tunnel"] {
        c = sub(&c, &format!("timeout {t} 60s"), &format!("timeout {t} 2s"));
    }
    if proxy_v2 {
        c = sub(
            &c,
            "#default-server send-proxy-v2",
            "default-server send-proxy-v2",
        );
    }
    c
}

/// A proxy process, killed (by its PID) when dropped, with its files in a temporary
/// directory removed then.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Proxy {
    /// Starts `kind` in front of `upstream` on a free port (a few tries: another
    /// process may take the port between the probe and the proxy's bind), and waits
    /// until it accepts connections.
    fn start(kind: Kind, upstream: SocketAddr) -> Option<Proxy> {
        let bin = binary(kind)?;
        let mut last = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "ringpush-proxy-{}-{port}-{attempt}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let mut cmd = Command::new(&bin);
            match kind {
                Kind::Nginx | Kind::NginxStream => {
                    let conf = dir.join("nginx.conf");
                    let text = if kind == Kind::Nginx {
                        nginx_conf(&dir, port, upstream)
                    } else {
                        nginx_stream_conf(&dir, port, upstream)
                    };
                    std::fs::write(&conf, text).unwrap();
                    // One process in the foreground, so its PID is all there is to end.
                    cmd.arg("-c")
                        .arg(&conf)
                        .arg("-e")
                        .arg(dir.join("error.log"));
                    cmd.args(["-g", "daemon off; master_process off;"]);
                }
                Kind::Haproxy | Kind::HaproxyV2 => {
                    let conf = dir.join("haproxy.cfg");
                    let cfg = haproxy_cfg(port, upstream, kind == Kind::HaproxyV2);
                    std::fs::write(&conf, cfg).unwrap();
                    // -db: foreground, one process.
                    cmd.arg("-db").arg("-f").arg(&conf);
                }
            }
            let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
            // A test process killed before its guards run (a timeout) takes the proxy
            // with it: SIGKILL when the spawning thread ends, which is after the
            // guard's own kill in every other case.
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd.spawn().expect("spawn the proxy");
            let mut proxy = Proxy {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if proxy.child.try_wait().unwrap().is_some() {
                    last = proxy.logs();
                    break;
                }
                if TcpStream::connect(proxy.addr).is_ok() {
                    return Some(proxy);
                }
                assert!(
                    Instant::now() < deadline,
                    "{kind:?} did not listen within 10 s:\n{}",
                    proxy.logs()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("{kind:?} did not start on 5 free ports:\n{last}");
    }

    fn logs(&self) -> String {
        ["stderr.log", "error.log"]
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .concat()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// ringpush with `args` and `extra`, and `kind` in front of it; `None` after a skip.
fn start(kind: Kind, heartbeats: &[&str]) -> Option<(Server, Proxy)> {
    binary(kind)?;
    let mut args = vec!["--access-log", "--trusted-proxy", TRUSTED];
    args.extend_from_slice(heartbeats);
    if kind.proxy_protocol() {
        args.push("--proxy-protocol");
    }
    let server = Server::start(&args)?;
    let proxy = Proxy::start(kind, server.addr)?;
    Some((server, proxy))
}

// --- clients -----------------------------------------------------------------------

/// `POST /publish/{topic}` through the proxy (behind `send-proxy-v2`, ringpush takes
/// no connection without a PROXY header); returns the event id.
fn publish(addr: SocketAddr, topic: &str, body: &str) -> String {
    let r = common::http(
        addr,
        &format!(
            "POST /publish/{topic} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let id = r
        .split("\"id\":\"")
        .nth(1)
        .expect("an id")
        .split('"')
        .next();
    id.unwrap().to_owned()
}

/// One SSE event as received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    id: String,
    data: String,
}

/// A raw event-stream client from 127.0.0.77: exact bytes, and what arrives when.
struct Sse {
    s: TcpStream,
    buf: Vec<u8>,
    heartbeats: usize,
}

#[derive(Debug)]
enum Got {
    Event(Event),
    Timeout,
    Eof,
}

impl Sse {
    fn open(addr: SocketAddr, path: &str, last_event_id: Option<&str>) -> Sse {
        let mut s = tcp_from(addr, CLIENT);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let last = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        s.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n{last}\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let (head, rest) = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("text/event-stream"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("content-encoding"),
            "compressed: {head}"
        );
        Sse {
            s,
            buf: rest,
            heartbeats: 0,
        }
    }

    /// The next event (skipping `retry:` and heartbeat comments, which are counted)
    /// within `within`.
    fn next(&mut self, within: Duration) -> Got {
        let deadline = Instant::now() + within;
        loop {
            while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let block = String::from_utf8(block).unwrap();
                let (mut id, mut data) = (None, Vec::new());
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.heartbeats += 1;
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push(v);
                    }
                }
                if let Some(id) = id {
                    let data = data.join("\n");
                    return Got::Event(Event { id, data });
                }
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Got::Timeout;
            };
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return Got::Eof,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Got::Timeout;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Got::Eof,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn event(&mut self, within: Duration) -> Event {
        match self.next(within) {
            Got::Event(e) => e,
            other => panic!("expected an event within {within:?}, got {other:?}"),
        }
    }
}

/// Reads the WebSocket for `dur`, answering each ping; returns the pings seen, or
/// how long it lasted when the connection ended.
fn hold_ws(ws: &mut Ws, dur: Duration) -> Result<usize, Duration> {
    let start = Instant::now();
    let mut pings = 0;
    loop {
        let Some(left) = (start + dur).checked_duration_since(Instant::now()) else {
            return Ok(pings);
        };
        match ws.recv_within(left) {
            Ok(None) => return Ok(pings),
            Ok(Some(f)) if f.opcode == OpCode::Ping => {
                pings += 1;
                ws.send(true, OpCode::Pong, &f.payload);
            }
            Ok(Some(f)) if f.opcode == OpCode::Close => return Err(start.elapsed()),
            Ok(Some(f)) => panic!("unexpected {f:?}"),
            Err(_) => return Err(start.elapsed()),
        }
    }
}

/// Waits (up to 5 s) for an access log line containing every one of `parts`.
fn expect_log(server: &Server, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = server
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.starts_with("ringpush: access") && parts.iter().all(|p| l.contains(p)))
            .cloned();
        if let Some(line) = found {
            return line;
        }
        if Instant::now() > deadline {
            let log = server.log.lock().unwrap().join("\n");
            panic!("no access log line with {parts:?}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// --- the scenarios -----------------------------------------------------------------

/// WebSocket echo and pub/sub, SSE event by event, and the client's address, through
/// the proxy.
fn traffic(kind: Kind) {
    let Some((server, proxy)) = start(kind, &HEARTBEATS_ON) else {
        return;
    };
    let via = proxy.addr;

    // Echo.
    let mut echo = Ws::connect_from(via, "/echo", CLIENT);
    echo.send(true, OpCode::Text, b"through the proxy");
    let f = echo.recv_within(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(
        (f.opcode, &f.payload[..]),
        (OpCode::Text, &b"through the proxy"[..])
    );

    // Pub/sub: a WebSocket message and an HTTP publish reach the other subscriber.
    let mut a = Ws::connect_from(via, "/ws/chat", CLIENT);
    let mut b = Ws::connect_from(via, "/ws/chat", CLIENT);
    // The next data frame within 2 s (answering pings), or `None`.
    let next_data = |ws: &mut Ws| {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let f = ws.recv_within(left).unwrap()?;
            if f.opcode == OpCode::Ping {
                ws.send(true, OpCode::Pong, &f.payload);
            } else {
                return Some(f);
            }
        }
    };
    // A subscription takes effect at the topic's owner shard a moment after the 101,
    // and a message published before that is not for the new subscriber: retry until
    // one arrives (a late copy of an earlier try is skipped below).
    let mut delivered = None;
    for attempt in 0..10 {
        a.send(
            true,
            OpCode::Binary,
            format!("\x00\x01hello {attempt}").as_bytes(),
        );
        if let Some(f) = next_data(&mut b) {
            delivered = Some(f);
            break;
        }
    }
    let f = delivered.expect("a WebSocket message reached the other subscriber");
    assert_eq!(f.opcode, OpCode::Binary);
    assert!(f.payload.starts_with(b"\x00\x01hello "), "{f:?}");
    publish(via, "chat", "from http");
    let payload = |f: Option<common::Frame>| f.map(|f| f.payload);
    assert_eq!(payload(next_data(&mut a)), Some(b"from http".to_vec()));
    let mut got = payload(next_data(&mut b));
    while got
        .as_deref()
        .is_some_and(|p| p.starts_with(b"\x00\x01hello "))
    {
        got = payload(next_data(&mut b));
    }
    assert_eq!(got, Some(b"from http".to_vec()));

    // SSE: each event through the proxy as soon as it is published, measured one by one.
    // From id 0 ("everything retained", nothing yet): an event published before the
    // subscription reaches the topic's owner shard still comes, replayed.
    let mut sse = Sse::open(via, "/sse/news", Some("0"));
    expect_log(&server, &["sse open news"]);
    let mut latencies = Vec::new();
    for i in 0..5 {
        let sent = Instant::now();
        let id = publish(via, "news", &format!("event {i}"));
        // Generous: it must come before the next publish, 200 ms later.
        let e = sse.event(Duration::from_millis(200));
        latencies.push(sent.elapsed());
        assert_eq!(
            e,
            Event {
                id,
                data: format!("event {i}")
            }
        );
        std::thread::sleep(Duration::from_millis(200).saturating_sub(sent.elapsed()));
    }
    println!("{kind:?}: SSE publish-to-arrival latencies {latencies:?}");

    // Who ringpush thinks the client is: 127.0.0.77, which only the proxy knew.
    let client = format!("client=127.0.0.{CLIENT}");
    for what in ["ws open /echo", "ws open /ws/chat", "sse open news"] {
        let line = expect_log(&server, &[what, &client]);
        let peer = line.split(" peer=127.0.0.").nth(1).unwrap();
        assert!(!peer.starts_with(&format!("{CLIENT}:")), "{line}");
    }
    drop(echo);
    expect_log(&server, &["ws close", &client]);

    // A client that reaches ringpush directly cannot choose its address.
    match kind {
        Kind::HaproxyV2 | Kind::NginxStream => {
            // No PROXY header: closed without a word.
            let mut s = tcp_from(server.addr, 78);
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
            expect_log(&server, &["client=127.0.0.78", "refused BadProxyHeader"]);
        }
        Kind::Nginx | Kind::Haproxy => {
            let mut s = tcp_from(server.addr, 78);
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(
                common::upgrade_request("/ws/chat", "X-Forwarded-For: 203.0.113.9\r\n").as_bytes(),
            )
            .unwrap();
            let (head, _) = read_head(&mut s);
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            let line = expect_log(&server, &["ws open", "peer=127.0.0.78:"]);
            assert!(line.contains(" client=127.0.0.78:"), "{line}");
        }
    }
}

/// With heartbeats at half the proxy's idle timeout, a WebSocket and an event stream
/// stay open for 10 s through it.
fn heartbeats_hold(kind: Kind) {
    let Some((server, proxy)) = start(kind, &HEARTBEATS_ON) else {
        return;
    };
    let via = proxy.addr;
    let mut ws = Ws::connect_from(proxy.addr, "/ws/idle", CLIENT);
    let mut sse = Sse::open(proxy.addr, "/sse/idle", None);
    let hold = Duration::from_secs(10);
    let sse_thread = std::thread::spawn(move || {
        let start = Instant::now();
        let got = sse.next(hold);
        assert!(
            matches!(got, Got::Timeout),
            "the stream ended after {:?}: {got:?}",
            start.elapsed()
        );
        sse
    });
    // On failure, who ended what: ringpush's access log says whether it closed a
    // connection itself (PongTimeout) or saw the proxy leave (PeerEof).
    let why = || {
        std::thread::sleep(Duration::from_millis(200));
        let log = server.log.lock().unwrap().join("\n");
        format!("ringpush:\n{log}\n{kind:?}:\n{}", proxy.logs())
    };
    let pings = hold_ws(&mut ws, hold).unwrap_or_else(|t| {
        panic!(
            "{kind:?} cut the WebSocket after {t:?} despite pings\n{}",
            why()
        )
    });
    let mut sse = sse_thread
        .join()
        .unwrap_or_else(|_| panic!("the stream ended early (above)\n{}", why()));
    println!(
        "{kind:?}: held 10 s: {pings} pings, {} SSE heartbeats",
        sse.heartbeats
    );
    assert!(pings >= 5, "{pings} pings in 10 s at 1 s");
    assert!(sse.heartbeats >= 5, "{} heartbeats in 10 s", sse.heartbeats);
    // Both still carry traffic.
    let id = publish(via, "idle", "still here");
    assert_eq!(sse.event(Duration::from_secs(2)).id, id);
    let f = loop {
        let f = ws
            .recv_within(Duration::from_secs(2))
            .unwrap()
            .expect("a frame");
        if f.opcode != OpCode::Ping {
            break f;
        }
        ws.send(true, OpCode::Pong, &f.payload);
    };
    assert_eq!(f.payload, b"still here");
}

/// With heartbeats slower than the proxy's idle timeout, the proxy cuts a quiet
/// WebSocket and event stream: why the heartbeats exist. The cut SSE client
/// reconnects through the proxy with Last-Event-ID and gets exactly what it missed.
fn no_heartbeats_cut(kind: Kind) {
    let Some((_server, proxy)) = start(kind, &HEARTBEATS_OFF) else {
        return;
    };
    let via = proxy.addr;
    let mut ws = Ws::connect_from(proxy.addr, "/ws/silent", CLIENT);
    let mut sse = Sse::open(proxy.addr, "/sse/quiet", Some("0"));
    let first = publish(via, "quiet", "before the cut");
    assert_eq!(sse.event(Duration::from_secs(2)).id, first);
    let ws_thread = std::thread::spawn(move || hold_ws(&mut ws, Duration::from_secs(8)));

    // The stream goes quiet; the proxy cuts it after its 2 s.
    let start = Instant::now();
    let got = sse.next(Duration::from_secs(8));
    let sse_cut = start.elapsed();
    assert!(
        matches!(got, Got::Eof),
        "{kind:?}: {got:?} after {sse_cut:?}"
    );
    let ws_cut = ws_thread
        .join()
        .unwrap()
        .expect_err("the proxy should have cut the quiet WebSocket");
    println!("{kind:?}: without heartbeats, cut after: WebSocket {ws_cut:?}, SSE {sse_cut:?}");
    for cut in [ws_cut, sse_cut] {
        assert!(cut >= PROXY_TIMEOUT - Duration::from_millis(300), "{cut:?}");
        assert!(cut < PROXY_TIMEOUT + Duration::from_secs(4), "{cut:?}");
    }

    // Missed while away, then resumed through the proxy from the last id seen.
    let missed: Vec<String> = (0..3)
        .map(|i| publish(via, "quiet", &format!("missed {i}")))
        .collect();
    let mut again = Sse::open(proxy.addr, "/sse/quiet", Some(&first));
    for (i, id) in missed.iter().enumerate() {
        let e = again.event(Duration::from_secs(2));
        assert_eq!(
            e,
            Event {
                id: id.clone(),
                data: format!("missed {i}")
            }
        );
    }
    assert!(
        matches!(again.next(Duration::from_millis(300)), Got::Timeout),
        "nothing more: no duplicates"
    );
    let live = publish(via, "quiet", "live");
    assert_eq!(again.event(Duration::from_secs(2)).id, live);
}

#[test]
fn nginx_traffic_and_client_address() {
    traffic(Kind::Nginx);
}

#[test]
fn nginx_heartbeats_keep_connections_open() {
    heartbeats_hold(Kind::Nginx);
}

#[test]
fn nginx_cuts_without_heartbeats_and_sse_resumes() {
    no_heartbeats_cut(Kind::Nginx);
}

#[test]
fn haproxy_traffic_and_client_address() {
    traffic(Kind::Haproxy);
}

#[test]
fn haproxy_heartbeats_keep_connections_open() {
    heartbeats_hold(Kind::Haproxy);
}

#[test]
fn haproxy_cuts_without_heartbeats_and_sse_resumes() {
    no_heartbeats_cut(Kind::Haproxy);
}

#[test]
fn haproxy_proxy_protocol_v2_traffic_and_client_address() {
    traffic(Kind::HaproxyV2);
}

#[test]
fn nginx_stream_proxy_protocol_v1_traffic_and_client_address() {
    traffic(Kind::NginxStream);
}

#[test]
fn nginx_stream_heartbeats_keep_connections_open() {
    heartbeats_hold(Kind::NginxStream);
}

#[test]
fn nginx_stream_cuts_without_heartbeats_and_sse_resumes() {
    no_heartbeats_cut(Kind::NginxStream);
}

/// TLS terminated by ringpush behind nginx's `stream` module: nginx passes the client's
/// TLS bytes through after its PROXY v1 header (in the clear), ringpush reads the header
/// and then runs the handshake: a wss echo works and the access log names the client.
#[test]
fn nginx_stream_passes_tls_through_with_proxy_protocol() {
    if binary(Kind::NginxStream).is_none() {
        return;
    }
    let pki = common::tls::Pki::new("stream");
    let Some(server) = common::tls::server(&pki, &["--access-log", "--proxy-protocol"]) else {
        return;
    };
    let proxy = Proxy::start(Kind::NginxStream, server.addr).unwrap();
    let tcp = tcp_from(proxy.addr, CLIENT);
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = "localhost".try_into().unwrap();
    let conn = rustls::ClientConnection::new(pki.client_config(), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(common::upgrade_request("/echo", "").as_bytes())
        .unwrap();
    let (head, rest) = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut ws = Ws::over(s, rest);
    ws.send(true, OpCode::Text, b"through nginx, encrypted");
    assert_eq!(ws.recv().unwrap().payload, b"through nginx, encrypted");
    expect_log(
        &server,
        &["ws open /echo", &format!("client=127.0.0.{CLIENT}:")],
    );
}

/// `--proxy-protocol` without a proxy: a PROXY v2 header that arrives a byte at a
/// time, 20 ms apart, holds up nobody (another client is served meanwhile, on a
/// one-shard server) and is then honoured; a v1 header in two segments too; anything
/// else, and a header cut off by the handshake timeout, is closed without a reply.
#[test]
fn proxy_protocol_header_in_pieces_does_not_block_the_shard() {
    let Some(server) = Server::start(&[
        "--shards",
        "1",
        "--proxy-protocol",
        "--access-log",
        "--handshake-timeout",
        "1s",
    ]) else {
        return;
    };
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[198, 51, 100, 9, 127, 0, 0, 1, 0x12, 0x67, 0x1f, 0x90]);
    let v1 = b"PROXY TCP4 198.51.100.10 127.0.0.1 4712 8080\r\n";
    let answer = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = Vec::new();
        let _ = s.read_to_end(&mut r);
        String::from_utf8_lossy(&r).into_owned()
    };

    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.set_nodelay(true).unwrap();
    for (i, b) in v2.iter().enumerate() {
        slow.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        if i == v2.len() / 2 {
            // Meanwhile, on the same shard: another client, served at once.
            let mut quick = TcpStream::connect(server.addr).unwrap();
            quick.write_all(v1.split_at(20).0).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            quick.write_all(v1.split_at(20).1).unwrap();
            quick.write_all(healthz).unwrap();
            assert!(answer(&mut quick).starts_with("HTTP/1.1 200"));
        }
    }
    slow.write_all(healthz).unwrap();
    assert!(answer(&mut slow).starts_with("HTTP/1.1 200"));

    // The client's address is the header's; the peer is the TCP one.
    let mut ws = TcpStream::connect(server.addr).unwrap();
    ws.write_all(&v2).unwrap();
    ws.write_all(common::upgrade_request("/echo", "").as_bytes())
        .unwrap();
    let (head, _) = read_head(&mut ws);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let line = expect_log(&server, &["ws open /echo"]);
    assert!(
        line.contains(" client=198.51.100.9:4711 peer=127.0.0.1:"),
        "{line}"
    );

    // HTTP where a header belongs; a header that never completes.
    let mut plain = TcpStream::connect(server.addr).unwrap();
    plain.write_all(healthz).unwrap();
    assert_eq!(answer(&mut plain), "", "closed without a reply");
    let mut stuck = TcpStream::connect(server.addr).unwrap();
    stuck.write_all(&v2[..10]).unwrap();
    let start = Instant::now();
    assert_eq!(answer(&mut stuck), "");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    expect_log(&server, &["refused BadProxyHeader(Signature)"]);
    expect_log(&server, &["refused HandshakeTimeout"]);
    let mut m = TcpStream::connect(server.addr).unwrap();
    m.write_all(v1).unwrap();
    m.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let metrics = answer(&mut m);
    assert!(
        metrics
            .contains("ringpush_handshake_failures_total{shard=\"0\",reason=\"proxy_header\"} 1"),
        "{metrics}"
    );
}
