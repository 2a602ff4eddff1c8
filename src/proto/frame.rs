//! WebSocket frame headers (RFC 6455 §5.2): parse, validate, encode.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```
//!
//! Checks run in byte order as soon as the byte that decides them is present, so a bad
//! first byte fails at once and the outcome never depends on how the input was split.

use std::fmt;

use super::Parsed;
use super::close::CloseCode;
use super::limits::{MAX_CONTROL_PAYLOAD, MAX_FRAME_HEADER};

/// Frame opcodes (RFC 6455 §5.2, §11.8). The reserved ones are refused at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: the next fragment of a message.
    Continuation,
    /// 0x1: a UTF-8 text message.
    Text,
    /// 0x2: a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// The opcode for a 4-bit value, `None` for the reserved 0x3-0x7 and 0xB-0xF.
    pub fn from_u8(v: u8) -> Option<OpCode> {
        Some(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Control frames are close, ping and pong (opcodes with the high bit set, §5.5).
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

/// Which side of the connection is parsing: it decides which masking is required (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We are the server: every frame we receive must be masked.
    Server,
    /// We are a client (the load generator): every frame we receive must be unmasked.
    Client,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of its message.
    pub fin: bool,
    /// RSV1: with permessage-deflate, "this message is compressed" (RFC 7692 §6), on the
    /// first frame of a data message only.
    pub rsv1: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on client-to-server frames.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
}

/// A frame header that breaks RFC 6455. Each variant is one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// RSV1-3 set without a negotiated extension (§5.2); RSV2 or RSV3 at all (no
    /// extension we negotiate defines them). Close 1002.
    ReservedBits,
    /// RSV1 on a control frame with permessage-deflate (RFC 7692 §6.1: "An endpoint
    /// MUST NOT set the "Per-Message Compressed" bit of control frames"). Close 1002.
    CompressedControl,
    /// RSV1 on a continuation frame (RFC 7692 §6.1: the bit is set on "the first frame
    /// of a message" only). Close 1002.
    CompressedContinuation,
    /// A reserved opcode (§5.2). Close 1002.
    UnknownOpcode(u8),
    /// A control frame with FIN clear (§5.5: "Control frames MUST NOT be fragmented"). 1002.
    FragmentedControl,
    /// A control frame payload over 125 bytes (§5.5). Close 1002.
    ControlTooLong,
    /// A client frame without a mask (§5.1: "the server MUST close the connection"). 1002.
    Unmasked,
    /// A server frame with a mask (§5.1). Close 1002.
    MaskedFromServer,
    /// A length not in the minimal encoding (§5.2: "the minimal number of bytes MUST be
    /// used"). Close 1002.
    NonMinimalLength,
    /// A 64-bit length with the most significant bit set (§5.2). Close 1002.
    LengthMsb,
    /// A declared length over the message limit, refused before any payload arrives. 1009.
    TooLarge,
}

impl FrameError {
    /// The close code this violation gets.
    pub fn close_code(self) -> CloseCode {
        match self {
            FrameError::ReservedBits
            | FrameError::CompressedControl
            | FrameError::CompressedContinuation
            | FrameError::UnknownOpcode(_)
            | FrameError::FragmentedControl
            | FrameError::ControlTooLong
            | FrameError::Unmasked
            | FrameError::MaskedFromServer
            | FrameError::NonMinimalLength
            | FrameError::LengthMsb => CloseCode::PROTOCOL_ERROR,
            FrameError::TooLarge => CloseCode::MESSAGE_TOO_BIG,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::ReservedBits => f.write_str("reserved bits set"),
            FrameError::CompressedControl => f.write_str("compressed control frame"),
            FrameError::CompressedContinuation => f.write_str("RSV1 on a continuation frame"),
            FrameError::UnknownOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            FrameError::FragmentedControl => f.write_str("fragmented control frame"),
            FrameError::ControlTooLong => f.write_str("control frame over 125 bytes"),
            FrameError::Unmasked => f.write_str("unmasked client frame"),
            FrameError::MaskedFromServer => f.write_str("masked server frame"),
            FrameError::NonMinimalLength => f.write_str("payload length not minimally encoded"),
            FrameError::LengthMsb => f.write_str("64-bit payload length with the top bit set"),
            FrameError::TooLarge => f.write_str("frame larger than the message limit"),
        }
    }
}

