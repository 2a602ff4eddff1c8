//! `ringpush check`: compares this machine's limits with a target connection count.
//!
//! Each limit becomes one [`Finding`]: ok, warn (works, but degrades under load) or fail
//! (the target cannot be reached, or the server cannot start), with what was read, what
//! is needed, why, and the exact command that fixes it.
//!
//! The numbers assume the documented benchmark: the server AND the load generator on
//! this host, over loopback (DESIGN.md "Performance targets"). Each of the N connections
//! is then two sockets (two kernel files, two sets of buffers) and a client that needs
//! ephemeral ports from 127.0.0.x source addresses. A server whose clients are elsewhere
//! needs about half of the file and buffer figures.
//!
//! Reading, judging and printing are split: [`read_system`] (`read.rs`) takes one
//! [`SystemLimits`] snapshot (`/proc/sys`, `getrlimit`, `/proc/meminfo`, a real
//! `io_uring_setup`), [`evaluate`] (`evaluate.rs`) is a pure function of it, tested
//! boundary by boundary, and [`render_human`] / [`render_json`] (`render.rs`) print the
//! findings. [`check`] is the first two together.
//!
//! Exit status ([`exit_code`]) follows the Nagios plugin convention that monitoring
//! tools already understand: 0 all ok, 1 at least one warn and no fail, 2 at least one
//! fail.

mod evaluate;
mod read;
mod render;

pub use evaluate::evaluate;
pub use read::read_system;
pub use render::{render_human, render_json};

/// The verdict on one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Enough for the target.
    Ok,
    /// The target is reachable, but something degrades (slower ramp-up, drops under a
    /// burst, wasted memory) or the value could not be read.
    Warn,
    /// The target cannot be reached, or the server cannot start.
    Fail,
}

impl Status {
    /// `ok`, `warn` or `fail`, as printed and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One limit compared with the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The sysctl name (`net.core.somaxconn`), rlimit (`RLIMIT_NOFILE`) or facility.
    pub name: &'static str,
    /// The verdict.
    pub status: Status,
    /// What this machine has, with the derived figure that matters.
    pub current: String,
    /// What the target needs, and the figure it was computed from.
    pub needed: String,
    /// The exact command that fixes it, when one exists and the status is not ok.
    pub fix: Option<String>,
    /// Why this limit matters to ringpush.
    pub why: &'static str,
}

/// Every value [`evaluate`] looks at, read once from the live system by [`read_system`].
///
/// `None` means the value could not be read (or, for `nf_conntrack_*` and
/// `io_uring_disabled`, that the kernel does not have it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemLimits {
    /// RLIMIT_NOFILE (soft, hard); `u64::MAX` is unlimited.
    pub nofile: Option<(u64, u64)>,
    /// RLIMIT_MEMLOCK soft limit in bytes (the one the kernel charges against).
    pub memlock: Option<u64>,
    /// The process holds CAP_IPC_LOCK (root does): io_uring charges nothing to MEMLOCK.
    pub cap_ipc_lock: bool,
    /// CPUs in the affinity mask: ringpush's default shard count.
    pub cpus: u64,
    /// `fs.file-max`.
    pub file_max: Option<u64>,
    /// First field of `fs.file-nr`: files allocated right now by the whole system.
    pub files_in_use: Option<u64>,
    /// `fs.nr_open`.
    pub nr_open: Option<u64>,
    /// `net.core.somaxconn`.
    pub somaxconn: Option<u64>,
    /// `net.ipv4.tcp_max_syn_backlog`.
    pub tcp_max_syn_backlog: Option<u64>,
    /// `net.core.netdev_max_backlog`.
    pub netdev_max_backlog: Option<u64>,
    /// `net.ipv4.ip_local_port_range` (low, high), inclusive.
    pub ip_local_port_range: Option<(u64, u64)>,
    /// `net.ipv4.tcp_mem` (low, pressure, high) in pages.
    pub tcp_mem: Option<[u64; 3]>,
    /// Page size in bytes (the unit of `tcp_mem`).
    pub page_size: u64,
    /// `MemAvailable` from `/proc/meminfo`, in KiB.
    pub mem_available_kib: Option<u64>,
    /// `kernel.io_uring_disabled` (0, 1 or 2); `None` before Linux 6.6, which has no switch.
    pub io_uring_disabled: Option<u64>,
    /// Whether this process could set up a ring as the server does; the error explains why not.
    pub io_uring: Result<(), String>,
    /// `net.netfilter.nf_conntrack_max`; `None` when conntrack is not loaded.
    pub nf_conntrack_max: Option<u64>,
    /// `net.netfilter.nf_conntrack_count`: connections tracked now.
    pub nf_conntrack_count: Option<u64>,
}

/// Kernel and user memory budgeted per connection: the figure the server sizes its
/// default `--max-connections` with.
pub use crate::server::BYTES_PER_CONNECTION;

/// Below this many slots per fixed-file table, the tables themselves become the cost:
/// each extra table is a ring plus 1024 x 4 KiB of receive buffers (4 MiB), so 4096
/// slots already mean 250 tables (1 GiB of buffers) for a million connections.
pub const NOFILE_WARN: u64 = 4096;

/// The kernel's largest fixed-file table (`uring::table::MAX_SLOTS`): a larger
/// RLIMIT_NOFILE buys nothing, and it is what `tuning/` sets.
pub const NOFILE_BEST: u64 = crate::uring::table::MAX_SLOTS as u64;

/// Source addresses the load generator can use: 127.0.0.1 to 127.0.0.254.
pub const SOURCE_ADDRESSES: u64 = 254;

/// The port range the fix commands and `tuning/99-ringpush.conf` set: 55,536 ports per
/// source address, keeping service ports below 10000 out of the ephemeral range.
pub const PORT_RANGE_FIX: (u64, u64) = (10000, 65535);

/// Reads the live system and judges it against `connections` concurrent connections.
pub fn check(connections: u64) -> Vec<Finding> {
    evaluate(connections, &read_system())
}

/// Worst status first: fail, then warn, then ok.
fn worst(findings: &[Finding]) -> Status {
    findings
        .iter()
        .map(|f| f.status)
        .max()
        .unwrap_or(Status::Ok)
}

/// The process exit code for a report: 0 all ok, 1 at least one warn and no fail, 2 at
/// least one fail (the Nagios plugin convention).
pub fn exit_code(findings: &[Finding]) -> u8 {
    match worst(findings) {
        Status::Ok => 0,
        Status::Warn => 1,
        Status::Fail => 2,
    }
}
