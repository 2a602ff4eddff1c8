//! Topics and the cross-shard bus.
//!
//! Every topic has an owner shard (a hash of its name). Publishes go to the owner, which
//! numbers them and forwards each to every shard that has subscribers of the topic; each
//! of those encodes the frame once and queues it to its local subscribers. One writer
//! per topic gives a total order per topic without locks.
//!
//! Shards talk over `std::sync::mpsc` channels (one receiver per shard, lock-free
//! linked-list blocks since Rust 1.67) and wake each other with an io_uring `MSG_RING`
//! completion, at most one per target shard per event-loop batch.

pub mod history;

use std::sync::Arc;

use crate::proto::http::Topic;

/// A connection waiting for an answer from another shard: shard, slab key, generation
/// (a stale generation means the connection has gone; the answer is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    /// The shard holding the connection.
    pub shard: usize,
    /// Its slab key there.
    pub key: usize,
    /// The slot's generation when the question was asked.
    pub generation: u32,
}

/// A message published to a topic, shared (not copied) by every shard it reaches.
#[derive(Debug)]
pub struct Published {
    /// The topic.
    pub topic: Topic,
    /// Text or binary: subscribers receive the same opcode.
    pub text: bool,
    /// The payload.
    pub payload: Vec<u8>,
    /// The SSE event name (`POST /publish/t?event=NAME`); `None` for plain messages.
    pub event: Option<String>,
    /// The publishing connection (shard, slab key, generation): it does not get its own
    /// message back.
    pub origin: Option<(usize, usize, u32)>,
    /// An HTTP publisher waiting for the event's id.
    pub ack: Option<Waiter>,
}

/// A message between shards.
#[derive(Debug)]
pub enum BusMsg {
    /// Sent to a topic's owner: `shard` now has local subscribers of `topic`.
    Subscribe {
        /// The topic.
        topic: Topic,
        /// The shard with subscribers.
        shard: usize,
    },
    /// Sent to a topic's owner: `shard` has no local subscribers of `topic` any more.
    Unsubscribe {
        /// The topic.
        topic: Topic,
        /// The shard.
        shard: usize,
    },
    /// Sent to a topic's owner: publish this.
    Publish(Arc<Published>),
    /// Sent by the owner to each shard with subscribers: deliver this, the topic's
    /// event number `seq`.
    Deliver {
        /// The event's sequence number in its topic.
        seq: u64,
        /// The event.
        msg: Arc<Published>,
    },
    /// Sent to a topic's owner by a shard whose event stream or poll needs its position
    /// in the topic: the events after `after` (`None`: none, just the current position).
    /// The shard subscribes before asking, so every later event reaches it as a
    /// `Deliver` that follows the answer.
    Sync {
        /// The topic.
        topic: Topic,
        /// The position the client has.
        after: Option<u64>,
        /// Who asks.
        waiter: Waiter,
    },
    /// The owner's answer to `Sync`.
    Synced {
        /// The topic.
        topic: Topic,
        /// Who asked.
        waiter: Waiter,
        /// The topic's last sequence number when the owner answered.
        upto: u64,
        /// The events after the asked position, oldest first.
        events: Vec<(u64, Arc<Published>)>,
        /// Some events after the asked position are no longer kept (or the position was
        /// never given out): the client must resynchronise.
        gap: bool,
    },
    /// The owner's answer to an HTTP publish: the event's sequence number.
    Ack {
        /// The publisher.
        waiter: Waiter,
        /// The topic.
        topic: Topic,
        /// The sequence number.
        seq: u64,
    },
}

/// The owner shard of `topic` among `shards`: FNV-1a of the name, so every shard agrees
/// without coordination.
pub fn owner(topic: &Topic, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_spread_and_agree() {
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            let t = Topic::new(&format!("topic-{i}")).unwrap();
            let o = owner(&t, 4);
            assert_eq!(o, owner(&t, 4));
            counts[o] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
