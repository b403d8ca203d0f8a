import { timingSafeEqual } from 'node:crypto';
import {
  HEADER_SIGNATURE,
  HEADER_TIMESTAMP,
  HEADER_WEBHOOK_ID,
  HEADER_WEBHOOK_SIGNATURE,
  HEADER_WEBHOOK_TIMESTAMP,
  standardSignature,
  twentySignature,
} from './deliver/sign.js';
import { STANDARD_SECRET_PREFIX, decodeStandardSecret } from './standardSecret.js';

/**
 * Receiver-side check of a delivery's signature, exported by the package.
 *
 * Accepts the Twenty scheme (x-twenty-webhook-timestamp in ms + hex signature) and, when the secret
 * is a `whsec_` secret and the headers are there, the Standard Webhooks scheme (webhook-id,
 * webhook-timestamp in seconds, webhook-signature with one or more space-separated `v1,<base64>`).
 * Comparisons are constant-time; timestamps outside the tolerance are refused (replay protection);
 * hostile input never makes it throw. A `whsec_` secret whose key is not 24 to 64 bytes is refused:
 * an empty key would let anyone sign.
 *
 * A valid result carries the id to de-duplicate on. Headers outside the signature can be changed by
 * whoever replays a request, so the id comes from what the signature covers where it can:
 * - Standard Webhooks: the `webhook-id` header (it is part of the signed text); `idSigned: true`.
 * - Twenty scheme: the body's top-level `id` (the body is signed); `idSigned: true`. A body without one
 *   (`payload.format = "twenty"`, Twenty's own format) falls back to the `webhook-id` header, which the
 *   Twenty signature does not cover: `idSigned: false`. No id at all: `id: null`.
 */
export type VerifyResult = { valid: true; scheme: 'twenty' | 'standard'; id: string | null; idSigned: boolean } | { valid: false; reason: string };

export interface VerifyOptions {
  /**
   * Accept only the Standard Webhooks signature (the secret must be a `whsec_` secret): a request
   * carrying only the Twenty signature is refused. Its id is then always covered by the signature.
   */
  requireStandard?: boolean;
  /** Largest accepted distance between the signed timestamp and now, either way. Default 5 minutes. */
  toleranceMs?: number;
  /** Now, in ms since the epoch (for tests). Default Date.now(). */
  nowMs?: number;
}

export type HeaderBag = Record<string, string | string[] | undefined> | { get(name: string): string | null | undefined };

const DEFAULT_TOLERANCE_MS = 300_000;
const SHA256_BYTES = 32;
// Decimal digits only, and few enough that Number() is exact.
const MS_TIMESTAMP = /^\d{1,15}$/;
const SECONDS_TIMESTAMP = /^\d{1,12}$/;
const HEX_SHA256 = /^[0-9a-fA-F]{64}$/;
const BASE64_SHA256 = /^[A-Za-z0-9+/]{43}=$/;
const MAX_SIGNATURE_ENTRIES = 16;

export function verifySignature(rawBody: string | Buffer, headers: HeaderBag, secret: string, options: VerifyOptions = {}): VerifyResult {
  try {
    return verify(rawBody, headers, secret, options);
  } catch {
    // Defence in depth: the checks below are written not to throw, but a receiver must never crash.
    return { valid: false, reason: 'malformed request' };
  }
}

function verify(rawBody: string | Buffer, headers: HeaderBag, secret: string, options: VerifyOptions): VerifyResult {
  if (typeof secret !== 'string' || secret.length === 0) return { valid: false, reason: 'no secret given' };
  let standardKey: Buffer | undefined;
  if (secret.startsWith(STANDARD_SECRET_PREFIX)) {
    const decoded = decodeStandardSecret(secret);
    if (!decoded.ok) return { valid: false, reason: decoded.problem };
    standardKey = decoded.key;
  } else if (options.requireStandard === true) {
    return { valid: false, reason: `the Standard Webhooks scheme was required, and the secret is not a ${STANDARD_SECRET_PREFIX} secret` };
  }
  if (typeof rawBody !== 'string' && !Buffer.isBuffer(rawBody)) {
    return { valid: false, reason: 'body must be the raw request body (string or Buffer)' };
  }
  if (headers === null || typeof headers !== 'object') return { valid: false, reason: 'no headers given' };

  const toleranceMs = numberOr(options.toleranceMs, DEFAULT_TOLERANCE_MS);
  const nowMs = numberOr(options.nowMs, Date.now());
  const get = headerGetter(headers);

  const twentySig = options.requireStandard === true ? undefined : get(HEADER_SIGNATURE);
  const standardSig = standardKey !== undefined ? get(HEADER_WEBHOOK_SIGNATURE) : undefined;
  if (twentySig === undefined && standardSig === undefined) {
    return {
      valid: false,
      reason:
        options.requireStandard === true
          ? `missing ${HEADER_WEBHOOK_SIGNATURE} header (the Standard Webhooks scheme was required)`
          : 'missing signature header',
    };
  }

  let failure: string | undefined;
  if (twentySig !== undefined) {
    const result = verifyTwenty(rawBody, twentySig, get(HEADER_TIMESTAMP), secret, toleranceMs, nowMs);
    if (result.valid) return { valid: true, scheme: 'twenty', ...twentyId(rawBody, get(HEADER_WEBHOOK_ID)) };
    failure = result.reason;
  }
  if (standardSig !== undefined) {
    const result = verifyStandard(rawBody, standardSig, get(HEADER_WEBHOOK_ID), get(HEADER_WEBHOOK_TIMESTAMP), standardKey!, toleranceMs, nowMs);
    // The id is part of the signed text: the check above failed without one.
    if (result.valid) return { valid: true, scheme: 'standard', id: get(HEADER_WEBHOOK_ID)!, idSigned: true };
    failure = failure === undefined ? result.reason : `${failure}; ${result.reason}`;
  }
  return { valid: false, reason: failure ?? 'invalid signature' };
}

