//! Interop of the event streams with peer SSE clients nobody here wrote: Python
//! `httpx-sse` and Node `eventsource` (installed by scripts/test.sh). Each script
//! publishes with `POST /publish/{topic}`, checks ids, order and multi-line data, and
//! resumes with `Last-Event-ID`: exactly the missed events, once each.

mod common;

use common::{Server, run_peer};

/// Python `httpx-sse`: headers, `retry:`, events and names in order, multi-line data in
/// every line ending, binary WebSocket messages as base64, resume by header and by
/// `?lastEventId=`, two topics on one stream, and `event: reset` past a 32-event history.
#[test]
fn python_httpx_sse_client() {
    let Some(srv) = Server::start(&["--shards", "2", "--sse-heartbeat", "1s", "--history", "32"])
    else {
        return;
    };
    run_peer(
        "python3",
        "tests/interop/sse_client.py",
        &[&srv.addr.to_string(), "32"],
    );
}

/// Node `eventsource`: the same checks, and the library's own reconnect after the stream
/// is cut at a proxy while events are published: it resumes with `Last-Event-ID` and
/// gets exactly the missed events. `--sse-retry 500ms` keeps the reconnect quick.
#[test]
fn node_eventsource_client() {
    let Some(srv) = Server::start(&[
        "--shards",
        "2",
        "--sse-heartbeat",
        "1s",
        "--sse-retry",
        "500ms",
    ]) else {
        return;
    };
    run_peer(
        "node",
        "tests/interop/sse_client.mjs",
        &[&srv.addr.to_string()],
    );
}
