//! `ringpush serve`: one shard per CPU, each a pinned thread with its own ring and
//! SO_REUSEPORT listener; the main thread only starts them and waits for SIGINT/SIGTERM.

pub mod feed;
pub mod outbox;
pub mod shard;
pub mod timer;
pub mod tls;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, OnceLock, mpsc};

use crate::config::Config;
use crate::proto::auth::Authorizer;
use crate::{sys, uring};

use shard::{BACKLOG, RESERVE};

/// Memory budgeted per connection when no `--max-connections` is given, and by
/// `ringpush check` (client and server on one host): ~9 KB of kernel slab per idle
/// socket pair (8.7 KB measured, benches/RESULTS.md), at most 1 KiB of server user space
/// (389 B measured), about as much for the load generator, and room for one 4 KiB
/// socket-buffer page while a message is in flight; rounded up so that the default cap
/// cannot exhaust the machine.
pub const BYTES_PER_CONNECTION: u64 = 16 * 1024;

/// Why [`run`] failed; one line for the user either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// A flag's value cannot be used: `--listen` or `--admin-listen` names an address we
    /// cannot listen on (another process listens on the port, the address is not
    /// local, the port needs privileges), `--jwt-public-key` a file that cannot be read
    /// or is no usable key. Exit code 2 like every usage error (DESIGN.md "Command
    /// line").
    Usage(String),
    /// Any other failure to start or run (limits, threads, a shard's ring): exit code 1.
    Start(String),
}