impl FrameHeader {
    /// Parses and validates a frame header from the start of `buf`.
    ///
    /// `max_payload` is the largest payload a data frame may declare (the message limit
    /// minus what earlier fragments used); a larger one is [`FrameError::TooLarge`].
    /// Control frames are bounded by the 125-byte rule instead, so a ping between the
    /// fragments of a nearly full message is still accepted.
    ///
    /// `deflate`: permessage-deflate was negotiated, so RSV1 may be set on the first
    /// frame of a data message (RFC 7692 §6).
    pub fn parse(
        buf: &[u8],
        role: Role,
        max_payload: u64,
        deflate: bool,
    ) -> Result<Parsed<FrameHeader>, FrameError> {
        let Some(&b0) = buf.first() else {
            return Ok(Parsed::Partial);
        };
        let rsv1 = b0 & 0x40 != 0;
        if b0 & 0x30 != 0 || (rsv1 && !deflate) {
            return Err(FrameError::ReservedBits);
        }
        let fin = b0 & 0x80 != 0;
        let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(FrameError::UnknownOpcode(b0 & 0x0f))?;
        if rsv1 && opcode.is_control() {
            return Err(FrameError::CompressedControl);
        }
        if rsv1 && opcode == OpCode::Continuation {
            return Err(FrameError::CompressedContinuation);
        }
        if opcode.is_control() && !fin {
            return Err(FrameError::FragmentedControl);
        }
        let Some(&b1) = buf.get(1) else {
            return Ok(Parsed::Partial);
        };
        let masked = b1 & 0x80 != 0;
        match (role, masked) {
            (Role::Server, false) => return Err(FrameError::Unmasked),
            (Role::Client, true) => return Err(FrameError::MaskedFromServer),
            _ => {}
        }
        let len7 = b1 & 0x7f;
        if opcode.is_control() && usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(FrameError::ControlTooLong);
        }
        let (payload_len, mut pos) = match len7 {
            126 => {
                let Some(b) = buf.get(2..4) else {
                    return Ok(Parsed::Partial);
                };
                let len = u16::from_be_bytes([b[0], b[1]]);
                if len < 126 {
                    return Err(FrameError::NonMinimalLength);
                }
                (u64::from(len), 4)
            }
            127 => {
                let Some(b) = buf.get(2..10) else {
                    return Ok(Parsed::Partial);
                };
                let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(FrameError::LengthMsb);
                }
                if len <= u64::from(u16::MAX) {
                    return Err(FrameError::NonMinimalLength);
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        if !opcode.is_control() && payload_len > max_payload {
            return Err(FrameError::TooLarge);
        }
        let mask = if masked {
            let Some(m) = buf.get(pos..pos + 4) else {
                return Ok(Parsed::Partial);
            };
            pos += 4;
            Some([m[0], m[1], m[2], m[3]])
        } else {
            None
        };
        Ok(Parsed::Complete {
            value: FrameHeader {
                fin,
                rsv1,
                opcode,
                mask,
                payload_len,
            },
            consumed: pos,
        })
    }

    /// Encodes the header into `out`, returning the number of bytes written (2 to 14).
    pub fn encode(&self, out: &mut [u8; MAX_FRAME_HEADER]) -> usize {
        out[0] = (u8::from(self.fin) << 7) | (u8::from(self.rsv1) << 6) | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut pos = match self.payload_len {
            n @ 0..=125 => {
                out[1] = mask_bit | n as u8;
                2
            }
            n @ 126..=0xffff => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&n.to_be_bytes());
                10
            }
        };
        if let Some(m) = self.mask {
            out[pos..pos + 4].copy_from_slice(&m);
            pos += 4;
        }
        pos
    }

    /// Length of the encoded header.
    pub fn encoded_len(&self) -> usize {
        let len = match self.payload_len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        };
        len + if self.mask.is_some() { 4 } else { 0 }
    }
}

/// Appends an unmasked (server-to-client) frame.
pub fn write_frame(out: &mut Vec<u8>, fin: bool, opcode: OpCode, payload: &[u8]) {
    write_frame_rsv1(out, fin, false, opcode, payload);
}

/// Appends an unmasked frame with RSV1 as given: set on a whole compressed message
/// (RFC 7692 §6: `payload` is its compressed bytes).
pub fn write_frame_rsv1(out: &mut Vec<u8>, fin: bool, rsv1: bool, opcode: OpCode, payload: &[u8]) {
    let header = FrameHeader {
        fin,
        rsv1,
        opcode,
        mask: None,
        payload_len: payload.len() as u64,
    };
    let mut h = [0; MAX_FRAME_HEADER];
    let n = header.encode(&mut h);
    out.reserve(n + payload.len());
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(payload);
}

/// Appends a masked (client-to-server) frame, as the load generator and tests send them.
pub fn write_masked_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: [u8; 4],
) {
    write_masked_frame_rsv1(out, fin, false, opcode, payload, mask);
}

