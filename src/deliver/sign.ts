import { createHmac, randomFillSync } from 'node:crypto';
import { STANDARD_SECRET_PREFIX, decodeStandardSecret } from '../standardSecret.js';

/**
 * Request signing. Pure apart from the nonce, which is random by design; runs once per
 * attempt, tens of thousands of times a second, so the per-call work is two HMACs and nothing else.
 *
 * Header names are lower-case (HTTP header names are case-insensitive; node:http and
 * `standardwebhooks` use lower-case, and the logger's redaction paths expect it).
 */
export interface SignedHeaders {
  [name: string]: string;
}

export const HEADER_TIMESTAMP = 'x-twenty-webhook-timestamp';
export const HEADER_SIGNATURE = 'x-twenty-webhook-signature';
export const HEADER_NONCE = 'x-twenty-webhook-nonce';
export const HEADER_WEBHOOK_ID = 'webhook-id';
export const HEADER_WEBHOOK_TIMESTAMP = 'webhook-timestamp';
export const HEADER_WEBHOOK_SIGNATURE = 'webhook-signature';

export { STANDARD_SECRET_PREFIX };

const NONCE_BYTES = 16;
// One randomFillSync per 256 nonces instead of a randomBytes call per attempt (~15x cheaper).
const NONCE_POOL_BYTES = NONCE_BYTES * 256;
const noncePool = Buffer.allocUnsafe(NONCE_POOL_BYTES);
let noncePoolOffset = NONCE_POOL_BYTES;

// Decoded whsec_ keys, keyed by secret. Webhooks are few, so this stays tiny; the bound only guards
// against a pathological caller.
const STANDARD_KEY_CACHE_MAX = 10_000;
const standardKeyCache = new Map<string, Buffer>();

/** 16 fresh random bytes as lower-case hex. */
function nextNonce(): string {
  if (noncePoolOffset + NONCE_BYTES > NONCE_POOL_BYTES) {
    randomFillSync(noncePool);
    noncePoolOffset = 0;
  }
  const nonce = noncePool.toString('hex', noncePoolOffset, noncePoolOffset + NONCE_BYTES);
  noncePoolOffset += NONCE_BYTES;
  return nonce;
}

/**
 * The HMAC key of a `whsec_` secret: base64-decoded text after the prefix (cached). Throws for a secret
 * with no valid key; the row parser and `webhooks add` refuse those before anything is signed.
 */
export function standardWebhooksKey(secret: string): Buffer {
  let key = standardKeyCache.get(secret);
  if (key === undefined) {
    const decoded = decodeStandardSecret(secret);
    if (!decoded.ok) throw new Error(decoded.problem);
    key = decoded.key;
    if (standardKeyCache.size >= STANDARD_KEY_CACHE_MAX) standardKeyCache.clear();
    standardKeyCache.set(secret, key);
  }
  return key;
}

/** Lower-case hex HMAC-SHA256 of `${timestampMs}:${body}`, key = secret as UTF-8. */
export function twentySignature(body: string | Buffer, secret: string, timestampMs: string): string {
  return createHmac('sha256', secret).update(timestampMs).update(':').update(body).digest('hex');
}

/** Base64 HMAC-SHA256 of `${id}.${seconds}.${body}` (Standard Webhooks `v1`), key already decoded. */
export function standardSignature(body: string | Buffer, key: Buffer, id: string, seconds: string): string {
  return createHmac('sha256', key).update(id).update('.').update(seconds).update('.').update(body).digest('base64');
}

/**
 * Headers for one attempt: x-twenty-webhook-timestamp (ms, decimal),
 * x-twenty-webhook-signature (hex HMAC-SHA256 over `${timestamp}:${body}`, key = secret as UTF-8),
 * x-twenty-webhook-nonce (16 random bytes hex, new per attempt), webhook-id (= eventId); when the
 * secret starts with `whsec_`, also webhook-timestamp (seconds) and webhook-signature
 * (`v1,<base64>` over `${id}.${seconds}.${body}`, key = base64-decoded rest of the secret).
 * Plus content-type: application/json and user-agent (pass `pg-webhook-bridge/<version>`).
 * An empty secret signs nothing: only content-type, user-agent and webhook-id, as Twenty sends a
 * webhook whose secret is empty.
 */
export function signRequest(body: string, secret: string, eventId: string, nowMs: number, userAgent: string): SignedHeaders {
  if (secret.length === 0) return { 'content-type': 'application/json', 'user-agent': userAgent, [HEADER_WEBHOOK_ID]: eventId };
  const timestampMs = String(Math.floor(nowMs));
  const headers: SignedHeaders = {
    'content-type': 'application/json',
    'user-agent': userAgent,
    [HEADER_TIMESTAMP]: timestampMs,
    [HEADER_SIGNATURE]: twentySignature(body, secret, timestampMs),
    [HEADER_NONCE]: nextNonce(),
    [HEADER_WEBHOOK_ID]: eventId,
  };
  if (secret.startsWith(STANDARD_SECRET_PREFIX)) {
    const seconds = String(Math.floor(nowMs / 1000));
    headers[HEADER_WEBHOOK_TIMESTAMP] = seconds;
    headers[HEADER_WEBHOOK_SIGNATURE] = `v1,${standardSignature(body, standardWebhooksKey(secret), eventId, seconds)}`;
  }
  return headers;
}
