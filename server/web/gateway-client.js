// @ts-check
/**
 * Browser client for the Redis → WebSocket gateway (docs/PROTOCOL.md).
 *
 * One dependency-free ES module: the gateway serves it at
 * /gateway-client.js, and a bundler can import it as a file. Types are in
 * gateway-client.d.ts next to it.
 *
 *   import { GatewayClient } from '/gateway-client.js';
 *   const client = new GatewayClient({ token });
 *   const sub = await client.subscribe(['market:tick:*'], (m) => render(m));
 *   client.on('gap', (g) => console.warn('lost messages on', g.stream, g));
 *   await sub.unsubscribe();
 *
 * What it adds to a bare WebSocket:
 *   - requests resolved or rejected by the reply carrying their requestId,
 *     with a typed error per error code (ForbiddenError, RateLimitedError…);
 *   - reconnection with jittered exponential backoff, resubscribing every
 *     subscription, so that thousands of browsers do not all come back in
 *     the same instant after a gateway restart;
 *   - gap detection from seq, per stream (an exact channel or a pattern):
 *     a jump, a messages_lost or upstream_interrupted notice and a lost
 *     connection each tell the application which stream may have lost
 *     messages;
 *   - resume of durable streams (docs/DURABILITY.md): the client keeps
 *     the last entry id per durable channel and resubscribes with
 *     "since", so the gateway replays what it missed; a lost connection
 *     then announces a gap only when the replay was incomplete
 *     (replay_truncated), and a 'recovered' event otherwise.
 */

/** Error codes of the protocol, plus the client's own. */
export const ErrorCode = Object.freeze({
  BadRequest: 'bad_request',
  UnknownAction: 'unknown_action',
  Forbidden: 'forbidden',
  TooManyChannels: 'too_many_channels',
  TooManyWildcards: 'too_many_wildcards',
  RateLimited: 'rate_limited',
  StreamRateLimited: 'stream_rate_limited',
  ServerBusy: 'server_busy',
  UpstreamRefused: 'upstream_refused',
  UpstreamInterrupted: 'upstream_interrupted',
  UnsupportedData: 'unsupported_data',
  MessagesLost: 'messages_lost',
  ReplayTruncated: 'replay_truncated',
  // Client-side:
  Timeout: 'timeout',
  Closed: 'closed',
});

/** An error frame from the gateway, or a request that could not complete. */
export class GatewayError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{channels?: string[], requestId?: string|number|null}} [detail]
   */
  constructor(code, message, detail = {}) {
    super(message);
    this.name = 'GatewayError';
    this.code = code;
    this.channels = detail.channels ?? [];
    this.requestId = detail.requestId ?? null;
  }
}
export class BadRequestError extends GatewayError {}
export class UnknownActionError extends GatewayError {}
export class ForbiddenError extends GatewayError {}
export class TooManyChannelsError extends GatewayError {}
export class TooManyWildcardsError extends GatewayError {}
export class RateLimitedError extends GatewayError {}
/** Too many new channels at once (MAX_NEW_STREAMS_PER_SECOND); retry a little later. */
export class StreamRateLimitedError extends GatewayError {}
/** The gateway refused the request for its own sake (MAX_STREAMS, MAX_PENDING_REQUESTS); nothing was done, retry later. */
export class ServerBusyError extends GatewayError {}
/** Redis (or the gateway, for a pattern over sharded channels) refused these channels. */
export class UpstreamRefusedError extends GatewayError {}
export class UpstreamInterruptedError extends GatewayError {}
export class UnsupportedDataError extends GatewayError {}
/** The gateway dropped messages for this connection; channels lists the streams. */
export class MessagesLostError extends GatewayError {}
/** A durable stream's replay was incomplete: more than MAX_REPLAY missed, or trimmed. */
export class ReplayTruncatedError extends GatewayError {}
/** No reply within requestTimeout. */
export class TimeoutError extends GatewayError {}
/** The client was closed, or the subscription ended, before the reply. */
export class ClosedError extends GatewayError {}

const errorClasses = {
  bad_request: BadRequestError,
  unknown_action: UnknownActionError,
  forbidden: ForbiddenError,
  too_many_channels: TooManyChannelsError,
  too_many_wildcards: TooManyWildcardsError,
  rate_limited: RateLimitedError,
  stream_rate_limited: StreamRateLimitedError,
  server_busy: ServerBusyError,
  upstream_refused: UpstreamRefusedError,
  upstream_interrupted: UpstreamInterruptedError,
  unsupported_data: UnsupportedDataError,
  messages_lost: MessagesLostError,
  replay_truncated: ReplayTruncatedError,
  timeout: TimeoutError,
  closed: ClosedError,
};

