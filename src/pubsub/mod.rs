//! Pub/sub as plain data structures, sans I/O: topics, their numbered histories, the
//! subscriber index and the replay decisions, talking to each other only in [`BusMsg`]s.
//!
//! ```text
//!   client publishes on shard A                      topic "t" is owned by shard B
//!   ┌──────────── shard A ────────────┐              ┌──────────── shard B ───────────┐
//!   │ Local (local.rs)                │  Publish     │ Owner (owner.rs)               │
//!   │  subscriber index, SSE cursors, │ ───────────► │  numbers the event, keeps it   │
//!   │  poll waits, replay decisions   │              │  (history.rs: TopicLog, the    │
//!   │                                 │ ◄─────────── │  memory budget), forwards it   │
//!   │  deliver(seq, msg) -> each      │  Deliver     │  to every shard with           │
//!   │  subscriber's bytes to queue    │  (Synced,    │  subscribers                   │
//!   └─────────────────────────────────┘   Ack)       └────────────────────────────────┘
//! ```
//!
//! Every topic has an owner shard ([`owner`]: a hash of its name). Publishes go to the
//! owner, which numbers them and forwards each to every shard that has subscribers of
//! the topic; each of those encodes the frame once and queues it to its local
//! subscribers. One writer per topic gives a total order per topic without locks.
//!
//! The shard (`crate::server::shard`) only moves messages: a client's request into
//! [`local::Local`], a `BusMsg` to the queue of the shard it names (its own included:
//! a message to oneself is queued like any other, never handled re-entrantly), bus
//! messages into [`owner::Owner`] or [`local::Local`], and the deliveries they decide
//! into the connections' outboxes. Between shards, `std::sync::mpsc` channels (one
//! receiver per shard) and an io_uring `MSG_RING` wake-up, at most one per target per
//! event-loop turn.
//!
//! # Exact replay without a gap
//!
//! An event stream (or a poll) first subscribes its shard to the topic, then asks the
//! owner for its position (`Sync`, with the client's last sequence number if it sent a
//! valid `Last-Event-ID`). The owner answers with the events after that position and
//! `upto`, its last sequence number. Messages between two shards arrive in the order they
//! were sent, so every `Deliver` the owner sends before the answer carries a sequence
//! number at most `upto` (covered by the answer) and every one after it more than `upto`.
//! The stream ignores live events of a topic until the answer arrives, writes the
//! replayed ones, then takes live events whose number is above the last it wrote:
//! nothing missed, nothing twice. The property test in `sim.rs` checks it over random
//! interleavings of publishes, subscribes, disconnects and reconnects.

pub mod history;
pub mod local;
pub mod mirror;
pub mod owner;
#[cfg(test)]
mod sim;

use std::sync::Arc;

use crate::proto::http::Topic;

/// A connection somewhere: its shard, its key in that shard's connection slab and the
/// key's generation (a stale generation means the connection has gone: what is addressed
/// to it is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRef {
    /// The shard holding the connection.
    pub shard: usize,
    /// Its key there.
    pub key: u32,
    /// The key's generation when the reference was taken.
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
    /// The publishing WebSocket: it does not get its own message back.
    pub origin: Option<ConnRef>,
    /// An HTTP publisher waiting for the event's id.
    pub ack: Option<ConnRef>,
    /// The publish's `Idempotency-Key`: the same key on the same topic within
    /// `IDEMPOTENCY_WINDOW` is not published again (its publisher gets the first id).
    pub idempotency_key: Option<Box<str>>,
}

/// Where a client resumes a topic from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// From now on: live events only (no `Last-Event-ID`, no `since`).
    Now,
    /// After this sequence number (the client's last event).
    Seq(u64),
    /// Everything still retained (`Last-Event-ID: 0`, `since=0`).
    Start,
}

