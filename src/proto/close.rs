//! Close codes and close frame payloads (RFC 6455 §5.5.1, §7.4).

use std::fmt;

use super::limits::{MAX_CLOSE_REASON, MAX_CONTROL_PAYLOAD};

/// A close status code (RFC 6455 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is going down (graceful shutdown) or the page navigated away.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1007: a text message or close reason that is not UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a policy violation (for example a consumer too slow to keep up).
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message over the size limit.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: an unexpected condition on the server.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1013: try again later (overload).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// May this code appear in a close frame on the wire?
    ///
    /// RFC 6455 §7.4.1/§7.4.2 and the IANA registry: 1000-1003 and 1007-1014 are defined;
    /// 1004 is reserved, 1005, 1006 and 1015 are for reporting only and "MUST NOT be set
    /// as a status code in a Close control frame"; 0-999 are unused; 1016-2999 are
    /// reserved for future protocol revisions; 3000-4999 belong to libraries and
    /// applications.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a close frame's payload is invalid (RFC 6455 §5.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseError {
    /// A one-byte payload: a code needs two bytes. Close 1002.
    OneByte,
    /// A code that may not be sent (see [`CloseCode::is_valid_on_wire`]). Close 1002.
    BadCode(u16),
    /// The reason is not UTF-8 (§5.5.1: "the data MUST be UTF-8"). Close 1007.
    ReasonNotUtf8,
}

impl CloseError {
    /// The code we close with when the peer sends such a payload.
    pub fn close_code(self) -> CloseCode {
        match self {
            CloseError::OneByte | CloseError::BadCode(_) => CloseCode::PROTOCOL_ERROR,
            CloseError::ReasonNotUtf8 => CloseCode::INVALID_PAYLOAD,
        }
    }
}

impl fmt::Display for CloseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseError::OneByte => f.write_str("close payload of one byte"),
            CloseError::BadCode(c) => write!(f, "close code {c} may not be sent"),
            CloseError::ReasonNotUtf8 => f.write_str("close reason is not UTF-8"),
        }
    }
}

/// Parses a close frame payload: `None` for an empty payload (no status code), else the
/// code and the reason.
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<(CloseCode, &str)>, CloseError> {
    match payload {
        [] => Ok(None),
        [_] => Err(CloseError::OneByte),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid_on_wire() {
                return Err(CloseError::BadCode(code.0));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| CloseError::ReasonNotUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Builds a close payload: the code, then `reason` cut to [`MAX_CLOSE_REASON`] bytes on a
/// character boundary so the frame stays a legal control frame.
pub fn close_payload(code: Option<CloseCode>, reason: &str) -> Vec<u8> {
    let Some(code) = code else {
        return Vec::new();
    };
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = Vec::with_capacity(2 + end);
    p.extend_from_slice(&code.0.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..end]);
    debug_assert!(p.len() <= MAX_CONTROL_PAYLOAD);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes() {
        // Autobahn 7.7.x (valid) and 7.9.x (invalid) code lists, plus the IANA additions.
        for c in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
        ] {
            assert!(CloseCode(c).is_valid_on_wire(), "{c}");
        }
        for c in [3000, 3999, 4000, 4999] {
            assert!(CloseCode(c).is_valid_on_wire(), "{c}");
        }
        for c in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(c).is_valid_on_wire(), "{c}");
        }
    }

    #[test]
    fn parse_payloads() {
        assert_eq!(parse_close_payload(b""), Ok(None));
        assert_eq!(parse_close_payload(b"\x03"), Err(CloseError::OneByte));
        assert_eq!(
            parse_close_payload(b"\x03\xe8"),
            Ok(Some((CloseCode::NORMAL, "")))
        );
        assert_eq!(
            parse_close_payload(b"\x03\xe9bye"),
            Ok(Some((CloseCode(1001), "bye")))
        );
        assert_eq!(
            parse_close_payload(b"\x03\xed"),
            Err(CloseError::BadCode(1005))
        );
        assert_eq!(
            parse_close_payload(b"\x03\xe8\xff"),
            Err(CloseError::ReasonNotUtf8)
        );
        assert_eq!(CloseError::OneByte.close_code(), CloseCode::PROTOCOL_ERROR);
        assert_eq!(
            CloseError::BadCode(0).close_code(),
            CloseCode::PROTOCOL_ERROR
        );
        assert_eq!(
            CloseError::ReasonNotUtf8.close_code(),
            CloseCode::INVALID_PAYLOAD
        );
    }

    #[test]
    fn payload_truncates_on_char_boundary() {
        assert!(close_payload(None, "ignored").is_empty());
        let long = "é".repeat(100); // 200 bytes
        let p = close_payload(Some(CloseCode::GOING_AWAY), &long);
        assert!(p.len() <= MAX_CONTROL_PAYLOAD);
        assert_eq!(p.len(), 2 + 122, "61 two-byte characters fit in 123 bytes");
        let (code, reason) = parse_close_payload(&p).unwrap().unwrap();
        assert_eq!(code, CloseCode::GOING_AWAY);
        assert_eq!(reason, "é".repeat(61));
    }
}
