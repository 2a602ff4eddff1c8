//! Real `redis-server` processes for the cluster tests, each on a free loopback port with
//! no persistence and its own temporary directory, ended by PID when dropped; and a
//! small RESP2 client to talk to them (no crate: the tests must see exactly what Redis
//! says, and the server's own Redis client is what is under test).
//!
//! Nothing here assumes a Redis is running: [`Redis::start`] and [`RedisCluster::start`]
//! print a skip line and return `None` where `redis-server` is not installed
//! (scripts/test.sh installs it from Debian).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a command may take before [`Redis::cmd`] gives up on it.
const CMD_TIMEOUT: Duration = Duration::from_secs(5);

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Nil,
    /// A simple or bulk string.
    Str(String),
    Int(i64),
    /// An error reply (`-ERR ...`).
    Err(String),
    Array(Vec<Reply>),
}

impl Reply {
    /// The reply as `redis-cli --no-raw` would roughly print it, flattened: strings as
    /// they are, integers in decimal, nil as "", array elements one per line.
    pub fn text(&self) -> String {
        match self {
            Reply::Nil => String::new(),
            Reply::Str(s) | Reply::Err(s) => s.clone(),
            Reply::Int(n) => n.to_string(),
            Reply::Array(items) => items.iter().map(Reply::text).collect::<Vec<_>>().join("\n"),
        }
    }
}

/// Sends one command to `127.0.0.1:port` on a fresh connection and reads its reply,
/// waiting at most `timeout` for each step. `Err` carries an I/O failure (refused,
/// timed out: a paused server), never an error reply, which is `Ok(Reply::Err)`.
pub fn command(port: u16, args: &[&str], timeout: Duration) -> Result<Reply, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    (&s).write_all(&out).map_err(|e| format!("write: {e}"))?;
    read_reply(&mut BufReader::new(s))
}

fn read_reply(r: &mut BufReader<TcpStream>) -> Result<Reply, String> {
    let mut line = String::new();
    let n = r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("EOF before a reply".into());
    }
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1);
    let num = || {
        rest.parse::<i64>()
            .map_err(|_| format!("bad RESP line {line:?}"))
    };
    match kind {
        "+" => Ok(Reply::Str(rest.to_owned())),
        "-" => Ok(Reply::Err(rest.to_owned())),
        ":" => Ok(Reply::Int(num()?)),
        "$" => {
            let len = num()?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            let mut buf = vec![0u8; len as usize + 2];
            r.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
            buf.truncate(len as usize);
            Ok(Reply::Str(String::from_utf8_lossy(&buf).into_owned()))
        }
        "*" => {
            let len = num()?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            (0..len)
                .map(|_| read_reply(r))
                .collect::<Result<_, _>>()
                .map(Reply::Array)
        }
        _ => Err(format!("bad RESP line {line:?}")),
    }
}

/// Whether `redis-server` (and so `redis-cli`, from the same Debian package) runs here;
/// prints a skip line when it does not.
pub fn available() -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("SKIP: redis-server is not installed (scripts/test.sh installs it)");
    }
    ok
}

/// A loopback port that was free a moment ago. Another process may take it before ours
/// binds it, so the starters retry on a fresh port when `redis-server` cannot bind.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fresh_dir(port: u16) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ringpush-redis-{}-{port}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `redis-server` on `127.0.0.1:port`, killed (SIGKILL, by its PID) when dropped.
#[derive(Debug)]
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    /// `--cluster-port` when started as a cluster node.
    bus_port: Option<u16>,
    dir: PathBuf,
}

impl Redis {
    /// A new empty `redis-server` on a free port, answering PING; `None` (after a skip
    /// line) where `redis-server` is not installed.
    pub fn start() -> Option<Redis> {
        if !available() {
            return None;
        }
        Some(Redis::start_on_free_port(false))
    }

