//! HTTP/1.1 request heads, routing and responses (RFC 9110, RFC 9112).
//!
//! The server reads exactly one kind of request per connection start: a WebSocket
//! upgrade, an event-stream request, or a small HTTP request (publish, poll, metrics,
//! health, the demo page). Heads are parsed with httparse into [`RequestHead`], which keeps
//! only the fields the server uses, so nothing borrows the receive buffer afterwards.

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
    /// `HEAD`: answered like `GET` without the body.
    Head,
    /// `POST`.
    Post,
    /// Anything else (answered 405 on known paths).
    Other,
}

/// A parsed request head: the request line and the header fields the server uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The raw path (before `?`), not decoded.
    pub path: String,
    /// The raw query (after `?`), possibly empty.
    pub query: String,
    /// The `x` of `HTTP/1.x`.
    pub minor_version: u8,
    /// `Host`.
    pub host: Option<String>,
    /// `Upgrade`; repeated fields are joined with `, ` (RFC 9110 §5.3).
    pub upgrade: Option<String>,
    /// `Connection`; repeated fields joined.
    pub connection: Option<String>,
    /// `Sec-WebSocket-Key` (must not repeat).
    pub sec_websocket_key: Option<String>,
    /// `Sec-WebSocket-Version` (must not repeat).
    pub sec_websocket_version: Option<String>,
    /// `Origin`.
    pub origin: Option<String>,
    /// `Authorization`.
    pub authorization: Option<String>,
    /// `Last-Event-ID`.
    pub last_event_id: Option<String>,
    /// `Content-Length`, validated; repeats must agree.
    pub content_length: Option<u64>,
    /// `Transfer-Encoding`.
    pub transfer_encoding: Option<String>,
    /// `Expect` (for `100-continue`).
    pub expect: Option<String>,
}

/// A request the server refuses. One variant per rule; [`HttpError::status`] maps each
/// to its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// Not a valid HTTP/1.x request head (RFC 9112 §2-§5), a bad `Content-Length`, a
    /// repeated field that must be unique, or a body where none is allowed. 400.
    Malformed,
    /// The head is larger than [`Limits::max_head_bytes`]. 431 (RFC 6585 §5).
    HeadTooLarge,
    /// More header fields than [`Limits::max_headers`]. 431.
    TooManyHeaders,
    /// A topic name outside 1-128 characters of `A-Z a-z 0-9 . _ - :`. 400.
    BadTopic,
    /// A query string that does not decode, or a bad parameter value. 400.
    BadQuery,
    /// An event name that is empty, too long or has a line break. 400.
    BadEventName,
    /// No such endpoint. 404.
    NotFound,
    /// The endpoint exists but not for this method. 405 with `Allow`.
    MethodNotAllowed {
        /// The methods the endpoint takes, for the `Allow` header.
        allow: &'static str,
    },
    /// A request body without `Content-Length` (chunked bodies are not accepted). 411.
    LengthRequired,
    /// A body over `--max-message-bytes`. 413.
    PayloadTooLarge,
    /// A publish without the right bearer token. 401.
    Unauthorized,
    /// An `Origin` outside `--allowed-origin`. 403.
    ForbiddenOrigin,
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
            HttpError::Unauthorized => Status::Unauthorized,
            HttpError::ForbiddenOrigin => Status::Forbidden,
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
            HttpError::BadEventName => "event names are 1 to 64 bytes without line breaks",
            HttpError::NotFound => "not found",
            HttpError::MethodNotAllowed { .. } => "method not allowed",
            HttpError::LengthRequired => "a request body needs Content-Length",
            HttpError::PayloadTooLarge => "body larger than --max-message-bytes",
            HttpError::Unauthorized => "publish needs Authorization: Bearer <token>",
            HttpError::ForbiddenOrigin => "origin not allowed",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for HttpError {}

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
        }
    }

    /// The reason phrase (RFC 9110 §15).
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
        }
    }
}

