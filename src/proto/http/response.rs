//! Response statuses and the writers of status lines, heads and whole responses
//! (RFC 9112 §4, §5).

use super::HttpError;

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

/// Writes a status line, the given headers and the empty line (RFC 9112 §4, §5); no body
/// framing. For the 101 response and the event-stream head, whose bodies are not
/// length-delimited.
///
/// # Warning
/// Names and values are written as given. A CR or LF in one would split the response
/// (response splitting); values copied from a [`RequestHead`](super::RequestHead) cannot
/// hold either, since httparse refuses them.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