    fn start_on_free_port(cluster: bool) -> Redis {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let bus_port = cluster.then(free_port);
            match Redis::spawn(port, bus_port) {
                Ok(r) => return r,
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start on 5 free ports: {last}");
    }

    /// Starts `redis-server` on `port` and waits (at most 10 s) until it answers PING.
    fn spawn(port: u16, bus_port: Option<u16>) -> Result<Redis, String> {
        let dir = fresh_dir(port);
        let log = dir.join("redis.log");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(bus) = bus_port {
            cmd.args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "5000"])
                .args(["--cluster-port", &bus.to_string()]);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        let mut redis = Redis {
            child: Some(child),
            port,
            bus_port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let exited = redis.child.as_mut().unwrap().try_wait().unwrap().is_some();
            if exited {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("redis-server on port {port} exited:\n{log}"));
            }
            let pong = command(port, &["PING"], Duration::from_millis(500));
            if matches!(&pong, Ok(Reply::Str(s)) if s == "PONG") {
                return Ok(redis);
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "redis-server on port {port}: no PONG in 10 s\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis://USER:PASSWORD@127.0.0.1:PORT/0`.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}/0", self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("redis-server running").id() as i32
    }

    /// Runs one command (as the default user) and returns its reply as text
    /// ([`Reply::text`]); an error reply or no reply within 5 s fails the test.
    pub fn cmd(&self, args: &[&str]) -> String {
        match command(self.port, args, CMD_TIMEOUT) {
            Ok(Reply::Err(e)) => panic!("redis {args:?}: {e}"),
            Ok(r) => r.text(),
            Err(e) => panic!("redis {args:?} on port {}: {e}", self.port),
        }
    }

    /// As [`Redis::cmd`], with the reply as it came and I/O failures returned.
    pub fn try_cmd(&self, args: &[&str], timeout: Duration) -> Result<Reply, String> {
        command(self.port, args, timeout)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child, which has not been reaped.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// SIGSTOP: the process holds its sockets and data and answers nothing.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Redis::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGKILL, and reaps the process. Its data is gone: there is no persistence.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain kill(2) on our own child, which has not been reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Kills this server (if it still runs) and starts a new, empty one on the same port
    /// (and the same cluster bus port), in a new directory; waits until it answers PING.
    pub fn restart_empty(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        // The port was ours a moment ago; something else may hold it for a while (a
        // connection in its way), so try for a few seconds.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Redis::spawn(self.port, self.bus_port) {
                Ok(mut fresh) => {
                    self.child = fresh.child.take();
                    self.dir = std::mem::take(&mut fresh.dir);
                    return;
                }
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "no new redis-server on port {}: {e}",
                    self.port
                ),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The connections of `CLIENT LIST`, one line each.
    pub fn clients(&self) -> Vec<String> {
        self.cmd(&["CLIENT", "LIST"])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A Redis Cluster of three masters (no replicas) on free loopback ports, every slot
/// covered and `cluster_state:ok` on each; all three killed when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    pub masters: Vec<Redis>,
}

impl RedisCluster {
    /// `None` (after a skip line) where `redis-server` is not installed.
    pub fn start() -> Option<RedisCluster> {
        if !available() {
            return None;
        }
        let masters: Vec<Redis> = (0..3).map(|_| Redis::start_on_free_port(true)).collect();
        let nodes: Vec<String> = masters
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli (from the redis-tools package)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { masters };
        let deadline = Instant::now() + Duration::from_secs(30);
        for m in &cluster.masters {
            loop {
                let info = m.cmd(&["CLUSTER", "INFO"]);
                if info.lines().any(|l| l.trim() == "cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster_state not ok on port {} within 30 s:\n{info}",
                    m.port
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Some(cluster)
    }

    /// The URL of master `i`: ringpush given any one of them finds the others.
    pub fn url(&self, i: usize) -> String {
        self.masters[i].url()
    }

    /// The index in [`RedisCluster::masters`] of the master that serves `slot`, by
    /// `CLUSTER NODES` as one master sees it.
    pub fn master_of_slot(&self, slot: u16) -> usize {
        let nodes = self.masters[0].cmd(&["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 9 || !fields[2].contains("master") {
                continue;
            }
            let port: u16 = fields[1]
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("CLUSTER NODES line {line:?}"));
            let serves = fields[8..].iter().any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                match (lo.parse::<u16>(), hi.parse::<u16>()) {
                    (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                return self
                    .masters
                    .iter()
                    .position(|m| m.port == port)
                    .unwrap_or_else(|| panic!("unknown master {port} in {nodes}"));
            }
        }
        panic!("no master serves slot {slot}:\n{nodes}");
    }

    /// The master that holds `key` (by `CLUSTER KEYSLOT`, so hash tags count).
    pub fn master_of_key(&self, key: &str) -> usize {
        let slot: u16 = self.masters[0]
            .cmd(&["CLUSTER", "KEYSLOT", key])
            .parse()
            .unwrap();
        self.master_of_slot(slot)
    }
}
