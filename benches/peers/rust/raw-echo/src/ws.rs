//! The WebSocket kernel baseline (`raw-echo ws`): what the kernel allows with the same
//! client as ringpush (`ringpush load`) and the same io_uring driver (ringpush's own
//! `uring` module: sparse fixed-file tables, multishot accept into them, multishot
//! receive from provided buffers, the same ring flags and submission batching), with
//! no protocol work past the opening handshake:
//!
//! - `/echo`: each receive is answered with a pre-built unmasked binary frame of the
//!   length the client's frame implies (a masked client frame is 4 bytes longer than the
//!   server's frame with the same payload), without parsing or unmasking it;
//! - any other path (`/ws/{topic}`): the connection is held; a data frame arriving on
//!   one of them is unmasked once, and the frames of a loop turn's messages are written
//!   as one buffer to every other held connection of every thread, as ringpush batches
//!   a turn's publishes (their payloads are the load generator's, with the send time it
//!   measures latency by).
//!
//! A WebSocket server's echo or broadcast rate divided by this one's is the fraction of
//! the kernel's budget it reaches (issue 16). Limits of the shortcut, which the rows of
//! compare.sh and million.sh never hit: echo answers one frame per receive (1 KiB
//! buffers, as ringpush's), as a closed loop with one message in flight sends them, so
//! echo messages up to about 1,000 bytes (held connections reassemble frames of any
//! size); no pings, no timeouts.
//!
//! Scale: a table holds at most RLIMIT_NOFILE connections, so each thread owns several
//! tables, each with its own `SO_REUSEPORT` listener and multishot accept; the kernel
//! spreads connections over all listeners of the port evenly, and the tables are sized
//! with room to spare (see [`PER_TABLE`]).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use clap::Args;
use peer_common::{BACKLOG, ServerArgs};
use ringpush::proto::frame::{OpCode, write_frame};
use ringpush::proto::handshake::accept_key;
use ringpush::uring::op::{self, Chunk, Held, SendBuf};
use ringpush::uring::table::{self, Completion, TableSpec, Tables};
use ringpush::uring::{Waker, net};

use crate::sys;

/// `raw-echo ws`'s own flags.
#[derive(Debug, Args)]
pub struct WsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Connections the process must hold (all threads together); sizes the tables.
    #[arg(long, default_value_t = 20_000)]
    pub max_conns: usize,
}

/// Connections per table on average: a table of [`SLOTS`] gets an even share of the
/// port's listeners' connections, a binomial count whose spread at this mean is about
/// 110; 16,384 slots leave over 20 times that.
const PER_TABLE: usize = 12_000;
/// Fixed-file slots per table (under this machine's RLIMIT_NOFILE of 20,000).
const SLOTS: u32 = 16_384;
// ringpush's own (src/server/shard/io.rs), so the baseline differs only in the work it skips.
const RECV_BUFFERS: u16 = 2048;
const RECV_BUFFER_SIZE: u32 = 1024;
const BGID: u16 = 1;

// user_data: kind in bits 56-59, table in 40-55, slot in 20-39, generation in 0-19.
const ACCEPT: u64 = 1;
const RECV: u64 = 2;
const SEND: u64 = 3;
const CLOSE: u64 = 4;
const WAKE: u64 = 5;
const GEN_MASK: u32 = (1 << 20) - 1;

fn token(kind: u64, t: usize, slot: u32, generation: u32) -> u64 {
    (kind << 56) | ((t as u64) << 40) | (u64::from(slot) << 20) | u64::from(generation)
}

fn untoken(data: u64) -> (u64, usize, u32, u32) {
    (
        data >> 56,
        ((data >> 40) & 0xffff) as usize,
        ((data >> 20) & 0xf_ffff) as u32,
        (data & u64::from(GEN_MASK)) as u32,
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Free,
    Handshake,
    /// `/echo`.
    Echo,
    /// Any other WebSocket path: receives every triggered frame.
    Held,
    /// Answered a plain HTTP request (or a close frame): closes once that send is done.
    Closing,
}

// Boxed queues: a held connection costs 8 bytes for each instead of 24-32 while idle.
#[allow(clippy::box_collection)]
#[derive(Debug, Default)]
struct Conn {
    generation: u32,
    state: State,
    /// A send is in flight (one at a time per connection).
    sending: bool,
    /// Bytes waiting for the end of the turn or for the send in flight.
    queue: Option<Box<VecDeque<Chunk>>>,
    /// A request head, or a client frame, that arrived in pieces.
    head: Option<Box<Vec<u8>>>,
}

/// What the threads share: each thread's inbox of triggered frames and its ring.
#[derive(Debug)]
struct Shared {
    inbox: Vec<Mutex<Vec<Arc<[u8]>>>>,
    ring_fds: Vec<AtomicI32>,
}

pub fn run(args: &WsArgs) -> io::Result<()> {
    let nofile = peer_common::raise_nofile_limit();
    let threads = args.server.threads();
    let cpus = sys::allowed_cpus();
    let per_thread = args.max_conns.div_ceil(threads);
    let tables = per_thread.div_ceil(PER_TABLE).max(1);
    let shared = Arc::new(Shared {
        inbox: (0..threads).map(|_| Mutex::new(Vec::new())).collect(),
        ring_fds: (0..threads).map(|_| AtomicI32::new(-1)).collect(),
    });
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let addr = args.server.listen;
            let cpu = cpus[i % cpus.len()];
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("raw-ws-{i}"))
                .spawn(move || {
                    let _ = sys::pin_to_cpu(cpu);
                    Thread::new(i, addr, tables, nofile, shared)?.run()
                })
        })
        .collect::<io::Result<_>>()?;
    for h in handles {
        h.join().expect("thread panicked")?;
    }
    Ok(())
}

