//! Client-to-server masking (RFC 6455 §5.3).
//!
//! Every byte of a client frame's payload is XORed with `mask[(offset + i) % 4]`, where the
//! offset counts payload bytes from the start of the frame. A payload arrives in pieces, so
//! both functions take the offset of the piece within its frame.
//!
//! [`unmask`] is the fast path: it XORs eight bytes at a time with the mask repeated twice,
//! a loop LLVM turns into vector XORs. [`unmask_reference`] is the byte loop it is tested
//! against (every length 0..=300 at every offset 0..=7, below and in `fuzz/`); see
//! `benches/proto.rs` and `benches/RESULTS.md` for the speed of each.

/// The mask rotated so that index 0 applies to the byte at `offset`.
fn rotated(mask: [u8; 4], offset: usize) -> [u8; 4] {
    let r = offset % 4;
    [
        mask[r],
        mask[(r + 1) % 4],
        mask[(r + 2) % 4],
        mask[(r + 3) % 4],
    ]
}

/// Reference implementation: one byte at a time.
pub fn unmask_reference(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= mask[(offset + i) % 4];
    }
}

/// Unmasks (or masks: XOR is its own inverse) `buf` in place, `offset` bytes into the frame.
///
/// Works on 32-byte blocks as four independent `u64` XORs, which LLVM compiles to two
/// 128-bit (SSE2) or one 256-bit vector XOR per block; the tail of up to 31 bytes goes
/// eight at a time, then byte by byte. No alignment is needed: `from_ne_bytes` on a
/// `[u8; 8]` is an unaligned load.
#[inline]
pub fn unmask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let m = rotated(mask, offset);
    // Native byte order on both sides: byte i of the word is byte i of memory either way.
    let word = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);

    let mut blocks = buf.chunks_exact_mut(32);
    for block in &mut blocks {
        for lane in block.chunks_exact_mut(8) {
            let v = u64::from_ne_bytes(lane.try_into().expect("8-byte lane")) ^ word;
            lane.copy_from_slice(&v.to_ne_bytes());
        }
    }
    let rest = blocks.into_remainder();
    let mut words = rest.chunks_exact_mut(8);
    for lane in &mut words {
        let v = u64::from_ne_bytes(lane.try_into().expect("8-byte lane")) ^ word;
        lane.copy_from_slice(&v.to_ne_bytes());
    }
    // Every block and word above is a multiple of 4 bytes, so the tail starts at phase 0.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= m[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 7) as u8).collect()
    }

    /// The fast loop equals the byte loop for every length 0..=300, every mask offset
    /// 0..=7 and every start alignment 0..=7 within the buffer.
    #[test]
    fn fast_matches_reference() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..=300 {
            for offset in 0..=7 {
                for align in 0..=7 {
                    let src = pattern(len + align);
                    let mut a = src.clone();
                    let mut b = src.clone();
                    unmask_reference(&mut a[align..], mask, offset);
                    unmask(&mut b[align..], mask, offset);
                    assert_eq!(a, b, "len {len} offset {offset} align {align}");
                }
            }
        }
    }

    /// Unmasking a payload in pieces, passing each piece's offset, equals unmasking it whole.
    #[test]
    fn pieces_equal_whole() {
        let mask = [1, 2, 3, 4];
        let src = pattern(257);
        let mut whole = src.clone();
        unmask(&mut whole, mask, 0);
        for split in 0..=src.len() {
            let mut parts = src.clone();
            let (a, b) = parts.split_at_mut(split);
            unmask(a, mask, 0);
            unmask(b, mask, split);
            assert_eq!(parts, whole, "split {split}");
        }
    }

    /// RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
    #[test]
    fn rfc_example() {
        let mut p = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        unmask(&mut p, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&p, b"Hello");
    }

    #[test]
    fn involution() {
        let src = pattern(100);
        let mut p = src.clone();
        unmask(&mut p, [9, 8, 7, 6], 3);
        assert_ne!(p, src);
        unmask(&mut p, [9, 8, 7, 6], 3);
        assert_eq!(p, src);
    }
}
