//! Parsing a request head with httparse (RFC 9112 §2-§5), and the questions the server
//! asks of a parsed head: keep-alive, list tokens, `Origin`, the bearer token.

use super::{HttpError, parse_query};
use crate::proto::Parsed;
use crate::proto::limits::{Limits, MAX_HEADERS};

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
    /// `Sec-WebSocket-Extensions` (may repeat, RFC 6455 §11.3.2); repeated field lines
    /// joined, in order, so the first offer stays first.
    pub sec_websocket_extensions: Option<String>,
    /// `Origin` (must not repeat).
    pub origin: Option<String>,
    /// `Authorization` (must not repeat).
    pub authorization: Option<String>,
    /// `Last-Event-ID` (must not repeat).
    pub last_event_id: Option<String>,
    /// `Idempotency-Key` (must not repeat): a publish's retry key.
    pub idempotency_key: Option<String>,
    /// `Content-Length`, validated; repeats must agree (RFC 9112 §6.3).
    pub content_length: Option<u64>,
    /// `Transfer-Encoding`; repeated field lines joined. The server takes no chunked
    /// bodies, so its mere presence is refused by the caller.
    pub transfer_encoding: Option<String>,
    /// `Expect` (for `100-continue`, RFC 9110 §10.1.1); repeated field lines joined.
    pub expect: Option<String>,
    /// `X-Forwarded-For`, which proxies append to; repeated field lines joined, in
    /// order (HAProxy adds a line of its own, nginx extends the last one).
    pub x_forwarded_for: Option<String>,
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
            sec_websocket_extensions: None,
            origin: None,
            authorization: None,
            last_event_id: None,
            idempotency_key: None,
            content_length: None,
            transfer_encoding: None,
            expect: None,
            x_forwarded_for: None,
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
    SecWebSocketExtensions,
    Origin,
    Authorization,
    LastEventId,
    IdempotencyKey,
    ContentLength,
    TransferEncoding,
    Expect,
    XForwardedFor,
}

impl Field {
    /// Field names are case-insensitive (RFC 9110 §5.1).
    fn from_name(name: &str) -> Option<Field> {
        const NAMES: [(&str, Field); 14] = [
            ("host", Field::Host),
            ("upgrade", Field::Upgrade),
            ("connection", Field::Connection),
            ("sec-websocket-key", Field::SecWebSocketKey),
            ("sec-websocket-version", Field::SecWebSocketVersion),
            ("sec-websocket-extensions", Field::SecWebSocketExtensions),
            ("origin", Field::Origin),
            ("authorization", Field::Authorization),
            ("last-event-id", Field::LastEventId),
            ("idempotency-key", Field::IdempotencyKey),
            ("content-length", Field::ContentLength),
            ("transfer-encoding", Field::TransferEncoding),
            ("expect", Field::Expect),
            ("x-forwarded-for", Field::XForwardedFor),
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
            Field::Upgrade
                | Field::Connection
                | Field::TransferEncoding
                | Field::Expect
                | Field::XForwardedFor
                | Field::SecWebSocketExtensions
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
            Field::SecWebSocketExtensions => &mut head.sec_websocket_extensions,
            Field::Origin => &mut head.origin,
            Field::Authorization => &mut head.authorization,
            Field::LastEventId => &mut head.last_event_id,
            Field::IdempotencyKey => &mut head.idempotency_key,
            Field::TransferEncoding => &mut head.transfer_encoding,
            Field::Expect => &mut head.expect,
            Field::XForwardedFor => &mut head.x_forwarded_for,
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
    use crate::proto::http::testing::{get, head, parse, req, t};
    use crate::proto::http::{Route, route};

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
    }
}
