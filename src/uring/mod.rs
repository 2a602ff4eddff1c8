//! The io_uring driver: rings, provided-buffer rings, fixed-file tables, op tokens.
//!
//! This is the only module with broad `unsafe` (`crate::sys` has one-call blocks for
//! ordinary syscalls): an SQE handed to the kernel may name memory (buffers, iovecs,
//! addresses) that must stay valid until its completion arrives. The rule that keeps
//! that sound is ownership: the program outside builds operations only through `op`,
//! whose operations name no memory or give theirs to the driver, which keeps it until
//! the completion and hands a send's buffers back with it (`table::Tables::send`,
//! `table::Completion`).
//!
//! Kernel requirements: Linux 6.1+ (multishot accept into a sparse fixed-file table,
//! multishot receive from a provided-buffer ring, `SINGLE_ISSUER` + `DEFER_TASKRUN`).

#![allow(unsafe_code)]

pub mod bufring;
pub mod net;
pub mod op;
pub mod table;
pub mod token;

use std::collections::VecDeque;
use std::io;

use io_uring::{IoUring, cqueue, opcode, squeue};

/// An io_uring instance owned by one thread, with an overflow queue: a full submission
/// queue backs up into memory instead of failing the caller (monoio's approach).
pub struct Ring {
    ring: IoUring,
    /// Entries that did not fit, each with "linked to the next one" (an `IO_LINK` chain
    /// moves into the submission queue whole: split over two submissions, its second
    /// half would run unlinked).
    backlog: VecDeque<(squeue::Entry, bool)>,
    /// See [`Ring::set_deferred_per_enter`].
    deferred_per_enter: usize,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("backlog", &self.backlog.len())
            .finish()
    }
}

/// Submission queues' worth submitted per call at most (see [`Ring::submit_and_wait`]):
/// 32,768 operations on a shard's first ring, 8,192 on the others. A broadcast to
/// 10,000 on one core: 1 gave 316,000-373,000 deliveries/s, 8 gave 420,000-472,000, 64
/// gave 465,000-497,000.
pub const SUBMIT_BATCHES_PER_CALL: usize = 8;

