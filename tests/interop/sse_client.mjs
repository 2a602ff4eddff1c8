// Interop: the Node `eventsource` package (WHATWG EventSource on fetch) against ringpush.
// Usage: node sse_client.mjs HOST:PORT [--ca FILE]   -- exits 0 and prints "ok" last when
// every check passes, else prints the reason and exits 1. With --ca, over https:// and
// wss:// trusting the authority in FILE (PEM); the proxy below then passes TLS through.
//
// The stream goes through a small TCP proxy run here, so the test can cut it: the
// library's OWN reconnect must then resume with Last-Event-ID and get exactly the events
// published meanwhile (they are published straight to the server), once each, in order.
import assert from "node:assert/strict";
import net from "node:net";
import { EventSource } from "eventsource";
import WebSocket from "ws";
import { caArg } from "./ca.mjs";

const ca = caArg();
const [httpScheme, wsScheme] = ca ? ["https", "wss"] : ["http", "ws"];
const server = process.argv[2];
const [serverHost, serverPort] = [server.slice(0, server.lastIndexOf(":")), +server.slice(server.lastIndexOf(":") + 1)];
const TOPIC = "interop-sse-node";
const protocolErrors = [];
const fetchErrors = []; // every failed request (a cut is expected to make some), for the report

// A TCP proxy to the server; cut(ms) destroys every proxied connection and refuses new
// ones (accept, then destroy) for ms.
function startProxy() {
  const conns = new Set();
  let refuseUntil = 0;
  const srv = net.createServer((client) => {
    if (Date.now() < refuseUntil) return client.destroy();
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
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve) =>
    srv.listen(0, "127.0.0.1", () =>
      resolve({
        addr: `127.0.0.1:${srv.address().port}`,
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

async function publish(topic, body, event) {
  const url = `${httpScheme}://${server}/publish/${topic}` + (event ? `?event=${event}` : "");
  const r = await fetch(url, { method: "POST", body });
  const text = await r.text();
  assert.equal(r.status, 200, `publish: ${r.status} ${text}`);
  const { id } = JSON.parse(text);
  assert.ok(typeof id === "string" && id.length > 0, `publish answered ${text}`);
  return id;
}

// An EventSource whose events (message, named, binary, reset) go to a queue; every
// request it makes and every response it gets is recorded.
function open(url, extraHeaders = {}) {
  const requests = [];
  const responses = [];
  const es = new EventSource(url, {
    fetch: async (input, init) => {
      const headers = { ...init.headers, ...extraHeaders };
      requests.push(headers);
      try {
        const r = await fetch(input, { ...init, headers });
        responses.push(r);
        return r;
      } catch (e) {
        // The library retries after any failed request, which would hide a malformed
        // response (the parser's HPE_* codes): record those and fail the test on them.
        const code = e.cause?.code ?? e.code ?? String(e);
        fetchErrors.push(`${code}: ${e.cause?.message ?? e.message}`);
        if (String(code).startsWith("HPE_")) protocolErrors.push(`${code}: ${e.cause?.message ?? e.message}`);
        throw e;
      }
    },
  });
  const queue = [];
  let wake = null;
  let opens = 0;
  const push = (type) => (e) => {
    queue.push({ type, data: e.data, id: e.lastEventId });
    wake?.();
  };
  es.onmessage = push("message");
  for (const name of ["greeting", "binary", "reset"]) es.addEventListener(name, push(name));
  es.onopen = () => {
    opens++;
    wake?.();
  };
  async function next(ms = 10000, what = "an event") {
    const deadline = Date.now() + ms;
    while (queue.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) return null;
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, left);
      });
      wake = null;
    }
    return queue.shift();
  }
  async function mustNext(what) {
    const ev = await next(10000);
    assert.ok(ev, `no event within 10 s (waiting for ${what}); failed requests: ${JSON.stringify(fetchErrors)}`);
    return ev;
  }
  async function opened(n) {
    const deadline = Date.now() + 10000;
    while (opens < n) {
      assert.ok(Date.now() < deadline, `the stream did not open (${n}) within 10 s; failed requests: ${JSON.stringify(fetchErrors)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  return { es, next, mustNext, opened, requests, responses, opens: () => opens };
}

const isWarmup = (ev) => ev.type === "message" && ev.data.startsWith("warmup ");

// A new stream starts at the topic's position when the server looked it up: publish
// warm-ups until one arrives, so later publishes are known to reach the stream.
async function sync(s, topic) {
  for (let i = 0; i < 50; i++) {
    await publish(topic, `warmup ${i}`);
    const ev = await s.next(300);
    if (ev) {
      assert.ok(isWarmup(ev), `unexpected event before the warm-up: ${JSON.stringify(ev)}`);
      return;
    }
  }
  assert.fail("no warm-up event arrived");
}

async function expect(s, wanted) {
  const ids = [];
  for (const [i, [type, data]] of wanted.entries()) {
    let ev = await s.mustNext(JSON.stringify(data));
    while (isWarmup(ev)) ev = await s.mustNext(JSON.stringify(data));
    assert.deepEqual([ev.type, ev.data], [type, data], `event ${i}`);
    assert.ok(ev.id, `event ${i} has no id`);
    assert.ok(!ids.includes(ev.id), `event ${i} repeats id ${ev.id}`);
    ids.push(ev.id);
  }
  return ids;
}

async function expectNothing(s, ms) {
  const ev = await s.next(ms);
  assert.equal(ev, null, `expected no more events, got ${JSON.stringify(ev)}`);
}

try {
  const proxy = await startProxy();

  // 1. Open through the proxy; headers; events in order with multi-line data.
  const s = open(`${httpScheme}://${proxy.addr}/sse/${TOPIC}`);
  await s.opened(1);
  const h = s.responses[0].headers;
  assert.match(h.get("content-type"), /^text\/event-stream/);
  assert.equal(h.get("cache-control"), "no-cache");
  assert.equal(h.get("x-accel-buffering"), "no");
  assert.equal(h.get("content-length"), null, "no Content-Length on an event stream");
  assert.equal(h.get("transfer-encoding"), null, "no chunked encoding on an event stream");
  await sync(s, TOPIC);
  const sent = [
    ["message", "hello", "hello"],
    ["message", "multi\nline\ndata", "multi\nline\ndata"],
    ["message", "crlf\r\nline\rcr", "crlf\nline\ncr"],
    ["message", "blank\n\nmiddle", "blank\n\nmiddle"],
    ["message", "ünïcødé ✓ 🚀", "ünïcødé ✓ 🚀"],
    ["greeting", "a named event", "a named event"],
    ["message", "id: looks like a field", "id: looks like a field"],
    ...Array.from({ length: 20 }, (_, i) => ["message", `event ${i}`, `event ${i}`]),
  ];
  const published = [];
  for (const [ev, body] of sent) published.push(await publish(TOPIC, body, ev === "message" ? null : ev));
  const ids = await expect(s, sent.map(([ev, , data]) => [ev, data]));
  assert.deepEqual(ids, published, "stream ids equal the ids publish answered");

  // 2. A binary WebSocket message arrives as `event: binary`, standard base64.
  const blob = Buffer.from(Array.from({ length: 700 }, (_, i) => (i * 7) % 256));
  const peer = new WebSocket(`${wsScheme}://${server}/ws/${TOPIC}`, { perMessageDeflate: false, ca });
  await new Promise((resolve, reject) => peer.once("open", resolve).once("error", reject));
  peer.send(blob);
  const bin = await s.mustNext("the binary message");
  assert.equal(bin.type, "binary");
  assert.deepEqual(Buffer.from(bin.data, "base64"), blob);
  assert.equal(Buffer.from(blob).toString("base64"), bin.data, "standard base64 with padding");
  peer.close();
  const lastBeforeCut = bin.id;

  // 3. Cut the stream at the proxy; publish meanwhile; the library reconnects by itself
  // (after the server's retry: hint) with Last-Event-ID and gets exactly the missed ones.
  proxy.cut(800);
  const missed = Array.from({ length: 12 }, (_, i) => `missed ${i}\nline two`);
  for (const body of missed) await publish(TOPIC, body);
  await s.opened(2);
  const reconnect = s.requests[s.requests.length - 1];
  assert.equal(reconnect["Last-Event-ID"], lastBeforeCut, "the reconnect carries Last-Event-ID");
  await expect(
    s,
    missed.map((m) => ["message", m]),
  );
  await publish(TOPIC, "live after reconnect");
  const [lastLive] = await expect(s, [["message", "live after reconnect"]]);
  await expectNothing(s, 300);
  s.es.close();

  // 4. A new EventSource resuming with a Last-Event-ID header set through the
  // library's fetch override (how this package lets a caller set request headers).
  for (let i = 0; i < 3; i++) await publish(TOPIC, `while closed ${i}`);
  const r = open(`${httpScheme}://${server}/sse/${TOPIC}`, { "Last-Event-ID": lastLive });
  await expect(r, [0, 1, 2].map((i) => ["message", `while closed ${i}`]));
  await expectNothing(r, 300);
  r.es.close();

  // 5. The same with ?lastEventId= in the URL (for clients that cannot set headers).
  await publish(TOPIC, "by query");
  const q = open(`${httpScheme}://${server}/sse/${TOPIC}?lastEventId=${encodeURIComponent(lastLive)}`);
  await expect(q, [0, 1, 2].map((i) => ["message", `while closed ${i}`]).concat([["message", "by query"]]));
  q.es.close();

  proxy.close();
  assert.deepEqual(protocolErrors, [], "the server sent a malformed HTTP response");
  console.log("ok");
  process.exit(0);
} catch (e) {
  console.log(`FAIL: ${e.stack || e}`);
  process.exit(1);
}
