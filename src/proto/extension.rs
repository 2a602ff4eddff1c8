//! `Sec-WebSocket-Extensions` negotiation for permessage-deflate (RFC 7692 §5, §7.1).
//!
//! The server accepts the first acceptable permessage-deflate offer of the request (all
//! header lines, in order) and answers with
//! `permessage-deflate; server_no_context_takeover; client_no_context_takeover`
//! (plus `server_max_window_bits=N` when the offer asked for a window of N). No context
//! takeover either way means neither side keeps compressor state between messages: the
//! server compresses a published message once for every subscriber, and inflates each
//! client message with a fresh inflater.
//!
//! An offer this server cannot honour, or one that breaks §7.1 (an unknown or repeated
//! parameter, a bad value), is skipped; with none left the extension is declined (the
//! 101 goes out without it). A bad offer never fails the handshake: that is how every
//! peer library treats it, and a client that needs the extension closes on its own.
//!
//! Offers real clients send, all accepted: Chromium, Python `websockets` and Node `ws`
//! send `permessage-deflate; client_max_window_bits`; Firefox adds nothing else;
//! Autobahn|TestSuite also asks for `server_no_context_takeover`, `server_max_window_bits`
//! and `client_no_context_takeover`.

use super::deflate::{MAX_WINDOW_BITS, MIN_WINDOW_BITS};

/// The extension's name (RFC 7692 §7).
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// What was agreed for one connection. Both directions are without context takeover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// The window the server compresses with: 15, or less when the client asked with
    /// `server_max_window_bits` (§7.1.2.1).
    pub server_window_bits: u8,
    /// The client asked for `server_max_window_bits`: the response repeats the value.
    pub window_requested: bool,
}

/// A valid offer (§7.1), as far as it matters to us. Its flags
/// (`server_no_context_takeover`, `client_no_context_takeover`, `client_max_window_bits`)
/// say what the client allows; we take no context either way, which every value of them
/// permits (§7.1.1.1, §7.1.1.2), and never limit the client's window, so only their
/// validity counts.
#[derive(Debug, Default)]
struct Offer {
    server_max_window_bits: Option<u8>,
}

/// The first acceptable permessage-deflate offer in `header` (the joined
/// `Sec-WebSocket-Extensions` lines), or `None` to decline.
pub fn negotiate(header: &str) -> Option<Deflate> {
    split_outside_quotes(header, b',')
        .into_iter()
        .filter_map(parse_offer)
        .find_map(|offer| {
            let bits = match offer.server_max_window_bits {
                // zlib cannot compress raw deflate with a 256-byte window: skip the offer.
                Some(n) if n < MIN_WINDOW_BITS => return None,
                Some(n) => n,
                None => MAX_WINDOW_BITS,
            };
            Some(Deflate {
                server_window_bits: bits,
                window_requested: offer.server_max_window_bits.is_some(),
            })
        })
}

/// Appends the response header line for an accepted offer, CRLF included.
///
/// `client_no_context_takeover` is in every answer, asked for or not (§7.1.1.2: "A
/// server MAY include the "client_no_context_takeover" extension parameter in the
/// corresponding extension negotiation response ... even if the extension negotiation
/// offer does not include it"): it is what lets us inflate each message on its own.
/// `client_max_window_bits` is never sent: we inflate with the largest window, which
/// accepts whatever the client compresses with (§7.1.2.2).
pub fn write_response(out: &mut Vec<u8>, d: &Deflate) {
    out.extend_from_slice(
        b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    );
    if d.window_requested {
        out.extend_from_slice(
            format!("; server_max_window_bits={}", d.server_window_bits).as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
}

/// Splits on `sep` outside quoted strings (RFC 9110 §5.6.4), trimming whitespace.
fn split_outside_quotes(s: &str, sep: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in s.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            parts.push(s[start..i].trim_matches([' ', '\t']));
            start = i + 1;
        }
    }
    parts.push(s[start..].trim_matches([' ', '\t']));
    parts
}

/// RFC 9110 §5.6.2 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A parameter value: a token, or a quoted string whose content is a token (RFC 6455
/// §9.1: "the value MUST conform to the token ABNF" once unquoted). `None` if neither.
fn param_value(v: &str) -> Option<String> {
    let v = v.trim_matches([' ', '\t']);
    let unquoted = match v.strip_prefix('"') {
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            let mut s = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                s.push(if c == '\\' { chars.next()? } else { c });
            }
            s
        }
        None => v.to_owned(),
    };
    is_token(&unquoted).then_some(unquoted)
}

