//! HTTP/1.1 request heads, routing and responses (RFC 9110, RFC 9112).
//!
//! The server reads exactly one kind of request per connection start: a WebSocket
//! upgrade, an event-stream request, or a small HTTP request (publish, poll, metrics,
//! health, the demo page). Heads are parsed with httparse into [`RequestHead`], which keeps
//! only the fields the server uses, so nothing borrows the receive buffer afterwards.
//!
//! What this module does NOT do: read bodies (the connection state machine counts
//! `Content-Length` bytes), decode chunked transfer coding (refused with 411), or
//! normalise paths (`/ws/a/../b` is simply not a route).
//!
//! The submodules, whose public items are all re-exported here:
//!
//! - `head`: a request head parsed into [`RequestHead`] (RFC 9112 §2-§5), and what the
//!   server asks of one: keep-alive, list tokens, `Origin`, the bearer token.
//! - `route`: the endpoint a head asks for ([`Route`]): topics, event ids, query strings,
//!   durations.
//! - `response`: [`Status`] and the response writers.
//!
//! [`HttpError`], the layer's one error enum, lives here with its exhaustive mapping to a
//! status, an extra header field and a message.

use std::fmt;

mod head;
mod response;
mod route;

pub use head::{
    Method, RequestHead, bearer_matches, bearer_token, has_token, keep_alive, origin_allowed,
    parse_request_head,
};
pub use response::{Status, write_error, write_head, write_response, write_service_unavailable};
pub use route::{Route, Topic, parse_duration, parse_query, percent_decode, route};

/// A request the server refuses. One variant per rule; [`HttpError::status`] maps each
/// to its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// Not a valid HTTP/1.x request head (RFC 9112 §2-§5), a request target in none of
    /// the forms a server takes (§3.2: origin, `http`/`https` absolute, `*` for
    /// `OPTIONS`), a bad or conflicting `Content-Length` (§6.3), a repeated field that
    /// must be unique, a non-UTF-8 value of a field we use, or a body where none is
    /// allowed. 400.
    Malformed,
    /// A well-formed request line with a major version other than 1 (`HTTP/2.0`,
    /// `HTTP/3.0`, `HTTP/0.9`). 505 (RFC 9110 §15.6.6). A higher minor version
    /// (`HTTP/1.2`) is not refused: it is served as HTTP/1.1 (RFC 9110 §6.2).
    VersionNotSupported,
    /// The head is larger than [`Limits::max_head_bytes`](super::limits::Limits::max_head_bytes).
    /// 431 (RFC 6585 §5).
    HeadTooLarge,
    /// More header fields than [`Limits::max_headers`](super::limits::Limits::max_headers).
    /// 431.
    TooManyHeaders,
    /// A topic name outside 1-128 characters of `A-Z a-z 0-9 . _ - :`. 400.
    BadTopic,
    /// A query string that does not decode, or a bad parameter value. 400.
    BadQuery,
    /// An event name that is empty, too long or has a CR, LF or NUL. 400.
    BadEventName,
    /// An `Idempotency-Key` that is not 1 to 64 visible ASCII characters. 400.
    BadIdempotencyKey,
    /// No such endpoint. 404.
    NotFound,
    /// The endpoint exists but not for this method. 405 with `Allow` (RFC 9110 §15.5.6).
    MethodNotAllowed {
        /// The methods the endpoint takes, for the `Allow` header.
        allow: &'static str,
    },
    /// A request body without `Content-Length` (chunked bodies are not accepted). 411.
    LengthRequired,
    /// A body over `--max-message-bytes`. 413.
    PayloadTooLarge,
    /// A publish without the right bearer token. 401 with `WWW-Authenticate`.
    Unauthorized,
    /// An `Origin` outside `--allowed-origin`. 403.
    ForbiddenOrigin,
    /// With authorization on (`--jwt-secret`, `--jwt-public-key`), a request for a topic
    /// without a token (`Authorization: Bearer`, `?token=`). 401 with
    /// `WWW-Authenticate: Bearer error="invalid_token"`.
    TokenMissing,
    /// A token that does not verify (signature, algorithm, issuer, audience, shape). 401
    /// as [`HttpError::TokenMissing`].
    TokenInvalid,
    /// A token past its `exp` (or before its `nbf`). 401 as [`HttpError::TokenMissing`].
    TokenExpired,
    /// A valid token without the right to a topic of the request (`subscribe` for
    /// `/ws`, `/sse`, `/poll`; `publish` for `POST /publish`). 403.
    TopicForbidden,
}

