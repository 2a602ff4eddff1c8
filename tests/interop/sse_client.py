"""Interop: the Python `httpx-sse` client (on httpx) against ringpush's event streams.

Usage: python3 sse_client.py HOST:PORT [HISTORY] [--ca FILE]
  -- exits 0 and prints "ok" last when every check passes. With HISTORY (the server's
  --history), also checks that a position older than the history gets `event: reset`.
  With --ca, everything goes over https:// and wss://, trusting only the authority in
  FILE (PEM).

The script publishes with POST /publish/{topic} itself (urllib) and checks: the stream's
headers, the opening `retry:`, ids, data in order (multi-line payloads joined with "\\n",
whatever the line ending), named events, binary WebSocket messages as base64, and resuming
with Last-Event-ID (header and ?lastEventId=): exactly the missed events, once each.
"""
import base64
import json
import queue
import socket
import ssl
import sys
import threading
import time
import urllib.request

import httpx
from httpx_sse import connect_sse
from websockets.sync.client import connect as ws_connect

args = sys.argv[1:]
ca = None
if "--ca" in args:
    i = args.index("--ca")
    ca = args[i + 1]
    del args[i : i + 2]
addr = args[0]
history = int(args[1]) if len(args) > 1 else None
tls = ssl.create_default_context(cafile=ca) if ca else None
base = f"{'https' if ca else 'http'}://{addr}"
TOPIC = "interop-sse-py"
TIMEOUT = httpx.Timeout(10.0)


def fail(reason):
    print(f"FAIL: {reason}", flush=True)
    sys.exit(1)


def publish(topic, body, event=None):
    url = f"{base}/publish/{topic}" + (f"?event={event}" if event else "")
    req = urllib.request.Request(url, data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10, context=tls) as r:
        if r.status != 200:
            fail(f"publish answered {r.status}")
        doc = json.loads(r.read())
    if not isinstance(doc.get("id"), str) or not doc["id"]:
        fail(f"publish answered {doc!r}, expected a non-empty string id")
    return doc["id"]


