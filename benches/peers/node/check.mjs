// Contract check for any peer: node check.mjs ws://127.0.0.1:PORT
// echo keeps text/binary; a topic message reaches the other subscribers with its opcode,
// and never comes back to the sender. Exits 0 and prints "ok", or 1 with the failure.
import { WebSocket } from 'ws';

const base = process.argv[2] ?? 'ws://127.0.0.1:9001';
const open = (path) => new Promise((resolve, reject) => {
  const ws = new WebSocket(base + path);
  const inbox = [];
  ws.on('message', (data, isBinary) => inbox.push({ text: data.toString(), isBinary }));
  ws.once('open', () => resolve({ ws, inbox }));
  ws.once('error', reject);
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fail = (why) => { console.error(`check ${base}: ${why}`); process.exit(1); };
const timer = setTimeout(() => fail('timed out'), 5000);

const e = await open('/echo');
e.ws.send('hello');
e.ws.send(Buffer.from('bin'), { binary: true });
await sleep(200);
const got = JSON.stringify(e.inbox);
if (got !== JSON.stringify([{ text: 'hello', isBinary: false }, { text: 'bin', isBinary: true }])) fail(`echo got ${got}`);

const topic = `check-${process.pid}`;
const [a, b, c] = await Promise.all([open(`/ws/${topic}`), open(`/ws/${topic}`), open(`/ws/${topic}`)]);
await sleep(100);
a.ws.send('t1');
a.ws.send(Buffer.from('b1'), { binary: true });
await sleep(300);
const want = JSON.stringify([{ text: 't1', isBinary: false }, { text: 'b1', isBinary: true }]);
for (const [name, s] of [['b', b], ['c', c]]) if (JSON.stringify(s.inbox) !== want) fail(`subscriber ${name} got ${JSON.stringify(s.inbox)}`);
if (a.inbox.length) fail(`the sender got its own message back: ${JSON.stringify(a.inbox)}`);
for (const s of [e, a, b, c]) s.ws.close();
clearTimeout(timer);
console.log(`check ${base}: ok`);
