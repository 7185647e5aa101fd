// What run.mjs and durable.mjs share: the line protocol with the Go test
// that drives them, the step log, the Chromium launch and the exit.
//
// The Go test starts the script and acts on its requests, one line each
// way: the script prints `CMD <id> <verb> <json>` on stdout and reads
// `OK <id> <json>` or `ERR <id> <message>` on stdin. Every other stdout
// line is a log line. Exit status 0 means every step passed.
import { chromium } from 'playwright-core';
import readline from 'node:readline';

let nextId = 0;
/** @type {Map<number, {resolve: (v: any) => void, reject: (e: Error) => void}>} */
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
  // The Go test went away (it failed or timed out): stop.
  for (const w of waiting.values()) w.reject(new Error('go side closed stdin'));
  waiting.clear();
  abort(new Error('stdin closed'));
});

/** Asks the Go side to do something; resolves with its answer. */
export function call(verb, args = {}) {
  const id = ++nextId;
  return new Promise((resolve, reject) => {
    waiting.set(id, { resolve, reject });
    process.stdout.write(`CMD ${id} ${verb} ${JSON.stringify(args)}\n`);
  });
}

export const log = (...a) => process.stdout.write(a.join(' ') + '\n');

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

/** Runs one named step, logging STEP and PASS (or which step failed). */
export async function step(name, fn) {
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

/**
 * Launches headless Chromium (CHROMIUM, default /usr/bin/chromium) with
 * the machine's flags: no sandbox (root in a container), no GPU, and
 * nothing that phones home; playwright adds a fresh --user-data-dir.
 */
export async function launchChromium() {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--headless',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 60000,
  });
  log(`chromium ${browser.version()}`);
  return browser;
}

/** Runs main, then exits 0; on a failure, logs it, closes the browser and exits 1. */
export function run(main) {
  main().then(
    () => {
      finished = true;
      rl.close();
      process.exit(0);
    },
    (err) => abort(err),
  );
}
