//! `ringpush load` over TLS against the real server with `--tls-cert --tls-key` (a CA
//! made per test, `common::tls::Pki`), read through `--json`: echo and broadcast over
//! `wss://` verified against the CA, event streams over `https://` cut at once and
//! resumed exactly, `--tls-insecure` and `--tls-resume`; a server the CA did not sign is
//! a handshake failure with its reason; and the flags' errors are one line, exit 2.

mod common;

use common::json_u64 as u;
use common::tls::Pki;
use common::{Server, load, run_load};
use serde_json::Value;

/// A TLS server with `shards` shards and `extra` flags, and the PKI it serves from.
fn tls_server(tag: &str, shards: &str, extra: &[&str]) -> Option<(Server, Pki)> {
    let pki = Pki::new(tag);
    let mut args = vec!["--shards", shards];
    args.extend_from_slice(extra);
    common::tls::server(&pki, &args).map(|s| (s, pki))
}

#[test]
fn echo_over_wss() {
    let Some((srv, pki)) = tls_server("load-echo", "2", &[]) else {
        return;
    };
    // The name checked is the URL's host: the certificate names localhost.
    let url = format!("wss://localhost:{}/echo", srv.addr.port());
    let ca = pki.ca();
    let r = load(
        &[
            "--url",
            &url,
            "--tls-ca",
            ca.to_str().unwrap(),
            "--scenario",
            "echo",
            "--connections",
            "200",
            "--duration",
            "1s",
            "--message-bytes",
            "100",
        ],
        None,
    );
    assert_eq!(u(&r, "connected"), 200, "{r}");
    assert_eq!(u(&r, "open_at_end"), 200, "{r}");
    let sent = u(&r, "sent");
    assert!(sent > 200, "{r}");
    assert_eq!(u(&r, "received"), sent, "every echo came back: {r}");
    assert_eq!(u(&r["latency_us"], "count"), sent);
    assert_eq!(r["errors"], Value::Array(vec![]), "{r}");
    // Records cost bytes on the wire: more than the 100-byte payload and its framing
    // (6 + 2 bytes each way).
    assert!(
        r["wire_bytes_per_message"].as_f64().unwrap() > 2.0 * 108.0,
        "{r}"
    );
}

#[test]
fn broadcast_over_wss() {
    let Some((srv, pki)) = tls_server("load-bcast", "2", &[]) else {
        return;
    };
    let url = format!("wss://127.0.0.1:{}/ws/loadtls", srv.addr.port());
    let ca = pki.ca();
    let r = load(
        &[
            "--url",
            &url,
            "--tls-ca",
            ca.to_str().unwrap(),
            "--scenario",
            "broadcast",
            "--connections",
            "1000",
            "--duration",
            "1s",
        ],
        None,
    );
    assert_eq!(
        u(&r, "connected"),
        1001,
        "subscribers and the publisher: {r}"
    );
    let published = u(&r, "published");
    assert!(published > 0, "{r}");
    assert_eq!(
        u(&r, "received"),
        published * 1000,
        "every message to every subscriber: {r}"
    );
    assert_eq!(r["errors"], Value::Array(vec![]), "{r}");
}

/// As tests/load.rs's `sse_cut_storm_resumes_exactly`, over https: 1,000 event streams
/// cut at once come back with `Last-Event-ID` (each a new TLS handshake) while events
/// keep coming, and every stream has every event exactly once, in order.
#[test]
fn sse_over_https_resumes_exactly() {
    let Some((srv, pki)) = tls_server("load-sse", "2", &["--history", "100000"]) else {
        return;
    };
    let url = format!("https://localhost:{}/sse/tlsstorm", srv.addr.port());
    let ca = pki.ca();
    let r = load(
        &[
            "--url",
            &url,
            "--tls-ca",
            ca.to_str().unwrap(),
            "--scenario",
            "storm",
            "--connections",
            "1000",
            "--duration",
            "4s",
            "--publish-rate",
            "100",
            "--cut-after",
            "1500ms",
            "--backoff-base",
            "100ms",
            "--backoff-cap",
            "1s",
        ],
        None,
    );
    assert_eq!(
        u(&r, "connected"),
        1001,
        "subscribers and the publisher: {r}"
    );
    let storm = &r["storm"];
    assert_eq!(u(storm, "cut"), 1000, "{r}");
    assert_eq!(
        u(storm, "cut_reconnected"),
        1000,
        "every stream came back: {r}"
    );
    assert_eq!(u(storm, "disconnected"), 0, "nothing but the cut: {r}");
    assert_eq!(r["errors"], Value::Array(vec![]), "{r}");
    let published = u(&r, "published");
    assert!(published > 200, "{r}");
    let sse = &r["sse"];
    assert_eq!(
        (
            u(sse, "gaps"),
            u(sse, "missed"),
            u(sse, "duplicates"),
            u(sse, "resets"),
            u(sse, "unparsed"),
        ),
        (0, 0, 0, 0, 0),
        "{r}"
    );
    assert_eq!(
        u(sse, "exact"),
        1000,
        "every stream contiguous up to the last event: {r}"
    );
    assert_eq!(
        u(sse, "events"),
        published * 1000,
        "each stream got every published event: {r}"
    );
}

