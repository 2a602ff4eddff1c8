//! Message assembly under chunking. Oracle: the messages and the error (if any) are the
//! same whether the input arrives in one piece or split at fuzzer-chosen points, and
//! every text message is valid UTF-8 within the size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringpush::proto::frame::Role;
use ringpush::proto::message::{Decoder, Message, WsError};

const MAX: usize = 4096;

fn run(pieces: &[&[u8]]) -> (Vec<Message>, Option<WsError>) {
    let mut d = Decoder::new(Role::Server);
    let mut out = Vec::new();
    for piece in pieces {
        let mut rest = *piece;
        while !rest.is_empty() {
            match d.decode(rest, MAX) {
                Ok((n, msg)) => {
                    assert!(n > 0 || msg.is_some(), "no progress");
                    out.extend(msg);
                    rest = &rest[n..];
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else { return };
    let whole = run(&[input]);
    for m in &whole.0 {
        match m {
            Message::Text(t) => assert!(std::str::from_utf8(t).is_ok() && t.len() <= MAX),
            Message::Binary(b) => assert!(b.len() <= MAX),
            Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= 125),
            Message::Close(_) => {}
        }
    }
    let step = usize::from(seed % 17) + 1;
    let pieces: Vec<&[u8]> = input.chunks(step).collect();
    assert_eq!(run(&pieces), whole, "split every {step}");
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(&bytes), whole, "byte at a time");
});
