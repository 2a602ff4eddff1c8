//! Test harness: the real `ringpush` binary on 127.0.0.1:0, and a raw WebSocket client
//! that sends exact bytes.
#![allow(dead_code)]

pub mod redis;
pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ringpush::proto::Parsed;
use ringpush::proto::frame::{FrameHeader, OpCode, Role, write_masked_frame};

/// A running server, stopped with SIGTERM when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every line the server wrote to stderr after its first.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `ringpush serve --listen 127.0.0.1:0 ARGS` and waits for its "listening on"
    /// line. Returns `None` (after printing a skip line) if io_uring is unavailable here.
    pub fn start(args: &[&str]) -> Option<Server> {
        Server::start_limited(args, None)
    }

    /// As [`Server::start`], with RLIMIT_NOFILE (soft and hard) set to `nofile` in the
    /// server process, so that one fixed-file table holds at most that many connections.
    pub fn start_limited(args: &[&str], nofile: Option<u64>) -> Option<Server> {
        Server::launch("127.0.0.1:0", args, nofile)
    }

    /// As [`Server::start`], on a given address (to restart a server on its old port).
    pub fn start_on(listen: SocketAddr, args: &[&str]) -> Option<Server> {
        Server::launch(&listen.to_string(), args, None)
    }

    /// As [`Server::start`], with environment variables set for the server.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Option<Server> {
        Server::launch_with("127.0.0.1:0", args, None, env).map(|(s, _)| s)
    }

    /// As [`Server::start_env`]; also returns the server's first line.
    pub fn start_env_line(args: &[&str], env: &[(&str, &str)]) -> Option<(Server, String)> {
        Server::launch_with("127.0.0.1:0", args, None, env)
    }

    fn launch(listen: &str, args: &[&str], nofile: Option<u64>) -> Option<Server> {
        Server::launch_with(listen, args, nofile, &[]).map(|(s, _)| s)
    }

    fn launch_with(
        listen: &str,
        args: &[&str],
        nofile: Option<u64>,
        env: &[(&str, &str)],
    ) -> Option<(Server, String)> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringpush"));
        cmd.args(["serve", "--listen", listen])
            .args(args)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        if let Some(n) = nofile {
            limit_nofile(&mut cmd, n);
        }
        let mut child = cmd.spawn().expect("spawn ringpush");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        if let Some(addr) = first
            .strip_prefix("ringpush: listening on ")
            .and_then(|r| r.split(' ').next())
        {
            let addr = addr.parse().expect("address");
            // Keep draining stderr so the server never blocks on a full pipe.
            let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    // A test that panicked holding the lock must not stop the draining.
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
            return Some((Server { child, addr, log }, first));
        }
        let _ = child.wait();
        if first.contains("io_uring") {
            println!("SKIP: io_uring unavailable: {first}");
            return None;
        }
        panic!("server did not start: {first}");
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGKILL (a node that dies without a word) and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        self.child.wait().expect("reap the server")
    }

    /// Open file descriptors of the server process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(self.pid(), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// A TCP connection from a chosen 127.0.0.x source address.
pub fn tcp_from(addr: SocketAddr, src_last_octet: u8) -> TcpStream {
    tcp_with(addr, src_last_octet, None)
}

/// As [`tcp_from`], with `SO_RCVBUF` set before connecting (so the window the server
/// sees is small from the start), if given.
pub fn tcp_with(addr: SocketAddr, src_last_octet: u8, rcvbuf: Option<i32>) -> TcpStream {
    use std::os::fd::FromRawFd;
    // std cannot bind before connect; do it by hand.
    // SAFETY: socket/setsockopt/bind/connect on a fresh fd we own; structs are fully
    // initialised.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        if let Some(size) = rcvbuf {
            let ok = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const size).cast(),
                std::mem::size_of::<i32>() as u32,
            );
            assert_eq!(ok, 0);
        }
        let src = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, src_last_octet]),
            },
            sin_zero: [0; 8],
        };
        assert_eq!(
            libc::bind(
                fd,
                (&raw const src).cast(),
                std::mem::size_of_val(&src) as u32
            ),
            0,
            "bind 127.0.0.{src_last_octet}"
        );
        let SocketAddr::V4(a) = addr else {
            panic!("IPv4 only")
        };
        let dst = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        assert_eq!(
            libc::connect(
                fd,
                (&raw const dst).cast(),
                std::mem::size_of_val(&dst) as u32
            ),
            0,
            "connect: {}",
            std::io::Error::last_os_error()
        );
        TcpStream::from_raw_fd(fd)
    }
}

