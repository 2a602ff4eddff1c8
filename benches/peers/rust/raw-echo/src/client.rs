//! The closed-loop client for the baseline, shaped like `ringpush load --scenario echo`:
//! every connection sends one message, waits for all of its bytes back, records the
//! round trip and sends the next, for `--duration` after every connection is open.
//! Thread per core (unpinned, like the load generator's workers), one ring per thread.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroUsize;
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use io_uring::{IoUring, opcode, squeue, types};
use serde::Serialize;

use crate::sys;

#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// Server address.
    #[arg(long)]
    connect: SocketAddr,
    /// Connections, each with one message in flight.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// WebSocket payload size being emulated; the wire message adds a masked frame
    /// header (6 bytes up to 125, 8 up to 65535, 14 beyond).
    #[arg(long, default_value_t = 32)]
    message_bytes: usize,
    /// Measured phase, after every connection is open: `500ms`, `10s`, `2m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Client threads, each with its own ring. Default: CPUs in the affinity mask.
    #[arg(long)]
    threads: Option<NonZeroUsize>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}`: expected a duration such as 500ms, 10s or 2m");
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(bad()),
    }
}

/// The bytes a WebSocket client puts on the wire for a binary message of `payload`
/// bytes: FIN+opcode, masked length, 4-byte mask key, masked payload (RFC 6455 §5.2).
fn masked_frame(payload: usize) -> Vec<u8> {
    let mut frame = vec![0x82];
    match payload {
        0..=125 => frame.push(0x80 | payload as u8),
        126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(payload as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(payload as u64).to_be_bytes());
        }
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    frame.extend_from_slice(&mask);
    frame.extend((0..payload).map(|i| b'x' ^ mask[i % 4]));
    frame
}

/// The one JSON line the client prints (keys in this order).
#[derive(Serialize)]
struct Report {
    connections: usize,
    messages: u64,
    msg_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    /// Bytes each way per message (the server echoes exactly what it received).
    message_wire_bytes: usize,
    errors: u64,
    threads: usize,
    duration_s: f64,
}

struct WorkerResult {
    hist: Histogram<u64>,
    messages: u64,
    errors: u64,
}

pub fn run(args: &ClientArgs) -> io::Result<()> {
    let threads = args
        .threads
        .map_or_else(peer_common::available_cpus, NonZeroUsize::get)
        .min(args.connections.max(1));
    let msg: Arc<[u8]> = masked_frame(args.message_bytes).into();
    let barrier = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            // Connections spread evenly, the first threads taking the remainder.
            let n = args.connections / threads + usize::from(i < args.connections % threads);
            let (addr, msg, barrier, duration) =
                (args.connect, msg.clone(), barrier.clone(), args.duration);
            std::thread::Builder::new()
                .name(format!("raw-echo-client-{i}"))
                .spawn(move || worker(addr, n, &msg, &barrier, duration))
        })
        .collect::<io::Result<_>>()?;
    let mut hist = new_histogram();
    let (mut messages, mut errors) = (0, 0);
    for w in workers {
        let r = w.join().expect("client thread panicked")?;
        hist.add(&r.hist).expect("same histogram bounds");
        messages += r.messages;
        errors += r.errors;
    }
    let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
    let secs = args.duration.as_secs_f64();
    let report = Report {
        connections: args.connections,
        messages,
        msg_per_sec: (messages as f64 / secs).round(),
        p50_us: us(hist.value_at_quantile(0.50)),
        p99_us: us(hist.value_at_quantile(0.99)),
        p999_us: us(hist.value_at_quantile(0.999)),
        max_us: us(hist.max()),
        message_wire_bytes: msg.len(),
        errors,
        threads,
        duration_s: secs,
    };
    println!(
        "{}",
        serde_json::to_string(&report).expect("plain struct serialises")
    );
    Ok(())
}

fn new_histogram() -> Histogram<u64> {
    // Round trips in nanoseconds, 1 ns to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

const SEND: u64 = 1 << 32;
const RECV: u64 = 2 << 32;

struct Conn {
    fd: RawFd,
    buf: Box<[u8]>,
    sent: usize,
    got: usize,
    started: Instant,
}

/// Queues an SQE, submitting first when the queue is full.
///
/// # Safety
/// Any buffer the entry names must stay valid and unmoved until its completion.
unsafe fn push(ring: &mut IoUring, sqe: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: forwarded from the caller.
        if unsafe { ring.submission().push(sqe) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

fn worker(
    addr: SocketAddr,
    n: usize,
    msg: &[u8],
    barrier: &Barrier,
    duration: Duration,
) -> io::Result<WorkerResult> {
    let connected: io::Result<Vec<Conn>> = (0..n)
        .map(|_| {
            let stream = TcpStream::connect(addr)?;
            stream.set_nodelay(true)?;
            let now = Instant::now();
            Ok(Conn {
                fd: stream.into_raw_fd(),
                buf: vec![0; msg.len()].into(),
                sent: 0,
                got: 0,
                started: now,
            })
        })
        .collect();
    // Every thread reaches the barrier, failed or not, so none waits forever.
    barrier.wait();
    let mut conns =
        connected.map_err(|e| io::Error::new(e.kind(), format!("connect {addr}: {e}")))?;

    let mut ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .build(4096)?;
    let mut result = WorkerResult {
        hist: new_histogram(),
        messages: 0,
        errors: 0,
    };
    let start = Instant::now();
    let deadline = start + duration;

    // SAFETY (for every push below): `msg` outlives this function, and each connection's
    // `buf` is a boxed slice owned by `conns`, which is neither resized nor dropped while
    // the ring lives; the ring is dropped (cancelling anything in flight) before `conns`.
    for (i, c) in conns.iter_mut().enumerate() {
        c.started = start;
        let sqe = opcode::Send::new(types::Fd(c.fd), msg.as_ptr(), msg.len() as u32)
            .build()
            .user_data(SEND | i as u64);
        // SAFETY: see above.
        unsafe { push(&mut ring, &sqe)? };
    }
    let mut live = conns.len();
    let wait = types::Timespec::new().nsec(100_000_000);
    let mut cqes = Vec::new();
    while live > 0 && Instant::now() < deadline {
        match ring
            .submitter()
            .submit_with_args(1, &types::SubmitArgs::new().timespec(&wait))
        {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        cqes.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        let now = Instant::now();
        for &(user_data, res) in &cqes {
            let (kind, i) = (user_data & !0xffff_ffff, (user_data & 0xffff_ffff) as usize);
            let c = &mut conns[i];
            if res <= 0 {
                result.errors += 1;
                live -= 1;
                continue;
            }
            let sqe = if kind == SEND {
                c.sent += res as usize;
                if c.sent < msg.len() {
                    let rest = &msg[c.sent..];
                    opcode::Send::new(types::Fd(c.fd), rest.as_ptr(), rest.len() as u32)
                        .build()
                        .user_data(SEND | i as u64)
                } else {
                    c.got = 0;
                    opcode::Recv::new(types::Fd(c.fd), c.buf.as_mut_ptr(), c.buf.len() as u32)
                        .build()
                        .user_data(RECV | i as u64)
                }
            } else {
                c.got += res as usize;
                if c.got < msg.len() {
                    let rest = &mut c.buf[c.got..];
                    opcode::Recv::new(types::Fd(c.fd), rest.as_mut_ptr(), rest.len() as u32)
                        .build()
                        .user_data(RECV | i as u64)
                } else {
                    if now < deadline {
                        let rtt = now.duration_since(c.started).as_nanos() as u64;
                        result.hist.saturating_record(rtt.max(1));
                        result.messages += 1;
                    }
                    c.started = now;
                    c.sent = 0;
                    opcode::Send::new(types::Fd(c.fd), msg.as_ptr(), msg.len() as u32)
                        .build()
                        .user_data(SEND | i as u64)
                }
            };
            // SAFETY: see above.
            unsafe { push(&mut ring, &sqe)? };
        }
        cqes.clear();
    }
    drop(ring);
    for c in &conns {
        sys::close(c.fd);
    }
    Ok(result)
}
