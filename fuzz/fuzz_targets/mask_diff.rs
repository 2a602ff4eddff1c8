//! Differential: the word-wise unmask equals the byte loop for any data, mask, offset
//! and alignment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringpush::proto::mask::{unmask, unmask_reference};

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let mask = [data[0], data[1], data[2], data[3]];
    let offset = usize::from(data[4]);
    let align = usize::from(data[5] % 8).min(data.len() - 6);
    let mut a = data[6..].to_vec();
    let mut b = a.clone();
    unmask_reference(&mut a[align..], mask, offset);
    unmask(&mut b[align..], mask, offset);
    assert_eq!(a, b);
});