type SchemeCheck = { valid: true } | { valid: false; reason: string };

/** The id a Twenty-signed request is about: the signed body's `id`, else the unsigned header's. */
function twentyId(body: string | Buffer, headerId: string | undefined): { id: string | null; idSigned: boolean } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof body === 'string' ? body : body.toString('utf8'));
  } catch {
    parsed = undefined;
  }
  const bodyId = typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as { id?: unknown }).id : undefined;
  if (typeof bodyId === 'string' && bodyId.length > 0) return { id: bodyId, idSigned: true };
  return headerId !== undefined && headerId.length > 0 ? { id: headerId, idSigned: false } : { id: null, idSigned: false };
}

function verifyTwenty(
  body: string | Buffer,
  signature: string,
  timestamp: string | undefined,
  secret: string,
  toleranceMs: number,
  nowMs: number,
): SchemeCheck {
  if (timestamp === undefined) return { valid: false, reason: `missing ${HEADER_TIMESTAMP} header` };
  if (!MS_TIMESTAMP.test(timestamp)) return { valid: false, reason: `malformed ${HEADER_TIMESTAMP} header` };
  if (!(Math.abs(nowMs - Number(timestamp)) <= toleranceMs)) {
    return { valid: false, reason: 'timestamp outside the tolerance' };
  }
  if (!HEX_SHA256.test(signature)) return { valid: false, reason: `malformed ${HEADER_SIGNATURE} header` };
  const expected = Buffer.from(twentySignature(body, secret, timestamp), 'hex');
  const given = Buffer.from(signature, 'hex');
  if (given.length === SHA256_BYTES && timingSafeEqual(given, expected)) return { valid: true };
  return { valid: false, reason: 'signature mismatch' };
}

function verifyStandard(
  body: string | Buffer,
  signatures: string,
  id: string | undefined,
  timestamp: string | undefined,
  key: Buffer,
  toleranceMs: number,
  nowMs: number,
): SchemeCheck {
  if (id === undefined || id.length === 0) return { valid: false, reason: `missing ${HEADER_WEBHOOK_ID} header` };
  if (timestamp === undefined) return { valid: false, reason: `missing ${HEADER_WEBHOOK_TIMESTAMP} header` };
  if (!SECONDS_TIMESTAMP.test(timestamp)) {
    return { valid: false, reason: `malformed ${HEADER_WEBHOOK_TIMESTAMP} header` };
  }
  if (!(Math.abs(nowMs - Number(timestamp) * 1000) <= toleranceMs)) {
    return { valid: false, reason: 'timestamp outside the tolerance' };
  }
  const expected = Buffer.from(standardSignature(body, key, id, timestamp), 'base64');
  let sawV1 = false;
  const entries = signatures.split(' ');
  for (let i = 0; i < entries.length && i < MAX_SIGNATURE_ENTRIES; i++) {
    const entry = entries[i]!;
    if (!entry.startsWith('v1,')) continue; // other versions (e.g. v1a) are not ours to judge
    sawV1 = true;
    const b64 = entry.slice(3);
    if (!BASE64_SHA256.test(b64)) continue;
    const given = Buffer.from(b64, 'base64');
    if (given.length === SHA256_BYTES && timingSafeEqual(given, expected)) return { valid: true };
  }
  return { valid: false, reason: sawV1 ? 'signature mismatch' : `no v1 entry in ${HEADER_WEBHOOK_SIGNATURE} header` };
}

/**
 * Case-insensitive header access over a node:http headers object, a plain object with any casing,
 * or a fetch `Headers`. A repeated header counts only when all its values agree, except
 * webhook-signature, whose entries are space-separated anyway.
 */
function headerGetter(headers: HeaderBag): (name: string) => string | undefined {
  if (typeof (headers as { get?: unknown }).get === 'function') {
    const bag = headers as { get(name: string): unknown };
    return (name) => {
      const value = bag.get(name);
      return typeof value === 'string' ? value.trim() : undefined;
    };
  }
  const record = headers as Record<string, unknown>;
  const lowered = new Map<string, unknown>();
  for (const key of Object.keys(record)) {
    const lower = key.toLowerCase();
    const value = record[key];
    if (lowered.has(lower)) lowered.set(lower, ([] as unknown[]).concat(lowered.get(lower), value));
    else lowered.set(lower, value);
  }
  return (name) => {
    const value = lowered.get(name);
    if (typeof value === 'string') return value.trim();
    if (!Array.isArray(value) || value.length === 0) return undefined;
    const strings = value.filter((v): v is string => typeof v === 'string').map((v) => v.trim());
    if (strings.length !== value.length) return undefined;
    if (name === HEADER_WEBHOOK_SIGNATURE) return strings.join(' ');
    return strings.every((v) => v === strings[0]) ? strings[0] : undefined;
  };
}

function numberOr(value: unknown, fallback: number): number {
  return typeof value === 'number' && !Number.isNaN(value) ? value : fallback;
}
