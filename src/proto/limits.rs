//! Every size limit of the protocol core in one place, with the reason for its value and
//! the attack it stops.
//!
//! Fixed limits are constants; the ones a deployment tunes live in [`Limits`], filled from
//! `crate::config::Config`.

/// Largest request head (request line + headers + blank line) we buffer: 8 KiB.
///
/// Stops slowloris-style memory growth from a client that never ends its head. 8 KiB is the
/// default of nginx (`large_client_header_buffers 4 8k` per line) and of Node's HTTP parser
/// in its strict mode; browsers' WebSocket and EventSource requests are under 1 KiB.
/// Beyond it: `431 Request Header Fields Too Large`.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Most header fields in one request head: 64.
///
/// Bounds the parser's work and the stack array handed to httparse. Real browsers send
/// about 15. Beyond it: `431`.
pub const MAX_HEADERS: usize = 64;

/// Largest control frame payload (RFC 6455 §5.5: "All control frames MUST have a payload
/// length of 125 bytes or less"). Larger: close 1002.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Largest close reason: the control payload minus the 2-byte code (RFC 6455 §5.5.1).
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// Longest frame header: 2 bytes + 8-byte extended length + 4-byte mask (RFC 6455 §5.2).
pub const MAX_FRAME_HEADER: usize = 14;

/// Longest topic name (DESIGN.md: 1 to 128 characters of `A-Z a-z 0-9 . _ - :`).
pub const MAX_TOPIC_LEN: usize = 128;

/// Most topics in one SSE stream (`GET /sse?topic=a&topic=b...`): 32.
///
/// Each topic costs a subscription entry and a position in every event id of the stream;
/// the cap keeps a single request from subscribing to thousands of topics and ids from
/// growing without bound.
pub const MAX_TOPICS_PER_STREAM: usize = 32;

/// Longest SSE event name (`?event=NAME` on publish): 64 bytes; names are short tags.
pub const MAX_EVENT_NAME_LEN: usize = 64;

/// Longest `Idempotency-Key` of a publish: a UUID (36) or a ULID (26) fits, with room.
/// Each key is remembered per topic for [`IDEMPOTENCY_WINDOW`].
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 64;

/// How long a publish's `Idempotency-Key` keeps a retry from publishing again: five
/// minutes, as Centrifugo's idempotency keys (longer than any sane retry loop).
pub const IDEMPOTENCY_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// Keys remembered per topic at most on one node (the oldest go first): bounds what a
/// publisher that sends a new key with every publish costs.
pub const MAX_IDEMPOTENCY_KEYS_PER_TOPIC: usize = 4096;

/// Longest `Last-Event-ID` / `since` value we parse: 1 KiB. Our ids are at most
/// 9 + 32 * 21 bytes; anything longer is not ours and is treated as unknown.
pub const MAX_EVENT_ID_LEN: usize = 1024;

/// Longest long-poll hold (`GET /poll/{topic}?wait=D`): 5 minutes. Longer is 400.
///
/// Each held request keeps a connection slot and a waiter on the topic; the cap stops a
/// client from parking requests for hours (`wait=9999h`) to pin server state. Five
/// minutes is already beyond the idle timeout of common proxies (nginx
/// `proxy_read_timeout` 60 s, AWS ALB 60 s), so no honest client needs more.
pub const MAX_POLL_WAIT: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// The most bytes a permessage-deflate compressed message may take on the wire: the
/// message limit plus what deflate's stored blocks add to data that does not compress
/// (5 bytes per block of up to 64 KiB, RFC 1951 §3.2.4), with room to spare: 0.1% + 64.
///
/// Stops a peer from parking more than about a message's worth of compressed bytes per
/// connection; the inflated size is held to the message limit itself, and the inflate
/// stops at it (a deflate bomb costs the limit, not its inflated size).
pub fn compressed_limit(max_message: usize) -> usize {
    max_message.saturating_add(max_message / 1024 + 64)
}

/// Default for `--max-message-bytes`: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Limits a deployment tunes (`--max-message-bytes`), plus the fixed head limits so tests
/// can shrink them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest WebSocket message (all fragments) and largest HTTP publish body.
    ///
    /// # Warning
    /// Each connection may buffer up to this many bytes while a message is assembled, so
    /// the worst-case memory is `connections * max_message_bytes`. A frame that declares a
    /// larger length is refused from its header alone (close 1009), before any payload.
    pub max_message_bytes: usize,
    /// See [`MAX_HEAD_BYTES`].
    pub max_head_bytes: usize,
    /// See [`MAX_HEADERS`].
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_head_bytes: MAX_HEAD_BYTES,
            max_headers: MAX_HEADERS,
        }
    }
}
