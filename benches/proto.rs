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

/// A JSON push of about `n` bytes (a market-data batch), as tests/deflate.rs builds it.
fn json_message(n: usize) -> Vec<u8> {
    let mut s = String::from("{\"events\":[");
    let mut i = 0;
    while s.len() + 40 < n {
        s.push_str(&format!(
            "{{\"id\":{},\"sym\":\"ACME{}\",\"bid\":{}.{:02},\"qty\":{}}},",
            1000 + i * 7,
            i % 5,
            100 + i % 13,
            (i * 37) % 100,
            (i * 131) % 1000
        ));
        i += 1;
    }
    s.push_str("{}]}");
    s.truncate(n.max(4));
    s.into_bytes()
}

/// permessage-deflate: which implementation, which level, from which size on.
///
/// - `deflate/compress/*`: a 1 KB JSON message compressed as the server does (raw
///   deflate, sync flush, no context takeover: a reset compressor per message) with
///   flate2 on zlib-rs (what ringpush uses) and with miniz_oxide (flate2's default
///   Rust backend), levels 1 and 6. The compressed size of each is printed once.
/// - `deflate/inflate/*`: the same message inflated by each.
/// - `deflate/sizes/*`: our compressor on 32 B to 4 KB of JSON; the sizes are printed
///   (the `--compression-min-bytes` default comes from them).
fn bench_deflate(c: &mut Criterion) {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
    use miniz_oxide::deflate::core::{
        CompressorOxide, TDEFLFlush, compress as mz_compress, create_comp_flags_from_zip_params,
    };
    use miniz_oxide::inflate::core::{DecompressorOxide, decompress as mz_inflate, inflate_flags};
    use ringpush::proto::deflate::{self, Deflater};

    let msg = json_message(1024);
    let mut g = c.benchmark_group("deflate");
    g.throughput(Throughput::Bytes(msg.len() as u64));
    for level in [1u32, 6] {
        let mut z = Compress::new_with_window_bits(Compression::new(level), false, 15);
        let mut out = Vec::with_capacity(2048);
        let mut once = true;
        g.bench_function(BenchmarkId::new("compress/zlib-rs", level), |b| {
            b.iter(|| {
                z.reset();
                out.clear();
                z.compress_vec(black_box(&msg), &mut out, FlushCompress::Sync)
                    .unwrap();
                if std::mem::take(&mut once) {
                    eprintln!(
                        "zlib-rs level {level}: {} -> {} bytes",
                        msg.len(),
                        out.len() - 4
                    );
                }
                black_box(out.len())
            })
        });
        let flags = create_comp_flags_from_zip_params(level as i32, -15, 0);
        let mut mz = Box::new(CompressorOxide::new(flags));
        let mut buf = vec![0u8; 4096];
        let mut once = true;
        g.bench_function(BenchmarkId::new("compress/miniz_oxide", level), |b| {
            b.iter(|| {
                mz.reset();
                let (_, _, n) = mz_compress(&mut mz, black_box(&msg), &mut buf, TDEFLFlush::Sync);
                if std::mem::take(&mut once) {
                    eprintln!(
                        "miniz_oxide level {level}: {} -> {} bytes",
                        msg.len(),
                        n - 4
                    );
                }
                black_box(n)
            })
        });
    }
    let mut z = Vec::new();
    Deflater::new(deflate::PER_CONNECTION_LEVEL, 15).compress(&msg, &mut z);
    let mut tailed = z.clone();
    tailed.extend_from_slice(&deflate::TAIL);
    g.bench_function("inflate/ringpush(zlib-rs, bounded)", |b| {
        b.iter(|| black_box(deflate::inflate(black_box(&z), 1 << 20).unwrap().len()))
    });
    let mut d = Decompress::new_with_window_bits(false, 15);
    let mut out = vec![0u8; 4096];
    g.bench_function("inflate/zlib-rs", |b| {
        b.iter(|| {
            d.reset(false);
            d.decompress(black_box(&tailed), &mut out, FlushDecompress::Sync)
                .unwrap();
            black_box(d.total_out())
        })
    });
    let mut mzd = Box::new(DecompressorOxide::new());
    g.bench_function("inflate/miniz_oxide", |b| {
        b.iter(|| {
            mzd.init();
            let (_, _, n) = mz_inflate(
                &mut mzd,
                black_box(&tailed),
                &mut out,
                0,
                inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
            );
            black_box(n)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("deflate/sizes");
    let mut d = Deflater::new(deflate::BROADCAST_LEVEL, 15);
    for size in [32usize, 64, 100, 128, 256, 512, 1024, 4096] {
        let msg = json_message(size);
        let mut out = Vec::new();
        d.compress(&msg, &mut out);
        eprintln!(
            "deflate/sizes: {} B of JSON -> {} B ({:.0}% saved)",
            msg.len(),
            out.len(),
            100.0 * (1.0 - out.len() as f64 / msg.len() as f64)
        );
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| {
                out.clear();
                d.compress(black_box(&msg), &mut out);
                black_box(out.len())
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
    bench_sse,
    bench_auth,
    bench_deflate
);
criterion_main!(benches);