/// `--tls-insecure` accepts the server's certificate without the CA; with `--tls-resume`
/// connections resume sessions from the tickets earlier ones received (the report
/// counts them), without it none does.
#[test]
fn insecure_and_resumed() {
    let Some((srv, _pki)) = tls_server("load-insecure", "1", &[]) else {
        return;
    };
    let url = format!("wss://127.0.0.1:{}/ws/idle", srv.addr.port());
    for extra in [&["--tls-insecure"][..], &["--tls-insecure", "--tls-resume"]] {
        let mut args = vec![
            "--url",
            &url,
            "--scenario",
            "idle",
            "--connections",
            "300",
            "--duration",
            "200ms",
            "--rate",
            "1000",
        ];
        args.extend_from_slice(extra);
        let r = load(&args, None);
        assert_eq!(u(&r, "connected"), 300, "{extra:?}: {r}");
        assert_eq!(r["errors"], Value::Array(vec![]), "{extra:?}: {r}");
        // Paced at 1,000 a second, a connection finds the ticket an earlier one got.
        let resumed = u(&r, "tls_resumed");
        if extra.contains(&"--tls-resume") {
            assert!(resumed > 100, "{extra:?}: {r}");
        } else {
            assert_eq!(resumed, 0, "{extra:?}: {r}");
        }
    }
}

/// A server whose certificate the given CA did not sign: every handshake fails, and the
/// run says why.
#[test]
fn untrusted_server_fails_with_the_reason() {
    let Some((srv, _pki)) = tls_server("load-untrusted", "1", &[]) else {
        return;
    };
    let other = Pki::new("load-other-ca");
    let url = format!("wss://localhost:{}/ws/t", srv.addr.port());
    let ca = other.ca();
    let out = run_load(
        &[
            "--url",
            &url,
            "--tls-ca",
            ca.to_str().unwrap(),
            "--scenario",
            "idle",
            "--connections",
            "5",
            "--duration",
            "100ms",
            "--backoff-cap",
            "100ms",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no connection to") && stderr.contains("tls handshake: "),
        "{stderr}"
    );
    // Both CAs have the same name, so the chain is found and its signature is wrong.
    assert!(
        stderr.contains("invalid peer certificate: BadSignature"),
        "{stderr}"
    );
}

/// The flags' mistakes: one line each, exit 2, before anything connects.
#[test]
fn tls_flag_errors() {
    let pki = Pki::new("load-flags");
    let ca = pki.ca();
    let ca = ca.to_str().unwrap();
    let missing = pki.dir.join("missing.pem");
    let cases: [(&[&str], &str); 5] = [
        (
            &["--url", "wss://127.0.0.1:1/ws/t"],
            "wss:// and https:// need --tls-ca FILE (or --tls-insecure)",
        ),
        (
            &["--url", "ws://127.0.0.1:1/ws/t", "--tls-ca", ca],
            "--tls-ca: only with wss:// or https:// URLs",
        ),
        (
            &["--url", "http://127.0.0.1:1/sse/t", "--tls-insecure"],
            "--tls-insecure: only with wss:// or https:// URLs",
        ),
        (
            &[
                "--url",
                "wss://127.0.0.1:1/ws/t",
                "--url",
                "ws://127.0.0.1:2/ws/t",
            ],
            "every --url must have the scheme and path of the first",
        ),
        (
            &[
                "--url",
                "https://127.0.0.1:1/sse/t",
                "--tls-ca",
                missing.to_str().unwrap(),
            ],
            "--tls-ca ",
        ),
    ];
    for (args, want) in cases {
        let out = run_load(args, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}
