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

# Pub/sub: a message reaches the other subscriber unchanged, with its opcode.
with connect(f"{base}/ws/interop-py") as a, connect(f"{base}/ws/interop-py") as b:
    a.send("from a")
    assert b.recv(timeout=5) == "from a"
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