struct Thread {
    id: usize,
    io: Tables,
    /// One listener per table (kept open for the accepts on them).
    listeners: Vec<OwnedFd>,
    conns: Vec<Vec<Conn>>,
    /// Pre-built echo replies by length.
    echo_frames: HashMap<usize, Rc<[u8]>>,
    /// Connections given something to send this turn (with their generation).
    dirty: Vec<(usize, u32, u32)>,
    /// Frames of the messages that arrived this turn, and where they came from.
    batch: Vec<u8>,
    senders: Vec<(usize, u32)>,
    /// Frames the other threads sent this turn.
    remote: Vec<u8>,
    shared: Arc<Shared>,
    waker: Waker,
    next_generation: u32,
}

fn setup(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Thread {
    fn new(
        id: usize,
        addr: SocketAddr,
        tables: usize,
        nofile: u64,
        shared: Arc<Shared>,
    ) -> io::Result<Thread> {
        // Each table's listener and the rings take descriptors of their own.
        let slots = SLOTS.min(nofile.saturating_sub(256) as u32);
        let spec = TableSpec {
            slots,
            sq_entries: 4096,
            cq_entries: table::cq_entries(slots),
            recv_buffers: RECV_BUFFERS,
            recv_buffer_size: RECV_BUFFER_SIZE,
            bgid: BGID,
            deferred_per_enter: 1024,
        };
        let mut io = Tables::new(&spec, spec).map_err(setup)?;
        for _ in 1..tables {
            io.add().map_err(setup)?;
        }
        let listeners = (0..tables)
            .map(|_| net::reuseport_listener(addr, BACKLOG as i32))
            .collect::<io::Result<Vec<_>>>()?;
        shared.ring_fds[id].store(io.get(0).ring.fd(), Ordering::Release);
        let mut thread = Thread {
            id,
            io,
            listeners,
            conns: (0..tables)
                .map(|_| (0..slots).map(|_| Conn::default()).collect())
                .collect(),
            echo_frames: HashMap::new(),
            dirty: Vec::new(),
            batch: Vec::new(),
            senders: Vec::new(),
            remote: Vec::new(),
            shared,
            waker: Waker::new().map_err(setup)?,
            next_generation: 1,
        };
        for t in 0..tables {
            thread.arm_accept(t);
        }
        Ok(thread)
    }

    fn arm_accept(&mut self, t: usize) {
        let fd = self.listeners[t].as_raw_fd();
        self.io
            .push(t, op::accept_multi(fd).user_data(token(ACCEPT, t, 0, 0)));
    }

    fn arm_recv(&mut self, t: usize, slot: u32) {
        let g = self.conns[t][slot as usize].generation;
        self.io.push(
            t,
            op::recv_multi(slot, BGID, 0).user_data(token(RECV, t, slot, g)),
        );
    }

    fn run(mut self) -> io::Result<()> {
        let mut done = Vec::new();
        loop {
            self.io.submit_and_reap(&mut done, true)?;
            for c in done.drain(..) {
                self.complete(c);
            }
            self.fan_out_turn();
            self.flush();
            self.io.publish_buffers();
        }
    }

    fn complete(&mut self, c: Completion) {
        let (kind, t, slot, g) = untoken(c.user_data);
        match kind {
            ACCEPT => {
                if c.result >= 0 {
                    let slot = c.result as u32;
                    let generation = self.next_generation;
                    self.next_generation = (self.next_generation + 1) & GEN_MASK;
                    self.conns[t][slot as usize] = Conn {
                        generation,
                        state: State::Handshake,
                        ..Conn::default()
                    };
                    self.arm_recv(t, slot);
                }
                if !c.more() {
                    self.arm_accept(t);
                }
            }
            RECV => self.on_recv(t, slot, g, &c),
            SEND => self.on_send(t, slot, g, c),
            WAKE => {
                let frames = std::mem::take(&mut *self.shared.inbox[self.id].lock().unwrap());
                for f in frames {
                    self.remote.extend_from_slice(&f);
                }
            }
            _ => {} // CLOSE: the slot is free already.
        }
    }

    fn live(&self, t: usize, slot: u32, g: u32) -> bool {
        let c = &self.conns[t][slot as usize];
        c.state != State::Free && c.generation == g
    }

    fn on_recv(&mut self, t: usize, slot: u32, g: u32, c: &Completion) {
        let n = c.result.max(0) as usize;
        let bytes = c.buffer().map(|bid| {
            let data = self.io.get(t).bufs.get(bid, n).to_vec();
            self.io.get_mut(t).bufs.recycle(bid);
            data
        });
        if !self.live(t, slot, g) {
            return;
        }
        if let Some(data) = bytes.filter(|d| !d.is_empty()) {
            self.on_data(t, slot, &data);
        }
        if !c.more() && self.live(t, slot, g) {
            if c.result > 0 || c.result == -libc::ENOBUFS {
                self.arm_recv(t, slot);
            } else {
                self.close(t, slot);
            }
        }
    }

    fn on_data(&mut self, t: usize, slot: u32, data: &[u8]) {
        let state = self.conns[t][slot as usize].state;
        match state {
            State::Handshake => self.on_head(t, slot, data),
            State::Echo => {
                if data[0] & 0x0f == 0x8 {
                    return self.close_frame(t, slot);
                }
                let frame = self.echo_frame(data.len());
                self.send(t, slot, Chunk::Shared(frame));
            }
            State::Held => {
                // A frame split over receives waits in `head` for its rest.
                let mut input = self.conns[t][slot as usize].head.take().unwrap_or_default();
                input.extend_from_slice(data);
                let mut rest = &input[..];
                while let Some((opcode, payload, used)) = unmask(rest) {
                    rest = &rest[used..];
                    match opcode {
                        0x1 | 0x2 => self.trigger(t, slot, opcode, &payload),
                        0x8 => return self.close_frame(t, slot),
                        _ => {}
                    }
                }
                if !rest.is_empty() {
                    self.conns[t][slot as usize].head = Some(Box::new(rest.to_vec()));
                }
            }
            State::Free | State::Closing => {}
        }
    }

    /// The opening handshake: a request with `Sec-WebSocket-Key` is upgraded; anything
    /// else gets a plain `200 ok` and is closed.
    fn on_head(&mut self, t: usize, slot: u32, data: &[u8]) {
        let conn = &mut self.conns[t][slot as usize];
        let head = conn.head.get_or_insert_with(Box::default);
        head.extend_from_slice(data);
        if !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() > 16 * 1024 {
                self.close(t, slot);
            }
            return;
        }
        let head = conn.head.take().unwrap();
        let text = String::from_utf8_lossy(&head);
        let key = text.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        });
        let path = text.split(' ').nth(1).unwrap_or("/");
        let reply = match key {
            Some(key) => {
                conn.state = if path.starts_with("/echo") {
                    State::Echo
                } else {
                    State::Held
                };
                let accept = accept_key(key.as_bytes());
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    std::str::from_utf8(&accept).unwrap_or_default()
                )
            }
            None => {
                conn.state = State::Closing;
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n".to_owned()
            }
        };
        self.send(t, slot, Chunk::Owned(reply.into_bytes()));
    }

    /// Answers a close frame with one (status 1000) and closes after it.
    fn close_frame(&mut self, t: usize, slot: u32) {
        self.conns[t][slot as usize].state = State::Closing;
        self.send(t, slot, Chunk::Owned(vec![0x88, 0x02, 0x03, 0xe8]));
    }

    /// The reply to a client frame of `len` bytes: an unmasked binary frame with the
    /// payload length that frame had (its header says it; this reads only its length),
    /// built once per length.
    fn echo_frame(&mut self, len: usize) -> Rc<[u8]> {
        self.echo_frames
            .entry(len)
            .or_insert_with(|| {
                // A masked client frame's header: 2 + 4 bytes up to 125 bytes of payload,
                // 4 + 4 up to 65,535, else 10 + 4.
                let payload = match len {
                    0..=131 => len.saturating_sub(6),
                    132..=65_543 => len - 8,
                    _ => len - 14,
                };
                let mut f = Vec::new();
                write_frame(&mut f, true, OpCode::Binary, &vec![0; payload]);
                f.into()
            })
            .clone()
    }

    /// A data frame from a held connection: into this turn's batch, for everyone else.
    fn trigger(&mut self, t: usize, slot: u32, opcode: u8, payload: &[u8]) {
        let op = if opcode == 0x1 {
            OpCode::Text
        } else {
            OpCode::Binary
        };
        write_frame(&mut self.batch, true, op, payload);
        self.senders.push((t, slot));
    }

    /// The end of a loop turn's fan-out, as ringpush's: the frames of every message
    /// that arrived this turn, one buffer written to every held connection (one send
    /// each), but to the connections they came from (with one publisher, exact); the
    /// same buffer goes to the other threads with one wake-up each, and what they sent
    /// here goes out the same way.
    fn fan_out_turn(&mut self) {
        if !self.remote.is_empty() {
            let frames: Rc<[u8]> = std::mem::take(&mut self.remote).into();
            self.fan_out(frames, &[]);
        }
        if self.batch.is_empty() {
            return;
        }
        let frames: Arc<[u8]> = std::mem::take(&mut self.batch).into();
        let others: Vec<RawFd> = (0..self.shared.ring_fds.len())
            .filter(|&i| i != self.id)
            .map(|i| {
                self.shared.inbox[i].lock().unwrap().push(frames.clone());
                self.shared.ring_fds[i].load(Ordering::Acquire)
            })
            .collect();
        if !others.is_empty() {
            let _ = self.waker.wake(&others, token(WAKE, 0, 0, 0));
        }
        let senders = std::mem::take(&mut self.senders);
        self.fan_out(Rc::from(&frames[..]), &senders);
    }

    fn fan_out(&mut self, frames: Rc<[u8]>, except: &[(usize, u32)]) {
        for t in 0..self.conns.len() {
            for slot in 0..self.conns[t].len() as u32 {
                if self.conns[t][slot as usize].state == State::Held && !except.contains(&(t, slot))
                {
                    self.send(t, slot, Chunk::Shared(frames.clone()));
                }
            }
        }
    }

    /// Queues `chunk` for the end of this loop turn (corked, as ringpush sends: what a
    /// turn produces for a connection leaves in one send).
    fn send(&mut self, t: usize, slot: u32, chunk: Chunk) {
        let conn = &mut self.conns[t][slot as usize];
        let queue = conn.queue.get_or_insert_with(Box::default);
        queue.push_back(chunk);
        if queue.len() == 1 && !conn.sending {
            self.dirty.push((t, slot, conn.generation));
        }
    }

    /// Starts a send of everything queued on each connection that got something this
    /// turn and has no send in flight.
    fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for (t, slot, g) in dirty.drain(..) {
            if self.live(t, slot, g) && !self.conns[t][slot as usize].sending {
                self.start_send(t, slot, 0);
            }
        }
        self.dirty = dirty;
    }

    /// Sends the queued chunks (a `writev` for several), `offset` bytes into the first.
    fn start_send(&mut self, t: usize, slot: u32, offset: usize) {
        let conn = &mut self.conns[t][slot as usize];
        let Some(queue) = conn.queue.as_mut().filter(|q| !q.is_empty()) else {
            return;
        };
        conn.sending = true;
        let chunks: Vec<Chunk> = queue.drain(..).collect();
        let g = conn.generation;
        self.io.send(
            t,
            slot,
            SendBuf::new(chunks, offset),
            token(SEND, t, slot, g),
        );
    }

    fn on_send(&mut self, t: usize, slot: u32, g: u32, c: Completion) {
        if !self.live(t, slot, g) {
            return;
        }
        let Some(Held::Send(buf)) = c.held else {
            return;
        };
        if c.result < 0 {
            return self.close(t, slot);
        }
        // Puts back what did not go out, ahead of what was queued since.
        let mut sent = buf.offset + c.result as usize;
        let conn = &mut self.conns[t][slot as usize];
        conn.sending = false;
        let mut rest = buf.chunks.into_iter().skip_while(|ch| {
            let whole = sent >= ch.bytes().len();
            if whole {
                sent -= ch.bytes().len();
            }
            whole
        });
        let queue = conn.queue.get_or_insert_with(Box::default);
        for (at, ch) in rest.by_ref().enumerate() {
            queue.insert(at, ch);
        }
        if !queue.is_empty() {
            return self.start_send(t, slot, sent);
        }
        if conn.state == State::Closing {
            self.close(t, slot);
        }
    }

    fn close(&mut self, t: usize, slot: u32) {
        let conn = &mut self.conns[t][slot as usize];
        let g = conn.generation;
        *conn = Conn::default();
        self.io
            .push(t, op::close(slot).user_data(token(CLOSE, t, slot, g)));
    }
}

/// The first whole client frame in `data`: its opcode, its unmasked payload and the
/// bytes it took; `None` if `data` holds no whole masked frame.
fn unmask(data: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (&b0, &b1) = (data.first()?, data.get(1)?);
    let (len, at) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes(data.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(data.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (usize::from(n), 2),
    };
    let mask = data.get(at..at + 4)?;
    let payload = data.get(at + 4..at + 4 + len)?;
    let unmasked = payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Some((b0 & 0x0f, unmasked, at + 4 + len))
}
