// Unit checks of gateway-client.js with a fake WebSocket and mocked
// timers: requests and acks, typed errors, gap detection, backoff,
// resubscription. Run: node --test client.test.mjs (server/browser_test.go
// runs it too). The real browser and gateway are exercised by run.mjs.
import { test, describe, beforeEach, afterEach, mock } from 'node:test';
import assert from 'node:assert/strict';

import {
  GatewayClient,
  GapTracker,
  backoffDelay,
  errorFromFrame,
  GatewayError,
  BadRequestError,
  UnknownActionError,
  ForbiddenError,
  TooManyChannelsError,
  TooManyWildcardsError,
  RateLimitedError,
  StreamRateLimitedError,
  ServerBusyError,
  UpstreamRefusedError,
  UpstreamInterruptedError,
  UnsupportedDataError,
  MessagesLostError,
  TimeoutError,
  ClosedError,
  ReplayTruncatedError,
  compareIds,
} from '../gateway-client.js';

class FakeWS {
  /** @type {FakeWS[]} */
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    FakeWS.all.push(this);
  }
  send(s) {
    if (this.readyState !== 1) throw new Error('FakeWS: send on a socket that is not open');
    this.sent.push(JSON.parse(s));
  }
  close(code, reason) {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }
  // Server side of the fake:
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  recv(obj) {
    this.onmessage?.({ data: JSON.stringify(obj) });
  }
  drop(code = 1006, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  last(action) {
    return this.sent.filter((m) => m.action === action).at(-1);
  }
  /** Acks the last request of action with type. */
  ack(action, type) {
    const m = this.last(action);
    assert.ok(m, `no ${action} request sent; sent: ${JSON.stringify(this.sent)}`);
    this.recv({ type, channels: m.channels, requestId: m.requestId, timestamp: '2026-01-01T00:00:00.000Z' });
  }
}

const latest = () => FakeWS.all.at(-1);
const flush = () => new Promise((r) => setImmediate(r));
const data = (seq, channel, pattern) => ({ type: 'data', seq, channel, pattern, data: { seq }, timestamp: '2026-01-01T00:00:00.000Z' });

let clock;
function advance(ms) {
  clock += ms;
  mock.timers.tick(ms);
}

/** A client on a fake socket; opened unless open is false. */
async function newClient(opts = {}, open = true) {
  const c = new GatewayClient({
    url: 'ws://gw.test/ws',
    WebSocket: /** @type {any} */ (FakeWS),
    random: () => 0,
    now: () => clock,
    heartbeatInterval: 0,
    ...opts,
  });
  const events = { state: [], gap: [], error: [], open: [] };
  for (const k of Object.keys(events)) c.on(k, (...a) => events[k].push(a.length === 1 ? a[0] : a));
  const connected = c.connect();
  await flush();
  if (open) {
    latest().open();
    await connected;
  } else {
    connected.catch(() => {}); // the test decides how it ends
  }
  return { c, events };
}

/** Subscribes and acks; returns the subscription and the messages it receives. */
async function subscribed(c, channels, options) {
  const got = [];
  const p = c.subscribe(channels, (m) => got.push(m), options);
  latest().ack('subscribe', 'subscribed');
  const sub = await p;
  return { sub, got };
}

beforeEach(() => {
  FakeWS.all = [];
  clock = 1_000_000;
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
});
afterEach(() => mock.timers.reset());

describe('backoffDelay', () => {
  const cases = [
    { name: 'first attempt, no jitter drawn', attempt: 0, random: 0, want: 500 },
    { name: 'doubles', attempt: 3, random: 0, want: 4000 },
    { name: 'capped at maxDelay', attempt: 20, random: 0, want: 15000 },
    { name: 'jitter takes off up to half', attempt: 1, random: 0.5, want: 750 },
    { name: 'jitter 0 is exact', attempt: 2, random: 0.9, opts: { jitter: 0 }, want: 2000 },
    { name: 'custom steps', attempt: 2, random: 0, opts: { initialDelay: 100, factor: 3, maxDelay: 800 }, want: 800 },
  ];
  for (const tc of cases) {
    test(tc.name, () => {
      assert.equal(backoffDelay(tc.attempt, tc.opts ?? {}, () => tc.random), tc.want);
    });
  }
  test('stays within [step·(1-jitter), step] for random draws', () => {
    for (let attempt = 0; attempt < 10; attempt++) {
      const step = Math.min(15000, 500 * 2 ** attempt);
      for (let i = 0; i < 50; i++) {
        const d = backoffDelay(attempt);
        assert.ok(d >= step / 2 && d <= step, `attempt ${attempt}: ${d} outside [${step / 2}, ${step}]`);
      }
    }
  });
});

