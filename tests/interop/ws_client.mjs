// Interop: the Node `ws` client against ringpush.
// Usage: node ws_client.mjs HOST:PORT [--ca FILE]   -- exits 0 and prints "ok" when every
// check passes. With --ca, over wss:// trusting only the authority in FILE (PEM).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import WebSocket from "ws";

const caAt = process.argv.indexOf("--ca");
const ca = caAt > 0 ? readFileSync(process.argv[caAt + 1]) : undefined;
const base = `${ca ? "wss" : "ws"}://${process.argv[2]}`;

function open(path) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(base + path, { perMessageDeflate: false, ca });
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

function next(ws, event = "message") {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timeout waiting for ${event}`)), 5000);
    ws.once(event, (...args) => {
      clearTimeout(t);
      resolve(args);
    });
  });
}

const ws = await open("/echo");
for (const size of [0, 1, 125, 126, 127, 65535, 65536, 500000]) {
  const data = Buffer.alloc(size, 0).map((_, i) => i % 251);
  ws.send(data);
  const [msg, isBinary] = await next(ws);
  assert.equal(isBinary, true);
  assert.deepEqual(Buffer.from(msg), data, `binary ${size}`);
  const text = "ü".repeat(size >> 1);
  ws.send(text);
  const [t, bin] = await next(ws);
  assert.equal(bin, false);
  assert.equal(t.toString(), text, `text ${size}`);
}
// Fragmentation: fin=false sends a fragment.
ws.send("frag", { fin: false });
ws.send("men", { fin: false });
ws.send("ted", { fin: true });
assert.equal((await next(ws))[0].toString(), "fragmented");
// Ping with payload.
ws.ping(Buffer.from("node-ping"));
assert.equal((await next(ws, "pong"))[0].toString(), "node-ping");
// Close handshake: the server echoes our code.
ws.close(4002, "bye");
const [code] = await next(ws, "close");
assert.equal(code, 4002);

// Pub/sub between two clients. A subscription reaches the topic's owner shard after the
// 101, so a message sent at once can pass a new subscriber by: a sends warm-ups until b
// has one (later ones are skipped), then the message checked.
const a = await open("/ws/interop-node");
const b = await open("/ws/interop-node");
const inbox = [];
b.on("message", (data, isBinary) => inbox.push([data.toString(), isBinary]));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
for (let i = 0; inbox.length === 0; i++) {
  assert.ok(i < 50, "no warm-up reached the second subscriber");
  a.send(`warmup ${i}`);
  await sleep(100);
}
a.send("from a");
const real = () => inbox.filter(([m]) => !m.startsWith("warmup "));
for (const deadline = Date.now() + 5000; real().length === 0; await sleep(10)) {
  assert.ok(Date.now() < deadline, "timeout waiting for the message from a");
}
assert.deepEqual(real(), [["from a", false]]);
a.close();
b.close();
console.log("ok");
