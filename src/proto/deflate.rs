//! permessage-deflate payloads (RFC 7692 §7.2): compress one message, inflate one
//! message under a hard size limit.
//!
//! Both directions run without context takeover (§7.1.1): every message is a deflate
//! stream of its own, so a connection keeps no compressor or inflater state between
//! messages, and a published message compressed once is valid for every subscriber.
//! The deflate itself is zlib-rs through flate2 (picked by measurement: see
//! benches/proto.rs `deflate/*` and benches/RESULTS.md).
//!
//! Not done here: negotiation (`handshake`), RSV1 rules (`frame`, `message`).

use std::fmt;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::close::CloseCode;
use super::frame::{OpCode, write_frame, write_frame_rsv1};

/// Whether the server negotiates permessage-deflate (`--compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionMode {
    /// Offers are declined.
    Off,
    /// Offers are accepted without context takeover either way: a published message is
    /// compressed once per shard and the frame shared by every subscriber that agreed.
    #[default]
    Shared,
}

/// Default for `--compression-min-bytes`: 128. Messages shorter than this go out
/// uncompressed (RSV1 clear). Measured on JSON (benches/proto.rs `deflate/sizes`,
/// benches/RESULTS.md): below about 100 bytes deflate saves under 15% of the payload
/// (a handful of bytes, less than the TCP/IP overhead of the frame), while the CPU cost
/// per message is nearly the same as for 1 KB.
pub const DEFAULT_MIN_BYTES: usize = 128;

/// The four octets a sync flush ends with, which the sender removes and the receiver
/// appends again (RFC 7692 §7.2.1 step 2, §7.2.2).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The largest LZ77 window: 2^15 bytes. We inflate with it always (it accepts any
/// smaller window the peer used) and compress with it unless the client asked for less
/// with `server_max_window_bits` (§7.1.2.1).
pub const MAX_WINDOW_BITS: u8 = 15;

/// The smallest window zlib (and so zlib-rs) can compress with in raw deflate: 9. An
/// offer of `server_max_window_bits=8` is declined (zlib's raw deflate refuses 8).
pub const MIN_WINDOW_BITS: u8 = 9;

/// The level for published messages: 6 (zlib's default). A published message is
/// compressed once per shard and sent to every subscriber, so its CPU is shared while
/// its size is paid per delivery: on a 1 KB JSON message level 6 gives 270 bytes in
/// 21.6 us, level 1 362 bytes in 6.6 us (benches/proto.rs `deflate/compress`,
/// benches/RESULTS.md): 25% fewer bytes per delivery for 15 us once per message.
pub const BROADCAST_LEVEL: u32 = 6;

/// The level for what is compressed for one connection (an `/echo` reply): 1, zlib's
/// fastest, a third of level 6's CPU for a third more bytes; here nothing shares it.
pub const PER_CONNECTION_LEVEL: u32 = 1;

/// Why an inflated message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// More than the message limit after inflation (RFC 6455 §7.4.1: 1009). Detected at
    /// the first byte past the limit: the output never grows beyond it.
    TooBig,
    /// Not a valid deflate stream, or bytes after its final block (RFC 7692 §8.1 leaves
    /// the code open; 1007, "data within a message that was not consistent with the type
    /// of the message", as Autobahn and the `ws` library use).
    Corrupt,
}

impl InflateError {
    /// The close code.
    pub fn close_code(self) -> CloseCode {
        match self {
            InflateError::TooBig => CloseCode::MESSAGE_TOO_BIG,
            InflateError::Corrupt => CloseCode::INVALID_PAYLOAD,
        }
    }
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InflateError::TooBig => "message larger than the limit once inflated",
            InflateError::Corrupt => "invalid compressed data",
        })
    }
}

impl std::error::Error for InflateError {}

/// First output buffer of an inflate: four times the input (JSON inflates 3-10x), at
/// least 4 KiB; it doubles from there up to the limit.
const FIRST_OUTPUT: usize = 4096;

