//! Cluster mode (`--redis`): many ringpush nodes share one topic space through Redis,
//! never through a protocol of our own.
//!
//! ```text
//!            node 1                         Redis                        node 2
//!   shard ──Publish──► link ──XADD+PUBLISH──►  stream ringpush:{t}
//!                                             channel ringpush:{t} ──PUBLISH──► link
//!   mirror ◄──Announced── link ◄──PUBLISH──┘                    Announced ──► mirror
//!     │ Deliver                                                      Deliver │
//!     ▼                                                                      ▼
//!   subscribers on node 1                                  subscribers on node 2
//! ```
//!
//! Redis numbers every event (its stream id), keeps the last `--history` per topic and
//! announces each on the topic's channel in the same script, so every node delivers a
//! topic's events in one order and gives them the same id: a client may resume on any
//! node. A node subscribes only to topics it has subscribers of. [`wire`] is what is
//! stored and sent, [`link`] the thread that talks to Redis, and
//! `crate::pubsub::mirror` what a node keeps of each topic.

pub mod link;
pub mod wire;

/// The event-id epoch of every node of a cluster (`crate::proto::sse::Cursor`): ids
/// are Redis's, the same on every node, so the epoch must be too. A position from a
/// single-node server (a random epoch) gets `event: reset`.
pub const EPOCH: u32 = 0x7265_6469;
