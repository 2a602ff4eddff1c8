// permessage-deflate in a real browser: Debian's Chromium (driven by playwright-core)
// offers `permessage-deflate; client_max_window_bits` on every WebSocket.
// Usage: node tests/browser/deflate.mjs HOST:PORT   -- prints "ok" last when every check
// passes, else the reason, exit 1.
//
// The page (the demo page, for an origin) opens /ws/deflate-browser and /echo; checks:
// ws.extensions names permessage-deflate; a 1 KB+ JSON message published by a Node `ws`
// peer without compression reaches the page (compressed by the server); the page's own
// large message (Chromium compresses it) reaches the peer; /echo round-trips small and
// large messages.
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(new URL("../interop/package.json", import.meta.url));
const { chromium } = require("playwright-core");
const WebSocket = require("ws");

const server = process.argv[2];
let browser;
const timer = setTimeout(() => {
  console.log("FAIL: the check took more than 60 s");
  process.exit(1);
}, 60000);

function feed(n) {
  const items = [];
  let size = 2;
  for (let i = 0; size < n; i++) {
    const item = JSON.stringify({ id: 1000 + i, sym: `ACME${i % 7}`, bid: 100 + i * 0.37 });
    items.push(item);
    size += item.length + 1;
  }
  return `[${items.join(",")}]`;
}

try {
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  const page = await browser.newPage();
  const resp = await page.goto(`http://${server}/`);
  assert.equal(resp.status(), 200);

  // The page's subscriber; it records messages and reports its extensions.
  const extensions = await page.evaluate(
    (url) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(url);
        window.got = [];
        ws.onmessage = (e) => window.got.push(e.data);
        ws.onopen = () => resolve(ws.extensions);
        ws.onerror = () => reject(new Error("WebSocket error"));
        window.sub = ws;
      }),
    `ws://${server}/ws/deflate-browser`,
  );
  assert.match(extensions, /^permessage-deflate/, `ws.extensions: ${extensions}`);
  assert.match(extensions, /server_no_context_takeover/);
  assert.match(extensions, /client_no_context_takeover/);

  // A plain Node peer on the same topic publishes; the page gets it (compressed).
  const peer = new WebSocket(`ws://${server}/ws/deflate-browser`, { perMessageDeflate: false });
  await new Promise((r, j) => peer.once("open", r).once("error", j));
  const msg = feed(1200);
  peer.send(msg);
  await page.waitForFunction((m) => window.got.includes(m), msg, { timeout: 10000 });

  // The page publishes a large message (Chromium compresses it); the peer gets it.
  const fromPage = feed(50000);
  const got = new Promise((r) => peer.once("message", (d) => r(d.toString())));
  await page.evaluate((m) => window.sub.send(m), fromPage);
  assert.equal(await got, fromPage);

  // /echo: small and large, both directions compressed where worth it.
  const echoed = await page.evaluate(
    (args) =>
      new Promise((resolve, reject) => {
        const [url, msgs] = args;
        const ws = new WebSocket(url);
        const back = [];
        ws.onopen = () => msgs.forEach((m) => ws.send(m));
        ws.onmessage = (e) => {
          back.push(e.data);
          if (back.length === msgs.length) resolve(back);
        };
        ws.onerror = () => reject(new Error("echo error"));
      }),
    [`ws://${server}/echo`, ["hi", feed(1000), feed(200000)]],
  );
  assert.deepEqual(echoed, ["hi", feed(1000), feed(200000)]);

  peer.close();
  await browser.close();
  clearTimeout(timer);
  console.log("ok");
  process.exit(0);
} catch (e) {
  console.log(`FAIL: ${e.stack || e}`);
  await browser?.close().catch(() => {});
  process.exit(1);
}