impl RunError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Usage(_) => 2,
            RunError::Start(_) => 1,
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Usage(m) | RunError::Start(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for RunError {}

impl From<String> for RunError {
    fn from(m: String) -> RunError {
        RunError::Start(m)
    }
}

/// The one line for an address `--listen` cannot use.
fn listen_error(addr: SocketAddr, e: &io::Error) -> RunError {
    RunError::Usage(if e.kind() == io::ErrorKind::AddrInUse {
        format!(
            "--listen {addr}: address already in use (another process listens on port {})",
            addr.port()
        )
    } else {
        format!("--listen {addr}: {e}")
    })
}

/// Starts the shards, waits for SIGINT or SIGTERM, drains, returns.
pub fn run(config: Config) -> Result<(), RunError> {
    let config = Arc::new(config);
    let nofile = sys::raise_nofile_limit();
    // A registered file table may hold at most RLIMIT_NOFILE slots (kernel rule).
    let table_size = nofile.min(u64::from(crate::uring::table::MAX_SLOTS)) as u32;
    if table_size <= RESERVE {
        return Err(RunError::Start(format!(
            "RLIMIT_NOFILE is {nofile}; ringpush needs at least {} (ulimit -n)",
            RESERVE + 1
        )));
    }
    let shards = config.shards;
    // A shard adds fixed-file tables as it fills them, so the cap is not bounded by
    // RLIMIT_NOFILE: only by the caller's choice or, by default, memory and fs.file-max.
    let max_connections = config
        .max_connections
        .unwrap_or_else(default_max_connections);
    let per_shard = max_connections.div_ceil(shards);

    let auth = authorizer(&config)?;
    // Listeners first, in this thread, so an address in use is one clear error.
    let mut addr: SocketAddr = config.listen;
    if addr.port() != 0 {
        // SO_REUSEPORT would let our listeners join those of another ringpush (same
        // user) on this port, and the kernel would quietly split the connections between
        // the two. A socket without it cannot bind while anything listens there. The
        // port could still be taken between the probe and the binds below; only a
        // same-user SO_REUSEPORT listener could then share it, within microseconds.
        uring::net::probe_exclusive(addr).map_err(|e| listen_error(addr, &e))?;
    }
    let mut listeners = Vec::with_capacity(shards);
    for _ in 0..shards {
        let l = uring::net::reuseport_listener(addr, BACKLOG as i32)
            .map_err(|e| listen_error(addr, &e))?;
        addr = uring::net::local_addr(&l).map_err(|e| e.to_string())?;
        listeners.push(l);
    }

    // `--tls-cert` / `--tls-key`: a file that cannot be used stops us here (exit 2).
    let certs = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(
            tls::Certs::load(cert.clone(), key.clone()).map_err(RunError::Usage)?,
        )),
        _ => None,
    };

    // Signals go to this thread only: block them before the shards inherit the mask.
    let signals = sys::Signals::block(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
        .map_err(|e| format!("cannot block SIGINT/SIGTERM/SIGHUP: {e}"))?;
    let shutdown = Arc::new(sys::eventfd().map_err(|e| format!("eventfd: {e}"))?);

    // `--admin-listen`: a listener per shard there too, the same way.
    let mut admin_listeners: Vec<Option<OwnedFd>> = (0..shards).map(|_| None).collect();
    let mut admin_addr = None;
    if let Some(mut a) = config.admin_listen {
        if a.port() != 0 {
            uring::net::probe_exclusive(a).map_err(|e| admin_error(a, &e))?;
        }
        for slot in &mut admin_listeners {
            let l = uring::net::reuseport_listener(a, BACKLOG as i32)
                .map_err(|e| admin_error(a, &e))?;
            a = uring::net::local_addr(&l).map_err(|e| e.to_string())?;
            *slot = Some(l);
        }
        admin_addr = Some(a);
    }

    // Connection deadlines are kept relative to this instant (`timer::At`).
    timer::At::start();
    let cpus = sys::allowed_cpus();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards).map(|_| mpsc::channel()).unzip();
    let ring_fds = Arc::new(OnceLock::new());
    // Cluster mode: the link to Redis, before the shards (they send to it from the
    // start; it wakes them once their rings are known).
    let mut cluster_line = String::new();
    let (link, cluster_metrics) = match &config.redis {
        Some(url) => {
            let node = config.node_id.clone().unwrap_or_else(default_node_id);
            let metrics = Arc::new(crate::metrics::ClusterMetrics::new(&node));
            let link = crate::cluster::link::start(
                crate::cluster::link::LinkConfig {
                    url: url.clone(),
                    node,
                    history: config.history,
                    ttl: config.history_ttl,
                },
                crate::cluster::link::Shards {
                    peers: senders.clone(),
                    ring_fds: ring_fds.clone(),
                    wake_data: crate::uring::token::Token::new(
                        crate::uring::token::Kind::Wake,
                        0,
                        0,
                    )
                    .encode(),
                },
                metrics.clone(),
            )
            .map_err(RunError::Start)?;
            cluster_line = format!("; cluster node {} over Redis {url}", metrics.node);
            (Some(link), Some(metrics))
        }
        None => (None, None),
    };
    let epoch = if link.is_some() {
        crate::cluster::EPOCH
    } else {
        new_epoch()
    };
    let metrics: Arc<[crate::metrics::ShardMetrics]> =
        (0..shards).map(|_| Default::default()).collect();
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(shards);
    let shard_inputs = listeners.into_iter().zip(receivers).zip(admin_listeners);
    for (id, ((listener, inbox), admin_listener)) in shard_inputs.enumerate() {
        let init = shard::ShardInit {
            id,
            cpu: (shards <= cpus.len()).then(|| cpus[id]),
            config: config.clone(),
            listener,
            admin_listener,
            auth: auth.clone(),
            certs: certs.clone(),
            shutdown: shutdown.clone(),
            table_size,
            max_conns: per_shard,
            inbox,
            peers: senders.clone(),
            ring_fds: ring_fds.clone(),
            epoch,
            link: link.clone(),
            cluster_metrics: cluster_metrics.clone(),
            metrics: metrics.clone(),
            ready: ready_tx.clone(),
        };
        let t = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || shard::run(init))
            .map_err(|e| format!("cannot start a shard thread: {e}"))?;
        threads.push(t);
    }
    drop(ready_tx);
    let mut fds = vec![-1; shards];
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok((id, fd))) => fds[id] = fd,
            Ok(Err(e)) => return Err(RunError::Start(e)),
            Err(_) => return Err(RunError::Start("a shard exited during startup".into())),
        }
    }
    let _ = ring_fds.set(fds);
    let admin = match admin_addr {
        Some(a) => format!("; /metrics and /healthz on {a} only"),
        None => String::new(),
    };
    let authz = if auth.is_some() {
        "tokens required for every topic"
    } else {
        "authorization off: any client may subscribe and publish"
    };
    let tls_line = match &certs {
        Some(c) => format!("; TLS only, certificate {}", c.cert_path().display()),
        None => String::new(),
    };
    eprintln!(
        "ringpush: listening on {addr} ({shards} shards, up to {} connections; {authz}{tls_line}{admin}{cluster_line})",
        per_shard * shards
    );

    let sig = loop {
        match signals.wait() {
            libc::SIGHUP => reload(certs.as_deref()),
            sig => break sig,
        }
    };
    eprintln!(
        "ringpush: signal {sig}: shutting down (draining for up to {:?})",
        config.drain_timeout
    );
    sys::eventfd_signal(&shutdown).map_err(|e| format!("eventfd: {e}"))?;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// SIGHUP: the TLS pair read again; new handshakes use it, open connections keep theirs.