/// Reads an HTTP response head (and whatever body bytes came with it) from `s`.
pub fn read_head(s: &mut impl Read) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).into_owned();
            return (head, buf[i + 4..].to_vec());
        }
        let n = s.read(&mut chunk).expect("read head");
        assert!(
            n > 0,
            "EOF before a response head; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends one HTTP request and returns the whole response (the server closes or it has
/// Content-Length).
pub fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let (head, mut body) =
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_head(&mut s))) {
            Ok(r) => r,
            Err(_) => panic!(
                "no response to {:?} (local {:?})",
                &request[..request.len().min(80)],
                s.local_addr()
            ),
        };
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map(|v| v.trim().parse::<usize>().unwrap())
        .unwrap_or(0);
    let mut chunk = [0u8; 4096];
    while body.len() < len {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0);
        body.extend_from_slice(&chunk[..n]);
    }
    format!("{head}{}", String::from_utf8_lossy(&body))
}

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A raw WebSocket client: exact bytes out, frames parsed strictly as a client; over
/// TCP, or over TLS (`tls::TlsStream`, see `tls::ws`).
pub struct Ws<S = TcpStream> {
    pub s: S,
    buf: Vec<u8>,
}

/// What a [`Ws`] runs over: a byte stream with a TCP socket under it.
pub trait Sock: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl Sock for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

/// A frame as received.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    /// RSV1: a permessage-deflate compressed message.
    pub rsv1: bool,
    pub opcode: OpCode,
    pub payload: Vec<u8>,
}

impl Ws {
    pub fn connect(addr: SocketAddr, path: &str) -> Ws {
        Ws::connect_from(addr, path, 1)
    }

    pub fn connect_from(addr: SocketAddr, path: &str, src: u8) -> Ws {
        Ws::open(addr, path, src, "")
    }

    /// With extra header lines (each ending in `\r\n`) in the upgrade request.
    pub fn connect_with(addr: SocketAddr, path: &str, extra: &str) -> Ws {
        Ws::open(addr, path, 1, extra)
    }

    fn open(addr: SocketAddr, path: &str, src: u8, extra: &str) -> Ws {
        Ws::open_head(addr, path, src, extra).0
    }

    /// Like [`Ws::connect_with`], also returning the 101's head.
    pub fn connect_head(addr: SocketAddr, path: &str, extra: &str) -> (Ws, String) {
        Ws::open_head(addr, path, 1, extra)
    }

    fn open_head(addr: SocketAddr, path: &str, src: u8, extra: &str) -> (Ws, String) {
        let mut s = tcp_from(addr, src);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(upgrade_request(path, extra).as_bytes())
            .unwrap();
        let (head, rest) = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        // Field names in any case: HAProxy passes them on in lower case.
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
            "{head}"
        );
        (Ws { s, buf: rest }, head)
    }
}

