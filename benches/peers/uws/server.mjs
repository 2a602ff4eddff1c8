// uws-peer: the ringpush peer contract on uWebSockets (uWebSockets.js, the Node.js binding
// of uWebSockets/uSockets), written the way uWS.js's examples write a server.
//
//   node server.mjs --listen 127.0.0.1:9003 --threads 2 [--compression off|shared]
//
//   --compression shared: permessage-deflate with uWS.SHARED_COMPRESSOR (no context
//   takeover, one compressor per thread), and every send and publish asks for
//   compression, so a published message is compressed once per publish; the peer of
//   ringpush's `--compression shared`. Default off.
//
//   GET /echo       + Upgrade: every message back to the sender, same opcode.
//   GET /ws/{topic} + Upgrade: the socket subscribes to the topic; each message it sends
//                   is ws.publish()ed, uWS's own pub/sub, which frames a message once and
//                   delivers it to every subscriber except the publisher.
//
// Threads: uWS.js runs one event loop per thread; its users scale over cores with
// worker_threads, one App per thread, all listening on the same port (uSockets sets
// SO_REUSEPORT, so the kernel spreads connections; uWS.js's WorkerThreads example).
// Pub/sub state is per App, so with --threads N > 1 each thread also relays what its
// clients publish to the other threads over a BroadcastChannel, and they app.publish()
// it to their own subscribers. One process: the load generator's RSS and CPU figures
// cover every thread. SIGTERM/SIGINT: exit 0.
import os from 'node:os';
import process from 'node:process';
import { Worker, isMainThread, workerData, parentPort, BroadcastChannel, threadId } from 'node:worker_threads';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const uWS = require('uWebSockets.js');

function parseArgs(argv) {
  const opts = { listen: '127.0.0.1:9003', threads: os.availableParallelism?.() ?? os.cpus().length, compression: 'off' };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split('=', 2);
    const value = () => inline ?? argv[++i];
    if (flag === '--listen') opts.listen = value();
    else if (flag === '--threads') opts.threads = Number(value());
    else if (flag === '--compression') opts.compression = value();
    else {
      console.error(`uws-peer: unknown argument ${argv[i]} (accepted: --listen HOST:PORT, --threads N)`);
      process.exit(2);
    }
  }
  const m = /^\[?([^\]]*)\]?:(\d+)$/.exec(opts.listen ?? '');
  if (!m || !(opts.threads >= 1) || !['off', 'shared'].includes(opts.compression)) {
    console.error('uws-peer: --listen HOST:PORT, --threads N >= 1 and --compression off|shared expected');
    process.exit(2);
  }
  return { host: m[1], port: Number(m[2]), threads: Math.floor(opts.threads), compression: opts.compression };
}

const TOPIC = /^[A-Za-z0-9._:-]{1,128}$/;

// This thread's App and relay channel.
const apps = [];
let relay = null;
let mainApp = null;

function serve({ host, port, threads, compression }) {
  const compress = compression === 'shared';
  relay = threads > 1 ? new BroadcastChannel('ringpush-uws-peer') : null;
  // Same limits as ringpush's defaults: 1 MiB messages, 4 MiB queued per socket.
  // idleTimeout 120 s with uWS's automatic pings (its defaults); compression as asked.
  const common = {
    compression: compress ? uWS.SHARED_COMPRESSOR : uWS.DISABLED,
    maxPayloadLength: 1 << 20,
    maxBackpressure: 4 << 20,
    idleTimeout: 120,
  };
  const app = uWS.App()
    .ws('/echo', {
      ...common,
      message: (ws, message, isBinary) => {
        ws.send(message, isBinary, compress);
      },
    })
    .ws('/ws/*', {
      ...common,
      upgrade: (res, req, context) => {
        const topic = req.getUrl().slice(4);
        if (!TOPIC.test(topic)) {
          res.writeStatus('400 Bad Request').end();
          return;
        }
        res.upgrade(
          { topic },
          req.getHeader('sec-websocket-key'),
          req.getHeader('sec-websocket-protocol'),
          req.getHeader('sec-websocket-extensions'),
          context,
        );
      },
      open: (ws) => {
        ws.subscribe(ws.getUserData().topic);
      },
      message: (ws, message, isBinary) => {
        const { topic } = ws.getUserData();
        ws.publish(topic, message, isBinary, compress);
        // `message` is only valid during this call: the relay gets a copy.
        if (relay) relay.postMessage({ topic, data: message.slice(0), isBinary });
      },
    })
    .get('/healthz', (res) => {
      res.end('ok');
    })
    .any('/*', (res) => {
      res.writeStatus('404 Not Found').end();
    });

  apps.push(app);
  if (relay) {
    relay.onmessage = ({ data: { topic, data, isBinary } }) => {
      app.publish(topic, data, isBinary, compress);
    };
  }

  return new Promise((resolve, reject) => {
    app.listen(host, port, (token) => {
      if (token) resolve(uWS.us_socket_local_port(token));
      else reject(new Error(`uws-peer: cannot listen on ${host}:${port} (thread ${threadId})`));
    });
  });
}

if (isMainThread) {
  const opts = parseArgs(process.argv.slice(2));
  const threads = [];
  const ready = [];
  for (let i = 1; i < opts.threads; i++) {
    const w = new Worker(new URL(import.meta.url), { workerData: opts });
    w.on('error', (e) => { console.error(e.message); process.exit(1); });
    threads.push(w);
    ready.push(new Promise((resolve) => w.once('message', resolve)));
  }
  // Shutdown: each thread closes its App (listen socket and connections) so its event
  // loop ends by itself; exiting or terminating a thread that is still inside uWS aborts.
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, async () => {
      const exited = threads.map((w) => new Promise((resolve) => w.once('exit', resolve)));
      for (const w of threads) w.postMessage('stop');
      await Promise.all(exited);
      mainApp?.close();
      process.exit(0);
    });
  }
  try {
    const port = await serve(opts);
    mainApp = apps[0];
    await Promise.all(ready);
    console.log(`uws-peer: listening on ${opts.host}:${port} (${opts.threads} threads, uWebSockets.js on node ${process.version})`);
  } catch (e) {
    console.error(e.message);
    process.exit(1);
  }
} else {
  const port = await serve(workerData);
  parentPort.on('message', (msg) => {
    if (msg !== 'stop') return;
    apps[0].close();
    relay?.close();
    parentPort.close();
  });
  parentPort.postMessage(port);
}