/// Appends a masked frame with RSV1 as given (a client's compressed message).
pub fn write_masked_frame_rsv1(
    out: &mut Vec<u8>,
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: [u8; 4],
) {
    let header = FrameHeader {
        fin,
        rsv1,
        opcode,
        mask: Some(mask),
        payload_len: payload.len() as u64,
    };
    let mut h = [0; MAX_FRAME_HEADER];
    let n = header.encode(&mut h);
    out.reserve(n + payload.len());
    out.extend_from_slice(&h[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    super::mask::unmask(&mut out[start..], mask, 0);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MAX: u64 = u64::MAX >> 1;

    fn parse(buf: &[u8]) -> Result<Parsed<FrameHeader>, FrameError> {
        FrameHeader::parse(buf, Role::Server, MAX, false)
    }

    fn complete(buf: &[u8]) -> (FrameHeader, usize) {
        match parse(buf) {
            Ok(Parsed::Complete { value, consumed }) => (value, consumed),
            other => panic!("expected a header from {buf:02x?}, got {other:?}"),
        }
    }

    #[test]
    fn rfc_examples() {
        // §5.7: a single-frame masked text message "Hello".
        let (h, n) = complete(&[
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ]);
        assert_eq!(n, 6);
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                rsv1: false,
                opcode: OpCode::Text,
                mask: Some([0x37, 0xfa, 0x21, 0x3d]),
                payload_len: 5
            }
        );
        // §5.7: unmasked frames as a client sees them.
        let h = FrameHeader::parse(&[0x01, 0x03], Role::Client, MAX, false).unwrap();
        assert_eq!(
            h.map(|h| (h.fin, h.opcode)),
            Parsed::Complete {
                value: (false, OpCode::Text),
                consumed: 2
            }
        );
        // 256 bytes binary, 16-bit length; 64 KiB binary, 64-bit length.
        let (h, n) = complete(&[0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4]);
        assert_eq!((h.payload_len, n), (256, 8));
        let (h, n) = complete(&[0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4]);
        assert_eq!((h.payload_len, n), (65536, 14));
    }

    #[test]
    fn length_boundaries() {
        for len in [0u64, 1, 125, 126, 127, 0xffff, 0x10000, 1 << 40, MAX] {
            let h = FrameHeader {
                fin: true,
                rsv1: false,
                opcode: OpCode::Binary,
                mask: Some([1, 2, 3, 4]),
                payload_len: len,
            };
            let mut buf = [0; MAX_FRAME_HEADER];
            let n = h.encode(&mut buf);
            assert_eq!(n, h.encoded_len());
            assert_eq!(complete(&buf[..n]), (h, n), "len {len}");
            // Every proper prefix is Partial.
            for cut in 0..n {
                assert_eq!(
                    parse(&buf[..cut]),
                    Ok(Parsed::Partial),
                    "len {len} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn violations() {
        let e = |b: &[u8]| parse(b).unwrap_err();
        assert_eq!(e(&[0xc1]), FrameError::ReservedBits, "RSV1");
        assert_eq!(e(&[0xa1]), FrameError::ReservedBits, "RSV2");
        assert_eq!(e(&[0x91]), FrameError::ReservedBits, "RSV3");
        // permessage-deflate (RFC 7692 §6.1): RSV1 on a data message's first frame only.
        let d = |b: &[u8]| FrameHeader::parse(b, Role::Server, MAX, true);
        assert!(
            matches!(d(&[0xc1, 0x80, 0, 0, 0, 0]), Ok(Parsed::Complete { value, .. }) if value.rsv1)
        );
        assert!(
            matches!(d(&[0x42, 0x80, 0, 0, 0, 0]), Ok(Parsed::Complete { value, .. }) if value.rsv1 && !value.fin)
        );
        assert_eq!(d(&[0xc0]), Err(FrameError::CompressedContinuation));
        assert_eq!(d(&[0x40]), Err(FrameError::CompressedContinuation));
        for op in [0x8, 0x9, 0xa] {
            assert_eq!(
                d(&[0xc0 | op]),
                Err(FrameError::CompressedControl),
                "{op:#x}"
            );
        }
        assert_eq!(
            d(&[0xe1]),
            Err(FrameError::ReservedBits),
            "RSV2 stays reserved"
        );
        assert_eq!(
            d(&[0xd1]),
            Err(FrameError::ReservedBits),
            "RSV3 stays reserved"
        );
        for op in [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(e(&[0x80 | op]), FrameError::UnknownOpcode(op));
        }
        assert_eq!(
            e(&[0x09]),
            FrameError::FragmentedControl,
            "ping without FIN"
        );
        assert_eq!(
            e(&[0x08]),
            FrameError::FragmentedControl,
            "close without FIN"
        );
        assert_eq!(
            e(&[0x89, 0xfe]),
            FrameError::ControlTooLong,
            "ping with 16-bit length"
        );
        assert_eq!(e(&[0x89, 0xfe - 0x80 + 0x80]), FrameError::ControlTooLong);
        assert!(
            parse(&[0x89, 0x80 | 125, 0, 0, 0, 0]).is_ok(),
            "125-byte ping is fine"
        );
        assert_eq!(e(&[0x81, 0x05]), FrameError::Unmasked);
        assert_eq!(
            FrameHeader::parse(&[0x81, 0x85], Role::Client, MAX, false),
            Err(FrameError::MaskedFromServer)
        );
        assert_eq!(e(&[0x82, 0xfe, 0x00, 0x7d]), FrameError::NonMinimalLength);
        assert_eq!(
            e(&[0x82, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff]),
            FrameError::NonMinimalLength
        );
        assert_eq!(
            e(&[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            FrameError::LengthMsb
        );
        for err in [
            FrameError::ReservedBits,
            FrameError::UnknownOpcode(3),
            FrameError::FragmentedControl,
            FrameError::ControlTooLong,
            FrameError::Unmasked,
            FrameError::MaskedFromServer,
            FrameError::NonMinimalLength,
            FrameError::LengthMsb,
        ] {
            assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR, "{err}");
        }
        assert_eq!(
            FrameError::TooLarge.close_code(),
            CloseCode::MESSAGE_TOO_BIG
        );
    }

    /// A declared length over the limit fails from the header alone: the 64-bit length
    /// is enough, no mask or payload needed.
    #[test]
    fn too_large_from_header_alone() {
        let hdr = [0x82, 0xff, 0, 0, 0, 0, 0x40, 0, 0, 0]; // 1 GiB, no mask bytes yet
        assert_eq!(
            FrameHeader::parse(&hdr, Role::Server, 1 << 20, false),
            Err(FrameError::TooLarge)
        );
        assert_eq!(
            FrameHeader::parse(&[0x82, 0x80 | 101], Role::Server, 100, false),
            Err(FrameError::TooLarge)
        );
        assert!(
            FrameHeader::parse(&[0x82, 0x80 | 100, 0, 0, 0, 0], Role::Server, 100, false).is_ok()
        );
    }

    #[test]
    fn masked_frame_round_trip() {
        let mut out = Vec::new();
        write_masked_frame(
            &mut out,
            true,
            OpCode::Text,
            b"Hello",
            [0x37, 0xfa, 0x21, 0x3d],
        );
        assert_eq!(
            out,
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        out.clear();
        write_frame(&mut out, true, OpCode::Pong, b"Hello");
        assert_eq!(out, [0x8a, 0x05, b'H', b'e', b'l', b'l', b'o']);
        // RFC 7692 §7.2.3.1: a compressed "Hello" in one frame.
        out.clear();
        write_frame_rsv1(
            &mut out,
            true,
            true,
            OpCode::Text,
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
        );
        assert_eq!(out, [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    }

    fn opcode() -> impl Strategy<Value = OpCode> {
        prop_oneof![
            Just(OpCode::Continuation),
            Just(OpCode::Text),
            Just(OpCode::Binary),
            Just(OpCode::Close),
            Just(OpCode::Ping),
            Just(OpCode::Pong),
        ]
    }

    proptest! {
        /// Any header we can encode parses back to itself, consuming exactly its length.
        #[test]
        fn header_round_trip(op in opcode(), fin: bool, mask: Option<[u8; 4]>, len in prop_oneof![0u64..=200, 0u64..=0x2_0000, 0u64..=MAX]) {
            let fin = fin || op.is_control();
            let len = if op.is_control() { len % 126 } else { len };
            let h = FrameHeader { fin, rsv1: false, opcode: op, mask, payload_len: len };
            let mut buf = [0; MAX_FRAME_HEADER];
            let n = h.encode(&mut buf);
            let role = if mask.is_some() { Role::Server } else { Role::Client };
            prop_assert_eq!(FrameHeader::parse(&buf[..n], role, MAX, false), Ok(Parsed::Complete { value: h, consumed: n }));
        }

        /// Arbitrary bytes never panic, and a result is the same whatever follows it.
        #[test]
        fn arbitrary_bytes(buf in proptest::collection::vec(any::<u8>(), 0..20)) {
            let r = FrameHeader::parse(&buf, Role::Server, 1 << 20, false);
            if let Ok(Parsed::Complete { consumed, .. }) = r {
                prop_assert_eq!(FrameHeader::parse(&buf[..consumed], Role::Server, 1 << 20, false), r);
            }
        }
    }
}