/// A file that cannot be used is logged and the previous pair kept.
fn reload(certs: Option<&tls::Certs>) {
    match certs {
        None => eprintln!("ringpush: SIGHUP: nothing to reload (no --tls-cert)"),
        Some(c) => match c.reload() {
            Ok(()) => eprintln!(
                "ringpush: SIGHUP: TLS certificate reloaded from {}",
                c.cert_path().display()
            ),
            Err(e) => eprintln!("ringpush: SIGHUP: {e}; keeping the previous certificate"),
        },
    }
}

/// The one line for an `--admin-listen` address that cannot be used.
fn admin_error(addr: SocketAddr, e: &io::Error) -> RunError {
    RunError::Usage(if e.kind() == io::ErrorKind::AddrInUse {
        format!(
            "--admin-listen {addr}: address already in use (another process listens on port {})",
            addr.port()
        )
    } else {
        format!("--admin-listen {addr}: {e}")
    })
}

/// The token checker for `--jwt-secret` / `--jwt-public-key`, if either is set. A key
/// file that cannot be read or used is one line naming it (exit 2).
fn authorizer(config: &Config) -> Result<Option<Arc<Authorizer>>, RunError> {
    if config.jwt_secret.is_none() && config.jwt_public_key.is_none() {
        return Ok(None);
    }
    let pem = match &config.jwt_public_key {
        None => None,
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            RunError::Usage(format!(
                "--jwt-public-key {}: cannot read: {e}",
                path.display()
            ))
        })?),
    };
    let auth = Authorizer::new(
        config.jwt_secret.as_deref().map(str::as_bytes),
        pem.as_deref(),
        config.jwt_issuer.clone(),
        config.jwt_audience.clone(),
    )
    .map_err(|e| {
        let path = config.jwt_public_key.as_deref().unwrap_or(Path::new("?"));
        RunError::Usage(format!("--jwt-public-key {}: {}", path.display(), e.0))
    })?;
    Ok(Some(Arc::new(auth)))
}

/// The connection cap when none is configured: what memory allows at
/// [`BYTES_PER_CONNECTION`] each, and no more than half of `fs.file-max` (every socket
/// is a kernel file, direct descriptor or not).
pub fn default_max_connections() -> usize {
    let mem =
        sys::proc::meminfo_kib("MemTotal").map_or(1 << 30, |k| k * 1024) / BYTES_PER_CONNECTION;
    let file_max = sys::proc::sysctl_u64("fs/file-max").unwrap_or(u64::MAX);
    mem.min(file_max / 2).max(1) as usize
}

/// `--node-id`'s default: the host name and the process id.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(48)
        .collect();
    let host = if host.is_empty() {
        "ringpush".into()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

/// A server epoch for event ids: different at every start (clock and PID mixed), so an
/// id from before a restart is recognised as stale.
fn new_epoch() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    crate::proto::rand::mix(nanos ^ (u64::from(std::process::id()) << 32)) as u32
}
