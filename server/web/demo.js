// The demo page served at /: subscribe to channels, watch messages and
// their seq, see gaps and the connection state. Everything goes through
// gateway-client.js, as an application would use it.
//
// Query parameters: channels (comma-separated, ';' between subscriptions;
// default market:tick:* and the durable indicators:signal:*), token,
// initialDelay and maxDelay (reconnect backoff, ms).
import { GatewayClient } from '/gateway-client.js';

const params = new URLSearchParams(location.search);
const maxRows = 300;
const $ = (sel) => /** @type {HTMLElement} */ (document.querySelector(sel));

const counts = { messages: 0, gaps: 0, recovered: 0, reconnects: 0, errors: 0 };
/** @type {GatewayClient} */
let client;
/** channel lists the page wants, kept across a token change */
let wanted = [];

function count(name, delta = 1) {
  counts[name] += delta;
  const el = $(`#count-${name}`);
  el.textContent = String(counts[name]);
  el.toggleAttribute('data-nonzero', counts[name] > 0);
}

function cell(tr, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function addRow(tr) {
  const body = $('#messages tbody');
  body.insertBefore(tr, body.firstChild);
  while (body.childElementCount > maxRows) body.lastElementChild?.remove();
}

function time(ts) {
  const d = ts ? new Date(ts) : new Date();
  return d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

function describeGap(g) {
  const after = g.lastSeq == null ? '' : ` after seq ${g.lastSeq}`;
  switch (g.reason) {
    case 'seq':
      return `${g.missed} missed (seq ${g.lastSeq} → ${g.seq})`;
    case 'upstream_interrupted':
      return `Redis link interrupted${after}: messages may be lost`;
    default:
      return `connection lost${after}: messages may be lost`;
  }
}

function onMessage(m) {
  count('messages');
  const tr = document.createElement('tr');
  tr.className = 'msg' + (m.gap ? ' after-gap' : '');
  tr.dataset.stream = m.stream;
  tr.dataset.channel = m.channel;
  tr.dataset.seq = String(m.seq);
  if (m.replay) tr.dataset.replay = 'true';
  cell(tr, time(m.timestamp));
  cell(tr, m.stream);
  cell(tr, m.channel);
  // A replayed entry has no seq: its position is its id.
  cell(tr, m.replay ? 'replay' : String(m.seq), 'num seq');
  cell(tr, typeof m.data === 'string' ? m.data : JSON.stringify(m.data), 'data');
  cell(tr, !m.gap ? '' : m.gap.reason === 'seq' ? `${m.gap.missed} missed` : m.gap.reason, 'gapinfo');
  if (m.gap) tr.dataset.gapReason = m.gap.reason;
  addRow(tr);
}

function onGap(g) {
  count('gaps');
  const tr = document.createElement('tr');
  tr.className = 'gap';
  tr.dataset.stream = g.stream;
  tr.dataset.reason = g.reason;
  cell(tr, time());
  cell(tr, g.stream);
  const td = cell(tr, '⚠ gap: ' + describeGap(g));
  td.colSpan = 4;
  addRow(tr);
}

// A durable stream resumed after a reconnect: what it missed was
// replayed, complete (an incomplete replay is a gap instead).
function onRecovered({ stream, count: n }) {
  count('recovered', n);
  const tr = document.createElement('tr');
  tr.className = 'recovered';
  tr.dataset.stream = stream;
  tr.dataset.count = String(n);
  cell(tr, time());
  cell(tr, stream);
  const td = cell(tr, n > 0 ? `↺ recovered ${n} missed ${n === 1 ? 'entry' : 'entries'}, no gap` : '↺ resumed, nothing missed');
  td.colSpan = 4;
  addRow(tr);
}

function notice(code, text) {
  const li = document.createElement('li');
  li.dataset.code = code;
  li.textContent = `${time()} ${code}: ${text}`;
  const log = $('#log');
  log.insertBefore(li, log.firstChild);
  while (log.childElementCount > 6) log.lastElementChild?.remove();
}

function showState(state, info) {
  const el = $('#state');
  el.dataset.state = state;
  let text = state;
  if (state === 'reconnecting' && info.delay != null) text += ` in ${(info.delay / 1000).toFixed(1)} s (attempt ${info.attempt})`;
  if (state === 'closed' && info.code) text += ` (${info.code})`;
  el.textContent = text;
}

/** @param {string[]} channels */
function subscribe(channels) {
  const li = document.createElement('li');
  li.className = 'sub';
  li.dataset.channels = channels.join(',');
  li.dataset.state = 'pending';
  li.dataset.acks = '0';
  li.textContent = channels.join(', ');
  $('#subs').appendChild(li);
  const entry = { channels, li, sub: null };
  wanted.push(entry);
  client
    .subscribe(channels, onMessage, {
      onStateChange: (state) => {
        li.dataset.state = state;
        if (entry.sub) li.dataset.acks = String(entry.sub.acks);
        if (state === 'closed') drop(entry);
      },
    })
    .then((sub) => {
      entry.sub = sub;
      li.dataset.acks = String(sub.acks);
      const x = document.createElement('button');
      x.type = 'button';
      x.title = 'unsubscribe';
      x.textContent = '×';
      x.onclick = () => {
        drop(entry);
        sub.unsubscribe().catch((err) => notice(err.code ?? 'error', err.message));
      };
      li.appendChild(x);
    })
    .catch((err) => {
      count('errors');
      notice(err.code ?? 'error', `${err.message}${err.channels?.length ? ` [${err.channels.join(', ')}]` : ''}`);
      drop(entry);
    });
}

function drop(entry) {
  entry.li.remove();
  wanted = wanted.filter((e) => e !== entry);
}

function start(token) {
  const reconnect = {};
  if (params.has('initialDelay')) reconnect.initialDelay = Number(params.get('initialDelay'));
  if (params.has('maxDelay')) reconnect.maxDelay = Number(params.get('maxDelay'));
  client = new GatewayClient({ token: token || undefined, reconnect });
  $('#endpoint').textContent = client.url;
  client.on('state', showState);
  client.on('open', ({ reconnected }) => {
    if (reconnected) count('reconnects');
  });
  client.on('gap', onGap);
  client.on('recovered', onRecovered);
  client.on('error', (err) => {
    count('errors');
    notice(err.code, err.message + (err.channels.length ? ` [${err.channels.join(', ')}]` : ''));
  });
  client.connect().catch((err) => notice('closed', err.message));
  // Exposed for the console (and the browser tests' diagnostics).
  Object.assign(window, { gatewayDemo: { client } });
}

function parseChannels(text) {
  return text
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}

$('#subscribe-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($('#channels'));
  const channels = parseChannels(input.value);
  if (channels.length) subscribe(channels);
  input.value = '';
});

$('#presets').addEventListener('click', (ev) => {
  const preset = /** @type {HTMLElement} */ (ev.target).dataset?.preset;
  if (preset) subscribe([preset]);
});

$('#token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const lists = wanted.map((e) => e.channels);
  client.close(1000, 'token changed');
  for (const e of [...wanted]) drop(e);
  start(/** @type {HTMLInputElement} */ ($('#token')).value);
  for (const channels of lists) subscribe(channels);
});

$('#clear').addEventListener('click', () => {
  $('#messages tbody').replaceChildren();
  $('#log').replaceChildren();
  for (const k of Object.keys(counts)) count(k, -counts[k]);
});

const token = params.get('token') ?? '';
/** @type {HTMLInputElement} */ ($('#token')).value = token;
start(token);
for (const channels of (params.get('channels') ?? 'market:tick:*;indicators:signal:*').split(';')) {
  const list = parseChannels(channels);
  if (list.length) subscribe(list);
}
