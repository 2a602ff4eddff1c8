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

pub use crate::uring::op::Chunk;
use crate::uring::op::SendBuf;

/// What happened to a pushed chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued within the cap.
    Queued,
    /// Over the cap: not queued; apply the slow-consumer policy.
    Overflow,
}

/// Most chunks handed to one `writev`: enough to batch a burst of small frames, well
/// under the kernel's `UIO_MAXIOV` (1024).
pub const MAX_IOVECS: usize = 64;

/// A connection's queue: chunks waiting, and the bytes of the send in flight (whose
/// chunks the driver holds until its completion). `offset` bytes of the front waiting
/// chunk are already sent.
#[derive(Debug, Default)]
pub struct Outbox {
    chunks: VecDeque<Chunk>,
    offset: usize,
    /// Bytes waiting (not in flight).
    queued: usize,
    /// Bytes handed to the kernel, not yet confirmed sent.
    in_flight: usize,
}

impl Outbox {
    /// Queues `chunk` unless that would take the unsent total (waiting and in flight)
    /// over `cap`. Protocol replies pass `usize::MAX`: a pong or close frame is never
    /// refused.
    pub fn push(&mut self, chunk: Chunk, cap: usize) -> Push {
        let len = chunk.bytes().len();
        if len == 0 {
            return Push::Queued;
        }
        if self.len() + len > cap {
            return Push::Overflow;
        }
        self.queued += len;
        self.chunks.push_back(chunk);
        Push::Queued
    }

    /// Unsent bytes, waiting or in flight.
    pub fn len(&self) -> usize {
        self.queued + self.in_flight
    }

    /// Everything sent (nothing waiting, nothing in flight)?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes waiting to be handed to the kernel?
    pub fn has_waiting(&self) -> bool {
        self.queued > 0
    }

    /// Takes the front of the queue, up to [`MAX_IOVECS`] chunks, for a send; give it
    /// back with [`Outbox::sent`] or [`Outbox::failed`] when the send completes.
    pub fn take_send(&mut self) -> SendBuf {
        let n = self.chunks.len().min(MAX_IOVECS);
        let chunks: Vec<Chunk> = self.chunks.drain(..n).collect();
        let buf = SendBuf::new(chunks, std::mem::take(&mut self.offset));
        let len = buf.len();
        self.queued -= len;
        self.in_flight += len;
        if self.chunks.is_empty() {
            // An idle connection keeps no queue buffer (128 bytes after its first send).
            self.chunks = VecDeque::new();
        }
        buf
    }

    /// A send of `buf` completed with `n` bytes written: what was not written goes back
    /// to the front of the queue, ahead of anything queued since.
    pub fn sent(&mut self, buf: SendBuf, mut n: usize) {
        self.in_flight -= buf.len();
        let SendBuf {
            chunks, mut offset, ..
        } = buf;
        let mut rest = chunks.into_iter();
        while let Some(c) = rest.next() {
            let left = c.bytes().len() - offset;
            if n < left {
                // Short write: `c` from `offset + n` on, and every later chunk, go back.
                let back: Vec<Chunk> = std::iter::once(c).chain(rest).collect();
                self.offset = offset + n;
                self.queued += back.iter().map(|c| c.bytes().len()).sum::<usize>() - self.offset;
                for c in back.into_iter().rev() {
                    self.chunks.push_front(c);
                }
                return;
            }
            n -= left;
            offset = 0;
        }
        debug_assert_eq!(n, 0, "sent more than handed over");
    }

    /// A send of `buf` failed: its bytes are lost (the connection is going away).
    pub fn failed(&mut self, buf: SendBuf) {
        self.in_flight -= buf.len();
    }

    /// Drops everything waiting (not what is in flight).
    pub fn clear_unsent(&mut self) {
        self.chunks = VecDeque::new();
        self.offset = 0;
        self.queued = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

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
    fn cap_counts_in_flight_bytes() {
        let mut o = Outbox::default();
        o.push(Chunk::Owned(vec![0; 8]), 10);
        let buf = o.take_send();
        assert_eq!((o.len(), o.has_waiting()), (8, false));
        assert_eq!(o.push(Chunk::Owned(vec![0; 3]), 10), Push::Overflow);
        o.sent(buf, 8);
        assert!(o.is_empty());
        assert_eq!(o.push(Chunk::Owned(vec![0; 3]), 10), Push::Queued);
    }

    #[test]
    fn short_writes_go_back_to_the_front() {
        let mut o = Outbox::default();
        let world: Rc<[u8]> = Rc::from(&b"world"[..]);
        o.push(Chunk::Owned(b"hello".to_vec()), usize::MAX);
        o.push(Chunk::Shared(world.clone()), usize::MAX);
        let buf = o.take_send();
        assert_eq!((buf.len(), buf.chunks.len(), buf.offset), (10, 2, 0));
        // Queued while the send is in flight: must stay behind what was not written.
        o.push(Chunk::Owned(b"!".to_vec()), usize::MAX);
        o.sent(buf, 7);
        assert_eq!(o.len(), 4);
        let buf = o.take_send();
        assert_eq!((buf.len(), buf.chunks.len(), buf.offset), (4, 2, 2));
        // What is left is "rld": the shared chunk itself, not a copy.
        assert!(matches!(&buf.chunks[0], Chunk::Shared(r) if Rc::ptr_eq(r, &world)));
        assert_eq!(buf.chunks[1].bytes(), b"!");
        o.sent(buf, 4);
        assert!(o.is_empty() && !o.has_waiting());
    }

    #[test]
    fn clear_keeps_in_flight() {
        let mut o = Outbox::default();
        o.push(Chunk::Owned(vec![0; 4]), usize::MAX);
        let buf = o.take_send();
        for _ in 0..2 {
            o.push(Chunk::Owned(vec![0; 4]), usize::MAX);
        }
        o.clear_unsent();
        assert_eq!((o.len(), o.has_waiting()), (4, false));
        o.failed(buf);
        assert!(o.is_empty());
    }

    #[test]
    fn at_most_max_iovecs_per_send() {
        let mut o = Outbox::default();
        for _ in 0..MAX_IOVECS + 1 {
            o.push(Chunk::Owned(vec![1]), usize::MAX);
        }
        let buf = o.take_send();
        assert_eq!(buf.chunks.len(), MAX_IOVECS);
        assert!(o.has_waiting());
        o.sent(buf, MAX_IOVECS);
        assert_eq!(o.len(), 1);
    }
}
