//! Message assembly (RFC 6455 §5.4-§5.6): frames in, messages out.
//!
//! [`Decoder`] takes bytes as they arrive, in any split, and yields whole messages:
//! fragments joined, control frames taken from between fragments, client payloads
//! unmasked, text checked for UTF-8 as it arrives, the message size limit enforced from
//! each frame's header. An idle decoder holds no heap memory: the payload buffer is
//! handed out with each message, and a partial header is kept in 14 inline bytes.
//!
//! With permessage-deflate ([`Decoder::enable_deflate`]), a message whose first frame has
//! RSV1 set is collected compressed and inflated once complete, into a buffer that never
//! grows past the message limit (RFC 7692 §6.2; [`super::deflate::inflate`]).

use std::fmt;

use super::Parsed;
use super::close::{CloseCode, CloseError, parse_close_payload};
use super::deflate::{self, InflateError};
use super::frame::{FrameError, FrameHeader, OpCode, Role};
use super::limits::{MAX_FRAME_HEADER, compressed_limit};
use super::mask::unmask;

/// A complete message or control frame from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; the bytes are valid UTF-8.
    Text(Vec<u8>),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping; answer with a pong carrying the same payload (§5.5.2).
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// A close frame: its code and reason, or `None` when it carried no code.
    Close(Option<(CloseCode, String)>),
}

/// A violation of the message-level rules. Each variant is one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    /// A frame header rule (see [`FrameError`]), including the size limit.
    Frame(FrameError),
    /// A continuation frame with no message started (§5.4). Close 1002.
    ContinuationWithoutStart,
    /// A new text or binary frame while a fragmented message is open (§5.4). Close 1002.
    DataInsideFragmented,
    /// A text message that is not UTF-8 (§8.1), detected at the first bad byte. Close 1007.
    InvalidUtf8,
    /// A malformed close payload (§5.5.1). Close 1002 or 1007.
    Close(CloseError),
    /// A compressed message that inflates past the message limit (1009) or is not
    /// valid deflate data (1007) (RFC 7692 §6.2).
    Inflate(InflateError),
}