/**
 * The typed error for an error frame; unknown codes (a newer gateway)
 * give a plain GatewayError. The streams of a messages_lost notice are
 * its channels.
 * @param {{code?: string, message?: string, channels?: string[], streams?: {stream: string}[], requestId?: string|number}} frame
 * @returns {GatewayError}
 */
export function errorFromFrame(frame) {
  const code = String(frame.code ?? 'unknown');
  const Cls = Object.prototype.hasOwnProperty.call(errorClasses, code) ? errorClasses[code] : GatewayError;
  const channels = frame.channels ?? (Array.isArray(frame.streams) ? frame.streams.map((s) => s?.stream).filter((s) => typeof s === 'string') : undefined);
  const err = new Cls(code, frame.message || code, { channels, requestId: frame.requestId });
  err.name = Cls.name;
  return err;
}

/** @type {Required<import('./gateway-client.js').ReconnectOptions>} */
export const defaultReconnect = Object.freeze({
  initialDelay: 500,
  maxDelay: 15000,
  factor: 2,
  jitter: 0.5,
  maxAttempts: Infinity,
  stableAfter: 10000,
});

/**
 * Delay before reconnect attempt number attempt (0 for the first): the
 * exponential step min(maxDelay, initialDelay·factor^attempt), less a
 * random share of up to jitter of it. Keeping a floor (jitter < 1) stops a
 * flapping gateway from being hammered; the random part spreads clients.
 * @param {number} attempt
 * @param {Partial<import('./gateway-client.js').ReconnectOptions>} [opts]
 * @param {() => number} [random] uniform in [0, 1)
 */
export function backoffDelay(attempt, opts = {}, random = Math.random) {
  const o = { ...defaultReconnect, ...opts };
  const step = Math.min(o.maxDelay, o.initialDelay * Math.pow(o.factor, Math.max(0, attempt)));
  const jitter = Math.min(1, Math.max(0, o.jitter));
  return Math.round(step * (1 - jitter * random()));
}

/**
 * Per-stream seq bookkeeping. A stream is what the gateway counts seq
 * for: the pattern of a pattern delivery, else the channel. Exported for
 * tests and for applications that keep their own transport.
 */
export class GapTracker {
  constructor() {
    /** @type {Map<string, number>} last seq seen per stream */
    this.last = new Map();
    /** @type {Map<string, import('./gateway-client.js').Gap>} announced gaps awaiting the next message */
    this.pending = new Map();
  }

  /** Forget a stream: its next seq is a new baseline (after a fresh subscribe ack). */
  forget(stream) {
    this.last.delete(stream);
    this.pending.delete(stream);
  }

  /**
   * Messages may have been lost on stream for reason ('upstream_interrupted'
   * or 'reconnect'). Returns the gap to announce, or null when one for the
   * same reason is already pending (announce each loss once). A different
   * reason replaces the pending gap, keeping the last seq seen before the
   * first loss. After a reconnect the gateway's counters may have
   * restarted, so the next seq is a new baseline.
   * @param {string} stream
   * @param {'upstream_interrupted'|'reconnect'} reason
   */
  interrupt(stream, reason) {
    const prev = this.pending.get(stream);
    const lastSeq = prev ? prev.lastSeq : (this.last.get(stream) ?? null);
    if (reason === 'reconnect') this.last.delete(stream);
    if (prev?.reason === reason) return null;
    /** @type {import('./gateway-client.js').Gap} */
    const gap = { stream, reason, lastSeq, seq: null, missed: null };
    this.pending.set(stream, gap);
    return gap;
  }

  /**
   * The gateway dropped lost messages of stream after lastSeq for this
   * connection (a messages_lost notice, sent as soon as the connection
   * caught up, so lastSeq is normally the last seq received). Returns the
   * gap to announce, or null when a message received since already showed
   * the loss (its seq jumped past it). The next message carries the gap,
   * seq set.
   * @param {string} stream
   * @param {number} lastSeq
   * @param {number} lost
   */
  lost(stream, lastSeq, lost) {
    const seen = this.last.get(stream);
    const through = lastSeq + lost;
    if (seen !== undefined && seen >= through) return null;
    const prev = this.pending.get(stream);
    const from = prev ? prev.lastSeq : (seen ?? lastSeq);
    let missed = null;
    if (!prev || prev.reason === 'messages_lost') missed = from === null ? lost : through - from;
    /** @type {import('./gateway-client.js').Gap} */
    const gap = { stream, reason: 'messages_lost', lastSeq: from, seq: null, missed };
    this.pending.set(stream, gap);
    return gap;
  }

