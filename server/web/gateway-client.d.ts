// Types for gateway-client.js, the browser client of the Redis → WebSocket
// gateway. The wire protocol is described in docs/PROTOCOL.md.

/** idle → connecting → open ⇄ reconnecting; closed is final. */
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export declare const ErrorCode: Readonly<{
  BadRequest: 'bad_request';
  UnknownAction: 'unknown_action';
  Forbidden: 'forbidden';
  TooManyChannels: 'too_many_channels';
  TooManyWildcards: 'too_many_wildcards';
  RateLimited: 'rate_limited';
  StreamRateLimited: 'stream_rate_limited';
  ServerBusy: 'server_busy';
  UpstreamRefused: 'upstream_refused';
  UpstreamInterrupted: 'upstream_interrupted';
  UnsupportedData: 'unsupported_data';
  MessagesLost: 'messages_lost';
  ReplayTruncated: 'replay_truncated';
  Timeout: 'timeout';
  Closed: 'closed';
}>;

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

/** An error frame from the gateway, or a request that could not complete. */
export declare class GatewayError extends Error {
  constructor(code: string, message: string, detail?: { channels?: string[]; requestId?: string | number | null });
  /** The protocol's error code (ErrorCode), or a newer one this client does not know. */
  readonly code: ErrorCodeValue | string;
  /** The channels concerned (refused ones for forbidden; affected ones for upstream_interrupted and messages_lost). */
  readonly channels: string[];
  readonly requestId: string | number | null;
}
export declare class BadRequestError extends GatewayError {}
export declare class UnknownActionError extends GatewayError {}
export declare class ForbiddenError extends GatewayError {}
export declare class TooManyChannelsError extends GatewayError {}
export declare class TooManyWildcardsError extends GatewayError {}
/** Too many client messages; the gateway closes the connection (1008) if it goes on. */
export declare class RateLimitedError extends GatewayError {}
/** Too many new channels at once (MAX_NEW_STREAMS_PER_SECOND); retry a little later. */
export declare class StreamRateLimitedError extends GatewayError {}
/** The gateway refused the request for its own sake (MAX_STREAMS, MAX_PENDING_REQUESTS); nothing was done, retry later. */
export declare class ServerBusyError extends GatewayError {}
/** Redis (or the gateway, for a pattern over sharded channels) refused these channels; sent unprompted, the gateway dropped them. */
export declare class UpstreamRefusedError extends GatewayError {}
/** The gateway's link to Redis broke; the listed streams may have lost messages. */
export declare class UpstreamInterruptedError extends GatewayError {}
export declare class UnsupportedDataError extends GatewayError {}
/** The gateway dropped messages for this connection (it did not read fast enough); channels lists the streams. */
export declare class MessagesLostError extends GatewayError {}
/** A durable stream's replay was incomplete (more than MAX_REPLAY missed, or trimmed). */
export declare class ReplayTruncatedError extends GatewayError {}
/** No reply within GatewayClientOptions.requestTimeout. */
export declare class TimeoutError extends GatewayError {}
/** The client was closed, the connection was lost (ping), or the subscription ended before its ack. */
export declare class ClosedError extends GatewayError {}

/** The typed error (ForbiddenError…) for an error frame. */
export declare function errorFromFrame(frame: {
  code?: string;
  message?: string;
  channels?: string[];
  streams?: { stream: string; lastSeq?: number; lost?: number }[];
  requestId?: string | number;
}): GatewayError;

export interface ReconnectOptions {
  /** First delay in ms (default 500). */
  initialDelay?: number;
  /** Ceiling of the exponential step in ms (default 15000). */
  maxDelay?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /** Share of the step taken off at random, 0..1 (default 0.5). */
  jitter?: number;
  /** Give up (state closed) after this many failed attempts in a row (default Infinity). */
  maxAttempts?: number;
  /** A connection open at least this long (ms) resets the backoff (default 10000). */
  stableAfter?: number;
}

export declare const defaultReconnect: Readonly<Required<ReconnectOptions>>;

/** min(maxDelay, initialDelay·factor^attempt) less a random share of up to jitter of it. */
export declare function backoffDelay(attempt: number, opts?: ReconnectOptions, random?: () => number): number;

export interface GatewayClientOptions {
  /** ws:// or wss:// URL of the endpoint; default: /ws on the page's host. */
  url?: string;
  /** Token (API key or JWT), sent as ?token=; a function is called before every connection (refresh it there). */
  token?: string | null | (() => string | null | undefined | Promise<string | null | undefined>);
  /** false disables reconnection; default on with defaultReconnect. */
  reconnect?: boolean | ReconnectOptions;
  /** Milliseconds to wait for the reply to a request (default 10000). */
  requestTimeout?: number;
  /** Application ping after this much silence (ms); no reply within as long again drops and redials. 0 disables (default 20000). */
  heartbeatInterval?: number;
  /** WebSocket implementation (default globalThis.WebSocket). */
  WebSocket?: new (url: string) => WebSocket;
  /** Random source for the backoff jitter, uniform in [0, 1) (tests). */
  random?: () => number;
  /** Clock in ms (tests). */
  now?: () => number;
}

