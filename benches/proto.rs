//! Micro-benchmarks of the protocol core. Results, with machine and command, are in
//! `benches/RESULTS.md`. Run: `cargo bench --bench proto`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringpush::proto::auth::Authorizer;
use ringpush::proto::frame::{OpCode, Role, write_masked_frame};
use ringpush::proto::limits::Limits;
use ringpush::proto::mask::{unmask, unmask_reference};
use ringpush::proto::message::Decoder;
use ringpush::proto::{Parsed, handshake, http, sse};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn bench_unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    for size in [16usize, 64, 256, 1400, 4096, 65536, 1 << 20] {
        let mut buf = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("bytewise", size), &size, |b, _| {
            b.iter(|| unmask_reference(black_box(&mut buf), black_box(MASK), 0))
        });
        g.bench_with_input(BenchmarkId::new("fast", size), &size, |b, _| {
            b.iter(|| unmask(black_box(&mut buf), black_box(MASK), 0))
        });
    }
    g.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (count, size) in [(1000usize, 32usize), (100, 1400), (1, 65536)] {
        let mut wire = Vec::new();
        for i in 0..count {
            let payload: Vec<u8> = (0..size).map(|j| b'a' + ((i + j) % 26) as u8).collect();
            write_masked_frame(&mut wire, true, OpCode::Text, &payload, MASK);
        }
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(BenchmarkId::new("text", format!("{count}x{size}B")), |b| {
            b.iter(|| {
                let mut d = Decoder::new(Role::Server);
                let mut rest = black_box(&wire[..]);
                let mut n = 0;
                while !rest.is_empty() {
                    let (used, msg) = d.decode(rest, 1 << 20).expect("valid");
                    n += usize::from(msg.is_some());
                    rest = &rest[used..];
                }
                assert_eq!(n, count);
            })
        });
    }
    g.finish();
}

fn bench_handshake(c: &mut Criterion) {
    // A Chromium WebSocket request, as captured.
    let req = b"GET /ws/chat HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: Upgrade\r\nPragma: no-cache\r\n\
Cache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\nOrigin: http://127.0.0.1:8080\r\nSec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
    let limits = Limits::default();
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse+route+accept", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            let Ok(Parsed::Complete { value: head, .. }) =
                http::parse_request_head(black_box(req), &limits)
            else {
                panic!("valid request")
            };
            let route = http::route(&head).expect("route");
            black_box(route);
            let accept = handshake::validate(&head, &[]).expect("valid handshake");
            out.clear();
            handshake::write_accept(&mut out, &accept, None);
            black_box(&out);
        })
    });
    g.bench_function("accept_key", |b| {
        b.iter(|| handshake::accept_key(black_box(b"dGhlIHNhbXBsZSBub25jZQ==")))
    });
    g.finish();
}

fn bench_sse(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse_encode");
    for size in [32usize, 1024, 16384] {
        // One line break every 80 bytes, as in pretty-printed JSON.
        let data: Vec<u8> = (0..size)
            .map(|i| if i % 80 == 79 { b'\n' } else { b'x' })
            .collect();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("event", size), &size, |b, _| {
            let mut out = Vec::with_capacity(2 * size);
            b.iter(|| {
                out.clear();
                sse::encode_event(
                    &mut out,
                    black_box("1a2b3c4d-12345"),
                    Some("update"),
                    black_box(&data),
                );
                black_box(&out);
            })
        });
    }
    g.finish();
}

/// A throwaway P-256 key pair for the ES256 bench (made for it; it guards nothing).
const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgkUb0vMWxYC2G/Uck\nrdgllBmdLS3DjZHrGmcnWa6aDM2hRANCAAQF/xZ3E9kOIYAG6M9VFeuKD8M4wHZZ\nzzZWFYUV4w8XpdLmnLfwsWwqbi5x/yMzMxS6ycm2fXYCLvSWKrdEZpdZ\n-----END PRIVATE KEY-----";
const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEBf8WdxPZDiGABujPVRXrig/DOMB2\nWc82VhWFFeMPF6XS5py38LFsKm4ucf8jMzMUusnJtn12Ai70liq3RGaXWQ==\n-----END PUBLIC KEY-----";

/// One token check per handshake (`proto::auth::Authorizer::verify`): HS256 against
/// ES256, the cost a WebSocket or SSE handshake pays with authorization on.
fn bench_auth(c: &mut Criterion) {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let claims = serde_json::json!({
        "exp": 4_000_000_000u64, "sub": "alice",
        "subscribe": ["news", "user:{sub}", "room:*"], "publish": ["room:*"],
    });
    let secret = b"bench-secret-0123456789abcdef0123456789";
    let hs = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap();
    let es = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap();
    let auth = Authorizer::new(Some(secret), Some(EC_PUBLIC.as_bytes()), None, None).unwrap();
    let mut g = c.benchmark_group("auth_verify");
    g.throughput(Throughput::Elements(1));
    for (name, token) in [("HS256", &hs), ("ES256", &es)] {
        assert!(auth.verify(token, 1_800_000_000).is_ok());
        g.bench_function(name, |b| {
            b.iter(|| black_box(auth.verify(black_box(token), 1_800_000_000).is_ok()))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_unmask,
    bench_decode,
    bench_handshake,
    bench_sse,
    bench_auth
);
criterion_main!(benches);
