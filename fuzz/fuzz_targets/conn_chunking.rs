//! The whole connection state machine under chunking. Oracle: events, transmitted bytes
//! and the control frames owed are identical for one-shot and split delivery, and
//! nothing panics.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use ringpush::proto::conn::{ConnConfig, Connection, Event};
use ringpush::proto::limits::Limits;

type Output = (Vec<Event>, Vec<u8>, Option<Vec<u8>>);

/// Drives the connection as the server does (events and output drained, then pending
/// input resumed) but takes the control frames only at the end: taking them mid-way
/// would make the coalescing of pongs depend on the split, by design.
fn run(now: Instant, cfg: &ConnConfig, pieces: &[&[u8]]) -> Output {
    let mut c = Connection::new(now, cfg, 1);
    let (mut events, mut sent) = (Vec::<Event>::new(), Vec::new());
    for p in pieces {
        c.handle_bytes(now, cfg, p);
        loop {
            while let Some(e) = c.poll_event() {
                // Echo counts are batched per drain: merge them.
                match (events.last_mut(), e) {
                    (
                        Some(Event::Echoed { messages, bytes }),
                        Event::Echoed {
                            messages: m,
                            bytes: b,
                        },
                    ) => {
                        *messages += m;
                        *bytes += b;
                    }
                    (_, e) => events.push(e),
                }
            }
            while let Some(t) = c.poll_transmit() {
                sent.extend_from_slice(&t);
            }
            if !c.resume(now, cfg) {
                break;
            }
        }
    }
    (events, sent, c.poll_control(now, cfg))
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
