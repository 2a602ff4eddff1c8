"""Interop: permessage-deflate with the Python `websockets` client, which offers it by
default (`permessage-deflate; client_max_window_bits`).

Usage: python3 ws_deflate.py HOST:PORT   -- exits 0 and prints "ok" when every check passes.
"""
import json
import sys

from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.sync.client import connect

base = f"ws://{sys.argv[1]}"


def deflate_agreed(ws):
    ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
    assert ext.startswith("permessage-deflate"), ext
    assert "client_no_context_takeover" in ext and "server_no_context_takeover" in ext, ext
    assert any(isinstance(e, PerMessageDeflate) for e in ws.protocol.extensions), ws.protocol.extensions


def feed(n):
    """A JSON push of about n bytes."""
    items, size = [], 2
    i = 0
    while size < n:
        item = {"id": 1000 + i, "sym": f"ACME{i % 7}", "bid": round(100 + i * 0.37, 2), "qty": i * 13 % 997}
        items.append(item)
        size += len(json.dumps(item)) + 2
        i += 1
    return json.dumps(items)


with connect(f"{base}/echo", max_size=2**20) as ws:
    deflate_agreed(ws)
    # Small (sent and echoed plain) to large (compressed both ways), text and binary.
    for size in [0, 1, 100, 127, 128, 1000, 16_384, 65_536, 500_000]:
        text = feed(size) if size > 2 else "x" * size
        ws.send(text)
        assert ws.recv(timeout=5) == text, f"text {size}"
        data = bytes(i % 251 for i in range(size))
        ws.send(data)
        assert ws.recv(timeout=5) == data, f"binary {size}"
    # Fragmented (websockets compresses the whole message, RSV1 on the first frame).
    ws.send(iter(["frag", "men", "ted" * 100]))
    assert ws.recv(timeout=5) == "fragmen" + "ted" * 100
    assert ws.ping(b"py-ping").wait(5), "pong"

# Pub/sub: a compressing and a non-compressing subscriber both get the message.
with connect(f"{base}/ws/deflate-py") as z, connect(f"{base}/ws/deflate-py", compression=None) as p, connect(
    f"{base}/ws/deflate-py"
) as pub:
    deflate_agreed(z)
    assert "Sec-WebSocket-Extensions" not in p.response.headers
    msg = feed(1024)
    pub.send(msg)
    assert z.recv(timeout=5) == msg
    assert p.recv(timeout=5) == msg
    p.send(msg.encode())
    assert z.recv(timeout=5) == msg.encode()
    assert pub.recv(timeout=5) == msg.encode()

# A message over the limit once inflated (1 MiB + 1 of "x" compresses to ~1 KB): 1009.
with connect(f"{base}/echo", max_size=None) as ws:
    try:
        ws.send(b"x" * (2**20 + 1))
        ws.recv(timeout=5)
        raise AssertionError("no close")
    except ConnectionClosed as e:
        assert e.rcvd is not None and e.rcvd.code == 1009, e

print("ok")
