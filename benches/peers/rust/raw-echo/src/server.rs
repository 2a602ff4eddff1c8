//! The echo server: thread per core, one ring and one SO_REUSEPORT listener per thread,
//! multishot accept, then per connection a plain recv → send (of exactly what was
//! received) → recv loop. One operation in flight per connection, so its buffer is never
//! shared with the kernel twice. Ring flags are ringpush's (`SINGLE_ISSUER`,
//! `DEFER_TASKRUN`, `TASKRUN_FLAG`, `SUBMIT_ALL`), and threads are pinned as its shards
//! are, so the baseline differs from ringpush only in the work it does not do.

use std::io;
use std::os::fd::RawFd;

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use peer_common::{BACKLOG, ServerArgs};

use crate::sys;

/// Per-connection receive buffer. The benchmark's messages are 38 bytes; a larger read
/// is simply echoed in several rounds.
const BUF_BYTES: usize = 4096;
const SQ_ENTRIES: u32 = 4096;

const ACCEPT: u64 = 1;
const RECV: u64 = 2;
const SEND: u64 = 3;

fn token(kind: u64, fd: RawFd) -> u64 {
    (kind << 32) | u64::from(fd as u32)
}

fn untoken(user_data: u64) -> (u64, RawFd) {
    (user_data >> 32, user_data as u32 as RawFd)
}

struct Conn {
    buf: Box<[u8]>,
    /// Bytes received in the last recv, being sent back.
    len: usize,
    /// Of those, bytes already sent.
    sent: usize,
}

pub fn run(args: &ServerArgs) -> io::Result<()> {
    peer_common::raise_nofile_limit();
    let cpus = sys::allowed_cpus();
    let threads: Vec<_> = (0..args.threads())
        .map(|i| {
            let addr = args.listen;
            let cpu = cpus[i % cpus.len()];
            std::thread::Builder::new()
                .name(format!("raw-echo-{i}"))
                .spawn(move || {
                    let _ = sys::pin_to_cpu(cpu);
                    let listener = sys::reuseport_listener(&addr, BACKLOG)?;
                    Shard::new(listener)?.run()
                })
        })
        .collect::<io::Result<_>>()?;
    for t in threads {
        t.join().expect("shard thread panicked")?;
    }
    Ok(())
}

struct Shard {
    ring: IoUring,
    listener: RawFd,
    /// Indexed by fd: fds are small and dense, so this is the slab.
    conns: Vec<Option<Conn>>,
    cqes: Vec<(u64, i32, u32)>,
}

impl Shard {
    fn new(listener: RawFd) -> io::Result<Shard> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_submit_all()
            .build(SQ_ENTRIES)?;
        Ok(Shard {
            ring,
            listener,
            conns: Vec::new(),
            cqes: Vec::new(),
        })
    }

    /// Queues an SQE, submitting first when the queue is full.
    ///
    /// # Safety
    /// Any buffer the entry names must stay valid and unmoved until its completion.
    unsafe fn push(&mut self, sqe: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: forwarded from the caller.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let sqe = opcode::AcceptMulti::new(types::Fd(self.listener))
            .build()
            .user_data(token(ACCEPT, self.listener));
        // SAFETY: accept names no buffer (no peer address is asked for).
        unsafe { self.push(sqe) }
    }

    fn arm_recv(&mut self, fd: RawFd) -> io::Result<()> {
        let conn = self.conns[fd as usize]
            .as_mut()
            .expect("recv on a live connection");
        let sqe = opcode::Recv::new(types::Fd(fd), conn.buf.as_mut_ptr(), conn.buf.len() as u32)
            .build()
            .user_data(token(RECV, fd));
        // SAFETY: the buffer is a boxed slice owned by `conns[fd]`, which is dropped only
        // on close, and a connection is closed only when none of its ops is in flight.
        unsafe { self.push(sqe) }
    }

    fn arm_send(&mut self, fd: RawFd) -> io::Result<()> {
        let conn = self.conns[fd as usize]
            .as_mut()
            .expect("send on a live connection");
        let rest = &conn.buf[conn.sent..conn.len];
        let sqe = opcode::Send::new(types::Fd(fd), rest.as_ptr(), rest.len() as u32)
            .build()
            .user_data(token(SEND, fd));
        // SAFETY: as in `arm_recv`.
        unsafe { self.push(sqe) }
    }

    fn close(&mut self, fd: RawFd) {
        self.conns[fd as usize] = None;
        sys::close(fd);
    }

    fn run(mut self) -> io::Result<()> {
        self.arm_accept()?;
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(user_data, res, flags) in &cqes {
                self.complete(user_data, res, flags)?;
            }
            cqes.clear();
            self.cqes = cqes;
        }
    }

    fn complete(&mut self, user_data: u64, res: i32, flags: u32) -> io::Result<()> {
        let (kind, fd) = untoken(user_data);
        match kind {
            ACCEPT => {
                if res >= 0 {
                    let conn_fd = res;
                    let _ = sys::set_int_opt(conn_fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
                    let slot = conn_fd as usize;
                    if self.conns.len() <= slot {
                        self.conns.resize_with(slot + 1, || None);
                    }
                    self.conns[slot] = Some(Conn {
                        buf: vec![0; BUF_BYTES].into_boxed_slice(),
                        len: 0,
                        sent: 0,
                    });
                    self.arm_recv(conn_fd)?;
                }
                // Multishot accept ends on an error (e.g. EMFILE) or overflow: re-arm it.
                if !cqueue::more(flags) {
                    self.arm_accept()?;
                }
            }
            RECV if res > 0 => {
                let conn = self.conns[fd as usize].as_mut().expect("live connection");
                conn.len = res as usize;
                conn.sent = 0;
                self.arm_send(fd)?;
            }
            SEND if res > 0 => {
                let conn = self.conns[fd as usize].as_mut().expect("live connection");
                conn.sent += res as usize;
                if conn.sent < conn.len {
                    self.arm_send(fd)?;
                } else {
                    self.arm_recv(fd)?;
                }
            }
            // EOF, reset or any other error: the connection is done.
            RECV | SEND => self.close(fd),
            _ => unreachable!("unknown token {user_data:#x}"),
        }
        Ok(())
    }
}
