//! Gathering the facts [`evaluate`](super::evaluate) judges from the live system,
//! through [`crate::sys`].

use crate::sys::proc::{self, sysctl_fields, sysctl_u64};
use crate::sys::{page_size, rlimit};

use super::SystemLimits;

/// Reads every value [`evaluate`](super::evaluate) needs from the live system, including a real
/// `io_uring_setup` with the server's flags (the ring is closed again at once).
pub fn read_system() -> SystemLimits {
    SystemLimits {
        nofile: rlimit(libc::RLIMIT_NOFILE),
        memlock: rlimit(libc::RLIMIT_MEMLOCK).map(|(soft, _)| soft),
        cap_ipc_lock: has_cap_ipc_lock(),
        cpus: crate::config::available_cpus() as u64,
        file_max: sysctl_u64("fs/file-max"),
        files_in_use: sysctl_fields("fs/file-nr").and_then(|v| v.first().copied()),
        nr_open: sysctl_u64("fs/nr_open"),
        somaxconn: sysctl_u64("net/core/somaxconn"),
        tcp_max_syn_backlog: sysctl_u64("net/ipv4/tcp_max_syn_backlog"),
        netdev_max_backlog: sysctl_u64("net/core/netdev_max_backlog"),
        ip_local_port_range: proc::port_range(),
        tcp_mem: sysctl_fields("net/ipv4/tcp_mem").and_then(|v| v.try_into().ok()),
        page_size: page_size(),
        mem_available_kib: proc::meminfo_kib("MemAvailable"),
        io_uring_disabled: proc::io_uring_disabled(),
        // The same setup, flags and opcode probe as a shard's ring, so "ok" means the
        // server will start; the ring is dropped (closed) right away.
        io_uring: crate::uring::Ring::new(8, 16)
            .map(drop)
            .map_err(|e| e.to_string()),
        nf_conntrack_max: sysctl_u64("net/netfilter/nf_conntrack_max"),
        nf_conntrack_count: sysctl_u64("net/netfilter/nf_conntrack_count"),
    }
}

/// CAP_IPC_LOCK (bit 14) in the effective set, from `/proc/self/status`.
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    proc::cap_effective(std::process::id()).is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{check, render_human};

    /// The live read works on this machine: every procfs value that all Linux kernels
    /// have is found (run with `--nocapture` to see the report).
    #[test]
    fn live_system_is_read() {
        let sys = read_system();
        assert!(sys.nofile.is_some() && sys.memlock.is_some());
        assert!(sys.file_max.is_some() && sys.files_in_use.is_some());
        assert!(sys.somaxconn.is_some() && sys.ip_local_port_range.is_some());
        assert!(sys.tcp_mem.is_some() && sys.mem_available_kib.is_some());
        assert!(sys.cpus >= 1 && sys.page_size >= 4096);
        let findings = check(1_000_000);
        println!("{}", render_human(&findings));
        assert_eq!(findings.len(), 13);
    }
}
