// The demo page in a real browser: Debian's Chromium driven by playwright-core.
// Usage: node tests/browser/demo.mjs HOST:PORT [--ca FILE]   -- prints "ok" last when
// every check passes, else the reason, exit 1. Writes target/demo-screenshot.png (with
// --ca: target/demo-tls-screenshot.png).
//
// The page is loaded through a TCP proxy run here, so the test can cut its connections:
// the browser's own EventSource must then reconnect with Last-Event-ID and the feed must
// show every event exactly once, in order, while events were published straight to the
// server during the cut.
//
// With --ca the server speaks TLS: the page is https:// (its WebSocket wss://), the proxy
// passes TLS through, so Chromium's own TLS meets the server's. Chromium runs with
// --ignore-certificate-errors (the test's authority is in no NSS database here), and the
// page's certificate is checked to be the one that authority issued. The Node peers trust
// FILE. The proxy sees only ciphertext then, so the reconnect's Last-Event-ID is read
// from the request as Chromium reports it, and every reply must open with a TLS record.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import { fileURLToPath } from "node:url";
import { caArg } from "../interop/ca.mjs";

// The npm packages live with the other peer clients (tests/interop/package.json).
const require = createRequire(new URL("../interop/package.json", import.meta.url));
const { chromium } = require("playwright-core");
const WebSocket = require("ws");

const CHROMIUM = "/usr/bin/chromium";
const ca = caArg();
const [httpScheme, wsScheme] = ca ? ["https", "wss"] : ["http", "ws"];
const SCREENSHOT = fileURLToPath(
  new URL(`../../target/demo-${ca ? "tls-" : ""}screenshot.png`, import.meta.url),
);
const server = process.argv[2];
const colon = server.lastIndexOf(":");
const [serverHost, serverPort] = [server.slice(0, colon), +server.slice(colon + 1)];
const t0 = Date.now();
const step = (msg) => console.log(`- [${((Date.now() - t0) / 1000).toFixed(1)} s] ${msg}`);