impl<S: Sock> Ws<S> {
    /// Over a stream whose 101 was read already; `rest` is what followed its head.
    pub fn over(s: S, rest: Vec<u8>) -> Ws<S> {
        Ws { s, buf: rest }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    pub fn send(&mut self, fin: bool, op: OpCode, payload: &[u8]) {
        let mut out = Vec::new();
        write_masked_frame(&mut out, fin, op, payload, [0x12, 0x34, 0x56, 0x78]);
        self.send_raw(&out);
    }

    /// Sends a frame with RSV1 as given (a compressed message's first frame).
    pub fn send_rsv1(&mut self, fin: bool, rsv1: bool, op: OpCode, payload: &[u8]) {
        let mut out = Vec::new();
        ringpush::proto::frame::write_masked_frame_rsv1(
            &mut out,
            fin,
            rsv1,
            op,
            payload,
            [0x12, 0x34, 0x56, 0x78],
        );
        self.send_raw(&out);
    }

    /// A complete frame from the buffered bytes, if there is one. An invalid frame from
    /// the server fails the test.
    fn take_frame(&mut self) -> Option<Frame> {
        match FrameHeader::parse(&self.buf, Role::Client, u64::MAX >> 1, true) {
            Ok(Parsed::Complete { value: h, consumed }) => {
                let end = consumed + h.payload_len as usize;
                if self.buf.len() < end {
                    return None;
                }
                let payload = self.buf[consumed..end].to_vec();
                self.buf.drain(..end);
                Some(Frame {
                    fin: h.fin,
                    rsv1: h.rsv1,
                    opcode: h.opcode,
                    payload,
                })
            }
            Ok(Parsed::Partial) => None,
            Err(e) => panic!("server sent an invalid frame: {e}"),
        }
    }

    /// Reads more bytes: `Ok(false)` on EOF or reset.
    fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = vec![0u8; 65536];
        match self.s.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The next frame, or `None` on EOF.
    pub fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.take_frame() {
                return Some(f);
            }
            if !self.fill().expect("read") {
                return None;
            }
        }
    }

    /// Like [`Ws::recv`], but a read timeout returns `None`; EOF fails the test.
    pub fn try_recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.take_frame() {
                return Some(f);
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => panic!("EOF"),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The next frame within `within`: `Ok(None)` when none came in time, an
    /// `UnexpectedEof` (or the read's) error when the server went away.
    pub fn recv_within(&mut self, within: Duration) -> std::io::Result<Option<Frame>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(f) = self.take_frame() {
                return Ok(Some(f));
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Ok(None);
            };
            self.s
                .tcp()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Expects a close frame with `code`, then EOF.
    pub fn expect_close(&mut self, code: u16) {
        let f = self.recv().expect("a close frame");
        assert_eq!(f.opcode, OpCode::Close, "{f:?}");
        assert_eq!(
            u16::from_be_bytes([f.payload[0], f.payload[1]]),
            code,
            "reason {:?}",
            String::from_utf8_lossy(&f.payload[2..])
        );
        // Answer like a well-behaved client so the server can finish the handshake.
        self.send(true, OpCode::Close, &f.payload[..2]);
        assert_eq!(self.recv(), None, "EOF after the close handshake");
    }
}

/// Sets RLIMIT_NOFILE (soft and hard) to `n` in the child `cmd` will start.
pub fn limit_nofile(cmd: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and touches only this child's limits.
    unsafe {
        cmd.pre_exec(move || {
            let rl = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

/// Runs a peer-client script, `program script ARGS...`, and requires exit 0 with "ok" as
/// the last line of its output (every script under tests/interop and tests/browser
/// follows that convention).
pub fn run_peer(program: &str, script: &str, args: &[&str]) {
    let out = Command::new(program)
        .arg(script)
        .args(args)
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

/// Publishes every `(topic, body)` over one connection, pipelined (written by a second
/// thread while the answers are read); returns the ids the answers carry, in order.
pub fn publish_pipelined(addr: SocketAddr, items: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let writer = {
        let mut w = s.try_clone().unwrap();
        let items = items.to_vec();
        std::thread::spawn(move || {
            for (topic, body) in items {
                write!(
                    w,
                    "POST /publish/{topic} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .unwrap();
                w.write_all(&body).unwrap();
            }
        })
    };
    let mut ids = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    while ids.len() < items.len() {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            if buf.len() >= end + 4 + len {
                let v: serde_json::Value =
                    serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap();
                ids.push(v["id"].as_str().unwrap().to_owned());
                buf.drain(..end + 4 + len);
                continue;
            }
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "EOF after {} answers", ids.len());
        buf.extend_from_slice(&chunk[..n]);
    }
    writer.join().unwrap();
    ids
}

/// The resident memory of process `pid`, in KiB (`VmRSS`).
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Runs `ringpush load ARGS --json`, with RLIMIT_NOFILE `nofile` if given.
pub fn run_load(args: &[&str], nofile: Option<u64>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringpush"));
    cmd.arg("load")
        .args(args)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(n) = nofile {
        limit_nofile(&mut cmd, n);
    }
    cmd.output().expect("run ringpush load")
}

/// As [`run_load`], which must succeed: its JSON report.
pub fn load(args: &[&str], nofile: Option<u64>) -> serde_json::Value {
    let out = run_load(args, nofile);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ringpush load {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// A report's unsigned field, which must be there.
pub fn json_u64(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}
