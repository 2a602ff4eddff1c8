//! Micro-benchmarks of the protocol core. Results, with machine and command, are in
//! `benches/RESULTS.md`. Run: `cargo bench --bench proto`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
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
            handshake::write_accept(&mut out, &accept);
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

criterion_group!(
    benches,
    bench_unmask,
    bench_decode,
    bench_handshake,
    bench_sse
);
criterion_main!(benches);
