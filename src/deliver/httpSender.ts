import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, buildConnector, type Dispatcher } from 'undici';
import { settleBy } from '../deadline.js';
import { coerceError, DeliveryError } from '../errors.js';
import type { AttemptFailureReason, AttemptOutcome, HttpSender } from './types.js';
import { compileAddressPolicy, type AddressCheck, type AddressPolicy } from './addressPolicy.js';

/**
 * The one place that talks HTTP to receivers: signing headers, timeouts, redirects refused, the address guard.
 *
 * - One undici Agent for the process: keep-alive, no pipelining, `connectionsPerOrigin` sockets per
 *   origin; redirects are never followed (no redirect interceptor).
 * - SSRF guard: IP-literal hosts are judged before anything is dispatched; host names are resolved by
 *   our own connector, every address is judged, only an address that passed is dialled (TLS keeps the
 *   host name as SNI), and the socket's remoteAddress is judged again once connected. DNS is thus
 *   resolved once per new connection, not once per request, and rebinding cannot get around it.
 * - One deadline per attempt (`timeoutMs`) covers connect, headers and reading the capped body; undici's
 *   own timeouts (about 1 s resolution) are only a backstop.
 * - At most `maxResponseBytes` of a response body are read; past that the connection is destroyed.
 */
export interface HttpSenderOptions {
  timeoutMs: number;
  maxResponseBytes: number;
  connectionsPerOrigin: number;
  policy: AddressPolicy;
  /** injectable for tests: resolves a host name to addresses */
  lookup?: (hostname: string) => Promise<Array<{ address: string; family: 4 | 6 }>>;
}

export type { AttemptOutcome, HttpSender } from './types.js';

/** Raised by the connector when no address of the target may be dialled. */
export class BlockedAddressError extends DeliveryError {
  constructor(message: string) {
    super('ERR_BLOCKED_ADDRESS', message, { retryable: false });
  }
}

/** Raised into the request when the attempt's deadline passes. */
class AttemptTimeoutError extends Error {
  readonly code = 'ERR_ATTEMPT_TIMEOUT';
}

/** Raised into the request to drop a connection whose response body passed the cap. */
class ResponseCapError extends Error {
  readonly code = 'ERR_RESPONSE_CAPPED';
}

/**
 * One attempt, as an undici dispatch handler: lighter than `request()` (no body stream, no
 * AbortSignal listeners), and the outcome is settled exactly once, by whichever comes first: the end
 * of the (capped) response, an error, or the deadline. The deadline settles even while undici is
 * still connecting or resolving; the request is then aborted as soon as undici hands it a controller.
 */
class Attempt implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined;
  private statusCode: number | undefined;
  private retryAfter: string | string[] | undefined;
  private bytesRead = 0;
  private settled = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly started: number,
    private readonly timeoutMs: number,
    private readonly maxResponseBytes: number,
    private readonly resolve: (outcome: AttemptOutcome) => void,
  ) {
    this.timer = setTimeout(() => this.onDeadline(), timeoutMs);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    // Dispatched after the deadline (it waited for a connection): do not send it at all.
    if (this.settled) controller.abort(new AttemptTimeoutError('attempt deadline passed'));
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    if (statusCode < 200) return; // 1xx informational: the real status follows
    this.statusCode = statusCode;
    this.retryAfter = headers['retry-after'];
    const length = Number(headers['content-length']);
    if (length > this.maxResponseBytes) this.cap(controller); // announced too big: read none of it
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.bytesRead += chunk.length;
    if (this.bytesRead > this.maxResponseBytes) this.cap(controller);
  }

  onResponseEnd(): void {
    this.settle(classifyStatus(this.statusCode ?? 0, this.retryAfter, this.started));
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, err: Error): void {
    this.settle(classifyError(err, this.started, this.statusCode));
  }

  /** Status known, body too big: settle by the status, and destroy the connection rather than drain it. */
  private cap(controller: Dispatcher.DispatchController): void {
    this.settle(classifyStatus(this.statusCode ?? 0, this.retryAfter, this.started));
    controller.abort(new ResponseCapError('response body larger than the cap'));
  }

  private onDeadline(): void {
    const message =
      this.statusCode === undefined
        ? `no response within ${this.timeoutMs} ms`
        : `HTTP ${this.statusCode} but the body did not end within ${this.timeoutMs} ms`;
    this.settle(fail('timeout', message, this.started, this.statusCode));
    this.controller?.abort(new AttemptTimeoutError(message));
  }

  private settle(outcome: AttemptOutcome): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    this.resolve(outcome);
  }
}

interface Target {
  origin: string;
  path: string;
  /** Set when the host is an IP literal the policy refuses: nothing is dispatched. */
  blockedReason: string | undefined;
}

type LookupFn = NonNullable<HttpSenderOptions['lookup']>;
type ConnectOptions = buildConnector.Options;
type ConnectCallback = buildConnector.Callback;

