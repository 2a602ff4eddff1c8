// Interop: permessage-deflate with the Node `ws` client, which offers it by default
// (`permessage-deflate; client_max_window_bits`) and compresses messages of 1 KiB and
// more (its `threshold`; here 0, so small ones are compressed too).
// Usage: node ws_deflate.mjs HOST:PORT   -- exits 0 and prints "ok" when every check passes.
import assert from "node:assert/strict";
import WebSocket from "ws";

const base = `ws://${process.argv[2]}`;

function open(path, perMessageDeflate = { threshold: 0 }) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(base + path, { perMessageDeflate });
    ws.once("upgrade", (res) => (ws.upgradeHeaders = res.headers));
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

function feed(n) {
  const items = [];
  let size = 2;
  for (let i = 0; size < n; i++) {
    const item = JSON.stringify({ id: 1000 + i, sym: `ACME${i % 7}`, bid: 100 + i * 0.37, qty: (i * 13) % 997 });
    items.push(item);
    size += item.length + 1;
  }
  return `[${items.join(",")}]`;
}

function agreed(ws) {
  assert.match(ws.extensions, /^permessage-deflate/, "extension negotiated");
  const h = ws.upgradeHeaders["sec-websocket-extensions"];
  assert.match(h, /server_no_context_takeover/);
  assert.match(h, /client_no_context_takeover/);
}

const ws = await open("/echo");
agreed(ws);
for (const size of [0, 1, 100, 128, 1000, 16384, 65536, 500000]) {
  const text = size > 2 ? feed(size) : "x".repeat(size);
  ws.send(text);
  const [t, bin] = await next(ws);
  assert.equal(bin, false);
  assert.equal(t.toString(), text, `text ${size}`);
  const data = Buffer.alloc(size, 0).map((_, i) => i % 251);
  ws.send(data);
  const [b, isBin] = await next(ws);
  assert.equal(isBin, true);
  assert.deepEqual(Buffer.from(b), data, `binary ${size}`);
}
// Fragmented and compressed: ws compresses each fragment into one deflate stream.
ws.send("frag", { fin: false });
ws.send("men", { fin: false });
ws.send("ted".repeat(200), { fin: true });
assert.equal((await next(ws))[0].toString(), "fragmen" + "ted".repeat(200));
ws.close(1000);
await next(ws, "close");

// Pub/sub: compressing and non-compressing subscribers get the same message.
const z = await open("/ws/deflate-node");
const p = await open("/ws/deflate-node", false);
const pub = await open("/ws/deflate-node");
agreed(z);
assert.equal(p.extensions, "");
const msg = feed(1024);
pub.send(msg);
const [[zm], [pm]] = await Promise.all([next(z), next(p)]);
assert.equal(zm.toString(), msg);
assert.equal(pm.toString(), msg);
for (const c of [z, p, pub]) c.close();

// Over the limit once inflated: 1009.
const big = await open("/echo", { threshold: 0 });
big.send(Buffer.alloc(2 ** 20 + 1, 120));
const [code] = await next(big, "close");
assert.equal(code, 1009);

console.log("ok");
