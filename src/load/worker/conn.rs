//! A connection's state as the worker keeps it across attempts, and the slot allocator.

use std::time::Instant;

use crate::load::publish::Publisher;
use crate::load::sequence::Sequence;
use crate::load::topics::Seen;
use crate::proto::client::Client;
use crate::proto::tls::Tls;
use crate::uring::token::InFlight;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Echo sender, idle holder or broadcast subscriber.
    Plain,
    /// A broadcast publisher: the WebSocket one, or one of the HTTP ones (many topics).
    Publisher,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Waiting for its (re)connect turn.
    Waiting,
    /// Socket, bind, connect in flight.
    Connecting,
    /// Connected, request sent, waiting for the response head.
    Handshake,
    /// Handshake done: counted in [`Shared::open`](super::Shared::open) and in its
    /// target's [`Shared::open_on`](super::Shared::open_on).
    Open,
    /// Over: cancelling and closing.
    Closing,
}

/// Where a connection is with respect to the load generator's own cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    /// Not cut (or back since).
    No,
    /// Cut: its receive is being cancelled and its slot closed.
    Closing,
    /// Cut and closed: waiting for its backoff delay, or reconnecting.
    Away,
}

/// An event stream's memory across its connections.
#[derive(Debug, Default)]
pub(super) struct Stream {
    /// The last event id received: sent as `Last-Event-ID` on reconnect.
    pub(super) last_event_id: Option<String>,
    /// The exactness check.
    pub(super) seq: Sequence,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) role: Role,
    pub(super) stage: Stage,
    pub(super) generation: u32,
    pub(super) table: usize,
    pub(super) slot: u32,
    /// The socket op succeeded: the slot holds a descriptor to close.
    pub(super) has_socket: bool,
    /// Operations in flight on the slot (the same rule as the server's: the slot and
    /// the key are reused only once none is).
    pub(super) ops: InFlight,
    pub(super) cancelled: bool,
    pub(super) client: Option<Client>,
    /// An HTTP publisher's protocol state, in place of `client` (boxed: subscribers pay
    /// a pointer).
    pub(super) http: Option<Box<Publisher>>,
    /// `wss://`, `https://`: the TLS session between the socket and `client` (boxed:
    /// plain connections pay a pointer).
    pub(super) tls: Option<Box<Tls>>,
    /// Bytes waiting to be sent; over TLS, plaintext not sealed yet (it waits there
    /// until the handshake completes).
    pub(super) out: Vec<u8>,
    /// Bytes being sent (ciphertext over TLS): in the driver while `send_busy`, else
    /// empty (kept for its capacity).
    pub(super) sending: Vec<u8>,
    /// A send is in flight.
    pub(super) send_busy: bool,
    pub(super) started: Instant,
    /// Echo: when the message in flight was sent.
    pub(super) sent_at: Option<Instant>,
    /// Failed attempts since the last success.
    pub(super) attempt: u32,
    /// Has been open at least once.
    pub(super) was_open: bool,
    /// The current attempt reached the open state.
    pub(super) opened: bool,
    /// Index into the plan's sources.
    pub(super) source: usize,
    /// Index into the plan's targets: where the current (or next) attempt goes.
    pub(super) target: u32,
    pub(super) error: Option<String>,
    pub(super) cut: Cut,
    /// Event-stream subscribers only (boxed: a million WebSockets do not pay for it).
    pub(super) stream: Option<Box<Stream>>,
    /// A subscriber's topic (an index into [`Plan::topics`](super::Plan::topics)).
    pub(super) topic: u32,
    /// A broadcast subscriber's messages, checked against its topic.
    pub(super) seen: Seen,
}

/// A table's slot allocator: fresh slots in order, then freed ones.
#[derive(Debug, Default)]
pub(super) struct Slots {
    pub(super) next: u32,
    pub(super) free: Vec<u32>,
}
