//! Authorization over real sockets: tokens minted by PyJWT (tests/interop/jwt_tool.py,
//! keys made by Python's `cryptography` in each test) against every transport, every
//! refusal, patterns with `{sub}` and prefixes, expiry during a connection, and
//! `--admin-listen`.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, Ws, http, read_head, tcp_from, upgrade_request};
use ringpush::proto::frame::OpCode;

const SECRET: &str = "test-secret-0123456789";

/// `python3 tests/interop/jwt_tool.py ARGS`; its output, trimmed.
fn tool(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/jwt_tool.py"
        ))
        .args(args)
        .output()
        .expect("python3 (scripts/test.sh installs PyJWT)");
    assert!(
        out.status.success(),
        "jwt_tool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Fresh key pairs in a temporary directory, removed when the test ends.
fn keys() -> KeyDir {
    let dir = std::env::temp_dir().join(format!(
        "ringpush-auth-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    assert_eq!(tool(&["keys", dir.to_str().unwrap()]), "ok");
    KeyDir(dir)
}

struct KeyDir(PathBuf);

impl std::ops::Deref for KeyDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hs(claims: &str) -> String {
    tool(&["mint", "HS256", SECRET, claims])
}

fn signed(alg: &str, key: &Path, claims: &str) -> String {
    tool(&["mint", alg, key.to_str().unwrap(), claims])
}

/// The status line and head of a request's response.
fn head_of(addr: SocketAddr, request: &str) -> String {
    let mut s = tcp_from(addr, 1);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    read_head(&mut s).0
}

fn upgrade(addr: SocketAddr, path: &str, token: Option<&str>) -> String {
    let extra = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    head_of(addr, &upgrade_request(path, &extra))
}

fn get(addr: SocketAddr, target: &str, token: Option<&str>) -> String {
    let extra = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    head_of(
        addr,
        &format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n"),
    )
}

fn publish(addr: SocketAddr, topic: &str, auth: Option<&str>) -> String {
    let extra = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    http(
        addr,
        &format!("POST /publish/{topic} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: 2\r\n\r\nhi"),
    )
}

fn status(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or("")
}

fn metric(addr: SocketAddr, reason: &str) -> u64 {
    let m = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    m.lines()
        .filter(|l| {
            l.starts_with("ringpush_handshake_failures_total")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The counter once it reaches `want`, or after 5 s as it is: a refusal is counted
/// when its connection ends, just after the answer went out.
fn metric_at_least(addr: SocketAddr, reason: &str, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = metric(addr, reason);
        if n >= want || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every refusal, every transport, patterns and `{sub}`, HS256 (secret from the
/// environment) and ES256 (public key file) on one server.
#[test]
fn every_transport_checks_tokens() {
    let dir = keys();
    let ec_public = dir.join("ec_public.pem");
    let ec = dir.join("ec_private.pem");
    let Some((srv, line)) = Server::start_env_line(
        &[
            "--shards",
            "2",
            "--jwt-public-key",
            ec_public.to_str().unwrap(),
            "--publish-token",
            "admin-token",
        ],
        &[("RINGPUSH_JWT_SECRET", SECRET)],
    ) else {
        return;
    };
    assert!(line.contains("tokens required"), "{line}");
    let a = srv.addr;
    let alice = r#"{"exp": {"in": 300}, "sub": "alice",
        "subscribe": ["news", "user:{sub}", "room:*"], "publish": ["room:*"]}"#;
    let tok = hs(alice);
    let tok_es = signed("ES256", &ec, alice);

    // No token, a bad one, an expired one, a wrong key: 401 with the challenge.
    for (token, reason) in [
        (None, "token_missing"),
        (Some("not-a-jwt".to_owned()), "token_invalid"),
        (
            Some(hs(r#"{"exp": {"in": -10}, "subscribe": ["news"]}"#)),
            "token_expired",
        ),
        (
            Some(tool(&[
                "mint",
                "HS256",
                "another-secret",
                r#"{"exp": {"in": 60}, "subscribe": ["news"]}"#,
            ])),
            "token_invalid",
        ),
        (
            Some(hs(
                r#"{"exp": {"in": 60}, "nbf": {"in": 60}, "subscribe": ["news"]}"#,
            )),
            "token_expired",
        ),
    ] {
        let before = metric(a, reason);
        let h = upgrade(a, "/ws/news", token.as_deref());
        assert_eq!(status(&h), "401", "{reason}: {h}");
        assert!(
            h.contains("WWW-Authenticate: Bearer realm=\"ringpush\", error=\"invalid_token\"\r\n"),
            "{h}"
        );
        assert_eq!(
            metric_at_least(a, reason, before + 1),
            before + 1,
            "{reason} counted"
        );
    }
    // Right token: 101 (HS256 and ES256); the topic decides the rest.
    for t in [&tok, &tok_es] {
        assert_eq!(status(&upgrade(a, "/ws/news", Some(t))), "101");
        assert_eq!(status(&upgrade(a, "/ws/user:alice", Some(t))), "101");
        assert_eq!(status(&upgrade(a, "/ws/room:any", Some(t))), "101");
        assert_eq!(status(&upgrade(a, "/ws/user:bob", Some(t))), "403");
        assert_eq!(status(&upgrade(a, "/ws/other", Some(t))), "403");
    }
    assert!(metric_at_least(a, "topic_forbidden", 4) >= 4);
    // ?token= works where headers cannot be set; SSE needs every topic.
    assert_eq!(
        status(&get(a, &format!("/sse/news?token={tok}"), None)),
        "200"
    );
    assert_eq!(
        status(&get(
            a,
            &format!("/sse?topic=news&topic=user:alice&token={tok}"),
            None
        )),
        "200"
    );
    assert_eq!(
        status(&get(
            a,
            &format!("/sse?topic=news&topic=user:bob&token={tok}"),
            None
        )),
        "403"
    );
    assert_eq!(status(&get(a, "/sse/news", None)), "401");
    assert_eq!(status(&get(a, "/poll/news", Some(&tok))), "200");
    assert_eq!(status(&get(a, "/poll/other", Some(&tok))), "403");
    assert_eq!(status(&get(a, "/poll/news", None)), "401");
    // /echo, /healthz, /metrics need none.
    assert_eq!(status(&upgrade(a, "/echo", None)), "101");
    assert_eq!(status(&get(a, "/healthz", None)), "200");
    // Publish: the admin token, or a token that may publish there.
    assert!(publish(a, "news", Some("admin-token")).starts_with("HTTP/1.1 200 "));
    assert!(publish(a, "room:x", Some(&tok)).starts_with("HTTP/1.1 200 "));
    assert!(publish(a, "news", Some(&tok)).starts_with("HTTP/1.1 403 "));
    assert!(publish(a, "news", None).starts_with("HTTP/1.1 401 "));

    // A WebSocket publishes where its token allows, and is closed with 1008 where not.
    let mut listener = Ws::connect_with(
        a,
        "/ws/room:lobby",
        &format!("Authorization: Bearer {tok}\r\n"),
    );
    let mut talker = Ws::connect_with(
        a,
        "/ws/room:lobby",
        &format!("Authorization: Bearer {tok}\r\n"),
    );
    std::thread::sleep(Duration::from_millis(100));
    talker.send(true, OpCode::Text, b"hello room");
    let f = listener.recv().expect("the message");
    assert_eq!(f.payload, b"hello room");
    let mut reader = Ws::connect_with(a, "/ws/news", &format!("Authorization: Bearer {tok}\r\n"));
    reader.send(true, OpCode::Text, b"may I?");
    reader.expect_close(1008);
    assert_eq!(metric(a, "ws_publish_forbidden"), 1);
}

/// A token that expires while connected: the WebSocket gets 1008 "token expired", the
/// event stream ends. RS256 on this server.
#[test]
fn expiry_during_a_connection() {
    let dir = keys();
    let rsa_public = dir.join("rsa_public.pem");
    let rsa = dir.join("rsa_private.pem");
    let Some(srv) = Server::start(&["--jwt-public-key", rsa_public.to_str().unwrap()]) else {
        return;
    };
    let a = srv.addr;
    let short = signed("RS256", &rsa, r#"{"exp": {"in": 2}, "subscribe": ["t"]}"#);
    let mut ws = Ws::connect_with(a, "/ws/t", &format!("Authorization: Bearer {short}\r\n"));
    let mut sse = tcp_from(a, 2);
    sse.write_all(format!("GET /sse/t?token={short} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let (head, _) = read_head(&mut sse);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let t0 = Instant::now();
    ws.s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let f = ws.recv().expect("a close frame");
    assert_eq!(f.opcode, OpCode::Close);
    assert_eq!(u16::from_be_bytes([f.payload[0], f.payload[1]]), 1008);
    assert_eq!(&f.payload[2..], b"token expired");
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
    // The stream ends (EOF) about the same time.
    sse.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match sse.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("the stream did not end: {e}"),
        }
    }
    assert_eq!(metric(a, "token_expired_in_session"), 2);
}

/// Without keys nothing changes, and the startup line says so; a bad key file stops the
/// server with one line naming it; `--admin-listen` takes `/metrics` and `/healthz` off
/// the main port.
#[test]
fn off_by_default_bad_keys_and_admin_listen() {
    let Some((srv, line)) = Server::start_env_line(&[], &[]) else {
        return;
    };
    assert!(line.contains("authorization off"), "{line}");
    assert_eq!(status(&upgrade(srv.addr, "/ws/anything", None)), "101");
    drop(srv);

    let bad = std::env::temp_dir().join(format!("ringpush-bad-key-{}", std::process::id()));
    std::fs::write(&bad, "-----BEGIN NOTHING-----\n").unwrap();
    for path in [bad.to_str().unwrap(), "/nonexistent/key.pem"] {
        let out = Command::new(env!("CARGO_BIN_EXE_ringpush"))
            .args(["serve", "--listen", "127.0.0.1:0", "--jwt-public-key", path])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("--jwt-public-key {path}")), "{err}");
    }
    let _ = std::fs::remove_file(&bad);

    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    drop(admin);
    let Some((srv, line)) = Server::start_env_line(
        &["--shards", "2", "--admin-listen", &admin_addr.to_string()],
        &[],
    ) else {
        return;
    };
    assert!(line.contains(&format!("on {admin_addr} only")), "{line}");
    assert_eq!(status(&get(srv.addr, "/metrics", None)), "404");
    assert_eq!(status(&get(srv.addr, "/healthz", None)), "404");
    assert_eq!(status(&get(admin_addr, "/healthz", None)), "200");
    assert!(
        http(admin_addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .contains("ringpush_connections")
    );
    assert_eq!(status(&get(admin_addr, "/poll/x", None)), "404");
    assert_eq!(status(&upgrade(admin_addr, "/ws/x", None)), "404");
    assert_eq!(status(&upgrade(srv.addr, "/ws/x", None)), "101");
}
