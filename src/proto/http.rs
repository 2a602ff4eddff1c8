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

use std::fmt;
use std::time::Duration;

use super::Parsed;
use super::limits::{
    Limits, MAX_EVENT_ID_LEN, MAX_EVENT_NAME_LEN, MAX_HEADERS, MAX_POLL_WAIT, MAX_TOPIC_LEN,
    MAX_TOPICS_PER_STREAM,
};

/// Request methods the server distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: answered like `GET` without the body (RFC 9110 §9.3.2).
    Head,
    /// `POST`.
    Post,
    /// Anything else (answered 405 on known paths, 404 elsewhere).
    Other,
}

/// A parsed request head: the request line and the header fields the server uses.
///
/// Values are trimmed of optional whitespace (RFC 9110 §5.5) and must be UTF-8; a
/// non-UTF-8 value of a field we keep makes the whole head [`HttpError::Malformed`].
/// Fields we do not keep are skipped unread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The raw path (before `?`), not decoded: of an absolute-form target, the part after
    /// the authority, `/` when empty (RFC 9110 §4.2.3); `*` for `OPTIONS *`.
    pub path: String,
    /// The raw query (after `?`, without it), possibly empty.
    pub query: String,
    /// The `x` of `HTTP/1.x`; 1 for a higher minor version, which is served as
    /// HTTP/1.1 (RFC 9110 §6.2).
    pub minor_version: u8,
    /// `Host` (must not repeat, RFC 9112 §3.2); for an absolute-form target, the
    /// target's authority instead (§3.2.2).
    pub host: Option<String>,
    /// `Upgrade`; repeated field lines are joined with `, ` (RFC 9110 §5.3).
    pub upgrade: Option<String>,
    /// `Connection`; repeated field lines joined.
    pub connection: Option<String>,
    /// `Sec-WebSocket-Key` (must not repeat, RFC 6455 §11.3.1).
    pub sec_websocket_key: Option<String>,
    /// `Sec-WebSocket-Version` (must not repeat in a request, RFC 6455 §11.3.5).
    pub sec_websocket_version: Option<String>,
    /// `Origin` (must not repeat).
    pub origin: Option<String>,
    /// `Authorization` (must not repeat).
    pub authorization: Option<String>,
    /// `Last-Event-ID` (must not repeat).
    pub last_event_id: Option<String>,
    /// `Content-Length`, validated; repeats must agree (RFC 9112 §6.3).
    pub content_length: Option<u64>,
    /// `Transfer-Encoding`; repeated field lines joined. The server takes no chunked
    /// bodies, so its mere presence is refused by the caller.
    pub transfer_encoding: Option<String>,
    /// `Expect` (for `100-continue`, RFC 9110 §10.1.1); repeated field lines joined.
    pub expect: Option<String>,
}

impl RequestHead {
    /// A head with this request line and no header fields; for building heads by hand
    /// (tests, benches) without spelling out every `None`.
    pub fn new(method: Method, target: &str, minor_version: u8) -> RequestHead {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        RequestHead {
            method,
            path: path.to_owned(),
            query: query.to_owned(),
            minor_version,
            host: None,
            upgrade: None,
            connection: None,
            sec_websocket_key: None,
            sec_websocket_version: None,
            origin: None,
            authorization: None,
            last_event_id: None,
            content_length: None,
            transfer_encoding: None,
            expect: None,
        }
    }
}

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
    /// The head is larger than [`Limits::max_head_bytes`]. 431 (RFC 6585 §5).
    HeadTooLarge,
    /// More header fields than [`Limits::max_headers`]. 431.
    TooManyHeaders,
    /// A topic name outside 1-128 characters of `A-Z a-z 0-9 . _ - :`. 400.
    BadTopic,
    /// A query string that does not decode, or a bad parameter value. 400.
    BadQuery,
    /// An event name that is empty, too long or has a CR, LF or NUL. 400.
    BadEventName,
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
            | HttpError::BadEventName => Status::BadRequest,
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

/// Response statuses the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 101.
    SwitchingProtocols,
    /// 200.
    Ok,
    /// 400.
    BadRequest,
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 411.
    LengthRequired,
    /// 413.
    PayloadTooLarge,
    /// 426.
    UpgradeRequired,
    /// 431.
    RequestHeaderFieldsTooLarge,
    /// 500.
    InternalServerError,
    /// 503.
    ServiceUnavailable,
    /// 505.
    HttpVersionNotSupported,
}

impl Status {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Status::SwitchingProtocols => 101,
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::LengthRequired => 411,
            Status::PayloadTooLarge => 413,
            Status::UpgradeRequired => 426,
            Status::RequestHeaderFieldsTooLarge => 431,
            Status::InternalServerError => 500,
            Status::ServiceUnavailable => 503,
            Status::HttpVersionNotSupported => 505,
        }
    }

    /// The reason phrase (RFC 9110 §15; 413 is "Content Too Large" since RFC 9110,
    /// 431 is from RFC 6585 §5).
    pub fn reason(self) -> &'static str {
        match self {
            Status::SwitchingProtocols => "Switching Protocols",
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::Unauthorized => "Unauthorized",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::LengthRequired => "Length Required",
            Status::PayloadTooLarge => "Content Too Large",
            Status::UpgradeRequired => "Upgrade Required",
            Status::RequestHeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::ServiceUnavailable => "Service Unavailable",
            Status::HttpVersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

/// Removes optional whitespace (`OWS = *( SP / HTAB )`, RFC 9110 §5.6.3) from both ends.
/// Not `str::trim`, which would also eat Unicode spaces that are part of a value.
fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// The header fields [`RequestHead`] keeps, and how a repeated field line combines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Host,
    Upgrade,
    Connection,
    SecWebSocketKey,
    SecWebSocketVersion,
    Origin,
    Authorization,
    LastEventId,
    ContentLength,
    TransferEncoding,
    Expect,
}

impl Field {
    /// Field names are case-insensitive (RFC 9110 §5.1).
    fn from_name(name: &str) -> Option<Field> {
        const NAMES: [(&str, Field); 11] = [
            ("host", Field::Host),
            ("upgrade", Field::Upgrade),
            ("connection", Field::Connection),
            ("sec-websocket-key", Field::SecWebSocketKey),
            ("sec-websocket-version", Field::SecWebSocketVersion),
            ("origin", Field::Origin),
            ("authorization", Field::Authorization),
            ("last-event-id", Field::LastEventId),
            ("content-length", Field::ContentLength),
            ("transfer-encoding", Field::TransferEncoding),
            ("expect", Field::Expect),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, f)| f)
    }

    /// List-valued fields (`#token` in their grammar) may be split over several field
    /// lines, which "MUST" combine as a comma-separated list (RFC 9110 §5.3). Every other
    /// field we keep is a singleton; two of them means a confused or hostile client
    /// (a second `Host` is a 400 by RFC 9112 §3.2), so we refuse rather than pick one.
    fn is_list(self) -> bool {
        matches!(
            self,
            Field::Upgrade | Field::Connection | Field::TransferEncoding | Field::Expect
        )
    }
}

/// Parses `Content-Length` (RFC 9110 §8.6: `1*DIGIT`). Signs, spaces inside, lists
/// (`5, 5`) and values beyond `u64` are all refused.
fn parse_content_length(value: &str) -> Result<u64, HttpError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::Malformed);
    }
    // Only digits remain, so this fails only on overflow.
    value.parse().map_err(|_| HttpError::Malformed)
}

