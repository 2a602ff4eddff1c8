//! Frame header parsing. Oracles: a parsed header re-encodes to exactly the bytes it was
//! parsed from (the encoding is canonical because non-minimal lengths are refused), and
//! every proper prefix of those bytes is `Partial`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringpush::proto::Parsed;
use ringpush::proto::frame::{FrameHeader, Role};
use ringpush::proto::limits::MAX_FRAME_HEADER;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, buf)) = data.split_first() else { return };
    let role = if flags & 1 == 0 { Role::Server } else { Role::Client };
    let max = if flags & 2 == 0 { u64::MAX } else { 1 << 20 };
    let Ok(Parsed::Complete { value, consumed }) = FrameHeader::parse(buf, role, max) else { return };
    let mut enc = [0; MAX_FRAME_HEADER];
    let n = value.encode(&mut enc);
    assert_eq!(n, consumed, "{value:?}");
    assert_eq!(&enc[..n], &buf[..consumed], "{value:?}");
    assert!(value.payload_len <= max || value.opcode.is_control());
    for cut in 0..consumed {
        assert_eq!(FrameHeader::parse(&buf[..cut], role, max), Ok(Parsed::Partial));
    }
});