  /**
   * Records seq for stream. Returns the gap that precedes this message
   * (or null), and whether it is new (a plain seq jump, not announced
   * before by interrupt).
   * @param {string} stream
   * @param {number} seq
   * @returns {{gap: import('./gateway-client.js').Gap|null, isNew: boolean}}
   */
  observe(stream, seq) {
    const prev = this.last.get(stream);
    this.last.set(stream, seq);
    const pend = this.pending.get(stream);
    if (pend) {
      this.pending.delete(stream);
      if (pend.reason === 'messages_lost' && pend.lastSeq !== null && seq > pend.lastSeq) {
        // Counted from seq: a loss after the notice's is included.
        return { gap: { ...pend, seq, missed: seq - pend.lastSeq - 1 }, isNew: false };
      }
      // The gateway raises seq by at least 2 after an interruption even
      // when nothing was lost, so how many were lost is unknown.
      return { gap: { ...pend, seq }, isNew: false };
    }
    if (prev !== undefined && seq > prev + 1) {
      return { gap: { stream, reason: 'seq', lastSeq: prev, seq, missed: seq - prev - 1 }, isNew: true };
    }
    // seq <= prev only when the gateway restarted the stream's counter;
    // the message is a new baseline.
    return { gap: null, isNew: false };
  }
}

/**
 * Compares two stream entry IDs ("<ms>-<seq>", decimal): negative, zero or
 * positive as a is below, equal to or above b.
 * @param {string} a @param {string} b
 */
export function compareIds(a, b) {
  const [am, as] = a.split('-');
  const [bm, bs] = b.split('-');
  if (am.length !== bm.length) return am.length - bm.length;
  if (am !== bm) return am < bm ? -1 : 1;
  if (as.length !== bs.length) return as.length - bs.length;
  return as === bs ? 0 : as < bs ? -1 : 1;
}

/** The most per-channel positions kept for one durable pattern (the gateway takes 1,024 since keys). */
export const maxPositions = 1000;

/**
 * Where the client is in each durable stream (an exact channel or a
 * pattern): the last entry id per channel, and for a pattern the floor the
 * gateway handed out in "replayed" (the position of channels it never got
 * anything from). Exported for tests.
 */
export class Positions {
  constructor() {
    /** @type {Map<string, {last: Map<string, string>, floor: string|null, truncated: any, awaiting: boolean}>} */
    this.streams = new Map();
  }

  /** @param {string} stream */
  _of(stream) {
    let p = this.streams.get(stream);
    if (!p) this.streams.set(stream, (p = { last: new Map(), floor: null, truncated: null, awaiting: false }));
    return p;
  }

  /**
   * Records entry id of channel on stream. Returns false when the client
   * already had it (an id not above the channel's last): the frame is a
   * duplicate to drop.
   * @param {string} stream @param {string} channel @param {string} id
   */
  see(stream, channel, id) {
    const p = this._of(stream);
    const last = p.last.get(channel);
    if (last !== undefined && compareIds(id, last) <= 0) return false;
    // Least recently updated first: the oldest goes when full.
    p.last.delete(channel);
    p.last.set(channel, id);
    if (p.last.size > maxPositions) p.last.delete(p.last.keys().next().value);
    return true;
  }

  /**
   * The replay of stream ended: lastId is the seam (an exact channel) or
   * the floor (a pattern).
   * @param {string} stream @param {string} lastId
   */
  replayed(stream, lastId) {
    const p = this._of(stream);
    if (isPattern(stream)) p.floor = lastId;
    else {
      const last = p.last.get(stream);
      if (last === undefined || compareIds(last, lastId) < 0) p.last.set(stream, lastId);
    }
  }

  /**
   * The "since" of a subscribe naming channels: the positions of those
   * that are durable streams the client was in.
   * @param {readonly string[]} channels
   * @returns {Record<string, string>|null}
   */
  since(channels) {
    /** @type {Record<string, string>} */
    const out = {};
    let any = false;
    for (const ch of channels) {
      const p = this.streams.get(ch);
      if (!p) continue;
      if (isPattern(ch)) {
        if (p.floor !== null) out[ch] = p.floor;
        for (const [c, id] of p.last) out[c] = id;
        any = any || p.floor !== null || p.last.size > 0;
      } else if (p.last.has(ch)) {
        out[ch] = /** @type {string} */ (p.last.get(ch));
        any = true;
      }
    }
    return any ? out : null;
  }

  /** @param {string} stream */
  forget(stream) {
    this.streams.delete(stream);
  }
}