/// Parses a request head from the start of `buf`.
///
/// Returns `Complete { value, consumed }` where `consumed` is the length of the head
/// alone (the request line, the fields and the empty line); bytes after it (a body, a
/// pipelined request, the first WebSocket frame) are the caller's. `Partial` consumes
/// nothing: call again with the same bytes plus more.
///
/// Errors: httparse's `TooManyHeaders` (more than `limits.max_headers`, which is
/// clamped to [`MAX_HEADERS`]) is [`HttpError::TooManyHeaders`]; a head still incomplete
/// after `max_head_bytes`, or a complete one longer than that, is
/// [`HttpError::HeadTooLarge`]; a complete, well-formed head of another major version
/// is [`HttpError::VersionNotSupported`]; anything else httparse or this function
/// refuses is [`HttpError::Malformed`]. Total over arbitrary input: never panics.
///
/// # Warning
/// The caller must bound how long it waits for a complete head (the handshake timeout):
/// the byte limit alone does not stop a client that sends one byte a minute.
pub fn parse_request_head(buf: &[u8], limits: &Limits) -> Result<Parsed<RequestHead>, HttpError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let headers = &mut storage[..limits.max_headers.min(MAX_HEADERS)];
    let mut req = httparse::Request::new(headers);
    // httparse's defaults are the strict RFC 9112 ones we want: whitespace between a
    // field name and its colon (§5.1, a smuggling vector) and obs-fold (§5.2) are errors.
    let consumed = match req.parse(buf) {
        Err(httparse::Error::Version) => return other_version(buf, limits),
        parsed => match head_len(parsed, buf.len(), limits)? {
            Some(n) => n,
            None => return Ok(Parsed::Partial),
        },
    };
    // A complete parse always fills the request line; the fallbacks only keep this total.
    let method_name = req.method.unwrap_or_default();
    let method = match method_name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    let (authority, target) = request_target(method_name, req.path.unwrap_or_default())?;
    let mut head = RequestHead::new(method, &target, req.version.unwrap_or(1));
    for h in req.headers.iter() {
        let Some(field) = Field::from_name(h.name) else {
            continue;
        };
        let value = std::str::from_utf8(h.value).map_err(|_| HttpError::Malformed)?;
        let value = trim_ows(value);
        let slot = match field {
            Field::ContentLength => {
                // RFC 9112 §6.3 (5): an invalid length, or differing lengths, is an
                // unrecoverable framing error. Two parsers that disagree on where this
                // body ends are how request smuggling works, so refuse, never pick one.
                let n = parse_content_length(value)?;
                if head.content_length.is_some_and(|m| m != n) {
                    return Err(HttpError::Malformed);
                }
                head.content_length = Some(n);
                continue;
            }
            Field::Host => &mut head.host,
            Field::Upgrade => &mut head.upgrade,
            Field::Connection => &mut head.connection,
            Field::SecWebSocketKey => &mut head.sec_websocket_key,
            Field::SecWebSocketVersion => &mut head.sec_websocket_version,
            Field::Origin => &mut head.origin,
            Field::Authorization => &mut head.authorization,
            Field::LastEventId => &mut head.last_event_id,
            Field::TransferEncoding => &mut head.transfer_encoding,
            Field::Expect => &mut head.expect,
        };
        match slot {
            Some(prev) if field.is_list() => {
                prev.push_str(", ");
                prev.push_str(value);
            }
            Some(_) => return Err(HttpError::Malformed),
            None => *slot = Some(value.to_owned()),
        }
    }
    // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any
    // HTTP/1.1 request message that lacks a Host header field."
    // That holds for an absolute-form target too: §3.2.2 still has the client send Host
    // ("A client MUST send a Host header field in an HTTP/1.1 request even if the
    // request-target is in the absolute-form"), so its absence is the same 400.
    if head.minor_version >= 1 && head.host.is_none() {
        return Err(HttpError::Malformed);
    }
    // RFC 9112 §3.2.2: "When an origin server receives a request with an absolute-form
    // of request-target, the origin server MUST ignore the received Host header field
    // (if any) and instead use the host information of the request-target."
    if let Some(authority) = authority {
        head.host = Some(authority.to_owned());
    }
    Ok(Parsed::Complete {
        value: head,
        consumed,
    })
}

/// httparse's answer under our limits: the head's length, `None` for Partial, or the
/// error (see [`parse_request_head`]).
fn head_len(
    parsed: httparse::Result<usize>,
    buf_len: usize,
    limits: &Limits,
) -> Result<Option<usize>, HttpError> {
    match parsed {
        Ok(httparse::Status::Complete(n)) if n > limits.max_head_bytes => {
            Err(HttpError::HeadTooLarge)
        }
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) if buf_len >= limits.max_head_bytes => {
            Err(HttpError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders),
        Err(_) => Err(HttpError::Malformed),
    }
}

/// The request line's version when httparse refused it (it takes exactly `HTTP/1.0`
/// and `HTTP/1.1`). A well-formed `HTTP-version` (RFC 9112 §2.3: `"HTTP/" DIGIT "."
/// DIGIT`) of major version 1 is served as HTTP/1.1 (RFC 9110 §6.2: a higher minor
/// version is processed "as if it were in the highest minor version within that major
/// version to which the recipient is conformant"); of another major version it is 505
/// once the head is complete (the HTTP/1 message syntax and the size limits, no more:
/// the rules of HTTP/1.1 fields and targets are not that version's, and the HTTP/2
/// preface `PRI * HTTP/2.0` is answered 505 too); anything else is 400.
///
/// The head is checked by parsing a copy with the version replaced by `HTTP/1.1`, with
/// the same length, so `consumed` is the same. Only clients that speak another version
/// pay for the copy.
fn other_version(buf: &[u8], limits: &Limits) -> Result<Parsed<RequestHead>, HttpError> {
    // httparse accepted the method and the target before the version, and neither holds
    // a space (nor do the empty lines it skips first): the version follows the second.
    let Some(at) = buf
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b' ')
        .nth(1)
        .map(|(i, _)| i + 1)
    else {
        return Err(HttpError::Malformed);
    };
    const SHAPE: &[u8; 8] = b"HTTP/0.0";
    let version = &buf[at..buf.len().min(at + SHAPE.len())];
    let well_formed = version.iter().zip(SHAPE).all(|(&b, &s)| match s {
        b'0' => b.is_ascii_digit(),
        _ => b == s,
    });
    if !well_formed {
        return Err(HttpError::Malformed);
    }
    if at + SHAPE.len() > limits.max_head_bytes {
        return Err(HttpError::HeadTooLarge);
    }
    if version.len() < SHAPE.len() {
        // Still a prefix of a well-formed version: wait for the rest.
        return Ok(Parsed::Partial);
    }
    let major = version[5];
    // One byte past the limit is enough to tell a head that does not fit (Partial at
    // the limit is HeadTooLarge), and bounds the copy however much is pipelined behind.
    let mut copy = buf[..buf.len().min(limits.max_head_bytes + 1)].to_vec();
    copy[at + 5] = b'1';
    copy[at + 7] = b'1';
    if major == b'1' {
        return parse_request_head(&copy, limits);
    }
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let headers = &mut storage[..limits.max_headers.min(MAX_HEADERS)];
    match head_len(
        httparse::Request::new(headers).parse(&copy),
        copy.len(),
        limits,
    )? {
        Some(_) => Err(HttpError::VersionNotSupported),
        None => Ok(Parsed::Partial),
    }
}

/// Splits a request target (RFC 9112 §3.2) into the authority of an absolute-form
/// target, if any, and an origin-form target (`/path?query`) for routing.
///
/// - origin-form (`/healthz?x`): as is.
/// - absolute-form (`http://host:8080/healthz?x`, §3.2.2: "A server MUST accept the
///   absolute-form in requests"): only the `http` and `https` schemes (ASCII case
///   ignored, RFC 3986 §3.1) name a resource here; the authority must be a non-empty
///   `host[:port]` without userinfo (RFC 9110 §4.2.1: an empty host is invalid; §4.2.4:
///   userinfo is an error); an empty path is `/` (RFC 9110 §4.2.3).
/// - asterisk-form (`*`, §3.2.4): only for `OPTIONS`; routed like any unknown path.
/// - anything else, authority-form (`host:443`, for `CONNECT` only, §3.2.3) included: 400.
fn request_target<'a>(
    method: &str,
    target: &'a str,
) -> Result<(Option<&'a str>, std::borrow::Cow<'a, str>), HttpError> {
    if target.starts_with('/') {
        return Ok((None, target.into()));
    }
    if target == "*" {
        return if method == "OPTIONS" {
            Ok((None, target.into()))
        } else {
            Err(HttpError::Malformed)
        };
    }
    let (scheme, rest) = target.split_once("://").ok_or(HttpError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(HttpError::Malformed);
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    // `host [":" port]` (RFC 3986 §3.2): reg-name and IPv4 characters (unreserved,
    // pct-encoded, sub-delims), `:` and the brackets of an IP literal. No `@`.
    let host_byte = |b: u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b);
    if authority.is_empty() || !authority.bytes().all(host_byte) {
        return Err(HttpError::Malformed);
    }
    let target = if path.starts_with('/') {
        path.into()
    } else {
        format!("/{path}").into()
    };
    Ok((Some(authority), target))
}

/// A validated topic name: 1 to [`MAX_TOPIC_LEN`] characters of `A-Z a-z 0-9 . _ - :`.
///
/// The alphabet needs no escaping in a path, a query, an SSE `id:` line or JSON, and
/// `:` leaves room for namespaces such as `user:42` (direct messages are topics).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

