// End-to-end run of the demo page in headless Chromium against a real
// gateway and a real redis-server, both owned by server/browser_test.go.
//
// The Go test acts on its requests over the line protocol of bridge.mjs
// (verbs publish, restart-redis, restart-gateway). Exit status 0 means
// every step passed.
//
// Environment: GATEWAY_URL (http://host:port), CHROMIUM (the browser
// binary), SCREENSHOT (where to write the demo screenshot).
import assert from 'node:assert/strict';
import { call, log, step, launchChromium, run } from './bridge.mjs';

const base = process.env.GATEWAY_URL;
const screenshot = process.env.SCREENSHOT;
if (!base) {
  console.error('run.mjs: GATEWAY_URL is required (run it through go test ./server -run TestBrowserDemo)');
  process.exit(2);
}

// --- helpers ----------------------------------------------------------------

const prices = { BANKNIFTY: 48012.5, NIFTY: 22012.35, FINNIFTY: 21004.1 };
let tickN = 0;
/** A demo-like tick, as cmd/gateway's demo publisher sends. */
function tick(instrument) {
  tickN++;
  prices[instrument] = Math.round(prices[instrument] * (1 + Math.sin(tickN * 1.7) / 900) * 100) / 100;
  return JSON.stringify({ instrument, ltp: prices[instrument], volume: 40 + ((tickN * 37) % 400), ts: 1767954600000 + tickN * 500 });
}

async function publish(instrument, minReceivers = 1) {
  const r = await call('publish', { channel: `market:tick:${instrument}`, message: tick(instrument) });
  assert.ok(r.receivers >= minReceivers, `PUBLISH market:tick:${instrument} reached ${r.receivers} subscribers, want ≥ ${minReceivers}`);
}

const row = (stream, seq) => `tr.msg[data-stream="${stream}"][data-seq="${seq}"]`;
const sub = (channels, extra = '') => `li.sub[data-channels="${channels}"]${extra}`;

// --- the run --------------------------------------------------------------

async function main() {
  const browser = await launchChromium();
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.setDefaultTimeout(15000);
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') log(`console.${m.type()}: ${m.text()}`);
  });

  await step('the page connects and subscribes', async () => {
    await page.goto(`${base}/?initialDelay=100&maxDelay=400`);
    await page.waitForSelector('#state[data-state="open"]');
    await page.waitForSelector(sub('market:tick:*', '[data-state="active"][data-acks="1"]'));
  });

  await step('a published message appears with its seq', async () => {
    await publish('NIFTY');
    const tr = await page.waitForSelector(row('market:tick:*', 1));
    assert.equal(await tr.getAttribute('data-channel'), 'market:tick:NIFTY');
    assert.match(await tr.innerText(), /"instrument":"NIFTY"/);
    await publish('BANKNIFTY');
    await publish('FINNIFTY');
    await page.waitForSelector(row('market:tick:*', 3));
    assert.equal(await page.locator('tr.gap').count(), 0, 'no gap yet');
  });

  await step('channels picked in the page', async () => {
    await page.fill('#channels', 'market:tick:BANKNIFTY');
    await page.click('#subscribe');
    await page.waitForSelector(sub('market:tick:BANKNIFTY', '[data-state="active"]'));
    await publish('BANKNIFTY', 2); // the exact channel and the pattern
    await page.waitForSelector(row('market:tick:BANKNIFTY', 1));
    await page.waitForSelector(row('market:tick:*', 4));
    // A channel the default role may not read: refused, and said so.
    await page.click('button[data-preset="engine:signal:*"]');
    await page.waitForSelector('#log li[data-code="forbidden"]');
    assert.equal(await page.locator(sub('engine:signal:*')).count(), 0, 'a refused subscription is not listed');
  });

  await step('a Redis restart is flagged as a gap', async () => {
    await call('restart-redis');
    await page.waitForSelector('tr.gap[data-stream="market:tick:*"][data-reason="upstream_interrupted"]');
    await page.waitForSelector('tr.gap[data-stream="market:tick:BANKNIFTY"][data-reason="upstream_interrupted"]');
    await publish('NIFTY');
    const tr = await page.waitForSelector('tr.msg.after-gap[data-stream="market:tick:*"]');
    const seq = Number(await tr.getAttribute('data-seq'));
    assert.ok(seq >= 6, `first seq after the interruption is ${seq}, want ≥ 6 (last was 4)`);
    assert.equal(await tr.getAttribute('data-gap-reason'), 'upstream_interrupted');
  });

  await step('a gateway restart: the page reconnects and resubscribes', async () => {
    await call('restart-gateway');
    await page.waitForSelector('#count-reconnects:text("1")');
    await page.waitForSelector('#state[data-state="open"]');
    await page.waitForSelector(sub('market:tick:*', '[data-state="active"][data-acks="2"]'));
    await page.waitForSelector(sub('market:tick:BANKNIFTY', '[data-state="active"][data-acks="2"]'));
    await page.waitForSelector('tr.gap[data-stream="market:tick:*"][data-reason="reconnect"]');
    await publish('FINNIFTY');
    // The new gateway counts from 1 again; the client took it as a new
    // baseline and flagged the message as following the reconnect.
    const tr = await page.waitForSelector('tr.msg.after-gap[data-stream="market:tick:*"][data-seq="1"]');
    assert.equal(await tr.getAttribute('data-gap-reason'), 'reconnect');
  });

  await step('screenshot of the demo page', async () => {
    for (let i = 0; i < 3; i++) for (const inst of ['BANKNIFTY', 'NIFTY', 'FINNIFTY']) await publish(inst);
    await page.waitForSelector(row('market:tick:*', 10));
    await page.waitForSelector(row('market:tick:BANKNIFTY', 3)); // counted by the new gateway
    if (screenshot) {
      await page.screenshot({ path: screenshot });
      log(`screenshot ${screenshot}`);
    }
  });

  assert.deepEqual(pageErrors.map(String), [], 'uncaught errors in the page');
  await browser.close();
}

run(main);