// Parsed targets, keyed by URL text: webhooks are few, so parsing and judging happen once per URL.
const TARGET_CACHE_MAX = 10_000;
// undici's own timeouts only catch what our deadline somehow missed.
const BACKSTOP_SLACK_MS = 1_000;
const KEEP_ALIVE_TIMEOUT_MS = 4_000;

const defaultLookup: LookupFn = async (hostname) => {
  const addresses = await dnsLookup(hostname, { all: true, verbatim: true });
  return addresses.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));
};

export function createHttpSender(options: HttpSenderOptions): HttpSender {
  const { timeoutMs, maxResponseBytes } = options;
  if (!(timeoutMs > 0)) throw new RangeError('timeoutMs must be a positive number');
  if (!(maxResponseBytes >= 0)) throw new RangeError('maxResponseBytes must be zero or more');
  const check = compileAddressPolicy(options.policy);
  const lookup = options.lookup ?? defaultLookup;
  const targets = new Map<string, Target | { invalid: string }>();

  const agent = new Agent({
    connections: options.connectionsPerOrigin,
    pipelining: 1,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    headersTimeout: timeoutMs + BACKSTOP_SLACK_MS,
    bodyTimeout: timeoutMs + BACKSTOP_SLACK_MS,
    connect: guardedConnector(check, lookup, timeoutMs, buildConnector({ timeout: timeoutMs })),
  });

  function target(url: string): Target | { invalid: string } {
    let cached = targets.get(url);
    if (cached === undefined) {
      cached = parseTarget(url, check);
      if (targets.size >= TARGET_CACHE_MAX) targets.clear();
      targets.set(url, cached);
    }
    return cached;
  }

  function send(url: string, body: string, headers: Record<string, string>): Promise<AttemptOutcome> {
    const started = performance.now();
    const t = target(url);
    if ('invalid' in t) return Promise.resolve(fail('invalid_url', t.invalid, started));
    if (t.blockedReason !== undefined) return Promise.resolve(fail('blocked_address', t.blockedReason, started));
    return new Promise<AttemptOutcome>((resolve) => {
      const attempt = new Attempt(started, timeoutMs, maxResponseBytes, resolve);
      try {
        agent.dispatch({ origin: t.origin, path: t.path, method: 'POST', headers, body }, attempt);
      } catch (caught) {
        attempt.onResponseError(undefined, coerceError(caught));
      }
    });
  }

  let closing: Promise<void> | undefined;
  return {
    send,
    /**
     * Waits for attempts in flight (each ends by its deadline), then closes every connection; past
     * `deadline` (epoch ms) the rest are cut. Idempotent.
     */
    close(deadline?: number) {
      closing ??= agent.close();
      if (deadline === undefined) return closing;
      return settleBy(closing, deadline).then(() => agent.destroy().catch(() => undefined));
    },
  };
}

/** Parses and normalises the URL (WHATWG: `http://2130706433` becomes 127.0.0.1) and judges IP literals. */
function parseTarget(url: string, check: AddressCheck): Target | { invalid: string } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { invalid: 'target URL does not parse' };
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    return { invalid: `target URL scheme ${parsed.protocol} is not http: or https:` };
  }
  if (parsed.hostname === '') return { invalid: 'target URL has no host' };
  const host = unbracket(parsed.hostname);
  let blockedReason: string | undefined;
  if (isIP(host) !== 0) {
    const verdict = check(host);
    if (!verdict.allowed) blockedReason = `target refused: ${verdict.reason}`;
  }
  // Credentials in the URL are not sent (origin and path leave them out) and never echoed.
  return { origin: parsed.origin, path: `${parsed.pathname}${parsed.search}`, blockedReason };
}

function unbracket(hostname: string): string {
  return hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
}

/**
 * undici connector that only dials addresses the policy allows: resolves host names itself, tries the
 * allowed addresses in order, and judges the connected socket's remote address once more.
 */
function guardedConnector(check: AddressCheck, lookup: LookupFn, lookupTimeoutMs: number, dial: buildConnector.connector) {
  return function connect(opts: ConnectOptions, callback: ConnectCallback): void {
    const host = unbracket(opts.hostname);
    resolveAllowed(host, check, lookup, lookupTimeoutMs).then(
      (addresses) => {
        // TLS: SNI and certificate checks use the host name, never the IP we dial.
        const servername = isIP(host) === 0 ? (opts.servername ?? host) : opts.servername;
        let index = 0;
        const attempt = (): void => {
          const address = addresses[index++]!;
          dial({ ...opts, hostname: address, servername }, (err, socket) => {
            if (err || !socket) {
              if (index < addresses.length && isConnectFailure(err)) attempt();
              else callback(err ?? new Error('connect failed'), null);
              return;
            }
            const remote = socket.remoteAddress;
            const verdict = remote === undefined ? undefined : check(remote);
            if (!verdict?.allowed) {
              socket.destroy();
              callback(new BlockedAddressError(`target refused after connect: ${verdict?.reason ?? 'no remote address'}`), null);
              return;
            }
            callback(null, socket);
          });
        };
        attempt();
      },
      (err: unknown) => callback(err instanceof Error ? err : new Error(String(err)), null),
    );
  };
}

