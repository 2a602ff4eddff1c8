//! The whole connection state machine under chunking. Oracle: events and transmitted
//! bytes are identical for one-shot and split delivery, and nothing panics.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use ringpush::proto::conn::{ConnConfig, Connection, Event};
use ringpush::proto::limits::Limits;

fn run(now: Instant, cfg: &ConnConfig, pieces: &[&[u8]]) -> (Vec<Event>, Vec<u8>) {
    let mut c = Connection::new(now, cfg, 1);
    let (mut events, mut sent) = (Vec::new(), Vec::new());
    for p in pieces {
        c.handle_bytes(now, cfg, p);
        while let Some(e) = c.poll_event() {
            events.push(e);
        }
        while let Some(t) = c.poll_transmit() {
            sent.extend_from_slice(&t);
        }
    }
    (events, sent)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else { return };
    let cfg = ConnConfig { limits: Limits { max_message_bytes: 4096, max_head_bytes: 2048, ..Limits::default() }, ..ConnConfig::default() };
    let now = Instant::now();
    let whole = run(now, &cfg, &[input]);
    let step = usize::from(seed % 31) + 1;
    let pieces: Vec<&[u8]> = input.chunks(step).collect();
    assert_eq!(run(now, &cfg, &pieces), whole, "split every {step}");
});
