"""Interop: the Python `websockets` client (sync API) against ringpush.

Usage: python3 ws_client.py HOST:PORT [--ca FILE]
  -- exits 0 and prints "ok" when every check passes. With --ca, over wss:// trusting
  only the authority in FILE (PEM).
"""
import ssl
import sys

from websockets.sync.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

ca = sys.argv[sys.argv.index("--ca") + 1] if "--ca" in sys.argv else None
base = f"{'wss' if ca else 'ws'}://{sys.argv[1]}"
tls = ssl.create_default_context(cafile=ca) if ca else None


def connect(url, **kwargs):
    return ws_connect(url, ssl=tls, **kwargs)


with connect(f"{base}/echo", max_size=2**20) as ws:
    for size in [0, 1, 125, 126, 127, 65535, 65536, 500_000]:
        data = bytes(i % 251 for i in range(size))
        ws.send(data)
        assert ws.recv() == data, f"binary {size}"
        text = "é" * (size // 2)
        ws.send(text)
        assert ws.recv() == text, f"text {size}"
    # A fragmented message: websockets sends an iterable as fragments.
    ws.send(iter(["frag", "men", "ted"]))
    assert ws.recv() == "fragmented"
    ws.send(iter([b"\x00", b"\x01\x02"]))
    assert ws.recv() == b"\x00\x01\x02"
    # Ping with payload: the pong must carry it (websockets matches it).
    assert ws.ping(b"py-ping").wait(5), "pong"
    ws.close(code=4001, reason="bye")
    rcvd = ws.protocol.close_rcvd
    assert rcvd is not None and rcvd.code == 4001, rcvd


def sync(a, b):
    """A subscription reaches the topic's owner shard after the 101, so a message sent at
    once can pass a new subscriber by: `a` sends warm-ups until `b` has one."""
    for i in range(50):
        a.send(f"warmup {i}")
        try:
            b.recv(timeout=0.2)
            return
        except TimeoutError:
            pass
    raise AssertionError("no warm-up reached the second subscriber")


def recv_after_warmups(ws):
    while True:
        m = ws.recv(timeout=5)
        if not (isinstance(m, str) and m.startswith("warmup ")):
            return m


# Pub/sub: a message reaches the other subscriber unchanged, with its opcode. The way
# back needs no warm-up: a's subscription went to the owner ahead of a's first warm-up.
with connect(f"{base}/ws/interop-py") as a, connect(f"{base}/ws/interop-py") as b:
    sync(a, b)
    a.send("from a")
    assert recv_after_warmups(b) == "from a"
    b.send(b"\xff\x00")
    assert a.recv(timeout=5) == b"\xff\x00"

# Invalid UTF-8 from the server's point of view is impossible to send with this
# client, so check the close code path with a too-large message instead.
with connect(f"{base}/echo", max_size=None) as ws:
    try:
        ws.send(b"x" * (2**20 + 1))
        ws.recv(timeout=5)
        raise AssertionError("no close")
    except ConnectionClosed as e:
        assert e.rcvd is not None and e.rcvd.code == 1009, e

print("ok")