impl Ring {
    /// Creates a ring on the calling thread (`SINGLE_ISSUER` binds it to this thread).
    ///
    /// `DEFER_TASKRUN` runs completion work only when this thread waits for it, so the
    /// kernel never interrupts the shard mid-batch; `SUBMIT_ALL` keeps submitting past a
    /// failing SQE. The completion queue is `cq_entries` long; beyond it the kernel keeps
    /// overflowed completions (`FEAT_NODROP`) and we drain them on the next wait.
    pub fn new(sq_entries: u32, cq_entries: u32) -> Result<Ring, SetupError> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_submit_all()
            .setup_cqsize(cq_entries)
            .build(sq_entries)
            .map_err(SetupError::Create)?;
        check_features(&ring)?;
        Ok(Ring {
            ring,
            backlog: VecDeque::new(),
            deferred_per_enter: 0,
        })
    }

    /// After each submit, while the kernel leaves deferred completion work
    /// (`IORING_SQ_TASKRUN` still set), one more enter that runs up to `n` of them: it
    /// asks for `n` completions with a zero timeout and returns (`ETIME`) when the work
    /// runs out. Since Linux 6.13 a wait runs at most 20 (`IO_LOCAL_TW_DEFAULT_MAX`),
    /// so after a mass disconnect a ring's half million EOFs came 20 per loop turn.
    /// 0 (the default): no extra enter.
    pub fn set_deferred_per_enter(&mut self, n: usize) {
        self.deferred_per_enter = n;
    }

    /// Queues an SQE, spilling into the backlog when the submission queue is full.
    ///
    /// # Safety
    /// Every buffer, iovec or other pointer the entry names must stay valid, and not be
    /// moved, until its completion arrives (for multishot operations: its final
    /// completion, the one without `IORING_CQE_F_MORE`).
    pub(in crate::uring) unsafe fn push(&mut self, entry: squeue::Entry) {
        if !self.backlog.is_empty() {
            self.backlog.push_back((entry, false));
            return;
        }
        // SAFETY: the caller upholds the entry's validity contract (this fn's `# Safety`).
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.backlog.push_back((entry, false));
        }
    }

    /// Queues an `IO_LINK` chain (every entry but the last carries the flag) so that it
    /// reaches the kernel in one submission: all of it now, or all of it later.
    ///
    /// # Safety
    /// As [`Ring::push`], for every entry.
    pub(in crate::uring) unsafe fn push_chain(&mut self, entries: &[squeue::Entry]) {
        if self.backlog.is_empty() {
            // SAFETY: as in `push`; push_multiple is all-or-nothing.
            if unsafe { self.ring.submission().push_multiple(entries) }.is_ok() {
                return;
            }
        }
        let last = entries.len().saturating_sub(1);
        for (i, e) in entries.iter().enumerate() {
            self.backlog.push_back((e.clone(), i < last));
        }
    }

    /// Moves backlogged SQEs into the submission queue, as far as they fit, whole chains
    /// at a time.
    fn drain_backlog(&mut self) {
        let mut sq = self.ring.submission();
        loop {
            let chain = 1 + self
                .backlog
                .iter()
                .take_while(|(_, linked)| *linked)
                .count();
            if self.backlog.is_empty() || sq.capacity() - sq.len() < chain {
                break;
            }
            for (entry, _) in self.backlog.drain(..chain) {
                // SAFETY: entries in the backlog were pushed through `push` or
                // `push_chain`, whose callers promised their validity until completion;
                // the space check above guarantees the push succeeds.
                let pushed = unsafe { sq.push(&entry) };
                debug_assert!(pushed.is_ok());
            }
        }
    }

    /// Submits the backlog, at most [`SUBMIT_BATCHES_PER_CALL`] submission queues' worth,
    /// and waits for at least `want` completions (0: none) unless some is left.
    ///
    /// Bounded, not the whole backlog: the kernel runs most operations inline at
    /// submission (a send to a loopback peer runs the peer's receive too), so submitting
    /// the 500,000 sends of a broadcast, or the 300,000 closes of a mass disconnect, in
    /// one call kept the thread in the kernel for seconds, and every other connection (a
    /// `/healthz`) waited that long. The caller's loop comes back at once while
    /// [`Ring::has_backlog`]. But not one queue per call either: a broadcast's sends then
    /// went out over several loop turns, each turn started new sends to the subscribers
    /// whose last one had completed, and a send carried fewer messages (4.2 deliveries
    /// per send against 6.8; a broadcast to 10,000 on one core fell from ~450,000 to
    /// ~320,000 deliveries/s, benches/RESULTS.md).
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<()> {
        for _ in 0..SUBMIT_BATCHES_PER_CALL {
            self.drain_backlog();
            let want = if self.backlog.is_empty() { want } else { 0 };
            match self.ring.submitter().submit_and_wait(want) {
                Ok(_) => {}
                // EBUSY: the completion queue overflowed; reap first, then submit again.
                // EINTR: a signal; the caller's loop comes back.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EINTR)) => {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            if self.backlog.is_empty() {
                break;
            }
        }
        self.run_deferred()
    }

    /// See [`Ring::set_deferred_per_enter`].
    fn run_deferred(&mut self) -> io::Result<()> {
        if self.deferred_per_enter == 0 || !self.ring.submission().taskrun() {
            return Ok(());
        }
        let zero = io_uring::types::Timespec::new();
        let args = io_uring::types::SubmitArgs::new().timespec(&zero);
        match self
            .ring
            .submitter()
            .submit_with_args(self.deferred_per_enter, &args)
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EBUSY | libc::EINTR)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Entries wait that did not fit in the submission queue yet.
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// How many entries wait in the backlog.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Submits what is queued and runs deferred completion work, without waiting, but
    /// only when there is something to do: queued SQEs, deferred task work
    /// (`IORING_SQ_TASKRUN`) or overflowed completions. Costs no syscall otherwise.
    pub fn submit_pending(&mut self) -> io::Result<()> {
        let needed = !self.backlog.is_empty() || {
            let sq = self.ring.submission();
            !sq.is_empty() || sq.taskrun() || sq.cq_overflow()
        };
        if needed {
            self.submit_and_wait(0)?;
        }
        Ok(())
    }

    /// Whether completions are waiting to be reaped.
    pub fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    /// Takes the completions that are ready, into `out` (cleared first).
    pub fn reap(&mut self, out: &mut Vec<cqueue::Entry>) {
        out.clear();
        out.extend(self.ring.completion());
    }

    /// The submitter, for registrations.
    pub fn submitter(&self) -> io_uring::Submitter<'_> {
        self.ring.submitter()
    }

    /// The ring's file descriptor (a MSG_RING target).
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.ring.as_raw_fd()
    }
}

