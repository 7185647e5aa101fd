// Close codes as a browser sees them: headless Chromium opens WebSockets
// to a real gateway (started by server/browser_close_test.go) that keep
// sending when the gateway closes them, and reports each ws.onclose code.
//
// Cases (each RUNS connections, CONCURRENCY at a time):
//   - too-big: one message of 2 MiB on a gateway whose MAX_MESSAGE_BYTES
//     is 64 KiB; the close must be 1009;
//   - rate-limit: messages sent as fast as the page can until the gateway
//     closes; the close must be 1008 (the gateway's limit is set low).
//
// Prints one line per case, `RESULT <case> <json of code → count>`, and
// exits 0 only when every close had the expected code.
//
// Environment: GATEWAY_URL (http://host:port), CHROMIUM (the browser
// binary), RUNS (default 100), CONCURRENCY (default 10).
import { chromium } from 'playwright-core';

const base = process.env.GATEWAY_URL;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const runs = Number(process.env.RUNS || 100);
const concurrency = Number(process.env.CONCURRENCY || 10);
if (!base) {
  console.error('closes.mjs: GATEWAY_URL is required (run it through go test ./server -run TestBrowserCloseCodes)');
  process.exit(2);
}

const cases = [
  { name: 'too-big', want: 1009 },
  { name: 'rate-limit', want: 1008 },
];

/**
 * Runs in the page: opens runs sockets, concurrency at a time, each
 * sending per kind, and counts the close codes.
 */
async function pageRun({ url, kind, runs, concurrency }) {
  const one = () =>
    new Promise((resolve) => {
      const ws = new WebSocket(url);
      let timer = null;
      const done = (code) => {
        clearInterval(timer);
        resolve(code);
      };
      ws.onclose = (ev) => done(ev.code);
      ws.onerror = () => {};
      ws.onopen = () => {
        if (kind === 'too-big') {
          ws.send('x'.repeat(2 << 20));
          return;
        }
        // A burst well past the limit, then more every millisecond
        // until the gateway closes: still sending when it does.
        let n = 0;
        const burst = () => {
          for (let i = 0; i < 50 && ws.readyState === WebSocket.OPEN; i++) {
            ws.send(JSON.stringify({ action: 'ping', requestId: ++n }));
          }
        };
        burst();
        timer = setInterval(burst, 1);
      };
      setTimeout(() => {
        try {
          ws.close();
        } catch {}
        done(0); // no close within 20 s
      }, 20000);
    });
  const codes = {};
  let started = 0;
  const worker = async () => {
    while (started < runs) {
      started++;
      const code = await one();
      codes[code] = (codes[code] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return codes;
}

async function main() {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 60000,
  });
  let ok = true;
  try {
    const page = await browser.newPage();
    await page.goto(`${base}/health`);
    const url = base.replace(/^http/, 'ws') + '/ws';
    for (const c of cases) {
      const codes = await page.evaluate(pageRun, { url, kind: c.name, runs, concurrency });
      process.stdout.write(`RESULT ${c.name} ${JSON.stringify(codes)}\n`);
      if (codes[c.want] !== runs) {
        ok = false;
        console.error(`FAIL ${c.name}: close codes ${JSON.stringify(codes)}, want ${runs} × ${c.want}`);
      }
    }
  } finally {
    await browser.close();
  }
  process.exit(ok ? 0 : 1);
}

main().catch((err) => {
  console.error(`FAIL: ${err?.stack ?? err}`);
  process.exit(1);
});