impl Topic {
    /// Validates `s` as a topic name; anything else is [`HttpError::BadTopic`].
    pub fn new(s: &str) -> Result<Topic, HttpError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_TOPIC_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
        if ok {
            Ok(Topic(s.to_owned()))
        } else {
            Err(HttpError::BadTopic)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET`/`HEAD /`: the demo page.
    Index,
    /// `GET`/`HEAD /healthz`.
    Healthz,
    /// `GET`/`HEAD /metrics`.
    Metrics,
    /// `GET /echo`: a WebSocket echo (the upgrade is checked by `handshake::validate`).
    Echo,
    /// `GET /ws/{topic}`: a WebSocket subscribed to `topic`.
    Ws {
        /// The topic.
        topic: Topic,
    },
    /// `GET /sse/{topic}` or `GET /sse?topic=a&topic=b`: an event stream.
    Sse {
        /// 1 to [`MAX_TOPICS_PER_STREAM`] topics in request order, without duplicates.
        topics: Vec<Topic>,
        /// `Last-Event-ID` header, else `?lastEventId=`; unparsed. Empty: `None` (no
        /// position). Longer than [`MAX_EVENT_ID_LEN`]: cut to just over it, so it stays
        /// an id that is not ours and the stream starts with `event: reset`.
        last_event_id: Option<String>,
    },
    /// `POST /publish/{topic}[?event=NAME]`.
    Publish {
        /// The topic.
        topic: Topic,
        /// The SSE event name, 1 to [`MAX_EVENT_NAME_LEN`] bytes without CR, LF or NUL.
        event: Option<String>,
    },
    /// `GET /poll/{topic}?since=ID&wait=D`.
    Poll {
        /// The topic.
        topic: Topic,
        /// The last id the client has, as for [`Route::Sse`]: empty is `None`, too long
        /// is kept (cut) so the answer is `"reset":true`.
        since: Option<String>,
        /// Long-polling budget, at most [`MAX_POLL_WAIT`]; absent or zero: `None`
        /// (answer at once).
        wait: Option<Duration>,
    },
}

/// `Allow` values (RFC 9110 §10.2.1) for the 405 of each kind of endpoint.
const ALLOW_GET_HEAD: &str = "GET, HEAD";
const ALLOW_GET: &str = "GET";
const ALLOW_POST: &str = "POST";

/// Decides the endpoint for a request head.
///
/// Order of checks: the path picks the endpoint (unknown: 404), then the method (wrong:
/// 405 with `Allow`), then the topic and query (400). `/ws`, `/sse`, `/poll` and
/// `/publish` take exactly one topic segment; a further `/` (including a trailing one)
/// is 404, as is any trailing-slash variant of a fixed path except `/` itself.
pub fn route(head: &RequestHead) -> Result<Route, HttpError> {
    let path = head.path.as_str();
    let allow = |allow: &'static str| {
        let ok = match allow {
            ALLOW_GET_HEAD => matches!(head.method, Method::Get | Method::Head),
            ALLOW_GET => head.method == Method::Get,
            _ => head.method == Method::Post,
        };
        if ok {
            Ok(())
        } else {
            Err(HttpError::MethodNotAllowed { allow })
        }
    };
    // Endpoints with a `{topic}` segment.
    for (prefix, methods) in [
        ("/ws/", ALLOW_GET),
        ("/sse/", ALLOW_GET),
        ("/publish/", ALLOW_POST),
        ("/poll/", ALLOW_GET),
    ] {
        let Some(segment) = path.strip_prefix(prefix) else {
            continue;
        };
        if segment.contains('/') {
            return Err(HttpError::NotFound);
        }
        allow(methods)?;
        let topic = path_topic(segment)?;
        return match prefix {
            "/ws/" => Ok(Route::Ws { topic }),
            "/sse/" => {
                let query = parse_query(&head.query)?;
                Ok(Route::Sse {
                    topics: vec![topic],
                    last_event_id: last_event_id(head, &query),
                })
            }
            "/publish/" => publish(topic, &head.query),
            _ => poll(topic, &head.query),
        };
    }
    match path {
        "/" => allow(ALLOW_GET_HEAD).map(|()| Route::Index),
        "/healthz" => allow(ALLOW_GET_HEAD).map(|()| Route::Healthz),
        "/metrics" => allow(ALLOW_GET_HEAD).map(|()| Route::Metrics),
        "/echo" => allow(ALLOW_GET).map(|()| Route::Echo),
        "/sse" => {
            allow(ALLOW_GET)?;
            let query = parse_query(&head.query)?;
            let mut topics: Vec<Topic> = Vec::new();
            for (_, v) in query.iter().filter(|(k, _)| k == "topic") {
                let t = Topic::new(v)?;
                if !topics.contains(&t) {
                    // Stop at the first topic over the cap: the dedup scan stays
                    // O(MAX_TOPICS_PER_STREAM) per parameter however long the query.
                    if topics.len() == MAX_TOPICS_PER_STREAM {
                        return Err(HttpError::BadQuery);
                    }
                    topics.push(t);
                }
            }
            if topics.is_empty() {
                return Err(HttpError::BadQuery);
            }
            Ok(Route::Sse {
                topics,
                last_event_id: last_event_id(head, &query),
            })
        }
        _ => Err(HttpError::NotFound),
    }
}

/// `POST /publish/{topic}[?event=NAME]`.
fn publish(topic: Topic, query: &str) -> Result<Route, HttpError> {
    let mut event = None;
    for (k, v) in parse_query(query)? {
        if k == "event" {
            // The name goes on an SSE `event:` line: a CR or LF would end that line and
            // let a publisher forge fields in every subscriber's stream (WHATWG HTML
            // §9.2.6); NUL is refused by many clients.
            let bad = v.is_empty()
                || v.len() > MAX_EVENT_NAME_LEN
                || v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
            if bad {
                return Err(HttpError::BadEventName);
            }
            event = Some(v);
        }
    }
    Ok(Route::Publish { topic, event })
}

/// `GET /poll/{topic}?since=ID&wait=D`.
fn poll(topic: Topic, query: &str) -> Result<Route, HttpError> {
    let (mut since, mut wait) = (None, None);
    for (k, v) in parse_query(query)? {
        match k.as_str() {
            "since" => since = event_id(v),
            "wait" => {
                let d = parse_duration(&v)
                    .filter(|d| *d <= MAX_POLL_WAIT)
                    .ok_or(HttpError::BadQuery)?;
                wait = (!d.is_zero()).then_some(d);
            }
            _ => {}
        }
    }
    Ok(Route::Poll { topic, since, wait })
}

/// A topic from a path segment: percent-decoded (RFC 3986 §2.1), then validated. A bad
/// escape is a bad topic too: the client asked for a name we cannot have.
fn path_topic(segment: &str) -> Result<Topic, HttpError> {
    Topic::new(&percent_decode(segment).map_err(|_| HttpError::BadTopic)?)
}

/// An event id as the client sent it; empty is no id at all.
///
/// One longer than [`MAX_EVENT_ID_LEN`] is not ours, but the client did send a position,
/// so it must get a reset like any unknown id, never be served as if it had sent none
/// (it would miss the news that its position is lost). It is cut to the first char
/// boundary past the limit: still too long for `Cursor::parse`, which refuses anything
/// over [`MAX_EVENT_ID_LEN`], and no more than 4 bytes over it however long the input.
fn event_id(mut id: String) -> Option<String> {
    if id.len() > MAX_EVENT_ID_LEN {
        // `id.len()` is a boundary, so `find` always succeeds.
        let cut = (MAX_EVENT_ID_LEN + 1..=id.len())
            .find(|&i| id.is_char_boundary(i))
            .unwrap_or(id.len());
        id.truncate(cut);
    }
    (!id.is_empty()).then_some(id)
}

/// The `Last-Event-ID` header (WHATWG HTML §9.2.4, sent by `EventSource` on reconnect),
/// else `?lastEventId=` for clients that cannot set headers. The header wins even when
/// it is unusable: a client that sent one meant it.
fn last_event_id(head: &RequestHead, query: &[(String, String)]) -> Option<String> {
    match &head.last_event_id {
        Some(id) => event_id(id.clone()),
        None => query
            .iter()
            .find(|(k, _)| k == "lastEventId")
            .and_then(|(_, v)| event_id(v.clone())),
    }
}

/// Splits a query string into decoded `(key, value)` pairs, in order, repeats kept
/// (`application/x-www-form-urlencoded`, WHATWG URL §5.1): pairs split on `&`, key and
/// value on the first `=` (no `=`: empty value), `+` is a space, `%XX` a byte. Empty
/// pairs (`a=1&&b=2`) are skipped. A bad escape or a non-UTF-8 result is
/// [`HttpError::BadQuery`].
pub fn parse_query(q: &str) -> Result<Vec<(String, String)>, HttpError> {
    let mut out = Vec::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        // `+` first, so an escaped `%2B` stays a plus.
        let k = percent_decode(&k.replace('+', " "))?;
        let v = percent_decode(&v.replace('+', " "))?;
        out.push((k, v));
    }
    Ok(out)
}

/// The value of one hex digit.
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes (RFC 3986 §2.1; either case of hex digit); every other byte is
/// kept, `+` included. A `%` without two hex digits, or a result that is not UTF-8, is
/// [`HttpError::BadQuery`].
pub fn percent_decode(s: &str) -> Result<String, HttpError> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (hi, lo) = match b.get(i + 1..i + 3) {
                Some(&[hi, lo]) => (hex_digit(hi), hex_digit(lo)),
                _ => (None, None),
            };
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(HttpError::BadQuery);
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| HttpError::BadQuery)
}

/// Parses a duration: ASCII digits then a unit `ms`, `s`, `m` or `h` (`500ms`, `30s`,
/// `2m`, `1h`); plain digits are seconds. No spaces, signs, fractions or upper-case
/// units. Exact: every value that fits a `u64` of its unit is accepted, and a count that
/// overflows (`99999999999999999999s`, or minutes/hours beyond `u64` seconds) is `None`,
/// never a panic or a wrap.
pub fn parse_duration(s: &str) -> Option<Duration> {
    // The first non-digit byte is ASCII or a UTF-8 lead byte, so a char boundary.
    let split = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return None;
    }
    // Only ASCII digits, so this fails only on overflow.
    let n: u64 = digits.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// Writes a status line, the given headers and the empty line (RFC 9112 §4, §5); no body
/// framing. For the 101 response and the event-stream head, whose bodies are not
/// length-delimited.
///
/// # Warning
/// Names and values are written as given. A CR or LF in one would split the response
/// (response splitting); values copied from a [`RequestHead`] cannot hold either, since
/// httparse refuses them.
pub fn write_head(out: &mut Vec<u8>, status: Status, headers: &[(&str, &str)]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.code().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.reason().as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        debug_assert!(
            !name.contains(['\r', '\n', ':']) && !value.contains(['\r', '\n']),
            "header {name:?}: {value:?} would split the response"
        );
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a complete response: status line, `Content-Type`, `Content-Length`,
/// `Connection: close` when `keep_alive` is false, then `headers`, then the body.
/// `head_only` (a HEAD request) omits the body but keeps its `Content-Length`
/// (RFC 9110 §9.3.2, §8.6).
pub fn write_response(
    out: &mut Vec<u8>,
    status: Status,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
) {
    let len = body.len().to_string();
    let mut all: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 3);
    all.push(("Content-Type", content_type));
    all.push(("Content-Length", &len));
    if !keep_alive {
        // RFC 9112 §9.6: tells the client not to send another request on this connection.
        all.push(("Connection", "close"));
    }
    all.extend_from_slice(headers);
    write_head(out, status, &all);
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// Writes the plain-text error response for `err`: body `err.message()` and a newline,
/// `Connection: close` (after a refused request the rest of the input cannot be trusted
/// to start a new request), and the field the status requires: `Allow` for 405,
/// `WWW-Authenticate` for 401.
pub fn write_error(out: &mut Vec<u8>, err: &HttpError) {
    let body = format!("{}\n", err.message());
    let header = err.header();
    write_response(
        out,
        err.status(),
        header.as_slice(),
        "text/plain; charset=utf-8",
        body.as_bytes(),
        false,
        false,
    );
}

/// Writes `503 Service Unavailable` with `Retry-After: retry_after_secs` (RFC 9110
/// §10.2.3), `Connection: close` and a one-line body: admission control when the server
/// is at `--max-connections`.
pub fn write_service_unavailable(out: &mut Vec<u8>, retry_after_secs: u32) {
    let secs = retry_after_secs.to_string();
    write_response(
        out,
        Status::ServiceUnavailable,
        &[("Retry-After", &secs)],
        "text/plain; charset=utf-8",
        b"server at its connection limit, retry later\n",
        false,
        false,
    );
}

/// Does the request's `Origin` pass the allowlist? An empty list allows any; a request
/// without `Origin` is allowed, because only browsers send it and the allowlist exists
/// to stop other sites' pages (cross-site WebSocket hijacking, RFC 6455 §10.2). Compared
/// ignoring ASCII case (scheme and host are case-insensitive, RFC 6454 §4).
pub fn origin_allowed(head: &RequestHead, allowed: &[String]) -> bool {
    match &head.origin {
        None => true,
        Some(o) => allowed.is_empty() || allowed.iter().any(|a| a.eq_ignore_ascii_case(o)),
    }
}

/// Does `Authorization: Bearer <token>` carry `token`? The scheme is case-insensitive
/// (RFC 9110 §11.1, RFC 6750 §2.1); the token is compared in time that depends only on
/// the lengths, never on where the bytes first differ, so the token cannot be guessed
/// byte by byte from response times. An empty presented token never matches.
pub fn bearer_matches(head: &RequestHead, token: &str) -> bool {
    let Some(auth) = head.authorization.as_deref() else {
        return false;
    };
    let Some((scheme, given)) = auth.split_once(' ') else {
        return false;
    };
    let given = trim_ows(given);
    if !scheme.eq_ignore_ascii_case("bearer") || given.is_empty() {
        return false;
    }
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
        // black_box: keep the optimiser from turning the loop into an early exit.
        diff |= usize::from(std::hint::black_box(x));
    }
    diff == 0
}

/// The bearer token of a request: `Authorization: Bearer T`, else the query's
/// `token=T` (browsers' `EventSource` and `WebSocket` cannot set headers). `None` when
/// there is neither; a malformed query counts as none.
///
/// # Warning
/// A token in the query string lands in access logs and proxies' logs: give such tokens
/// a short `exp`.
pub fn bearer_token(head: &RequestHead) -> Option<String> {
    if let Some((scheme, t)) = head
        .authorization
        .as_deref()
        .and_then(|a| a.split_once(' '))
    {
        let t = trim_ows(t);
        if scheme.eq_ignore_ascii_case("bearer") && !t.is_empty() {
            return Some(t.to_owned());
        }
    }
    parse_query(&head.query)
        .ok()?
        .into_iter()
        .find(|(k, v)| k == "token" && !v.is_empty())
        .map(|(_, v)| v)
}

/// Does the client want the connection kept open? HTTP/1.1 unless `Connection: close`;
/// HTTP/1.0 only with `Connection: keep-alive`; `close` wins over everything
/// (RFC 9112 §9.3).
pub fn keep_alive(head: &RequestHead) -> bool {
    let conn = head.connection.as_deref().unwrap_or("");
    if has_token(conn, "close") {
        return false;
    }
    head.minor_version >= 1 || has_token(conn, "keep-alive")
}

/// Is `token` an element of the comma-separated list (`#token`, RFC 9110 §5.6.1),
/// ignoring ASCII case and the whitespace around elements? Whole elements only:
/// `upgrade` is not in `upgrades`.
pub fn has_token(list: &str, token: &str) -> bool {
    list.split(',')
        .any(|t| trim_ows(t).eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(buf: &[u8]) -> Result<Parsed<RequestHead>, HttpError> {
        parse_request_head(buf, &Limits::default())
    }

    fn head(buf: &[u8]) -> RequestHead {
        match parse(buf) {
            Ok(Parsed::Complete { value, .. }) => value,
            other => panic!("{other:?}"),
        }
    }

    fn req(method: &str, target: &str) -> RequestHead {
        head(format!("{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
    }

    fn get(target: &str) -> RequestHead {
        req("GET", target)
    }

    fn post(target: &str) -> RequestHead {
        req("POST", target)
    }

    fn t(s: &str) -> Topic {
        Topic::new(s).unwrap()
    }

    /// A Firefox-style upgrade: `Connection` split over two lines, odd name case.
    const UPGRADE: &[u8] = b"GET /ws/chat?x=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: keep-alive\r\nconnection: Upgrade\r\nsec-websocket-KEY: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn parses_the_fields_we_use() {
        let h = head(UPGRADE);
        assert_eq!(
            (h.method, h.path.as_str(), h.query.as_str(), h.minor_version),
            (Method::Get, "/ws/chat", "x=1", 1)
        );
        assert_eq!(h.host.as_deref(), Some("server.example.com"));
        assert_eq!(h.upgrade.as_deref(), Some("websocket"));
        assert_eq!(
            h.connection.as_deref(),
            Some("keep-alive, Upgrade"),
            "repeated list fields join"
        );
        assert_eq!(
            h.sec_websocket_key.as_deref(),
            Some("dGhlIHNhbXBsZSBub25jZQ=="),
            "names are case-insensitive"
        );
        assert_eq!(h.origin.as_deref(), Some("http://example.com"));
        assert_eq!(h.sec_websocket_version.as_deref(), Some("13"));
        assert_eq!(
            (h.authorization, h.last_event_id, h.content_length),
            (None, None, None)
        );

        let h = head(
            b"POST /publish/a HTTP/1.0\r\nCONTENT-LENGTH:  42 \r\nAuthorization: \tBearer x\t\r\nLast-Event-ID: 0a-1\r\nTransfer-Encoding: gzip\r\ntransfer-encoding: chunked\r\nExpect: 100-continue\r\nX-Other: \xff\xfe\r\n\r\n",
        );
        assert_eq!((h.method, h.minor_version), (Method::Post, 0));
        assert_eq!(h.content_length, Some(42), "OWS trimmed");
        assert_eq!(h.authorization.as_deref(), Some("Bearer x"));
        assert_eq!(h.last_event_id.as_deref(), Some("0a-1"));
        assert_eq!(h.transfer_encoding.as_deref(), Some("gzip, chunked"));
        assert_eq!(h.expect.as_deref(), Some("100-continue"));
        assert_eq!(get("/").query, "", "no query");
        assert_eq!(get("/a?").query, "");
        assert_eq!(get("/a?b?c").query, "b?c", "split on the first ?");
        assert_eq!(req("HEAD", "/").method, Method::Head);
        assert_eq!(req("DELETE", "/").method, Method::Other);
        assert_eq!(
            req("get", "/").method,
            Method::Other,
            "methods are case-sensitive"
        );
        assert_eq!(
            head(b"GET / HTTP/1.1\r\nHost: h\r\nOrigin: a\xc2\xa0\r\n\r\n")
                .origin
                .as_deref(),
            Some("a\u{a0}"),
            "only SP and HTAB are trimmed"
        );
    }

    /// Chunking: fed one byte at a time (as a connection accumulates them) and at split
    /// points, every call before the last byte is Partial, and the last gives exactly the
    /// one-shot result. Bytes after the head are not consumed.
    #[test]
    fn chunking_and_consumed() {
        let one_shot = parse(UPGRADE).unwrap();
        assert!(
            matches!(&one_shot, Parsed::Complete { consumed, .. } if *consumed == UPGRADE.len())
        );

        let mut acc = Vec::new();
        for (i, &b) in UPGRADE.iter().enumerate() {
            acc.push(b);
            let r = parse(&acc).unwrap();
            if i + 1 < UPGRADE.len() {
                assert_eq!(r, Parsed::Partial, "after {} bytes", i + 1);
            } else {
                assert_eq!(r, one_shot);
            }
        }

        let n = UPGRADE.len();
        for cuts in [
            vec![1],
            vec![n / 2],
            vec![n - 1],
            vec![n - 2],
            vec![3, 40, n - 3],
            vec![16, 17, 100, 101],
        ] {
            let mut acc = Vec::new();
            let mut from = 0;
            for cut in cuts.iter().copied().chain([n]) {
                acc.extend_from_slice(&UPGRADE[from..cut]);
                from = cut;
                let r = parse(&acc).unwrap();
                if cut < n {
                    assert_eq!(r, Parsed::Partial, "cuts {cuts:?} at {cut}");
                } else {
                    assert_eq!(r, one_shot, "cuts {cuts:?}");
                }
            }
        }

        let mut more = UPGRADE.to_vec();
        more.extend_from_slice(b"\x81\x85extra GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(parse(&more).unwrap(), one_shot, "consumed = the head only");
        let first: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n";
        let pipelined = [first, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"].concat();
        assert!(matches!(
            parse(&pipelined),
            Ok(Parsed::Complete { consumed, .. }) if consumed == first.len()
        ));
    }

    #[test]
    fn host_is_required_in_http_1_1() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nX: y\r\n\r\n"),
            Err(HttpError::Malformed)
        );
        assert!(matches!(
            parse(b"GET / HTTP/1.0\r\n\r\n"),
            Ok(Parsed::Complete { .. })
        ));
    }

    #[test]
    fn limits() {
        let limits = Limits::default();
        let pad = |n: usize| {
            let base = "GET / HTTP/1.1\r\nHost: h\r\nX: \r\n\r\n".len();
            format!(
                "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
                "a".repeat(n - base)
            )
            .into_bytes()
        };
        let exact = pad(limits.max_head_bytes);
        assert_eq!(exact.len(), limits.max_head_bytes);
        assert!(matches!(
            parse_request_head(&exact, &limits),
            Ok(Parsed::Complete { consumed, .. }) if consumed == limits.max_head_bytes
        ));
        assert_eq!(
            parse_request_head(&pad(limits.max_head_bytes + 1), &limits),
            Err(HttpError::HeadTooLarge)
        );
        // Incomplete and already at the limit: no point waiting for more.
        assert_eq!(
            parse_request_head(&exact[..limits.max_head_bytes - 1], &limits),
            Ok(Parsed::Partial)
        );
        assert_eq!(
            parse_request_head(&vec![b'G'; limits.max_head_bytes], &limits),
            Err(HttpError::HeadTooLarge)
        );
        let partial = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}",
            "a".repeat(limits.max_head_bytes)
        );
        assert_eq!(parse(partial.as_bytes()), Err(HttpError::HeadTooLarge));

        let many = |n: usize| {
            format!("GET / HTTP/1.1\r\nHost: h\r\n{}\r\n", "X: y\r\n".repeat(n)).into_bytes()
        };
        // 63 more fields after Host: 64 in all.
        assert!(matches!(parse(&many(63)), Ok(Parsed::Complete { .. })));
        assert_eq!(parse(&many(64)), Err(HttpError::TooManyHeaders));
        let few = Limits {
            max_headers: 2,
            ..Limits::default()
        };
        assert!(parse_request_head(&many(1), &few).is_ok());
        assert_eq!(
            parse_request_head(&many(2), &few),
            Err(HttpError::TooManyHeaders)
        );
        let huge = Limits {
            max_headers: 10_000,
            ..Limits::default()
        };
        assert_eq!(
            parse_request_head(&many(65), &huge),
            Err(HttpError::TooManyHeaders),
            "clamped to MAX_HEADERS, no panic"
        );
        assert_eq!(HttpError::TooManyHeaders.status().code(), 431);
        assert_eq!(HttpError::HeadTooLarge.status().code(), 431);
    }

    #[test]
    fn malformed() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            Err(HttpError::Malformed),
            "conflicting lengths: smuggling"
        );
        assert_eq!(
            head(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n")
                .content_length,
            Some(5),
            "equal repeats are fine"
        );
        assert_eq!(
            head(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n").content_length,
            Some(7)
        );
        assert_eq!(
            head(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\n")
                .content_length,
            Some(u64::MAX)
        );
        for bad in [
            "-1",
            "+5",
            "1 2",
            "5, 5",
            "",
            "0x10",
            "1e3",
            "18446744073709551616",
            "99999999999999999999",
            "\u{661}",
        ] {
            let req = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(parse(req.as_bytes()), Err(HttpError::Malformed), "{bad:?}");
        }
        for field in [
            "Host",
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Version",
            "Origin",
            "Authorization",
            "Last-Event-ID",
        ] {
            let req = format!("GET / HTTP/1.1\r\nHost: h\r\n{field}: a\r\n{field}: a\r\n\r\n");
            assert_eq!(parse(req.as_bytes()), Err(HttpError::Malformed), "{field}");
        }
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: h\r\nOrigin: \xff\r\n\r\n"),
            Err(HttpError::Malformed),
            "non-UTF-8 value of a field we use"
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\n"),
            Err(HttpError::Malformed),
            "RFC 9112 §5.1: whitespace before the colon"
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: a\r\n  websocket\r\n\r\n"),
            Err(HttpError::Malformed),
            "RFC 9112 §5.2: obs-fold"
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n"),
            Err(HttpError::Malformed)
        );
        assert_eq!(
            parse(b"\x00\x01\x02 / HTTP/1.1\r\nHost: h\r\n\r\n"),
            Err(HttpError::Malformed)
        );
        assert_eq!(
            parse(b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n"),
            Err(HttpError::Malformed)
        );
        assert_eq!(HttpError::Malformed.status().code(), 400);
    }

    /// RFC 9112 §2.3, RFC 9110 §6.2 and §15.6.6: another major version is 505 once its
    /// head is complete and valid; a higher minor version is HTTP/1.1; a version that is
    /// not `HTTP/DIGIT.DIGIT` is 400.
    #[test]
    fn other_versions() {
        for v in ["2.0", "3.0", "0.9", "9.9"] {
            let req = format!("GET /healthz HTTP/{v}\r\nHost: h\r\n\r\n");
            assert_eq!(
                parse(req.as_bytes()),
                Err(HttpError::VersionNotSupported),
                "{v}"
            );
        }
        assert_eq!(
            parse(b"GET / HTTP/2.0\r\n\r\n"),
            Err(HttpError::VersionNotSupported),
            "the HTTP/1.1 Host rule is not HTTP/2's"
        );
        assert_eq!(
            parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Err(HttpError::VersionNotSupported),
            "the HTTP/2 connection preface (RFC 9113 §3.4)"
        );
        assert_eq!(
            parse(b"\r\nGET / HTTP/3.0\r\n\r\n"),
            Err(HttpError::VersionNotSupported),
            "after an empty line (RFC 9112 §2.2)"
        );
        assert_eq!(HttpError::VersionNotSupported.status().code(), 505);

        // The whole head is waited for, byte by byte, and still checked.
        let req = b"GET /healthz HTTP/2.0\r\nHost: h\r\n\r\n";
        for cut in 0..req.len() {
            assert_eq!(parse(&req[..cut]), Ok(Parsed::Partial), "cut {cut}");
        }
        assert_eq!(
            parse(b"GET ftp://x/ HTTP/2.0\r\nHost: a\r\nHost: b\r\n\r\n"),
            Err(HttpError::VersionNotSupported),
            "HTTP/1.1's field and target rules are not HTTP/2's"
        );
        for bad in [
            &b"GET / HTTP/2.0\r\nX : y\r\n\r\n"[..],
            b"GET / HTTP/2.0x\r\n\r\n",
            b"GET / HTTP/2.0\r\nX: \x01\r\n\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Err(HttpError::Malformed),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let limits = Limits {
            max_head_bytes: 64,
            ..Limits::default()
        };
        let too_large = Err(HttpError::HeadTooLarge);
        for (n, whole, short) in [
            (40, Err(HttpError::VersionNotSupported), Ok(Parsed::Partial)),
            (50, too_large.clone(), too_large.clone()),
            (60, too_large.clone(), too_large.clone()),
        ] {
            let long = format!("GET /{} HTTP/2.0\r\n\r\n", "a".repeat(n));
            let long = long.as_bytes();
            assert_eq!(parse_request_head(long, &limits), whole, "{n}");
            let short_by_one = &long[..long.len() - 1];
            assert_eq!(parse_request_head(short_by_one, &limits), short, "{n}");
        }
        let many = format!("GET / HTTP/2.0\r\n{}\r\n", "X: y\r\n".repeat(65));
        assert_eq!(parse(many.as_bytes()), Err(HttpError::TooManyHeaders));

        for bad in [
            "HTTP/2",
            "HTTP/20",
            "HTTP/2.00",
            "HTTP/a.0",
            "HTTP/1.x",
            "HTTP/11.1",
            "http/1.1",
            "HTTPS/1.1",
            "HTTP/1.1 ",
            "HTTP/ 1.1",
        ] {
            let req = format!("GET / {bad}\r\nHost: h\r\n\r\n");
            assert_eq!(parse(req.as_bytes()), Err(HttpError::Malformed), "{bad}");
        }
        for partial in [
            "GET / HTTP/2",
            "GET / HTTP/2.",
            "GET / HTTP/1.2",
            "GET / HTTP/2.0\r\n",
        ] {
            assert_eq!(
                parse(partial.as_bytes()),
                Ok(Parsed::Partial),
                "{partial:?}"
            );
        }

        // A higher minor version is served as HTTP/1.1, Host rule included.
        let req = b"GET /healthz?a HTTP/1.2\r\nHost: h\r\n\r\nGET";
        let h = head(req);
        assert_eq!(
            (h.path.as_str(), h.query.as_str(), h.minor_version),
            ("/healthz", "a", 1)
        );
        assert!(matches!(
            parse(req),
            Ok(Parsed::Complete { consumed, .. }) if consumed == req.len() - 3
        ));
        assert!(keep_alive(&h));
        assert_eq!(route(&h), Ok(Route::Healthz));
        assert_eq!(parse(b"GET / HTTP/1.9\r\n\r\n"), Err(HttpError::Malformed));
        assert_eq!(head(b"GET / HTTP/1.0\r\n\r\n").minor_version, 0);
        assert_eq!(head(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").minor_version, 1);
    }

    /// RFC 9112 §3.2: origin-form, absolute-form (routed by its path, its authority
    /// taking the place of Host), asterisk-form for OPTIONS only; nothing else.
    #[test]
    fn request_target_forms() {
        let h = head(b"GET http://example.com:8080/healthz?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!((h.path.as_str(), h.query.as_str()), ("/healthz", "x=1"));
        assert_eq!(
            h.host.as_deref(),
            Some("example.com:8080"),
            "RFC 9112 §3.2.2: the target's authority, not Host"
        );
        assert_eq!(route(&h), Ok(Route::Healthz));
        for (target, path, query) in [
            ("HTTPS://h/sse/a?lastEventId=z", "/sse/a", "lastEventId=z"),
            ("http://h", "/", ""),
            ("http://h?q", "/", "q"),
            ("http://[::1]:80/", "/", ""),
            ("http://127.0.0.1/ws/a/b", "/ws/a/b", ""),
            ("http://h//x", "//x", ""),
            ("/a?b", "/a", "b"),
        ] {
            let h = get(target);
            assert_eq!(
                (h.path.as_str(), h.query.as_str()),
                (path, query),
                "{target}"
            );
        }
        assert_eq!(
            route(&get("http://h/poll/t?since=x")),
            Ok(Route::Poll {
                topic: t("t"),
                since: Some("x".into()),
                wait: None
            })
        );
        assert_eq!(get("http://h").host.as_deref(), Some("h"));
        assert_eq!(
            get("/x").host.as_deref(),
            Some("x"),
            "origin-form: the Host header"
        );
        assert_eq!(
            parse(b"GET http://h/healthz HTTP/1.1\r\n\r\n"),
            Err(HttpError::Malformed),
            "RFC 9112 §3.2: Host is still required in HTTP/1.1"
        );
        assert_eq!(
            head(b"GET http://h/healthz HTTP/1.0\r\n\r\n")
                .host
                .as_deref(),
            Some("h")
        );
        assert_eq!(
            parse(b"GET http://h/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Err(HttpError::Malformed),
            "a repeated Host is still refused"
        );
        for bad in [
            "ftp://x/",
            "ws://x/ws/a",
            "file:///etc/passwd",
            "http:///healthz",
            "http://?x",
            "http://user@h/healthz",
            "http://u:p@h/",
            "http:/healthz",
            "http:healthz",
            "mailto:a@b",
            "h:443",
            "healthz",
            "*",
        ] {
            let req = format!("GET {bad} HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(parse(req.as_bytes()), Err(HttpError::Malformed), "{bad}");
        }
        assert_eq!(
            parse(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"),
            Err(HttpError::Malformed),
            "authority-form: no proxying here"
        );
        let star = req("OPTIONS", "*");
        assert_eq!((star.method, star.path.as_str()), (Method::Other, "*"));
        assert_eq!(
            route(&star),
            Err(HttpError::NotFound),
            "OPTIONS *: no server-wide options"
        );
    }

    #[test]
    fn routes() {
        assert_eq!(route(&get("/")), Ok(Route::Index));
        assert_eq!(route(&req("HEAD", "/")), Ok(Route::Index));
        assert_eq!(route(&get("/healthz")), Ok(Route::Healthz));
        assert_eq!(route(&req("HEAD", "/healthz?x")), Ok(Route::Healthz));
        assert_eq!(route(&get("/metrics")), Ok(Route::Metrics));
        assert_eq!(route(&get("/echo")), Ok(Route::Echo));
        assert_eq!(
            route(&get("/ws/a.b_c-d:e")),
            Ok(Route::Ws {
                topic: t("a.b_c-d:e")
            })
        );
        assert_eq!(
            route(&get("/ws/user%3AB")),
            Ok(Route::Ws { topic: t("user:B") }),
            "percent-decoded"
        );
        assert_eq!(
            route(&get("/sse/news")),
            Ok(Route::Sse {
                topics: vec![t("news")],
                last_event_id: None
            })
        );
        assert_eq!(
            route(&get(
                "/sse?topic=a&topic=b&topic=a&x=y&lastEventId=0a0b0c0d-1.2"
            )),
            Ok(Route::Sse {
                topics: vec![t("a"), t("b")],
                last_event_id: Some("0a0b0c0d-1.2".into())
            }),
            "duplicates removed in first order, unknown keys ignored"
        );
        assert_eq!(
            route(&get("/sse?topic=user%3Ab&topic=c")),
            Ok(Route::Sse {
                topics: vec![t("user:b"), t("c")],
                last_event_id: None
            })
        );
        assert_eq!(route(&get("/sse?topic=a%2Fb")), Err(HttpError::BadTopic));
        assert_eq!(route(&get("/sse")), Err(HttpError::BadQuery), "no topic");
        assert_eq!(route(&get("/sse?topic=a&x=%zz")), Err(HttpError::BadQuery));
        let cap: String = (0..32).map(|i| format!("topic=t{i}&topic=t0&")).collect();
        assert!(
            matches!(route(&get(&format!("/sse?{cap}"))), Ok(Route::Sse { topics, .. }) if topics.len() == 32)
        );
        let too_many: String = (0..33).map(|i| format!("topic=t{i}&")).collect();
        assert_eq!(
            route(&get(&format!("/sse?{too_many}"))),
            Err(HttpError::BadQuery)
        );
        assert_eq!(
            route(&get("/poll/news?since=0a0b0c0d-4&wait=2s")),
            Ok(Route::Poll {
                topic: t("news"),
                since: Some("0a0b0c0d-4".into()),
                wait: Some(Duration::from_secs(2))
            })
        );
        for q in ["wait=0", "wait=0ms", "", "since=", "other=1"] {
            assert_eq!(
                route(&get(&format!("/poll/news?{q}"))),
                Ok(Route::Poll {
                    topic: t("news"),
                    since: None,
                    wait: None
                }),
                "{q}"
            );
        }
        assert_eq!(
            route(&get("/poll/news?wait=5m")),
            Ok(Route::Poll {
                topic: t("news"),
                since: None,
                wait: Some(MAX_POLL_WAIT)
            }),
            "5 minutes is the cap, inclusive"
        );
        for q in [
            "wait=300001ms",
            "wait=10m",
            "wait=soon",
            "wait=",
            "wait=1.5s",
        ] {
            assert_eq!(
                route(&get(&format!("/poll/news?{q}"))),
                Err(HttpError::BadQuery),
                "{q}"
            );
        }
        assert_eq!(
            route(&post("/publish/news?event=up+date")),
            Ok(Route::Publish {
                topic: t("news"),
                event: Some("up date".into())
            })
        );
        assert_eq!(
            route(&post("/publish/news")),
            Ok(Route::Publish {
                topic: t("news"),
                event: None
            })
        );
        assert_eq!(
            route(&post(&format!("/publish/news?event={}", "e".repeat(64)))),
            Ok(Route::Publish {
                topic: t("news"),
                event: Some("e".repeat(64))
            })
        );
        for bad in ["a%0Ab", "a%0Db", "a%00b", "", &"e".repeat(65)] {
            assert_eq!(
                route(&post(&format!("/publish/news?event={bad}"))),
                Err(HttpError::BadEventName),
                "{bad:?}"
            );
        }
        assert_eq!(HttpError::BadEventName.status().code(), 400);
    }

    #[test]
    fn last_event_id_sources() {
        let mut h = get("/sse/x?lastEventId=q");
        h.last_event_id = Some("hdr".into());
        assert_eq!(
            route(&h),
            Ok(Route::Sse {
                topics: vec![t("x")],
                last_event_id: Some("hdr".into())
            }),
            "header wins"
        );
        let long = "i".repeat(MAX_EVENT_ID_LEN + 1);
        h.last_event_id = Some("i".repeat(5000));
        assert_eq!(
            route(&h),
            Ok(Route::Sse {
                topics: vec![t("x")],
                last_event_id: Some(long.clone())
            }),
            "too long: kept, cut just past the limit, so it is an unknown id"
        );
        let ok = "i".repeat(MAX_EVENT_ID_LEN);
        for (target, want) in [
            (format!("/sse/x?lastEventId={ok}"), Some(ok.clone())),
            (format!("/sse/x?lastEventId={long}i"), Some(long.clone())),
            ("/sse/x?lastEventId=".to_string(), None),
        ] {
            assert_eq!(
                route(&get(&target)),
                Ok(Route::Sse {
                    topics: vec![t("x")],
                    last_event_id: want
                })
            );
        }
        for (since, want) in [
            (format!("{long}iii"), Some(long.clone())),
            (ok.clone(), Some(ok.clone())),
            (String::new(), None),
        ] {
            assert_eq!(
                route(&get(&format!("/poll/x?since={since}"))),
                Ok(Route::Poll {
                    topic: t("x"),
                    since: want,
                    wait: None
                })
            );
        }
    }

    /// An over-long id is cut on a char boundary, stays over the limit, and is never
    /// a position `Cursor::parse` accepts (so the shard answers it with a reset).
    #[test]
    fn over_long_ids_stay_unknown() {
        use crate::proto::sse::Cursor;
        // A valid cursor padded with more topics than a stream can have, past the limit.
        let seqs = vec!["0"; MAX_EVENT_ID_LEN];
        let padded = format!("0a0b0c0d-{}", seqs.join("."));
        for id in [
            padded,
            "é".repeat(MAX_EVENT_ID_LEN),
            format!("{}€", "i".repeat(MAX_EVENT_ID_LEN)),
            format!("{}😀x", "i".repeat(MAX_EVENT_ID_LEN - 1)),
        ] {
            let cut = event_id(id.clone()).expect("kept");
            assert!(id.starts_with(&cut), "a prefix");
            assert!(
                (MAX_EVENT_ID_LEN + 1..=MAX_EVENT_ID_LEN + 4).contains(&cut.len()),
                "{}",
                cut.len()
            );
            assert_eq!(Cursor::parse(&cut), None);
        }
        assert_eq!(event_id(String::new()), None);
        assert_eq!(event_id("0a0b0c0d-1".into()).as_deref(), Some("0a0b0c0d-1"));
    }

    #[test]
    fn methods_and_unknown_paths() {
        let gh = HttpError::MethodNotAllowed { allow: "GET, HEAD" };
        let g = HttpError::MethodNotAllowed { allow: "GET" };
        let p = HttpError::MethodNotAllowed { allow: "POST" };
        for (method, target, want) in [
            ("POST", "/", gh),
            ("POST", "/healthz", gh),
            ("DELETE", "/metrics", gh),
            ("POST", "/echo", g),
            ("HEAD", "/echo", g),
            ("POST", "/ws/a", g),
            ("PUT", "/ws/bad%20topic", g),
            ("HEAD", "/sse/a", g),
            ("POST", "/sse?topic=a", g),
            ("HEAD", "/poll/a", g),
            ("GET", "/publish/news", p),
            ("HEAD", "/publish/news", p),
        ] {
            assert_eq!(route(&req(method, target)), Err(want), "{method} {target}");
        }
        let mut out = Vec::new();
        write_error(&mut out, &gh);
        assert!(out.windows(17).any(|w| w == b"Allow: GET, HEAD\r"));
        for target in [
            "/nope",
            "/healthz/",
            "/metrics/",
            "/echo/",
            "/ws",
            "/ws/a/",
            "/ws/a/b",
            "/sse/a/b",
            "/publish/a/",
            "/poll/a/b",
            "//",
            "/HEALTHZ",
        ] {
            assert_eq!(route(&get(target)), Err(HttpError::NotFound), "{target}");
        }
        assert_eq!(route(&req("DELETE", "/nope")), Err(HttpError::NotFound));
        assert_eq!(HttpError::NotFound.status().code(), 404);
        assert_eq!(route(&get("/ws/")), Err(HttpError::BadTopic));
        assert_eq!(route(&get("/sse/")), Err(HttpError::BadTopic));
        assert_eq!(route(&get("/ws/a%20b")), Err(HttpError::BadTopic));
        assert_eq!(route(&get("/ws/a%2Fb")), Err(HttpError::BadTopic));
        assert_eq!(route(&get("/ws/a%zz")), Err(HttpError::BadTopic));
        assert_eq!(
            route(&get("/ws/a+b")),
            Err(HttpError::BadTopic),
            "+ is not a space in a path"
        );
    }

    #[test]
    fn topic_names() {
        assert!(Topic::new(&"a".repeat(MAX_TOPIC_LEN)).is_ok());
        assert_eq!(Topic::new(&"a".repeat(129)), Err(HttpError::BadTopic));
        assert_eq!(Topic::new(""), Err(HttpError::BadTopic));
        for ok in [
            "A", "z", "0", "9", ".", "_", "-", ":", "user:42", "a.b-c_d", "..",
        ] {
            assert!(Topic::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a/b",
            "a b",
            "é",
            "a\u{ff1a}b",
            "a?",
            "a#",
            "a%",
            "a+",
            "a\0",
            "a\n",
            "a=b",
            "a&b",
            "~",
        ] {
            assert_eq!(Topic::new(bad), Err(HttpError::BadTopic), "{bad}");
        }
        assert_eq!(
            Topic::new(&percent_decode("user%3A42%2eb").unwrap()),
            Ok(t("user:42.b")),
            "a percent-encoded legal topic"
        );
        assert_eq!(t("chat").to_string(), "chat");
        assert_eq!(t("chat").as_str(), "chat");
        assert!(t("a") < t("b"));
        assert!(
            HttpError::BadTopic
                .message()
                .contains(&MAX_TOPIC_LEN.to_string())
        );
        assert!(
            HttpError::BadEventName
                .message()
                .contains(&MAX_EVENT_NAME_LEN.to_string())
        );
        assert_eq!(HttpError::BadTopic.status().code(), 400);
    }

    #[test]
    fn queries() {
        assert_eq!(
            parse_query("topic=a&topic=b%2Fc&x=a+b&p=%2B&flag&&=v&e=a=b").unwrap(),
            [
                ("topic".to_string(), "a".to_string()),
                ("topic".into(), "b/c".into()),
                ("x".into(), "a b".into()),
                ("p".into(), "+".into()),
                ("flag".into(), "".into()),
                ("".into(), "v".into()),
                ("e".into(), "a=b".into()),
            ]
        );
        assert_eq!(parse_query("").unwrap(), []);
        assert_eq!(
            parse_query("a%20b=%e2%82%AC").unwrap(),
            [("a b".to_string(), "€".to_string())]
        );
        for bad in ["a=%zz", "a=%4", "a=%", "a=%%41", "%zz=1", "a=%ff", "a=%c3"] {
            assert_eq!(parse_query(bad), Err(HttpError::BadQuery), "{bad}");
        }
        assert_eq!(percent_decode("%C3%A9").unwrap(), "é");
        assert_eq!(percent_decode("a+b").unwrap(), "a+b");
        assert_eq!(percent_decode("%41%4a%4A").unwrap(), "AJJ");
        assert_eq!(percent_decode("é%41").unwrap(), "éA");
        assert_eq!(percent_decode("%é"), Err(HttpError::BadQuery));
        assert_eq!(HttpError::BadQuery.status().code(), 400);
    }

    #[test]
    fn durations() {
        for (s, d) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("10", Duration::from_secs(10)),
            ("0", Duration::ZERO),
            ("007s", Duration::from_secs(7)),
            ("18446744073709551615ms", Duration::from_millis(u64::MAX)),
            ("18446744073709551615", Duration::from_secs(u64::MAX)),
            (
                "307445734561825860m",
                Duration::from_secs(307_445_734_561_825_860 * 60),
            ),
        ] {
            assert_eq!(parse_duration(s), Some(d), "{s}");
        }
        for bad in [
            "",
            "s",
            "ms",
            "1.5s",
            "-1s",
            "+1s",
            "10x",
            "10sec",
            "1ms2",
            "99999999999999999999s",
            "18446744073709551616",
            "307445734561825861m",
            "5124095576030432h",
            " 1s",
            "1 s",
            "1s ",
            "1S",
            "1\u{661}s",
            "1é",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            Status::Ok,
            &[("X-A", "b")],
            "text/plain",
            b"ok\n",
            true,
            false,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nX-A: b\r\n\r\nok\n"
        );
        out.clear();
        write_response(
            &mut out,
            Status::Ok,
            &[],
            "text/plain",
            b"ok\n",
            false,
            true,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
            "HEAD: length kept, body omitted"
        );
        out.clear();
        write_error(&mut out, &HttpError::MethodNotAllowed { allow: "POST" });
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\nConnection: close\r\nAllow: POST\r\n\r\nmethod not allowed\n"
        );
        out.clear();
        write_error(&mut out, &HttpError::NotFound);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n"
        );
        out.clear();
        write_error(&mut out, &HttpError::Unauthorized);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 44\r\nConnection: close\r\nWWW-Authenticate: Bearer realm=\"ringpush\"\r\n\r\npublish needs Authorization: Bearer <token>\n",
            "RFC 9110 §11.6.1: a 401 carries a challenge"
        );
        out.clear();
        write_service_unavailable(&mut out, 5);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 44\r\nConnection: close\r\nRetry-After: 5\r\n\r\nserver at its connection limit, retry later\n"
        );
        out.clear();
        write_head(
            &mut out,
            Status::Ok,
            &[("Content-Type", "text/event-stream")],
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
        );
        out.clear();
        write_head(&mut out, Status::SwitchingProtocols, &[]);
        assert_eq!(out, b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
    }

    #[test]
    fn every_error_and_status() {
        let all = [
            (HttpError::Malformed, 400),
            (HttpError::HeadTooLarge, 431),
            (HttpError::TooManyHeaders, 431),
            (HttpError::BadTopic, 400),
            (HttpError::BadQuery, 400),
            (HttpError::BadEventName, 400),
            (HttpError::NotFound, 404),
            (HttpError::MethodNotAllowed { allow: "GET" }, 405),
            (HttpError::LengthRequired, 411),
            (HttpError::PayloadTooLarge, 413),
            (HttpError::Unauthorized, 401),
            (HttpError::ForbiddenOrigin, 403),
            (HttpError::VersionNotSupported, 505),
        ];
        let mut out = Vec::new();
        for (e, code) in all {
            assert_eq!(e.status().code(), code, "{e:?}");
            assert_eq!(e.to_string(), e.message());
            assert!(!e.message().contains('\n'), "one line");
            out.clear();
            write_error(&mut out, &e);
            let s = String::from_utf8(out.clone()).unwrap();
            let reason = e.status().reason();
            assert!(
                s.starts_with(&format!("HTTP/1.1 {code} {reason}\r\n")),
                "{s}"
            );
            assert!(s.contains("\r\nConnection: close\r\n"), "{s}");
            assert!(s.ends_with(&format!("\r\n\r\n{}\n", e.message())), "{s}");
            assert_eq!(s.contains("\r\nAllow: "), code == 405, "{s}");
            assert_eq!(
                s.contains("\r\nWWW-Authenticate: Bearer"),
                code == 401,
                "{s}"
            );
        }
        let statuses = [
            (Status::SwitchingProtocols, 101, "Switching Protocols"),
            (Status::Ok, 200, "OK"),
            (Status::BadRequest, 400, "Bad Request"),
            (Status::Unauthorized, 401, "Unauthorized"),
            (Status::Forbidden, 403, "Forbidden"),
            (Status::NotFound, 404, "Not Found"),
            (Status::MethodNotAllowed, 405, "Method Not Allowed"),
            (Status::LengthRequired, 411, "Length Required"),
            (Status::PayloadTooLarge, 413, "Content Too Large"),
            (Status::UpgradeRequired, 426, "Upgrade Required"),
            (
                Status::RequestHeaderFieldsTooLarge,
                431,
                "Request Header Fields Too Large",
            ),
            (Status::InternalServerError, 500, "Internal Server Error"),
            (Status::ServiceUnavailable, 503, "Service Unavailable"),
            (
                Status::HttpVersionNotSupported,
                505,
                "HTTP Version Not Supported",
            ),
        ];
        for (s, code, reason) in statuses {
            assert_eq!((s.code(), s.reason()), (code, reason));
        }
    }

    #[test]
    fn origins() {
        let mut h = get("/");
        let allowed = vec!["https://app.example".to_string()];
        assert!(origin_allowed(&h, &allowed), "no Origin: not a browser");
        assert!(origin_allowed(&h, &[]));
        h.origin = Some("https://APP.example".into());
        assert!(origin_allowed(&h, &allowed), "ASCII case ignored");
        assert!(origin_allowed(&h, &[]), "empty list: any");
        for bad in [
            "https://evil.example",
            "https://app.example.evil",
            "http://app.example",
            "https://app.example:8443",
            "null",
            "",
        ] {
            h.origin = Some(bad.into());
            assert!(!origin_allowed(&h, &allowed), "{bad}");
        }
    }

    #[test]
    fn bearer() {
        let mut h = get("/");
        assert!(!bearer_matches(&h, "t0k"), "no header");
        for (auth, ok) in [
            ("Bearer t0k", true),
            ("bearer t0k", true),
            ("BEARER t0k", true),
            ("Bearer  t0k", true),
            ("Bearer t0", false),
            ("Bearer t0kk", false),
            ("Bearer T0K", false),
            ("Bearer t0j", false),
            ("Bearer ", false),
            ("Bearer", false),
            ("Basic t0k", false),
            ("Bearert0k", false),
            ("t0k", false),
        ] {
            h.authorization = Some(auth.into());
            assert_eq!(bearer_matches(&h, "t0k"), ok, "{auth}");
        }
        h.authorization = Some("Bearer ".into());
        assert!(!bearer_matches(&h, ""), "an empty token never matches");
    }

    #[test]
    fn keep_alive_and_tokens() {
        let k = |req: &[u8]| keep_alive(&head(req));
        assert!(k(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(k(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"
        ));
        assert!(!k(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n"
        ));
        assert!(!k(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, close\r\n\r\n"
        ));
        assert!(!k(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(k(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!k(
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"
        ));
        assert!(has_token("keep-alive, Upgrade", "upgrade"));
        assert!(has_token("keep-alive,Upgrade", "UPGRADE"));
        assert!(has_token(" \tupgrade\t ", "upgrade"));
        assert!(!has_token("keep-alive, Upgrades", "upgrade"));
        assert!(!has_token("keep-alive Upgrade", "upgrade"));
        assert!(!has_token("", "upgrade"));
    }

    /// Request heads with the fields we use and hostile values, so the property reaches
    /// far past the request line (uniform random bytes rarely do).
    fn structured_head() -> impl Strategy<Value = Vec<u8>> {
        let name = prop::sample::select(vec![
            "Host",
            "upgrade",
            "Connection",
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Version",
            "Origin",
            "Authorization",
            "Last-Event-ID",
            "Content-Length",
            "Transfer-Encoding",
            "Expect",
            "X-Other",
        ]);
        // Half printable (so most heads complete), half raw bytes (CR, LF, NUL, obs-text).
        let value = prop_oneof![
            "[ -~]{0,24}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..24),
        ];
        let target = "/[a-z/%?=&+.:0-9A-F]{0,40}";
        let method = prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "G T"]);
        (
            method,
            target,
            0u8..3,
            prop::collection::vec((name, value), 0..12),
        )
            .prop_map(|(method, target, minor, fields)| {
                let mut b = format!("{method} {target} HTTP/1.{minor}\r\n").into_bytes();
                for (n, v) in fields {
                    b.extend_from_slice(n.as_bytes());
                    b.extend_from_slice(b": ");
                    b.extend_from_slice(&v);
                    b.extend_from_slice(b"\r\n");
                }
                b.extend_from_slice(b"\r\n");
                b
            })
    }

    /// The fuzz oracle, in miniature: no panic; a complete head parses the same from
    /// exactly its own bytes and is Partial on every proper prefix.
    fn check_head(buf: &[u8]) -> Result<(), TestCaseError> {
        let limits = Limits {
            max_head_bytes: 256,
            ..Limits::default()
        };
        if let Ok(Parsed::Complete { value, consumed }) = parse_request_head(buf, &limits) {
            prop_assert!(consumed <= limits.max_head_bytes);
            prop_assert_eq!(
                parse_request_head(&buf[..consumed], &limits),
                Ok(Parsed::Complete {
                    value: value.clone(),
                    consumed
                })
            );
            for cut in 0..consumed {
                prop_assert_eq!(
                    parse_request_head(&buf[..cut], &limits),
                    Ok(Parsed::Partial)
                );
            }
            let _ = route(&value);
            let _ = keep_alive(&value);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(buf in prop::collection::vec(any::<u8>(), 0..600)) {
            check_head(&buf)?;
        }

        #[test]
        fn never_panics_on_heads(buf in structured_head()) {
            check_head(&buf)?;
        }

        #[test]
        fn query_and_duration_never_panic(s in "\\PC{0,40}") {
            let _ = parse_query(&s);
            let _ = percent_decode(&s);
            let _ = parse_duration(&s);
        }

        #[test]
        fn valid_topics_accepted(name in "[A-Za-z0-9._:-]{1,128}") {
            prop_assert_eq!(Topic::new(&name).map(|t| t.as_str().to_owned()), Ok(name));
        }

        #[test]
        fn durations_round_trip(n in 0u64..=u64::MAX / 3600, unit in 0usize..4) {
            let (suffix, d) = [
                ("ms", Duration::from_millis(n)),
                ("s", Duration::from_secs(n)),
                ("m", Duration::from_secs(n * 60)),
                ("h", Duration::from_secs(n * 3600)),
            ][unit];
            prop_assert_eq!(parse_duration(&format!("{n}{suffix}")), Some(d));
        }
    }
}