/// A window size: `1*DIGIT` from 8 to 15 without leading zeros (§7.1.2.1, §7.1.2.2).
fn window_bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|n| (8..=15).contains(n))
}

/// One element of the list, if it is a valid permessage-deflate offer (§7.1: an offer
/// with an unknown parameter, a repeated one or an invalid value is declined).
fn parse_offer(element: &str) -> Option<Offer> {
    let mut parts = split_outside_quotes(element, b';').into_iter();
    let name = parts.next()?;
    if !name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
        return None;
    }
    let mut offer = Offer::default();
    let mut seen = [false; 4];
    for param in parts {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim_matches([' ', '\t']), Some(param_value(v)?)),
            None => (param, None),
        };
        let slot = match key {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return None, // §7.1: unknown parameter
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None; // §7.1: "more than one parameter with the same name"
        }
        match (slot, value.as_deref()) {
            (0 | 1 | 3, None) => {}
            (2, Some(v)) => offer.server_max_window_bits = Some(window_bits(v)?),
            (3, Some(v)) => {
                window_bits(v)?;
            }
            _ => return None, // a flag with a value, or a window without one
        }
    }
    Some(offer)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const PLAIN: Deflate = Deflate {
        server_window_bits: 15,
        window_requested: false,
    };

    fn bits(n: u8) -> Option<Deflate> {
        Some(Deflate {
            server_window_bits: n,
            window_requested: true,
        })
    }

    #[test]
    fn real_clients() {
        for offer in [
            "permessage-deflate; client_max_window_bits", // Chromium, websockets, ws
            "permessage-deflate",
            "permessage-deflate; client_no_context_takeover; client_max_window_bits",
            "permessage-deflate;client_max_window_bits=15;server_no_context_takeover",
            "Permessage-Deflate; client_max_window_bits=\"10\"",
            "x-webkit-deflate-frame, permessage-deflate",
            "permessage-deflate; client_max_window_bits, permessage-deflate",
        ] {
            assert_eq!(negotiate(offer), Some(PLAIN), "{offer}");
        }
        assert_eq!(
            negotiate("permessage-deflate; server_max_window_bits=10"),
            bits(10)
        );
        assert_eq!(
            negotiate("permessage-deflate; server_max_window_bits=\"9\""),
            bits(9)
        );
    }

    /// Several offers: the first acceptable one wins (§5.1), bad ones are skipped.
    #[test]
    fn first_acceptable_offer() {
        assert_eq!(
            negotiate(
                "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=12, permessage-deflate"
            ),
            bits(12),
            "8 cannot be honoured by zlib: the next offer"
        );
        assert_eq!(
            negotiate("permessage-deflate; foo, permessage-deflate; client_max_window_bits"),
            Some(PLAIN)
        );
        // Autobahn 13.7's offers.
        assert_eq!(
            negotiate(
                "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=9, permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover, permessage-deflate; client_no_context_takeover; client_max_window_bits"
            ),
            bits(9)
        );
    }

    #[test]
    fn declined() {
        for offer in [
            "",
            ",",
            "x-webkit-deflate-frame",
            "permessage-deflate; unknown",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=true",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=abc",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=",
            "permessage-deflate; client_max_window_bits=\"1 5\"",
            "permessage-deflate; client_max_window_bits=\"15",
            "permessage-deflate; Server_No_Context_Takeover",
            "deflate-permessage",
        ] {
            assert_eq!(negotiate(offer), None, "{offer:?}");
        }
    }

    #[test]
    fn response() {
        let mut out = Vec::new();
        write_response(&mut out, &PLAIN);
        assert_eq!(
            out,
            b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        );
        out.clear();
        write_response(&mut out, &bits(10).unwrap());
        assert_eq!(
            out,
            b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10\r\n"
        );
    }

    #[test]
    fn quoted_commas_do_not_split() {
        assert_eq!(
            split_outside_quotes("a; b=\"x,y\", c", b','),
            ["a; b=\"x,y\"", "c"]
        );
        assert_eq!(negotiate("foo; bar=\"a,permessage-deflate\""), None);
    }

    proptest! {
        /// Any header value: never a panic; an answer is always a window zlib can use.
        #[test]
        fn any_header(s in "[ -~]{0,200}") {
            if let Some(d) = negotiate(&s) {
                prop_assert!((MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&d.server_window_bits));
            }
        }
    }
}
