//! Per-connection send queue of pre-encoded bytes, with a byte cap.
//!
//! A published message is encoded once per shard into an `Rc<[u8]>` and the same
//! allocation is queued to every local subscriber (uWebSockets' `TopicTree` idea):
//! queuing costs a reference-count increment, never a payload copy. Protocol replies
//! (handshake, echoes, HTTP answers, close frames) are owned buffers. WebSocket control
//! frames (ping, pong) are not queued here: the state machine holds them (one ping, the
//! latest pong) until a send starts, and [`Outbox::take_send`] puts them ahead of the
//! queued data.
//!
//! # The cap: every queued byte counts
//!
//! [`Outbox::len`] counts every unsent byte, replies and control frames in flight
//! included, against `--max-outbox-bytes`:
//!
//! - A published message that would take the queue over the cap is refused
//!   ([`Push::Overflow`]); the shard drops everything still queued (what the kernel
//!   already holds goes out) and closes the connection, a WebSocket with close code 1008
//!   "slow consumer". Messages are never silently skipped: a client either gets every
//!   message in order or is told it was cut off (an SSE client reconnects with
//!   `Last-Event-ID` and replays what it missed).
//! - A reply (to the client's own request, ping or message) is never refused; once the
//!   queue is at the cap the shard stops reading from the connection, so the client
//!   cannot ask for more, and TCP pushes back on it. A queue that has not drained
//!   `--outbox-timeout` after it reached the cap gets the slow-consumer treatment above.
//!
//! # Draining: a cap's worth sent, not a dip under the cap
//!
//! When the queue reaches its cap, [`Outbox::reached_cap`] marks it; it has drained
//! ([`Outbox::drained`]) once a cap's worth of bytes has been sent since, or everything
//! queued. Merely going under the cap is not draining: a peer that never reads still
//! takes a few bytes now and then (its kernel absorbs another segment, a zero-window
//! probe), a send completes, the queue dips just under its cap, reading resumes and the
//! next reply fills it again. Seen in `tests/hostile.rs`: an echo flooder's queue went
//! from 108 KB to 64.5 KB (one echo, just under the 64 KiB cap) after 1.4 s of its 2 s
//! timeout, reading resumed, the next echo took it back over and the timeout started
//! again; such a client could keep its cap of our memory for as long as its kernel kept
//! absorbing.

use crate::proto::lazy::LazyDeque;

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
    chunks: Queue,
    offset: usize,
    /// Bytes waiting (not in flight).
    queued: usize,
    /// Bytes handed to the kernel, not yet confirmed sent.
    in_flight: usize,
    /// Waiting bytes at the front that [`Outbox::clear_unsent`] keeps: a stream's
    /// response head ([`Outbox::keep_queued`]) and chunks a short write gave back (one
    /// of them partly sent: dropping its rest would leave a torn frame).
    keep: usize,
    /// TLS: the front chunk is the rest of a sealed send that a short write left (see
    /// [`Outbox::take_sealed_rest`]).
    sealed_rest: bool,
    /// Bytes still to send, since the queue last reached its cap, before it counts as
    /// drained (see "Draining"); saturated at 4 GiB. A `u32` beside `sealed_rest` costs
    /// no room.
    owed: u32,
}

/// The chunks waiting, in order, held only while there are some (an idle connection
/// keeps none: 128 bytes on the heap after a first send otherwise).
type Queue = LazyDeque<Chunk>;

