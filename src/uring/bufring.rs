//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19+).
//!
//! The kernel picks a buffer from the ring for each multishot receive completion, so a
//! connection holds no receive buffer while it is idle: memory scales with bytes in
//! flight, not with connections. Each completion names its buffer id; the driver copies
//! what it needs and gives the buffer back at once with [`BufRing::recycle`].
//!
//! Memory layout (both areas are anonymous mmaps, page aligned as the kernel requires):
//!
//! ```text
//! ring:    [io_uring_buf; entries]   (addr, len, bid, tail-in-resv-of-entry-0)
//! buffers: [u8; entries * buf_size]  buffer `bid` at bid * buf_size
//! ```

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// A registered ring of `entries` receive buffers of `buf_size` bytes each.
#[derive(Debug)]
pub struct BufRing {
    ring: NonNull<BufRingEntry>,
    ring_bytes: usize,
    bufs: NonNull<u8>,
    bufs_bytes: usize,
    entries: u16,
    buf_size: u32,
    /// Our copy of the tail: entries published to the kernel so far (wrapping).
    tail: u16,
}

fn mmap_anon(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions; the
    // result is checked for MAP_FAILED below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

impl BufRing {
    /// Allocates the ring and its buffers and registers them with `ring` as group `bgid`.
    ///
    /// `entries` must be a power of two, at most 32768 (a kernel limit).
    pub fn new(
        submitter: &io_uring::Submitter<'_>,
        bgid: u16,
        entries: u16,
        buf_size: u32,
    ) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer ring entries must be a power of two <= 32768",
            ));
        }
        let ring_bytes = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        let bufs_bytes = usize::from(entries) * buf_size as usize;
        let ring = mmap_anon(ring_bytes)?.cast::<BufRingEntry>();
        let bufs = match mmap_anon(bufs_bytes) {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: `ring` was mapped above with exactly `ring_bytes` and is not shared.
                unsafe { libc::munmap(ring.as_ptr().cast(), ring_bytes) };
                return Err(e);
            }
        };
        let mut br = BufRing {
            ring,
            ring_bytes,
            bufs,
            bufs_bytes,
            entries,
            buf_size,
            tail: 0,
        };
        // SAFETY: the ring memory is a page-aligned mapping of `entries` entries that lives
        // until `Drop`, which unregisters the group before unmapping (see `Drop`); the
        // kernel only reads entries we publish and writes nothing but the head it keeps.
        unsafe { submitter.register_buf_ring_with_flags(ring.as_ptr() as u64, entries, bgid, 0)? };
        for bid in 0..entries {
            br.push(bid);
        }
        br.publish();
        Ok(br)
    }

    /// The first `len` bytes of buffer `bid`, as filled by a completion.
    ///
    /// # Panics
    /// If `bid` or `len` is out of range (a kernel bug or a mixed-up group).
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        assert!(
            bid < self.entries && len <= self.buf_size as usize,
            "bid {bid} len {len}"
        );
        let offset = usize::from(bid) * self.buf_size as usize;
        // SAFETY: in bounds per the assert; the kernel wrote this buffer before posting the
        // completion that named it and does not touch it again until we recycle it, and
        // `&self` prevents recycling while the slice lives.
        unsafe { std::slice::from_raw_parts(self.bufs.as_ptr().add(offset), len) }
    }

    /// Gives buffer `bid` back to the kernel (visible after [`BufRing::publish`]).
    pub fn recycle(&mut self, bid: u16) {
        self.push(bid);
    }

    fn push(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.entries - 1));
        // SAFETY: idx < entries, inside the ring mapping; the kernel does not read slots
        // past the published tail, so writing this one cannot race with it.
        let entry = unsafe { &mut *self.ring.as_ptr().add(idx) };
        entry.set_addr(self.bufs.as_ptr() as u64 + u64::from(bid) * u64::from(self.buf_size));
        entry.set_len(self.buf_size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes every pushed entry to the kernel with one release store of the tail.
    pub fn publish(&mut self) {
        // SAFETY: the tail field lives in entry 0's reserved bytes (the kernel ABI of
        // `struct io_uring_buf_ring`); it is a naturally aligned u16 the kernel reads with
        // acquire semantics, so an AtomicU16 view of it is sound.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // The owning ring unregisters the group (or is closed) before this runs: see
        // `Ring`'s field order. Unmapping memory the kernel still references would be a
        // use-after-free in the kernel's eyes, so the order is an invariant.
        // SAFETY: both areas were mapped in `new` with these lengths and are unmapped once.
        unsafe {
            libc::munmap(self.ring.as_ptr().cast(), self.ring_bytes);
            libc::munmap(self.bufs.as_ptr().cast(), self.bufs_bytes);
        }
    }
}