describe('GapTracker', () => {
  const cases = [
    { name: 'consecutive', steps: [['seq', 1], ['seq', 2], ['seq', 3]], want: [null, null, null] },
    {
      name: 'jump',
      steps: [['seq', 4], ['seq', 7]],
      want: [null, { gap: { reason: 'seq', lastSeq: 4, seq: 7, missed: 2 }, isNew: true }],
    },
    {
      name: 'upstream interruption announced once, attached to the next message',
      steps: [['seq', 3], ['upstream_interrupted'], ['upstream_interrupted'], ['seq', 5], ['seq', 6]],
      want: [
        null,
        { announce: { reason: 'upstream_interrupted', lastSeq: 3, seq: null, missed: null } },
        { announce: null },
        { gap: { reason: 'upstream_interrupted', lastSeq: 3, seq: 5, missed: null }, isNew: false },
        null,
      ],
    },
    {
      name: 'a reconnect after an interruption is announced too; the message carries the latest',
      steps: [['seq', 3], ['upstream_interrupted'], ['reconnect'], ['reconnect'], ['seq', 1]],
      want: [
        null,
        { announce: { reason: 'upstream_interrupted', lastSeq: 3, seq: null, missed: null } },
        { announce: { reason: 'reconnect', lastSeq: 3, seq: null, missed: null } },
        { announce: null },
        { gap: { reason: 'reconnect', lastSeq: 3, seq: 1, missed: null }, isNew: false },
      ],
    },
    {
      name: 'reconnect makes a new baseline',
      steps: [['seq', 9], ['reconnect'], ['seq', 1], ['seq', 2]],
      want: [
        null,
        { announce: { reason: 'reconnect', lastSeq: 9, seq: null, missed: null } },
        { gap: { reason: 'reconnect', lastSeq: 9, seq: 1, missed: null }, isNew: false },
        null,
      ],
    },
    { name: 'seq going back is a new baseline', steps: [['seq', 9], ['seq', 2], ['seq', 3]], want: [null, null, null] },
    {
      name: 'messages_lost announced at once, attached to the next message',
      steps: [['seq', 4], ['lost', 4, 3], ['seq', 8], ['seq', 9]],
      want: [
        null,
        { announce: { reason: 'messages_lost', lastSeq: 4, seq: null, missed: 3 } },
        { gap: { reason: 'messages_lost', lastSeq: 4, seq: 8, missed: 3 }, isNew: false },
        null,
      ],
    },
    {
      name: 'messages_lost: a further loss before the next message is counted in it',
      steps: [['seq', 4], ['lost', 4, 3], ['seq', 10]],
      want: [
        null,
        { announce: { reason: 'messages_lost', lastSeq: 4, seq: null, missed: 3 } },
        { gap: { reason: 'messages_lost', lastSeq: 4, seq: 10, missed: 5 }, isNew: false },
      ],
    },
    {
      name: 'messages_lost already seen as a jump is not announced again',
      steps: [['seq', 4], ['seq', 9], ['lost', 4, 3], ['seq', 10]],
      want: [null, { gap: { reason: 'seq', lastSeq: 4, seq: 9, missed: 4 }, isNew: true }, { announce: null }, null],
    },
    {
      name: 'two notices before the next message add up',
      steps: [['seq', 4], ['lost', 4, 3], ['lost', 7, 2], ['seq', 10]],
      want: [
        null,
        { announce: { reason: 'messages_lost', lastSeq: 4, seq: null, missed: 3 } },
        { announce: { reason: 'messages_lost', lastSeq: 4, seq: null, missed: 5 } },
        { gap: { reason: 'messages_lost', lastSeq: 4, seq: 10, missed: 5 }, isNew: false },
      ],
    },
    {
      name: 'messages_lost on a stream with nothing received yet',
      steps: [['lost', 0, 2], ['seq', 3]],
      want: [
        { announce: { reason: 'messages_lost', lastSeq: 0, seq: null, missed: 2 } },
        { gap: { reason: 'messages_lost', lastSeq: 0, seq: 3, missed: 2 }, isNew: false },
      ],
    },
    {
      name: 'forget clears a pending gap',
      steps: [['seq', 2], ['upstream_interrupted'], ['forget'], ['seq', 1]],
      want: [null, { announce: { reason: 'upstream_interrupted', lastSeq: 2, seq: null, missed: null } }, null, null],
    },
  ];
  for (const tc of cases) {
    test(tc.name, () => {
      const t = new GapTracker();
      tc.steps.forEach(([op, seq, lost], i) => {
        const want = tc.want[i];
        if (op === 'lost') {
          const got = t.lost('s', seq, lost);
          assert.deepEqual(got, want.announce && { stream: 's', ...want.announce }, `step ${i}`);
        } else if (op === 'seq') {
          const got = t.observe('s', seq);
          if (want === null) assert.deepEqual(got, { gap: null, isNew: false }, `step ${i}`);
          else assert.deepEqual(got, { gap: { stream: 's', ...want.gap }, isNew: want.isNew }, `step ${i}`);
        } else if (op === 'forget') {
          t.forget('s');
        } else {
          const got = t.interrupt('s', op);
          assert.deepEqual(got, want.announce && { stream: 's', ...want.announce }, `step ${i}`);
        }
      });
    });
  }
  test('streams are independent', () => {
    const t = new GapTracker();
    t.observe('a', 1);
    t.observe('b', 10);
    assert.equal(t.observe('a', 2).gap, null);
    assert.equal(t.observe('b', 12).gap?.missed, 1);
  });
});

