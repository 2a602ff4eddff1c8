//! `proto::tls` without sockets: a server and a client session joined by byte buffers,
//! against a certificate authority made for the test.

mod common;

use std::sync::Arc;

use common::tls::Pki;
use ringpush::proto::tls::{self, Tls, TlsError};
use rustls::pki_types::ServerName;

fn server(pki: &Pki) -> Tls {
    let config = tls::server_config(&pki.cert(), &pki.key(), tls::ticketer().unwrap()).unwrap();
    Tls::server(Arc::new(config)).unwrap()
}

fn client(pki: &Pki) -> Tls {
    let name = ServerName::try_from("localhost").unwrap();
    Tls::client(pki.client_config(), name).unwrap()
}

/// Moves `from`'s output into `to`, `chunk` bytes per receive; returns the plaintext
/// `to` got.
fn carry(from: &mut Tls, to: &mut Tls, chunk: usize) -> Result<Vec<u8>, TlsError> {
    let mut got = Vec::new();
    let mut scratch = Vec::new();
    if let Some(bytes) = from.take_output() {
        for piece in bytes.chunks(chunk) {
            to.receive(piece, &mut scratch, |p| got.extend_from_slice(p))?;
        }
    }
    Ok(got)
}

fn handshake(s: &mut Tls, c: &mut Tls, chunk: usize) {
    for _ in 0..10 {
        if !s.is_handshaking() && !c.is_handshaking() {
            return;
        }
        carry(c, s, chunk).unwrap();
        carry(s, c, chunk).unwrap();
    }
    panic!("no handshake after 10 round trips");
}

fn seal(from: &mut Tls, pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    from.seal(pieces.iter().copied(), &mut Vec::new(), &mut out)
        .unwrap();
    out
}

fn open(to: &mut Tls, ciphertext: &[u8], chunk: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut scratch = Vec::new();
    for piece in ciphertext.chunks(chunk) {
        to.receive(piece, &mut scratch, |p| got.extend_from_slice(p))
            .unwrap();
    }
    got
}

#[test]
fn handshake_and_data_both_ways_whole_and_cut_anywhere() {
    let pki = Pki::new("session");
    for chunk in [1, 7, 4096, usize::MAX] {
        let (mut s, mut c) = (server(&pki), client(&pki));
        handshake(&mut s, &mut c, chunk);
        // Small frames share a record; a 100 KB one spans several.
        let big = vec![b'x'; 100_000];
        let sealed = seal(&mut s, &[b"hello ", b"world", &big]);
        assert!(
            sealed.len() < 6 + 5 + big.len() + 8 * 40,
            "records: {}",
            sealed.len()
        );
        let got = open(&mut c, &sealed, chunk);
        assert_eq!(got.len(), 11 + big.len());
        assert_eq!(&got[..11], b"hello world");
        assert_eq!(s.partial_len(), 0);
        let sealed = seal(&mut c, &[b"GET / HTTP/1.1\r\n\r\n"]);
        assert_eq!(open(&mut s, &sealed, chunk), b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            s.partial_len(),
            0,
            "nothing held once every record is whole"
        );
    }
}

#[test]
fn a_cut_record_waits_for_its_rest() {
    let pki = Pki::new("cut");
    let (mut s, mut c) = (server(&pki), client(&pki));
    handshake(&mut s, &mut c, usize::MAX);
    let sealed = seal(&mut c, &[b"0123456789"]);
    let mut got = Vec::new();
    let mut scratch = Vec::new();
    s.receive(&sealed[..8], &mut scratch, |p| got.extend_from_slice(p))
        .unwrap();
    assert!(got.is_empty());
    assert_eq!(s.partial_len(), 8);
    s.receive(&sealed[8..], &mut scratch, |p| got.extend_from_slice(p))
        .unwrap();
    assert_eq!(got, b"0123456789");
    assert_eq!(s.partial_len(), 0);
}

#[test]
fn close_notify_reads_as_the_end() {
    let pki = Pki::new("close");
    let (mut s, mut c) = (server(&pki), client(&pki));
    handshake(&mut s, &mut c, usize::MAX);
    c.close_notify();
    let bytes = c.take_output().expect("close_notify");
    let r = s.receive(&bytes, &mut Vec::new(), |_| {}).unwrap();
    assert!(r.peer_closed);
}

#[test]
fn garbage_and_plain_http_fail_with_an_alert() {
    let pki = Pki::new("garbage");
    let mut s = server(&pki);
    let e = s
        .receive(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            &mut Vec::new(),
            |_| {},
        )
        .unwrap_err();
    assert!(!e.0.is_empty());
    // An alert may or may not be possible before a hello; the next call fails too.
    assert!(s.receive(b"more", &mut Vec::new(), |_| {}).is_err());
}

#[test]
fn a_client_that_does_not_trust_the_ca_fails_the_handshake() {
    let (pki, other) = (Pki::new("trusted"), Pki::new("other"));
    let mut s = server(&pki);
    let name = ServerName::try_from("localhost").unwrap();
    let mut c = Tls::client(other.client_config(), name).unwrap();
    carry(&mut c, &mut s, usize::MAX).unwrap();
    let e = carry(&mut s, &mut c, usize::MAX).unwrap_err();
    assert!(e.0.contains("certificate"), "{e}");
    // The client's alert tells the server.
    assert!(carry(&mut c, &mut s, usize::MAX).is_err());
}

#[test]
fn config_errors_name_the_file() {
    let pki = Pki::new("errors");
    let missing = pki.dir.join("missing.pem");
    let t = tls::ticketer().unwrap();
    let e = tls::server_config(&missing, &pki.key(), t.clone()).unwrap_err();
    assert!(
        e.starts_with("--tls-cert ") && e.contains("missing.pem"),
        "{e}"
    );
    // A key file given as the certificate: no certificate in it.
    let e = tls::server_config(&pki.key(), &pki.key(), t.clone()).unwrap_err();
    assert!(e.contains("--tls-cert") && e.contains("CERTIFICATE"), "{e}");
    let e = tls::server_config(&pki.cert(), &pki.cert(), t.clone()).unwrap_err();
    assert!(e.starts_with("--tls-key "), "{e}");
    // A key from another pair.
    let other = Pki::new("errors-other");
    let e = tls::server_config(&pki.cert(), &other.key(), t).unwrap_err();
    assert!(e.contains("does not fit"), "{e}");
}

/// The server's ticket, sent after the handshake, reaches the client through the
/// client's own record layer; the next connection with the same client settings
/// resumes, both sides seeing it.
#[test]
fn tickets_after_the_handshake_resume_the_next_connection() {
    let pki = Pki::new("resume");
    let config = tls::server_config(&pki.cert(), &pki.key(), tls::ticketer().unwrap()).unwrap();
    let config = Arc::new(config);
    let client_config = pki.client_config();
    let name = || ServerName::try_from("localhost").unwrap();
    let mut s = Tls::server(config.clone()).unwrap();
    let mut c = Tls::client(client_config.clone(), name()).unwrap();
    handshake(&mut s, &mut c, usize::MAX);
    assert!(!s.is_resumed() && !c.is_resumed());
    // The ticket follows the handshake.
    carry(&mut s, &mut c, usize::MAX).unwrap();
    let mut s2 = Tls::server(config).unwrap();
    let mut c2 = Tls::client(client_config, name()).unwrap();
    handshake(&mut s2, &mut c2, usize::MAX);
    assert!(s2.is_resumed() && c2.is_resumed());
    let sealed = seal(&mut c2, &[b"resumed"]);
    assert_eq!(open(&mut s2, &sealed, usize::MAX), b"resumed");
}
