//! A fixed-file table with the ring that owns it and that ring's receive buffers.
//!
//! The kernel caps one ring's registered file table at RLIMIT_NOFILE slots (20,000 on
//! the development machine), and a direct descriptor can only be used by the ring whose
//! table holds it. A shard that must hold more connections than that owns several
//! tables: each is a ring with its own sparse table and its own provided-buffer ring
//! (buffer groups are per ring too). One thread drives them all: the first table's ring
//! is the one the shard blocks on; the others share one eventfd, registered with each,
//! that the first ring polls, so a completion on any table wakes the thread.
//!
//! ```text
//!            shard thread ── blocks in ──► table 0 ring ◄── poll(eventfd)
//!                 │                                            ▲ signalled by
//!                 └── submit / reap ──► table 1..n rings ──────┘ each of these
//! ```

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{cqueue, squeue};
use slab::Slab;

use super::Ring;
use super::bufring::BufRing;
use super::op::{self, ConnectChain, Held, OtherMem, ResetClose, SendBuf, Sqe};
use super::token::{HELD_BIT, InFlight, Kind, SENTINEL_BASE, TABLES_WAKE, TIMER_BIT, Token};

/// The most fixed-file slots one table may have: the kernel's cap on a registered file
/// table (`IORING_MAX_FIXED_FILES`, 2^20), which is also the default ceiling of
/// RLIMIT_NOFILE (`fs.nr_open`). Besides, a table has at most RLIMIT_NOFILE slots.
pub const MAX_SLOTS: u32 = 1 << 20;

/// Completion queue entries for a table of `slots` fixed-file slots: room for a
/// completion per slot and then some (a broadcast completes a send on every connection
/// of the table in one batch), twice the slots rounded up to a power of two; at least
/// 8192, so never below a submission queue of 4096 (the kernel requires that); at most
/// 2^19. Past it the kernel keeps overflowed completions (`Ring::new`).
pub fn cq_entries(slots: u32) -> u32 {
    (slots.max(4096) * 2).next_power_of_two().min(1 << 19)
}

/// How to build one table.
#[derive(Debug, Clone, Copy)]
pub struct TableSpec {
    /// Fixed-file slots (at most RLIMIT_NOFILE).
    pub slots: u32,
    /// Submission queue entries.
    pub sq_entries: u32,
    /// Completion queue entries.
    pub cq_entries: u32,
    /// Provided receive buffers (a power of two) and their size.
    pub recv_buffers: u16,
    /// Size of each receive buffer.
    pub recv_buffer_size: u32,
    /// Buffer group id used in receive SQEs.
    pub bgid: u16,
    /// Deferred completions to run per extra enter when the kernel leaves some
    /// ([`crate::uring::Ring::set_deferred_per_enter`]); 0: none.
    pub deferred_per_enter: u32,
}

/// A ring, its sparse fixed-file table and its receive-buffer ring.
#[derive(Debug)]
pub struct Table {
    // Field order is drop order: the ring (and with it every registration) goes first,
    // then the buffer memory it referenced.
    /// The ring every operation on this table's descriptors goes through.
    pub ring: Ring,
    /// Receive buffers for multishot receives on this ring.
    pub bufs: BufRing,
    slots: u32,
}

impl Table {
    /// Sets up a ring with a sparse table of `spec.slots` and registers its buffers. With
    /// `wake`, the ring signals that eventfd whenever it has completions or deferred work,
    /// so a thread blocked on another ring notices.
    pub fn new(spec: &TableSpec, wake: Option<RawFd>) -> Result<Table, String> {
        let mut ring = Ring::new(spec.sq_entries, spec.cq_entries).map_err(|e| e.to_string())?;
        ring.set_deferred_per_enter(spec.deferred_per_enter as usize);
        let submitter = ring.submitter();
        submitter.register_files_sparse(spec.slots).map_err(|e| {
            format!(
                "cannot register a fixed-file table of {} slots: {e} (RLIMIT_NOFILE too low?)",
                spec.slots
            )
        })?;
        if let Some(fd) = wake {
            submitter
                .register_eventfd(fd)
                .map_err(|e| format!("cannot register a table's eventfd: {e}"))?;
        }
        let bufs = BufRing::new(
            &submitter,
            spec.bgid,
            spec.recv_buffers,
            spec.recv_buffer_size,
        )
        .map_err(|e| format!("cannot register a receive buffer ring: {e}"))?;
        Ok(Table {
            ring,
            bufs,
            slots: spec.slots,
        })
    }

    /// Fixed-file slots in this table.
    pub fn slots(&self) -> u32 {
        self.slots
    }
}