describe('errors', () => {
  const cases = [
    ['bad_request', BadRequestError],
    ['unknown_action', UnknownActionError],
    ['forbidden', ForbiddenError],
    ['too_many_channels', TooManyChannelsError],
    ['too_many_wildcards', TooManyWildcardsError],
    ['rate_limited', RateLimitedError],
    ['stream_rate_limited', StreamRateLimitedError],
    ['server_busy', ServerBusyError],
    ['upstream_refused', UpstreamRefusedError],
    ['upstream_interrupted', UpstreamInterruptedError],
    ['unsupported_data', UnsupportedDataError],
    ['messages_lost', MessagesLostError],
    ['timeout', TimeoutError],
    ['closed', ClosedError],
    ['from_the_future', GatewayError],
  ];
  for (const [code, Cls] of cases) {
    test(code, () => {
      const err = errorFromFrame({ code, message: 'm', channels: ['x'], requestId: 'r' });
      assert.ok(err instanceof Cls && err instanceof GatewayError && err instanceof Error);
      assert.equal(err.constructor, Cls);
      assert.deepEqual([err.code, err.message, err.channels, err.requestId], [code, 'm', ['x'], 'r']);
    });
  }
});

describe('GatewayClient', () => {
  test('connects with the token and resolves subscribe on its ack', async () => {
    const { c } = await newClient({ token: 'a b&c' });
    assert.equal(latest().url, 'ws://gw.test/ws?token=a%20b%26c');
    assert.equal(c.state, 'open');
    const p = c.subscribe(['market:tick:*', 'x:1'], () => {});
    const req = latest().last('subscribe');
    assert.deepEqual(req.channels, ['market:tick:*', 'x:1']);
    // A reply for another request does not settle it.
    latest().recv({ type: 'subscribed', channels: ['other'], requestId: 'nope' });
    latest().ack('subscribe', 'subscribed');
    const sub = await p;
    assert.equal(sub.state, 'active');
    assert.equal(sub.acks, 1);
  });

  test('routes messages per subscription by stream', async () => {
    const { c } = await newClient();
    const a = await subscribed(c, ['market:tick:*']);
    const b = await subscribed(c, ['market:tick:NIFTY']);
    latest().recv(data(1, 'market:tick:NIFTY', 'market:tick:*'));
    latest().recv(data(1, 'market:tick:NIFTY'));
    latest().recv(data(2, 'market:tick:BANKNIFTY', 'market:tick:*'));
    assert.deepEqual(a.got.map((m) => [m.stream, m.seq, m.channel]), [
      ['market:tick:*', 1, 'market:tick:NIFTY'],
      ['market:tick:*', 2, 'market:tick:BANKNIFTY'],
    ]);
    assert.deepEqual(b.got.map((m) => [m.stream, m.seq, m.pattern]), [['market:tick:NIFTY', 1, undefined]]);
  });

  test('a refused subscribe rejects with the typed error', async () => {
    const { c, events } = await newClient();
    const onError = mock.fn();
    const p = c.subscribe(['engine:signal:*'], () => {}, { onError });
    const req = latest().last('subscribe');
    latest().recv({ type: 'error', code: 'forbidden', message: 'no', channels: ['engine:signal:*'], requestId: req.requestId });
    await assert.rejects(p, (err) => err instanceof ForbiddenError && err.channels[0] === 'engine:signal:*');
    assert.equal(c.subscriptions.length, 0);
    assert.equal(onError.mock.callCount(), 1);
    assert.equal(events.error.length, 0, 'a refusal goes to the caller, not the error event');
  });

  test('error frames without a request go to the error event', async () => {
    const { events } = await newClient();
    latest().recv({ type: 'error', code: 'rate_limited', message: 'slow down' });
    assert.equal(events.error.length, 1);
    assert.ok(events.error[0] instanceof RateLimitedError);
  });

  test('a seq jump is a gap on that stream only', async () => {
    const { c, events } = await newClient();
    const onGap = mock.fn();
    const a = await subscribed(c, ['p:*'], { onGap });
    const b = await subscribed(c, ['q']);
    for (const seq of [1, 2, 5]) latest().recv(data(seq, 'p:1', 'p:*'));
    for (const seq of [1, 2, 3]) latest().recv(data(seq, 'q'));
    assert.deepEqual(events.gap, [{ stream: 'p:*', reason: 'seq', lastSeq: 2, seq: 5, missed: 2 }]);
    assert.equal(onGap.mock.callCount(), 1);
    assert.deepEqual(a.got.map((m) => m.gap?.missed ?? null), [null, null, 2]);
    assert.ok(b.got.every((m) => m.gap === null));
  });

  test('upstream_interrupted announces a gap per named stream at once', async () => {
    const { c, events } = await newClient();
    const a = await subscribed(c, ['p:*', 'q']);
    latest().recv(data(3, 'p:1', 'p:*'));
    latest().recv({ type: 'error', code: 'upstream_interrupted', message: 'redis', channels: ['p:*', 'q'] });
    assert.deepEqual(
      events.gap.map((g) => [g.stream, g.reason, g.lastSeq]),
      [
        ['p:*', 'upstream_interrupted', 3],
        ['q', 'upstream_interrupted', null],
      ],
    );
    assert.ok(events.error[0] instanceof UpstreamInterruptedError);
    latest().recv(data(5, 'p:1', 'p:*'));
    assert.equal(events.gap.length, 2, 'the jump after an interruption is the same gap, not a second one');
    assert.deepEqual(a.got.at(-1).gap, { stream: 'p:*', reason: 'upstream_interrupted', lastSeq: 3, seq: 5, missed: null });
  });

  test('messages_lost announces a gap per named stream at once', async () => {
    const { c, events } = await newClient();
    const onGap = mock.fn();
    const a = await subscribed(c, ['p:*', 'q'], { onGap });
    latest().recv(data(3, 'p:1', 'p:*'));
    latest().recv(data(7, 'q'));
    latest().recv({
      type: 'error',
      code: 'messages_lost',
      message: 'dropped',
      streams: [
        { stream: 'p:*', lastSeq: 3, lost: 40 },
        { stream: 'q', lastSeq: 7, lost: 2 },
        { stream: 'gone', lastSeq: 1, lost: 1 }, // no longer followed
      ],
      timestamp: '2026-01-01T00:00:00.000Z',
    });
    assert.deepEqual(events.gap, [
      { stream: 'p:*', reason: 'messages_lost', lastSeq: 3, seq: null, missed: 40 },
      { stream: 'q', reason: 'messages_lost', lastSeq: 7, seq: null, missed: 2 },
    ]);
    assert.equal(onGap.mock.callCount(), 2);
    assert.equal(events.error.length, 1);
    assert.ok(events.error[0] instanceof MessagesLostError);
    assert.deepEqual(events.error[0].channels, ['p:*', 'q', 'gone']);
    latest().recv(data(44, 'p:1', 'p:*'));
    assert.equal(events.gap.length, 2, 'the next message carries the announced gap, not a second one');
    assert.deepEqual(a.got.at(-1).gap, { stream: 'p:*', reason: 'messages_lost', lastSeq: 3, seq: 44, missed: 40 });
  });

  test('reconnects with backoff, announces gaps and resubscribes everything', async () => {
    const { c, events } = await newClient({ reconnect: { initialDelay: 100, maxDelay: 1000 } });
    const a = await subscribed(c, ['p:*']);
    const b = await subscribed(c, ['q', 'r']);
    latest().recv(data(7, 'p:1', 'p:*'));
    const first = latest();
    first.drop(1001, 'going away');
    assert.equal(c.state, 'reconnecting');
    assert.deepEqual(events.state.at(-1), ['reconnecting', { attempt: 1, delay: 100, code: 1001, reason: 'going away' }]);
    assert.deepEqual(
      events.gap.map((g) => [g.stream, g.reason, g.lastSeq]),
      [
        ['p:*', 'reconnect', 7],
        ['q', 'reconnect', null],
        ['r', 'reconnect', null],
      ],
    );
    assert.deepEqual([a.sub.state, b.sub.state], ['pending', 'pending']);
    advance(99);
    await flush();
    assert.equal(FakeWS.all.length, 1, 'no dial before the delay');
    advance(1);
    await flush();
    assert.equal(FakeWS.all.length, 2);
    latest().open();
    assert.deepEqual(
      latest().sent.map((m) => [m.action, m.channels]),
      [
        ['subscribe', ['p:*']],
        ['subscribe', ['q', 'r']],
      ],
    );
    for (const m of latest().sent) latest().recv({ type: 'subscribed', channels: m.channels, requestId: m.requestId });
    await flush();
    assert.deepEqual([a.sub.state, a.sub.acks, b.sub.acks], ['active', 2, 2]);
    assert.deepEqual(events.open.at(-1), { reconnected: true });
    // The new gateway counts from 1: a new baseline, flagged on the message.
    latest().recv(data(1, 'p:1', 'p:*'));
    latest().recv(data(2, 'p:1', 'p:*'));
    assert.equal(events.gap.length, 3);
    assert.deepEqual(a.got.slice(1).map((m) => [m.seq, m.gap?.reason ?? null]), [
      [1, 'reconnect'],
      [2, null],
    ]);
  });

  test('backoff climbs while dials fail and resets after a stable connection', async () => {
    const { c, events } = await newClient({ reconnect: { initialDelay: 100, maxDelay: 400, stableAfter: 5000 } });
    const delays = () => events.state.filter(([s, i]) => s === 'reconnecting' && i.delay !== undefined).map(([, i]) => i.delay);
    latest().drop(1006);
    for (let i = 0; i < 4; i++) {
      advance(delays().at(-1));
      await flush();
      latest().drop(1006); // refused before opening
    }
    assert.deepEqual(delays(), [100, 200, 400, 400, 400]);
    advance(400);
    await flush();
    latest().open();
    advance(5000); // stays up long enough
    latest().drop(1006);
    assert.equal(delays().at(-1), 100);
    assert.equal(c.state, 'reconnecting');
  });

  test('gives up after maxAttempts and rejects what waits', async () => {
    const { c } = await newClient({ reconnect: { initialDelay: 10, maxAttempts: 1 } }, false);
    const p = c.subscribe(['q'], () => {});
    latest().drop(1006);
    advance(10);
    await flush();
    latest().drop(1006);
    assert.equal(c.state, 'closed');
    await assert.rejects(p, ClosedError);
  });

  test('subscribing before the connection opens sends it on open', async () => {
    const { c } = await newClient({}, false);
    const p = c.subscribe('q', () => {});
    assert.equal(latest().sent.length, 0);
    latest().open();
    latest().ack('subscribe', 'subscribed');
    assert.equal((await p).state, 'active');
  });

  test('unsubscribe leaves channels another subscription still names', async () => {
    const { c } = await newClient();
    const a = await subscribed(c, ['p:*', 'q']);
    await subscribed(c, ['q']);
    const done = a.sub.unsubscribe();
    assert.deepEqual(latest().last('unsubscribe').channels, ['p:*']);
    latest().ack('unsubscribe', 'unsubscribed');
    await done;
    assert.equal(a.sub.state, 'closed');
    latest().recv(data(1, 'p:1', 'p:*'));
    latest().recv(data(1, 'q'));
    assert.equal(a.got.length, 0, 'an ended subscription gets nothing');
  });

  test('a request without reply times out', async () => {
    const { c } = await newClient({ requestTimeout: 50 });
    const p = c.subscribe('q', () => {});
    advance(50);
    await assert.rejects(p, TimeoutError);
    assert.deepEqual(latest().last('unsubscribe')?.channels, ['q'], 'a late ack is undone');
  });

  test('close rejects pending work and stops reconnecting', async () => {
    const { c } = await newClient({}, false);
    const p = c.subscribe('q', () => {});
    const ws = latest();
    c.close();
    await assert.rejects(p, ClosedError);
    assert.equal(c.state, 'closed');
    assert.deepEqual(ws.closedWith, { code: 1000, reason: '' });
    advance(60_000);
    await flush();
    assert.equal(FakeWS.all.length, 1);
    await assert.rejects(c.subscribe('q', () => {}), ClosedError);
  });

  test('heartbeat pings a silent connection and drops a dead one', async () => {
    const { c } = await newClient({ heartbeatInterval: 1000, reconnect: { initialDelay: 10 } });
    advance(1000);
    const ping = latest().last('ping');
    assert.ok(ping, 'a ping after a silent interval');
    latest().recv({ type: 'pong', requestId: ping.requestId });
    advance(1000);
    assert.equal(c.state, 'open', 'answered: still open');
    assert.equal(latest().sent.filter((m) => m.action === 'ping').length, 2, 'silent again: a second ping');
    advance(1000); // the second ping went unanswered
    assert.equal(c.state, 'reconnecting');
    assert.equal(latest().closedWith?.code, 4000);
  });

  test('a callback that throws does not stop delivery to the others', async () => {
    const { c } = await newClient();
    const thrown = [];
    // Browsers have reportError (the console and window.onerror get it).
    globalThis.reportError = (err) => thrown.push(err);
    try {
      const got = [];
      c.subscribe('q', () => {
        throw new Error('app bug');
      });
      c.subscribe('q', (m) => got.push(m.seq));
      for (const m of latest().sent) latest().recv({ type: 'subscribed', channels: m.channels, requestId: m.requestId });
      await flush();
      latest().recv(data(1, 'q'));
      assert.deepEqual(got, [1]);
      assert.equal(thrown[0]?.message, 'app bug');
    } finally {
      delete globalThis.reportError;
    }
  });
});