/// Parses a request head from the start of `buf`.
///
/// `Partial` consumes nothing. A head still incomplete after `max_head_bytes`, or a
/// complete one longer than that, is [`HttpError::HeadTooLarge`].
///
/// # Warning
/// The caller must bound how long it waits for a complete head (the handshake timeout):
/// the byte limit alone does not stop a client that sends one byte a minute.
pub fn parse_request_head(buf: &[u8], limits: &Limits) -> Result<Parsed<RequestHead>, HttpError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let headers = &mut storage[..limits.max_headers.min(MAX_HEADERS)];
    let mut req = httparse::Request::new(headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > limits.max_head_bytes => {
            return Err(HttpError::HeadTooLarge);
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head_bytes => {
            return Err(HttpError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(_) => return Err(HttpError::Malformed),
    };
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut head = RequestHead {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        minor_version: req.version.unwrap_or(1),
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
    };
    for h in req.headers.iter() {
        let name = h.name;
        let field = if name.eq_ignore_ascii_case("host") {
            &mut head.host
        } else if name.eq_ignore_ascii_case("upgrade") {
            &mut head.upgrade
        } else if name.eq_ignore_ascii_case("connection") {
            &mut head.connection
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            &mut head.sec_websocket_key
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            &mut head.sec_websocket_version
        } else if name.eq_ignore_ascii_case("origin") {
            &mut head.origin
        } else if name.eq_ignore_ascii_case("authorization") {
            &mut head.authorization
        } else if name.eq_ignore_ascii_case("last-event-id") {
            &mut head.last_event_id
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            &mut head.transfer_encoding
        } else if name.eq_ignore_ascii_case("expect") {
            &mut head.expect
        } else if name.eq_ignore_ascii_case("content-length") {
            // RFC 9112 §6.3: differing or invalid lengths are unrecoverable (smuggling).
            let value = std::str::from_utf8(h.value)
                .map_err(|_| HttpError::Malformed)?
                .trim();
            if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::Malformed);
            }
            let n: u64 = value.parse().map_err(|_| HttpError::Malformed)?;
            if head.content_length.is_some_and(|m| m != n) {
                return Err(HttpError::Malformed);
            }
            head.content_length = Some(n);
            continue;
        } else {
            continue;
        };
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HttpError::Malformed)?
            .trim();
        let list = name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("connection")
            || name.eq_ignore_ascii_case("transfer-encoding");
        match field {
            Some(prev) if list => {
                prev.push_str(", ");
                prev.push_str(value);
            }
            // A field that must be unique appears twice: refuse rather than pick one.
            Some(_) => return Err(HttpError::Malformed),
            None => *field = Some(value.to_owned()),
        }
    }
    Ok(Parsed::Complete {
        value: head,
        consumed,
    })
}

/// A validated topic name: 1 to 128 characters of `A-Z a-z 0-9 . _ - :`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

impl Topic {
    /// Validates `s` as a topic name.
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
    /// `GET /`: the demo page.
    Index,
    /// `GET /healthz`.
    Healthz,
    /// `GET /metrics`.
    Metrics,
    /// `GET /echo`: a WebSocket echo.
    Echo,
    /// `GET /ws/{topic}`: a WebSocket subscribed to `topic`.
    Ws {
        /// The topic.
        topic: Topic,
    },
    /// `GET /sse/{topic}` or `GET /sse?topic=a&topic=b`: an event stream.
    Sse {
        /// Topics in request order, without duplicates.
        topics: Vec<Topic>,
        /// `Last-Event-ID` header, else `?lastEventId=`; unparsed.
        last_event_id: Option<String>,
    },
    /// `POST /publish/{topic}[?event=NAME]`.
    Publish {
        /// The topic.
        topic: Topic,
        /// The SSE event name, if not the default `message`.
        event: Option<String>,
    },
    /// `GET /poll/{topic}?since=ID&wait=D`.
    Poll {
        /// The topic.
        topic: Topic,
        /// The last id the client has.
        since: Option<String>,
        /// Long-polling budget; `None` answers at once.
        wait: Option<Duration>,
    },
}