/**
 * Where messages may have been lost on one stream (an exact channel, or a
 * pattern for pattern deliveries).
 *  - 'seq': seq jumped (the gateway dropped frames for a slow reader);
 *    missed is the number lost.
 *  - 'messages_lost': the gateway said it dropped messages for this
 *    connection (a slow reader), as soon as it caught up, without waiting
 *    for the stream's next message; missed is the number lost.
 *  - 'upstream_interrupted': the gateway's Redis link broke.
 *  - 'reconnect': this client's connection was lost; seq restarts from a
 *    new baseline on the new connection. Not for a durable stream, whose
 *    resubscription replays what was missed (event 'recovered').
 *  - 'replay_truncated': a durable stream's replay after a reconnect was
 *    incomplete: replayReason says why, from where the replay started.
 * Announced once per reason, when detected (seq null but for 'seq');
 * the first message after it carries the latest in Message.gap, seq set.
 */
export interface Gap {
  stream: string;
  reason: 'seq' | 'messages_lost' | 'upstream_interrupted' | 'reconnect' | 'replay_truncated';
  /** Last seq received before the gap, if any. */
  lastSeq: number | null;
  /** seq of the first message after the gap; null until it arrives. */
  seq: number | null;
  /** Messages lost when known (reasons 'seq' and 'messages_lost'), else null. */
  missed: number | null;
  /** 'replay_truncated' only: max_replay, trimmed or reset. */
  replayReason?: string | null;
  /** 'replay_truncated' only: the position resumed from, and the first entry replayed. */
  since?: string | null;
  from?: string | null;
  /** 'replay_truncated' only: the channels with missing entries. */
  channels?: string[];
}

export interface Message<T = unknown> {
  /** pattern ?? channel: what seq counts for. */
  stream: string;
  channel: string;
  /** The subscribed pattern, for pattern deliveries. */
  pattern?: string;
  /** null for a replayed entry of a durable stream. */
  seq: number | null;
  /** A durable stream's entry ID (its position). */
  id?: string;
  /** A durable stream's entry replayed after a (re)subscription. */
  replay?: true;
  /** The Redis payload: parsed JSON, or a string when it was not JSON. */
  data: T;
  /** RFC 3339 UTC time the gateway received it from Redis. */
  timestamp: string;
  /** The gap just before this message, or null. */
  gap: Gap | null;
}

export interface SubscribeOptions {
  /** Gaps on this subscription's streams. */
  onGap?: (gap: Gap) => void;
  /** A refusal of this subscription (also after a reconnect, e.g. forbidden by a new token). */
  onError?: (err: GatewayError) => void;
  onStateChange?: (state: Subscription['state']) => void;
}

export declare class Subscription {
  readonly client: GatewayClient;
  readonly channels: readonly string[];
  /** pending until acknowledged (and again while reconnecting), active, closed once ended or refused. */
  readonly state: 'pending' | 'active' | 'closed';
  /** Acknowledgements received: 1, plus one per resubscription after a reconnect. */
  readonly acks: number;
  /** Resolves on the first ack; rejects with the typed refusal. */
  readonly ready: Promise<Subscription>;
  /** Ends the subscription; channels still named by another subscription stay subscribed. */
  unsubscribe(): Promise<void>;
}

export interface ClientEvents {
  state: (state: ConnectionState, info: { attempt?: number; delay?: number; code?: number; reason?: string; reconnected?: boolean }) => void;
  open: (info: { reconnected: boolean }) => void;
  close: (info: { code: number; reason: string; wasClean: boolean }) => void;
  message: (m: Message) => void;
  gap: (gap: Gap) => void;
  /** A durable stream's replay ended; count entries were replayed. */
  recovered: (info: { stream: string; count: number }) => void;
  /** Error frames not tied to a request (upstream_interrupted, messages_lost, rate_limited), and refused resubscriptions. */
  error: (err: GatewayError) => void;
}

/** Per-stream seq bookkeeping used by the client (exported for tests and custom transports). */
export declare class GapTracker {
  forget(stream: string): void;
  interrupt(stream: string, reason: 'upstream_interrupted' | 'reconnect'): Gap | null;
  /** A messages_lost notice: lost messages after lastSeq; null when already seen as a seq jump. */
  lost(stream: string, lastSeq: number, lost: number): Gap | null;
  observe(stream: string, seq: number): { gap: Gap | null; isNew: boolean };
}

/** Compares two stream entry IDs: negative, zero or positive. */
export declare function compareIds(a: string, b: string): number;

/** The client's positions in durable streams (exported for tests). */
export declare class Positions {
  see(stream: string, channel: string, id: string): boolean;
  replayed(stream: string, lastId: string): void;
  since(channels: readonly string[]): Record<string, string> | null;
  forget(stream: string): void;
}

export declare class GatewayClient {
  constructor(options?: GatewayClientOptions);
  readonly url: string;
  readonly state: ConnectionState;
  readonly subscriptions: Subscription[];
  readonly gaps: GapTracker;
  readonly positions: Positions;
  /** Resolves once open (retrying with backoff unless reconnect is false). */
  connect(): Promise<void>;
  /** Closes for good: no reconnection; pending requests reject with ClosedError. */
  close(code?: number, reason?: string): void;
  /**
   * Subscribes (connecting if needed); resolves once acknowledged, rejects
   * with ForbiddenError, TooManyChannelsError… Resubscribed automatically
   * after every reconnect.
   */
  subscribe<T = unknown>(
    channels: string | string[],
    onMessage: (m: Message<T>) => void,
    options?: SubscribeOptions,
  ): Promise<Subscription>;
  unsubscribe(sub: Subscription): Promise<void>;
  /** Round trip through the gateway in ms. */
  ping(): Promise<number>;
  on<K extends keyof ClientEvents>(type: K, fn: ClientEvents[K]): () => void;
  off<K extends keyof ClientEvents>(type: K, fn: ClientEvents[K]): void;
}
