//! Request heads, routing and the WebSocket handshake. Oracles: a complete head parses
//! the same from exactly its own bytes and is `Partial` on every proper prefix; routing
//! and handshake never panic; an accepted handshake really had version 13, a 16-byte
//! key and the upgrade tokens, and its accept value is the RFC formula.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use ringpush::proto::Parsed;
use ringpush::proto::handshake;
use ringpush::proto::http::{self, Method};
use ringpush::proto::limits::Limits;
use sha1::{Digest, Sha1};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_head_bytes: 2048, ..Limits::default() };
    let Ok(Parsed::Complete { value: head, consumed }) = http::parse_request_head(data, &limits) else { return };
    assert!(consumed <= limits.max_head_bytes);
    let again = http::parse_request_head(&data[..consumed], &limits);
    assert!(matches!(&again, Ok(Parsed::Complete { value, consumed: c }) if *c == consumed && *value == head));
    for cut in [0, consumed / 2, consumed - 1] {
        assert!(matches!(http::parse_request_head(&data[..cut], &limits), Ok(Parsed::Partial)), "prefix {cut}");
    }
    let _ = http::route(&head);
    if let Ok(accept) = handshake::validate(&head, &[]) {
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.sec_websocket_version.as_deref(), Some("13"));
        let key = head.sec_websocket_key.as_deref().expect("key");
        assert_eq!(STANDARD.decode(key).map(|k| k.len()).ok(), Some(16));
        assert!(http::has_token(head.upgrade.as_deref().unwrap_or(""), "websocket"));
        assert!(http::has_token(head.connection.as_deref().unwrap_or(""), "upgrade"));
        let digest = Sha1::new().chain_update(key).chain_update(handshake::GUID).finalize();
        assert_eq!(STANDARD.encode(digest).as_bytes(), &accept[..]);
    }
});
