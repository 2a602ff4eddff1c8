//! `ringpush serve`: one shard per CPU, each a pinned thread with its own ring and
//! SO_REUSEPORT listener; the main thread only starts them and waits for SIGINT/SIGTERM.

pub mod outbox;
pub mod shard;
pub mod timer;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, mpsc};

use crate::config::Config;
use crate::uring;

/// Listen backlog per shard: absorbs connection bursts (a reconnect storm) while the
/// shard is busy; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 65535;

/// Fixed-file slots per shard held back from admission, so a client refused at the
/// connection cap still gets a slot to be told 503 on.
const RESERVE: u32 = 64;

/// Starts the shards, waits for SIGINT or SIGTERM, drains, returns.
pub fn run(config: Config) -> Result<(), String> {
    let config = Arc::new(config);
    let nofile = uring::raise_nofile_limit();
    // A registered file table may hold at most RLIMIT_NOFILE slots (kernel rule).
    let table_size = nofile.min(1 << 20) as u32;
    if table_size <= RESERVE {
        return Err(format!(
            "RLIMIT_NOFILE is {nofile}; ringpush needs at least {} (ulimit -n)",
            RESERVE + 1
        ));
    }
    let shards = config.shards;
    let per_shard = match config.max_connections {
        Some(m) => m.div_ceil(shards).min((table_size - RESERVE) as usize),
        None => (table_size - RESERVE) as usize,
    };

    // Listeners first, in this thread, so an address in use is one clear error.
    let mut listeners = Vec::with_capacity(shards);
    let mut addr: SocketAddr = config.listen;
    for _ in 0..shards {
        let l = uring::net::reuseport_listener(addr, BACKLOG)
            .map_err(|e| format!("--listen {addr}: {e}"))?;
        addr = uring::net::local_addr(&l).map_err(|e| e.to_string())?;
        listeners.push(l);
    }

    // Signals go to this thread only: block them before the shards inherit the mask.
    let signals = uring::Signals::block(&[libc::SIGINT, libc::SIGTERM])
        .map_err(|e| format!("cannot block SIGINT/SIGTERM: {e}"))?;
    let shutdown = Arc::new(uring::eventfd().map_err(|e| format!("eventfd: {e}"))?);

    let cpus = uring::allowed_cpus();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards).map(|_| mpsc::channel()).unzip();
    let ring_fds = Arc::new(OnceLock::new());
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(shards);
    for (id, (listener, inbox)) in listeners.into_iter().zip(receivers).enumerate() {
        let init = shard::ShardInit {
            id,
            cpu: (shards <= cpus.len()).then(|| cpus[id]),
            config: config.clone(),
            listener,
            shutdown: shutdown.clone(),
            table_size,
            max_conns: per_shard,
            inbox,
            peers: senders.clone(),
            ring_fds: ring_fds.clone(),
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
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a shard exited during startup".into()),
        }
    }
    let _ = ring_fds.set(fds);
    eprintln!(
        "ringpush: listening on {addr} ({shards} shards, up to {} connections)",
        per_shard * shards
    );

    let sig = signals.wait();
    eprintln!(
        "ringpush: signal {sig}: shutting down (draining for up to {:?})",
        config.drain_timeout
    );
    uring::eventfd_signal(&shutdown).map_err(|e| format!("eventfd: {e}"))?;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