/// A message between shards (or from a shard to itself, through the same queue).
#[derive(Debug)]
pub enum BusMsg {
    /// To a topic's owner: `shard` now has local subscribers of `topic`.
    Subscribe {
        /// The topic.
        topic: Topic,
        /// The shard with subscribers.
        shard: usize,
    },
    /// To a topic's owner: `shard` has no local subscribers of `topic` any more.
    Unsubscribe {
        /// The topic.
        topic: Topic,
        /// The shard.
        shard: usize,
    },
    /// To a topic's owner: number, keep and forward this.
    Publish(Arc<Published>),
    /// To a topic's owner, from a shard whose event stream or poll needs its position in
    /// the topic. The shard subscribes before asking, so every later event reaches it as
    /// a `Deliver` that follows the answer.
    Sync {
        /// The topic.
        topic: Topic,
        /// The position the client has.
        after: After,
        /// Who asks.
        waiter: ConnRef,
    },
    /// From the owner to each shard with subscribers: the topic's event number `seq`.
    Deliver {
        /// The event's sequence number in its topic.
        seq: u64,
        /// The event.
        msg: Arc<Published>,
    },
    /// The owner's answer to `Sync`.
    Synced {
        /// The topic.
        topic: Topic,
        /// Who asked.
        waiter: ConnRef,
        /// The topic's last sequence number when the owner answered.
        upto: u64,
        /// The events after the asked position, oldest first; after a `gap`, every
        /// event still retained.
        events: Vec<(u64, Arc<Published>)>,
        /// Some events after the asked position are no longer kept (or the position was
        /// never given out): the client must be told (`event: reset`).
        gap: bool,
    },
    /// The owner's answer to an HTTP publish: the event's sequence number.
    Ack {
        /// The publisher.
        waiter: ConnRef,
        /// The sequence number.
        seq: u64,
    },
    /// Cluster mode, from a topic's mirror to the node's Redis link: the node has
    /// subscribers of `topic` (`on`), or has had none for a while.
    Interest {
        /// The topic.
        topic: Topic,
        /// Subscribe (true) or unsubscribe.
        on: bool,
    },
    /// Cluster mode, from a mirror to the Redis link: read the topic's life and
    /// retained events; answered with `Fetched`.
    Fetch {
        /// The topic.
        topic: Topic,
    },
    /// Cluster mode, from the Redis link to the topic's mirror: the link (connected
    /// again) is reading the topic; announcements are held until the answer (`Fetched`)
    /// and merged with it by number, so what was missed meanwhile goes first.
    Reading {
        /// The topic.
        topic: Topic,
    },
    /// Cluster mode, from the Redis link to the topic's mirror: an event as Redis
    /// numbered it, in the order Redis announced it.
    Announced {
        /// Its number, cluster-wide.
        seq: u64,
        /// The event.
        msg: Arc<Published>,
    },
    /// Cluster mode, from the Redis link to the topic's mirror: the topic as Redis
    /// holds it, read after the link subscribed to it (so every later event arrives as
    /// `Announced`).
    Fetched {
        /// The topic.
        topic: Topic,
        /// Its current life in Redis; `None`: Redis holds nothing of it.
        life: Option<Life>,
        /// Its retained events, oldest first.
        events: Vec<(u64, Arc<Published>)>,
    },
    /// Cluster mode, from a topic's mirror to each shard with subscribers: events after
    /// the live subscribers' positions are lost (see `Local::lost`); what Redis retains
    /// starts after `floor`.
    Lost {
        /// The topic.
        topic: Topic,
        /// The position before the first retained event.
        floor: u64,
    },
    /// Cluster mode, from the Redis link to an HTTP publisher's shard: the publish could
    /// not be ordered (Redis unreachable): 503 + Retry-After.
    Refused {
        /// The publisher.
        waiter: ConnRef,
    },
}

/// A topic's life in Redis: from its first event after Redis last held nothing of it.
/// A position below the floor cannot be replayed exactly (`event: reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Life {
    /// The number of the life's first event.
    pub born: u64,
    /// The greater of `born - 1` and the last event Redis trimmed.
    pub floor: u64,
}

impl BusMsg {
    /// Is this for a topic's owner ([`owner::Owner`]) rather than for the shard of a
    /// subscriber or waiter ([`local::Local`], or the shard itself for `Ack`)?
    pub fn is_for_owner(&self) -> bool {
        matches!(
            self,
            BusMsg::Subscribe { .. }
                | BusMsg::Unsubscribe { .. }
                | BusMsg::Publish(_)
                | BusMsg::Sync { .. }
                | BusMsg::Reading { .. }
                | BusMsg::Announced { .. }
                | BusMsg::Fetched { .. }
        )
    }
}

/// A shard's owner side: it numbers and keeps its topics itself (one node), or mirrors
/// what Redis numbers and keeps (cluster mode, `crate::cluster`).
#[derive(Debug)]
pub enum OwnerSide {
    /// One node: [`owner::Owner`].
    Node(Box<owner::Owner>),
    /// Cluster mode: [`mirror::Mirror`].
    Cluster(mirror::Mirror),
}

impl OwnerSide {
    /// Acts on a message for a topic's owner ([`BusMsg::is_for_owner`]).
    pub fn handle(&mut self, now: std::time::Instant, msg: BusMsg, out: &mut Vec<(usize, BusMsg)>) {
        match self {
            OwnerSide::Node(o) => o.handle(now, msg, out),
            OwnerSide::Cluster(m) => m.handle(now, msg, out),
        }
    }

    /// Periodic upkeep: topics past `--history-ttl` (one node), or idle mirrors.
    pub fn sweep(&mut self, now: std::time::Instant, out: &mut Vec<(usize, BusMsg)>) {
        match self {
            OwnerSide::Node(o) => o.expire(now),
            OwnerSide::Cluster(m) => m.sweep(now, out),
        }
    }

    /// What is held, in the owner's terms (a mirror evicts and expires nothing itself).
    pub fn stats(&self) -> owner::OwnerStats {
        match self {
            OwnerSide::Node(o) => o.stats(),
            OwnerSide::Cluster(m) => {
                let s = m.stats();
                owner::OwnerStats {
                    topics: s.topics,
                    bytes: s.bytes,
                    events: s.events,
                    ..owner::OwnerStats::default()
                }
            }
        }
    }
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
