//! ringpush: a WebSocket + Server-Sent Events push server for Linux, on io_uring.
//!
//! Clients subscribe to topics over WebSocket (`GET /ws/{topic}`) or an event stream
//! (`GET /sse/{topic}`); whatever is published to a topic (by a WebSocket client or by
//! `POST /publish/{topic}`) reaches every subscriber, and an event-stream client that
//! reconnects with `Last-Event-ID` receives exactly the events it missed. The contract
//! (CLI, endpoints, protocol rules) is `DESIGN.md`; this crate is its implementation.
//!
//! # What it does not do
//!
//! - No TLS: terminate it in a proxy (samples in `tuning/`).
//! - One WebSocket extension, permessage-deflate (RFC 7692), and only without context
//!   takeover (`--compression shared`): a published message is compressed once per
//!   shard and shared. No per-connection compressor (`dedicated`) and no subprotocols:
//!   those offers are declined, as RFC 6455 §9.1 allows.
//! - No HTTP/2 or HTTP/3, no chunked request bodies: publish bodies need
//!   `Content-Length`.
//! - Not portable: Linux with io_uring only.
//!
//! # Data flow
//!
//! ```text
//!  socket bytes ──► uring (driver) ──► proto::conn::Connection ──► events ──► server
//!       ▲              (CQEs)            handle_bytes / poll_*         (subscribe,
//!       │                                                               publish, answer)
//!       └──── outbox ◄── poll_transmit ◄──┘     shared encoded frames ◄──┘
//! ```
//!
//! # Modules
//!
//! - [`proto`]: the sans-IO protocol core (HTTP heads and routing, the WebSocket
//!   handshake, frames, masking, messages, close codes, SSE encoding and ids, and the
//!   per-connection state machine), the client side the load generator drives
//!   (`proto::client`) and the crate's one PRNG (`proto::rand`). No sockets, no clock
//!   reads, no `unsafe`.
//! - [`config`]: the one `Config` struct, its defaults, TOML loading and validation.
//! - [`uring`]: the io_uring driver (rings, provided-buffer rings, typed tokens, socket
//!   setup, the `InFlight` tracker of a connection's operations shared by the server and
//!   the load generator, and `op`: the only way to build an operation); the only module
//!   with broad
//!   `unsafe` (the crate denies it everywhere but here and [`sys`]). It holds the memory
//!   an operation names until the completion, so nothing outside it can free memory the
//!   kernel uses.
//! - [`sys`]: OS calls outside io_uring (eventfds, rlimits, the CPU mask, signals) behind
//!   one errno helper, each `unsafe` one call long; `sys::proc` reads `/proc`.
//! - [`server`]: shards (one pinned thread + ring + listener per CPU; `shard/accept.rs`,
//!   `io.rs`, `timers.rs`, `bus.rs`), connection slab, outboxes with the slow-consumer
//!   policy, the timer wheel.
//! - [`pubsub`]: the sans-IO pub/sub core: topic owners (numbering, history within a
//!   memory budget), the local subscriber index and replay decisions, the bus messages.
//! - [`metrics`]: per-shard counters and the Prometheus text of `GET /metrics`.
//! - [`check`]: `ringpush check`, the system's limits against a connection target.
//! - [`load`]: the load generator (`ringpush load`), the client side of the same driver.
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod check;
pub mod cluster;
pub mod config;
pub mod load;
pub mod metrics;
pub mod proto;
pub mod pubsub;
pub mod server;
pub mod sys;
pub mod uring;