/// Decides the endpoint for a request head.
pub fn route(head: &RequestHead) -> Result<Route, HttpError> {
    const GET: &str = "GET, HEAD";
    let get_only = |route: Route| match head.method {
        Method::Get | Method::Head => Ok(route),
        _ => Err(HttpError::MethodNotAllowed { allow: GET }),
    };
    let path = head.path.as_str();
    if let Some(rest) = path.strip_prefix("/ws/") {
        let topic = path_topic(rest)?;
        return match head.method {
            Method::Get => Ok(Route::Ws { topic }),
            _ => Err(HttpError::MethodNotAllowed { allow: "GET" }),
        };
    }
    if let Some(rest) = path.strip_prefix("/sse/") {
        let topic = path_topic(rest)?;
        let query = parse_query(&head.query)?;
        return get_only(Route::Sse {
            topics: vec![topic],
            last_event_id: last_event_id(head, &query),
        });
    }
    if let Some(rest) = path.strip_prefix("/publish/") {
        let topic = path_topic(rest)?;
        if head.method != Method::Post {
            return Err(HttpError::MethodNotAllowed { allow: "POST" });
        }
        let mut event = None;
        for (k, v) in parse_query(&head.query)? {
            if k == "event" {
                let bad = v.is_empty()
                    || v.len() > MAX_EVENT_NAME_LEN
                    || v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
                if bad {
                    return Err(HttpError::BadEventName);
                }
                event = Some(v);
            }
        }
        return Ok(Route::Publish { topic, event });
    }
    if let Some(rest) = path.strip_prefix("/poll/") {
        let topic = path_topic(rest)?;
        let (mut since, mut wait) = (None, None);
        for (k, v) in parse_query(&head.query)? {
            match k.as_str() {
                "since" if !v.is_empty() => since = Some(v),
                "wait" => {
                    let d = parse_duration(&v)
                        .filter(|d| *d <= MAX_POLL_WAIT)
                        .ok_or(HttpError::BadQuery)?;
                    wait = (!d.is_zero()).then_some(d);
                }
                _ => {}
            }
        }
        return get_only(Route::Poll { topic, since, wait });
    }
    match path {
        "/" => get_only(Route::Index),
        "/healthz" => get_only(Route::Healthz),
        "/metrics" => get_only(Route::Metrics),
        "/echo" => match head.method {
            Method::Get => Ok(Route::Echo),
            _ => Err(HttpError::MethodNotAllowed { allow: "GET" }),
        },
        "/sse" => {
            let query = parse_query(&head.query)?;
            let mut topics: Vec<Topic> = Vec::new();
            for (k, v) in &query {
                if k == "topic" {
                    let t = Topic::new(v)?;
                    if !topics.contains(&t) {
                        topics.push(t);
                    }
                }
            }
            if topics.is_empty() || topics.len() > MAX_TOPICS_PER_STREAM {
                return Err(HttpError::BadQuery);
            }
            get_only(Route::Sse {
                topics,
                last_event_id: last_event_id(head, &query),
            })
        }
        _ => Err(HttpError::NotFound),
    }
}

/// A topic from a path segment: percent-decoded, then validated. A further `/` is 404.
fn path_topic(segment: &str) -> Result<Topic, HttpError> {
    if segment.contains('/') {
        return Err(HttpError::NotFound);
    }
    Topic::new(&percent_decode(segment).map_err(|_| HttpError::BadTopic)?)
}

fn last_event_id(head: &RequestHead, query: &[(String, String)]) -> Option<String> {
    let from_query = || {
        query
            .iter()
            .find(|(k, _)| k == "lastEventId")
            .map(|(_, v)| v.clone())
    };
    head.last_event_id
        .clone()
        .or_else(from_query)
        .filter(|id| !id.is_empty() && id.len() <= MAX_EVENT_ID_LEN)
}

/// Splits a query string into decoded `(key, value)` pairs (`application/x-www-form-
/// urlencoded`: `+` is a space, `%XX` a byte). A bad escape or non-UTF-8 result is
/// [`HttpError::BadQuery`].
pub fn parse_query(q: &str) -> Result<Vec<(String, String)>, HttpError> {
    let mut out = Vec::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(&k.replace('+', " "))?;
        let v = percent_decode(&v.replace('+', " "))?;
        out.push((k, v));
    }
    Ok(out)
}

/// Decodes `%XX` escapes; the result must be UTF-8.
pub fn percent_decode(s: &str) -> Result<String, HttpError> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(HttpError::BadQuery)?;
            let hi = (hex[0] as char).to_digit(16).ok_or(HttpError::BadQuery)?;
            let lo = (hex[1] as char).to_digit(16).ok_or(HttpError::BadQuery)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| HttpError::BadQuery)
}

/// Parses a duration: digits and a unit `ms`, `s`, `m` or `h` (`500ms`, `30s`, `2m`);
/// plain digits are seconds. No spaces, fractions or signs.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() || digits.len() > 12 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

