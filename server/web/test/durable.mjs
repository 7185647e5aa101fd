// End-to-end run of the browser client on a durable channel in headless
// Chromium, against a real gateway and redis-server owned by
// server/browser_durable_test.go: entries arrive live with their ids; the
// gateway restarts while entries are added; the client resumes with since
// by itself and the page gets exactly the missed entries, a 'recovered'
// event and no gap.
//
// Line protocol with the Go test as in run.mjs: `CMD <id> <verb> <json>` on
// stdout (xadd, restart-gateway), `OK <id> <json>` or `ERR <id> <message>`
// on stdin. Environment: GATEWAY_URL, CHROMIUM.
import { chromium } from 'playwright-core';
import readline from 'node:readline';
import assert from 'node:assert/strict';

const base = process.env.GATEWAY_URL;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!base) {
  console.error('durable.mjs: GATEWAY_URL is required (run it through go test ./server -run TestBrowserDurable)');
  process.exit(2);
}

let nextId = 0;
const waiting = new Map();
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const m = /^(OK|ERR) (\d+) ?(.*)$/.exec(line);
  const w = m && waiting.get(Number(m[2]));
  if (!w) return;
  waiting.delete(Number(m[2]));
  if (m[1] === 'OK') w.resolve(m[3] ? JSON.parse(m[3]) : null);
  else w.reject(new Error(`go side: ${m[3]}`));
});
let finished = false;
rl.on('close', () => {
  if (finished) return;
  for (const w of waiting.values()) w.reject(new Error('go side closed stdin'));
  waiting.clear();
  abort(new Error('stdin closed'));
});

function call(verb, args = {}) {
  const id = ++nextId;
  return new Promise((resolve, reject) => {
    waiting.set(id, { resolve, reject });
    process.stdout.write(`CMD ${id} ${verb} ${JSON.stringify(args)}\n`);
  });
}

const log = (...a) => process.stdout.write(a.join(' ') + '\n');

let browser;
let failed = false;
function abort(err) {
  if (failed) return;
  failed = true;
  console.error(`FAIL: ${err?.stack ?? err}`);
  Promise.resolve(browser?.close())
    .catch(() => {})
    .finally(() => process.exit(1));
}

async function step(name, fn) {
  const t0 = Date.now();
  log(`STEP ${name}`);
  try {
    await fn();
  } catch (err) {
    console.error(`FAIL step "${name}"`);
    throw err;
  }
  log(`PASS ${name} (${Date.now() - t0} ms)`);
}

const channel = 'indicators:signal:WEB';

async function main() {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 60000,
  });
  log(`chromium ${browser.version()}`);
  const page = await browser.newPage();
  page.setDefaultTimeout(20000);
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().includes('ERR_CONNECTION_REFUSED')) log(`console.${m.type()}: ${m.text()}`);
  });
  // Any page of the gateway's origin: the client is imported from it.
  await page.goto(base + '/health');

  /** Waits for n entries; on timeout, says what the page has. */
  const waitGot = async (n) => {
    try {
      await page.waitForFunction((n) => window.got.length === n, n);
    } catch (err) {
      const state = await page.evaluate(() => JSON.stringify({ got: window.got, gaps: window.gaps, recovered: window.recovered, state: window.client?.state }));
      throw new Error(`waiting for ${n} entries: ${err.message}; the page has ${state}`);
    }
  };
  const got = () => page.evaluate(() => window.got.map((m) => [m.data, m.replay]));
  const added = [];
  const xadd = async (n) => {
    for (let i = 0; i < n; i++) {
      const v = added.length + 1;
      const r = await call('xadd', { channel, data: String(v) });
      added.push(r.id);
    }
  };

  await step('the client subscribes to a durable channel', async () => {
    await page.evaluate(async (channel) => {
      const { GatewayClient } = await import('/gateway-client.js');
      Object.assign(window, { got: [], gaps: [], recovered: [] });
      const c = new GatewayClient({ reconnect: { initialDelay: 200, maxDelay: 1000 } });
      c.on('gap', (g) => window.gaps.push(g));
      c.on('recovered', (r) => window.recovered.push(r));
      await c.subscribe([channel], (m) => window.got.push({ id: m.id, data: m.data, replay: m.replay === true }));
      window.client = c;
    }, channel);
    // Attached once its "replayed" frame came (the client then holds a
    // position): what is added from now on is delivered.
    await page.waitForFunction((channel) => window.client.positions.streams.has(channel), channel);
  });

  await step('entries arrive live with their ids', async () => {
    await xadd(5);
    await waitGot(5);
    const ids = await page.evaluate(() => window.got.map((m) => m.id));
    assert.deepEqual(ids, added);
    assert.deepEqual(await got(), [1, 2, 3, 4, 5].map((v) => [v, false]));
  });

  await step('a gateway restart with entries added meanwhile: recovered, no gap', async () => {
    const r = await call('restart-gateway', { channel, add: 5, from: added.length + 1 });
    added.push(...r.ids);
    await waitGot(10);
    await page.waitForFunction(() => window.client.subscriptions[0]?.state === 'active');
    await xadd(1);
    await waitGot(11);
    assert.deepEqual(await got(), [
      ...[1, 2, 3, 4, 5].map((v) => [v, false]),
      ...[6, 7, 8, 9, 10].map((v) => [v, true]),
      [11, false],
    ]);
    assert.deepEqual(await page.evaluate(() => window.got.map((m) => m.id)), added);
    assert.deepEqual(await page.evaluate(() => window.recovered), [{ stream: channel, count: 5 }]);
    assert.deepEqual(await page.evaluate(() => window.gaps), []);
  });

  assert.deepEqual(pageErrors.map(String), [], 'uncaught errors in the page');
  await browser.close();
}

main().then(
  () => {
    finished = true;
    rl.close();
    process.exit(0);
  },
  (err) => abort(err),
);
