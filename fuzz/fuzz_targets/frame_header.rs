//! Frame header parsing. Oracles: a parsed header re-encodes to exactly the bytes it was
//! parsed from (the encoding is canonical because non-minimal lengths are refused), and
//! every proper prefix of those bytes is `Partial`; RSV1 only with permessage-deflate,
//! on a text or binary frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringpush::proto::Parsed;
use ringpush::proto::frame::{FrameHeader, Role};
use ringpush::proto::limits::MAX_FRAME_HEADER;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, buf)) = data.split_first() else { return };
    let role = if flags & 1 == 0 { Role::Server } else { Role::Client };
    let max = if flags & 2 == 0 { u64::MAX } else { 1 << 20 };
    let deflate = flags & 4 != 0;
    let Ok(Parsed::Complete { value, consumed }) = FrameHeader::parse(buf, role, max, deflate) else { return };
    assert!(!value.rsv1 || (deflate && !value.opcode.is_control() && value.opcode.as_u8() != 0));
    let mut enc = [0; MAX_FRAME_HEADER];
    let n = value.encode(&mut enc);
    assert_eq!(n, consumed, "{value:?}");
    assert_eq!(&enc[..n], &buf[..consumed], "{value:?}");
    assert!(value.payload_len <= max || value.opcode.is_control());
    for cut in 0..consumed {
        assert_eq!(FrameHeader::parse(&buf[..cut], role, max, deflate), Ok(Parsed::Partial));
    }
});
