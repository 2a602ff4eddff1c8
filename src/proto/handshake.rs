//! The WebSocket opening handshake, server side (RFC 6455 §4.2.1, §4.2.2).
//!
//! [`validate`] checks an already parsed [`RequestHead`] against the rules of §4.2.1 and
//! computes `Sec-WebSocket-Accept`; [`write_accept`] and [`write_error`] write the answer.
//! No subprotocol is ever selected (§4.2.2 step 5.4 allows omitting it); the one
//! extension is permessage-deflate, negotiated by [`super::extension`] and answered here.
//!
//! Not checked: `Host` (§4.2.1 item 2), because a missing one tells us nothing about the
//! WebSocket and every real client sends it, and the request-URI (routing did that).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

use super::extension::{self, Deflate};
use super::http::{self, Method, RequestHead, Status};

/// The GUID appended to the client's key (RFC 6455 §1.3, §4.2.2 step 5.4).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept`: base64(SHA-1(key + GUID)), 28 ASCII bytes (RFC 6455 §4.2.2
/// step 5.4). `key` is the header value as received (trimmed), not its decoded bytes.
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let digest = Sha1::new()
        .chain_update(key)
        .chain_update(GUID.as_bytes())
        .finalize();
    let mut out = [0u8; 28];
    // A 20-byte digest is always exactly 28 base64 characters with padding
    // (4 * ceil(20 / 3)), so this cannot fail.
    let n = STANDARD
        .encode_slice(digest, &mut out)
        .expect("20 bytes encode to 28");
    debug_assert_eq!(n, 28);
    out
}

/// Why an upgrade request is refused. One variant per rule of RFC 6455 §4.2.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// §4.2.1 item 1: "An HTTP/1.1 or higher GET request". Another method: 405 with
    /// `Allow: GET`.
    NotGet,
    /// §4.2.1 item 1: HTTP/1.0 (whose `Upgrade` a server "MUST ignore", RFC 9110 §7.8).
    /// 400.
    Http10,
    /// §4.2.1 item 3: no `Upgrade` field containing the token `websocket`. 400.
    MissingUpgrade,
    /// §4.2.1 item 4: no `Connection` field containing the token `Upgrade`. 400.
    MissingConnectionUpgrade,
    /// §4.2.1 item 5: no `Sec-WebSocket-Key`. 400.
    MissingKey,
    /// §4.2.1 item 5: a key that is not canonical base64 of exactly 16 bytes. 400.
    BadKey,
    /// §4.2.1 item 6: `Sec-WebSocket-Version` missing or not `13`. 426 with
    /// `Sec-WebSocket-Version: 13` (§4.2.2 step 4, §4.4).
    BadVersion,
    /// §4.2.2 step 4 / §10.2: an `Origin` outside `--allowed-origin`. 403.
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

/// Is `key` a valid `Sec-WebSocket-Key`: "a base64-encoded value that, when decoded, is
/// 16 bytes in length" (RFC 6455 §4.2.1 item 5)? That is exactly 24 characters ending in
/// `==`. The decoder is strict (RFC 4648 §3.5 lets it be): non-zero padding bits, a
/// missing `=` or characters outside the alphabet are refused, since every client
/// generates the key by encoding 16 random bytes.
fn key_ok(key: &str) -> bool {
    // 16 bytes encode to 24 characters; anything else cannot decode to 16, and checking
    // first keeps the decode into an 18-byte stack buffer (the 24-character estimate).
    let mut raw = [0u8; 18];
    key.len() == 24 && matches!(STANDARD.decode_slice(key, &mut raw), Ok(16))
}

