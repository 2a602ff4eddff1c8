//! The sans-IO protocol core: bytes and `now` in; bytes, timer deadlines and events out.
//!
//! Nothing in here touches a socket, a clock, a thread or io_uring, so every rule can be
//! tested exhaustively and fuzzed. The driver (`crate::uring`) and the shards
//! (`crate::server`) feed it bytes from the kernel and carry its output back.
//!
//! | module      | what it decides                                               | spec            |
//! |-------------|---------------------------------------------------------------|-----------------|
//! | `limits`    | every size limit, with the attack it stops                    |                 |
//! | `http`      | request heads, routing, query decoding, response builders     | RFC 9110, 9112  |
//! | `handshake` | the WebSocket opening handshake                               | RFC 6455 §4.2   |
//! | `frame`     | frame headers: parse, validate, encode                        | RFC 6455 §5.2   |
//! | `mask`      | client-to-server masking                                      | RFC 6455 §5.3   |
//! | `message`   | fragmentation, control frames, UTF-8, message size            | RFC 6455 §5.4-6 |
//! | `deflate`   | permessage-deflate payloads: compress, bounded inflate        | RFC 7692 §7.2   |
//! | `extension` | the `Sec-WebSocket-Extensions` offer and our answer           | RFC 7692 §5, §7.1|
//! | `close`     | close codes and the close handshake payload                   | RFC 6455 §7.4   |
//! | `sse`       | event-stream encoding and event ids                           | WHATWG HTML §9.2|
//! | `proxy`     | PROXY protocol v1/v2 headers, X-Forwarded-For from trusted peers | haproxy.org PROXY |
//! | `tls`       | TLS for one connection: rustls for the handshake (and TLS 1.2), our TLS 1.3 record layer after it | RFC 8446, 5246 |
//! | `conn`      | the per-connection state machine tying the above together     |                 |
//! | `client`    | the client side, as the load generator speaks it              | RFC 6455 §4.1   |
//! | `rand`      | the one PRNG (masks, keys, jitter) and the one bit mixer      |                 |
//! | `lazy`      | a queue holding memory only while it holds something (idle connections) | |
#![forbid(unsafe_code)]

pub mod auth;
pub mod client;
pub mod close;
pub mod conn;
pub mod deflate;
pub mod extension;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod lazy;
pub mod limits;
pub mod mask;
pub mod message;
pub mod proxy;
pub mod rand;
pub mod sse;
pub mod tls;

/// The outcome of an incremental parser.
///
/// `Partial` consumes nothing: the caller keeps the bytes and calls again with more
/// (the `httparse::Status` convention).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// A whole item was parsed from the first `consumed` bytes.
    Complete {
        /// The parsed item.
        value: T,
        /// How many bytes of the input it used.
        consumed: usize,
    },
    /// More bytes are needed; nothing was consumed.
    Partial,
}

impl<T> Parsed<T> {
    /// Maps the parsed value, keeping `consumed`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Parsed<U> {
        match self {
            Parsed::Complete { value, consumed } => Parsed::Complete {
                value: f(value),
                consumed,
            },
            Parsed::Partial => Parsed::Partial,
        }
    }
}
