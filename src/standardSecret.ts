/**
 * Standard Webhooks secrets: `whsec_` + base64 of a 24 to 64 byte key. A shared leaf: the row parser,
 * the signer and the receiver's verifier all read secrets the same way.
 */

export const STANDARD_SECRET_PREFIX = 'whsec_';
export const STANDARD_KEY_MIN_BYTES = 24;
export const STANDARD_KEY_MAX_BYTES = 64;

// The standard alphabet with at most two `=` of padding. Node's base64 decoder skips any character
// outside it (and stops at the first `=`), so "whsec_!!!!" decoded to an empty key: check first.
const BASE64_TEXT = /^[A-Za-z0-9+/]+={0,2}$/;

export type StandardKey = { ok: true; key: Buffer } | { ok: false; problem: string };

/** The HMAC key of a `whsec_` secret, or why it has none. */
export function decodeStandardSecret(secret: string): StandardKey {
  const text = secret.slice(STANDARD_SECRET_PREFIX.length);
  const expected = `the text after ${STANDARD_SECRET_PREFIX} must be base64 of a ${STANDARD_KEY_MIN_BYTES} to ${STANDARD_KEY_MAX_BYTES} byte key`;
  const refuse = (why: string): StandardKey => ({ ok: false, problem: `${STANDARD_SECRET_PREFIX} secret: ${expected} (${why})` });
  if (text.length === 0) return refuse('it is empty');
  if (!BASE64_TEXT.test(text) || text.length % 4 === 1 || (text.includes('=') && text.length % 4 !== 0)) return refuse('it is not base64');
  const key = Buffer.from(text, 'base64');
  // Every character must count: re-encoding gives the same text back (padding aside).
  if (key.toString('base64').replace(/=+$/, '') !== text.replace(/=+$/, '')) return refuse('it is not base64');
  if (key.length < STANDARD_KEY_MIN_BYTES || key.length > STANDARD_KEY_MAX_BYTES) return refuse(`it decodes to ${key.length} bytes`);
  return { ok: true, key };
}