/// Checks an upgrade request and returns the `Sec-WebSocket-Accept` value.
///
/// Order of checks, first failure wins: method, HTTP version, `Upgrade`, `Connection`,
/// key, WebSocket version, `Origin` (the order of RFC 6455 §4.2.1 items 1-6, then the
/// server's own policy of §4.2.2 step 4). `Upgrade` and `Connection` are token lists:
/// `Connection: keep-alive, Upgrade` (Firefox) passes, case is ignored.
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
    let has = |list: &Option<String>, token: &str| {
        list.as_deref().is_some_and(|l| http::has_token(l, token))
    };
    if !has(&head.upgrade, "websocket") {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !has(&head.connection, "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let key = head
        .sec_websocket_key
        .as_deref()
        .ok_or(HandshakeError::MissingKey)?;
    if !key_ok(key) {
        return Err(HandshakeError::BadKey);
    }
    // §4.2.1 item 6: "MUST be 13". Exactly: no list, no leading zeros.
    if head.sec_websocket_version.as_deref() != Some("13") {
        return Err(HandshakeError::BadVersion);
    }
    if !http::origin_allowed(head, allowed_origins) {
        return Err(HandshakeError::ForbiddenOrigin);
    }
    Ok(accept_key(key.as_bytes()))
}

/// Writes the `101 Switching Protocols` response (RFC 6455 §4.2.2 step 5): `Upgrade:
/// websocket`, `Connection: Upgrade`, `Sec-WebSocket-Accept`, and
/// `Sec-WebSocket-Extensions` when permessage-deflate was agreed (§4.2.2 step 5.5); no
/// subprotocol. WebSocket frames may follow at once.
pub fn write_accept(out: &mut Vec<u8>, accept: &[u8; 28], deflate: Option<&Deflate>) {
    // Written by hand rather than through `http::write_head` because the value is bytes:
    // converting would need a UTF-8 check that could only fail on a caller's bug.
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept);
    out.extend_from_slice(b"\r\n");
    if let Some(d) = deflate {
        extension::write_response(out, d);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the plain-text error response for a refused handshake: body `err.message()`
/// and a newline, `Connection: close`, plus `Sec-WebSocket-Version: 13` on 426 (RFC 6455
/// §4.2.2 step 4: the versions the server understands) and `Allow: GET` on 405
/// (RFC 9110 §15.5.6).
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
    use proptest::prelude::*;

    use super::*;
    use crate::proto::Parsed;
    use crate::proto::http::HttpError;
    use crate::proto::limits::Limits;

    fn parse(req: &str) -> Result<Parsed<RequestHead>, HttpError> {
        http::parse_request_head(req.as_bytes(), &Limits::default())
    }

    fn head(req: &str) -> RequestHead {
        match parse(req) {
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

    fn with(i: usize, line: &str) -> Vec<String> {
        let mut lines: Vec<String> = without(i).into_iter().map(String::from).collect();
        lines.push(line.to_owned());
        lines
    }

    fn check(lines: &[String]) -> Result<[u8; 28], HandshakeError> {
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        validate(&req("GET", "1.1", &lines), &[])
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
        assert_eq!(GUID.len(), 36);
    }

    #[test]
    fn every_rule() {
        assert_eq!(
            validate(&req("POST", "1.1", &GOOD), &[]),
            Err(HandshakeError::NotGet)
        );
        assert_eq!(
            validate(&req("HEAD", "1.1", &GOOD), &[]),
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
            Err(HandshakeError::BadVersion),
            "missing version is 426 too"
        );
        let mut lines = GOOD.to_vec();
        lines.push("Origin: https://evil.example");
        let good = ["https://good.example".to_string()];
        assert_eq!(
            validate(&req("GET", "1.1", &lines), &good),
            Err(HandshakeError::ForbiddenOrigin)
        );
        assert!(
            validate(&req("GET", "1.1", &lines), &[]).is_ok(),
            "no allowlist"
        );
        assert!(validate(&req("GET", "1.1", &lines), &["https://EVIL.example".into()]).is_ok());
        assert!(
            validate(&req("GET", "1.1", &GOOD), &good).is_ok(),
            "no Origin: not a browser"
        );
    }

    #[test]
    fn keys() {
        for key in [
            "dGhlIHNhbXBsZSBub25jZQ==",
            "AAAAAAAAAAAAAAAAAAAAAA==",
            "/////////////////////w==",
            "+/+/+/+/+/+/+/+/+/+/+w==",
        ] {
            assert!(
                check(&with(2, &format!("Sec-WebSocket-Key: {key}"))).is_ok(),
                "{key}"
            );
        }
        assert_eq!(
            check(&with(2, "Sec-WebSocket-Key:   dGhlIHNhbXBsZSBub25jZQ==  ")),
            Ok(*b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "surrounding whitespace is not part of the value"
        );
        for key in [
            "",
            "short",
            "dGhlIHNhbXBsZSBub25jZQ",       // no padding
            "dGhlIHNhbXBsZSBub25jZQ=",      // half padding
            "dGhlIHNhbXBsZSBub25jZR==",     // non-zero padding bits
            "dGhlIHNhbXBsZSBub25jZQ==dGhl", // 19 bytes
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAA", // 21 bytes
            "AAAAAAAAAAAAAAAAAAAAAAAA",     // 18 bytes, 24 characters
            "AAAAAAAAAAAAAAAAAAAA====",     // 15 bytes, 24 characters
            "!!!!!!!!!!!!!!!!!!!!!!==",     // outside the alphabet
            "dGhlIHNhbXBsZSBub25jZQ%3D%3D", // URL-encoded
            "dGhlIHNhbXBsZSBub25j_Q==",     // URL-safe alphabet
            "dGhlIHNhbXBs ZSBub25jZQ==",    // inner space
        ] {
            assert_eq!(
                check(&with(2, &format!("Sec-WebSocket-Key: {key}"))),
                Err(HandshakeError::BadKey),
                "{key:?}"
            );
        }
        // A second key is refused by the head parser (RFC 6455 §11.3.1).
        let mut dup = GOOD.join("\r\n");
        dup.push_str("\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==");
        assert_eq!(
            parse(&format!("GET /echo HTTP/1.1\r\n{dup}\r\n\r\n")),
            Err(HttpError::Malformed)
        );
    }

    #[test]
    fn versions() {
        for version in ["8", "7", "14", "13, 8", "013", "13.0", "", "thirteen"] {
            assert_eq!(
                check(&with(3, &format!("Sec-WebSocket-Version: {version}"))),
                Err(HandshakeError::BadVersion),
                "{version:?}"
            );
        }
        assert!(check(&with(3, "sec-websocket-version:  13 ")).is_ok());
        let mut dup = GOOD.join("\r\n");
        dup.push_str("\r\nSec-WebSocket-Version: 13");
        assert_eq!(
            parse(&format!("GET /echo HTTP/1.1\r\n{dup}\r\n\r\n")),
            Err(HttpError::Malformed),
            "RFC 6455 §11.3.5: not more than once in a request"
        );
    }

    /// Token lists are case-insensitive and may hold other tokens, over several lines.
    #[test]
    fn token_lists() {
        for (upgrade, connection) in [
            ("Upgrade: WebSocket", "Connection: keep-alive, UPGRADE"),
            ("Upgrade: h2c, websocket", "Connection: Upgrade"),
            ("upgrade: websocket", "connection: upgrade,keep-alive"),
            (
                "Upgrade: h2c\r\nUpgrade: websocket",
                "Connection: keep-alive\r\nConnection: Upgrade",
            ),
        ] {
            let lines = [upgrade, connection, GOOD[2], GOOD[3]];
            assert!(
                validate(&req("GET", "1.1", &lines), &[]).is_ok(),
                "{upgrade} / {connection}"
            );
        }
        for upgrade in [
            "Upgrade: websockets",
            "Upgrade: web socket",
            "Upgrade: h2c",
            "Upgrade:",
        ] {
            let lines = [upgrade, GOOD[1], GOOD[2], GOOD[3]];
            assert_eq!(
                validate(&req("GET", "1.1", &lines), &[]),
                Err(HandshakeError::MissingUpgrade),
                "{upgrade}"
            );
        }
        for connection in [
            "Connection: keep-alive",
            "Connection: upgrades",
            "Connection: close",
            "Connection: websocket",
        ] {
            let lines = [GOOD[0], connection, GOOD[2], GOOD[3]];
            assert_eq!(
                validate(&req("GET", "1.1", &lines), &[]),
                Err(HandshakeError::MissingConnectionUpgrade),
                "{connection}"
            );
        }
    }

    /// With several faults, the first in the documented order is reported.
    #[test]
    fn check_order() {
        let origin = ["https://good.example".to_string()];
        let bad_origin = "Origin: https://evil.example";
        let all_bad = [
            "Sec-WebSocket-Key: nope",
            "Sec-WebSocket-Version: 8",
            bad_origin,
        ];
        assert_eq!(
            validate(&req("POST", "1.0", &all_bad), &origin),
            Err(HandshakeError::NotGet)
        );
        assert_eq!(
            validate(&req("GET", "1.0", &all_bad), &origin),
            Err(HandshakeError::Http10)
        );
        assert_eq!(
            validate(&req("GET", "1.1", &all_bad), &origin),
            Err(HandshakeError::MissingUpgrade)
        );
        let steps = [
            (
                vec![GOOD[0], "Sec-WebSocket-Version: 8", bad_origin],
                HandshakeError::MissingConnectionUpgrade,
            ),
            (
                vec![GOOD[0], GOOD[1], "Sec-WebSocket-Version: 8", bad_origin],
                HandshakeError::MissingKey,
            ),
            (
                vec![
                    GOOD[0],
                    GOOD[1],
                    "Sec-WebSocket-Key: nope",
                    "Sec-WebSocket-Version: 8",
                    bad_origin,
                ],
                HandshakeError::BadKey,
            ),
            (
                vec![
                    GOOD[0],
                    GOOD[1],
                    GOOD[2],
                    "Sec-WebSocket-Version: 8",
                    bad_origin,
                ],
                HandshakeError::BadVersion,
            ),
            (
                vec![GOOD[0], GOOD[1], GOOD[2], GOOD[3], bad_origin],
                HandshakeError::ForbiddenOrigin,
            ),
        ];
        for (lines, want) in steps {
            assert_eq!(
                validate(&req("GET", "1.1", &lines), &origin),
                Err(want),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        write_accept(&mut out, &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), None);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        let mut via_head = Vec::new();
        http::write_head(
            &mut via_head,
            Status::SwitchingProtocols,
            &[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ],
        );
        assert_eq!(out, via_head, "same bytes as the generic writer");

        out.clear();
        write_error(&mut out, &HandshakeError::BadVersion);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 426 Upgrade Required\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 53\r\nConnection: close\r\nSec-WebSocket-Version: 13\r\n\r\nunsupported WebSocket version; this server speaks 13\n"
        );
        out.clear();
        write_error(&mut out, &HandshakeError::NotGet);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 36\r\nConnection: close\r\nAllow: GET\r\n\r\na WebSocket handshake must be a GET\n"
        );
        out.clear();
        write_error(&mut out, &HandshakeError::BadKey);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 45\r\nConnection: close\r\n\r\nSec-WebSocket-Key must be base64 of 16 bytes\n"
        );

        let expect = [
            (HandshakeError::NotGet, 405, Some("Allow: GET")),
            (HandshakeError::Http10, 400, None),
            (HandshakeError::MissingUpgrade, 400, None),
            (HandshakeError::MissingConnectionUpgrade, 400, None),
            (HandshakeError::MissingKey, 400, None),
            (HandshakeError::BadKey, 400, None),
            (
                HandshakeError::BadVersion,
                426,
                Some("Sec-WebSocket-Version: 13"),
            ),
            (HandshakeError::ForbiddenOrigin, 403, None),
        ];
        for (e, code, header) in expect {
            assert_eq!(e.status().code(), code, "{e:?}");
            assert_eq!(e.to_string(), e.message());
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
            let extra = s.matches("\r\n").count() - 5; // status line, 3 fixed, blank
            assert_eq!(extra, usize::from(header.is_some()), "{s}");
            if let Some(h) = header {
                assert!(s.contains(&format!("\r\n{h}\r\n")), "{s}");
            }
        }
    }

    proptest! {
        /// Any 16 bytes make a valid key; the accept value is the RFC formula over the
        /// key's text, and is 28 bytes of the standard alphabet ending in `=`.
        #[test]
        fn any_16_byte_key_accepted(raw in prop::array::uniform16(any::<u8>())) {
            let key = STANDARD.encode(raw);
            let accept = check(&with(2, &format!("Sec-WebSocket-Key: {key}")));
            prop_assert_eq!(accept, Ok(accept_key(key.as_bytes())));
            let accept = accept_key(key.as_bytes());
            prop_assert_eq!(accept[27], b'=');
            let digest = Sha1::new().chain_update(&key).chain_update(GUID).finalize();
            prop_assert_eq!(STANDARD.decode(accept).unwrap(), digest.to_vec());
        }

        /// Other lengths never pass.
        #[test]
        fn other_key_lengths_refused(
            raw in prop::collection::vec(any::<u8>(), 0..40)
                .prop_filter("not 16", |r| r.len() != 16)
        ) {
            let key = STANDARD.encode(&raw);
            prop_assert_eq!(
                check(&with(2, &format!("Sec-WebSocket-Key: {key}"))),
                Err(HandshakeError::BadKey)
            );
        }
    }
}