impl HttpError {
    /// The response status.
    pub fn status(&self) -> Status {
        match self {
            HttpError::Malformed
            | HttpError::BadTopic
            | HttpError::BadQuery
            | HttpError::BadEventName
            | HttpError::BadIdempotencyKey => Status::BadRequest,
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => {
                Status::RequestHeaderFieldsTooLarge
            }
            HttpError::NotFound => Status::NotFound,
            HttpError::MethodNotAllowed { .. } => Status::MethodNotAllowed,
            HttpError::LengthRequired => Status::LengthRequired,
            HttpError::PayloadTooLarge => Status::PayloadTooLarge,
            HttpError::Unauthorized
            | HttpError::TokenMissing
            | HttpError::TokenInvalid
            | HttpError::TokenExpired => Status::Unauthorized,
            HttpError::ForbiddenOrigin | HttpError::TopicForbidden => Status::Forbidden,
            HttpError::VersionNotSupported => Status::HttpVersionNotSupported,
        }
    }

    /// The header field a response with this error must carry besides the framing
    /// ones, if any. Exhaustive, so a new rule decides whether it needs one.
    fn header(&self) -> Option<(&'static str, &'static str)> {
        match self {
            // RFC 9110 §15.5.6: a 405 "MUST generate an Allow header field".
            HttpError::MethodNotAllowed { allow } => Some(("Allow", allow)),
            // RFC 9110 §11.6.1: a 401 "MUST send a WWW-Authenticate header field
            // containing at least one challenge"; the scheme is Bearer (RFC 6750 §3). A
            // rejected token will add `error="invalid_token"` as a variant of its own.
            HttpError::Unauthorized => Some(("WWW-Authenticate", BEARER_CHALLENGE)),
            // RFC 6750 §3.1: a token that is "expired, revoked, malformed, or invalid".
            HttpError::TokenMissing | HttpError::TokenInvalid | HttpError::TokenExpired => {
                Some(("WWW-Authenticate", INVALID_TOKEN_CHALLENGE))
            }
            HttpError::Malformed
            | HttpError::VersionNotSupported
            | HttpError::HeadTooLarge
            | HttpError::TooManyHeaders
            | HttpError::BadTopic
            | HttpError::BadQuery
            | HttpError::BadEventName
            | HttpError::BadIdempotencyKey
            | HttpError::NotFound
            | HttpError::LengthRequired
            | HttpError::PayloadTooLarge
            | HttpError::ForbiddenOrigin
            | HttpError::TopicForbidden => None,
        }
    }

    /// One line for the plain-text body.
    pub fn message(&self) -> &'static str {
        match self {
            HttpError::Malformed => "malformed request",
            HttpError::HeadTooLarge => "request head too large",
            HttpError::TooManyHeaders => "too many header fields",
            HttpError::BadTopic => "topic names are 1 to 128 characters of A-Z a-z 0-9 . _ - :",
            HttpError::BadQuery => "bad query string",
            HttpError::BadEventName => "event names are 1 to 64 bytes without CR, LF or NUL",
            HttpError::BadIdempotencyKey => "Idempotency-Key is 1 to 64 visible ASCII characters",
            HttpError::NotFound => "not found",
            HttpError::MethodNotAllowed { .. } => "method not allowed",
            HttpError::LengthRequired => "a request body needs Content-Length",
            HttpError::PayloadTooLarge => "body larger than --max-message-bytes",
            HttpError::Unauthorized => "publish needs Authorization: Bearer <token>",
            HttpError::ForbiddenOrigin => "origin not allowed",
            HttpError::VersionNotSupported => "only HTTP/1.0 and HTTP/1.1 are supported",
            HttpError::TokenMissing => "a token is needed: Authorization: Bearer <jwt> or ?token=",
            HttpError::TokenInvalid => "invalid token",
            HttpError::TokenExpired => "token expired",
            HttpError::TopicForbidden => "the token does not allow this topic",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for HttpError {}

/// The challenge of a 401 (RFC 6750 §3: `Bearer`, with a realm naming the server).
const BEARER_CHALLENGE: &str = "Bearer realm=\"ringpush\"";
/// The challenge of a 401 for a missing or refused token (DESIGN.md, RFC 6750 §3.1).
const INVALID_TOKEN_CHALLENGE: &str = "Bearer realm=\"ringpush\", error=\"invalid_token\"";

/// Heads for the submodules' tests, built by the real parser.
#[cfg(test)]
mod testing {
    use super::{HttpError, RequestHead, Topic, parse_request_head};
    use crate::proto::Parsed;
    use crate::proto::limits::Limits;

    pub(super) fn parse(buf: &[u8]) -> Result<Parsed<RequestHead>, HttpError> {
        parse_request_head(buf, &Limits::default())
    }

    pub(super) fn head(buf: &[u8]) -> RequestHead {
        match parse(buf) {
            Ok(Parsed::Complete { value, .. }) => value,
            other => panic!("{other:?}"),
        }
    }

    pub(super) fn req(method: &str, target: &str) -> RequestHead {
        head(format!("{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
    }

    pub(super) fn get(target: &str) -> RequestHead {
        req("GET", target)
    }

    pub(super) fn post(target: &str) -> RequestHead {
        req("POST", target)
    }

    pub(super) fn t(s: &str) -> Topic {
        Topic::new(s).unwrap()
    }
}
