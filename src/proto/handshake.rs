//! The WebSocket opening handshake, server side (RFC 6455 §4.2.1, §4.2.2).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

use super::http::{self, Method, RequestHead, Status};

/// The GUID appended to the client's key (RFC 6455 §1.3).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept`: base64(SHA-1(key + GUID)), 28 ASCII bytes (§4.2.2 step 5.4).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let digest = Sha1::new()
        .chain_update(key)
        .chain_update(GUID.as_bytes())
        .finalize();
    let mut out = [0u8; 28];
    let n = STANDARD
        .encode_slice(digest, &mut out)
        .expect("20 bytes encode to 28");
    debug_assert_eq!(n, 28);
    out
}

/// Why an upgrade request is refused. One variant per rule of §4.2.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// §4.2.1 (1): "An HTTP/1.1 or higher GET request". Another method: 405.
    NotGet,
    /// §4.2.1 (1): HTTP/1.0. 400.
    Http10,
    /// §4.2.1 (3): no `Upgrade` token `websocket`. 400.
    MissingUpgrade,
    /// §4.2.1 (4): no `Connection` token `Upgrade`. 400.
    MissingConnectionUpgrade,
    /// §4.2.1 (5): no `Sec-WebSocket-Key`. 400.
    MissingKey,
    /// §4.2.1 (5): a key that is not base64 of exactly 16 bytes. 400.
    BadKey,
    /// §4.2.1 (6): version not 13. 426 with `Sec-WebSocket-Version: 13` (§4.4).
    BadVersion,
    /// §4.2.2 (4) / §10.2: an `Origin` outside `--allowed-origin`. 403.
    ForbiddenOrigin,
}

impl HandshakeError {
    /// The response status.
    pub fn status(&self) -> Status {
        match self {
            HandshakeError::NotGet => Status::MethodNotAllowed,
            HandshakeError::Http10
            | HandshakeError::MissingUpgrade
            | HandshakeError::MissingConnectionUpgrade
            | HandshakeError::MissingKey
            | HandshakeError::BadKey => Status::BadRequest,
            HandshakeError::BadVersion => Status::UpgradeRequired,
            HandshakeError::ForbiddenOrigin => Status::Forbidden,
        }
    }

    /// One line for the plain-text body.
    pub fn message(&self) -> &'static str {
        match self {
            HandshakeError::NotGet => "a WebSocket handshake must be a GET",
            HandshakeError::Http10 => "a WebSocket handshake needs HTTP/1.1",
            HandshakeError::MissingUpgrade => "missing Upgrade: websocket",
            HandshakeError::MissingConnectionUpgrade => "missing Connection: Upgrade",
            HandshakeError::MissingKey => "missing Sec-WebSocket-Key",
            HandshakeError::BadKey => "Sec-WebSocket-Key must be base64 of 16 bytes",
            HandshakeError::BadVersion => "unsupported WebSocket version; this server speaks 13",
            HandshakeError::ForbiddenOrigin => "origin not allowed",
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for HandshakeError {}

/// Checks an upgrade request (in the order of §4.2.1) and returns the accept value.
pub fn validate(
    head: &RequestHead,
    allowed_origins: &[String],
) -> Result<[u8; 28], HandshakeError> {
    if head.method != Method::Get {
        return Err(HandshakeError::NotGet);
    }
    if head.minor_version < 1 {
        return Err(HandshakeError::Http10);
    }
    if !head
        .upgrade
        .as_deref()
        .is_some_and(|u| http::has_token(u, "websocket"))
    {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !head
        .connection
        .as_deref()
        .is_some_and(|c| http::has_token(c, "upgrade"))
    {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let key = head
        .sec_websocket_key
        .as_deref()
        .ok_or(HandshakeError::MissingKey)?;
    // 16 bytes encode to 24 characters; decoding into a 16-byte buffer fails on longer.
    let mut raw = [0u8; 18];
    match STANDARD.decode_slice(key, &mut raw) {
        Ok(16) if key.len() == 24 => {}
        _ => return Err(HandshakeError::BadKey),
    }
    if head.sec_websocket_version.as_deref() != Some("13") {
        return Err(HandshakeError::BadVersion);
    }
    if !http::origin_allowed(head, allowed_origins) {
        return Err(HandshakeError::ForbiddenOrigin);
    }
    Ok(accept_key(key.as_bytes()))
}

/// Writes the 101 response (§4.2.2 step 5). No subprotocol and no extension is selected.
pub fn write_accept(out: &mut Vec<u8>, accept: &[u8; 28]) {
    let accept = std::str::from_utf8(accept).expect("base64 is ASCII");
    http::write_head(
        out,
        Status::SwitchingProtocols,
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept),
        ],
    );
}

/// Writes the error response for a refused handshake, with `Connection: close`,
/// `Sec-WebSocket-Version: 13` on 426 (§4.4) and `Allow: GET` on 405.
pub fn write_error(out: &mut Vec<u8>, err: &HandshakeError) {
    let headers: &[(&str, &str)] = match err {
        HandshakeError::BadVersion => &[("Sec-WebSocket-Version", "13")],
        HandshakeError::NotGet => &[("Allow", "GET")],
        _ => &[],
    };
    let body = format!("{}\n", err.message());
    http::write_response(
        out,
        err.status(),
        headers,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        false,
        false,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Parsed;
    use crate::proto::limits::Limits;

    fn head(req: &str) -> RequestHead {
        match http::parse_request_head(req.as_bytes(), &Limits::default()) {
            Ok(Parsed::Complete { value, .. }) => value,
            other => panic!("{other:?}"),
        }
    }

    fn req(method: &str, version: &str, lines: &[&str]) -> RequestHead {
        head(&format!(
            "{method} /echo HTTP/{version}\r\nHost: x\r\n{}\r\n",
            lines.iter().map(|l| format!("{l}\r\n")).collect::<String>()
        ))
    }

    const GOOD: [&str; 4] = [
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ];

    fn without(i: usize) -> Vec<&'static str> {
        GOOD.iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, l)| *l)
            .collect()
    }