// A TCP proxy in front of the server. It records the request head of every connection;
// cut(ms) destroys every proxied connection and refuses new ones for ms.
function startProxy() {
  const conns = new Set();
  const heads = [];
  const replies = []; // the first bytes the server sent on each connection
  let refuseUntil = 0;
  let refused = 0;
  const srv = net.createServer((client) => {
    if (Date.now() < refuseUntil) {
      refused++;
      return client.destroy();
    }
    const upstream = net.connect(serverPort, serverHost);
    const pair = [client, upstream];
    conns.add(pair);
    const drop = () => {
      conns.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.once("data", (chunk) => heads.push({ at: Date.now(), head: chunk.toString("latin1") }));
    upstream.once("data", (chunk) => replies.push(chunk.toString("latin1", 0, 200)));
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve) =>
    srv.listen(0, "127.0.0.1", () =>
      resolve({
        addr: `127.0.0.1:${srv.address().port}`,
        heads,
        replies,
        refused: () => refused,
        cut(ms) {
          refuseUntil = Date.now() + ms;
          for (const [a, b] of conns) {
            a.destroy();
            b.destroy();
          }
          conns.clear();
        },
        close: () => srv.close(),
      }),
    ),
  );
}

async function publish(body) {
  const r = await fetch(`${httpScheme}://${server}/publish/feed`, { method: "POST", body });
  const text = await r.text();
  assert.equal(r.status, 200, `publish: ${r.status} ${text}`);
  return JSON.parse(text).id;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, fn, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    assert.ok(Date.now() < deadline, `timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

// The feed as the page shows it: [{id, event, data}] in DOM order.
const feedItems = (page) =>
  page.$$eval("#feed li", (lis) =>
    lis.map((li) => ({ id: li.dataset.id, event: li.dataset.event, data: li.querySelector("span").textContent })),
  );
const chatTexts = (page) => page.$$eval("#chat li", (lis) => lis.map((li) => li.textContent));
const text = (page, sel) => page.textContent(sel);

let browser;
const timer = setTimeout(() => {
  console.log("FAIL: the whole check took more than 180 s");
  process.exit(1);
}, 180000);
try {
  const proxy = await startProxy();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      ...(ca ? ["--ignore-certificate-errors"] : []),
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 760 } });
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  // The page's EventSource requests as Chromium sent them (under TLS the proxy cannot read them).
  const sseRequests = [];
  page.on("request", async (req) => {
    if (req.resourceType() !== "eventsource") return;
    const entry = { at: Date.now(), url: req.url(), headers: null };
    sseRequests.push(entry);
    entry.headers = await req.allHeaders().catch(() => ({}));
  });

  // 1. The page loads through the proxy; both transports open.
  const resp = await page.goto(`${httpScheme}://${proxy.addr}/`);
  assert.equal(resp.status(), 200);
  assert.match(resp.headers()["content-type"] ?? "", /^text\/html/);
  if (ca) {
    const tls = await resp.securityDetails();
    assert.match(tls?.issuer ?? "", /^ringpush test CA/, `the page's certificate: ${JSON.stringify(tls)}`);
    assert.match(tls.protocol, /^TLS 1\.[23]$/);
    step(`page over ${tls.protocol}, certificate for ${tls.subjectName} from ${tls.issuer}`);
  }
  await page.waitForSelector('#ws-state[data-state="open"]', { timeout: 10000 });
  await page.waitForSelector('#sse-state[data-state="open"]', { timeout: 10000 });
  step("page loaded; WebSocket and EventSource open");

  // 2. Chat both ways with a Node `ws` client connected straight to the server.
  const peer = new WebSocket(`${wsScheme}://${server}/ws/chat`, { perMessageDeflate: false, ca });
  const peerInbox = [];
  peer.on("message", (data, isBinary) => peerInbox.push({ data: data.toString(), isBinary }));
  await new Promise((resolve, reject) => peer.once("open", resolve).once("error", reject));
  // Until the page shows it: proves the page's subscription and, since the peer's own
  // subscription reached the topic's owner before its message, the peer's too.
  await until("the peer's message in the page", async () => {
    peer.send(JSON.stringify({ name: "node-peer", text: "hello from node" }));
    await sleep(200);
    return (await chatTexts(page)).some((t) => t.includes("node-peerhello from node"));
  });
  await page.fill("#chat-name", "chromium");
  await page.fill("#chat-input", "hello from the browser");
  await page.click("#chat-send");
  await until("the page's message at the peer", () =>
    peerInbox.some((m) => !m.isBinary && m.data === JSON.stringify({ name: "chromium", text: "hello from the browser" })),
  );
  assert.ok((await page.$$("#chat li.mine")).length === 1, "the page shows its own message once");
  step("chat: page -> node ws and node ws -> page");

  // 3. The feed: warm up (a new stream starts at the topic's position when the server
  // looked it up), then events published straight to the server and from the page's form.
  await until("a warm-up event in the feed", async () => {
    await publish("warmup");
    await sleep(200);
    return (await feedItems(page)).length > 0;
  });
  const published = []; // [id, data] in publish order
  for (let i = 0; i < 10; i++) published.push([await publish(`feed ${i}`), `feed ${i}`]);
  await until("feed 9 in the page", async () => (await feedItems(page)).some((e) => e.data === "feed 9"));
  await page.fill("#publish-input", "from the form");
  await page.click("#publish-send");
  await until("the form's event in the feed", async () =>
    (await feedItems(page)).some((e) => e.data === "from the form"),
  );
  // The event can reach the feed before the page has read its publish's answer.
  const status = await until("the publish status", async () => {
    const t = await text(page, "#publish-status");
    return t !== "" && t;
  });
  const formId = status.replace(/^published as /, "");
  assert.ok(formId && formId !== status, `publish status: ${status}`);
  published.push([formId, "from the form"]);
  step("feed: 10 published events and one from the form");

  // 4. Cut every proxied connection for 1.5 s while publishing goes on; the browser's
  // EventSource reconnects by itself through the proxy with Last-Event-ID.
  const lastIdBeforeCut = await text(page, "#sse-last-id");
  assert.equal(lastIdBeforeCut, formId, "last event id shown");
  const sseReconnects = +(await text(page, "#sse-reconnects"));
  const wsReconnects = +(await text(page, "#ws-reconnects"));
  const cutAt = Date.now();
  proxy.cut(1500);
  for (let i = 10; i < 40; i++) {
    published.push([await publish(`feed ${i}`), `feed ${i}`]);
    await sleep(50);
  }
  await until("feed 39 in the page after the cut", async () =>
    (await feedItems(page)).some((e) => e.data === "feed 39"),
  );
  await page.waitForSelector('#sse-state[data-state="open"]', { timeout: 10000 });
  const reconnectsNow = +(await text(page, "#sse-reconnects"));
  assert.ok(reconnectsNow > sseReconnects, `SSE reconnect counter ${sseReconnects} -> ${reconnectsNow}`);
  if (ca) {
    const resumes = sseRequests.filter((r) => r.at > cutAt && new URL(r.url).pathname === "/sse/feed");
    assert.ok(resumes.length > 0, "the EventSource reconnected");
    const resume = resumes[resumes.length - 1];
    await until("the reconnect's headers", () => resume.headers);
    assert.equal(
      resume.headers["last-event-id"],
      lastIdBeforeCut,
      `the browser's own reconnect carries Last-Event-ID: ${JSON.stringify(resume)}`,
    );
  } else {
    const resumes = proxy.heads.filter((h) => h.at > cutAt && h.head.startsWith("GET /sse/feed"));
    assert.ok(resumes.length > 0, "the EventSource reconnected through the proxy");
    const resumeHead = resumes[resumes.length - 1].head;
    assert.match(
      resumeHead,
      new RegExp(`\\r\\nlast-event-id: ${lastIdBeforeCut.replace(/[.-]/g, "\\$&")}\\r\\n`, "i"),
      `the browser's own reconnect carries Last-Event-ID ${lastIdBeforeCut}:\n${resumeHead}`,
    );
  }
  step(`cut for 1.5 s (${proxy.refused()} connections refused); EventSource back with Last-Event-ID`);

  // Every event exactly once, in order, with the ids publish answered.
  const feed = (await feedItems(page)).filter((e) => e.data !== "warmup");
  assert.deepEqual(
    feed.map((e) => [e.id, e.data]),
    published,
    "the feed shows every published event exactly once, in order, with its id",
  );
  assert.ok(feed.every((e) => e.event === "message"));
  assert.equal(new Set(feed.map((e) => e.id)).size, feed.length, "ids are unique");
  step(`feed: ${feed.length} events, none missing, none twice`);

  // 5. The WebSocket came back by itself too (backoff with jitter) and still chats.
  await page.waitForSelector('#ws-state[data-state="open"]', { timeout: 15000 });
  assert.ok(+(await text(page, "#ws-reconnects")) > wsReconnects, "WebSocket reconnect counter went up");
  await until("a message after the WebSocket reconnect", async () => {
    peer.send(JSON.stringify({ name: "node-peer", text: "after the cut" }));
    await sleep(200);
    return (await chatTexts(page)).some((t) => t.includes("after the cut"));
  });
  step("WebSocket reconnected and chats again");

  // 6. A binary message on the feed topic shows as binary; a stale id gets the notice.
  const wsFeed = new WebSocket(`${wsScheme}://${server}/ws/feed`, { perMessageDeflate: false, ca });
  await new Promise((resolve, reject) => wsFeed.once("open", resolve).once("error", reject));
  wsFeed.send(Buffer.from([0xde, 0xad, 0xbe, 0xef]));
  await until("the binary event in the feed", async () =>
    (await feedItems(page)).some((e) => e.event === "binary" && e.data.includes("4 bytes: de ad be ef")),
  );
  wsFeed.close();
  step("binary WebSocket message shown as binary in the feed");

  assert.deepEqual(pageErrors, [], "no script errors in the page");
  // A browser retries after a malformed response, which would hide it: check the bytes
  // (under TLS, that each connection's first reply is a TLS handshake record).
  const malformed = proxy.replies.filter((r) => (ca ? !r.startsWith("\x16\x03") : !r.startsWith("HTTP/1.1 ")));
  assert.deepEqual(malformed, [], "every response through the proxy starts with a status line");
  mkdirSync(fileURLToPath(new URL("../../target/", import.meta.url)), { recursive: true });
  await page.screenshot({ path: SCREENSHOT });
  step(`screenshot: ${SCREENSHOT}`);

  // 7. A position the server cannot replay (an id from another epoch, as after a
  // restart): the page's own resume path (?lastEventId=) gets `event: reset` and shows it.
  const epoch = lastIdBeforeCut.split("-")[0];
  const stale = ((parseInt(epoch, 16) ^ 1) >>> 0).toString(16).padStart(8, "0") + "-1";
  await page.evaluate((id) => {
    feed.es.close();
    feed.lastId = id;
    connectFeed();
  }, stale);
  await page.waitForSelector("#sse-notice.shown", { timeout: 10000 });
  step("a stale id gets event: reset and the page shows the notice");
  assert.deepEqual(pageErrors, [], "no script errors in the page");
  peer.close();
  await browser.close();
  proxy.close();
  clearTimeout(timer);
  console.log("ok");
  process.exit(0);
} catch (e) {
  console.log(`FAIL: ${e.stack || e}`);
  await browser?.close().catch(() => {});
  process.exit(1);
}