/// Several tables driven by one thread, as the module docs describe.
#[derive(Debug)]
pub struct Tables {
    // Field order is drop order: rings before the eventfd they signal.
    tables: Vec<Table>,
    /// Signalled by every table but the first; polled by the first.
    wake: Option<OwnedFd>,
    /// How further tables are built.
    more: TableSpec,
    /// Memory of operations in flight, with the `user_data` their completion carries.
    held: Slab<(u64, Held)>,
    /// The same for timeouts, kept apart: a timer is always in flight, and `held` can only
    /// give back the memory of a burst (a broadcast to a million) once it is empty.
    timers: Slab<(u64, Held)>,
    cqes: Vec<cqueue::Entry>,
}

/// A completion, with the memory the driver held for its operation.
#[derive(Debug)]
pub struct Completion {
    /// The table whose ring completed it.
    pub table: usize,
    /// What the operation was submitted with.
    pub user_data: u64,
    /// The result: a count or a negative errno.
    pub result: i32,
    /// `IORING_CQE_F_*` flags.
    pub flags: u32,
    /// What the driver held for it (a send's buffers), if anything.
    pub held: Option<Held>,
}

impl Completion {
    /// More completions follow for this (multishot) operation.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer the kernel picked, if any.
    pub fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

impl Tables {
    /// Starts with one table built from `first`; further ones are built from `more`.
    pub fn new(first: &TableSpec, more: TableSpec) -> Result<Tables, String> {
        Ok(Tables {
            tables: vec![Table::new(first, None)?],
            wake: None,
            more,
            held: Slab::new(),
            timers: Slab::new(),
            cqes: Vec::new(),
        })
    }

    /// How many tables there are.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// Always false: there is at least the first table.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Table `t`.
    pub fn get(&self, t: usize) -> &Table {
        &self.tables[t]
    }

    /// Table `t`, mutably (its buffers).
    pub fn get_mut(&mut self, t: usize) -> &mut Table {
        &mut self.tables[t]
    }

    /// Adds a table and returns its index; the first extra one also creates the shared
    /// eventfd and the first ring's poll on it.
    pub fn add(&mut self) -> Result<usize, String> {
        if self.wake.is_none() {
            let fd = crate::sys::eventfd_nonblocking()
                .map_err(|e| format!("cannot create an eventfd: {e}"))?;
            self.wake = Some(fd);
            self.arm_wake();
        }
        let wake = self.wake.as_ref().map(|f| f.as_raw_fd());
        self.tables.push(Table::new(&self.more, wake)?);
        Ok(self.tables.len() - 1)
    }

    fn arm_wake(&mut self) {
        if let Some(fd) = &self.wake {
            let e = op::poll_in(fd.as_raw_fd(), true).user_data(TABLES_WAKE);
            self.push(0, e);
        }
    }

    /// Queues an operation on table `t`'s ring. A fixed slot it names should belong to
    /// table `t` (another table's slot number means another socket, or `EBADF`).
    pub fn push(&mut self, t: usize, sqe: Sqe) {
        // SAFETY: an `Sqe` names no memory (see `op`).
        unsafe { self.tables[t].ring.push(sqe.0) };
    }

    /// Sends `buf` on fixed slot `slot` of table `t`; the completion carrying
    /// `user_data` brings `buf` back ([`Held::Send`]). Returns the send's id, for
    /// [`Tables::cancel_send`].
    pub fn send(&mut self, t: usize, slot: u32, mut buf: SendBuf, user_data: u64) -> u32 {
        let entry = buf.entry(slot);
        let id = self.held.insert((user_data, Held::Send(buf)));
        self.push_held(t, entry, HELD_BIT | id as u64);
        id as u32
    }

    /// Cancels the send `id` (from [`Tables::send`]) on table `t`, by its key: the
    /// kernel finds it without scanning the ring's other operations. Call only while
    /// its completion has not been handed out: the id is reused after that. The
    /// cancel's own completion carries `user_data`.
    pub fn cancel_send(&mut self, t: usize, id: u32, user_data: u64) {
        self.push(t, op::cancel(HELD_BIT | u64::from(id)).user_data(user_data));
    }

    /// A timeout on table `t`'s ring after `after`.
    pub fn timeout(&mut self, t: usize, after: Duration, user_data: u64) {
        let (entry, ts) = op::timeout(after);
        let id = self
            .timers
            .insert((user_data, Held::Other(OtherMem::Timespec(ts))));
        self.push_held(t, entry, HELD_BIT | TIMER_BIT | id as u64);
    }

    /// Queues a client connect chain on table `t`'s ring, whole (see
    /// `Ring::push_chain`); the connect's completion ends it.
    pub fn connect(&mut self, t: usize, chain: &ConnectChain) {
        let (mut entries, mem) = chain.entries();
        let last = entries.pop().expect("a chain ends with its connect");
        let id = self
            .held
            .insert((last.get_user_data(), Held::Other(OtherMem::Connect(mem))));
        entries.push(last.user_data(HELD_BIT | id as u64));
        // SAFETY: the entries name only `mem`, now in `self.held` (a stable heap
        // address) until the final entry's completion; earlier links complete first.
        unsafe { self.tables[t].ring.push_chain(&entries) };
    }

