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

use std::os::fd::RawFd;

use super::Ring;
use super::bufring::BufRing;

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
        let ring = Ring::new(spec.sq_entries, spec.cq_entries).map_err(|e| e.to_string())?;
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