/// Why a ring could not be set up, with the fix.
#[derive(Debug)]
pub enum SetupError {
    /// `io_uring_setup` failed.
    Create(io::Error),
    /// The kernel lacks an operation or feature we need.
    Missing(&'static str),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::Create(e) => f.write_str(&explain_create_error(e)),
            SetupError::Missing(what) => write!(
                f,
                "this kernel's io_uring lacks {what}; ringpush needs Linux 6.1 or later (this is {})",
                kernel_release()
            ),
        }
    }
}

impl std::error::Error for SetupError {}

fn kernel_release() -> String {
    crate::sys::proc::kernel_release().unwrap_or_else(|| "unknown".into())
}

/// One line saying why `io_uring_setup` failed and how to fix it.
pub fn explain_create_error(e: &io::Error) -> String {
    let disabled = crate::sys::proc::io_uring_disabled();
    match (e.raw_os_error(), disabled) {
        (Some(libc::EPERM | libc::EACCES), Some(2)) => {
            "io_uring is disabled by the kernel (kernel.io_uring_disabled=2); enable it with: sysctl -w kernel.io_uring_disabled=0".into()
        }
        (Some(libc::EPERM | libc::EACCES), Some(1)) => {
            "io_uring is restricted to the io_uring_group (kernel.io_uring_disabled=1); run as root or a member of that group, or: sysctl -w kernel.io_uring_disabled=0".into()
        }
        (Some(libc::EPERM | libc::EACCES), _) => {
            "io_uring_setup was denied (EPERM): a seccomp profile blocks it (Docker's and some Kubernetes runtimes' defaults do); allow io_uring_setup, io_uring_enter and io_uring_register, e.g. docker run --security-opt seccomp=unconfined".into()
        }
        (Some(libc::ENOSYS), _) => format!("this kernel has no io_uring (ENOSYS; kernel {}); ringpush needs Linux 6.1+ built with CONFIG_IO_URING", kernel_release()),
        (Some(libc::EINVAL), _) => format!("the kernel refused the io_uring setup flags (EINVAL; kernel {}); ringpush needs Linux 6.1+ for SINGLE_ISSUER and DEFER_TASKRUN", kernel_release()),
        (Some(libc::ENOMEM), _) => "io_uring_setup ran out of memory (ENOMEM): raise the locked-memory limit (ulimit -l) or free memory".into(),
        _ => format!("io_uring_setup failed: {e}"),
    }
}

fn check_features(ring: &IoUring) -> Result<(), SetupError> {
    if !ring.params().is_feature_nodrop() {
        return Err(SetupError::Missing("FEAT_NODROP"));
    }
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|_| SetupError::Missing("IORING_REGISTER_PROBE"))?;
    let needed = [
        (opcode::AcceptMulti::CODE, "IORING_OP_ACCEPT"),
        (opcode::RecvMulti::CODE, "IORING_OP_RECV"),
        (opcode::Writev::CODE, "IORING_OP_WRITEV"),
        (opcode::Send::CODE, "IORING_OP_SEND"),
        (opcode::Close::CODE, "IORING_OP_CLOSE"),
        (opcode::Timeout::CODE, "IORING_OP_TIMEOUT"),
        (opcode::MsgRingData::CODE, "IORING_OP_MSG_RING"),
        (opcode::AsyncCancel2::CODE, "IORING_OP_ASYNC_CANCEL"),
        (opcode::Socket::CODE, "IORING_OP_SOCKET"),
        (opcode::Connect::CODE, "IORING_OP_CONNECT"),
    ];
    for (code, name) in needed {
        if !probe.is_supported(code) {
            return Err(SetupError::Missing(name));
        }
    }
    Ok(())
}

/// Wakes shards from a thread that is not one (the cluster's Redis link): a ring of its
/// own that only sends `MSG_RING`s, which post a completion on the target ring.
#[derive(Debug)]
pub struct Waker {
    ring: Ring,
    scratch: Vec<cqueue::Entry>,
}

impl Waker {
    /// A small ring on the calling thread (which must be the only one to use it).
    pub fn new() -> Result<Waker, SetupError> {
        Ok(Waker {
            ring: Ring::new(64, 256)?,
            scratch: Vec::new(),
        })
    }

    /// Posts a completion carrying `data` on each ring of `ring_fds`, now.
    pub fn wake(&mut self, ring_fds: &[std::os::fd::RawFd], data: u64) -> io::Result<()> {
        for &fd in ring_fds {
            // SAFETY: a MSG_RING names no memory of ours.
            unsafe { self.ring.push(op::msg_ring(fd, data).0) };
        }
        self.ring.submit_and_wait(0)?;
        // Our own completions (one per wake) are of no interest.
        self.ring.reap(&mut self.scratch);
        Ok(())
    }
}