/// Writes a status line, the given headers and the blank line; no body framing. For the
/// 101 response and the event-stream head, whose bodies are not length-delimited.
pub fn write_head(out: &mut Vec<u8>, status: Status, headers: &[(&str, &str)]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.code().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.reason().as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a complete response with `Content-Type` and `Content-Length`, then `headers`.
/// `keep_alive == false` adds `Connection: close`; `head_only` (a HEAD request) omits the
/// body but keeps its length (RFC 9110 §9.3.2).
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
        all.push(("Connection", "close"));
    }
    all.extend_from_slice(headers);
    write_head(out, status, &all);
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// Writes the plain-text error response for `err`, with `Connection: close` (and `Allow`
/// for 405).
pub fn write_error(out: &mut Vec<u8>, err: &HttpError) {
    let body = format!("{}\n", err.message());
    let allow;
    let headers: &[(&str, &str)] = match err {
        HttpError::MethodNotAllowed { allow: a } => {
            allow = [("Allow", *a)];
            &allow
        }
        _ => &[],
    };
    write_response(
        out,
        err.status(),
        headers,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        false,
        false,
    );
}

/// Writes `503 Service Unavailable` with `Retry-After` (admission control).
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
/// without `Origin` (not from a browser) is allowed. Compared ignoring ASCII case.
pub fn origin_allowed(head: &RequestHead, allowed: &[String]) -> bool {
    match &head.origin {
        None => true,
        Some(o) => allowed.is_empty() || allowed.iter().any(|a| a.eq_ignore_ascii_case(o)),
    }
}