/** @param {string} name */
function isPattern(name) {
  return /[*?[]/.test(name);
}

let clientCount = 0;

/**
 * A connection to the gateway that survives disconnections.
 */
export class GatewayClient {
  /** @param {import('./gateway-client.js').GatewayClientOptions} [options] */
  constructor(options = {}) {
    this.options = options;
    this.url = options.url ?? defaultURL();
    /** @type {Required<import('./gateway-client.js').ReconnectOptions>|null} */
    this.reconnectOptions = options.reconnect === false ? null : { ...defaultReconnect, ...(options.reconnect === true ? {} : options.reconnect) };
    this.requestTimeout = options.requestTimeout ?? 10000;
    this.heartbeatInterval = options.heartbeatInterval ?? 20000;
    this.WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    this.random = options.random ?? Math.random;
    this.now = options.now ?? (() => Date.now());
    if (typeof this.WebSocketImpl !== 'function') throw new TypeError('gateway-client: no WebSocket implementation (pass options.WebSocket)');

    /** @type {import('./gateway-client.js').ConnectionState} */
    this._state = 'idle';
    this._id = ++clientCount;
    this._reqN = 0;
    /** @type {WebSocket|null} */
    this._ws = null;
    this._attempt = 0;
    this._openedAt = 0;
    this._everOpen = false;
    /** @type {ReturnType<typeof setTimeout>|null} */
    this._retryTimer = null;
    /** @type {ReturnType<typeof setInterval>|null} */
    this._hbTimer = null;
    this._lastRecv = 0;
    this._hbSentAt = 0;
    /** @type {Map<string, {kind: string, resolve: (f: any) => void, reject: (e: Error) => void, timer: any}>} */
    this._pending = new Map();
    /** @type {Set<Subscription>} */
    this._subs = new Set();
    /** @type {Map<string, Set<Subscription>>} stream → subscriptions naming it */
    this._byStream = new Map();
    this.gaps = new GapTracker();
    this.positions = new Positions();
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    /** @type {{resolve: () => void, reject: (e: Error) => void}[]} */
    this._connectWaiters = [];
  }

  /** @returns {import('./gateway-client.js').ConnectionState} */
  get state() {
    return this._state;
  }

  /** The subscriptions not yet ended. */
  get subscriptions() {
    return [...this._subs];
  }

  /**
   * Listen to 'state', 'open', 'close', 'message', 'gap' or 'error'.
   * Returns a function that removes the listener.
   * @param {string} type
   * @param {Function} fn
   */
  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  /** @param {string} type @param {Function} fn */
  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }

  /** @param {string} type @param {...any} args */
  _emit(type, ...args) {
    for (const fn of [...(this._listeners.get(type) ?? [])]) safeCall(fn, ...args);
  }

  /**
   * Opens the connection (once); resolves when it is open. With
   * reconnection on, a failed first attempt is retried like any other.
   * @returns {Promise<void>}
   */
  connect() {
    if (this._state === 'open') return Promise.resolve();
    if (this._state === 'closed') return Promise.reject(new ClosedError('closed', 'gateway-client: closed'));
    /** @type {Promise<void>} */
    const p = new Promise((resolve, reject) => this._connectWaiters.push({ resolve: () => resolve(), reject }));
    if (this._state === 'idle') void this._dial();
    return p;
  }

  /**
   * Closes for good: no reconnection; pending requests are rejected with
   * ClosedError.
   * @param {number} [code]
   * @param {string} [reason]
   */
  close(code = 1000, reason = '') {
    if (this._state === 'closed') return;
    clearTimeout(this._retryTimer ?? undefined);
    this._retryTimer = null;
    const ws = this._ws;
    this._teardown();
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        // Already closing.
      }
    }
    this._giveUp(new ClosedError('closed', 'gateway-client: closed'), code, reason);
    this._emit('close', { code, reason, wasClean: true });
  }

  /**
   * Subscribes to channels (exact names or patterns) and resolves with the
   * Subscription once the gateway acknowledged it: rejected with the typed
   * error when refused (ForbiddenError…). Subscribing while disconnected
   * is fine: it is sent when the connection opens. Connects if needed.
   * @param {string|string[]} channels
   * @param {(m: import('./gateway-client.js').Message) => void} onMessage
   * @param {import('./gateway-client.js').SubscribeOptions} [options]
   * @returns {Promise<Subscription>}
   */
  subscribe(channels, onMessage, options = {}) {
    const list = typeof channels === 'string' ? [channels] : [...(channels ?? [])];
    if (list.length === 0 || list.some((c) => typeof c !== 'string' || c === '')) {
      return Promise.reject(new TypeError('gateway-client: channels must be non-empty strings'));
    }
    if (typeof onMessage !== 'function') return Promise.reject(new TypeError('gateway-client: onMessage must be a function'));
    if (this._state === 'closed') return Promise.reject(new ClosedError('closed', 'gateway-client: closed'));
    const sub = new Subscription(this, [...new Set(list)], onMessage, options);
    this._subs.add(sub);
    if (this._state === 'open') this._sendSubscribe(sub);
    else if (this._state === 'idle') this.connect().catch(() => {});
    return sub.ready;
  }

  /**
   * Ends a subscription (same as sub.unsubscribe()). Channels still named
   * by another subscription stay subscribed at the gateway.
   * @param {Subscription} sub
   */
  unsubscribe(sub) {
    return sub.unsubscribe();
  }

  /**
   * Round trip through the gateway; resolves with the milliseconds taken.
   * @returns {Promise<number>}
   */
  async ping() {
    const t0 = this.now();
    await this._request({ action: 'ping' }, 'ping');
    return this.now() - t0;
  }

  // --- connection ---------------------------------------------------------

  async _dial() {
    if (this._state === 'idle') this._setState('connecting', { attempt: 0 });
    let token;
    try {
      token = typeof this.options.token === 'function' ? await this.options.token() : this.options.token;
    } catch (err) {
      // The application's token source failed: try again later.
      if (this._state !== 'closed') this._scheduleReconnect(1006, `token: ${err}`);
      return;
    }
    if (this._state === 'closed') return;
    let url = this.url;
    if (token) url += (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token);
    let ws;
    try {
      ws = new this.WebSocketImpl(url);
    } catch (err) {
      // A malformed URL or a blocked port never gets better.
      for (const w of this._connectWaiters.splice(0)) w.reject(err instanceof Error ? err : new Error(String(err)));
      this.close(1000, 'cannot connect');
      return;
    }
    this._ws = ws;
    ws.onopen = () => this._onOpen(ws);
    ws.onmessage = (ev) => this._onMessage(ws, ev);
    ws.onclose = (ev) => this._onClose(ws, ev.code, ev.reason);
    // onerror is always followed by onclose, which does the work.
    ws.onerror = () => {};
  }

  /** @param {WebSocket} ws */
  _onOpen(ws) {
    if (ws !== this._ws) return;
    const reconnected = this._everOpen;
    this._everOpen = true;
    this._openedAt = this.now();
    this._lastRecv = this._openedAt;
    this._hbSentAt = 0;
    this._setState('open', { reconnected });
    if (this.heartbeatInterval > 0) this._hbTimer = setInterval(() => this._heartbeat(), this.heartbeatInterval);
    for (const sub of this._subs) this._sendSubscribe(sub);
    for (const w of this._connectWaiters.splice(0)) w.resolve();
    this._emit('open', { reconnected });
  }

  /** @param {WebSocket} ws @param {number} code @param {string} reason */
  _onClose(ws, code, reason) {
    if (ws !== this._ws || this._state === 'closed') return;
    const wasOpen = this._state === 'open';
    this._teardown();
    this._lost(wasOpen, code, reason);
  }

  /**
   * The socket is gone (already detached by _teardown): settle what
   * cannot survive it, announce the gaps, and reconnect or give up.
   * @param {boolean} wasOpen @param {number} code @param {string} reason
   */
  _lost(wasOpen, code, reason) {
    // A connection that stayed up for a while resets the backoff; one
    // that is accepted and dropped at once (an expired token, a full
    // gateway) keeps climbing it.
    if (wasOpen && this.now() - this._openedAt >= (this.reconnectOptions?.stableAfter ?? 0)) this._attempt = 0;
    for (const [id, p] of this._pending) {
      // Unsubscribing is achieved by the disconnection itself (the next
      // connection does not resubscribe); a ping has no answer to wait
      // for; subscriptions are sent again on the next connection.
      clearTimeout(p.timer);
      if (p.kind === 'unsubscribe') p.resolve(null);
      else if (p.kind === 'ping') p.reject(new ClosedError('closed', 'gateway-client: connection lost'));
      this._pending.delete(id);
    }
    if (wasOpen) {
      const streams = new Set();
      for (const sub of this._subs) {
        sub._connectionLost();
        if (sub._everActive) for (const ch of sub.channels) streams.add(ch);
      }
      for (const stream of streams) {
        const p = this.positions.streams.get(stream);
        if (p) {
          // A durable stream: the resubscription replays what was
          // missed; only an incomplete replay is a gap.
          p.awaiting = true;
          p.truncated = null;
          this.gaps.forget(stream);
          continue;
        }
        this._announce(this.gaps.interrupt(stream, 'reconnect'));
      }
    }
    this._emit('close', { code, reason, wasClean: code === 1000 });
    if (!this.reconnectOptions) {
      this._giveUp(new ClosedError('closed', `gateway-client: connection closed (${code})`), code, reason);
      return;
    }
    this._scheduleReconnect(code, reason);
  }

  /** @param {Error} err @param {number} code @param {string} reason */
  _giveUp(err, code, reason) {
    for (const w of this._connectWaiters.splice(0)) w.reject(err);
    this._failPending(err);
    for (const sub of [...this._subs]) sub._end(err);
    this._setState('closed', { code, reason });
  }

  /** @param {number} code @param {string} reason */
  _scheduleReconnect(code, reason) {
    const ro = /** @type {Required<import('./gateway-client.js').ReconnectOptions>} */ (this.reconnectOptions);
    if (this._attempt >= ro.maxAttempts) {
      this._giveUp(new ClosedError('closed', 'gateway-client: gave up reconnecting'), code, reason);
      return;
    }
    const delay = backoffDelay(this._attempt, ro, this.random);
    this._attempt++;
    this._setState('reconnecting', { attempt: this._attempt, delay, code, reason });
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (this._state !== 'closed') void this._dial();
    }, delay);
  }

  _teardown() {
    clearInterval(this._hbTimer ?? undefined);
    this._hbTimer = null;
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  }

  /**
   * Application-level liveness: a connection silent for two heartbeat
   * intervals (no reply to our ping either) is dropped and redialled,
   * which a half-open TCP connection (a laptop that slept) needs.
   */
  _heartbeat() {
    const ws = this._ws;
    if (!ws || this._state !== 'open') return;
    const now = this.now();
    if (this._hbSentAt && now - this._hbSentAt >= this.heartbeatInterval) {
      // Not waiting for onclose: on a dead link the browser may take
      // minutes to give up the closing handshake.
      this._teardown();
      try {
        ws.close(4000, 'heartbeat timeout');
      } catch {
        // Closing anyway.
      }
      this._lost(true, 4000, 'heartbeat timeout');
      return;
    }
    if (!this._hbSentAt && now - this._lastRecv >= this.heartbeatInterval) {
      this._hbSentAt = now;
      this._send({ action: 'ping', requestId: `hb-${this._id}-${++this._reqN}` });
    }
  }

  /** @param {WebSocket} ws @param {MessageEvent} ev */
  _onMessage(ws, ev) {
    if (ws !== this._ws) return;
    this._lastRecv = this.now();
    this._hbSentAt = 0;
    let f;
    try {
      f = JSON.parse(typeof ev.data === 'string' ? ev.data : '');
    } catch {
      return;
    }
    if (!f || typeof f !== 'object') return;
    switch (f.type) {
      case 'data':
        this._onData(f);
        return;
      case 'replayed':
        this._onReplayed(f);
        return;
      case 'subscribed':
      case 'unsubscribed':
      case 'pong':
        this._settle(f.requestId, f, null);
        return;
      case 'error': {
        const err = errorFromFrame(f);
        if (f.code === ErrorCode.ReplayTruncated && typeof f.stream === 'string') {
          // Before the replay it is about: noted, announced at its end.
          const p = this.positions.streams.get(f.stream) ?? this.positions._of(f.stream);
          p.truncated = { reason: f.reason ?? null, since: f.since ?? null, from: f.from ?? null, channels: err.channels };
          return;
        }
        if (f.code === ErrorCode.UpstreamInterrupted) {
          for (const stream of err.channels) this._announce(this.gaps.interrupt(stream, 'upstream_interrupted'));
        }
        if (f.code === ErrorCode.MessagesLost && Array.isArray(f.streams)) {
          for (const s of f.streams) {
            // Only streams still followed: a notice may trail an unsubscribe.
            if (!s || typeof s.stream !== 'string' || !this._byStream.has(s.stream)) continue;
            if (!Number.isSafeInteger(s.lastSeq) || !Number.isSafeInteger(s.lost) || s.lost <= 0) continue;
            this._announce(this.gaps.lost(s.stream, s.lastSeq, s.lost));
          }
        }
        if (!this._settle(f.requestId, null, err)) this._emit('error', err);
        return;
      }
    }
  }

  /** @returns {boolean} whether a pending request took the reply */
  _settle(requestId, frame, err) {
    if (requestId === undefined || requestId === null) return false;
    const key = String(requestId);
    const p = this._pending.get(key);
    if (!p) return false;
    this._pending.delete(key);
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(frame);
    return true;
  }

  _onData(f) {
    const stream = f.pattern || f.channel;
    const replay = f.replay === true;
    if (typeof stream !== 'string' || (typeof f.seq !== 'number' && !replay)) return;
    const subs = [...(this._byStream.get(stream) ?? [])].filter((s) => s.state === 'active');
    if (subs.length === 0) return; // a late frame for something we left
    // A durable entry the client has already had (a replay overlapping
    // what it got, a frame of an earlier subscription) is dropped.
    if (typeof f.id === 'string' && !this.positions.see(stream, f.channel, f.id)) return;
    let gap = null;
    if (!replay) {
      const o = this.gaps.observe(stream, f.seq);
      gap = o.gap;
      if (gap && o.isNew) this._announce(gap);
    }
    /** @type {import('./gateway-client.js').Message} */
    const m = { stream, channel: f.channel, pattern: f.pattern, seq: replay ? null : f.seq, data: f.data, timestamp: f.timestamp, gap };
    if (typeof f.id === 'string') m.id = f.id;
    if (replay) m.replay = true;
    this._emit('message', m);
    for (const sub of subs) safeCall(sub.onMessage, m);
  }

  /**
   * The end of a durable stream's replay: its position, a new seq
   * baseline, and what a reconnect cost: 'recovered' when the replay was
   * complete, a 'replay_truncated' gap when not.
   * @param {any} f
   */
  _onReplayed(f) {
    const stream = f.channel;
    if (typeof stream !== 'string' || typeof f.lastId !== 'string') return;
    if (!this._byStream.has(stream)) return;
    this.positions.replayed(stream, f.lastId);
    const p = /** @type {any} */ (this.positions.streams.get(stream));
    this.gaps.forget(stream);
    const count = typeof f.count === 'number' ? f.count : 0;
    if (p.truncated) {
      const t = p.truncated;
      p.truncated = null;
      /** @type {import('./gateway-client.js').Gap} */
      const gap = { stream, reason: 'replay_truncated', lastSeq: null, seq: null, missed: null, replayReason: t.reason, since: t.since, from: t.from, channels: t.channels };
      this._announce(gap);
    }
    if (p.awaiting || count > 0) this._emit('recovered', { stream, count });
    p.awaiting = false;
  }

  /** @param {import('./gateway-client.js').Gap|null} gap */
  _announce(gap) {
    if (!gap) return;
    this._emit('gap', gap);
    for (const sub of this._byStream.get(gap.stream) ?? []) if (sub.options.onGap) safeCall(sub.options.onGap, gap);
  }

  // --- requests -----------------------------------------------------------

  /** @param {object} msg */
  _send(msg) {
    const ws = this._ws;
    if (!ws || this._state !== 'open') return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  /**
   * Sends msg with a fresh requestId; resolves with the reply frame.
   * @param {Record<string, any>} msg
   * @param {string} kind
   */
  _request(msg, kind) {
    const requestId = `c${this._id}-${++this._reqN}`;
    return new Promise((resolve, reject) => {
      if (!this._send({ ...msg, requestId })) {
        reject(new ClosedError('closed', 'gateway-client: not connected'));
        return;
      }
      const timer = setTimeout(() => {
        this._pending.delete(requestId);
        reject(new TimeoutError('timeout', `gateway-client: no reply to ${msg.action} within ${this.requestTimeout} ms`, { requestId }));
      }, this.requestTimeout);
      this._pending.set(requestId, { kind, resolve, reject, timer });
    });
  }

  /** @param {Error} err */
  _failPending(err) {
    for (const p of this._pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this._pending.clear();
  }

  /** @param {Subscription} sub */
  _sendSubscribe(sub) {
    const gen = ++sub._gen;
    sub.state = 'pending';
    /** @type {Record<string, any>} */
    const req = { action: 'subscribe', channels: sub.channels };
    // Positions only for the streams this request starts: the gateway
    // refuses "since" on a channel the connection already follows.
    const since = this.positions.since(sub.channels.filter((ch) => !this._heldByOther(ch, sub)));
    if (since) req.since = since;
    this._request(req, 'subscribe').then(
      () => {
        if (sub.state === 'closed' || gen !== sub._gen) return;
        for (const ch of sub.channels) {
          // A stream nobody else here follows starts a new baseline: the
          // gateway restarts seq when it subscribes upstream afresh.
          if (!this._heldByOther(ch, sub)) {
            if (!this.gaps.pending.has(ch)) this.gaps.forget(ch);
          }
          let set = this._byStream.get(ch);
          if (!set) this._byStream.set(ch, (set = new Set()));
          set.add(sub);
        }
        sub._activated();
      },
      (err) => {
        // A subscribe request lost with its connection is never settled:
        // the subscription is sent again on the next one (new _gen).
        if (sub.state === 'closed' || gen !== sub._gen) return;
        if (since && err instanceof BadRequestError) {
          // The gateway will not resume these positions (its durable
          // channels changed): start afresh, told as a reconnect gap.
          for (const ch of sub.channels) {
            if (!this.positions.streams.has(ch)) continue;
            this.positions.forget(ch);
            this._announce(this.gaps.interrupt(ch, 'reconnect'));
          }
          this._sendSubscribe(sub);
          return;
        }
        if (sub._everActive) this._emit('error', err); // a resubscription refused
        const orphans = this._drop(sub, err);
        if (err instanceof TimeoutError && orphans.length > 0) {
          // The gateway may still apply it late: undo.
          this._request({ action: 'unsubscribe', channels: orphans }, 'unsubscribe').catch(() => {});
        }
      },
    );
  }

  /** @param {string} ch @param {Subscription} except */
  _heldByOther(ch, except) {
    for (const s of this._byStream.get(ch) ?? []) if (s !== except && s.state === 'active') return true;
    return false;
  }

  /**
   * Removes sub and unsubscribes at the gateway the channels no other
   * subscription names.
   * @param {Subscription} sub
   * @param {Error} err
   */
  _drop(sub, err) {
    if (!this._subs.delete(sub)) return [];
    sub._end(err);
    for (const ch of sub.channels) {
      const set = this._byStream.get(ch);
      set?.delete(sub);
      if (set && set.size === 0) this._byStream.delete(ch);
    }
    const orphans = sub.channels.filter((ch) => ![...this._subs].some((s) => s.channels.includes(ch)));
    for (const ch of orphans) {
      if (this._byStream.has(ch)) continue;
      this.gaps.forget(ch);
      this.positions.forget(ch);
    }
    return orphans;
  }

  /** @param {Subscription} sub */
  async _unsubscribe(sub) {
    const orphans = this._drop(sub, new ClosedError('closed', 'gateway-client: unsubscribed before the gateway acknowledged'));
    if (orphans.length === 0 || this._state !== 'open') return;
    await this._request({ action: 'unsubscribe', channels: orphans }, 'unsubscribe');
  }

  /** @param {import('./gateway-client.js').ConnectionState} state @param {object} [info] */
  _setState(state, info = {}) {
    this._state = state;
    this._emit('state', state, info);
  }
}

/**
 * One subscribe call: its channels, its callback, its lifecycle
 * ('pending' until acknowledged, again while reconnecting; 'active';
 * 'closed' once unsubscribed or refused).
 */
export class Subscription {
  /**
   * @param {GatewayClient} client
   * @param {string[]} channels
   * @param {(m: any) => void} onMessage
   * @param {import('./gateway-client.js').SubscribeOptions} options
   */
  constructor(client, channels, onMessage, options) {
    this.client = client;
    this.channels = Object.freeze(channels);
    this.onMessage = onMessage;
    this.options = options;
    /** @type {'pending'|'active'|'closed'} */
    this.state = 'pending';
    /** Number of acknowledgements received (1 + resubscriptions). */
    this.acks = 0;
    this._gen = 0;
    this._everActive = false;
    /** @type {Promise<Subscription>} */
    this.ready = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    // A refusal nobody awaits must not be an unhandled rejection.
    this.ready.catch(() => {});
  }

  /** Ends the subscription; resolves once the gateway acknowledged. */
  unsubscribe() {
    if (this.state === 'closed') return Promise.resolve();
    return this.client._unsubscribe(this);
  }

  _activated() {
    this.state = 'active';
    this.acks++;
    this._everActive = true;
    this._resolve?.(this);
    this.options.onStateChange && safeCall(this.options.onStateChange, this.state);
  }

  _connectionLost() {
    if (this.state !== 'active') return;
    this.state = 'pending';
    this.options.onStateChange && safeCall(this.options.onStateChange, this.state);
  }

  /** @param {Error} err */
  _end(err) {
    if (this.state === 'closed') return;
    const wasActive = this._everActive;
    this.state = 'closed';
    if (!wasActive) this._reject?.(err);
    if (!(err instanceof ClosedError) && this.options.onError) safeCall(this.options.onError, err);
    this.options.onStateChange && safeCall(this.options.onStateChange, this.state);
  }
}

function defaultURL() {
  const loc = globalThis.location;
  if (!loc || !loc.host) throw new TypeError('gateway-client: options.url is required outside a page');
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}

/**
 * Calls an application callback; an exception in it must not break the
 * client's dispatch, yet should still reach the console.
 * @param {Function} fn
 * @param {...any} args
 */
function safeCall(fn, ...args) {
  try {
    fn(...args);
  } catch (err) {
    if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
    else
      queueMicrotask(() => {
        throw err;
      });
  }
}