/// Inflates one message's payload (RSV1 set, the tail already removed by the sender) with
/// a fresh inflater: no context takeover.
///
/// The output never holds more than `limit + 1` bytes, whatever the input: a deflate
/// bomb of a few KB that would inflate to gigabytes costs at most `limit + 1` bytes of
/// buffer and stops at the first byte past the limit.
pub fn inflate(payload: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    let mut d = Decompress::new_with_window_bits(false, MAX_WINDOW_BITS);
    let cap = limit.saturating_add(1);
    let mut out: Vec<u8> = Vec::new();
    let mut written = 0;
    for (i, input) in [payload, &TAIL[..]].into_iter().enumerate() {
        let mut pos = 0;
        loop {
            if written == out.len() {
                if out.len() >= cap {
                    // Full at limit + 1: had the stream ended exactly at the limit, the
                    // inflater would have stopped short of filling the buffer.
                    return Err(InflateError::TooBig);
                }
                let grow = out
                    .len()
                    .max(FIRST_OUTPUT.max(payload.len().saturating_mul(4)));
                out.resize(out.len().saturating_add(grow).min(cap), 0);
            }
            let (in0, out0) = (d.total_in(), d.total_out());
            let status = d
                .decompress(&input[pos..], &mut out[written..], FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            let used = (d.total_in() - in0) as usize;
            let made = (d.total_out() - out0) as usize;
            pos += used;
            written += made;
            if written > limit {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                // A final block (BFINAL) ended the stream: what follows must be nothing
                // but the tail we appended.
                let rest_is_tail = i == 1 || (pos == input.len());
                if !rest_is_tail {
                    return Err(InflateError::Corrupt);
                }
                out.truncate(written);
                return Ok(out);
            }
            if pos == input.len() && written < out.len() {
                break; // all of this input taken, room left: the inflater wants more
            }
            if used == 0 && made == 0 && written < out.len() {
                break; // no progress with room to spare: nothing more to give it
            }
        }
    }
    out.truncate(written);
    Ok(out)
}

/// A reusable compressor for whole messages (RFC 7692 §7.2.1), no context takeover: each
/// call starts from an empty window.
///
/// Holds zlib-rs's deflate state (about 256 KiB at window 15 and its default memory
/// level): one per shard, not one per connection.
pub struct Deflater {
    c: Compress,
    level: u32,
    window_bits: u8,
}

impl fmt::Debug for Deflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deflater")
            .field("level", &self.level)
            .field("window_bits", &self.window_bits)
            .finish_non_exhaustive()
    }
}

impl Deflater {
    /// A compressor at `level` (0-9) with a window of 2^`window_bits` bytes, clamped to
    /// [`MIN_WINDOW_BITS`]`..=`[`MAX_WINDOW_BITS`].
    pub fn new(level: u32, window_bits: u8) -> Deflater {
        let window_bits = window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        Deflater {
            c: Compress::new_with_window_bits(Compression::new(level.min(9)), false, window_bits),
            level: level.min(9),
            window_bits,
        }
    }

    /// The window this compressor uses.
    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// Appends `payload` compressed to `out`: one deflate stream ended by a sync flush,
    /// its final [`TAIL`] removed (§7.2.1). An empty payload gives one byte, `0x00`
    /// (§7.2.3.6).
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        self.c.reset();
        let start = out.len();
        // zlib's deflateBound for stored blocks: 5 bytes per 16 KiB block, plus the
        // flush's empty block; JSON needs far less, and the loop below grows it anyway.
        out.reserve(payload.len() + payload.len() / 1024 * 5 + 64);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let in0 = self.c.total_in();
            // compress_vec only writes into the spare capacity; a stream error here
            // would be a bug in our use of it (a finished or misconfigured stream).
            let status = self
                .c
                .compress_vec(&payload[pos..], out, FlushCompress::Sync)
                .expect("deflate with a fresh stream and a sync flush cannot fail");
            pos += (self.c.total_in() - in0) as usize;
            // zlib: a sync flush is complete once a call returns with output space left.
            if pos == payload.len() && out.len() < out.capacity() && status != Status::BufError {
                break;
            }
        }
        debug_assert!(
            out[start..].ends_with(&TAIL),
            "a sync flush ends in the tail"
        );
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
    }
}