/// Does `Authorization: Bearer <token>` carry `token`? The scheme is case-insensitive
/// (RFC 9110 §11.1); the token is compared in time independent of where it differs.
pub fn bearer_matches(head: &RequestHead, token: &str) -> bool {
    let Some(auth) = head.authorization.as_deref() else {
        return false;
    };
    let Some((scheme, given)) = auth.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Does the client want the connection kept open? HTTP/1.1 unless `Connection: close`;
/// HTTP/1.0 only with `Connection: keep-alive` (RFC 9112 §9.3).
pub fn keep_alive(head: &RequestHead) -> bool {
    let conn = head.connection.as_deref().unwrap_or("");
    if head.minor_version >= 1 {
        !has_token(conn, "close")
    } else {
        has_token(conn, "keep-alive")
    }
}

/// Is `token` in the comma-separated list, ignoring ASCII case and whitespace?
pub fn has_token(list: &str, token: &str) -> bool {
    list.split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
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

    fn get(target: &str) -> RequestHead {
        head(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
    }

    const UPGRADE: &[u8] = b"GET /ws/chat?x=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: keep-alive\r\nconnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn parses_the_fields_we_use() {
        let h = head(UPGRADE);
        assert_eq!(
            (h.method, h.path.as_str(), h.query.as_str(), h.minor_version),
            (Method::Get, "/ws/chat", "x=1", 1)
        );
        assert_eq!(h.host.as_deref(), Some("server.example.com"));
        assert_eq!(
            h.connection.as_deref(),
            Some("keep-alive, Upgrade"),
            "repeated list fields join"
        );
        assert_eq!(
            h.sec_websocket_key.as_deref(),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
        assert_eq!(h.origin.as_deref(), Some("http://example.com"));
        assert_eq!(h.sec_websocket_version.as_deref(), Some("13"));
    }

    /// Chunking: every prefix is Partial, and bytes after the head are not consumed.
    #[test]
    fn chunking_and_consumed() {
        for cut in 0..UPGRADE.len() {
            assert_eq!(parse(&UPGRADE[..cut]), Ok(Parsed::Partial), "cut {cut}");
        }
        let mut more = UPGRADE.to_vec();
        more.extend_from_slice(b"\x81\x85extra");
        assert_eq!(
            parse(&more),
            Ok(Parsed::Complete {
                value: head(UPGRADE),
                consumed: UPGRADE.len()
            })
        );
    }

    #[test]
    fn limits() {
        let limits = Limits::default();
        let pad = |n: usize| {
            let base = "GET / HTTP/1.1\r\nX: \r\n\r\n".len();
            format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(n - base)).into_bytes()
        };
        assert!(matches!(
            parse_request_head(&pad(limits.max_head_bytes), &limits),
            Ok(Parsed::Complete { .. })
        ));
        assert_eq!(
            parse_request_head(&pad(limits.max_head_bytes + 1), &limits),
            Err(HttpError::HeadTooLarge)
        );
        assert_eq!(
            parse_request_head(&vec![b'G'; limits.max_head_bytes], &limits).unwrap_err(),
            HttpError::HeadTooLarge
        );
        let partial = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(limits.max_head_bytes));
        assert_eq!(parse(partial.as_bytes()), Err(HttpError::HeadTooLarge));
        let many =
            |n: usize| format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(n)).into_bytes();
        assert!(parse(&many(64)).is_ok());
        assert_eq!(parse(&many(65)), Err(HttpError::TooManyHeaders));
        assert_eq!(HttpError::TooManyHeaders.status().code(), 431);
        assert_eq!(HttpError::HeadTooLarge.status().code(), 431);
    }

    #[test]
    fn malformed() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            Err(HttpError::Malformed)
        );
        assert!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").is_ok(),
            "equal repeats are fine"
        );
        for bad in ["-1", "+5", "1 2", "", "0x10", "99999999999999999999"] {
            let req = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(parse(req.as_bytes()), Err(HttpError::Malformed), "{bad:?}");
        }
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nSec-WebSocket-Key: a\r\nSec-WebSocket-Key: b\r\n\r\n"),
            Err(HttpError::Malformed)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nOrigin: \xff\r\n\r\n"),
            Err(HttpError::Malformed)
        );
        assert_eq!(
            parse(b"\x00\x01\x02 / HTTP/1.1\r\n\r\n"),
            Err(HttpError::Malformed)
        );
        assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n"), Err(HttpError::Malformed));
        assert_eq!(HttpError::Malformed.status().code(), 400);
    }

    #[test]
    fn routes() {
        let t = |s: &str| Topic::new(s).unwrap();
        assert_eq!(route(&get("/")), Ok(Route::Index));
        assert_eq!(route(&get("/healthz")), Ok(Route::Healthz));
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
                "/sse?topic=a&topic=b&topic=a&lastEventId=0a0b0c0d-1.2"
            )),
            Ok(Route::Sse {
                topics: vec![t("a"), t("b")],
                last_event_id: Some("0a0b0c0d-1.2".into())
            })
        );
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
        assert_eq!(route(&get("/sse")), Err(HttpError::BadQuery), "no topic");
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
        assert_eq!(
            route(&get("/poll/news?wait=0")),
            Ok(Route::Poll {
                topic: t("news"),
                since: None,
                wait: None
            })
        );
        assert_eq!(route(&get("/poll/news?wait=10m")), Err(HttpError::BadQuery));
        assert_eq!(
            route(&get("/poll/news?wait=soon")),
            Err(HttpError::BadQuery)
        );
        let post = |target: &str| head(format!("POST {target} HTTP/1.1\r\n\r\n").as_bytes());
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
            route(&post("/publish/news?event=a%0Ab")),
            Err(HttpError::BadEventName)
        );
        assert_eq!(
            route(&post("/publish/news?event=")),
            Err(HttpError::BadEventName)
        );
        assert_eq!(
            route(&post(&format!("/publish/news?event={}", "e".repeat(65)))),
            Err(HttpError::BadEventName)
        );
        assert_eq!(
            route(&get("/publish/news")),
            Err(HttpError::MethodNotAllowed { allow: "POST" })
        );
        assert_eq!(
            route(&post("/echo")),
            Err(HttpError::MethodNotAllowed { allow: "GET" })
        );
        assert_eq!(
            route(&post("/healthz")),
            Err(HttpError::MethodNotAllowed { allow: "GET, HEAD" })
        );
        assert_eq!(route(&get("/nope")), Err(HttpError::NotFound));
        assert_eq!(route(&get("/healthz/")), Err(HttpError::NotFound));
        assert_eq!(route(&get("/ws/a/b")), Err(HttpError::NotFound));
        assert_eq!(route(&get("/ws/")), Err(HttpError::BadTopic));
        assert_eq!(route(&get("/ws/a%20b")), Err(HttpError::BadTopic));
        assert_eq!(route(&get("/ws/a%zz")), Err(HttpError::BadTopic));
    }

    #[test]
    fn topic_names() {
        assert!(Topic::new(&"a".repeat(128)).is_ok());
        assert_eq!(Topic::new(&"a".repeat(129)), Err(HttpError::BadTopic));
        assert_eq!(Topic::new(""), Err(HttpError::BadTopic));
        for ok in ["A", "z", "0", ".", "_", "-", ":", "user:42", "a.b-c_d"] {
            assert!(Topic::new(ok).is_ok(), "{ok}");
        }
        for bad in ["a/b", "a b", "é", "a?", "a#", "a%", "a\0"] {
            assert_eq!(Topic::new(bad), Err(HttpError::BadTopic), "{bad}");
        }
        assert_eq!(Topic::new("chat").unwrap().to_string(), "chat");
    }

    #[test]
    fn queries() {
        assert_eq!(
            parse_query("topic=a&topic=b%2Fc&x=a+b&flag&&=v").unwrap(),
            [
                ("topic".to_string(), "a".to_string()),
                ("topic".into(), "b/c".into()),
                ("x".into(), "a b".into()),
                ("flag".into(), "".into()),
                ("".into(), "v".into()),
            ]
        );
        assert_eq!(parse_query("a=%zz"), Err(HttpError::BadQuery));
        assert_eq!(parse_query("a=%4"), Err(HttpError::BadQuery));
        assert_eq!(parse_query("a=%ff"), Err(HttpError::BadQuery), "not UTF-8");
        assert_eq!(percent_decode("%C3%A9").unwrap(), "é");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
        for bad in [
            "",
            "s",
            "1.5s",
            "-1s",
            "10x",
            "99999999999999999999s",
            " 1s",
            "1 s",
            "1S",
            "ms",
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
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nX-A: b\r\n\r\nok\n");
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
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\n");
        out.clear();
        write_error(&mut out, &HttpError::MethodNotAllowed { allow: "POST" });
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\nConnection: close\r\nAllow: POST\r\n\r\nmethod not allowed\n"
        );
        out.clear();
        write_service_unavailable(&mut out, 5);
        let s = String::from_utf8(out.clone()).unwrap();
        assert!(
            s.starts_with("HTTP/1.1 503 Service Unavailable\r\n")
                && s.contains("\r\nRetry-After: 5\r\n")
                && s.contains("Connection: close"),
            "{s}"
        );
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
        ];
        for (e, code) in all {
            out.clear();
            write_error(&mut out, &e);
            assert!(
                out.starts_with(format!("HTTP/1.1 {code} ").as_bytes()),
                "{e:?}"
            );
        }
        assert_eq!(
            (
                Status::SwitchingProtocols.code(),
                Status::UpgradeRequired.code(),
                Status::InternalServerError.code()
            ),
            (101, 426, 500)
        );
    }

    #[test]
    fn origin_bearer_keepalive() {
        let mut h = get("/");
        let allowed = vec!["https://app.example".to_string()];
        assert!(origin_allowed(&h, &allowed), "no Origin: not a browser");
        h.origin = Some("https://APP.example".into());
        assert!(origin_allowed(&h, &allowed));
        assert!(origin_allowed(&h, &[]));
        h.origin = Some("https://evil.example".into());
        assert!(!origin_allowed(&h, &allowed));

        assert!(!bearer_matches(&h, "t0k"));
        for (auth, ok) in [
            ("Bearer t0k", true),
            ("bearer t0k", true),
            ("Bearer t0", false),
            ("Bearer t0kk", false),
            ("Basic t0k", false),
            ("t0k", false),
        ] {
            h.authorization = Some(auth.into());
            assert_eq!(bearer_matches(&h, "t0k"), ok, "{auth}");
        }

        assert!(keep_alive(&get("/")));
        assert!(!keep_alive(&head(
            b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"
        )));
        assert!(!keep_alive(&head(b"GET / HTTP/1.0\r\n\r\n")));
        assert!(keep_alive(&head(
            b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
        )));
        assert!(has_token("keep-alive, Upgrade", "upgrade"));
        assert!(!has_token("keep-alive, Upgrades", "upgrade"));
    }

    proptest! {
        #[test]
        fn never_panics(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
            let limits = Limits { max_head_bytes: 256, ..Limits::default() };
            if let Ok(Parsed::Complete { value, .. }) = parse_request_head(&buf, &limits) {
                let _ = route(&value);
            }
        }

        #[test]
        fn valid_topics_accepted(name in "[A-Za-z0-9._:-]{1,128}") {
            prop_assert_eq!(Topic::new(&name).map(|t| t.as_str().to_owned()), Ok(name));
        }
    }
}