impl WsError {
    /// The close code for this violation.
    pub fn close_code(self) -> CloseCode {
        match self {
            WsError::Frame(e) => e.close_code(),
            WsError::ContinuationWithoutStart | WsError::DataInsideFragmented => {
                CloseCode::PROTOCOL_ERROR
            }
            WsError::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            WsError::Close(e) => e.close_code(),
            WsError::Inflate(e) => e.close_code(),
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Frame(e) => e.fmt(f),
            WsError::ContinuationWithoutStart => {
                f.write_str("continuation frame without a message")
            }
            WsError::DataInsideFragmented => {
                f.write_str("new data frame inside a fragmented message")
            }
            WsError::InvalidUtf8 => f.write_str("text message is not UTF-8"),
            WsError::Close(e) => e.fmt(f),
            WsError::Inflate(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for WsError {}

impl From<FrameError> for WsError {
    fn from(e: FrameError) -> Self {
        WsError::Frame(e)
    }
}

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Current {
    opcode: OpCode,
    fin: bool,
    mask: Option<[u8; 4]>,
    remaining: u64,
    /// Payload bytes of this frame already read, modulo 4: the mask phase of the next
    /// byte. (A byte, not a count: `Current` stays 16 bytes, and with it every idle
    /// WebSocket's decoder.)
    phase: u8,
}

/// Incremental WebSocket message decoder for one connection.
///
/// Call [`Decoder::decode`] with the bytes received; it consumes what it can and returns
/// at most one message per call, so call again with the rest. After an error or a close
/// message the connection is over: do not feed it more.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    /// Bytes of a frame header split across reads.
    hdr: [u8; MAX_FRAME_HEADER],
    hdr_len: u8,
    cur: Option<Current>,
    /// Opcode (Text or Binary) of the data message being assembled, if any.
    open: Option<OpCode>,
    /// Payloads being received; allocated only while a frame's payload is (a million
    /// idle connections do not pay 56 bytes each for it).
    asm: Option<Box<Assembly>>,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    deflate: bool,
    /// The open message is compressed: `data` holds deflate bytes, checked for UTF-8
    /// only once inflated.
    compressed: bool,
}

/// The payloads of a message and of a control frame in the middle of it.
#[derive(Debug, Default)]
struct Assembly {
    data: Vec<u8>,
    /// Length of the prefix of `data` known to be valid UTF-8 (text messages only).
    utf8_ok: usize,
    ctrl: Vec<u8>,
}

/// Initial reservation for a data payload: the declared length, up to this much. A peer
/// that declares 1 MiB and sends nothing must not make us allocate 1 MiB.
const RESERVE_CAP: u64 = 64 * 1024;

impl Decoder {
    /// A decoder for frames received in the given role.
    pub fn new(role: Role) -> Decoder {
        Decoder {
            role,
            hdr: [0; MAX_FRAME_HEADER],
            hdr_len: 0,
            cur: None,
            open: None,
            asm: None,
            deflate: false,
            compressed: false,
        }
    }

    /// permessage-deflate was negotiated: from now on RSV1 on the first frame of a data
    /// message means it is compressed (RFC 7692 §6).
    pub fn enable_deflate(&mut self) {
        self.deflate = true;
    }

    fn asm(&mut self) -> &mut Assembly {
        self.asm.get_or_insert_default()
    }

    /// Bytes of the data message received so far.
    fn data_len(&self) -> usize {
        self.asm.as_ref().map_or(0, |a| a.data.len())
    }

    /// Gives the assembly's memory back once it holds nothing.
    fn release(&mut self) {
        if self
            .asm
            .as_ref()
            .is_some_and(|a| a.data.capacity() == 0 && a.ctrl.capacity() == 0)
        {
            self.asm = None;
        }
    }

    /// Is a message or frame partly received? (An idle connection answers false.)
    pub fn in_progress(&self) -> bool {
        self.hdr_len > 0 || self.cur.is_some() || self.open.is_some()
    }

    /// Consumes bytes from `input`; returns how many were consumed and the message they
    /// completed, if any. `max_message` bounds a data message, all fragments together.
    ///
    /// Returns before the end of `input` only when a message is complete.
    pub fn decode(
        &mut self,
        input: &[u8],
        max_message: usize,
    ) -> Result<(usize, Option<Message>), WsError> {
        let mut pos = 0;
        loop {
            let cur = match self.cur {
                Some(cur) => cur,
                None => match self.read_header(&input[pos..], max_message)? {
                    Some((cur, n)) => {
                        pos += n;
                        cur
                    }
                    None => return Ok((input.len(), None)),
                },
            };
            let take = cur.remaining.min((input.len() - pos) as u64) as usize;
            self.read_payload(cur, &input[pos..pos + take])?;
            pos += take;
            let cur = self.cur.as_mut().expect("frame in progress");
            cur.remaining -= take as u64;
            cur.phase = ((usize::from(cur.phase) + take) % 4) as u8;
            if cur.remaining > 0 {
                return Ok((pos, None));
            }
            let cur = self.cur.take().expect("frame in progress");
            if let Some(msg) = self.finish_frame(cur, max_message)? {
                return Ok((pos, Some(msg)));
            }
            if pos == input.len() {
                return Ok((pos, None));
            }
        }
    }

    /// Parses the next frame header, buffering a partial one. Returns the frame and the
    /// number of bytes of `input` it used, or `None` when all of `input` was buffered.
    fn read_header(
        &mut self,
        input: &[u8],
        max_message: usize,
    ) -> Result<Option<(Current, usize)>, WsError> {
        // A compressed message may be a little longer on the wire than the limit (see
        // `compressed_limit`); an uncompressed one is held to the limit below.
        let wire_max = if self.deflate {
            compressed_limit(max_message)
        } else {
            max_message
        };
        let budget = wire_max.saturating_sub(self.data_len()) as u64;
        let had = usize::from(self.hdr_len);
        let (parsed, from_input) = if had == 0 {
            (
                FrameHeader::parse(input, self.role, budget, self.deflate)?,
                input.len(),
            )
        } else {
            let add = input.len().min(MAX_FRAME_HEADER - had);
            self.hdr[had..had + add].copy_from_slice(&input[..add]);
            (
                FrameHeader::parse(&self.hdr[..had + add], self.role, budget, self.deflate)?,
                add,
            )
        };
        let (h, consumed) = match parsed {
            Parsed::Complete { value, consumed } => (value, consumed - had),
            Parsed::Partial => {
                // A partial header is shorter than MAX_FRAME_HEADER, so it fits.
                if had == 0 {
                    self.hdr[..input.len()].copy_from_slice(input);
                }
                self.hdr_len = (had + from_input) as u8;
                return Ok(None);
            }
        };
        self.hdr_len = 0;
        match h.opcode {
            OpCode::Continuation if self.open.is_none() => {
                return Err(WsError::ContinuationWithoutStart);
            }
            OpCode::Text | OpCode::Binary if self.open.is_some() => {
                return Err(WsError::DataInsideFragmented);
            }
            OpCode::Text | OpCode::Binary => {
                self.open = Some(h.opcode);
                self.asm().utf8_ok = 0;
                self.compressed = h.rsv1;
            }
            _ => {}
        }
        if !h.opcode.is_control() {
            if !self.compressed && h.payload_len > (max_message - self.data_len()) as u64 {
                return Err(FrameError::TooLarge.into());
            }
            if h.opcode != OpCode::Continuation {
                self.asm()
                    .data
                    .reserve(h.payload_len.min(RESERVE_CAP) as usize);
            }
        }
        let cur = Current {
            opcode: h.opcode,
            fin: h.fin,
            mask: h.mask,
            remaining: h.payload_len,
            phase: 0,
        };
        self.cur = Some(cur);
        Ok(Some((cur, consumed)))
    }

    fn read_payload(&mut self, cur: Current, chunk: &[u8]) -> Result<(), WsError> {
        let asm = self.asm();
        let buf = if cur.opcode.is_control() {
            &mut asm.ctrl
        } else {
            &mut asm.data
        };
        let start = buf.len();
        buf.extend_from_slice(chunk);
        if let Some(mask) = cur.mask {
            unmask(&mut buf[start..], mask, usize::from(cur.phase));
        }
        if !cur.opcode.is_control() && self.open == Some(OpCode::Text) && !self.compressed {
            self.check_utf8()?;
        }
        Ok(())
    }

    /// Validates the unchecked part of a text message. An incomplete character at the
    /// end is left for the next chunk; an impossible one fails now (§8.1: fail fast).
    fn check_utf8(&mut self) -> Result<(), WsError> {
        let asm = self.asm();
        match std::str::from_utf8(&asm.data[asm.utf8_ok..]) {
            Ok(_) => asm.utf8_ok = asm.data.len(),
            Err(e) if e.error_len().is_some() => return Err(WsError::InvalidUtf8),
            Err(e) => asm.utf8_ok += e.valid_up_to(),
        }
        Ok(())
    }

    fn finish_frame(
        &mut self,
        cur: Current,
        max_message: usize,
    ) -> Result<Option<Message>, WsError> {
        let msg = self.finish(cur, max_message);
        self.release();
        msg
    }

    fn finish(&mut self, cur: Current, max_message: usize) -> Result<Option<Message>, WsError> {
        let msg = match cur.opcode {
            OpCode::Ping => Message::Ping(std::mem::take(&mut self.asm().ctrl)),
            OpCode::Pong => Message::Pong(std::mem::take(&mut self.asm().ctrl)),
            OpCode::Close => {
                let payload = std::mem::take(&mut self.asm().ctrl);
                let parsed = parse_close_payload(&payload).map_err(WsError::Close)?;
                Message::Close(parsed.map(|(code, reason)| (code, reason.to_owned())))
            }
            _ if !cur.fin => return Ok(None),
            _ if self.compressed => {
                let data = std::mem::take(&mut self.asm().data);
                self.compressed = false;
                let data = deflate::inflate(&data, max_message).map_err(WsError::Inflate)?;
                match self.open.take() {
                    Some(OpCode::Text) if std::str::from_utf8(&data).is_err() => {
                        return Err(WsError::InvalidUtf8);
                    }
                    Some(OpCode::Text) => Message::Text(data),
                    _ => Message::Binary(data),
                }
            }
            _ => {
                let asm = self.asm();
                let data = std::mem::take(&mut asm.data);
                let utf8_ok = asm.utf8_ok;
                match self.open.take() {
                    Some(OpCode::Text) if utf8_ok != data.len() => {
                        return Err(WsError::InvalidUtf8);
                    }
                    Some(OpCode::Text) => Message::Text(data),
                    _ => Message::Binary(data),
                }
            }
        };
        Ok(Some(msg))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proto::frame::write_masked_frame;
    use crate::proto::rand::Rng;

    const MAX: usize = 1 << 20;

    /// Decodes all of `input` fed in the given pieces; stops at the first error.
    pub(crate) fn decode_pieces(pieces: &[&[u8]], max: usize) -> (Vec<Message>, Option<WsError>) {
        decode_pieces_with(Decoder::new(Role::Server), pieces, max)
    }

    /// Decodes all of `input` fed in the given pieces to `d`; stops at the first error.
    fn decode_pieces_with(
        mut d: Decoder,
        pieces: &[&[u8]],
        max: usize,
    ) -> (Vec<Message>, Option<WsError>) {
        let mut out = Vec::new();
        for piece in pieces {
            let mut rest = *piece;
            while !rest.is_empty() {
                match d.decode(rest, max) {
                    Ok((n, msg)) => {
                        out.extend(msg);
                        rest = &rest[n..];
                    }
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, None)
    }

    fn decode_all(input: &[u8]) -> (Vec<Message>, Option<WsError>) {
        decode_pieces(&[input], MAX)
    }

    fn frame(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_masked_frame(&mut out, fin, op, payload, [0xa1, 0xb2, 0xc3, 0xd4]);
        out
    }

    fn cat(frames: &[Vec<u8>]) -> Vec<u8> {
        frames.concat()
    }

    #[test]
    fn single_frames() {
        let (m, e) = decode_all(&cat(&[
            frame(true, OpCode::Text, b"hi"),
            frame(true, OpCode::Binary, &[0, 1, 2]),
            frame(true, OpCode::Text, b""),
        ]));
        assert_eq!(e, None);
        assert_eq!(
            m,
            [
                Message::Text(b"hi".to_vec()),
                Message::Binary(vec![0, 1, 2]),
                Message::Text(vec![])
            ]
        );
    }

    /// §5.4: fragments join; control frames may come between them and are delivered
    /// at once, before the message they interrupt.
    #[test]
    fn fragmentation_with_interleaved_control() {
        let input = cat(&[
            frame(false, OpCode::Text, b"Hel"),
            frame(true, OpCode::Ping, b"p1"),
            frame(false, OpCode::Continuation, b""),
            frame(true, OpCode::Pong, b""),
            frame(true, OpCode::Continuation, b"lo"),
            frame(true, OpCode::Close, b"\x03\xe8done"),
        ]);
        let (m, e) = decode_all(&input);
        assert_eq!(e, None);
        assert_eq!(
            m,
            [
                Message::Ping(b"p1".to_vec()),
                Message::Pong(vec![]),
                Message::Text(b"Hello".to_vec()),
                Message::Close(Some((CloseCode::NORMAL, "done".into()))),
            ]
        );
    }

    #[test]
    fn sequencing_errors() {
        let (_, e) = decode_all(&frame(true, OpCode::Continuation, b"x"));
        assert_eq!(e, Some(WsError::ContinuationWithoutStart));
        let (_, e) = decode_all(&cat(&[
            frame(false, OpCode::Binary, b"a"),
            frame(true, OpCode::Text, b"b"),
        ]));
        assert_eq!(e, Some(WsError::DataInsideFragmented));
        // A finished message closes the fragment sequence: a continuation after it fails.
        let (m, e) = decode_all(&cat(&[
            frame(true, OpCode::Binary, b"a"),
            frame(true, OpCode::Continuation, b"b"),
        ]));
        assert_eq!((m.len(), e), (1, Some(WsError::ContinuationWithoutStart)));
        assert_eq!(
            WsError::ContinuationWithoutStart.close_code(),
            CloseCode::PROTOCOL_ERROR
        );
        assert_eq!(
            WsError::DataInsideFragmented.close_code(),
            CloseCode::PROTOCOL_ERROR
        );
    }

    #[test]
    fn close_payload_errors() {
        let (_, e) = decode_all(&frame(true, OpCode::Close, b"\x03"));
        assert_eq!(e.map(WsError::close_code), Some(CloseCode::PROTOCOL_ERROR));
        let (_, e) = decode_all(&frame(true, OpCode::Close, b"\x03\xed"));
        assert_eq!(e, Some(WsError::Close(CloseError::BadCode(1005))));
        let (_, e) = decode_all(&frame(true, OpCode::Close, b"\x03\xe8\xc3"));
        assert_eq!(e.map(WsError::close_code), Some(CloseCode::INVALID_PAYLOAD));
        let (m, e) = decode_all(&frame(true, OpCode::Close, b""));
        assert_eq!((m, e), (vec![Message::Close(None)], None));
    }

    /// §8.1 fail fast: the first fragment that makes the prefix impossible fails, even
    /// though the message is not finished.
    #[test]
    fn utf8_fails_fast_and_spans_fragments() {
        let (m, e) = decode_all(&frame(false, OpCode::Text, b"ok\xce\xba\xe1\xbd"));
        assert_eq!(
            (m.len(), e),
            (0, None),
            "incomplete character at a fragment end is fine"
        );
        let (_, e) = decode_all(&frame(false, OpCode::Text, b"ok\xff"));
        assert_eq!(e, Some(WsError::InvalidUtf8));
        let (_, e) = decode_all(&frame(false, OpCode::Text, b"\xf4\x90"));
        assert_eq!(
            e,
            Some(WsError::InvalidUtf8),
            "above U+10FFFF is impossible after 2 bytes"
        );
        let (_, e) = decode_all(&frame(false, OpCode::Text, b"\xed\xa0"));
        assert_eq!(e, Some(WsError::InvalidUtf8), "surrogate");
        // "κόσμε" split inside a character, across three fragments.
        let s = "κόσμε".as_bytes();
        let input = cat(&[
            frame(false, OpCode::Text, &s[..3]),
            frame(false, OpCode::Continuation, &s[3..6]),
            frame(true, OpCode::Continuation, &s[6..]),
        ]);
        assert_eq!(decode_all(&input), (vec![Message::Text(s.to_vec())], None));
        // A message that ends inside a character.
        let (_, e) = decode_all(&frame(true, OpCode::Text, &s[..3]));
        assert_eq!(e, Some(WsError::InvalidUtf8));
        // Binary messages are not checked.
        assert_eq!(decode_all(&frame(true, OpCode::Binary, b"\xff")).1, None);
        assert_eq!(
            WsError::InvalidUtf8.close_code(),
            CloseCode::INVALID_PAYLOAD
        );
    }

    #[test]
    fn message_limit_counts_all_fragments() {
        let ok = cat(&[
            frame(false, OpCode::Binary, &[1; 60]),
            frame(true, OpCode::Ping, &[2; 100]),
            frame(true, OpCode::Continuation, &[3; 40]),
        ]);
        let (m, e) = decode_pieces(&[&ok], 100);
        assert_eq!(e, None, "a 100-byte ping between fragments does not count");
        assert_eq!(m.len(), 2);
        let over = cat(&[
            frame(false, OpCode::Binary, &[1; 60]),
            frame(true, OpCode::Continuation, &[3; 41]),
        ]);
        let (_, e) = decode_pieces(&[&over], 100);
        assert_eq!(e, Some(WsError::Frame(FrameError::TooLarge)));
        assert_eq!(e.unwrap().close_code(), CloseCode::MESSAGE_TOO_BIG);
        // Refused from the header alone: no payload was sent.
        let mut d = Decoder::new(Role::Server);
        assert_eq!(
            d.decode(&[0x82, 0xff, 0, 0, 0, 0, 0, 0x20, 0, 0], MAX),
            Err(WsError::Frame(FrameError::TooLarge))
        );
    }

    /// Every WebSocket holds a decoder, idle or not (benches/RESULTS.md tracks memory per
    /// connection).
    #[test]
    fn decoder_is_small() {
        let size = std::mem::size_of::<Decoder>();
        assert!(size <= 48, "Decoder is {size} bytes");
    }

    /// The mask phase carried across reads: a frame fed in pieces of any size (so split
    /// at every phase) unmasks the same.
    #[test]
    fn mask_phase_survives_any_split() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(1030).collect();
        let input = frame(true, OpCode::Binary, &payload);
        for step in [1, 2, 3, 5, 7, 13, 100] {
            let mut d = Decoder::new(Role::Server);
            let mut got = None;
            for piece in input.chunks(step) {
                let mut pos = 0;
                while pos < piece.len() {
                    let (n, m) = d.decode(&piece[pos..], MAX).unwrap();
                    pos += n;
                    got = got.or(m);
                }
            }
            assert!(
                matches!(got, Some(Message::Binary(ref b)) if b[..] == payload[..]),
                "pieces of {step}"
            );
        }
    }

    #[test]
    fn idle_decoder_holds_no_memory() {
        let mut d = Decoder::new(Role::Server);
        let input = frame(true, OpCode::Binary, &[7; 1000]);
        let (n, m) = d.decode(&input, MAX).unwrap();
        assert_eq!(
            (
                n,
                m.map(|m| matches!(m, Message::Binary(ref b) if b.len() == 1000))
            ),
            (input.len(), Some(true))
        );
        assert_eq!((d.asm.is_none(), d.in_progress()), (true, false));
        d.decode(&frame(true, OpCode::Ping, b"x")[..3], MAX)
            .unwrap();
        assert!(d.in_progress());
    }

    /// A recorded client session covering every frame kind.
    pub(crate) fn session() -> Vec<u8> {
        cat(&[
            frame(true, OpCode::Text, "héllo wörld".as_bytes()),
            frame(true, OpCode::Binary, &(0..=255).collect::<Vec<u8>>()),
            frame(false, OpCode::Text, "κό".as_bytes()),
            frame(true, OpCode::Ping, b"are you there"),
            frame(false, OpCode::Continuation, &"σμε".as_bytes()[..3]),
            frame(true, OpCode::Continuation, &"σμε".as_bytes()[3..]),
            frame(true, OpCode::Binary, &vec![0x5a; 300]),
            frame(true, OpCode::Binary, &vec![0xa5; 70_000]),
            frame(true, OpCode::Pong, b""),
            frame(true, OpCode::Close, b"\x03\xe8bye"),
        ])
    }

    /// Chunking: one byte at a time, and at random split points, equals one shot.
    #[test]
    fn chunking_equals_one_shot() {
        let input = session();
        let whole = decode_all(&input);
        assert_eq!(whole.1, None);
        assert_eq!(whole.0.len(), 8);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode_pieces(&bytes, MAX), whole, "1 byte at a time");
        let mut rng = Rng::new(0);
        for _ in 0..200 {
            let mut pieces = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let n = (rng.next_u64() % 40) as usize + 1;
                let n = n.min(rest.len());
                pieces.push(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(decode_pieces(&pieces, MAX), whole);
        }
    }

    /// Errors do not depend on the split either.
    #[test]
    fn chunking_errors() {
        let bad = cat(&[
            frame(true, OpCode::Text, b"fine"),
            frame(false, OpCode::Text, b"\xce"),
            frame(true, OpCode::Continuation, b"\xba\xff"),
        ]);
        let whole = decode_all(&bad);
        assert_eq!(
            whole,
            (
                vec![Message::Text(b"fine".to_vec())],
                Some(WsError::InvalidUtf8)
            )
        );
        let bytes: Vec<&[u8]> = bad.chunks(1).collect();
        assert_eq!(decode_pieces(&bytes, MAX), whole);
    }

    /// A deflate decoder fed `pieces`.
    fn inflate_pieces(pieces: &[&[u8]], max: usize) -> (Vec<Message>, Option<WsError>) {
        let mut d = Decoder::new(Role::Server);
        d.enable_deflate();
        decode_pieces_with(d, pieces, max)
    }

    fn zframe(fin: bool, rsv1: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::proto::frame::write_masked_frame_rsv1(
            &mut out,
            fin,
            rsv1,
            op,
            payload,
            [9, 8, 7, 6],
        );
        out
    }

    fn deflated(payload: &[u8]) -> Vec<u8> {
        let mut z = Vec::new();
        deflate::Deflater::new(6, 15).compress(payload, &mut z);
        z
    }

    /// RFC 7692 §6, §7.2.3: compressed messages, whole and fragmented (RSV1 on the first
    /// frame only), between plain ones and control frames, in any split.
    #[test]
    fn compressed_messages() {
        let text = "{\"price\":101.25,\"symbol\":\"ACME\"} ".repeat(40);
        let z = deflated(text.as_bytes());
        let (a, b) = z.split_at(z.len() / 2);
        let wire = cat(&[
            zframe(
                true,
                true,
                OpCode::Text,
                &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
            ),
            zframe(true, false, OpCode::Text, b"plain"),
            zframe(false, true, OpCode::Text, a),
            zframe(true, false, OpCode::Ping, b"p"),
            zframe(true, false, OpCode::Continuation, b),
            zframe(true, true, OpCode::Binary, &deflated(b"")),
        ]);
        let want = vec![
            Message::Text(b"Hello".to_vec()),
            Message::Text(b"plain".to_vec()),
            Message::Ping(b"p".to_vec()),
            Message::Text(text.clone().into_bytes()),
            Message::Binary(Vec::new()),
        ];
        assert_eq!(inflate_pieces(&[&wire], MAX), (want.clone(), None));
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(inflate_pieces(&bytes, MAX), (want, None));
        // The limit holds for the inflated size: exactly the text fits, one byte less not.
        let one = zframe(true, true, OpCode::Text, &z);
        assert_eq!(inflate_pieces(&[&one], text.len()).1, None);
        assert_eq!(
            inflate_pieces(&[&one], text.len() - 1).1,
            Some(WsError::Inflate(InflateError::TooBig))
        );
        // An uncompressed message is held to the limit itself.
        let plain = zframe(true, false, OpCode::Binary, &[0; 101]);
        assert_eq!(
            inflate_pieces(&[&plain], 100).1,
            Some(WsError::Frame(FrameError::TooLarge))
        );
        // Incompressible data may be a little longer compressed than the limit.
        let mut rng = Rng::new(7);
        let noise: Vec<u8> = (0..1000).map(|_| rng.next_u64() as u8).collect();
        let zn = deflated(&noise);
        assert!(zn.len() > noise.len(), "{}", zn.len());
        assert_eq!(
            inflate_pieces(&[&zframe(true, true, OpCode::Binary, &zn)], 1000),
            (vec![Message::Binary(noise)], None)
        );
    }

    #[test]
    fn compressed_violations() {
        let bad = |wire: Vec<u8>| inflate_pieces(&[&wire], MAX).1.map(WsError::close_code);
        // Corrupt deflate data: 1007.
        assert_eq!(
            bad(zframe(true, true, OpCode::Text, &[0xff, 0xff, 0xff])),
            Some(CloseCode::INVALID_PAYLOAD)
        );
        // Inflated text that is not UTF-8: 1007.
        assert_eq!(
            bad(zframe(true, true, OpCode::Text, &deflated(b"\xff\xfe"))),
            Some(CloseCode::INVALID_PAYLOAD)
        );
        // A bomb: 10 KB inflating to 10 MiB against a 1 MiB limit: 1009.
        let mut bomb = Vec::new();
        deflate::Deflater::new(9, 15).compress(&vec![b'a'; 10 << 20], &mut bomb);
        assert!(bomb.len() < 16 * 1024);
        assert_eq!(
            bad(zframe(true, true, OpCode::Binary, &bomb)),
            Some(CloseCode::MESSAGE_TOO_BIG)
        );
        // RSV1 on a continuation or a control frame: 1002 (RFC 7692 §6.1).
        let cont = cat(&[
            zframe(false, true, OpCode::Text, &[0xf2]),
            zframe(true, true, OpCode::Continuation, &[0x00]),
        ]);
        assert_eq!(
            inflate_pieces(&[&cont], MAX).1,
            Some(WsError::Frame(FrameError::CompressedContinuation))
        );
        assert_eq!(
            bad(zframe(true, true, OpCode::Ping, b"")),
            Some(CloseCode::PROTOCOL_ERROR)
        );
        // Without the extension, RSV1 stays a protocol error.
        assert_eq!(
            decode_all(&zframe(
                true,
                true,
                OpCode::Text,
                &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
            ))
            .1,
            Some(WsError::Frame(FrameError::ReservedBits))
        );
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            ".{0,40}".prop_map(|s: String| Message::Text(s.into_bytes())),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Message::Binary),
            proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Message::Ping),
            proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Message::Pong),
        ]
    }

    proptest! {
        /// Messages cut into random fragments with random masks and random read splits
        /// decode back to themselves.
        #[test]
        fn round_trip(msgs in proptest::collection::vec((message(), 1usize..5, any::<[u8; 4]>()), 0..8), split in 1usize..64) {
            let mut wire = Vec::new();
            for (msg, parts, mask) in &msgs {
                let (op, payload) = match msg {
                    Message::Text(p) => (OpCode::Text, p),
                    Message::Binary(p) => (OpCode::Binary, p),
                    Message::Ping(p) => (OpCode::Ping, p),
                    Message::Pong(p) => (OpCode::Pong, p),
                    Message::Close(_) => unreachable!(),
                };
                if op.is_control() {
                    write_masked_frame(&mut wire, true, op, payload, *mask);
                    continue;
                }
                let step = payload.len().div_ceil(*parts).max(1);
                let chunks: Vec<&[u8]> = if payload.is_empty() { vec![&[]] } else { payload.chunks(step).collect() };
                for (i, c) in chunks.iter().enumerate() {
                    let fin = i + 1 == chunks.len();
                    let op = if i == 0 { op } else { OpCode::Continuation };
                    write_masked_frame(&mut wire, fin, op, c, *mask);
                }
            }
            let pieces: Vec<&[u8]> = wire.chunks(split).collect();
            let expected: Vec<Message> = msgs.into_iter().map(|m| m.0).collect();
            prop_assert_eq!(decode_pieces(&pieces, MAX), (expected, None));
        }

        /// Arbitrary bytes never panic, in any split.
        #[test]
        fn arbitrary_input(input in proptest::collection::vec(any::<u8>(), 0..200), split in 1usize..20) {
            let pieces: Vec<&[u8]> = input.chunks(split).collect();
            let _ = decode_pieces(&pieces, 100);
        }
    }
}