async function resolveAllowed(host: string, check: AddressCheck, lookup: LookupFn, timeoutMs: number): Promise<string[]> {
  if (isIP(host) !== 0) {
    const verdict = check(host);
    if (!verdict.allowed) throw new BlockedAddressError(`target refused: ${verdict.reason}`);
    return [host];
  }
  let resolved: Array<{ address: string; family: 4 | 6 }>;
  try {
    resolved = await withTimeout(lookup(host), timeoutMs);
  } catch (caught) {
    const err = coerceError(caught);
    const code = (err as { code?: unknown }).code;
    throw new DeliveryError('ERR_DNS', `could not resolve the target host${typeof code === 'string' ? ` (${code})` : ''}`, {
      retryable: true,
      cause: err,
    });
  }
  const allowed: string[] = [];
  let firstReason: string | undefined;
  for (const { address } of resolved) {
    const verdict = check(address);
    if (verdict.allowed) allowed.push(address);
    else firstReason ??= verdict.reason;
  }
  if (allowed.length === 0) {
    throw new BlockedAddressError(`target refused: ${firstReason ?? 'the host name resolved to no address'}`);
  }
  return allowed;
}

/** Bounds a lookup so a stuck resolver cannot pin a connection slot (and close()) forever. */
async function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  // Aborted once the race is decided: the timer keeps nothing alive and its rejection is the race's.
  const settled = new AbortController();
  const timeout = sleep(timeoutMs, undefined, { signal: settled.signal }).then((): never => {
    throw Object.assign(new Error(`lookup took longer than ${timeoutMs} ms`), { code: 'ETIMEDOUT' });
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    settled.abort();
  }
}

function isConnectFailure(err: Error | null | undefined): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'EADDRNOTAVAIL' || code === 'UND_ERR_CONNECT_TIMEOUT';
}

function classifyStatus(statusCode: number, retryAfter: string | string[] | undefined, started: number): AttemptOutcome {
  if (statusCode >= 200 && statusCode < 300) {
    return { ok: true, statusCode, durationMs: performance.now() - started };
  }
  if (statusCode >= 300 && statusCode < 400) {
    return fail('redirect', `HTTP ${statusCode}: redirects are not followed`, started, statusCode);
  }
  if (statusCode === 410) return fail('gone', 'HTTP 410 Gone: the receiver asks to stop', started, statusCode);
  if (statusCode === 413) return fail('payload_too_large', 'HTTP 413: the receiver refused the payload size', started, statusCode);
  const outcome = fail('http_status', `HTTP ${statusCode}`, started, statusCode);
  if (statusCode === 429 || statusCode === 503) {
    const retryAfterMs = parseRetryAfter(retryAfter, Date.now());
    if (retryAfterMs !== undefined) outcome.retryAfterMs = retryAfterMs;
  }
  return outcome;
}

/** `Retry-After`: delay-seconds or an HTTP date; anything else is ignored. Never negative. */
export function parseRetryAfter(value: string | string[] | undefined, nowMs: number): number | undefined {
  const text = (Array.isArray(value) ? value[0] : value)?.trim();
  if (!text) return undefined;
  if (/^\d+$/.test(text)) {
    const seconds = Number(text);
    return Number.isSafeInteger(seconds * 1000) ? seconds * 1000 : undefined;
  }
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

function classifyError(err: unknown, started: number, statusCode: number | undefined): AttemptOutcome {
  const blocked = findBlocked(err);
  if (blocked) return fail('blocked_address', blocked.message, started);
  const code = errorCode(err);
  switch (code) {
    case 'ECONNREFUSED':
      return fail('connection_refused', 'connection refused', started, statusCode);
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
    case 'ETIMEDOUT':
      return fail('timeout', `timed out (${code})`, started, statusCode);
    default: {
      const detail = code ?? (err instanceof Error ? err.name : 'unknown error');
      const text = err instanceof DeliveryError ? err.message : `connection error (${detail})`;
      return fail('connection_error', text, started, statusCode);
    }
  }
}

function findBlocked(err: unknown): BlockedAddressError | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && current !== null && typeof current === 'object'; depth++) {
    if (current instanceof BlockedAddressError) return current;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** The first `code` on the error or its cause chain (undici wraps socket errors). */
function errorCode(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && current !== null && typeof current === 'object'; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && code !== 'UND_ERR_SOCKET' && code !== 'UND_ERR_ABORTED') return code;
    current = (current as { cause?: unknown }).cause;
  }
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function fail(reason: AttemptFailureReason, message: string, started: number, statusCode?: number): Extract<AttemptOutcome, { ok: false }> {
  const outcome: Extract<AttemptOutcome, { ok: false }> = { ok: false, reason, message, durationMs: performance.now() - started };
  if (statusCode !== undefined) outcome.statusCode = statusCode;
  return outcome;
}