    /// RFC 6455 §1.3's worked example.
    #[test]
    fn rfc_accept_example() {
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            validate(&req("GET", "1.1", &GOOD), &[]),
            Ok(*b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
    }

    #[test]
    fn every_rule() {
        assert_eq!(
            validate(&req("POST", "1.1", &GOOD), &[]),
            Err(HandshakeError::NotGet)
        );
        assert_eq!(
            validate(&req("GET", "1.0", &GOOD), &[]),
            Err(HandshakeError::Http10)
        );
        assert_eq!(
            validate(&req("GET", "1.1", &without(0)), &[]),
            Err(HandshakeError::MissingUpgrade)
        );
        assert_eq!(
            validate(&req("GET", "1.1", &without(1)), &[]),
            Err(HandshakeError::MissingConnectionUpgrade)
        );
        assert_eq!(
            validate(&req("GET", "1.1", &without(2)), &[]),
            Err(HandshakeError::MissingKey)
        );
        assert_eq!(
            validate(&req("GET", "1.1", &without(3)), &[]),
            Err(HandshakeError::BadVersion)
        );
        for key in [
            "short",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZQ==dGhl",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "!!!!!!!!!!!!!!!!!!!!!!==",
        ] {
            let mut lines = without(2);
            let line = format!("Sec-WebSocket-Key: {key}");
            lines.push(&line);
            assert_eq!(
                validate(&req("GET", "1.1", &lines), &[]),
                Err(HandshakeError::BadKey),
                "{key}"
            );
        }
        for version in ["8", "14", "13, 8", ""] {
            let mut lines = without(3);
            let line = format!("Sec-WebSocket-Version: {version}");
            lines.push(&line);
            assert_eq!(
                validate(&req("GET", "1.1", &lines), &[]),
                Err(HandshakeError::BadVersion),
                "{version:?}"
            );
        }
        let mut lines = GOOD.to_vec();
        lines.push("Origin: https://evil.example");
        assert_eq!(
            validate(&req("GET", "1.1", &lines), &["https://good.example".into()]),
            Err(HandshakeError::ForbiddenOrigin)
        );
        assert!(validate(&req("GET", "1.1", &lines), &["https://EVIL.example".into()]).is_ok());
    }

    /// Token lists are case-insensitive and may hold other tokens (Firefox sends
    /// `Connection: keep-alive, Upgrade`).
    #[test]
    fn token_lists() {
        let lines = [
            "Upgrade: WebSocket",
            "Connection: keep-alive, UPGRADE",
            GOOD[2],
            GOOD[3],
        ];
        assert!(validate(&req("GET", "1.1", &lines), &[]).is_ok());
        let lines = [
            "Upgrade: h2c, websocket",
            "Connection: Upgrade",
            GOOD[2],
            GOOD[3],
        ];
        assert!(validate(&req("GET", "1.1", &lines), &[]).is_ok());
        let lines = [
            "Upgrade: websockets",
            "Connection: Upgrade",
            GOOD[2],
            GOOD[3],
        ];
        assert_eq!(
            validate(&req("GET", "1.1", &lines), &[]),
            Err(HandshakeError::MissingUpgrade)
        );
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        write_accept(&mut out, &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(out, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n");
        let expect = [
            (HandshakeError::NotGet, "405", Some("Allow: GET")),
            (HandshakeError::Http10, "400", None),
            (HandshakeError::MissingUpgrade, "400", None),
            (HandshakeError::MissingConnectionUpgrade, "400", None),
            (HandshakeError::MissingKey, "400", None),
            (HandshakeError::BadKey, "400", None),
            (
                HandshakeError::BadVersion,
                "426",
                Some("Sec-WebSocket-Version: 13"),
            ),
            (HandshakeError::ForbiddenOrigin, "403", None),
        ];
        for (e, code, header) in expect {
            out.clear();
            write_error(&mut out, &e);
            let s = String::from_utf8(out.clone()).unwrap();
            assert!(s.starts_with(&format!("HTTP/1.1 {code} ")), "{s}");
            assert!(s.contains("Connection: close\r\n"), "{s}");
            assert!(s.ends_with(&format!("\r\n\r\n{}\n", e.message())), "{s}");
            if let Some(h) = header {
                assert!(s.contains(&format!("{h}\r\n")), "{s}");
            }
        }
    }
}
