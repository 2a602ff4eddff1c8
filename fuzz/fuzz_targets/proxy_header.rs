//! PROXY protocol headers (v1 text, v2 binary). Oracles: a complete header parses the
//! same from exactly its own bytes and is `Partial` on every proper prefix; a refusal
//! on a prefix is final (more bytes never turn it into a header), and so is a complete
//! parse (more bytes never change it): the connection state machine acts on the first
//! answer it gets, however the bytes were split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringpush::proto::Parsed;
use ringpush::proto::proxy;

fuzz_target!(|data: &[u8]| {
    let whole = proxy::parse(data);
    if let Ok(Parsed::Complete { value, consumed }) = &whole {
        assert!(*consumed <= data.len());
        let exact = proxy::parse(&data[..*consumed]);
        assert!(matches!(&exact, Ok(Parsed::Complete { value: v, consumed: c }) if c == consumed && v == value));
        for cut in [0, consumed / 2, consumed.saturating_sub(1)] {
            if cut < *consumed {
                assert_eq!(proxy::parse(&data[..cut]), Ok(Parsed::Partial), "prefix {cut}");
            }
        }
    }
    for cut in [1, data.len() / 3, data.len() / 2, data.len().saturating_sub(1)] {
        let cut = cut.min(data.len());
        match proxy::parse(&data[..cut]) {
            Err(_) => assert!(whole.is_err(), "refused at {cut}, then accepted: {whole:?}"),
            Ok(Parsed::Complete { value, consumed }) => {
                assert_eq!(whole, Ok(Parsed::Complete { value, consumed }), "prefix {cut}");
            }
            Ok(Parsed::Partial) => {}
        }
    }
});