    /// Queues an abortive close (see [`ResetClose`]) on table `t`'s ring; the close's
    /// completion ends it.
    pub fn close_reset(&mut self, t: usize, close: &ResetClose) {
        let (mut entries, mem) = close.entries();
        let last = entries.pop().expect("a reset close ends with its close");
        let id = self
            .held
            .insert((last.get_user_data(), Held::Other(OtherMem::Reset(mem))));
        entries.push(last.user_data(HELD_BIT | id as u64));
        // SAFETY: the entries name only `mem`, now in `self.held` (a stable heap
        // address) until the close's completion; the setsockopt before it in the
        // hard-linked chain completes first.
        unsafe { self.tables[t].ring.push_chain(&entries) };
    }

    /// Closes a connection's fixed-file slot, the last of its operations: abortively
    /// when `reset` (`op::ResetClose`: `SO_LINGER` 0, so the peer gets a reset and no
    /// FIN/ACK exchange or TIME_WAIT follows), else with a plain close. The tokens carry
    /// `generation` and `key`; the operations are counted in `ops`. One path for the
    /// server (peers that vanished) and the load generator (the storm's cut).
    pub fn close_slot(
        &mut self,
        t: usize,
        slot: u32,
        (generation, key): (u32, u32),
        reset: bool,
        ops: &mut InFlight,
    ) {
        let token = |kind| Token::new(kind, generation, key).encode();
        ops.start(Kind::Close);
        if reset {
            ops.start(Kind::SockOpt);
            let close = ResetClose {
                slot,
                sockopt_data: token(Kind::SockOpt),
                close_data: token(Kind::Close),
            };
            self.close_reset(t, &close);
        } else {
            self.push(t, op::close(slot).user_data(token(Kind::Close)));
        }
    }

    /// Queues an entry naming memory just put in `self.held` or `self.timers` under
    /// `key`; the completion carrying `key` takes it out again.
    fn push_held(&mut self, t: usize, entry: squeue::Entry, key: u64) {
        // SAFETY: the entry names only memory inside what was inserted under `key`, heap
        // memory that does not move when its owner does, kept in the slab until this
        // operation's completion (single-shot: its only one), which `submit_and_reap`
        // removes it at.
        unsafe { self.tables[t].ring.push(entry.user_data(key)) };
    }

    /// Submits everything queued on every table, waits (on the first ring, if `block`)
    /// until at least one completion is ready anywhere, and appends every ready
    /// completion to `out`.
    pub fn submit_and_reap(&mut self, out: &mut Vec<Completion>, block: bool) -> io::Result<()> {
        // The further tables first: submit their SQEs and run their deferred work (no
        // syscall when a table has nothing). Block on the first table only if none of
        // them has completions waiting; while blocked, their eventfd wakes us.
        let mut ready = false;
        for t in self.tables.iter_mut().skip(1) {
            t.ring.submit_pending()?;
            ready |= t.ring.has_completions() || t.ring.has_backlog();
        }
        let wait = block && !ready && !self.tables[0].ring.has_backlog();
        self.tables[0].ring.submit_and_wait(usize::from(wait))?;
        let mut rearm = false;
        for (t, table) in self.tables.iter_mut().enumerate() {
            table.ring.reap(&mut self.cqes);
            for cqe in self.cqes.drain(..) {
                let data = cqe.user_data();
                if data == TABLES_WAKE {
                    // Only a wake-up: every table is reaped each round anyway.
                    if let Some(fd) = &self.wake {
                        crate::sys::eventfd_drain(fd);
                    }
                    rearm |= !cqueue::more(cqe.flags());
                    continue;
                }
                let (user_data, held) = if data & HELD_BIT != 0 && data < SENTINEL_BASE {
                    let id = (data & !(HELD_BIT | TIMER_BIT)) as usize;
                    let (user_data, held) = if data & TIMER_BIT != 0 {
                        self.timers.remove(id)
                    } else {
                        self.held.remove(id)
                    };
                    (user_data, Some(held))
                } else {
                    (data, None)
                };
                out.push(Completion {
                    table: t,
                    user_data,
                    result: cqe.result(),
                    flags: cqe.flags(),
                    held,
                });
            }
        }
        if rearm {
            self.arm_wake();
        }
        if self.held.is_empty() && self.held.capacity() > 4096 {
            // After a burst (each entry ~70 bytes): a million sends in flight left 70 MB.
            self.held = Slab::new();
        }
        Ok(())
    }

    /// Operations queued on every ring that did not fit in their submission queues yet:
    /// work submitted on later loop turns, ahead of anything queued after it.
    pub fn backlog(&self) -> usize {
        self.tables.iter().map(|t| t.ring.backlog_len()).sum()
    }

    /// Publishes recycled receive buffers of every table to the kernel.
    pub fn publish_buffers(&mut self) {
        for t in &mut self.tables {
            t.bufs.publish();
        }
    }
}
