//! permessage-deflate inflation under a limit (RFC 7692 §7.2.2). Oracles: never a panic;
//! the answer is `Ok(bytes)` with at most `limit` bytes, `TooBig` or `Corrupt`; `Ok`
//! agrees with a reference inflate (flate2 with no limit, its output cut at the limit
//! + 1) and `TooBig` only when the reference makes more than `limit` bytes (or finds
//! the data corrupt, somewhere past the limit); and a
//! message compressed by our `Deflater` inflates back to itself.
#![no_main]

use flate2::{Decompress, FlushDecompress, Status};
use libfuzzer_sys::fuzz_target;
use ringpush::proto::deflate::{Deflater, InflateError, TAIL, inflate};

/// Reference: inflate `input` + tail with no bound but `cap` (the output stops there).
/// `None` when the data is not valid deflate.
fn reference(input: &[u8], cap: usize) -> Option<Vec<u8>> {
    let mut d = Decompress::new(false);
    let mut data = input.to_vec();
    data.extend_from_slice(&TAIL);
    let mut out = vec![0; cap];
    let mut pos = 0;
    let mut written = 0;
    loop {
        let (i0, o0) = (d.total_in(), d.total_out());
        let status = d.decompress(&data[pos..], &mut out[written..], FlushDecompress::Sync).ok()?;
        pos += (d.total_in() - i0) as usize;
        written += (d.total_out() - o0) as usize;
        if status == Status::StreamEnd || written == cap {
            break;
        }
        if d.total_in() == i0 && d.total_out() == o0 {
            break;
        }
    }
    out.truncate(written);
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&l, input)) = data.split_first() else { return };
    // Limits from 0 to 64 KiB: small ones make TooBig common.
    let limit = usize::from(l) * usize::from(l);
    match inflate(input, limit) {
        Ok(out) => {
            assert!(out.len() <= limit);
            if let Some(r) = reference(input, limit + 1) {
                assert_eq!(out, r, "Ok agrees with the reference");
            }
        }
        Err(InflateError::TooBig) => {
            // The output reached limit + 1 bytes before any error. Data that is corrupt
            // further on may also fail the reference, whose buffering found the error
            // first (seen: [42, 0, 48] at limit 0): past the limit either close is right.
            if let Some(r) = reference(input, limit + 1) {
                assert_eq!(r.len(), limit + 1, "TooBig only past the limit");
            }
        }
        Err(InflateError::Corrupt) => {}
    }
    let mut z = Vec::new();
    Deflater::new(u32::from(l % 10), 9 + l % 7).compress(input, &mut z);
    assert_eq!(inflate(&z, input.len()).as_deref(), Ok(input));
});