thread_local! {
    /// One compressor per level and window size per thread (a shard is a thread): reused
    /// for every message, reset between them. A cache, not state: the output depends only on the
    /// input.
    static DEFLATERS: std::cell::RefCell<Vec<Deflater>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Compresses `payload` with this thread's compressor for `level` and `window_bits`
/// (see [`Deflater::compress`]); appends to `out`.
pub fn compress(payload: &[u8], level: u32, window_bits: u8, out: &mut Vec<u8>) {
    DEFLATERS.with(|cell| {
        let mut all = cell.borrow_mut();
        let bits = window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        let level = level.min(9);
        let i = match all
            .iter()
            .position(|d| d.window_bits == bits && d.level == level)
        {
            Some(i) => i,
            None => {
                all.push(Deflater::new(level, bits));
                all.len() - 1
            }
        };
        all[i].compress(payload, out);
    });
}

/// Appends `payload` as one server frame: compressed with RSV1 set (RFC 7692 §6) when
/// `window_bits` is given (the connection agreed to permessage-deflate), the payload is
/// at least `min_bytes` long and compressing makes it shorter; otherwise plain.
/// Returns whether it went out compressed.
pub fn write_message(
    out: &mut Vec<u8>,
    op: OpCode,
    payload: &[u8],
    level: u32,
    window_bits: Option<u8>,
    min_bytes: usize,
) -> bool {
    if let Some(bits) = window_bits.filter(|_| payload.len() >= min_bytes) {
        let mut z = Vec::new();
        compress(payload, level, bits, &mut z);
        if z.len() < payload.len() {
            write_frame_rsv1(out, true, true, op, &z);
            return true;
        }
    }
    write_frame(out, true, op, payload);
    false
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn compress(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Deflater::new(PER_CONNECTION_LEVEL, MAX_WINDOW_BITS).compress(payload, &mut out);
        out
    }

    /// RFC 7692 §7.2.3.1: "Hello" compressed with no context takeover, and the same
    /// message in a stored block (§7.2.3.3) and with BFINAL set (§7.2.3.4... as the RFC's
    /// own examples give them).
    #[test]
    fn rfc_examples() {
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(&hello, 100).unwrap(), b"Hello");
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflate(&stored, 100).unwrap(), b"Hello");
        let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(&bfinal, 100).unwrap(), b"Hello");
        // §7.2.3.6: an empty message is one 0x00 octet.
        assert_eq!(compress(b""), [0x00]);
        assert_eq!(inflate(&[0x00], 0).unwrap(), b"");
        assert_eq!(compress(b"Hello"), hello);
    }

    #[test]
    fn round_trip_and_limits() {
        let json =
            br#"{"id":1234,"type":"price","symbol":"ACME","bid":101.25,"ask":101.5}"#.repeat(20);
        let z = compress(&json);
        assert!(z.len() < json.len() / 4, "{} of {}", z.len(), json.len());
        assert_eq!(inflate(&z, json.len()).unwrap(), json);
        assert_eq!(inflate(&z, json.len() - 1), Err(InflateError::TooBig));
        assert_eq!(inflate(&z, 0), Err(InflateError::TooBig));
        // Reused: each call is a stream of its own.
        let mut d = Deflater::new(6, 9);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        d.compress(&json, &mut a);
        d.compress(&json, &mut b);
        assert_eq!(a, b, "no context carried over");
        assert_eq!(inflate(&a, 1 << 20).unwrap(), json);
    }

    /// A bomb: 10 MiB of zeros compress to about 10 KB; inflating with a 1 MiB limit
    /// stops at the limit with a buffer of limit + 1 bytes, not 10 MiB.
    #[test]
    fn bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let mut z = Vec::new();
        Deflater::new(9, MAX_WINDOW_BITS).compress(&zeros, &mut z);
        assert!(z.len() < 16 * 1024, "{}", z.len());
        assert_eq!(inflate(&z, 1 << 20), Err(InflateError::TooBig));
        assert_eq!(inflate(&z, 10 << 20).unwrap().len(), 10 << 20);
    }

    #[test]
    fn frames() {
        let json = br#"{"symbol":"ACME","bid":101.25}"#.repeat(10);
        let mut out = Vec::new();
        assert!(write_message(
            &mut out,
            OpCode::Text,
            &json,
            1,
            Some(15),
            128
        ));
        assert_eq!(out[0], 0xc1, "FIN, RSV1, text");
        assert_eq!(
            usize::from(out[1]),
            out.len() - 2,
            "300 repetitive bytes shrink to 37"
        );
        assert_eq!(inflate(&out[2..], 1000).unwrap(), json);
        for (payload, bits, min) in [
            (&json[..], None, 0),
            (&json[..100], Some(15), 128),
            (&b"x"[..], Some(15), 0),
        ] {
            out.clear();
            assert!(!write_message(
                &mut out,
                OpCode::Binary,
                payload,
                1,
                bits,
                min
            ));
            assert_eq!(out[0], 0x82, "plain");
            assert!(out.ends_with(payload));
        }
        // The thread's compressors give what a fresh one gives.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        super::compress(&json, 6, 10, &mut a);
        Deflater::new(6, 10).compress(&json, &mut b);
        assert_eq!(a, b);
    }

    /// Found by fuzz/fuzz_targets/inflate.rs: a final block that ends the stream past
    /// the limit is too big too (the check once ran only on streams still open).
    #[test]
    fn final_block_past_the_limit() {
        let hello_final = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(&hello_final, 4), Err(InflateError::TooBig));
        assert_eq!(inflate(&hello_final, 5).unwrap(), b"Hello");
        assert!(inflate(&[0x2b], 0).is_err());
    }

    #[test]
    fn corrupt() {
        // BTYPE 11 is reserved (RFC 1951 §3.2.3).
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff], 100),
            Err(InflateError::Corrupt)
        );
        // A stored block whose NLEN is not the complement of LEN.
        assert_eq!(
            inflate(&[0x00, 0x05, 0x00, 0x00, 0x00, 1, 2, 3, 4, 5], 100),
            Err(InflateError::Corrupt)
        );
        // Bytes after a final block.
        let mut z = vec![0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        z.extend_from_slice(b"junk");
        assert_eq!(inflate(&z, 100), Err(InflateError::Corrupt));
        assert_eq!(
            InflateError::Corrupt.close_code(),
            CloseCode::INVALID_PAYLOAD
        );
        assert_eq!(
            InflateError::TooBig.close_code(),
            CloseCode::MESSAGE_TOO_BIG
        );
    }

    proptest! {
        #[test]
        fn any_payload_round_trips(
            payload in prop::collection::vec(prop::sample::select(b"ab{}\":,0123 ".to_vec()), 0..5000),
            level in 0u32..=9,
            bits in 9u8..=15,
        ) {
            let mut z = Vec::new();
            Deflater::new(level, bits).compress(&payload, &mut z);
            prop_assert_eq!(inflate(&z, payload.len()).unwrap(), payload.clone());
            if !payload.is_empty() {
                prop_assert_eq!(inflate(&z, payload.len() - 1), Err(InflateError::TooBig));
            }
        }

        /// Any input: never a panic, never more than the limit.
        #[test]
        fn any_input_is_bounded(input in prop::collection::vec(any::<u8>(), 0..2000), limit in 0usize..5000) {
            if let Ok(out) = inflate(&input, limit) {
                prop_assert!(out.len() <= limit);
            }
        }
    }
}
