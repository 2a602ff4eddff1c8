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

use std::sync::Arc;

use crate::proto::http::Topic;

/// A message published to a topic, shared (not copied) by every shard it reaches.
#[derive(Debug)]
pub struct Published {
    /// The topic.
    pub topic: Topic,
    /// Text or binary: subscribers receive the same opcode.
    pub text: bool,
    /// The payload.
    pub payload: Vec<u8>,
    /// The publishing connection (shard, slab key, generation): it does not get its own
    /// message back.
    pub origin: Option<(usize, usize, u32)>,
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
    /// Sent by the owner to each shard with subscribers: deliver this.
    Deliver(Arc<Published>),
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