describe('durable streams', () => {
  const ts = '2026-01-01T00:00:00.000Z';
  const entry = (channel, id, seq, pattern) => ({ type: 'data', seq, channel, pattern, id, data: id, timestamp: ts });
  const replay = (channel, id, pattern) => ({ type: 'data', channel, pattern, id, replay: true, data: id, timestamp: ts });
  const replayed = (channel, count, lastId) => ({ type: 'replayed', channel, count, lastId, timestamp: ts });

  test('compareIds orders entry IDs numerically', () => {
    assert.ok(compareIds('10-0', '9-5') > 0);
    assert.ok(compareIds('5-10', '5-9') > 0);
    assert.ok(compareIds('5-1', '6-0') < 0);
    assert.equal(compareIds('18446744073709551615-0', '18446744073709551615-0'), 0);
  });

  test('resumes with since after a reconnect: replay, recovered, no gap, duplicates dropped', async () => {
    const { c, events } = await newClient({ reconnect: { initialDelay: 100, maxDelay: 1000 } });
    const recovered = [];
    c.on('recovered', (r) => recovered.push(r));
    const x = await subscribed(c, ['d:x']);
    const p = await subscribed(c, ['d:*']);
    assert.equal(latest().last('subscribe').since, undefined, 'nothing to resume yet');
    latest().recv(replayed('d:x', 0, '0-0'));
    latest().recv(replayed('d:*', 0, '99-18446744073709551615'));
    latest().recv(entry('d:x', '100-0', 1));
    latest().recv(entry('d:a', '100-0', 1, 'd:*'));
    latest().recv(entry('d:b', '101-3', 2, 'd:*'));
    latest().drop(1001, 'going away');
    assert.deepEqual(events.gap, [], 'a durable stream announces no gap at the disconnect');
    advance(100);
    await flush();
    latest().open();
    const sent = latest().sent.filter((m) => m.action === 'subscribe');
    assert.deepEqual(sent.map((m) => m.since), [
      { 'd:x': '100-0' },
      { 'd:*': '99-18446744073709551615', 'd:a': '100-0', 'd:b': '101-3' },
    ]);
    for (const m of sent) latest().recv({ type: 'subscribed', channels: m.channels, requestId: m.requestId });
    await flush();
    latest().recv(replay('d:x', '100-0')); // already had it: dropped
    latest().recv(replay('d:x', '102-0'));
    latest().recv(replayed('d:x', 2, '102-0'));
    latest().recv(replay('d:c', '103-0', 'd:*'));
    latest().recv(replayed('d:*', 1, '104-18446744073709551615'));
    latest().recv(entry('d:x', '105-0', 1));
    assert.deepEqual(events.gap, []);
    assert.deepEqual(recovered, [{ stream: 'd:x', count: 2 }, { stream: 'd:*', count: 1 }]);
    assert.deepEqual(x.got.map((m) => [m.id, m.seq, m.replay ?? false, m.gap]), [
      ['100-0', 1, false, null],
      ['102-0', null, true, null],
      ['105-0', 1, false, null],
    ]);
    assert.deepEqual(p.got.map((m) => [m.channel, m.id]), [['d:a', '100-0'], ['d:b', '101-3'], ['d:c', '103-0']]);
  });

  test('an incomplete replay is a gap', async () => {
    const { c, events } = await newClient({ reconnect: { initialDelay: 100, maxDelay: 1000 } });
    const recovered = [];
    c.on('recovered', (r) => recovered.push(r));
    await subscribed(c, ['d:x']);
    latest().recv(replayed('d:x', 0, '0-0'));
    latest().recv(entry('d:x', '5-0', 1));
    latest().drop(1006);
    advance(100);
    await flush();
    latest().open();
    latest().ack('subscribe', 'subscribed');
    await flush();
    latest().recv({ type: 'error', code: 'replay_truncated', message: 'm', channels: ['d:x'], stream: 'd:x', reason: 'trimmed', since: '5-0', from: '900-0', requestId: latest().last('subscribe').requestId, timestamp: ts });
    latest().recv(replay('d:x', '900-0'));
    latest().recv(replayed('d:x', 1, '900-0'));
    assert.deepEqual(events.gap.map((g) => [g.stream, g.reason, g.replayReason, g.since, g.from]), [['d:x', 'replay_truncated', 'trimmed', '5-0', '900-0']]);
    assert.deepEqual(events.error, [], 'replay_truncated is told as a gap, not an error');
    assert.deepEqual(recovered, [{ stream: 'd:x', count: 1 }]);
    assert.ok(new ReplayTruncatedError('replay_truncated', 'm') instanceof Error);
  });

  test('positions the gateway refuses are dropped and the subscription starts afresh', async () => {
    const { c, events } = await newClient({ reconnect: { initialDelay: 100, maxDelay: 1000 } });
    const x = await subscribed(c, ['d:x']);
    latest().recv(replayed('d:x', 0, '0-0'));
    latest().recv(entry('d:x', '5-0', 1));
    latest().drop(1006);
    advance(100);
    await flush();
    latest().open();
    const req = latest().last('subscribe');
    assert.deepEqual(req.since, { 'd:x': '5-0' });
    latest().recv({ type: 'error', code: 'bad_request', message: 'not durable', channels: ['d:x'], requestId: req.requestId, timestamp: ts });
    await flush();
    const again = latest().last('subscribe');
    assert.notEqual(again.requestId, req.requestId);
    assert.equal(again.since, undefined);
    latest().ack('subscribe', 'subscribed');
    await flush();
    assert.equal(x.sub.state, 'active');
    assert.deepEqual(events.gap.map((g) => [g.stream, g.reason]), [['d:x', 'reconnect']]);
  });
});
