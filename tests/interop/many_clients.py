"""Holds N WebSocket connections to one topic and counts a broadcast on every one.

Usage: python3 many_clients.py HOST:PORT TOPIC N SRC_PREFIX
  SRC_PREFIX like 127.0.1 : connections come from SRC_PREFIX.1 .. SRC_PREFIX.20.
Prints "ready N" once all N are open (101 received), then "received N" once every
connection got one message, then exits 0. Any failure exits 1 with a reason.
Bounded: gives up after 120 s.
"""
import asyncio
import base64
import os
import resource
import sys

host, port = sys.argv[1].rsplit(":", 1)
topic, n, prefix = sys.argv[2], int(sys.argv[3]), sys.argv[4]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

REQUEST = (
    f"GET /ws/{topic} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()


async def one(i, opened, got, sem):
    async with sem:
        reader, writer = await asyncio.open_connection(host, int(port), local_addr=(f"{prefix}.{1 + i % 20}", 0))
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101 "):
            raise RuntimeError(head[:40])
    opened.append(1)
    hdr = await reader.readexactly(2)
    length = hdr[1] & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    payload = await reader.readexactly(length)
    got.append(payload)
    return writer


async def main():
    opened, got = [], []
    sem = asyncio.Semaphore(500)  # connect rate: at most 500 handshakes in flight
    tasks = [asyncio.create_task(one(i, opened, got, sem)) for i in range(n)]
    while len(opened) < n:
        failed = [t for t in tasks if t.done() and t.exception()]
        if failed:
            raise failed[0].exception()
        await asyncio.sleep(0.05)
    print(f"ready {n}", flush=True)
    writers = await asyncio.gather(*tasks)
    assert all(p == got[0] for p in got), "every connection got the same message"
    print(f"received {len(got)}", flush=True)
    for w in writers:
        w.close()


asyncio.run(asyncio.wait_for(main(), 120))
