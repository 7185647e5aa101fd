// End-to-end run of the browser client on a durable channel in headless
// Chromium, against a real gateway and redis-server owned by
// server/browser_durable_test.go: entries arrive live with their ids; the
// gateway restarts while entries are added; the client resumes with since
// by itself and the page gets exactly the missed entries, a 'recovered'
// event and no gap.
//
// The line protocol with the Go test is bridge.mjs's (verbs xadd,
// restart-gateway). Environment: GATEWAY_URL, CHROMIUM.
import assert from 'node:assert/strict';
import { call, log, step, launchChromium, run } from './bridge.mjs';

const base = process.env.GATEWAY_URL;
if (!base) {
  console.error('durable.mjs: GATEWAY_URL is required (run it through go test ./server -run TestBrowserDurable)');
  process.exit(2);
}

const channel = 'indicators:signal:WEB';

async function main() {
  const browser = await launchChromium();
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

run(main);