impl Outbox {
    /// Queues `chunk` unless that would take the unsent total (waiting and in flight)
    /// over `cap`. Replies pass `usize::MAX`: they are never refused, and count.
    pub fn push(&mut self, chunk: Chunk, cap: usize) -> Push {
        let len = chunk.bytes().len();
        if len == 0 {
            return Push::Queued;
        }
        if self.len() + len > cap {
            return Push::Overflow;
        }
        self.queued += len;
        self.chunks.get().push_back(chunk);
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

    /// The queue is at its `cap` (the shard stopped reading): from now on it has
    /// [`Outbox::drained`] once `cap` bytes have been sent, or everything queued.
    pub fn reached_cap(&mut self, cap: usize) {
        self.owed = u32::try_from(cap).unwrap_or(u32::MAX);
    }

    /// Has a cap's worth been sent since [`Outbox::reached_cap`], or everything queued?
    /// A dip under the cap is not enough (see "Draining").
    pub fn drained(&self) -> bool {
        self.owed == 0 || self.is_empty()
    }

    /// Bytes waiting to be handed to the kernel?
    pub fn has_waiting(&self) -> bool {
        self.queued > 0
    }

    /// Takes the front of the queue, up to [`MAX_IOVECS`] chunks, for a send, with
    /// `control` (WebSocket control frames) ahead of every whole chunk: after the rest
    /// of a partly sent front chunk, never inside one. Give it back with
    /// [`Outbox::sent`] or [`Outbox::failed`] when the send completes.
    pub fn take_send(&mut self, control: Option<Chunk>) -> SendBuf {
        let n = self.chunks.len().min(MAX_IOVECS - 1);
        let offset = std::mem::take(&mut self.offset);
        let mut chunks: Vec<Chunk> = Vec::with_capacity(n + 1);
        let mut queued = 0;
        if offset > 0 {
            let front = self
                .chunks
                .pop_front()
                .expect("an offset into a queued chunk");
            queued += front.bytes().len() - offset;
            chunks.push(front);
        }
        let control_len = control.as_ref().map_or(0, |c| c.bytes().len());
        chunks.extend(control);
        let rest = n
            .saturating_sub(usize::from(offset > 0))
            .min(self.chunks.len());
        if rest > 0 {
            for c in self.chunks.get().drain(..rest) {
                queued += c.bytes().len();
                chunks.push(c);
            }
        }
        let buf = SendBuf::new(chunks, offset);
        debug_assert_eq!(buf.len(), queued + control_len);
        self.queued -= queued;
        self.keep = self.keep.saturating_sub(queued);
        self.in_flight += queued + control_len;
        self.chunks.release();
        buf
    }

    /// A send of `buf` completed with `n` bytes written: what was not written goes back
    /// to the front of the queue, ahead of anything queued since.
    pub fn sent(&mut self, buf: SendBuf, mut n: usize) {
        self.in_flight -= buf.len();
        self.owed = self
            .owed
            .saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
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
                let returned = back.iter().map(|c| c.bytes().len()).sum::<usize>() - self.offset;
                self.queued += returned;
                self.keep += returned;
                for c in back.into_iter().rev() {
                    self.chunks.get().push_front(c);
                }
                return;
            }
            n -= left;
            offset = 0;
        }
        debug_assert_eq!(n, 0, "sent more than handed over");
    }

    /// TLS: is the front chunk ciphertext a short write left? Then it goes next, alone
    /// ([`Outbox::take_sealed_rest`]), before anything is sealed.
    pub fn has_sealed_rest(&self) -> bool {
        self.sealed_rest
    }

    /// TLS: the rest of a sealed send, for the next send.
    pub fn take_sealed_rest(&mut self) -> SendBuf {
        debug_assert!(self.sealed_rest && self.offset > 0);
        self.sealed_rest = false;
        let offset = std::mem::take(&mut self.offset);
        let front = self.chunks.pop_front().expect("a sealed rest");
        self.chunks.release();
        let rest = front.bytes().len() - offset;
        self.queued -= rest;
        self.keep = self.keep.saturating_sub(rest);
        self.in_flight += rest;
        SendBuf::new(vec![front], offset)
    }

    /// TLS: plaintext taken with [`Outbox::take_send`] was sealed into `ciphertext`:
    /// the plaintext is done with, the ciphertext is the send (one chunk, so that a
    /// short write leaves exactly one rest).
    pub fn sealed(&mut self, plain: Option<SendBuf>, ciphertext: Vec<u8>) -> SendBuf {
        if let Some(plain) = plain {
            debug_assert_eq!(plain.offset, 0, "plaintext is never partly sent under TLS");
            self.in_flight -= plain.len();
        }
        self.in_flight += ciphertext.len();
        SendBuf::new(vec![Chunk::Owned(ciphertext)], 0)
    }

    /// TLS: a send of sealed bytes completed with `n` written; a rest goes back to the
    /// front, marked as ciphertext.
    pub fn sent_sealed(&mut self, buf: SendBuf, n: usize) {
        debug_assert_eq!(buf.chunks.len(), 1);
        let short = n < buf.len();
        self.sent(buf, n);
        self.sealed_rest = short;
    }

    /// A send of `buf` failed: its bytes are lost (the connection is going away).
    pub fn failed(&mut self, buf: SendBuf) {
        self.in_flight -= buf.len();
    }

    /// Marks everything waiting now as bytes [`Outbox::clear_unsent`] must keep: a
    /// WebSocket's 101 or an event stream's response head, queued before any message.
    pub fn keep_queued(&mut self) {
        self.keep = self.queued;
    }

    /// Drops the messages waiting (not what is in flight, nor what must be kept: see
    /// `keep`), so that a close frame queued next follows whole frames.
    pub fn clear_unsent(&mut self) {
        let mut kept = 0;
        let mut n = 0;
        for (i, c) in self.chunks.iter().enumerate() {
            if kept >= self.keep {
                break;
            }
            kept += c.bytes().len() - if i == 0 { self.offset } else { 0 };
            n = i + 1;
        }
        if !self.chunks.is_empty() {
            self.chunks.get().truncate(n);
        }
        if n == 0 {
            self.chunks.release();
            self.offset = 0;
        }
        self.queued = kept;
        self.keep = kept;
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
        let buf = o.take_send(None);
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
        let buf = o.take_send(None);
        assert_eq!((buf.len(), buf.chunks.len(), buf.offset), (10, 2, 0));
        // Queued while the send is in flight: must stay behind what was not written.
        o.push(Chunk::Owned(b"!".to_vec()), usize::MAX);
        o.sent(buf, 7);
        assert_eq!(o.len(), 4);
        let buf = o.take_send(None);
        assert_eq!((buf.len(), buf.chunks.len(), buf.offset), (4, 2, 2));
        // What is left is "rld": the shared chunk itself, not a copy.
        assert!(matches!(&buf.chunks[0], Chunk::Shared(r) if Rc::ptr_eq(r, &world)));
        assert_eq!(buf.chunks[1].bytes(), b"!");
        o.sent(buf, 4);
        assert!(o.is_empty() && !o.has_waiting());
    }

    #[test]
    fn clear_keeps_the_head_and_a_torn_chunk() {
        let mut o = Outbox::default();
        o.push(Chunk::Owned(b"HTTP/1.1 101\r\n\r\n".to_vec()), usize::MAX);
        o.keep_queued();
        o.push(Chunk::Owned(b"message1".to_vec()), usize::MAX);
        o.clear_unsent();
        assert_eq!(o.len(), 16, "the head stays, the message goes");
        let buf = o.take_send(None);
        o.sent(buf, 16);
        assert!(o.is_empty());
        // A short write inside message2: its rest stays, message3 (given back whole,
        // but part of a committed send) stays too; message4 goes.
        o.push(Chunk::Owned(b"message2".to_vec()), usize::MAX);
        o.push(Chunk::Owned(b"message3".to_vec()), usize::MAX);
        let buf = o.take_send(None);
        o.push(Chunk::Owned(b"message4".to_vec()), usize::MAX);
        o.sent(buf, 3);
        o.clear_unsent();
        assert_eq!(o.len(), 5 + 8);
        let buf = o.take_send(None);
        assert_eq!(buf.len(), 13);
        o.sent(buf, 13);
        assert!(o.is_empty());
    }

    #[test]
    fn clear_keeps_in_flight() {
        let mut o = Outbox::default();
        o.push(Chunk::Owned(vec![0; 4]), usize::MAX);
        let buf = o.take_send(None);
        for _ in 0..2 {
            o.push(Chunk::Owned(vec![0; 4]), usize::MAX);
        }
        o.clear_unsent();
        assert_eq!((o.len(), o.has_waiting()), (4, false));
        o.failed(buf);
        assert!(o.is_empty());
    }

    #[test]
    fn control_frames_go_first_but_never_inside_a_chunk() {
        let mut o = Outbox::default();
        o.push(Chunk::Owned(b"data1".to_vec()), usize::MAX);
        o.push(Chunk::Owned(b"data2".to_vec()), usize::MAX);
        let buf = o.take_send(Some(Chunk::Owned(b"PONG".to_vec())));
        let order: Vec<&[u8]> = buf.chunks.iter().map(Chunk::bytes).collect();
        assert_eq!(order, [&b"PONG"[..], b"data1", b"data2"]);
        assert_eq!(o.len(), 14, "control bytes count while in flight");
        // A short write stops inside data1 ("PONG" + "da"): its rest goes before the
        // next control frame.
        o.sent(buf, 6);
        assert_eq!(o.len(), 8);
        let buf = o.take_send(Some(Chunk::Owned(b"PING".to_vec())));
        let sent: Vec<u8> = buf
            .chunks
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.bytes()[if i == 0 { buf.offset } else { 0 }..].to_vec())
            .collect();
        assert_eq!(sent, b"ta1PINGdata2");
        assert_eq!(o.len(), 12);
        o.sent(buf, 12);
        assert!(o.is_empty());
        // Only control, nothing queued.
        let buf = o.take_send(Some(Chunk::Owned(b"P".to_vec())));
        assert_eq!(buf.len(), 1);
        o.sent(buf, 1);
        assert!(o.is_empty());
    }

    /// Going under the cap is not draining: a peer that takes a few bytes now and then
    /// dips the queue under its cap, and the next reply fills it again.
    #[test]
    fn drained_means_a_caps_worth_sent() {
        let cap = 100;
        let mut o = Outbox::default();
        o.push(Chunk::Owned(vec![0; 64]), usize::MAX);
        o.push(Chunk::Owned(vec![0; 64]), usize::MAX);
        o.reached_cap(cap);
        assert!(!o.drained());
        // A few bytes taken: 128 - 30 = 98, under the cap, not drained.
        let buf = o.take_send(None);
        o.sent(buf, 30);
        assert!(o.len() < cap && !o.drained());
        // Reading resumed; the next reply takes the queue over its cap again.
        o.push(Chunk::Owned(vec![0; 64]), usize::MAX);
        let buf = o.take_send(None);
        o.sent(buf, 60);
        assert!(!o.drained(), "90 of 100 sent");
        let buf = o.take_send(None);
        o.sent(buf, 10);
        assert!(o.drained(), "a cap's worth sent, {} still queued", o.len());
        // Everything queued sent is drained too, however little that was.
        o.reached_cap(cap);
        let buf = o.take_send(None);
        let n = buf.len();
        o.sent(buf, n);
        assert!(n < cap && o.is_empty() && o.drained());
    }

    #[test]
    fn at_most_max_iovecs_per_send() {
        let mut o = Outbox::default();
        for _ in 0..MAX_IOVECS + 1 {
            o.push(Chunk::Owned(vec![1]), usize::MAX);
        }
        let buf = o.take_send(Some(Chunk::Owned(vec![2])));
        assert_eq!(
            buf.chunks.len(),
            MAX_IOVECS,
            "room kept for a control frame"
        );
        assert!(o.has_waiting());
        o.sent(buf, MAX_IOVECS);
        assert_eq!(o.len(), 2);
    }
}
