// The demo page with authorization on: opened as /?token=T (a token minted by PyJWT in
// tests/browser.rs), its WebSocket and EventSource carry the token in the query and its
// publish form sends it as a header; without the token, neither transport opens.
// Usage: node tests/browser/token.mjs HOST:PORT TOKEN   -- prints "ok" last, else exit 1.
import assert from "node:assert/strict";
import { createRequire } from "node:module";

// playwright-core is installed under tests/interop (scripts/test.sh, npm ci).
const require = createRequire(new URL("../interop/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const [server, token] = process.argv.slice(2);
const CHROMIUM = "/usr/bin/chromium";
const timer = setTimeout(() => {
  console.log("FAIL: took more than 60 s");
  process.exit(1);
}, 60000);
let browser;
try {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  const page = await browser.newPage();
  await page.goto(`http://${server}/?token=${encodeURIComponent(token)}`);
  await page.waitForSelector('#ws-state[data-state="open"]', { timeout: 10000 });
  await page.waitForSelector('#sse-state[data-state="open"]', { timeout: 10000 });
  await page.fill("#publish-input", "with a token");
  await page.click("#publish-send");
  await page.waitForFunction(
    () => [...document.querySelectorAll("#feed li")].some((li) => li.textContent.includes("with a token")),
    null,
    { timeout: 10000 },
  );
  await page.waitForFunction(
    () => document.querySelector("#publish-status").textContent.startsWith("published as "),
    null,
    { timeout: 10000 },
  );
  // The same page without its token: the server refuses both transports (401).
  const bare = await browser.newPage();
  await bare.goto(`http://${server}/`);
  await new Promise((r) => setTimeout(r, 1500));
  for (const sel of ["#ws-state", "#sse-state"]) {
    const state = await bare.getAttribute(sel, "data-state");
    assert.notEqual(state, "open", `${sel} opened without a token`);
  }
  console.log("ok");
} catch (e) {
  console.log("FAIL: " + (e.stack ?? e));
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
  await browser?.close();
}
