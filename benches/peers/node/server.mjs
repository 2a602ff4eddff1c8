// ws-peer: the ringpush peer contract on Node.js and the `ws` library (with its optional
// native helper `bufferutil`), the way ws's README writes a server.
//
//   node server.mjs --listen 127.0.0.1:9001 --threads 2
//
//   GET /echo       + Upgrade: every message back to the sender, same opcode.
//   GET /ws/{topic} + Upgrade: every message to every OTHER subscriber of the topic, same
//                   opcode (ws's README "broadcast to every other client" loop, one Buffer
//                   shared by all sends).
//
// Node runs JavaScript on one thread, and its users scale a WebSocket server over cores
// with the `cluster` module: --threads N > 1 forks N workers that share the port (the
// primary accepts and hands connections round-robin to the workers, Node's default on
// Linux). A topic's subscribers are then spread over workers, so a worker forwards each
// published message to the others over cluster IPC (through the primary), the in-process
// equivalent of the Redis adapter such deployments use. --threads 1 (no cluster) is one
// process. SIGTERM/SIGINT: exit 0 (the primary stops its workers first).
import cluster from 'node:cluster';
import http from 'node:http';
import os from 'node:os';
import process from 'node:process';
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { WebSocketServer, WebSocket } from 'ws';

function parseArgs(argv) {
  const opts = { listen: '127.0.0.1:9001', threads: os.availableParallelism?.() ?? os.cpus().length };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split('=', 2);
    const value = () => inline ?? argv[++i];
    if (flag === '--listen') opts.listen = value();
    else if (flag === '--threads') opts.threads = Number(value());
    else {
      console.error(`ws-peer: unknown argument ${argv[i]} (accepted: --listen HOST:PORT, --threads N)`);
      process.exit(2);
    }
  }
  const m = /^\[?([^\]]*)\]?:(\d+)$/.exec(opts.listen ?? '');
  if (!m || !(opts.threads >= 1)) {
    console.error('ws-peer: --listen HOST:PORT and --threads N >= 1 expected');
    process.exit(2);
  }
  return { host: m[1], port: Number(m[2]), threads: Math.floor(opts.threads) };
}

const opts = parseArgs(process.argv.slice(2));
const clustered = opts.threads > 1;
const TOPIC = /^[A-Za-z0-9._:-]{1,128}$/;

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    if (cluster.isPrimary) for (const w of Object.values(cluster.workers ?? {})) w.process.kill('SIGTERM');
    process.exit(0);
  });
}

if (clustered && cluster.isPrimary) {
  // Structured-clone IPC, so Buffers cross as bytes rather than JSON arrays.
  cluster.setupPrimary({ serialization: 'advanced' });
  for (let i = 0; i < opts.threads; i++) cluster.fork();
  // Relay each publish to every other worker.
  cluster.on('message', (from, msg) => {
    for (const w of Object.values(cluster.workers)) if (w !== from) w.send(msg);
  });
  let ready = 0;
  cluster.on('listening', () => {
    if (++ready === opts.threads) {
      console.log(`ws-peer: listening on ${opts.host}:${opts.port} (${opts.threads} cluster workers, ${native()})`);
    }
  });
  cluster.on('exit', (w, code, signal) => {
    console.error(`ws-peer: worker ${w.process.pid} exited (${signal ?? code})`);
  });
} else {
  serve();
}

function native() {
  const require = createRequire(import.meta.url);
  const has = (name) => { try { require(name); return true; } catch { return false; } };
  return `bufferutil ${has('bufferutil') ? 'loaded' : 'missing'}`;
}

function serve() {
  // The topic's local subscribers.
  const topics = new Map();

  // perMessageDeflate is off by default in ws's server; maxPayload = ringpush's default
  // --max-message-bytes (ws's default is 100 MiB).
  const wss = new WebSocketServer({ noServer: true, clientTracking: false, maxPayload: 1 << 20 });

  const server = http.createServer((req, res) => {
    if (req.url === '/healthz') return res.end('ok');
    res.writeHead(404).end();
  });

  server.on('upgrade', (req, socket, head) => {
    const path = req.url.split('?', 1)[0];
    if (path === '/echo') {
      wss.handleUpgrade(req, socket, head, echo);
    } else if (path.startsWith('/ws/') && TOPIC.test(path.slice(4))) {
      wss.handleUpgrade(req, socket, head, (ws) => subscribe(ws, path.slice(4)));
    } else {
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    }
  });

  function echo(ws) {
    ws.on('error', () => {});
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  }

  function deliver(set, sender, data, isBinary) {
    for (const client of set) {
      if (client !== sender && client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
    }
  }

  function subscribe(ws, topic) {
    let set = topics.get(topic);
    if (!set) topics.set(topic, (set = new Set()));
    set.add(ws);
    ws.on('error', () => {});
    ws.on('close', () => {
      set.delete(ws);
      if (set.size === 0 && topics.get(topic) === set) topics.delete(topic);
    });
    ws.on('message', (data, isBinary) => {
      deliver(set, ws, data, isBinary);
      if (clustered) process.send({ topic, data, isBinary });
    });
  }

  if (clustered) {
    process.on('message', ({ topic, data, isBinary }) => {
      const set = topics.get(topic);
      if (set) deliver(set, null, Buffer.from(data.buffer, data.byteOffset, data.byteLength), isBinary);
    });
  }

  // Listen queue: the kernel's somaxconn, as Go's net package does (Node's default is
  // 511, which overflows under a burst of thousands of connects: 1 s SYN retries).
  let backlog = 511;
  try { backlog = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8')) || backlog; } catch {}
  server.listen({ host: opts.host, port: opts.port, backlog }, () => {
    if (!clustered) console.log(`ws-peer: listening on ${opts.host}:${server.address().port} (1 process, ${native()})`);
  });
}