class Stream:
    """One event stream (a request with an optional Last-Event-ID). A reader thread
    turns it into a queue, so a test can wait for an event with a deadline."""

    def __init__(self, path, last_event_id=None):
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        # A client (connection pool) per stream: the stream's connection is never reused.
        self._client = httpx.Client(timeout=TIMEOUT, verify=tls or True)
        self._cm = connect_sse(self._client, "GET", base + path, headers=headers)
        self.source = self._cm.__enter__()
        self.response = self.source.response
        if self.response.status_code != 200:
            fail(f"GET {path}: {self.response.status_code}")
        self.retry = None
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        try:
            for ev in self.source.iter_sse():
                self._queue.put(ev)
            self._queue.put("the stream ended")
        except Exception as e:  # noqa: BLE001 (any end of the stream is reported)
            self._queue.put(f"the stream failed: {e!r}")

    def next(self, timeout=10.0):
        """The next event with a name or data (the retry-only block is recorded), or
        None when `timeout` passes."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                ev = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if isinstance(ev, str):
                fail(ev)
            if ev.retry is not None:
                self.retry = ev.retry
            # httpx-sse keeps the last id across blocks and yields a block with an id but
            # no data (a heartbeat comment's blank line after an event); WHATWG HTML's
            # dispatch step drops a block whose data buffer is empty, so do the same.
            if not ev.data and ev.event == "message":
                continue
            return ev

    def must_next(self, what):
        ev = self.next()
        if ev is None:
            fail(f"no event within 10 s (waiting for {what})")
        return ev

    def close(self):
        # Shut the socket down so the blocked reader wakes up and the server sees EOF.
        sock = self.response.extensions["network_stream"].get_extra_info("socket")
        sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._cm.__exit__(None, None, None)
        self._client.close()


def is_warmup(ev):
    return ev.event == "message" and ev.data.startswith("warmup ")


def sync(stream, *topics):
    """A new stream starts at the topic's position when the server looked it up. Publish
    warm-up events until one of each topic arrives, so later publishes are known to be
    delivered; later warm-ups are skipped by expect()."""
    pending = set(topics)
    for i in range(50):
        for t in pending:
            publish(t, f"warmup {t} {i}")
        ev = stream.next(timeout=0.3)
        while ev is not None:
            if not is_warmup(ev):
                fail(f"unexpected event before the warm-up: {ev!r}")
            pending.discard(ev.data.split(" ")[1])
            ev = stream.next(timeout=0.05)
        if not pending:
            return
    fail(f"no warm-up event arrived for {pending}")


def expect(stream, wanted, skip_warmups=False):
    """Receives len(wanted) events and checks (event, data) in order; returns their ids."""
    ids = []
    for i, (event, data) in enumerate(wanted):
        ev = stream.must_next(repr(data))
        while skip_warmups and is_warmup(ev):
            ev = stream.must_next(repr(data))
        if (ev.event, ev.data) != (event, data):
            fail(f"event {i}: got ({ev.event!r}, {ev.data!r}), want ({event!r}, {data!r})")
        if not ev.id:
            fail(f"event {i} ({data!r}) has no id")
        if ids and ev.id == ids[-1]:
            fail(f"event {i} repeats the id {ev.id!r}")
        ids.append(ev.id)
    return ids


def expect_nothing(stream, seconds):
    ev = stream.next(timeout=seconds)
    if ev is not None:
        fail(f"expected no more events, got {ev!r}")


# 1. Headers and the opening retry line.
s = Stream(f"/sse/{TOPIC}")
h = s.response.headers
if not h.get("content-type", "").startswith("text/event-stream"):
    fail(f"Content-Type {h.get('content-type')!r}")
if h.get("cache-control") != "no-cache":
    fail(f"Cache-Control {h.get('cache-control')!r}")
if h.get("x-accel-buffering") != "no":
    fail(f"X-Accel-Buffering {h.get('x-accel-buffering')!r}")
if "content-length" in h or "transfer-encoding" in h:
    fail(f"an event stream must have no length framing: {dict(h)!r}")
sync(s, TOPIC)
if s.retry is None or s.retry <= 0:
    fail(f"the stream did not open with a positive retry: ({s.retry!r})")

# 2. Events in order, with their names and multi-line data.
sent = [
    ("message", "hello", "hello"),
    ("message", "multi\nline\ndata", "multi\nline\ndata"),
    ("message", "crlf\r\nline\rcr", "crlf\nline\ncr"),
    ("message", "blank\n\nmiddle", "blank\n\nmiddle"),
    ("message", "ünïcødé ✓ 🚀", "ünïcødé ✓ 🚀"),
    ("greeting", "a named event", "a named event"),
    ("message", "data: looks like a field", "data: looks like a field"),
    ("message", ": looks like a comment", ": looks like a comment"),
] + [("message", f"event {i}", f"event {i}") for i in range(20)]
published = [publish(TOPIC, body, None if ev == "message" else ev) for ev, body, _ in sent]
ids = expect(s, [(ev, data) for ev, _, data in sent], skip_warmups=True)
if ids != published:
    fail(f"ids on the stream {ids} differ from the ids publish answered {published}")

# 3. A binary WebSocket message reaches the stream as `event: binary`, base64; a
# text one as a plain event.
blob = bytes(range(256)) * 3
with ws_connect(f"{'wss' if ca else 'ws'}://{addr}/ws/{TOPIC}", ssl=tls) as ws:
    ws.send(blob)
    ev = s.must_next("the binary message")
    if ev.event != "binary" or base64.b64decode(ev.data, validate=True) != blob:
        fail(f"binary message arrived as {ev.event!r} {ev.data[:40]!r}...")
    ws.send("text from ws")
    ids = expect(s, [("message", "text from ws")])
last = ids[-1]
s.close()

# 4. Resume with the Last-Event-ID header: exactly the missed events, then live.
missed = [f"missed {i}\nsecond line" for i in range(10)]
for body in missed:
    publish(TOPIC, body)
s = Stream(f"/sse/{TOPIC}", last_event_id=last)
expect(s, [("message", m) for m in missed])
publish(TOPIC, "live after resume")
last = expect(s, [("message", "live after resume")])[-1]
expect_nothing(s, 0.3)
s.close()

# 5. Resume with ?lastEventId= (clients that cannot set headers), same guarantee.
for i in range(3):
    publish(TOPIC, f"query missed {i}")
s = Stream(f"/sse/{TOPIC}?lastEventId={last}")
expect(s, [("message", f"query missed {i}") for i in range(3)])
publish(TOPIC, "live after query resume")
last = expect(s, [("message", "live after query resume")])[-1]
s.close()

# 6. Resuming at the newest id replays nothing: the next event is a new one.
s = Stream(f"/sse/{TOPIC}", last_event_id=last)
publish(TOPIC, "only this")
expect(s, [("message", "only this")])
s.close()

# 7. Two topics on one stream; resume covers both. Topics have separate orders, so
# only the set is compared.
s = Stream("/sse?topic=py-a&topic=py-b")
sync(s, "py-a", "py-b")
publish("py-b", "b1")
publish("py-a", "a1")
got = []
while len(got) < 2:
    ev = s.must_next("b1 and a1")
    if not is_warmup(ev):
        got.append(ev)
if sorted(e.data for e in got) != ["a1", "b1"]:
    fail(f"two-topic stream gave {[e.data for e in got]}")
last = got[-1].id
s.close()
publish("py-a", "a2")
publish("py-b", "b2")
s = Stream("/sse?topic=py-a&topic=py-b", last_event_id=last)
got = sorted(s.must_next("a2 and b2").data for _ in range(2))
if got != ["a2", "b2"]:
    fail(f"two-topic resume replayed {got}, want a2 and b2 once each")
expect_nothing(s, 0.3)
s.close()

# 8. A position older than the history: `event: reset` first, then live events.
if history is not None:
    s = Stream("/sse/py-reset")
    sync(s, "py-reset")
    s.close()
    first = publish("py-reset", "old")
    for i in range(history + 5):
        publish("py-reset", f"filler {i}")
    s = Stream("/sse/py-reset", last_event_id=first)
    ev = s.must_next("event: reset")
    if ev.event != "reset":
        fail(f"resuming from before the history gave {ev!r}, not an `event: reset`")
    s.close()

print("ok")
