//! Per-connection send queue of pre-encoded bytes, with a byte cap.
//!
//! A published message is encoded once per shard into an `Rc<[u8]>` and the same
//! allocation is queued to every local subscriber (uWebSockets' `TopicTree` idea):
//! queuing costs a reference-count increment, never a payload copy. Protocol replies
//! (handshake, pongs, close frames) are owned buffers.
//!
//! # Slow-consumer policy
//!
//! A connection whose unsent bytes would exceed `--max-outbox-bytes` is not allowed to
//! grow further: [`Outbox::push`] reports [`Push::Overflow`], and the shard drops
//! everything still queued (what the kernel already holds goes out) and closes the
//! connection, a WebSocket with close code 1008 "slow consumer". Messages are never
//! silently skipped: a client either gets every message in order or is told it was cut
//! off (an SSE client reconnects with `Last-Event-ID` and replays what it missed).

use std::collections::VecDeque;
use std::rc::Rc;

/// Bytes waiting to be sent.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Owned by this connection (protocol replies, echo frames).
    Owned(Vec<u8>),
    /// Shared by every subscriber of a published message on this shard.
    Shared(Rc<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(r) => r,
        }
    }
}

/// What happened to a pushed chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued within the cap.
    Queued,
    /// Over the cap: not queued; apply the slow-consumer policy.
    Overflow,
}

/// Most iovecs handed to one `writev`: enough to batch a burst of small frames, well
/// under the kernel's `UIO_MAXIOV` (1024).
pub const MAX_IOVECS: usize = 64;

/// A connection's queue. `offset` bytes of the front chunk are already sent.
#[derive(Debug, Default)]
pub struct Outbox {
    chunks: VecDeque<Chunk>,
    offset: usize,
    bytes: usize,
}

impl Outbox {
    /// Queues `chunk` unless that would take the unsent total over `cap`. Protocol
    /// replies pass `usize::MAX`: a pong or close frame is never refused.
    pub fn push(&mut self, chunk: Chunk, cap: usize) -> Push {
        let len = chunk.bytes().len();
        if len == 0 {
            return Push::Queued;
        }
        if self.bytes + len > cap {
            return Push::Overflow;
        }
        self.bytes += len;
        self.chunks.push_back(chunk);
        Push::Queued
    }

    /// Unsent bytes.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// Nothing to send?
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// iovecs for the front of the queue, up to [`MAX_IOVECS`].
    ///
    /// The pointers stay valid while the chunks stay queued: the caller must not call
    /// [`Outbox::consume`], [`Outbox::clear_unsent`] or drop the outbox while a write
    /// using them is in flight, except as those methods document.
    pub fn iovecs(&self) -> Box<[libc::iovec]> {
        self.chunks
            .iter()
            .take(MAX_IOVECS)
            .enumerate()
            .map(|(i, c)| {
                let b = if i == 0 {
                    &c.bytes()[self.offset..]
                } else {
                    c.bytes()
                };
                libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                }
            })
            .collect()
    }

    /// Drops `n` sent bytes from the front.
    pub fn consume(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let front = self
                .chunks
                .front()
                .expect("consumed more than queued")
                .bytes()
                .len()
                - self.offset;
            if n < front {
                self.offset += n;
                return;
            }
            n -= front;
            self.offset = 0;
            self.chunks.pop_front();
        }
        if self.chunks.is_empty() {
            // An idle connection keeps no queue buffer (128 bytes after its first send).
            self.chunks = VecDeque::new();
        }
    }

    /// Drops everything not yet handed to the kernel. `in_flight`: the first
    /// `in_flight` chunks are part of a write still in flight and are kept alive.
    pub fn clear_unsent(&mut self, in_flight: usize) {
        while self.chunks.len() > in_flight {
            let c = self.chunks.pop_back().expect("len checked");
            self.bytes -= c.bytes().len();
        }
    }

    /// Chunks queued (for `clear_unsent`'s in-flight count).
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_consume_and_cap() {
        let mut o = Outbox::default();
        let shared: Rc<[u8]> = Rc::from(&b"shared"[..]);
        assert_eq!(o.push(Chunk::Owned(b"abc".to_vec()), 10), Push::Queued);
        assert_eq!(o.push(Chunk::Shared(shared.clone()), 10), Push::Queued);
        assert_eq!(
            o.push(Chunk::Owned(b"x".to_vec()), 10),
            Push::Queued,
            "exactly at the cap"
        );
        assert_eq!(o.push(Chunk::Owned(b"y".to_vec()), 10), Push::Overflow);
        assert_eq!(o.len(), 10);
        assert_eq!(
            o.push(Chunk::Owned(b"pong".to_vec()), usize::MAX),
            Push::Queued,
            "replies bypass the cap"
        );
    }

    #[test]
    fn partial_writes() {
        let mut o = Outbox::default();
        let world: Rc<[u8]> = Rc::from(&b"world"[..]);
        o.push(Chunk::Owned(b"hello".to_vec()), usize::MAX);
        o.push(Chunk::Shared(world.clone()), usize::MAX);
        let iov = o.iovecs();
        assert_eq!(iov.iter().map(|v| v.iov_len).collect::<Vec<_>>(), [5, 5]);
        o.consume(7);
        assert_eq!(o.len(), 3);
        let iov = o.iovecs();
        assert_eq!(iov.len(), 1);
        // What is left is "rld": the last 3 bytes of the shared chunk, not a copy.
        assert_eq!(iov[0].iov_base as *const u8, world[2..].as_ptr());
        assert_eq!(iov[0].iov_len, 3);
        o.consume(3);
        assert!(o.is_empty() && o.chunk_count() == 0);
    }

    #[test]
    fn clear_keeps_in_flight() {
        let mut o = Outbox::default();
        for _ in 0..3 {
            o.push(Chunk::Owned(vec![0; 4]), usize::MAX);
        }
        o.clear_unsent(1);
        assert_eq!((o.len(), o.chunk_count()), (4, 1));
    }
}
