//! What the load generator reads about the host: the ephemeral port range, the server
//! process behind a local port, its resident memory and CPU time, and the kernel's slab
//! total. The readers live in [`crate::sys::proc`] with the crate's other `/proc` reads.

pub use crate::sys::proc::{cpu_secs, listener_pid, rss_bytes, slab_bytes};

/// `net.ipv4.ip_local_port_range`.
pub fn port_range() -> Option<(usize, usize)> {
    let (lo, hi) = crate::sys::proc::port_range()?;
    Some((usize::try_from(lo).ok()?, usize::try_from(hi).ok()?))
}
