//! The demo page (`GET /`, src/server/demo.html) in a real browser: Debian's Chromium,
//! driven by playwright-core from tests/browser/demo.mjs (both installed by
//! scripts/test.sh). The page chats over `/ws/chat` with a Node `ws` peer, shows events
//! published to `/sse/feed`, and after its connections are cut at a proxy the browser's
//! own EventSource resumes with Last-Event-ID: every event shown once, in order.

mod common;

use std::path::Path;

use common::{Server, run_peer};

const CHROMIUM: &str = "/usr/bin/chromium";

#[test]
fn demo_page_in_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: scripts/test.sh installs it (apt-get install chromium)"
    );
    // A short retry hint so the EventSource is back soon after the cut.
    let Some(srv) = Server::start(&["--shards", "2", "--sse-retry", "500ms"]) else {
        return;
    };
    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/demo-screenshot.png");
    let _ = std::fs::remove_file(&screenshot);
    run_peer("node", "tests/browser/demo.mjs", &[&srv.addr.to_string()]);
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
}

/// permessage-deflate in Chromium: `ws.extensions` names it, a broadcast from a plain
/// peer arrives compressed and intact, the page's own compressed messages reach the
/// peer, `/echo` round-trips up to 200 KB.
#[test]
fn permessage_deflate_in_chromium() {
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing");
    let Some(srv) = Server::start(&["--shards", "2"]) else {
        return;
    };
    run_peer(
        "node",
        "tests/browser/deflate.mjs",
        &[&srv.addr.to_string()],
    );
}

/// The demo page with authorization on: opened with a token (minted by PyJWT) it chats,
/// streams and publishes; without one, neither transport opens.
#[test]
fn demo_page_with_a_token() {
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing");
    let secret = "browser-secret-0123456789";
    let Some(srv) = Server::start_env(&["--shards", "2"], &[("RINGPUSH_JWT_SECRET", secret)])
    else {
        return;
    };
    let out = std::process::Command::new("python3")
        .arg("tests/interop/jwt_tool.py")
        .args([
            "mint",
            "HS256",
            secret,
            r#"{"exp": {"in": 300}, "sub": "demo", "subscribe": ["chat", "feed"], "publish": ["chat", "feed"]}"#,
        ])
        .output()
        .expect("python3 with PyJWT");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    run_peer(
        "node",
        "tests/browser/token.mjs",
        &[&srv.addr.to_string(), &token],
    );
}
